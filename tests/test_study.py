"""The converged study's page (recbole_ortho/analysis/study.py): each verdict rule on rows whose
outcome is known by construction, the tests against scipy, and the page through a fixture registry
(``--regenerate`` then ``--check``, which fails once a result changes)."""

import json
import math
import os

import numpy as np
import pytest
from scipy import stats as sps

from recbole_ortho.analysis import study
from recbole_ortho.analysis.study import FAILS, HOLDS, OPEN

SEEDS = (1, 2, 3, 4, 5)


def row(model, seed, a, b, role='base', ortho=(math.nan, math.nan), n_params=100, stop='early_stopping', d=None,
        label=None, config=None):
    r = {'model': model, 'seed': seed, 'base_model': 'ABXI' if model.endswith('_GCA') else None,
         'param_match': 'ABXI_GCA' if role == 'matched' else None, 'stop_reason': stop, 'n_params': n_params,
         'test_A_ndcg@10': a, 'test_B_ndcg@10': b, 'test_A_hit@10': 2 * a, 'test_B_hit@10': 2 * b,
         'ortho_A_paper': ortho[0], 'ortho_B_paper': ortho[1], 'wall_time_s': 3600.0, 'best_epoch': 9,
         'trace': [], 'settings': {} if d is None else {'embedding_size': d}, 'config': config or {},
         'result_path': '/nonexistent/result.json', 'variant': 'base', 'dataset': 'fk'}
    r['label'] = label or study.ROLE_LABEL[study.role(r)]
    return r


NOISE = {1: 0.001, 2: -0.002, 3: 0.0005, 4: 0.0015, 5: -0.001}


def main_arm(gain, stop_matched='early_stopping'):
    rows = []
    for s in SEEDS:
        base = 0.20 + 0.003 * s
        rows.append(row('ABXI', s, base, base - 0.05))
        rows.append(row('ABXI', s, base + 0.001, base - 0.049, role='matched', n_params=120,
                        stop=stop_matched if s == 5 else 'early_stopping'))
        rows.append(row('ABXI_GCA', s, base + 0.001 + gain + NOISE[s], base - 0.049 + gain - NOISE[s],
                        role='gca', ortho=(0.15 + 0.01 * s, 0.12 + 0.01 * s), n_params=120))
    return rows


def test_roles_and_families():
    rows = main_arm(0.01)
    assert [study.role(r) for r in rows[:3]] == ['base', 'matched', 'gca']
    assert {study.family(r) for r in rows} == {'ABXI'}


def test_primary_is_the_paired_t_test_over_converged_seeds_with_holm():
    rows = main_arm(0.01, stop_matched='epoch_cap')          # seed 5's matched run did not converge
    prim = study.primary(rows)
    assert [(c['family'], c['domain']) for c in prim] == [('ABXI', 'A'), ('ABXI', 'B')]
    for c, d in zip(prim, 'AB'):
        assert c['seeds'] == [1, 2, 3, 4]
        g = [r[f'test_{d}_ndcg@10'] for r in rows if study.role(r) == 'gca' and r['seed'] < 5]
        m = [r[f'test_{d}_ndcg@10'] for r in rows if study.role(r) == 'matched' and r['seed'] < 5]
        assert c['p_t'] == pytest.approx(sps.ttest_rel(g, m).pvalue)
        assert c['mean_diff'] == pytest.approx(np.mean(np.subtract(g, m)))
    ps = sorted(c['p_t'] for c in prim)                      # Holm over the two: min(1, 2 p1), max(that, p2)
    assert sorted(c['p_holm'] for c in prim) == pytest.approx([min(1, 2 * ps[0]), max(min(1, 2 * ps[0]), ps[1])])


def _verdict(rows, claim_index, scaling_rows=(), cause_rows=()):
    main = list(rows)
    abxi_gca = [r for r in main if study.role(r) == 'gca']
    v = study.verdicts(study.primary(main), study.ortho_summary(main), study.correlation_summary(main + list(cause_rows)),
                       study.scaling_summary(main + list(scaling_rows), 256), [],
                       study.cause_summary(list(cause_rows), abxi_gca))
    return v[claim_index]


def test_gca_beats_matched_holds_fails_or_stays_open_by_the_rule():
    assert _verdict(main_arm(0.01), 2)['status'] == HOLDS
    assert _verdict(main_arm(-0.01), 2)['status'] == FAILS
    open_ = _verdict(main_arm(0.0), 2)['status']
    assert open_.startswith(OPEN) and 'detectable effect' in open_
    few = main_arm(0.01)[:3]                                   # one seed: no test
    assert _verdict(few, 2)['status'] == f'{OPEN} (fewer than 2 converged seed pairs)'


def test_orthogonality_level_verdict():
    rows = main_arm(0.01)                                      # medians 0.18 (A) and 0.15 (B): within
    assert _verdict(rows, 0)['status'] == HOLDS
    assert 'ABXI A: median 0.180 over 5 runs (within)' in _verdict(rows, 0)['numbers']
    for r in rows:
        if study.role(r) == 'gca':
            r['ortho_A_paper'] += 0.1                          # A: 0.28 -> above the paper's range
    assert _verdict(rows, 0)['status'] == FAILS
    assert _verdict(rows[:6], 0)['status'].startswith(f'{OPEN} (fewer than 3')


def test_correlation_verdict_follows_the_sign_and_its_interval():
    rows = main_arm(0.01)
    for r in rows:                                             # NDCG falls as |cos| rises, in both domains
        if study.role(r) == 'gca':
            r['test_A_ndcg@10'] = 0.5 - r['ortho_A_paper'] + 0.0001 * NOISE[r['seed']]
            r['test_B_ndcg@10'] = 0.4 - r['ortho_B_paper'] - 0.0001 * NOISE[r['seed']]
    v = _verdict(rows, 1)
    assert v['status'] == HOLDS and 'r = -1.00' in v['numbers'] and '(paper -0.33)' in v['numbers']
    for r in rows:
        if study.role(r) == 'gca':
            r['test_A_ndcg@10'] = r['ortho_A_paper']
    assert _verdict(rows, 1)['status'] == FAILS
    assert study.detectable_r(10) == pytest.approx(math.tanh((sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) / math.sqrt(7)))


def test_correlation_verdict_with_three_runs_reads_the_t_test_not_the_bootstrap():
    """Three runs at r = +0.92: the percentile bootstrap interval excludes 0 (about ten distinct
    resamples), the t-test of r (1 degree of freedom) does not: the claim stays inconclusive."""
    rows = [r for r in main_arm(0.01) if r['seed'] <= 3]
    gca = [r for r in rows if study.role(r) == 'gca']
    for r, a in zip(gca, (0.190, 0.196, 0.193)):             # ortho 0.16, 0.17, 0.18 (A); 0.13, 0.14, 0.15 (B)
        r['test_A_ndcg@10'] = r['test_B_ndcg@10'] = a
    c = study.correlation_summary(rows)[0]['pooled']
    assert c['pearson'] == pytest.approx(0.5)                # hand: centred x (-1, 0, 1), y (-3, 3, 0) -> 3 / sqrt(2 * 18)
    assert c['pearson_p'] == pytest.approx(sps.pearsonr([0.16, 0.17, 0.18], [0.190, 0.196, 0.193]).pvalue)
    assert math.isnan(c['pearson_fisher_ci_low'])           # 3 points: no Fisher interval
    for r, a in zip(gca, (0.190, 0.193, 0.197)):             # r = +0.99 and p = 0.08: still not significant
        r['test_A_ndcg@10'] = r['test_B_ndcg@10'] = a
    c = study.correlation_summary(rows)[0]['pooled']
    assert c['pearson'] > 0.98 and c['pearson_ci_low'] > 0 and c['pearson_p'] > 0.05   # every resample r > 0
    v = _verdict(rows, 1)
    assert v['status'].startswith(OPEN) and 'too few to state a detectable' in v['status'], v
    assert 'p 0.0' in v['numbers']


def test_fisher_interval_hand_computed():
    from recbole_ortho.analysis.stats import correlation, fisher_interval
    lo, hi = fisher_interval(0.5, 12)                        # atanh(0.5) = 0.549306, 1.959964 / 3 = 0.653321
    assert (lo, hi) == pytest.approx((math.tanh(0.549306 - 0.653321), math.tanh(0.549306 + 0.653321)), abs=1e-6)
    assert lo == pytest.approx(-0.1036, abs=1e-4) and hi == pytest.approx(0.8345, abs=1e-4)
    assert all(math.isnan(v) for v in fisher_interval(0.5, 3))
    x, y = np.arange(8.0), np.array([1.0, 3, 2, 5, 4, 6, 8, 7])
    c = correlation(x, y)
    ref = sps.pearsonr(x, y).confidence_interval(0.95)
    assert (c['pearson_fisher_ci_low'], c['pearson_fisher_ci_high']) == pytest.approx((ref.low, ref.high))


def test_scaling_fit_and_verdict():
    main = main_arm(0.01)
    extra = []
    for d, n, shift in ((64, 30, -0.03), (128, 60, -0.015)):
        for s in SEEDS[:3]:
            base = 0.20 + 0.003 * s + shift
            extra += [row('ABXI', s, base, base - 0.05, n_params=n, d=d),
                      row('ABXI', s, base, base - 0.05, role='matched', n_params=int(n * 1.2), d=d),
                      row('ABXI_GCA', s, base + 0.01 + NOISE[s], base - 0.04 - NOISE[s], role='gca',
                          n_params=int(n * 1.2), d=d, ortho=(0.2, 0.2))]
    sc = study.scaling_summary(main + extra, 256)
    assert sc['sizes'] == [64, 128, 256]
    fit = [f for f in sc['fits'] if f['domain'] == 'A' and f['role'] == 'base'][0]
    base_rows = [r for r in main + extra if study.role(r) == 'base']
    ref = sps.linregress(np.log([r['n_params'] for r in base_rows]), [r['test_A_ndcg@10'] for r in base_rows])
    assert (fit['a'], fit['b']) == pytest.approx((ref.intercept, ref.slope))
    assert _verdict(main, 3)['status'].startswith(f'{OPEN} (runs at 1 hidden size')
    assert _verdict(main, 3, scaling_rows=extra)['status'] == HOLDS
    for r in extra:
        if study.role(r) == 'gca' and r['settings']['embedding_size'] == 64:
            r['test_B_ndcg@10'] -= 0.03
    assert _verdict(main, 3, scaling_rows=extra)['status'] == FAILS


def test_cause_arm_penalty_against_gca_early():
    main = main_arm(0.01)
    gca = {r['seed']: r for r in main if study.role(r) == 'gca'}
    cause = [row('ABXI_GCA', s, gca[s]['test_A_ndcg@10'] - 0.01 + NOISE[s] / 5, gca[s]['test_B_ndcg@10'] - 0.01,
                 role='gca', label='gca_ortho_weight=0.1', config={'gca_ortho_weight': 0.1}, ortho=(0.05, 0.05))
             for s in SEEDS[:3]]
    cause[2]['test_B_ndcg@10'] -= 0.0005
    v = _verdict(main, 5, cause_rows=cause)
    assert v['status'] == FAILS and 'gca_ortho_weight=0.1 A: -0.0' in v['numbers']
    assert _verdict(main, 5)['status'] == f'{OPEN} (cause arm not run yet)'


def test_cause_arm_pairs_each_change_alone():
    """A penalised gate is compared with the same gate unpenalised (not with GCA_early); another gate
    without penalty with GCA_early; hand-computed differences; the verdict reads the penalty rows only."""
    main = main_arm(0.01)
    gca = {r['seed']: r for r in main if study.role(r) == 'gca'}

    def cause_row(s, gate, weight, da, db):
        return row('ABXI_GCA', s, gca[s]['test_A_ndcg@10'] + da, gca[s]['test_B_ndcg@10'] + db, role='gca',
                   label=f'gca_gate={gate}, gca_ortho_weight={weight}', config={'gca_gate': gate, 'gca_ortho_weight': weight})
    # scalar gate: 0.02 below GCA_early; with the penalty a further +0.001 / +0.002 (+ seed noise)
    cause = [cause_row(s, 'scalar', 0.0, -0.02, -0.02) for s in SEEDS[:3]]
    cause += [cause_row(s, 'scalar', 1.0, -0.019 + NOISE[s] / 10, -0.018) for s in SEEDS[:3]]
    out = {(c['label'], c['domain']): c for c in study.cause_summary(cause, list(gca.values()))}
    pen_a = out[('gca_gate=scalar, gca_ortho_weight=1.0', 'A')]
    assert pen_a['against'] == 'gca_gate=scalar, no penalty' and pen_a['seeds'] == [1, 2, 3]
    assert pen_a['comparison']['mean_diff'] == pytest.approx(0.001 + np.mean([NOISE[s] / 10 for s in SEEDS[:3]]))
    assert out[('gca_gate=scalar, gca_ortho_weight=1.0', 'B')]['comparison']['mean_diff'] == pytest.approx(0.002)
    gate = out[('gca_gate=scalar, gca_ortho_weight=0.0', 'A')]
    assert gate['against'] == 'GCA_early' and gate['comparison']['mean_diff'] == pytest.approx(-0.02)
    v = _verdict(main, 5, cause_rows=cause)
    assert 'gca_gate=scalar, gca_ortho_weight=1.0 B: +0.0020' in v['numbers']
    assert 'gca_ortho_weight=0.0' not in v['numbers']          # a gate change is not the penalty's effect
    # without the unpenalised scalar runs the penalised ones have nothing to pair with: no verdict yet
    alone = study.cause_summary(cause[3:], list(gca.values()))
    assert all(c['seeds'] == [] for c in alone)
    assert _verdict(main, 5, cause_rows=cause[3:])['status'] == \
        f'{OPEN} (no penalised configuration with 2 seeds paired with its gate unpenalised yet)'


def test_position_summary_pairs_placements_of_equal_other_settings():
    rows = []
    for s in SEEDS[:3]:
        for pos, act, v in (([0], 'sigmoid', 0.20), ([0, 1], 'sigmoid', 0.19), ([0], 'tanh', 0.10), ([0, 1], 'tanh', 0.12)):
            rows.append(row('ABXI_GCA', s, v + NOISE[s] / 10, v, role='gca', stop='epoch_cap',
                            config={'gca_positions': pos, 'gca_activation': act}))
    out = study.position_summary(rows)
    got = {(c['position'], c['domain']): round(c['mean_diff'], 6) for c in out}
    assert got == {('[0, 1] (gca_activation=sigmoid)', 'A'): 0.01, ('[0, 1] (gca_activation=sigmoid)', 'B'): 0.01,
                   ('[0, 1] (gca_activation=tanh)', 'A'): -0.02, ('[0, 1] (gca_activation=tanh)', 'B'): -0.02}
    assert all(c['converged'] == 0 for c in out)


# ---------------------------------------------------------------- the page through a fixture registry

def _store(sweep_dir, gain):
    from recbole_ortho.sweep.store import write_json
    for r in main_arm(gain):
        model = r['model']
        rid = f"{model}-fk-s{r['seed']}-{study.role(r)}"
        dom = {d: {'n_users': 10, 'ndcg@10': r[f'test_{d}_ndcg@10'], 'hit@10': r[f'test_{d}_hit@10']} for d in 'AB'}
        if model == 'ABXI_GCA':
            dom['A']['ortho_cos_a@gca0/paper'], dom['B']['ortho_cos_b@gca0/paper'] = r['ortho_A_paper'], r['ortho_B_paper']
        dom['all'] = dict(dom['A'])
        res = {'model': model, 'test': dom, 'valid': dom, 'n_params': r['n_params'], 'epochs_run': 20, 'best_epoch': 9,
               'stop_reason': 'early_stopping', 'wall_time_s': 3600.0, 'config': {'seed': r['seed']},
               'trace': [{'epoch': e, 'train_loss': 1.0, 'valid_score': 0.1 + 0.01 * e} for e in range(20)]}
        if r['param_match']:
            res['param_match'] = {'target_model': 'ABXI_GCA', 'target_n_params': 120, 'updates': {}, 'rel_diff': 0.0}
        d = os.path.join(sweep_dir, 'runs', rid)
        os.makedirs(d)
        variant = 'param-matched to ABXI_GCA (120 parameters)' if r['param_match'] else 'base'
        write_json(os.path.join(d, 'spec.json'), {'run_id': rid, 'model': model, 'dataset': 'fk', 'seed': r['seed'],
                                                   'settings': {}, 'variant': variant})
        write_json(os.path.join(d, 'result.json'), res)


def test_study_page_regenerates_and_checks(tmp_path):
    from recbole_ortho.analysis.pages import check, regenerate
    results = tmp_path / 'results'
    results.mkdir()
    _store(str(results / 'sweeps' / 'study'), 0.01)
    (results / 'pages.yaml').write_text(
        'sources:\n  st: {sweep: sweeps/study}\n'
        'study_pages:\n  - {page: study.md, title: "Study ({{ st.n_runs }} runs)", main: [st], main_d: 256,'
        ' expected: {main: 15}}\n')
    reg = str(results / 'pages.yaml')
    assert regenerate(reg) == ['study.md']
    text = (results / 'study.md').read_text()
    assert text.startswith('# Study (15 runs)')
    assert 'Runs finished: main arm 15 of 15' in text
    assert '| main | `results/sweeps/study` | 15 of 15 | 15.0 | 15.0 | 1.00 | 0 | 0.0 |' in text
    assert '| GCA beats the parameter-matched base, in every setting (declared comparison) | **holds here** |' in text
    for png in ('ortho_vs_ndcg10', 'training_curves', 'scaling_ndcg10_vs_params'):
        assert (results / 'study_plots' / f'{png}.png').stat().st_size > 1000
    ok, problems, _ = check(reg)
    assert ok, problems
    res_path = next((results / 'sweeps' / 'study' / 'runs').glob('ABXI_GCA-fk-s1-*')) / 'result.json'
    res = json.loads(res_path.read_text())
    res['test']['A']['ndcg@10'] -= 0.05
    res_path.write_text(json.dumps(res))
    ok, problems, _ = check(reg)
    assert not ok and any('study.md' in p for p in problems)


def test_registry_refuses_a_study_arm_that_is_not_a_sweep(tmp_path):
    from recbole_ortho.analysis.pages import Registry
    p = tmp_path / 'pages.yaml'
    p.write_text('sources:\n  x: {json: a.json}\nstudy_pages:\n  - {page: s.md, title: t, main: [x]}\n')
    with pytest.raises(ValueError, match=r"study page s.md: main: 'x' is not a sweep source"):
        Registry(p)


def test_the_cause_arms_own_reference_is_vector_gate_without_penalty():
    assert study.is_reference(row('ABXI_GCA', 1, 0.2, 0.1, role='gca', config={'gca_gate': 'vector', 'gca_ortho_weight': 0.0}))
    assert not study.is_reference(row('ABXI_GCA', 1, 0.2, 0.1, role='gca', config={'gca_gate': 'scalar', 'gca_ortho_weight': 0.0}))
    assert not study.is_reference(row('ABXI_GCA', 1, 0.2, 0.1, role='gca', config={'gca_gate': 'vector', 'gca_ortho_weight': 1.0}))


def test_a_pending_arm_reads_as_empty_and_an_unmarked_missing_store_is_an_error(tmp_path):
    from recbole_ortho.analysis.pages import StoreError, check, regenerate
    results = tmp_path / 'results'
    results.mkdir()
    _store(str(results / 'sweeps' / 'study'), 0.01)
    reg = results / 'pages.yaml'
    body = ('  st: {sweep: sweeps/study}\n  later: {sweep: sweeps/later%s}\n'
            'study_pages:\n  - {page: study.md, title: "Study", main: [st, later], cause: later, expected: {cause: 18}}\n')
    reg.write_text('sources:\n' + body % ', pending: true')
    regenerate(str(reg))
    assert 'cause arm 0 of 18' in (results / 'study.md').read_text()
    assert check(str(reg))[0]
    reg.write_text('sources:\n' + body % '')
    with pytest.raises((StoreError, FileNotFoundError)):
        check(str(reg))


def test_also_summary_pairs_the_second_protocol_by_seed():
    rows = main_arm(0.01)
    for r in rows:
        r['also'] = ['own_protocol']
        r['config'] = {'also_evaluate': {'own_protocol': {'eval_neg_num': 100}}}
        for d in 'AB':
            r[f'also_own_protocol_test_{d}_ndcg@10'] = r[f'test_{d}_ndcg@10'] + 0.2
    out = study.also_summary(rows)
    assert [(e['family'], e['name'], e['domain']) for e in out] == [('ABXI', 'own_protocol', 'A'), ('ABXI', 'own_protocol', 'B')]
    a = out[0]
    assert a['settings'] == 'eval_neg_num=100' and a['seeds'] == list(SEEDS)
    gca = [r['test_A_ndcg@10'] for r in rows if study.role(r) == 'gca']
    mat = [r['test_A_ndcg@10'] for r in rows if study.role(r) == 'matched']
    assert a['diff']['mean'] == pytest.approx(np.mean(np.subtract(gca, mat)))
    assert a['gca']['mean'] == pytest.approx(np.mean(gca) + 0.2)


def test_hours_to_best_sums_data_training_and_validation_up_to_the_best_epoch():
    trace = [{'epoch': e, 'train_time_s': 100.0 + e, 'valid_time_s': 10.0} for e in range(6)]
    r = {'best_epoch': 2, 'trace': trace, 'data_time_s': 30.0}
    assert study.hours_to_best(r) == pytest.approx((30 + 100 + 101 + 102 + 3 * 10) / 3600)   # epochs 0, 1, 2
    assert study.hours_to_best(dict(r, trace=[])) is None and study.hours_to_best(dict(r, best_epoch=None)) is None
    rows = main_arm(0.01)
    for x in rows:
        x.update(trace=trace, data_time_s=30.0, best_epoch=2)
    e = study.main_table(rows)[0]
    assert e['to_best_h']['mean'] == pytest.approx(study.hours_to_best(r)) and e['to_best_h']['n'] == 5
    # core-hours: 1 h of wall at 2 threads for seed 1, at 1 thread (the default without a record) for the others
    rows[0]['provenance'] = {'device': {'threads': 2}}
    e = study.main_table(rows)[0]
    assert e['wall_h']['mean'] == pytest.approx(1.0) and e['core_h']['mean'] == pytest.approx((2 + 4 * 1) / 5)


def test_cost_summary_sums_hours_and_estimates_the_runs_to_come_per_variant():
    rows = main_arm(0.01)[:5]                     # seed 1: base, matched, gca; seed 2: base, matched
    for r, h in zip(rows, (1.0, 2.0, 3.0, 1.5, 2.5)):
        r['wall_time_s'] = 3600.0 * h
        r['provenance'] = {'device': {'threads': 2}}
    rows[4]['provenance'] = None                  # seed 2 matched: 1 thread from its setting, 2.5 core-hours
    rows[4]['config'] = {'threads': 1}
    cause = [row('ABXI_GCA', 1, 0.2, 0.1, role='gca')]          # 1 h, no thread count recorded: 1 core-hour
    stores = [('main', 'abxi', rows), ('main', 'llm', []), ('cause', 'cause', cause), ('scaling', 'sc', [])]
    out, tot = study.cost_summary(stores, {'main': 30, 'cause': 4, 'scaling': 6})
    abxi, llm, cau, sc = out
    assert abxi['expected'] == 15 and abxi['runs'] == 5 and abxi['hours'] == pytest.approx(10.0)
    assert abxi['core_h'] == pytest.approx(2 * (1.0 + 2.0 + 3.0 + 1.5) + 2.5)
    # each variant's missing seeds at that variant's mean core-hours: base 3 x 2.5, matched 3 x (4 + 2.5) / 2,
    # gca 4 x 6 (the store's mean, 3.5, would give 35)
    assert abxi['todo'] == 10 and abxi['todo_h'] == pytest.approx(3 * 2.5 + 3 * 3.25 + 4 * 6.0)
    assert abxi['mean_h'] == pytest.approx(17.5 / 5)
    assert llm['expected'] == 15 and llm['todo'] == 15 and llm['todo_h'] is None
    assert cau['todo'] == 3 and cau['todo_h'] == pytest.approx(3.0) and cau['core_h'] == pytest.approx(1.0)
    assert sc['todo_h'] is None
    assert tot['runs'] == 6 and tot['hours'] == pytest.approx(11.0) and tot['todo'] == 10 + 15 + 3 + 6
    assert tot['core_h'] == pytest.approx(18.5)
    assert tot['todo_h'] == pytest.approx(41.25 + 3.0) and tot['unestimated'] == ['llm', 'sc']
    # a finished store costs nothing more; an arm without an expected count has no estimate
    done, _ = study.cost_summary([('main', 'abxi', main_arm(0.01))], {'main': 15})
    assert done[0]['todo'] == 0 and done[0]['todo_h'] == 0.0
    none, _ = study.cost_summary([('cause', 'c', cause)], {})
    assert none[0]['expected'] is None and none[0]['todo_h'] is None


def test_precision_line_counts_what_each_run_recorded():
    rows = [dict(r, precision='fp32') for r in main_arm(0.01)[:3]] + [dict(r, precision=None) for r in main_arm(0.01)[:1]]
    assert study._precision_line(rows) == ('Precision the runs ran in: fp32 (3 runs), not recorded (1 run). A run '
                                           'without a record was made before the `precision` setting existed, when '
                                           'every run was fp32.')
    assert study._precision_line([dict(rows[0], precision='bf16')]) == 'Precision the runs ran in: bf16 (1 run).'
    assert study._precision_line([]) == 'Precision: no run yet.'


def test_run_wall_adds_the_time_before_an_older_results_resume():
    from recbole_ortho.analysis.report import run_wall_s
    trace = [{'epoch': e, 'train_time_s': 10.0, 'valid_time_s': 1.0} for e in range(6)]
    old = {'wall_time_s': 40.0, 'trace': trace, 'resumed_from': {'checkpoint': 'x-last.pth', 'epoch': 2}}
    assert run_wall_s(old) == pytest.approx(40.0 + 3 * 11.0)        # epochs 0-2 ran in the earlier process
    assert run_wall_s(dict(old, resumed_from=None)) == 40.0           # not resumed: as written
    new = dict(old, wall_time_s=73.5, wall_time_process_s=40.0)     # since wall_time_process_s: the whole run
    assert run_wall_s(new) == 73.5


def test_replays_are_stated_on_the_page_and_a_bad_replay_file_is_named(tmp_path):
    from recbole_ortho.analysis.pages import Registry, regenerate
    results = tmp_path / 'results'
    (results / 'replays').mkdir(parents=True)
    _store(str(results / 'sweeps' / 'study'), 0.01)
    reg = results / 'pages.yaml'
    reg.write_text('sources:\n  st: {sweep: sweeps/study}\n  rp: {replays: replays}\n'
                   'study_pages:\n  - {page: study.md, title: "Study", main: [st], replays: rp}\n')
    regenerate(str(reg))
    assert 'Replays: none yet' in (results / 'study.md').read_text()          # an empty folder
    side = {'cpu': 'CPU X', 'threads': 2, 'precision': 'fp32', 'git_dirty': False}
    (results / 'replays' / 'a.json').write_text(json.dumps({
        'model': 'ABXI', 'seed': 7, 'epochs_replayed': 2, 'train_loss_max_rel_diff': 3.14e-9,
        'valid_score_max_abs_diff': 0.0, 'stored': dict(side, git_commit='1234567abc'),
        'replayed': dict(side, git_commit='abcdef0123', cpu='CPU Y', threads=1)}))
    regenerate(str(reg))
    assert ('ABXI seed 7 (stored: 1234567, CPU X, 2 threads; replayed: abcdef0, CPU Y, 1 threads): training loss '
            'within 3.1e-09 relative, validation score within 0.0e+00, over 2 epochs.') in (results / 'study.md').read_text()
    (results / 'replays' / 'b.json').write_text(json.dumps({'model': 'ABXI'}))
    with pytest.raises(ValueError, match=r'b.json: not a replay file \(no seed, stored'):
        regenerate(str(reg))
    reg.write_text('sources:\n  st: {sweep: sweeps/study}\n'
                   'study_pages:\n  - {page: study.md, title: "Study", main: [st], replays: st}\n')
    with pytest.raises(ValueError, match=r"replays: 'st' is not a replays source"):
        Registry(reg)
