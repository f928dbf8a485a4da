from recbole_ortho.evaluator.evaluator import (
    CDSREvaluator, rank_of_target, full_rank, sampled_rank, aggregate_by_domain, aggregate_by_group, GROUPS,
)
from recbole_ortho.evaluator.metrics import METRICS, Metric, compute_metrics, parse_metric

__all__ = ['CDSREvaluator', 'rank_of_target', 'full_rank', 'sampled_rank', 'aggregate_by_domain',
           'aggregate_by_group', 'GROUPS',
           'METRICS', 'Metric', 'compute_metrics', 'parse_metric']
