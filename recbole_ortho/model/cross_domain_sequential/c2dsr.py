r"""
C2DSR
################################################

Reference:
    Jiangxia Cao, Xin Cong, Jiawei Sheng, Tingwen Liu and Bin Wang. "Contrastive Cross-Domain Sequential
    Recommendation." In CIKM 2022.

Reference code:
    https://github.com/cjx96/C2DSR (``C2DSR_src/``, HEAD 89d4b92)

Deviations from the official code (docs/models/c2dsr.md says why): 1. leave-one-out on our data, histories of up
to ``MAX_ITEM_LIST_LENGTH`` items (the official holds 14 in its 15 steps); 2. the item graph of all training
transitions; 3. no unused parameters (other-domain rows of the domain tables, the GCN weight matrix); 4. rows
without a next item in both domains are dropped per batch (officially from the data); 5. corrupted sequences
drawn per batch (officially once); 6. the package's dropout masks; 7. the trainer's Adam (betas 0.9 / 0.999, the
official 0.98); 8. a final target that is the first B item counts as B (the official ``>`` test drops it);
9. distinct evaluation negatives, fixed by ``eval_seed`` (officially drawn with replacement).
"""
import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_ortho.model.abstract_recommender import CrossDomainSeqRecommender
from recbole_ortho.model.kernels.linear_lse import linear_logsumexp, sparse_mm
from recbole_ortho.model.layers import Dropout, LayerNorm
from recbole_ortho.model.layout import DomainContext
from recbole_ortho.utils.errors import ConfigError


def _sparse(m, pad_first=False):
    """A scipy matrix as a torch sparse tensor (``pad_first``: with an empty row and column 0 in front)."""
    m = (sp.block_diag((sp.csr_matrix((1, 1)), m)) if pad_first else m).tocoo()
    idx = torch.as_tensor(np.vstack([m.row, m.col]), dtype=torch.long)
    return torch.sparse_coo_tensor(idx, torch.as_tensor(m.data, dtype=torch.float32), m.shape,
                                   check_invariants=True).coalesce()


class ItemGCN(nn.Module):
    r"""C2DSR's item GCN (official ``GCNLayer``): ``h_0 = X``, ``h_l = A Drop(h_{l-1}) + b_l``, output the mean
    of ``h_0 .. h_L``. The official layer also creates a weight matrix that its forward never uses."""

    def __init__(self, adj, d, n_layers, p):
        super().__init__()
        self.register_buffer('adj', adj.to_sparse_csr(), persistent=False)
        self.register_buffer('adj_t', adj.t().coalesce().to_sparse_csr(), persistent=False)
        self.bias = nn.ParameterList([nn.Parameter(torch.empty(d).uniform_(-d ** -0.5, d ** -0.5))
                                      for _ in range(n_layers)])
        self.dropout = Dropout(p)

    def forward(self, x):
        out = h = x
        for b in self.bias:
            h = sparse_mm(self.adj, self.adj_t, self.dropout(h)) + b
            out = out + h
        return out / (len(self.bias) + 1)


class SASRecEncoder(nn.Module):
    r"""C2DSR's self-attention encoder (official ``ATTENTION``, the pmixer SASRec) on left-padded ``[B, W, d]``
    states: ``x = Drop(x + P(pos)) * keep``; per block ``q = LN(x); x = LN'(q + MHA(q, x, x)); x = (x + FFN(x))
    * keep`` with ``FFN = Drop W_2 ReLU(Drop W_1 x)``; a final LayerNorm. Attention is causal only, so a query
    also attends to the zero states of masked steps (padding, the other domain's steps), as the official."""

    def __init__(self, width, d, n_heads, inner, n_layers, p, eps):
        super().__init__()
        self.pos = nn.Embedding(width + 1, d, padding_idx=0)
        self.attn_norm = nn.ModuleList([LayerNorm(d, eps=eps) for _ in range(n_layers)])
        self.attn = nn.ModuleList([nn.MultiheadAttention(d, n_heads, dropout=p, batch_first=True)
                                   for _ in range(n_layers)])
        self.ffn_norm = nn.ModuleList([LayerNorm(d, eps=eps) for _ in range(n_layers)])
        self.ffn_in = nn.ModuleList([nn.Linear(d, inner) for _ in range(n_layers)])
        self.ffn_out = nn.ModuleList([nn.Linear(inner, d) for _ in range(n_layers)])
        self.last_norm = LayerNorm(d, eps=eps)
        self.dropout = Dropout(p)

    def embed(self, x, pos, keep):
        return self.dropout(x + self.pos(pos)) * keep

    def block(self, i, x, keep, mask):
        q = self.attn_norm[i](x)
        x = self.ffn_norm[i](q + self.attn[i](q, x, x, attn_mask=mask, need_weights=False)[0])
        return (x + self.dropout(self.ffn_out[i](self.dropout(self.ffn_in[i](x)).relu()))) * keep


class C2DSR(CrossDomainSeqRecommender):
    r"""C2DSR: graph-refined item embeddings, three self-attention encoders, a contrastive infomax loss.

    Three item tables (mixed; A and B over their own items), each refined by an :class:`ItemGCN` over the training
    item graph (:func:`~recbole_ortho.data.item_graph.item_graph`: mixed / within-domain transitions); an input is
    ``(GCN(E)[i] + E[i]) * sqrt(d)``. Three :class:`SASRecEncoder` over the window left-padded to
    ``MAX_ITEM_LIST_LENGTH`` steps: the mixed sequence, and the A (B) sequence, i.e. the mixed one with the other
    domain's steps masked. The score of a domain-``D`` item after step ``t``: ``Linear_D(x_t + h^D_t)``, ``h^D_t``
    at the latest ``D`` step (none: the final LayerNorm's bias). Training, at the last ``train_positions`` steps:
    cross-entropy over ``D``'s items and a padding class (``Linear_pad``) of ``x_t`` for the next mixed item and of
    ``x_t + h^D_t`` at a ``D`` step for the next ``D`` item, summed and divided by ``rows * train_positions``;
    infomax: per domain, the mean ``D`` state over the steps with a next ``D`` item against the mixed encoder's
    mean over the other domain's such steps, of the real sequence and of one whose other-domain items are
    random (bilinear discriminator, BCE). Loss ``lambda * prediction + (1 - lambda) * infomax``.
    """

    param_match_key = 'inner_size'
    #: handed over by the dataset (:mod:`recbole_ortho.data.features`): the training item graphs
    dataset_features = ('item_graph',)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.hidden_size = d = config['hidden_size']
        self.n_layers = config['n_layers']
        self.lam, self.train_positions = config['lambda'], config['train_positions']
        p, W = config['dropout_prob'], self.max_seq_length
        if isinstance(self.lam, bool) or not isinstance(self.lam, (int, float)) or not 0 <= self.lam <= 1:
            raise ConfigError(f'lambda: [{self.lam}] must be a number in [0, 1]')
        for key, lo in (('train_positions', 1), ('gnn_layers', 0), ('n_layers', 1)):
            if isinstance(config[key], bool) or not isinstance(config[key], int) or config[key] < lo:
                raise ConfigError(f'{key}: [{config[key]}] must be an integer >= {lo}')
        self.lo = [self.domain_range[k][0] for k in (0, 1)]
        n_dom = [self.domain_range[k][1] - self.lo[k] for k in (0, 1)]
        g = dataset.feature('item_graph', config)
        adj = [_sparse(g.mixed)] + [_sparse(g.single[lo:lo + n, lo:lo + n], True)    # domain tables: local ids
               for lo, n in zip(self.lo, n_dom)]                                        # 1.., 0 = padding
        self.item_embedding = nn.ModuleList([nn.Embedding(self.n_items, d, padding_idx=0)] +
                                            [nn.Embedding(n + 1, d, padding_idx=0) for n in n_dom])
        self.gcn = nn.ModuleList([ItemGCN(a, d, config['gnn_layers'], p) for a in adj])
        self.encoder = nn.ModuleList([SASRecEncoder(W, d, config['n_heads'], config['inner_size'], self.n_layers, p,
                                                    config['layer_norm_eps']) for _ in range(3)])
        self.head = nn.ModuleList([nn.Linear(d, n) for n in n_dom])
        self.head_pad = nn.Linear(d, 1)
        self.discriminator = nn.ModuleList([nn.Bilinear(d, d, 1) for _ in range(2)])
        for m in self.discriminator:
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        self.register_buffer('causal', ~torch.ones(W, W, dtype=torch.bool).tril(), persistent=False)  # True: masked

    # ------------------------------------------------------------------ encoders
    def tables(self):
        """The encoders' input tables ``(GCN(E) + E) * sqrt(d)``: mixed, A (local ids), B (local ids)."""
        return self.eval_cached('tables', lambda: [(g(e.weight) + e.weight) * self.hidden_size ** 0.5
                                                   for g, e in zip(self.gcn, self.item_embedding)])

    def left_pad(self, x, item_len):
        """Right-padded ``[B, L]`` -> left-padded ``[B, W]`` (0 = padding)."""
        src = torch.arange(self.max_seq_length, device=x.device) - (self.max_seq_length - item_len)[:, None]
        return torch.where(src >= 0, x.gather(1, src.clamp(0, x.size(1) - 1)), torch.zeros_like(src))

    def encode(self, seq, corrupt=()):
        """States ``[B, W, d]`` of the mixed, A and B encoders for left-padded ``seq [B, W]`` (then the mixed
        encoder's states of each corrupted sequence of ``corrupt``)."""
        dom, tab = self.item_domain[seq], self.tables()
        keep = [dom >= 0, dom == 0, dom == 1]
        pos = [k.long().cumsum(1) * k for k in keep]
        ids = [torch.cat([seq, *corrupt])] + [torch.where(dom == k, seq - self.lo[k] + 1, 0) for k in (0, 1)]
        pos[0], keep[0] = pos[0].repeat(len(corrupt) + 1, 1), keep[0].repeat(len(corrupt) + 1, 1)
        keep = [k.unsqueeze(-1).to(tab[0].dtype) for k in keep]
        hs = [enc.embed(t[i], p, k) for enc, t, i, p, k in zip(self.encoder, tab, ids, pos, keep)]
        ctx = self.domain_context(dom) if self.interaction_stages else None
        hs[1:] = self.cross(0, hs[1:], ctx)
        for i in range(self.n_layers):
            hs = [enc.block(i, h, k, self.causal) for enc, h, k in zip(self.encoder, hs, keep)]
            hs[1:] = self.cross(i + 1, hs[1:], ctx)
        hs = [enc.last_norm(h) for enc, h in zip(self.encoder, hs)]
        return list(hs[0].split(seq.size(0))) + hs[1:] if corrupt else hs

    def domain_context(self, dom):
        """:class:`~recbole_ortho.model.layout.DomainContext` of the A/B steps of left-padded domains ``dom``."""
        B, W = dom.shape
        occ = [dom == 0, dom == 1]
        idx = torch.arange(W, device=dom.device).expand(B, W)
        last = [torch.cummax(torch.where(o, idx, -1), dim=1).values for o in occ]
        rows = [torch.nonzero(o.reshape(-1)).squeeze(1) for o in occ]
        ar = torch.arange(B * W, device=dom.device)
        row_at = [torch.full_like(ar, -1).index_copy(0, r, ar[:r.numel()]) for r in rows]
        return DomainContext(B=B, L=W, valid=dom >= 0, occ=occ, has=[lt >= 0 for lt in last], last=last, filled=False,
                             rows=rows, row_at=row_at)

    def cross(self, stage, hs, ctx):
        """The domain-interaction hook at ``stage`` on the A/B states at their own steps (identity in C2DSR)."""
        if stage not in self.interaction_stages:
            return hs
        flat = [h.reshape(-1, h.size(-1)) for h in hs]
        new = self.domain_interaction(stage, *[f[r] for f, r in zip(flat, ctx.rows)], ctx)
        return [f.index_copy(0, r, n.to(f.dtype)).view_as(h) for f, r, n, h in zip(flat, ctx.rows, new, hs)]

    # ------------------------------------------------------------------ training
    def corrupt(self, seq, dom):
        """The negative sequences of the infomax loss: ``seq`` with its B items, then its A items, replaced by
        items drawn uniformly from the same domain."""
        return [torch.where(dom == k, torch.randint_like(seq, *self.domain_range[k]), seq) for k in (1, 0)]

    def own_targets(self, seq, nxt):
        """``[own_A, own_B]``: at each step of ``seq`` (left-padded), the next item of the step's own domain
        among the later inputs and the final target (``nxt[:, -1]``), 0 where there is none."""
        full = torch.cat([seq, nxt[:, -1:]], dim=1)
        W = seq.size(1)
        ar = torch.arange(W + 1, device=seq.device)
        own = []
        for k in (0, 1):
            at = torch.where(self.item_domain[full] == k, ar, W + 1).flip(1).cummin(1).values.flip(1)[:, 1:]
            own.append(torch.where((self.item_domain[seq] == k) & (at <= W), full.gather(1, at.clamp(max=W)), 0))
        return own

    def calculate_loss(self, interaction):
        item_seq, item_len, L = self.trim_batch(interaction)
        seq = self.left_pad(item_seq, item_len)
        nxt = self.left_pad(interaction[self.TARGET_SEQ][:, :L], item_len)
        own = self.own_targets(seq, nxt)
        ok = (own[0] > 0).any(1) & (own[1] > 0).any(1)          # rows without both (official: dropped) weigh 0
        if not bool(ok.any()):
            return self.head_pad.bias.sum() * 0.0
        seq, nxt, own = seq[ok], nxt[ok], [o[ok] for o in own]
        n, W = seq.size(0), seq.size(1)
        h, hc_a, hc_b, h_a, h_b = self.encode(seq, self.corrupt(seq, self.item_domain[seq]))
        hd = (h_a, h_b)
        used = (torch.arange(W, device=seq.device) >= W - self.train_positions).expand(n, W)
        tdom = self.item_domain[nxt]
        ce = h.new_zeros(())
        for k in (0, 1):                    # cross-entropy over D's items and the padding class
            share, spec = used & (tdom == k), used & (own[k] > 0)
            x = torch.cat([h[share], (h + hd[k])[spec]])
            y = torch.cat([nxt[share], own[k][spec]]) - self.lo[k]
            lin = self.head[k]
            lse = torch.logaddexp(linear_logsumexp(x, lin.weight, lin.bias),
                                  self.head_pad(torch.cat([h[share], hd[k][spec]])).squeeze(1))
            ce = ce + (lse - (x * lin.weight[y]).sum(1) - lin.bias[y]).sum()
        mask = [(o > 0).unsqueeze(-1).to(h.dtype) for o in own]
        mean = lambda s, m: (s * m).sum(1) / m.sum(1)                                        # noqa: E731
        real, fake = [mean(h, m) for m in mask], [mean(hc_a, mask[0]), mean(hc_b, mask[1])]
        mi = h.new_zeros(())
        for k in (0, 1):                    # infomax: D's states against the mixed encoder's, real and corrupted
            r = mean(hd[k], mask[k])
            pos, neg = (self.discriminator[k](s[1 - k], r).squeeze(1) for s in (real, fake))
            mi = mi + (-F.logsigmoid(pos) - F.logsigmoid(-neg)).mean()
        pred = ce / (n * self.train_positions)
        self.add_trace(loss_pred=pred, loss_infomax=mi)
        return self.lam * pred + (1 - self.lam) * mi

    # ------------------------------------------------------------------ evaluation
    def head_states(self, item_seq, item_len, tdom):
        """Per target domain ``D``: ``[x_T + h^D, 1]`` after each user's last step (``h^D`` at the latest ``D``
        step; none: its masked last step), scored against :meth:`item_table`, i.e. by ``D``'s head."""
        seq = self.left_pad(item_seq, item_len)
        h, h_a, h_b = self.encode(seq)
        dom, ar = self.item_domain[seq], torch.arange(seq.size(1), device=seq.device)
        final = tdom.gather(1, (item_len - 1)[:, None]).squeeze(1)
        parts = []
        for k, hd in ((0, h_a), (1, h_b)):
            u = torch.nonzero(final == k).squeeze(1)
            s = h[u, -1] + hd[u, torch.where(dom[u] == k, ar, -1).max(1).values]
            parts.append((u, torch.cat([s, s.new_ones(u.numel(), 1)], dim=1)))
        return parts

    def item_table(self):
        """``[n_items, d + 1]``: each item's row of its domain's head and its bias (0 for the padding id)."""
        t = self.head[0].weight.new_zeros(self.n_items, self.hidden_size + 1)
        for k in (0, 1):
            lo, hi = self.domain_range[k]
            t[lo:hi] = torch.cat([self.head[k].weight, self.head[k].bias[:, None]], dim=1)
        return t

