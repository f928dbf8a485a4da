"""
recbole_ortho.model.gca_wiring
##############################

Where the GCA layers (:class:`~recbole_ortho.model.gca.GatedCrossAttention`) go in a model:

- :class:`GCAStages`: the wiring every ``_GCA`` model uses. It reads and validates the ``gca_*``
  settings, places one GCA layer per direction (A attends to B, B attends to A) at each stage
  of ``gca_positions``, runs them on the model's packed A/B rows
  (:class:`~recbole_ortho.model.layout.DomainContext`), records
  the orthogonality statistics (:mod:`recbole_ortho.model.ortho`) during evaluation, and hands the
  layers' tensors to a probe (:meth:`GCAStages.capturing`);
- :class:`GCAVariant`: the mixin that makes a base model a ``_GCA`` model.
"""

from contextlib import contextmanager
from functools import partial

import torch
import torch.nn as nn

from recbole_ortho.model.gca import GatedCrossAttention
from recbole_ortho.model.ortho import stat_name
from recbole_ortho.utils.errors import ConfigError


def parse_positions(value):
    """``gca_positions`` as a sorted list of distinct ints (accepts an int, a list, or a string
    such as ``'[0, 2]'`` / ``'0,2'`` from the command line)."""
    if isinstance(value, bool):
        raise ConfigError(f'gca_positions: [{value}] must be an int or a list of ints')
    if isinstance(value, int):
        value = [value]
    elif isinstance(value, str):
        value = [v for v in value.replace('[', '').replace(']', '').split(',') if v.strip()]
    try:
        out = sorted({int(v) for v in value})
    except (TypeError, ValueError):
        raise ConfigError(f'gca_positions: [{value}] must be an int or a list of ints') from None
    if not out:
        raise ConfigError('gca_positions: empty; give at least one stage')
    return out


def _choice(config, key, options):
    """``config[key]`` as a string that must be one of ``options`` (else a ConfigError naming the key)."""
    value = str(config[key])
    if value not in options:
        raise ConfigError(f'{key}: [{value}] must be one of {list(options)}')
    return value


class GCAStages(nn.ModuleDict):
    r"""GCA layers between the two domain threads of a model, at named stages, both directions.

    At each stage ``p`` of ``gca_positions`` (0 = after the embeddings, ``i`` = after encoder
    block ``i``) two :class:`GatedCrossAttention` layers update the A and B states from the
    states before the update:

    .. math::

        X_A \leftarrow \mathrm{GCA}_A(X_A, X_B), \qquad X_B \leftarrow \mathrm{GCA}_B(X_B, X_A)

    Settings (read with ``config[key]`` and validated here; an error names the key):
    ``gca_positions`` (list of stages in ``[0, n_stages]``), ``gca_query_steps`` (one of the
    model's ``query_steps``), ``gca_activation`` (sigmoid | tanh), ``gca_heads`` (divides the
    hidden size), ``gca_layernorm`` (bool), ``gca_gate_input`` (concat_other | concat_attn),
    ``gca_dropout`` (in ``[0, 1)``), ``gca_dedup_keys`` (bool), ``gca_gate`` (vector | scalar | none,
    :attr:`GatedCrossAttention.GATES`), ``gca_ortho_weight`` (``lambda >= 0``: with ``lambda > 0``
    :meth:`add_penalty` adds ``lambda * mean |cos(X, X')|`` to the training loss). Defaults:
    ``properties/component/gca.yaml`` (a model's own yaml may override them).

    Where the queries and keys are (``gca_query_steps``), on a model's packed
    :class:`~recbole_ortho.model.layout.DomainContext` (:meth:`apply_packed`):

    * ``occurrence``: a domain has rows only at the steps where one of its items occurs. The A
      state at an A occurrence ``t`` attends to the B rows at the B occurrences ``< t`` of the same
      user (causal, each B item once, no padding); the ``concat_other`` gate reads the B state at
      the latest B occurrence before ``t`` (0 before the user's first B item; then ``X'_A = 0``
      too, hence ``GCA = LN(X_A)``). B likewise. Both directions run together
      (:meth:`GatedCrossAttention.forward_packed_pair`). ``gca_dedup_keys`` has no effect.
    * ``every``: the domain rows are at every step after their domain's first item (the model
      builds its layout with ``filled_domain_states``). ``X_A[t]`` attends to the B rows at steps
      ``<= t`` (with ``gca_dedup_keys`` only those at B occurrences, each distinct state once);
      the gate reads the B state at the same step.

    Statistics: while ``recorder.recording`` (an evaluation pass), each direction records per
    user, averaged over its query steps, ``ortho_cos_a@gca{p}`` = :math:`|\cos(X_A, X'_A)|` (query
    steps with at least one key) and ``cross_cos_a@gca{p}`` = :math:`|\cos(X_A, Z_B)|` (the gate's
    other input; steps where it exists); ``_b`` for B attending to A
    (:func:`~recbole_ortho.model.ortho.stat_name`).

    Parameters: ``2 * len(gca_positions) * GatedCrossAttention.num_parameters(d, gca_layernorm, gca_gate)``
    (``7 d^2 + 6 d [+ 2 d]`` per layer with the vector gate; :meth:`num_parameters`).
    """

    def __init__(self, config, d_model, n_stages, query_steps=('occurrence',), layer_norm_eps=1e-5):
        positions = parse_positions(config['gca_positions'])
        bad = [p for p in positions if not 0 <= p <= n_stages]
        if bad:
            raise ConfigError(f'gca_positions: {bad} not in [0, {n_stages}] (0 = after the embeddings, '
                              f'i = after block i of {n_stages})')
        steps = _choice(config, 'gca_query_steps', query_steps)
        activation = _choice(config, 'gca_activation', GatedCrossAttention.ACTIVATIONS)
        heads = config['gca_heads']
        if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1 or d_model % heads:
            raise ConfigError(f'gca_heads: [{heads}] must be a positive integer dividing the hidden size ({d_model})')
        gate_input = _choice(config, 'gca_gate_input', GatedCrossAttention.GATE_INPUTS)
        dropout = config['gca_dropout']
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ConfigError(f'gca_dropout: [{dropout}] must be a number in [0, 1)')
        gate = _choice(config, 'gca_gate', GatedCrossAttention.GATES)
        weight = config['gca_ortho_weight']
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ConfigError(f'gca_ortho_weight: [{weight}] must be a number >= 0')
        flags = {}
        for key in ('gca_layernorm', 'gca_dedup_keys'):
            if not isinstance(config[key], bool):
                raise ConfigError(f'{key}: [{config[key]}] must be True or False')
            flags[key] = config[key]

        def layer():
            return GatedCrossAttention(d_model, n_heads=heads, activation=activation,
                                       layer_norm=flags['gca_layernorm'], gate_input=gate_input,
                                       dropout=float(dropout), layer_norm_eps=layer_norm_eps, gate=gate)

        super().__init__({str(p): nn.ModuleDict({'a': layer(), 'b': layer()}) for p in positions})
        self.positions, self.query_steps, self.activation, self.heads = positions, steps, activation, heads
        self.layer_norm, self.gate_input, self.dropout_p = flags['gca_layernorm'], gate_input, float(dropout)
        self.dedup_keys = flags['gca_dedup_keys']
        self.gate, self.ortho_weight = gate, float(weight)
        self.d_model = d_model

    @property
    def stages(self):
        """The stages that hold GCA layers (a frozenset, for a model's ``interaction_stages``)."""
        return frozenset(self.positions)

    def num_parameters(self):
        """``2 * len(positions) * GatedCrossAttention.num_parameters(d, layer_norm, gate)``."""
        return 2 * len(self.positions) * GatedCrossAttention.num_parameters(self.d_model, self.layer_norm, self.gate)

    # ---------------------------------------------------------------- capture (probe)
    @contextmanager
    def capturing(self, collector):
        """Within this block every layer hands ``collector(stage, direction, record)`` the tensors of
        each call that records statistics (an evaluation pass with the model recording; see
        :class:`GatedCrossAttention`, "Capture"); ``direction`` 'a' = A's states attend to B's.
        The record also holds ``valid [n_seq, length]``: the non-padding steps of the call's grid
        (the context's ``valid``), so that positions can be counted whatever the model's padding side.
        Used by :mod:`recbole_ortho.probe`; results are unchanged."""
        def hand(stage, direction, record):
            record['valid'] = self._capture_valid
            collector(stage, direction, record)

        layers = [(layer, partial(hand, int(p), name))
                  for p, stage in self.items() for name, layer in stage.items()]
        for layer, fn in layers:
            layer.capture = fn
        self._capturing = True
        try:
            yield self
        finally:
            self._capturing, self._capture_valid = False, None
            for layer, _ in layers:
                layer.__dict__.pop('capture', None)            # back to the class default (None)
                layer.__dict__.pop('_captured_gate', None)

    # ---------------------------------------------------------------- orthogonality penalty
    #: while :meth:`capturing`: True, and the valid-step mask of the call in progress
    _capturing = False
    _capture_valid = None
    #: the penalty terms the layers returned in this training pass (a list between start_penalty and
    #: add_penalty with gca_ortho_weight > 0; None otherwise)
    _penalty_terms = None

    def _layers(self):
        return [layer for stage in self.values() for layer in stage.values()]

    def start_penalty(self):
        r"""Before a training forward pass: with ``gca_ortho_weight`` > 0, the layers of this pass
        return their mean :math:`|\cos(X, X')|` (differentiable), kept here for :meth:`add_penalty`;
        a no-op otherwise."""
        self._penalty_terms = [] if (self.ortho_weight and self.training) else None

    def _penalizing(self):
        return self._penalty_terms is not None

    def add_penalty(self, loss, recorder=None):
        """``loss + gca_ortho_weight * mean`` of the terms the layers returned since
        :meth:`start_penalty` (one per GCA module and direction that had a query with a key); the
        penalty goes into the epoch trace (``ortho_penalty``). Returns ``loss`` unchanged when there
        is none."""
        terms = [t for t in (self._penalty_terms or []) if t is not None]
        self._penalty_terms = None
        if not terms:
            return loss
        penalty = torch.stack(terms).mean()
        if recorder is not None:
            recorder.add_trace(ortho_penalty=penalty)
        return loss + self.ortho_weight * penalty

    @staticmethod
    def _record(recorder, stage, stats):
        if recorder is None or not recorder.recording:
            return
        for direction, st in zip('ab', stats):
            for kind in ('ortho', 'cross'):
                if st.get(kind) is not None:
                    recorder.record_stat(stat_name(kind, direction, stage), st[kind])
            if st.get('ortho_steps') is not None:          # every query step's signed cosine, for pooled statistics
                recorder.record_steps(stat_name('ortho', direction, stage), *st['ortho_steps'])

    def _outputs(self, recorder, stage, ys, extras, rec):
        """``(y_a, y_b)``; the two directions' ``extras`` (None: the layers were asked for nothing)
        give the statistics, recorded when ``rec``, and the penalty terms, kept for :meth:`add_penalty`."""
        if extras is not None:
            if rec:
                self._record(recorder, stage, extras)
            if self._penalizing():
                self._penalty_terms += [e['penalty'] for e in extras]
        return tuple(ys)

    # ---------------------------------------------------------------- packed rows
    def apply_packed(self, stage, h_a, h_b, ctx, recorder=None):
        """Both directions at ``stage`` on the packed A/B rows of
        :class:`~recbole_ortho.model.layout.DomainContext` ``ctx`` (``ctx.filled`` must match
        ``gca_query_steps``: False for ``occurrence``, True for ``every``). Records the statistics
        on ``recorder`` (the model) during evaluation. Returns the new ``(h_a, h_b)``."""
        layers = self[str(stage)]
        rec = recorder is not None and recorder.recording
        pen = self._penalizing()
        extra = rec or pen                                 # the layers return (y, extras)
        if self._capturing:
            self._capture_valid = ctx.valid
        if ctx.filled != (self.query_steps == 'every'):
            raise ValueError(f'GCAStages: gca_query_steps={self.query_steps} needs a layout with '
                             f'filled={self.query_steps == "every"}')
        if not ctx.filled:          # occurrence: A and B rows are at disjoint steps -> both directions at once
            res = GatedCrossAttention.forward_packed_pair(
                layers['a'], layers['b'], h_a, ctx.rows[0], h_b, ctx.rows[1], ctx.B, ctx.L,
                other_index_a=ctx.latest_row(1, ctx.rows[0]), other_index_b=ctx.latest_row(0, ctx.rows[1]),
                return_stats=rec, penalty=pen)
            return self._outputs(recorder, stage, *(res if extra else (res, None)), rec)
        states = (h_a, h_b)
        out = []
        for d, name in ((0, 'a'), (1, 'b')):
            o = 1 - d
            q_index, kv, k_index = ctx.rows[d], states[o], ctx.rows[o]
            at = ctx.latest_row(o, q_index)                # row of the other domain's latest state <= t
            if self.dedup_keys:                            # keys: only the other domain's occurrences
                valid = at >= 0                            # (the gate's input may be a non-key row)
                other = kv[at.clamp_min(0)] * valid.unsqueeze(-1).to(kv.dtype) if kv.size(0) \
                    else kv.new_zeros(q_index.numel(), kv.size(1))
                sel = ctx.occ[o].reshape(-1)[k_index]
                res = layers[name].forward_packed(states[d], q_index, kv[sel], k_index[sel], ctx.B, ctx.L,
                                                  other=other, other_valid=valid, return_stats=rec, penalty=pen)
            else:                                          # the gate's input is the key row `at`
                res = layers[name].forward_packed(states[d], q_index, kv, k_index, ctx.B, ctx.L,
                                                  other_index=at, return_stats=rec, penalty=pen)
            out.append(res)
        return self._split(recorder, stage, out, extra, rec)

    def _split(self, recorder, stage, out, extra, rec):
        """:meth:`_outputs` of the two directions' separate results (``(y, extras)`` when ``extra``)."""
        if not extra:
            return self._outputs(recorder, stage, out, None, rec)
        ys, extras = zip(*out)
        return self._outputs(recorder, stage, ys, extras, rec)


class GCAVariant:
    r"""Mixin of the ``_GCA`` models: ``class ABXI_GCA(GCAVariant, ABXI)``. It holds what every
    ``_GCA`` variant adds to its base model, so a variant file holds only where GCA goes:

    - :meth:`build_gca` (called in the variant's ``__init__``, after the base model's): a
      :class:`GCAStages` as ``self.gca``, whose stages become the model's ``interaction_stages``;
    - :meth:`domain_interaction`: the family's hook
      (:meth:`~recbole_ortho.model.abstract_recommender.CrossDomainSeqRecommender.domain_interaction`)
      runs both GCA directions on the packed A/B rows and records the orthogonality statistics;
    - :meth:`calculate_loss`: the base model's loss, plus ``gca_ortho_weight * mean |cos(X, X')|``
      when that weight is > 0 (:meth:`GCAStages.add_penalty`).

    The variant still declares ``component_properties = ('gca',)`` itself (the property files
    are read along the model classes), so its ``gca_*`` defaults come from
    ``properties/component/gca.yaml``.
    """

    def build_gca(self, config, d_model, n_stages, query_steps=('occurrence',), layer_norm_eps=1e-5):
        """Build ``self.gca`` (reads and checks the ``gca_*`` settings; initialises its layers) and
        set ``interaction_stages``. Returns the :class:`GCAStages`."""
        self.gca = GCAStages(config, d_model, n_stages, query_steps=query_steps, layer_norm_eps=layer_norm_eps)
        self.interaction_stages = self.gca.stages
        return self.gca

    def domain_interaction(self, stage, h_a, h_b, ctx):
        return self.gca.apply_packed(stage, h_a, h_b, ctx, recorder=self)

    def calculate_loss(self, interaction):
        self.gca.start_penalty()                   # gca_ortho_weight > 0 only: + lambda * mean |cos(X, X')|
        return self.gca.add_penalty(super().calculate_loss(interaction), recorder=self)
