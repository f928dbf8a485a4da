"""
recbole_ortho.model.layers
##########################

Building blocks shared by the models of this package:

- :class:`Dropout`: ``nn.Dropout`` with a cheaper mask (random 16-bit integers, a 1-byte mask
  kept for backward; CPU ``bernoulli_`` is ~4x slower),
- :class:`LowRankAdapter`: a LoRA-style low-rank linear map ``x -> x (A B)^T`` (no frozen base),
- :class:`SwiGLU`: the bias-free SwiGLU feed-forward network (fused; its backward recomputes the
  hidden pre-activations instead of storing them),
- :func:`take_rows`: row gather with distinct indices and a cheap backward,
- :func:`gathered_logits`: ``h @ table[idx]^T`` per row group without keeping the gathered
  ``[.., K, d]`` candidate embeddings,
- :class:`MultiHeadAttention` and :func:`masked_attention`: multi-head (self- or cross-)
  attention with a boolean "may attend" mask, safe for queries that have no key at all;
  :func:`packed_attention` / :func:`attention_chunks`: the same on packed (non-padding) rows,
  chunked by sequences and recomputed in backward (bounded memory),
- :class:`GatedCrossAttention` (**GCA**): the one gated cross-attention layer used by every model,
- :func:`abs_cosine`, :func:`masked_row_mean`, :func:`rows_mean_per_sequence`: the
  orthogonality statistics,
- :func:`causal_key_mask`, :func:`count_parameters`.
"""

from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F


def count_parameters(model, trainable_only=True):
    """Number of (trainable) parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# ---------------------------------------------------------------------------------------------
def _drop_mask(x, p):
    """Boolean mask, True with probability ``round(p * 2^16) / 2^16`` per element, from 16-bit
    uniform integers cut out of random ``int64`` words (several times cheaper than
    ``rand_like`` / ``bernoulli_`` on CPU)."""
    n = x.numel()
    words = torch.randint(-2 ** 63, 2 ** 63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
    r = words.view(torch.int16)[:n].view(x.shape)
    return r < int(round(p * 65536)) - 32768


class _DropoutFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p):
        drop = _drop_mask(x, p)
        ctx.scale = 1.0 / (1.0 - p)
        ctx.save_for_backward(drop)
        return x.masked_fill(drop, 0.0).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad):
        drop, = ctx.saved_tensors
        return grad.masked_fill(drop, 0.0).mul_(ctx.scale), None


class Dropout(nn.Module):
    """Drop-in for :class:`torch.nn.Dropout`: in training each element is zeroed with
    probability ``p`` (quantised to a multiple of ``2^-16``; exact for 0.5) and the rest scaled
    by ``1 / (1 - p)``; identity in evaluation. The mask comes from random 16-bit integers and
    is kept as a bool tensor for backward (CPU ``bernoulli_`` costs ~4x more)."""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f'dropout probability has to be between 0 and 1, but got {p}')
        self.p = float(p)

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * 0.0
        return _DropoutFn.apply(x, self.p)

    def extra_repr(self):
        return f'p={self.p}'


class _SwiGLUFn(torch.autograd.Function):
    """``y = (SiLU(x W_g^T) * x W_u^T) W_o^T`` on rows ``x [R, d]``, processed in row chunks;
    only ``x`` is kept for backward, which recomputes each chunk's hidden pre-activations, so
    the ``[R, hidden]`` temporaries never exist for all rows at once."""

    @staticmethod
    def forward(ctx, x, w_in, w_out, chunk):
        y = x.new_empty(x.size(0), w_out.size(0))
        for s in range(0, x.size(0), chunk):
            u, g = F.linear(x[s:s + chunk], w_in).chunk(2, dim=-1)
            torch.mm(F.silu(g).mul_(u), w_out.t(), out=y[s:s + chunk])
        ctx.save_for_backward(x, w_in, w_out)
        ctx.chunk = chunk
        return y

    @staticmethod
    def backward(ctx, gy):
        x, w_in, w_out = ctx.saved_tensors
        h = w_out.size(1)
        gx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        g_w_in, g_w_out = torch.zeros_like(w_in), torch.zeros_like(w_out)
        for s in range(0, x.size(0), ctx.chunk):
            xc, gyc = x[s:s + ctx.chunk], gy[s:s + ctx.chunk]
            ug = xc.mm(w_in.t())
            u, g = ug[:, :h], ug[:, h:]
            sig = torch.sigmoid(g)
            silu = g * sig
            g_w_out.addmm_(gyc.t(), silu * u)
            ga = gyc.mm(w_out)                                     # dL/d(activation)
            gug = torch.empty_like(ug)
            torch.mul(ga, silu, out=gug[:, :h])                    # dL/du
            silu.neg_().add_(g).add_(1.0).mul_(sig)                # dSiLU/dg = sig (1 + g - SiLU(g))
            torch.mul(ga, u, out=gug[:, h:]).mul_(silu)            # dL/dg
            if gx is not None:
                torch.mm(gug, w_in, out=gx[s:s + ctx.chunk])
            g_w_in.addmm_(gug.t(), xc)
        return gx, g_w_in, g_w_out, None


class _GatheredLogits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, table, idx, chunk):
        out = h.new_empty(h.size(0), h.size(1), idx.size(1))
        for s in range(0, idx.size(0), chunk):
            torch.bmm(h[s:s + chunk], table[idx[s:s + chunk]].transpose(1, 2), out=out[s:s + chunk])
        ctx.save_for_backward(h, table, idx)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad):
        h, table, idx = ctx.saved_tensors
        chunk = ctx.chunk
        gh = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        gt = torch.zeros_like(table) if ctx.needs_input_grad[1] else None
        for s in range(0, idx.size(0), chunk):
            g, ii = grad[s:s + chunk], idx[s:s + chunk]
            if gh is not None:
                torch.bmm(g, table[ii], out=gh[s:s + chunk])
            if gt is not None:
                gt.index_add_(0, ii.reshape(-1), torch.bmm(g.transpose(1, 2), h[s:s + chunk]).reshape(-1, h.size(2)))
        return gh, gt, None, None


class _TakeRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, idx):
        ctx.save_for_backward(idx)
        ctx.n = x.size(0)
        return x.index_select(0, idx)

    @staticmethod
    def backward(ctx, grad):
        idx, = ctx.saved_tensors
        return grad.new_zeros((ctx.n,) + tuple(grad.shape[1:])).index_copy_(0, idx, grad), None


def take_rows(x, idx):
    """``x[idx]`` along dim 0 for *distinct* indices ``idx``; the backward is a scatter
    (``index_copy``) instead of ``index_select``'s scatter-add (about 3x cheaper on CPU)."""
    return _TakeRows.apply(x, idx)


def gathered_logits(h, table, idx, max_chunk_bytes=1 << 24):
    """``out[b, l, k] = <h[b, l], table[idx[b, k]]>`` for ``h [B, L, d]``, ``idx [B, K]``
    (``[B, L, K]``), computed in chunks of ``b`` so that at most ``max_chunk_bytes`` of gathered
    candidate embeddings exist at a time, in the forward and in the backward pass (the
    gradient of ``table`` is dense)."""
    K, d = idx.size(1), table.size(1)
    chunk = max(1, max_chunk_bytes // (K * d * table.element_size()))
    return _GatheredLogits.apply(h, table, idx, chunk)


# ---------------------------------------------------------------------------------------------
class LowRankAdapter(nn.Module):
    r"""Low-rank linear map :math:`\Delta(x) = x\,(A B)^\top` with :math:`A \in R^{d \times r}`,
    :math:`B \in R^{r \times d}` (a LoRA branch without a frozen base weight; ABXI's dLoRA / iLoRA).

    ``A`` starts as :math:`\mathcal N(0, 0.02^2)` and ``B`` as zeros, so the branch starts at 0.
    Computed as two thin matmuls, never forming the ``d x d`` product. Parameters: ``2 d r``.
    """

    def __init__(self, d_model, rank):
        super().__init__()
        self.weight_a = nn.Parameter(torch.empty(d_model, rank))
        self.weight_b = nn.Parameter(torch.empty(rank, d_model))
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.normal_(self.weight_a, mean=0.0, std=0.02)
        nn.init.zeros_(self.weight_b)

    def forward(self, x):
        return F.linear(F.linear(x, self.weight_b), self.weight_a)


class SwiGLU(nn.Module):
    r"""Bias-free SwiGLU feed-forward network :math:`W_o\,(\mathrm{SiLU}(W_g x) \odot W_u x)`,
    ``d -> hidden -> d``. ``W_u`` and ``W_g`` are stored as one ``Linear(d, 2 hidden)`` (one GEMM).
    Parameters: ``3 d hidden``. In training only ``x`` is kept for backward.
    """

    def __init__(self, d_model, hidden):
        super().__init__()
        self.hidden = hidden
        self.fc_in = nn.Linear(d_model, 2 * hidden, bias=False)   # [W_u; W_g]
        self.fc_out = nn.Linear(hidden, d_model, bias=False)
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.normal_(self.fc_in.weight, mean=0.0, std=0.02)
        nn.init.normal_(self.fc_out.weight, mean=0.0, std=0.02)

    def forward(self, x):
        if torch.is_grad_enabled() and (x.requires_grad or self.fc_in.weight.requires_grad):
            shape = x.shape
            chunk = max(256, (1 << 23) // (4 * 2 * self.hidden))          # ~8 MB of pre-activations
            y = _SwiGLUFn.apply(x.reshape(-1, shape[-1]), self.fc_in.weight, self.fc_out.weight, chunk)
            return y.view(*shape[:-1], y.size(-1))
        up, gate = self.fc_in(x).chunk(2, dim=-1)
        return self.fc_out(F.silu(gate).mul_(up))


# ---------------------------------------------------------------------------------------------
def causal_key_mask(key_mask, n_query=None):
    """``allowed[b, q, k] = key_mask[b, k] and k <= q``: a boolean ``[B, Lq, Lk]`` mask for
    step-aligned sequences (query step ``q`` may attend to key steps ``<= q`` that are not padding)."""
    B, Lk = key_mask.shape
    Lq = Lk if n_query is None else n_query
    ar_q = torch.arange(Lq, device=key_mask.device)
    ar_k = torch.arange(Lk, device=key_mask.device)
    causal = ar_k[None, :] <= ar_q[:, None]
    return key_mask[:, None, :] & causal[None, :, :]


def masked_attention(q, k, v, allowed):
    """Scaled dot-product attention of ``q [B, H, Lq, dh]`` over ``k, v [B, H, Lk, dh]`` where
    ``allowed [B, Lq, Lk]`` (or ``[B, 1, Lq, Lk]``) is True for the keys a query may attend to.

    Returns ``(out [B, H, Lq, dh], has_key [B, Lq])``. A query without any allowed key gets an
    all-zero output (never NaN): its mask row is opened before the softmax and its output zeroed.
    """
    if allowed.dim() == 3:
        allowed = allowed.unsqueeze(1)
    has_key = allowed.any(-1)                                  # [B, 1, Lq]
    safe = allowed | ~has_key.unsqueeze(-1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe)
    out = out * has_key.unsqueeze(-1).to(out.dtype)
    return out, has_key.squeeze(1)


class _Chunk(SimpleNamespace):
    pass


def attention_chunks(q_index, k_index, n_seq, len_q, len_k, max_chunk_bytes=1 << 24, row_bytes=3072,
                     device=None):
    """Split packed query/key rows into chunks of whole sequences for :func:`packed_attention`.

    ``q_index [Rq]`` / ``k_index [Rk]``: flat grid positions ``b * len + t`` of the rows (None =
    every position, in order). Each chunk holds the rows of ``n`` consecutive sequences, ``n``
    chosen so that its grids take about ``max_chunk_bytes`` (``row_bytes`` per grid row)."""
    if device is None:
        device = q_index.device if q_index is not None else (k_index.device if k_index is not None else 'cpu')
    n = max(1, min(n_seq, max_chunk_bytes // max(1, (len_q + len_k) * row_bytes)))
    starts = list(range(0, n_seq, n))

    def split(index, length):
        if index is None:
            return None
        order = torch.argsort(index)
        srt = index[order]
        edges = torch.tensor(starts + [n_seq], device=srt.device) * length
        return order, srt, torch.searchsorted(srt, edges).tolist()

    sides = (('q', split(q_index, len_q), len_q), ('k', split(k_index, len_k), len_k))
    chunks = []
    for i, s0 in enumerate(starts):
        s1 = min(n_seq, s0 + n)
        c = _Chunk(s0=s0, s1=s1)
        for name, sp, length in sides:
            if sp is None:
                rows = torch.arange(s0 * length, s1 * length, device=device)
                local = rows - s0 * length
            else:
                order, srt, b = sp
                rows, local = order[b[i]:b[i + 1]], srt[b[i]:b[i + 1]] - s0 * length
            setattr(c, name + '_rows', rows)
            setattr(c, name + '_local', local)
        chunks.append(c)
    return chunks


def _attend_chunk(q, kv, c, allowed, n_heads, len_q, len_k):
    """Attention of one chunk: rows -> grids -> SDPA under ``allowed[s0:s1]`` -> query rows
    (exactly 0 for a query without any allowed key). ``kv is None``: ``q`` holds the
    ``[q | k | v]`` rows of a self-attention."""
    n = c.s1 - c.s0
    d = q.size(1) if kv is not None else q.size(1) // 3
    dh = d // n_heads
    if kv is None:
        g = q.new_zeros(n * len_q, 3 * d).index_copy_(0, c.q_local, q)
        qh, kh, vh = g.view(n, len_q, 3, n_heads, dh).permute(2, 0, 3, 1, 4).unbind(0)
    else:
        qg = q.new_zeros(n * len_q, d).index_copy_(0, c.q_local, q)
        kvg = kv.new_zeros(n * len_k, 2 * d).index_copy_(0, c.k_local, kv)
        qh = qg.view(n, len_q, n_heads, dh).transpose(1, 2)
        kh, vh = kvg.view(n, len_k, 2, n_heads, dh).permute(2, 0, 3, 1, 4).unbind(0)
    out, _ = masked_attention(qh, kh, vh, allowed[c.s0:c.s1])
    return out.transpose(1, 2).reshape(n * len_q, d).index_select(0, c.q_local)


def _packed_forward(q, kv, chunks, allowed, n_heads, len_q, len_k):
    d = q.size(1) if kv is not None else q.size(1) // 3
    out = q.new_zeros(q.size(0), d)
    for c in chunks:
        kc = None if kv is None else kv.index_select(0, c.k_rows)
        out.index_copy_(0, c.q_rows, _attend_chunk(q.index_select(0, c.q_rows), kc, c, allowed, n_heads, len_q, len_k))
    return out


class _PackedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, kv, chunks, allowed, n_heads, len_q, len_k):
        ctx.self_attn = kv is None
        ctx.save_for_backward(q) if kv is None else ctx.save_for_backward(q, kv)
        ctx.args = (chunks, allowed, n_heads, len_q, len_k)
        return _packed_forward(q, kv, chunks, allowed, n_heads, len_q, len_k)

    @staticmethod
    def backward(ctx, grad):
        chunks, allowed, n_heads, len_q, len_k = ctx.args
        if ctx.self_attn:
            q, = ctx.saved_tensors
            kv = None
        else:
            q, kv = ctx.saved_tensors
        gq = torch.zeros_like(q)
        gkv = None if kv is None else torch.zeros_like(kv)
        for c in chunks:
            with torch.enable_grad():
                qc = q.detach().index_select(0, c.q_rows).requires_grad_()
                if kv is None:
                    oc = _attend_chunk(qc, None, c, allowed, n_heads, len_q, len_k)
                    dq, = torch.autograd.grad(oc, (qc,), grad.index_select(0, c.q_rows))
                else:
                    kc = kv.detach().index_select(0, c.k_rows).requires_grad_()
                    oc = _attend_chunk(qc, kc, c, allowed, n_heads, len_q, len_k)
                    dq, dk = torch.autograd.grad(oc, (qc, kc), grad.index_select(0, c.q_rows))
                    gkv.index_copy_(0, c.k_rows, dk)
            gq.index_copy_(0, c.q_rows, dq)
        return gq, gkv, None, None, None, None, None


def packed_attention(q, kv, chunks, allowed, n_heads, len_q, len_k):
    """Multi-head attention on packed rows: ``q [Rq, d]`` (projected queries) attends to
    ``kv [Rk, 2d]`` (projected keys and values side by side) of the same sequence under
    ``allowed [n_seq, Lq, Lk]`` (or ``[n_seq, 1, Lq, Lk]``); ``chunks`` from
    :func:`attention_chunks` give the rows' grid positions. Self-attention: ``kv=None`` and
    ``q [R, 3d]`` holds the ``[q | k | v]`` rows. Returns ``[Rq, d]`` (0 for a query without
    any allowed key). The sequences are processed chunk by chunk and the backward recomputes
    each chunk's attention, so no ``[n_seq, L, .]`` grid of the whole batch is ever held."""
    if allowed.dim() == 3:
        allowed = allowed.unsqueeze(1)
    if torch.is_grad_enabled() and (q.requires_grad or (kv is not None and kv.requires_grad)):
        return _PackedAttention.apply(q, kv, chunks, allowed, n_heads, len_q, len_k)
    return _packed_forward(q, kv, chunks, allowed, n_heads, len_q, len_k)


class MultiHeadAttention(nn.Module):
    r"""Multi-head attention with a packed input projection ``in_proj: d -> 3d`` (query, key, value,
    with biases) and an output projection ``out_proj: d -> d`` (with bias), as
    :class:`torch.nn.MultiheadAttention`; the mask is boolean (True = may attend), no attention
    dropout. Parameters: ``4 d^2 + 4 d``.

    Initialisation: ``in_proj`` Xavier-uniform over the packed ``[3d, d]`` matrix and zero bias
    (torch's default for ``nn.MultiheadAttention``), ``out_proj`` :math:`\mathcal N(0, 0.02^2)`
    and zero bias.
    """

    def __init__(self, d_model, n_heads):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f'n_heads ({n_heads}) must divide the hidden size ({d_model})')
        self.d_model, self.n_heads = d_model, n_heads
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.xavier_uniform_(self.in_proj.weight)
        nn.init.zeros_(self.in_proj.bias)
        nn.init.normal_(self.out_proj.weight, mean=0.0, std=0.02)
        nn.init.zeros_(self.out_proj.bias)

    def split_heads(self, x):
        """``[B, L, d] -> [B, H, L, d / H]``."""
        B, L, _ = x.shape
        return x.view(B, L, self.n_heads, -1).transpose(1, 2)

    def forward(self, x_q, x_kv=None, allowed=None):
        """``x_q [B, Lq, d]`` attends to ``x_kv [B, Lk, d]`` (``x_q`` itself when None) under
        ``allowed [B, Lq, Lk]`` (None = everything). Returns ``(out [B, Lq, d], has_key [B, Lq])``;
        the output of a query without any allowed key is exactly 0 (the output bias included)."""
        d = self.d_model
        w, b = self.in_proj.weight, self.in_proj.bias
        if x_kv is None:
            q, k, v = F.linear(x_q, w, b).split(d, dim=-1)
        else:
            q = F.linear(x_q, w[:d], b[:d])
            k, v = F.linear(x_kv, w[d:], b[d:]).split(d, dim=-1)
        if allowed is None:
            allowed = torch.ones(x_q.size(0), x_q.size(1), k.size(1), dtype=torch.bool, device=x_q.device)
        out, has_key = masked_attention(self.split_heads(q), self.split_heads(k), self.split_heads(v), allowed)
        out = self.out_proj(out.transpose(1, 2).reshape(x_q.shape))
        return out * has_key.unsqueeze(-1).to(out.dtype), has_key      # no key -> exactly 0


# ---------------------------------------------------------------------------------------------
def abs_cosine(x, y, eps=1e-8):
    r""":math:`|\cos(x, y)|` along the last dimension (0 where either vector is zero)."""
    num = (x * y).sum(-1).abs()
    den = x.norm(dim=-1) * y.norm(dim=-1)
    return num / den.clamp_min(eps)


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

    Two entry points with the same computation: :meth:`forward` on padded ``[B, L, d]``
    tensors, and :meth:`forward_packed` on the non-padding rows only (cheaper; used by ABXI_GCA).
    Both run the attention through :func:`packed_attention` (chunked, recomputed in backward).

    Statistics (``return_stats=True``), per sequence (user) of the batch: the mean over query
    steps of :math:`|\cos(X_A, X'_A)|` (``'ortho'``; steps with at least one key) and of
    :math:`|\cos(X_A, Z_B)|` (``'cross'``: the query input against the other sequence's input at
    the same step; steps where that one is valid); NaN for a sequence without such a step.
    """

    ACTIVATIONS = ('sigmoid', 'tanh')
    GATE_INPUTS = ('concat_other', 'concat_attn')

    def __init__(self, d_model, n_heads=4, activation='sigmoid', layer_norm=True,
                 gate_input='concat_other', dropout=0.0, layer_norm_eps=1e-5):
        super().__init__()
        if activation not in self.ACTIVATIONS:
            raise ValueError(f'GCA activation [{activation}] must be one of {self.ACTIVATIONS}')
        if gate_input not in self.GATE_INPUTS:
            raise ValueError(f'GCA gate input [{gate_input}] must be one of {self.GATE_INPUTS}')
        self.d_model = d_model
        self.activation = activation
        self.gate_input = gate_input
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.gate_fc1 = nn.Linear(2 * d_model, d_model)
        self.gate_fc2 = nn.Linear(d_model, d_model)
        self.dropout = Dropout(dropout)
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_eps) if layer_norm else nn.Identity()
        self.reset_parameters()

    @staticmethod
    def num_parameters(d_model, layer_norm=True):
        """Parameter count of one GCA layer: ``7 d^2 + 6 d`` (+ ``2 d`` with LayerNorm)."""
        return 7 * d_model * d_model + 6 * d_model + (2 * d_model if layer_norm else 0)

    def reset_parameters(self):
        self.attn.reset_parameters()
        for fc in (self.gate_fc1, self.gate_fc2):
            nn.init.normal_(fc.weight, mean=0.0, std=0.02)
            nn.init.zeros_(fc.bias)
        if isinstance(self.norm, nn.LayerNorm):
            nn.init.ones_(self.norm.weight)
            nn.init.zeros_(self.norm.bias)

    def gate(self, x, z):
        g = self.gate_fc2(F.gelu(self.gate_fc1(torch.cat([x, z], dim=-1))))
        return torch.sigmoid(g) if self.activation == 'sigmoid' else torch.tanh(g)

    # ---------------------------------------------------------------- core
    def _cross_attention(self, x, q_index, kv, k_index, n_seq, Lq, Lk, allowed):
        """Rows ``x [Rq, d]`` (at flat grid positions ``q_index`` of ``[n_seq, Lq]``; None = all)
        attend to rows ``kv [Rk, d]`` (at ``k_index`` of ``[n_seq, Lk]``) under ``allowed``
        ``[n_seq, Lq, Lk]``. Returns ``(X' [Rq, d], has_key [Rq])``."""
        d = self.d_model
        w, b = self.attn.in_proj.weight, self.attn.in_proj.bias
        q = F.linear(x, w[:d], b[:d])
        kvp = F.linear(kv, w[d:], b[d:])
        chunks = attention_chunks(q_index, k_index, n_seq, Lq, Lk, row_bytes=4 * 3 * d)
        att = packed_attention(q, kvp, chunks, allowed, self.attn.n_heads, Lq, Lk)
        has = allowed.any(-1).reshape(-1)
        if q_index is not None:
            has = has[q_index]
        return self.attn.out_proj(att) * has.unsqueeze(-1).to(att.dtype), has

    def _gated_update(self, x, x_att, other):
        z = other if self.gate_input == 'concat_other' else x_att
        return self.norm(x + self.dropout(self.gate(x, z) * x_att))

    # ---------------------------------------------------------------- padded tensors
    def forward(self, x, kv, key_mask=None, causal=True, allowed=None, other=None,
                query_mask=None, other_mask=None, return_stats=False):
        """GCA of ``x [B, Lq, d]`` (queries) over ``kv [B, Lk, d]`` (keys/values).

        Args:
            key_mask: ``[B, Lk]`` True for real keys (default: all).
            causal: with step-aligned inputs (``Lq == Lk``), query step ``t`` only sees key steps
                ``<= t``.
            allowed: a ready ``[B, Lq, Lk]`` boolean mask (overrides ``key_mask``/``causal``).
            other: the position-aligned other sequence ``Z_B [B, Lq, d]`` used by the
                ``concat_other`` gate and by the ``cross`` statistic (default: ``kv``).
            query_mask: ``[B, Lq]`` valid query positions (statistics only; default: all).
            other_mask: ``[B, Lq]`` positions where ``other`` is valid (default: ``key_mask``).
            return_stats: also return ``{'ortho': [B], 'cross': [B]}``.

        Returns: ``y [B, Lq, d]`` (and the statistics dict when ``return_stats``).
        """
        B, Lq, d = x.shape
        Lk = kv.size(1)
        if other is None:
            if Lq != Lk:
                raise ValueError('GCA: `other` is required when the two sequences have different lengths')
            other = kv
        if allowed is None:
            if key_mask is None:
                key_mask = torch.ones(B, Lk, dtype=torch.bool, device=x.device)
            if causal:
                if Lq != Lk:
                    raise ValueError('GCA: a causal mask needs step-aligned sequences (Lq == Lk)')
                allowed = causal_key_mask(key_mask)
            else:
                allowed = key_mask[:, None, :].expand(B, Lq, Lk)
        x2 = x.reshape(B * Lq, d)
        x_att, has = self._cross_attention(x2, None, kv.reshape(B * Lk, d), None, B, Lq, Lk, allowed)
        y = self._gated_update(x2, x_att, other.reshape(B * Lq, d)).view(B, Lq, d)
        if not return_stats:
            return y
        with torch.no_grad():
            qm = torch.ones(B, Lq, dtype=torch.bool, device=x.device) if query_mask is None else query_mask
            if other_mask is None:
                other_mask = key_mask if (key_mask is not None and Lq == Lk) else torch.ones_like(qm)
            stats = {'ortho': masked_row_mean(abs_cosine(x, x_att.view(B, Lq, d)), qm & has.view(B, Lq)),
                     'cross': masked_row_mean(abs_cosine(x, other), qm & other_mask)}
        return y, stats

    # ---------------------------------------------------------------- packed rows
    def forward_packed(self, x, q_index, kv, k_index, n_seq, length, other=None, other_valid=None,
                       return_stats=False):
        """Step-aligned causal GCA on packed rows (no padding row is computed).

        ``x [Rq, d]`` are the query rows at flat steps ``q_index`` (``b * length + t``) of
        ``n_seq`` sequences; ``kv [Rk, d]`` the key rows at flat steps ``k_index``; the query at
        step ``t`` attends to the key rows of its sequence at steps ``<= t``. ``other [Rq, d]``:
        the other sequence at the query's step (``concat_other`` gate and ``cross`` statistic;
        rows where ``other_valid`` is False must be 0). Returns ``y [Rq, d]`` (and
        ``{'ortho': [n_seq], 'cross': [n_seq]}`` with ``return_stats``)."""
        if other is None and self.gate_input == 'concat_other':
            raise ValueError('GCA.forward_packed: `other` is required with gate_input=concat_other')
        key_mask = torch.zeros(n_seq * length, dtype=torch.bool, device=x.device)
        key_mask[k_index] = True
        allowed = causal_key_mask(key_mask.view(n_seq, length))
        x_att, has = self._cross_attention(x, q_index, kv, k_index, n_seq, length, length, allowed)
        y = self._gated_update(x, x_att, other)
        if not return_stats:
            return y
        with torch.no_grad():
            seq = torch.div(q_index, length, rounding_mode='floor')
            ov = torch.ones_like(has) if other_valid is None else other_valid
            stats = {'ortho': rows_mean_per_sequence(abs_cosine(x, x_att), has, seq, n_seq),
                     'cross': rows_mean_per_sequence(abs_cosine(x, other), ov, seq, n_seq)
                     if other is not None else None}
        return y, stats
