"""
recbole_ortho.evaluator.evaluator
#################################

The one evaluator of recbole_ortho: per-domain ranking metrics of next-item prediction.

Protocols (``eval_protocol``):

- ``sampled``: the target is ranked among ``eval_neg_num`` negatives drawn once (seed
  ``eval_seed``) from the target's domain, excluding the user's own items
  (``eval_neg_exclude: history``, the ABXI protocol) or only the target
  (``eval_neg_exclude: target``, the C2DSR protocol);
- ``full``: the target is ranked among all items of its domain except the items of the user's
  input history (the target itself stays a candidate even if it also occurs in the history).

Rank = 1 + number of candidates scored *strictly* higher than the target; the candidates scored
exactly as the target (ties) are counted apart and resolved by ``eval_ties`` (``average``, the
default: the metric's expected value under a random tie-break; ``optimistic``: the target wins
every tie, as the official codes; ``pessimistic``), see :mod:`recbole_ortho.evaluator.metrics`.
Each domain's entry counts its users whose target was tied with at least one candidate
(``n_tied_targets``). The metrics computed from the rank are those of the registry
:mod:`recbole_ortho.evaluator.metrics` (``hit@k``, ``ndcg@k``, ``mrr``, ``auc``).

After each pass the per-user ranks are kept in :attr:`CDSREvaluator.last_ranks` (user token,
domain, rank, ties, negatives), which ``save_ranks: True`` writes beside the result file.

Every metric is averaged over users whose target is in domain A, in domain B, and over all
users (``{'A': {...}, 'B': {...}, 'all': {...}}``). Statistics a model records during the
pass (:meth:`~recbole_ortho.model.abstract_recommender.CrossDomainSeqRecommender.record_stat`,
e.g. orthogonality cosines) are averaged the same way and reported beside the metrics; values it
records per query step (``record_steps``) are pooled per domain (:func:`step_summaries`).

When the batches say which users are overlapped (the ``overlapped`` field of
:class:`~recbole_ortho.data.dataloader.EvalDataLoader`: the user's data, after ``overlap_ratio``,
has both domains), the same is reported for the overlapped and the non-overlapped users apart,
beside each of A, B and all: ``'A/overlap'``, ``'A/non_overlap'``, ``'B/overlap'``, ...,
``'all/non_overlap'`` (:data:`GROUPS`), each with its ``n_users``. These keys are always there (a
group without users has ``n_users`` 0 and NaN values, as a domain without users), and only the
plain ``A``, ``B`` and ``all`` entries select the best epoch.
"""

import math

import numpy as np
import torch
from tqdm import tqdm

from recbole_ortho.evaluator.metrics import compute_metrics
from recbole_ortho.utils.precision import autocast, resolve_precision

DOMAINS = ('A', 'B', 'all')
#: the user groups reported beside each domain (``'<domain>/<group>'`` in the result)
USER_GROUPS = ('overlap', 'non_overlap')
GROUPS = tuple(f'{d}/{g}' for d in DOMAINS for g in USER_GROUPS)


def rank_of_target(target_score, other_scores, valid=None, with_ties=False):
    """``1 + #{other > target}`` per row; ``valid`` (bool, same shape as ``other_scores``)
    restricts the count to real candidates. With ``with_ties`` also ``#{other == target}``."""
    t = target_score.unsqueeze(-1)
    higher = other_scores > t
    if valid is not None:
        higher &= valid
    rank = 1 + higher.sum(-1)
    if not with_ties:
        return rank
    tied = other_scores == t
    if valid is not None:
        tied &= valid
    return rank, tied.sum(-1)


def sampled_rank(scores_cand):
    """``(rank, n_negatives, ties)`` of column 0 (the target) among the candidates of each row ``[B, 1 + N]``."""
    n = scores_cand.size(1) - 1
    rank, ties = rank_of_target(scores_cand[:, 0], scores_cand[:, 1:], with_ties=True)
    return rank, torch.full_like(scores_cand[:, 0], n).long(), ties


def full_rank(scores, target, history, lo, hi):
    """Rank of ``target`` among the items of ``[lo, hi)`` (per row) minus the ``history`` items.

    ``scores``: ``[B, n_items]``; ``history``: ``[B, L]`` (0 = padding); ``lo``/``hi``: ``[B]``.
    Returns ``(rank, n_negatives, ties)``.
    """
    B, n_items = scores.shape
    ar = torch.arange(n_items, device=scores.device)
    valid = (ar[None, :] >= lo[:, None]) & (ar[None, :] < hi[:, None])
    valid.scatter_(1, history, False)
    valid[torch.arange(B, device=scores.device), target] = False   # the target is not its own negative
    t_score = scores.gather(1, target[:, None]).squeeze(1)
    rank, ties = rank_of_target(t_score, scores, valid, with_ties=True)
    return rank, valid.sum(1), ties


def aggregate_by_domain(values, domain):
    """``{name: [U]}`` and ``domain [U]`` (0 = A, 1 = B) -> ``{'A': {name: mean}, 'B': ..., 'all': ...}``
    (a domain without users gets NaN and ``n_users`` 0; NaN values of a user, where a statistic
    is undefined, are left out of the mean)."""
    return {d: _mean_over(values, m) for d, m in _domain_masks(domain).items()}


def _domain_masks(domain):
    return {'A': domain == 0, 'B': domain == 1, 'all': np.ones_like(domain, dtype=bool)}


def _group_masks(domain, overlapped):
    """``{'A/overlap': mask, 'A/non_overlap': ..., ..., 'all/non_overlap': ...}``."""
    ov = np.asarray(overlapped).astype(bool)
    out = {}
    for d, m in _domain_masks(domain).items():
        out[f'{d}/overlap'] = m & ov
        out[f'{d}/non_overlap'] = m & ~ov
    return out


def _mean_over(values, m):
    res = {'n_users': int(m.sum())}
    for k, v in values.items():
        sel = v[m]
        sel = sel[~np.isnan(sel)]   # a statistic may be undefined for a user (e.g. no valid position)
        res[k] = float(sel.mean()) if len(sel) else math.nan
    return res


def aggregate_by_group(values, domain, overlapped):
    """As :func:`aggregate_by_domain`, for the overlapped and the non-overlapped users (bool
    ``overlapped [U]``) of each domain: ``{'A/overlap': {...}, 'A/non_overlap': ..., ...,
    'all/non_overlap': ...}`` (a group without users has ``n_users`` 0 and NaN values)."""
    return {g: _mean_over(values, m) for g, m in _group_masks(domain, overlapped).items()}


#: the summaries reported for a statistic a model records per query step (``<name>/<summary>``)
STEP_SUMMARIES = ('paper', 'pooled_signed', 'pooled_abs', 'median_abs', 'n_steps', 'no_key_steps')


def step_summaries(values):
    r"""Summaries of signed per-step values (e.g. :math:`\cos(X, X')` of every GCA query step):
    ``paper`` = :math:`|\mathrm{mean}(v)|` (the seed paper's statistic: one average over all
    (user, position) pairs, the absolute value around it), ``pooled_signed`` = :math:`\mathrm{mean}(v)`,
    ``pooled_abs`` = :math:`\mathrm{mean}(|v|)`, ``median_abs`` = :math:`\mathrm{median}(|v|)` (NaN
    without values), over the steps with a value; ``n_steps`` counts those steps and
    ``no_key_steps`` the steps recorded as NaN (a GCA query without any key, e.g. a
    non-overlapped user's: ``X' = 0``, left out of the statistic)."""
    values = np.asarray(values)
    nan = np.isnan(values)
    counts = {'n_steps': int((~nan).sum()), 'no_key_steps': int(nan.sum())}
    values = values[~nan]
    if len(values) == 0:
        return {**{k: math.nan for k in STEP_SUMMARIES[:4]}, **counts}
    a = np.abs(values)
    mean = float(np.mean(values))
    return {'paper': abs(mean), 'pooled_signed': mean, 'pooled_abs': float(np.mean(a)),
            'median_abs': float(np.median(a)), **counts}


def _setting(config, key, default):
    """``config[key]``, or ``default`` for a config (e.g. a test's dict) without that key."""
    try:
        v = config[key]
    except KeyError:
        return default
    return default if v is None else v


class CDSREvaluator:
    """Evaluates a model on an :class:`~recbole_ortho.data.dataloader.EvalDataLoader`."""

    def __init__(self, config, data, precision=None):
        self.config = config
        #: ``fp32`` or ``bf16`` (the scores under bf16 autocast, ranked in fp32); default: the ``precision`` setting
        self.precision = precision or resolve_precision(_setting(config, 'precision', 'fp32'),
                                                        _setting(config, 'device', 'cpu'),
                                                        _setting(config, 'bf16_emulation', False))
        self.metrics = list(config['metrics'])
        self.protocol = config['eval_protocol']
        self.seq_field = config['ITEM_ID_FIELD'] + config['LIST_SUFFIX']
        self.iid = config['ITEM_ID_FIELD']
        self.ranges = torch.tensor([data.domain_range[0], data.domain_range[1]], dtype=torch.long)
        self.show_progress = config['show_progress']
        self.tie_rule = config['eval_ties']
        self.user_tokens = getattr(data, 'user_tokens', None)
        self.uid = config['USER_ID_FIELD']
        #: per-user ranks of the last pass: ``{'user', 'domain', 'rank', 'ties', 'n_neg'}`` (numpy)
        self.last_ranks = None

    @torch.no_grad()
    def evaluate(self, model, loader, desc='Evaluate'):
        model.eval()
        device = next(model.parameters()).device
        recorder = hasattr(model, 'start_recording')
        if recorder:
            model.start_recording()
        values, stats, steps, doms, ovls = {m: [] for m in self.metrics}, {}, {}, [], []
        per_user = {'user': [], 'rank': [], 'ties': [], 'n_neg': []}
        it = tqdm(loader, total=len(loader), ncols=100, desc=desc, leave=False) if self.show_progress else loader
        try:
            for batch in it:
                batch = batch.to(device)
                sampled_scores = self.protocol == 'sampled' and hasattr(model, 'sampled_predict')
                with autocast(self.precision, device):
                    scores = model.sampled_predict(batch, batch['candidates']) if sampled_scores \
                        else model.full_sort_predict(batch)
                scores = scores.float()
                if scores.dim() == 1:
                    scores = scores.view(batch[self.iid].size(0), -1)
                dom = batch['domain_id']
                ovl = batch['overlapped'] if 'overlapped' in batch else None
                if self.protocol == 'sampled':
                    rank, n_neg, ties = sampled_rank(scores if sampled_scores else scores.gather(1, batch['candidates']))
                else:
                    r = self.ranges.to(device)[dom]
                    rank, n_neg, ties = full_rank(scores, batch[self.iid], batch[self.seq_field], r[:, 0], r[:, 1])
                rank, n_neg, ties = rank.cpu(), n_neg.cpu(), ties.cpu()
                for k, v in compute_metrics(self.metrics, rank, n_neg, ties, self.tie_rule).items():
                    values[k].append(v)
                for k, v in (('rank', rank), ('ties', ties), ('n_neg', n_neg)):
                    per_user[k].append(v)
                if self.uid in batch:
                    per_user['user'].append(batch[self.uid].cpu())
                if recorder:
                    for k, v in model.pop_stats().items():
                        stats.setdefault(k, []).append(v.cpu())
                    for k, (v, u) in (model.pop_steps().items() if hasattr(model, 'pop_steps') else ()):
                        steps.setdefault(k, []).append((v.cpu(), dom[u].cpu(),      # value, its user's domain
                                                        None if ovl is None else ovl[u].cpu()))   # and group
                doms.append(dom.cpu())
                ovls.append(None if ovl is None else ovl.cpu())
                del scores   # free the [B, n_items] matrix before the next batch is scored
        finally:
            if recorder:
                model.stop_recording()
        dom = torch.cat(doms).numpy()
        flat = {k: torch.cat(v).numpy() for k, v in values.items()}
        for k, v in stats.items():
            v = torch.cat(v).numpy()
            if len(v) == len(dom):
                flat[k] = v
        res = aggregate_by_domain(flat, dom)
        grouped = len(ovls) > 0 and all(o is not None for o in ovls)
        masks = _domain_masks(dom)
        if grouped:
            res.update(aggregate_by_group(flat, dom, torch.cat(ovls).numpy()))
            masks.update(_group_masks(dom, torch.cat(ovls).numpy()))
        ranks = {k: torch.cat(v).numpy() for k, v in per_user.items() if v}
        for name, mask in masks.items():
            res[name]['n_tied_targets'] = int((ranks['ties'][mask] > 0).sum()) if 'ties' in ranks else 0
        ranks['domain'] = dom.astype(np.int8)
        if 'user' in ranks and self.user_tokens is not None:
            ranks['user'] = np.asarray(self.user_tokens)[ranks['user']]
        self.last_ranks = ranks
        for k, parts in steps.items():
            v = torch.cat([p[0] for p in parts]).numpy()
            d = torch.cat([p[1] for p in parts]).numpy()
            masks = _domain_masks(d)
            if grouped:
                masks.update(_group_masks(d, torch.cat([p[2] for p in parts]).numpy()))
            for name, mask in masks.items():
                for summary, x in step_summaries(v[mask]).items():
                    res[name][f'{k}/{summary}'] = x
        return res

    def valid_score(self, result):
        """The scalar that selects the best epoch (``valid_metric`` on ``valid_domain``)."""
        m, d = self.config['valid_metric'], self.config['valid_domain']
        if d == 'sum':
            return sum(result[x][m] for x in ('A', 'B') if result[x]['n_users'] > 0)
        return result[d][m]
