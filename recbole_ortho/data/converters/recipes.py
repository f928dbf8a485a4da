"""
recbole_ortho.data.converters.recipes
#####################################

The filter recipes (abxi, llm4cdsr, none) and the log of what each step removed.

``llm4cdsr`` follows the official LLM4CDSR preprocessing (``data/amazon/handle.ipynb``,
``data/elec/handle.ipynb`` and ``New_Amazon`` in ``data_process.py``), with ``strict: true``:

1. ``rating_min`` (0): keep reviews with rating > 0 (``New_Amazon(domain, 0)`` drops ``overall <= 0``);
2. ``start`` / ``end``: keep ``start < timestamp < end`` (``filter_time``);
3. iterative k-core over both domains together (``filter_Kcore``): the data is left as it is when
   every user has >= ``user_min`` (5) and every item >= ``item_min`` (3) interactions; otherwise one
   round keeps the rows whose user has **more than** ``user_min`` and whose item has **more than**
   ``item_min`` interactions (counts taken on the data at the start of the round), and the check is
   repeated.  So a round also removes users with exactly 5 and items with exactly 3, while the
   result may still hold such users and items.  Items are counted by id across both domains.
4. items present in both domains are kept (``shared_items: keep``), one item per domain.

``strict: false`` makes every comparison inclusive (``rating >= rating_min``, ``start <= t <= end``)
and the k-core the usual one (keep counts >= the thresholds until nothing changes).
``shared_items: drop`` removes the items present in both domains after the time window.
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

    def record_note(self, step: str, params: dict, df: pd.DataFrame, note: str, **extra: Any) -> None:
        """Record a step that removes nothing (``df`` is the data after it)."""
        after = counts(df)
        record = {'step': step, 'params': params, 'removed': {k: 0 for k in after}, 'remaining': after,
                  **extra, 'note': note}
        self.steps.append(record)
        logger.info('%s %s: %s', step, params, note)

    def record_streamed(self, step: str, params: dict, removed: Dict[str, int], remaining: Dict[str, int],
                        note: Optional[str] = None) -> None:
        """Record a step applied while reading: removed interactions per domain; the users and items
        it removed are not known (``None``): rows that fail are never stored."""
        rem = {'interactions': removed['A'] + removed['B'], 'interactions_A': removed['A'],
               'interactions_B': removed['B'], 'users': None, 'items': None}
        left = {'interactions': remaining['A'] + remaining['B'], 'interactions_A': remaining['A'],
                'interactions_B': remaining['B'], 'users': None, 'items': None}
        record = {'step': step, 'params': params, 'removed': rem, 'remaining': left, 'streamed': True}
        if note:
            record['note'] = note
        self.steps.append(record)
        logger.info('filter %s %s (while reading): removed %d interactions (A %d, B %d)', step, params,
                    rem['interactions'], removed['A'], removed['B'])


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


def window_keep(ts: np.ndarray, start: Any, end: Any, strict: bool) -> np.ndarray:
    """Rows inside the time window: ``start < ts < end`` (``strict``) or ``start <= ts <= end``."""
    keep = np.ones(len(ts), dtype=bool)
    if start is not None:
        keep &= (ts > start) if strict else (ts >= start)
    if end is not None:
        keep &= (ts < end) if strict else (ts <= end)
    return keep


def k_core(u: np.ndarray, i: np.ndarray, n_users: int, n_items: int, user_min: int, item_min: int,
           strict: bool) -> Tuple[np.ndarray, int]:
    """Rows kept by the iterative k-core and the number of filtering rounds.

    Each round first checks whether every user has >= ``user_min`` and every item >= ``item_min``
    rows; if so it stops.  Otherwise it keeps the rows whose user and item counts (on the rows left
    at the start of the round) are > the thresholds (``strict``, as the official LLM4CDSR code) or
    >= them (not ``strict``: the usual k-core)."""
    keep = np.ones(len(u), dtype=bool)
    rounds = 0
    while True:
        uk, ik = u[keep], i[keep]
        uc, ic = _bincount(uk, n_users), _bincount(ik, n_items)
        if (uc[uk] >= user_min).all() and (ic[ik] >= item_min).all():
            return keep, rounds
        if strict:
            ok = (uc > user_min)[uk] & (ic > item_min)[ik]
        else:
            ok = (uc >= user_min)[uk] & (ic >= item_min)[ik]
        keep[np.flatnonzero(keep)[~ok]] = False
        rounds += 1


def recipe_llm4cdsr(df: pd.DataFrame, n_users: int, n_items: int, opts: dict, log: StepLog,
                    streamed: bool = False) -> pd.DataFrame:
    """The ``llm4cdsr`` recipe (see the module docstring).  With ``streamed`` (the raw review formats)
    the rating and time-window steps were applied while reading and recorded by the caller; otherwise
    (``abxi`` input, which has no ratings) the rating step is skipped and the window applied here."""
    strict = opts['strict']
    if not streamed:
        log.apply(df, None, 'rating_min', {'rating_min': None, 'strict': strict},
                  note='skipped: this input format has no ratings')
        df = log.apply(df, window_keep(df['ts'].to_numpy(), opts['start'], opts['end'], strict), 'time_window',
                       {'start': opts['start'], 'end': opts['end'], 'strict': strict})
    if opts['shared_items'] == 'drop':
        df = _drop_shared_items(df, n_items, log)
    user_min, item_min = opts['user_min'] or 0, opts['item_min'] or 0  # None: no threshold
    keep, rounds = k_core(df['u'].to_numpy(), df['i'].to_numpy(), n_users, n_items, user_min, item_min, strict)
    return log.apply(df, keep, 'k_core', {'user_min': opts['user_min'], 'item_min': opts['item_min'],
                                          'strict': strict}, rounds=rounds)


def split_shared_items(items: np.ndarray, df: pd.DataFrame, suffixes: Tuple[str, str]
                       ) -> Tuple[np.ndarray, pd.DataFrame, Dict[str, str]]:
    """Give every item present in both domains one id per domain (``<id><suffix A>``, ``<id><suffix B>``).

    Returns the new sorted id array, ``df`` with re-coded ``i`` and ``{new id: original id}``."""
    i, d = df['i'].to_numpy(), df['d'].to_numpy()
    n = len(items)
    shared = (_bincount(i[d == 0], n) > 0) & (_bincount(i[d == 1], n) > 0)
    codes = np.flatnonzero(shared)
    if not codes.size:
        return items, df, {}
    k = codes.size
    pos = np.full(n, -1, dtype=np.int64)
    pos[codes] = np.arange(k)
    new_i = i.copy()
    for dom in (0, 1):
        m = shared[i] & (d == dom)
        new_i[m] = n + dom * k + pos[i[m]]
    tokens = np.empty(n + 2 * k, dtype=object)
    tokens[:n] = items
    source: Dict[str, str] = {}
    for dom in (0, 1):
        renamed = [f'{items[c]}{suffixes[dom]}' for c in codes]
        tokens[n + dom * k:n + (dom + 1) * k] = renamed
        source.update(zip(renamed, (items[c] for c in codes)))
    order = np.argsort(tokens, kind='stable')
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    df = df.assign(i=rank[new_i])
    return tokens[order], df, source


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
        if key == 'strict':
            if not isinstance(value, bool):
                raise ValueError(f'recipe option strict must be true or false, got {value!r}')
            continue
        if key == 'shared_items':
            if value not in ('keep', 'drop'):
                raise ValueError(f"recipe option shared_items must be 'keep' or 'drop', got {value!r}")
            continue
        if value is None:
            continue
        if key in ('start', 'end', 'rating_min'):
            try:
                opts[key] = to_number(value)
            except ValueError:
                what = 'a number (timestamp)' if key != 'rating_min' else 'a number'
                raise ValueError(f'recipe option {key} must be {what}, got {value!r}') from None
        elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f'recipe option {key} must be a non-negative integer, got {value!r}')
    note = None
    if recipe == 'abxi' and fmt == 'abxi' and 'item_min' not in options:
        opts['item_min'] = None
        note = ('skipped on abxi-format input: the files are the output of this recipe and its item counts '
                'were taken before the last-max_len cut, so re-counting would not be a no-op; '
                'set item_min explicitly to apply it')
    return opts, note
