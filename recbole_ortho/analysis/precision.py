"""
recbole_ortho.analysis.precision
################################

The bf16 accuracy page (``results/food_kitchen_precision.md``): does training and evaluating
under bf16 autocast (``precision: bf16``) change a model's test NDCG@10 against fp32?

Its run store is a sweep whose grid is ``precision: [fp32, bf16]`` per model
(``properties/sweep/food_kitchen_precision.yaml``). A *pair* is one model and seed in both
precisions: the same data, initial weights and batch order, so the paired difference
bf16 − fp32 isolates the arithmetic. Per model and domain the page shows both precisions' means,
the paired difference with its 95 % t-interval, and the seed standard deviation (of the fp32 runs:
how much test NDCG@10 moves from seed to seed in the reference precision).

The acceptance rule (fixed before any run, from the issue that asked for the check): bf16 becomes
a sweep default for a model only where the paired difference's 95 % interval lies within ±1 seed
standard deviation of zero, in both domains. Otherwise the page says "not accepted" and which
domain's interval leaves the band; with fewer than two pairs it says "pending".

A run asked for bf16 whose result says it ran fp32 (the fallback on a device without bf16
hardware, :func:`recbole_ortho.utils.precision.resolve_precision`) is not a bf16 run: it is listed
and left out. Runs emulated by oneDNN (``bf16_emulation``, ``provenance.precision_emulated``) give
bf16's numbers but not its speed; the page's time column says so.
"""

import math
import os
from collections import defaultdict

import numpy as np

from recbole_ortho.analysis.report import _outside_legend, _save_png, _styles, _write_csv
from recbole_ortho.analysis.stats import mean_ci, paired_comparison, sd_interval
from recbole_ortho.analysis.study import _code_line, _fmt

METRIC = 'ndcg@10'
PRECISIONS = ('fp32', 'bf16')
ACCEPTED, REJECTED, PENDING = 'accepted', 'not accepted', 'pending'


def requested(row):
    """The precision a run was asked for (its grid point; ``fp32`` when the setting is absent)."""
    return (row.get('settings') or {}).get('precision', 'fp32')


def ran(row):
    """The precision a run used (its provenance; the config's where a result has none)."""
    prov = row.get('provenance') or {}
    return prov.get('precision') or (row.get('config') or {}).get('precision', 'fp32')


def emulated(row):
    return bool((row.get('provenance') or {}).get('precision_emulated'))


def epoch_seconds(row):
    """Mean training + validation seconds per epoch (from the trace); None without one."""
    tr = row.get('trace') or []
    if not tr:
        return None
    return sum((e.get('train_time_s') or 0.0) + (e.get('valid_time_s') or 0.0) for e in tr) / len(tr)


def split_rows(rows):
    """``({model: {precision: {seed: row}}}, [fallen back rows])``: the runs by model, precision that
    ran and seed; a run asked for bf16 that ran fp32 goes to the second list."""
    by = defaultdict(lambda: defaultdict(dict))
    fell_back = []
    for r in rows:
        if requested(r) != ran(r):
            fell_back.append(r)
            continue
        p = ran(r)
        if p not in PRECISIONS:
            raise ValueError(f"{r['result_path']}: precision {p!r} is not one of {PRECISIONS}")
        if r['seed'] in by[r['model']][p]:
            raise ValueError(f"{r['result_path']}: a second {r['model']} {p} run of seed {r['seed']}")
        by[r['model']][p][r['seed']] = r
    return by, fell_back


def summarise(rows, metric=METRIC):
    """Per model: per domain the fp32 and bf16 summaries (:func:`mean_ci`), the paired difference
    bf16 − fp32 (:func:`paired_comparison` and its t-interval), the fp32 seed sd, and the decision;
    the model's decision over both domains; the orthogonality (GCA models) and epoch time."""
    by, fell_back = split_rows(rows)
    models = []
    for model in sorted(by, key=lambda m: (m.split('_')[0], m)):
        arms = by[model]
        seeds = sorted(set(arms['fp32']) & set(arms['bf16']))
        doms = {}
        for d in ('A', 'B'):
            key = f'test_{d}_{metric}'
            a32 = mean_ci([arms['fp32'][s][key] for s in sorted(arms['fp32'])])
            a16 = mean_ci([arms['bf16'][s][key] for s in sorted(arms['bf16'])])
            x16 = [arms['bf16'][s][key] for s in seeds]
            x32 = [arms['fp32'][s][key] for s in seeds]
            diffs = [float(v) for v in np.subtract(x16, x32)]
            diff = mean_ci(diffs)
            test = paired_comparison(x16, x32)
            band = a32['std']
            if len(seeds) < 2 or math.isnan(band):
                decision = PENDING
            elif -band <= diff['ci_low'] and diff['ci_high'] <= band:
                decision = ACCEPTED
            else:
                decision = REJECTED
            ortho = {}
            for p in PRECISIONS:
                vals = [arms[p][s][f'ortho_{d}_paper'] for s in sorted(arms[p])]
                vals = [v for v in vals if v is not None and not math.isnan(v)]
                ortho[p] = float(np.median(vals)) if vals else None
            doms[d] = {'fp32': a32, 'bf16': a16, 'diff': diff, 'diffs': diffs,
                       'test': test, 'band': band, 'band_ci': sd_interval(band, a32['n']),
                       'decision': decision, 'ortho': ortho,
                       'pct': 100 * diff['mean'] / a32['mean'] if seeds and a32['mean'] else math.nan}
        decisions = [doms[d]['decision'] for d in 'AB']
        overall = PENDING if PENDING in decisions else (ACCEPTED if all(x == ACCEPTED for x in decisions) else REJECTED)
        times = {p: [epoch_seconds(r) for r in arms[p].values() if epoch_seconds(r) is not None] for p in PRECISIONS}
        models.append({'model': model, 'pairs': seeds, 'domains': doms, 'decision': overall,
                       'n': {p: len(arms[p]) for p in PRECISIONS},
                       'epoch_s': {p: (float(np.mean(v)) if v else None) for p, v in times.items()},
                       'emulated': any(emulated(r) for r in arms['bf16'].values()),
                       'stop': sorted({r.get('stop_reason') or 'unknown' for p in PRECISIONS for r in arms[p].values()}),
                       'epochs': sorted({r.get('epochs_run') for p in PRECISIONS for r in arms[p].values()})})
    return models, fell_back


def _interval(lo_hi):
    lo, hi = lo_hi
    return 'n/a' if math.isnan(lo) else f'[{lo:.4f}, {hi:.4f}]'


def _why(m):
    if m['decision'] == PENDING:
        return f"{len(m['pairs'])} pair(s) so far; the rule needs at least 2 and the fp32 seed sd"
    parts = []
    for d in 'AB':
        x = m['domains'][d]
        inside = 'inside' if x['decision'] == ACCEPTED else 'outside'
        parts.append(f"{d}: [{x['diff']['ci_low']:+.4f}, {x['diff']['ci_high']:+.4f}] {inside} ±{x['band']:.4f}")
    return '; '.join(parts)


def _plot(models, out_dir, render):
    """Per model and domain: each seed's bf16 − fp32 difference, the mean with its 95 % interval,
    and the ±1 seed sd band the rule asks the interval to stay in."""
    name = 'bf16_minus_fp32_ndcg10'
    rows = []
    for m in models:
        for d in 'AB':
            x = m['domains'][d]
            rows.append([m['model'], d, len(m['pairs']), x['diff']['mean'], x['diff']['ci_low'], x['diff']['ci_high'],
                         x['band'], x['decision']])
    digest = _write_csv(os.path.join(out_dir, name + '.csv'),
                        ['model', 'domain', 'pairs', 'mean_diff', 'ci_low', 'ci_high', 'seed_sd_fp32', 'decision'], rows)
    png = os.path.join(out_dir, name + '.png')
    if render and models:
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
        style = _styles(['A', 'B'])
        fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(models) + 2), 4.2), layout='constrained')
        for i, m in enumerate(models):
            for j, d in enumerate('AB'):
                x = m['domains'][d]
                pos = i + (j - 0.5) * 0.36
                colour, marker = style[d]
                if not math.isnan(x['band']):
                    ax.add_patch(plt.Rectangle((pos - 0.15, -x['band']), 0.3, 2 * x['band'], color=colour, alpha=0.15,
                                               lw=0))
                ax.scatter([pos] * len(x['diffs']), x['diffs'], color=colour, marker=marker, s=14, alpha=0.6, zorder=3)
                if not math.isnan(x['diff']['ci_low']):
                    ax.errorbar([pos], [x['diff']['mean']], yerr=[[x['diff']['mean'] - x['diff']['ci_low']],
                                                                   [x['diff']['ci_high'] - x['diff']['mean']]],
                                fmt='_', color='black', capsize=4, ms=14, zorder=4)
        ax.axhline(0, color='grey', lw=0.8)
        ax.set_xticks(range(len(models)), [m['model'] for m in models])
        ax.set_ylabel('test NDCG@10, bf16 − fp32')
        ax.set_title('bf16 − fp32 per seed (dots), mean with 95 % interval (black),\n'
                     '±1 seed sd of the fp32 runs (shaded): the interval must stay inside it', fontsize=9)
        _outside_legend(fig, [Patch(color=style[d][0], alpha=0.5) for d in 'AB'], [f'domain {d}' for d in 'AB'])
        ax.grid(alpha=0.3, axis='y')
        _save_png(fig, png, digest)
    return png


def markdown(title, store, models, fell_back, rows, plot, out_dir, pairs_planned=None):
    lines = [f'# {title}', '',
             '<!-- generated by `python -m recbole_ortho.analysis --regenerate` '
             '(recbole_ortho/analysis/precision.py): edit the code, not this text -->', '']
    n = len(rows)
    cpus = sorted({((r.get('provenance') or {}).get('device') or {}).get('cpu') or 'unknown' for r in rows})
    emu = sum(emulated(r) for r in rows)
    cfg = rows[0]['config'] if rows else {}
    lines += [f'Runs: {n} finished in `{store}` (spec: `properties/sweep/{os.path.basename(store)}.yaml`). '
              + _code_line(rows), '']
    if rows:
        lines += [f"Schedule: {cfg.get('epochs')} epochs, Adam lr {cfg.get('learning_rate')}, warm-up "
                  f"{cfg.get('warmup_epochs')} epochs (a fixed budget: the runs stop at the cap, `epoch_cap`, by "
                  f"design), the best validation epoch's weights tested; "
                  f"{cfg.get('eval_neg_num')} negatives per target (ABXI protocol). "
                  f"Machine(s): {', '.join(cpus)}. bf16 runs emulated by oneDNN (no bf16 hardware): {emu} of "
                  f"{sum(ran(r) == 'bf16' for r in rows)}.", '']
    lines += ['**Rule** (fixed before the runs): bf16 becomes a sweep default for a model only where the 95 % '
              'interval of the paired difference bf16 − fp32 in test NDCG@10 lies within ±1 seed standard '
              'deviation (of the model\'s fp32 runs) of zero, in both domains. A pair is one model and seed in both '
              'precisions (same data, initial weights and batch order).', '',
              'The band is estimated from the model\'s few fp32 seeds, so it is uncertain itself. Two seeds '
              'that happen to agree give a narrow band that almost no interval fits. The table gives its 95 % '
              'interval (chi-square). The decision still follows the rule as fixed. A decision whose band '
              'interval is wide is weak either way.', '']
    lines += ['## Decision per model', '',
              '| model | pairs | bf16 as a sweep default | intervals against ±1 seed sd |',
              '|---|---:|---|---|']
    for m in models:
        provisional = pairs_planned and m['decision'] != PENDING and len(m['pairs']) < pairs_planned
        note = f" (provisional: {len(m['pairs'])} of {pairs_planned} pairs)" if provisional else ''
        lines.append(f"| {m['model']} | {len(m['pairs'])} | **{m['decision']}**{note} | {_why(m)} |")
    if not models:
        lines.append('| (no run yet) | 0 | pending | |')
        return '\n'.join(lines)
    lines += ['', '## Test NDCG@10', '',
              '| model | domain | fp32: mean ± sd (runs) | bf16: mean ± sd (runs) | bf16 − fp32 [95 % interval] '
              '| % of fp32 | paired t p | seed sd (fp32) | its 95 % interval | within ±1 sd |',
              '|---|---|---:|---:|---:|---:|---:|---:|---:|---|']
    for m in models:
        for d in 'AB':
            x = m['domains'][d]
            a32, a16, diff = x['fp32'], x['bf16'], x['diff']
            ci = (f"{diff['mean']:+.4f} [{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}]"
                  if not math.isnan(diff['ci_low']) else _fmt(diff['mean'], '+.4f'))
            lines.append(f"| {m['model']} | {d} | {_fmt(a32['mean'])} ± {_fmt(a32['std'])} ({a32['n']}) | "
                         f"{_fmt(a16['mean'])} ± {_fmt(a16['std'])} ({a16['n']}) | {ci} | {_fmt(x['pct'], '+.1f')} | "
                         f"{_fmt(x['test']['p_t'], '.3f')} | {_fmt(x['band'])} | {_interval(x['band_ci'])} | "
                         f"{x['decision']} |")
    gca = [m for m in models if any(m['domains'][d]['ortho']['fp32'] is not None for d in 'AB')]
    if gca:
        lines += ['', '## Orthogonality (GCA models)', '',
                  "The paper's statistic, median |cos(X, X')| over the test users, median over runs:", '',
                  '| model | domain | fp32 | bf16 |', '|---|---|---:|---:|']
        for m in gca:
            for d in 'AB':
                o = m['domains'][d]['ortho']
                lines.append(f"| {m['model']} | {d} | {_fmt(o['fp32'], '.3f')} | {_fmt(o['bf16'], '.3f')} |")
    lines += ['', '## Time per epoch (training + validation, mean over runs)', '',
              'Wall-clock time of the runs as they ran, on a machine shared with other work (a paused run '
              'counts its pause): a cost estimate, not a benchmark. Emulated bf16 is not bf16 hardware\'s speed.', '',
              '| model | fp32 (s) | bf16 (s) | bf16 / fp32 | bf16 emulated | epochs run | stop reason |',
              '|---|---:|---:|---:|---|---|---|']
    for m in models:
        t32, t16 = m['epoch_s']['fp32'], m['epoch_s']['bf16']
        ratio = _fmt(t16 / t32, '.2f') if t32 and t16 else 'n/a'
        lines.append(f"| {m['model']} | {_fmt(t32, '.1f')} | {_fmt(t16, '.1f')} | {ratio} | "
                     f"{'yes (not bf16 hardware speed)' if m['emulated'] else 'no'} | "
                     f"{', '.join(str(e) for e in m['epochs'])} | {', '.join(m['stop'])} |")
    if fell_back:
        lines += ['', '## Left out: asked for bf16, ran fp32', '']
        lines += [f"- `{r['run_id']}` (no bf16 hardware and no `bf16_emulation`)" for r in fell_back]
    if plot:
        rel = os.path.relpath(plot, out_dir)
        lines += ['', '## Plot', '', f'![bf16 − fp32 per model and domain]({rel})']
    return '\n'.join(lines)


def write_precision_page(sources, entry, out_md, title, render_plots=True):
    """Build the page ``out_md`` (plot in ``<out_md without .md>_plots/``) from the loaded
    ``sources`` (:func:`recbole_ortho.analysis.pages.load_sources`) and its registry ``entry``."""
    rows = sources[f"{entry['sweep']}.rows"]
    models, fell_back = summarise(rows)
    out_dir = os.path.dirname(os.path.abspath(out_md))
    plot_dir = os.path.splitext(os.path.abspath(out_md))[0] + '_plots'
    os.makedirs(plot_dir, exist_ok=True)
    if render_plots:
        import matplotlib
        matplotlib.use('Agg')
    plot = _plot(models, plot_dir, render_plots) if models else None
    store = os.path.relpath(sources[f"{entry['sweep']}.dir"], sources['root'])
    text = markdown(title, store, models, fell_back, rows, plot, out_dir, entry.get('pairs_planned'))
    with open(out_md + '.tmp', 'w') as f:
        f.write(text + '\n')
    os.replace(out_md + '.tmp', out_md)
    return out_md
