"""
recbole_ortho.data.converters.readers
#####################################

Readers of the input formats (interactions, metadata titles, the ABXI folder) into one interaction table.
"""

from __future__ import annotations

import ast
import gzip
import json
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from recbole_ortho.data.converters.common import (DOMAINS, FORMATS, PathLike, logger)


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
            ts.append(to_number(stamp))
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
            ts.append(to_number(obj[ts_key]))
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
class InteractionTable:
    """Interactions of both domains, sorted by (user, mixed-sequence position).

    ``df`` columns: ``u`` (index into ``users``), ``i`` (index into ``items``), ``ts`` (timestamp) and
    ``d`` (0 = A, 1 = B).  ``users``/``items`` are sorted arrays of the id strings.
    """

    df: pd.DataFrame
    users: np.ndarray
    items: np.ndarray
    titles: Dict[str, str]


def build_table(user_ids: Sequence[str], item_ids: Sequence[str], ts: np.ndarray, dom: np.ndarray,
                 order: Optional[np.ndarray], titles: Dict[str, str]) -> InteractionTable:
    """Factorise ids (sorted) and order rows by user, then by ``order`` (or by stable timestamp)."""
    u_codes, users = pd.factorize(np.asarray(user_ids, dtype=object), sort=True)
    i_codes, items = pd.factorize(np.asarray(item_ids, dtype=object), sort=True)
    rows = np.arange(len(u_codes))
    keys = (rows, order, u_codes) if order is not None else (rows, ts, u_codes)
    perm = np.lexsort(keys)
    df = pd.DataFrame({'u': u_codes[perm].astype(np.int64), 'i': i_codes[perm].astype(np.int64),
                       'ts': ts[perm], 'd': dom[perm].astype(np.int8)})
    return InteractionTable(df, np.asarray(users, dtype=object), np.asarray(items, dtype=object), titles)


def _timestamps(values: List[Union[int, float]]) -> np.ndarray:
    arr = np.asarray(values)
    return arr.astype(np.int64) if arr.dtype.kind in 'iu' else arr.astype(np.float64)


def load_raw(fmt: str, inputs: Mapping[str, PathLike], meta: Optional[Mapping[str, PathLike]]) -> Tuple[InteractionTable, dict]:
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
    table = build_table(a.users + b.users, a.items + b.items, ts, dom, None, titles)
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
    table = build_table(users, asin_of[idx], np.asarray(stamps, dtype=np.int64), dom, order, titles)
    info = {'inputs': {k: (str(p) if p is not None else None) for k, p in files.items()}}
    return table, info
