"""
recbole_ortho.model.layers
##########################

Building blocks shared by the models of this package:

- :class:`Dropout`: ``nn.Dropout`` with a cheaper mask (random 16-bit integers, a 1-byte mask
  kept for backward and applied as a multiplication; CPU ``bernoulli_`` / ``masked_fill`` are
  several times slower),
- :class:`LowRankAdapter`: a LoRA-style low-rank linear map ``x -> x (A B)^T`` (no frozen base),
- :class:`SwiGLU`: the bias-free SwiGLU feed-forward network (fused; its backward recomputes the
  hidden pre-activations instead of storing them),
- :func:`take_rows`: row gather with distinct indices and a cheap backward,
- :func:`gathered_logits`: ``h @ table[idx]^T`` per row group without keeping the gathered
  ``[.., K, d]`` candidate embeddings,
- :class:`MultiHeadAttention` and :func:`masked_attention`: multi-head (self- or cross-)
  attention with a boolean "may attend" mask, safe for queries that have no key at all;
  :func:`packed_attention` / :func:`attention_chunks`: the same on packed (non-padding) rows,
  on small per-chunk grids of sequences sorted by length (explicit softmax, hand-written
  backward keeping only the rows and the attention probabilities, or the grids),
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
def _keep_mask(x, p):
    """Boolean keep mask of dropout: an element is dropped (False) with probability
    ``round(p * 2^16) / 2^16``, decided by 16-bit uniform integers cut out of random ``int64``
    words (several times cheaper than ``rand_like`` / ``bernoulli_`` on CPU)."""
    n = x.numel()
    words = torch.randint(-2 ** 63, 2 ** 63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
    r = words.view(torch.int16)[:n].view(x.shape)
    return r >= int(round(p * 65536)) - 32768


class _DropoutFn(torch.autograd.Function):
    # ``x * keep`` with the mask viewed as uint8 (0/1) is ~4x cheaper on CPU than
    # ``masked_fill`` (same values; a dropped element is 0 * x = +-0)
    @staticmethod
    def forward(ctx, x, p):
        keep = _keep_mask(x, p)
        ctx.scale = 1.0 / (1.0 - p)
        ctx.save_for_backward(keep)
        return torch.mul(x, keep.view(torch.uint8)).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad):
        keep, = ctx.saved_tensors
        return torch.mul(grad, keep.view(torch.uint8)).mul_(ctx.scale), None


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


def masked_attention(q, k, v, allowed, zero_empty=True):
    """Scaled dot-product attention of ``q [B, H, Lq, dh]`` over ``k, v [B, H, Lk, dh]`` where
    ``allowed [B, Lq, Lk]`` (or ``[B, 1, Lq, Lk]``) is True for the keys a query may attend to.

    Returns ``(out [B, H, Lq, dh], has_key [B, Lq])``. A query without any allowed key gets an
    all-zero output (never NaN): its mask row is opened before the softmax and its output zeroed
    (``zero_empty=False``: left as is, for callers that zero those rows themselves).
    """
    if allowed.dim() == 3:
        allowed = allowed.unsqueeze(1)
    has_key = allowed.any(-1)                                  # [B, 1, Lq]
    safe = allowed | ~has_key.unsqueeze(-1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe)
    if zero_empty:
        out = out * has_key.unsqueeze(-1).to(out.dtype)
    return out, has_key.squeeze(1)


class _Chunk(SimpleNamespace):
    pass


def attention_chunks(q_index, k_index, n_seq, len_q, len_k, max_chunk_bytes=1 << 24, row_bytes=3072,
                     device=None):
    """Split packed query/key rows into chunks of whole sequences for :func:`packed_attention`.

    ``q_index [Rq]`` / ``k_index [Rk]``: flat grid positions ``b * len + t`` of the rows (None for
    both = every position of every sequence, in order: chunks of consecutive sequences at the
    full lengths). With indices, the sequences that have query rows are sorted by their extent
    (``1 +`` their largest query step ``t``, resp. key step) and grouped greedily; a chunk's grids
    are cut to the largest extents of its sequences (``lq``, ``lk``) and hold ``n`` sequences, with
    ``n (lq + lk) row_bytes <= max_chunk_bytes`` (or one sequence). Short sequences thus share
    small grids instead of being padded to ``len_q x len_k``; the result is the same (padding
    keys are never allowed, padding queries are dropped). Sequences without a query row are left
    out (their keys get no gradient, i.e. 0)."""
    if q_index is None and k_index is None:
        if device is None:
            device = 'cpu'
        n = max(1, min(n_seq, max_chunk_bytes // max(1, (len_q + len_k) * row_bytes)))
        chunks = []
        for s0 in range(0, n_seq, n):
            s1 = min(n_seq, s0 + n)
            c = _Chunk(seqs=None, s0=s0, s1=s1, n=s1 - s0, lq=len_q, lk=len_k)
            for name, length in (('q', len_q), ('k', len_k)):
                rows = torch.arange(s0 * length, s1 * length, device=device)
                setattr(c, name + '_rows', rows)
                setattr(c, name + '_local', rows - s0 * length)
                setattr(c, name + '_src', rows)
                setattr(c, name + '_pad', rows[:0])
            chunks.append(c)
        return chunks
    if q_index is None or k_index is None:
        dev = (q_index if q_index is not None else k_index).device
        if q_index is None:
            q_index = torch.arange(n_seq * len_q, device=dev)
        else:
            k_index = torch.arange(n_seq * len_k, device=dev)
    seq_q = torch.div(q_index, len_q, rounding_mode='floor')
    seq_k = torch.div(k_index, len_k, rounding_mode='floor')
    t_q, t_k = q_index - seq_q * len_q, k_index - seq_k * len_k
    ext_q = torch.zeros(n_seq, dtype=torch.long, device=q_index.device).scatter_reduce_(0, seq_q, t_q + 1, 'amax')
    ext_k = torch.zeros(n_seq, dtype=torch.long, device=k_index.device).scatter_reduce_(0, seq_k, t_k + 1, 'amax')
    order = torch.argsort(ext_q + ext_k, stable=True)
    order = order[ext_q[order] > 0]
    eq, ek = ext_q[order].tolist(), ext_k[order].tolist()
    # greedy grouping of the sorted sequences: (start, end, lq, lk) in `order`
    groups, start, mq, mk = [], 0, 0, 0
    for i, (a, b) in enumerate(zip(eq, ek)):
        nq, nk = max(mq, a), max(mk, b)
        if i > start and (i + 1 - start) * (nq + nk) * row_bytes > max_chunk_bytes:
            groups.append((start, i, mq, mk))
            start, nq, nk = i, a, b
        mq, mk = nq, nk
    if eq:
        groups.append((start, len(eq), mq, mk))
    groups = [(a, b, max(1, lq), max(1, lk)) for a, b, lq, lk in groups]      # a chunk may have no key
    chunk_of = torch.full((n_seq,), len(groups), dtype=torch.long, device=q_index.device)
    pos_of = torch.zeros(n_seq, dtype=torch.long, device=q_index.device)
    lq_of = torch.zeros(len(groups) + 1, dtype=torch.long, device=q_index.device)
    lk_of = torch.zeros_like(lq_of)
    for g, (a, b, lq, lk) in enumerate(groups):
        chunk_of[order[a:b]] = g
        pos_of[order[a:b]] = torch.arange(b - a, device=q_index.device)
        lq_of[g], lk_of[g] = lq, lk

    def split(seq, t, l_of):
        ch = chunk_of[seq]
        rows = torch.argsort(ch, stable=True)
        local = (pos_of[seq] * l_of[ch] + t)[rows]
        bounds = torch.bincount(ch, minlength=len(groups) + 1).cumsum(0).tolist()
        return rows, local, [0] + bounds

    q_rows, q_local, qb = split(seq_q, t_q, lq_of)
    k_rows, k_local, kb = split(seq_k, t_k, lk_of)
    chunks = []
    for g, (a, b, lq, lk) in enumerate(groups):
        c = _Chunk(seqs=order[a:b], n=b - a, lq=lq, lk=lk,
                   q_rows=q_rows[qb[g]:qb[g + 1]], q_local=q_local[qb[g]:qb[g + 1]],
                   k_rows=k_rows[kb[g]:kb[g + 1]], k_local=k_local[kb[g]:kb[g + 1]])
        c.q_src, c.q_pad = _slot_maps(c.q_rows, c.q_local, c.n * lq)
        c.k_src, c.k_pad = _slot_maps(c.k_rows, c.k_local, c.n * lk)
        chunks.append(c)
    return chunks


def _slot_maps(rows, local, n_slots):
    """Grid slot -> source row (0 for an empty slot) and the empty slots."""
    src = torch.zeros(n_slots, dtype=torch.long, device=rows.device)
    src[local] = rows
    empty = torch.ones(n_slots, dtype=torch.bool, device=rows.device)
    empty[local] = False
    return src, torch.nonzero(empty).squeeze(1)


def _chunk_mask(allowed, c):
    """``allowed [n_seq, 1, Lq, Lk]`` cut to the sequences and extents of chunk ``c``."""
    m = allowed[c.s0:c.s1] if c.seqs is None else allowed.index_select(0, c.seqs)
    return m[..., :c.lq, :c.lk]


def _to_grid(x, src, empty):
    """Grid ``[n_slots, dim]`` of the rows ``x[src]``, 0 at the ``empty`` slots (one gather)."""
    if x.size(0) == 0:
        return x.new_zeros(src.numel(), x.size(1))
    g = x.index_select(0, src)
    return g.index_fill_(0, empty, 0.0) if empty.numel() else g


def _head_views(g, n, length, n_parts, n_heads):
    """Grid ``[n * length, n_parts * H * dh]`` -> ``n_parts * H`` strided ``[n, length, dh]`` views
    (part-major, head-minor), usable by ``bmm`` without a copy."""
    v = g.view(n, length, n_parts * n_heads, -1)
    return [v[:, :, i] for i in range(n_parts * n_heads)]


def _chunk_grids(q, kv, c):
    """The chunk's grids: ``[n * lq, 3d]`` (self-attention) or ``([n * lq, d], [n * lk, 2d])``."""
    qg = _to_grid(q, c.q_src, c.q_pad)
    return qg, (qg if kv is None else _to_grid(kv, c.k_src, c.k_pad))


def _chunk_views(q, kv, c, n_heads, grids=None):
    """Per-head ``[n, l, dh]`` views of the chunk's queries, keys and values (of ``grids`` =
    :func:`_chunk_grids`' result when given; self-attention when both grids are one tensor)."""
    qg, kg = _chunk_grids(q, kv, c) if grids is None else grids
    if kg is qg:
        v = _head_views(qg, c.n, c.lq, 3, n_heads)
        return v[:n_heads], v[n_heads:2 * n_heads], v[2 * n_heads:]
    v = _head_views(kg, c.n, c.lk, 2, n_heads)
    return _head_views(qg, c.n, c.lq, 1, n_heads), v[:n_heads], v[n_heads:]


def _chunk_probs(Qs, Ks, c, allowed):
    """Attention probabilities ``[H, n, lq, lk]`` of chunk ``c`` and its ``has_key [n, lq]`` (a
    query without any allowed key attends uniformly; its output is zeroed by the caller)."""
    m = _chunk_mask(allowed, c)[:, 0]                              # [n, lq, lk]
    has = m.any(-1)                                                # [n, lq]
    bias = torch.zeros(m.shape, dtype=Qs[0].dtype, device=m.device).masked_fill_(~(m | ~has.unsqueeze(-1)),
                                                                                 float('-inf'))
    s = Qs[0].new_empty(len(Qs), c.n, c.lq, c.lk)
    for h, (Q, K) in enumerate(zip(Qs, Ks)):
        torch.bmm(Q, K.transpose(1, 2), out=s[h])
    return torch.softmax(s.mul_(Qs[0].size(-1) ** -0.5).add_(bias), dim=-1), has


def _packed_forward(q, kv, chunks, allowed, n_heads, zero_empty=True, keep=None, keep_grids=None):
    """Forward of :func:`packed_attention`; the chunks' probabilities are appended to ``keep``,
    their grids to ``keep_grids``."""
    d = q.size(1) if kv is not None else q.size(1) // 3
    out = q.new_empty(q.size(0), d)                 # every query row is in exactly one chunk
    for c in chunks:
        grids = _chunk_grids(q, kv, c)
        if keep_grids is not None:
            keep_grids.append(grids)
        Qs, Ks, Vs = _chunk_views(q, kv, c, n_heads, grids)
        P, has = _chunk_probs(Qs, Ks, c, allowed)
        o = torch.stack([torch.bmm(P[h], V) for h, V in enumerate(Vs)], dim=2).view(c.n * c.lq, d)
        if zero_empty:
            o = o * has.reshape(-1, 1).to(o.dtype)
        out.index_copy_(0, c.q_rows, o.index_select(0, c.q_local))
        if keep is not None:
            keep.append(P)
    return out


class _PackedAttention(torch.autograd.Function):
    """:func:`packed_attention` with a hand-written backward: the chunks' attention
    probabilities (``H * n * lq * lk`` floats, small) are kept, and the grids are either kept
    too (``keep_grids``) or rebuilt from the saved rows, so nothing is recomputed but (at most)
    the cheap row -> grid copies."""

    @staticmethod
    def forward(ctx, q, kv, chunks, allowed, n_heads, zero_empty, keep_grids):
        probs, grids = [], ([] if keep_grids else None)
        out = _packed_forward(q, kv, chunks, allowed, n_heads, zero_empty, keep=probs, keep_grids=grids)
        if keep_grids:      # the grids hold the rows: q / kv are not kept
            ctx.save_for_backward(*probs, *[g for qg, kg in grids for g in ((qg,) if kg is qg else (qg, kg))])
        else:
            ctx.save_for_backward(*probs, q, kv)
        ctx.args = (chunks, allowed, n_heads, zero_empty, keep_grids, q.shape, None if kv is None else kv.shape)
        return out

    @staticmethod
    def backward(ctx, grad):
        chunks, allowed, n_heads, zero_empty, keep_grids, q_shape, kv_shape = ctx.args
        saved = ctx.saved_tensors
        probs, rest = saved[:len(chunks)], saved[len(chunks):]
        self_attn = kv_shape is None
        q = kv = None
        if keep_grids:
            grids = [(g, g) for g in rest] if self_attn else list(zip(rest[0::2], rest[1::2]))
        else:
            q, kv = rest
            grids = [None] * len(chunks)
        d = q_shape[1] // 3 if self_attn else q_shape[1]
        scale = (d // n_heads) ** -0.5
        gq = grad.new_empty(q_shape)                # every query row is in exactly one chunk
        gkv = None if self_attn else grad.new_zeros(kv_shape)
        for c, P, gr in zip(chunks, probs, grids):
            n, lq, lk = c.n, c.lq, c.lk
            Qs, Ks, Vs = _chunk_views(q, kv, c, n_heads, gr)
            go = _to_grid(grad, c.q_src, c.q_pad)
            if zero_empty:
                go = go * _chunk_mask(allowed, c).any(-1).reshape(-1, 1).to(go.dtype)
            dOs = _head_views(go, n, lq, 1, n_heads)
            dV = [torch.bmm(P[h].transpose(1, 2), dO) for h, dO in enumerate(dOs)]
            dP = torch.empty_like(P)
            for h, (dO, V) in enumerate(zip(dOs, Vs)):
                torch.bmm(dO, V.transpose(1, 2), out=dP[h])
            dS = dP.sub_((dP * P).sum(-1, keepdim=True)).mul_(P).mul_(scale)
            dQ = [torch.bmm(dS[h], K) for h, K in enumerate(Ks)]
            dK = [torch.bmm(dS[h].transpose(1, 2), Q) for h, Q in enumerate(Qs)]
            if self_attn:
                g = torch.stack(dQ + dK + dV, dim=2).view(n * lq, 3 * d)
                gq.index_copy_(0, c.q_rows, g.index_select(0, c.q_local))
            else:
                gq.index_copy_(0, c.q_rows, torch.stack(dQ, dim=2).view(n * lq, d).index_select(0, c.q_local))
                g = torch.stack(dK + dV, dim=2).view(n * lk, 2 * d)
                gkv.index_copy_(0, c.k_rows, g.index_select(0, c.k_local))
        return gq, gkv, None, None, None, None, None


def packed_attention(q, kv, chunks, allowed, n_heads, len_q=None, len_k=None, zero_empty=True, keep_grids=False):
    """Multi-head attention on packed rows: ``q [Rq, d]`` (projected queries) attends to
    ``kv [Rk, 2d]`` (projected keys and values side by side) of the same sequence under
    ``allowed [n_seq, Lq, Lk]`` (or ``[n_seq, 1, Lq, Lk]``); ``chunks`` from
    :func:`attention_chunks` give the rows' grid positions. Self-attention: ``kv=None`` and
    ``q [R, 3d]`` holds the ``[q | k | v]`` rows. Returns ``[Rq, d]`` (0 for a query without
    any allowed key; ``zero_empty=False``: unspecified but finite there, for callers that zero
    those rows themselves). ``len_q``/``len_k`` are unused (the chunks carry their extents).

    The sequences are processed chunk by chunk on small grids (explicit ``softmax(QK^T / sqrt(dh))
    V`` with batched matmuls, no batch-wide ``[n_seq, L, .]`` grid); in training only the rows
    and the chunks' attention probabilities are kept (with ``keep_grids`` also the chunks'
    grids, saving their rebuild in backward at the cost of memory), and the backward is written
    out (:class:`_PackedAttention`)."""
    if allowed.dim() == 3:
        allowed = allowed.unsqueeze(1)
    if torch.is_grad_enabled() and (q.requires_grad or (kv is not None and kv.requires_grad)):
        return _PackedAttention.apply(q, kv, chunks, allowed, n_heads, zero_empty, keep_grids)
    return _packed_forward(q, kv, chunks, allowed, n_heads, zero_empty)


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


def _sequence_ranks(index, length, n_seq):
    """For flat steps ``index [R]`` (``b * length + t``): the sequence ``b``, the step ``t``, the
    rank of the row among its sequence's rows in step order, and the rows per sequence ``[n_seq]``."""
    seq = torch.div(index, length, rounding_mode='floor')
    cnt = torch.bincount(seq, minlength=n_seq)
    start = cnt.cumsum(0) - cnt
    if index.numel() > 1 and not bool((index[1:] >= index[:-1]).all()):
        order = torch.argsort(index)
        rank = torch.empty_like(index)
        rank[order] = torch.arange(index.numel(), device=index.device) - start[seq[order]]
    else:
        rank = torch.arange(index.numel(), device=index.device) - start[seq]
    return seq, index - seq * length, rank, cnt


class _PairProjection(torch.autograd.Function):
    """The input projections of :meth:`GatedCrossAttention.forward_packed_pair`, from the two
    layers' parameters (``in_proj`` ``W [3d, d]``/``b``, ``gate_fc1`` ``W_1 [d, 2d]``/``b_1``).
    Input ``x_a`` gets ``[q_a | k_b, v_b] = x_a [W^a_q; W^b_kv]^T + b`` (written into one
    ``[Ra + Rb, 3d]`` tensor with ``x_b``'s rows after it; no concatenation) and
    ``g_a = x_a W_1^{a,x T} + b_1^a`` in one GEMM, and ``z_a = x_a[zr_a] W_1^{b,z T}``: layer b's
    gate input ``z`` projected only on the rows ``zr_a`` of ``x_a`` that some query of b reads
    (``None``: layer b's gate reads no row of ``x_a``; ``z_a`` is then ``[0, d]``); ``x_b``
    likewise. The backward accumulates the input gradients in place and returns the
    parameters' gradients in their own shapes (no slicing / concatenation nodes)."""

    @staticmethod
    def forward(ctx, x_a, x_b, w_a, b_a, w1_a, b1_a, w_b, b_b, w1_b, b1_b, zr_a, zr_b):
        d, ra = x_a.size(1), x_a.size(0)
        fa = (torch.cat([w_a[:d], w_b[d:], w1_a[:, :d]]), torch.cat([b_a[:d], b_b[d:], b1_a]))    # rows of x_a
        fb = (torch.cat([w_b[:d], w_a[d:], w1_b[:, :d]]), torch.cat([b_b[:d], b_a[d:], b1_b]))    # rows of x_b
        qkv = x_a.new_empty(ra + x_b.size(0), 3 * d)
        gs, zs, xzs = [], [], []
        for x, (w, b), sl, zr, w1_ot in ((x_a, fa, slice(0, ra), zr_a, w1_b), (x_b, fb, slice(ra, None), zr_b, w1_a)):
            torch.addmm(b[:3 * d], x, w[:3 * d].t(), out=qkv[sl])
            gs.append(torch.addmm(b[3 * d:], x, w[3 * d:].t()))
            xz = None if zr is None else x.index_select(0, zr)
            xzs.append(xz)
            zs.append(x.new_empty(0, d) if xz is None else torch.mm(xz, w1_ot[:, d:].t()))
        ctx.save_for_backward(x_a, x_b, fa[0], fb[0], w1_a, w1_b, zr_a, zr_b, *[t for t in xzs if t is not None])
        ctx.has_z = tuple(t is not None for t in xzs)
        return qkv, gs[0], gs[1], zs[0], zs[1]

    @staticmethod
    def backward(ctx, g_qkv, g_gx_a, g_gx_b, g_z_a, g_z_b):
        x_a, x_b, w_a, w_b, w1_a, w1_b, zr_a, zr_b, *xz = ctx.saved_tensors
        xz = iter(xz)
        xz_a, xz_b = (next(xz) if h else None for h in ctx.has_z)
        d, ra = x_a.size(1), x_a.size(0)
        out = []
        for x, w, gq, gg, gz, zr, xzr, w1_ot in ((x_a, w_a, g_qkv[:ra], g_gx_a, g_z_a, zr_a, xz_a, w1_b),
                                                 (x_b, w_b, g_qkv[ra:], g_gx_b, g_z_b, zr_b, xz_b, w1_a)):
            gw = w.new_zeros(w.shape)
            gb = w.new_zeros(w.size(0))
            gx = torch.mm(gq, w[:3 * d])
            torch.mm(gq.t(), x, out=gw[:3 * d])
            torch.sum(gq, 0, out=gb[:3 * d])
            if gg is not None:
                gx.addmm_(gg, w[3 * d:])
                torch.mm(gg.t(), x, out=gw[3 * d:])
                torch.sum(gg, 0, out=gb[3 * d:])
            gw1z = None                                       # gradient of the other layer's W_1^z
            if xzr is not None and gz is not None and gz.numel():
                gx.index_add_(0, zr, torch.mm(gz, w1_ot[:, d:]))
                gw1z = torch.mm(gz.t(), xzr)
            out.append((gx, gw, gb, gw1z))
        (gxa, gwa, gba, gw1z_b), (gxb, gwb, gbb, gw1z_a) = out

        def params(gw_me, gb_me, gw_ot, gb_ot, gw1z):      # (in_proj W, b, gate_fc1 W, b) of one layer
            w1 = torch.cat([gw_me[3 * d:], gw_me.new_zeros(d, d) if gw1z is None else gw1z], dim=1)
            return (torch.cat([gw_me[:d], gw_ot[d:3 * d]]), torch.cat([gb_me[:d], gb_ot[d:3 * d]]),
                    w1, gb_me[3 * d:])

        return (gxa, gxb) + params(gwa, gba, gwb, gbb, gw1z_a) + params(gwb, gbb, gwa, gba, gw1z_b) + (None, None)


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
        """``act(W_2 GELU(W_1 [x; z] + b_1) + b_2)`` (reference form; the forward passes compute
        the same with ``W_1`` split into its ``x`` and ``z`` halves, fused with the attention
        projections)."""
        g = self.gate_fc2(F.gelu(self.gate_fc1(torch.cat([x, z], dim=-1))))
        return torch.sigmoid(g) if self.activation == 'sigmoid' else torch.tanh(g)

    # ---------------------------------------------------------------- core
    def _core(self, x, kv, attend, other=None, other_index=None):
        """GCA of the rows ``x [Rq, d]`` over the rows ``kv [Rk, d]``; ``attend(q, kvp)`` runs the
        multi-head attention of the projected queries ``[Rq, d]`` over the projected keys/values
        ``[Rk, 2d]`` and returns ``(att [Rq, d], has_key [Rq])``. The gate's other input is
        ``other [Rq, d]`` or, with ``other_index [Rq]``, the row ``kv[other_index]`` (0 where
        ``-1``). Returns ``(y, X', has_key)``."""
        d = self.d_model
        w, b = self.attn.in_proj.weight, self.attn.in_proj.bias
        q, gx = F.linear(x, torch.cat([w[:d], self.gate_fc1.weight[:, :d]]),
                         torch.cat([b[:d], self.gate_fc1.bias])).split(d, dim=1)
        by_index = self.gate_input == 'concat_other' and other_index is not None
        if by_index:        # z = kv[other_index]: W_1^z z = (W_1^z kv)[other_index], one GEMM with K/V
            kvp, zk = F.linear(kv, torch.cat([w[d:], self.gate_fc1.weight[:, d:]]),
                               torch.cat([b[d:], b.new_zeros(d)])).split([2 * d, d], dim=1)
        else:
            kvp, zk = F.linear(kv, w[d:], b[d:]), None
        att, has = attend(q, kvp)
        y, x_att = self._finish(x, att, has, gx, zk=zk, other=other, other_index=other_index)
        return y, x_att, has

    def _finish(self, x, att, has, gx, zk=None, other=None, other_index=None):
        """Everything after the attention: ``X' = out_proj(att)`` (0 without a key), the gate
        ``act(W_2 GELU(W_1^x x + b_1 + W_1^z z) + b_2)`` (``gx = W_1^x x + b_1`` precomputed;
        ``W_1 [x; z] = W_1^x x + W_1^z z``, so no ``[R, 2d]`` concatenation is formed) with ``z``
        = ``X'`` (``concat_attn``), ``other``, or the key row ``other_index`` (``zk`` = ``W_1^z``
        applied to the key rows; -1 = none, i.e. 0), and ``LN(x + Dropout(G * X'))``.
        Returns ``(y, X')``."""
        d = self.d_model
        x_att = self.attn.out_proj(att) * has.unsqueeze(-1).to(att.dtype)    # no key -> exactly 0
        w1z = self.gate_fc1.weight[:, d:]
        if self.gate_input == 'concat_attn':
            gz = F.linear(x_att, w1z)
        elif other_index is None:
            gz = F.linear(other, w1z)
        elif zk is not None and zk.size(0):
            gz = zk.index_select(0, other_index.clamp_min(0)) * (other_index >= 0).unsqueeze(-1).to(zk.dtype)
        else:
            gz = None
        g = self.gate_fc2(F.gelu(gx if gz is None else gx + gz))
        g = torch.sigmoid(g) if self.activation == 'sigmoid' else torch.tanh(g)
        return self.norm(x + self.dropout(g * x_att)), x_att

    # ---------------------------------------------------------------- two interleaved sequences
    @staticmethod
    def forward_packed_pair(layer_a, layer_b, x_a, index_a, x_b, index_b, n_seq, length, other_index_a=None,
                            other_index_b=None, return_stats=False):
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
        ``(y_a, y_b)`` (and ``(stats_a, stats_b)``, as :meth:`forward_packed`'s)."""
        if layer_a.attn.n_heads != layer_b.attn.n_heads or layer_a.d_model != layer_b.d_model:
            raise ValueError('GCA.forward_packed_pair: the two layers need the same size and heads')
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
        qkv, gx_a, gx_b, z_a, z_b = _PairProjection.apply(x_a, x_b, *pa, *pb, zr_a, zr_b)
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
                                  row_bytes=4 * 3 * d)
        att = packed_attention(qkv, None, chunks, allowed, layer_a.attn.n_heads, zero_empty=False,
                               keep_grids=True)
        sizes = [index_a.numel(), index_b.numel()]
        atts, hass = att.split(sizes), has.split(sizes)
        ys, stats = [], []
        for i, (me, ot, x, oi) in enumerate(own):
            y, x_att = me._finish(x, atts[i], hass[i], gx[i], zk=zk[i], other_index=slots[i])
            ys.append(y)
            if return_stats:
                with torch.no_grad():
                    seq = torch.div((index_a, index_b)[i], length, rounding_mode='floor')
                    xo = (x_b, x_a)[i]
                    if oi is None:
                        st_cross = None
                    else:
                        ov = oi >= 0
                        other = xo[oi.clamp_min(0)] * ov.unsqueeze(-1).to(xo.dtype) if xo.size(0) \
                            else x.new_zeros(x.shape)
                        st_cross = rows_mean_per_sequence(abs_cosine(x, other), ov, seq, n_seq)
                    stats.append({'ortho': rows_mean_per_sequence(abs_cosine(x, x_att), hass[i], seq, n_seq),
                                  'cross': st_cross})
        return (tuple(ys), tuple(stats)) if return_stats else tuple(ys)

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
        chunks = attention_chunks(None, None, B, Lq, Lk, row_bytes=4 * 3 * d, device=x.device)

        def attend(q, kvp):
            att = packed_attention(q, kvp, chunks, allowed, self.attn.n_heads, Lq, Lk)
            return att, allowed.any(-1).reshape(-1)

        y, x_att, has = self._core(x.reshape(B * Lq, d), kv.reshape(B * Lk, d), attend, other=other.reshape(B * Lq, d))
        y = y.view(B, Lq, d)
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
                       other_index=None, return_stats=False):
        """Step-aligned causal GCA on packed rows (no padding row is computed).

        ``x [Rq, d]`` are the query rows at flat steps ``q_index`` (``b * length + t``) of
        ``n_seq`` sequences; ``kv [Rk, d]`` the key rows at flat steps ``k_index``; the query at
        step ``t`` attends to the key rows of its sequence at steps ``<= t``. The other input of
        the ``concat_other`` gate (also used by the ``cross`` statistic) is either
        ``other [Rq, d]`` (rows where ``other_valid`` is False must be 0), or, cheaper,
        ``other_index [Rq]``: the key row holding it (-1: none, i.e. 0). Returns ``y [Rq, d]``
        (and ``{'ortho': [n_seq], 'cross': [n_seq]}`` with ``return_stats``).

        The attention runs on compact per-sequence grids: the query (key) rows of a sequence take
        the slots 0, 1, ... in step order and the mask compares their steps, so a sequence costs
        ``#queries x #keys``, not ``length x length``; the grids are small, so they are kept for
        backward instead of being recomputed."""
        if other is None and other_index is None and self.gate_input == 'concat_other':
            raise ValueError('GCA.forward_packed: `other` or `other_index` is required with gate_input=concat_other')
        sq, tq, rq, nq = _sequence_ranks(q_index, length, n_seq)
        sk, tk, rk, nk = _sequence_ranks(k_index, length, n_seq)
        Lq = max(1, int(nq.max())) if n_seq else 1
        Lk = max(1, int(nk.max())) if n_seq else 1
        step_q = torch.full((n_seq, Lq), -1, dtype=torch.long, device=x.device)     # padding: -1
        step_q[sq, rq] = tq
        step_k = torch.full((n_seq, Lk), length, dtype=torch.long, device=x.device)  # padding: never <= t
        step_k[sk, rk] = tk
        allowed = (step_k[:, None, :] <= step_q[:, :, None]).unsqueeze(1)           # [n_seq, 1, Lq, Lk]
        qpos, kpos = sq * Lq + rq, sk * Lk + rk
        has = allowed.reshape(n_seq * Lq, Lk).any(-1)[qpos]
        chunks = attention_chunks(qpos, kpos, n_seq, Lq, Lk, row_bytes=4 * 3 * self.d_model)

        def attend(q, kvp):
            return packed_attention(q, kvp, chunks, allowed, self.attn.n_heads, zero_empty=False), has

        y, x_att, has = self._core(x, kv, attend, other=other, other_index=other_index)
        if not return_stats:
            return y
        with torch.no_grad():
            if other_index is not None:
                other_valid = other_index >= 0
                other = kv[other_index.clamp_min(0)] * other_valid.unsqueeze(-1).to(kv.dtype) if kv.size(0) \
                    else x.new_zeros(x.shape)
            ov = torch.ones_like(has) if other_valid is None else other_valid
            stats = {'ortho': rows_mean_per_sequence(abs_cosine(x, x_att), has, sq, n_seq),
                     'cross': rows_mean_per_sequence(abs_cosine(x, other), ov, sq, n_seq)
                     if other is not None else None}
        return y, stats
