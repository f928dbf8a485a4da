r"""
recbole_ortho.model.layout
##########################

The packed layout of a batch of mixed A/B sequences, shared by the cross-domain sequential
models of this package.

A model of the family sees, per user, the *mixed* sequence and one *thread* per domain: the
domain-A thread has a state at the steps where an A item occurs (or, ``filled``, at every step
after the user's first A item, holding the latest A item), B likewise. Instead of three padded
``[B, L, d]`` tensors, all threads are stored as **packed rows**, one row per step that has a
state and none for padding:

- :class:`StepFacts` (:func:`step_facts`): per-step facts of the batch (valid steps, item
  domains, occurrences, the latest occurrence of each domain);
- :class:`PackedLayout` (:func:`pack_threads`): the rows' tokens and positions, their grid
  positions (``flat_idx``), who may attend to whom (``allowed``), the attention chunks, and the
  rows a model's output head reads (:class:`HeadRows`);
- :class:`DomainContext`: the A/B rows handed to a model's domain-interaction hook (e.g. GCA),
  with helpers between rows and ``[B, L, d]`` grids;
- :func:`aligned_domain_inputs`: the task-guided aligned domain sequences as padded item ids.

Flat steps are ``b * L + t`` (user ``b``, step ``t``); "grids" are ``g * B * L + b * L + t``
with one grid per thread (mixed = 0, A = 1, B = 2; without ``filled`` the A and B rows share
grid 1, since they are at disjoint steps).
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

from recbole_ortho.model.kernels import attention_chunks, grid_row_bytes


@dataclass
class StepFacts:
    """Per-step facts of a batch (tensors ``[B, L]`` unless noted).

    ``ar [L]`` / ``idx``: step indices; ``valid``: non-padding steps; ``dom``: item domain (-1 at
    padding); ``occ[D]``: an item of domain ``D`` occurs; ``last[D]``: the latest step ``<= t``
    where an item of ``D`` occurs (-1: none yet); ``tdom``: the target's domain at each step
    (-1: none), or None."""
    B: int
    L: int
    ar: torch.Tensor
    idx: torch.Tensor
    valid: torch.Tensor
    dom: torch.Tensor
    occ: Tuple[torch.Tensor, torch.Tensor]
    last: Tuple[torch.Tensor, torch.Tensor]
    tdom: Optional[torch.Tensor]


def step_facts(item_seq, item_len, item_domain, tdom=None):
    """:class:`StepFacts` of right-padded ``item_seq [B, L]`` with lengths ``item_len [B]``;
    ``item_domain [n_items]`` maps an item id to its domain (-1 for padding). Vectorised
    (``cummax`` of occurrence indices, no loop over users or steps)."""
    B, L = item_seq.shape
    ar = torch.arange(L, device=item_seq.device)
    idx = ar.expand(B, L)
    valid = ar[None, :] < item_len[:, None]
    dom = item_domain[item_seq]                          # -1 at padding
    occ = [dom == 0, dom == 1]
    last = [torch.cummax(torch.where(o, idx, torch.full_like(idx, -1)), dim=1).values for o in occ]
    return StepFacts(B=B, L=L, ar=ar, idx=idx, valid=valid, dom=dom, occ=occ, last=last, tdom=tdom)


def aligned_domain_inputs(item_seq, item_len, item_domain):
    """Task-guided aligned inputs ``(seq_a, seq_b)`` (``[B, L]``): at step ``t`` the latest A
    (resp. B) item at or before ``t``, 0 before the user's first item of that domain and at
    padding."""
    f = step_facts(item_seq, item_len, item_domain)
    return tuple(torch.where((f.last[d] >= 0) & f.valid, item_seq.gather(1, f.last[d].clamp_min(0)),
                             torch.zeros_like(item_seq)) for d in (0, 1))


@dataclass
class HeadRows:
    """The rows a model's output head reads for the targets of one domain ``D``: ``src`` the
    flat steps ``b * L + t`` whose target is in ``D`` (training: every such step; evaluation:
    the last history step of the users whose evaluated target is in ``D``), ``user`` their user
    ``b``, ``x_row`` the mixed-sequence row at that step and ``dom_row`` the row of ``D``'s latest
    state at that step (``R`` = the number of rows, meaning "no state yet": a zero state)."""
    src: torch.Tensor
    user: torch.Tensor
    x_row: torch.Tensor
    dom_row: torch.Tensor


@dataclass
class DomainContext:
    """The packed A/B rows handed to a domain-interaction hook (see
    :meth:`~recbole_ortho.model.abstract_recommender.CrossDomainSeqRecommender.domain_interaction`).

    ``rows[D]``: flat steps ``b * L + t`` of domain ``D``'s rows, sorted (``filled``: every step
    after ``D``'s first item; else only the steps where an item of ``D`` occurs);
    ``row_at[D] [B * L]``: flat step -> row of ``D`` at that step, or -1; ``last[D] [B, L]``: the
    latest step ``<= t`` where an item of ``D`` occurs (-1: none); ``valid``/``occ``/``has``:
    ``[B, L]`` masks (non-padding step, an item of ``D`` occurs, ``D`` has a state)."""
    B: int
    L: int
    valid: torch.Tensor
    occ: List[torch.Tensor]
    has: List[torch.Tensor]
    last: List[torch.Tensor]
    filled: bool
    rows: List[torch.Tensor]
    row_at: List[torch.Tensor]

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


@dataclass(frozen=True)
class PackedLayout:
    """A batch as packed rows of its threads (mixed, A, B, in this order).

    ``tokens``/``positions [R]``: item id and position id of every row; ``seg``: rows per thread
    (``h.split(seg)`` gives the threads); ``flat_idx [R]``: grid position of each row (None: the
    rows *are* the ``n_grids * B * L`` grid, as in ABXI's official layout); ``row_of``: grid
    position -> row (``R`` where there is none); ``allowed [n_grids * B, 1, L, L]``: which step
    may attend to which within a grid; ``chunks``: the attention chunks of all rows
    (:func:`~recbole_ortho.model.kernels.attention_chunks`); ``head``: one :class:`HeadRows` per
    domain; ``ctx``: the :class:`DomainContext` (None when the model has no domain interaction);
    ``mult``: a ``[R, 1]`` mask re-applied after each sub-layer (official layout only, else None);
    ``mask_last_ffn``: whether it is re-applied after the last block. Immutable: a model that
    changes a field builds a new layout (``dataclasses.replace``)."""
    B: int
    L: int
    n_grids: int
    tokens: torch.Tensor
    positions: torch.Tensor
    chunks: list
    seg: List[int]
    flat_idx: Optional[torch.Tensor]
    row_of: Optional[torch.Tensor]
    allowed: torch.Tensor
    head: List[HeadRows]
    ctx: Optional[DomainContext] = None
    mult: Optional[torch.Tensor] = None
    mask_last_ffn: bool = True


def pack_threads(facts, item_seq, item_len, positions, filled, train, context, d_model):
    """:class:`PackedLayout` of a batch: the mixed rows at every valid step, then the A rows and
    the B rows (at their occurrences, or ``filled`` at every step after their first item); no
    padding row is stored or attended to.

    Args:
        facts: :func:`step_facts` of the batch (with ``tdom``).
        item_seq, item_len: the batch (``[B, L]``, ``[B]``).
        positions: ``(pos_x, pos_a, pos_b)``, ``[B, L]`` position ids: of the mixed step, and of
            each domain occurrence (a domain row takes the position of its latest occurrence).
        filled: domain rows at every step after the domain's first item (else at occurrences).
        train: head rows for every target step (else the last history step per user).
        context: also build the :class:`DomainContext`.
        d_model: the hidden size (sizes the attention chunks, :func:`~recbole_ortho.model.kernels.grid_row_bytes`).

    Attention: a mixed row attends to the mixed rows at steps ``<= t``; a domain row to its
    domain's *occurrences* at steps ``<= t`` (each domain item once)."""
    f = facts
    B, L, dev = f.B, f.L, item_seq.device
    BL = B * L
    pos_x, pos_occ = positions[0], positions[1:]
    has = [(f.last[d] >= 0) & f.valid for d in (0, 1)]
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
    pos = torch.cat([p.reshape(-1)[fr] for p, fr in zip(poss, flat_rows)])
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

    head = head_rows(f, item_len, row_of, R, train, filled)
    ctx = None
    if context:
        row_at = []
        for d in (0, 1):
            m = torch.full((BL,), -1, dtype=torch.long, device=dev)
            m[flat_rows[d + 1]] = torch.arange(flat_rows[d + 1].numel(), device=dev)
            row_at.append(m)
        ctx = DomainContext(B=B, L=L, valid=f.valid, occ=f.occ, has=has, last=f.last, filled=filled,
                            rows=flat_rows[1:], row_at=row_at)
    chunks = attention_chunks(flat_idx, flat_idx, n_grids * B, L, L, row_bytes=grid_row_bytes(d_model))
    return PackedLayout(B=B, L=L, n_grids=n_grids, tokens=tokens, positions=pos, chunks=chunks,
                        seg=[fr.numel() for fr in flat_rows], flat_idx=flat_idx, row_of=row_of,
                        allowed=allowed.unsqueeze(1), head=head, ctx=ctx)


def head_sources(facts, item_len, train):
    """Per domain ``D``, ``(src, user)``: the flat steps ``b * L + t`` the head reads for ``D``'s
    targets (training: every step whose target is in ``D``; evaluation: the last history step of
    the users whose evaluated target is in ``D``) and their users ``b``."""
    f = facts
    out = []
    for d in (0, 1):
        if train:
            src = torch.nonzero((f.tdom == d).reshape(-1)).squeeze(1)
        else:
            final_dom = f.tdom.gather(1, (item_len - 1)[:, None]).squeeze(1)
            users = torch.nonzero(final_dom == d).squeeze(1)
            src = users * f.L + item_len[users] - 1
        out.append((src, torch.div(src, f.L, rounding_mode='floor')))
    return out


def grid_head_rows(facts, item_len, train, slot_of_step, grid_rows):
    """:class:`HeadRows` of a layout whose rows *are* its grids (ABXI's official layout, grids of
    ``grid_rows`` rows: mixed, then A, then B): step ``b * L + t`` sits at row ``slot_of_step[b, t]``
    of the mixed grid and its domain state at the same slot of the domain's grid."""
    head = []
    for d, (src, user) in enumerate(head_sources(facts, item_len, train)):
        x_row = slot_of_step.reshape(-1)[src]
        head.append(HeadRows(src=src, user=user, x_row=x_row, dom_row=(d + 1) * grid_rows + x_row))
    return head


def head_rows(facts, item_len, row_of, R, train, filled):
    """One :class:`HeadRows` per domain (see there); ``row_of``/``R`` as in :class:`PackedLayout`."""
    f = facts
    L, BL = f.L, f.B * f.L
    head = []
    for d, (src, user) in enumerate(head_sources(f, item_len, train)):
        if filled:
            dom_row = row_of[(d + 1) * BL + src]
        else:
            lst = f.last[d].reshape(-1)[src]
            dom_row = torch.where(lst >= 0, row_of[BL + user * L + lst.clamp_min(0)], torch.full_like(lst, R))
        head.append(HeadRows(src=src, user=user, x_row=row_of[src], dom_row=dom_row))
    return head


def head_row_subset(layout):
    """The rows the head reads (sorted, ``need``) and the :class:`HeadRows` remapped to positions
    in ``need`` (a row outside, i.e. ``R``, maps to ``len(need)``): for evaluation shortcuts
    that compute the last layer for those rows only."""
    R = layout.tokens.numel()
    rows = torch.cat([torch.cat([hd.x_row, hd.dom_row]) for hd in layout.head])
    need = torch.unique(rows[rows < R])                                  # sorted
    head = []
    for hd in layout.head:
        remap = [torch.where(r < R, torch.searchsorted(need, r), torch.full_like(r, need.numel()))
                 for r in (hd.x_row, hd.dom_row)]
        head.append(HeadRows(src=hd.src, user=hd.user, x_row=remap[0], dom_row=remap[1]))
    return need, head
