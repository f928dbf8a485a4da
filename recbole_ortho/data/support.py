"""
recbole_ortho.data.support
##########################

Support sets of neural-process models (CDSRNP): the users whose *training* data can serve as
context for other users' predictions.

:func:`support_pool` returns, for every evaluated user whose training part of the mixed
sequence holds items of both domains, one *support element*: the training part without its
last item as the input history (the last ``max_len`` items, right-padded) and that last
training item as the element's target. Only training data enters: the validation and test
targets of a user (the last two items of its sequence) are never part of it. Vectorised
(no loop per user).
"""

from dataclasses import dataclass

import numpy as np

from recbole_ortho.utils.arrays import right_padded


@dataclass
class SupportPool:
    """Support elements, one per eligible user (numpy arrays, ``N`` rows).

    ``users [N]``: user ids; ``item_seq [N, max_len]``: the input history (right-padded with 0);
    ``item_len [N]``: its length; ``target [N]``: the last item of the training part (what follows
    the history); ``start [N]``: where the history starts in ``SeqData.seq_items``."""
    users: np.ndarray
    item_seq: np.ndarray
    item_len: np.ndarray
    target: np.ndarray
    start: np.ndarray

    def __len__(self):
        return len(self.users)


def support_pool(data, max_len):
    """The :class:`SupportPool` of a :class:`~recbole_ortho.data.dataset.SeqData` (or any object
    with ``seq_items``, ``seq_offsets``, ``eval_users`` and ``item_domain``).

    A user is eligible when its training part (the mixed sequence without its last two items,
    the validation and test targets) has at least two items and its input history (the training
    part without the last item, cut to the last ``max_len`` items) holds at least one item of
    each domain, so that the history has an A and a B state."""
    users = np.asarray(data.eval_users, dtype=np.int64)
    offsets = np.asarray(data.seq_offsets, dtype=np.int64)
    items = np.asarray(data.seq_items, dtype=np.int64)
    dom = np.asarray(data.item_domain)[items]
    n_train = offsets[users + 1] - offsets[users] - 2              # validation and test targets left out
    n_in = np.maximum(n_train - 1, 0)                              # history = training part minus its last item
    keep = np.minimum(n_in, int(max_len))
    start = offsets[users] + n_in - keep
    cnt = [np.concatenate([[0], np.cumsum(dom == d)]) for d in (0, 1)]
    has = [(c[start + keep] - c[start]) > 0 for c in cnt]
    ok = (n_train >= 2) & has[0] & has[1]
    users, start, keep, n_in = users[ok], start[ok], keep[ok], n_in[ok]
    seq = right_padded(start, np.zeros_like(start), keep, items, int(max_len))
    target = items[offsets[users] + n_in]
    return SupportPool(users=users, item_seq=seq, item_len=keep, target=target, start=start)
