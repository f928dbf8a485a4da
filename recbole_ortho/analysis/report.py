"""
recbole_ortho.analysis.report
#############################

Tables, paired comparisons, orthogonality-accuracy correlations and plots from a sweep's run
store, and the markdown results page that shows them (``python -m recbole_ortho.analysis``).

The page's statistics: the comparisons the sweep spec declares (``primary``) are confirmatory and
Holm-corrected among themselves; every other comparison is exploratory (Holm within the
exploratory family). The paper's orthogonality statistic per run and its median over runs,
correlations pooled over runs and within configurations, the power of the paired t-test at the
observed seed-to-seed spread, per-user tests and a hierarchical bootstrap when the runs saved
their ranks (:mod:`~recbole_ortho.analysis.ranks`), and the code behind each row
(:mod:`~recbole_ortho.analysis.provenance`): runs of different package code are not paired unless
``allow_mixed_commits``.
"""

import csv
import math
import os
from collections import defaultdict

import numpy as np

from recbole_ortho.analysis.provenance import CodeComparer, MixedCommitsError, commit_label, git_root
from recbole_ortho.analysis.stats import (WILCOXON_EXACT_MAX_N, correlation, holm, mean_ci, paired_comparison,
                                          power_summary, wilcoxon_floor, within_correlation)
from recbole_ortho.sweep.store import RunStore, read_json

METRICS = ('ndcg@1', 'ndcg@10', 'hit@5', 'hit@10', 'hit@20', 'mrr', 'auc')
#: the orthogonality statistics a report can use (see recbole_ortho.model.ortho)
ORTHO_STATS = ('paper', 'median_abs', 'pooled_abs', 'pooled_signed', 'user_mean')
#: the user groups of a result beside A and B (recbole_ortho.evaluator.GROUPS): overlapped users
#: (data in both domains) and the others; a page shows them when some run has non-overlapped users
USER_GROUPS = tuple(f'{d}/{g}' for d in ('A', 'B') for g in ('overlap', 'non_overlap'))
#: the paper's range of |cos(X, X')| for GCA outputs (Lee et al., arXiv 2510.09435)
PAPER_ORTHO_RANGE = (0.1, 0.2)
#: the relative gain whose required number of seeds the page states
POWER_GAIN = 0.02


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
    from recbole_ortho.model.registry import get_model
    try:
        return base_model_of(get_model(model))
    except (ValueError, TypeError):
        return None


def run_wall_s(res):
    """The whole run's wall time in seconds. A result written since ``wall_time_process_s`` exists
    has it in ``wall_time_s``; in an older resumed one (``resumed_from``) ``wall_time_s`` is the last
    process's alone, so the training and validation time of the epochs up to the resumed checkpoint
    (from the trace) is added."""
    wall = res.get('wall_time_s')
    if wall is None or 'wall_time_process_s' in res or not res.get('resumed_from'):
        return wall
    upto = res['resumed_from'].get('epoch', -1)
    return wall + sum((e.get('train_time_s') or 0.0) + (e.get('valid_time_s') or 0.0)
                      for e in res.get('trace') or [] if e['epoch'] <= upto)


def load_rows(sweep_dir):
    """One flat row per finished run: its spec, counts, per-domain test/valid metrics and
    orthogonality statistics (every summary). A ``_GCA`` model run without a grid (its spec's
    variant ``base``) is labelled ``default settings``: it is a GCA variant, compared with its base."""
    rows = []
    bases = {}
    for spec, res, path in _finished_runs(sweep_dir):
        model = spec['model']
        if model not in bases:
            bases[model] = base_model(model)
        variant = 'default settings' if spec['variant'] == 'base' and bases[model] else spec['variant']
        row = {'run_id': spec['run_id'], 'model': model, 'dataset': spec['dataset'], 'seed': spec['seed'],
               'base_model': bases[model],
               'variant': variant, 'settings': spec['settings'], 'n_params': res['n_params'],
               'epochs_run': res.get('epochs_run'), 'best_epoch': res.get('best_epoch'),
               'stop_reason': res.get('stop_reason'), 'config': res.get('config') or {},
               'wall_time_s': run_wall_s(res), 'trace': res.get('trace', []),
               'data_time_s': res.get('data_time_s') or 0.0,
               'param_match': (res.get('param_match') or {}).get('target_model'),
               'result_path': path, 'provenance': res.get('provenance'), 'code': commit_label(res.get('provenance')),
               'eval_ties': ((res.get('config') or {}).get('eval_ties') or 'optimistic'),
               # the precision that ran (None: a run made before the setting existed, all of them fp32)
               'precision': res.get('precision')}
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
        for name, ev in (res.get('also') or {}).items():        # the same weights under other protocols
            for d in ('A', 'B'):
                for m in METRICS:
                    row[f'also_{name}_test_{d}_{m}'] = (ev.get('test') or {}).get(d, {}).get(m, math.nan)
        row['also'] = sorted(res.get('also') or {})
        for d, direction in (('A', 'a'), ('B', 'b')):
            for stat in ORTHO_STATS:
                row[f'ortho_{d}_{stat}'] = ortho_value(res['test'][d], direction, stat)
        row['ortho_stages'] = ortho_stages(res['test'])
        rows.append(row)
    return rows


def _finished_runs(sweep_dir):
    """``[(spec, result, result path)]`` of the finished runs of a sweep folder (as
    :meth:`RunStore.results`, with the path the ranks file is found beside)."""
    store = RunStore(sweep_dir)
    out = []
    for rid in sorted(os.listdir(store.runs_dir)):
        r, s = store.path(rid, 'result.json'), store.path(rid, 'spec.json')
        if os.path.isfile(r) and os.path.isfile(s):
            out.append((read_json(s), read_json(r), r))
    return out


def ortho_stages(result_test):
    """``{(domain, stage, stat): value}`` of a result's test orthogonality statistics per GCA stage
    (``ortho_cos_a@gca0/paper`` of domain A's users -> ``('A', 'gca0', 'paper')``; domain A's users
    with direction a, B's with b, as :func:`ortho_value`)."""
    out = {}
    for d, direction in (('A', 'a'), ('B', 'b')):
        for k, v in (result_test.get(d) or {}).items():
            head, _, tail = k.partition('/')
            if head.startswith(f'ortho_cos_{direction}@gca') and tail in ('paper', 'median_abs') and v is not None:
                out[(d, head.split('@', 1)[1], tail)] = float(v)
    return out


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
             'epochs': float(np.mean([r['epochs_run'] for r in rs])), 'wall_time_s': float(np.mean([r['wall_time_s'] for r in rs])),
             'commits': sorted({r.get('code', 'unknown') for r in rs})}
        for d in ('A', 'B'):
            for m in METRICS:
                e[f'{d}_{m}'] = mean_ci([r[f'{phase}_{d}_{m}'] for r in rs])
        for g in USER_GROUPS:
            e[f'{g}_n_users'] = int(np.median([r[f'{phase}_{g}_n_users'] for r in rs]))
            for m in METRICS:
                e[f'{g}_{m}'] = mean_ci([r[f'{phase}_{g}_{m}'] for r in rs])
        out.append(e)
    return out


def comparisons(rows, metric='ndcg@10', primary=None, allow_mixed_commits=False, code=None):
    """Each GCA variant against its base model and against the base widened to its parameter
    count, per domain, paired by seed (test ``metric``).

    ``primary`` (the checked ``primary`` entries of the sweep spec,
    :func:`recbole_ortho.sweep.spec.check_primary`) marks the declared comparisons
    ``family='confirmatory'`` (on each entry's own metric) and every other one ``exploratory``;
    ``p_t_holm`` is Holm's correction within the comparison's family. Each seed pair's code is
    compared (``code``: a :class:`~recbole_ortho.analysis.provenance.CodeComparer`, default: equal
    commits only): ``code_pairs`` lists ``(seed, code a, code b, same)`` (``same`` None when a
    commit is unknown); a pair of different code raises :class:`MixedCommitsError` unless
    ``allow_mixed_commits``, and is then marked ``mixed_code``."""
    primary = list(primary or [])
    code = code or CodeComparer(None)
    metrics = [metric] + sorted({e['metric'] for e in primary} - {metric})
    out = []
    for m in metrics:
        for c in _paired(rows, m, code):
            c['family'] = 'confirmatory' if any(_declares(e, c) for e in primary) else 'exploratory'
            if m == metric or c['family'] == 'confirmatory':
                out.append(c)
    for family in ('confirmatory', 'exploratory'):
        fam = [c for c in out if c['family'] == family]
        for c, p in zip(fam, holm([c['p_t'] for c in fam])):
            c['p_t_holm'] = p
    mixed = [c for c in out if c['mixed_code']]
    if mixed and not allow_mixed_commits:
        lines = list(dict.fromkeys(f"{c['model']} {c['variant']} vs {c['against']}, seed {s}: {a} / {b}"
                                   for c in mixed for s, a, b, same in c['code_pairs'] if same is False))
        raise MixedCommitsError(f'{len(lines)} seed pairs were produced by different package code (git diff '
                                'of recbole_ortho/ between their commits not empty); pass allow_mixed_commits to '
                                'pair them anyway: ' + '; '.join(lines[:6]) + (' ...' if len(lines) > 6 else ''))
    return out


def _declares(entry, c):
    """Whether a ``primary`` entry declares the comparison ``c``."""
    return (c['model'] == entry['model'] and c['variant'] == entry['label'] and c['against_kind'] == entry['against']
            and c['metric'] == entry['metric'] and c['domain'] in entry['domains'])


def _paired(rows, metric, code):
    """The comparisons of :func:`comparisons` on one metric, without families or Holm."""
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
            pairs = [(s, runs[s].get('code', 'unknown'), bruns[s].get('code', 'unknown'),
                      code.same_code(runs[s].get('provenance'), bruns[s].get('provenance'))) for s in seeds]
            for d in ('A', 'B'):
                c = paired_comparison([runs[s][f'test_{d}_{metric}'] for s in seeds],
                                      [bruns[s][f'test_{d}_{metric}'] for s in seeds])
                out.append(dict(c, dataset=ds, model=model, variant=variant, against=f'{bmodel} ({bvariant})',
                                against_kind='base' if bvariant == 'base' else 'matched', domain=d, metric=metric,
                                seeds=seeds, code_pairs=pairs, mixed_code=any(p[3] is False for p in pairs),
                                unknown_code=any(p[3] is None for p in pairs),
                                a_values=[runs[s][f'test_{d}_{metric}'] for s in seeds],
                                b_values=[bruns[s][f'test_{d}_{metric}'] for s in seeds],
                                a_runs=[runs[s] for s in seeds], b_runs=[bruns[s] for s in seeds]))
    return out


def missing_primary(comps, primary, datasets):
    """The declared comparisons (``primary`` entries x datasets x domains) the runs do not have:
    ``[(dataset, entry, domain)]``."""
    have = {(c['dataset'], c['model'], c['variant'], c['against_kind'], c['metric'], c['domain'])
            for c in comps if c['family'] == 'confirmatory'}
    return [(ds, e, d) for ds in datasets for e in primary or [] for d in e['domains']
            if (ds, e['model'], e['label'], e['against'], e['metric'], d) not in have]


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


def within_correlations(rows, stat='paper', metric='ndcg@10'):
    """Orthogonality against test ``metric`` within each configuration (across its seeds) per
    model with GCA and domain: ``per_config`` = ``[(variant, runs, Pearson r)]`` and ``pooled`` =
    :func:`~recbole_ortho.analysis.stats.within_correlation` (each configuration centred on its
    means, then correlated)."""
    out = []
    for (ds, model) in sorted({(r['dataset'], r['model']) for r in rows}):
        rs = [r for r in rows if r['dataset'] == ds and r['model'] == model]
        for d in ('A', 'B'):
            pts = [(r[f'ortho_{d}_{stat}'], r[f'test_{d}_{metric}'], r['variant']) for r in rs
                   if not math.isnan(r[f'ortho_{d}_{stat}'])]
            if len(pts) < 3:
                continue
            x, y, g = (np.array(v, dtype=object if i == 2 else float) for i, v in enumerate(zip(*pts)))
            per = []
            for v in sorted(set(g)):
                m = g == v
                xs, ys = x[m], y[m]
                r = float(np.corrcoef(xs, ys)[0, 1]) if m.sum() >= 3 and xs.std() > 0 and ys.std() > 0 else math.nan
                per.append((v, int(m.sum()), r))
            out.append({'dataset': ds, 'model': model, 'domain': d, 'stat': stat, 'metric': metric,
                        'per_config': per, 'pooled': within_correlation(x, y, g)})
    return out


def orthogonality_table(rows):
    """The paper's statistic per run and its median over runs: per (dataset, model, variant,
    domain, GCA stage), the runs' ``paper`` values (|mean cos(X, X')| over the domain's test query
    steps, by seed), their median, and the median over runs of ``median_abs`` (the median |cos| of
    a run's steps), each placed against :data:`PAPER_ORTHO_RANGE` (``below``, ``within``, ``above``)."""
    groups = defaultdict(list)
    for r in rows:
        for (d, stage, st), v in (r.get('ortho_stages') or {}).items():
            groups[(r['dataset'], r['model'], r['variant'], d, stage)].append((r['seed'], st, v))
    out = []
    for key, vals in sorted(groups.items()):
        paper = sorted((s, v) for s, st, v in vals if st == 'paper')
        med = [v for s, st, v in vals if st == 'median_abs']
        e = dict(zip(('dataset', 'model', 'variant', 'domain', 'stage'), key))
        e.update(paper=paper, paper_median=float(np.median([v for _, v in paper])) if paper else math.nan,
                 median_abs_median=float(np.median(med)) if med else math.nan)
        for k in ('paper_median', 'median_abs_median'):
            v = e[k]
            e[k + '_vs_paper'] = 'n/a' if math.isnan(v) else ('below' if v < PAPER_ORTHO_RANGE[0] else
                                                             'above' if v > PAPER_ORTHO_RANGE[1] else 'within')
        out.append(e)
    return out


def power_table(comps, gain=POWER_GAIN):
    """:func:`~recbole_ortho.analysis.stats.power_summary` of each comparison with at least two
    seeds: what the two-sided paired t-test (alpha 0.05, power 0.8) could detect with these seeds
    and how many a ``gain`` (share of the base's mean) needs."""
    out = []
    for c in comps:
        if c['n'] >= 2:
            out.append(dict(power_summary(c['a_values'], c['b_values'], gain=gain), comparison=c))
    return out


def user_level(comps, n_boot=2000, seed=0):
    """Per-user results of the comparisons whose runs all saved ranks (``result.ranks.npz`` beside
    ``result.json``): :func:`~recbole_ortho.analysis.ranks.configuration_difference` on the test
    users of the comparison's domain, each run's metric under its own tie rule."""
    from recbole_ortho.analysis.ranks import configuration_difference, load_ranks, ranks_path
    cache, out = {}, []

    def ranks(row):
        p = ranks_path(row['result_path'])
        if p not in cache:
            cache[p] = load_ranks(p)
        return cache[p], row['eval_ties']

    for c in comps:
        runs = c['a_runs'] + c['b_runs']
        if not runs or not all(r.get('result_path') and os.path.isfile(ranks_path(r['result_path'])) for r in runs):
            continue
        a = {r['seed']: ranks(r) for r in c['a_runs']}
        b = {r['seed']: ranks(r) for r in c['b_runs']}
        out.append(dict(configuration_difference(a, b, metric=c['metric'], domain=c['domain'], n_boot=n_boot, seed=seed),
                        comparison=c))
    return out


def golden_note(repo_dir=None, commits=()):
    """What the golden test (``tests/test_golden.py``, ``tests/golden/golden.json`` of the checkout
    ``repo_dir``, default: the one this package runs from) guarantees about results of different
    commits, as markdown lines (``commits``: the page's commits, each said to have the test in its
    tree or not); [] when the checkout has no golden file."""
    repo_dir = repo_dir or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(repo_dir, 'tests', 'golden', 'golden.json')
    if not os.path.isfile(path):
        return []
    golden = read_json(path)
    m = golden.get('machine') or {}
    runs = sorted(golden.get('runs') or {})
    exact = 'cpu_model' in m
    where = ', '.join(f'{k} {m[k]}' for k in sorted(m))
    return [
        f"The golden test (`tests/test_golden.py`) reruns {len(runs)} fixed-seed 2-epoch trainings "
        f"({', '.join(runs)}) on the tiny test fixture (1 thread) and compares losses, traces, metrics and "
        f"orthogonality statistics with `tests/golden/golden.json`, recorded at commit {golden.get('recorded_at', '?')} "
        f"({where}). " + (
            'The comparison is bit for bit on a machine equal to the recorded one (torch build, CPU capability, '
            'architecture, CPU model), elsewhere to 1e-6 relative (losses, statistics) and 1e-9 absolute (ranking '
            'metrics).' if exact else
            'Its machine record has no CPU model, so the test cannot recognise the recording machine and compares '
            'to 1e-6 relative (losses, statistics) and 1e-9 absolute (ranking metrics) on every machine, this one '
            'included: it does not vouch for bit-identical training.'),
        'What it guarantees for this page: at every commit where the golden test passed, those small runs agree '
        'with the recorded ones to that precision, so a change of the package code between two such commits that '
        'altered ABXI/ABXI_GCA training on them beyond it would have failed it. It does not cover the Food-Kitchen runs '
        'themselves (12 epochs, 2 threads, the real data), options outside the 8 recorded sets, the other '
        'models, nor commits before the test was added; a reconstructed commit (`*`) is only the parent of the '
        'commit that added the result, so the code that ran may be older. (The comparison rule above is the '
        "current checkout's; the test in an older commit's tree may have compared differently.)",
    ] + _golden_in(repo_dir, commits)


def _golden_in(repo_dir, commits):
    """A line saying which of ``commits`` have the golden test in their tree ([] without git)."""
    import subprocess
    have, lack = [], []
    for c in sorted(set(commits)):
        try:
            r = subprocess.run(['git', '-C', repo_dir, 'cat-file', '-e', f'{c}:tests/test_golden.py'],
                               capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return []
        (have if r.returncode == 0 else lack).append(c[:7])
    if not have and not lack:
        return []
    return [f"Of the {len(have) + len(lack)} commits behind these runs, {len(have)} have the golden test in their "
            f"tree{' (' + ', '.join(have) + ')' if have else ''}"
            f"{'; ' + ', '.join(lack) + ' do not' if lack else ''}; whether it passed at each was not recorded."]


#: the PNG metadata key holding the SHA-256 of the CSV a figure was drawn from: ``--check``
#: compares it with the regenerated CSV instead of PNG bytes (which vary with fonts and versions)
PNG_HASH_KEY = 'plotted-data-sha256'
#: axis labels of the orthogonality statistics
STAT_LABELS = {'paper': '|mean cos(X, X\')| (paper formula)', 'median_abs': 'median |cos(X, X\')|',
               'pooled_abs': 'mean |cos(X, X\')| over steps', 'pooled_signed': 'mean cos(X, X\')',
               'user_mean': 'mean over users of mean |cos(X, X\')|'}
_MARKERS = ('o', 's', '^', 'D', 'v', 'P', 'X', '*', '<', '>')


def _write_csv(path, header, rows):
    """Write a CSV atomically; returns the SHA-256 of its bytes."""
    import hashlib
    import io
    buf = io.StringIO(newline='')
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    data = buf.getvalue().encode()
    with open(path + '.tmp', 'wb') as f:
        f.write(data)
    os.replace(path + '.tmp', path)
    return hashlib.sha256(data).hexdigest()


def _save_png(fig, png, digest):
    """Save ``fig`` atomically as ``png`` with the plotted data's hash in its metadata."""
    import matplotlib.pyplot as plt
    fig.savefig(png + '.tmp', format='png', dpi=110, metadata={PNG_HASH_KEY: digest})
    plt.close(fig)
    os.replace(png + '.tmp', png)


def _styles(labels):
    """``{label: (colour, marker)}``, one distinct pair per label."""
    import matplotlib
    colours = matplotlib.colormaps['tab10'].colors
    return {lab: (colours[i % len(colours)], _MARKERS[i % len(_MARKERS)]) for i, lab in enumerate(labels)}


def _outside_legend(fig, handles, labels, ncol=2):
    """A legend below the axes (the figure uses constrained layout, which keeps room for it)."""
    if handles:
        fig.legend(handles, labels, loc='outside lower center', ncols=max(1, min(ncol, len(labels))), fontsize=7,
                   frameon=False)


def _dodge(xs, frac=0.018):
    """Small horizontal offsets so that points with equal or nearly equal x (parameter counts
    matched to within ``frac`` of the x range) sit side by side, ``frac`` of the range apart
    (of the value when all are equal), in their given order."""
    span = (max(xs) - min(xs)) or abs(xs[0]) or 1.0
    step = frac * span
    out, clusters = list(xs), []
    for i in sorted(range(len(xs)), key=lambda i: (xs[i], i)):
        if clusters and xs[i] - xs[clusters[-1][-1]] < step:
            clusters[-1].append(i)
        else:
            clusters.append([i])
    for idx in clusters:
        centre = float(np.mean([xs[i] for i in idx]))
        for k, i in enumerate(sorted(idx)):
            out[i] = centre + (k - (len(idx) - 1) / 2) * step
    return out


def plots(rows, out_dir, stat='paper', metric='ndcg@10', render=True):
    """The paper's figures as PNG plus the CSV behind each: the orthogonality-NDCG scatter per
    model (one panel per domain, variants by colour and marker), NDCG against parameters per
    dataset (points of equal parameter count dodged side by side; error bars only where there are
    seeds to make an interval), and the validation score and orthogonality over epochs (from
    ``trace``) per model; returns ``{name: png path}``. Each PNG carries the SHA-256 of its CSV
    under :data:`PNG_HASH_KEY`. ``render=False`` writes the CSVs only (``--check``: fast, and the
    same names are returned)."""
    if render:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    os.makedirs(out_dir, exist_ok=True)
    made = {}
    label = STAT_LABELS[stat]
    mlabel = metric.upper()
    models = sorted({(r['dataset'], r['model']) for r in rows if not math.isnan(r['ortho_A_' + stat])})
    for ds, model in models:
        rs = [r for r in rows if r['dataset'] == ds and r['model'] == model]
        name = f'ortho_vs_{metric.replace("@", "")}_{ds}_{model}'
        csv_rows = []
        for d in ('A', 'B'):
            csv_rows += [[r['run_id'], r['variant'], r['seed'], d, r[f'ortho_{d}_{stat}'], r[f'test_{d}_{metric}']]
                         for r in rs]
        digest = _write_csv(os.path.join(out_dir, name + '.csv'), ['run_id', 'variant', 'seed', 'domain', stat, metric],
                            csv_rows)
        png = os.path.join(out_dir, name + '.png')
        made[name] = png
        if not render:
            continue
        variants = sorted({r['variant'] for r in rs})
        style = _styles(variants)
        n_seeds = max(sum(r['variant'] == v for r in rs) for v in variants)
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.4 + 0.22 * ((len(variants) + 1) // 2)), layout='constrained')
        handles = {}
        for ax, d in zip(axes, ('A', 'B')):
            for v in variants:
                pts = [(r[f'ortho_{d}_{stat}'], r[f'test_{d}_{metric}']) for r in rs if r['variant'] == v
                       and not math.isnan(r[f'ortho_{d}_{stat}'])]
                if pts:
                    colour, marker = style[v]
                    handles[v] = ax.scatter(*zip(*pts), color=colour, marker=marker, s=34, alpha=0.85,
                                            edgecolors='black', linewidths=0.4)
            ax.set_xlabel(label)
            ax.set_ylabel(f'test {mlabel}')
            ax.set_title(f'domain {d}')
            ax.grid(alpha=0.3)
        fig.suptitle(f'{model} on {ds}: one point per run'
                     + (f' ({n_seeds} seeds per variant)' if n_seeds > 1 else ' (one seed)'))
        _outside_legend(fig, [handles[v] for v in variants if v in handles], [v for v in variants if v in handles])
        _save_png(fig, png, digest)
    for ds in sorted({r['dataset'] for r in rows}):
        table = [e for e in group_table(rows) if e['dataset'] == ds]
        name = f'{metric.replace("@", "")}_vs_params_{ds}'
        csv_rows = []
        for d in ('A', 'B'):
            for e in table:
                m = e[f'{d}_{metric}']
                csv_rows.append([e['model'], e['variant'], d, e['n_params'], m['mean'], m['std'], m['ci_low'],
                                 m['ci_high'], m['n']])
        digest = _write_csv(os.path.join(out_dir, name + '.csv'),
                            ['model', 'variant', 'domain', 'n_params', 'mean', 'std', 'ci_low', 'ci_high', 'n'], csv_rows)
        png = os.path.join(out_dir, name + '.png')
        made[name] = png
        if not render:
            continue
        labels = [f"{e['model']}: {e['variant']}" for e in table]
        style = _styles(labels)
        xs = _dodge([e['n_params'] / 1e6 for e in table])
        ns = sorted({e[f'A_{metric}']['n'] for e in table})
        if ns == [1]:
            ylab = f'test {mlabel} (one seed, no interval)'
        elif ns[0] >= 2:
            ylab = f'test {mlabel}: mean, 95 % CI over {ns[0] if len(ns) == 1 else "the"} seeds'
        else:
            ylab = f'test {mlabel}: mean; 95 % CI where more than one seed'
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.4 + 0.22 * ((len(labels) + 1) // 2)), layout='constrained')
        handles = []
        for ax, d in zip(axes, ('A', 'B')):
            handles = []
            for e, x, lab in zip(table, xs, labels):
                m = e[f'{d}_{metric}']
                err = None if m['n'] < 2 or math.isnan(m['ci_high']) else \
                    [[m['mean'] - m['ci_low']], [m['ci_high'] - m['mean']]]
                colour, marker = style[lab]
                handles.append(ax.errorbar([x], [m['mean']], yerr=err, fmt=marker, color=colour, capsize=3,
                                           markersize=6, markeredgecolor='black', markeredgewidth=0.4))
            ax.set_xlabel('parameters (millions; equal counts drawn side by side)')
            ax.set_ylabel(ylab)
            ax.set_title(f'domain {d}')
            ax.grid(alpha=0.3)
        fig.suptitle(f'test {mlabel} against parameter count on {ds}')
        _outside_legend(fig, handles, labels)
        _save_png(fig, png, digest)
    for ds, model in models:
        rs = [r for r in rows if r['dataset'] == ds and r['model'] == model and r['trace']]
        if not rs:
            continue
        name = f'training_curves_{ds}_{model}'
        csv_rows = []
        series = {}
        variants = sorted({r['variant'] for r in rs})
        for variant in variants:
            curves = [_curve(r['trace'], stat) for r in rs if r['variant'] == variant]
            for key in ('valid_score', 'ortho'):
                by_epoch = defaultdict(list)
                for c in curves:
                    for epoch, v in c[key]:
                        by_epoch[epoch].append(v)
                epochs = sorted(by_epoch)
                means = [float(np.mean(by_epoch[e])) for e in epochs]
                series[(variant, key)] = (epochs, means)
                csv_rows += [[variant, key, e, m, len(by_epoch[e])] for e, m in zip(epochs, means)]
        digest = _write_csv(os.path.join(out_dir, name + '.csv'), ['variant', 'series', 'epoch', 'mean', 'seeds'],
                            csv_rows)
        png = os.path.join(out_dir, name + '.png')
        made[name] = png
        if not render:
            continue
        style = _styles(variants)
        n_seeds = max(sum(r['variant'] == v for r in rs) for v in variants)
        over = f'mean over {n_seeds} seeds' if n_seeds > 1 else 'one seed'
        short = [e for v, key, e, _, k in csv_rows if k < sum(r['variant'] == v for r in rs)]
        if n_seeds > 1 and short:                  # runs that stopped early leave fewer seeds in the tail
            over += f';\nfrom epoch {min(short)} over the seeds still training'
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.4 + 0.22 * ((len(variants) + 1) // 2)), layout='constrained')
        handles = []
        for variant in variants:
            colour, marker = style[variant]
            for key, ax in (('valid_score', ax1), ('ortho', ax2)):
                epochs, means = series[(variant, key)]
                h, = ax.plot(epochs, means, marker=marker, markersize=4, color=colour, label=variant)
                if key == 'valid_score':
                    handles.append(h)
        ax1.set_xlabel('epoch (from 0)')
        ax1.set_ylabel('validation score')
        ax1.set_title(f'validation score\n({over})', fontsize=9)
        ax2.set_xlabel('epoch (from 0)')
        ax2.set_ylabel('|cos(X, X\')| statistic')
        ax2.set_title(f'validation {label}, all users, both directions\n({over})', fontsize=9)
        from matplotlib.ticker import MaxNLocator
        for ax in (ax1, ax2):
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.suptitle(f'{model} on {ds}')
        _outside_legend(fig, handles, variants)
        _save_png(fig, png, digest)
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


def markdown(rows, out_dir, title, stat='paper', plot_paths=None, comps=None, primary=None, primary_source=None,
             allow_mixed_commits=False, repo=None, user_results=None):
    """The results page (RecBole's results style): tables, comparisons (``comps``, default
    :func:`comparisons` of ``rows`` and ``primary``), orthogonality, correlations, power, per-user
    results (``user_results`` of :func:`user_level`), the code behind the runs, plots."""
    comps = comparisons(rows, primary=primary, allow_mixed_commits=allow_mixed_commits) if comps is None else comps
    commits = sorted({r.get('code', 'unknown') for r in rows})
    lines = [f'# {title}', '', f'{len(rows)} finished runs. Test metrics: mean ± std over seeds; intervals and '
             'per-run values in the CSV files beside the plots.', '',
             f"Code behind the runs (column `code`): {len(commits)} commit{'s' if len(commits) != 1 else ''} "
             f"({', '.join(commits)}); `+dirty`: uncommitted changes of the package; `*`: reconstructed from git "
             "(the result carries no provenance; the parent of the commit that added it, so at best the code that "
             "ran); `unknown`: no provenance. Runs are paired only when their package code is the same (one "
             "commit, or commits whose `recbole_ortho/` does not differ)" +
             (': this page was built with **allow_mixed_commits=True**, so runs of different code are paired '
              '(see "Code behind the runs").' if allow_mixed_commits else ' (allow_mixed_commits=False).'), '']
    for ds in sorted({r['dataset'] for r in rows}):
        lines += [f'## {ds}', '']
        for d in ('A', 'B'):
            lines += [f'### Domain {d}', '', '| model | variant | seeds | params | epochs | wall (s) | ' +
                      ' | '.join(m.upper() for m in METRICS) + ' | code |',
                      '|---|---|---:|---:|---:|---:|' + '---:|' * len(METRICS) + '---|']
            for e in (e for e in group_table(rows) if e['dataset'] == ds):
                lines.append(f"| {e['model']} | {e['variant']} | {len(e['seeds'])} | {e['n_params']:,} | {e['epochs']:.1f} | "
                             f"{e['wall_time_s']:.0f} | "
                             + ' | '.join(_fmt(e[f'{d}_{m}']) for m in METRICS) + f" | {', '.join(e['commits'])} |")
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
    lines += _comparison_lines(rows, comps, primary, primary_source)
    lines += _power_lines(comps)
    lines += _ortho_lines(rows)
    lines += _correlation_lines(rows, stat)
    lines += _user_lines(user_results)
    lines += _code_lines(rows, comps, allow_mixed_commits, repo)
    for name, png in (plot_paths or {}).items():
        lines += [f'![{name}]({os.path.relpath(png, out_dir)})', '']
    return '\n'.join(lines)


def _wilcoxon_text(comps):
    """The page's statement of the Wilcoxon test and its smallest possible p."""
    ns = sorted({c['n'] for c in comps if c['n'] >= 2})
    if not ns:
        return 'Wilcoxon signed-rank: no comparison has two seeds.'
    floors = ', '.join(f'{n} seeds: 2/2^{n} = {wilcoxon_floor(n):.4f}' for n in ns)
    zeros = [c for c in comps if c.get('n_zero')]
    return ("Wilcoxon signed-rank as a secondary test: Pratt's treatment of zero differences (a zero is ranked "
            "with the other |differences|, then left out of both rank sums), two-sided p from the exact "
            f"distribution over all 2^n sign flips (scipy's permutation test; n ≤ {WILCOXON_EXACT_MAX_N}, the "
            "normal approximation above), exact with zeros and ties. Its smallest possible p is 2/2^(n − z) "
            f"with z zero differences (column `min p (W)`); without zeros, {floors}"
            + (f"; {len(zeros)} comparison(s) here have zero differences" if zeros else '')
            + ('. It can never reach 0.05 where that floor is above 0.05.' if any(wilcoxon_floor(n) > 0.05 for n in ns)
               else '.'))


def _comparison_table(cs):
    out = ['| model | variant | against | domain | metric | seeds | mean diff | d_z | p (t) | p (t, Holm) | p (Wilcoxon) '
           '| min p (W) | code |', '|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|']
    for c in cs:
        code = 'different (allowed)' if c['mixed_code'] else 'unknown' if c['unknown_code'] else 'same'
        out.append(f"| {c['model']} | {c['variant']} | {c['against']} | {c['domain']} | {c['metric']} | {c['n']} | "
                   f"{c['mean_diff']:+.4f} | {_fmt(c['cohens_dz'], 2)} | {_fmt(c['p_t'])} | {_fmt(c['p_t_holm'])} | "
                   f"{_fmt(c['p_wilcoxon'])} | {_fmt(c['p_wilcoxon_floor'])} | {code} |")
    return out + ['']


def _comparison_lines(rows, comps, primary, primary_source):
    if not comps and not primary:
        return []
    conf = [c for c in comps if c['family'] == 'confirmatory']
    expl = [c for c in comps if c['family'] == 'exploratory']
    lines = ['## GCA against its base and the parameter-matched base (test metrics, paired by seed)', '',
             "Paired t-test (two-sided) on the per-seed differences; Cohen's d_z = mean / sd of the differences. "
             + _wilcoxon_text(comps), '']
    if primary:
        decl = '; '.join(f"{e['model']} ({e['label']}) against the {'parameter-matched base' if e['against'] == 'matched' else 'base model'}, "
                         f"{e['metric']}, domain{'s' if len(e['domains']) > 1 else ''} {', '.join(e['domains'])}" for e in primary)
        lines += ['### Confirmatory: the declared comparison', '',
                  f"Declared in the sweep spec's `primary` ({primary_source or 'given'}): {decl}. Holm's correction "
                  f"runs over these {len(conf)} comparison{'s' if len(conf) != 1 else ''} only (one per dataset and domain "
                  "of each declared entry); only they are confirmatory.", '']
        lines += _comparison_table(conf) if conf else []
        miss = missing_primary(comps, primary, sorted({r['dataset'] for r in rows}))
        if miss:
            lines += ['Declared but not in the runs: ' + '; '.join(
                f"{ds} {e['model']} ({e['label']}) vs {e['against']}, {e['metric']}, domain {d}" for ds, e, d in miss), '']
        if any(c['n'] < 2 for c in conf):
            lines += ['With one seed a declared comparison has no paired test (NaN); more seeds are needed.', '']
        lines += ['### Exploratory: every other comparison', '',
                  f"Not declared, so exploratory: Holm's correction within this exploratory family of {len(expl)} "
                  "comparisons (not across the confirmatory ones); read a small p here as a hypothesis for a new sweep, "
                  "not as a finding.", '']
    else:
        lines += ['### Exploratory: every comparison', '',
                  f"The sweep spec declares no primary comparison (`primary:`), so none is confirmatory: Holm's "
                  f"correction runs within this exploratory family of {len(expl)} comparisons.", '']
    return lines + (_comparison_table(expl) if expl else [])


def _power_lines(comps):
    conf = [c for c in comps if c['family'] == 'confirmatory']
    table = power_table(conf or comps)
    if not table:
        return []
    lines = [f'## Power: what {"the declared comparisons" if conf else "these comparisons"} could detect', '',
             'Two-sided paired t-test at alpha 0.05 and 80 % power (noncentral t, scipy), at the observed seed-to-seed '
             'spread of the paired differences (`paired`: their sd) and, beside it, of the arms (`arms`: √2 × the '
             "pooled sd of the two arms, as if the seeds paired nothing): the smallest mean difference these seeds "
             f'detect, in absolute terms and as % of the base\'s mean, the seeds a +{100 * POWER_GAIN:.0f} % gain '
             'would need, and the 95 % t-interval of the mean difference as % of the base\'s mean (an effect outside '
             'it is excluded at the 5 % level).', '',
             '| model | variant | against | domain | seeds | base mean | sd (paired) | detectable (paired) | '
             f'seeds for +{100 * POWER_GAIN:.0f} % (paired) | sd (arms) | detectable (arms) | '
             f'seeds for +{100 * POWER_GAIN:.0f} % (arms) | 95 % CI of diff (% of base) |',
             '|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|']
    for e in table:
        c, pa, ar = e['comparison'], e['paired'], e['arms']

        def det(x):
            return f"{x['mde']:.4f} ({100 * x['mde_rel']:.1f} %)" if not math.isnan(x['mde']) else 'n/a'

        def need(x):
            return str(x['seeds_for_gain']) if x['seeds_for_gain'] is not None else '> 100,000'
        lo, hi = e['diff_ci_rel']
        lines.append(f"| {c['model']} | {c['variant']} | {c['against']} | {c['domain']} | {e['n']} | {e['base_mean']:.4f} | "
                     f"{pa['sd']:.4f} | {det(pa)} | {need(pa)} | {ar['sd']:.4f} | {det(ar)} | {need(ar)} | "
                     f"[{100 * lo:+.1f} %, {100 * hi:+.1f} %] |")
    return lines + ['']


def _ortho_lines(rows):
    table = orthogonality_table(rows)
    if not table:
        return []
    lo, hi = PAPER_ORTHO_RANGE
    lines = ["## Orthogonality: the paper's statistic per run", '',
             f"The paper reports GCA outputs nearly orthogonal to their queries, |cos| with a median of {lo}–{hi}. "
             "This page reads that as: per run, the paper's statistic |mean cos(X, X')| over all test query steps of "
             "one GCA stage and domain (`ortho_cos_<a|b>@gca<stage>/paper`: domain A's users with direction a, B's "
             "with b), then the median of that per-run value over the runs (seeds) of a configuration. The other "
             "reading, the median |cos| over a run's steps (`/median_abs`), is shown beside it, also as a median over "
             f"runs; each is placed against {lo}–{hi} (below / within / above).", '',
             '| model | variant | domain | stage | per run (seed: value) | median over runs | vs paper | '
             'median_abs, median over runs | vs paper |', '|---|---|---|---|---|---:|---|---:|---|']
    for e in table:
        per = ', '.join(f'{s}: {v:.3f}' for s, v in e['paper'])
        lines.append(f"| {e['model']} | {e['variant']} | {e['domain']} | {e['stage']} | {per} | {_fmt(e['paper_median'], 3)} | "
                     f"{e['paper_median_vs_paper']} | {_fmt(e['median_abs_median'], 3)} | {e['median_abs_median_vs_paper']} |")
    return lines + ['']


def _correlation_lines(rows, stat):
    corr = correlations(rows, stat)
    if not corr:
        return []
    lines = [f'## Orthogonality against test NDCG@10 (one point per run; statistic: `{stat}`)', '',
             'Pooled over every run of the model (configurations and seeds together): where the configurations form '
             'clusters (e.g. by gate activation), this r mostly says how the clusters differ, not how orthogonality '
             'and accuracy go together within one configuration.', '',
             '| model | domain | runs | Pearson r [95 % bootstrap] | Spearman ρ [95 % bootstrap] |', '|---|---|---:|---|---|']
    for c in corr:
        lines.append(f"| {c['model']} | {c['domain']} | {c['n']} | {c['pearson']:+.3f} [{c['pearson_ci_low']:+.3f}, "
                     f"{c['pearson_ci_high']:+.3f}] | {c['spearman']:+.3f} [{c['spearman_ci_low']:+.3f}, {c['spearman_ci_high']:+.3f}] |")
    within = within_correlations(rows, stat)
    if within:
        k = max(n for w in within for _, n, _ in w['per_config'])
        lines += ['', '### Within each configuration (across seeds)', '',
                  f"Per configuration, Pearson r across its seeds: with {k} seeds such an r rests on {k} points "
                  f"({max(k - 2, 0)} degree{'s' if k - 2 != 1 else ''} of freedom)"
                  + (" and is nearly meaningless alone" if k <= 5 else " and is weak evidence alone") +
                  ". The pooled within-configuration r uses every run but "
                  "removes the differences between configurations: each configuration's orthogonality and NDCG@10 "
                  "are centred on the configuration's means, then correlated (the repeated-measures correlation; "
                  "df = runs − configurations − 1, p from t, interval from Fisher's z).", '',
                  '| model | domain | per configuration: r (runs) | pooled within r | df | p | 95 % CI |',
                  '|---|---|---|---:|---:|---:|---|']
        for w in within:
            per = '; '.join(f"{v}: {_fmt(r, 2)} ({n})" for v, n, r in w['per_config'])
            p = w['pooled']
            ci = f"[{p['ci_low']:+.3f}, {p['ci_high']:+.3f}]" if not math.isnan(p['ci_low']) else 'n/a'
            lines.append(f"| {w['model']} | {w['domain']} | {per} | {_fmt(p['r'], 3)} | {p['df']} | {_fmt(p['p'])} | {ci} |")
    return lines + ['']


def _user_lines(user_results):
    if not user_results:
        return []
    lines = ['## Per-user results (from the runs\' `result.ranks.npz`)', '',
             'Users paired by token and domain within each seed pair; per-user metric under each run\'s tie rule '
             '(`eval_ties`). Per seed: paired t-test and Wilcoxon signed-rank (Pratt\'s zeros, normal approximation) '
             'on the per-user differences (not corrected for multiplicity: the seed-level tests above are the '
             'confirmatory ones). Over seeds: a hierarchical bootstrap of the mean per-user difference '
             '(2,000 resamples, seeded: seeds with replacement, then users with replacement within each drawn seed '
             'pair; percentile interval), which carries both the seed-to-seed and the user-to-user spread.', '',
             '| model | variant | against | domain | metric | tie rules | per seed: users, mean diff, p (t), p (W) | '
             'estimate [95 % hierarchical bootstrap] |', '|---|---|---|---|---|---|---|---|']
    for u in user_results:
        c, b = u['comparison'], u['bootstrap']
        per = '; '.join(f"{s}: {t['n_users']:,}, {t['mean_diff']:+.4f}, {_fmt(t['p_t'])}, {_fmt(t['p_wilcoxon'])}"
                        for s, t in u['per_seed'].items())
        lines.append(f"| {c['model']} | {c['variant']} | {c['against']} | {c['domain']} | {c['metric']} | "
                     f"{', '.join(u['tie_rules'])} | {per} | {b['estimate']:+.4f} [{b['ci_low']:+.4f}, {b['ci_high']:+.4f}] |")
    return lines + ['']


def _code_lines(rows, comps, allow_mixed_commits, repo):
    mixed = sorted({(c['dataset'], c['model'], c['variant'], c['against'], s, a, b)
                    for c in comps for s, a, b, same in c['code_pairs'] if same is False})
    if not (allow_mixed_commits or mixed):
        return []
    lines = ['## Code behind the runs', '',
             f'This page was built with allow_mixed_commits={bool(allow_mixed_commits)}.']
    if mixed:
        pairs = sorted({(a, b) for *_, a, b in mixed})
        lines[-1] += (f" {len(mixed)} seed pair{'s' if len(mixed) != 1 else ''} of the comparisons above come from "
                      f"different package code ({len(pairs)} commit pair{'s' if len(pairs) != 1 else ''}: "
                      + ', '.join(f'{a} / {b}' for a, b in pairs[:12]) + (' ...' if len(pairs) > 12 else '') + ').')
    commits = sorted({(r.get('provenance') or {}).get('git_commit') for r in rows} - {None, 'unknown'})
    lines.append('')
    for para in (golden_note(repo, commits) if repo else []):
        lines += [para, '']
    return lines


def resolve_primary(sweep_dir, spec=None):
    """The checked ``primary`` entries for a sweep folder and where they came from: ``spec`` (a
    sweep spec path, or a spec dict as :func:`~recbole_ortho.sweep.spec.load_spec` returns), else
    the spec in ``<sweep_dir>/sweep.json`` (written by ``run_sweep``), else the shipped spec of the
    same name (``properties/sweep/<folder name>.yaml``, as the committed run stores under
    ``results/sweeps/`` are named). ``([], None)`` when none declares one."""
    from recbole_ortho.sweep.spec import load_spec
    from recbole_ortho.utils.paths import properties_dir
    if spec is not None:
        if isinstance(spec, dict):                        # a spec as load_spec returns it: primary checked
            return list(spec.get('primary') or []), 'the given spec'
        return load_spec(spec)['primary'], f'`{os.path.basename(os.fspath(spec))}`'
    sweep_json = os.path.join(sweep_dir, 'sweep.json')
    if os.path.isfile(sweep_json):
        sp = read_json(sweep_json).get('spec') or {}
        if sp.get('primary'):
            return sp['primary'], '`sweep.json`'
        return [], None
    shipped = os.path.join(properties_dir(), 'sweep', os.path.basename(os.path.abspath(sweep_dir)) + '.yaml')
    if os.path.isfile(shipped):
        return load_spec(shipped)['primary'], f'`properties/sweep/{os.path.basename(shipped)}`'
    return [], None


def write_report(sweep_dir, out_md, stat='paper', title=None, spec=None, allow_mixed_commits=False,
                 render_plots=True):
    """Build the page ``out_md`` (plots in ``<out_md without .md>_plots/``) from a sweep folder;
    returns its path. ``spec``: the sweep spec whose ``primary`` declares the confirmatory
    comparisons (default: :func:`resolve_primary`). Seed pairs of different package code raise
    :class:`~recbole_ortho.analysis.provenance.MixedCommitsError` before anything is written,
    unless ``allow_mixed_commits`` (then the page says so). ``render_plots=False`` writes the CSVs
    behind the plots but no PNG (``python -m recbole_ortho.analysis --check``)."""
    sweep_dir = os.fspath(sweep_dir)
    rows = load_rows(sweep_dir)
    if not rows:
        raise FileNotFoundError(f'{sweep_dir}: no finished run (runs/*/result.json)')
    primary, source = resolve_primary(sweep_dir, spec)
    repo = git_root(sweep_dir)
    comps = comparisons(rows, primary=primary, allow_mixed_commits=allow_mixed_commits, code=CodeComparer(repo))
    user_results = user_level(comps)
    out_dir = os.path.dirname(os.path.abspath(out_md))
    plot_dir = os.path.splitext(os.path.abspath(out_md))[0] + '_plots'
    paths = plots(rows, plot_dir, stat=stat, render=render_plots)
    text = markdown(rows, out_dir, title or f'Sweep {os.path.basename(os.path.abspath(sweep_dir))}', stat, paths,
                    comps=comps, primary=primary, primary_source=source, allow_mixed_commits=allow_mixed_commits,
                    repo=repo, user_results=user_results)
    with open(out_md + '.tmp', 'w') as f:
        f.write(text + '\n')
    os.replace(out_md + '.tmp', out_md)
    return out_md
