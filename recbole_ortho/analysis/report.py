"""
recbole_ortho.analysis.report
#############################

Tables, paired comparisons, orthogonality-accuracy correlations and plots from a sweep's run
store, and the markdown results page that shows them (``python -m recbole_ortho.analysis``).
"""

import csv
import math
import os
from collections import defaultdict

import numpy as np

from recbole_ortho.analysis.stats import correlation, holm, mean_ci, paired_comparison, wilcoxon_floor
from recbole_ortho.sweep.store import RunStore

METRICS = ('ndcg@1', 'ndcg@10', 'hit@5', 'hit@10', 'hit@20', 'mrr', 'auc')
#: the orthogonality statistics a report can use (see recbole_ortho.model.ortho)
ORTHO_STATS = ('paper', 'median_abs', 'pooled_abs', 'pooled_signed', 'user_mean')
#: the user groups of a result beside A and B (recbole_ortho.evaluator.GROUPS): overlapped users
#: (data in both domains) and the others; a page shows them when some run has non-overlapped users
USER_GROUPS = tuple(f'{d}/{g}' for d in ('A', 'B') for g in ('overlap', 'non_overlap'))


def ortho_value(result_domain, direction, stat):
    """Mean over the GCA stages of one direction's orthogonality statistic ``stat`` in a result's
    per-domain dict (``user_mean`` = ``ortho_cos_a@gca0``, else ``ortho_cos_a@gca0/<stat>``)."""
    vals = []
    for k, v in result_domain.items():
        head, _, tail = k.partition('/')
        if head.startswith(f'ortho_cos_{direction}@gca') and ((stat == 'user_mean' and not tail) or tail == stat):
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                vals.append(v)
    return float(np.mean(vals)) if vals else math.nan


def base_model(model):
    """The base model of a ``_GCA`` variant (``ABXI_GCA`` -> ``ABXI``), None for a base model or a
    model this package does not know."""
    from recbole_ortho.sweep.spec import base_model_of
    from recbole_ortho.utils import get_model
    try:
        return base_model_of(get_model(model))
    except (ValueError, TypeError):
        return None


def load_rows(sweep_dir):
    """One flat row per finished run: its spec, counts, per-domain test/valid metrics and
    orthogonality statistics (every summary). A ``_GCA`` model run without a grid (its spec's
    variant ``base``) is labelled ``default settings``: it is a GCA variant, compared with its base."""
    rows = []
    bases = {}
    for spec, res in RunStore(sweep_dir).results():
        model = spec['model']
        if model not in bases:
            bases[model] = base_model(model)
        variant = 'default settings' if spec['variant'] == 'base' and bases[model] else spec['variant']
        row = {'run_id': spec['run_id'], 'model': model, 'dataset': spec['dataset'], 'seed': spec['seed'],
               'base_model': bases[model],
               'variant': variant, 'settings': spec['settings'], 'n_params': res['n_params'],
               'epochs_run': res.get('epochs_run'), 'best_epoch': res.get('best_epoch'),
               'wall_time_s': res.get('wall_time_s'), 'trace': res.get('trace', []),
               'param_match': (res.get('param_match') or {}).get('target_model')}
        for phase in ('valid', 'test'):
            for d in ('A', 'B'):
                for m in METRICS:
                    row[f'{phase}_{d}_{m}'] = res[phase][d].get(m, math.nan)
            for g in USER_GROUPS:          # absent in results from before the groups existed
                r = res[phase].get(g) or {}
                row[f'{phase}_{g}_n_users'] = r.get('n_users') or 0
                for m in METRICS:
                    v = r.get(m)
                    row[f'{phase}_{g}_{m}'] = math.nan if v is None else v
        for d, direction in (('A', 'a'), ('B', 'b')):
            for stat in ORTHO_STATS:
                row[f'ortho_{d}_{stat}'] = ortho_value(res['test'][d], direction, stat)
        rows.append(row)
    return rows


def group_table(rows, phase='test'):
    """Per (dataset, model, variant): seeds, parameters, epochs, wall time, and for each domain and
    metric the mean, std and 95 % interval over seeds."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r['dataset'], r['model'], r['variant'])].append(r)
    out = []
    for (ds, model, variant), rs in sorted(groups.items()):
        e = {'dataset': ds, 'model': model, 'variant': variant, 'seeds': sorted(r['seed'] for r in rs),
             'n_params': int(np.median([r['n_params'] for r in rs])),
             'epochs': float(np.mean([r['epochs_run'] for r in rs])), 'wall_time_s': float(np.mean([r['wall_time_s'] for r in rs]))}
        for d in ('A', 'B'):
            for m in METRICS:
                e[f'{d}_{m}'] = mean_ci([r[f'{phase}_{d}_{m}'] for r in rs])
        for g in USER_GROUPS:
            e[f'{g}_n_users'] = int(np.median([r[f'{phase}_{g}_n_users'] for r in rs]))
            for m in METRICS:
                e[f'{g}_{m}'] = mean_ci([r[f'{phase}_{g}_{m}'] for r in rs])
        out.append(e)
    return out


def comparisons(rows, metric='ndcg@10'):
    """Each GCA variant against its base model and against the base widened to its parameter
    count, per domain, paired by seed (test ``metric``); Holm-corrected across all of them."""
    by = defaultdict(dict)
    for r in rows:
        by[(r['dataset'], r['model'], r['variant'])][r['seed']] = r
    out = []
    for (ds, model, variant), runs in sorted(by.items()):
        if variant == 'base' or variant.startswith('param-matched'):
            continue
        first = next(iter(runs.values()))
        n, own_base = first['n_params'], first.get('base_model')
        bases = [(k, v) for k, v in by.items() if k[0] == ds and k[1] != model and
                 (own_base is None or k[1] == own_base) and
                 (k[2] == 'base' or (k[2].startswith(f'param-matched to {model}') and
                                     next(iter(v.values()))['param_match'] == model and
                                     abs(next(iter(v.values()))['n_params'] - n) <= 0.02 * n))]
        for (bds, bmodel, bvariant), bruns in bases:
            seeds = sorted(set(runs) & set(bruns))
            for d in ('A', 'B'):
                c = paired_comparison([runs[s][f'test_{d}_{metric}'] for s in seeds],
                                      [bruns[s][f'test_{d}_{metric}'] for s in seeds])
                out.append(dict(c, dataset=ds, model=model, variant=variant, against=f'{bmodel} ({bvariant})',
                                domain=d, metric=metric, seeds=seeds))
    for c, p in zip(out, holm([c['p_t'] for c in out])):
        c['p_t_holm'] = p
    return out


def correlations(rows, stat='paper', metric='ndcg@10'):
    """Orthogonality against test ``metric`` per model with GCA and domain, one point per run."""
    out = []
    for (ds, model) in sorted({(r['dataset'], r['model']) for r in rows}):
        rs = [r for r in rows if r['dataset'] == ds and r['model'] == model]
        for d in ('A', 'B'):
            pts = [(r[f'ortho_{d}_{stat}'], r[f'test_{d}_{metric}']) for r in rs if not math.isnan(r[f'ortho_{d}_{stat}'])]
            if len(pts) < 3:
                continue
            x, y = zip(*pts)
            out.append(dict(correlation(x, y), dataset=ds, model=model, domain=d, stat=stat, metric=metric,
                            points=[list(p) for p in pts]))
    return out


def _write_csv(path, header, rows):
    with open(path + '.tmp', 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    os.replace(path + '.tmp', path)


def plots(rows, out_dir, stat='paper', metric='ndcg@10'):
    """The paper's figures as PNG plus the CSV behind each: the orthogonality-NDCG scatter per
    model, NDCG against parameters per dataset, and the validation score and orthogonality over
    epochs (from ``trace``) per model; returns ``{name: png path}``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    os.makedirs(out_dir, exist_ok=True)
    made = {}
    label = {'paper': '|mean cos(X, X\')| (paper formula)', 'median_abs': 'median |cos(X, X\')|',
             'pooled_abs': 'mean |cos(X, X\')| over steps', 'pooled_signed': 'mean cos(X, X\')',
             'user_mean': 'mean over users of mean |cos(X, X\')|'}[stat]
    models = sorted({(r['dataset'], r['model']) for r in rows if not math.isnan(r['ortho_A_' + stat])})
    for ds, model in models:
        rs = [r for r in rows if r['dataset'] == ds and r['model'] == model]
        name = f'ortho_vs_{metric.replace("@", "")}_{ds}_{model}'
        fig, ax = plt.subplots(figsize=(5, 4))
        csv_rows = []
        for d, colour in (('A', 'tab:blue'), ('B', 'tab:orange')):
            x = [r[f'ortho_{d}_{stat}'] for r in rs]
            y = [r[f'test_{d}_{metric}'] for r in rs]
            ax.scatter(x, y, c=colour, label=f'domain {d}', s=18)
            csv_rows += [[r['run_id'], r['variant'], r['seed'], d, xv, yv] for r, xv, yv in zip(rs, x, y)]
        ax.set_xlabel(label)
        ax.set_ylabel(f'test {metric.upper()}')
        ax.set_title(f'{model} on {ds}')
        ax.legend()
        fig.tight_layout()
        png = os.path.join(out_dir, name + '.png')
        fig.savefig(png, dpi=110)
        plt.close(fig)
        _write_csv(os.path.join(out_dir, name + '.csv'), ['run_id', 'variant', 'seed', 'domain', stat, metric], csv_rows)
        made[name] = png
    for ds in sorted({r['dataset'] for r in rows}):
        table = [e for e in group_table(rows) if e['dataset'] == ds]
        name = f'{metric.replace("@", "")}_vs_params_{ds}'
        fig, axes = plt.subplots(1, 2, figsize=(9, 4))
        csv_rows = []
        for ax, d in zip(axes, ('A', 'B')):
            for e in table:
                m = e[f'{d}_{metric}']
                err = None if math.isnan(m['ci_high']) else [[m['mean'] - m['ci_low']], [m['ci_high'] - m['mean']]]
                ax.errorbar([e['n_params']], [m['mean']], yerr=err, fmt='o', capsize=3, label=f"{e['model']}: {e['variant']}")
                csv_rows.append([e['model'], e['variant'], d, e['n_params'], m['mean'], m['std'], m['ci_low'], m['ci_high'], m['n']])
            ax.set_xlabel('parameters')
            ax.set_ylabel(f'test {metric.upper()} (mean, 95 % CI over seeds)')
            ax.set_title(f'domain {d}')
        axes[1].legend(fontsize=6, loc='best')
        fig.tight_layout()
        png = os.path.join(out_dir, name + '.png')
        fig.savefig(png, dpi=110)
        plt.close(fig)
        _write_csv(os.path.join(out_dir, name + '.csv'),
                   ['model', 'variant', 'domain', 'n_params', 'mean', 'std', 'ci_low', 'ci_high', 'n'], csv_rows)
        made[name] = png
    for ds, model in models:
        rs = [r for r in rows if r['dataset'] == ds and r['model'] == model and r['trace']]
        if not rs:
            continue
        name = f'training_curves_{ds}_{model}'
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 4))
        csv_rows = []
        for variant in sorted({r['variant'] for r in rs}):
            curves = [_curve(r['trace'], stat) for r in rs if r['variant'] == variant]
            for key, ax in (('valid_score', ax1), ('ortho', ax2)):
                by_epoch = defaultdict(list)
                for c in curves:
                    for epoch, v in c[key]:
                        by_epoch[epoch].append(v)
                epochs = sorted(by_epoch)
                means = [float(np.mean(by_epoch[e])) for e in epochs]
                ax.plot(epochs, means, marker='.', label=variant)
                csv_rows += [[variant, key, e, m, len(by_epoch[e])] for e, m in zip(epochs, means)]
        ax1.set_xlabel('epoch')
        ax1.set_ylabel('validation score (mean over seeds)')
        ax2.set_xlabel('epoch')
        ax2.set_ylabel(f'validation {label}, all users')
        ax2.legend(fontsize=6)
        fig.suptitle(f'{model} on {ds}')
        fig.tight_layout()
        png = os.path.join(out_dir, name + '.png')
        fig.savefig(png, dpi=110)
        plt.close(fig)
        _write_csv(os.path.join(out_dir, name + '.csv'), ['variant', 'series', 'epoch', 'mean', 'seeds'], csv_rows)
        made[name] = png
    return made


def _curve(trace, stat):
    """``{'valid_score': [(epoch, v)], 'ortho': [(epoch, v)]}`` of one run's trace (validated epochs;
    the orthogonality statistic averaged over both directions and stages, all users)."""
    out = {'valid_score': [], 'ortho': []}
    for e in trace:
        if 'valid' not in e:
            continue
        out['valid_score'].append((e['epoch'], e['valid_score']))
        v = np.nanmean([ortho_value(e['valid']['all'], d, stat) for d in 'ab'])
        if not math.isnan(v):
            out['ortho'].append((e['epoch'], float(v)))
    return out


def _fmt(m, digits=4):
    if isinstance(m, dict):
        if math.isnan(m['mean']):
            return 'nan'
        return f"{m['mean']:.{digits}f} ± {m['std']:.{digits}f}" if not math.isnan(m['std']) else f"{m['mean']:.{digits}f}"
    return f'{m:.{digits}f}' if isinstance(m, float) else str(m)


def markdown(rows, out_dir, title, stat='paper', plot_paths=None):
    """The results page (RecBole's results style): tables, comparisons, correlations, plots."""
    lines = [f'# {title}', '', f'{len(rows)} finished runs. Test metrics: mean ± std over seeds; intervals and '
             'per-run values in the CSV files beside the plots.', '']
    for ds in sorted({r['dataset'] for r in rows}):
        lines += [f'## {ds}', '']
        for d in ('A', 'B'):
            lines += [f'### Domain {d}', '', '| model | variant | seeds | params | epochs | wall (s) | ' +
                      ' | '.join(m.upper() for m in METRICS) + ' |', '|---|---|---:|---:|---:|---:|' + '---:|' * len(METRICS)]
            for e in (e for e in group_table(rows) if e['dataset'] == ds):
                lines.append(f"| {e['model']} | {e['variant']} | {len(e['seeds'])} | {e['n_params']:,} | {e['epochs']:.1f} | "
                             f"{e['wall_time_s']:.0f} | "
                             + ' | '.join(_fmt(e[f'{d}_{m}']) for m in METRICS) + ' |')
            lines.append('')
        table = [e for e in group_table(rows) if e['dataset'] == ds]
        if any(e[f'{d}/non_overlap_n_users'] > 0 for e in table for d in ('A', 'B')):
            lines += ['### Overlapped and non-overlapped users', '',
                      'Test users whose data (after `overlap_ratio`) has both domains (overlapped) or one '
                      '(non-overlapped), by the domain of the target; users: per run (median over seeds).', '',
                      '| model | variant | domain | users | seeds | ' + ' | '.join(m.upper() for m in METRICS) + ' |',
                      '|---|---|---|---|---:|' + '---:|' * len(METRICS)]
            for e in table:
                for g in USER_GROUPS:
                    d, kind = g.split('/')
                    lines.append(f"| {e['model']} | {e['variant']} | {d} | {kind.replace('_', '-')}: "
                                 f"{e[g + '_n_users']:,} | {len(e['seeds'])} | "
                                 + ' | '.join(_fmt(e[f'{g}_{m}']) for m in METRICS) + ' |')
            lines.append('')
    comps = comparisons(rows)
    if comps:
        n = max(len(c['seeds']) for c in comps)
        lines += ['## GCA against its base and the parameter-matched base (test NDCG@10, paired by seed)', '',
                  f'Paired t-test (two-sided), Holm-corrected across the {len(comps)} comparisons; Cohen\'s d_z; '
                  f'Wilcoxon signed-rank as a secondary test: with {n} seeds its smallest two-sided p is '
                  f'{wilcoxon_floor(n):.4f}, so it {"can never" if wilcoxon_floor(n) > 0.05 else "can"} reach 0.05.', '',
                  '| model | variant | against | domain | seeds | mean diff | d_z | p (t) | p (t, Holm) | p (Wilcoxon) |',
                  '|---|---|---|---|---:|---:|---:|---:|---:|---:|']
        for c in comps:
            lines.append(f"| {c['model']} | {c['variant']} | {c['against']} | {c['domain']} | {c['n']} | {c['mean_diff']:+.4f} | "
                         f"{_fmt(c['cohens_dz'], 2)} | {_fmt(c['p_t'])} | {_fmt(c['p_t_holm'])} | {_fmt(c['p_wilcoxon'])} |")
        lines.append('')
    corr = correlations(rows, stat)
    if corr:
        lines += [f'## Orthogonality against test NDCG@10 (one point per run; statistic: `{stat}`)', '',
                  '| model | domain | runs | Pearson r [95 % bootstrap] | Spearman ρ [95 % bootstrap] |', '|---|---|---:|---|---|']
        for c in corr:
            lines.append(f"| {c['model']} | {c['domain']} | {c['n']} | {c['pearson']:+.3f} [{c['pearson_ci_low']:+.3f}, "
                         f"{c['pearson_ci_high']:+.3f}] | {c['spearman']:+.3f} [{c['spearman_ci_low']:+.3f}, {c['spearman_ci_high']:+.3f}] |")
        lines.append('')
    for name, png in (plot_paths or {}).items():
        lines += [f'![{name}]({os.path.relpath(png, out_dir)})', '']
    return '\n'.join(lines)


def write_report(sweep_dir, out_md, stat='paper', title=None):
    """Build the page ``out_md`` (plots in ``<out_md without .md>_plots/``) from a sweep folder;
    returns its path."""
    rows = load_rows(sweep_dir)
    if not rows:
        raise FileNotFoundError(f'{sweep_dir}: no finished run (runs/*/result.json)')
    out_dir = os.path.dirname(os.path.abspath(out_md))
    plot_dir = os.path.splitext(os.path.abspath(out_md))[0] + '_plots'
    paths = plots(rows, plot_dir, stat=stat)
    text = markdown(rows, out_dir, title or f'Sweep {os.path.basename(os.path.abspath(sweep_dir))}', stat, paths)
    with open(out_md + '.tmp', 'w') as f:
        f.write(text + '\n')
    os.replace(out_md + '.tmp', out_md)
    return out_md
