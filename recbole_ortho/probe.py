r"""
recbole_ortho.probe
###################

Probe what the GCA modules of a trained ``_GCA`` model do (Lee et al., "Cross-attention Secretly
Performs Orthogonal Alignment in Recommendation Models", arXiv:2510.09435)::

    python -m recbole_ortho.probe --model_file saved/ABXI_GCA-food_kitchen-....pth [--split valid|test] [--out DIR]

One evaluation pass of the checkpoint (the evaluator's, :class:`~recbole_ortho.evaluator.CDSREvaluator`)
runs with the GCA layers' capture on (:meth:`recbole_ortho.model.gca_wiring.GCAStages.capturing`): for every GCA
module and direction (``gca{p}_a``: domain A's states attend to B's at stage ``p``; ``gca{p}_b``: B
attends to A) each query step hands over its query input :math:`X`, the cross-attention output
:math:`X' = \mathrm{CA}(X, Y)`, the other domain's input :math:`Y` at the same step (the gate's
other input) and the gate :math:`G`. The probe writes ``DIR/probe.json`` (atomically) and PNGs
(:mod:`recbole_ortho.analysis.probe_plots`):

- the distributions of :math:`\cos(X, X')`, :math:`\cos(X, Y)` and :math:`\cos(X, G \odot X')`;
- the evaluator's orthogonality statistics recomputed from the captured tensors, per target
  domain (``statistics``: ``ortho_cos_a@gca0`` = mean over users of their mean
  :math:`|\cos(X, X')|`, ``.../paper`` = the paper's :math:`|\mathrm{mean}\,\cos(X, X')|` over all
  query steps, ``pooled_signed``, ``pooled_abs``, ``median_abs``, ``n_steps``, ``no_key_steps``,
  ``cross_cos_a@gca0`` = mean over users of their mean :math:`|\cos(X, Y)|`), with their
  ``agreement`` with the numbers the evaluator reported in the same pass;
- the decomposition of :math:`X'` into its component along :math:`X`,
  :math:`X'_\parallel = \frac{X' \cdot X}{\|X\|^2} X`, and the orthogonal rest
  :math:`X'_\perp = X' - X'_\parallel`: per step :math:`\|X'_\parallel\| / \|X'\| = |\cos(X, X')|`
  and :math:`\|X'_\perp\| / \|X'\|` (their squares sum to 1), and pooled over steps the share of the
  squared norm, :math:`\sum \|X'_\parallel\|^2 / \sum \|X'\|^2`; the same for the gated update
  :math:`U = G \odot X'` (``scalar`` gate: :math:`\alpha X'`; ``none``: :math:`X'`), which is what
  is added to :math:`X` before the LayerNorm;
- the gate: its mean, spread and histogram over all dimensions and per dimension;
- the statistics by position in the sequence (from the oldest item, and steps before the target)
  and by the user's history length in domain A and in domain B (items of the evaluated window).

Only query steps with at least one key enter the :math:`X'` statistics (a step without a key has
:math:`X' = 0`; counted as ``no_key_steps``, as the evaluator does); :math:`\cos(X, Y)` uses the
steps where :math:`Y` exists. It works for every model with a
:class:`~recbole_ortho.model.gca_wiring.GCAStages` (every ``_GCA`` model) and says in one line (exit
code 2) when the checkpoint's model has none.
"""

import argparse
import math
import os
import re
import sys
from logging import getLogger

import numpy as np
import torch

from recbole_ortho.evaluator.evaluator import step_summaries
from recbole_ortho.model.gca_wiring import GCAStages
from recbole_ortho.model.ortho import stat_name

#: the absolute tolerance of the agreement between the probe's statistics and the evaluator's
#: (the probe recomputes the cosines in float64 from the captured float32 tensors)
AGREEMENT_TOL = 1e-5
#: histogram bins of a cosine on [-1, 1] and of a gate value
COS_BINS = 40
GATE_BINS = 50
#: query steps whose whole gate vector is kept (a uniform reservoir sample, seed 0) for the per-dimension
#: quantiles and the zoomed histogram; the means, spreads and the fixed-range histogram use every step
GATE_SAMPLE_ROWS = 20000


class NoGCAError(ValueError):
    """The model has no GCA layer to probe (a base model); the message names it."""


def gca_modules(model):
    """``[(name, GCAStages)]``: the GCA stage modules of ``model`` (empty for a model without GCA)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, GCAStages)]


def module_key(prefix, stage, direction):
    """``gca{stage}_{direction}`` (``'gca0_a'``: A's states attend to B's at stage 0), prefixed by the
    module's name when a model holds several :class:`GCAStages`."""
    return f'{prefix}gca{stage}_{direction}'


class Capture:
    """Collector of what the GCA layers hand over during one evaluation pass (see
    :meth:`GCAStages.capturing`). For each module and direction it keeps per query step a few
    numbers computed in float64 (cosines, squared norms of the components, the step's user and
    position) and accumulates the gate per dimension; per evaluated user it keeps the target's
    domain, the user group and the history length per domain.

    A model may evaluate a batch in chunks of users (:meth:`~recbole_ortho.model.abstract_recommender.
    CrossDomainSeqRecommender.eval_in_chunks`); each GCA layer is then called once per chunk, in
    order, so a call's sequence ``s`` is the batch row ``s`` + the rows its earlier calls in this
    batch covered. A layer that covers a different number of users than the batch holds is an
    error (it would misplace the steps)."""

    def __init__(self, model, modules):
        self.model = model
        self.meta = {}                       # module key -> (prefix, stage, direction, GCAStages)
        for name, stages in modules:
            prefix = '' if len(modules) == 1 else f'{name}.'
            for p in stages.positions:
                for d in 'ab':
                    self.meta[module_key(prefix, p, d)] = (prefix, p, d, stages)
        self.rows = {k: [] for k in self.meta}
        self.gate = {k: None for k in self.meta}
        self.has_other = {k: False for k in self.meta}     # whether the module had an other input Y
        self.users = {'domain': [], 'overlapped': [], 'n_a': [], 'n_b': [], 'length': []}
        self.n_users = 0
        self._offset = None
        self._batch_size = 0

    def collector(self, prefix):
        """The ``collector(stage, direction, record)`` to give :meth:`GCAStages.capturing` of the
        module named by ``prefix``."""
        return lambda stage, direction, record: self.add(module_key(prefix, stage, direction), record)

    # ---------------------------------------------------------------- batches
    def start_batch(self, batch):
        m = self.model
        seq, length = batch[m.ITEM_SEQ], batch[m.ITEM_SEQ_LEN]
        dom = m.item_domain[seq]
        valid = torch.arange(seq.size(1), device=seq.device)[None, :] < length[:, None]
        self.users['domain'].append(batch['domain_id'].cpu().numpy())
        ovl = batch['overlapped'].cpu().numpy().astype(bool) if 'overlapped' in batch else None
        self.users['overlapped'].append(ovl)
        self.users['n_a'].append(((dom == 0) & valid).sum(1).cpu().numpy())
        self.users['n_b'].append(((dom == 1) & valid).sum(1).cpu().numpy())
        self.users['length'].append(length.cpu().numpy())
        self._lengths = length
        self._batch_size = seq.size(0)
        self._offset = {}

    def end_batch(self):
        bad = {k: v for k, v in self._offset.items() if v != self._batch_size}
        if bad:
            raise RuntimeError(f'probe: the GCA modules {sorted(bad)} covered {sorted(set(bad.values()))} users of a '
                               f'batch of {self._batch_size} (one call per chunk of users expected)')
        self.n_users += self._batch_size
        self._offset = None

    # ---------------------------------------------------------------- one call of one layer
    def add(self, key, rec):
        if self._offset is None:
            raise RuntimeError('probe: a GCA layer handed over tensors outside an evaluated batch')
        off = self._offset.get(key, 0)
        self._offset[key] = off + rec['n_seq']
        x, xa, has = rec['x'].double(), rec['x_att'].double(), rec['has_key']
        gate, kind = rec['gate'], rec['gate_kind']
        upd = xa if gate is None else gate.double() * xa
        seq, step, valid = rec['seq'], rec['step'], rec.get('valid')
        if valid is not None and tuple(valid.shape) == (rec['n_seq'], rec['length']):
            position = valid.long().cumsum(1)[seq, step] - 1     # non-padding steps before it: any padding side
            before = valid.sum(1)[seq] - 1 - position
        else:                                                    # a bare layer call: right padding
            position, before = step, self._lengths[seq + off] - 1 - step
        row = {'user': (seq + off + self.n_users).cpu().numpy(), 'step': step.cpu().numpy(),
               'position': position.cpu().numpy(), 'before_target': before.cpu().numpy(),
               'has_key': has.cpu().numpy()}
        nx2 = (x * x).sum(-1)
        for name, v in (('att', xa), ('upd', upd)):
            dot = (x * v).sum(-1)
            e = (v * v).sum(-1)
            cos = dot / (nx2.sqrt() * e.sqrt()).clamp_min(1e-8)         # the evaluator's cosine (ortho.cosine)
            par = (dot / nx2.clamp_min(1e-30))[:, None] * x               # the component along X
            perp = v - par
            row[f'cos_{name}'] = torch.where(has, cos, torch.full_like(cos, math.nan)).cpu().numpy()
            row[f'e_{name}'] = e.cpu().numpy()                            # ||v||^2
            row[f'e_{name}_par'] = (par * par).sum(-1).cpu().numpy()
            row[f'e_{name}_perp'] = (perp * perp).sum(-1).cpu().numpy()
            row[f'ratio_{name}'] = (e.sqrt() / nx2.sqrt().clamp_min(1e-30)).cpu().numpy()   # ||v|| / ||X||
        if rec['other'] is not None:
            self.has_other[key] = True
            y, ov = rec['other'].double(), rec['other_valid']
            cos = (x * y).sum(-1) / (nx2.sqrt() * y.norm(dim=-1)).clamp_min(1e-8)
            row['cos_other'] = torch.where(ov, cos, torch.full_like(cos, math.nan)).cpu().numpy()
        else:
            row['cos_other'] = np.full(len(row['user']), math.nan)
        if kind == 'vector':
            g = gate.double()
            row['gate_mean'] = g.mean(-1).cpu().numpy()
            self._add_gate(key, g[has])
        else:
            row['gate_mean'] = np.full(len(row['user']), math.nan)
            if kind == 'scalar':
                self.gate[key] = {'alpha': float(gate.reshape(-1)[0])}
        self.rows[key].append(row)

    def _add_gate(self, key, g):
        """Accumulate the gate rows ``g [R, d]`` (query steps with a key): per-dimension sums, squares,
        extremes, a histogram on the activation's range, and a reservoir sample of whole rows."""
        stages = self.meta[key][3]
        lo, hi = (0.0, 1.0) if stages.activation == 'sigmoid' else (-1.0, 1.0)
        d = g.size(1)
        acc = self.gate[key]
        if acc is None:
            acc = self.gate[key] = {'n': 0, 'sum': np.zeros(d), 'sumsq': np.zeros(d), 'min': np.full(d, np.inf),
                                    'max': np.full(d, -np.inf), 'hist': np.zeros(GATE_BINS, dtype=np.int64),
                                    'range': (lo, hi), 'sample': np.zeros((0, d), dtype=np.float32),
                                    'rng': np.random.default_rng(0)}
        if not g.size(0):
            return
        b = ((g - lo) / (hi - lo) * GATE_BINS).long().clamp(0, GATE_BINS - 1)
        acc['hist'] += torch.bincount(b.reshape(-1), minlength=GATE_BINS).cpu().numpy()
        acc['sum'] += g.sum(0).cpu().numpy()
        acc['sumsq'] += (g * g).sum(0).cpu().numpy()
        acc['min'] = np.minimum(acc['min'], g.amin(0).cpu().numpy())
        acc['max'] = np.maximum(acc['max'], g.amax(0).cpu().numpy())
        rows = g.float().cpu().numpy()
        room = GATE_SAMPLE_ROWS - len(acc['sample'])          # reservoir sampling (Algorithm R), vectorised
        if room > 0:
            acc['sample'] = np.concatenate([acc['sample'], rows[:room]])
        seen = acc['n'] + max(room, 0)
        rest = rows[max(room, 0):]
        if len(rest):
            j = np.floor(acc['rng'].random(len(rest)) * (seen + np.arange(1, len(rest) + 1))).astype(np.int64)
            keep = j < GATE_SAMPLE_ROWS
            acc['sample'][j[keep]] = rest[keep]                 # in order: a later row replaces an earlier one
        acc['n'] += g.size(0)

    # ---------------------------------------------------------------- results
    def user_arrays(self):
        out = {k: np.concatenate(v) if v else np.zeros(0) for k, v in self.users.items() if k != 'overlapped'}
        ovl = self.users['overlapped']
        out['overlapped'] = np.concatenate(ovl) if ovl and all(o is not None for o in ovl) else None
        return out

    def row_arrays(self, key):
        parts = self.rows[key]
        if not parts:
            return None
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# -------------------------------------------------------------------- the pass
def capture_pass(model, config, dataset, loader):
    """One evaluation pass of ``model`` on ``loader`` by the evaluator, with every GCA module's capture
    on. Returns ``(evaluator_result, capture)``; raises :class:`NoGCAError` for a model without GCA."""
    from contextlib import ExitStack

    from recbole_ortho.evaluator import CDSREvaluator
    modules = gca_modules(model)
    if not modules:
        raise NoGCAError(f"{config['model']} has no GCA layer (no GCAStages module); the probe needs a _GCA model")
    cap = Capture(model, modules)
    evaluator = CDSREvaluator(config, dataset)
    represent = model.final_representation       # what full_sort_predict and sampled_predict both call once

    def observed(batch):                         # the evaluator's own call, with the batch's users noted
        cap.start_batch(batch)
        out = represent(batch)
        cap.end_batch()
        return out

    model.final_representation = observed        # an instance attribute, removed below
    try:
        with ExitStack() as stack:
            for name, stages in modules:
                stack.enter_context(stages.capturing(cap.collector('' if len(modules) == 1 else f'{name}.')))
            result = evaluator.evaluate(model, loader, desc='Probe')
    finally:
        model.__dict__.pop('final_representation', None)
    return result, cap


# -------------------------------------------------------------------- summaries
def _finite(v):
    v = np.asarray(v, dtype=np.float64)
    return v[~np.isnan(v)]


def distribution(values, lo=-1.0, hi=1.0, bins=COS_BINS):
    """Summary of signed values (NaN left out): ``n``, ``mean``, ``std``, ``mean_abs``, ``median_abs``,
    quantiles ``q05 .. q95`` and a histogram on ``[lo, hi]``."""
    v = _finite(values)
    if len(v) == 0:
        return {'n': 0}
    counts, edges = np.histogram(np.clip(v, lo, hi), bins=bins, range=(lo, hi))
    qs = np.quantile(v, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {'n': int(len(v)), 'mean': float(v.mean()), 'std': float(v.std()), 'mean_abs': float(np.abs(v).mean()),
            'median_abs': float(np.median(np.abs(v))),
            'quantiles': {f'q{int(round(q * 100)):02d}': float(x) for q, x in zip([0.05, 0.25, 0.5, 0.75, 0.95], qs)},
            'hist': {'edges': edges.tolist(), 'counts': counts.tolist()}}


def decomposition(r, name):
    """The split of ``X'`` (``name='att'``) or of the gated update (``'upd'``) into its component along
    ``X`` and the orthogonal rest, over the query steps with a key and a non-zero vector."""
    m = r['has_key'] & (r[f'e_{name}'] > 0)
    e, ep, eo = r[f'e_{name}'][m], r[f'e_{name}_par'][m], r[f'e_{name}_perp'][m]
    if not len(e):
        return {'n_steps': 0}
    cos = r[f'cos_{name}'][m]
    return {'n_steps': int(m.sum()),
            'parallel_energy_share': float(ep.sum() / e.sum()),       # sum ||v_par||^2 / sum ||v||^2
            'orthogonal_energy_share': float(eo.sum() / e.sum()),
            'parallel_norm_ratio_mean': float(np.sqrt(ep / e).mean()),   # mean ||v_par|| / ||v|| = mean |cos|
            'orthogonal_norm_ratio_mean': float(np.sqrt(eo / e).mean()),
            'parallel_energy_share_median': float(np.median(ep / e)),
            'along_x_fraction': float((cos > 0).mean()),                # steps whose v points along +X
            'norm_ratio_to_x_mean': float(r[f'ratio_{name}'][m].mean()),  # mean ||v|| / ||X||
            'norm_ratio_to_x_median': float(np.median(r[f'ratio_{name}'][m]))}


def _per_user_mean(values, users, n_users):
    """Per-user mean of ``values`` (NaN left out); NaN for a user without any."""
    ok = ~np.isnan(values)
    s = np.bincount(users[ok], weights=values[ok], minlength=n_users)
    c = np.bincount(users[ok], minlength=n_users)
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(c > 0, s / np.maximum(c, 1), np.nan)


def _group_masks(users):
    dom = users['domain']
    masks = {'A': dom == 0, 'B': dom == 1, 'all': np.ones(len(dom), dtype=bool)}
    if users['overlapped'] is not None:
        ov = users['overlapped']
        for g in ('A', 'B', 'all'):
            masks[f'{g}/overlap'] = masks[g] & ov
            masks[f'{g}/non_overlap'] = masks[g] & ~ov
    return masks


def _mean(v):
    v = _finite(v)
    return float(v.mean()) if len(v) else math.nan


def statistics(r, users, stage, direction, has_other):
    """The evaluator's statistics of one module and direction, recomputed per user group (``A``, ``B``,
    ``all`` and, with overlap information, ``A/overlap``, ...): ``{group: {name: value}}``."""
    n = len(users['domain'])
    ortho = _per_user_mean(np.abs(r['cos_att']), r['user'], n)
    cross = _per_user_mean(np.abs(r['cos_other']), r['user'], n) if has_other else None
    o_name, c_name = stat_name('ortho', direction, stage), stat_name('cross', direction, stage)
    out = {}
    for g, mask in _group_masks(users).items():
        st = {'n_users': int(mask.sum()), o_name: _mean(ortho[mask])}
        if cross is not None:
            st[c_name] = _mean(cross[mask])
        for k, v in step_summaries(r['cos_att'][mask[r['user']]]).items():
            st[f'{o_name}/{k}'] = v
        out[g] = st
    return out


def _by(keys, columns):
    """Means of ``columns`` (NaN left out) per integer value of ``keys``:
    ``{'value': [...], 'n': [...], col: [...], 'n_' + col: [...]}``."""
    keys = np.asarray(keys, dtype=np.int64)
    top = int(keys.max()) + 1 if len(keys) else 0
    out = {'value': list(range(top)), 'n': np.bincount(keys, minlength=top).tolist()}
    for name, v in columns.items():
        ok = ~np.isnan(v)
        s = np.bincount(keys[ok], weights=v[ok], minlength=top)
        c = np.bincount(keys[ok], minlength=top)
        out[name] = [float(a / b) if b else None for a, b in zip(s, c)]
        out[f'n_{name}'] = c.tolist()
    return out


def _energy_share(r, name, mask):
    """Per-step share of the squared norm along X (NaN where undefined)."""
    e = r[f'e_{name}']
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(mask & (e > 0), r[f'e_{name}_par'] / e, np.nan)


def by_position(r, users):
    """The statistics per position of the query step: ``position`` counts the non-padding steps before it
    (0 = the oldest item of the evaluated window), ``before_target`` those after it (0 = the last history
    item, just before the target)."""
    cols = {'abs_cos_x_xatt': np.abs(r['cos_att']), 'abs_cos_x_y': np.abs(r['cos_other']),
            'abs_cos_x_update': np.abs(r['cos_upd']),
            'parallel_share_update': _energy_share(r, 'upd', r['has_key']),
            'gate_mean': np.where(r['has_key'], r['gate_mean'], np.nan)}
    return {'position': _by(r['position'], cols), 'before_target': _by(r['before_target'], cols)}


def by_history(r, users):
    """Per-user means of the statistics (each user's mean over its query steps), averaged over the
    users with the same number of domain-A items (``n_a``) and of domain-B items (``n_b``) in the
    evaluated history."""
    n = len(users['domain'])
    per_user = {'abs_cos_x_xatt': _per_user_mean(np.abs(r['cos_att']), r['user'], n),
                'abs_cos_x_y': _per_user_mean(np.abs(r['cos_other']), r['user'], n),
                'parallel_share_update': _per_user_mean(_energy_share(r, 'upd', r['has_key']), r['user'], n),
                'gate_mean': _per_user_mean(np.where(r['has_key'], r['gate_mean'], np.nan), r['user'], n)}
    return {'n_a': _by(users['n_a'], per_user), 'n_b': _by(users['n_b'], per_user)}


def gate_summary(acc, stages):
    """The gate of one module and direction over its query steps with a key."""
    if stages.gate == 'none':
        return {'kind': 'none'}
    if stages.gate == 'scalar':
        return {'kind': 'scalar', 'alpha': None if acc is None else acc['alpha']}
    out = {'kind': 'vector', 'activation': stages.activation, 'gate_input': stages.gate_input}
    if acc is None or acc['n'] == 0:
        return dict(out, n_steps=0)
    n, d = acc['n'], len(acc['sum'])
    mean = acc['sum'] / n
    var = np.maximum(acc['sumsq'] / n - mean ** 2, 0.0)
    lo, hi = acc['range']
    all_mean = float(acc['sum'].sum() / (n * d))
    all_std = float(math.sqrt(max(acc['sumsq'].sum() / (n * d) - all_mean ** 2, 0.0)))
    sample = acc['sample'].astype(np.float64)
    qs = (0.05, 0.25, 0.5, 0.75, 0.95)
    per_dim_q = np.quantile(sample, qs, axis=0)
    z_lo, z_hi = np.quantile(sample, [0.001, 0.999])
    if z_hi - z_lo < 1e-12:
        z_lo, z_hi = z_lo - 1e-6, z_hi + 1e-6
    counts, edges = np.histogram(np.clip(sample, z_lo, z_hi), bins=GATE_BINS, range=(z_lo, z_hi))
    return dict(out, n_steps=int(n), d=int(d), mean=all_mean, std=all_std,
                min=float(acc['min'].min()), max=float(acc['max'].max()),
                per_dim_mean=mean.tolist(), per_dim_std=np.sqrt(var).tolist(),
                per_dim_mean_range=[float(mean.min()), float(mean.max())],
                hist={'edges': np.linspace(lo, hi, GATE_BINS + 1).tolist(), 'counts': acc['hist'].tolist()},
                n_sampled_steps=int(len(sample)),
                per_dim_quantiles={f'q{int(round(q * 100)):02d}': v.tolist() for q, v in zip(qs, per_dim_q)},
                hist_zoom={'edges': edges.tolist(), 'counts': counts.tolist(), 'range_quantiles': [0.001, 0.999]})


def module_summary(cap, key, users):
    prefix, stage, direction, stages = cap.meta[key]
    r = cap.row_arrays(key)
    q, o = ('A', 'B') if direction == 'a' else ('B', 'A')
    head = {'module': prefix + 'gca', 'stage': stage, 'direction': direction, 'query_domain': q, 'key_domain': o,
            'label': f'gca{stage} {q}\u2190{o}', 'description': f"domain {q}'s states attend to domain {o}'s"}
    if r is None:
        return dict(head, n_query_steps=0)
    has_other = cap.has_other[key]
    n_steps = len(r['user'])
    return dict(head, n_query_steps=int(n_steps), n_no_key_steps=int((~r['has_key']).sum()),
                n_no_other_steps=int(np.isnan(r['cos_other']).sum()),
                cos_x_xatt=distribution(r['cos_att']), cos_x_y=distribution(r['cos_other']),
                cos_x_update=distribution(r['cos_upd']),
                statistics=statistics(r, users, stage, direction, has_other),
                decomposition={'cross_attention': decomposition(r, 'att'), 'gated_update': decomposition(r, 'upd')},
                gate=gate_summary(cap.gate[key], stages),
                by_position=by_position(r, users), by_history_length=by_history(r, users))


def agreement(modules, evaluator_result, tol=AGREEMENT_TOL):
    """Compare the probe's ``statistics`` with the evaluator's result of the same pass: the largest
    absolute difference, the number of values compared, the keys of one side missing on the other."""
    diffs, missing, worst = [], [], None
    for key, m in modules.items():
        for group, st in m.get('statistics', {}).items():
            ev = evaluator_result.get(group, {})
            for name, v in st.items():
                if name == 'n_users':
                    continue
                if name not in ev:
                    missing.append(f'{group}:{name}')
                    continue
                e = ev[name]
                both_nan = (v is None or (isinstance(v, float) and math.isnan(v))) and \
                    (e is None or (isinstance(e, float) and math.isnan(e)))
                if both_nan:
                    diffs.append(0.0)
                    continue
                if v is None or e is None or math.isnan(float(v)) or math.isnan(float(e)):
                    d = math.inf
                else:
                    d = abs(float(v) - float(e))
                diffs.append(d)
                if worst is None or d > worst[0]:
                    worst = (d, f'{group}:{name}')
    prefixes = ('ortho_cos_', 'cross_cos_')
    probe_keys = {(g, n) for m in modules.values() for g, st in m.get('statistics', {}).items() for n in st}
    unmatched = sorted(f'{g}:{n}' for g, st in evaluator_result.items() if isinstance(st, dict)
                       for n in st if n.startswith(prefixes) and (g, n) not in probe_keys)
    max_diff = max(diffs) if diffs else math.nan
    return {'tolerance': tol, 'n_compared': len(diffs), 'max_abs_diff': max_diff,
            'worst': None if worst is None else worst[1], 'missing_in_evaluator': missing,
            'missing_in_probe': unmatched, 'ok': bool(diffs) and max_diff <= tol and not missing and not unmatched}


def summarize(cap, evaluator_result, config, model_file=None, split='test'):
    """The probe's JSON payload from a finished :func:`capture_pass`."""
    users = cap.user_arrays()
    modules = {k: module_summary(cap, k, users) for k in cap.meta}
    gca = {}
    for prefix, _, _, st in cap.meta.values():
        gca[prefix + 'gca'] = {'positions': list(st.positions), 'query_steps': st.query_steps, 'gate': st.gate,
                               'activation': st.activation, 'gate_input': st.gate_input, 'layer_norm': st.layer_norm,
                               'heads': st.heads, 'd_model': st.d_model, 'dropout': st.dropout_p,
                               'dedup_keys': st.dedup_keys, 'ortho_weight': st.ortho_weight}
    ev = {g: {k: v for k, v in res.items() if k == 'n_users' or k.startswith(('ortho_cos_', 'cross_cos_'))}
          for g, res in evaluator_result.items() if isinstance(res, dict)}
    headline = {}
    for k, m in modules.items():
        if not m.get('n_query_steps'):
            continue
        st = m['statistics']['all']
        o = stat_name('ortho', m['direction'], m['stage'])
        c = stat_name('cross', m['direction'], m['stage'])
        g = m['gate']
        headline[k] = {'label': m['label'], 'paper': st.get(f'{o}/paper'), 'ortho_cos': st.get(o),
                       'median_abs_cos_x_xatt': st.get(f'{o}/median_abs'), 'cross_cos': st.get(c),
                       'parallel_energy_share_xatt': m['decomposition']['cross_attention'].get('parallel_energy_share'),
                       'parallel_energy_share_update': m['decomposition']['gated_update'].get('parallel_energy_share'),
                       'update_to_x_norm_ratio': m['decomposition']['gated_update'].get('norm_ratio_to_x_median'),
                       'gate_mean': g.get('mean', g.get('alpha')), 'n_steps': st.get(f'{o}/n_steps'),
                       'no_key_steps': st.get(f'{o}/no_key_steps')}
    return {'model': config['model'], 'dataset': config['dataset'],
            'model_file': None if model_file is None else os.path.abspath(model_file), 'split': split,
            'n_users': int(len(users['domain'])), 'n_users_A': int((users['domain'] == 0).sum()),
            'n_users_B': int((users['domain'] == 1).sum()), 'gca': gca, 'headline': headline, 'modules': modules,
            'evaluator': ev, 'agreement': agreement(modules, evaluator_result)}


# -------------------------------------------------------------------- entry points
def probe(config, model, dataset, loader, model_file=None, split='test'):
    """Probe ``model`` on ``loader`` (one evaluation pass). Returns ``(payload, capture)``: the JSON
    payload and the :class:`Capture` with the per-step arrays (:meth:`Capture.row_arrays`)."""
    result, cap = capture_pass(model, config, dataset, loader)
    return summarize(cap, result, config, model_file=model_file, split=split), cap


def has_gca_weights(state_dict):
    """Whether a checkpoint's weights hold GCA layers (``...<stage>.<a|b>.attn.in_proj.weight`` of a
    :class:`GCAStages`): a quick test before the data are loaded."""
    pat = re.compile(r'(^|\.)\d+\.[ab]\.attn\.in_proj\.weight$')
    return any(pat.search(k) for k in state_dict)


def probe_checkpoint(model_file, split='test', out=None, device=None, plots=True):
    """Load ``model_file`` (:func:`recbole_ortho.quick_start.load_data_and_model`), probe it on
    ``split`` and, with ``out``, write ``out/probe.json`` and the PNGs. Returns the payload."""
    from recbole_ortho.quick_start import load_data_and_model, read_checkpoint
    if split not in ('valid', 'test'):
        raise ValueError(f'--split: [{split}] must be valid or test')
    ckpt = read_checkpoint(model_file)
    if not has_gca_weights(ckpt['state_dict']):
        raise NoGCAError(f"{model_file}: {ckpt['config']['model']} has no GCA layer; the probe needs a _GCA model "
                         f"(ABXI_GCA, LLM4CDSR_GCA, CDSRNP_GCA, ...)")
    del ckpt
    config, model, dataset, _, valid_data, test_data = load_data_and_model(model_file, device=device)
    payload, _ = probe(config, model, dataset, valid_data if split == 'valid' else test_data,
                       model_file=model_file, split=split)
    if out is not None:
        write_probe(payload, out, plots=plots)
    return payload


def write_probe(payload, out, plots=True):
    """Write ``out/probe.json`` (atomically) and, with ``plots``, the PNGs; returns the PNG paths."""
    from recbole_ortho.quick_start import write_json_atomic
    os.makedirs(out, exist_ok=True)
    pngs = []
    if plots:
        from recbole_ortho.analysis.probe_plots import plot_probe
        pngs = plot_probe(payload, out)
    payload['figures'] = [os.path.basename(p) for p in pngs]
    write_json_atomic(os.path.join(out, 'probe.json'), payload)
    return pngs


def _fmt(v, spec='.4f'):
    return 'nan' if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


#: the columns of :func:`headline_table` after the module's label, with their widths
HEADER = (('paper', 8), ("|cos X,X'|", 12), ('median', 8), ('|cos X,Y|', 11), ("X' along X", 12),
          ("GX' along X", 13), ("|GX'|/|X|", 11), ('gate', 8), ('steps', 9), ('no key', 8))


def headline_table(payload):
    """The headline numbers of every module as a text table."""
    lines = [f"{payload['model']} on {payload['dataset']}, {payload['split']} split, {payload['n_users']} users "
             f"({payload['n_users_A']} with an A target, {payload['n_users_B']} with a B target)",
             'module'.ljust(14) + ''.join(h.rjust(w) for h, w in HEADER)]
    for k, h in payload['headline'].items():
        lines.append(f"{h['label']:<14}{_fmt(h['paper']):>8}{_fmt(h['ortho_cos']):>12}"
                     f"{_fmt(h['median_abs_cos_x_xatt'], '.3f'):>8}{_fmt(h['cross_cos']):>11}"
                     f"{_fmt(h['parallel_energy_share_xatt'], '.2%'):>12}"
                     f"{_fmt(h['parallel_energy_share_update'], '.2%'):>13}"
                     f"{_fmt(h['update_to_x_norm_ratio'], '.3f'):>11}{_fmt(h['gate_mean'], '.3f'):>8}"
                     f"{h['n_steps'] or 0:>9}{h['no_key_steps'] or 0:>8}")
    a = payload['agreement']
    lines.append(f"agreement with the evaluator: max |diff| {_fmt(a['max_abs_diff'], '.2e')} over {a['n_compared']} "
                 f"values (tolerance {a['tolerance']:.0e}): {'ok' if a['ok'] else 'MISMATCH'}")
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m recbole_ortho.probe',
                                description="Probe the GCA modules of a trained _GCA model: one evaluation pass, "
                                            "orthogonality statistics, decomposition, gate; a JSON and PNGs.")
    p.add_argument('--model_file', required=True, help='checkpoint written with save_model: True (saved/*.pth)')
    p.add_argument('--split', default='test', choices=('valid', 'test'), help='evaluated split (default test)')
    p.add_argument('--out', default=None, help='output folder (default: probe_<checkpoint name> beside it)')
    p.add_argument('--device', default=None, help='cpu or cuda (default: cuda only if trained on one and present)')
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: torch default)')
    p.add_argument('--no_plots', action='store_true', help='write the JSON only')
    a = p.parse_args(argv)
    out = a.out or os.path.join(os.path.dirname(os.path.abspath(a.model_file)),
                                'probe_' + os.path.splitext(os.path.basename(a.model_file))[0])
    try:
        from recbole_ortho.utils.utils import set_threads
        set_threads(a.threads)
        payload = probe_checkpoint(a.model_file, split=a.split, out=out, device=a.device, plots=not a.no_plots)
    except (ValueError, OSError, KeyError) as e:          # bad input, a base model: one line, no traceback
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f'error: {msg}', file=sys.stderr)
        return 2
    print(headline_table(payload))
    print(f"wrote {os.path.join(out, 'probe.json')} and {len(payload['figures'])} figures to {out}")
    if not payload['agreement']['ok']:
        getLogger().warning(f"probe: the statistics differ from the evaluator's ({payload['agreement']})")
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
