"""
recbole_ortho.data.item_graph
#############################

The item transition graphs of graph-refined item embeddings (C2DSR), built from *training* data.

:func:`item_graph` returns, over the item ids of a dataset (padding id 0 included, without edges),
two row-normalised transition matrices built from the training part of every evaluated user's
mixed sequence (the sequence without its last two items, the validation and test targets):

- ``mixed``: an edge ``i -> j`` for every two consecutive items of the mixed training sequence;
- ``single``: an edge ``i -> j`` for every two consecutive items of the same domain (the user's A
  items in order, and its B items in order): a block-diagonal matrix, one block per domain.

Repeated transitions add up; each row is divided by its sum (a row without edges stays zero). This
is C2DSR's official ``GraphMaker`` (``utils/GraphMaker.py``: ``VV_edges`` and ``VV_edges_single``,
``normalize``) on our sequences: its duplicate check never fires (the sets it tests are never
filled), so every transition counts. Vectorised (no loop per user); computed once per dataset
object and kept on it (``item_graph(data)`` a second time returns the same matrices).
"""

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recbole_ortho.utils.arrays import concat_ranges


@dataclass
class ItemGraph:
    """Row-normalised ``[n_items, n_items]`` float32 CSR matrices (see module docstring) and the number
    of training transitions each holds (``n_mixed`` / ``n_single``, repeats counted)."""
    mixed: sp.csr_matrix
    single: sp.csr_matrix
    n_mixed: int
    n_single: int


def _normalised(rows, cols, n):
    m = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, n))
    m.sum_duplicates()
    s = np.asarray(m.sum(1)).ravel()
    inv = np.divide(1.0, s, out=np.zeros_like(s), where=s > 0).astype(np.float32)
    return sp.csr_matrix(sp.diags(inv) @ m, dtype=np.float32)


def build_item_graph(data):
    """:class:`ItemGraph` of a :class:`~recbole_ortho.data.dataset.SeqData` (or any object with
    ``seq_items``, ``seq_offsets``, ``eval_users``, ``item_domain`` and ``n_items``), computed anew."""
    users = np.asarray(data.eval_users, dtype=np.int64)
    offsets = np.asarray(data.seq_offsets, dtype=np.int64)
    n_train = np.maximum(offsets[users + 1] - offsets[users] - 2, 0)     # validation and test targets left out
    idx = concat_ranges(offsets[users], n_train)
    items = np.asarray(data.seq_items, dtype=np.int64)[idx]
    owner = np.repeat(np.arange(len(users)), n_train)
    dom = np.asarray(data.item_domain, dtype=np.int64)[items]
    same = owner[1:] == owner[:-1]
    order = np.lexsort((np.arange(len(items)), dom, owner))              # per user: A items in order, then B
    o, d = owner[order], dom[order]
    same_d = (o[1:] == o[:-1]) & (d[1:] == d[:-1])
    n = int(data.n_items)
    return ItemGraph(mixed=_normalised(items[:-1][same], items[1:][same], n),
                     single=_normalised(items[order][:-1][same_d], items[order][1:][same_d], n),
                     n_mixed=int(same.sum()), n_single=int(same_d.sum()))


def item_graph(data):
    """The :class:`ItemGraph` of ``data``, built on the first call and kept on the dataset object, so
    that every model built on the same data (e.g. the trial builds of a parameter-matched run) shares it."""
    cache = data.__dict__.setdefault('_item_graph', {})
    if 'graph' not in cache:
        cache['graph'] = build_item_graph(data)
    return cache['graph']
