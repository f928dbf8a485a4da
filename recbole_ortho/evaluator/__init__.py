from recbole_ortho.evaluator.evaluator import (
    CDSREvaluator, rank_of_target, rank_metrics, full_rank, sampled_rank, aggregate_by_domain,
)

__all__ = ['CDSREvaluator', 'rank_of_target', 'rank_metrics', 'full_rank', 'sampled_rank',
           'aggregate_by_domain']
