from recbole_ortho.evaluator.evaluator import (
    CDSREvaluator, rank_of_target, full_rank, sampled_rank, aggregate_by_domain,
)
from recbole_ortho.evaluator.metrics import METRICS, Metric, compute_metrics, parse_metric

__all__ = ['CDSREvaluator', 'rank_of_target', 'full_rank', 'sampled_rank', 'aggregate_by_domain',
           'METRICS', 'Metric', 'compute_metrics', 'parse_metric']
