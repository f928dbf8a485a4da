"""Metrics against numbers computed by hand."""

import math

import numpy as np
import pytest
import torch

from recbole_ortho.evaluator import aggregate_by_domain, compute_metrics, full_rank, sampled_rank

METRICS = ['ndcg@1', 'ndcg@10', 'hit@5', 'hit@10', 'hit@20', 'mrr', 'auc']


def test_sampled_rank_counts_strictly_higher_and_ties_apart():
    # target in column 0
    s = torch.tensor([[0.5, 0.9, 0.1, 0.5, 0.7],     # higher: 0.9, 0.7 -> rank 3; one tie (0.5)
                      [1.0, 0.0, 0.0, 0.0, 0.0],     # rank 1
                      [0.0, 0.1, 0.2, 0.3, 0.4]])    # rank 5
    rank, n, ties = sampled_rank(s)
    assert rank.tolist() == [3, 1, 5]
    assert n.tolist() == [4, 4, 4]
    assert ties.tolist() == [1, 0, 0]


def test_tie_rules_hand_computed():
    """Target at rank 2 with 3 tied candidates: its rank is 2, 3, 4 or 5 with equal chance."""
    rank, n, ties = torch.tensor([2, 1]), torch.tensor([9, 9]), torch.tensor([3, 0])
    names = ['hit@3', 'ndcg@3', 'mrr', 'auc']
    opt = compute_metrics(names, rank, n, ties, 'optimistic')
    pes = compute_metrics(names, rank, n, ties, 'pessimistic')
    avg = compute_metrics(names, rank, n, ties, 'average')
    l3, l4 = 1 / math.log2(3), 1 / math.log2(4)
    assert opt['hit@3'].tolist() == [1.0, 1.0] and pes['hit@3'].tolist() == [0.0, 1.0]
    assert avg['hit@3'].tolist() == [0.5, 1.0]                               # ranks 2, 3 of 2..5 hit
    assert opt['ndcg@3'][0].item() == pytest.approx(l3) and pes['ndcg@3'][0].item() == 0.0
    assert avg['ndcg@3'][0].item() == pytest.approx((l3 + l4) / 4)
    assert avg['mrr'][0].item() == pytest.approx((1 / 2 + 1 / 3 + 1 / 4 + 1 / 5) / 4)
    assert pes['mrr'][0].item() == pytest.approx(1 / 5) and opt['mrr'][0].item() == pytest.approx(1 / 2)
    assert avg['auc'][0].item() == pytest.approx((9 - 2.5) / 9)              # expected rank 3.5
    for m in (opt, pes, avg):                                                 # no tie: the rules agree
        assert m['ndcg@3'][1].item() == 1.0 and m['mrr'][1].item() == 1.0
    with pytest.raises(Exception, match='eval_ties'):
        compute_metrics(names, rank, n, ties, 'random')


def test_evaluator_applies_tie_rule_and_counts_tied_targets():
    """A model that scores every item 0: each target ties with all its candidates."""
    from recbole.data.interaction import Interaction
    from recbole_ortho.evaluator import CDSREvaluator

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def full_sort_predict(self, batch):
            s = torch.zeros(3, 5)
            s[2, 3] = 1.0                          # user 2: its target 3 scores above its candidate 4
            return s

    batch = Interaction({'item_id': torch.tensor([1, 3, 3]), 'item_id_list': torch.tensor([[2], [1], [1]]),
                         'domain_id': torch.tensor([0, 1, 1]), 'user_id': torch.tensor([1, 2, 3]),
                         'candidates': torch.tensor([[1, 2], [3, 4], [3, 4]])})

    class Data:
        domain_range = {0: (1, 3), 1: (3, 5)}
        user_tokens = np.array(['[PAD]', 'u1', 'u2', 'u3'])
    out = {}
    for rule in ('optimistic', 'average', 'pessimistic'):
        cfg = {'metrics': ['mrr'], 'eval_protocol': 'sampled', 'ITEM_ID_FIELD': 'item_id', 'LIST_SUFFIX': '_list',
               'USER_ID_FIELD': 'user_id', 'show_progress': False, 'eval_ties': rule}
        ev = CDSREvaluator(cfg, Data())
        out[rule] = ev.evaluate(Model(), [batch])
    assert out['optimistic']['A']['mrr'] == 1.0 and out['pessimistic']['A']['mrr'] == 0.5
    assert out['average']['A']['mrr'] == pytest.approx(0.75)
    assert out['average']['B']['mrr'] == pytest.approx((0.75 + 1.0) / 2)
    assert (out['average']['A']['n_tied_targets'], out['average']['B']['n_tied_targets'],
            out['average']['all']['n_tied_targets']) == (1, 1, 2)
    r = ev.last_ranks
    assert r['user'].tolist() == ['u1', 'u2', 'u3'] and r['domain'].tolist() == [0, 1, 1]
    assert r['rank'].tolist() == [1, 1, 1] and r['ties'].tolist() == [1, 1, 0] and r['n_neg'].tolist() == [1, 1, 1]


def test_rank_metrics_hand_computed():
    rank = torch.tensor([1, 3, 10, 11, 25])
    n = torch.tensor([999, 999, 999, 999, 999])
    m = compute_metrics(METRICS, rank, n)
    assert m['ndcg@1'].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    # 1/log2(r+1): r=1 -> 1, r=3 -> 1/2, r=10 -> 1/log2(11) = 0.2890648263...
    assert m['ndcg@10'][0].item() == pytest.approx(1.0)
    assert m['ndcg@10'][1].item() == pytest.approx(0.5)
    assert m['ndcg@10'][2].item() == pytest.approx(0.28906482631788443)
    assert m['ndcg@10'][3].item() == 0.0
    assert m['hit@5'].tolist() == [1, 1, 0, 0, 0]
    assert m['hit@10'].tolist() == [1, 1, 1, 0, 0]
    assert m['hit@20'].tolist() == [1, 1, 1, 1, 0]
    assert m['mrr'].tolist() == pytest.approx([1.0, 1 / 3, 0.1, 1 / 11, 0.04])
    # auc = (n - (r-1)) / n: r=1 -> 1, r=3 -> 997/999, r=25 -> 975/999
    assert m['auc'].tolist() == pytest.approx([1.0, 997 / 999, 990 / 999, 989 / 999, 975 / 999])


def test_full_rank_excludes_history_and_other_domain():
    # items 0 (pad), 1..3 domain B, 4..7 domain A
    scores = torch.tensor([[9.0, 5.0, 6.0, 1.0, 2.0, 3.0, 8.0, 7.0]])
    target = torch.tensor([5])            # score 3.0, domain A = [4, 8)
    history = torch.tensor([[6, 0, 0]])   # item 6 (score 8.0) is history: excluded
    rank, n, ties = full_rank(scores, target, history, torch.tensor([4]), torch.tensor([8]))
    # candidates: 4 (2.0), 7 (7.0) -> one higher -> rank 2; negatives: 2
    assert rank.tolist() == [2]
    assert n.tolist() == [2] and ties.tolist() == [0]


def test_full_rank_target_in_history_stays_candidate():
    scores = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    rank, n, _ = full_rank(scores, torch.tensor([2]), torch.tensor([[2, 1]]), torch.tensor([1]), torch.tensor([4]))
    # history item 1 excluded, target 2 kept; item 3 higher -> rank 2, one negative
    assert rank.tolist() == [2] and n.tolist() == [1]


def test_aggregate_by_domain_means():
    vals = {'mrr': np.array([1.0, 0.5, 0.25, 0.0])}
    dom = np.array([0, 0, 1, 1])
    r = aggregate_by_domain(vals, dom)
    assert r['A']['mrr'] == 0.75 and r['B']['mrr'] == 0.125 and r['all']['mrr'] == 0.4375
    assert (r['A']['n_users'], r['B']['n_users'], r['all']['n_users']) == (2, 2, 4)
    r = aggregate_by_domain(vals, np.array([0, 0, 0, 0]))
    assert r['B']['n_users'] == 0 and math.isnan(r['B']['mrr'])


def test_metric_names_validated():
    from recbole_ortho.config.configurator import ConfigError, parse_metric
    assert parse_metric('NDCG@10') == ('ndcg', 10)
    assert parse_metric('mrr') == ('mrr', None)
    for bad in ('ndcg', 'recall@10', 'mrr@5', 'hit@0'):
        with pytest.raises(ConfigError):
            parse_metric(bad)


def test_evaluation_pass_is_vectorised_and_fast():
    """7,144 users x 1,000 candidates over 28k items: the metric part takes well under a second."""
    import time
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(7144, 1000, generator=g)
    t = time.perf_counter()
    rank, n, ties = sampled_rank(scores)
    compute_metrics(METRICS, rank, n, ties, 'average')
    assert time.perf_counter() - t < 2.0


def test_step_summaries_hand_computed():
    from recbole_ortho.evaluator.evaluator import step_summaries
    s = step_summaries(np.array([0.5, -0.3, 0.1, -0.1]))
    assert s['pooled_signed'] == pytest.approx(0.05) and s['paper'] == pytest.approx(0.05)
    assert s['pooled_abs'] == pytest.approx(0.25) and s['median_abs'] == pytest.approx(0.2)
    neg = step_summaries(np.array([-0.4, -0.2]))
    assert neg['pooled_signed'] == pytest.approx(-0.3) and neg['paper'] == pytest.approx(0.3)
    assert s['n_steps'] == 4 and s['no_key_steps'] == 0
    empty = step_summaries(np.array([]))
    assert all(math.isnan(empty[k]) for k in ('paper', 'pooled_signed', 'pooled_abs', 'median_abs'))
    assert empty['n_steps'] == 0 and empty['no_key_steps'] == 0


def test_step_summaries_leave_out_and_count_steps_without_key():
    from recbole_ortho.evaluator.evaluator import step_summaries
    s = step_summaries(np.array([0.5, np.nan, -0.3, np.nan, np.nan]))     # NaN: a query without any key
    assert s['n_steps'] == 2 and s['no_key_steps'] == 3
    assert s['pooled_signed'] == pytest.approx(0.1) and s['pooled_abs'] == pytest.approx(0.4)
    assert s['median_abs'] == pytest.approx(0.4)
    only = step_summaries(np.array([np.nan, np.nan]))
    assert math.isnan(only['paper']) and only['n_steps'] == 0 and only['no_key_steps'] == 2


def test_evaluator_pools_step_values_per_target_domain():
    """A model that records per-step values: they are pooled over all steps of the users whose
    target is in A (resp. B, all), not averaged per user."""
    from recbole.data.interaction import Interaction
    from recbole_ortho.evaluator import CDSREvaluator

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def start_recording(self):
            self.rec = True

        def stop_recording(self):
            self.rec = False

        def pop_stats(self):
            return {}

        def pop_steps(self):          # user 0 (A): 3 steps, user 1 (B): 1 step, user 2 (A): 1 step
            return {'s': (torch.tensor([0.2, -0.4, 0.6, 0.8, -1.0]), torch.tensor([0, 0, 0, 1, 2]))}

        def full_sort_predict(self, batch):
            return torch.zeros(3, 5)

    batch = Interaction({'item_id': torch.tensor([1, 3, 2]), 'item_id_list': torch.tensor([[2], [1], [1]]),
                         'domain_id': torch.tensor([0, 1, 0]), 'candidates': torch.tensor([[1, 2], [3, 4], [2, 3]])})
    cfg = {'metrics': ['mrr'], 'eval_protocol': 'sampled', 'ITEM_ID_FIELD': 'item_id', 'LIST_SUFFIX': '_list',
           'USER_ID_FIELD': 'user_id', 'show_progress': False, 'eval_ties': 'average'}

    class Data:
        domain_range = {0: (1, 3), 1: (3, 5)}
    res = CDSREvaluator(cfg, Data()).evaluate(Model(), [batch])
    a = [0.2, -0.4, 0.6, -1.0]
    assert res['A']['s/pooled_signed'] == pytest.approx(np.mean(a)) and res['A']['s/paper'] == pytest.approx(0.15)
    assert res['A']['s/pooled_abs'] == pytest.approx(np.mean(np.abs(a))) and res['A']['s/median_abs'] == pytest.approx(0.5)
    assert res['B']['s/pooled_signed'] == pytest.approx(0.8) and res['all']['s/median_abs'] == pytest.approx(0.6)
