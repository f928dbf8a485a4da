"""Converters from Amazon review data to RecBole-CDR atomic files for cross-domain sequential recommendation.

A dataset is a pair of domains ``A`` and ``B`` whose users interleave interactions of both domains in
one *mixed* sequence.  This module reads such a pair from one of four input formats, applies a named
filter recipe, and writes RecBole atomic files that keep the exact mixed order (same-timestamp ties
included) in a ``seq_idx`` column.

Input formats (``fmt``)
    ``abxi``        the files prepared by the ABXI authors (``<data>_<len>_preprocessed.txt``,
                    ``map_item_<len>.txt``, ``map_user_<len>.txt`` and an optional ``item_titles.tsv``);
                    the mixed sequence is the order of the file, timestamps are the file's values.
    ``amazon2014``  ratings-only CSV ``user,item,rating,timestamp`` (no header), one file per domain;
                    metadata: one Python dict literal per line (``asin``, ``title``), read with
                    :func:`ast.literal_eval` (never ``eval``).
    ``amazon2018``  review JSON lines (``reviewerID``, ``asin``, ``overall``, ``unixReviewTime``);
                    metadata: JSON lines (``asin``, ``title``).
    ``amazon2023``  review JSON lines (``user_id``, ``parent_asin``, ``rating``, ``timestamp`` in
                    milliseconds, kept as given); metadata: JSON lines (``parent_asin``, ``title``).
    Every input file may be plain text or gzip-compressed (detected from its first bytes).  Blank lines
    are skipped; any other malformed line stops the conversion with a :class:`ValueError` naming the
    file, the 1-based line number and what was expected.

Mixed-sequence order (raw formats)
    The rows of A (in file order) followed by the rows of B (in file order) are stable-sorted by
    timestamp per user: a same-timestamp tie keeps A-file order, then B-file order.

Recipes (``recipe``, thresholds in ``recipe_options``)
    ``abxi``      drop items present in both domains; keep users present in both domains; keep items
                  with >= ``item_min`` (10) interactions; keep each user's last ``max_len`` (50)
                  interactions of the mixed sequence; keep users with >= ``user_min_per_domain`` (5)
                  interactions in each domain.  On ``abxi``-format input (the output of this very
                  recipe) the item step is skipped unless ``item_min`` is given explicitly: its counts
                  were taken before the last-50 cut, so re-counting would not be a no-op.
    ``llm4cdsr``  drop items present in both domains; keep interactions with ``start`` <= timestamp
                  <= ``end`` (either bound optional); iterative k-core: users with >= ``user_min`` (5)
                  interactions over both domains and items with >= ``item_min`` (3), repeated until
                  nothing changes.  Users need not be present in both domains.
    ``none``      no filtering.
    A threshold set to ``None`` is not applied (its step is still reported, removing nothing).
    Item ids must be disjoint across the domains in the output; a result where an item id occurs in
    both domains (possible with ``none``) is rejected.

Output, under ``<out_dir>/<name>/``
    ``<name>_A/<name>_A.inter`` and ``<name>_B/<name>_B.inter`` with the header
    ``user_id:token  item_id:token  timestamp:float  seq_idx:float`` (tab separated), rows ordered by
    user id then ``seq_idx`` (the 0-based position in the user's mixed sequence after filtering);
    ``<name>_A/<name>_A.item`` and ``<name>_B/<name>_B.item`` with ``item_id:token  title:token``
    (empty title where none is known; tabs, line breaks and runs of spaces in titles become one
    space; a field holding a double quote is CSV-quoted, as pandas/RecBole read it); ``stats.json``
    and ``stats.md``.
    Everything is written to ``<out_dir>/.<name>.tmp-XXXX`` first and renamed at the end, so a failed
    run leaves no partial dataset.
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
import logging
import math
import os
import re
import secrets
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

PathLike = Union[str, 'os.PathLike[str]']

FORMATS: Tuple[str, ...] = ('abxi', 'amazon2014', 'amazon2018', 'amazon2023')
DOMAINS: Tuple[str, str] = ('A', 'B')

#: Default thresholds of each recipe; ``recipe_options`` overrides them key by key.
RECIPE_DEFAULTS: Dict[str, Dict[str, Any]] = {
    'abxi': {'item_min': 10, 'max_len': 50, 'user_min_per_domain': 5},
    'llm4cdsr': {'start': None, 'end': None, 'user_min': 5, 'item_min': 3},
    'none': {},
}

#: Defaults for datasets this project knows; :func:`prepare_dataset` takes the keys that are absent
#: from its ``raw_source`` argument from here.
KNOWN_SOURCES: Dict[str, Dict[str, Any]] = {
    'food_kitchen': {
        'format': 'abxi',
        'path': None,  # None: <default_raw_root()>/food_kitchen
        'url': 'https://raw.githubusercontent.com/DiMarzioBian/ABXI/main/data/afk/',
        'files': ['afk_50_preprocessed.txt', 'map_item_50.txt', 'map_user_50.txt'],
        'recipe': 'abxi',
    },
}

INTER_HEADER: Tuple[str, ...] = ('user_id:token', 'item_id:token', 'timestamp:float', 'seq_idx:float')
ITEM_HEADER: Tuple[str, ...] = ('item_id:token', 'title:token')

_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]*$')
_ENV_VAR = 'RECBOLE_ORTHO_DATA'


# --------------------------------------------------------------------------------------------------
# Public helpers
# --------------------------------------------------------------------------------------------------
def default_raw_root() -> str:
    """Folder holding raw datasets: ``$RECBOLE_ORTHO_DATA``, else ``../shared/data`` (relative to the cwd)."""
    return os.environ.get(_ENV_VAR, '../shared/data')


def atomic_paths(out_dir: PathLike, name: str) -> Dict[str, Path]:
    """Paths of the files :func:`convert` writes for dataset ``name`` under ``out_dir``."""
    root = Path(out_dir) / name
    paths = {'root': root, 'stats_json': root / 'stats.json', 'stats_md': root / 'stats.md'}
    for dom in DOMAINS:
        paths[f'inter_{dom}'] = root / f'{name}_{dom}' / f'{name}_{dom}.inter'
        paths[f'item_{dom}'] = root / f'{name}_{dom}' / f'{name}_{dom}.item'
    return paths


def load_mixed_sequences(dataset_dir: PathLike, name: Optional[str] = None) -> Dict[str, List[Tuple[str, str, str]]]:
    """Rebuild every user's mixed sequence from the two ``.inter`` files of a converted dataset.

    Returns ``{user_id: [(domain, item_id, timestamp_text), ...]}`` ordered by ``seq_idx``; raises
    :class:`ValueError` when a user's ``seq_idx`` values are not exactly ``0 .. n-1``.
    """
    dataset_dir = Path(dataset_dir)
    name = name or dataset_dir.name
    paths = atomic_paths(dataset_dir.parent, name)
    frames = []
    for dom in DOMAINS:
        df = pd.read_csv(paths[f'inter_{dom}'], sep='\t', dtype=str, keep_default_na=False)
        if list(df.columns) != list(INTER_HEADER):
            raise ValueError(f'{paths[f"inter_{dom}"]}: unexpected header {list(df.columns)}')
        df['domain'] = dom
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    df['pos'] = df['seq_idx:float'].astype(float).astype(np.int64)
    df = df.sort_values(['user_id:token', 'pos'], kind='mergesort')
    seqs: Dict[str, List[Tuple[str, str, str]]] = {}
    for user, grp in df.groupby('user_id:token', sort=True):
        if not np.array_equal(grp['pos'].to_numpy(), np.arange(len(grp))):
            raise ValueError(f'user {user}: seq_idx is not 0..{len(grp) - 1}')
        seqs[user] = list(zip(grp['domain'], grp['item_id:token'], grp['timestamp:float']))
    return seqs


# --------------------------------------------------------------------------------------------------
# Line readers
# --------------------------------------------------------------------------------------------------
def _open_binary(path: Path):
    """Open ``path`` for binary reading, transparently decompressing gzip (detected by magic bytes)."""
    with open(path, 'rb') as fh:
        magic = fh.read(2)
    if magic == b'\x1f\x8b':
        return gzip.open(path, 'rb')
    return open(path, 'rb')


def _iter_lines(path: Path) -> Iterator[Tuple[int, str]]:
    """Yield ``(1-based line number, text without line break)`` for every non-blank line of ``path``."""
    try:
        with _open_binary(path) as fh:
            for lineno, raw in enumerate(fh, 1):
                try:
                    line = raw.decode('utf-8')
                except UnicodeDecodeError as exc:
                    raise ValueError(f'{path} line {lineno}: expected UTF-8 text ({exc.reason})') from None
                line = line.rstrip('\r\n')
                if line.strip():
                    yield lineno, line
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise ValueError(f'{path}: corrupt gzip file ({exc})') from None


def _to_number(value: Any) -> Union[int, float]:
    """Parse a timestamp-like value (int, float or numeric string); raise ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError
        return int(value) if value.is_integer() else value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            num = float(text)  # raises ValueError on non-numeric text
            if not math.isfinite(num):
                raise ValueError from None
            return int(num) if num.is_integer() else num
    raise ValueError


def _token(value: Any, path: Path, lineno: int, what: str) -> str:
    """A non-empty id token without tabs or line breaks."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f'{path} line {lineno}: expected a string {what}, got {value!r}')
    text = str(value).strip()
    if not text or any(c in text for c in '\t\r\n'):
        raise ValueError(f'{path} line {lineno}: expected a non-empty {what} without tabs, got {value!r}')
    return text


@dataclass
class _Domain:
    """The parsed interactions of one domain, in file order."""

    users: List[str]
    items: List[str]
    ts: List[Union[int, float]]


def _read_csv2014(path: Path) -> _Domain:
    users: List[str] = []
    items: List[str] = []
    ts: List[Union[int, float]] = []
    for lineno, line in _iter_lines(path):
        fields = line.split(',')
        if len(fields) != 4:
            raise ValueError(f'{path} line {lineno}: expected 4 comma-separated fields '
                             f'user,item,rating,timestamp, got {len(fields)}')
        user, item, rating, stamp = fields
        user, item = user.strip(), item.strip()
        if not user or not item:
            raise ValueError(f'{path} line {lineno}: expected a non-empty user and item, got {line!r}')
        try:
            float(rating)
        except ValueError:
            raise ValueError(f'{path} line {lineno}: expected a numeric rating, got {rating!r}') from None
        try:
            ts.append(_to_number(stamp))
        except ValueError:
            raise ValueError(f'{path} line {lineno}: expected a numeric timestamp, got {stamp!r}') from None
        users.append(user)
        items.append(item)
    return _Domain(users, items, ts)


def _json_object(line: str, path: Path, lineno: int) -> Dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f'{path} line {lineno}: expected a JSON object, got invalid JSON ({exc.msg} '
                         f'at column {exc.colno})') from None
    if not isinstance(obj, dict):
        raise ValueError(f'{path} line {lineno}: expected a JSON object, got {type(obj).__name__}')
    return obj


def _read_json_reviews(path: Path, user_key: str, item_key: str, ts_key: str) -> _Domain:
    users: List[str] = []
    items: List[str] = []
    ts: List[Union[int, float]] = []
    for lineno, line in _iter_lines(path):
        obj = _json_object(line, path, lineno)
        for key in (user_key, item_key, ts_key):
            if key not in obj:
                raise ValueError(f'{path} line {lineno}: missing key {key!r} '
                                 f'(expected keys {user_key}, {item_key}, {ts_key})')
        users.append(_token(obj[user_key], path, lineno, user_key))
        items.append(_token(obj[item_key], path, lineno, item_key))
        try:
            ts.append(_to_number(obj[ts_key]))
        except ValueError:
            raise ValueError(f'{path} line {lineno}: expected a numeric {ts_key}, got {obj[ts_key]!r}') from None
    return _Domain(users, items, ts)


def _read_interactions(fmt: str, path: Path) -> _Domain:
    if fmt == 'amazon2014':
        return _read_csv2014(path)
    if fmt == 'amazon2018':
        return _read_json_reviews(path, 'reviewerID', 'asin', 'unixReviewTime')
    if fmt == 'amazon2023':
        return _read_json_reviews(path, 'user_id', 'parent_asin', 'timestamp')
    raise ValueError(f'unknown format {fmt!r}; expected one of {", ".join(FORMATS)}')


def _add_title(titles: Dict[str, str], asin: str, title: Any) -> None:
    if isinstance(title, str) and title.strip() and not titles.get(asin):
        titles[asin] = title


def _read_meta(fmt: str, path: Path) -> Dict[str, str]:
    """``{asin: title}`` from a metadata file; items without a (string) title are left out."""
    titles: Dict[str, str] = {}
    key = 'parent_asin' if fmt == 'amazon2023' else 'asin'
    for lineno, line in _iter_lines(path):
        if fmt == 'amazon2014':
            try:
                obj = ast.literal_eval(line)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
                raise ValueError(f'{path} line {lineno}: expected a Python dict literal, got an invalid '
                                 f'literal ({type(exc).__name__})') from None
            if not isinstance(obj, dict):
                raise ValueError(f'{path} line {lineno}: expected a Python dict literal, got {type(obj).__name__}')
        else:
            obj = _json_object(line, path, lineno)
        if key not in obj:
            raise ValueError(f'{path} line {lineno}: missing key {key!r} (expected keys {key}, title)')
        _add_title(titles, _token(obj[key], path, lineno, key), obj.get('title'))
    return titles


# --------------------------------------------------------------------------------------------------
# Interaction table
# --------------------------------------------------------------------------------------------------
@dataclass
class _Table:
    """Interactions of both domains, sorted by (user, mixed-sequence position).

    ``df`` columns: ``u`` (index into ``users``), ``i`` (index into ``items``), ``ts`` (timestamp) and
    ``d`` (0 = A, 1 = B).  ``users``/``items`` are sorted arrays of the id strings.
    """

    df: pd.DataFrame
    users: np.ndarray
    items: np.ndarray
    titles: Dict[str, str]


def _build_table(user_ids: Sequence[str], item_ids: Sequence[str], ts: np.ndarray, dom: np.ndarray,
                 order: Optional[np.ndarray], titles: Dict[str, str]) -> _Table:
    """Factorise ids (sorted) and order rows by user, then by ``order`` (or by stable timestamp)."""
    u_codes, users = pd.factorize(np.asarray(user_ids, dtype=object), sort=True)
    i_codes, items = pd.factorize(np.asarray(item_ids, dtype=object), sort=True)
    rows = np.arange(len(u_codes))
    keys = (rows, order, u_codes) if order is not None else (rows, ts, u_codes)
    perm = np.lexsort(keys)
    df = pd.DataFrame({'u': u_codes[perm].astype(np.int64), 'i': i_codes[perm].astype(np.int64),
                       'ts': ts[perm], 'd': dom[perm].astype(np.int8)})
    return _Table(df, np.asarray(users, dtype=object), np.asarray(items, dtype=object), titles)


def _timestamps(values: List[Union[int, float]]) -> np.ndarray:
    arr = np.asarray(values)
    return arr.astype(np.int64) if arr.dtype.kind in 'iu' else arr.astype(np.float64)


def _load_raw(fmt: str, inputs: Mapping[str, PathLike], meta: Optional[Mapping[str, PathLike]]) -> Tuple[_Table, dict]:
    paths = {}
    for dom in DOMAINS:
        if dom not in inputs or inputs[dom] is None:
            raise ValueError(f"format {fmt!r} needs inputs {{'A': path, 'B': path}}; domain {dom} is missing")
        paths[dom] = Path(inputs[dom])
    meta_paths = {dom: Path(p) for dom, p in (meta or {}).items() if p is not None}
    unknown = set(meta_paths) - set(DOMAINS)
    if unknown:
        raise ValueError(f'meta keys must be A and/or B, got {sorted(unknown)}')
    for dom, p in list(paths.items()) + list(meta_paths.items()):
        if not p.is_file():
            raise FileNotFoundError(f'domain {dom}: input file not found: {p}')

    parsed = {}
    for dom in DOMAINS:
        logger.info('reading domain %s interactions from %s', dom, paths[dom])
        parsed[dom] = _read_interactions(fmt, paths[dom])
        if not parsed[dom].users:
            raise ValueError(f'domain {dom}: no interactions in {paths[dom]} (empty file)')
    titles: Dict[str, str] = {}
    title_counts = {}
    for dom in DOMAINS:
        if dom in meta_paths:
            logger.info('reading domain %s metadata from %s', dom, meta_paths[dom])
            dom_titles = _read_meta(fmt, meta_paths[dom])
            title_counts[dom] = len(dom_titles)
            for asin, title in dom_titles.items():
                _add_title(titles, asin, title)

    a, b = parsed['A'], parsed['B']
    ts = np.concatenate([_timestamps(a.ts), _timestamps(b.ts)])
    dom = np.concatenate([np.zeros(len(a.users), np.int8), np.ones(len(b.users), np.int8)])
    table = _build_table(a.users + b.users, a.items + b.items, ts, dom, None, titles)
    info = {'inputs': {d: str(p) for d, p in paths.items()},
            'meta': {d: str(p) for d, p in meta_paths.items()},
            'meta_titles': title_counts}
    return table, info


def _find_one(folder: Path, pattern: str, what: str) -> Path:
    found = sorted(folder.glob(pattern)) + sorted(folder.glob(pattern + '.gz'))
    if not found:
        raise FileNotFoundError(f'ABXI input: no {what} file ({pattern}) in {folder}')
    if len(found) > 1:
        raise ValueError(f'ABXI input: several {what} files in {folder} '
                         f'({", ".join(p.name for p in found)}); name one in inputs')
    return found[0]


def _abxi_files(inputs: Mapping[str, PathLike]) -> Dict[str, Optional[Path]]:
    """Locate the ABXI files: explicit ``inputs`` keys win, else they are found in ``inputs['dir']``."""
    folder = Path(inputs['dir']) if inputs.get('dir') is not None else None
    if folder is not None and not folder.is_dir():
        raise FileNotFoundError(f'ABXI input folder not found: {folder}')
    files: Dict[str, Optional[Path]] = {}
    if inputs.get('sequences'):
        files['sequences'] = Path(inputs['sequences'])
    elif folder is not None:
        files['sequences'] = _find_one(folder, '*_preprocessed.txt', 'sequence')
    else:
        raise ValueError("format 'abxi' needs inputs {'dir': folder} (or 'sequences', 'map_item', 'map_user')")
    match = re.search(r'_(\d+)_preprocessed\.txt(\.gz)?$', files['sequences'].name)
    suffix = f'_{match.group(1)}' if match else '_*'
    for key, stem in (('map_item', 'map_item'), ('map_user', 'map_user')):
        if inputs.get(key):
            files[key] = Path(inputs[key])
        elif folder is not None:
            files[key] = _find_one(folder, f'{stem}{suffix}.txt', key)
        else:
            raise ValueError(f"format 'abxi': inputs[{key!r}] is missing")
    if inputs.get('titles'):
        files['titles'] = Path(inputs['titles'])
    else:
        files['titles'] = next((folder / f for f in ('item_titles.tsv', 'item_titles.tsv.gz')
                                if folder is not None and (folder / f).is_file()), None)
    for key, p in files.items():
        if p is not None and not p.is_file():
            raise FileNotFoundError(f'ABXI input: {key} file not found: {p}')
    return files


def _read_json_file(path: Path) -> Any:
    text = '\n'.join(line for _, line in _iter_lines(path))
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f'{path} line {exc.lineno}: expected a JSON object, got invalid JSON '
                         f'({exc.msg} at column {exc.colno})') from None


def _read_abxi_maps(files: Mapping[str, Optional[Path]]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(user_of_uid, asin_of_index, domain_of_index)`` lookup arrays (``None`` / -1 where unmapped)."""
    map_user = _read_json_file(files['map_user'])
    if not isinstance(map_user, dict):
        raise ValueError(f'{files["map_user"]} line 1: expected a JSON object {{reviewerID: uid}}')
    uids: Dict[int, str] = {}
    for rid, uid in map_user.items():
        if isinstance(uid, bool) or not isinstance(uid, int) or uid < 0:
            raise ValueError(f'{files["map_user"]}: expected a non-negative integer uid for {rid!r}, got {uid!r}')
        if uid in uids:
            raise ValueError(f'{files["map_user"]}: uid {uid} is given to both {uids[uid]!r} and {rid!r}')
        uids[uid] = _token(rid, files['map_user'], 1, 'reviewerID')
    user_of = np.full(max(uids, default=-1) + 1, None, dtype=object)
    for uid, rid in uids.items():
        user_of[uid] = rid

    map_item = _read_json_file(files['map_item'])
    if not isinstance(map_item, dict):
        raise ValueError(f'{files["map_item"]} line 1: expected a JSON object {{asin: [item_index, domain]}}')
    entries: Dict[int, Tuple[str, int]] = {}
    for asin, value in map_item.items():
        ok = (isinstance(value, list) and len(value) == 2
              and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
              and value[0] >= 0 and value[1] in (0, 1))
        if not ok:
            raise ValueError(f'{files["map_item"]}: expected [item_index, domain (0 or 1)] for {asin!r}, got {value!r}')
        if value[0] in entries:
            raise ValueError(f'{files["map_item"]}: item index {value[0]} is given to both '
                             f'{entries[value[0]][0]!r} and {asin!r}')
        entries[value[0]] = (_token(asin, files['map_item'], 1, 'asin'), value[1])
    size = max(entries, default=-1) + 1
    asin_of = np.full(size, None, dtype=object)
    dom_of = np.full(size, -1, dtype=np.int8)
    for idx, (asin, dom) in entries.items():
        asin_of[idx] = asin
        dom_of[idx] = dom
    return user_of, asin_of, dom_of


def _read_abxi_titles(path: Path) -> Dict[str, str]:
    titles: Dict[str, str] = {}
    for lineno, line in _iter_lines(path):
        fields = line.split('\t', 3)
        if lineno == 1 and fields[0] == 'item_idx':
            continue  # header
        if len(fields) < 3:
            raise ValueError(f'{path} line {lineno}: expected 4 tab-separated fields '
                             f'item_idx, asin, domain, title, got {len(fields)}')
        _add_title(titles, fields[1].strip(), fields[3] if len(fields) > 3 else '')
    return titles


def _load_abxi(inputs: Mapping[str, PathLike]) -> Tuple[_Table, dict]:
    files = _abxi_files(inputs)
    user_of, asin_of, dom_of = _read_abxi_maps(files)
    path = files['sequences']
    logger.info('reading ABXI sequences from %s', path)
    uid_rows: List[int] = []
    item_idx: List[int] = []
    stamps: List[int] = []
    seen: Dict[int, int] = {}
    for lineno, line in _iter_lines(path):
        tokens = line.split()
        try:
            uid = int(tokens[0])
            if uid < 0:
                raise ValueError
        except ValueError:
            raise ValueError(f'{path} line {lineno}: expected a non-negative integer user id first, '
                             f'got {tokens[0]!r}') from None
        if uid >= len(user_of) or user_of[uid] is None:
            raise ValueError(f'{path} line {lineno}: user id {uid} is not in {files["map_user"].name}')
        if uid in seen:
            raise ValueError(f'{path} line {lineno}: user id {uid} already has a sequence on line {seen[uid]}')
        seen[uid] = lineno
        for tok in tokens[1:]:
            item, sep, stamp = tok.partition('|')
            try:
                if not sep:
                    raise ValueError
                item_idx.append(int(item))
                stamps.append(int(stamp))
            except ValueError:
                raise ValueError(f'{path} line {lineno}: expected item|timestamp pairs of integers after '
                                 f'the user id, got {tok!r}') from None
        uid_rows.extend([uid] * (len(tokens) - 1))
    if not item_idx:
        raise ValueError(f'domains A and B: no interactions in {path} (empty file)')
    idx = np.asarray(item_idx, dtype=np.int64)
    bad = (idx < 0) | (idx >= len(asin_of))
    bad[~bad] = dom_of[idx[~bad]] < 0
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        uid = uid_rows[first]
        raise ValueError(f'{path} line {seen[uid]}: item index {item_idx[first]} is not in '
                         f'{files["map_item"].name}')
    dom = dom_of[idx]
    for d, label in enumerate(DOMAINS):
        if not (dom == d).any():
            raise ValueError(f'domain {label}: no interactions in {path}')
    users = user_of[np.asarray(uid_rows, dtype=np.int64)]
    titles = _read_abxi_titles(files['titles']) if files['titles'] is not None else {}
    order = np.arange(len(idx))  # the file order is the mixed order
    table = _build_table(users, asin_of[idx], np.asarray(stamps, dtype=np.int64), dom, order, titles)
    info = {'inputs': {k: (str(p) if p is not None else None) for k, p in files.items()}}
    return table, info


# --------------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------------
def _counts(df: pd.DataFrame) -> Dict[str, int]:
    dom = df['d'].to_numpy()
    return {'interactions': int(len(df)), 'interactions_A': int((dom == 0).sum()),
            'interactions_B': int((dom == 1).sum()), 'users': int(df['u'].nunique()),
            'items': int(df['i'].nunique())}


class _StepLog:
    """Records what each filter step removed."""

    def __init__(self) -> None:
        self.steps: List[dict] = []

    def apply(self, df: pd.DataFrame, keep: Optional[np.ndarray], step: str, params: dict,
              note: Optional[str] = None, **extra: Any) -> pd.DataFrame:
        before = _counts(df)
        out = df if keep is None else df[keep]
        after = _counts(out)
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


def _drop_shared_items(df: pd.DataFrame, n_items: int, log: _StepLog) -> pd.DataFrame:
    i, d = df['i'].to_numpy(), df['d'].to_numpy()
    shared = (_bincount(i[d == 0], n_items) > 0) & (_bincount(i[d == 1], n_items) > 0)
    return log.apply(df, ~shared[i], 'drop_shared_items', {})


def _recipe_abxi(df: pd.DataFrame, n_users: int, n_items: int, opts: dict, log: _StepLog,
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


def _recipe_llm4cdsr(df: pd.DataFrame, n_users: int, n_items: int, opts: dict, log: _StepLog) -> pd.DataFrame:
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


def _resolve_options(recipe: str, fmt: str, options: Optional[Mapping[str, Any]]) -> Tuple[dict, Optional[str]]:
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
                opts[key] = _to_number(value)
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


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------
def _clean_title(title: str) -> str:
    return ' '.join(title.replace('\t', ' ').replace('\r', ' ').replace('\n', ' ').split())


def _ts_text(ts: np.ndarray) -> np.ndarray:
    if ts.dtype.kind == 'f' and np.all(np.mod(ts, 1) == 0) and np.all(np.abs(ts) < 2 ** 53):
        ts = ts.astype(np.int64)
    return ts


def _write_domain(table: _Table, df: pd.DataFrame, seq_idx: np.ndarray, dom: int, folder: Path, name: str) -> None:
    label = DOMAINS[dom]
    sub = folder / f'{name}_{label}'
    sub.mkdir()
    mask = df['d'].to_numpy() == dom
    part = df[mask]
    inter = pd.DataFrame({
        INTER_HEADER[0]: table.users[part['u'].to_numpy()],
        INTER_HEADER[1]: table.items[part['i'].to_numpy()],
        INTER_HEADER[2]: _ts_text(part['ts'].to_numpy()),
        INTER_HEADER[3]: seq_idx[mask],
    })
    inter.to_csv(sub / f'{name}_{label}.inter', sep='\t', index=False, lineterminator='\n',
                 quoting=csv.QUOTE_MINIMAL)
    item_codes = np.unique(part['i'].to_numpy())  # sorted codes = sorted asins
    asins = table.items[item_codes]
    titles = [_clean_title(table.titles.get(a, '')) for a in asins]
    pd.DataFrame({ITEM_HEADER[0]: asins, ITEM_HEADER[1]: titles}).to_csv(
        sub / f'{name}_{label}.item', sep='\t', index=False, lineterminator='\n', quoting=csv.QUOTE_MINIMAL)


def _dataset_stats(table: _Table, df: pd.DataFrame) -> dict:
    u, i, d = df['u'].to_numpy(), df['i'].to_numpy(), df['d'].to_numpy()
    domains = {}
    for dom, label in enumerate(DOMAINS):
        m = d == dom
        n_u, n_i, n = int(np.unique(u[m]).size), int(np.unique(i[m]).size), int(m.sum())
        titled = sum(1 for a in table.items[np.unique(i[m])] if _clean_title(table.titles.get(a, '')))
        domains[label] = {'users': n_u, 'items': n_i, 'interactions': n,
                          'sparsity': round(1.0 - n / (n_u * n_i), 6) if n_u and n_i else None,
                          'titled_items': titled}
    users_a, users_b = set(np.unique(u[d == 0]).tolist()), set(np.unique(u[d == 1]).tolist())
    n_users = int(np.unique(u).size)
    return {'users': n_users, 'overlapping_users': len(users_a & users_b), 'items': int(np.unique(i).size),
            'interactions': int(len(df)),
            'mean_sequence_length': round(len(df) / n_users, 4) if n_users else 0.0,
            'domains': domains}


def _stats_markdown(stats: dict) -> str:
    dom = stats['domains']
    lines = [f"# Dataset `{stats['name']}`", '',
             f"Format `{stats['format']}`, recipe `{stats['recipe']}` "
             f"({', '.join(f'{k}={v}' for k, v in stats['recipe_options'].items()) or 'no options'}).", '',
             '| | A | B | total |', '|---|---:|---:|---:|']
    for key in ('users', 'items', 'interactions'):
        lines.append(f"| {key} | {dom['A'][key]:,} | {dom['B'][key]:,} | {stats[key]:,} |")
    lines.append(f"| sparsity | {dom['A']['sparsity']} | {dom['B']['sparsity']} | |")
    lines.append(f"| items with a title | {dom['A']['titled_items']:,} | {dom['B']['titled_items']:,} | |")
    lines += ['', f"Overlapping users: {stats['overlapping_users']:,}; "
                  f"mean mixed-sequence length: {stats['mean_sequence_length']:.2f}.", '',
              '## Filter steps', '',
              '| step | parameters | removed interactions (A / B) | removed users | removed items '
              '| remaining interactions | note |', '|---|---|---:|---:|---:|---:|---|']
    loaded = stats['loaded']
    lines.append(f"| loaded | | | | | {loaded['interactions']:,} (A {loaded['interactions_A']:,} / "
                 f"B {loaded['interactions_B']:,}) | |")
    for s in stats['steps']:
        r = s['removed']
        params = ', '.join(f'{k}={v}' for k, v in s['params'].items())
        note = s.get('note', '')
        if 'rounds' in s:
            note = f"{s['rounds']} round(s)" + (f'; {note}' if note else '')
        lines.append(f"| {s['step']} | {params} | {r['interactions']:,} ({r['interactions_A']:,} / "
                     f"{r['interactions_B']:,}) | {r['users']:,} | {r['items']:,} | "
                     f"{s['remaining']['interactions']:,} | {note} |")
    return '\n'.join(lines) + '\n'


def _write_stats(folder: Path, stats: dict) -> str:
    (folder / 'stats.json').write_text(json.dumps(stats, indent=2) + '\n', encoding='utf-8')
    text = _stats_markdown(stats)
    (folder / 'stats.md').write_text(text, encoding='utf-8')
    return text


def _make_temp_dir(parent: Path, prefix: str) -> Path:
    """Create ``parent/<prefix>XXXXXXXX`` with the usual (umask) permissions, unlike mkdtemp's 0700."""
    while True:
        path = parent / f'{prefix}{secrets.token_hex(4)}'
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def _install(tmp: Path, dest: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` folder to ``dest``; with ``overwrite``, swap out an existing ``dest``."""
    if not dest.exists():
        os.replace(tmp, dest)
        return
    if not overwrite:
        raise FileExistsError(f'{dest} already exists; pass overwrite=True (--overwrite) to replace it')
    old = _make_temp_dir(dest.parent, f'.{dest.name}.old-')
    old.rmdir()
    os.replace(dest, old)
    try:
        os.replace(tmp, dest)
    except BaseException:
        os.replace(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------
def convert(fmt: str, inputs: Mapping[str, PathLike], out_dir: PathLike, name: str, recipe: str = 'abxi',
            recipe_options: Optional[Mapping[str, Any]] = None, meta: Optional[Mapping[str, PathLike]] = None,
            overwrite: bool = False) -> dict:
    """Convert a pair of Amazon domains to RecBole-CDR atomic files under ``<out_dir>/<name>/``.

    Args:
        fmt: input format, one of :data:`FORMATS`.
        inputs: ``{'dir': folder}`` for ``abxi`` (optionally ``sequences``, ``map_item``, ``map_user``,
            ``titles`` paths); ``{'A': path, 'B': path}`` for the raw formats.
        out_dir: folder receiving the dataset folder (created when missing).
        name: dataset name (letters, digits, ``_.-``).
        recipe: ``abxi``, ``llm4cdsr`` or ``none``.
        recipe_options: thresholds overriding :data:`RECIPE_DEFAULTS` of the recipe.
        meta: optional ``{'A': path, 'B': path}`` metadata files with item titles (raw formats only).
        overwrite: replace an existing ``<out_dir>/<name>``.

    Returns:
        The statistics written to ``stats.json``.

    Raises:
        FileNotFoundError: an input file is missing.
        FileExistsError: the destination exists and ``overwrite`` is false.
        ValueError: unknown format/recipe/option, a malformed input line, an empty domain, or item ids
            shared by both domains in the result.
    """
    if fmt not in FORMATS:
        raise ValueError(f'unknown format {fmt!r}; expected one of {", ".join(FORMATS)}')
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f'invalid dataset name {name!r}: use letters, digits, "_", "." and "-"')
    opts, item_note = _resolve_options(recipe, fmt, recipe_options)
    out_dir = Path(out_dir)
    dest = out_dir / name
    if dest.exists() and not overwrite:
        raise FileExistsError(f'{dest} already exists; pass overwrite=True (--overwrite) to replace it')

    if fmt == 'abxi':
        if meta:
            raise ValueError("meta is not used with format 'abxi'; pass inputs['titles'] (item_titles.tsv)")
        table, info = _load_abxi(inputs)
    else:
        table, info = _load_raw(fmt, inputs, meta)
    df = table.df
    loaded = _counts(df)
    logger.info('loaded %d interactions (A %d, B %d), %d users, %d items', loaded['interactions'],
                loaded['interactions_A'], loaded['interactions_B'], loaded['users'], loaded['items'])

    log = _StepLog()
    n_users, n_items = len(table.users), len(table.items)
    if recipe == 'abxi':
        df = _recipe_abxi(df, n_users, n_items, opts, log, item_note)
    elif recipe == 'llm4cdsr':
        df = _recipe_llm4cdsr(df, n_users, n_items, opts, log)
    for dom, label in enumerate(DOMAINS):
        if not (df['d'].to_numpy() == dom).any():
            raise ValueError(f'domain {label}: no interactions left after filtering with recipe {recipe!r} '
                             f'{opts}')
    i, d = df['i'].to_numpy(), df['d'].to_numpy()
    shared = np.intersect1d(i[d == 0], i[d == 1])
    if shared.size:
        raise ValueError(f'{shared.size} item id(s) occur in both domains (e.g. {table.items[shared[0]]!r}); '
                         f'item ids must be disjoint across domains: use recipe abxi or llm4cdsr, '
                         f'which drop shared items')

    df = df.reset_index(drop=True)
    seq_idx = df.groupby('u', sort=False).cumcount().to_numpy()
    stats = {'name': name, 'format': fmt, 'recipe': recipe, 'recipe_options': opts, **info,
             **_dataset_stats(table, df), 'loaded': loaded, 'steps': log.steps}

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = _make_temp_dir(out_dir, f'.{name}.tmp-')
    try:
        for dom in range(len(DOMAINS)):
            _write_domain(table, df, seq_idx, dom, tmp, name)
        text = _write_stats(tmp, stats)
        _install(tmp, dest, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info('wrote %s\n%s', dest, text)
    return stats


def _expand(path: Optional[PathLike]) -> Optional[Path]:
    if path is None or str(path).strip() == '':
        return None
    text = str(path)
    if _ENV_VAR not in os.environ:  # ${RECBOLE_ORTHO_DATA} defaults to ../shared/data
        text = text.replace('${' + _ENV_VAR + '}', default_raw_root()).replace('$' + _ENV_VAR, default_raw_root())
    return Path(os.path.expanduser(os.path.expandvars(text)))


def _source_files(source: Mapping[str, Any]) -> Tuple[Dict[str, str], Dict[str, str]]:
    """``(inputs, meta)`` file names of a raw source, relative to its folder or url."""
    fmt = source['format']
    files = source.get('files')
    if fmt == 'abxi':
        names = list(files or [])
        return {str(i): n for i, n in enumerate(names)}, {}
    if isinstance(files, (list, tuple)) and len(files) == 2:
        files = dict(zip(DOMAINS, files))
    if not isinstance(files, Mapping) or set(files) != set(DOMAINS):
        raise ValueError(f"raw_source.files for format {fmt!r} must be {{A: file, B: file}} or [A file, B file]")
    meta = source.get('meta') or {}
    if isinstance(meta, (list, tuple)):
        meta = dict(zip(DOMAINS, meta))
    return {k: str(v) for k, v in files.items()}, {k: str(v) for k, v in meta.items() if v}


def _download(url_base: str, fname: str, dest_dir: Path, timeout: float = 60.0) -> None:
    """Download ``url_base/fname`` to ``dest_dir/fname`` via a temporary file (skipped when present)."""
    if Path(fname).name != fname or fname in ('.', '..'):
        raise ValueError(f'raw_source.files entries must be plain file names, got {fname!r}')
    target = dest_dir / fname
    if target.is_file():
        return
    url = url_base.rstrip('/') + '/' + urllib.parse.quote(fname)
    if urllib.parse.urlparse(url).scheme not in ('http', 'https'):
        raise ValueError(f'raw_source.url must be an http(s) URL, got {url_base!r}')
    logger.info('downloading %s', url)
    fd, tmp = tempfile.mkstemp(prefix=f'.{fname}.', suffix='.part', dir=dest_dir)
    try:
        with os.fdopen(fd, 'wb') as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out)
        os.replace(tmp, target)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, (urllib.error.URLError, OSError)) and not isinstance(exc, FileNotFoundError):
            raise OSError(f'download of {url} failed: {exc}') from exc
        raise


def prepare_dataset(name: str, raw_source: Optional[Mapping[str, Any]], out_dir: PathLike,
                    overwrite: bool = False) -> str:
    """Make sure ``<out_dir>/<name>`` holds the converted dataset and return that folder.

    ``raw_source`` keys (absent keys come from :data:`KNOWN_SOURCES` for known names):
    ``format``, ``path`` (local folder of the raw files; ``None`` = ``<default_raw_root()>/<name>``;
    ``${RECBOLE_ORTHO_DATA}`` is expanded), ``url`` (download base used when the files are not under
    ``path``), ``files`` (list of file names for ``abxi``; ``{A: file, B: file}`` otherwise), ``meta``
    (``{A: file, B: file}``, optional), ``recipe`` and ``recipe_options``.

    An already converted dataset (both ``.inter`` files present) is returned as is unless ``overwrite``.
    Downloads go to ``<out_dir>/.raw/<name>/`` (each file via a temporary file, then renamed).
    """
    paths = atomic_paths(out_dir, name)
    if not overwrite and paths['inter_A'].is_file() and paths['inter_B'].is_file():
        logger.info('dataset %s already prepared at %s', name, paths['root'])
        return str(paths['root'])
    source = dict(KNOWN_SOURCES.get(name, {}))
    source.update(raw_source or {})
    fmt = source.get('format')
    if fmt not in FORMATS:
        raise ValueError(f'raw_source.format of dataset {name!r} must be one of {", ".join(FORMATS)}, got {fmt!r}')
    files, meta_files = _source_files(source)
    path = _expand(source.get('path')) or Path(default_raw_root()) / name

    def present(folder: Path) -> bool:
        if not folder.is_dir():
            return False
        if fmt == 'abxi' and not files:
            return any(folder.glob('*_preprocessed.txt')) or any(folder.glob('*_preprocessed.txt.gz'))
        return all((folder / f).is_file() for f in list(files.values()) + list(meta_files.values()))

    if present(path):
        folder = path
    elif source.get('url'):
        if not files:
            raise ValueError(f'dataset {name!r}: raw_source.url is set but raw_source.files is empty')
        folder = Path(out_dir) / '.raw' / name
        folder.mkdir(parents=True, exist_ok=True)
        for fname in list(files.values()) + list(meta_files.values()):
            _download(str(source['url']), fname, folder)
    else:
        wanted = ', '.join(list(files.values()) + list(meta_files.values())) or 'the raw files'
        raise FileNotFoundError(
            f'dataset {name!r}: raw data not found at {path} (expected {wanted}); set raw_source.path '
            f'(or the {_ENV_VAR} environment variable, default ../shared/data) to the folder holding '
            f'them, or set raw_source.url to download them')

    if fmt == 'abxi':
        inputs: Dict[str, Any] = {'dir': folder}
        meta = None
    else:
        inputs = {d: folder / f for d, f in files.items()}
        meta = {d: folder / f for d, f in meta_files.items()} or None
    convert(fmt, inputs, out_dir, name, recipe=source.get('recipe') or 'abxi',
            recipe_options=source.get('recipe_options'), meta=meta, overwrite=overwrite)
    return str(paths['root'])


__all__ = ['FORMATS', 'DOMAINS', 'RECIPE_DEFAULTS', 'KNOWN_SOURCES', 'INTER_HEADER', 'ITEM_HEADER',
           'default_raw_root', 'atomic_paths', 'load_mixed_sequences', 'convert', 'prepare_dataset']
