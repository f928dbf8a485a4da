"""
recbole_ortho.evaluator.metrics
###############################

The one registry of ranking metrics: each metric is named, parsed and computed here.

A metric is computed per user from the 1-based rank ``r`` of the target (1 + number of
candidates scored strictly higher) and the number of negatives ``n``:

============  ============  ===========================================================
name          cut-off       value
============  ============  ===========================================================
``hit@k``     required      ``[r <= k]``
``ndcg@k``    required      ``[r <= k] / log2(r + 1)`` (one relevant item)
``mrr``       none          ``1 / r`` (not truncated)
``auc``       none          ``(n - (r - 1)) / n``: share of negatives scored at or below the target
============  ============  ===========================================================

**Ties** (``eval_ties``): when ``t`` other candidates score exactly as the target, its rank lies
anywhere in ``r .. r + t``. ``optimistic`` takes ``r`` (the target wins every tie: what the
official ABXI and LLM4CDSR codes compute), ``pessimistic`` takes ``r + t``, and ``average`` (the
default) the metric's expected value under a uniformly random tie-break: the mean of the metric
over the ranks ``r .. r + t`` (for ``auc``, linear in the rank, the metric at the expected rank
``r + t / 2``). A trained item table has no ties, so ``t = 0`` and the three rules agree; ties
arise where items share an embedding (LLM4CDSR's items without a title).

Names are case-insensitive (``NDCG@10`` = ``ndcg@10``). :func:`parse_metric` validates a name
(the configuration calls it before any data is loaded), :func:`compute_metrics` computes a list
of them. A new metric is one :class:`Metric` entry in :data:`METRICS`.
"""

from dataclasses import dataclass
from typing import Callable

import torch

from recbole_ortho.utils.errors import ConfigError


#: the tie rules of ``eval_ties`` (see the module docstring)
TIE_RULES = ('optimistic', 'average', 'pessimistic')


@dataclass(frozen=True)
class Metric:
    """A ranking metric: ``fn(rank, n_neg, k)`` -> per-user values (``float64`` tensors);
    ``cutoff``: whether the name carries ``@k``; ``linear``: the value is linear in the rank (its
    expectation over tied ranks is its value at the expected rank)."""
    cutoff: bool
    fn: Callable
    doc: str
    linear: bool = False


METRICS = {
    'hit': Metric(True, lambda r, n, k: (r <= k).double(), 'hit ratio: [r <= k]'),
    'ndcg': Metric(True, lambda r, n, k: torch.where(r <= k, 1.0 / torch.log2(r + 1.0), torch.zeros_like(r)),
                   'NDCG with one relevant item: [r <= k] / log2(r + 1)'),
    'mrr': Metric(False, lambda r, n, k: 1.0 / r, 'reciprocal rank 1 / r'),
    'auc': Metric(False, lambda r, n, k: (n.double().clamp(min=1) - (r - 1.0)) / n.double().clamp(min=1),
                  'share of negatives scored at or below the target', linear=True),
}


def known_metrics():
    """The metric names as a user writes them (``ndcg@k, hit@k, mrr, auc``)."""
    return ', '.join(f'{b}@k' if m.cutoff else b for b, m in METRICS.items())


def parse_metric(name):
    """``'ndcg@10'`` -> ``('ndcg', 10)``; ``'mrr'`` -> ``('mrr', None)``. Raises
    :class:`~recbole_ortho.utils.errors.ConfigError` (``metrics: ...``) for an unknown name or a
    wrong cut-off."""
    s = str(name).strip().lower()
    base, _, k = s.partition('@')
    if base not in METRICS:
        raise ConfigError(f"metrics: unknown metric [{name}]; known: {known_metrics()}")
    if METRICS[base].cutoff:
        if not k.isdigit() or int(k) <= 0:
            raise ConfigError(f"metrics: [{name}] needs a positive cut-off, e.g. {base}@10")
        return base, int(k)
    if k:
        raise ConfigError(f"metrics: [{name}] takes no cut-off")
    return base, None


def compute_metrics(names, rank, n_neg, ties=None, tie_rule='optimistic'):
    """Per-user values ``{name: [U] float64}`` of the metrics ``names`` from 1-based ranks
    ``rank [U]`` (1 + candidates scored strictly higher), negative counts ``n_neg [U]`` and,
    optionally, the number of other candidates tied with the target ``ties [U]``, resolved by
    ``tie_rule`` (:data:`TIE_RULES`; without ``ties`` every rule gives the optimistic value)."""
    if tie_rule not in TIE_RULES:
        raise ConfigError(f"eval_ties: [{tie_rule}] must be one of {', '.join(TIE_RULES)}")
    rank = torch.as_tensor(rank).double()
    n_neg = torch.as_tensor(n_neg)
    if ties is None or tie_rule == 'optimistic':
        ties = torch.zeros_like(rank)
    ties = torch.as_tensor(ties).double()
    if tie_rule == 'pessimistic':
        rank, ties = rank + ties, torch.zeros_like(rank)
    out = {}
    for name in names:
        base, k = parse_metric(name)
        m = METRICS[base]
        if m.linear or not bool((ties > 0).any()):
            out[name] = m.fn(rank + ties / 2, n_neg, k)
        else:                                  # mean of fn over the ranks rank .. rank + ties
            top = int((rank + ties).max())
            r = torch.arange(1, top + 1, dtype=torch.float64)
            prefix = torch.cat([r.new_zeros(1), torch.cumsum(m.fn(r, None, k), 0)])   # prefix[j] = sum_{r <= j}
            lo, hi = rank.long(), (rank + ties).long()
            out[name] = (prefix[hi] - prefix[lo - 1]) / (ties + 1)
    return out
