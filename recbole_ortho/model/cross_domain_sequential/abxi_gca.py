r"""
ABXI_GCA
################################################

ABXI with gated cross-attention (GCA) between its two domain inputs.

Reference:
    Hyunin Lee et al. "Cross-attention Secretly Performs Orthogonal Alignment in Recommendation
    Models." arXiv:2510.09435, 2025.

    Qingtian Bian et al. "ABXI: Invariant Interest Adaptation for Task-Guided Cross-Domain
    Sequential Recommendation." In WWW 2025 (https://github.com/DiMarzioBian/ABXI).
"""

import torch.nn as nn

from recbole_ortho.model.cross_domain_sequential.abxi import ABXI, _cfg
from recbole_ortho.model.layers import GatedCrossAttention

__all__ = ['ABXI_GCA']


def _positions(value):
    if isinstance(value, int):
        return [value]
    if isinstance(value, str):
        value = [v for v in value.replace('[', '').replace(']', '').split(',') if v.strip()]
    return [int(v) for v in value]


class ABXI_GCA(ABXI):
    r"""ABXI + GCA: at each stage ``p`` of ``gca_positions`` (0 = after the embeddings, ``i`` =
    after encoder block ``i``) the step-aligned A and B inputs exchange information through two
    GCA layers (:class:`~recbole_ortho.model.layers.GatedCrossAttention`), one per direction:

    .. math::

        X_A \leftarrow \mathrm{GCA}_A(X_A, X_B), \qquad X_B \leftarrow \mathrm{GCA}_B(X_B, X_A)

    both computed from the states before the update. ``X_A[t]`` is the A state at step ``t``
    (A history up to ``t``, see :class:`ABXI`); a query at step ``t`` attends causally to the
    other domain's states at steps ``<= t`` that exist (after that domain's first item; with
    ``gca_dedup_keys`` only the steps where an item of that domain occurs, i.e. each distinct
    state once). The gate sees ``[X_A; X_B]`` at the same step (``concat_other``) or
    ``[X_A; X'_A]`` (``concat_attn``). Everything else is ABXI's (no code copied: ABXI's
    :meth:`~ABXI.domain_interaction` hook is overridden), except that the domain inputs hold a
    state at every step (``filled_domain_states``), which GCA needs. In the encoder's
    self-attention a domain state at step ``t`` still attends to the states at its domain's
    occurrences ``<= t`` (each domain item once, as ABXI); what GCA added at a step without an
    occurrence flows on through the residual path. With GCA layers that return their input the
    model computes exactly ABXI (tested).

    Extra parameters: ``2 * len(gca_positions) * (7 d^2 + 6 d [+ 2 d with LayerNorm])``.

    During evaluation (``self.recording``) each GCA records per user, averaged over its query
    steps: ``ortho_cos_a@gca{p}`` = :math:`|\cos(X_A, X'_A)|` (direction A attends to B),
    ``ortho_cos_b@gca{p}`` (B attends to A), and ``cross_cos_a@gca{p}`` /
    ``cross_cos_b@gca{p}`` = :math:`|\cos(X_A, X_B)|` at the same step (NaN for a user without
    such a step).
    """

    filled_domain_states = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        positions = sorted(set(_positions(_cfg(config, 'gca_positions', [0]))))
        for p in positions:
            if not 0 <= p <= self.n_layers:
                raise ValueError(f'gca_positions: {p} is not in [0, n_layers={self.n_layers}]')
        self.gca_positions = positions
        self.gca_activation = str(_cfg(config, 'gca_activation', 'sigmoid'))
        self.gca_heads = int(_cfg(config, 'gca_heads', 4))
        self.gca_layernorm = bool(_cfg(config, 'gca_layernorm', True))
        self.gca_gate_input = str(_cfg(config, 'gca_gate_input', 'concat_other'))
        self.gca_dropout = float(_cfg(config, 'gca_dropout', self.dropout_prob))
        self.gca_dedup_keys = bool(_cfg(config, 'gca_dedup_keys', False))

        def layer():
            return GatedCrossAttention(self.embedding_size, n_heads=self.gca_heads, activation=self.gca_activation,
                                       layer_norm=self.gca_layernorm, gate_input=self.gca_gate_input,
                                       dropout=self.gca_dropout, layer_norm_eps=self.layer_norm_eps)

        self.gca = nn.ModuleDict({str(p): nn.ModuleDict({'a': layer(), 'b': layer()}) for p in positions})
        self.interaction_stages = frozenset(positions)

    def domain_interaction(self, stage, h_a, h_b, ctx):
        layers = self.gca[str(stage)]
        rec = self.recording
        states = (h_a, h_b)
        out = []
        for d, name in ((0, 'a'), (1, 'b')):
            o = 1 - d
            q_index, kv = ctx.rows[d], states[o]
            at = ctx.row_at[o][q_index]                    # the other domain's row at the same step
            other_valid = at >= 0
            if kv.size(0):
                other = kv[at.clamp_min(0)] * other_valid.unsqueeze(-1).to(kv.dtype)
            else:                                          # no state of the other domain in the batch
                other = kv.new_zeros(q_index.numel(), kv.size(1))
            k_index = ctx.rows[o]
            if self.gca_dedup_keys:                        # keys: only the other domain's occurrences
                sel = ctx.occ[o].reshape(-1)[k_index]
                kv, k_index = kv[sel], k_index[sel]
            res = layers[name].forward_packed(states[d], q_index, kv, k_index, ctx.B, ctx.L, other=other,
                                              other_valid=other_valid, return_stats=rec)
            if rec:
                res, st = res
                self.record_stat(f'ortho_cos_{name}@gca{stage}', st['ortho'])
                self.record_stat(f'cross_cos_{name}@gca{stage}', st['cross'])
            out.append(res)
        return tuple(out)
