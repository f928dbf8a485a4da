"""
recbole_ortho.model.kernels.attention
#####################################

Multi-head attention on *packed* rows (only the non-padding steps of each sequence are stored):
:func:`attention_chunks` groups the sequences into chunks of similar length, and
:func:`packed_attention` runs ``softmax(QK^T / sqrt(dh)) V`` chunk by chunk on small grids, with a
hand-written backward (:class:`PackedAttention`) that keeps only the rows and the attention
probabilities (or the grids). :func:`sequence_ranks` maps packed rows to their sequence slots.
"""

from types import SimpleNamespace

import torch

from recbole_ortho.model.kernels.amp import DEVICE_TYPES, LOW_PRECISION, accumulation_dtype, custom_bwd, custom_fwd
from recbole_ortho.model.kernels.dropout import keep_mask


class AttentionChunk(SimpleNamespace):
    """One chunk of :func:`attention_chunks`: ``n`` sequences (``seqs``, or the range ``s0:s1``)
    on grids of ``lq`` query and ``lk`` key slots; ``q_rows``/``k_rows`` the packed rows in the
    chunk and ``q_local``/``k_local`` their grid slots, ``q_src``/``k_src`` slot -> row and
    ``q_pad``/``k_pad`` the empty slots."""


def grid_row_bytes(d_model, parts=3, itemsize=4):
    """Bytes of one row of a chunk's attention grids (``parts`` projections of ``d_model``
    values: q, k, v): what :func:`attention_chunks` sizes its chunks with, for every caller."""
    return itemsize * parts * d_model


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
            c = AttentionChunk(seqs=None, s0=s0, s1=s1, n=s1 - s0, lq=len_q, lk=len_k)
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
        c = AttentionChunk(seqs=order[a:b], n=b - a, lq=lq, lk=lk,
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
    s = Qs[0].new_empty(len(Qs), c.n, c.lq, c.lk)
    for h, (Q, K) in enumerate(zip(Qs, Ks)):
        torch.bmm(Q, K.transpose(1, 2), out=s[h])
    s = s.to(accumulation_dtype(s))                                # the softmax in fp32 under bf16
    bias = torch.zeros(m.shape, dtype=s.dtype, device=m.device).masked_fill_(~(m | ~has.unsqueeze(-1)), float('-inf'))
    return torch.softmax(s.mul_(Qs[0].size(-1) ** -0.5).add_(bias), dim=-1), has


def _packed_forward(q, kv, chunks, allowed, n_heads, zero_empty=True, keep=None, keep_grids=None,
                    dropout_p=0.0, keep_drop=None):
    """Forward of :func:`packed_attention`; the chunks' probabilities are appended to ``keep``,
    their grids to ``keep_grids``, their dropout keep masks (``dropout_p > 0``) to ``keep_drop``."""
    d = q.size(1) if kv is not None else q.size(1) // 3
    out = q.new_empty(q.size(0), d)                 # every query row is in exactly one chunk
    for c in chunks:
        grids = _chunk_grids(q, kv, c)
        if keep_grids is not None:
            keep_grids.append(grids)
        Qs, Ks, Vs = _chunk_views(q, kv, c, n_heads, grids)
        P, has = _chunk_probs(Qs, Ks, c, allowed)
        Pv = P
        if dropout_p:
            m = keep_mask(P, dropout_p)
            Pv = _dropped(P, m, dropout_p)
            if keep_drop is not None:
                keep_drop.append(m)
        Pv = Pv.to(Vs[0].dtype)                     # fp32 probabilities -> the values' dtype (bf16)
        o = torch.stack([torch.bmm(Pv[h], V) for h, V in enumerate(Vs)], dim=2).view(c.n * c.lq, d)
        if zero_empty:
            o = o * has.reshape(-1, 1).to(o.dtype)
        out.index_copy_(0, c.q_rows, o.index_select(0, c.q_local))
        if keep is not None:
            keep.append(P)
    return out


def _dropped(P, keep, p):
    """``P * keep / (1 - p)`` (dropout of attention probabilities with the keep mask ``keep``)."""
    return torch.mul(P, keep.view(torch.uint8)).mul_(1.0 / (1.0 - p))


class PackedAttention(torch.autograd.Function):
    """:func:`packed_attention` with a hand-written backward: the chunks' attention
    probabilities (``H * n * lq * lk`` floats, small) are kept, and the grids are either kept
    too (``keep_grids``) or rebuilt from the saved rows, so nothing is recomputed but (at most)
    the cheap row -> grid copies."""

    @staticmethod
    @custom_fwd(cast_inputs=LOW_PRECISION)
    def forward(ctx, q, kv, chunks, allowed, n_heads, zero_empty, keep_grids, dropout_p=0.0):
        probs, grids, drops = [], ([] if keep_grids else None), []
        out = _packed_forward(q, kv, chunks, allowed, n_heads, zero_empty, keep=probs, keep_grids=grids,
                              dropout_p=dropout_p, keep_drop=drops)
        if keep_grids:      # the grids hold the rows: q / kv are not kept
            ctx.save_for_backward(*probs, *drops, *[g for qg, kg in grids for g in ((qg,) if kg is qg else (qg, kg))])
        else:
            ctx.save_for_backward(*probs, *drops, q, kv)
        ctx.args = (chunks, allowed, n_heads, zero_empty, keep_grids, q.shape, None if kv is None else kv.shape,
                    dropout_p)
        return out

    @staticmethod
    @custom_bwd
    def backward(ctx, grad):
        chunks, allowed, n_heads, zero_empty, keep_grids, q_shape, kv_shape, p_drop = ctx.args
        saved = ctx.saved_tensors
        n_drop = len(chunks) if p_drop else 0
        probs, rest = saved[:len(chunks)], saved[len(chunks) + n_drop:]
        drops = saved[len(chunks):len(chunks) + n_drop] if p_drop else [None] * len(chunks)
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
        for c, P, gr, m in zip(chunks, probs, grids, drops):
            n, lq, lk = c.n, c.lq, c.lk
            Pv = P if m is None else _dropped(P, m, p_drop)
            Qs, Ks, Vs = _chunk_views(q, kv, c, n_heads, gr)
            go = _to_grid(grad, c.q_src, c.q_pad)
            if zero_empty:
                go = go * _chunk_mask(allowed, c).any(-1).reshape(-1, 1).to(go.dtype)
            dOs = _head_views(go, n, lq, 1, n_heads)
            Pc = Pv.to(go.dtype)                    # fp32 probabilities -> the rows' dtype (bf16)
            dV = [torch.bmm(Pc[h].transpose(1, 2), dO) for h, dO in enumerate(dOs)]
            dP = torch.empty_like(P, dtype=go.dtype)
            for h, (dO, V) in enumerate(zip(dOs, Vs)):
                torch.bmm(dO, V.transpose(1, 2), out=dP[h])
            dP = dP.to(P.dtype)                     # the softmax's backward in fp32
            if m is not None:                       # through the dropout of the probabilities
                dP = _dropped(dP, m, p_drop)
            dS = dP.sub_((dP * P).sum(-1, keepdim=True)).mul_(P).mul_(scale).to(go.dtype)
            dQ = [torch.bmm(dS[h], K) for h, K in enumerate(Ks)]
            dK = [torch.bmm(dS[h].transpose(1, 2), Q) for h, Q in enumerate(Qs)]
            if self_attn:
                g = torch.stack(dQ + dK + dV, dim=2).view(n * lq, 3 * d)
                gq.index_copy_(0, c.q_rows, g.index_select(0, c.q_local))
            else:
                gq.index_copy_(0, c.q_rows, torch.stack(dQ, dim=2).view(n * lq, d).index_select(0, c.q_local))
                g = torch.stack(dK + dV, dim=2).view(n * lk, 2 * d)
                gkv.index_copy_(0, c.k_rows, g.index_select(0, c.k_local))
        return gq, gkv, None, None, None, None, None, None


def packed_attention(q, kv, chunks, allowed, n_heads, len_q=None, len_k=None, zero_empty=True, keep_grids=False,
                     dropout_p=0.0):
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
    out (:class:`PackedAttention`).

    ``dropout_p > 0``: dropout on the attention probabilities (as ``torch.nn.MultiheadAttention``'s
    ``dropout``: ``P * keep / (1 - p)``, keep masks from :func:`~recbole_ortho.model.kernels.keep_mask`,
    kept for backward as bytes); callers pass it in training only."""
    if allowed.dim() == 3:
        allowed = allowed.unsqueeze(1)
    if torch.is_grad_enabled() and (q.requires_grad or (kv is not None and kv.requires_grad)):
        return PackedAttention.apply(q, kv, chunks, allowed, n_heads, zero_empty, keep_grids, float(dropout_p))
    dev = q.device.type
    if dev in DEVICE_TYPES and torch.is_autocast_enabled(dev):     # as the kernel under autocast: bf16 rows
        with torch.autocast(dev, enabled=False):
            return _packed_forward(q.to(LOW_PRECISION), None if kv is None else kv.to(LOW_PRECISION), chunks, allowed,
                                   n_heads, zero_empty, dropout_p=float(dropout_p))
    return _packed_forward(q, kv, chunks, allowed, n_heads, zero_empty, dropout_p=float(dropout_p))



def projected_query_attention(x, q_rows, in_proj, chunks, allowed, n_heads):
    """Multi-head self-attention of the few rows ``q_rows`` of ``x [R, d]`` over the rows of their
    sequences, computed on the *unprojected* rows: the evaluation shortcut of a last encoder
    block, where only the rows a head reads need an output.

    ``in_proj`` is the block's packed ``d -> 3d`` projection (``[q | k | v]``, heads contiguous
    within each, as :class:`~recbole_ortho.model.layers.MultiHeadAttention`); ``chunks`` come from
    :func:`attention_chunks` with ``q_rows``' flat positions as queries. Per head ``h``, with
    ``q = W_q x + b_q``: ``q . (W_k x_j + b_k) = (W_k^T q) . x_j + q . b_k``, and the last term is
    the same for every key of the query, so the softmax ignores it; ``sum_j p_j (W_v x_j + b_v) =
    W_v (sum_j p_j x_j) + b_v``. The keys and values are thus never projected: ``2 d^2`` FLOPs per
    key row saved, for ``d`` per row and head spent. Equal to ``packed_attention(in_proj(x)[q_rows,
    :d], in_proj(x)[:, d:], ...)`` up to rounding (tested); a query without an allowed key gets 0.

    Returns ``[len(q_rows), d]`` (before the output projection), or None when some sequence has
    more than one query row (the caller then takes the general path)."""
    if allowed.dim() == 3:
        allowed = allowed.unsqueeze(1)
    d = x.size(1)
    dh = d // n_heads
    w, b = in_proj.weight, in_proj.bias
    q = torch.nn.functional.linear(x.index_select(0, q_rows), w[:d], None if b is None else b[:d])
    u = torch.einsum('nhe,hed->nhd', q.view(-1, n_heads, dh), w[d:2 * d].view(n_heads, dh, d)) * dh ** -0.5
    z = u.new_empty(q_rows.numel(), n_heads, d)
    has = torch.zeros(q_rows.numel(), dtype=torch.bool, device=x.device)
    for c in chunks:
        slot = torch.div(c.q_local, c.lq, rounding_mode='floor')            # the query's sequence in the chunk
        if slot.numel() != c.n or bool((slot.sort().values != torch.arange(c.n, device=slot.device)).any()):
            return None
        t = c.q_local - slot * c.lq
        xg = _to_grid(x, c.k_src, c.k_pad).view(c.n, c.lk, d)              # [n, lk, d] key rows
        ug = torch.zeros(c.n, n_heads, d, dtype=u.dtype, device=u.device).index_copy_(0, slot, u.index_select(0, c.q_rows))
        s = torch.bmm(xg, ug.transpose(1, 2)).to(accumulation_dtype(ug))   # [n, lk, H]
        seqs = torch.arange(c.s0, c.s1, device=x.device) if c.seqs is None else c.seqs
        t_of = torch.zeros(c.n, dtype=torch.long, device=x.device).index_copy_(0, slot, t)
        m = allowed[seqs, 0, t_of, :c.lk]                                   # [n, lk] keys the query may see
        ok = m.any(-1)
        s = s.masked_fill_(~(m | ~ok[:, None]).unsqueeze(-1), float('-inf'))
        p = torch.softmax(s, dim=1).to(xg.dtype)                            # over the keys
        zc = torch.bmm(p.transpose(1, 2), xg)                                # [n, H, d] = sum_j p_j x_j
        z.index_copy_(0, c.q_rows, zc.index_select(0, slot))
        has.index_copy_(0, c.q_rows, ok.index_select(0, slot))
    v = torch.einsum('nhd,hed->nhe', z, w[2 * d:].view(n_heads, dh, d)).reshape(-1, d)
    if b is not None:
        v = v + b[2 * d:]
    return v * has.unsqueeze(1).to(v.dtype)


def sequence_ranks(index, length, n_seq):
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

