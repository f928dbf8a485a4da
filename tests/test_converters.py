"""Tests of the Amazon -> RecBole-CDR atomic-file converters (``recbole_ortho.data.converters``).

All fixtures are tiny hand-written files created in ``tmp_path``; expected outputs are hand-checked.
The real Food-Kitchen test runs only when the shared data folder is present.
"""

from __future__ import annotations

import functools
import gzip
import http.server
import importlib.util
import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from recbole_ortho.data.converters import amazon

REPO = Path(__file__).resolve().parents[1]
HEADER = 'user_id:token\titem_id:token\ttimestamp:float\tseq_idx:float\n'
ITEM_HEADER = 'item_id:token\ttitle:token\n'
ITEM_HEADER_2018 = 'item_id:token\ttitle:token\tbrand:token\tcategory:token\tprice:token\tdescription:token\n'


# --------------------------------------------------------------------------------------------------
# Fixture writers
# --------------------------------------------------------------------------------------------------
def write(path: Path, text: str, gz: bool = False) -> Path:
    """Write ``text`` to ``path`` (gzip-compressed under ``path.gz`` when ``gz``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + '.gz')
        with gzip.open(path, 'wt', encoding='utf-8') as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding='utf-8')
    return path


def rows_to(fmt: str, rows: List[tuple]) -> str:
    """Render ``(user, item, rating, timestamp_seconds)`` rows in a raw format (2023: milliseconds)."""
    lines = []
    for user, item, rating, ts in rows:
        if fmt == 'amazon2014':
            lines.append(f'{user},{item},{rating},{ts}')
        elif fmt == 'amazon2018':
            lines.append(json.dumps({'reviewerID': user, 'asin': item, 'overall': rating,
                                     'unixReviewTime': ts, 'reviewText': 'nice, "really"'}))
        else:
            lines.append(json.dumps({'user_id': user, 'parent_asin': item, 'asin': item + 'x',
                                     'rating': rating, 'timestamp': ts * 1000}))
    return '\n'.join(lines) + '\n'


def meta_to(fmt: str, records: List[dict]) -> str:
    """Render metadata records ``{'asin': .., 'title': ..}`` in the metadata format of ``fmt``."""
    lines = []
    for rec in records:
        if fmt == 'amazon2014':
            lines.append(repr(rec))
        elif fmt == 'amazon2018':
            lines.append(json.dumps(rec))
        else:
            rec = dict(rec)
            rec['parent_asin'] = rec.pop('asin')
            lines.append(json.dumps(rec))
    return '\n'.join(lines) + '\n'


def read(path: Path) -> str:
    return path.read_text(encoding='utf-8')


def out_files(out: Path, name: str) -> Dict[str, str]:
    paths = amazon.atomic_paths(out, name)
    return {k: read(paths[k]) for k in ('inter_A', 'inter_B', 'item_A', 'item_B')}


def assert_clean(out: Path, name: str) -> None:
    """No dataset folder and no temporary folder left behind."""
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert left == [], left


def step(stats: dict, name: str) -> dict:
    return next(s for s in stats['steps'] if s['step'] == name)


# A tiny pair of domains with same-timestamp ties across and within domains (timestamps in seconds).
ORDER_A = [('u1', 'a1', 5.0, 100), ('u2', 'a2', 4.0, 50), ('u1', 'a3', 3.0, 200), ('u1', 'a2', 1.0, 100)]
ORDER_B = [('u1', 'b1', 5.0, 100), ('u2', 'b2', 2.0, 50), ('u1', 'b2', 4.0, 50)]
# Mixed order = stable sort by timestamp of [A rows, B rows]:
#   u1: b2@50, a1@100, a2@100, b1@100, a3@200   u2: a2@50, b2@50
EXPECTED_A = HEADER + 'u1\ta1\t{100}\t1\nu1\ta2\t{100}\t2\nu1\ta3\t{200}\t4\nu2\ta2\t{50}\t0\n'
EXPECTED_B = HEADER + 'u1\tb2\t{50}\t0\nu1\tb1\t{100}\t3\nu2\tb2\t{50}\t1\n'
META_A = [{'asin': 'a1', 'title': 'Apple\tpie\nbig', 'price': 1.5}, {'asin': 'a2', 'categories': [['Food']]},
          {'asin': 'zz', 'title': 'not in the data'}]
META_B = [{'asin': 'b1', 'title': 'Bowl 12" wide'}, {'asin': 'b2', 'title': ''}]


def ms(fmt: str, text: str) -> str:
    """Fill the ``{ts}`` placeholders of an expected file: seconds, or milliseconds for 2023."""
    scale = 1000 if fmt == 'amazon2023' else 1
    return text.replace('{100}', str(100 * scale)).replace('{200}', str(200 * scale)).replace('{50}', str(50 * scale))


# --------------------------------------------------------------------------------------------------
# Raw formats
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('gz', [False, True], ids=['plain', 'gz'])
@pytest.mark.parametrize('fmt', ['amazon2014', 'amazon2018', 'amazon2023'])
def test_raw_formats_order_ties_and_titles(tmp_path, fmt, gz):
    ext = '.csv' if fmt == 'amazon2014' else '.json'
    a = write(tmp_path / 'raw' / f'food{ext}', rows_to(fmt, ORDER_A), gz)
    b = write(tmp_path / 'raw' / f'kitchen{ext}', rows_to(fmt, ORDER_B) + '\n', gz)  # trailing blank line
    ma = write(tmp_path / 'raw' / 'meta_food.json', meta_to(fmt, META_A), gz)
    mb = write(tmp_path / 'raw' / 'meta_kitchen.json', meta_to(fmt, META_B), gz)
    out = tmp_path / 'out'
    stats = amazon.convert(fmt, {'A': a, 'B': b}, out, 'fk', recipe='none', meta={'A': ma, 'B': mb})
    files = out_files(out, 'fk')
    assert files['inter_A'] == ms(fmt, EXPECTED_A)
    assert files['inter_B'] == ms(fmt, EXPECTED_B)
    if fmt == 'amazon2018':  # title, brand, category, price, description (2014's 'categories' is not read)
        assert files['item_A'] == ITEM_HEADER_2018 + 'a1\tApple pie big\t\t\t1.5\t\na2\t\t\t\t\t\na3\t\t\t\t\t\n'
        assert files['item_B'] == ITEM_HEADER_2018 + 'b1\t"Bowl 12"" wide"\t\t\t\t\nb2\t\t\t\t\t\n'
    else:
        assert files['item_A'] == ITEM_HEADER + 'a1\tApple pie big\na2\t\na3\t\n'
        assert files['item_B'] == ITEM_HEADER + 'b1\t"Bowl 12"" wide"\nb2\t\n'  # CSV quoting, as pandas reads it
    assert stats['users'] == 2 and stats['overlapping_users'] == 2 and stats['interactions'] == 7
    assert stats['domains']['A'] == {'users': 2, 'items': 3, 'interactions': 4,
                                     'sparsity': round(1 - 4 / 6, 6), 'titled_items': 1}
    assert stats['domains']['B']['titled_items'] == 1
    assert stats['mean_sequence_length'] == 3.5 and stats['steps'] == []
    saved = json.loads(read(out / 'fk' / 'stats.json'))
    assert saved['domains'] == stats['domains']
    assert '| interactions | 4 | 3 | 7 |' in read(out / 'fk' / 'stats.md')
    assert [p.name for p in out.iterdir()] == ['fk']
    # RecBole reads atomic files with pandas' python engine: the quoted title comes back intact
    import pandas as pd
    items = pd.read_csv(amazon.atomic_paths(out, 'fk')['item_B'], sep='\t', dtype=str, engine='python')
    assert items['title:token'].tolist()[0] == 'Bowl 12" wide'


def test_mixed_sequences_rebuild_from_seq_idx(tmp_path):
    a = write(tmp_path / 'a.csv', rows_to('amazon2014', ORDER_A))
    b = write(tmp_path / 'b.csv', rows_to('amazon2014', ORDER_B))
    amazon.convert('amazon2014', {'A': a, 'B': b}, tmp_path / 'out', 'fk', recipe='none')
    seqs = amazon.load_mixed_sequences(tmp_path / 'out' / 'fk')
    assert seqs == {'u1': [('B', 'b2', '50'), ('A', 'a1', '100'), ('A', 'a2', '100'), ('B', 'b1', '100'),
                           ('A', 'a3', '200')],
                    'u2': [('A', 'a2', '50'), ('B', 'b2', '50')]}


# --------------------------------------------------------------------------------------------------
# ABXI format
# --------------------------------------------------------------------------------------------------
def write_abxi(folder: Path, seqs: Dict[int, List[tuple]], items: Dict[str, tuple], users: Dict[str, int],
               titles: Optional[Dict[str, str]] = None, gz: bool = False) -> Path:
    """Write an ABXI-format folder. ``seqs``: {uid: [(item_index, day_ts), ...]} in file order."""
    lines = [f'{uid} ' + ' '.join(f'{i}|{t}' for i, t in seq) for uid, seq in seqs.items()]
    write(folder / 'toy_50_preprocessed.txt', '\n'.join(lines) + '\n', gz)
    write(folder / 'map_item_50.txt', json.dumps({k: list(v) for k, v in items.items()}), gz)
    write(folder / 'map_user_50.txt', json.dumps(users), gz)
    if titles is not None:
        rows = ['item_idx\tasin\tdomain\ttitle'] + [f'{idx}\t{asin}\t{dom}\t{titles.get(asin, "")}'
                                                    for asin, (idx, dom) in items.items()]
        write(folder / 'item_titles.tsv', '\n'.join(rows) + '\n', gz)
    return folder


TOY_ITEMS = {'FA1': (1, 0), 'FA2': (2, 0), 'FA3': (3, 0), 'KB1': (4, 1), 'KB2': (5, 1)}
TOY_USERS = {'RZ': 0, 'RA': 1}
# The file order is kept even where timestamps tie (uid 0: KB2 before FA1 on day 86400).
TOY_SEQS = {0: [(3, 0), (5, 86400), (1, 86400), (4, 86400), (2, 172800)],
            1: [(4, 0), (1, 0), (2, 0)]}


@pytest.mark.parametrize('gz', [False, True], ids=['plain', 'gz'])
def test_abxi_format_exact_files(tmp_path, gz):
    folder = write_abxi(tmp_path / 'toy', TOY_SEQS, TOY_ITEMS, TOY_USERS, {'FA1': 'Tea\t(green)', 'KB2': 'Pan'}, gz)
    stats = amazon.convert('abxi', {'dir': folder}, tmp_path / 'out', 'toy', recipe='none')
    files = out_files(tmp_path / 'out', 'toy')
    # users sorted by reviewerID: RA (uid 1) before RZ (uid 0)
    assert files['inter_A'] == HEADER + ('RA\tFA1\t0\t1\nRA\tFA2\t0\t2\n'
                                         'RZ\tFA3\t0\t0\nRZ\tFA1\t86400\t2\nRZ\tFA2\t172800\t4\n')
    assert files['inter_B'] == HEADER + 'RA\tKB1\t0\t0\nRZ\tKB2\t86400\t1\nRZ\tKB1\t86400\t3\n'
    assert files['item_A'] == ITEM_HEADER + 'FA1\tTea (green)\nFA2\t\nFA3\t\n'
    assert files['item_B'] == ITEM_HEADER + 'KB1\t\nKB2\tPan\n'
    assert stats['domains']['A']['items'] == 3 and stats['domains']['B']['interactions'] == 3


def test_abxi_round_trip_equals_source(tmp_path):
    folder = write_abxi(tmp_path / 'toy', TOY_SEQS, TOY_ITEMS, TOY_USERS)  # no titles file: titles empty
    amazon.convert('abxi', {'dir': folder}, tmp_path / 'out', 'toy', recipe='none')
    asin = {idx: a for a, (idx, _) in TOY_ITEMS.items()}
    rid = {uid: r for r, uid in TOY_USERS.items()}
    rebuilt = amazon.load_mixed_sequences(tmp_path / 'out' / 'toy')
    expected = {rid[uid]: [('AB'[TOY_ITEMS[asin[i]][1]], asin[i], str(t)) for i, t in seq]
                for uid, seq in TOY_SEQS.items()}
    assert rebuilt == expected
    assert read(amazon.atomic_paths(tmp_path / 'out', 'toy')['item_B']) == ITEM_HEADER + 'KB1\t\nKB2\t\n'


def big_abxi(folder: Path, n_users: int = 3) -> Path:
    """ABXI folder whose users all have 5 A and 6 B interactions (the abxi recipe keeps everything)."""
    items = {f'A{k}': (k + 1, 0) for k in range(5)}
    items.update({f'B{k}': (k + 6, 1) for k in range(6)})
    seqs = {}
    for uid in range(n_users):
        seq = [(k + 1, 10 * (k // 2)) for k in range(5)] + [(k + 6, 10 * (k // 3)) for k in range(6)]
        seqs[uid] = sorted(seq, key=lambda p: p[1])  # stable: ties keep A first, as written
    return write_abxi(folder, seqs, items, {f'U{uid}': uid for uid in range(n_users)})


def test_abxi_recipe_is_noop_on_abxi_input(tmp_path):
    folder = big_abxi(tmp_path / 'toy')
    none = amazon.convert('abxi', {'dir': folder}, tmp_path / 'o1', 'toy', recipe='none')
    stats = amazon.convert('abxi', {'dir': folder}, tmp_path / 'o2', 'toy', recipe='abxi')
    assert [s['step'] for s in stats['steps']] == ['drop_shared_items', 'overlapping_users', 'item_min',
                                                   'max_len', 'user_min_per_domain']
    assert all(v == 0 for s in stats['steps'] for v in s['removed'].values())
    assert step(stats, 'item_min')['params'] == {'item_min': None} and 'skipped' in step(stats, 'item_min')['note']
    assert out_files(tmp_path / 'o1', 'toy') == out_files(tmp_path / 'o2', 'toy')
    assert stats['interactions'] == none['interactions'] == 33
    # an explicit item_min is applied (each item has 3 interactions here)
    forced = amazon.convert('abxi', {'dir': folder}, tmp_path / 'o3', 'toy', recipe='abxi',
                            recipe_options={'item_min': 3})
    assert step(forced, 'item_min')['removed']['interactions'] == 0
    with pytest.raises(ValueError, match='domain A: no interactions left'):
        amazon.convert('abxi', {'dir': folder}, tmp_path / 'o4', 'toy', recipe='abxi',
                       recipe_options={'item_min': 4})
    assert_clean(tmp_path / 'o4', 'toy')


# --------------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------------
RECIPE_A = [('u1', 'a1', 5, 10), ('u1', 'a2', 5, 20), ('u1', 's1', 5, 30), ('u1', 'a3', 5, 40),
            ('u2', 'a1', 5, 10), ('u2', 'a2', 5, 20), ('u3', 'a1', 5, 10), ('u4', 'a4', 5, 10),
            ('u4', 'a1', 5, 20)]
RECIPE_B = [('u1', 'b1', 5, 15), ('u1', 'b2', 5, 25), ('u1', 'b1', 5, 50), ('u2', 'b1', 5, 15),
            ('u2', 'b2', 5, 25), ('u4', 'b2', 5, 5), ('u4', 'b1', 5, 30), ('u5', 'b1', 5, 1),
            ('u2', 's1', 5, 60)]


def removed(stats: dict, name: str) -> tuple:
    r = step(stats, name)['removed']
    return r['interactions'], r['interactions_A'], r['interactions_B'], r['users'], r['items']


def test_abxi_recipe_steps(tmp_path):
    a = write(tmp_path / 'a.csv', rows_to('amazon2014', RECIPE_A))
    b = write(tmp_path / 'b.csv', rows_to('amazon2014', RECIPE_B))
    stats = amazon.convert('amazon2014', {'A': a, 'B': b}, tmp_path / 'out', 'r', recipe='abxi',
                           recipe_options={'item_min': 2, 'max_len': 4, 'user_min_per_domain': 2})
    # s1 is in both domains (u1 in A, u2 in B)
    assert removed(stats, 'drop_shared_items') == (2, 1, 1, 0, 1)
    # u3 (A only) and u5 (B only)
    assert removed(stats, 'overlapping_users') == (2, 1, 1, 2, 0)
    # a3 and a4 have one interaction each
    assert removed(stats, 'item_min') == (2, 2, 0, 0, 2)
    # u1: a1@10 b1@15 a2@20 b2@25 b1@50 -> the first (a1@10) is cut
    assert removed(stats, 'max_len') == (1, 1, 0, 0, 0)
    # u1 is left with 1 A interaction, u4 (b2@5 a1@20 b1@30) too
    assert removed(stats, 'user_min_per_domain') == (7, 2, 5, 2, 0)
    files = out_files(tmp_path / 'out', 'r')
    assert files['inter_A'] == HEADER + 'u2\ta1\t10\t0\nu2\ta2\t20\t2\n'
    assert files['inter_B'] == HEADER + 'u2\tb1\t15\t1\nu2\tb2\t25\t3\n'
    assert stats['loaded']['interactions'] == 18 and stats['interactions'] == 4


def test_abxi_recipe_defaults_drop_user_with_four_a_items(tmp_path):
    rows_a = [('good', f'a{k}', 5, k) for k in range(5)] + [('bad', f'a{k}', 5, k) for k in range(4)]
    rows_b = [('good', f'b{k}', 5, k) for k in range(5)] + [('bad', f'b{k}', 5, k) for k in range(6)]
    a = write(tmp_path / 'a.csv', rows_to('amazon2014', rows_a))
    b = write(tmp_path / 'b.csv', rows_to('amazon2014', rows_b))
    stats = amazon.convert('amazon2014', {'A': a, 'B': b}, tmp_path / 'out', 'r',
                           recipe_options={'item_min': 1})  # default recipe abxi, user_min_per_domain=5
    assert stats['recipe'] == 'abxi' and stats['recipe_options']['user_min_per_domain'] == 5
    assert removed(stats, 'user_min_per_domain') == (10, 4, 6, 1, 1)  # b5 was bad's only
    assert stats['users'] == 1 and stats['domains']['A']['interactions'] == 5


def test_max_len_keeps_last_interactions(tmp_path):
    rows_a = [('u', f'a{k}', 5, k) for k in range(6)]
    rows_b = [('u', f'b{k}', 5, k) for k in range(6)]  # ties with A: A first
    a = write(tmp_path / 'a.csv', rows_to('amazon2014', rows_a))
    b = write(tmp_path / 'b.csv', rows_to('amazon2014', rows_b))
    stats = amazon.convert('amazon2014', {'A': a, 'B': b}, tmp_path / 'out', 'r',
                           recipe_options={'item_min': 1, 'max_len': 5, 'user_min_per_domain': 2})
    assert removed(stats, 'max_len') == (7, 4, 3, 0, 7)
    # mixed order a0 b0 a1 b1 ... a5 b5 (same-timestamp ties: A first); the last 5 are kept
    seq = amazon.load_mixed_sequences(tmp_path / 'out' / 'r')['u']
    assert [i for _, i, _ in seq] == ['b3', 'a4', 'b4', 'a5', 'b5']


LLM_A = [('u1', 'a1', 5, 20), ('u1', 'a2', 5, 30), ('u2', 'a1', 5, 40), ('u2', 'a2', 5, 50),
         ('u3', 'a3', 5, 60), ('u3', 'a1', 5, 5), ('u1', 'a9', 5, 200), ('u2', 's1', 5, 55)]
LLM_B = [('u1', 'b1', 5, 25), ('u2', 'b1', 5, 45), ('u3', 'b2', 5, 70), ('u4', 'b1', 5, 80),
         ('u1', 's1', 5, 35), ('u3', 'b2', 5, 75)]


def test_llm4cdsr_recipe_steps_not_strict_dropping_shared_items(tmp_path):
    """The non-official variant: inclusive bounds, the usual k-core, shared items dropped (the
    official semantics, the defaults, are tested in tests/test_amazon2018.py)."""
    a = write(tmp_path / 'a.json', rows_to('amazon2018', LLM_A))
    b = write(tmp_path / 'b.json', rows_to('amazon2018', LLM_B))
    stats = amazon.convert('amazon2018', {'A': a, 'B': b}, tmp_path / 'out', 'l', recipe='llm4cdsr',
                           recipe_options={'start': 10, 'end': 100, 'user_min': 3, 'item_min': 2,
                                           'strict': False, 'shared_items': 'drop'})
    assert [s['step'] for s in stats['steps']] == ['rating_min', 'time_window', 'drop_shared_items', 'k_core']
    assert removed(stats, 'rating_min') == (0, 0, 0, None, None)  # applied while reading
    assert removed(stats, 'time_window') == (2, 2, 0, None, None)  # a1@5 and a9@200
    assert removed(stats, 'drop_shared_items') == (2, 1, 1, 0, 1)
    # round 1: u4 (1 row) and a3 (1 row); round 2: u3 (b2, b2) is left with 2 < 3
    assert removed(stats, 'k_core') == (4, 1, 3, 2, 2)
    assert step(stats, 'k_core')['rounds'] == 2
    assert stats['read'] == {'interactions': 14, 'interactions_A': 8, 'interactions_B': 6}
    assert stats['loaded']['interactions'] == 12
    files = out_files(tmp_path / 'out', 'l')
    assert files['inter_A'] == HEADER + 'u1\ta1\t20\t0\nu1\ta2\t30\t2\nu2\ta1\t40\t0\nu2\ta2\t50\t2\n'
    assert files['inter_B'] == HEADER + 'u1\tb1\t25\t1\nu2\tb1\t45\t1\n'


def test_llm4cdsr_keeps_single_domain_users(tmp_path):
    rows_a = [('u1', 'a1', 5, 1), ('u2', 'a1', 5, 2), ('u3', 'a1', 5, 3)]
    rows_b = [('u1', 'b1', 5, 4), ('u2', 'b1', 5, 5)]
    a = write(tmp_path / 'a.csv', rows_to('amazon2014', rows_a))
    b = write(tmp_path / 'b.csv', rows_to('amazon2014', rows_b))
    stats = amazon.convert('amazon2014', {'A': a, 'B': b}, tmp_path / 'out', 'l', recipe='llm4cdsr',
                           recipe_options={'user_min': 1, 'item_min': 2})
    assert stats['users'] == 3 and stats['overlapping_users'] == 2
    assert removed(stats, 'time_window') == (0, 0, 0, None, None) and step(stats, 'k_core')['rounds'] == 0


def test_none_recipe_rejects_shared_items(tmp_path):
    a = write(tmp_path / 'a.csv', 'u1,x,5,1\n')
    b = write(tmp_path / 'b.csv', 'u1,x,5,2\nu1,y,5,3\n')
    with pytest.raises(ValueError, match="item id.*both domains.*'x'"):
        amazon.convert('amazon2014', {'A': a, 'B': b}, tmp_path / 'out', 'n', recipe='none')
    assert_clean(tmp_path / 'out', 'n')


def test_bad_recipe_and_options(tmp_path):
    a = write(tmp_path / 'a.csv', 'u1,x,5,1\n')
    with pytest.raises(ValueError, match='unknown recipe'):
        amazon.convert('amazon2014', {'A': a, 'B': a}, tmp_path / 'out', 'n', recipe='kcore')
    with pytest.raises(ValueError, match="no option.*user_min'"):
        amazon.convert('amazon2014', {'A': a, 'B': a}, tmp_path / 'out', 'n', recipe_options={'user_min': 3})
    with pytest.raises(ValueError, match='unknown format'):
        amazon.convert('amazon2020', {'A': a, 'B': a}, tmp_path / 'out', 'n')
    assert not (tmp_path / 'out').exists()


# --------------------------------------------------------------------------------------------------
# Errors: each stops with a clear message and leaves no output
# --------------------------------------------------------------------------------------------------
GOOD_CSV = 'u1,a1,5.0,1\nu2,a2,5.0,2\n'
GOOD_2018 = rows_to('amazon2018', [('u1', 'b1', 5.0, 1), ('u2', 'b2', 5.0, 2)])


@pytest.mark.parametrize('fmt, fname, text, message', [
    ('amazon2014', 'food.csv', 'u1,a1,5.0,1\nu2,a2,5.0,2\nu3,a3,5.0\n',
     r'food\.csv line 3: expected 4 comma-separated fields user,item,rating,timestamp, got 3'),
    ('amazon2014', 'food.csv', 'u1,a1,5.0,1\nu1,a2,5.0,yesterday\n',
     r"food\.csv line 2: expected a numeric timestamp, got 'yesterday'"),
    ('amazon2014', 'food.csv', 'user,item,rating,timestamp\nu1,a1,5.0,1\n',  # a header line
     r"food\.csv line 1: expected a numeric rating, got 'rating'"),
    ('amazon2018', 'food.json', GOOD_2018 + '{"reviewerID": "u3", "asin": \n',
     r'food\.json line 3: expected a JSON object, got invalid JSON'),
    ('amazon2018', 'food.json', '[1, 2]\n', r'food\.json line 1: expected a JSON object, got list'),
    ('amazon2018', 'food.json', GOOD_2018 + '{"reviewerID": "u3", "asin": "x", "overall": 5}\n',
     r"food\.json line 3: missing key 'unixReviewTime'"),
    ('amazon2018', 'food.json', '{"reviewerID": "u3", "asin": "x", "unixReviewTime": "soon"}\n',
     r"food\.json line 1: expected a numeric unixReviewTime, got 'soon'"),
    ('amazon2023', 'food.jsonl', '{"user_id": "u", "parent_asin": "p", "rating": 5, "timestamp": null}\n',
     r'food\.jsonl line 1: expected a numeric timestamp, got None'),
    ('amazon2023', 'food.jsonl', '{"user_id": "u", "asin": "p", "rating": 5, "timestamp": 1}\n',
     r"food\.jsonl line 1: missing key 'parent_asin'"),
])
@pytest.mark.parametrize('gz', [False, True], ids=['plain', 'gz'])
def test_malformed_interaction_lines(tmp_path, fmt, fname, text, message, gz):
    a = write(tmp_path / fname, text, gz)
    if gz:
        message = message.replace(re.escape(fname), re.escape(fname + '.gz'))
    b = write(tmp_path / 'kitchen.txt', GOOD_CSV if fmt == 'amazon2014' else rows_to(fmt, [('u1', 'b1', 5, 1)]))
    with pytest.raises(ValueError, match=message):
        amazon.convert(fmt, {'A': a, 'B': b}, tmp_path / 'out', 'bad', recipe='none')
    assert_clean(tmp_path / 'out', 'bad')


@pytest.mark.parametrize('fmt, text, message', [
    ('amazon2014', "{'asin': 'a1', 'title': 'ok'}\n{'asin': 'a2', 'title': 'no end\n",
     r'meta\.txt line 2: expected a Python dict literal, got an invalid literal'),
    ('amazon2014', "__import__('os').system('touch PWNED')\n",
     r'meta\.txt line 1: expected a Python dict literal, got an invalid literal'),
    ('amazon2014', "['a1', 'ok']\n", r'meta\.txt line 1: expected a Python dict literal, got list'),
    ('amazon2014', "{'title': 'no asin'}\n", r"meta\.txt line 1: missing key 'asin'"),
    ('amazon2018', '{"asin": "a1"}\n{"asin": \n', r'meta\.txt line 2: expected a JSON object, got invalid JSON'),
    ('amazon2023', '{"asin": "a1", "title": "t"}\n', r"meta\.txt line 1: missing key 'parent_asin'"),
])
def test_malformed_metadata(tmp_path, monkeypatch, fmt, text, message):
    monkeypatch.chdir(tmp_path)
    a = write(tmp_path / 'a.txt', rows_to(fmt, [('u1', 'a1', 5, 1)]))
    b = write(tmp_path / 'b.txt', rows_to(fmt, [('u1', 'b1', 5, 2)]))
    m = write(tmp_path / 'meta.txt', text)
    with pytest.raises(ValueError, match=message):
        amazon.convert(fmt, {'A': a, 'B': b}, tmp_path / 'out', 'bad', recipe='none', meta={'A': m})
    assert not (tmp_path / 'PWNED').exists()  # literal_eval, never eval
    assert_clean(tmp_path / 'out', 'bad')


@pytest.mark.parametrize('case, message', [
    ('token', r"toy_50_preprocessed\.txt line 2: expected item\|timestamp pairs of integers after the user id, "
              r"got '4-0'"),
    ('uid', r"toy_50_preprocessed\.txt line 1: expected a non-negative integer user id first, got 'x'"),
    ('unknown_user', r'toy_50_preprocessed\.txt line 2: user id 7 is not in map_user_50\.txt'),
    ('unknown_item', r'toy_50_preprocessed\.txt line 2: item index 9 is not in map_item_50\.txt'),
    ('map_json', r'map_item_50\.txt line 1: expected a JSON object, got invalid JSON'),
    ('map_value', r"map_item_50\.txt: expected \[item_index, domain \(0 or 1\)\] for 'FA1'"),
])
def test_malformed_abxi(tmp_path, case, message):
    folder = write_abxi(tmp_path / 'toy', TOY_SEQS, TOY_ITEMS, TOY_USERS)
    seq = folder / 'toy_50_preprocessed.txt'
    if case == 'token':
        write(seq, '0 3|0 5|86400\n1 4-0 1|0\n')
    elif case == 'uid':
        write(seq, 'x 3|0\n')
    elif case == 'unknown_user':
        write(seq, '0 3|0 4|0\n7 4|0\n')
    elif case == 'unknown_item':
        write(seq, '0 3|0 4|0\n1 9|0\n')
    elif case == 'map_json':
        write(folder / 'map_item_50.txt', '{"FA1": [1, 0],')
    else:
        write(folder / 'map_item_50.txt', json.dumps({'FA1': [1, 2]}))
    with pytest.raises(ValueError, match=message):
        amazon.convert('abxi', {'dir': folder}, tmp_path / 'out', 'toy', recipe='none')
    assert_clean(tmp_path / 'out', 'toy')


def test_missing_input_files(tmp_path):
    a = write(tmp_path / 'a.csv', GOOD_CSV)
    with pytest.raises(FileNotFoundError, match=r'domain B: input file not found: .*nope\.csv'):
        amazon.convert('amazon2014', {'A': a, 'B': tmp_path / 'nope.csv'}, tmp_path / 'out', 'x')
    with pytest.raises(FileNotFoundError, match=r'domain A: input file not found: .*meta_nope'):
        amazon.convert('amazon2014', {'A': a, 'B': a}, tmp_path / 'out', 'x', meta={'A': tmp_path / 'meta_nope'})
    folder = write_abxi(tmp_path / 'toy', TOY_SEQS, TOY_ITEMS, TOY_USERS)
    (folder / 'map_user_50.txt').unlink()
    with pytest.raises(FileNotFoundError, match=r'map_user_50\.txt|map_user'):
        amazon.convert('abxi', {'dir': folder}, tmp_path / 'out', 'x')
    with pytest.raises(FileNotFoundError, match='ABXI input folder not found'):
        amazon.convert('abxi', {'dir': tmp_path / 'nowhere'}, tmp_path / 'out', 'x')
    assert not (tmp_path / 'out').exists()


def test_empty_domains(tmp_path):
    a = write(tmp_path / 'a.csv', GOOD_CSV)
    empty = write(tmp_path / 'kitchen.csv', '\n')
    with pytest.raises(ValueError, match=r'domain B: no interactions in .*kitchen\.csv \(empty file\)'):
        amazon.convert('amazon2014', {'A': a, 'B': empty}, tmp_path / 'out', 'x', recipe='none')
    b = write(tmp_path / 'b.csv', 'u1,b1,5.0,500\n')
    with pytest.raises(ValueError, match='domain A: no interactions left after filtering'):
        amazon.convert('amazon2014', {'A': a, 'B': b}, tmp_path / 'out', 'x', recipe='llm4cdsr',
                       recipe_options={'start': 100, 'user_min': 1, 'item_min': 1})
    assert_clean(tmp_path / 'out', 'x')


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    a = write(tmp_path / 'a.csv', rows_to('amazon2014', ORDER_A))
    b = write(tmp_path / 'b.csv', rows_to('amazon2014', ORDER_B))

    def boom(*args, **kwargs):
        raise RuntimeError('disk full')

    monkeypatch.setattr(amazon, 'write_stats', boom)
    with pytest.raises(RuntimeError, match='disk full'):
        amazon.convert('amazon2014', {'A': a, 'B': b}, tmp_path / 'out', 'x', recipe='none')
    assert_clean(tmp_path / 'out', 'x')


def test_existing_destination_and_overwrite(tmp_path):
    a = write(tmp_path / 'a.csv', rows_to('amazon2014', ORDER_A))
    b = write(tmp_path / 'b.csv', rows_to('amazon2014', ORDER_B))
    out = tmp_path / 'out'
    (out / 'x').mkdir(parents=True)
    (out / 'x' / 'old.txt').write_text('old')
    with pytest.raises(FileExistsError, match='overwrite'):
        amazon.convert('amazon2014', {'A': a, 'B': b}, out, 'x', recipe='none')
    assert sorted(p.name for p in out.iterdir()) == ['x'] and (out / 'x' / 'old.txt').exists()
    amazon.convert('amazon2014', {'A': a, 'B': b}, out, 'x', recipe='none', overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ['x']
    assert not (out / 'x' / 'old.txt').exists() and (out / 'x' / 'stats.json').exists()
    reference = tmp_path / 'reference'
    reference.mkdir()  # the dataset folder gets the usual (umask) permissions, not mkdtemp's 0700
    assert (out / 'x').stat().st_mode & 0o777 == reference.stat().st_mode & 0o777


# --------------------------------------------------------------------------------------------------
# prepare_dataset: local path, download, missing settings
# --------------------------------------------------------------------------------------------------
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture
def http_dir(tmp_path):
    """Serve ``tmp_path / 'www'`` on 127.0.0.1 (random port) from a thread; yields (folder, base url)."""
    www = tmp_path / 'www'
    www.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, f'http://127.0.0.1:{server.server_address[1]}/data/'
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


FILES = ['toy_50_preprocessed.txt', 'map_item_50.txt', 'map_user_50.txt']


def test_prepare_dataset_downloads(tmp_path, http_dir):
    www, url = http_dir
    big_abxi(www / 'data')
    source = {'format': 'abxi', 'path': str(tmp_path / 'missing'), 'url': url, 'files': FILES, 'recipe': 'abxi'}
    out = tmp_path / 'dataset'
    folder = amazon.prepare_dataset('toy', source, out)
    assert folder == str(out / 'toy')
    assert sorted(p.name for p in (out / '.raw' / 'toy').iterdir()) == sorted(FILES)
    stats = json.loads(read(out / 'toy' / 'stats.json'))
    assert stats['users'] == 3 and stats['interactions'] == 33
    reference = amazon.convert('abxi', {'dir': www / 'data'}, tmp_path / 'ref', 'toy')
    assert out_files(out, 'toy') == out_files(tmp_path / 'ref', 'toy')
    assert reference['domains'] == stats['domains']
    # prepared already: returned as is, without touching the server
    (www / 'data' / FILES[0]).unlink()
    assert amazon.prepare_dataset('toy', source, out) == folder


def test_prepare_dataset_download_failure_leaves_no_partial_file(tmp_path, http_dir):
    www, url = http_dir
    folder = big_abxi(www / 'data')
    (folder / 'map_user_50.txt').unlink()
    source = {'format': 'abxi', 'path': None, 'url': url, 'files': FILES}
    with pytest.raises(OSError, match=r'download of .*map_user_50\.txt failed'):
        amazon.prepare_dataset('toy', source, tmp_path / 'dataset')
    raw = tmp_path / 'dataset' / '.raw' / 'toy'
    assert sorted(p.name for p in raw.iterdir()) == sorted(FILES[:2])  # no .part file left
    assert not (tmp_path / 'dataset' / 'toy').exists()


def test_prepare_dataset_local_path_and_missing_settings(tmp_path, monkeypatch):
    big_abxi(tmp_path / 'raw' / 'toy')
    monkeypatch.setenv('RECBOLE_ORTHO_DATA', str(tmp_path / 'raw'))
    assert amazon.default_raw_root() == str(tmp_path / 'raw')
    source = {'format': 'abxi', 'path': '${RECBOLE_ORTHO_DATA}/toy', 'url': None, 'files': FILES}
    assert amazon.prepare_dataset('toy', source, tmp_path / 'd1') == str(tmp_path / 'd1' / 'toy')
    # path None: <RECBOLE_ORTHO_DATA>/<name>
    assert amazon.prepare_dataset('toy', {'format': 'abxi', 'path': None}, tmp_path / 'd2')
    monkeypatch.delenv('RECBOLE_ORTHO_DATA')
    assert amazon.default_raw_root() == '../shared/data'
    with pytest.raises(FileNotFoundError, match=r'raw_source\.path.*RECBOLE_ORTHO_DATA.*raw_source\.url'):
        amazon.prepare_dataset('toy', {'format': 'abxi', 'path': str(tmp_path / 'nope'), 'url': None,
                                       'files': FILES}, tmp_path / 'd3')
    assert not (tmp_path / 'd3').exists()


def test_prepare_dataset_raw_format(tmp_path):
    write(tmp_path / 'raw' / 'a.csv.gz', rows_to('amazon2014', ORDER_A))
    write(tmp_path / 'raw' / 'b.csv', rows_to('amazon2014', ORDER_B))
    write(tmp_path / 'raw' / 'meta_b.txt', meta_to('amazon2014', META_B))
    source = {'format': 'amazon2014', 'path': str(tmp_path / 'raw'), 'files': ['a.csv.gz', 'b.csv'],
              'meta': {'B': 'meta_b.txt'}, 'recipe': 'none'}
    folder = Path(amazon.prepare_dataset('fk', source, tmp_path / 'out'))
    assert read(folder / 'fk_A' / 'fk_A.inter') == ms('amazon2014', EXPECTED_A)
    assert read(folder / 'fk_B' / 'fk_B.item') == ITEM_HEADER + 'b1\t"Bowl 12"" wide"\nb2\t\n'


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def load_cli():
    spec = importlib.util.spec_from_file_location('convert_amazon', REPO / 'dataset_scripts' / 'convert_amazon.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli(tmp_path, monkeypatch, caplog, capsys):
    cli = load_cli()
    monkeypatch.setattr(cli.logging, 'basicConfig', lambda **kwargs: None)  # keep pytest's logging as is
    a = write(tmp_path / 'a.csv', rows_to('amazon2014', ORDER_A))
    b = write(tmp_path / 'b.csv', rows_to('amazon2014', ORDER_B))
    argv = ['--format', 'amazon2014', '--input_a', str(a), '--input_b', str(b), '--out', str(tmp_path / 'out'),
            '--name', 'fk', '--recipe', 'none']
    with caplog.at_level(logging.INFO):
        assert cli.main(argv) == 0
    assert '| interactions | 4 | 3 | 7 |' in caplog.text
    assert capsys.readouterr().out.strip() == str(tmp_path / 'out' / 'fk')
    assert read(tmp_path / 'out' / 'fk' / 'fk_A' / 'fk_A.inter') == ms('amazon2014', EXPECTED_A)
    caplog.clear()
    assert cli.main(argv) == 1 and 'already exists' in caplog.text
    # recipe options reach the library; an option of another recipe is an error
    assert cli.main(argv[:-1] + ['abxi', '--item_min', '1', '--user_min_per_domain', '1', '--overwrite']) == 0
    assert json.loads(read(tmp_path / 'out' / 'fk' / 'stats.json'))['recipe_options'] == {
        'item_min': 1, 'max_len': 50, 'user_min_per_domain': 1}
    assert cli.main(argv + ['--user_min', '2', '--overwrite']) == 1 and 'no option' in caplog.text
    with pytest.raises(SystemExit):
        cli.main(['--format', 'abxi', '--input_a', str(a), '--input_b', str(b), '--name', 'x'])


# --------------------------------------------------------------------------------------------------
# Real data (skipped when the shared folder is absent)
# --------------------------------------------------------------------------------------------------
def real_data_dir() -> Path:
    root = os.environ.get('RECBOLE_ORTHO_DATA')
    base = Path(root) if root else REPO / '..' / 'shared' / 'data'
    return (base / 'food_kitchen').resolve()


@pytest.mark.skipif(not (real_data_dir() / 'afk_50_preprocessed.txt').is_file(),
                    reason='shared Food-Kitchen data not found')
def test_real_food_kitchen(tmp_path):
    src = real_data_dir()
    start = time.perf_counter()
    stats = amazon.convert('abxi', {'dir': src}, tmp_path, 'food_kitchen')
    elapsed = time.perf_counter() - start
    assert stats['users'] == 7144 and stats['overlapping_users'] == 7144
    assert (stats['domains']['A']['items'], stats['domains']['B']['items']) == (11837, 16258)
    assert (stats['domains']['A']['interactions'], stats['domains']['B']['interactions']) == (83663, 89885)
    assert stats['interactions'] == 173548
    assert all(v == 0 for s in stats['steps'] for v in s['removed'].values())
    asin = {idx: a for a, (idx, _) in json.loads(read(src / 'map_item_50.txt')).items()}
    rid = {uid: r for r, uid in json.loads(read(src / 'map_user_50.txt')).items()}
    rebuilt = amazon.load_mixed_sequences(tmp_path / 'food_kitchen')
    assert len(rebuilt) == 7144
    for line in read(src / 'afk_50_preprocessed.txt').splitlines():
        uid, *pairs = line.split()
        expected = [(asin[int(i)], t) for i, t in (p.split('|') for p in pairs)]
        assert [(item, ts) for _, item, ts in rebuilt[rid[int(uid)]]] == expected
    print(f'real Food-Kitchen conversion: {elapsed:.2f} s')


@pytest.mark.parametrize('name,prefix,overrides', [
    ('beauty_electronics', 'abe', {'weight_decay': 2.0, 'rd': 64, 'ri': 64}),
    ('movie_book', 'amb', {'weight_decay': 3.0, 'rd': 4, 'ri': 4}),
])
def test_abxi_datasets_prepare_from_their_download_location(tmp_path, http_dir, monkeypatch, name, prefix, overrides):
    """The shipped dataset yamls of the ABXI pairs: a run with their raw_source (the url replaced
    by a loopback server holding fixture files named as in the ABXI repository) prepares the
    dataset, and the official per-dataset settings reach the model's config."""
    import sys
    import yaml
    from recbole_ortho.config import Config
    from recbole_ortho.data import create_dataset
    from recbole_ortho.utils import properties_dir
    monkeypatch.setattr(sys, 'argv', ['pytest'])
    monkeypatch.chdir(tmp_path)
    shipped = yaml.safe_load(open(Path(properties_dir()) / 'dataset' / f'{name}.yaml'))
    source = shipped['raw_source']
    assert source['url'] == f'https://raw.githubusercontent.com/DiMarzioBian/ABXI/main/data/{prefix}/'
    assert source['files'] == [f'{prefix}_50_preprocessed.txt', 'map_item_50.txt', 'map_user_50.txt']
    www, url = http_dir
    fixture = big_abxi(www / 'data', n_users=4)
    (fixture / 'toy_50_preprocessed.txt').rename(fixture / f'{prefix}_50_preprocessed.txt')
    monkeypatch.setenv('RECBOLE_ORTHO_DATA', str(tmp_path / 'nowhere'))
    config = Config(model='ABXI', dataset=name, config_dict={
        'raw_source': dict(source, url=url), 'data_path': str(tmp_path / 'dataset'), 'cache_dir': str(tmp_path / 'c'),
        'eval_protocol': 'full', 'state': 'WARNING'})
    for k, v in overrides.items():
        assert config[k] == v, k
    data = create_dataset(config)
    assert data.n_users == 5 and len(data.eval_users) == 4                  # with the padding id
    assert sorted(p.name for p in (tmp_path / 'dataset' / '.raw' / name).iterdir()) == sorted(source['files'])
    stats = json.loads(read(tmp_path / 'dataset' / name / 'stats.json'))
    assert stats['interactions'] == 44
