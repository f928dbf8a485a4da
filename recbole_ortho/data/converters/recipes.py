"""
recbole_ortho.data.converters.recipes
#####################################

The filter recipes (abxi, llm4cdsr, none) and the log of what each step removed.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import pandas as pd

from recbole_ortho.data.converters.common import (RECIPE_DEFAULTS, logger)
from recbole_ortho.data.converters.readers import to_number


# --------------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------------
def counts(df: pd.DataFrame) -> Dict[str, int]:
    dom = df['d'].to_numpy()
    return {'interactions': int(len(df)), 'interactions_A': int((dom == 0).sum()),
            'interactions_B': int((dom == 1).sum()), 'users': int(df['u'].nunique()),
            'items': int(df['i'].nunique())}


class StepLog:
    """Records what each filter step removed."""

    def __init__(self) -> None:
        self.steps: List[dict] = []

    def apply(self, df: pd.DataFrame, keep: Optional[np.ndarray], step: str, params: dict,
              note: Optional[str] = None, **extra: Any) -> pd.DataFrame:
        before = counts(df)
        out = df if keep is None else df[keep]
        after = counts(out)
        record = {'step': step, 'params': params,
                  'removed': {k: before[k] - after[k] for k in before}, 'remaining': after}
        record.update(extra)
        if note:
            record['note'] = note
        self.steps.append(record)
        logger.info('filter %s %s: removed %d interactions (A %d, B %d), %d users, %d items', step, params,
                    *(record['removed'][k] for k in ('interactions', 'interactions_A', 'interactions_B',
                                                     'users', 'items')))
        return out


def _bincount(codes: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(codes, minlength=size) if len(codes) else np.zeros(size, np.int64)


def _drop_shared_items(df: pd.DataFrame, n_items: int, log: StepLog) -> pd.DataFrame:
    i, d = df['i'].to_numpy(), df['d'].to_numpy()
    shared = (_bincount(i[d == 0], n_items) > 0) & (_bincount(i[d == 1], n_items) > 0)
    return log.apply(df, ~shared[i], 'drop_shared_items', {})


def recipe_abxi(df: pd.DataFrame, n_users: int, n_items: int, opts: dict, log: StepLog,
                 item_note: Optional[str]) -> pd.DataFrame:
    df = _drop_shared_items(df, n_items, log)
    u, d = df['u'].to_numpy(), df['d'].to_numpy()
    both = (_bincount(u[d == 0], n_users) > 0) & (_bincount(u[d == 1], n_users) > 0)
    df = log.apply(df, both[u], 'overlapping_users', {})
    if opts['item_min'] is None:
        df = log.apply(df, None, 'item_min', {'item_min': None}, note=item_note)
    else:
        i = df['i'].to_numpy()
        df = log.apply(df, (_bincount(i, n_items) >= opts['item_min'])[i], 'item_min',
                       {'item_min': opts['item_min']})
    if opts['max_len'] is None:
        df = log.apply(df, None, 'max_len', {'max_len': None})
    else:
        from_end = df.groupby('u', sort=False).cumcount(ascending=False).to_numpy()
        df = log.apply(df, from_end < opts['max_len'], 'max_len', {'max_len': opts['max_len']})
    k = opts['user_min_per_domain'] or 0  # None: no threshold
    u, d = df['u'].to_numpy(), df['d'].to_numpy()
    enough = (_bincount(u[d == 0], n_users) >= k) & (_bincount(u[d == 1], n_users) >= k)
    return log.apply(df, enough[u], 'user_min_per_domain', {'user_min_per_domain': k})


def recipe_llm4cdsr(df: pd.DataFrame, n_users: int, n_items: int, opts: dict, log: StepLog) -> pd.DataFrame:
    df = _drop_shared_items(df, n_items, log)
    start, end = opts['start'], opts['end']
    ts = df['ts'].to_numpy()
    keep = np.ones(len(df), dtype=bool)
    if start is not None:
        keep &= ts >= start
    if end is not None:
        keep &= ts <= end
    df = log.apply(df, keep, 'time_window', {'start': start, 'end': end})
    user_min, item_min = opts['user_min'] or 0, opts['item_min'] or 0  # None: no threshold
    rounds = 0
    core = df
    while True:  # iterative k-core: drop sparse users and items until both thresholds hold
        u, i = core['u'].to_numpy(), core['i'].to_numpy()
        keep = (_bincount(u, n_users) >= user_min)[u] & (_bincount(i, n_items) >= item_min)[i]
        if keep.all():
            break
        core = core[keep]
        rounds += 1
    return log.apply(df, df.index.isin(core.index), 'k_core',
                     {'user_min': opts['user_min'], 'item_min': opts['item_min']}, rounds=rounds)


def resolve_options(recipe: str, fmt: str, options: Optional[Mapping[str, Any]]) -> Tuple[dict, Optional[str]]:
    if recipe not in RECIPE_DEFAULTS:
        raise ValueError(f'unknown recipe {recipe!r}; expected one of {", ".join(RECIPE_DEFAULTS)}')
    options = dict(options or {})
    unknown = set(options) - set(RECIPE_DEFAULTS[recipe])
    if unknown:
        raise ValueError(f'recipe {recipe!r} has no option(s) {sorted(unknown)}; '
                         f'valid options: {sorted(RECIPE_DEFAULTS[recipe]) or "none"}')
    opts = {**RECIPE_DEFAULTS[recipe], **options}
    for key, value in opts.items():
        if value is None:
            continue
        if key in ('start', 'end'):
            try:
                opts[key] = to_number(value)
            except ValueError:
                raise ValueError(f'recipe option {key} must be a number (timestamp), got {value!r}') from None
        elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f'recipe option {key} must be a non-negative integer, got {value!r}')
    note = None
    if recipe == 'abxi' and fmt == 'abxi' and 'item_min' not in options:
        opts['item_min'] = None
        note = ('skipped on abxi-format input: the files are the output of this recipe and its item counts '
                'were taken before the last-max_len cut, so re-counting would not be a no-op; '
                'set item_min explicitly to apply it')
    return opts, note
