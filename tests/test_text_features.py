"""Item text embeddings and offline user profiles (recbole_ortho.data.text_features)."""

import copy
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from recbole_ortho.config import Config, ConfigError
from recbole_ortho.data import create_dataset
from recbole_ortho.data import text_features as tf
from recbole_ortho.data.dataset import DataError
from tests.conftest import REPO, shared_food_kitchen, tiny_config_dict, write_tiny_dataset

ITEM_HEADER = 'item_id:token\ttitle:token\n'
WORDS = ['green tea', 'chili sauce', 'olive oil', 'dark chocolate', 'coffee beans', 'pasta', 'honey', 'rice']
TOOLS = ['chef knife', 'frying pan', 'cutting board', 'blender', 'mixing bowl', 'kettle', 'toaster', 'spatula']


@pytest.fixture(autouse=True)
def _argv(monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['pytest'])


def title_of(tok):
    k = int(tok[1:])
    if tok[0] == 'a':
        return '' if k % 7 == 3 else f'{WORDS[k % len(WORDS)].title()} pack of {k}'
    return '' if k % 9 == 4 else f'Stainless {TOOLS[k % len(TOOLS)]} model {k}'


def write_items(root, name='tiny', n_a=30, n_b=40, title=title_of):
    for dom, pre, n in (('A', 'a', n_a), ('B', 'b', n_b)):
        path = Path(root) / name / f'{name}_{dom}' / f'{name}_{dom}.item'
        with open(path, 'w') as f:
            f.write(ITEM_HEADER)
            for k in range(n):
                f.write(f'{pre}{k}\t{title(f"{pre}{k}")}\n')


TEXT = {'text_domain_dim': 8, 'text_global_dim': 16, 'user_profile_clusters': 3, 'text_batch_size': 16}


def make_config(cfg, **over):
    d = dict(cfg)
    d.update(TEXT)
    d.update(over)
    return tf.add_text_defaults(Config(model='SASRec', dataset='tiny', config_dict=d))


@pytest.fixture
def tiny_text(tmp_path, monkeypatch):
    """The tiny dataset with .item titles (a few empty), its config and SeqData."""
    monkeypatch.chdir(tmp_path)
    seqs = write_tiny_dataset(tmp_path / 'data')
    write_items(tmp_path / 'data')
    cfg = tiny_config_dict(tmp_path)
    config = make_config(cfg)
    return seqs, cfg, config, create_dataset(config)


# ---------------------------------------------------------------------------------------------
def test_prompt_follows_the_official_template_with_present_fields_only():
    assert tf.item_prompt({'title': 'Green tea'}, ['title']) == \
        'The item has following attributes: \n name is Green tea. \n'
    assert tf.item_prompt({'title': 'Green tea'}, ['title'], noun='food') == \
        'The food item has following attributes: \n name is Green tea. \n'
    assert tf.item_prompt({'title': '', 'brand': 'Acme'}, ['title', 'brand']) == \
        'The item has following attributes: \n name is unknown; brand is Acme. \n'
    assert tf.item_prompt({'title': '  '}, ['title']) == ''                 # no text
    long = 'x' * 150
    assert 'name is unknown.' in tf.item_prompt({'title': long}, ['title'], long_value='unknown')
    assert f'name is {"x" * 100}.' in tf.item_prompt({'title': long}, ['title'], long_value='truncate')
    p = tf.item_prompt({'title': 'T', 'price': '$3.50', 'category': 'Grocery', 'description': 'd' * 300},
                       ['title', 'price', 'category', 'description'])
    attr, feat, desc = p.split(' \n')[0:2], p.split('\n')[2], p[p.index('The item has following desc'):]
    assert attr[0] == 'The item has following attributes:' and attr[1] == ' name is T; price is $3.50.'
    assert feat == 'The item has following features: Grocery; . '
    assert len(desc) == tf.MAX_SENTENCE_CHARS and desc.startswith('The item has following descriptions: ddd')


def test_item_file_read_by_header_names(tmp_path):
    p = tmp_path / 'x.item'
    p.write_text('brand:token\titem_id:token\tsales:float\ttitle:token\n'
                 'Acme\ti1\t3\t"Tea ""gold"" edition"\n'
                 '\ti2\t1\t\n')
    fields, rows = tf.read_item_file(str(p), 'item_id')
    assert fields == ['brand', 'title']
    assert rows['i1'] == {'brand': 'Acme', 'title': 'Tea "gold" edition'}
    assert tf.item_prompt(rows['i2'], fields) == ''
    assert tf.read_item_file(str(tmp_path / 'missing.item'), 'item_id') == ([], {})
    with pytest.raises(DataError, match='item_id'):
        p.write_text('asin:token\ttitle:token\nx\ty\n')
        tf.read_item_file(str(p), 'item_id')


def test_text_yaml_documents_every_key():
    lines = open(tf.text_defaults_file()).read().splitlines()
    keys = {ln.split(':', 1)[0]: ln for ln in lines if ln and not ln.startswith('#')}
    assert set(keys) == set(tf.TEXT_KEYS)
    for k, ln in keys.items():
        assert '# (' in ln, k
    assert max(len(ln) for ln in lines) <= 120


def test_features_round_trip(tiny_text):
    _, _, config, data = tiny_text
    feats = tf.load_text_features(config, data)
    n = data.n_items
    assert feats.global_table.shape == (n, 16) and feats.global_table.dtype == np.float32
    assert feats.domain_table.shape == (n, 8) and feats.domain_table.dtype == np.float32
    assert feats.user_profiles.shape == (data.n_users, feats.text_dim) and feats.text_dim == 384
    assert not feats.global_table[0].any() and not feats.domain_table[0].any() and not feats.user_profiles[0].any()
    assert feats.encoder == 'all-MiniLM-L6-v2'
    # items without text, counted per domain
    toks = data.item_tokens
    for d in (0, 1):
        lo, hi = data.domain_range[d]
        assert feats.n_items_domain[d] == hi - lo
        assert feats.n_missing[d] == sum(1 for i in range(lo, hi) if not title_of(toks[i]))
    assert feats.n_missing[0] > 0 and feats.n_missing[1] > 0
    # the tables are the PCA of the encoder's embedding of exactly these prompts (zeros without text)
    model = tf.load_encoder(tf.resolve_encoder('all-MiniLM-L6-v2'))
    emb = np.zeros((n, 384), dtype=np.float32)
    for i in range(1, n):
        t = title_of(toks[i])
        if t:
            prompt = f'The item has following attributes: \n name is {t}. \n'
            emb[i] = model.encode([prompt], convert_to_numpy=True)[0]
    for d in (0, 1):
        lo, hi = data.domain_range[d]
        np.testing.assert_allclose(np.abs(feats.domain_table[lo:hi]), np.abs(tf.pca(emb[lo:hi], 8, 0)), atol=2e-3)
    np.testing.assert_allclose(np.abs(feats.global_table[1:]), np.abs(tf.pca(emb[1:], 16, 0)), atol=2e-3)
    # the texts reach the rows: same-text items share rows, different texts do not
    lo, hi = data.domain_range[1]
    rows = {tuple(np.round(feats.domain_table[i], 4)) for i in range(lo, hi) if title_of(toks[i])}
    assert len(rows) == sum(1 for i in range(lo, hi) if title_of(toks[i]))
    empty = [i for i in range(lo, hi) if not title_of(toks[i])]
    assert all(np.array_equal(feats.domain_table[empty[0]], feats.domain_table[i]) for i in empty)
    # unit-norm profiles for users with a titled training item, zeros for the others
    for u in range(1, data.n_users):
        train = data.seq_items[data.seq_offsets[u]:data.seq_offsets[u + 1] - 2]
        has = any(title_of(toks[i]) for i in train)
        assert np.isclose(np.linalg.norm(feats.user_profiles[u]), 1.0 if has else 0.0, atol=1e-5)


def test_cache_hit_then_rebuilt_when_a_title_changes(tiny_text, tmp_path, monkeypatch):
    _, cfg, config, data = tiny_text
    first = tf.load_text_features(config, data)
    assert not first.info['from_cache'] and os.path.isfile(first.cache_path)
    assert os.path.basename(first.cache_path).startswith('text-tiny-') and first.cache_path.endswith('.npz')
    assert first.info['items_per_s'] > 0 and first.info['n_encoded'] > 0
    real_load = tf.load_encoder

    def boom(*a, **k):
        raise AssertionError('the encoder must not be loaded on a cache hit')
    monkeypatch.setattr(tf, 'load_encoder', boom)
    second = tf.load_text_features(config, data)
    assert second.info['from_cache'] and second.cache_path == first.cache_path
    for a in ('global_table', 'domain_table', 'user_profiles'):
        assert np.array_equal(getattr(first, a), getattr(second, a))
    assert second.n_missing == first.n_missing and second.text_dim == first.text_dim
    # the batch size does not change the key; a PCA or profile setting does, without encoding again
    assert tf.load_text_features(make_config(cfg, text_batch_size=7), data).info['from_cache']
    other = tf.load_text_features(make_config(cfg, text_domain_dim=6, user_profile_clusters=2), data)
    assert other.domain_table.shape[1] == 6 and not other.info['from_cache'] and other.info['embeddings_from_cache']
    assert other.cache_path != first.cache_path
    assert len(list((tmp_path / 'cache').glob('textemb-tiny-*.npz'))) == 1
    monkeypatch.setattr(tf, 'load_encoder', real_load)
    # one title changes: a new key, rebuilt
    lo, hi = data.domain_range[0]
    i = next(i for i in range(lo, hi) if title_of(data.item_tokens[i]))
    tok = data.item_tokens[i]
    write_items(tmp_path / 'data', title=lambda t: 'Smoked paprika tin' if t == tok else title_of(t))
    third = tf.load_text_features(config, data)
    assert not third.info['from_cache'] and third.cache_path != first.cache_path
    assert not np.allclose(third.domain_table[i], first.domain_table[i])


def test_deterministic(tiny_text, tmp_path):
    _, cfg, config, data = tiny_text
    a = tf.load_text_features(make_config(cfg, cache_dir=str(tmp_path / 'c1')), data)
    b = tf.load_text_features(make_config(cfg, cache_dir=str(tmp_path / 'c2')), data)
    assert not a.info['from_cache'] and not b.info['from_cache']
    for k in ('global_table', 'domain_table', 'user_profiles'):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    assert os.path.basename(a.cache_path) == os.path.basename(b.cache_path)


def _tiny_local_model(path):
    """A 16-d sentence-transformers model folder (random 1-layer BERT, MiniLM's vocabulary)."""
    import shutil
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel
    src = tf.resolve_encoder('all-MiniLM-L6-v2')
    hf = path.parent / 'hf'
    hf.mkdir(parents=True)
    for f in ('vocab.txt', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'):
        shutil.copy(os.path.join(src, f), hf / f)
    import torch
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(str(hf))
    word = models.Transformer(str(hf), max_seq_length=64)
    SentenceTransformer(modules=[word, models.Pooling(16)], device='cpu').save(str(path))
    return str(path)


def test_local_model_folder_profiles_off_and_pca_dims(tiny_text, tmp_path):
    _, cfg, _, data = tiny_text
    model_dir = _tiny_local_model(tmp_path / 'models' / 'tiny16')
    feats = tf.load_text_features(make_config(cfg, text_encoder=model_dir, user_profile='none', text_global_dim=4096,
                                              text_domain_dim=5), data)
    assert feats.user_profiles is None and feats.text_dim == 16 and feats.encoder == model_dir
    assert feats.global_table.shape == (data.n_items, 16)        # min(encoder dim, text_global_dim)
    assert feats.domain_table.shape == (data.n_items, 5)
    assert 'user_profiles' not in np.load(feats.cache_path).files


def test_clear_errors(tiny_text, tmp_path):
    _, cfg, _, data = tiny_text
    with pytest.raises(ConfigError, match=r"text_encoder: \[bert-base-uncased\].*all-MiniLM-L6-v2"):
        tf.load_text_features(make_config(cfg, text_encoder='bert-base-uncased'), data)
    (tmp_path / 'not_a_model').mkdir()
    with pytest.raises(ConfigError, match='text_encoder: .*not a sentence-transformers model'):
        tf.load_text_features(make_config(cfg, text_encoder=str(tmp_path / 'not_a_model')), data)
    with pytest.raises(ConfigError, match='text_domain_dim: .*above the'):
        tf.load_text_features(make_config(cfg, text_domain_dim=64), data)
    with pytest.raises(ConfigError, match='text_global_dim'):
        tf.load_text_features(make_config(cfg, text_global_dim=200, text_domain_dim=4), data)
    with pytest.raises(ConfigError, match='user_profile: '):
        tf.load_text_features(make_config(cfg, user_profile='gpt'), data)
    with pytest.raises(ConfigError, match='text_item_nouns'):
        tf.load_text_features(make_config(cfg, text_item_nouns='food'), data)
    # a key set nowhere: the strict view names it
    config = make_config(cfg)
    del config.final_config_dict['text_seed']
    with pytest.raises(ConfigError, match='text_seed: missing setting'):
        tf.load_text_features(config, data)


def test_dataset_without_texts(tiny_text, tmp_path):
    _, cfg, config, data = tiny_text
    write_items(tmp_path / 'data', title=lambda t: '')
    with pytest.raises(DataError, match=r'no item text.*tiny_A\.item.*tiny_B\.item'):
        tf.load_text_features(config, data)
    for dom in 'AB':
        os.remove(tmp_path / 'data' / 'tiny' / f'tiny_{dom}' / f'tiny_{dom}.item')
    with pytest.raises(DataError, match=r'no item text.*tiny_A\.item.*tiny_B\.item'):
        tf.load_text_features(config, data)
    write_items(tmp_path / 'data', title=lambda t: '' if t[0] == 'b' else 'Tea')
    with pytest.raises(DataError, match=r'domain B .*tiny_B\.item'):
        tf.load_text_features(config, data)


def _replace_targets(data, user, valid=None, test=None):
    d = copy.copy(data)
    d.seq_items = data.seq_items.copy()
    end = data.seq_offsets[user + 1]
    if valid is not None:
        d.seq_items[end - 2] = valid
    if test is not None:
        d.seq_items[end - 1] = test
    return d


def test_profiles_use_training_items_only(tiny_text):
    _, cfg, config, data = tiny_text
    base = tf.load_text_features(config, data).user_profiles
    u = int(data.eval_users[0])
    seq = data.seq_items[data.seq_offsets[u]:data.seq_offsets[u + 1]]
    titled = [i for i in range(1, data.n_items) if title_of(data.item_tokens[i])]
    other = [i for i in titled if i not in set(seq.tolist())][:2]
    changed = _replace_targets(data, u, valid=other[0], test=other[1])
    prof = tf.load_text_features(config, changed).user_profiles
    np.testing.assert_array_equal(prof, base)          # the valid and test targets never count
    # profile_include_valid reproduces the official quirk: the validation item counts, the test item not
    cfg_v = make_config(cfg, profile_include_valid=True)
    base_v = tf.load_text_features(cfg_v, data).user_profiles
    assert not np.allclose(base_v[u], base[u]) or title_of(data.item_tokens[seq[-2]]) == ''
    only_test = tf.load_text_features(cfg_v, _replace_targets(data, u, test=other[1])).user_profiles
    np.testing.assert_array_equal(only_test, base_v)
    with_valid = tf.load_text_features(cfg_v, _replace_targets(data, u, valid=other[0])).user_profiles
    assert not np.allclose(with_valid[u], base_v[u])
    others = np.arange(data.n_users) != u
    np.testing.assert_array_equal(with_valid[others], base_v[others])


def _reference_profiles(emb, labels, seq_items, offsets, recent, include_valid):
    out = np.zeros((len(offsets) - 1, emb.shape[1]))
    for u in range(len(offsets) - 1):
        seq = seq_items[offsets[u]:offsets[u + 1]].tolist()
        hist = seq[:max(len(seq) - (1 if include_valid else 2), 0)]
        groups = {}
        for it in hist:
            if labels[it] >= 0:
                groups.setdefault(labels[it], []).append(it)
        if not groups:
            continue
        vecs = []
        for c in sorted(groups):
            v = emb[groups[c][-recent:]].mean(0)
            vecs.append(v / np.linalg.norm(v))
        p = np.mean(vecs, 0)
        out[u] = p / np.linalg.norm(p)
    return out


def test_cluster_profiles_match_a_loop_reference_and_are_fast():
    rng = np.random.default_rng(0)
    n_items, d = 300, 12
    emb = rng.normal(size=(n_items, d)).astype(np.float32)
    emb[0] = 0
    has_text = rng.random(n_items) > 0.2
    has_text[0] = False
    emb[~has_text] = 0
    labels = tf.item_clusters(emb, has_text, 5, seed=1)
    assert (labels[~has_text] == -1).all() and set(labels[has_text]) == set(range(5))
    assert np.array_equal(labels, tf.item_clusters(emb, has_text, 5, seed=1))
    lens = rng.integers(0, 40, size=60)
    lens[0] = 0
    offsets = np.concatenate([[0], np.cumsum(lens)])
    seq_items = rng.integers(1, n_items, size=int(offsets[-1]))
    for include_valid in (False, True):
        got = tf.cluster_profiles(emb, labels, seq_items, offsets, 4, include_valid)
        want = _reference_profiles(emb, labels, seq_items, offsets, 4, include_valid)
        np.testing.assert_allclose(got, want, atol=1e-5)
    # Food-Kitchen size: 7,145 users, 24 items each on average, 28,096 items of 384 dims
    n_items, n_users = 28096, 7145
    emb = rng.normal(size=(n_items, 384)).astype(np.float32)
    labels = rng.integers(0, 10, size=n_items)
    offsets = np.concatenate([[0], np.cumsum(rng.integers(10, 40, size=n_users))])
    seq_items = rng.integers(1, n_items, size=int(offsets[-1]))
    t = time.perf_counter()
    prof = tf.cluster_profiles(emb, labels, seq_items, offsets, 15, False)
    assert time.perf_counter() - t < 2.0 and prof.shape == (n_users, 384)


def test_build_script(tiny_text, tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(REPO / 'dataset_scripts'))
    try:
        import build_text_embeddings as script
    finally:
        sys.path.pop(0)
    args = ['build_text_embeddings.py', '--dataset=tiny'] + [f'--{k}={v}' for k, v in TEXT.items()] + \
           [f'--data_path={tmp_path / "data"}{os.sep}', f'--cache_dir={tmp_path / "cache"}', '--show_progress=False',
            '--eval_neg_num=10']
    monkeypatch.setattr(sys, 'argv', args)
    assert script.main() == 0
    out = capsys.readouterr().out
    assert 'items/s' in out and 'text-tiny-' in out and 'without text' in out
    monkeypatch.setattr(sys, 'argv', args + ['--text_encoder=nope'])
    assert script.main() == 2
    assert 'text_encoder: [nope]' in capsys.readouterr().err


@pytest.mark.slow
def test_real_food_kitchen(tmp_path, monkeypatch):
    """The real data (skipped without ../shared/data), prepared into tmp_path; the caches go to the
    repository's saved/cache/ (the default cache_dir), so only the first run encodes (about 11 min
    with 2 threads on a shared machine)."""
    raw = shared_food_kitchen()
    if raw is None:
        pytest.skip('../shared/data/food_kitchen is not available')
    monkeypatch.setenv('RECBOLE_ORTHO_DATA', str(raw.parent))
    config = tf.add_text_defaults(Config(model='SASRec', dataset='food_kitchen', config_dict={
        'data_path': str(tmp_path / 'dataset') + os.sep, 'cache_dir': str(REPO / 'saved' / 'cache'),
        'show_progress': False}))
    data = create_dataset(config)
    feats = tf.load_text_features(config, data)
    assert feats.n_items_domain == {0: 11837, 1: 16258}
    assert feats.n_missing == {0: 4236, 1: 502}                  # 23,357 items have a title
    assert feats.global_table.shape == (28096, 384) and feats.domain_table.shape == (28096, 128)
    assert feats.user_profiles.shape == (7145, 384)
    assert np.allclose(np.linalg.norm(feats.user_profiles[1:], axis=1), 1, atol=1e-4)
