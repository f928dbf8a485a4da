r"""
CDSRNP
################################################

Reference:
    Haipeng Li, Jiangxia Cao, Yiwen Gao, Yunhuai Liu and Shuchao Pang. "Cross-Domain Sequential
    Recommendation via Neural Process." arXiv:2410.13588, 2024.

Reference code:
    None is public. This model is a **reconstruction** from the paper's abstract and the designs it
    descends from; every element is labelled below (and in docs/models/cdsrnp.md) as *from the
    abstract*, *from a named ancestor*, or *our choice*. Ancestors:

    - C2DSR: Jiangxia Cao et al. "Contrastive Cross-Domain Sequential Recommendation." CIKM 2022
      (https://github.com/cjx96/C2DSR), by the same group: encoder sizes, per-domain next-item
      cross-entropy, the optimiser;
    - SASRec / RecBole's ``TransformerEncoder``: the sequence encoders;
    - Attentive Neural Processes (Kim et al., ICLR 2019): the deterministic path;
    - TaNP: Xixun Lin et al. "Task-adaptive Neural Process for User Cold-Start Recommendation."
      WWW 2021: prior/posterior training with the posterior, the prior at inference, FiLM;
    - NP-Rec style Gaussians: :math:`\sigma = 0.1 + 0.9\,\mathrm{softplus}(\cdot)`.
"""

from logging import getLogger
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_ortho.model.abstract_recommender import CrossDomainSeqRecommender
from recbole_ortho.model.encoders import PackedSASRec
from recbole_ortho.model.kernels import attention_chunks, grid_row_bytes, packed_attention
from recbole_ortho.model.layers import Dropout, LayerNorm
from recbole_ortho.model.layout import pack_threads, step_facts
from recbole_ortho.model.loss import domain_cross_entropy, gaussian_kl, info_nce
from recbole_ortho.model.negatives import DomainNegativeSampler
from recbole_ortho.utils.errors import ConfigError, DataError


def _mlp(n_in, d):
    """``Linear(n_in, d) -> ReLU -> Linear(d, d)`` (the set encoders of neural processes)."""
    return nn.Sequential(nn.Linear(n_in, d), nn.ReLU(), nn.Linear(d, d))


class CDSRNP(CrossDomainSeqRecommender):
    r"""CDSRNP: cross-domain sequential recommendation as a neural process (a reconstruction).

    * **Encoders** (from C2DSR / SASRec). One item table (tied with the output) and three
      SASRec encoders with their own weights, for the *mixed* sequence and the *A* and *B* views
      (each view: the user's items of that domain), learned positions from each view's oldest
      item, ``LN(item + position)`` and dropout, ``n_layers`` post-LN blocks
      (:class:`~recbole_ortho.model.encoders.PackedSASRec`). At step ``t`` the A state is the A
      view's state at the latest A item ``<= t``, B likewise; a view with no item yet is a learned
      **absent state** (our choice; the abstract says non-overlapped users are predicted).
    * **Sets** (from the abstract: overlapped users form the support set, query users include
      non-overlapped ones). A support element is an overlapped user's training history (both
      domains in it) with the next training item ``y``: ``(a, b, y)``, ``a``/``b`` the final A/B
      states (:func:`recbole_ortho.data.support.support_pool`). Training: ``support_size`` elements
      drawn per batch among the users not in the batch. Evaluation: ``eval_support_size`` elements
      fixed by ``eval_seed``, from training data only. The query set: every (step, target) of the
      batch users, ``(a_t, b_t, y_t)``.
    * **Latent path** (from the abstract: prior and posterior of a cross-domain correlation from
      the support and query sets; Gaussian form from NP-Rec, use from TaNP). Elements
      ``r = MLP_r([a; b; e_y])``; prior :math:`p(z \mid S) = \mathcal N(\mu, \sigma)` of the mean
      of the support elements, posterior :math:`q(z \mid S \cup Q)` of the mean over the support
      and the query elements (with their targets), both through one head,
      :math:`\sigma = 0.1 + 0.9\,\mathrm{softplus}`; ``z`` is sampled from the posterior in
      training, the prior mean at inference. One ``z`` per batch (our reading of "a cross-domain
      correlation generated from the support and query sets").
    * **Deterministic path** (from Attentive NP): the query's pair ``c_t = MLP_x([a_t; b_t])``
      attends to the support pairs ``c_i`` (keys) and takes their elements
      ``MLP_d([a_i; b_i; e_{y_i}])`` (values): ``r_det,t``.
    * **Fine-grained interest adaptive layer** (from the abstract: it selects the relevant parts
      of a query user's history; FiLM from TaNP): attention of the step's mixed state, projected
      for the **target's domain**, over the user's own mixed states up to ``t``, then FiLM,
      :math:`u_t = (1 + \gamma_t) \odot \mathrm{Attn}_t + \beta_t` with
      :math:`(\gamma_t, \beta_t) = W [z; r_{det,t}]` (zero-initialised, so the layer starts
      unmodulated). The query is built for the target's *domain*, not for a candidate item (our
      choice: a candidate-item query would cost one attention per candidate).
    * **Output** (from C2DSR: mixed state plus the target domain's state): for a target in
      domain ``D``, :math:`o_t = \mathrm{LN}_D(x_t + h^D_t + \mathrm{Drop}(u_t))`; scores are dot
      products with the item table.
    * **Loss**: :math:`L_A + L_B + \beta_e \mathrm{KL}(q \| p)`; ``L_D`` the mean over the batch's
      targets in ``D`` of the cross-entropy over all items of ``D`` (``ce_negatives: 0``, C2DSR)
      or of the sampled softmax over the target and ``ce_negatives`` uniform draws from ``D``
      shared by the batch's rows (a draw equal to the target is masked; our choice, for CPU
      budgets); ``beta_e =
      kl_weight * min(1, (e + 1) / kl_warmup_epochs)`` at epoch ``e`` (KL warm-up). The loss terms
      go to the epoch trace (``loss_a``, ``loss_b``, ``kl``, ``kl_beta``).

    Switches: ``latent_path`` / ``deterministic_path`` (False leaves that path out; without both
    the adaptive layer is unmodulated). ``param_match_key = 'inner_size'``: the FFN width of every
    encoder block.
    """

    param_match_key = 'inner_size'
    #: handed over by the dataset (:mod:`recbole_ortho.data.features`): the support elements
    dataset_features = ('support_pool',)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.hidden_size = d = config['hidden_size']
        self.n_layers = config['n_layers']
        self.n_heads = config['n_heads']
        self.inner_size = config['inner_size']
        self.hidden_dropout_prob = config['hidden_dropout_prob']
        self.attn_dropout_prob = config['attn_dropout_prob']
        self.layer_norm_eps = config['layer_norm_eps']
        self.initializer_range = config['initializer_range']
        self.support_size = config['support_size']
        self.eval_support_size = config['eval_support_size']
        self.latent_size = config['latent_size']
        self.latent_path = config['latent_path']
        self.deterministic_path = config['deterministic_path']
        self.kl_weight = config['kl_weight']
        self.kl_warmup_epochs = config['kl_warmup_epochs']
        self.ce_negatives = config['ce_negatives']
        self._check_settings()
        pool = dataset.feature('support_pool', config)                # the dataset hands the support pool over
        if len(pool) == 0:
            raise DataError(f'{type(self).__name__}: no user has items of both domains in the training part of its '
                            f'sequence, so there is no support set (overlapped users); check overlap_ratio '
                            f'({config.get("overlap_ratio")})')
        for name in ('users', 'item_seq', 'item_len', 'target'):
            self.register_buffer(f'support_{name}', torch.as_tensor(getattr(pool, name), dtype=torch.long),
                                 persistent=False)
        if len(pool) < max(self.support_size, self.eval_support_size):
            getLogger().warning(f'{type(self).__name__}: the support pool has {len(pool)} users (overlapped, both '
                                f'domains in their training history), fewer than support_size={self.support_size} / '
                                f'eval_support_size={self.eval_support_size}: the support sets hold at most {len(pool)}')
        g = torch.Generator().manual_seed(int(config['eval_seed']))
        idx = torch.randperm(len(pool), generator=g)[:self.eval_support_size].sort().values
        self.register_buffer('eval_support_idx', idx, persistent=False)

        # define layers and loss
        self.item_embedding = nn.Embedding(self.n_items, d, padding_idx=0)
        self.position_embedding = nn.ModuleList([nn.Embedding(self.max_seq_length + 1, d, padding_idx=0)
                                                 for _ in range(3)])
        self.emb_norm = nn.ModuleList([LayerNorm(d, eps=self.layer_norm_eps) for _ in range(3)])
        self.dropout = Dropout(self.hidden_dropout_prob)
        self.encoder = PackedSASRec(3, d, self.n_heads, self.inner_size, self.n_layers, self.hidden_dropout_prob,
                                    self.attn_dropout_prob, self.layer_norm_eps)
        self.absent = nn.Parameter(torch.empty(2, d))                   # the A / B state before any item
        film_in = 0
        if self.latent_path:
            self.latent_encoder = _mlp(3 * d, d)                        # r = MLP_r([a; b; e_y])
            self.latent_head = nn.Linear(d, 2 * self.latent_size)       # mean of r -> (mu, sigma)
            film_in += self.latent_size
        if self.deterministic_path:
            self.pair_encoder = _mlp(2 * d, d)                          # c = MLP_x([a; b]): queries and keys
            self.det_encoder = _mlp(3 * d, d)                           # values MLP_d([a; b; e_y])
            self.det_query, self.det_key, self.det_value, self.det_out = (nn.Linear(d, d) for _ in range(4))
            film_in += d
        self.film = nn.Linear(film_in, 2 * d) if film_in else None
        self.adapt_query = nn.ModuleList([nn.Linear(d, d) for _ in range(2)])   # per target domain
        self.adapt_kv = nn.Linear(d, 2 * d)
        self.adapt_out = nn.Linear(d, d)
        self.out_norm = nn.ModuleList([LayerNorm(d, eps=self.layer_norm_eps) for _ in range(2)])
        self.sampler = DomainNegativeSampler(self.domain_range, self.ce_negatives) if self.ce_negatives else None

        # parameters initialization
        self.apply(self._init_weights)
        if self.film is not None:                 # FiLM starts as the identity
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def _check_settings(self):
        for key in ('latent_path', 'deterministic_path'):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f'{key}: [{getattr(self, key)}] must be True or False')
        for key, lo in (('support_size', 1), ('eval_support_size', 1), ('latent_size', 1), ('kl_warmup_epochs', 0),
                        ('ce_negatives', 0), ('n_layers', 1)):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f'{key}: [{v}] must be an integer >= {lo}')
        v = self.kl_weight
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ConfigError(f'kl_weight: [{v}] must be a number >= 0')
        if self.hidden_size % self.n_heads:
            raise ConfigError(f'n_heads: [{self.n_heads}] must divide hidden_size ({self.hidden_size})')

    def _init_weights(self, module):
        """RecBole's SASRec initialisation: normal(0, ``initializer_range``) for linear and embedding
        weights (padding rows zeroed), zero biases, LayerNorms 1 / 0; the absent states likewise."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.initializer_range)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if module is self:
            nn.init.normal_(self.absent, mean=0.0, std=self.initializer_range)

    # ------------------------------------------------------------------ encoders
    def layout(self, item_seq, item_len, tdom, train):
        """:class:`~recbole_ortho.model.layout.PackedLayout`: the mixed rows at every step, the A/B
        rows at their domain's occurrences (positions 1.. from each view's oldest item), with the
        :class:`~recbole_ortho.model.layout.DomainContext` (the latest A/B rows of any step)."""
        f = step_facts(item_seq, item_len, self.item_domain, tdom)
        pos_x = torch.where(f.valid, f.idx + 1, torch.zeros_like(f.idx))
        pos_d = [torch.cumsum(f.occ[d].long(), dim=1) for d in (0, 1)]
        return pack_threads(f, item_seq, item_len, [pos_x] + pos_d, filled=False, train=train, context=True,
                            d_model=self.hidden_size)

    def encode(self, plan):
        """States of the packed rows ``[h_mixed, h_A, h_B]`` after the embeddings and the encoders
        (the domain-interaction hook at stage 0 and after each block)."""
        seg = plan.seg
        emb = self.item_embedding(plan.tokens).split(seg)
        pos = plan.positions.split(seg)
        h = torch.cat([self.emb_norm[s](e + self.position_embedding[s](p)) for s, (e, p) in enumerate(zip(emb, pos))])
        h = self.interact(0, self.dropout(h), plan)
        h = self.encoder(h, plan, interact=lambda stage, x: self.interact(stage, x, plan))
        return list(h.split(seg))

    def domain_states(self, hs, ctx, steps):
        """``(a, b)``: the A and B view states at the flat steps ``steps`` (the latest at or before
        each step; the absent state where the view has no item yet)."""
        out = []
        for d in (0, 1):
            row = ctx.latest_row(d, steps)
            h = hs[1 + d]
            absent = self.absent[d].expand(steps.numel(), -1)
            if h.size(0) == 0:
                out.append(absent)
                continue
            out.append(torch.where((row >= 0).unsqueeze(1), h[row.clamp_min(0)], absent))
        return out

    # ------------------------------------------------------------------ neural process
    def support_context(self, a, b, y):
        """What the query rows need of a support set with final states ``a``, ``b`` ``[S, d]`` and
        next items ``y [S]``: the prior ``(mu, sigma)`` (latent path) and the keys / values of the
        deterministic path; the latent elements ``r`` (summed into the posterior)."""
        ctx = SimpleNamespace(n=a.size(0))
        if self.latent_path or self.deterministic_path:
            ab = torch.cat([a, b], dim=1)
            e_y = self.item_embedding(y)
        if self.latent_path:
            ctx.r = self.latent_encoder(torch.cat([ab, e_y], dim=1))
            ctx.mu, ctx.sigma = self._latent(ctx.r.mean(0))
        if self.deterministic_path:
            ctx.key = self.det_key(self.pair_encoder(ab))
            ctx.value = self.det_value(self.det_encoder(torch.cat([ab, e_y], dim=1)))
        return ctx

    def _latent(self, s):
        mu, raw = self.latent_head(s).chunk(2, dim=-1)
        return mu, 0.1 + 0.9 * F.softplus(raw)

    def _deterministic(self, a, b, ctx):
        """``r_det [R, d]``: each query pair attends to the support pairs (multi-head, ``n_heads``)."""
        q = self.det_query(self.pair_encoder(torch.cat([a, b], dim=1)))
        H, R, S = self.n_heads, q.size(0), ctx.key.size(0)
        heads = lambda x, n: x.view(n, H, -1).transpose(0, 1)            # noqa: E731  [H, n, d/H]
        att = F.scaled_dot_product_attention(heads(q, R), heads(ctx.key, S), heads(ctx.value, S))
        return self.det_out(att.transpose(0, 1).reshape(R, -1))

    def condition(self, a, b, ctx, y=None):
        """``(film_input [R, *] or None, kl or None)`` of the query rows with states ``a``, ``b``:
        in training (``y`` = their targets) ``z`` is drawn from the posterior over the support and
        these rows, and the KL to the prior is returned; in evaluation ``z`` is the prior mean."""
        parts, kl = [], None
        R = a.size(0)
        if self.latent_path:
            if y is not None:
                r_q = self.latent_encoder(torch.cat([a, b, self.item_embedding(y)], dim=1))
                mu_q, sigma_q = self._latent((ctx.r.sum(0) + r_q.sum(0)) / (ctx.n + R))
                z = mu_q + sigma_q * torch.randn_like(sigma_q)
                kl = gaussian_kl(mu_q, sigma_q, ctx.mu, ctx.sigma)
            else:
                z = ctx.mu
            parts.append(z.unsqueeze(0).expand(R, -1))
        if self.deterministic_path:
            parts.append(self._deterministic(a, b, ctx))
        return (torch.cat(parts, dim=1) if parts else None), kl

    # ------------------------------------------------------------------ head
    def head(self, hs, plan, ctx, y=None):
        """Output states of the head rows (training: every step with a target, A targets first;
        evaluation: the last step of each user) ``[R, d]``, their domains ``[R]``, and the KL
        (training, latent path) or None."""
        heads = plan.head
        src = torch.cat([hd.src for hd in heads])
        dom = torch.cat([torch.full_like(hd.src, d) for d, hd in enumerate(heads)])
        x = hs[0][torch.cat([hd.x_row for hd in heads])]
        a, b = self.domain_states(hs, plan.ctx, src)
        film, kl = self.condition(a, b, ctx, y)
        # the fine-grained interest adaptive layer: the target domain's query over the user's mixed states <= t
        n_a = heads[0].src.numel()
        q = torch.cat([self.adapt_query[0](x[:n_a]), self.adapt_query[1](x[n_a:])])
        n_seq = plan.B
        chunks = attention_chunks(src, plan.flat_idx[:plan.seg[0]], n_seq, plan.L, plan.L,
                                  row_bytes=grid_row_bytes(self.hidden_size))
        p_att = self.attn_dropout_prob if self.training else 0.0
        u = self.adapt_out(packed_attention(q, self.adapt_kv(hs[0]), chunks, plan.allowed[:n_seq], self.n_heads,
                                            dropout_p=p_att))
        if film is not None:
            gamma, beta = self.film(film).chunk(2, dim=-1)
            u = (1 + gamma) * u + beta
        h_dom = torch.where((dom == 0).unsqueeze(1), a, b)
        pre = x + h_dom + self.dropout(u)
        out = torch.cat([self.out_norm[0](pre[:n_a]), self.out_norm[1](pre[n_a:])])
        return out, dom, kl

    # ------------------------------------------------------------------ training
    def sample_support(self, users):
        """Indices into the support pool of ``support_size`` users drawn uniformly, none of them one
        of the batch's ``users`` (fewer when the pool has fewer such users; the batch's own users
        when the pool has no other)."""
        n = self.support_users.numel()
        cand = torch.randperm(n, device=users.device)[:self.support_size + users.numel()]
        sel = cand[~torch.isin(self.support_users[cand], users)][:self.support_size]
        return sel if sel.numel() else cand[:self.support_size]

    def _with_support(self, item_seq, item_len, tdom, idx):
        """The batch followed by the support users ``idx`` as extra rows (no target steps), padded to
        one width; returns ``(seq, len, tdom, steps of the support rows' last items)``."""
        s_seq, s_len = self.support_item_seq[idx], self.support_item_len[idx]
        B, L = item_seq.shape
        W = max(L, int(s_len.max()))
        seq = torch.cat([F.pad(item_seq, (0, W - L)), s_seq[:, :W]])
        lens = torch.cat([item_len, s_len])
        td = torch.cat([F.pad(tdom, (0, W - L), value=-1), tdom.new_full((idx.numel(), W), -1)])
        steps = (B + torch.arange(idx.numel(), device=seq.device)) * W + s_len - 1
        return seq, lens, td, steps

    def kl_beta(self):
        """``kl_weight * min(1, (epoch + 1) / kl_warmup_epochs)`` (``kl_weight`` without warm-up)."""
        if self.kl_warmup_epochs <= 0:
            return float(self.kl_weight)
        return float(self.kl_weight) * min(1.0, (self.epoch + 1) / self.kl_warmup_epochs)

    def calculate_loss(self, interaction):
        item_seq, item_len, L = self.trim_batch(interaction)
        target = interaction[self.TARGET_SEQ][:, :L]
        tdom = self.item_domain[target]
        idx = self.sample_support(interaction[self.USER_ID])
        seq, lens, td, s_steps = self._with_support(item_seq, item_len, tdom, idx)
        W = seq.size(1)
        plan = self.layout(seq, lens, td, train=True)
        hs = self.encode(plan)
        a_s, b_s = self.domain_states(hs, plan.ctx, s_steps)
        ctx = self.support_context(a_s, b_s, self.support_target[idx])
        src = torch.cat([hd.src for hd in plan.head])
        y = F.pad(target, (0, W - L)).reshape(-1)[src]
        out, dom, kl = self.head(hs, plan, ctx, y=y)
        losses = []
        for d in (0, 1):
            m = dom == d
            losses.append(self._domain_loss(out[m], y[m], d) if bool(m.any()) else out.sum() * 0.0)
        loss = losses[0] + losses[1]
        terms = dict(loss_a=losses[0], loss_b=losses[1])
        if kl is not None:
            beta = self.kl_beta()
            loss = loss + beta * kl
            terms.update(kl=kl, kl_beta=torch.tensor(beta))
        self.add_trace(**terms)
        return loss

    def _domain_loss(self, out, y, d):
        """Mean next-item cross-entropy of the rows ``out [R, d]`` with targets ``y`` in domain ``d``."""
        table = self.item_embedding.weight
        if not self.ce_negatives:
            lo, hi = self.domain_range[d]
            return domain_cross_entropy(out, table, y, lo, hi).mean()
        negs = self.sampler.sample_in_domain(y.new_full((1,), d))[0]         # [k], shared by the batch's rows
        pos = (out * table[y]).sum(-1)
        return info_nce(pos, F.linear(out, table[negs]), negs.unsqueeze(0) == y.unsqueeze(1), 1.0).mean()

    # ------------------------------------------------------------------ evaluation
    def eval_support(self):
        """The support context of evaluation: the ``eval_support_size`` users fixed by ``eval_seed``,
        their training histories encoded once per evaluation pass (nothing recorded meanwhile) and
        cached by the family base (:meth:`eval_cached`: dropped on ``train()`` / ``eval()`` and
        :meth:`load_state_dict`)."""
        return self.eval_cached('support', self._encode_eval_support)

    def _encode_eval_support(self):
        idx = self.eval_support_idx
        seq, lens = self.support_item_seq[idx], self.support_item_len[idx]
        seq = seq[:, :int(lens.max())]
        with self.paused_recording():
            plan = self.layout(seq, lens, torch.full_like(seq, -1), train=False)
            hs = self.encode(plan)
            steps = torch.arange(idx.numel(), device=seq.device) * seq.size(1) + lens - 1
            return self.support_context(*self.domain_states(hs, plan.ctx, steps), self.support_target[idx])

    def head_states(self, item_seq, item_len, tdom):
        """The output state after each user's last history item, for its target's domain (with the
        evaluation support set's latent and deterministic paths)."""
        ctx = self.eval_support()
        plan = self.layout(item_seq, item_len, tdom, train=False)
        out, _, _ = self.head(self.encode(plan), plan, ctx)
        return [(torch.cat([hd.user for hd in plan.head]), out)]

