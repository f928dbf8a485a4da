r"""
LLM4CDSR
################################################

Reference:
    Qidong Liu et al. "Bridge the Domains: Large Language Models Enhanced Cross-domain Sequential
    Recommendation." In SIGIR 2025 (arXiv:2504.18383).

Reference code:
    https://github.com/Applied-Machine-Learning-Lab/LLM4CDSR-pytorch (HEAD 676cd16:
    ``models/LLMCDSR.py``, ``models/SASRec.py``, ``models/utils.py``, ``generators/data.py``).
    Reimplemented on this package's packed thread layout; the deviations from the official code
    are switches listed below and in docs/models/llm4cdsr.md (deviations).
"""

import math
from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_ortho.model.abstract_recommender import CrossDomainSeqRecommender
from recbole_ortho.model.kernels import packed_attention
from recbole_ortho.model.layers import Dropout, LayerNorm
from recbole_ortho.model.layout import pack_threads, step_facts
from recbole_ortho.model.loss import bce_sampled, symmetric_soft_contrastive
from recbole_ortho.model.negatives import DomainNegativeSampler, user_items_sorted
from recbole_ortho.utils.errors import ConfigError

THREADS = ('mixed', 'A', 'B')


class SASRecThread(nn.Module):
    r"""The weights of one SASRec backbone of the official code (``SASRecBackbone``): per block
    ``Q = LN(h);  h = LN'(Q + MHA(Q, h, h));  h = h + FFN(h)`` with a ReLU FFN (the official 1x1
    convolutions, ``d -> inner_size -> d``) and a final LayerNorm. The forward pass over packed
    rows lives in :class:`LLM4CDSR` (the three threads share one attention call)."""

    def __init__(self, d, n_layers, inner_size, eps):
        super().__init__()
        self.attn_norm = nn.ModuleList([LayerNorm(d, eps=eps) for _ in range(n_layers)])
        self.in_proj = nn.ModuleList([nn.Linear(d, 3 * d) for _ in range(n_layers)])
        self.out_proj = nn.ModuleList([nn.Linear(d, d) for _ in range(n_layers)])
        self.ffn_norm = nn.ModuleList([LayerNorm(d, eps=eps) for _ in range(n_layers)])
        self.ffn_in = nn.ModuleList([nn.Linear(d, inner_size) for _ in range(n_layers)])
        self.ffn_out = nn.ModuleList([nn.Linear(inner_size, d) for _ in range(n_layers)])
        self.last_norm = LayerNorm(d, eps=eps)


class LLM4CDSR(CrossDomainSeqRecommender):
    r"""LLM4CDSR: three SASRec threads over frozen item-text embeddings, summed scores, and two
    LLM-guided contrastive terms.

    * **Threads.** The *mixed* thread reads the user's whole A/B sequence through a frozen global
      text table (``[n_items, G]``) and a trainable linear adapter ``G -> G/2 -> d``; the *A* and
      *B* threads read only their domain's items through frozen per-domain text tables (PCA to
      ``d``), without adapter. Each thread is a :class:`SASRecThread` with learned positions
      (1 = its oldest item) and dropout on the embeddings. Item embeddings come from
      :func:`recbole_ortho.data.text_features.load_text_features`, handed over by the dataset
      (``dataset.feature('item_text', config)``).
    * **Score** of an item of domain ``D`` after step ``t``:
      :math:`\langle h^{mix}_t, \mathrm{adapter}(g_i) \rangle + \langle h^{D}_{t_D}, l_i \rangle`, with
      :math:`h^{D}_{t_D}` the ``D`` thread's state at its latest item at or before ``t``.
    * **Loss** :math:`L = \bar L_A + \bar L_B + \alpha L_{reg} + \beta L_{user}`: per-position BCE of
      the target and one sampled negative, averaged over the batch's positions of each target
      domain; :math:`L_{reg}` the symmetric soft-target contrastive loss (``tau_reg``) between the
      adapter embeddings of one random A and one random B input item per user (users with both);
      :math:`L_{user}` the same loss (``tau_user``) between the user's profile embedding (through a
      ``P -> P/2 -> d`` adapter) and the mixed thread's last state. ``alpha = reg_weight``,
      ``beta = user_weight`` (0 switches a term off; ``user_profile: none`` needs ``beta = 0``).

    Official-code behaviours, fixed by default and reproduced by a switch (docs/models/llm4cdsr.md, deviations):
    ``causal_attention`` (False: the official bidirectional attention, whose training position
    sees its own target), ``global_emb_scale`` (``table``: the global embedding scaled by
    ``sqrt(G)``, the table width, instead of ``sqrt(d)``), ``independent_negatives`` (True: the
    mixed thread's negative is drawn from the *input* item's domain independently of the domain
    thread's, so a negative's score adds two unrelated items), ``negatives_skip_last_item`` (True:
    the last item id of each domain is never a negative), ``empty_thread: official`` (a domain
    thread with no item yet outputs its final LayerNorm's bias, and such targets are left out of
    training; default ``zero``: it contributes 0 and the target trains the mixed thread). Not
    reproduced: attention to padding keys (the official pads every thread to 200 steps and
    attends to them); the evaluation negatives of the official domain threads (drawn apart from
    the mixed thread's, see docs/models/llm4cdsr.md).

    ``param_match_key = 'inner_size'``: the FFN width of every block (official: ``d``).
    """

    param_match_key = 'inner_size'
    component_properties = ('text',)
    #: handed over by the dataset (:mod:`recbole_ortho.data.features`): the item text tables, user profiles
    dataset_features = ('item_text',)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.hidden_size = d = config['hidden_size']
        self.n_layers = config['n_layers']
        self.n_heads = config['n_heads']
        self.inner_size = config['inner_size']
        self.dropout_prob = config['dropout_prob']
        self.layer_norm_eps = config['layer_norm_eps']
        self.reg_weight = config['reg_weight']
        self.user_weight = config['user_weight']
        self.tau_reg = config['tau_reg']
        self.tau_user = config['tau_user']
        self.causal_attention = config['causal_attention']
        self.global_emb_scale = config['global_emb_scale']
        self.independent_negatives = config['independent_negatives']
        self.skip_last_item = config['negatives_skip_last_item']
        self.empty_thread = config['empty_thread']
        self._check_settings(config)
        features = dataset.feature('item_text', config)             # the dataset hands the text tables over

        # define layers and loss
        g = torch.as_tensor(features.global_table, dtype=torch.float32)
        loc = torch.as_tensor(features.domain_table, dtype=torch.float32)
        if g.shape[0] != self.n_items or loc.shape[0] != self.n_items:
            raise ValueError(f'text features have {g.shape[0]} / {loc.shape[0]} item rows, the dataset {self.n_items}')
        if loc.shape[1] != d:
            raise ConfigError(f'text_domain_dim: the per-domain text tables have width {loc.shape[1]}, '
                              f'they feed the domain threads directly and must equal hidden_size ({d})')
        self.register_buffer('global_table', g, persistent=False)      # frozen, as the official tables
        self.register_buffer('domain_table', loc, persistent=False)
        G = g.shape[1]
        self.adapter = nn.Sequential(nn.Linear(G, G // 2), nn.Linear(G // 2, d))
        self.emb_scale = math.sqrt(G if self.global_emb_scale == 'table' else d)
        self.position_embedding = nn.ModuleList([nn.Embedding(self.max_seq_length + 1, d) for _ in THREADS])
        self.threads = nn.ModuleList([SASRecThread(d, self.n_layers, self.inner_size, self.layer_norm_eps)
                                      for _ in THREADS])
        self.dropout = Dropout(self.dropout_prob)
        self.user_adapter = None
        if self.user_weight > 0:
            if features.user_profiles is None:
                raise ConfigError('user_weight: > 0 needs user profiles (user_profile: none switches them off; '
                                  'set user_weight=0)')
            prof = torch.as_tensor(features.user_profiles, dtype=torch.float32)
            self.register_buffer('user_profiles', prof, persistent=False)
            P = prof.shape[1]
            self.user_adapter = nn.Sequential(nn.Linear(P, P // 2), nn.Linear(P // 2, d))
        ranges = dict(self.domain_range)
        if self.skip_last_item:                                   # official randint(lo, hi) never draws hi
            ranges = {k: (lo, hi - 1) for k, (lo, hi) in ranges.items()}
        self.sampler = DomainNegativeSampler(ranges, 1)

        # parameters initialization
        self._init_official()

    def _check_settings(self, config):
        for key in ('causal_attention', 'independent_negatives', 'negatives_skip_last_item'):
            if not isinstance(config[key], bool):
                raise ConfigError(f'{key}: [{config[key]}] must be True or False')
        for key, options in (('global_emb_scale', ('hidden', 'table')), ('empty_thread', ('zero', 'official'))):
            if config[key] not in options:
                raise ConfigError(f'{key}: [{config[key]}] must be one of {", ".join(options)}')
        for key in ('reg_weight', 'user_weight'):
            v = config[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ConfigError(f'{key}: [{v}] must be a number >= 0')
        if self.n_layers < 1 or self.hidden_size % self.n_heads:
            raise ConfigError(f'n_layers: [{self.n_layers}] must be >= 1 and n_heads: [{self.n_heads}] must divide '
                              f'hidden_size ({self.hidden_size})')

    def _init_official(self):
        """The official ``_init_weights``: Xavier-normal on every matrix (linear weights, position
        tables), LayerNorms 1/0, the attention projections' biases 0 (``nn.MultiheadAttention``'s
        init), other biases as ``nn.Linear``; the text tables are frozen buffers."""
        for name, p in self.named_parameters():
            if name.startswith('gca.'):
                continue
            if p.dim() >= 2:
                nn.init.xavier_normal_(p)
        for th in self.threads:
            for lin in list(th.in_proj) + list(th.out_proj):
                nn.init.zeros_(lin.bias)

    # ------------------------------------------------------------------ layout
    def layout(self, item_seq, item_len, tdom, train):
        """:class:`~recbole_ortho.model.layout.PackedLayout`: the mixed rows at every step, the A/B
        rows at their domain's occurrences; positions 1.. from each thread's oldest item; with
        ``causal_attention=False`` every row attends to all rows of its thread (official)."""
        f = step_facts(item_seq, item_len, self.item_domain, tdom)
        pos_x = torch.where(f.valid, f.idx + 1, torch.zeros_like(f.idx))
        pos_d = [torch.cumsum(f.occ[d].long(), dim=1) for d in (0, 1)]
        plan = pack_threads(f, item_seq, item_len, [pos_x] + pos_d, filled=False, train=train,
                            context=bool(self.interaction_stages), d_model=self.hidden_size)
        if not self.causal_attention:
            same = (f.dom[:, None, :] == f.dom[:, :, None]) & (f.dom[:, None, :] >= 0)
            full = f.valid[:, None, :] & f.valid[:, :, None]
            plan = replace(plan, allowed=torch.cat([full, same]).unsqueeze(1))
        return plan

    # ------------------------------------------------------------------ encoder
    def _embed(self, plan, adapted_tokens):
        """Input rows of the three threads (before dropout)."""
        n_x, n_a, n_b = plan.seg
        pos = plan.positions.split(plan.seg)
        tok = plan.tokens.split(plan.seg)
        rows = [adapted_tokens * self.emb_scale]
        rows += [self.domain_table[t] * math.sqrt(self.hidden_size) for t in tok[1:]]
        return [r + self.position_embedding[i](p) for i, (r, p) in enumerate(zip(rows, pos))]

    def _interact(self, stage, hs, plan):
        if stage not in self.interaction_stages:
            return hs
        h_a, h_b = self.domain_interaction(stage, hs[1], hs[2], plan.ctx)
        return [hs[0], h_a, h_b]

    def encode(self, plan, adapted_tokens):
        """Final states of the three threads' packed rows ``[h_mixed, h_A, h_B]``."""
        d = self.hidden_size
        hs = self._interact(0, [self.dropout(x) for x in self._embed(plan, adapted_tokens)], plan)
        p_att = self.dropout_prob if self.training else 0.0
        for i in range(self.n_layers):
            ns, qs, kvs = [], [], []
            for th, h in zip(self.threads, hs):
                w, b = th.in_proj[i].weight, th.in_proj[i].bias
                ns.append(th.attn_norm[i](h))
                qs.append(F.linear(ns[-1], w[:d], b[:d]))                   # queries from Q = LN(h)
                kvs.append(F.linear(h, w[d:], b[d:]))                       # keys and values from h
            att = packed_attention(torch.cat(qs), torch.cat(kvs), plan.chunks, plan.allowed, self.n_heads,
                                   dropout_p=p_att).split(plan.seg)
            out = []
            for th, q, a in zip(self.threads, ns, att):
                h = th.ffn_norm[i](q + th.out_proj[i](a))                   # Q + MHA(Q, h, h), then LN
                inner = F.relu(self.dropout(th.ffn_in[i](h)))           # official: dropout1 after conv1,
                out.append(h + self.dropout(th.ffn_out[i](inner)))          # dropout2 after conv2
            hs = self._interact(i + 1, out, plan)
        return [th.last_norm(h) for th, h in zip(self.threads, hs)]

    def _empty_states(self, like):
        """The state of a domain thread that has no item yet, ``[2, d]`` (A, B): 0, or the final
        LayerNorm's bias (what the official all-padding thread outputs)."""
        if self.empty_thread == 'official':
            return torch.stack([self.threads[1].last_norm.bias, self.threads[2].last_norm.bias])
        return like.new_zeros(2, self.hidden_size)

    def _head_states(self, hs, plan):
        """Per domain ``D``: ``(h_mixed, h_D, has_D)`` at the rows of ``plan.head[D]``."""
        h = torch.cat(hs + [self._empty_states(hs[0])])
        R = h.size(0) - 2
        out = []
        for dom, hd in enumerate(plan.head):
            has = hd.dom_row < R
            out.append((h[hd.x_row], h[torch.where(has, hd.dom_row, torch.full_like(hd.dom_row, R + dom))], has))
        return out

    # ------------------------------------------------------------------ loss
    def _negatives(self, domains, own, users):
        """One negative per row from ``domains`` (0/1), none of the user's items (redrawn up to 8
        times, then kept: with 8 redraws a hit needs a domain almost covered by one history)."""
        neg = self.sampler.sample_in_domain(domains)[:, 0]
        for _ in range(8):
            bad = self.sampler.invalid(neg[:, None], own[users], groups=1)[:, 0]
            if not bad.any():
                break
            neg = torch.where(bad, self.sampler.sample_in_domain(domains)[:, 0], neg)
        return neg

    def _reg_items(self, item_seq, item_len):
        """One random A and one random B input item of every user who has both (``[n], [n]``)."""
        f = step_facts(item_seq, item_len, self.item_domain)
        noise = torch.rand(item_seq.shape, device=item_seq.device)
        picks = []
        for d in (0, 1):
            score = torch.where(f.occ[d], noise, torch.full_like(noise, -1.0))
            picks.append(item_seq.gather(1, score.argmax(1, keepdim=True)).squeeze(1))
        both = f.occ[0].any(1) & f.occ[1].any(1)
        return picks[0][both], picks[1][both]

    def calculate_loss(self, interaction):
        item_seq, item_len, L = self.trim_batch(interaction)
        target = interaction[self.TARGET_SEQ][:, :L]
        tdom = self.item_domain[target]
        plan = self.layout(item_seq, item_len, tdom, train=True)
        own = user_items_sorted(item_seq, target)
        pos_items, neg_x, neg_d = [], [], []
        for dom, hd in enumerate(plan.head):
            pos_items.append(target.reshape(-1)[hd.src])
            dom_rows = torch.full_like(hd.src, dom)
            neg_d.append(self._negatives(dom_rows, own, hd.user))
            if self.independent_negatives:        # official: the mixed thread's own draw, from the input's domain
                neg_x.append(self._negatives(self.item_domain[item_seq.reshape(-1)[hd.src]], own, hd.user))
            else:
                neg_x.append(neg_d[-1])
        reg_a, reg_b = self._reg_items(item_seq, item_len) if self.reg_weight > 0 else (item_seq[:0, 0],) * 2
        n_tok = plan.seg[0]
        ids = torch.cat([plan.tokens[:n_tok]] + pos_items + neg_x + [reg_a, reg_b])
        emb = self.adapter(self.global_table[ids])                   # one adapter pass for every item needed
        sizes = [n_tok] + [p.numel() for p in pos_items] + [n.numel() for n in neg_x] + [reg_a.numel(), reg_b.numel()]
        parts = emb.split(sizes)
        hs = self.encode(plan, parts[0])
        losses = []
        for dom, (hx, hd_, has) in enumerate(self._head_states(hs, plan)):
            e_pos, e_neg = parts[1 + dom], parts[3 + dom]
            pos = (hx * e_pos).sum(-1) + (hd_ * self.domain_table[pos_items[dom]]).sum(-1)
            neg = (hx * e_neg).sum(-1) + (hd_ * self.domain_table[neg_d[dom]]).sum(-1)
            nll = bce_sampled(pos, neg)
            if self.empty_thread == 'official':                     # the official leaves these targets out
                nll = nll[has]
            losses.append(nll.mean() if nll.numel() else nll.sum())
        loss = losses[0] + losses[1]
        terms = dict(loss_a=losses[0], loss_b=losses[1])
        if self.reg_weight > 0 and reg_a.numel() > 0:
            terms['loss_reg'] = symmetric_soft_contrastive(parts[5], parts[6], self.tau_reg)
            loss = loss + self.reg_weight * terms['loss_reg']
        if self.user_adapter is not None:
            last = plan.row_of[torch.arange(item_seq.size(0), device=item_seq.device) * L + item_len - 1]
            prof = self.user_adapter(self.user_profiles[interaction[self.USER_ID]])
            terms['loss_user'] = symmetric_soft_contrastive(prof, hs[0][last], self.tau_user)
            loss = loss + self.user_weight * terms['loss_user']
        self.add_trace(**terms)
        return loss

    # ------------------------------------------------------------------ evaluation
    def head_states(self, item_seq, item_len, tdom):
        """``[B, 2d]`` per target domain: the mixed thread's last state beside the target domain's
        thread state (scored against :meth:`item_table`: mixed-thread score plus the domain thread's;
        an item of the other domain gets a meaningless second term, the evaluator ranks within the
        target's domain)."""
        plan = self.layout(item_seq, item_len, tdom, False)
        tokens = plan.tokens[:plan.seg[0]]
        if self.training or torch.is_grad_enabled():
            adapted = self.adapter(self.global_table[tokens])
        else:                                   # one adapter pass per item and evaluation, not per token
            adapted = self._adapted_table()[tokens]
        hs = self.encode(plan, adapted)
        return [(hd.user, torch.cat([hx, hdom], dim=1)) for hd, (hx, hdom, _) in zip(plan.head, self._head_states(hs, plan))]

    def item_table(self):
        """``[n_items, 2d]``: adapted global embedding and domain text embedding of every item."""
        return torch.cat([self._adapted_table(), self.domain_table], dim=1)

    def _adapted_table(self):
        """``[n_items, d]``: the adapter applied to every item's global text embedding (cached while
        evaluating: the evaluation batches and :meth:`item_table` share one pass)."""
        return self.eval_cached('adapted_global', lambda: self.adapter(self.global_table))
