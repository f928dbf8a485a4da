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
    # one zero difference: only the 2^4 sign patterns of the other four count, and all four are positive,
    # so the exact two-sided p is 2 / 2^4 = 0.125 -- the floor with a zero, not 2 / 2^5 = 0.0625
    assert r['n_zero'] == 1 and r['wilcoxon_method'] == 'exact'
    assert r['p_wilcoxon_floor'] == 0.125 and wilcoxon_floor(5) == 0.0625 and wilcoxon_floor(5, 1) == 0.125
    assert r['p_wilcoxon'] == pytest.approx(0.125)
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


# ---- the declared (primary) comparison, families, the page's statistics sections

PRIMARY_A = {'model': 'ABXI_GCA', 'variant': {'gca_positions': [0]}, 'label': 'gca_positions=[0]', 'against': 'matched',
             'metric': 'ndcg@10', 'domains': ['A']}


def _spec_file(tmp_path, primary, **over):
    import yaml
    spec = {'datasets': ['fk'], 'seeds': [1, 2, 3], 'param_matched': True,
            'models': {'ABXI': {}, 'ABXI_GCA': {'grid': {'gca_positions': [[0], [0, 1]]}}}, 'primary': primary}
    spec.update(over)
    path = tmp_path / 'spec.yaml'
    path.write_text(yaml.safe_dump(spec))
    return path


def test_primary_spec_syntax_and_errors_naming_the_key(tmp_path):
    from recbole_ortho.sweep import load_spec
    from recbole_ortho.utils import ConfigError
    ok = {'model': 'ABXI_GCA', 'variant': {'gca_positions': [0]}, 'against': 'matched'}
    spec = load_spec(_spec_file(tmp_path, ok))
    assert spec['primary'] == [dict(PRIMARY_A, domains=['A', 'B'])]           # metric and domains defaulted
    spec = load_spec(_spec_file(tmp_path, [ok, dict(ok, against='base', metric='MRR', domains=['B'])]))
    assert [(e['against'], e['metric'], e['domains']) for e in spec['primary']] == [('matched', 'ndcg@10', ['A', 'B']),
                                                                                   ('base', 'mrr', ['B'])]
    assert load_spec(_spec_file(tmp_path, None))['primary'] == []
    bad = [
        (dict(ok, colour='red'), r'primary: unknown keys \[.colour.\]'),
        (dict(ok, model='SASRec'), r'primary\.model: \[SASRec\] is not a model of this sweep'),
        (dict(ok, model='ABXI'), r'primary\.model: \[ABXI\] is not a GCA variant'),
        (dict(ok, variant={'gca_positions': [1]}), r'primary\.variant: .* is not a grid point of ABXI_GCA'),
        (dict(ok, variant=None), r'primary\.variant'),
        (dict(ok, against='wider'), r"primary\.against: \[wider\] must be one of \['matched', 'base'\]"),
        (dict(ok, metric='ndcg'), r'primary\.metric: metrics: \[ndcg\] needs a positive cut-off'),
        (dict(ok, domains=['C']), r'primary\.domains'),
        ([ok, ok], r'primary\[1\]: the same comparison is declared twice'),
        ('ABXI_GCA', r'primary: expected a mapping'),
    ]
    for primary, msg in bad:
        with pytest.raises(ConfigError, match=r'spec\.yaml: ' + msg):
            load_spec(_spec_file(tmp_path, primary))
    with pytest.raises(ConfigError, match=r'primary\.against: matched needs param_matched: true'):
        load_spec(_spec_file(tmp_path, ok, param_matched=False))


def test_primary_enters_no_run_id(tiny, tmp_path, monkeypatch):
    """Declaring the primary comparison after a sweep ran keeps every run id (it is not hashed)."""
    from recbole_ortho.sweep import expand, load_spec
    monkeypatch.setattr('sys.argv', ['pytest'])
    _, cfg = tiny
    small = dict(embedding_size=16, inner_size=24, rd=2, ri=4, n_heads=2, n_neg_per_domain=8, epochs=1,
                 MAX_ITEM_LIST_LENGTH=10, eval_neg_num=10, state='WARNING')
    ids = {}
    for name, primary in (('without', None), ('with', {'model': 'ABXI_GCA', 'variant': {'gca_positions': [0]},
                                                      'against': 'matched'})):
        (tmp_path / name).mkdir()
        spec = load_spec(_spec_file(tmp_path / name, primary, datasets=['tiny'], seeds=[1], settings=small))
        ids[name] = [r.run_id for r in expand(spec, data_root=cfg['data_path'])]
    assert len(ids['with']) == 5 and ids['with'] == ids['without']


def test_holm_runs_within_the_declared_family_only(tmp_path):
    from recbole_ortho.analysis import comparisons, load_rows
    _fake_store(tmp_path / 'sw')
    rows = load_rows(tmp_path / 'sw')
    comps = comparisons(rows, primary=[PRIMARY_A])
    conf = [c for c in comps if c['family'] == 'confirmatory']
    expl = [c for c in comps if c['family'] == 'exploratory']
    assert [(c['against_kind'], c['domain']) for c in conf] == [('matched', 'A')] and len(expl) == 3
    # GCA - matched in A: 0.005, 0.02, 0.005 -> mean 0.01; a family of one: Holm leaves p alone
    assert conf[0]['mean_diff'] == pytest.approx(0.01) and conf[0]['p_t_holm'] == conf[0]['p_t']
    assert [c['p_t_holm'] for c in expl] == pytest.approx(holm([c['p_t'] for c in expl]))
    everything = comparisons(rows)                                   # no primary: one exploratory family of 4
    assert all(c['family'] == 'exploratory' for c in everything)
    assert [c['p_t_holm'] for c in everything] == pytest.approx(holm([c['p_t'] for c in everything]))
    # a declared comparison on another metric is tested on that metric (mrr = ndcg / 2 here)
    comps = comparisons(rows, primary=[dict(PRIMARY_A, metric='mrr')])
    conf = [c for c in comps if c['family'] == 'confirmatory']
    assert [(c['metric'], c['domain']) for c in conf] == [('mrr', 'A')] and conf[0]['mean_diff'] == pytest.approx(0.005)
    assert sum(c['metric'] == 'ndcg@10' for c in comps) == 4


def test_orthogonality_per_run_and_within_correlations(tmp_path):
    from recbole_ortho.analysis import load_rows
    from recbole_ortho.analysis.report import orthogonality_table, within_correlations
    _fake_store(tmp_path / 'sw')
    rows = load_rows(tmp_path / 'sw')
    t = {(e['domain'], e['stage']): e for e in orthogonality_table(rows)}
    assert set(t) == {('A', 'gca0'), ('B', 'gca0')}
    e = t[('A', 'gca0')]                                             # paper values ortho / 2 = 0.05, 0.1, 0.15
    assert e['paper'] == [(1, 0.05), (2, 0.1), (3, pytest.approx(0.15))]
    assert e['paper_median'] == pytest.approx(0.1) and e['paper_median_vs_paper'] == 'within'
    assert math.isnan(e['median_abs_median']) and e['median_abs_median_vs_paper'] == 'n/a'
    w = {x['domain']: x for x in within_correlations(rows)}
    # x centred -1 0 1 (x 0.05), NDCG A 0.20 0.22 0.21 centred -0.01 0.01 0: r = 0.01 / sqrt(2 * 0.0002) = 0.5
    assert w['A']['per_config'] == [('gca_positions=[0]', 3, pytest.approx(0.5))]
    assert w['A']['pooled']['r'] == pytest.approx(0.5) and w['A']['pooled']['df'] == 1


def _add_ranks(root, gca_rank=1, base_rank=3, users=30):
    """A ranks file beside every result of the fake store: GCA runs rank every user at gca_rank, the others
    at base_rank (users in both domains)."""
    import os
    from recbole_ortho.sweep.store import read_json
    runs = os.path.join(root, 'runs')
    for rid in os.listdir(runs):
        model = read_json(os.path.join(runs, rid, 'spec.json'))['model']
        rank = np.full(users, gca_rank if model == 'ABXI_GCA' else base_rank, np.int32)
        arrays = {}
        for split in ('valid', 'test'):
            arrays.update({f'{split}_user': np.array([f'u{i}' for i in range(users)]),
                           f'{split}_domain': (np.arange(users) % 2).astype(np.int8), f'{split}_rank': rank,
                           f'{split}_ties': np.zeros(users, np.int32), f'{split}_n_neg': np.full(users, 99, np.int32)})
        np.savez(os.path.join(runs, rid, 'result.ranks.npz'), **arrays)


def test_page_sections_primary_power_orthogonality_and_per_user(tmp_path):
    from recbole_ortho.analysis import write_report
    _fake_store(tmp_path / 'sw')
    spec = _spec_file(tmp_path, {'model': 'ABXI_GCA', 'variant': {'gca_positions': [0]}, 'against': 'matched',
                                 'domains': ['A']}, models={'ABXI': {}, 'ABXI_GCA': {'grid': {'gca_positions': [[0]]}}})
    text = open(write_report(tmp_path / 'sw', str(tmp_path / 'p.md'), spec=str(spec))).read()
    assert '### Confirmatory: the declared comparison' in text and "spec's `primary` (`spec.yaml`)" in text
    assert 'Holm\'s correction runs over these 1 comparison only' in text
    assert 'exploratory family of 3 comparisons' in text and 'allow_mixed_commits=False' in text
    assert "Pratt's treatment of zero differences" in text and '3 seeds: 2/2^3 = 0.2500' in text
    assert '## Power: what the declared comparisons could detect' in text
    assert '| ABXI_GCA | gca_positions=[0] | A | gca0 | 1: 0.050, 2: 0.100, 3: 0.150 | 0.100 | within |' in text
    assert '### Within each configuration (across seeds)' in text and 'nearly meaningless' in text
    assert '## Per-user results' not in text                         # no ranks files yet
    no_primary = open(write_report(tmp_path / 'sw', str(tmp_path / 'q.md'))).read()
    assert 'declares no primary comparison' in no_primary and 'Confirmatory' not in no_primary
    _add_ranks(tmp_path / 'sw')
    text = open(write_report(tmp_path / 'sw', str(tmp_path / 'p.md'), spec=str(spec))).read()
    # every user: GCA rank 1 (NDCG 1) against rank 3 (NDCG 0.5) -> +0.5, interval collapsed
    assert '## Per-user results' in text and text.count('+0.5000 [+0.5000, +0.5000]') == 4


def test_primary_from_sweep_json_and_the_shipped_spec(tmp_path):
    from recbole_ortho.analysis.report import resolve_primary
    from recbole_ortho.sweep.store import write_json
    (tmp_path / 'food_kitchen_abxi_short').mkdir()
    primary, source = resolve_primary(str(tmp_path / 'food_kitchen_abxi_short'))   # named as a shipped spec
    assert source == '`properties/sweep/food_kitchen_abxi_short.yaml`'
    assert [(e['model'], e['label'], e['against'], e['domains']) for e in primary] == [
        ('ABXI_GCA', 'gca_activation="sigmoid", gca_positions=[0]', 'matched', ['A', 'B'])]
    write_json(str(tmp_path / 'food_kitchen_abxi_short' / 'sweep.json'), {'spec': {'primary': [PRIMARY_A]}})
    assert resolve_primary(str(tmp_path / 'food_kitchen_abxi_short')) == ([PRIMARY_A], '`sweep.json`')
    (tmp_path / 'other').mkdir()
    assert resolve_primary(str(tmp_path / 'other')) == ([], None)
    from recbole_ortho.sweep import load_spec
    loaded = load_spec(_spec_file(tmp_path, {'model': 'ABXI_GCA', 'variant': {'gca_positions': [0]}, 'against': 'base'}))
    assert resolve_primary(str(tmp_path / 'other'), spec=loaded)[0][0]['against'] == 'base'
    assert resolve_primary(str(tmp_path / 'other'), spec=str(tmp_path / 'spec.yaml'))[1] == '`spec.yaml`'


def _bench(eval_x, rss, ratios):
    machine = {'cpu': 'Test CPU', 'threads': 2, 'cpu_bf16_hardware': False, 'matmul_gflops_fp32': 300.0,
               'matmul_gflops_bf16': 60.0, 'provenance': {'git_commit': 'b' * 40, 'git_dirty': False}}
    runs = [{'model': m, 'step_s_median': 0.8, 'epoch_s_est': 22.4, 'eval_s': 1.0, 'peak_rss_mb': rss}
            for m in ('ABXI', 'ABXI_GCA')]
    speed = dict(machine, runs=runs, speedup_epoch_vs_official=15.0, speedup_eval_vs_official=eval_x,
                 official={'epoch_s_est': 336.0, 'eval_s': eval_x, 'peak_rss_mb': 8000.0, 'eval_extrapolated': True,
                           'eval_batches_timed': 3, 'eval_batches_per_pass': 7})
    gca = dict(machine, goal_ratio=1.15, models={
        m: {'pairs': 8, 'base_s_median': 1.0, 'gca_s_median': r, 'pair_ratio_median': r, 'flop_ratio': r}
        for m, r in ratios.items()})
    return speed, gca


def test_the_readme_speed_block_states_each_goal_from_the_numbers():
    from recbole_ortho.analysis.pages import _speed_values
    V = {}
    _speed_values(V, *_bench(10.2, 1400.0, {'ABXI': 1.14, 'LLM4CDSR': 1.2}))
    assert V['speed.eval_goal'] == 'met' and V['speed.rss_goal'] == 'met'
    assert V['speed.official.eval_note'] == 'extrapolated from 3 of 7 batches' and V['speed.commit'] == 'bbbbbbb'
    assert V['gca.table'].splitlines() == [
        '| ABXI_GCA / ABXI | 1.000 s | 1.140 s | 1.140 | 1.140 | met |',
        '| LLM4CDSR_GCA / LLM4CDSR | 1.000 s | 1.200 s | 1.200 | 1.200 | not met |']
    assert V['gca.why'].startswith("LLM4CDSR_GCA's FLOP ratio (1.200) is itself above the goal")
    V = {}
    _speed_values(V, *_bench(9.9, 1501.0, {'ABXI': 1.15}))
    assert V['speed.eval_goal'] == 'not met' and V['speed.rss_goal'] == 'not met'
    assert V['gca.table'].endswith('| met |')                     # 1.15 itself meets "<= 1.15"
    assert V['gca.why'] == 'Every ratio meets the goal.'
    speed, gca = _bench(12.0, 1400.0, {'CDSRNP': 1.2})
    gca['models']['CDSRNP']['flop_ratio'] = 1.05                  # slow, but not by its arithmetic
    V = {}
    _speed_values(V, speed, gca)
    assert V['gca.why'].startswith("CDSRNP_GCA's FLOP ratio (1.050) is within the goal")
    assert V['speed.eval_passes'] == 'one pass'                    # a file from before --eval_passes
    speed, gca = _bench(12.0, 1400.0, {'ABXI': 1.1})
    speed['runs'][0]['eval_s_all'] = [1.1, 1.0, 0.9]
    speed['official'].update(eval_extrapolated=False, eval_s_all=[12.0, 11.0, 13.0])
    V = {}
    _speed_values(V, speed, gca)
    assert V['speed.eval_passes'] == 'median of 3 passes'
    assert V['speed.official.eval_note'] == 'measured, whole pass, median of 3 passes'


def test_the_readme_bf16_bound_comes_from_the_profile():
    from recbole_ortho.analysis.pages import _device_profile_values

    def dev(shares):
        return {'cpu': 'Test CPU', 'provenance': {'git_commit': 'c' * 40, 'git_dirty': False},
                'runs': [{'model': m, 'precision': 'fp32',
                          'profile': {'matmul_share': s, 'products_only_bound': 1 / (1 - s)}} for m, s in shares.items()]}
    V = {}
    _device_profile_values(V, dev({'ABXI': 0.56, 'ABXI_GCA': 0.5}))
    assert V['cpudev.ABXI.share'] == pytest.approx(56.0) and V['cpudev.ABXI_GCA.bound'] == pytest.approx(2.0)
    assert V['cpudev.verdict'].startswith('so faster products alone cannot') and V['cpudev.commit'] == 'ccccccc'
    V = {}
    _device_profile_values(V, dev({'ABXI': 0.7, 'ABXI_GCA': 0.7}))            # bound 3.3x: reachable
    assert V['cpudev.verdict'] == 'so faster products alone could meet the goal'
    with pytest.raises(ValueError, match='ABXI_GCA'):
        _device_profile_values({}, dev({'ABXI': 0.5}))
