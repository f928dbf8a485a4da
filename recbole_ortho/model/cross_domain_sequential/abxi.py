r"""
ABXI
################################################

Reference:
    Qingtian Bian, Marcus de Carvalho, Tieying Li, Jiaxing Xu, Hui Fang and Yiping Ke.
    "ABXI: Invariant Interest Adaptation for Task-Guided Cross-Domain Sequential Recommendation."
    In WWW 2025.

Reference code:
    https://github.com/DiMarzioBian/ABXI
"""

from types import SimpleNamespace

import torch
import torch.nn as nn

from recbole_ortho.model.abstract_recommender import CrossDomainSeqRecommender
from recbole_ortho.model.layers import (Dropout, LowRankAdapter, MultiHeadAttention, SwiGLU, attention_chunks,
                                        count_parameters, gathered_logits, packed_attention, take_rows)

__all__ = ['ABXI', 'count_parameters', 'param_matched_config', 'ConfigOverlay']


def _cfg(config, key, default):
    """``config[key]``, or ``default`` when the key is missing or None (RecBole's Config
    returns None for a missing key, a dict raises KeyError)."""
    try:
        value = config[key]
    except KeyError:
        value = None
    return default if value is None else value


class ConfigOverlay:
    """A read-only view of a config with some keys overridden (enough for a model constructor)."""

    def __init__(self, config, **overrides):
        self.config, self.overrides = config, overrides

    def __getitem__(self, key):
        if key in self.overrides:
            return self.overrides[key]
        try:
            return self.config[key]
        except KeyError:
            return None

    def __contains__(self, key):
        return key in self.overrides or key in self.config


class _EncoderBlock(nn.Module):
    """One ABXI encoder block, shared by the three inputs (mixed x, A, B):
    ``h = LN_att(h + Drop(MHA(h)))`` (shared), then
    ``h = LN_s(h + Drop(SwiGLU(h)) + Drop(dLoRA_s(h)))`` with the SwiGLU shared and the domain
    LoRA ``dLoRA_s`` and ``LN_s`` specific to the input ``s`` in (x, A, B)."""

    def __init__(self, d, n_heads, inner_size, rd, eps):
        super().__init__()
        self.attn = MultiHeadAttention(d, n_heads)
        self.norm_attn = nn.LayerNorm(d, eps=eps)
        self.ffn = SwiGLU(d, inner_size)
        self.dlora = nn.ModuleList([LowRankAdapter(d, rd) for _ in range(3)])
        self.norm_ffn = nn.ModuleList([nn.LayerNorm(d, eps=eps) for _ in range(3)])


class _DomainContext(SimpleNamespace):
    """Layout of the packed A/B rows handed to :meth:`ABXI.domain_interaction`.

    ``rows[D]``: flat steps ``b * L + t`` of domain ``D``'s rows, sorted (``filled``: every step
    after ``D``'s first item; else only the steps where an item of ``D`` occurs);
    ``row_at[D] [B * L]``: flat step -> row of ``D`` at that step, or -1; ``last[D] [B, L]``: the
    latest step ``<= t`` where an item of ``D`` occurs (-1: none); ``valid``/``occ``/``has``:
    ``[B, L]`` masks (non-padding step, an item of ``D`` occurs, ``D`` has a state)."""

    def latest_row(self, d, steps):
        """Row of domain ``d`` holding its latest state at or before each flat step of ``steps``
        (the row at that step when ``filled``, else the row of ``d``'s latest occurrence); -1
        where ``d`` has no item yet."""
        if self.filled:
            return self.row_at[d][steps]
        lst = self.last[d].reshape(-1)[steps]
        base = steps - torch.remainder(steps, self.L)
        return torch.where(lst >= 0, self.row_at[d][base + lst.clamp_min(0)], torch.full_like(lst, -1))

    def to_grid(self, rows, d):
        """Rows of domain ``d`` -> ``[B, L, dim]`` (zeros where the domain has no state)."""
        out = rows.new_zeros(self.B * self.L, rows.size(-1)).index_copy(0, self.rows[d], rows)
        return out.view(self.B, self.L, -1)

    def from_grid(self, grid, d):
        """``[B, L, dim]`` -> the rows of domain ``d``."""
        return grid.reshape(self.B * self.L, -1).index_select(0, self.rows[d])


class ABXI(CrossDomainSeqRecommender):
    r"""ABXI: invariant interest adaptation for task-guided cross-domain sequential recommendation.

    **Inputs.** For every step ``t`` of a user's mixed A/B sequence the model encodes (i) the
    mixed sequence and (ii) two *task-guided aligned* domain sequences: the A input at step ``t``
    is the latest A item at or before ``t`` (none before the user's first A item), B likewise.
    One item table (tied with the output layer) embeds all items; learned position embeddings
    count from the *end* (``1`` = most recent, ``0`` = padding): ``item_length - t`` on the mixed
    sequence and, on a domain sequence, the rank from the end among that domain's inputs up to
    its last target step (as the official aligned sequences; later inputs get 1).

    **Encoder.** ``n_layers`` blocks shared by the three inputs: post-norm causal multi-head
    self-attention (shared, with its LayerNorm), then a shared SwiGLU FFN plus a per-input
    domain LoRA (dLoRA, rank ``rd``) with a per-input post-LayerNorm. A domain input attends only
    to the steps where an item of its domain occurs (each domain item once), which is the
    official encoder run on the compacted domain sequence without its padding.

    **Projector.** For a step whose target is in domain ``D``:
    ``h = LN_iD(x + Drop(P_i(x)) + Drop(iLoRA_D(x))) + LN_DD(h_D + Drop(P_D(h_D)))``, with
    ``x`` the mixed-sequence state, ``h_D`` the domain-``D`` state at that step (0 before the
    user's first ``D`` item), ``P`` SwiGLU projectors and ``iLoRA`` rank ``ri``. Scores are dot
    products with the item embeddings; evaluation uses the state after the last history item
    and the target's domain (``domain_id``).

    **Loss.** InfoNCE per target position (temperature ``temperature``): the positive against
    ``n_neg_per_domain`` items drawn uniformly from A's id range *and* as many from B's (for
    targets of both domains, as the official code). Draws that are one of the user's training
    items (``item_id_list`` and ``target_id_list`` of its row) or repeat an earlier draw of the
    same domain half get a logit of -inf (masked, not redrawn). Per user the losses are averaged
    over its A-target positions (resp. B), then summed over users and divided by the batch size
    (users without an A target count as 0, as the official code); ``L = L_A + L_B``.

    **Speed.** Only non-padding rows are computed (packed rows), a domain input only at the
    steps where its domain occurs; the attention of all inputs runs on the packed rows chunk by
    chunk, sequences sorted by length into small grids (no batch-wide grid; the backward keeps
    only the rows and the attention probabilities), the SwiGLU networks keep only
    their input for backward, and the negatives' logits are matmuls: with ``shared_negatives``
    the draws of a user are shared by all its positions (``[B, L, d] x [B, d, 2K]``), without,
    each position has its own; in both cases computed in chunks without an ``[B, L, 2K, d]``
    tensor.

    ``official_quirks=True`` reproduces the official code's behaviour instead (see
    ``properties/model/ABXI.yaml`` and the notes): left padding to ``MAX_ITEM_LIST_LENGTH``
    attended to by the self-attention, aligned domain sequences with attended zero slots during
    training and compacted ones during evaluation, no masking after the FFN during evaluation, and
    the last A item in the pool of B negatives.
    """

    #: True: the A/B inputs hold a state at every step after their domain's first item (for
    #: subclasses that update the domain states at every step, e.g. ABXI_GCA with
    #: ``gca_query_steps: every``); False: only at the steps where their domain occurs (cheaper;
    #: identical results when nothing mixes the domains). Subclasses may set it per instance.
    filled_domain_states = False

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = d = int(_cfg(config, 'embedding_size', 256))
        self.n_layers = int(_cfg(config, 'n_layers', 1))
        self.n_heads = int(_cfg(config, 'n_heads', 2))
        self.inner_size = int(_cfg(config, 'inner_size', 680))
        self.dropout_prob = float(_cfg(config, 'dropout_prob', 0.5))
        self.rd = int(_cfg(config, 'rd', 16))
        self.ri = int(_cfg(config, 'ri', 64))
        self.temperature = float(_cfg(config, 'temperature', 0.75))
        self.n_neg = int(_cfg(config, 'n_neg_per_domain', 128))
        self.shared_negatives = bool(_cfg(config, 'shared_negatives', True))
        self.official_quirks = bool(_cfg(config, 'official_quirks', False))
        self.layer_norm_eps = float(_cfg(config, 'layer_norm_eps', 1e-5))
        if self.n_layers < 1:
            raise ValueError('n_layers must be >= 1')
        if self.official_quirks and self.filled_domain_states:
            raise ValueError(f'{type(self).__name__} does not support official_quirks=True '
                             '(the official layouts are not step-aligned in evaluation)')
        if set(self.domain_range) != {0, 1}:
            raise ValueError('ABXI needs exactly two domains (0 = A, 1 = B)')
        eps = self.layer_norm_eps

        self.item_embedding = nn.Embedding(self.n_items, d, padding_idx=0)
        self.position_embedding = nn.Embedding(self.max_seq_length + 1, d, padding_idx=0)
        self.dropout = Dropout(self.dropout_prob)
        self.blocks = nn.ModuleList([_EncoderBlock(d, self.n_heads, self.inner_size, self.rd, eps)
                                     for _ in range(self.n_layers)])
        # invariant projector P_i + iLoRA_A/B, domain projectors P_A/P_B and their LayerNorms
        self.proj_inv = SwiGLU(d, self.inner_size)
        self.ilora = nn.ModuleList([LowRankAdapter(d, self.ri) for _ in range(2)])
        self.proj_dom = nn.ModuleList([SwiGLU(d, self.inner_size) for _ in range(2)])
        self.norm_inv = nn.ModuleList([nn.LayerNorm(d, eps=eps) for _ in range(2)])
        self.norm_dom = nn.ModuleList([nn.LayerNorm(d, eps=eps) for _ in range(2)])
        self._reset_abxi_parameters()
        self._trace = None

    # ------------------------------------------------------------------ parameters
    def _reset_abxi_parameters(self):
        """Initialisation of the official code: embeddings truncated normal (std 0.02, cut at
        +-0.04; our padding rows zeroed), linear layers N(0, 0.02) with zero bias, LayerNorm 1/0,
        LoRA A ~ N(0, 0.02) and B = 0, attention input projection Xavier-uniform."""
        for emb in (self.item_embedding, self.position_embedding):
            nn.init.trunc_normal_(emb.weight, mean=0.0, std=0.02, a=-0.04, b=0.04)
            with torch.no_grad():
                emb.weight[0].zero_()
        for m in self.modules():
            if isinstance(m, (MultiHeadAttention, SwiGLU, LowRankAdapter)):
                m.reset_parameters()
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ batch layout
    def _domain_indices(self, item_seq, item_len, tdom):
        """Per-step facts shared by both layouts (all ``[B, L]``)."""
        B, L = item_seq.shape
        ar = torch.arange(L, device=item_seq.device)
        idx = ar.expand(B, L)
        valid = ar[None, :] < item_len[:, None]
        dom = self.item_domain[item_seq]                          # -1 at padding
        occ = [dom == 0, dom == 1]
        last = [torch.cummax(torch.where(o, idx, torch.full_like(idx, -1)), dim=1).values for o in occ]
        return SimpleNamespace(B=B, L=L, ar=ar, idx=idx, valid=valid, dom=dom, occ=occ, last=last, tdom=tdom)

    def aligned_domain_inputs(self, item_seq, item_len):
        """Task-guided aligned inputs ``(seq_a, seq_b)`` (``[B, L]``): at step ``t`` the latest
        A (resp. B) item at or before ``t``, 0 before the user's first item of that domain and at
        padding. Vectorised (``cummax`` of occurrence indices)."""
        f = self._domain_indices(item_seq, item_len, None)
        return tuple(torch.where((f.last[d] >= 0) & f.valid, item_seq.gather(1, f.last[d].clamp_min(0)),
                                 torch.zeros_like(item_seq)) for d in (0, 1))

    def _domain_positions(self, f):
        """Position (1 = most recent) of every domain occurrence, counted from the end among the
        domain's inputs up to its last target step ``T_D`` (the official aligned sequence holds
        exactly those); occurrences after ``T_D`` (no later target of their domain) get 1."""
        pos = []
        for d in (0, 1):
            cnt = torch.cumsum(f.occ[d].long(), dim=1)
            t_last = torch.where(f.tdom == d, f.idx, torch.full_like(f.idx, -1)).max(dim=1).values   # [B]
            at_t = cnt.gather(1, t_last.clamp_min(0)[:, None]).squeeze(1) * (t_last >= 0)
            pos.append((at_t[:, None] - cnt + 1).clamp_min(1))
        return pos

    def _plan(self, item_seq, item_len, tdom, train):
        """Packed-row layout of a batch (default: padding never computed nor attended)."""
        if self.official_quirks:
            return self._plan_official(item_seq, item_len, tdom, train)
        f = self._domain_indices(item_seq, item_len, tdom)
        B, L, dev = f.B, f.L, item_seq.device
        BL = B * L
        pos_occ = self._domain_positions(f)
        pos_x = torch.where(f.valid, item_len[:, None] - f.idx, torch.zeros_like(f.idx))
        has = [(f.last[d] >= 0) & f.valid for d in (0, 1)]
        filled = self.filled_domain_states
        toks, poss, rows = [item_seq], [pos_x], [f.valid]
        for d in (0, 1):
            lc = f.last[d].clamp_min(0)
            toks.append(item_seq.gather(1, lc))
            poss.append(pos_occ[d].gather(1, lc))
            rows.append(has[d] if filled else f.occ[d])
        flat_rows = [torch.nonzero(r.reshape(-1)).squeeze(1) for r in rows]
        grid_of = (0, 1, 2) if filled else (0, 1, 1)
        n_grids = 3 if filled else 2
        flat_idx = torch.cat([g * BL + fr for g, fr in zip(grid_of, flat_rows)])
        tokens = torch.cat([t.reshape(-1)[fr] for t, fr in zip(toks, flat_rows)])
        positions = torch.cat([p.reshape(-1)[fr] for p, fr in zip(poss, flat_rows)])
        R = flat_idx.numel()
        row_of = torch.full((n_grids * BL,), R, dtype=torch.long, device=dev)
        row_of[flat_idx] = torch.arange(R, device=dev)

        causal = (f.ar[None, :] <= f.ar[:, None])[None]          # [1, Lq, Lk]
        if filled:
            keys = [f.valid, f.occ[0], f.occ[1]]
            allowed = torch.cat([k[:, None, :] & causal for k in keys])
        else:
            same = (f.dom[:, None, :] == f.dom[:, :, None]) & (f.dom[:, None, :] >= 0)
            allowed = torch.cat([f.valid[:, None, :] & causal, same & causal])

        head = self._head_rows_fixed(f, item_len, row_of, R, train, filled)
        ctx = None
        if self.interaction_stages:
            row_at = []
            for d in (0, 1):
                m = torch.full((BL,), -1, dtype=torch.long, device=dev)
                m[flat_rows[d + 1]] = torch.arange(flat_rows[d + 1].numel(), device=dev)
                row_at.append(m)
            ctx = _DomainContext(B=B, L=L, valid=f.valid, occ=f.occ, has=has, last=f.last, filled=filled,
                                 rows=flat_rows[1:], row_at=row_at)
        chunks = attention_chunks(flat_idx, flat_idx, n_grids * B, L, L, row_bytes=4 * 3 * self.embedding_size)
        return SimpleNamespace(B=B, L=L, n_grids=n_grids, tokens=tokens, positions=positions, chunks=chunks,
                               seg=[fr.numel() for fr in flat_rows], flat_idx=flat_idx, row_of=row_of,
                               allowed=allowed.unsqueeze(1), mult=None, mask_last_ffn=True, head=head, ctx=ctx)

    def _head_rows_fixed(self, f, item_len, row_of, R, train, filled):
        """Rows read by the projector, per target domain: the source step (``b * L + t``), the
        user, the mixed-sequence row and the domain-state row (``R`` = the zero row when the user
        has no item of that domain yet)."""
        L, BL = f.L, f.B * f.L
        head = []
        for d in (0, 1):
            if train:
                src = torch.nonzero((f.tdom == d).reshape(-1)).squeeze(1)
            else:
                final_dom = f.tdom.gather(1, (item_len - 1)[:, None]).squeeze(1)
                users = torch.nonzero(final_dom == d).squeeze(1)
                src = users * L + item_len[users] - 1
            user = torch.div(src, L, rounding_mode='floor')
            if filled:
                dom_row = row_of[(d + 1) * BL + src]
            else:
                lst = f.last[d].reshape(-1)[src]
                dom_row = torch.where(lst >= 0, row_of[BL + user * L + lst.clamp_min(0)], torch.full_like(lst, R))
            head.append(SimpleNamespace(src=src, user=user, x_row=row_of[src], dom_row=dom_row))
        return head

    def _plan_official(self, item_seq, item_len, tdom, train):
        """Layout of the official code (``official_quirks=True``): every input left-padded to
        ``W = MAX_ITEM_LIST_LENGTH``, all ``3 * B * W`` rows computed, causal attention without a
        key-padding mask (zero vectors of padding/empty slots are attended to), outputs of empty
        slots re-zeroed after each sub-layer. Domain inputs: training = the aligned sequences
        (slot ``t`` holds the latest domain item <= ``t`` only if target ``t`` is in that domain,
        else 0); evaluation = the compacted domain subsequence of the history, and the last
        block's FFN output is not re-masked (as the official ``mask_* = 1`` in eval mode)."""
        f = self._domain_indices(item_seq, item_len, tdom)
        B, L, dev = f.B, f.L, item_seq.device
        W = self.max_seq_length
        if L > W:
            raise ValueError(f'sequence length {L} exceeds MAX_ITEM_LIST_LENGTH={W}')
        BW = B * W
        b_idx = torch.arange(B, device=dev)[:, None].expand(B, L)
        gflat = b_idx * W + (W - item_len)[:, None] + f.idx      # grid slot of step t (valid steps)

        def to_grid(vals, slots, mask):
            out = torch.zeros(BW, dtype=torch.long, device=dev)
            out[slots[mask]] = vals[mask]
            return out

        grids = [to_grid(item_seq, gflat, f.valid)]
        for d in (0, 1):
            if train:
                aligned = torch.where((f.tdom == d) & (f.last[d] >= 0), item_seq.gather(1, f.last[d].clamp_min(0)),
                                      torch.zeros_like(item_seq))
                grids.append(to_grid(aligned, gflat, f.valid))
            else:
                cnt = torch.cumsum(f.occ[d].long(), dim=1)
                slot = b_idx * W + W - cnt[:, -1:] + cnt - 1
                grids.append(to_grid(item_seq, slot, f.occ[d]))
        tok = torch.stack(grids).view(3, B, W)
        nz = tok != 0
        pos = nz.flip(-1).long().cumsum(-1).flip(-1) * nz
        causal = torch.ones(W, W, dtype=torch.bool, device=dev).tril()
        head = []
        for d in (0, 1):
            if train:
                src = torch.nonzero((f.tdom == d).reshape(-1)).squeeze(1)
                g = gflat.reshape(-1)[src]
            else:
                final_dom = f.tdom.gather(1, (item_len - 1)[:, None]).squeeze(1)
                users = torch.nonzero(final_dom == d).squeeze(1)
                src = users * L + item_len[users] - 1
                g = users * W + W - 1
            head.append(SimpleNamespace(src=src, user=torch.div(src, L, rounding_mode='floor'),
                                        x_row=g, dom_row=(d + 1) * BW + g))
        chunks = attention_chunks(None, None, 3 * B, W, W, row_bytes=4 * 3 * self.embedding_size, device=dev)
        mult = nz.reshape(-1, 1).to(self.item_embedding.weight.dtype)
        return SimpleNamespace(B=B, L=W, n_grids=3, tokens=tok.reshape(-1), positions=pos.reshape(-1), chunks=chunks,
                               seg=[BW, BW, BW], flat_idx=None, row_of=None, allowed=causal.expand(3 * B, 1, W, W),
                               mult=mult, mask_last_ffn=train, head=head, ctx=None)

    # ------------------------------------------------------------------ encoder
    #: stages (0 = after the embeddings, i = after block i) at which :meth:`domain_interaction`
    #: is applied; empty in ABXI.
    interaction_stages = frozenset()

    def domain_interaction(self, stage, h_a, h_b, ctx):
        """Hook for subclasses that let the two domain inputs interact (identity in ABXI).

        ``h_a [Ra, d]``, ``h_b [Rb, d]``: the packed A/B states, one row per step where the domain
        occurs, or, with ``filled_domain_states``, per step that has a state (``ctx``: a
        :class:`_DomainContext`; ``ctx.rows[D]``: the rows' flat steps ``b * L + t``;
        ``ctx.row_at[D]``: flat step -> row or -1; ``ctx.latest_row``: the row holding a domain's
        latest state at or before a step; ``ctx.has``/``ctx.occ``/``ctx.valid``: ``[B, L]`` masks;
        ``ctx.to_grid`` / ``ctx.from_grid`` convert to and from ``[B, L, d]``). Returns the new
        ``(h_a, h_b)`` (same shapes)."""
        return h_a, h_b

    def _interact(self, stage, h, plan):
        if stage not in self.interaction_stages:
            return h
        h_x, h_a, h_b = h.split(plan.seg)          # one split (its backward is one cat, not 3 slices)
        h_a, h_b = self.domain_interaction(stage, h_a, h_b, plan.ctx)
        return torch.cat([h_x, h_a, h_b])

    def _block(self, blk, h, plan, mask_ffn):
        qkv = blk.attn.in_proj(h)                                  # [R, 3d]
        att = packed_attention(qkv, None, plan.chunks, plan.allowed, self.n_heads, plan.L, plan.L)
        h = blk.norm_attn(h + self.dropout(blk.attn.out_proj(att)))
        if plan.mult is not None:
            h = h * plan.mult
        parts = h.split(plan.seg)
        lora = torch.cat([blk.dlora[s](p) for s, p in enumerate(parts)])
        pre = h + self.dropout(blk.ffn(h)) + self.dropout(lora)
        h = torch.cat([blk.norm_ffn[s](p) for s, p in enumerate(pre.split(plan.seg))])
        if plan.mult is not None and mask_ffn:
            h = h * plan.mult
        return h

    def _last_block_for_head(self, blk, h, plan):
        """Evaluation shortcut for the last block: keys/values from all rows, but queries, FFN
        and norms only for the rows the projector reads. Returns those rows (in ``plan.head``'s
        ``x_row``/``dom_row`` order of :meth:`_head_row_subset`) and the remapped head."""
        need, head = self._head_row_subset(plan)
        d = self.embedding_size
        qkv = blk.attn.in_proj(h)
        q_flat = torch.arange(h.size(0), device=h.device) if plan.flat_idx is None else plan.flat_idx
        chunks = attention_chunks(q_flat[need], q_flat, plan.n_grids * plan.B, plan.L, plan.L, row_bytes=12 * d)
        att = packed_attention(qkv[need, :d], qkv[:, d:], chunks, plan.allowed, self.n_heads, plan.L, plan.L)
        hs = blk.norm_attn(h[need] + blk.attn.out_proj(att))
        if plan.mult is not None:
            hs = hs * plan.mult[need]
        bounds = torch.tensor(plan.seg, device=h.device).cumsum(0)
        seg = torch.bincount(torch.searchsorted(bounds, need, right=True), minlength=3).tolist()
        parts = hs.split(seg)
        pre = hs + blk.ffn(hs) + torch.cat([blk.dlora[s](p) for s, p in enumerate(parts)])
        hs = torch.cat([blk.norm_ffn[s](p) for s, p in enumerate(pre.split(seg))])
        if plan.mult is not None and plan.mask_last_ffn:
            hs = hs * plan.mult[need]
        return hs, head

    def _head_row_subset(self, plan):
        R = plan.tokens.numel()
        rows = torch.cat([torch.cat([hd.x_row, hd.dom_row]) for hd in plan.head])
        need = torch.unique(rows[rows < R])                                  # sorted
        head = []
        for hd in plan.head:
            remap = [torch.where(r < R, torch.searchsorted(need, r), torch.full_like(r, need.numel()))
                     for r in (hd.x_row, hd.dom_row)]
            head.append(SimpleNamespace(src=hd.src, user=hd.user, x_row=remap[0], dom_row=remap[1]))
        return need, head

    def _encode(self, plan, extra_items=None):
        """Packed states of all rows after the embeddings and the encoder blocks. With
        ``extra_items``, their embeddings come from the same lookup (one dense gradient of the
        item table instead of two) and are returned too. Without gradients, if no domain
        interaction follows the last block, only the rows the projector reads are computed in
        that block (``plan.head`` is then remapped to them)."""
        ids = plan.tokens if extra_items is None else torch.cat([plan.tokens, extra_items])
        emb = self.item_embedding(ids)
        extra = emb[plan.tokens.numel():]
        h = emb[:plan.tokens.numel()] + self.position_embedding(plan.positions)
        if plan.mult is not None:
            h = h * plan.mult
        h = self._interact(0, self.dropout(h), plan)
        for i, blk in enumerate(self.blocks):
            last = i == self.n_layers - 1
            if last and not torch.is_grad_enabled() and not self.training and extra_items is None \
                    and self.n_layers not in self.interaction_stages:
                h, plan.head = self._last_block_for_head(blk, h, plan)
                return h
            h = self._block(blk, h, plan, mask_ffn=plan.mask_last_ffn or not last)
            h = self._interact(i + 1, h, plan)
        return h if extra_items is None else (h, extra)

    def _head(self, h, plan):
        """Projector: final representation of every head row, ``[rows_A, rows_B]``."""
        R = h.size(0)
        hx = [h[hd.x_row] for hd in plan.head]
        hdm = [h[hd.dom_row.clamp_max(R - 1)] * (hd.dom_row < R).unsqueeze(1).to(h.dtype)   # row R: zero state
               for hd in plan.head]
        hi = self.proj_inv(torch.cat(hx)).split([x.size(0) for x in hx])
        outs = []
        for d in (0, 1):
            inv = self.norm_inv[d](hx[d] + self.dropout(hi[d]) + self.dropout(self.ilora[d](hx[d])))
            spe = self.norm_dom[d](hdm[d] + self.dropout(self.proj_dom[d](hdm[d])))
            outs.append(inv + spe)
        return outs

    # ------------------------------------------------------------------ loss
    def _trim(self, interaction):
        item_len = interaction[self.ITEM_SEQ_LEN]
        L = max(1, int(item_len.max()))
        return interaction[self.ITEM_SEQ][:, :L], item_len, L

    def _sample_negatives(self, n, device):
        """``[n, 2K]`` uniform draws (with replacement): ``K`` from A's id range, then ``K`` from
        B's (with ``official_quirks`` B's pool also holds A's last id, the official off-by-one)."""
        K = self.n_neg
        (lo_a, hi_a), (lo_b, hi_b) = self.domain_range[0], self.domain_range[1]
        neg_a = torch.randint(lo_a, hi_a, (n, K), device=device)
        if self.official_quirks:
            r = torch.randint(lo_b, hi_b + 1, (n, K), device=device)
            neg_b = torch.where(r == hi_b, torch.full_like(r, hi_a - 1), r)
        else:
            neg_b = torch.randint(lo_b, hi_b, (n, K), device=device)
        return torch.cat([neg_a, neg_b], dim=1)

    def _invalid_negatives(self, negs, own_sorted):
        """True for a draw that is one of the user's items (``own_sorted``: sorted ``[n, M]``)
        or repeats an earlier draw of the same domain half; those logits are masked to -inf."""
        M = own_sorted.size(1)
        i = torch.searchsorted(own_sorted, negs).clamp_max(M - 1)
        bad = own_sorted.gather(1, i) == negs
        if self.official_quirks:                                   # the official never excludes it
            bad &= negs != self.domain_range[0][1] - 1
        K = self.n_neg
        dup = torch.zeros_like(bad)
        for s in (slice(0, K), slice(K, 2 * K)):
            srt, order = negs[:, s].sort(dim=1)
            d_s = torch.zeros_like(srt, dtype=torch.bool)
            d_s[:, 1:] = srt[:, 1:] == srt[:, :-1]
            dup[:, s] = torch.zeros_like(d_s).scatter(1, order, d_s)
        return bad | dup

    def _info_nce(self, outs, plan, item_seq, target, pos_emb):
        """Per-domain InfoNCE losses ``(L_A, L_B)`` of the head rows (see class docstring)."""
        B, L = item_seq.shape
        d = self.embedding_size
        head = plan.head
        out = torch.cat(outs)
        src = torch.cat([hd.src for hd in head])
        user = torch.cat([hd.user for hd in head])
        pos = (out * pos_emb).sum(-1)
        own = torch.cat([item_seq, target], dim=1).sort(dim=1).values.contiguous()
        table = self.item_embedding.weight
        if self.shared_negatives:
            negs = self._sample_negatives(B, item_seq.device)                   # [B, 2K]
            bad = self._invalid_negatives(negs, own)[user]
            grid = out.new_zeros(B * L, d).index_copy(0, src, out).view(B, L, d)
            neg = take_rows(gathered_logits(grid, table, negs).view(B * L, -1), src)
        else:
            negs = self._sample_negatives(out.size(0), item_seq.device)         # [R, 2K]
            bad = self._invalid_negatives(negs, own[user])
            neg = gathered_logits(out[:, None, :], table, negs).squeeze(1)
        logits = torch.cat([pos[:, None], neg.masked_fill(bad, float('-inf'))], dim=1) / self.temperature
        nll = torch.logsumexp(logits, dim=1) - logits[:, 0]
        losses = []
        for hd, part in zip(head, nll.split([o.size(0) for o in outs])):
            cnt = torch.bincount(hd.user, minlength=B).clamp_min(1).to(part.dtype)
            losses.append((part / cnt[hd.user]).sum() / B)
        return losses

    def calculate_loss(self, interaction):
        item_seq, item_len, L = self._trim(interaction)
        target = interaction[self.TARGET_SEQ][:, :L]
        tdom = self.item_domain[target]                              # -1 at padding
        plan = self._plan(item_seq, item_len, tdom, train=True)
        pos_items = target.reshape(-1)[torch.cat([hd.src for hd in plan.head])]
        h, pos_emb = self._encode(plan, extra_items=pos_items)
        outs = self._head(h, plan)
        loss_a, loss_b = self._info_nce(outs, plan, item_seq, target, pos_emb)
        self._record_trace(loss_a, loss_b)
        return loss_a + loss_b

    def _record_trace(self, loss_a, loss_b):
        if self._trace is None:
            self._trace = [0.0, 0.0, 0]
        self._trace[0] += loss_a.detach()
        self._trace[1] += loss_b.detach()
        self._trace[2] += 1

    def epoch_trace(self):
        """Mean ``loss_A`` / ``loss_B`` over the training batches since the last call."""
        if not self._trace or not self._trace[2]:
            return {}
        n = self._trace[2]
        out = {'loss_a': float(self._trace[0]) / n, 'loss_b': float(self._trace[1]) / n}
        self._trace = None
        return out

    # ------------------------------------------------------------------ parameter matching
    @classmethod
    def param_match_config(cls, config, dataset, n_target, tol=0.02):
        """Config updates that widen this model to ``n_target`` parameters (``--param_match``).

        The widened dimension is ``inner_size``, the hidden size of all SwiGLU networks (the
        encoder FFN of each block and the three projectors): one unit adds
        ``3 * d * (n_layers + 3)`` parameters (3,072 at d = 256 and one block, ~0.03 % of ABXI).
        The count is linear in ``inner_size``, so the closest value is solved for directly (two
        trial builds, global RNG state untouched). Returns ``{'inner_size': value}``; raises
        ``ValueError`` when the result is not within ``tol`` (relative) of ``n_target``."""
        h0 = int(_cfg(config, 'inner_size', 680))

        def count(h):
            return count_parameters(cls(ConfigOverlay(config, inner_size=h), dataset))

        with torch.random.fork_rng(devices=[]):
            p0, p1 = count(h0), count(h0 + 1)
            h = max(1, h0 + int(round((n_target - p0) / (p1 - p0))))
            p = p0 + (p1 - p0) * (h - h0)
        if abs(p - n_target) > tol * n_target:
            raise ValueError(f'param_match: {cls.__name__} with inner_size={h} has {p} parameters, '
                             f'{100 * (p - n_target) / n_target:+.2f} % from the target {n_target}')
        return {'inner_size': h}

    # ------------------------------------------------------------------ evaluation
    def _eval_target_domains(self, interaction, item_seq, item_len):
        """Target domain of every step of an evaluation history: the next item's domain, and the
        evaluated target's (``domain_id``) at the last step."""
        B, L = item_seq.shape
        if self.DOMAIN_ID in interaction:
            final = interaction[self.DOMAIN_ID]
        else:
            final = self.item_domain[interaction[self.ITEM_ID]]
        nxt = torch.cat([self.item_domain[item_seq[:, 1:]], item_seq.new_full((B, 1), -1)], dim=1)
        ar = torch.arange(L, device=item_seq.device)[None, :]
        last = (item_len - 1)[:, None]
        return torch.where(ar < last, nxt, torch.where(ar == last, final[:, None], torch.full_like(nxt, -1)))

    #: users per forward chunk in evaluation (bounds the memory of large evaluation batches)
    eval_chunk_size = 256

    def final_representation(self, interaction):
        """``[B, d]`` state after the last history item, projected for the target's domain.
        Without gradients, large batches are encoded ``eval_chunk_size`` users at a time (the
        statistics recorded by the chunks are concatenated)."""
        item_seq, item_len, _ = self._trim(interaction)
        tdom = self._eval_target_domains(interaction, item_seq, item_len)
        B, c = item_seq.size(0), self.eval_chunk_size
        if torch.is_grad_enabled() or B <= c:
            return self._final(item_seq, item_len, tdom)
        parts, stats = [], {}
        for s in range(0, B, c):
            n = int(item_len[s:s + c].max())
            parts.append(self._final(item_seq[s:s + c, :n], item_len[s:s + c], tdom[s:s + c, :n]))
            for k, v in self.pop_stats().items():
                stats.setdefault(k, []).append(v)
        for k, v in stats.items():
            self.record_stat(k, torch.cat(v))
        return torch.cat(parts)

    def _final(self, item_seq, item_len, tdom):
        plan = self._plan(item_seq, item_len, tdom, train=False)
        outs = self._head(self._encode(plan), plan)
        final = outs[0].new_zeros(item_seq.size(0), self.embedding_size)
        for hd, o in zip(plan.head, outs):
            final = final.index_copy(0, hd.user, o)
        return final

    def full_sort_predict(self, interaction):
        """Scores ``[B, n_items]`` of every item (both domains and the padding id 0; the
        evaluator restricts the ranking to the target's domain)."""
        return torch.matmul(self.final_representation(interaction), self.item_embedding.weight.t())

    def predict(self, interaction):
        """Score of ``interaction[ITEM_ID]`` for each row."""
        h = self.final_representation(interaction)
        return (h * self.item_embedding(interaction[self.ITEM_ID])).sum(-1)


# ---------------------------------------------------------------------------------------------
def param_matched_config(config, dataset, target_model_cls, target_config=None, tol=0.02, model_cls=None):
    """Widen ABXI (``inner_size``, see :meth:`ABXI.param_match_config`) until its parameter count
    is within ``tol`` of ``target_model_cls``'s.

    Args:
        config: the run's config (RecBole Config or dict-like); ``config['inner_size']`` is set to
            the result when the config supports item assignment.
        dataset: the dataset the models are built for.
        target_model_cls: e.g. ``ABXI_GCA``.
        target_config: config to build the target with (default: ``config``; keys it lacks fall
            back to the code defaults, which equal the target's yaml).
        tol: maximal relative difference.
        model_cls: the class to widen (default :class:`ABXI`).

    Returns:
        dict with ``key`` ('inner_size'), ``inner_size``, ``base_inner_size``, ``params``,
        ``base_params``, ``target_params`` and ``rel_diff``. The global RNG state is left untouched.
    """
    model_cls = model_cls or ABXI
    h0 = int(_cfg(config, 'inner_size', 680))
    with torch.random.fork_rng(devices=[]):
        target = count_parameters(target_model_cls(target_config if target_config is not None else config, dataset))
        p0 = count_parameters(model_cls(ConfigOverlay(config, inner_size=h0), dataset))
        h = model_cls.param_match_config(config, dataset, target, tol=tol)['inner_size']
        p = count_parameters(model_cls(ConfigOverlay(config, inner_size=h), dataset))
    try:
        config['inner_size'] = h
    except TypeError:
        pass
    return {'key': 'inner_size', 'inner_size': h, 'base_inner_size': h0, 'params': p, 'base_params': p0,
            'target_params': target, 'rel_diff': (p - target) / target}
