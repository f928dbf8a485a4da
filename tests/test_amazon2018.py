"""The LLM4CDSR datasets (Cloth-Sport, Elec-Phone) from the Amazon Review Data (2018) files.

- the ``llm4cdsr`` recipe with the official semantics (strict bounds and k-core rounds, items counted
  across domains, shared ASINs kept once per domain), checked on hand-computed fixtures;
- the streaming readers (lazy, memory bounded by what is kept);
- the ``.item`` text columns (title, brand, category, price, description);
- the shipped ``cloth_sport`` / ``elec_phone`` yamls, downloaded from a loopback HTTP server holding
  fixture files in the 2018 formats, and loaded through ``create_dataset``.

The real files (several GB) cannot be downloaded here: nothing is measured on them.
"""

from __future__ import annotations

import functools
import gzip
import http.server
import json
import sys
import threading
import tracemalloc
from pathlib import Path
from typing import Dict, List

import numpy as np
import pandas as pd
import pytest

from recbole_ortho.data.converters import amazon
from recbole_ortho.data.converters.readers import iter_reviews, read_item_meta
from recbole_ortho.data.converters.recipes import k_core

HEADER = 'user_id:token\titem_id:token\ttimestamp:float\tseq_idx:float\n'
ITEM_HEADER = 'item_id:token\ttitle:token\tbrand:token\tcategory:token\tprice:token\tdescription:token\n'


def write_gz(path: Path, lines: List[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, 'wt', encoding='utf-8', compresslevel=1) as fh:
        fh.write(''.join(line + '\n' for line in lines))
    return path


def review(user: str, item: str, rating: float, ts: int, **extra) -> str:
    """One line of a 2018 review file (the real files carry more keys, e.g. reviewText, vote)."""
    rec = {'overall': rating, 'verified': True, 'reviewTime': '01 1, 2018', 'reviewerID': user, 'asin': item,
           'reviewerName': 'x', 'reviewText': 'Fits "well"\tand\nlooks good', 'summary': 'ok',
           'unixReviewTime': ts}
    rec.update(extra)
    return json.dumps(rec)


def meta_line(asin: str, **fields) -> str:
    """One line of a 2018 metadata file."""
    rec = {'category': [], 'tech1': '', 'description': [], 'fit': '', 'title': '', 'also_buy': [], 'tech2': '',
           'brand': '', 'feature': [], 'rank': [], 'also_view': [], 'main_cat': 'x', 'similar_item': '',
           'date': '', 'price': '', 'asin': asin, 'imageURL': [], 'imageURLHighRes': []}
    rec.update(fields)
    return json.dumps(rec)


def read(path: Path) -> str:
    return path.read_text(encoding='utf-8')


def removed(stats: dict, name: str) -> tuple:
    r = next(s for s in stats['steps'] if s['step'] == name)['removed']
    return r['interactions'], r['interactions_A'], r['interactions_B'], r['users'], r['items']


# --------------------------------------------------------------------------------------------------
# The recipe, hand-computed (start 10, end 100, user_min 2, item_min 1)
# --------------------------------------------------------------------------------------------------
REVIEWS_A = [('u1', 'a1', 5.0, 10),    # ts == start: out (strict)
             ('u1', 'a1', 5.0, 20), ('u1', 'a2', 4.0, 30), ('u1', 'a1', 3.0, 35),  # a repeated pair is kept
             ('u2', 'a1', 5.0, 40),
             ('u2', 'x1', 0.0, 45),    # overall 0: out (rating > 0)
             ('u2', 's1', 4.0, 50),    # s1 is also in B
             ('u2', 'a3', 5.0, 55),    # a3's only row: count 1 == item_min, removed by the strict round
             ('u3', 'a2', 5.0, 60),    # u3 has 2 rows == user_min: removed by the strict round
             ('u1', 'a9', 5.0, 100)]   # ts == end: out (strict)
REVIEWS_B = [('u1', 'b1', 5.0, 20),    # tie with u1's a1@20: A first
             ('u2', 'b1', 5.0, 40),    # tie with u2's a1@40: A first
             ('u3', 'b1', 5.0, 65), ('u4', 's1', 5.0, 70), ('u4', 'b1', 5.0, 75), ('u4', 'b2', 5.0, 80),
             ('u4', 'b2', 5.0, 85),
             ('u5', 'b1', 5.0, 90),    # u5 has 1 row < user_min: the k-core check fails, a round runs
             ('u5', 'b3', 5.0, 100)]   # ts == end: out
META_A = [meta_line('a1', title='Old title'),
          meta_line('zz', title='not in the data', description=['x' * 1000]),
          meta_line('a1', title='Shirt', brand='Acme', category=['Clothing, Shoes & Jewelry', 'Men'], price='$9.99',
                    description=['Soft\tcotton', 'Machine\nwash']),  # a later record of a1 replaces the first
          meta_line('s1', title='Shared (clothing file)', price='$1.00'),
          json.dumps({'asin': 'a2', 'title': 'Socks 12" long'})]  # keys may be missing
META_B = [meta_line('b1', title='Ball', brand='Bouncy', category=['Sports & Outdoors'], description=['Round']),
          meta_line('s1', title='Shared (sports file)'),
          meta_line('b2', title='Bat\r\n big')]


def write_pair(folder: Path) -> Dict[str, Path]:
    return {'A': write_gz(folder / 'A.json.gz', [review(*r) for r in REVIEWS_A]),
            'B': write_gz(folder / 'B.json.gz', [review(*r) for r in REVIEWS_B]),
            'mA': write_gz(folder / 'meta_A.json.gz', META_A), 'mB': write_gz(folder / 'meta_B.json.gz', META_B)}


SMALL = {'start': 10, 'end': 100, 'user_min': 2, 'item_min': 1}


def test_llm4cdsr_official_semantics(tmp_path):
    f = write_pair(tmp_path / 'raw')
    out = tmp_path / 'out'
    stats = amazon.convert('amazon2018', {'A': f['A'], 'B': f['B']}, out, 'cs', recipe='llm4cdsr',
                           recipe_options=SMALL, meta={'A': f['mA'], 'B': f['mB']})
    assert stats['recipe_options'] == {**SMALL, 'strict': True, 'rating_min': 0, 'shared_items': 'keep'}
    assert [s['step'] for s in stats['steps']] == ['rating_min', 'time_window', 'k_core', 'shared_items']
    assert stats['read'] == {'interactions': 19, 'interactions_A': 10, 'interactions_B': 9}
    assert removed(stats, 'rating_min') == (1, 1, 0, None, None)            # x1 (overall 0)
    assert removed(stats, 'time_window') == (3, 2, 1, None, None)           # a1@10, a9@100, b3@100
    # check fails (u5 has 1 < 2); the round keeps users with > 2 rows and items with > 1 row: u3 (2 rows),
    # u5 and a3 (1 row) go; s1 has 1 row per domain but 2 counted across them, so it stays.  The next
    # check passes although a2 is left with 1 row == item_min: one round.
    assert removed(stats, 'k_core') == (4, 2, 2, 2, 1)
    k = next(s for s in stats['steps'] if s['step'] == 'k_core')
    assert k['rounds'] == 1 and k['params'] == {'user_min': 2, 'item_min': 1, 'strict': True}
    assert removed(stats, 'shared_items') == (0, 0, 0, 0, 0)                # s1 becomes s1@A and s1@B
    assert next(s for s in stats['steps'] if s['step'] == 'shared_items')['split_items'] == 1
    paths = amazon.atomic_paths(out, 'cs')
    # u4 is only in B (single-domain users are kept); ties keep A before B
    assert read(paths['inter_A']) == HEADER + ('u1\ta1\t20\t0\nu1\ta2\t30\t2\nu1\ta1\t35\t3\n'
                                               'u2\ta1\t40\t0\nu2\ts1@A\t50\t2\n')
    assert read(paths['inter_B']) == HEADER + ('u1\tb1\t20\t1\nu2\tb1\t40\t1\n'
                                               'u4\ts1@B\t70\t0\nu4\tb1\t75\t1\nu4\tb2\t80\t2\nu4\tb2\t85\t3\n')
    assert stats['users'] == 3 and stats['overlapping_users'] == 2
    assert stats['domains']['A']['items'] == 3 and stats['domains']['B']['items'] == 3
    assert stats['meta_items'] == {'A': 3, 'B': 3}
    # each copy of s1 takes its own domain's record; a1's later record wins; text made one line
    assert read(paths['item_A']) == ITEM_HEADER + (
        'a1\tShirt\tAcme\tClothing, Shoes & Jewelry; Men\t$9.99\tSoft cotton; Machine wash\n'
        'a2\t"Socks 12"" long"\t\t\t\t\n'
        's1@A\tShared (clothing file)\t\t\t$1.00\t\n')
    assert read(paths['item_B']) == ITEM_HEADER + ('b1\tBall\tBouncy\tSports & Outdoors\t\tRound\n'
                                                   'b2\tBat big\t\t\t\t\n'
                                                   's1@B\tShared (sports file)\t\t\t\t\n')
    items = pd.read_csv(paths['item_A'], sep='\t', dtype=str, engine='python', keep_default_na=False)
    assert items['title:token'].tolist() == ['Shirt', 'Socks 12" long', 'Shared (clothing file)']
    md = read(out / 'cs' / 'stats.md')
    assert '| read |' in md and '| time_window | start=10, end=100, strict=True | 3 (2 / 1) | ? | ? |' in md
    assert md.index('| read |') < md.index('| rating_min |') < md.index('| loaded |') < md.index('| k_core |')


def test_llm4cdsr_not_strict(tmp_path):
    f = write_pair(tmp_path / 'raw')
    stats = amazon.convert('amazon2018', {'A': f['A'], 'B': f['B']}, tmp_path / 'out', 'cs', recipe='llm4cdsr',
                           recipe_options={**SMALL, 'strict': False})
    assert removed(stats, 'rating_min') == (0, 0, 0, None, None)            # overall 0 >= 0
    assert removed(stats, 'time_window') == (0, 0, 0, None, None)           # the bounds are inclusive
    # u5 now has 2 rows (b1, b3@100): every count meets the thresholds, the k-core keeps everything
    assert removed(stats, 'k_core') == (0, 0, 0, 0, 0)
    assert stats['interactions'] == 19


def test_llm4cdsr_shared_items_drop(tmp_path):
    f = write_pair(tmp_path / 'raw')
    stats = amazon.convert('amazon2018', {'A': f['A'], 'B': f['B']}, tmp_path / 'out', 'cs', recipe='llm4cdsr',
                           recipe_options={**SMALL, 'shared_items': 'drop'})
    assert [s['step'] for s in stats['steps']] == ['rating_min', 'time_window', 'drop_shared_items', 'k_core']
    assert removed(stats, 'drop_shared_items') == (2, 1, 1, 0, 1)
    assert 's1' not in read(amazon.atomic_paths(tmp_path / 'out', 'cs')['inter_B'])


def test_k_core_rounds():
    # (user, item) rows; users 0..2, items 0..2
    u = np.array([0, 0, 0, 1, 1, 1, 2])
    i = np.array([0, 1, 2, 0, 1, 2, 0])
    # already a (3, 1)-core apart from user 2: strict round keeps users with > 3 rows: nobody
    keep, rounds = k_core(u, i, 3, 3, 3, 1, strict=True)
    assert not keep.any() and rounds == 1
    keep, rounds = k_core(u, i, 3, 3, 3, 1, strict=False)
    assert keep.tolist() == [True] * 6 + [False] and rounds == 1
    # every count meets the thresholds: nothing happens, strict or not (counts equal to them stay)
    keep, rounds = k_core(u[:6], i[:6], 2, 3, 3, 2, strict=True)
    assert keep.all() and rounds == 0
    # strict rounds repeat until the >= check passes
    u2 = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3])
    i2 = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 4, 0])
    keep, rounds = k_core(u2, i2, 4, 5, 3, 1, strict=True)
    # round 1: users > 3 rows (0, 1), items > 1 row (0, 1, 2, 3): user 2, user 3, item 4 go
    assert keep.tolist() == [True] * 8 + [False] * 4 and rounds == 1


# --------------------------------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------------------------------
def test_review_reader_is_lazy(tmp_path):
    """The reader yields rows as it reads: a bad line further down is not reached by the first row."""
    path = write_gz(tmp_path / 'r.json.gz', [review('u1', 'a1', 5.0, 1), review('u2', 'a2', 5.0, 2), '{broken'])
    rows = iter_reviews('amazon2018', path, need_rating=True)
    assert next(rows) == ('u1', 'a1', 5.0, 1)
    assert next(rows) == ('u2', 'a2', 5.0, 2)
    with pytest.raises(ValueError, match=r'r\.json\.gz line 3: expected a JSON object'):
        next(rows)


def test_review_reader_missing_rating_is_an_error_when_filtered(tmp_path):
    line = json.dumps({'reviewerID': 'u1', 'asin': 'a1', 'unixReviewTime': 20})
    a = write_gz(tmp_path / 'a.json.gz', [line])
    with pytest.raises(ValueError, match=r"a\.json\.gz line 1: missing key 'overall'"):
        amazon.convert('amazon2018', {'A': a, 'B': a}, tmp_path / 'out', 'x', recipe='llm4cdsr')
    assert list(iter_reviews('amazon2018', a)) == [('u1', 'a1', None, 20)]  # not needed: not required


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_conversion_memory_is_bounded_by_what_is_kept(tmp_path):
    """Review files of ~19 MB each (uncompressed), 15,000 distinct users, of which 1 % fall inside
    the time window: the peak of traced memory stays far below the file size and below what storing
    every row would take (~30,000 x ~200 bytes).  Reading a file at once, or storing the rows before
    filtering, fails this test."""
    n = 15_000
    text = 'This is a long review text. ' * 40
    lines_a = [review(f'USER{k:09d}XYZ', f'A{k % 500:09d}', 5.0, 1000 + (k % 100), reviewText=text)
               for k in range(n)]
    lines_b = [review(f'USER{k:09d}XYZ', f'B{k % 300:09d}', 5.0, 1000 + (k % 100), reviewText=text)
               for k in range(n)]
    a = write_gz(tmp_path / 'a.json.gz', lines_a)
    b = write_gz(tmp_path / 'b.json.gz', lines_b)
    size = sum(len(line) + 1 for line in lines_a)
    assert size > 18e6
    del lines_a, lines_b
    opts = {'start': 1049, 'end': 1051, 'user_min': 1, 'item_min': 1}  # ts 1050 only: 150 rows per domain
    small = {d: write_gz(tmp_path / f'small_{d}.json.gz', [review('u', d, 5.0, 1050)]) for d in 'AB'}
    amazon.convert('amazon2018', small, tmp_path / 'warm', 'x', recipe='llm4cdsr', recipe_options=opts)
    peak = _peak_bytes(lambda: amazon.convert('amazon2018', {'A': a, 'B': b}, tmp_path / 'out', 'x',
                                              recipe='llm4cdsr', recipe_options=opts))
    stats = json.loads(read(tmp_path / 'out' / 'x' / 'stats.json'))
    assert stats['read']['interactions'] == 2 * n and stats['interactions'] == 300
    assert peak < 1_500_000, f'peak traced memory {peak:,} bytes for a {size:,}-byte file'


def test_meta_reader_keeps_only_wanted_items(tmp_path):
    n = 20_000
    desc = ['A long description of the product. ' * 12]
    path = write_gz(tmp_path / 'meta.json.gz', [meta_line(f'I{k:09d}', title=f'item {k}', description=desc)
                                                for k in range(n)])
    wanted = {f'I{k:09d}' for k in range(0, n, 2000)}
    out: dict = {}
    peak = _peak_bytes(lambda: out.update(read_item_meta('amazon2018', path, wanted)))
    assert set(out) == wanted and out['I000002000']['title'] == 'item 2000'
    assert set(out['I000000000']) == {'title', 'brand', 'category', 'price', 'description'}
    assert peak < 1_000_000, f'peak traced memory {peak:,} bytes'


# --------------------------------------------------------------------------------------------------
# The shipped yamls, downloaded from a loopback server, loaded through create_dataset
# --------------------------------------------------------------------------------------------------
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_root(tmp_path):
    """Serve ``tmp_path / 'www'`` on 127.0.0.1 (random port); yields (folder, base url)."""
    www = tmp_path / 'www'
    www.mkdir()
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
                                             functools.partial(_QuietHandler, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, f'http://127.0.0.1:{server.server_address[1]}/'
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


OFFICIAL = {
    'cloth_sport': (['Clothing_Shoes_and_Jewelry.json.gz', 'Sports_and_Outdoors.json.gz'], 1514736000, 1577808000),
    'elec_phone': (['Electronics.json.gz', 'Cell_Phones_and_Accessories.json.gz'], 1500000000, 1600000000),
}


def yaml_fixture(start: int, end: int):
    """Review and metadata lines (A, B) whose strict (5, 3) k-core is known.

    Users U0..U5 review A0..A3 and B0..B2 inside the window; U0..U2 also A4 (3 rows == item_min:
    removed by the strict round) and the shared ASIN S0 in A, U3..U5 S0 in B (6 rows across the
    domains: kept, as S0@A and S0@B).  U6 has one row (the k-core check fails, so a round runs);
    rows at exactly start/end, before start and with overall 0 are dropped."""
    a, b = [], []
    for u in range(6):
        t = start + 1000 * (u + 1)
        a += [review(f'U{u}', f'A{k}', 4.0, t + 10 * k) for k in range(4)]
        b += [review(f'U{u}', f'B{k}', 4.0, t + 10 * k + 5) for k in range(3)]
        (a if u < 3 else b).append(review(f'U{u}', 'S0', 5.0, t + 100))
        if u < 3:
            a.append(review(f'U{u}', 'A4', 5.0, t + 200))
    b.append(review('U6', 'B0', 5.0, start + 50))
    a += [review('U0', 'A0', 5.0, start), review('U2', 'A1', 5.0, start - 100), review('U3', 'A2', 0.0, start + 60)]
    b.append(review('U1', 'B1', 5.0, end))
    long_desc = ['Line "one"\twith\ttabs\nand breaks ' * 300]
    meta_a = [meta_line(f'A{k}', title=f'Cloth {k}', brand='Acme', category=['Top', f'Sub {k}'], price=f'${k}.99',
                        description=long_desc if k == 1 else [f'desc {k}']) for k in range(5)]
    meta_a += [meta_line('S0', title='Shared in A'), meta_line('JUNK', title='never kept')]
    meta_b = [meta_line(f'B{k}', title=f'Sport {k}') for k in range(3)] + [meta_line('S0', title='Shared in B')]
    return a, b, meta_a, meta_b


@pytest.mark.parametrize('name', ['cloth_sport', 'elec_phone'])
def test_llm4cdsr_yaml_prepares_from_its_download_location(tmp_path, http_root, monkeypatch, name):
    import yaml
    from recbole_ortho.config import Config
    from recbole_ortho.data import create_dataset
    from recbole_ortho.data.dataset import CrossDomainSeqDataset
    from recbole_ortho.utils import properties_dir
    monkeypatch.setattr(sys, 'argv', ['pytest'])
    monkeypatch.chdir(tmp_path)
    source = yaml.safe_load(open(Path(properties_dir()) / 'dataset' / f'{name}.yaml'))['raw_source']
    files, start, end = OFFICIAL[name]
    base = 'https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2/'
    assert source['format'] == 'amazon2018' and source['recipe'] == 'llm4cdsr'
    assert source['url'] == base + 'categoryFiles/' and source['meta_url'] == base + 'metaFiles2/'
    assert source['files'] == files and source['meta'] == [f'meta_{f}' for f in files]
    assert source['recipe_options'] == {'start': start, 'end': end, 'user_min': 5, 'item_min': 3, 'rating_min': 0,
                                        'strict': True, 'shared_items': 'keep'}
    www, url = http_root
    a, b, meta_a, meta_b = yaml_fixture(start, end)
    write_gz(www / 'categoryFiles' / files[0], a)
    write_gz(www / 'categoryFiles' / files[1], b)
    write_gz(www / 'metaFiles2' / f'meta_{files[0]}', meta_a)
    write_gz(www / 'metaFiles2' / f'meta_{files[1]}', meta_b)
    monkeypatch.setenv('RECBOLE_ORTHO_DATA', str(tmp_path / 'nowhere'))
    cfg = {'raw_source': dict(source, url=url + 'categoryFiles/', meta_url=url + 'metaFiles2/'),
           'data_path': str(tmp_path / 'dataset'), 'cache_dir': '', 'eval_protocol': 'full', 'state': 'WARNING',
           'MAX_ITEM_LIST_LENGTH': 10}
    config = Config(model='SASRec', dataset=name, config_dict=cfg)
    data = create_dataset(config)
    assert sorted(p.name for p in (tmp_path / 'dataset' / '.raw' / name).iterdir()) == sorted(
        files + [f'meta_{f}' for f in files])
    stats = json.loads(read(tmp_path / 'dataset' / name / 'stats.json'))
    assert removed(stats, 'rating_min') == (1, 1, 0, None, None)
    assert removed(stats, 'time_window') == (3, 2, 1, None, None)
    assert removed(stats, 'k_core') == (4, 3, 1, 1, 1)                      # A4 x 3 and U6; one round
    assert stats['interactions'] == 48 and stats['users'] == 6 and stats['overlapping_users'] == 6
    assert (stats['domains']['A']['items'], stats['domains']['B']['items']) == (5, 4)
    assert data.n_users == 7 and len(data.eval_users) == 6                   # with the padding id
    assert {'S0@A', 'S0@B', 'A0', 'B2'} <= set(data.item_tokens.tolist()) and 'A4' not in set(data.item_tokens)
    item_a = amazon.atomic_paths(tmp_path / 'dataset', name)['item_A']
    items = pd.read_csv(item_a, sep='\t', dtype=str, engine='python', keep_default_na=False)
    assert list(items.columns) == ITEM_HEADER.strip().split('\t')
    assert items['item_id:token'].tolist() == ['A0', 'A1', 'A2', 'A3', 'S0@A']
    row = items.set_index('item_id:token').loc['A1']
    assert (row['title:token'], row['brand:token'], row['category:token'], row['price:token']) == (
        'Cloth 1', 'Acme', 'Top; Sub 1', '$1.99')
    assert row['description:token'].startswith('Line "one" with tabs and breaks Line') and '\t' not in row[
        'description:token'] and len(row['description:token']) > 9000
    assert items.set_index('item_id:token').loc['S0@A', 'title:token'] == 'Shared in A'
    # RecBole-CDR reads the .inter columns only (load_col): the long text columns are never loaded
    cdr = CrossDomainSeqDataset(config).cdr
    assert cdr.source_domain_dataset.item_feat is None and cdr.target_domain_dataset.item_feat is None


def test_cli_llm4cdsr_options(tmp_path, monkeypatch):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'convert_amazon', Path(__file__).resolve().parents[1] / 'dataset_scripts' / 'convert_amazon.py')
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    monkeypatch.setattr(cli.logging, 'basicConfig', lambda **kwargs: None)
    f = write_pair(tmp_path / 'raw')
    argv = ['--format', 'amazon2018', '--input_a', str(f['A']), '--input_b', str(f['B']), '--meta_a', str(f['mA']),
            '--out', str(tmp_path / 'out'), '--name', 'cs', '--recipe', 'llm4cdsr', '--start', '10', '--end', '100',
            '--user_min', '2', '--item_min', '1']
    assert cli.main(argv) == 0
    stats = json.loads(read(tmp_path / 'out' / 'cs' / 'stats.json'))
    assert stats['recipe_options'] == {**SMALL, 'strict': True, 'rating_min': 0, 'shared_items': 'keep'}
    assert stats['interactions'] == 11
    assert cli.main(argv + ['--strict', 'false', '--shared_items', 'drop', '--rating_min', '1', '--overwrite']) == 0
    stats = json.loads(read(tmp_path / 'out' / 'cs' / 'stats.json'))
    assert stats['recipe_options'] == {**SMALL, 'strict': False, 'rating_min': 1, 'shared_items': 'drop'}
    assert removed(stats, 'rating_min') == (1, 1, 0, None, None)            # x1 (overall 0 < 1)
    with pytest.raises(SystemExit):
        cli.main(argv + ['--strict', 'maybe'])
