"""
recbole_ortho.utils.arrays
##########################

Small vectorised numpy helpers shared by the data layer.
"""

import numpy as np


def concat_ranges(starts, lens):
    """Concatenate ``arange(s, s + l)`` for every (s, l) without a Python loop."""
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    rep = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
    return rep + np.arange(total)
