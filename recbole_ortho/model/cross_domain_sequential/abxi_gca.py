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
    after encoder block ``i``) the A and B inputs exchange information through two GCA layers
    (:class:`~recbole_ortho.model.layers.GatedCrossAttention`), one per direction:

    .. math::

        X_A \leftarrow \mathrm{GCA}_A(X_A, X_B), \qquad X_B \leftarrow \mathrm{GCA}_B(X_B, X_A)

    both computed from the states before the update. Everything else is ABXI's (no code copied:
    ABXI's :meth:`~ABXI.domain_interaction` hook is overridden). Where the queries are
    (``gca_query_steps``):

    * ``occurrence`` (default): ABXI's layout unchanged. A domain has a state only at the steps
      where one of its items occurs, and the A state used at a later step (e.g. for a B target,
      or as a key) is the one of the latest A occurrence, exactly as in ABXI. The A state at an
      A occurrence ``t`` attends to the B states at the B occurrences ``< t`` of the same user
      (causal, each B item once, no padding), and the gate's other input (``concat_other``) is
      the B state at the latest B occurrence before ``t`` (0 before the user's first B item;
      ``X'_A = 0`` then too, hence ``GCA = LN(X_A)``). B likewise. GCA runs on as many rows as
      ABXI's domain encoders (one per item), and both directions are computed together
      (:meth:`~recbole_ortho.model.layers.GatedCrossAttention.forward_packed_pair`: one fused
      input projection per domain, one masked attention over each user's merged sequence).
      ``gca_dedup_keys`` has no effect (the keys are the occurrences).
    * ``every``: the domain inputs hold a state at *every* step after their domain's first item
      (``filled_domain_states``; ~1.4x the encoder rows and ~2x the GCA rows of ``occurrence``).
      ``X_A[t]`` is the A state at step ``t`` (A history up to ``t``); it attends to the B states
      at the steps ``<= t`` that exist (after B's first item; with ``gca_dedup_keys`` only at the
      B occurrences, i.e. each distinct state once), and the gate sees the B state at the same
      step. In the encoder's self-attention a domain state at step ``t`` still attends to the
      states at its domain's occurrences ``<= t`` (each domain item once, as ABXI); what GCA
      added at a step without an occurrence flows on through the residual path.

    In both modes nothing after step ``t`` reaches step ``t`` (tested), and with GCA layers that
    return their input the model computes exactly ABXI (tested).

    Extra parameters: ``2 * len(gca_positions) * (7 d^2 + 6 d [+ 2 d with LayerNorm])``.

    During evaluation (``self.recording``) each GCA records per user, averaged over its query
    steps: ``ortho_cos_a@gca{p}`` = :math:`|\cos(X_A, X'_A)|` (direction A attends to B; query
    steps with at least one key), ``ortho_cos_b@gca{p}`` (B attends to A), and
    ``cross_cos_a@gca{p}`` / ``cross_cos_b@gca{p}`` = :math:`|\cos(X_A, X_B)|` with ``X_B`` the
    B state at the latest step ``<= t`` that has one (``every``: the same step); query steps
    where B has no state yet are left out. NaN for a user without such a step.
    """

    QUERY_STEPS = ('occurrence', 'every')

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        if self.official_quirks:
            raise ValueError('ABXI_GCA does not support official_quirks=True '
                             '(the official layouts are not step-aligned in evaluation)')
        positions = sorted(set(_positions(_cfg(config, 'gca_positions', [0]))))
        for p in positions:
            if not 0 <= p <= self.n_layers:
                raise ValueError(f'gca_positions: {p} is not in [0, n_layers={self.n_layers}]')
        self.gca_positions = positions
        self.gca_query_steps = str(_cfg(config, 'gca_query_steps', 'occurrence'))
        if self.gca_query_steps not in self.QUERY_STEPS:
            raise ValueError(f'gca_query_steps [{self.gca_query_steps}] must be one of {self.QUERY_STEPS}')
        self.filled_domain_states = self.gca_query_steps == 'every'
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
        if not ctx.filled:          # occurrence: A and B rows are at disjoint steps -> both directions at once
            res = GatedCrossAttention.forward_packed_pair(
                layers['a'], layers['b'], h_a, ctx.rows[0], h_b, ctx.rows[1], ctx.B, ctx.L,
                other_index_a=ctx.latest_row(1, ctx.rows[0]), other_index_b=ctx.latest_row(0, ctx.rows[1]),
                return_stats=rec)
            if not rec:
                return res
            for name, st in zip('ab', res[1]):
                self.record_stat(f'ortho_cos_{name}@gca{stage}', st['ortho'])
                self.record_stat(f'cross_cos_{name}@gca{stage}', st['cross'])
            return res[0]
        states = (h_a, h_b)
        out = []
        for d, name in ((0, 'a'), (1, 'b')):
            o = 1 - d
            q_index, kv, k_index = ctx.rows[d], states[o], ctx.rows[o]
            at = ctx.latest_row(o, q_index)                # row of the other domain's latest state <= t
            if self.gca_dedup_keys:                        # keys: only the other domain's occurrences
                valid = at >= 0                            # (the gate's input may be a non-key row)
                other = kv[at.clamp_min(0)] * valid.unsqueeze(-1).to(kv.dtype) if kv.size(0) \
                    else kv.new_zeros(q_index.numel(), kv.size(1))
                sel = ctx.occ[o].reshape(-1)[k_index]
                res = layers[name].forward_packed(states[d], q_index, kv[sel], k_index[sel], ctx.B, ctx.L,
                                                  other=other, other_valid=valid, return_stats=rec)
            else:                                          # the gate's input is the key row `at`
                res = layers[name].forward_packed(states[d], q_index, kv, k_index, ctx.B, ctx.L,
                                                  other_index=at, return_stats=rec)
            if rec:
                res, st = res
                self.record_stat(f'ortho_cos_{name}@gca{stage}', st['ortho'])
                self.record_stat(f'cross_cos_{name}@gca{stage}', st['cross'])
            out.append(res)
        return tuple(out)
