"""Per-user results from ranks files: loading (clear errors), tie rules, paired user-level tests
and the hierarchical bootstrap, on constructed ranks with hand-computed answers."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from recbole_ortho.analysis.ranks import (RanksError, configuration_difference, hierarchical_bootstrap, load_ranks,
                                          paired_user_test, ranks_path, run_tie_rule, user_metric)


def write_ranks(path, rank, users=None, domain=None, ties=None, n_neg=999):
    """A ranks file with the same entries in both splits."""
    rank = np.asarray(rank, dtype=np.int32)
    n = len(rank)
    users = np.array([f'u{i}' for i in range(n)]) if users is None else np.asarray(users, dtype=str)
    domain = np.zeros(n, np.int8) if domain is None else np.asarray(domain, dtype=np.int8)
    ties = np.zeros(n, np.int32) if ties is None else np.asarray(ties, dtype=np.int32)
    arrays = {}
    for split in ('valid', 'test'):
        arrays.update({f'{split}_user': users, f'{split}_domain': domain, f'{split}_rank': rank,
                       f'{split}_ties': ties, f'{split}_n_neg': np.full(n, n_neg, np.int32)})
    np.savez(path, **arrays)
    return str(path)


def test_ranks_path_and_tie_rule_of_a_result():
    assert ranks_path('runs/x/result.json') == 'runs/x/result.ranks.npz'
    assert ranks_path('out/r') == 'out/r.ranks.npz'
    assert run_tie_rule({'config': {'eval_ties': 'average'}}) == 'average'
    assert run_tie_rule({'config': {}}) == 'optimistic' and run_tie_rule({}) == 'optimistic'


def test_load_ranks_errors_name_the_file(tmp_path):
    with pytest.raises(RanksError, match=r'nope\.ranks\.npz: no ranks file'):
        load_ranks(tmp_path / 'nope.ranks.npz')
    bad = tmp_path / 'bad.ranks.npz'
    bad.write_bytes(b'not a zip file')
    with pytest.raises(RanksError, match=r'bad\.ranks\.npz: not a readable ranks file'):
        load_ranks(bad)
    p = tmp_path / 'short.ranks.npz'
    np.savez(p, test_user=np.array(['a']))
    with pytest.raises(RanksError, match=r'short\.ranks\.npz: array valid_user missing'):
        load_ranks(p)
    p = write_ranks(tmp_path / 'inc.ranks.npz', [1, 5], ties=[0, 996], n_neg=999)     # 5 + 996 > 1000
    with pytest.raises(RanksError, match=r"inc\.ranks\.npz: valid user 'u1': rank 5, ties 996"):
        load_ranks(p)
    p = write_ranks(tmp_path / 'dup.ranks.npz', [1, 2], users=['a', 'a'])
    with pytest.raises(RanksError, match='occurs twice'):
        load_ranks(p)
    p = write_ranks(tmp_path / 'ok.ranks.npz', [1, 2], users=['a', 'a'], domain=[0, 1])   # one token, two domains
    r = load_ranks(p)
    assert set(r) == {'valid', 'test'} and list(r['test']['rank']) == [1, 2]


def test_user_metric_tie_rules_hand_computed(tmp_path):
    r = load_ranks(write_ranks(tmp_path / 't.ranks.npz', [1, 3, 12], ties=[1, 0, 0]))['test']
    # user 0: rank 1 with one tie -> optimistic 1, pessimistic rank 2: 1 / log2(3), average the mean of both
    assert user_metric(r, 'ndcg@10', 'optimistic') == pytest.approx([1.0, 0.5, 0.0])
    assert user_metric(r, 'ndcg@10', 'pessimistic') == pytest.approx([1 / math.log2(3), 0.5, 0.0])
    assert user_metric(r, 'ndcg@10', 'average') == pytest.approx([(1 + 1 / math.log2(3)) / 2, 0.5, 0.0])
    assert user_metric(r, 'mrr', 'optimistic') == pytest.approx([1.0, 1 / 3, 1 / 12])


def test_paired_user_test_hand_computed(tmp_path):
    # five users paired by token and domain (stored in another order in b), one user only in b and a user of
    # the same token in the other domain that must not be paired with it:
    #   u0: 1 vs 1 -> 0;   u1: 1 vs 3 -> 1 - 0.5 = 0.5;   u2: 3 vs 1 -> -0.5;
    #   u3: 1 vs 20 -> 1 - 0 = 1;   u4: 1 vs 7 -> 1 - 1 / log2(8) = 2 / 3
    a = load_ranks(write_ranks(tmp_path / 'a.ranks.npz', [1, 1, 3, 1, 1, 1], users=['u0', 'u1', 'u2', 'u3', 'u4', 'u5'],
                               domain=[0, 0, 0, 0, 0, 1]))
    b = load_ranks(write_ranks(tmp_path / 'b.ranks.npz', [7, 20, 1, 3, 1, 1, 2], users=['u4', 'u3', 'u2', 'u1', 'u0', 'u9', 'u5'],
                               domain=[0, 0, 0, 0, 0, 0, 0]))
    r = paired_user_test(a, b)
    assert r['n_users'] == 5 and r['n_only_a'] == 1 and r['n_only_b'] == 2
    assert r['mean_diff'] == pytest.approx(1 / 3)
    # differences 0, 0.5, -0.5, 1, 2/3: mean 1/3, sd sqrt(50) / 12 -> t = (1/3) / (sd / sqrt 5) = 4 / sqrt 10
    t = 4 / math.sqrt(10)
    assert r['t'] == pytest.approx(t) and r['p_t'] == pytest.approx(2 * sps.t.sf(t, 4))
    # Pratt ranks of |d|: 0 -> 1, 0.5 and 0.5 -> 2.5, 2/3 -> 4, 1 -> 5; R+ = 2.5 + 4 + 5 = 11.5. Subset sums of
    # {2.5, 2.5, 4, 5}: 0 2.5 2.5 4 5 5 6.5 6.5 7.5 7.5 9 9 10 11.5 11.5 14 -> 3 of 16 are >= 11.5: p = 2 * 3 / 16
    assert r['wilcoxon_method'] == 'exact' and r['n_zero'] == 1
    assert r['p_wilcoxon'] == pytest.approx(0.375)
    # domain B alone: u5 (rank 1) is in b only in domain A -> nothing shared
    with pytest.raises(RanksError, match='share no test user in domain B'):
        paired_user_test(a, b, domain='B')


def test_hierarchical_bootstrap_known_answers():
    # every user gains exactly 0.5 in every seed pair: the interval collapses to it
    r = hierarchical_bootstrap({1: np.full(50, 0.5), 2: np.full(80, 0.5), 3: np.full(30, 0.5)}, n_boot=500)
    assert r['estimate'] == 0.5 and r['ci_low'] == pytest.approx(0.5) and r['ci_high'] == pytest.approx(0.5)
    assert r['n_seeds'] == 3 and r['n_users'] == [50, 80, 30]
    # a symmetric null: half the users gain 0.5, half lose it, in every seed -> estimate 0, interval around 0
    null = {s: np.r_[np.full(100, 0.5), np.full(100, -0.5)] for s in (1, 2, 3)}
    r = hierarchical_bootstrap(null, n_boot=1000, seed=1)
    assert r['estimate'] == 0.0 and r['ci_low'] < 0 < r['ci_high'] and r['ci_high'] < 0.15
    assert hierarchical_bootstrap(null, n_boot=200, seed=3) == hierarchical_bootstrap(null, n_boot=200, seed=3)
    # the seed level is resampled: seed 1's users all gain 0.5, seed 2's none. A resample is (s1, s1) -> 0.5,
    # (s1, s2) or (s2, s1) -> 0.25, (s2, s2) -> 0, with chances 1/4, 1/2, 1/4: the 95 % interval is [0, 0.5]
    r = hierarchical_bootstrap({1: np.full(40, 0.5), 2: np.zeros(60)}, n_boot=2000)
    assert r['estimate'] == 0.25 and r['ci_low'] == 0.0 and r['ci_high'] == 0.5
    with pytest.raises(ValueError):
        hierarchical_bootstrap({1: np.array([])})


def test_configuration_difference_from_files(tmp_path):
    runs_a, runs_b = {}, {}
    for s in (1, 2, 3):
        runs_a[s] = (load_ranks(write_ranks(tmp_path / f'a{s}.ranks.npz', [1] * 20)), 'optimistic')
        runs_b[s] = (load_ranks(write_ranks(tmp_path / f'b{s}.ranks.npz', [3] * 20, ties=[1] * 20)), 'pessimistic')
    runs_b[4] = runs_b[1]                                                 # a seed only b has is left out
    r = configuration_difference(runs_a, runs_b, n_boot=300)
    # b pessimistic: rank 3 + 1 tie = 4 -> 1 / log2(5); a: 1
    gain = 1 - 1 / math.log2(5)
    assert r['seeds'] == [1, 2, 3] and r['tie_rules'] == ['optimistic', 'pessimistic']
    assert r['bootstrap']['estimate'] == pytest.approx(gain) and r['bootstrap']['ci_low'] == pytest.approx(gain)
    assert r['per_seed'][2]['n_users'] == 20 and r['per_seed'][2]['mean_diff'] == pytest.approx(gain)
    with pytest.raises(RanksError, match='share no seed'):
        configuration_difference({9: runs_a[1]}, runs_b)


def test_a_real_runs_ranks_average_to_its_reported_metrics(tiny, tmp_path, monkeypatch):
    """A tiny ABXI run with save_ranks: the per-user NDCG@10 of its ranks file, under its tie rule, averages
    to the run's reported test NDCG@10 in each domain."""
    import json
    from recbole_ortho.quick_start import run_recbole_ortho
    monkeypatch.setattr('sys.argv', ['pytest'])
    _, cfg = tiny
    out = tmp_path / 'r.json'
    res = run_recbole_ortho(model='ABXI', dataset='tiny', config_dict=dict(
        cfg, embedding_size=16, inner_size=24, rd=2, ri=4, n_heads=2, n_neg_per_domain=8, epochs=1, warmup_epochs=0,
        save_model=False, save_ranks=True, result_file=str(out)))
    ranks = load_ranks(ranks_path(str(out)))
    rule = run_tie_rule(json.loads(out.read_text()))
    for d, code in (('A', 0), ('B', 1)):
        split = {k: v[ranks['test']['domain'] == code] for k, v in ranks['test'].items()}
        assert len(split['rank']) == res['test'][d]['n_users']
        assert user_metric(split, 'ndcg@10', rule).mean() == pytest.approx(res['test'][d]['ndcg@10'], rel=1e-9)
    same = paired_user_test(ranks, ranks)                                  # a run against itself: all zero
    assert same['mean_diff'] == 0 and same['p_wilcoxon'] == 1.0 and same['n_zero'] == same['n_users']
