"""The bf16 accuracy page (recbole_ortho/analysis/precision.py): the acceptance rule on run stores
whose outcome is known by construction (hand-computed intervals), a bf16 request that fell back to
fp32 left out, and the page through a fixture registry (``--regenerate``, ``--check``, which fails
once a result changes)."""

import json
import math
import os

import numpy as np
import pytest
from scipy import stats as sps

from recbole_ortho.analysis import precision as P

SEEDS = (1, 2, 3)
#: fp32 NDCG@10 per seed (domain A; B is 0.1 lower): sample sd 0.01
FP32 = {1: 0.19, 2: 0.20, 3: 0.21}


def _write_run(sweep_dir, model, seed, prec, a, b, ran=None, emulated=False, ortho=None):
    from recbole_ortho.sweep.store import write_json
    rid = f'{model}-fk-s{seed}-{prec}'
    dom = {'A': {'n_users': 10, 'ndcg@10': a}, 'B': {'n_users': 10, 'ndcg@10': b}}
    if ortho is not None:
        dom['A']['ortho_cos_a@gca0/paper'], dom['B']['ortho_cos_b@gca0/paper'] = ortho
    dom['all'] = dict(dom['A'])
    res = {'model': model, 'test': dom, 'valid': dom, 'n_params': 100, 'epochs_run': 15, 'best_epoch': 12,
           'stop_reason': 'epoch_cap', 'wall_time_s': 600.0, 'precision': ran or prec,
           'config': {'seed': seed, 'precision': prec, 'epochs': 15, 'learning_rate': 0.001, 'warmup_epochs': 0,
                      'eval_neg_num': 999},
           'provenance': {'git_commit': 'a' * 40, 'git_dirty': False, 'precision': ran or prec,
                          'precision_emulated': emulated, 'device': {'cpu': 'Test CPU', 'threads': 2}},
           'trace': [{'epoch': e, 'train_loss': 1.0, 'valid_score': 0.1, 'train_time_s': 4.0 if prec == 'fp32' else 10.0,
                      'valid_time_s': 1.0} for e in range(15)]}
    d = os.path.join(sweep_dir, 'runs', rid)
    os.makedirs(d)
    write_json(os.path.join(d, 'spec.json'), {'run_id': rid, 'model': model, 'dataset': 'fk', 'seed': seed,
                                               'settings': {'precision': prec}, 'variant': f'precision="{prec}"'})
    write_json(os.path.join(d, 'result.json'), res)


def _store(sweep_dir, shifts):
    """ABXI with bf16 = fp32 + a small paired shift (accepted); CDSRNP with bf16 far off in B
    (not accepted); per seed ``shifts[seed]`` added to ABXI's bf16 in both domains."""
    for s in SEEDS:
        for model, off_b in (('ABXI', 0.0), ('CDSRNP', 0.03)):
            a, b = FP32[s], FP32[s] - 0.1
            _write_run(sweep_dir, model, s, 'fp32', a, b)
            sh = shifts[s] if model == 'ABXI' else 0.001 * s
            _write_run(sweep_dir, model, s, 'bf16', a + sh, b + sh + off_b, emulated=True)


SHIFTS = {1: 0.001, 2: -0.001, 3: 0.0005}


def _rows(tmp_path, shifts=SHIFTS):
    from recbole_ortho.analysis.report import load_rows
    sweep = str(tmp_path / 'sweep')
    _store(sweep, shifts)
    return load_rows(sweep), sweep


def test_the_rule_by_hand(tmp_path):
    rows, _ = _rows(tmp_path)
    models, fell_back = P.summarise(rows)
    assert [m['model'] for m in models] == ['ABXI', 'CDSRNP'] and fell_back == []
    abxi = models[0]
    d = abxi['domains']['A']
    diffs = [SHIFTS[s] for s in SEEDS]
    half = sps.t.ppf(0.975, 2) * np.std(diffs, ddof=1) / math.sqrt(3)
    assert d['diff']['mean'] == pytest.approx(np.mean(diffs))
    assert (d['diff']['ci_low'], d['diff']['ci_high']) == pytest.approx((np.mean(diffs) - half, np.mean(diffs) + half))
    assert d['band'] == pytest.approx(0.01)                 # the fp32 runs' seed sd
    assert d['band_ci'] == pytest.approx((0.01 * (2 / sps.chi2.ppf(0.975, 2)) ** 0.5,      # 3 seeds: df 2
                                          0.01 * (2 / sps.chi2.ppf(0.025, 2)) ** 0.5))
    assert d['decision'] == P.ACCEPTED and abxi['decision'] == P.ACCEPTED
    cd = models[1]                                          # B is 0.03 + 0.001 s off: its interval leaves +-0.01
    assert cd['domains']['A']['decision'] == P.ACCEPTED and cd['domains']['B']['decision'] == P.REJECTED
    assert cd['decision'] == P.REJECTED and 'B: [' in P._why(cd) and 'outside' in P._why(cd)
    assert abxi['emulated'] and abxi['epoch_s'] == {'fp32': pytest.approx(5.0), 'bf16': pytest.approx(11.0)}


def test_a_wide_interval_is_not_accepted_even_with_a_zero_mean(tmp_path):
    rows, _ = _rows(tmp_path, shifts={1: 0.012, 2: -0.012, 3: 0.0})     # mean 0, interval about +-0.03
    abxi = P.summarise(rows)[0][0]
    assert abxi['domains']['A']['diff']['mean'] == pytest.approx(0.0, abs=1e-12)
    assert abxi['domains']['A']['decision'] == P.REJECTED


def test_one_pair_is_pending_and_a_fallback_is_left_out(tmp_path):
    from recbole_ortho.analysis.report import load_rows
    sweep = str(tmp_path / 'sweep')
    _write_run(sweep, 'ABXI', 1, 'fp32', 0.2, 0.1)
    _write_run(sweep, 'ABXI', 1, 'bf16', 0.2, 0.1)
    _write_run(sweep, 'ABXI', 2, 'fp32', 0.21, 0.11)
    _write_run(sweep, 'ABXI', 2, 'bf16', 0.21, 0.11, ran='fp32')       # asked bf16, ran fp32
    models, fell_back = P.summarise(load_rows(sweep))
    assert [r['run_id'] for r in fell_back] == ['ABXI-fk-s2-bf16']
    assert models[0]['pairs'] == [1] and models[0]['decision'] == P.PENDING


def test_precision_page_regenerates_and_checks(tmp_path):
    from recbole_ortho.analysis.pages import check, regenerate
    results = tmp_path / 'results'
    results.mkdir()
    _store(str(results / 'sweeps' / 'prec'), SHIFTS)
    _write_run(str(results / 'sweeps' / 'prec'), 'ABXI_GCA', 1, 'fp32', 0.2, 0.1, ortho=(0.3, 0.25))
    (results / 'pages.yaml').write_text(
        'sources:\n  pr: {sweep: sweeps/prec}\n'
        'precision_pages:\n  - {page: prec.md, sweep: pr, pairs_planned: 4, title: "bf16 ({{ pr.n_runs }} runs)"}\n')
    reg = str(results / 'pages.yaml')
    assert regenerate(reg) == ['prec.md']
    text = (results / 'prec.md').read_text()
    assert text.startswith('# bf16 (13 runs)')
    assert '| ABXI | 3 | **accepted** (provisional: 3 of 4 pairs) |' in text
    assert '| CDSRNP | 3 | **not accepted** (provisional: 3 of 4 pairs) |' in text
    assert '| ABXI_GCA | 0 | **pending** |' in text
    assert '| ABXI_GCA | A | 0.300 | n/a |' in text                  # the orthogonality table
    assert 'yes (not bf16 hardware speed)' in text
    assert (results / 'prec_plots' / 'bf16_minus_fp32_ndcg10.png').stat().st_size > 1000
    ok, problems, _ = check(reg)
    assert ok, problems
    res_path = results / 'sweeps' / 'prec' / 'runs' / 'ABXI-fk-s1-bf16' / 'result.json'
    res = json.loads(res_path.read_text())
    res['test']['B']['ndcg@10'] += 0.05
    res_path.write_text(json.dumps(res))
    ok, problems, _ = check(reg)
    assert not ok and any('prec.md' in p for p in problems)


def test_registry_refuses_a_precision_page_without_a_sweep_source(tmp_path):
    from recbole_ortho.analysis.pages import Registry
    p = tmp_path / 'pages.yaml'
    p.write_text('sources:\n  x: {json: a.json}\nprecision_pages:\n  - {page: p.md, sweep: x, title: t}\n')
    with pytest.raises(ValueError, match=r"precision page p.md: sweep 'x' is not a sweep source"):
        Registry(p)



def test_readme_sentence_lists_each_decision(tmp_path):
    from recbole_ortho.analysis.pages import _precision_values
    rows, _ = _rows(tmp_path)
    V = {}
    _precision_values(V, rows)
    assert V['precision.verdicts'] == 'accepted for ABXI; not accepted for CDSRNP'
    one_pair = [r for r in rows if r['seed'] == 1 or r['model'] == 'ABXI']
    _precision_values(V, one_pair)
    assert V['precision.verdicts'] == 'accepted for ABXI; pending for CDSRNP'
    _precision_values(V, [])
    assert V['precision.verdicts'] == 'none yet'
