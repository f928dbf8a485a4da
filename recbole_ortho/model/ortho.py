r"""
recbole_ortho.model.ortho
#########################

The orthogonality statistics of the paper (Lee et al., arXiv:2510.09435): how far the
cross-attention output :math:`X'` of a GCA layer is from its query input :math:`X`, measured as
:math:`|\cos(X, X')|` per query step and averaged per user.

- :func:`abs_cosine`: :math:`|\cos(x, y)|` along the last dimension,
- :func:`masked_row_mean`: per-row means of padded ``[B, L]`` values,
- :func:`rows_mean_per_sequence`: per-sequence means of packed row values,
- :func:`stat_name`: the names under which models record them (``ortho_cos_a@gca0``, ...),
- :func:`query_step_cosines`: every query step's signed cosine, recorded with
  :meth:`~recbole_ortho.model.abstract_recommender.CrossDomainSeqRecommender.record_steps`; the
  evaluator summarises them (:func:`recbole_ortho.evaluator.evaluator.step_summaries`), the
  paper's own statistic among them.

Which number is which (all reported per target domain, ``@gca{p}`` = the GCA stage):

- ``ortho_cos_a@gca0``: mean over users of each user's mean :math:`|\cos(X, X')|` over its query
  steps (A's states attending to B's);
- ``ortho_cos_a@gca0/paper``: the paper's formula, :math:`|\frac{1}{N}\sum_{b,i}\cos(X_{bi}, X'_{bi})|`
  over all N query steps of the users (one pooled average, the absolute value around it);
- ``ortho_cos_a@gca0/pooled_signed``: that average without the absolute value;
- ``ortho_cos_a@gca0/pooled_abs``: the pooled mean of :math:`|\cos|` over all query steps;
- ``ortho_cos_a@gca0/median_abs``: the median of :math:`|\cos|` over all query steps (the paper
  quotes medians of 0.1-0.2).

Models record one value per evaluated user with
:meth:`~recbole_ortho.model.abstract_recommender.CrossDomainSeqRecommender.record_stat`; the
evaluator averages them per target domain.
"""

import torch

#: the statistics a GCA direction records: ``ortho`` = |cos(query input, cross-attention output)|,
#: ``cross`` = |cos(query input, the other domain's input at the same step)|
STAT_KINDS = {'ortho': 'ortho_cos', 'cross': 'cross_cos'}


def stat_name(kind, direction, stage):
    """Name of a recorded statistic: ``stat_name('ortho', 'a', 0) == 'ortho_cos_a@gca0'``
    (``direction`` 'a' = domain A's states attend to B's, 'b' the reverse; ``stage`` = where the
    GCA layer sits, see :class:`recbole_ortho.model.gca_wiring.GCAStages`)."""
    return f'{STAT_KINDS[kind]}_{direction}@gca{stage}'


def abs_cosine(x, y, eps=1e-8):
    r""":math:`|\cos(x, y)|` along the last dimension (0 where either vector is zero)."""
    x, y = x.float(), y.float()                    # in fp32 under bf16 autocast (a no-op in fp32)
    num = (x * y).sum(-1).abs()
    den = x.norm(dim=-1) * y.norm(dim=-1)
    return num / den.clamp_min(eps)


def cosine(x, y, eps=1e-8):
    r"""Signed :math:`\cos(x, y)` along the last dimension (0 where either vector is zero)."""
    x, y = x.float(), y.float()
    return (x * y).sum(-1) / (x.norm(dim=-1) * y.norm(dim=-1)).clamp_min(eps)


def query_step_cosines(x, x_att, valid, seq_of_row, query=None):
    r"""``(values, seq)``: the signed :math:`\cos(X, X')` of every query row (``x``, ``x_att``
    ``[R, d]``; ``query [R]``: the rows that are real query steps, default all) and the sequence
    (user) of each, for the pooled statistics. A query step that is not ``valid`` (it had no key,
    so ``X' = 0``) gets NaN: it is left out of the statistic and counted apart
    (:func:`recbole_ortho.evaluator.evaluator.step_summaries`, ``no_key_steps``)."""
    if query is not None:
        x, x_att, valid, seq_of_row = x[query], x_att[query], valid[query], seq_of_row[query]
    cos = cosine(x, x_att)
    return torch.where(valid, cos, torch.full_like(cos, float('nan'))), seq_of_row


def masked_row_mean(values, mask):
    """Mean of ``values [B, L]`` over the positions where ``mask [B, L]`` is True, per row
    (``[B]``); NaN for a row without any such position."""
    mask = mask.to(values.dtype)
    cnt = mask.sum(-1)
    s = (values * mask).sum(-1)
    return torch.where(cnt > 0, s / cnt.clamp_min(1), torch.full_like(s, float('nan')))


def rows_mean_per_sequence(values, valid, seq_of_row, n_seq):
    """Per-sequence mean of the row ``values [R]`` where ``valid [R]``; ``seq_of_row [R]`` maps a
    row to its sequence. Returns ``[n_seq]`` (NaN for a sequence without any valid row)."""
    w = valid.to(values.dtype)
    s = values.new_zeros(n_seq).index_add_(0, seq_of_row, values * w)
    c = values.new_zeros(n_seq).index_add_(0, seq_of_row, w)
    return torch.where(c > 0, s / c.clamp_min(1), torch.full_like(s, float('nan')))

