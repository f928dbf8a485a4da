"""
recbole_ortho.analysis.study
############################

The converged study's page (``results/food_kitchen_study.md``): does GCA beat the
parameter-matched base, does orthogonality track accuracy, does GCA buy accuracy per parameter,
answered per claim of the paper (Lee et al., "Cross-attention Secretly Performs Orthogonal
Alignment in Recommendation Models", arXiv 2510.09435) from the study's run stores.

The arms are sweep sources of ``results/pages.yaml`` (its ``study_pages`` entry names them):

- ``main``: one run store per base model, each with the base, ``_GCA`` at GCA_early (the
  defaults of ``properties/component/gca.yaml``) and the base matched to GCA_early's parameter
  count, trained to convergence;
- ``scaling`` (optional): ABXI at other hidden sizes (``embedding_size`` in the run's settings;
  the main arm's runs are the size ``main_d``);
- ``cause`` (optional): ABXI_GCA with other gates (``gca_gate``) and an explicit orthogonality
  penalty (``gca_ortho_weight`` > 0): a penalised configuration against the same gate without it,
  another gate against the main arm's GCA_early runs, paired by seed;
- ``positions`` (optional, exploratory): a sweep with GCA at several placements.

A run counts as converged when it stopped by early stopping (``stop_reason``); runs that hit the
epoch cap or the time budget are flagged and left out of the tests. The declared comparison
(GCA_early against the matched base, test NDCG@10, domains A and B, per base model) is tested per
seed (paired t-test, Holm over that family only) and per user (hierarchical bootstrap); everything
else is exploratory. The verdict table states each claim as ``holds here``, ``does not hold
here`` or ``inconclusive`` with the numbers behind it, by fixed rules (:func:`verdicts`) that do
not depend on which way the results fall.
"""

import math
import os
from collections import defaultdict

import numpy as np
from scipy import stats as sps

from recbole_ortho.analysis.report import (PAPER_ORTHO_RANGE, STAT_LABELS, _outside_legend, _save_png, _styles,
                                           _write_csv, load_rows)
from recbole_ortho.analysis.stats import correlation, holm, mean_ci, paired_comparison, power_summary, \
    within_correlation

ALPHA = 0.05
METRIC = 'ndcg@10'
STAT = 'paper'
ROLES = ('base', 'gca', 'matched')
ROLE_LABEL = {'base': 'base', 'gca': 'GCA_early', 'matched': 'base matched to GCA_early'}
#: the paper's correlations of |cos(X, X')| with NDCG@10 (its Figure/Table of the correlation study)
PAPER_R = {('ABXI', 'A'): -0.33, ('ABXI', 'B'): -0.34, ('LLM4CDSR', 'B'): -0.45, ('CDSRNP', 'B'): -0.30}
HOLDS, FAILS, OPEN = 'holds here', 'does not hold here', 'inconclusive'
#: the fewest converged runs per setting behind a verdict on the orthogonality's level
MIN_RUNS = 3


# ---------------------------------------------------------------------------------------------
# rows

def family(row):
    """The base model a run belongs to (``ABXI_GCA`` and matched ``ABXI`` -> ``ABXI``)."""
    return row.get('base_model') or row['model']


def role(row):
    """``gca`` (a ``_GCA`` model), ``matched`` (a base widened to a GCA model's parameter count) or ``base``."""
    if row.get('base_model'):
        return 'gca'
    return 'matched' if row.get('param_match') else 'base'


def converged(row):
    return row.get('stop_reason') == 'early_stopping'


def _metric(row, d, metric=METRIC):
    return row[f'test_{d}_{metric}']


def ranks_path_of(row):
    from recbole_ortho.utils.paths import ranks_path
    return ranks_path(row['result_path'])


def _by_seed(rows):
    return {r['seed']: r for r in rows}


def _runs(n):
    return f"{n} run{'s' if n != 1 else ''}"


def _fmt(v, spec='.4f'):
    return 'n/a' if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _interval(c, spec='.4f'):
    if math.isnan(c.get('ci_low', math.nan)):
        return _fmt(c['mean'], spec)
    return f"{format(c['mean'], spec)} [{format(c['ci_low'], spec)}, {format(c['ci_high'], spec)}]"


# ---------------------------------------------------------------------------------------------
# the arms' summaries

def hours_to_best(row):
    """Hours from the start of a run to the end of its best epoch's validation: data preparation
    plus every epoch's training and validation time up to the best epoch (from the trace); what
    a converged run costs, without the epochs that early stopping waits; None without a trace."""
    best, trace = row.get('best_epoch'), row.get('trace') or []
    if best is None or not trace:
        return None
    s = row.get('data_time_s') or 0.0
    s += sum((e.get('train_time_s') or 0.0) + (e.get('valid_time_s') or 0.0) for e in trace if e['epoch'] <= best)
    return s / 3600


def main_table(rows):
    """Per (base model, role, domain): runs, converged runs, parameters, test NDCG@10 and HR@10
    (mean and 95 % t-interval over the converged runs), wall time, epochs to the best epoch, stop
    reasons."""
    groups = defaultdict(list)
    for r in rows:
        groups[(family(r), role(r))].append(r)
    out = []
    for (fam, ro), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], ROLES.index(kv[0][1]))):
        conv = [r for r in rs if converged(r)]
        reasons = defaultdict(int)
        for r in rs:
            reasons[r.get('stop_reason') or 'unknown'] += 1
        for d in ('A', 'B'):
            out.append({'family': fam, 'role': ro, 'domain': d, 'runs': len(rs), 'converged': len(conv),
                        'seeds': sorted(r['seed'] for r in rs),
                        'n_params': int(np.median([r['n_params'] for r in rs])),
                        'ndcg10': mean_ci([_metric(r, d) for r in conv]),
                        'hit10': mean_ci([_metric(r, d, 'hit@10') for r in conv]),
                        'wall_h': mean_ci([r['wall_time_s'] / 3600 for r in rs]),
                        'core_h': mean_ci([core_hours(r) for r in rs]),
                        'best_epoch': mean_ci([r['best_epoch'] + 1 for r in rs if r.get('best_epoch') is not None]),
                        'to_best_h': mean_ci([h for h in map(hours_to_best, conv) if h is not None]),
                        'stop_reasons': dict(sorted(reasons.items()))})
    return out


def run_threads(row):
    """The CPU threads a run used (``provenance.device.threads``, else its ``threads`` setting; 1
    where it recorded neither)."""
    dev = (row.get('provenance') or {}).get('device') or {}
    return int(dev.get('threads') or (row.get('config') or {}).get('threads') or 1)


def core_hours(row):
    """A run's cost in core-hours: its wall time times the threads it used (two 1-thread runs side by
    side on 2 cores cost what one 2-thread run of the same wall time does)."""
    return row['wall_time_s'] * run_threads(row) / 3600


def cost_summary(stores, expected):
    """What the study has cost and what is still to run, per run store: ``stores`` is a list of
    ``(arm, store name, rows)``; ``expected`` the registry's runs per arm when finished (the main
    arm's split evenly over its stores, and a main store's over the three roles). ``hours`` is the
    runs' wall time (``wall_time_s``, a paused run counting its pause), ``core_h`` their
    :func:`core_hours`. The runs still to come are estimated in core-hours at the mean of the
    finished runs of the same store and role (of the same store where the role has none yet); a
    store with no finished run has no estimate (None). Returns ``(rows, totals)``."""
    per_arm = defaultdict(int)
    for arm, _, _ in stores:
        per_arm[arm] += 1
    out = []
    for arm, name, rows in stores:
        want = expected.get(arm)
        if want is not None and arm == 'main':
            want = want / per_arm['main']
        want = int(want) if want is not None and float(want).is_integer() else None
        cores = [core_hours(r) for r in rows]
        mean_h = float(np.mean(cores)) if cores else None
        todo = None if want is None else max(want - len(rows), 0)
        todo_h = None
        if todo == 0:
            todo_h = 0.0
        elif todo and mean_h is not None:
            if arm == 'main' and want % len(ROLES) == 0:
                todo_h = 0.0
                for ro in ROLES:
                    done = [core_hours(r) for r in rows if role(r) == ro]
                    todo_h += max(want // len(ROLES) - len(done), 0) * (float(np.mean(done)) if done else mean_h)
            else:
                todo_h = todo * mean_h
        out.append({'arm': arm, 'store': name, 'runs': len(rows), 'expected': want,
                    'hours': float(sum(r['wall_time_s'] for r in rows) / 3600), 'core_h': float(sum(cores)),
                    'mean_h': mean_h, 'todo': todo, 'todo_h': todo_h})
    known = [e['todo_h'] for e in out if e['todo_h'] is not None]
    totals = {'runs': sum(e['runs'] for e in out), 'hours': sum(e['hours'] for e in out),
              'core_h': sum(e['core_h'] for e in out),
              'todo': sum(e['todo'] for e in out if e['todo'] is not None),
              'todo_h': sum(known), 'unestimated': [e['store'] for e in out if e['todo'] and e['todo_h'] is None]}
    return out, totals


def primary(rows, n_boot=2000):
    """The declared comparison: per base model and domain, GCA_early against the matched base on
    test NDCG@10, paired by seed over the seeds where both runs converged; Holm over this family
    only; the smallest effect the seeds could detect at 80 % power; per-user hierarchical
    bootstrap when every run saved its ranks."""
    from recbole_ortho.analysis.ranks import configuration_difference, load_ranks, run_tie_rule
    out = []
    for fam in sorted({family(r) for r in rows}):
        gca = _by_seed([r for r in rows if family(r) == fam and role(r) == 'gca'])
        mat = _by_seed([r for r in rows if family(r) == fam and role(r) == 'matched'])
        seeds = sorted(s for s in set(gca) & set(mat) if converged(gca[s]) and converged(mat[s]))
        for d in ('A', 'B'):
            a = [_metric(gca[s], d) for s in seeds]
            b = [_metric(mat[s], d) for s in seeds]
            c = dict(paired_comparison(a, b), family=fam, domain=d, seeds=seeds, a=a, b=b,
                     diff=mean_ci(np.subtract(a, b)) if seeds else mean_ci([]),
                     power=power_summary(a, b), user=None)
            ranked = [gca[s] for s in seeds] + [mat[s] for s in seeds]
            if seeds and all(os.path.isfile(ranks_path_of(r)) for r in ranked):
                runs_a = {s: (load_ranks(ranks_path_of(gca[s])), run_tie_rule({'config': gca[s]['config']})) for s in seeds}
                runs_b = {s: (load_ranks(ranks_path_of(mat[s])), run_tie_rule({'config': mat[s]['config']})) for s in seeds}
                c['user'] = configuration_difference(runs_a, runs_b, metric=METRIC, domain=d, n_boot=n_boot)['bootstrap']
            out.append(c)
    for c, p in zip(out, holm([c['p_t'] for c in out])):
        c['p_holm'] = p
    return out


def also_summary(rows):
    """The same weights under another protocol (a run's ``also_evaluate`` entries, e.g. LLM4CDSR's
    own 100 negatives): per (base model, entry, domain) the test NDCG@10 of each role over converged
    runs, and GCA_early - matched base paired by seed (exploratory)."""
    out = []
    for fam in sorted({family(r) for r in rows}):
        rs = [r for r in rows if family(r) == fam and converged(r)]
        for name in sorted({n for r in rs for n in r.get('also', ())}):
            key = f'also_{name}_test_{{}}_{METRIC}'
            have = [r for r in rs if name in r.get('also', ())]
            gca = _by_seed([r for r in have if role(r) == 'gca'])
            mat = _by_seed([r for r in have if role(r) == 'matched'])
            seeds = sorted(set(gca) & set(mat))
            for d in ('A', 'B'):
                e = {'family': fam, 'name': name, 'domain': d, 'seeds': seeds,
                     'settings': ', '.join(f'{k}={v}' for k, v in sorted(
                         (next(iter(have))['config'].get('also_evaluate') or {}).get(name, {}).items())) if have else ''}
                for ro in ROLES:
                    e[ro] = mean_ci([r[key.format(d)] for r in have if role(r) == ro])
                e['diff'] = mean_ci([gca[s][key.format(d)] - mat[s][key.format(d)] for s in seeds])
                out.append(e)
    return out


def ortho_summary(rows):
    """Per (base model, domain): the paper's statistic of each converged GCA_early run (its mean
    over the GCA stages), the median over runs, and where that median lies against 0.1–0.2."""
    out = []
    for fam in sorted({family(r) for r in rows if role(r) == 'gca'}):
        rs = [r for r in rows if family(r) == fam and role(r) == 'gca' and converged(r)]
        for d in ('A', 'B'):
            vals = [(r['seed'], r[f'ortho_{d}_{STAT}']) for r in rs if not math.isnan(r[f'ortho_{d}_{STAT}'])]
            med = float(np.median([v for _, v in vals])) if vals else math.nan
            where = 'n/a' if math.isnan(med) else ('below' if med < PAPER_ORTHO_RANGE[0] else
                                                  'above' if med > PAPER_ORTHO_RANGE[1] else 'within')
            out.append({'family': fam, 'domain': d, 'values': sorted(vals), 'median': med, 'vs_paper': where})
    return out


def detectable_r(n, alpha=ALPHA, power=0.8):
    """The smallest |Pearson r| a two-sided test detects with ``power`` from ``n`` points (Fisher's z)."""
    if n <= 3:
        return math.nan
    z = (sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)) / math.sqrt(n - 3)
    return float(math.tanh(z))


def correlation_summary(rows):
    """Per (base model, domain): the paper's statistic against test NDCG@10 over every converged
    run with GCA (main arm and cause arm), pooled (Pearson, bootstrap interval) and within
    configuration (each configuration centred on its means), the |r| the runs could detect, and
    the paper's r."""
    out = []
    for fam in sorted({family(r) for r in rows if role(r) == 'gca'}):
        rs = [r for r in rows if family(r) == fam and role(r) == 'gca' and converged(r)]
        for d in ('A', 'B'):
            pts = [(r[f'ortho_{d}_{STAT}'], _metric(r, d), r['label']) for r in rs
                   if not math.isnan(r[f'ortho_{d}_{STAT}'])]
            e = {'family': fam, 'domain': d, 'n': len(pts), 'paper_r': PAPER_R.get((fam, d)),
                 'detectable_r': detectable_r(len(pts)), 'points': pts}
            if len(pts) >= 3:
                x, y, g = zip(*pts)
                e['pooled'] = correlation(x, y)
                e['within'] = within_correlation(np.array(x), np.array(y), np.array(g, dtype=object))
            out.append(e)
    return out


def _d_of(row, main_d):
    return int(row['settings'].get('embedding_size') or main_d)


def scaling_summary(rows, main_d):
    """ABXI's NDCG@10 against its parameter count per role and hidden size (converged runs; the
    main arm's runs are size ``main_d``): points (median parameters, mean and interval), a fit
    ``NDCG@10 = a + b ln(params)`` per role over the runs, and per size the paired difference
    GCA_early - matched base."""
    rs = [r for r in rows if converged(r)]
    points, fits, diffs = [], [], []
    for d in ('A', 'B'):
        for ro in ROLES:
            sel = [r for r in rs if role(r) == ro]
            for size in sorted({_d_of(r, main_d) for r in sel}):
                at = [r for r in sel if _d_of(r, main_d) == size]
                points.append({'domain': d, 'role': ro, 'd': size, 'n_params': int(np.median([r['n_params'] for r in at])),
                               'ndcg10': mean_ci([_metric(r, d) for r in at])})
            sizes = {_d_of(r, main_d) for r in sel}
            if len(sizes) >= 2:
                f = sps.linregress(np.log([r['n_params'] for r in sel]), [_metric(r, d) for r in sel])
                fits.append({'domain': d, 'role': ro, 'a': float(f.intercept), 'b': float(f.slope),
                             'b_se': float(f.stderr), 'n': len(sel)})
        gca = [r for r in rs if role(r) == 'gca']
        mat = [r for r in rs if role(r) == 'matched']
        for size in sorted({_d_of(r, main_d) for r in gca}):
            ga = _by_seed([r for r in gca if _d_of(r, main_d) == size])
            ma = _by_seed([r for r in mat if _d_of(r, main_d) == size])
            seeds = sorted(set(ga) & set(ma))
            a, b = [_metric(ga[s], d) for s in seeds], [_metric(ma[s], d) for s in seeds]
            diffs.append({'domain': d, 'd': size, 'seeds': seeds, 'diff': mean_ci(np.subtract(a, b)),
                          'power': power_summary(a, b)})
    return {'points': points, 'fits': fits, 'diffs': diffs, 'sizes': sorted({_d_of(r, main_d) for r in rs})}


def _gate_and_penalty(row):
    """``(gca_gate, gca_ortho_weight)`` of a GCA run (the defaults: vector gate, no penalty)."""
    cfg = row['config']
    return cfg.get('gca_gate', 'vector'), float(cfg.get('gca_ortho_weight') or 0)


def is_reference(row):
    """A GCA_early run: the default gate (vector) and no orthogonality penalty."""
    return _gate_and_penalty(row) == ('vector', 0.0)


def cause_summary(rows, reference):
    """Each cause-arm configuration of ABXI_GCA (``label``) against what isolates its one change,
    paired by seed: a penalised configuration (``gca_ortho_weight`` > 0) against the same gate
    without the penalty (the cause arm's runs of that gate, or for the vector gate ``reference``,
    GCA_early), an unpenalised other gate against ``reference``. Test NDCG@10 and the paper's
    statistic per domain (means and intervals over converged runs), the paired NDCG@10 difference,
    and ``against`` (what it was compared with)."""
    conv = [r for r in rows if converged(r)]
    ref = _by_seed([r for r in reference if converged(r)])
    out = []
    for label in sorted({r['label'] for r in rows}):
        at = _by_seed([r for r in conv if r['label'] == label])
        gate, weight = _gate_and_penalty(next(r for r in rows if r['label'] == label))
        if weight > 0 and gate != 'vector':
            against = f'gca_gate={gate}, no penalty'
            other = _by_seed([r for r in conv if _gate_and_penalty(r) == (gate, 0.0)])
        else:
            against, other = 'GCA_early', ref
        seeds = sorted(set(at) & set(other))
        for d in ('A', 'B'):
            a, b = [_metric(at[s], d) for s in seeds], [_metric(other[s], d) for s in seeds]
            out.append({'label': label, 'domain': d, 'runs': len(at), 'seeds': seeds, 'against': against,
                        'ndcg10': mean_ci([_metric(r, d) for r in at.values()]),
                        'ortho': mean_ci([r[f'ortho_{d}_{STAT}'] for r in at.values()
                                          if not math.isnan(r[f'ortho_{d}_{STAT}'])]),
                        'gate': gate, 'ortho_weight': weight,
                        'comparison': dict(paired_comparison(a, b), diff=mean_ci(np.subtract(a, b)),
                                           power=power_summary(a, b))})
    return out


def position_summary(rows):
    """GCA placements of the ``positions`` sweep (exploratory): each placement of each ``_GCA``
    model against the early one (``gca_positions: [0]``), paired by seed, per domain; Holm within
    this family."""
    out = []
    gca = [r for r in rows if role(r) == 'gca']
    for model in sorted({r['model'] for r in gca}):
        groups = defaultdict(list)               # (the other GCA settings, placement) -> runs
        for r in gca:
            if r['model'] == model:
                rest = tuple(sorted((k, str(v)) for k, v in r['config'].items()
                                    if k.startswith('gca_') and k != 'gca_positions'))
                groups[(rest, str(list(r['config'].get('gca_positions') or [])))].append(r)
        for (rest, pos), rs in sorted(groups.items()):
            early = _by_seed(groups.get((rest, '[0]'), []))
            if pos == '[0]' or not early:
                continue
            other = _by_seed(rs)
            differ = ', '.join(f'{k}={v}' for k, v in rest if len({dict(g[0]).get(k) for g in groups}) > 1)
            pos = f'{pos} ({differ})' if differ else pos
            seeds = sorted(set(early) & set(other))
            for d in ('A', 'B'):
                a, b = [_metric(early[s], d) for s in seeds], [_metric(other[s], d) for s in seeds]
                out.append(dict(paired_comparison(a, b), model=model, position=pos, domain=d, seeds=seeds,
                                diff=mean_ci(np.subtract(a, b)), power=power_summary(a, b),
                                converged=sum(converged(r) for r in rs)))
    for c, p in zip(out, holm([c['p_t'] for c in out])):
        c['p_holm'] = p
    return out


# ---------------------------------------------------------------------------------------------
# verdicts

def _mde_text(powers):
    vals = [(p['paired']['mde'], p['paired']['mde_rel']) for p in powers if 'paired' in p and not math.isnan(p['paired']['mde'])]
    if not vals:
        return 'too few converged seeds for a test'
    mde, rel = max(vals)
    return f'detectable effect {mde:.4f} ({100 * rel:.1f} %) at 80 % power'


def verdicts(prim, ortho, corr, scaling, positions, cause):
    """One row per claim of the paper (and the study's own cause question): ``{'claim', 'status',
    'numbers', 'source'}``. The rules, fixed before the results:

    1. orthogonality, median 0.1-0.2: *holds* when the median over converged GCA_early runs of the
       paper's statistic lies in 0.1-0.2 for every base model and domain, *does not hold* when it
       lies outside for any, *inconclusive* without runs;
    2. lower |cos| with higher NDCG@10: *holds* when every pooled Pearson r is negative with the
       t-test of r at p < 0.05, *does not hold* when some r is positive with p < 0.05, else
       *inconclusive* with the smallest |r| the runs could detect (none stated with 3 runs or
       fewer). The first version of this rule read the bootstrap interval, which is degenerate for
       a handful of runs (3 runs at r = +0.92, p = 0.26, gave [+0.92, +1.00]); the t-test is the
       rule since the first 3 converged runs, before any further run;
    3. GCA beats the matched base in every setting: *holds* when every declared comparison is
       positive with Holm p < 0.05, *does not hold* when one is negative with Holm p < 0.05, else
       *inconclusive* with the largest detectable effect among them;
    4. better accuracy per parameter: from the scaling arm (at least two sizes): *holds* when at
       every size the GCA - matched difference has a 95 % interval above 0, *does not hold* when at
       some size it lies below 0, else *inconclusive*;
    5. the early position is best (exploratory sweep): *holds* when early beats every other
       placement with Holm p < 0.05 in both domains, *does not hold* when another placement beats
       it with Holm p < 0.05, else *inconclusive*;
    6. (the study's question) an explicit orthogonality penalty raises NDCG@10: as 3, over the
       cause arm's penalised configurations, each against the same gate without the penalty. Set
       before any cause-arm run; the first version compared each with GCA_early (vector gate), which
       mixed a change of gate into the scalar and none gates' comparisons.
    """
    rows = []
    # 1
    have = [o for o in ortho if o['values']]
    nums = '; '.join(f"{o['family']} {o['domain']}: median {o['median']:.3f} over {_runs(len(o['values']))} ({o['vs_paper']})"
                     for o in have)
    status = OPEN if not have else (HOLDS if all(o['vs_paper'] == 'within' for o in have) else FAILS)
    few = [o for o in have if len(o['values']) < MIN_RUNS]
    if not have:
        status = f'{OPEN} (no converged GCA run yet)'
    elif few:
        status = f'{OPEN} (fewer than {MIN_RUNS} converged GCA runs in {len(few)} of {len(have)} settings)'
    rows.append({'claim': 'Orthogonality emerges without a constraint: the median \\|cos(X, X\')\\| is 0.1–0.2',
                 'status': status, 'numbers': nums or 'no runs'})
    # 2
    have = [c for c in corr if 'pooled' in c]
    nums = '; '.join(f"{c['family']} {c['domain']}: r = {c['pooled']['pearson']:+.2f}, "
                     f"p {_fmt(c['pooled']['pearson_p'], '.3f')}, {c['n']} runs"
                     + (f" (paper {c['paper_r']:+.2f})" if c['paper_r'] is not None else '') for c in have)

    def significant(c, sign):
        return sign * c['pooled']['pearson'] > 0 and c['pooled']['pearson_p'] < ALPHA

    if not have:
        status = f'{OPEN} (fewer than 3 converged GCA runs per setting)'
    elif all(significant(c, -1) for c in have):
        status = HOLDS
    elif any(significant(c, +1) for c in have):
        status = FAILS
    elif any(math.isnan(c['detectable_r']) for c in have):
        status = f"{OPEN} (p ≥ 0.05; {min(c['n'] for c in have)} runs are too few to state a detectable \\|r\\|)"
    else:
        status = f"{OPEN} (detectable \\|r\\| {max(c['detectable_r'] for c in have):.2f} at 80 % power)"
    rows.append({'claim': 'Lower \\|cos(X, X\')\\| goes with higher NDCG@10', 'status': status, 'numbers': nums or 'no runs'})
    # 3
    tested = [c for c in prim if c['n'] >= 2]
    nums = '; '.join(f"{c['family']} {c['domain']}: {c['mean_diff']:+.4f} ({100 * c['mean_diff'] / np.mean(c['b']):+.1f} %), "
                     f"p Holm {_fmt(c['p_holm'], '.3f')}, {c['n']} seeds" for c in tested)
    if not tested:
        status = f'{OPEN} (fewer than 2 converged seed pairs)'
    elif any(c['mean_diff'] < 0 and c['p_holm'] < ALPHA for c in tested):
        status = FAILS
    elif len(tested) == len(prim) and all(c['mean_diff'] > 0 and c['p_holm'] < ALPHA for c in tested):
        status = HOLDS
    else:
        status = f"{OPEN} ({_mde_text([c['power'] for c in tested])})"
    rows.append({'claim': 'GCA beats the parameter-matched base, in every setting (declared comparison)',
                 'status': status, 'numbers': nums or 'no runs'})
    # 4
    diffs = [x for x in scaling['diffs'] if x['diff']['n'] >= 2]
    nums = '; '.join(f"d={x['d']} {x['domain']}: {_interval(x['diff'])}" for x in diffs)
    if len(scaling['sizes']) < 2:
        status = f"{OPEN} (runs at {len(scaling['sizes'])} hidden size{'s' if len(scaling['sizes']) != 1 else ''}; the scaling arm needs at least 2)"
    elif any(x['diff']['ci_high'] < 0 for x in diffs):
        status = FAILS
    elif diffs and all(x['diff']['ci_low'] > 0 for x in diffs) and len({x['d'] for x in diffs}) == len(scaling['sizes']):
        status = HOLDS
    else:
        status = f"{OPEN} ({_mde_text([x['power'] for x in diffs])})"
    rows.append({'claim': 'GCA gives better accuracy per parameter (scaling)', 'status': status,
                 'numbers': nums or 'no paired sizes'})
    # 5
    tested = [c for c in positions if c['n'] >= 2]
    nums = '; '.join(f"early − {c['position']} {c['domain']}: {c['mean_diff']:+.4f}, p Holm {_fmt(c['p_holm'], '.3f')}"
                     for c in tested)
    if not tested:
        status = f'{OPEN} (no placement sweep with 2 or more seeds)'
    elif any(c['mean_diff'] < 0 and c['p_holm'] < ALPHA for c in tested):
        status = FAILS
    elif all(c['mean_diff'] > 0 and c['p_holm'] < ALPHA for c in tested):
        status = HOLDS
    else:
        status = f"{OPEN} ({_mde_text([c['power'] for c in tested])})"
    conv = all(c['converged'] == len(c['seeds']) for c in tested) if tested else False
    rows.append({'claim': 'The early position is best', 'status': status,
                 'numbers': (nums or 'no runs') + ('' if conv or not tested else
                                                   ' (exploratory: from a sweep whose runs did not all converge)')})
    # 6
    pen = [c for c in cause if c['ortho_weight'] > 0 and c['comparison']['n'] >= 2]
    nums = '; '.join(f"{c['label']} {c['domain']}: {c['comparison']['mean_diff']:+.4f}, \\|cos\\| {_fmt(c['ortho']['mean'], '.3f')}"
                     for c in pen)
    if not pen:
        status = f'{OPEN} (cause arm not run yet)' if not any(c['ortho_weight'] > 0 for c in cause) else \
            f'{OPEN} (no penalised configuration with 2 seeds paired with its gate unpenalised yet)'
    else:
        ps = holm([c['comparison']['p_t'] for c in pen])
        if any(c['comparison']['mean_diff'] < 0 and p < ALPHA for c, p in zip(pen, ps)):
            status = FAILS
        elif all(c['comparison']['mean_diff'] > 0 and p < ALPHA for c, p in zip(pen, ps)):
            status = HOLDS
        else:
            status = f"{OPEN} ({_mde_text([c['comparison']['power'] for c in pen])})"
    rows.append({'claim': '(this study) An explicit orthogonality penalty raises NDCG@10', 'status': status,
                 'numbers': nums or 'no runs'})
    return rows


# ---------------------------------------------------------------------------------------------
# loading, plots, page

def arm_rows(rows, arm):
    """``rows`` (of :func:`~recbole_ortho.analysis.report.load_rows`) tagged with their ``arm`` and a
    configuration ``label`` (the main arm's roles; the sweep variant otherwise)."""
    out = []
    for r in rows:
        r = dict(r, arm=arm)
        r['label'] = ROLE_LABEL[role(r)] if arm == 'main' else r['variant']
        out.append(r)
    return out


def _plot_scatter(main, cause, out_dir, render):
    import matplotlib.pyplot as plt
    rs = [r for r in main + cause if role(r) == 'gca' and converged(r)]
    if not rs:
        return None
    name = 'ortho_vs_ndcg10'
    labels = sorted({f"{family(r)}: {r['label']}" for r in rs})
    rows = [[family(r), r['label'], r['seed'], d, r[f'ortho_{d}_{STAT}'], _metric(r, d)] for r in rs for d in 'AB']
    digest = _write_csv(os.path.join(out_dir, name + '.csv'), ['family', 'configuration', 'seed', 'domain', STAT, METRIC], rows)
    png = os.path.join(out_dir, name + '.png')
    if render:
        style = _styles(labels)
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.6 + 0.22 * ((len(labels) + 1) // 2)), layout='constrained')
        handles = {}
        for ax, d in zip(axes, 'AB'):
            for lab in labels:
                pts = [(x, y) for f, c, _, dd, x, y in rows if dd == d and f'{f}: {c}' == lab and not math.isnan(x)]
                if pts:
                    colour, marker = style[lab]
                    handles[lab] = ax.scatter(*zip(*pts), color=colour, marker=marker, s=28, label=lab)
            ax.axvspan(*PAPER_ORTHO_RANGE, color='0.85', zorder=0, label='paper: 0.1–0.2')
            ax.set_xlabel(STAT_LABELS[STAT])
            ax.set_ylabel('test NDCG@10')
            ax.set_title(f'domain {d} (one point per converged run)')
            ax.grid(alpha=0.3)
        fig.suptitle('Orthogonality against accuracy (grey band: the paper\'s 0.1–0.2)')
        _outside_legend(fig, list(handles.values()), list(handles))
        _save_png(fig, png, digest)
    return png


def _plot_scaling(scaling, out_dir, render):
    import matplotlib.pyplot as plt
    if not scaling['points']:
        return None
    name = 'scaling_ndcg10_vs_params'
    rows = [[p['domain'], ROLE_LABEL[p['role']], p['d'], p['n_params'], p['ndcg10']['n'], p['ndcg10']['mean'],
             p['ndcg10']['ci_low'], p['ndcg10']['ci_high']] for p in scaling['points']]
    rows += [[f['domain'], ROLE_LABEL[f['role']], 'fit', f['n'], '', f['a'], f['b'], f['b_se']] for f in scaling['fits']]
    digest = _write_csv(os.path.join(out_dir, name + '.csv'),
                        ['domain', 'role', 'd', 'params', 'runs', 'mean (fit: a)', 'ci_low (fit: b)', 'ci_high (fit: b se)'], rows)
    png = os.path.join(out_dir, name + '.png')
    if render:
        style = _styles([ROLE_LABEL[r] for r in ROLES])
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.8), layout='constrained')
        handles = {}
        for ax, d in zip(axes, 'AB'):
            for ro in ROLES:
                lab = ROLE_LABEL[ro]
                pts = sorted((p['n_params'], p['ndcg10'], p['d']) for p in scaling['points'] if p['domain'] == d and p['role'] == ro)
                if not pts:
                    continue
                colour, marker = style[lab]
                x = [p[0] for p in pts]
                y = [p[1]['mean'] for p in pts]
                err = [[0 if math.isnan(p[1]['ci_low']) else p[1]['mean'] - p[1]['ci_low'] for p in pts],
                       [0 if math.isnan(p[1]['ci_high']) else p[1]['ci_high'] - p[1]['mean'] for p in pts]]
                handles[lab] = ax.errorbar(x, y, yerr=err, fmt=marker, color=colour, capsize=3, label=lab)
                for f in scaling['fits']:
                    if f['domain'] == d and f['role'] == ro:
                        xs = np.geomspace(min(x), max(x), 50)
                        ax.plot(xs, f['a'] + f['b'] * np.log(xs), color=colour, alpha=0.6)
                for xi, yi, (_, _, size) in zip(x, y, pts):
                    ax.annotate(f'd={size}', (xi, yi), textcoords='offset points', xytext=(4, 4), fontsize=7)
            ax.set_xscale('log')
            ax.set_xlabel('trainable parameters (log scale)')
            ax.set_ylabel('test NDCG@10 (mean, 95 % interval)')
            ax.set_title(f'domain {d}')
            ax.grid(alpha=0.3, which='both')
        fig.suptitle('ABXI: NDCG@10 against parameter count (lines: a + b ln(params) per family)')
        _outside_legend(fig, list(handles.values()), list(handles), ncol=3)
        _save_png(fig, png, digest)
    return png


def _plot_curves(main, out_dir, render):
    import matplotlib.pyplot as plt
    fams = sorted({family(r) for r in main})
    if not fams:
        return None
    name = 'training_curves'
    rows = [[family(r), ROLE_LABEL[role(r)], r['seed'], e['epoch'], e['valid_score'], r.get('stop_reason') or 'unknown']
            for r in main for e in r['trace'] if 'valid_score' in e]
    digest = _write_csv(os.path.join(out_dir, name + '.csv'), ['family', 'role', 'seed', 'epoch', 'valid_score', 'stop_reason'], rows)
    png = os.path.join(out_dir, name + '.png')
    if render:
        style = _styles([ROLE_LABEL[r] for r in ROLES])
        fig, axes = plt.subplots(1, len(fams), figsize=(5.2 * len(fams), 4.4), layout='constrained', squeeze=False)
        handles = {}
        for ax, fam in zip(axes[0], fams):
            for r in sorted((r for r in main if family(r) == fam), key=lambda r: (ROLES.index(role(r)), r['seed'])):
                lab = ROLE_LABEL[role(r)]
                ep = [(e['epoch'], e['valid_score']) for e in r['trace'] if 'valid_score' in e]
                if not ep:
                    continue
                colour, _ = style[lab]
                h, = ax.plot(*zip(*ep), color=colour, alpha=0.75, lw=1.2, label=lab)
                handles.setdefault(lab, h)
                if r.get('best_epoch') is not None:
                    best = dict(ep).get(r['best_epoch'])
                    if best is not None:
                        ax.plot([r['best_epoch']], [best], marker='o', color=colour, ms=4)
            ax.set_title(f'{fam} (one line per run; dot: best epoch)')
            ax.set_xlabel('epoch (from 0)')
            ax.set_ylabel('validation score')
            ax.grid(alpha=0.3)
        fig.suptitle('Training curves of the main arm')
        _outside_legend(fig, list(handles.values()), list(handles), ncol=3)
        _save_png(fig, png, digest)
    return png


def _plot_cause(cause, main_gca, out_dir, render):
    import matplotlib.pyplot as plt
    if not cause:
        return None
    name = 'cause_ablation'
    ref = [dict(label='GCA_early (vector gate, no penalty)', domain=d,
                ndcg10=mean_ci([_metric(r, d) for r in main_gca if converged(r)])) for d in 'AB']
    entries = ref + [dict(label=c['label'], domain=c['domain'], ndcg10=c['ndcg10']) for c in cause]
    rows = [[e['label'], e['domain'], e['ndcg10']['n'], e['ndcg10']['mean'], e['ndcg10']['ci_low'], e['ndcg10']['ci_high']]
            for e in entries]
    digest = _write_csv(os.path.join(out_dir, name + '.csv'), ['configuration', 'domain', 'runs', 'mean', 'ci_low', 'ci_high'], rows)
    png = os.path.join(out_dir, name + '.png')
    if render:
        labels = list(dict.fromkeys(e['label'] for e in entries))
        fig, axes = plt.subplots(1, 2, figsize=(10, 1.2 + 0.45 * len(labels)), layout='constrained')
        for ax, d in zip(axes, 'AB'):
            es = {e['label']: e['ndcg10'] for e in entries if e['domain'] == d}
            y = np.arange(len(labels))
            m = [es[lab]['mean'] if lab in es else math.nan for lab in labels]
            lo = [0 if lab not in es or math.isnan(es[lab]['ci_low']) else es[lab]['mean'] - es[lab]['ci_low'] for lab in labels]
            hi = [0 if lab not in es or math.isnan(es[lab]['ci_high']) else es[lab]['ci_high'] - es[lab]['mean'] for lab in labels]
            ax.errorbar(m, y, xerr=[lo, hi], fmt='o', capsize=3)
            ax.set_yticks(y, labels if d == 'A' else [''] * len(labels), fontsize=8)
            ax.set_xlabel('test NDCG@10 (mean, 95 % interval)')
            ax.set_title(f'domain {d}')
            ax.grid(alpha=0.3)
        fig.suptitle('ABXI_GCA: gate and orthogonality penalty (cause arm)')
        _save_png(fig, png, digest)
    return png


def markdown(title, entry, main, scaling_rows, cause_rows, prim, ortho, corr, scaling, cause, positions, verdict,
             plots, out_dir, cost=None):
    exp = entry.get('expected') or {}
    n_main = len(main)
    replays = [_replay_line(entry['replay_files']), ''] if 'replay_files' in entry else []
    lines = [f'# {title}', '',
             'The package\'s reference results on the paper\'s questions (Lee et al., arXiv 2510.09435), on '
             'Food-Kitchen under the ABXI protocol (999 negatives), each run trained to convergence: the fast '
             'schedule, early stopping after 10 evaluations without improvement, up to 200 epochs. Generated by '
             '`python -m recbole_ortho.analysis --regenerate` from the run stores '
             + ', '.join(f'`{s}`' for s in entry['stores']) + '; rules: `recbole_ortho/analysis/study.py`.', '',
             f"Runs finished: main arm {n_main}" + (f" of {exp['main']}" if exp.get('main') else '')
             + f", scaling arm {len(scaling_rows)}" + (f" of {exp['scaling']}" if exp.get('scaling') else '')
             + f", cause arm {len(cause_rows)}" + (f" of {exp['cause']}" if exp.get('cause') else '') + '. '
             'A run counts as converged when early stopping ended it; one that reached the epoch cap or the time '
             'budget is flagged (column "stopped by") and left out of every test.', '',
             _code_line(main + scaling_rows + cause_rows), '',
             *replays, _precision_line(main + scaling_rows + cause_rows), '',
             '## Verdict, one row per claim', '',
             '| claim | status | the numbers behind it |', '|---|---|---|']
    lines += [f"| {v['claim']} | **{v['status']}** | {v['numbers']} |" for v in verdict]
    lines += ['', 'The rules behind each status are fixed in `verdicts()` of `recbole_ortho/analysis/study.py`, whichever '
              'way the results fall: a claim *holds here* only with the stated test passing at α = 0.05 '
              '(Holm where there is a family), *does not hold here* when the opposite passes or (orthogonality) '
              'the measured value lies outside the paper\'s range, and is *inconclusive* otherwise, with the '
              'smallest effect the runs could detect at 80 % power.', '',
              '## Main arm: accuracy, cost and convergence', '',
              'Test metrics: mean and 95 % t-interval over the converged runs. Wall time: hours per run on the '
              'machine that ran it (see the provenance in each result); core-h: wall time times the CPU threads the run '
              'used (runs with 1 thread ran two at a time); to best (h): data preparation, training and '
              'validation up to the end of the best epoch (what a converged run costs, without the epochs early '
              'stopping waits), mean over the converged runs; best epoch: counted from 1.', '',
              '| base model | variant | domain | runs | converged | params | NDCG@10 | HR@10 | wall (h) | core-h | to best (h) | '
              'best epoch | stopped by |',
              '|---|---|---|---:|---:|---:|---|---|---:|---:|---:|---:|---|']
    for e in main_table(main):
        lines.append(f"| {e['family']} | {ROLE_LABEL[e['role']]} | {e['domain']} | {e['runs']} | {e['converged']} | "
                     f"{e['n_params']:,} | {_interval(e['ndcg10'])} | {_interval(e['hit10'])} | "
                     f"{_fmt(e['wall_h']['mean'], '.2f')} | {_fmt(e['core_h']['mean'], '.2f')} | "
                     f"{_fmt(e['to_best_h']['mean'], '.2f')} | "
                     f"{_fmt(e['best_epoch']['mean'], '.1f')} | "
                     + ', '.join(f'{k} {v}' for k, v in e['stop_reasons'].items()) + ' |')
    if cost:
        lines += _cost_lines(*cost)
    lines += ['', '## The declared comparison (confirmatory)', '',
              'GCA_early against the base widened to its parameter count, test NDCG@10, domains A and B, per base '
              'model; declared in each main-arm sweep spec (`primary`) before any run. Per seed: paired t-test over '
              'the seeds where both runs converged, Holm over these comparisons only. Per user: hierarchical '
              'bootstrap of the mean per-user difference (seeds, then users; 2,000 resamples). Detectable: the '
              'smallest difference the paired t-test finds with 80 % power at the observed spread.', '',
              '| base model | domain | seeds | GCA_early − matched | relative | p (t) | p (Holm) | per user [95 %] | detectable |',
              '|---|---|---:|---|---:|---:|---:|---|---|']
    for c in prim:
        rel = c['mean_diff'] / np.mean(c['b']) if c['n'] else math.nan
        user = (f"{c['user']['estimate']:+.4f} [{c['user']['ci_low']:+.4f}, {c['user']['ci_high']:+.4f}]"
                if c['user'] else 'n/a')
        det = (f"{c['power']['paired']['mde']:.4f} ({100 * c['power']['paired']['mde_rel']:.1f} %)"
               if 'paired' in c['power'] else 'n/a (fewer than 2 seeds)')
        lines.append(f"| {c['family']} | {c['domain']} | {c['n']} | {_interval(c['diff'], '+.4f')} | "
                     f"{_fmt(100 * rel, '+.1f')}{' %' if c['n'] else ''} | {_fmt(c['p_t'], '.3f')} | {_fmt(c['p_holm'], '.3f')} | {user} | {det} |")
    also = also_summary(main)
    if also:
        lines += ['', '### The same weights under another protocol (exploratory)', '',
                  'Each run evaluated its best weights again under the settings named (`also_evaluate`; no '
                  'retraining), e.g. LLM4CDSR under its own protocol (100 negatives). Test NDCG@10, mean and 95 % '
                  'interval over converged runs.', '',
                  '| base model | protocol | domain | base | GCA_early | matched base | GCA_early − matched [95 %] |',
                  '|---|---|---|---|---|---|---|']
        lines += [f"| {e['family']} | {e['name']} ({e['settings']}) | {e['domain']} | {_interval(e['base'])} | "
                  f"{_interval(e['gca'])} | {_interval(e['matched'])} | {_interval(e['diff'], '+.4f')} |" for e in also]
    lines += ['', '## Orthogonality (exploratory)', '',
              f"The paper's statistic ({STAT_LABELS[STAT]}, over a run's test query steps, averaged over GCA stages) of "
              "each converged GCA_early run, and its median over runs against the paper's 0.1–0.2. No constraint "
              "pushes it (`gca_ortho_weight: 0`).", '',
              '| base model | domain | per run (seed: value) | median | vs 0.1–0.2 |', '|---|---|---|---:|---|']
    for o in ortho:
        lines.append(f"| {o['family']} | {o['domain']} | " + (', '.join(f'{s}: {v:.3f}' for s, v in o['values']) or 'none')
                     + f" | {_fmt(o['median'], '.3f')} | {o['vs_paper']} |")
    lines += ['', '### Orthogonality against NDCG@10', '',
              'Every converged run with GCA (main and cause arms). Pooled: Pearson r with its Fisher-z interval '
              '(n/a with 3 runs or fewer) and the t-test of r; '
              'within: each configuration centred on its own means first (the variation across seeds only); '
              'detectable: the smallest |r| a two-sided test finds with 80 % power from these runs.', '',
              '| base model | domain | runs | pooled r [95 %] | p | within r [95 %] | detectable \\|r\\| | paper r |',
              '|---|---|---:|---|---:|---|---:|---:|']
    for c in corr:
        pc = c.get('pooled') or {}
        pooled = (f"{pc['pearson']:+.2f} [{_fmt(pc['pearson_fisher_ci_low'], '+.2f')}, "
                  f"{_fmt(pc['pearson_fisher_ci_high'], '+.2f')}]" if pc else 'n/a')
        pooled += f" | {_fmt(pc.get('pearson_p', math.nan), '.3f')}"
        w = c.get('within') or {}
        within = (f"{w['r']:+.2f} [{_fmt(w.get('ci_low'), '+.2f')}, {_fmt(w.get('ci_high'), '+.2f')}]"
                  if w and not math.isnan(w.get('r', math.nan)) else 'n/a')
        lines.append(f"| {c['family']} | {c['domain']} | {c['n']} | {pooled} | {within} | {_fmt(c['detectable_r'], '.2f')} | "
                     f"{_fmt(c['paper_r'], '+.2f') if c['paper_r'] is not None else '—'} |")
    lines += ['', '## Scaling (exploratory)', '',
              f"ABXI at hidden sizes {', '.join(str(s) for s in scaling['sizes']) or 'none yet'} (the main arm is "
              f"d = {entry.get('main_d', 256)}), converged runs. Fit per family over its runs: NDCG@10 = a + b ln(params).", '',
              '| domain | d | GCA_early − matched [95 %] | seeds |', '|---|---:|---|---:|']
    for x in scaling['diffs']:
        lines.append(f"| {x['domain']} | {x['d']} | {_interval(x['diff'], '+.4f')} | {len(x['seeds'])} |")
    if scaling['fits']:
        lines += ['', '| domain | family | a | b (per ln param) | b s.e. | runs |', '|---|---|---:|---:|---:|---:|']
        lines += [f"| {f['domain']} | {ROLE_LABEL[f['role']]} | {f['a']:.4f} | {f['b']:+.4f} | {f['b_se']:.4f} | {f['n']} |"
                  for f in scaling['fits']]
    lines += ['', '## Cause: the gate and an explicit orthogonality penalty (exploratory)', '',
              'ABXI_GCA with other gates and with `gca_ortho_weight` > 0, each against the configuration that differs '
              'from it in that one change, paired by seed: a penalised configuration against the same gate without '
              'the penalty, another gate against GCA_early (vector gate, no penalty: the main arm\'s runs); converged runs.', '']
    if cause:
        lines += ['| configuration | domain | runs | NDCG@10 | paper \\|cos\\| | against | difference [95 %] | seeds | p (t) |',
                  '|---|---|---:|---|---|---|---|---:|---:|']
        lines += [f"| {c['label']} | {c['domain']} | {c['runs']} | {_interval(c['ndcg10'])} | {_interval(c['ortho'], '.3f')} | "
                  f"{c['against']} | {_interval(c['comparison']['diff'], '+.4f')} | {len(c['seeds'])} | "
                  f"{_fmt(c['comparison']['p_t'], '.3f')} |" for c in cause]
    else:
        lines.append('No run of the cause arm yet.')
    lines += ['', '## Placement (exploratory)', '']
    if positions:
        lines += ['GCA_early (`gca_positions: [0]`) against each other placement, paired by seed; Holm within this table. '
                  f"From `{entry.get('positions_store', 'the positions sweep')}`, whose runs are not all converged "
                  'when the column says so.', '',
                  '| model | other placement | domain | seeds | early − other [95 %] | p (Holm) | converged runs |',
                  '|---|---|---|---:|---|---:|---:|']
        lines += [f"| {c['model']} | {c['position']} | {c['domain']} | {c['n']} | {_interval(c['diff'], '+.4f')} | "
                  f"{_fmt(c['p_holm'], '.3f')} | {c['converged']} of {len(c['seeds'])} |" for c in positions]
    else:
        lines.append('No placement sweep.')
    lines += ['', '## Plots', '']
    for name, png in plots.items():
        if png:
            lines += [f'![{name}]({os.path.relpath(png, out_dir)})', '']
    return '\n'.join(lines)


def _cost_lines(rows, totals):
    lines = ['', '### What the study has cost, and what is still to run', '',
             'Wall hours: the finished runs\' wall time on the machine that ran each (a paused run counts its pause). '
             'Core-hours: wall time times the CPU threads the run used (two 1-thread runs side by side on 2 cores '
             'cost what one 2-thread run of the same wall time does). Still to run: the runs the arm has when '
             'finished, less those finished, at the mean core-hours of the same store\'s finished runs of the same '
             'variant (an estimate; none for a store without a finished run).', '',
             '| arm | run store | runs finished | wall hours so far | core-hours so far | core-hours per run (mean) | '
             'runs to come | core-hours to come (estimate) |',
             '|---|---|---:|---:|---:|---:|---:|---:|']
    for e in rows:
        lines.append(f"| {e['arm']} | `{e['store']}` | {e['runs']}" + (f" of {e['expected']}" if e['expected'] is not None else '')
                     + f" | {e['hours']:.1f} | {e['core_h']:.1f} | {_fmt(e['mean_h'], '.2f')} | {_fmt(e['todo'], 'd')} | "
                     + ('unknown (no run yet)' if e['todo'] and e['todo_h'] is None else _fmt(e['todo_h'], '.1f')) + ' |')
    lines.append(f"| all | | {totals['runs']} | {totals['hours']:.1f} | {totals['core_h']:.1f} | | {totals['todo']} | "
                 f"{totals['todo_h']:.1f}" + (' + unknown' if totals['unestimated'] else '') + ' |')
    return lines


def _tally(rows, key, missing):
    """``(counts, text)``: how many ``rows`` hold each value of ``key`` (``missing`` for none), and
    ``"a (2 runs), b (1 run)"``."""
    by = defaultdict(int)
    for r in rows:
        by[r.get(key) or missing] += 1
    return by, ', '.join(f'{v} ({_runs(n)})' for v, n in sorted(by.items()))


def _precision_line(rows):
    """Which precision the runs ran in (the result's ``precision``; none recorded: a run made before
    the setting existed, when every run was fp32)."""
    by, parts = _tally(rows, 'precision', 'not recorded')
    if not by:
        return 'Precision: no run yet.'
    tail = (' A run without a record was made before the `precision` setting existed, when every run was fp32.'
            if 'not recorded' in by else '')
    return f'Precision the runs ran in: {parts}.{tail}'


def _code_line(rows):
    """Which package code made the runs (their provenance's commit; ``+dirty``: uncommitted
    changes; ``unknown``: none recorded)."""
    by, parts = _tally(rows, 'code', 'unknown')
    if not by:
        return 'Code behind the runs: no run yet.'
    one = 'one commit' if len(by) == 1 else f'{len(by)} commits: compare across them only where the code agrees'
    return f'Code behind the runs ({one}): {parts}.'


def _replay_line(replays):
    """What the replays say about comparing runs across commits and machines: each stored run's
    first epochs re-trained elsewhere (:mod:`recbole_ortho.sweep.replay`)."""
    if not replays:
        return ('Replays: none yet (`python -m recbole_ortho.sweep.replay` re-trains the first epochs of a stored '
                'run at another commit or CPU and compares them with its trace).')
    def side(s):
        return f"{(s.get('git_commit') or 'unknown')[:7]}, {s.get('cpu')}, {s.get('threads')} threads"
    parts = [f"{r['model']} seed {r['seed']} (stored: {side(r['stored'])}; replayed: {side(r['replayed'])}): "
             f"training loss within {r['train_loss_max_rel_diff']:.1e} relative, validation score within "
             f"{r['valid_score_max_abs_diff']:.1e}, over {r['epochs_replayed']} epochs" for r in replays]
    return ('Replays: the first epochs of stored runs re-trained at another commit or on another CPU '
            '(`python -m recbole_ortho.sweep.replay`, files in `results/replays/`), the measured answer to whether '
            'runs of different commits or machines can be compared: ' + '; '.join(parts) + '.')


def write_study_page(sources, entry, out_md, title, render_plots=True):
    """Build the study page ``out_md`` (plots in ``<out_md without .md>_plots/``) from the loaded
    ``sources`` (:func:`recbole_ortho.analysis.pages.load_sources`) and its registry ``entry``."""
    # (arm, source alias) of every run store, the main arm's first: their rows are tagged once
    arms = [('main', a) for a in entry['main']] + [(k, entry[k]) for k in ('scaling', 'cause') if entry.get(k)]
    stores = [(arm, os.path.relpath(sources[f'{a}.dir'], sources['root']), arm_rows(sources[f'{a}.rows'], arm))
              for arm, a in arms]
    main = [r for arm, _, rows in stores if arm == 'main' for r in rows]
    scaling_rows = next((rows for arm, _, rows in stores if arm == 'scaling'), [])
    cause_rows = next((rows for arm, _, rows in stores if arm == 'cause'), [])
    pos_rows = arm_rows(sources[f"{entry['positions']}.rows"], 'positions') if entry.get('positions') else []
    entry = dict(entry, stores=[name for _, name, _ in stores])
    if entry.get('replays'):
        entry['replay_files'] = sources[entry['replays']]
    if entry.get('positions'):
        entry['positions_store'] = os.path.relpath(sources[f"{entry['positions']}.dir"], sources['root'])
    prim = primary(main)
    ortho = ortho_summary(main)
    corr = correlation_summary(main + cause_rows)
    main_abxi = [r for r in main if family(r) == 'ABXI']
    scaling = scaling_summary(main_abxi + scaling_rows, int(entry.get('main_d', 256)))
    # GCA_early is the reference: the cause arm's own (vector gate, no penalty) runs if it has them (a spec that
    # does not exclude that point), else the main arm's GCA_early runs, which have the same run ids
    ref = [r for r in cause_rows if is_reference(r)] or [r for r in main_abxi if role(r) == 'gca']
    cause = cause_summary([r for r in cause_rows if not is_reference(r)], ref)
    positions = position_summary(pos_rows)
    verdict = verdicts(prim, ortho, corr, scaling, positions, cause)
    out_dir = os.path.dirname(os.path.abspath(out_md))
    plot_dir = os.path.splitext(os.path.abspath(out_md))[0] + '_plots'
    os.makedirs(plot_dir, exist_ok=True)
    if render_plots:
        import matplotlib
        matplotlib.use('Agg')
    plots = {'ortho_vs_ndcg10': _plot_scatter(main, cause_rows, plot_dir, render_plots),
             'scaling': _plot_scaling(scaling, plot_dir, render_plots),
             'training_curves': _plot_curves(main, plot_dir, render_plots),
             'cause_ablation': _plot_cause(cause, ref, plot_dir, render_plots)}
    cost = cost_summary(stores, entry.get('expected') or {})
    text = markdown(title, entry, main, scaling_rows, cause_rows, prim, ortho, corr, scaling, cause, positions, verdict,
                    plots, out_dir, cost)
    with open(out_md + '.tmp', 'w') as f:
        f.write(text + '\n')
    os.replace(out_md + '.tmp', out_md)
    return out_md
