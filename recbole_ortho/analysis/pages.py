"""
recbole_ortho.analysis.pages
############################

Every published results page, generated end to end from the run stores, and the check that the
committed pages are what the stores give.

The registry ``results/pages.yaml`` lists

- ``sources``: the run stores and result files, each under an alias (``sweep:`` a sweep folder,
  ``results:`` a folder of ``--result_file`` JSONs, ``json:`` one JSON file);
- ``sweep_pages``: pages written by :func:`~recbole_ortho.analysis.report.write_report` from one
  sweep (``page``, ``sweep``, ``title``, ``stat``), with their plots in ``<page>_plots/``;
- ``template_pages``: pages filled from a template (``page``, ``template``), the whole file, or,
  with ``block: NAME``, only the text between ``<!-- BEGIN generated: NAME -->`` and
  ``<!-- END generated: NAME -->`` (the README's "Results").

Paths are relative to the registry's folder. A template's numbers are placeholders
(:mod:`recbole_ortho.analysis.templating`) filled from :func:`page_values`, which computes every
value from the sources: means, medians of |cos|, parameter counts and the ``param_match``
updates, best epochs (0-based, as ``result.json``), differences, and the qualitative words that
depend on them.

``python -m recbole_ortho.analysis --check`` regenerates every page into a temporary folder and
compares: markdown byte for byte; for plots, the CSV behind each PNG byte for byte, and the PNG by
the SHA-256 of that CSV, which the PNG carries in its metadata (``plotted-data-sha256``). PNG bytes
are never compared (fonts and matplotlib versions differ between machines), and ``--check`` does
not render them, so it takes seconds. ``--regenerate`` writes everything, plots included; it builds
all pages first and replaces the committed files only when every page was built (each file by an
atomic rename).
"""

import difflib
import hashlib
import json
import math
import os
import re
import shutil
import struct
import tempfile
from collections import defaultdict

import numpy as np
import yaml

from recbole_ortho.analysis.report import PNG_HASH_KEY
from recbole_ortho.analysis.templating import Span, TemplateError, render

DEFAULT_REGISTRY = os.path.join('results', 'pages.yaml')

#: published numbers we compare with (not ours): the ABXI README's Food-Kitchen results (5 seeds),
#: the paper's orthogonality medians and correlations, the GCA author's blog's LLM4CDSR numbers
REFERENCE = {
    'abxi.A.hr5': .2519, 'abxi.A.hr10': .3243, 'abxi.A.ndcg10': .1971, 'abxi.A.mrr': .1655,
    'abxi.B.hr5': .1745, 'abxi.B.hr10': .2438, 'abxi.B.ndcg10': .1427, 'abxi.B.mrr': .1219,
    'paper.median_cos': Span([0.1, 0.2]),
    'paper.r.A': -0.33, 'paper.r.B': -0.34, 'paper.seeds': 5, 'paper.abxi_variants': 24, 'ref.abxi.seeds': 5,
    'blog.cloth_sport.A': .782, 'blog.cloth_sport.B': .649, 'blog.elec_phone.A': .351, 'blog.elec_phone.B': .261,
}

METRIC_KEYS = {'ndcg@10': 'ndcg10', 'ndcg@1': 'ndcg1', 'hit@5': 'hr5', 'hit@10': 'hr10', 'hit@20': 'hr20',
               'mrr': 'mrr', 'auc': 'auc'}
DOMAIN_NAMES = {'A': 'Food (A)', 'B': 'Kitchen (B)', 'all': 'all'}


class StoreError(ValueError):
    """A value a page needs is not in the store (names the run and the key)."""


# ---------------------------------------------------------------------------------------------
# runs

class Run:
    """One finished run: its spec (or file name) and result, with strict accessors."""

    def __init__(self, spec, res, where):
        self.spec, self.res, self.where = spec, res, where
        self.model = spec.get('model') or res.get('model')
        self.variant = spec.get('variant', 'base')
        self.config = res.get('config') or {}
        self.seed = spec.get('seed', self.config.get('seed'))
        self.pm = res.get('param_match')
        self.n_params = int(self._get(res, 'n_params'))
        self.best_epoch = int(self._get(res, 'best_epoch'))
        self.epochs_run = int(self._get(res, 'epochs_run'))
        self.wall_min = float(self._get(res, 'wall_time_s')) / 60

    def _get(self, d, *path):
        cur = d
        for k in path:
            if not isinstance(cur, dict) or k not in cur or cur[k] is None:
                raise StoreError(f'{self.where}: no {"/".join(map(str, path))}')
            cur = cur[k]
        return cur

    @property
    def kind(self):
        """``gca`` (a _GCA model), ``pm`` (a parameter-matched base) or ``base``."""
        return 'gca' if self.model.endswith('_GCA') else ('pm' if self.pm else 'base')

    def cfg(self, key):
        return self._get(self.config, key)

    def metric(self, d, m, phase='test'):
        return float(self._get(self.res, phase, d, m))

    def ortho(self, direction, stat='median_abs', stage=0, group='all'):
        """``ortho_cos_<direction>@gca<stage>[/<stat>]`` of the test ``group`` (``user_mean``: the
        mean over users of each user's mean |cos|)."""
        key = f'ortho_cos_{direction}@gca{stage}' + ('' if stat == 'user_mean' else f'/{stat}')
        return float(self._get(self.res, 'test', group, key))

    def trace_valid(self, key=None):
        """``{epoch: valid_score}``, or ``{epoch: valid/all/<key>}`` of the validated epochs."""
        out = {}
        for e in self.res.get('trace', []):
            if 'valid_score' in e:
                out[e['epoch']] = e['valid_score'] if key is None else e['valid']['all'].get(key)
        return out

    def train_losses(self):
        return [e['train_loss'] for e in self.res.get('trace', [])]


def load_sweep(sweep_dir):
    from recbole_ortho.sweep.store import RunStore
    runs = [Run(s, r, f'{sweep_dir}/runs/{s["run_id"]}') for s, r in RunStore(sweep_dir).results()]
    if not runs:
        raise StoreError(f'{sweep_dir}: no finished run (runs/*/result.json)')
    return runs


def load_results_dir(folder):
    runs = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith('.json'):
            with open(os.path.join(folder, name)) as f:
                r = json.load(f)
            if 'test' in r and 'config' in r:
                runs[name[:-5]] = Run({'model': r['model'], 'name': name[:-5]}, r, f'{folder}/{name}')
    if not runs:
        raise StoreError(f'{folder}: no result JSON files')
    return runs


# ---------------------------------------------------------------------------------------------
# small helpers

def word(a, b, more='higher', less='lower', same='equal to'):
    """``more`` when a > b, ``less`` when a < b, ``same`` when equal."""
    return more if a > b else (less if a < b else same)


def position(x, refs, above='ahead of both', below='behind both', between='between them'):
    return above if all(x > r for r in refs) else (below if all(x < r for r in refs) else between)


def joined(values, spec=''):
    """``a``, ``a and b``, ``a, b and c`` of the formatted values."""
    s = [format(v, spec) for v in values]
    return s[0] if len(s) == 1 else ', '.join(s[:-1]) + ' and ' + s[-1]


def ordinal_count(n):
    return {1: 'one', 2: 'two', 3: 'three', 4: 'four', 5: 'five'}.get(n, str(n))


def _one(runs, kind, where):
    rs = [r for r in runs if r.kind == kind]
    if len(rs) != 1:
        raise StoreError(f'{where}: expected one {kind} run, found {len(rs)}')
    return rs[0]


def short(x):
    """A setting as people write it: ``1e-4`` for 0.0001, ``5e-4``, ``0.5``, ``3.0``."""
    x = float(x)
    if x != 0 and abs(x) < 1e-2:
        one, two = f'{x:.0e}', f'{x:.1e}'
        return re.sub(r'e([+-])0*(\d)', r'e\1\2', one if one == two.replace('.0e', 'e') else two)
    return f'{x:g}' if x != int(x) else f'{x:.1f}'


def fmt4(v):
    return '–' if v is None or (isinstance(v, float) and math.isnan(v)) else f'{v:.4f}'


# ---------------------------------------------------------------------------------------------
# values of the pages

def _h200_values(V, runs, speed):
    """The four one-seed ABXI runs on the H200 (``results/food_kitchen_h200``)."""
    for need in ('ABXI', 'ABXI_GCA', 'ABXI_pernegs', 'ABXI_pm'):
        if need not in runs:
            raise StoreError(f'food_kitchen_h200: no {need}.json')
    a, g, p, pmr = runs['ABXI'], runs['ABXI_GCA'], runs['ABXI_pernegs'], runs['ABXI_pm']
    V['h200.n_runs'] = len(runs)
    V['h200.seed'] = joined(sorted({r.seed for r in runs.values()}))
    V['h200.epochs'] = Span(r.epochs_run for r in runs.values())
    V['h200.last_k'] = max(r.epochs_run - r.best_epoch for r in runs.values())
    budgets = {r.cfg('time_budget_s') for r in runs.values()}
    if len(budgets) != 1:
        raise StoreError(f'food_kitchen_h200: different time budgets {budgets}')
    V['h200.budget_s'] = budgets.pop()
    c = a.config
    V.update({'h200.cfg.d': a.cfg('embedding_size'), 'h200.cfg.layers': a.cfg('n_layers'),
              'h200.cfg.heads': a.cfg('n_heads'), 'h200.cfg.dropout': a.cfg('dropout_prob'),
              'h200.cfg.rd': a.cfg('rd'), 'h200.cfg.ri': a.cfg('ri'), 'h200.cfg.batch': a.cfg('train_batch_size'),
              'h200.cfg.learner': {'adamw': 'AdamW', 'adam': 'Adam'}.get(a.cfg('learner'), a.cfg('learner')),
              'h200.cfg.lr': short(a.cfg('learning_rate')), 'h200.cfg.wd': short(a.cfg('weight_decay')),
              'h200.cfg.warmup': a.cfg('warmup_epochs'), 'h200.cfg.window': a.cfg('MAX_ITEM_LIST_LENGTH'),
              'h200.cfg.neg_num': a.cfg('eval_neg_num'), 'h200.cfg.n_neg': a.cfg('n_neg_per_domain'),
              'h200.cfg.device': c.get('device', '?')})
    V['h200.gca.positions'] = str(g.cfg('gca_positions'))
    V['h200.gca.heads'] = g.cfg('gca_heads')
    V['h200.gca.activation'] = g.cfg('gca_activation')
    V['h200.gca.layernorm'] = 'LayerNorm' if g.cfg('gca_layernorm') else 'no LayerNorm'
    for name, r in runs.items():
        k = f'h200.{name}'
        V.update({f'{k}.params': r.n_params, f'{k}.epochs': r.epochs_run, f'{k}.best_epoch': r.best_epoch,
                  f'{k}.last_epoch': r.epochs_run - 1, f'{k}.wall_min': r.wall_min,
                  f'{k}.best_valid': float(r.res['best_valid_score'])})
        for d in ('A', 'B', 'all'):
            V[f'{k}.{d}.users'] = int(r.metric(d, 'n_users'))
            for m, mk in METRIC_KEYS.items():
                V[f'{k}.{d}.{mk}'] = r.metric(d, m)
    for d in ('A', 'B'):
        V[f'h200.ABXI.pct_official.{d}'] = 100 * V[f'h200.ABXI.{d}.ndcg10'] / REFERENCE[f'abxi.{d}.ndcg10']
    # validation at equal epochs: the last epoch every run validated
    traces = {n: r.trace_valid() for n, r in runs.items()}
    cmp_epoch = min(max(t) for t in traces.values())
    V['h200.cmp_epoch'] = cmp_epoch
    for n, t in traces.items():
        if cmp_epoch not in t:
            raise StoreError(f'food_kitchen_h200/{n}: no validation at epoch {cmp_epoch}')
        V[f'h200.{n}.valid_at_cmp'] = t[cmp_epoch]
    V['h200.ABXI.still_rising'] = 'rose' if a.best_epoch > cmp_epoch and traces['ABXI'][a.best_epoch] > \
        traces['ABXI'][cmp_epoch] else 'did not rise'
    V['h200.gca_vs_abxi_at_cmp'] = word(traces['ABXI_GCA'][cmp_epoch], traces['ABXI'][cmp_epoch], 'above', 'below')
    V['h200.gca_vs_pm_at_cmp'] = word(traces['ABXI_GCA'][cmp_epoch], traces['ABXI_pm'][cmp_epoch], 'above', 'below')
    V['h200.gca_epochs_word'] = word(g.epochs_run, a.epochs_run, 'more', 'fewer', 'as many')
    gd = [g.metric(d, 'ndcg@10') - a.metric(d, 'ndcg@10') for d in 'AB']
    V['h200.gca_test_word'] = 'lower in both domains' if max(gd) < 0 else (
        'higher in both domains' if min(gd) > 0 else 'higher in one domain and lower in the other')
    beats = all(g.metric(d, 'ndcg@10') > pmr.metric(d, 'ndcg@10') for d in 'AB') and \
        traces['ABXI_GCA'][cmp_epoch] > traces['ABXI_pm'][cmp_epoch]
    V['h200.claim'] = 'seen in this one seed (not a test)' if beats else '**not reproduced** here'
    # orthogonality of ABXI_GCA
    for x in 'ab':
        V[f'h200.gca.user_mean.{x}'] = g.ortho(x, 'user_mean')
        V[f'h200.gca.cross.{x}'] = float(g._get(g.res, 'test', 'all', f'cross_cos_{x}@gca0'))
    V['h200.gca.user_mean'] = Span([V['h200.gca.user_mean.a'], V['h200.gca.user_mean.b']])
    V['h200.gca.cross'] = (V['h200.gca.cross.a'] + V['h200.gca.cross.b']) / 2
    tr = {e: v for e, v in g.trace_valid('ortho_cos_a@gca0').items() if v is not None}
    lo, hi, last = min(tr, key=tr.get), max(tr, key=tr.get), max(tr)
    V.update({'h200.gca.trace_a.first_epoch': min(tr), 'h200.gca.trace_a.first': tr[min(tr)],
              'h200.gca.trace_a.min_epoch': lo, 'h200.gca.trace_a.min': tr[lo],
              'h200.gca.trace_a.max_epoch': hi, 'h200.gca.trace_a.max': tr[hi],
              'h200.gca.trace_a.last_epoch': last, 'h200.gca.trace_a.last': tr[last]})
    # shared vs per-position negatives
    ta, tp = traces['ABXI'], traces['ABXI_pernegs']
    common = sorted(set(ta) & set(tp))
    V['h200.pernegs.valid_maxdiff'] = max(abs(ta[e] - tp[e]) for e in common)
    V['h200.pernegs.n_epochs'] = len(common)
    td = [a.metric(d, 'ndcg@10') - p.metric(d, 'ndcg@10') for d in 'AB']
    V['h200.pernegs.test_word'] = 'higher in both domains' if min(td) > 0 else (
        'lower in both domains' if max(td) < 0 else 'higher in one domain and lower in the other')
    V['h200.pernegs.verdict'] = 'We see no accuracy cost from sharing in this budget' if min(td) > -0.005 and \
        V['h200.pernegs.valid_maxdiff'] < 0.01 else 'Sharing costs accuracy here'
    V['speed.abxi_cpu_epoch_s'] = next(r['epoch_s_est'] for r in speed['runs'] if r['model'] == 'ABXI')
    _h200_tables(V, runs)


def _speed_values(V, speed, gca):
    """The README's speed block: one run of ``benchmarks/bench_abxi.py`` (``speed``) and one of
    ``benchmarks/bench_gca_overhead.py`` (``gca``), each with the machine it ran on."""
    from recbole_ortho.analysis.provenance import commit_label
    for alias, f in (('speed', speed), ('gca', gca)):
        V[f'{alias}.cpu'] = f['cpu']
        V[f'{alias}.threads'] = f['threads']
        V[f'{alias}.bf16_hw'] = 'yes' if f['cpu_bf16_hardware'] else 'no'
        V[f'{alias}.gflops32'] = f['matmul_gflops_fp32']
        V[f'{alias}.gflops16'] = f['matmul_gflops_bf16']
        V[f'{alias}.commit'] = commit_label(f.get('provenance'))
    for r in speed['runs']:
        k = f"speed.{r['model']}"
        V[f'{k}.step_s'], V[f'{k}.epoch_s'] = r['step_s_median'], r['epoch_s_est']
        V[f'{k}.eval_s'], V[f'{k}.rss_mb'] = r['eval_s'], r['peak_rss_mb']
    o = speed['official']
    V['speed.official.epoch_s'], V['speed.official.eval_s'] = o['epoch_s_est'], o['eval_s']
    V['speed.official.rss_mb'] = o['peak_rss_mb']
    def passes(r):                 # earlier files timed one pass and have no eval_s_all
        n = len(r.get('eval_s_all') or [r['eval_s']])
        return f'median of {n} passes' if n > 1 else 'one pass'
    V['speed.official.eval_note'] = (f"extrapolated from {o['eval_batches_timed']} of {o['eval_batches_per_pass']} batches"
                                     if o.get('eval_extrapolated') else f'measured, whole pass, {passes(o)}')
    V['speed.eval_passes'] = passes(speed['runs'][0])
    V['speed.epoch_x'], V['speed.eval_x'] = speed['speedup_epoch_vs_official'], speed['speedup_eval_vs_official']
    V['speed.eval_goal'] = 'met' if speed['speedup_eval_vs_official'] >= 10 else 'not met'
    rss = next(r['peak_rss_mb'] for r in speed['runs'] if r['model'] == 'ABXI_GCA')
    V['speed.rss_goal'] = 'met' if rss <= 1500 else 'not met'
    rows, why = [], []
    for m, x in gca['models'].items():
        ok = 'met' if x['pair_ratio_median'] <= gca['goal_ratio'] else 'not met'
        rows.append(f"| {m}_GCA / {m} | {x['base_s_median']:.3f} s | {x['gca_s_median']:.3f} s | "
                    f"{x['pair_ratio_median']:.3f} | {x['flop_ratio']:.3f} | {ok} |")
        if ok == 'met':
            continue
        if x['flop_ratio'] > gca['goal_ratio']:       # the model's own arithmetic is above the goal
            why.append(f"{m}_GCA's FLOP ratio ({x['flop_ratio']:.3f}) is itself above the goal: the layers GCA "
                       f"adds are that share of {m}'s arithmetic, so meeting the goal would take GCA's layers "
                       f"running faster per FLOP than {m}'s own; the time ratio is "
                       f"{x['pair_ratio_median'] / x['flop_ratio']:.2f}× the FLOP ratio.")
        else:
            why.append(f"{m}_GCA's FLOP ratio ({x['flop_ratio']:.3f}) is within the goal: its GCA layers run "
                       f"less efficiently than {m}'s own products (time ratio {x['pair_ratio_median']:.3f}).")
    V['gca.table'] = '\n'.join(rows)
    V['gca.why'] = ' '.join(why) or 'Every ratio meets the goal.'
    V['gca.goal'] = gca['goal_ratio']
    V['gca.pairs'] = Span(x['pairs'] for x in gca['models'].values())


def _device_profile_values(V, dev, goal=2.5):
    """The bf16 speed goal against an fp32 profile (``benchmarks/bench_device.py``): per model, the
    matrix products' share of a step and the Amdahl bound 1 / (1 - share) of a step whose products
    alone get faster; whether that bound reaches ``goal`` for ABXI and ABXI_GCA."""
    from recbole_ortho.analysis.provenance import commit_label
    V['cpudev.cpu'], V['cpudev.commit'] = dev['cpu'], commit_label(dev.get('provenance'))
    runs = {r['model']: r for r in dev['runs'] if r.get('precision') == 'fp32' and r.get('profile')}
    missing = [m for m in ('ABXI', 'ABXI_GCA') if m not in runs]
    if missing:
        raise ValueError(f"the device profile file has no fp32 profile of {', '.join(missing)}")
    for m in ('ABXI', 'ABXI_GCA'):
        p = runs[m]['profile']
        V[f'cpudev.{m}.share'], V[f'cpudev.{m}.bound'] = 100 * p['matmul_share'], p['products_only_bound']
    below = all(runs[m]['profile']['products_only_bound'] < goal for m in ('ABXI', 'ABXI_GCA'))
    V['cpudev.verdict'] = ('so faster products alone cannot meet the goal: the other operators must gain too'
                           if below else 'so faster products alone could meet the goal')
    V['cpudev.goal'] = goal


def _precision_values(V, rows):
    """``precision.verdicts``: the bf16 accuracy check's decision per model (the rule of
    :mod:`recbole_ortho.analysis.precision`), e.g. ``accepted for ABXI and ABXI_GCA; not accepted
    for LLM4CDSR``; ``none yet`` before a run."""
    from recbole_ortho.analysis.precision import ACCEPTED, PENDING, REJECTED, summarise
    models, _ = summarise(rows) if rows else ([], None)
    parts = []
    for decision in (ACCEPTED, REJECTED, PENDING):
        names = [m['model'] for m in models if m['decision'] == decision]
        if names:
            parts.append(f'{decision} for {joined(names)}')
    V['precision.verdicts'] = '; '.join(parts) or 'none yet'


def _h200_tables(V, runs):
    c0 = next(iter(runs.values())).config
    V['h200.setting'] = '\n'.join([
        f"- Protocol: leave-one-out on the mixed sequence; `eval_protocol={c0.get('eval_protocol')}`, "
        f"{c0.get('eval_neg_num')} negatives from the target's domain (excluding the user's items), "
        f"`eval_seed={c0.get('eval_seed')}`; rank = 1 + #candidates scored strictly higher.",
        f"- Model selection: `{c0.get('valid_metric')}` summed over A and B (`valid_domain={c0.get('valid_domain')}`); "
        'test metrics of the best validation epoch.',
        f"- Device: `{c0.get('device')}`; MAX_ITEM_LIST_LENGTH {c0.get('MAX_ITEM_LIST_LENGTH')}."])

    def label(r):
        name = r.model
        if r.pm:
            name += f" (param-matched to {r.pm['target_model']})"
        if r.model == 'ABXI' and r.config.get('shared_negatives') is False:
            name += ' (per-position negatives)'
        return name

    out = ['| run | model | parameters | seed | epochs run | best epoch | stopped by | wall time |',
           '|---|---|---:|---:|---:|---:|---|---:|']
    for n, r in runs.items():
        stop = 'time budget' if r.res.get('stopped_by_time_budget') else (
            'early stopping' if r.epochs_run < r.config.get('epochs', 0) else 'max epochs')
        out.append(f'| {n} | {label(r)} | {r.n_params:,} | {r.seed} | {r.epochs_run} | {r.best_epoch} | {stop} | '
                   f'{r.wall_min:.1f} min |')
    V['h200.table.runs'] = '\n'.join(out)
    ms = ['hit@5', 'hit@10', 'ndcg@10', 'mrr', 'ndcg@1', 'auc']
    out = ['| run | domain | users | ' + ' | '.join(m.upper() if m == 'mrr' else m for m in ms) + ' |',
           '|---|---|---:|' + '---:|' * len(ms)]
    for n, r in runs.items():
        for d in ('A', 'B', 'all'):
            out.append(f"| {n} | {DOMAIN_NAMES[d]} | {int(r.metric(d, 'n_users'))} | " +
                       ' | '.join(fmt4(r.res['test'][d].get(m)) for m in ms) + ' |')
    for d in ('A', 'B'):
        out.append(f'| official ABXI README (5 seeds) | {DOMAIN_NAMES[d]} | | ' +
                   ' | '.join(fmt4(REFERENCE.get(f'abxi.{d}.{METRIC_KEYS[m]}')) for m in ms) + ' |')
    V['h200.table.test'] = '\n'.join(out)
    stats = sorted({k for r in runs.values() for k in r.res['test']['all'] if '@gca' in k})
    out = ['| run | domain | ' + ' | '.join(stats) + ' |', '|---|---|' + '---:|' * len(stats)]
    lines = []
    for n, r in runs.items():
        if not any(k in r.res['test']['all'] for k in stats):
            continue
        for d in ('A', 'B', 'all'):
            out.append(f'| {n} | {DOMAIN_NAMES[d]} | ' + ' | '.join(fmt4(r.res['test'][d].get(k)) for k in stats)
                       + ' |')
        tr = [(e['epoch'], e['valid']['all']) for e in r.res.get('trace', []) if 'valid' in e]
        for k in stats:
            if tr and k in tr[0][1]:
                pts = ', '.join(f'{ep}: {v.get(k):.3f}' for ep, v in tr[:: max(1, len(tr) // 12)])
                lines.append(f'- {n} `{k}` by epoch — {pts}')
    V['h200.table.ortho'] = '\n'.join(out)
    V['h200.trace_lines'] = '\n'.join(lines)
    traces = [r.trace_valid() for r in runs.values()]
    last_common = min(max(t) for t in traces)
    out = ['| epoch | ' + ' | '.join(runs) + ' |', '|---:|' + '---:|' * len(runs)]
    for ep in sorted({e for t in traces for e in t if e <= last_common})[:: 10] + [last_common]:
        out.append(f'| {ep} | ' + ' | '.join(fmt4(t.get(ep)) for t in traces) + ' |')
    V['h200.table.equal_epochs'] = '\n'.join(out)


def _single_seed_values(V, alias, runs):
    """Base, GCA and parameter-matched base, one run each (an LLM4CDSR or CDSRNP sweep)."""
    g = {k: _one(runs, k, alias) for k in ('base', 'gca', 'pm')}
    for k, r in g.items():
        p = f'{alias}.{k}'
        V.update({f'{p}.params': r.n_params, f'{p}.epochs': r.epochs_run, f'{p}.best_epoch': r.best_epoch,
                  f'{p}.wall_min': r.wall_min, f'{p}.seed': r.seed})
        for d in ('A', 'B'):
            V[f'{p}.{d}.users'] = int(r.metric(d, 'n_users'))
            for m, mk in METRIC_KEYS.items():
                V[f'{p}.{d}.{mk}'] = r.metric(d, m)
            for grp in ('overlap', 'non_overlap'):
                sub = r.res['test'].get(f'{d}/{grp}') or {}
                if sub.get('n_users'):
                    V[f'{p}.{d}.{grp}.users'] = int(sub['n_users'])
                    V[f'{p}.{d}.{grp}.ndcg10'] = r.metric(f'{d}/{grp}', 'ndcg@10')
    from recbole_ortho.analysis.provenance import commit_label
    V[f'{alias}.commits'] = joined(sorted({f'`{commit_label(r.res.get("provenance"))}`' for r in runs}))
    rules = {r.config.get('eval_ties') or 'optimistic' for r in runs}   # recorded before eval_ties: optimistic
    V[f'{alias}.tie_rule'] = joined(sorted(rules))
    for k, r in g.items():
        for d in ('A', 'B'):
            n = r.res['test'][d].get('n_tied_targets')
            V[f'{alias}.{k}.{d}.tied'] = 'not counted' if n is None else int(n)
    gca = g['gca']
    for x in 'ab':
        for stat in ('median_abs', 'paper', 'user_mean'):
            V[f'{alias}.gca.{stat}.{x}'] = gca.ortho(x, stat)
        for stat in ('n_steps', 'no_key_steps'):
            v = gca.res['test']['all'].get(f'ortho_cos_{x}@gca0/{stat}')
            if v is not None:
                V[f'{alias}.gca.{stat}.{x}'] = int(v)
    for stat in ('median_abs', 'paper', 'user_mean'):
        V[f'{alias}.gca.{stat}'] = Span([V[f'{alias}.gca.{stat}.a'], V[f'{alias}.gca.{stat}.b']])
    pm = g['pm']
    (key, to), = pm.pm['updates'].items()
    V.update({f'{alias}.pm.key': key, f'{alias}.pm.from': g['base'].cfg(key), f'{alias}.pm.to': to,
              f'{alias}.pm.target_params': int(pm.pm['target_n_params']),
              f'{alias}.pm.rel_diff_pct': 100 * float(pm.pm['rel_diff'])})
    V[f'{alias}.best_epoch'] = Span(r.best_epoch for r in runs)
    V[f'{alias}.epochs'] = Span(r.epochs_run for r in runs)
    V[f'{alias}.last_epoch'] = max(r.epochs_run for r in runs) - 1
    V[f'{alias}.wall_min'] = Span(r.wall_min for r in runs)
    V[f'{alias}.fastest_epoch_s'] = min(e['train_time_s'] for r in runs for e in r.res['trace'])
    V[f'{alias}.max_epochs'] = g['base'].cfg('epochs')
    V[f'{alias}.patience'] = g['base'].cfg('stopping_step')
    V[f'{alias}.neg_num'] = g['base'].cfg('eval_neg_num')
    V[f'{alias}.seed'] = joined(sorted({r.seed for r in runs}))
    early = [r for r in runs if r.epochs_run < r.cfg('epochs')]
    V[f'{alias}.early_stopped'] = len(early)
    near_end = all(r.best_epoch >= r.epochs_run - 3 for r in runs)
    V[f'{alias}.convergence'] = (
        'every run trained the full schedule and had its best validation epoch among its last three, so these '
        'are **unconverged, single-seed** numbers' if near_end and not early else
        'early stopping ended ' + f'{len(early)} of {len(runs)} runs' + (' (the others trained the full schedule)'
                                                                          if len(early) < len(runs) else '') +
        ', so these are single-seed numbers of a short schedule')
    diffs = {}
    for d in ('A', 'B'):
        for against in ('base', 'pm'):
            diffs[(against, d)] = V[f'{alias}.gca.{d}.ndcg10'] - V[f'{alias}.{against}.{d}.ndcg10']
            V[f'{alias}.diff.gca_{against}.{d}'] = diffs[(against, d)]
        V[f'{alias}.gca_pos.{d}'] = position(V[f'{alias}.gca.{d}.ndcg10'],
                                              [V[f'{alias}.base.{d}.ndcg10'], V[f'{alias}.pm.{d}.ndcg10']])
    V[f'{alias}.verdict'] = ('ahead of both in both domains' if min(diffs.values()) > 0 else
                             'behind both in both domains' if max(diffs.values()) < 0 else 'mixed')
    V[f'{alias}.direction'] = ('in the direction the paper reports' if min(diffs.values()) > 0 else
                               'against the direction the paper reports' if max(diffs.values()) < 0 else
                               'neither in nor against the direction the paper reports')
    vals = [V[f'{alias}.{k}.{d}.ndcg10'] for k in ('base', 'gca', 'pm') for d in 'AB']
    V[f'{alias}.max_pair_diff'] = max(abs(V[f'{alias}.{x}.{d}.ndcg10'] - V[f'{alias}.{y}.{d}.ndcg10'])
                                      for d in 'AB' for x in ('base', 'gca', 'pm') for y in ('base', 'gca', 'pm'))
    V[f'{alias}.ndcg10'] = Span(vals)
    # the base's validation after its best epoch
    b = g['base']
    t = b.trace_valid()
    V[f'{alias}.base.after_best'] = ('then fell' if max(t) > b.best_epoch and t[max(t)] < t[b.best_epoch]
                                     else 'was still at its best at the last epoch')
    V[f'{alias}.base.convergence'] = ('these runs are roughly converged for this schedule'
                                      if b.best_epoch < max(t) - 1 else 'these runs are not converged')
    if any('kl' in e for r in runs for e in r.res['trace']):
        V[f'{alias}.kl.first'] = max(e['kl'] for r in runs for e in r.res['trace'] if e['epoch'] == 0)
        V[f'{alias}.kl.after'] = max(abs(e['kl']) for r in runs for e in r.res['trace'] if e['epoch'] > 0)
    data = pm.res.get('data') or {}
    if data.get('overlap_ratio') is not None:
        for k in ('kept_both', 'to_A_only', 'to_B_only', 'removed_inters_A', 'removed_inters_B'):
            V[f'{alias}.split.{k}'] = int(data[k])
        V[f'{alias}.split.ratio'] = float(data['overlap_ratio'])
        V[f'{alias}.split.ratio_pct'] = 100 * float(data['overlap_ratio'])
        V[f'{alias}.split.seed'] = int(data['seed'])
    return g


def _single_seed_table(sections, order=('base', 'pm', 'gca')):
    """One row per (section, run): ``sections`` = [(label, {kind: Run})]."""
    out = ['| {first} | model | params | seed | epochs | best epoch | wall (min) | NDCG@10 A | NDCG@10 B | HR@10 A | '
           'HR@10 B | NDCG@1 A | NDCG@1 B | AUC A | AUC B | median \\|cos\\| A→B / B→A | '
           'paper \\|cos\\| A→B / B→A |',
           '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for label, g in sections:
        for kind in order:
            r = g[kind]
            name = r.model + (f" (param-matched to {r.pm['target_model']})" if r.pm else '')
            cos = [f'{r.ortho("a", s):.3f} / {r.ortho("b", s):.3f}' if kind == 'gca' else '–'
                   for s in ('median_abs', 'paper')]
            out.append(f'| {label} | {name} | {r.n_params:,} | {r.seed} | {r.epochs_run} | {r.best_epoch} | '
                       f'{r.wall_min:.1f} | ' +
                       ' | '.join(f'{r.metric(d, m):.4f}' for m in ('ndcg@10', 'hit@10', 'ndcg@1', 'auc') for d in 'AB')
                       + f' | {cos[0]} | {cos[1]} |')
    return out


def _llm_values(V, llm, llm999, abxi_rows, root):
    g100 = _single_seed_values(V, 'llm', llm)
    g999 = _single_seed_values(V, 'llm999', llm999)
    b = g100['base']
    V.update({'llm.cfg.hidden': b.cfg('hidden_size'), 'llm.cfg.layers': b.cfg('n_layers'),
              'llm.cfg.heads': b.cfg('n_heads'), 'llm.cfg.dropout': b.cfg('dropout_prob'),
              'llm.cfg.learner': {'adam': 'Adam', 'adamw': 'AdamW'}.get(b.cfg('learner'), b.cfg('learner')),
              'llm.cfg.lr': short(b.cfg('learning_rate')), 'llm.cfg.batch': b.cfg('train_batch_size'),
              'llm.cfg.alpha': b.cfg('reg_weight'), 'llm.cfg.beta': b.cfg('user_weight'),
              'llm.cfg.valid_metric': b.cfg('valid_metric').upper().replace('NDCG', 'NDCG'),
              'llm.cfg.text_domain_dim': b.cfg('text_domain_dim'), 'llm.cfg.text_encoder': b.cfg('text_encoder')})
    gc = g100['gca']
    V.update({'llm.gca.positions': str(gc.cfg('gca_positions')), 'llm.gca.heads': gc.cfg('gca_heads'),
              'llm.gca.activation': gc.cfg('gca_activation'), 'llm.gca.gate': gc.cfg('gca_gate'),
              'llm.gca.layernorm': 'LayerNorm' if gc.cfg('gca_layernorm') else 'no LayerNorm',
              'llm.gca.dropout': gc.cfg('gca_dropout')})
    with open(os.path.join(root, 'properties', 'model', 'LLM4CDSR.yaml')) as f:
        official = yaml.safe_load(f)
    V['llm.official.epochs'], V['llm.official.patience'] = official['epochs'], official['stopping_step']
    V['llm.both.best_epoch'] = Span([r.best_epoch for r in llm + llm999])
    V['llm.both.max_pair_diff'] = max(V['llm.max_pair_diff'], V['llm999.max_pair_diff'])
    same = all(g100[k].train_losses() == g999[k].train_losses() for k in ('base', 'gca', 'pm'))
    V['llm.same_training'] = ('the same training run (identical training losses, epoch by epoch) evaluated two ways'
                              if same else 'a separate training run (the training losses differ)')
    be = {k: (g100[k].best_epoch, g999[k].best_epoch) for k in ('base', 'gca', 'pm')}
    names = {'base': 'LLM4CDSR', 'gca': 'LLM4CDSR_GCA', 'pm': 'the parameter-matched LLM4CDSR'}
    V['llm.best_epoch_note'] = ('the protocol changed no best epoch' if all(x == y for x, y in be.values()) else
                                'the validation protocol changed the best epoch of ' +
                                joined([f'{names[k]} ({x} vs {y})' for k, (x, y) in be.items() if x != y]))
    V['llm.both.median_abs'] = Span([V[f'{a}.gca.median_abs.{x}'] for a in ('llm', 'llm999') for x in 'ab'])
    V['llm.both.paper'] = Span([V[f'{a}.gca.paper.{x}'] for a in ('llm', 'llm999') for x in 'ab'])
    V['llm.both.user_mean'] = Span([V[f'{a}.gca.user_mean.{x}'] for a in ('llm', 'llm999') for x in 'ab'])
    lo, hi = REFERENCE['paper.median_cos'].lo, REFERENCE['paper.median_cos'].hi
    med = V['llm.both.median_abs']
    V['llm.vs_paper'] = 'lower than' if med.hi < lo else ('higher than' if med.lo > hi else 'overlapping')
    um, hm = V['llm.both.user_mean'], V['h200.gca.user_mean']
    V['llm.vs_h200'] = 'lower than' if um.hi < hm.lo else ('higher than' if um.lo > hm.hi else 'overlapping')
    std_hi = V['abxi.seed_std'].hi
    V['llm.diff_vs_seed'] = 'within' if V['llm.both.max_pair_diff'] <= 2 * std_hi else 'beyond'
    # LLM4CDSR (ABXI protocol) against ABXI: the H200 runs and the 12-epoch CPU sweep
    for d in 'AB':
        x, ref = V[f'llm999.base.{d}.ndcg10'], V[f'abxi.base.{d}.ndcg10.mean']
        V[f'llm999.vs_abxi.{d}'] = 'far below' if x < 0.6 * ref else word(x, ref, 'above', 'below', 'level with')
        V[f'llm999.auc_vs_h200.{d}'] = word(V[f'llm999.base.{d}.auc'], V[f'h200.ABXI.{d}.auc'])
    V['llm999.vs_abxi'] = V['llm999.vs_abxi.A'] if V['llm999.vs_abxi.A'] == V['llm999.vs_abxi.B'] else \
        f"{V['llm999.vs_abxi.A']} in Food and {V['llm999.vs_abxi.B']} in Kitchen"
    V['llm.table'] = '\n'.join(_single_seed_table([
        (f"LLM4CDSR ({V['llm.neg_num']} neg.)", g100), (f"ABXI ({V['llm999.neg_num']} neg.)", g999)])
    ).replace('{first}', 'protocol')


def _cdsrnp_values(V, all_runs, runs25):
    g = _single_seed_values(V, 'cdsrnp', all_runs)
    g25 = _single_seed_values(V, 'cdsrnp25', runs25)
    b = g['base']
    V.update({'cdsrnp.cfg.d': b.cfg('hidden_size'), 'cdsrnp.cfg.layers': b.cfg('n_layers'),
              'cdsrnp.cfg.heads': b.cfg('n_heads'), 'cdsrnp.cfg.dropout': b.cfg('hidden_dropout_prob'),
              'cdsrnp.cfg.learner': {'adam': 'Adam', 'adamw': 'AdamW'}.get(b.cfg('learner'), b.cfg('learner')),
              'cdsrnp.cfg.lr': short(b.cfg('learning_rate')), 'cdsrnp.cfg.wd': short(b.cfg('weight_decay')),
              'cdsrnp.cfg.clip': b.cfg('clip_grad_norm')['max_norm'], 'cdsrnp.cfg.batch': b.cfg('train_batch_size'),
              'cdsrnp.cfg.support': b.cfg('support_size'), 'cdsrnp.cfg.kl_warmup': b.cfg('kl_warmup_epochs'),
              'cdsrnp.cfg.ce_negatives': b.cfg('ce_negatives')})
    gc = g['gca']
    V.update({'cdsrnp.gca.positions': str(gc.cfg('gca_positions')), 'cdsrnp.gca.heads': gc.cfg('gca_heads'),
              'cdsrnp.gca.activation': gc.cfg('gca_activation'), 'cdsrnp.gca.gate': gc.cfg('gca_gate'),
              'cdsrnp.gca.layernorm': 'LayerNorm' if gc.cfg('gca_layernorm') else 'no LayerNorm',
              'cdsrnp.gca.dropout': gc.cfg('gca_dropout')})
    V['cdsrnp.both.median_abs'] = Span([V[f'{a}.gca.median_abs.{x}'] for a in ('cdsrnp', 'cdsrnp25') for x in 'ab'])
    V['cdsrnp.both.wall_min'] = Span([r.wall_min for r in all_runs + runs25])
    lo = REFERENCE['paper.median_cos'].lo
    med = V['cdsrnp.both.median_abs']
    V['cdsrnp.vs_paper'] = ('at the low end of' if med.lo < lo <= med.hi else 'below' if med.hi < lo else 'within')
    V['cdsrnp.kl.first'] = max(V['cdsrnp.kl.first'], V['cdsrnp25.kl.first'])
    V['cdsrnp.kl.after'] = max(V['cdsrnp.kl.after'], V['cdsrnp25.kl.after'])
    collapsed = V['cdsrnp.kl.after'] < 1e-6
    V['cdsrnp.kl.heading'] = 'The latent path collapses.' if collapsed else 'The latent path does not collapse.'
    V['cdsrnp.kl.collapse'] = ('falls to ~0 after the first epoch in every run: the posterior adds nothing to the prior'
                               if collapsed else 'stays above 0 after the first epoch in some run')
    for d in 'AB':
        V[f'cdsrnp.base.vs_abxi.{d}'] = word(V[f'cdsrnp.base.{d}.ndcg10'], V[f'abxi.base.{d}.ndcg10.mean'])
    # non-overlapped against overlapped users (25 %), per model
    words = defaultdict(set)
    for k in ('base', 'gca', 'pm'):
        for d in 'AB':
            diff = V[f'cdsrnp25.{k}.{d}.non_overlap.ndcg10'] - V[f'cdsrnp25.{k}.{d}.overlap.ndcg10']
            words[d].add('about as well as' if abs(diff) < 0.01 else word(diff, 0, 'better than', 'worse than'))
    for d in 'AB':
        V[f'cdsrnp25.nonoverlap_word.{d}'] = next(iter(words[d])) if len(words[d]) == 1 else \
            'differently, by model, from'
    V['cdsrnp25.nonoverlap_alike'] = 'for all three models alike' if all(len(w) == 1 for w in words.values()) \
        else 'not alike for the three models'
    V['cdsrnp.table'] = '\n'.join(_single_seed_table(
        [('all overlapped', g), (f"{V['cdsrnp25.split.ratio_pct']:.0f} % overlapped", g25)],
        order=('base', 'gca', 'pm'))).replace('{first}', 'data')
    out = ['| model | A overlapped | A non-overlapped | B overlapped | B non-overlapped |', '|---|---:|---:|---:|---:|']
    for k in ('base', 'pm', 'gca'):
        r = g25[k]
        name = r.model + (f" (param-matched to {r.pm['target_model']})" if r.pm else '')
        out.append(f'| {name} | ' + ' | '.join(f"{V[f'cdsrnp25.{k}.{d}.{grp}.ndcg10']:.4f}" for d in 'AB'
                                                for grp in ('overlap', 'non_overlap')) + ' |')
    V['cdsrnp25.groups_table'] = '\n'.join(out)


#: the paper's reported relative gain of base + GCA over the parameter-matched base (its headline, %)
PAPER_GAIN_PCT = 14.0


def _abxi_label(r):
    """``base``, ``param-matched (inner 980)`` or ``early, sigmoid`` / ``stacked, tanh``."""
    if r.kind == 'pm':
        (key, to), = r.pm['updates'].items()
        return f"param-matched ({key.replace('_size', '')} {to:,})"
    if r.kind == 'base':
        return 'base'
    pos = r.cfg('gca_positions')
    return f"{'early' if list(pos) == [0] else 'stacked' if len(pos) > 1 else f'at {pos}'}, {r.cfg('gca_activation')}"


def _abxi_values(V, runs, rows, summary, root, sweep_dir, allow_mixed_commits=False):
    """The multi-seed ABXI family sweep."""
    from recbole_ortho.analysis.report import comparisons, correlations
    groups = defaultdict(list)
    for r in runs:
        groups[(r.model, _abxi_label(r))].append(r)
    V['abxi.n_runs'] = len(runs)
    V['abxi.seeds'] = joined(sorted({r.seed for r in runs}))
    V['abxi.n_seeds'] = len({r.seed for r in runs})
    V['abxi.n_seeds_word'] = ordinal_count(V['abxi.n_seeds'])
    V['abxi.n_gca_variants'] = len({lab for (m, lab) in groups if m.endswith('_GCA')})
    V['abxi.n_pm'] = len({lab for (m, lab) in groups if lab.startswith('param-matched')})
    V['abxi.n_gca_runs'] = sum(len(v) for (m, _), v in groups.items() if m.endswith('_GCA'))
    states = summary.get('states', {})
    V['abxi.finished'] = 'all finished' if states.get('finished') == len(runs) and not states.get('failed') and \
        not states.get('pending') else f"{states.get('finished')} of {summary.get('runs')} finished"
    base = [r for r in runs if r.kind == 'base']
    V['abxi.base.inner'] = base[0].cfg('inner_size')
    pms = sorted({(r.pm['updates']['inner_size'], r.n_params, r.pm['target_n_params'], r.pm['rel_diff'])
                  for r in runs if r.kind == 'pm'})
    V['abxi.pm.inner'] = joined([p[0] for p in pms], ',')
    V['abxi.pm.params'] = joined([p[1] for p in pms], ',')
    V['abxi.pm.match'] = 'equal to' if all(p[1] == p[2] for p in pms) else \
        f"within {100 * max(abs(p[3]) for p in pms):.2f} % of"
    V['abxi.epochs'] = Span(r.epochs_run for r in runs)
    V['abxi.max_epochs'] = base[0].cfg('epochs')
    V['abxi.patience'] = base[0].cfg('stopping_step')
    V['abxi.early_stopping'] = 'never fired' if all(r.epochs_run == r.cfg('epochs') for r in runs) else \
        f"ended {sum(r.epochs_run < r.cfg('epochs') for r in runs)} of {len(runs)} runs"
    V['abxi.best_epoch'] = Span(r.best_epoch for r in runs)
    V['abxi.last_epoch'] = max(r.epochs_run for r in runs) - 1
    V['abxi.converged'] = 'not converged' if all(r.best_epoch >= r.epochs_run - 3 for r in runs) else \
        'partly converged (some best epochs well before the last)'
    V['abxi.cfg.lr'] = short(base[0].cfg('learning_rate'))
    V['abxi.neg_num'] = base[0].cfg('eval_neg_num')
    gca = next(r for r in runs if r.kind == 'gca')
    V['abxi.gca.heads'], V['abxi.gca.gate'] = gca.cfg('gca_heads'), gca.cfg('gca_gate')
    V['abxi.gca.layernorm'] = 'LayerNorm' if gca.cfg('gca_layernorm') else 'no LayerNorm'
    with open(os.path.join(root, 'properties', 'model', 'ABXI.yaml')) as f:
        official = yaml.safe_load(f)
    V['abxi.official.lr'], V['abxi.official.warmup'] = short(official['learning_rate']), official['warmup_epochs']
    V['abxi.official.epochs'] = official['epochs']
    V['abxi.cfg.warmup'] = base[0].cfg('warmup_epochs')
    stds = []
    table = ['| model | variant | params | NDCG@10 A | NDCG@10 B | median \\|cos\\| A→B / B→A (first GCA) |',
             '|---|---|---:|---:|---:|---:|']
    kinds = {'base': 0, 'pm': 1, 'gca': 2}
    for (model, lab), rs in sorted(groups.items(), key=lambda kv: (kinds[kv[1][0].kind], kv[1][0].n_params, kv[0])):
        k = f"abxi.{lab.replace(', ', '_').replace(' ', '_').replace('(', '').replace(')', '').replace(',', '')}"
        V[f'{k}.params'] = rs[0].n_params
        cells = []
        for d in 'AB':
            vals = np.array([r.metric(d, 'ndcg@10') for r in rs])
            V[f'{k}.{d}.ndcg10.mean'] = float(vals.mean())
            sd = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
            V[f'{k}.{d}.ndcg10.std'] = sd
            if len(vals) > 1:
                stds.append(sd)
            cells.append(f'{vals.mean():.4f} ± {sd:.4f}' if len(vals) > 1 else f'{vals.mean():.4f}')
        if rs[0].kind == 'gca':
            med = {}
            for stage in sorted({int(key.split('@gca')[1].split('/')[0]) for key in rs[0].res['test']['all']
                                 if key.startswith('ortho_cos_a@gca')}):
                for x in 'ab':
                    for stat in ('median_abs', 'paper'):
                        v = float(np.mean([r.ortho(x, stat, stage) for r in rs]))
                        V[f'{k}.{stat}.{x}.gca{stage}'] = v
                        med[(stage, x, stat)] = v
            cos = f"{med[(0, 'a', 'median_abs')]:.3f} / {med[(0, 'b', 'median_abs')]:.3f}"
            if (1, 'a', 'median_abs') in med:
                cos += f" (second: {med[(1, 'a', 'median_abs')]:.3f} / {med[(1, 'b', 'median_abs')]:.3f})"
        else:
            cos = '–'
        table.append(f'| {model} | {lab} | {rs[0].n_params:,} | {cells[0]} | {cells[1]} | {cos} |')
    V['abxi.table'] = '\n'.join(table)
    for d in 'AB':
        V[f'abxi.gca_variants.{d}'] = Span(V[k] for k in list(V) if k.endswith(f'.{d}.ndcg10.mean') and
                                           any(f'_{act}.' in k for act in ('sigmoid', 'tanh')))
        V[f'abxi.pm_variants.{d}'] = Span(V[k] for k in list(V) if k.endswith(f'.{d}.ndcg10.mean') and
                                          k.startswith('abxi.param-matched'))
    V['abxi.seed_std'] = Span(stds)
    V['abxi.seed_std.hi'] = V['abxi.seed_std'].hi
    for act in ('sigmoid', 'tanh'):
        keys = [k for k in V if k.startswith('abxi.') and f'_{act}.' in k]
        for stat in ('median_abs', 'paper'):
            first = [V[k] for k in keys if f'.{stat}.' in k and k.endswith('.gca0')]
            second = [V[k] for k in keys if f'.{stat}.' in k and k.endswith('.gca1')]
            V[f'abxi.{act}.{stat}.first'] = Span(first)
            if second:
                V[f'abxi.{act}.{stat}.second'] = Span(second)
    # paired comparisons and correlations, as on the sweep's own page (same declared primary
    # comparisons, same code check)
    from recbole_ortho.analysis.provenance import CodeComparer, git_root
    from recbole_ortho.analysis.report import resolve_primary
    primary, _ = resolve_primary(sweep_dir)
    comps = [c for c in comparisons(rows, primary=primary, allow_mixed_commits=allow_mixed_commits,
                                    code=CodeComparer(git_root(sweep_dir))) if c['metric'] == 'ndcg@10']
    V['abxi.cmp.n'] = len(comps)
    V['abxi.cmp.diff'] = Span(c['mean_diff'] for c in comps)
    V['abxi.cmp.min_p'] = min(c['p_t'] for c in comps)
    V['abxi.cmp.min_p_holm'] = min(c['p_t_holm'] for c in comps)
    V['abxi.cmp.holm_all_one'] = (
        'every Holm-corrected p (within its family) is 1.0' if all(c['p_t_holm'] >= 1.0 for c in comps) else
        f"the smallest Holm-corrected p (within its family) is {V['abxi.cmp.min_p_holm']:.2f}")
    conf = [c for c in comps if c.get('family') == 'confirmatory']
    V['abxi.cmp.conf.n'] = len(conf)
    for c in conf:
        k = f"abxi.cmp.primary.{c['domain']}"
        V.update({f'{k}.diff': c['mean_diff'], f'{k}.p': c['p_t'], f'{k}.p_holm': c['p_t_holm'], f'{k}.n': c['n']})
    if conf:
        c = conf[0]
        V['abxi.cmp.primary.label'] = f"{c['model']} (`{c['variant']}`) against {c['against']}"
    from recbole_ortho.analysis.report import power_table
    for e in power_table(conf):                  # what the declared comparison could detect with these seeds
        k = f"abxi.power.{e['comparison']['domain']}"
        V.update({f'{k}.n': e['n'], f'{k}.base': e['base_mean'], f'{k}.gain_pct': 100 * e['gain'],
                  f'{k}.mde': e['paired']['mde'], f'{k}.mde_pct': 100 * e['paired']['mde_rel'],
                  f'{k}.seeds_for_gain': e['paired']['seeds_for_gain'],
                  f'{k}.arms.seeds_for_gain': e['arms']['seeds_for_gain'],
                  f'{k}.ci_lo_pct': 100 * e['diff_ci_rel'][0], f'{k}.ci_hi_pct': 100 * e['diff_ci_rel'][1]})
    his = [V[f'abxi.power.{d}.ci_hi_pct'] for d in 'AB' if f'abxi.power.{d}.ci_hi_pct' in V]
    V['abxi.power.paper_gain_pct'] = PAPER_GAIN_PCT
    V['abxi.power.vs_paper_gain'] = ('already excludes' if his and max(his) < PAPER_GAIN_PCT else
                                     'does not exclude' if his and min(his) >= PAPER_GAIN_PCT else 'excludes in one domain')
    V['abxi.cmp.verdict'] = ('no GCA variant differs detectably from ABXI or from the parameter-matched ABXI'
                             if V['abxi.cmp.min_p_holm'] >= 0.05 else
                             'some GCA variant differs from ABXI or the parameter-matched ABXI (Holm p < 0.05)')
    sig_pm = [c for c in comps if 'sigmoid' in c['variant'] and 'param-matched' in c['against']]
    ahead = [c['mean_diff'] for c in sig_pm if c['mean_diff'] > 0]
    V['abxi.cmp.sig_pm.n'] = len(sig_pm)
    V['abxi.cmp.sig_pm.ahead'] = len(ahead)
    V['abxi.cmp.sig_pm.ahead_diff'] = Span(ahead) if ahead else Span([0.0])
    V['abxi.cmp.sig_pm.direction'] = ("the paper's direction" if len(ahead) * 2 > len(sig_pm) else
                                      "not the paper's direction in most")
    corr = {c['domain']: c for c in correlations(rows, 'paper') if c['model'] == 'ABXI_GCA'}
    for d in 'AB':
        c = corr[d]
        V.update({f'abxi.corr.{d}.r': c['pearson'], f'abxi.corr.{d}.lo': c['pearson_ci_low'],
                  f'abxi.corr.{d}.hi': c['pearson_ci_high'], f'abxi.corr.{d}.n': c['n']})
    rs = [corr[d]['pearson'] for d in 'AB']
    V['abxi.corr.sign'] = ('*positively*' if min(rs) > 0 else '*negatively*' if max(rs) < 0 else
                           'with opposite signs in the two domains')
    V['abxi.corr.vs_paper'] = ('the opposite sign of' if min(rs) > 0 else 'the same sign as' if max(rs) < 0
                               else 'partly the opposite sign of')
    inc = [corr[d]['pearson_ci_low'] <= 0 <= corr[d]['pearson_ci_high'] for d in 'AB']
    V['abxi.corr.zero'] = 'intervals that include 0' if all(inc) else (
        'intervals that exclude 0' if not any(inc) else 'one interval that includes 0')
    tanh = [r.metric('A', 'ndcg@10') for r in runs if r.kind == 'gca' and r.cfg('gca_activation') == 'tanh']
    sig = [r.metric('A', 'ndcg@10') for r in runs if r.kind == 'gca' and r.cfg('gca_activation') == 'sigmoid']
    V['abxi.tanh_vs_sigmoid.A'] = word(np.mean(tanh), np.mean(sig), 'slightly higher', 'slightly lower', 'equal')
    # cost, from summary.json
    V['abxi.cost.s_per_run'] = summary['wall_time_s'] / summary['ran_now']
    V['abxi.cost.ran_now'] = summary['ran_now']
    V['abxi.cost.runs_per_hour'] = summary['runs_per_hour']
    V['abxi.cost.overhead_s'] = summary['overhead_s_median']
    V['abxi.cost.overhead_pct'] = 100 * summary['overhead_share_median']
    V['abxi.cost.workers'] = summary['workers']
    V['abxi.cost.threads'] = summary['threads']


def _generic_values(V, alias, runs):
    """Values of any sweep source: ``<alias>.n_runs``, ``<alias>.seeds``, and per model and kind
    (``base``, ``pm``, ``gca``) the mean over its runs of every test metric per domain
    (``<alias>.<model>.<kind>.<A|B>.<metric>``), its parameter counts and best epochs (spans)."""
    V[f'{alias}.n_runs'] = len(runs)
    V[f'{alias}.seeds'] = joined(sorted({r.seed for r in runs})) if runs else 'none'
    groups = defaultdict(list)
    for r in runs:
        groups[(r.model, r.kind)].append(r)
    for (model, kind), rs in groups.items():
        k = f'{alias}.{model}.{kind}'
        V[f'{k}.n_runs'] = len(rs)
        V[f'{k}.params'] = Span(r.n_params for r in rs)
        V[f'{k}.best_epoch'] = Span(r.best_epoch for r in rs)
        for d in ('A', 'B'):
            for m, mk in METRIC_KEYS.items():
                vals = [r.res['test'][d].get(m) for r in rs]
                if all(v is not None for v in vals):
                    V[f'{k}.{d}.{mk}'] = float(np.mean(vals))


def _data_values(V, runs):
    """The data set's size, from a run that records its split statistics."""
    data = next((r.res['data'] for r in runs if r.res.get('data')), None)
    if data is None:
        raise StoreError('no run records its data statistics (result.json "data")')
    before = data['before']
    V.update({'data.users': before['users'], 'data.inters_A': before['inters_A'], 'data.inters_B': before['inters_B'],
              'data.inters': before['inters_A'] + before['inters_B'],
              'data.mean_len': (before['inters_A'] + before['inters_B']) / before['users']})


def _quick_values(V, runs):
    """The README's quick start: the one committed result of its command (``quick.*``)."""
    if len(runs) != 1:
        raise StoreError(f'quick: expected one result JSON, found {len(runs)} ({", ".join(runs)})')
    (name, r), = runs.items()
    V['quick.file'] = name
    V['quick.model'] = r.model
    V['quick.epochs'] = r.epochs_run
    V['quick.users'] = int(r.metric('all', 'n_users'))
    V['quick.neg_num'] = r.cfg('eval_neg_num')
    V['quick.train_s'] = float(np.median([e['train_time_s'] for e in r.res['trace']]))
    V['quick.valid_s'] = float(np.median([e['valid_time_s'] for e in r.res['trace'] if 'valid_time_s' in e]))
    V['quick.wall_s'] = float(r.res['wall_time_s'])
    V['quick.cpu'] = r.res['provenance']['device']['cpu']
    V['quick.threads'] = r.res['provenance']['device']['threads']
    V['quick.commit'] = r.res['provenance']['git_commit'][:7]
    V['quick.chance_ndcg10'] = sum(1 / np.log2(k + 1) for k in range(1, 11)) / (V['quick.neg_num'] + 1)
    for d in ('A', 'B'):
        V[f'quick.{d}.users'] = int(r.metric(d, 'n_users'))
        for m, mk in (('ndcg@10', 'ndcg10'), ('hit@10', 'hr10'), ('auc', 'auc')):
            V[f'quick.{d}.{mk}'] = r.metric(d, m)
        for x in 'ab':
            V[f'quick.{d}.cos_{x}'] = r.metric(d, f'ortho_cos_{x}@gca0')


def page_values(sources):
    """Every value the templates use, computed from the loaded ``sources`` (see :func:`load_sources`):
    :data:`REFERENCE`, :func:`_generic_values` of every sweep, and the values of the published
    Food-Kitchen pages when their sources (aliases ``abxi``, ``h200``, ``speed``, ``llm``, ``llm999``,
    ``cdsrnp``, ``cdsrnp25``) are registered."""
    V = dict(REFERENCE)
    V['ref.abxi.A.ndcg10'], V['ref.abxi.B.ndcg10'] = REFERENCE['abxi.A.ndcg10'], REFERENCE['abxi.B.ndcg10']
    for alias in sources.get('sweeps', ()):
        _generic_values(V, alias, sources[alias])
    have = set(sources)
    if 'cdsrnp25' in have:
        _data_values(V, sources['cdsrnp25'])
    if 'abxi' in have:
        _abxi_values(V, sources['abxi'], sources['abxi.rows'], sources['abxi.summary'], sources['root'],
                     sources['abxi.dir'], sources['abxi.allow_mixed_commits'])
    if {'h200', 'speed'} <= have:
        _h200_values(V, sources['h200'], sources['speed'])
    if {'llm', 'llm999', 'abxi', 'h200', 'speed'} <= have:
        _llm_values(V, sources['llm'], sources['llm999'], sources['abxi.rows'], sources['root'])
    if 'quick' in have:
        _quick_values(V, sources['quick'])
    if {'speed', 'gca_overhead'} <= have:
        _speed_values(V, sources['speed'], sources['gca_overhead'])
    if 'cpu_device' in have:
        _device_profile_values(V, sources['cpu_device'])
    if 'precision' in have:
        _precision_values(V, sources['precision.rows'])
    if {'cdsrnp', 'cdsrnp25', 'abxi'} <= have:
        _cdsrnp_values(V, sources['cdsrnp'], sources['cdsrnp25'])
        V['cdsrnp.seed'] = V['cdsrnp.base.seed']
    return V


# ---------------------------------------------------------------------------------------------
# registry

class Registry:
    def __init__(self, path):
        self.path = os.path.abspath(path)
        self.base = os.path.dirname(self.path)
        with open(self.path) as f:
            reg = yaml.safe_load(f)
        self.sources = reg.get('sources') or {}
        self.sweep_pages = reg.get('sweep_pages') or []
        self.template_pages = reg.get('template_pages') or []
        self.study_pages = reg.get('study_pages') or []
        self.precision_pages = reg.get('precision_pages') or []
        for p in self.sweep_pages:
            if p.get('sweep') not in self.sources or 'sweep' not in self.sources[p['sweep']]:
                raise ValueError(f"{path}: page {p.get('page')}: sweep {p.get('sweep')!r} is not a sweep source")
        for p in self.study_pages:
            for key in ('main', 'scaling', 'cause', 'positions'):
                aliases = p.get(key) or []
                for alias in ([aliases] if isinstance(aliases, str) else aliases):
                    if alias not in self.sources or 'sweep' not in self.sources[alias]:
                        raise ValueError(f"{path}: study page {p.get('page')}: {key}: {alias!r} is not a sweep source")
            if not p.get('main'):
                raise ValueError(f"{path}: study page {p.get('page')}: main: name at least one sweep source")
            if p.get('replays') and 'replays' not in self.sources.get(p['replays'], {}):
                raise ValueError(f"{path}: study page {p.get('page')}: replays: {p['replays']!r} is not a replays source")
        for p in self.precision_pages:
            if p.get('sweep') not in self.sources or 'sweep' not in self.sources[p['sweep']]:
                raise ValueError(f"{path}: precision page {p.get('page')}: sweep {p.get('sweep')!r} is not a sweep source")

    def abs(self, rel):
        return os.path.normpath(os.path.join(self.base, rel))

    def root(self):
        """The repository root: the folder above the registry's ``results/``."""
        return os.path.dirname(self.base)


def find_registry(path=None):
    if path:
        return path
    if os.path.isfile(DEFAULT_REGISTRY):
        return DEFAULT_REGISTRY
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', DEFAULT_REGISTRY)
    if os.path.isfile(here):
        return os.path.normpath(here)
    raise FileNotFoundError(f'no {DEFAULT_REGISTRY} here or in the source tree (give --registry)')


def load_sources(reg):
    from recbole_ortho.analysis.report import load_rows
    out = {'root': reg.root(), 'sweeps': []}
    for alias, src in reg.sources.items():
        if 'sweep' in src:
            out['sweeps'].append(alias)
            path = reg.abs(src['sweep'])
            runs_dir = os.path.join(path, 'runs')
            if src.get('pending') and not (os.path.isdir(runs_dir) and any(
                    os.path.isfile(os.path.join(runs_dir, r, 'result.json')) for r in os.listdir(runs_dir))):
                out[alias], out[f'{alias}.rows'] = [], []      # an arm not run yet (pending: true)
            else:
                out[alias] = load_sweep(path)
                out[f'{alias}.rows'] = load_rows(path)
            out[f'{alias}.dir'] = path
            out[f'{alias}.allow_mixed_commits'] = any(p.get('allow_mixed_commits') for p in reg.sweep_pages
                                                      if p['sweep'] == alias)
            summ = os.path.join(path, 'summary.json')
            out[f'{alias}.summary'] = json.load(open(summ)) if os.path.isfile(summ) else {}
        elif 'results' in src:
            out[alias] = load_results_dir(reg.abs(src['results']))
        elif 'json' in src:
            with open(reg.abs(src['json'])) as f:
                out[alias] = json.load(f)
        elif 'replays' in src:
            out[alias] = load_replays(reg.abs(src['replays']))
        else:
            raise ValueError(f'{reg.path}: source {alias}: give sweep, results, json or replays')
    return out


def load_replays(folder):
    """The replay files (``python -m recbole_ortho.sweep.replay --json_out``) in ``folder``, by file
    name; none when the folder does not exist. A file that is not a replay is an error naming it."""
    if not os.path.isdir(folder):
        return []
    out = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith('.json'):
            continue
        with open(os.path.join(folder, name)) as f:
            r = json.load(f)
        missing = [k for k in ('model', 'seed', 'stored', 'replayed', 'epochs_replayed', 'train_loss_max_rel_diff',
                               'valid_score_max_abs_diff') if k not in r]
        if missing:
            raise ValueError(f'{os.path.join(folder, name)}: not a replay file (no {", ".join(missing)})')
        out.append(r)
    return out


def begin_marker(block):
    return f'<!-- BEGIN generated: {block} -->'


def end_marker(block):
    return f'<!-- END generated: {block} -->'


def splice(text, block, body, where='page'):
    """``text`` with the lines between the block's markers replaced by ``body``."""
    b, e = begin_marker(block), end_marker(block)
    if text.count(b) != 1 or text.count(e) != 1 or text.index(b) > text.index(e):
        raise TemplateError(f'{where}: expected one {b} ... {e} block')
    head, rest = text.split(b, 1)
    _, tail = rest.split(e, 1)
    return f'{head}{b}\n{body.rstrip(chr(10))}\n{e}{tail}'


def render_template_page(reg, entry, values, current_text=None):
    """The text of a template page (for a block page: ``current_text`` with its block replaced)."""
    tpath = reg.abs(entry['template'])
    with open(tpath) as f:
        tmpl = f.read()
    body = render(tmpl, values, source=os.path.relpath(tpath, reg.root()))
    note = (f"<!-- generated from {os.path.relpath(tpath, reg.root())} by `python -m recbole_ortho.analysis "
            f"--regenerate`: edit the template, not this text -->")
    if entry.get('block'):
        if current_text is None:
            with open(reg.abs(entry['page'])) as f:
                current_text = f.read()
        return splice(current_text, entry['block'], note + '\n' + body, where=entry['page'])
    first, _, rest = body.partition('\n')
    return f'{first}\n\n{note}\n{rest}' if first.startswith('#') else f'{note}\n\n{body}'


# ---------------------------------------------------------------------------------------------
# generate, check, regenerate

def _plot_dir(page):
    return os.path.splitext(page)[0] + '_plots'


def build_all(reg, out_root, render_plots):
    """Write every page of the registry under ``out_root`` (same relative paths as in the registry's
    folder); returns ``[(relative page, relative plot dir or None)]``."""
    from recbole_ortho.analysis.report import write_report
    built = []
    sources = load_sources(reg)
    values = page_values(sources)
    for p in reg.sweep_pages:
        out = os.path.join(out_root, p['page'])
        os.makedirs(os.path.dirname(out), exist_ok=True)
        title = render(p['title'], values, source=f"{os.path.relpath(reg.path, reg.root())}: title of {p['page']}") \
            if p.get('title') else None
        write_report(reg.abs(reg.sources[p['sweep']]['sweep']), out, stat=p.get('stat', 'paper'),
                     title=title, render_plots=render_plots, allow_mixed_commits=bool(p.get('allow_mixed_commits')))
        built.append((p['page'], _plot_dir(p['page'])))
    for p in reg.study_pages:                    # the converged study's verdict page (analysis/study.py)
        from recbole_ortho.analysis.study import write_study_page
        out = os.path.join(out_root, p['page'])
        os.makedirs(os.path.dirname(out), exist_ok=True)
        title = render(p['title'], values, source=f"{os.path.relpath(reg.path, reg.root())}: title of {p['page']}")
        write_study_page(sources, p, out, title, render_plots=render_plots)
        built.append((p['page'], _plot_dir(p['page'])))
    for p in reg.precision_pages:                # the bf16 accuracy check (analysis/precision.py)
        from recbole_ortho.analysis.precision import write_precision_page
        out = os.path.join(out_root, p['page'])
        os.makedirs(os.path.dirname(out), exist_ok=True)
        title = render(p['title'], values, source=f"{os.path.relpath(reg.path, reg.root())}: title of {p['page']}")
        write_precision_page(sources, p, out, title, render_plots=render_plots)
        built.append((p['page'], _plot_dir(p['page'])))
    texts = {}                                   # a page with several blocks: each entry splices its own
    for p in reg.template_pages:
        out = os.path.join(out_root, p['page'])
        os.makedirs(os.path.dirname(out), exist_ok=True)
        text = render_template_page(reg, p, values, current_text=texts.get(p['page']))
        texts[p['page']] = text
        with open(out, 'w') as f:
            f.write(text)
        if (p['page'], None) not in built:
            built.append((p['page'], None))
    return built


def png_text(path):
    """The tEXt entries of a PNG file (``{key: value}``)."""
    out = {}
    with open(path, 'rb') as f:
        if f.read(8) != b'\x89PNG\r\n\x1a\n':
            raise ValueError(f'{path}: not a PNG file')
        while True:
            head = f.read(8)
            if len(head) < 8:
                break
            n, kind = struct.unpack('>I4s', head)
            data = f.read(n)
            f.read(4)
            if kind == b'tEXt':
                k, _, v = data.partition(b'\0')
                out[k.decode('latin-1')] = v.decode('latin-1')
            elif kind == b'IEND':
                break
    return out


def _diff(a_path, b_path, label, limit=40):
    with open(a_path) as f:
        a = f.read().splitlines()
    with open(b_path) as f:
        b = f.read().splitlines()
    d = list(difflib.unified_diff(a, b, f'{label} (committed)', f'{label} (generated)', lineterm='', n=1))
    more = f'\n... {len(d) - limit} more diff lines' if len(d) > limit else ''
    return '\n'.join(d[:limit]) + more


def compare(reg, built, out_root):
    """Problems of the committed pages against the generated ones under ``out_root`` (a list of
    messages; empty when all match)."""
    problems = []
    for page, plot_dir in built:
        mine, theirs = reg.abs(page), os.path.join(out_root, page)
        label = os.path.relpath(mine, reg.root())
        if not os.path.isfile(mine):
            problems.append(f'{label}: missing (run --regenerate)')
            continue
        with open(mine, 'rb') as f1, open(theirs, 'rb') as f2:
            if f1.read() != f2.read():
                problems.append(f'{label}: differs from what the run stores give\n{_diff(mine, theirs, label)}')
        if plot_dir is None:
            continue
        gen, com = os.path.join(out_root, plot_dir), reg.abs(plot_dir)
        plabel = os.path.relpath(com, reg.root())
        want = sorted(os.listdir(gen)) if os.path.isdir(gen) else []
        have = sorted(os.listdir(com)) if os.path.isdir(com) else []
        pngs = sorted(n[:-4] + '.png' for n in want if n.endswith('.csv'))
        missing = sorted((set(want) | set(pngs)) - set(have))
        extra = sorted(set(have) - set(want) - set(pngs))
        if missing:
            problems.append(f'{plabel}: missing {", ".join(missing)}')
        if extra:
            problems.append(f'{plabel}: files no page makes: {", ".join(extra)}')
        for n in want:
            if not n.endswith('.csv') or n in missing:
                continue
            with open(os.path.join(gen, n), 'rb') as f:
                data = f.read()
            with open(os.path.join(com, n), 'rb') as f:
                if f.read() != data:
                    problems.append(f'{plabel}/{n}: plotted data differ\n'
                                    f'{_diff(os.path.join(com, n), os.path.join(gen, n), f"{plabel}/{n}", 12)}')
            png = os.path.join(com, n[:-4] + '.png')
            if os.path.isfile(png):
                h = png_text(png).get(PNG_HASH_KEY)
                if h != hashlib.sha256(data).hexdigest():
                    problems.append(f'{plabel}/{n[:-4]}.png: not drawn from these data '
                                    f'({PNG_HASH_KEY} {h or "absent"}; run --regenerate)')
    return problems


def check(registry=None):
    """``(ok, messages)``: every page of the registry regenerated into a temporary folder (no PNG
    rendered) and compared with the committed one."""
    reg = Registry(find_registry(registry))
    with tempfile.TemporaryDirectory(prefix='pages-check-') as tmp:
        built = build_all(reg, tmp, render_plots=False)
        problems = compare(reg, built, tmp)
    return not problems, problems, [p for p, _ in built]


def regenerate(registry=None):
    """Rewrite every page of the registry (plots included). Everything is built in a temporary folder
    beside the pages first; the committed files are replaced only when all pages were built, each by
    an atomic rename (a plot folder as a whole). Returns the pages written."""
    reg = Registry(find_registry(registry))
    tmp = tempfile.mkdtemp(prefix='.pages-', dir=reg.base)
    try:
        built = build_all(reg, tmp, render_plots=True)
        for page, plot_dir in built:
            dst = reg.abs(page)
            src = os.path.join(tmp, page)
            blocks = [p['block'] for p in reg.template_pages if p['page'] == page and p.get('block')]
            if blocks:
                # re-read the page now (others may have edited it since) and splice its blocks into it
                with open(src) as f:
                    generated = f.read()
                with open(dst) as f:
                    text = f.read()
                for block in blocks:
                    text = splice(text, block, _block_body(generated, block), where=page)
                with open(src, 'w') as f:
                    f.write(text)
            if plot_dir is not None:
                new, old = os.path.join(tmp, plot_dir), reg.abs(plot_dir)
                if os.path.isdir(old):
                    trash = os.path.join(tmp, '.old-' + os.path.basename(old))
                    os.replace(old, trash)
                os.replace(new, old)
            os.replace(src, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [p for p, _ in built]


def _block_body(text, block):
    b, e = begin_marker(block), end_marker(block)
    return text.split(b, 1)[1].split(e, 1)[0].strip('\n')
