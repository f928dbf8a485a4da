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

from dataclasses import replace

import torch
import torch.nn as nn

from recbole_ortho.model.abstract_recommender import CrossDomainSeqRecommender
from recbole_ortho.model.kernels import attention_chunks, grid_row_bytes, packed_attention, projected_query_attention
from recbole_ortho.model.layers import Dropout, LayerNorm, LowRankAdapter, MultiHeadAttention, SwiGLU
from recbole_ortho.model.layout import PackedLayout, grid_head_rows, head_row_subset, pack_threads, step_facts
from recbole_ortho.model.loss import per_domain_info_nce
from recbole_ortho.model.negatives import (DomainNegativeSampler, row_negative_logits, shared_negative_logits,
                                           user_items_sorted)


class _EncoderBlock(nn.Module):
    """One ABXI encoder block, shared by the three inputs (mixed x, A, B):
    ``h = LN_att(h + Drop(MHA(h)))`` (shared), then
    ``h = LN_s(h + Drop(SwiGLU(h)) + Drop(dLoRA_s(h)))`` with the SwiGLU shared and the domain
    LoRA ``dLoRA_s`` and ``LN_s`` specific to the input ``s`` in (x, A, B)."""

    def __init__(self, d, n_heads, inner_size, rd, eps):
        super().__init__()
        self.attn = MultiHeadAttention(d, n_heads)
        self.norm_attn = LayerNorm(d, eps=eps)
        self.ffn = SwiGLU(d, inner_size)
        self.dlora = nn.ModuleList([LowRankAdapter(d, rd) for _ in range(3)])
        self.norm_ffn = nn.ModuleList([LayerNorm(d, eps=eps) for _ in range(3)])


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

    #: ``--param_match`` widens the hidden size of all SwiGLU networks (encoder FFN and projectors):
    #: one unit adds ``3 * d * (n_layers + 3)`` parameters (3,072 at d 256 and one block)
    param_match_key = 'inner_size'

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.embedding_size = d = config['embedding_size']
        self.n_layers = config['n_layers']
        self.n_heads = config['n_heads']
        self.inner_size = config['inner_size']
        self.dropout_prob = config['dropout_prob']
        self.rd = config['rd']
        self.ri = config['ri']
        self.temperature = config['temperature']
        self.n_neg = config['n_neg_per_domain']
        self.shared_negatives = config['shared_negatives']
        self.official_quirks = config['official_quirks']
        self.layer_norm_eps = eps = config['layer_norm_eps']
        if self.n_layers < 1:
            raise ValueError(f'n_layers: [{self.n_layers}] must be >= 1')

        # define layers and loss
        self.item_embedding = nn.Embedding(self.n_items, d, padding_idx=0)
        self.position_embedding = nn.Embedding(self.max_seq_length + 1, d, padding_idx=0)
        self.dropout = Dropout(self.dropout_prob)
        self.blocks = nn.ModuleList([_EncoderBlock(d, self.n_heads, self.inner_size, self.rd, eps)
                                     for _ in range(self.n_layers)])
        # invariant projector P_i + iLoRA_A/B, domain projectors P_A/P_B and their LayerNorms
        self.proj_inv = SwiGLU(d, self.inner_size)
        self.ilora = nn.ModuleList([LowRankAdapter(d, self.ri) for _ in range(2)])
        self.proj_dom = nn.ModuleList([SwiGLU(d, self.inner_size) for _ in range(2)])
        self.norm_inv = nn.ModuleList([LayerNorm(d, eps=eps) for _ in range(2)])
        self.norm_dom = nn.ModuleList([LayerNorm(d, eps=eps) for _ in range(2)])
        # the official pool of B negatives also holds A's last id (an off-by-one, never excluded)
        extra = {1: self.domain_range[0][1] - 1} if self.official_quirks else None
        self.sampler = DomainNegativeSampler(self.domain_range, self.n_neg, extra_id=extra)

        # parameters initialization
        self._reset_abxi_parameters()

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
    def domain_positions(self, f):
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

    def layout(self, item_seq, item_len, tdom, train):
        """:class:`~recbole_ortho.model.layout.PackedLayout` of a batch: the mixed rows and the
        A/B rows of :func:`~recbole_ortho.model.layout.pack_threads` with ABXI's positions
        (padding never computed nor attended); with ``official_quirks``, the official layout."""
        if self.official_quirks:
            return self._official_layout(item_seq, item_len, tdom, train)
        f = step_facts(item_seq, item_len, self.item_domain, tdom)
        pos_x = torch.where(f.valid, item_len[:, None] - f.idx, torch.zeros_like(f.idx))
        return pack_threads(f, item_seq, item_len, [pos_x] + self.domain_positions(f),
                            filled=self.filled_domain_states, train=train, context=bool(self.interaction_stages),
                            d_model=self.embedding_size)

    def _official_layout(self, item_seq, item_len, tdom, train):
        """Layout of the official code (``official_quirks=True``): every input left-padded to
        ``W = MAX_ITEM_LIST_LENGTH``, all ``3 * B * W`` rows computed, causal attention without a
        key-padding mask (zero vectors of padding/empty slots are attended to), outputs of empty
        slots re-zeroed after each sub-layer. Domain inputs: training = the aligned sequences
        (slot ``t`` holds the latest domain item <= ``t`` only if target ``t`` is in that domain,
        else 0); evaluation = the compacted domain subsequence of the history, and the last
        block's FFN output is not re-masked (as the official ``mask_* = 1`` in eval mode)."""
        f = step_facts(item_seq, item_len, self.item_domain, tdom)
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
        # the head reads the slot of its step (evaluation: the last slot, W - 1, of every grid)
        head = grid_head_rows(f, item_len, train, gflat, BW)
        chunks = attention_chunks(None, None, 3 * B, W, W, row_bytes=grid_row_bytes(self.embedding_size), device=dev)
        mult = nz.reshape(-1, 1).to(self.item_embedding.weight.dtype)
        return PackedLayout(B=B, L=W, n_grids=3, tokens=tok.reshape(-1), positions=pos.reshape(-1), chunks=chunks,
                            seg=[BW, BW, BW], flat_idx=None, row_of=None, allowed=causal.expand(3 * B, 1, W, W),
                            head=head, ctx=None, mult=mult, mask_last_ffn=train)

    # ------------------------------------------------------------------ encoder
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
        """Evaluation shortcut for the last block: attention over all rows, but queries, FFN
        and norms only for the rows the projector reads, and the keys and values never projected
        (:func:`~recbole_ortho.model.kernels.attention.projected_query_attention`). Returns those rows (in ``plan.head``'s
        ``x_row``/``dom_row`` order of :meth:`_head_row_subset`) and the remapped head
        (:func:`~recbole_ortho.model.layout.head_row_subset`)."""
        need, head = head_row_subset(plan)
        d = self.embedding_size
        q_flat = torch.arange(h.size(0), device=h.device) if plan.flat_idx is None else plan.flat_idx
        chunks = attention_chunks(q_flat[need], q_flat, plan.n_grids * plan.B, plan.L, plan.L, row_bytes=grid_row_bytes(d))
        att = projected_query_attention(h, need, blk.attn.in_proj, chunks, plan.allowed, self.n_heads)
        if att is None:                          # a sequence with two head rows: project every row
            qkv = blk.attn.in_proj(h)
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

    def _encode(self, plan, extra_items=None):
        """Packed states of all rows after the embeddings and the encoder blocks. With
        ``extra_items``, their embeddings come from the same lookup (one dense gradient of the
        item table instead of two) and are returned too. Without gradients, if no domain
        interaction follows the last block, only the rows the projector reads are computed in
        that block (the layout returned then has ``head`` remapped to them). Returns ``(h, layout)``
        or, with ``extra_items``, ``(h, layout, extra)``."""
        ids = plan.tokens if extra_items is None else torch.cat([plan.tokens, extra_items])
        emb = self.item_embedding(ids)
        extra = emb[plan.tokens.numel():]
        h = emb[:plan.tokens.numel()] + self.position_embedding(plan.positions)
        if plan.mult is not None:
            h = h * plan.mult
        h = self.interact(0, self.dropout(h), plan)
        for i, blk in enumerate(self.blocks):
            last = i == self.n_layers - 1
            if last and not torch.is_grad_enabled() and not self.training and extra_items is None \
                    and self.n_layers not in self.interaction_stages:
                h, head = self._last_block_for_head(blk, h, plan)
                return h, replace(plan, head=head)
            h = self._block(blk, h, plan, mask_ffn=plan.mask_last_ffn or not last)
            h = self.interact(i + 1, h, plan)
        return (h, plan) if extra_items is None else (h, plan, extra)

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
    def _info_nce(self, outs, plan, item_seq, target, pos_emb):
        """Per-domain InfoNCE losses ``(L_A, L_B)`` of the head rows (see class docstring)."""
        B, L = item_seq.shape
        out = torch.cat(outs)
        src = torch.cat([hd.src for hd in plan.head])
        user = torch.cat([hd.user for hd in plan.head])
        pos = (out * pos_emb).sum(-1)
        own = user_items_sorted(item_seq, target)
        table = self.item_embedding.weight
        if self.shared_negatives:
            negs = self.sampler.sample(B, item_seq.device)                      # [B, 2K]
            bad = self.sampler.invalid(negs, own)[user]
            neg = shared_negative_logits(out, src, table, negs, B, L)
        else:
            negs = self.sampler.sample(out.size(0), item_seq.device)            # [R, 2K]
            bad = self.sampler.invalid(negs, own[user])
            neg = row_negative_logits(out, table, negs)
        return per_domain_info_nce(pos, neg, bad, self.temperature, [hd.user for hd in plan.head], B)

    def calculate_loss(self, interaction):
        item_seq, item_len, L = self.trim_batch(interaction)
        target = interaction[self.TARGET_SEQ][:, :L]
        tdom = self.item_domain[target]                              # -1 at padding
        plan = self.layout(item_seq, item_len, tdom, train=True)
        pos_items = target.reshape(-1)[torch.cat([hd.src for hd in plan.head])]
        h, plan, pos_emb = self._encode(plan, extra_items=pos_items)
        outs = self._head(h, plan)
        loss_a, loss_b = self._info_nce(outs, plan, item_seq, target, pos_emb)
        self.add_trace(loss_a=loss_a, loss_b=loss_b)
        return loss_a + loss_b

    # ------------------------------------------------------------------ evaluation
    def head_rows(self, item_seq, item_len, tdom, train):
        """Projected states of the head rows: ``([out_A [R_A, d], out_B [R_B, d]], layout)`` with
        the rows of ``layout.head`` (training: every step whose target ``tdom`` is in A, resp. B;
        evaluation: the last history step of each user, by its target's domain)."""
        h, layout = self._encode(self.layout(item_seq, item_len, tdom, train))
        return self._head(h, layout), layout

    def head_states(self, item_seq, item_len, tdom):
        """The projected state after each user's last history item, per target domain; the family
        base scores them against the item embeddings."""
        outs, layout = self.head_rows(item_seq, item_len, tdom, train=False)
        return [(hd.user, o) for hd, o in zip(layout.head, outs)]
