"""
recbole_ortho.data.converters.readers
#####################################

Readers of the input formats into one interaction table, and of the item metadata.

Every file is read as a stream, line by line (plain text or gzip, detected from its first bytes):
nothing holds a whole file.  Review readers keep three numbers per stored row (user code, item
code, timestamp) plus one copy of each distinct user and item id; rows dropped by a
:class:`RowFilter` (rating, time window) while reading are counted, never stored.  Metadata
readers keep only the records of the items that are in the final dataset, and of those only the
text columns written to the ``.item`` files.
"""

from __future__ import annotations

import ast
import gzip
import json
import math
import re
import zlib
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Set, Tuple, Union

import numpy as np
import pandas as pd

from recbole_ortho.data.converters.common import (DOMAINS, FORMATS, META_COLUMNS, PathLike, logger)

Number = Union[int, float]


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
    """Yield ``(1-based line number, text without line break)`` for every non-blank line of ``path``.

    A generator over the (decompressed) byte stream: one line in memory at a time."""
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


def to_number(value: Any) -> Union[int, float]:
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
    if isinstance(value, str):
        text = value.strip()
        if text and '\t' not in text and '\n' not in text and '\r' not in text:
            return text
    elif isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    else:
        raise ValueError(f'{path} line {lineno}: expected a string {what}, got {value!r}')
    raise ValueError(f'{path} line {lineno}: expected a non-empty {what} without tabs, got {value!r}')


def _json_object(line: str, path: Path, lineno: int) -> Dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f'{path} line {lineno}: expected a JSON object, got invalid JSON ({exc.msg} '
                         f'at column {exc.colno})') from None
    if not isinstance(obj, dict):
        raise ValueError(f'{path} line {lineno}: expected a JSON object, got {type(obj).__name__}')
    return obj


# --------------------------------------------------------------------------------------------------
# Review readers (streaming)
# --------------------------------------------------------------------------------------------------
@dataclass
class RowFilter:
    """Per-row filters applied while reading (recipe ``llm4cdsr``), in this order:

    ``rating_min``: keep rows with rating > ``rating_min`` (``strict``) or >= (not strict);
    ``start`` / ``end``: keep rows with ``start < ts < end`` (``strict``) or ``start <= ts <= end``.
    ``None`` disables a filter.  Rows that fail are counted in ``removed`` and never stored.
    """

    rating_min: Optional[Number] = None
    start: Optional[Number] = None
    end: Optional[Number] = None
    strict: bool = True

    def rating_ok(self, rating: Number) -> bool:
        if self.rating_min is None:
            return True
        return rating > self.rating_min if self.strict else rating >= self.rating_min

    def time_ok(self, ts: Number) -> bool:
        if self.strict:
            return (self.start is None or ts > self.start) and (self.end is None or ts < self.end)
        return (self.start is None or ts >= self.start) and (self.end is None or ts <= self.end)


# (user key, item key, rating key, timestamp key) of the JSON review formats
_JSON_KEYS = {'amazon2018': ('reviewerID', 'asin', 'overall', 'unixReviewTime'),
              'amazon2023': ('user_id', 'parent_asin', 'rating', 'timestamp')}


def _rows_csv2014(path: Path, need_rating: bool) -> Iterator[Tuple[str, str, Optional[float], Number]]:
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
            value = float(rating)
        except ValueError:
            raise ValueError(f'{path} line {lineno}: expected a numeric rating, got {rating!r}') from None
        try:
            ts = to_number(stamp)
        except ValueError:
            raise ValueError(f'{path} line {lineno}: expected a numeric timestamp, got {stamp!r}') from None
        yield user, item, value, ts


def _rows_json(path: Path, keys: Tuple[str, str, str, str],
               need_rating: bool) -> Iterator[Tuple[str, str, Optional[float], Number]]:
    user_key, item_key, rating_key, ts_key = keys
    required = (user_key, item_key, ts_key) + ((rating_key,) if need_rating else ())
    for lineno, line in _iter_lines(path):
        obj = _json_object(line, path, lineno)
        for key in required:
            if key not in obj:
                raise ValueError(f'{path} line {lineno}: missing key {key!r} '
                                 f'(expected keys {", ".join(required)})')
        user = _token(obj[user_key], path, lineno, user_key)
        item = _token(obj[item_key], path, lineno, item_key)
        try:
            ts = to_number(obj[ts_key])
        except ValueError:
            raise ValueError(f'{path} line {lineno}: expected a numeric {ts_key}, got {obj[ts_key]!r}') from None
        rating = None
        if need_rating:
            try:
                rating = float(to_number(obj[rating_key]))
            except ValueError:
                raise ValueError(f'{path} line {lineno}: expected a numeric {rating_key}, '
                                 f'got {obj[rating_key]!r}') from None
        yield user, item, rating, ts


def iter_reviews(fmt: str, path: Path, need_rating: bool = False) -> Iterator[Tuple[str, str, Optional[float], Number]]:
    """Stream ``(user, item, rating or None, timestamp)`` for every review line of ``path``, in file order.

    The rating is parsed (and required) only when ``need_rating``; the CSV format always has one."""
    if fmt == 'amazon2014':
        return _rows_csv2014(path, need_rating)
    if fmt in _JSON_KEYS:
        return _rows_json(path, _JSON_KEYS[fmt], need_rating)
    raise ValueError(f'unknown format {fmt!r}; expected one of {", ".join(FORMATS)}')


class _Store:
    """Compact row storage shared by both domains: codes into first-seen vocabularies, timestamps
    as int64 (float64 once a non-integer timestamp appears), the domain as int8."""

    def __init__(self) -> None:
        self.user_vocab: Dict[str, int] = {}
        self.item_vocab: Dict[str, int] = {}
        self.u = array('q')
        self.i = array('q')
        self.d = array('b')
        self.ts: array = array('q')

    def add(self, user: str, item: str, ts: Number, dom: int) -> None:
        users, items = self.user_vocab, self.item_vocab
        code = users.get(user)
        if code is None:
            code = users[user] = len(users)
        self.u.append(code)
        code = items.get(item)
        if code is None:
            code = items[item] = len(items)
        self.i.append(code)
        self.d.append(dom)
        if self.ts.typecode == 'q' and (isinstance(ts, float) or not -2 ** 63 <= ts < 2 ** 63):
            self.ts = array('d', self.ts)
        self.ts.append(ts)


def _sorted_vocab(vocab: Dict[str, int], codes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Re-code ``codes`` (first-seen order of ``vocab``) so that codes follow the sorted ids."""
    tokens = np.empty(len(vocab), dtype=object)
    tokens[:] = list(vocab)
    order = np.argsort(tokens, kind='stable')
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[codes], tokens[order]


# --------------------------------------------------------------------------------------------------
# Interaction table
# --------------------------------------------------------------------------------------------------
@dataclass
class InteractionTable:
    """Interactions of both domains, sorted by (user, mixed-sequence position).

    ``df`` columns: ``u`` (index into ``users``), ``i`` (index into ``items``), ``ts`` (timestamp) and
    ``d`` (0 = A, 1 = B).  ``users``/``items`` are sorted arrays of the id strings.  ``meta`` maps an
    item id to its text columns (``item_columns``: ``title``, and for ``amazon2018`` also ``brand``,
    ``category``, ``price``, ``description``); ``source_asin`` maps the id of an item kept in both
    domains (``<asin>@A`` / ``<asin>@B``) back to its ASIN.
    """

    df: pd.DataFrame
    users: np.ndarray
    items: np.ndarray
    meta: Dict[str, Dict[str, str]] = field(default_factory=dict)
    item_columns: Tuple[str, ...] = ('title',)
    source_asin: Dict[str, str] = field(default_factory=dict)


def build_table(u_codes: np.ndarray, users: np.ndarray, i_codes: np.ndarray, items: np.ndarray, ts: np.ndarray,
                dom: np.ndarray, order: Optional[np.ndarray]) -> InteractionTable:
    """Order rows by user, then by ``order`` (or by a stable sort of the timestamps: file order on ties).

    ``u_codes`` / ``i_codes`` index the sorted id arrays ``users`` / ``items``."""
    rows = np.arange(len(u_codes))
    keys = (rows, order, u_codes) if order is not None else (rows, ts, u_codes)
    perm = np.lexsort(keys)
    df = pd.DataFrame({'u': u_codes[perm].astype(np.int64), 'i': i_codes[perm].astype(np.int64),
                       'ts': ts[perm], 'd': dom[perm].astype(np.int8)})
    return InteractionTable(df, np.asarray(users, dtype=object), np.asarray(items, dtype=object))


def _check_paths(fmt: str, inputs: Mapping[str, PathLike],
                 meta: Optional[Mapping[str, PathLike]]) -> Tuple[Dict[str, Path], Dict[str, Path]]:
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
    return paths, meta_paths


def load_raw(fmt: str, inputs: Mapping[str, PathLike], meta: Optional[Mapping[str, PathLike]] = None,
             row_filter: Optional[RowFilter] = None) -> Tuple[InteractionTable, dict]:
    """Stream the review files of both domains into an :class:`InteractionTable`.

    ``meta`` files are only checked to exist here (they are read by :func:`read_item_meta` once the
    dataset's items are known).  ``row_filter`` rows are dropped while reading; ``info['read']``
    holds the rows read per domain and ``info['streamed']`` what each filter removed."""
    paths, meta_paths = _check_paths(fmt, inputs, meta)
    store = _Store()
    need_rating = row_filter is not None and row_filter.rating_min is not None
    need_time = row_filter is not None and (row_filter.start is not None or row_filter.end is not None)
    read = {}
    removed = {'rating_min': {}, 'time_window': {}}
    for d, dom in enumerate(DOMAINS):
        logger.info('reading domain %s interactions from %s', dom, paths[dom])
        n = n_rating = n_time = 0
        for user, item, rating, ts in iter_reviews(fmt, paths[dom], need_rating):
            n += 1
            if need_rating and not row_filter.rating_ok(rating):
                n_rating += 1
                continue
            if need_time and not row_filter.time_ok(ts):
                n_time += 1
                continue
            store.add(user, item, ts, d)
        if n == 0:
            raise ValueError(f'domain {dom}: no interactions in {paths[dom]} (empty file)')
        read[dom] = n
        removed['rating_min'][dom] = n_rating
        removed['time_window'][dom] = n_time
    u_codes, users = _sorted_vocab(store.user_vocab, np.frombuffer(store.u, dtype=np.int64))
    i_codes, items = _sorted_vocab(store.item_vocab, np.frombuffer(store.i, dtype=np.int64))
    store.user_vocab = store.item_vocab = {}
    ts = np.frombuffer(store.ts, dtype=np.int64 if store.ts.typecode == 'q' else np.float64).copy()
    if ts.dtype.kind == 'f' and np.all(np.mod(ts, 1) == 0) and np.all(np.abs(ts) < 2 ** 53):
        ts = ts.astype(np.int64)
    dom_codes = np.frombuffer(store.d, dtype=np.int8)
    table = build_table(u_codes, users, i_codes, items, ts, dom_codes, None)
    table.item_columns = META_COLUMNS.get(fmt, ('title',))
    info = {'inputs': {d: str(p) for d, p in paths.items()},
            'meta': {d: str(p) for d, p in meta_paths.items()},
            'read': {'interactions': sum(read.values()), **{f'interactions_{d}': read[d] for d in DOMAINS}}}
    if row_filter is not None:
        info['streamed'] = removed
    return table, info


# --------------------------------------------------------------------------------------------------
# Item metadata (streaming, only the wanted items)
# --------------------------------------------------------------------------------------------------
def meta_text(value: Any) -> str:
    """A metadata value as text: strings as they are, numbers via ``str``, lists (nested too) joined
    by ``"; "`` (as the LLM4CDSR item prompt joins ``category`` and ``description``), else ``''``."""
    if value is None or isinstance(value, dict):
        return ''
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return '; '.join(t for t in (meta_text(v) for v in value) if t.strip())
    return ''


def read_item_meta(fmt: str, path: Path, wanted: Set[str]) -> Dict[str, Dict[str, str]]:
    """``{asin: {column: text}}`` for the items of ``wanted`` found in the metadata file ``path``.

    Columns are ``META_COLUMNS[fmt]`` (``title`` only, except ``amazon2018``).  Every line is parsed
    (a malformed line is an error) but only wanted records are kept.  ``amazon2018``: a later record
    of the same ASIN replaces an earlier one (as the official LLM4CDSR code's dict does); the other
    formats keep the first non-empty title."""
    key = 'parent_asin' if fmt == 'amazon2023' else 'asin'
    columns = META_COLUMNS.get(fmt, ('title',))
    last_wins = fmt == 'amazon2018'
    found: Dict[str, Dict[str, str]] = {}
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
            raise ValueError(f'{path} line {lineno}: missing key {key!r} (expected keys {key}, '
                             f'{", ".join(columns)})')
        asin = _token(obj[key], path, lineno, key)
        if asin not in wanted:
            continue
        if last_wins:
            found[asin] = {c: meta_text(obj.get(c)) for c in columns}
        else:
            title = obj.get('title')
            if isinstance(title, str) and title.strip() and not found.get(asin, {}).get('title'):
                found[asin] = {'title': title}
    return found


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


def _read_abxi_titles(path: Path) -> Dict[str, Dict[str, str]]:
    """``{asin: {'title': title}}`` from ``item_titles.tsv`` (the first non-empty title of an ASIN)."""
    titles: Dict[str, Dict[str, str]] = {}
    for lineno, line in _iter_lines(path):
        fields = line.split('\t', 3)
        if lineno == 1 and fields[0] == 'item_idx':
            continue  # header
        if len(fields) < 3:
            raise ValueError(f'{path} line {lineno}: expected 4 tab-separated fields '
                             f'item_idx, asin, domain, title, got {len(fields)}')
        asin, title = fields[1].strip(), fields[3] if len(fields) > 3 else ''
        if title.strip() and not titles.get(asin):
            titles[asin] = {'title': title}
    return titles


def load_abxi(inputs: Mapping[str, PathLike]) -> Tuple[InteractionTable, dict]:
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
    u_codes, u_tokens = pd.factorize(np.asarray(users, dtype=object), sort=True)
    i_codes, i_tokens = pd.factorize(np.asarray(asin_of[idx], dtype=object), sort=True)
    table = build_table(u_codes, u_tokens, i_codes, i_tokens, np.asarray(stamps, dtype=np.int64), dom, order)
    table.meta = titles
    info = {'inputs': {k: (str(p) if p is not None else None) for k, p in files.items()}}
    return table, info
