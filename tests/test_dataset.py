"""Cross-domain sequential dataset: sequences, split, loaders, negatives, cache, errors."""

import sys

import numpy as np
import pytest

from recbole_ortho.config import Config, ConfigError
from recbole_ortho.data import EvalDataLoader, TrainDataLoader, create_dataset
from recbole_ortho.data.dataset import DataError, right_padded, sample_negatives
from recbole_ortho.utils.arrays import concat_ranges
from tests.conftest import HEADER, write_tiny_dataset


@pytest.fixture(autouse=True)
def _argv(monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['pytest'])


def make(cfg, model='SASRec', dataset='tiny', **over):
    d = dict(cfg)
    d.update(over)
    return Config(model=model, dataset=dataset, config_dict=d)


def test_right_padded_and_ranges():
    values = np.arange(100, 120)
    m = right_padded(np.array([0, 10]), np.array([2, 0]), np.array([3, 1]), values, 4)
    assert m.tolist() == [[102, 103, 104, 0], [110, 0, 0, 0]]
    assert concat_ranges(np.array([5, 0, 9]), np.array([2, 0, 3])).tolist() == [5, 6, 9, 10, 11]


def test_sequences_rebuilt_exactly_with_ties(tiny):
    seqs, cfg = tiny
    data = create_dataset(make(cfg))
    tok2u = {t: i for i, t in enumerate(data.user_tokens)}
    for user, seq in seqs.items():
        u = tok2u[user]
        got = data.item_tokens[data.seq_items[data.seq_offsets[u]:data.seq_offsets[u + 1]]].tolist()
        assert got == seq
    # domain ranges and item_domain agree with the tokens
    for i in range(1, data.n_items):
        assert data.item_domain[i] == (0 if data.item_tokens[i].startswith('a') else 1)
    lo_a, hi_a = data.domain_range[0]
    assert all(data.item_tokens[i].startswith('a') for i in range(lo_a, hi_a))


def test_leave_one_out_split_and_loaders(tiny):
    seqs, cfg = tiny
    config = make(cfg)
    data = create_dataset(config)
    L = config['MAX_ITEM_LIST_LENGTH']
    valid = EvalDataLoader(config, data, 'valid').tensors
    test = EvalDataLoader(config, data, 'test').tensors
    train = TrainDataLoader(config, data, 'per_user', shuffle=False).tensors
    prefix = TrainDataLoader(config, data, 'prefix', shuffle=False).tensors
    tok = data.item_tokens
    row = {int(u): k for k, u in enumerate(valid['user_id'])}
    prow = {}
    for k, u in enumerate(prefix['user_id'].tolist()):
        prow.setdefault(u, []).append(k)
    for k_train, u in enumerate(train['user_id'].tolist()):
        seq = seqs[data.user_tokens[u]]
        k = row[u]
        # test target = last item, valid = second-to-last, histories are what precedes them (last L)
        assert tok[test['item_id'][k]] == seq[-1]
        assert tok[valid['item_id'][k]] == seq[-2]
        n = int(test['item_length'][k])
        assert [tok[i] for i in test['item_id_list'][k][:n]] == seq[:-1][-L:]
        assert int(valid['item_length'][k]) == min(len(seq) - 2, L)
        assert valid['domain_id'][k] == (0 if seq[-2][0] == 'a' else 1)
        # per-user training row: inputs seq[:-2][:-1], targets shifted by one (last L+1 kept)
        tr = seq[:-2][-(L + 1):]
        n = int(train['item_length'][k_train])
        assert [tok[i] for i in train['item_id_list'][k_train][:n]] == tr[:-1]
        assert [tok[i] for i in train['target_id_list'][k_train][:n]] == tr[1:]
        assert train['item_id_list'][k_train][n:].eq(0).all()
        # prefix rows: one per training target after the first item
        rows = prow[u]
        assert len(rows) == len(seq) - 3
        assert [tok[int(prefix['item_id'][r])] for r in rows] == seq[1:-2]
        r = rows[-1]
        m = int(prefix['item_length'][r])
        assert [tok[i] for i in prefix['item_id_list'][r][:m]] == seq[:-3][-L:]


def test_sampled_negatives_fixed_distinct_in_domain_and_not_own(tiny):
    seqs, cfg = tiny
    config = make(cfg)
    data = create_dataset(config)
    loader = EvalDataLoader(config, data, 'test')
    cand = loader.tensors['candidates'].numpy()
    assert cand.shape[1] == 1 + config['eval_neg_num']
    for k, u in enumerate(loader.tensors['user_id'].tolist()):
        own = set(data.seq_items[data.seq_offsets[u]:data.seq_offsets[u + 1]].tolist())
        neg = cand[k, 1:]
        assert len(set(neg.tolist())) == len(neg)
        assert not own & set(neg.tolist())
        assert (data.item_domain[neg] == data.item_domain[cand[k, 0]]).all()
    # same eval_seed -> same negatives, whatever the training seed; another eval_seed -> others
    data2 = create_dataset(make(cfg, seed=7, cache_dir=''))
    assert np.array_equal(data2.test_neg, data.test_neg)
    data3 = create_dataset(make(cfg, eval_seed=1, cache_dir=''))
    assert not np.array_equal(data3.test_neg, data.test_neg)


def test_sample_negatives_errors_when_domain_too_small():
    rng = np.random.default_rng(0)
    seq = np.array([1, 2, 3])
    with pytest.raises(DataError, match='eval_neg_num'):
        sample_negatives(rng, np.array([0]), seq, np.array([0, 3]), np.array([[1, 5]]), 6, 5)
    out = sample_negatives(rng, np.array([0]), seq, np.array([0, 3]), np.array([[1, 7]]), 7, 3)
    assert sorted(out[0].tolist()) == [4, 5, 6]


def test_cache_is_used_and_invalidated(tiny, tmp_path):
    seqs, cfg = tiny
    d1 = create_dataset(make(cfg))
    files = list((tmp_path / 'cache').glob('tiny-*.npz'))
    assert len(files) == 1
    d2 = create_dataset(make(cfg))
    assert np.array_equal(d1.seq_items, d2.seq_items) and np.array_equal(d1.test_neg, d2.test_neg)
    # changing the atomic files changes the key
    write_tiny_dataset(tmp_path / 'data', seed=3)
    d3 = create_dataset(make(cfg))
    assert len(list((tmp_path / 'cache').glob('tiny-*.npz'))) == 2
    assert not np.array_equal(d1.seq_items, d3.seq_items)


def test_duplicate_seq_idx_is_an_error(tmp_path, monkeypatch):
    from tests.conftest import tiny_config_dict
    monkeypatch.chdir(tmp_path)
    for dom, rows in (('A', 'u1\ta1\t1\t0\nu1\ta2\t1\t1\nu1\ta3\t1\t2\n'), ('B', 'u1\tb1\t1\t1\n')):
        d = tmp_path / 'data' / 'dup' / f'dup_{dom}'
        d.mkdir(parents=True)
        (d / f'dup_{dom}.inter').write_text(HEADER + rows)
    with pytest.raises(DataError, match='seq_idx=1'):
        create_dataset(make(tiny_config_dict(tmp_path), dataset='dup'))


def test_shared_items_are_an_error(tmp_path, monkeypatch):
    from tests.conftest import tiny_config_dict
    monkeypatch.chdir(tmp_path)
    for dom in 'AB':
        d = tmp_path / 'data' / 'ov' / f'ov_{dom}'
        d.mkdir(parents=True)
        (d / f'ov_{dom}.inter').write_text(HEADER + ''.join(f'u1\tx{k}\t1\t{k + (0 if dom == "A" else 3)}\n'
                                                            for k in range(3)))
    with pytest.raises(DataError, match='both domains'):
        create_dataset(make(tiny_config_dict(tmp_path), dataset='ov'))


def test_missing_dataset_names_known_ones(tmp_path, monkeypatch):
    from tests.conftest import tiny_config_dict
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match='food_kitchen'):
        create_dataset(make(tiny_config_dict(tmp_path), dataset='nope'))


@pytest.mark.parametrize('key,value,match', [
    ('eval_protocol', 'popular', 'eval_protocol'),
    ('metrics', ['ndcg@10', 'recall@10'], 'metrics'),
    ('valid_metric', 'foo', 'metrics'),
    ('epochs', 0, 'epochs'),
    ('train_batch_size', 'big', 'train_batch_size'),
    ('learning_rate', -1.0, 'learning_rate'),
    ('valid_domain', 'C', 'valid_domain'),
    ('learner', 'lion', 'learner'),
])
def test_invalid_values_name_the_key(tiny, key, value, match):
    _, cfg = tiny
    with pytest.raises(ConfigError, match=match):
        make(cfg, **{key: value})


def test_unknown_model_lists_known(tiny):
    _, cfg = tiny
    with pytest.raises(ValueError, match='SASRec'):
        make(cfg, model='NoSuchModel')
