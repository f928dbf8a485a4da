"""
recbole_ortho.utils.arrays
##########################

Small vectorised numpy helpers shared by the data layer (leaf module: imports numpy only).
"""

import numpy as np


def concat_ranges(starts, lens):
    """Concatenate ``arange(s, s + l)`` for every (s, l) without a Python loop."""
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    rep = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
    return rep + np.arange(total)


def right_padded(offsets, starts, lengths, values, width):
    """Gather ``values[offsets + starts + j]`` for ``j < lengths`` into a ``[R, width]`` matrix
    right-padded with 0 (vectorised; no Python loop per row)."""
    j = np.arange(width)
    idx = (offsets + starts)[:, None] + j[None, :]
    mask = j[None, :] < lengths[:, None]
    out = np.zeros((len(offsets), width), dtype=np.int64)
    out[mask] = values[idx[mask]]
    return out
