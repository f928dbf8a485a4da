"""
recbole_ortho.model.gca
#######################

Gated cross-attention (GCA), as in Lee et al., "Cross-attention Secretly Performs Orthogonal
Alignment in Recommendation Models" (arXiv:2510.09435):

:class:`GatedCrossAttention`, the one GCA layer of the package,
``GCA(X_A, X_B) = LN(X_A + Dropout(G ⊙ MHA(X_A, X_B)))`` with a vector-valued gate ``G``, and its
statistics. Where the layers go in a model (the stages, the hook, the ``_GCA`` mixin) is
:mod:`recbole_ortho.model.gca_wiring`.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_ortho.model.kernels import (PairProjection, attention_chunks, gelu, grid_row_bytes, packed_attention,
                                         sequence_ranks)
from recbole_ortho.model.layers import Dropout, LayerNorm, MultiHeadAttention
from recbole_ortho.model.ortho import abs_cosine, query_step_cosines, rows_mean_per_sequence


class GatedCrossAttention(nn.Module):
    r"""Gated cross-attention (GCA), the one cross-attention layer of recbole_ortho.

    .. math::

        X'_A &= \mathrm{MHA}(Q = X_A,\; K = V = X_B)              \\
        G    &= \mathrm{act}\big(W_2\,\mathrm{GELU}(W_1 [X_A ; Z] + b_1) + b_2\big)   \\
        \mathrm{GCA}(X_A, X_B) &= \mathrm{LN}\big(X_A + \mathrm{Dropout}(G \odot X'_A)\big)

    with :math:`Z = X_B` (``gate_input='concat_other'``: the other sequence at the same step,
    for position-aligned inputs such as ABXI's A/B inputs) or :math:`Z = X'_A`
    (``gate_input='concat_attn'``), :math:`W_1 \in R^{d \times 2d}`,
    :math:`W_2 \in R^{d \times d}`, ``act`` = sigmoid or tanh (element-wise: the gate is
    vector-valued), ``LN`` optional (identity when ``layer_norm=False``) and MHA the multi-head
    attention of :class:`MultiHeadAttention` (``n_heads`` heads, boolean mask, no attention
    dropout). A query with no allowed key gets :math:`X'_A = 0` exactly, hence
    ``GCA = LN(X_A)`` there (never NaN). With the zero-initialised biases the sigmoid gate
    starts at 0.5 and the tanh gate at 0.

    Parameters (independent of the heads, the activation and the gate input): attention
    ``4 d^2 + 4 d`` + gate ``(2 d^2 + d) + (d^2 + d)`` + LayerNorm ``2 d`` =
    ``7 d^2 + 6 d (+ 2 d)`` (:meth:`num_parameters`).

    Three entry points with the same computation: :meth:`forward` on padded ``[B, L, d]``
    tensors, :meth:`forward_packed` on the non-padding rows only (compact per-sequence grids),
    and :meth:`forward_packed_pair`, both directions between two sequences at disjoint steps at
    once (one fused input projection per sequence, one masked self-attention over the merged
    rows; used by ABXI_GCA with ``gca_query_steps=occurrence``). All run the attention through
    :func:`packed_attention`.

    Statistics (``return_stats=True``), per sequence (user) of the batch: the mean over query
    steps of :math:`|\cos(X_A, X'_A)|` (``'ortho'``; steps with at least one key) and of
    :math:`|\cos(X_A, Z_B)|` (``'cross'``: the query input against the other sequence's input at
    the same step; steps where that one is valid); NaN for a sequence without such a step.

    Capture (for :mod:`recbole_ortho.probe`): while :attr:`capture` is a callable (set by
    :meth:`GCAStages.capturing`), each entry point that computes statistics (``return_stats``,
    i.e. during a recording evaluation pass) also hands ``capture(record)`` its query rows: a dict
    with ``x`` (the query input X ``[R, d]``), ``x_att`` (X' ``[R, d]``, 0 without a key),
    ``has_key [R]``, ``other`` (the other domain's input Y at the same step ``[R, d]``, 0 where
    ``other_valid`` is False; None without one), ``other_valid [R]``, ``gate`` (the gate G
    ``[R, d]``, the scalar alpha ``[1]``, or None), ``gate_kind``, ``seq [R]`` (the row's sequence
    in this call), ``step [R]`` (its position in the sequence), ``n_seq`` and ``length``. With
    ``capture`` None (the default) nothing changes but one attribute check per call.
    """

    ACTIVATIONS = ('sigmoid', 'tanh')
    GATE_INPUTS = ('concat_other', 'concat_attn')
    #: ``vector``: the paper's FFN gate G (above); ``scalar``: ``LN(X + Dropout(alpha * X'))`` with one
    #: learnable alpha starting at 0 (the GCA author's blog form); ``none``: ``LN(X + Dropout(X'))``
    #: (plain residual cross-attention) -- gate ablations
    GATES = ('vector', 'scalar', 'none')
    #: ``capture(record)`` while a probe captures this layer's tensors (:meth:`GCAStages.capturing`); None: off
    capture = None

    def __init__(self, d_model, n_heads=4, activation='sigmoid', layer_norm=True,
                 gate_input='concat_other', dropout=0.0, layer_norm_eps=1e-5, gate='vector'):
        super().__init__()
        if activation not in self.ACTIVATIONS:
            raise ValueError(f'GCA activation [{activation}] must be one of {self.ACTIVATIONS}')
        if gate_input not in self.GATE_INPUTS:
            raise ValueError(f'GCA gate input [{gate_input}] must be one of {self.GATE_INPUTS}')
        if gate not in self.GATES:
            raise ValueError(f'GCA gate [{gate}] must be one of {self.GATES}')
        self.d_model = d_model
        self.activation = activation
        self.gate_input = gate_input
        self.gate_kind = gate
        self.attn = MultiHeadAttention(d_model, n_heads)
        if gate == 'vector':
            self.gate_fc1 = nn.Linear(2 * d_model, d_model)
            self.gate_fc2 = nn.Linear(d_model, d_model)
        elif gate == 'scalar':
            self.alpha = nn.Parameter(torch.zeros(1))
        self.dropout = Dropout(dropout)
        self.norm = LayerNorm(d_model, eps=layer_norm_eps) if layer_norm else nn.Identity()
        self.reset_parameters()

    @staticmethod
    def num_parameters(d_model, layer_norm=True, gate='vector'):
        """Parameter count of one GCA layer: attention ``4 d^2 + 4 d``, the vector gate
        ``3 d^2 + 2 d`` (the scalar gate 1, none 0), LayerNorm ``2 d``: ``7 d^2 + 6 d (+ 2 d)`` with the
        paper's gate."""
        gate_params = {'vector': 3 * d_model * d_model + 2 * d_model, 'scalar': 1, 'none': 0}[gate]
        return 4 * d_model * d_model + 4 * d_model + gate_params + (2 * d_model if layer_norm else 0)

    def reset_parameters(self):
        self.attn.reset_parameters()
        if self.gate_kind == 'vector':
            for fc in (self.gate_fc1, self.gate_fc2):
                nn.init.normal_(fc.weight, mean=0.0, std=0.02)
                nn.init.zeros_(fc.bias)
        elif self.gate_kind == 'scalar':
            nn.init.zeros_(self.alpha)
        if isinstance(self.norm, nn.LayerNorm):
            nn.init.ones_(self.norm.weight)
            nn.init.zeros_(self.norm.bias)

    def gate(self, x, z):
        """``act(W_2 GELU(W_1 [x; z] + b_1) + b_2)`` (reference form; the forward passes compute
        the same with ``W_1`` split into its ``x`` and ``z`` halves, fused with the attention
        projections)."""
        g = self.gate_fc2(gelu(self.gate_fc1(torch.cat([x, z], dim=-1))))
        return torch.sigmoid(g) if self.activation == 'sigmoid' else torch.tanh(g)

    # ---------------------------------------------------------------- core
    def _core(self, x, kv, attend, other=None, other_index=None, penalty=False):
        """GCA of the rows ``x [Rq, d]`` over the rows ``kv [Rk, d]``; ``attend(q, kvp)`` runs the
        multi-head attention of the projected queries ``[Rq, d]`` over the projected keys/values
        ``[Rk, 2d]`` and returns ``(att [Rq, d], has_key [Rq])``. The gate's other input is
        ``other [Rq, d]`` or, with ``other_index [Rq]``, the row ``kv[other_index]`` (0 where
        ``-1``). Returns ``(y, X', has_key, penalty term)`` (see :meth:`_finish`)."""
        d = self.d_model
        w, b = self.attn.in_proj.weight, self.attn.in_proj.bias
        if self.gate_kind != 'vector':
            att, has = attend(F.linear(x, w[:d], b[:d]), F.linear(kv, w[d:], b[d:]))
            y, x_att, term = self._finish(x, att, has, None, penalty=penalty)
            return y, x_att, has, term
        q, gx = F.linear(x, torch.cat([w[:d], self.gate_fc1.weight[:, :d]]),
                         torch.cat([b[:d], self.gate_fc1.bias])).split(d, dim=1)
        by_index = self.gate_input == 'concat_other' and other_index is not None
        if by_index:        # z = kv[other_index]: W_1^z z = (W_1^z kv)[other_index], one GEMM with K/V
            kvp, zk = F.linear(kv, torch.cat([w[d:], self.gate_fc1.weight[:, d:]]),
                               torch.cat([b[d:], b.new_zeros(d)])).split([2 * d, d], dim=1)
        else:
            kvp, zk = F.linear(kv, w[d:], b[d:]), None
        att, has = attend(q, kvp)
        y, x_att, term = self._finish(x, att, has, gx, zk=zk, other=other, other_index=other_index, penalty=penalty)
        return y, x_att, has, term

    def _finish(self, x, att, has, gx, zk=None, other=None, other_index=None, penalty=False):
        """Everything after the attention: ``X' = out_proj(att)`` (0 without a key), the gate
        ``act(W_2 GELU(W_1^x x + b_1 + W_1^z z) + b_2)`` (``gx = W_1^x x + b_1`` precomputed;
        ``W_1 [x; z] = W_1^x x + W_1^z z``, so no ``[R, 2d]`` concatenation is formed) with ``z``
        = ``X'`` (``concat_attn``), ``other``, or the key row ``other_index`` (``zk`` = ``W_1^z``
        applied to the key rows; -1 = none, i.e. 0), and ``LN(x + Dropout(G * X'))``.
        Returns ``(y, X', term)``: with ``penalty``, ``term`` is the differentiable mean
        ``|cos(X, X')|`` over the query rows with a key (the ``gca_ortho_weight`` penalty's term;
        None without such a row), else None."""
        d = self.d_model
        x_att = self.attn.out_proj(att) * has.unsqueeze(-1).to(att.dtype)    # no key -> exactly 0
        term = abs_cosine(x[has], x_att[has]).mean() if penalty and bool(has.any()) else None
        if self.gate_kind == 'none':
            return self.norm(x + self.dropout(x_att)), x_att, term
        if self.gate_kind == 'scalar':
            return self.norm(x + self.dropout(self.alpha * x_att)), x_att, term
        w1z = self.gate_fc1.weight[:, d:]
        if self.gate_input == 'concat_attn':
            gz = F.linear(x_att, w1z)
        elif other_index is None:
            gz = F.linear(other, w1z)
        elif zk is not None and zk.size(0):
            gz = zk.index_select(0, other_index.clamp_min(0)) * (other_index >= 0).unsqueeze(-1).to(zk.dtype)
        else:
            gz = None
        g = self.gate_fc2(gelu(gx if gz is None else gx + gz))
        g = torch.sigmoid(g) if self.activation == 'sigmoid' else torch.tanh(g)
        if self.capture is not None:                 # probe: keep the gate for _hand_over
            self._captured_gate = g.detach()
        return self.norm(x + self.dropout(g * x_att)), x_att, term

    def _hand_over(self, x, x_att, has, other, other_valid, seq, step, n_seq, length, gate_rows=None):
        """Give :attr:`capture` the query rows of the call that just ran (see the class docstring);
        ``gate_rows`` selects the rows of the gate computed by the call (default: all)."""
        gate = {'vector': lambda: self._captured_gate if gate_rows is None else self._captured_gate[gate_rows],
                'scalar': lambda: self.alpha.detach(), 'none': lambda: None}[self.gate_kind]()
        if other is not None and other_valid is None:
            other_valid = torch.ones_like(has)
        self.capture({'x': x.detach(), 'x_att': x_att.detach(), 'has_key': has,
                      'other': None if other is None else other.detach(), 'other_valid': other_valid,
                      'gate': gate, 'gate_kind': self.gate_kind, 'seq': seq, 'step': step,
                      'n_seq': int(n_seq), 'length': int(length)})

    def _statistics(self, x, x_att, has, other, other_valid, seq, step, n_seq, length, gate_rows=None):
        """The statistics of one call from its query rows, the one place they are computed for every
        forward path: per sequence the mean ``|cos(X, X')|`` over the rows with a key (``ortho``) and
        the mean ``|cos(X, Y)|`` over the rows where the other input ``Y`` is valid (``cross``; None
        without ``Y``), and every row's signed ``cos(X, X')`` (``ortho_steps``); with a capture on
        (the probe), the rows go to it."""
        stats = {'ortho': rows_mean_per_sequence(abs_cosine(x, x_att), has, seq, n_seq),
                 'ortho_steps': query_step_cosines(x, x_att, has, seq),
                 'cross': None if other is None else rows_mean_per_sequence(abs_cosine(x, other), other_valid, seq,
                                                                            n_seq)}
        if self.capture is not None:
            self._hand_over(x, x_att, has, other, other_valid, seq, step, n_seq, length, gate_rows=gate_rows)
        return stats

    # ---------------------------------------------------------------- two interleaved sequences
    @staticmethod
    def forward_packed_pair(layer_a, layer_b, x_a, index_a, x_b, index_b, n_seq, length, other_index_a=None,
                            other_index_b=None, return_stats=False, penalty=False):
        """Both directions between two packed sequences whose rows are at *disjoint* steps (e.g.
        ABXI's A and B occurrences): ``y_a = layer_a.forward_packed(x_a, index_a, x_b, index_b,
        ..., other_index=other_index_a)`` and ``y_b = layer_b.forward_packed(x_b, index_b, x_a,
        index_a, ..., other_index=other_index_b)`` (the query at step ``t`` attends to the other
        sequence's rows at steps ``< t``), computed together: each input is projected by one GEMM
        (its queries and gate half for its own layer, its keys/values and gate half for the other
        layer's), and the two cross-attentions run as one masked self-attention over the merged
        rows of each sequence (a row may attend to the other sequence's earlier rows), whose
        grids are per merged sequence and sorted by length. Same results as the two calls.

        ``other_index_a [Ra]``: the row of ``x_b`` that is ``layer_a``'s gate input ``z`` (-1: none,
        i.e. 0; required with ``concat_other``); ``other_index_b`` likewise. Returns
        ``(y_a, y_b)``, and with ``return_stats`` or ``penalty`` ``((y_a, y_b), (extras_a, extras_b))``
        as :meth:`forward_packed`'s."""
        if layer_a.attn.n_heads != layer_b.attn.n_heads or layer_a.d_model != layer_b.d_model:
            raise ValueError('GCA.forward_packed_pair: the two layers need the same size and heads')
        if layer_a.gate_kind != 'vector' or layer_b.gate_kind != 'vector':     # no fused gate projection
            if bool(torch.isin(index_a, index_b).any()):
                raise ValueError('GCA.forward_packed_pair: the two sequences share a step')
            res = [me.forward_packed(x, iq, xo, io, n_seq, length, other_index=oi, return_stats=return_stats,
                                     penalty=penalty)
                   for me, x, iq, xo, io, oi in ((layer_a, x_a, index_a, x_b, index_b, other_index_a),
                                                 (layer_b, x_b, index_b, x_a, index_a, other_index_b))]
            return (tuple(r[0] for r in res), tuple(r[1] for r in res)) if return_stats or penalty else tuple(res)
        for layer, oi in ((layer_a, other_index_a), (layer_b, other_index_b)):
            if layer.gate_input == 'concat_other' and oi is None:
                raise ValueError('GCA.forward_packed_pair: `other_index_a/b` is required with gate_input=concat_other')
        d = layer_a.d_model
        own = ((layer_a, layer_b, x_a, other_index_a), (layer_b, layer_a, x_b, other_index_b))

        def referenced(layer, oi):
            """Rows of the other input read by ``layer``'s gate (sorted) and each query's slot
            among them (-1: none)."""
            if layer.gate_input != 'concat_other':
                return None, oi
            rows = torch.unique(oi[oi >= 0])
            return rows, torch.where(oi >= 0, torch.searchsorted(rows, oi.clamp_min(0)), oi)

        zr_b, slot_a = referenced(layer_a, other_index_a)             # rows of x_b read by a's gate
        zr_a, slot_b = referenced(layer_b, other_index_b)
        # x_a -> [q (a) | k, v (b) | W_1^x x + b_1 (a)] and W_1^z (b) x on the rows zr_a; x_b likewise
        pa = (layer_a.attn.in_proj.weight, layer_a.attn.in_proj.bias, layer_a.gate_fc1.weight, layer_a.gate_fc1.bias)
        pb = (layer_b.attn.in_proj.weight, layer_b.attn.in_proj.bias, layer_b.gate_fc1.weight, layer_b.gate_fc1.bias)
        qkv, gx_a, gx_b, z_a, z_b = PairProjection.apply(x_a, x_b, *pa, *pb, zr_a, zr_b)
        gx, zk, slots = (gx_a, gx_b), (z_b, z_a), (slot_a, slot_b)
        dev = x_a.device
        dom = torch.full((n_seq * length,), -1, dtype=torch.long, device=dev)
        dom[index_a] = 0
        dom[index_b] = 1
        if bool((dom[index_a] != 0).any()):
            raise ValueError('GCA.forward_packed_pair: the two sequences share a step')
        dom = dom.view(n_seq, length)
        ar = torch.arange(length, device=dev)
        allowed = ((dom[:, None, :] != dom[:, :, None]) & (dom[:, None, :] >= 0) & (dom[:, :, None] >= 0)
                   & (ar[None, :] <= ar[:, None])[None]).unsqueeze(1)             # [n_seq, 1, L, L]
        index = torch.cat([index_a, index_b])
        has = allowed.reshape(n_seq * length, length).any(-1)[index]
        chunks = attention_chunks(index, index, n_seq, length, length, max_chunk_bytes=1 << 23,
                                  row_bytes=grid_row_bytes(d))
        att = packed_attention(qkv, None, chunks, allowed, layer_a.attn.n_heads, zero_empty=False,
                               keep_grids=True)
        sizes = [index_a.numel(), index_b.numel()]
        atts, hass = att.split(sizes), has.split(sizes)
        ys, extras = [], []
        for i, (me, ot, x, oi) in enumerate(own):
            y, x_att, term = me._finish(x, atts[i], hass[i], gx[i], zk=zk[i], other_index=slots[i], penalty=penalty)
            ys.append(y)
            extra = {'penalty': term} if penalty else {}
            if return_stats:
                with torch.no_grad():
                    index, xo = (index_a, index_b)[i], (x_b, x_a)[i]
                    other = ov = None
                    if oi is not None:
                        ov = oi >= 0
                        other = xo[oi.clamp_min(0)] * ov.unsqueeze(-1).to(xo.dtype) if xo.size(0) \
                            else x.new_zeros(x.shape)
                    seq, step = torch.div(index, length, rounding_mode='floor'), torch.remainder(index, length)
                    extra.update(me._statistics(x, x_att, hass[i], other, ov, seq, step, n_seq, length))
            extras.append(extra)
        return (tuple(ys), tuple(extras)) if return_stats or penalty else tuple(ys)

    # ---------------------------------------------------------------- padded tensors
    def forward(self, x, kv, key_mask=None, other=None, query_mask=None, other_mask=None, return_stats=False,
                penalty=False):
        """Step-aligned causal GCA on padded tensors ``x``, ``kv [B, L, d]``: an adapter that runs
        :meth:`forward_packed`, the layer's one path, on the rows of the query steps (``query_mask``,
        default all) over the rows of the key steps (``key_mask``, default all). A query step attends
        to the key steps ``<=`` its own (none: ``X' = 0``, so ``y = LN(x)``); the gate's other input
        is ``other`` at the query's step (default ``kv``), 0 where ``other_mask`` (default ``key_mask``)
        is False. Steps that are not queries pass through unchanged. Returns ``y [B, L, d]``, or
        ``(y, extras)`` with ``return_stats`` / ``penalty`` (as :meth:`forward_packed`'s: statistics
        per sequence over the query steps, the penalty term)."""
        B, L, d = x.shape
        if kv.shape[:2] != (B, L) or (other is not None and other.shape[:2] != (B, L)):
            raise ValueError('GCA.forward: x, kv and other must be step-aligned [B, L, d] tensors')
        ones = torch.ones(B, L, dtype=torch.bool, device=x.device)
        key_mask = ones if key_mask is None else key_mask
        other_mask = key_mask if other_mask is None else other_mask
        other = kv if other is None else other
        qi = torch.nonzero((ones if query_mask is None else query_mask).reshape(-1)).squeeze(1)
        ki = torch.nonzero(key_mask.reshape(-1)).squeeze(1)
        flat = x.reshape(B * L, d)
        ov = other_mask.reshape(-1)[qi]
        res = self.forward_packed(flat[qi], qi, kv.reshape(B * L, d)[ki], ki, B, L,
                                  other=other.reshape(B * L, d)[qi] * ov.unsqueeze(-1).to(other.dtype), other_valid=ov,
                                  return_stats=return_stats, penalty=penalty)
        y, extras = res if (return_stats or penalty) else (res, None)
        y = flat.index_copy(0, qi, y.to(flat.dtype)).view(B, L, d)
        return y if extras is None else (y, extras)

    # ---------------------------------------------------------------- packed rows
    def forward_packed(self, x, q_index, kv, k_index, n_seq, length, other=None, other_valid=None,
                       other_index=None, return_stats=False, penalty=False):
        """Step-aligned causal GCA on packed rows (no padding row is computed).

        ``x [Rq, d]`` are the query rows at flat steps ``q_index`` (``b * length + t``) of
        ``n_seq`` sequences; ``kv [Rk, d]`` the key rows at flat steps ``k_index``; the query at
        step ``t`` attends to the key rows of its sequence at steps ``<= t``. The other input of
        the ``concat_other`` gate (also used by the ``cross`` statistic) is either
        ``other [Rq, d]`` (rows where ``other_valid`` is False must be 0), or, cheaper,
        ``other_index [Rq]``: the key row holding it (-1: none, i.e. 0). Returns ``y [Rq, d]``
        (with ``return_stats`` or ``penalty``: ``(y, extras)``, the statistics ``{'ortho': [n_seq],
        'cross': [n_seq], 'ortho_steps'}`` and / or the penalty term ``'penalty'``).

        The attention runs on compact per-sequence grids: the query (key) rows of a sequence take
        the slots 0, 1, ... in step order and the mask compares their steps, so a sequence costs
        ``#queries x #keys``, not ``length x length``; the grids are small, so they are kept for
        backward instead of being recomputed."""
        if other is None and other_index is None and self.gate_input == 'concat_other' and self.gate_kind == 'vector':
            raise ValueError('GCA.forward_packed: `other` or `other_index` is required with gate_input=concat_other')
        sq, tq, rq, nq = sequence_ranks(q_index, length, n_seq)
        sk, tk, rk, nk = sequence_ranks(k_index, length, n_seq)
        Lq = max(1, int(nq.max())) if n_seq else 1
        Lk = max(1, int(nk.max())) if n_seq else 1
        step_q = torch.full((n_seq, Lq), -1, dtype=torch.long, device=x.device)     # padding: -1
        step_q[sq, rq] = tq
        step_k = torch.full((n_seq, Lk), length, dtype=torch.long, device=x.device)  # padding: never <= t
        step_k[sk, rk] = tk
        allowed = (step_k[:, None, :] <= step_q[:, :, None]).unsqueeze(1)           # [n_seq, 1, Lq, Lk]
        qpos, kpos = sq * Lq + rq, sk * Lk + rk
        has = allowed.reshape(n_seq * Lq, Lk).any(-1)[qpos]
        chunks = attention_chunks(qpos, kpos, n_seq, Lq, Lk, row_bytes=grid_row_bytes(self.d_model))

        def attend(q, kvp):
            return packed_attention(q, kvp, chunks, allowed, self.attn.n_heads, zero_empty=False), has

        y, x_att, has, term = self._core(x, kv, attend, other=other, other_index=other_index, penalty=penalty)
        extras = {'penalty': term} if penalty else {}
        if not return_stats:
            return (y, extras) if penalty else y
        with torch.no_grad():
            if other_index is not None:
                other_valid = other_index >= 0
                other = kv[other_index.clamp_min(0)] * other_valid.unsqueeze(-1).to(kv.dtype) if kv.size(0) \
                    else x.new_zeros(x.shape)
            ov = None if other is None else (torch.ones_like(has) if other_valid is None else other_valid)
            extras.update(self._statistics(x, x_att, has, other, ov, sq, tq, n_seq, length))
        return y, extras
