"""The analysis statistics against hand-computed values."""

import math

import numpy as np
import pytest

from recbole_ortho.analysis.stats import correlation, holm, mean_ci, paired_comparison, wilcoxon_floor


def test_mean_ci_hand_computed():
    r = mean_ci([1.0, 2.0, 3.0])
    # mean 2, sd 1, t_{0.975, 2} = 4.302653, half-width 4.302653 / sqrt(3)
    assert r['mean'] == 2.0 and r['std'] == pytest.approx(1.0)
    assert r['ci_low'] == pytest.approx(2 - 4.302652729911275 / math.sqrt(3))
    assert math.isnan(mean_ci([5.0])['std']) and mean_ci([])['n'] == 0


def test_paired_comparison_hand_computed():
    a = np.array([0.20, 0.22, 0.25, 0.21, 0.24])
    b = np.array([0.19, 0.20, 0.22, 0.21, 0.20])
    r = paired_comparison(a, b)
    d = a - b                                   # 0.01, 0.02, 0.03, 0, 0.04: mean 0.02, sd 0.0158114
    assert r['mean_diff'] == pytest.approx(0.02)
    assert r['cohens_dz'] == pytest.approx(0.02 / np.std(d, ddof=1))
    assert r['t'] == pytest.approx(0.02 / (np.std(d, ddof=1) / math.sqrt(5)))
    assert r['p_t'] == pytest.approx(0.0474, abs=5e-4)                  # t = 2.828 on 4 df (t_0.975 = 2.776)
    assert r['p_wilcoxon_floor'] == pytest.approx(0.0625) and wilcoxon_floor(5) == 0.0625
    assert r['p_wilcoxon'] >= r['p_wilcoxon_floor']
    with pytest.raises(ValueError):
        paired_comparison([1, 2], [1, 2, 3])


def test_holm_hand_computed():
    # sorted 0.01, 0.02, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.02), max(0.04, 1 * 0.04)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    out = holm([0.01, float('nan'), 0.03])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.03)


def test_correlation_on_known_data():
    x = np.arange(10.0)
    r = correlation(x, -2 * x + 1)
    assert r['pearson'] == pytest.approx(-1.0) and r['spearman'] == pytest.approx(-1.0)
    assert r['pearson_ci_high'] == pytest.approx(-1.0)
    y = np.array([1.0, 3.0, 2.0, 5.0, 4.0, 6.0])
    r = correlation(np.arange(6.0), y)
    # ranks of y: 1 3 2 5 4 6 -> sum d^2 = 4 -> rho = 1 - 6 * 4 / (6 * 35) = 0.885714
    assert r['spearman'] == pytest.approx(1 - 6 * 4 / 210)
    assert r['pearson_ci_low'] <= r['pearson'] <= r['pearson_ci_high']
    assert correlation(np.arange(6.0), y, seed=3) == correlation(np.arange(6.0), y, seed=3)


def _fake_store(root):
    """A run store written by hand: ABXI (base), ABXI_GCA (one variant), ABXI matched to it, 3 seeds."""
    from recbole_ortho.sweep.store import RunStore, write_json
    store = RunStore(root)
    gca_ndcg = {1: 0.20, 2: 0.22, 3: 0.21}
    specs = []
    for seed in (1, 2, 3):
        specs += [('ABXI', 'base', 100, seed, 0.18 + 0.01 * seed, None, None),
                  ('ABXI_GCA', 'gca_positions=[0]', 120, seed, gca_ndcg[seed], 0.1 * seed, None),
                  ('ABXI', 'param-matched to ABXI_GCA (120 parameters)', 120, seed, 0.19 + 0.005 * seed, None, 'ABXI_GCA')]
    for i, (model, variant, n, seed, ndcg, ortho, pm) in enumerate(specs):
        rid = f'{model}-fk-s{seed}-{i:04d}'
        dom = {d: {'n_users': 10, 'ndcg@10': ndcg + (0.0 if d == 'A' else -0.05), 'mrr': ndcg / 2} for d in ('A', 'B')}
        for d, direction in (('A', 'a'), ('B', 'b')):
            if ortho is not None:
                dom[d][f'ortho_cos_{direction}@gca0'] = ortho
                dom[d][f'ortho_cos_{direction}@gca0/paper'] = ortho / 2
        trace = [{'epoch': e, 'train_loss': 5.0 - e, 'valid_score': 0.1 * e, 'valid': {'all': {
            **({'ortho_cos_a@gca0/paper': 0.3 - 0.05 * e, 'ortho_cos_b@gca0/paper': 0.3 - 0.05 * e} if ortho else {})}}}
            for e in range(3)]
        res = {'test': dom, 'valid': dom, 'n_params': n, 'epochs_run': 4, 'best_epoch': 3, 'wall_time_s': 10.0,
               'trace': trace, 'model': model}
        if pm:
            res['param_match'] = {'target_model': pm, 'target_n_params': n}
        d = store.path(rid)
        import os
        os.makedirs(d)
        write_json(os.path.join(d, 'spec.json'), {'run_id': rid, 'model': model, 'dataset': 'fk', 'seed': seed,
                                                   'settings': {}, 'variant': variant})
        write_json(os.path.join(d, 'result.json'), res)
    return store


def test_report_from_a_run_store(tmp_path):
    from recbole_ortho.analysis import comparisons, correlations, load_rows, write_report
    _fake_store(tmp_path / 'sw')
    rows = load_rows(tmp_path / 'sw')
    assert len(rows) == 9
    comps = {(c['against'], c['domain']): c for c in comparisons(rows)}
    assert set(comps) == {('ABXI (base)', 'A'), ('ABXI (base)', 'B'),
                          ('ABXI (param-matched to ABXI_GCA (120 parameters))', 'A'),
                          ('ABXI (param-matched to ABXI_GCA (120 parameters))', 'B')}
    # GCA - base per seed: 0.01, 0.02, 0 -> mean 0.01; GCA - matched: 0.005, 0.02, 0.005 -> mean 0.01
    assert comps[('ABXI (base)', 'A')]['mean_diff'] == pytest.approx(0.01)
    assert comps[('ABXI (param-matched to ABXI_GCA (120 parameters))', 'B')]['mean_diff'] == pytest.approx(0.01)
    ps = [c['p_t'] for c in comparisons(rows)]
    holmed = [c['p_t_holm'] for c in comparisons(rows)]
    assert all(h >= p for h, p in zip(holmed, ps))
    corr = correlations(rows, stat='paper')
    assert {(c['model'], c['domain']) for c in corr} == {('ABXI_GCA', 'A'), ('ABXI_GCA', 'B')}
    # ortho/2 = 0.05, 0.1, 0.15 against NDCG 0.20, 0.22, 0.21: Spearman = 0.5
    assert corr[0]['spearman'] == pytest.approx(0.5) and corr[0]['n'] == 3
    page = write_report(tmp_path / 'sw', str(tmp_path / 'out' / 'fk.md'), stat='paper')
    text = open(page).read()
    assert '| ABXI_GCA | gca_positions=[0] | 3 | 120 |' in text and 'Holm' in text and 'can never reach 0.05' in text
    plots = tmp_path / 'out' / 'fk_plots'
    import csv
    curves = {(r['series'], int(r['epoch'])): (float(r['mean']), int(r['seeds']))
              for r in csv.DictReader(open(plots / 'training_curves_fk_ABXI_GCA.csv'))}
    assert curves[('ortho', 2)][0] == pytest.approx(0.2) and curves[('ortho', 2)][1] == 3
    assert curves[('valid_score', 1)][0] == pytest.approx(0.1)
    for name in ('ortho_vs_ndcg10_fk_ABXI_GCA', 'ndcg10_vs_params_fk', 'training_curves_fk_ABXI_GCA'):
        assert (plots / f'{name}.png').stat().st_size > 1000 and (plots / f'{name}.csv').is_file()
        assert f'fk_plots/{name}.png' in text


def test_gca_model_without_grid_is_a_variant_compared_with_its_own_base_only(tmp_path):
    """A _GCA model run without a grid (spec variant 'base') is labelled 'default settings' and compared
    with its own base model, never with another family's base in the same sweep."""
    import os
    from recbole_ortho.analysis import comparisons, load_rows
    from recbole_ortho.sweep.store import RunStore, write_json
    store = RunStore(tmp_path / 'sw')
    for i, (model, seed, ndcg) in enumerate([(m, s, 0.1 + 0.01 * k + 0.001 * s) for k, m in enumerate(
            ('CDSRNP', 'CDSRNP_GCA', 'LLM4CDSR')) for s in (1, 2)]):
        d = store.path(f'{model}-fk-s{seed}-{i:04d}')
        os.makedirs(d)
        dom = {x: {'n_users': 5, 'ndcg@10': ndcg} for x in ('A', 'B')}
        write_json(os.path.join(d, 'spec.json'), {'run_id': f'{model}-{i}', 'model': model, 'dataset': 'fk',
                                                   'seed': seed, 'settings': {}, 'variant': 'base'})
        write_json(os.path.join(d, 'result.json'), {'test': dom, 'valid': dom, 'n_params': 10, 'trace': []})
    rows = load_rows(tmp_path / 'sw')
    assert {(r['model'], r['variant']) for r in rows} == {('CDSRNP', 'base'), ('CDSRNP_GCA', 'default settings'),
                                                        ('LLM4CDSR', 'base')}
    comps = comparisons(rows)
    assert {(c['model'], c['against'], c['domain']) for c in comps} == {
        ('CDSRNP_GCA', 'CDSRNP (base)', 'A'), ('CDSRNP_GCA', 'CDSRNP (base)', 'B')}
    assert comps[0]['mean_diff'] == pytest.approx(0.01)
