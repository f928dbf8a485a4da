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

Names are case-insensitive (``NDCG@10`` = ``ndcg@10``). :func:`parse_metric` validates a name
(the configuration calls it before any data is loaded), :func:`compute_metrics` computes a list
of them. A new metric is one :class:`Metric` entry in :data:`METRICS`.
"""

from dataclasses import dataclass
from typing import Callable

import torch

from recbole_ortho.utils.errors import ConfigError


@dataclass(frozen=True)
class Metric:
    """A ranking metric: ``fn(rank, n_neg, k)`` -> per-user values (``float64`` tensors);
    ``cutoff``: whether the name carries ``@k``."""
    cutoff: bool
    fn: Callable
    doc: str


METRICS = {
    'hit': Metric(True, lambda r, n, k: (r <= k).double(), 'hit ratio: [r <= k]'),
    'ndcg': Metric(True, lambda r, n, k: torch.where(r <= k, 1.0 / torch.log2(r + 1.0), torch.zeros_like(r)),
                   'NDCG with one relevant item: [r <= k] / log2(r + 1)'),
    'mrr': Metric(False, lambda r, n, k: 1.0 / r, 'reciprocal rank 1 / r'),
    'auc': Metric(False, lambda r, n, k: (n.double().clamp(min=1) - (r - 1.0)) / n.double().clamp(min=1),
                  'share of negatives scored at or below the target'),
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


def compute_metrics(names, rank, n_neg):
    """Per-user values ``{name: [U] float64}`` of the metrics ``names`` from 1-based ranks
    ``rank [U]`` and negative counts ``n_neg [U]``."""
    rank = rank.double()
    out = {}
    for name in names:
        base, k = parse_metric(name)
        out[name] = METRICS[base].fn(rank, n_neg, k)
    return out
