"""
recbole_ortho.data.converters.amazon
####################################

Converters from Amazon review data to RecBole-CDR atomic files for cross-domain sequential recommendation.

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
    ``amazon2018``  review JSON lines (``reviewerID``, ``asin``, ``overall``, ``unixReviewTime``), e.g. the
                    full per-category files ``<Category>.json.gz`` of Amazon Review Data (2018);
                    metadata: JSON lines (``asin``, ``title``, ``brand``, ``category`` (list), ``price``,
                    ``description`` (list)), e.g. ``meta_<Category>.json.gz``.
    ``amazon2023``  review JSON lines (``user_id``, ``parent_asin``, ``rating``, ``timestamp`` in
                    milliseconds, kept as given); metadata: JSON lines (``parent_asin``, ``title``).
    Every input file may be plain text or gzip-compressed (detected from its first bytes) and is read
    as a stream, line by line: memory is bounded by what is kept (three numbers per kept interaction,
    one copy of each id, the text columns of the final items), not by the file size.  Blank lines
    are skipped; any other malformed line stops the conversion with a :class:`ValueError` naming the
    file, the 1-based line number and what was expected.

Mixed-sequence order (raw formats)
    The rows of A (in file order) followed by the rows of B (in file order) are stable-sorted by
    timestamp per user: a same-timestamp tie keeps A-file order, then B-file order (as the official
    LLM4CDSR code: A rows then B rows, Python's stable ``sort`` by time).  Repeated (user, item) rows
    are kept.

Recipes (``recipe``, thresholds in ``recipe_options``)
    ``abxi``      drop items present in both domains; keep users present in both domains; keep items
                  with >= ``item_min`` (10) interactions; keep each user's last ``max_len`` (50)
                  interactions of the mixed sequence; keep users with >= ``user_min_per_domain`` (5)
                  interactions in each domain.  On ``abxi``-format input (the output of this very
                  recipe) the item step is skipped unless ``item_min`` is given explicitly: its counts
                  were taken before the last-50 cut, so re-counting would not be a no-op.
    ``llm4cdsr``  the official LLM4CDSR preprocessing (``data/<amazon|elec>/handle.ipynb``), by default
                  (``strict: true``) with its strict comparisons: keep reviews with rating >
                  ``rating_min`` (0) and ``start`` < timestamp < ``end`` (either bound optional; both
                  applied while reading, so dropped rows are never stored); then the iterative
                  k-core over both domains together (users: ``user_min`` (5), items: ``item_min`` (3),
                  items counted by id across the domains): while some user has fewer than
                  ``user_min`` or some item fewer than ``item_min`` interactions, keep the rows whose
                  user has **more than** ``user_min`` and whose item has **more than** ``item_min``
                  (as the official ``filter_Kcore``; the result can still hold users with exactly 5
                  and items with exactly 3).  Items present in both domains are kept, one item per
                  domain, written as ``<asin>@A`` and ``<asin>@B`` (``shared_items: keep``, as the
                  official per-domain id maps; ``drop`` removes them after the time window).
                  ``strict: false``: inclusive bounds and the usual k-core (>= until stable).  Users
                  need not be present in both domains.
    ``none``      no filtering.
    A threshold set to ``None`` is not applied (its step is still reported, removing nothing).
    Item ids must be disjoint across the domains in the output; a result where an item id occurs in
    both domains (possible with ``none``) is rejected.

Output, under ``<out_dir>/<name>/``
    ``<name>_A/<name>_A.inter`` and ``<name>_B/<name>_B.inter`` with the header
    ``user_id:token  item_id:token  timestamp:float  seq_idx:float`` (tab separated), rows ordered by
    user id then ``seq_idx`` (the 0-based position in the user's mixed sequence after filtering);
    ``<name>_A/<name>_A.item`` and ``<name>_B/<name>_B.item`` with ``item_id:token  title:token``, and
    for ``amazon2018`` also ``brand:token  category:token  price:token  description:token`` (list
    values joined by ``"; "``, as the LLM4CDSR item prompt joins them); empty where unknown; tabs,
    line breaks and runs of spaces become one space; a field holding a double quote is CSV-quoted,
    as pandas/RecBole read it.  An item takes its own domain's metadata record, else the other
    domain's; for ``amazon2018`` the last record of an ASIN wins (the official code's dict), else
    the first non-empty title.  RecBole-CDR does not load the ``.item`` files here (``load_col``
    names the ``.inter`` columns only).  ``stats.json`` and ``stats.md``.
    Everything is written to ``<out_dir>/.<name>.tmp-XXXX`` first and renamed at the end, so a failed
    run leaves no partial dataset.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import pandas as pd

from recbole_ortho.data.converters.common import (DOMAINS, FORMATS, INTER_HEADER, ITEM_HEADER, META_COLUMNS,
                                                  RECIPE_DEFAULTS, SHARED_ITEM_SUFFIX, PathLike, logger)
from recbole_ortho.data.converters.output import (dataset_stats, install_atomically, make_temp_dir, write_domain,
                                                  write_stats)
from recbole_ortho.data.converters.readers import (InteractionTable, RowFilter, load_abxi, load_raw,
                                                   read_item_meta)
from recbole_ortho.data.converters.recipes import (StepLog, counts, recipe_abxi, recipe_llm4cdsr, resolve_options,
                                                   split_shared_items)

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
    opts, item_note = resolve_options(recipe, fmt, recipe_options)
    out_dir = Path(out_dir)
    dest = out_dir / name
    if dest.exists() and not overwrite:
        raise FileExistsError(f'{dest} already exists; pass overwrite=True (--overwrite) to replace it')

    row_filter = None
    if fmt == 'abxi':
        if meta:
            raise ValueError("meta is not used with format 'abxi'; pass inputs['titles'] (item_titles.tsv)")
        table, info = load_abxi(inputs)
    else:
        if recipe == 'llm4cdsr':  # its per-row steps run while reading: only kept rows are stored
            row_filter = RowFilter(opts['rating_min'], opts['start'], opts['end'], opts['strict'])
        table, info = load_raw(fmt, inputs, meta, row_filter)
    df = table.df
    loaded = counts(df)
    logger.info('loaded %d interactions (A %d, B %d), %d users, %d items', loaded['interactions'],
                loaded['interactions_A'], loaded['interactions_B'], loaded['users'], loaded['items'])

    log = StepLog()
    if row_filter is not None:
        removed = info.pop('streamed')
        left = {d: info['read'][f'interactions_{d}'] for d in DOMAINS}
        for step, params in (('rating_min', {'rating_min': opts['rating_min'], 'strict': opts['strict']}),
                             ('time_window', {'start': opts['start'], 'end': opts['end'], 'strict': opts['strict']})):
            left = {d: left[d] - removed[step][d] for d in DOMAINS}
            log.record_streamed(step, params, removed[step], left)
    n_users, n_items = len(table.users), len(table.items)
    if recipe == 'abxi':
        df = recipe_abxi(df, n_users, n_items, opts, log, item_note)
    elif recipe == 'llm4cdsr':
        df = recipe_llm4cdsr(df, n_users, n_items, opts, log, streamed=row_filter is not None)
        if opts['shared_items'] == 'keep':
            table.items, df, table.source_asin = split_shared_items(table.items, df, SHARED_ITEM_SUFFIX)
            n_split = len(table.source_asin) // 2
            log.record_note('shared_items', {'shared_items': 'keep'}, df, split_items=n_split,
                            note=f'{n_split} item id(s) in both domains kept as one item per domain '
                                 f'(<id>{SHARED_ITEM_SUFFIX[0]}, <id>{SHARED_ITEM_SUFFIX[1]})')
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
    if fmt != 'abxi' and info['meta']:
        table.meta, info['meta_items'] = _attach_meta(fmt, {d: Path(p) for d, p in info['meta'].items()}, table, df)
    seq_idx = df.groupby('u', sort=False).cumcount().to_numpy()
    stats = {'name': name, 'format': fmt, 'recipe': recipe, 'recipe_options': opts, **info,
             **dataset_stats(table, df), 'loaded': loaded, 'steps': log.steps}

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out_dir, f'.{name}.tmp-')
    try:
        for dom in range(len(DOMAINS)):
            write_domain(table, df, seq_idx, dom, tmp, name)
        text = write_stats(tmp, stats)
        install_atomically(tmp, dest, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info('wrote %s\n%s', dest, text)
    return stats


def _attach_meta(fmt: str, meta_paths: Mapping[str, Path], table: InteractionTable,
                 df: pd.DataFrame) -> Tuple[Dict[str, Dict[str, str]], Dict[str, int]]:
    """Text columns of the dataset's items from the metadata files (read after filtering, keeping
    only those items).  An item takes its own domain's record, else the other domain's.

    Returns ``({item id: {column: text}}, {domain: items of the dataset found in its file})``."""
    i, d = df['i'].to_numpy(), df['d'].to_numpy()
    ids = {dom: table.items[np.unique(i[d == k])] for k, dom in enumerate(DOMAINS)}
    asin = table.source_asin
    wanted = {asin.get(t, t) for dom in DOMAINS for t in ids[dom]}
    found = {}
    for dom, path in meta_paths.items():
        logger.info('reading domain %s metadata from %s', dom, path)
        found[dom] = read_item_meta(fmt, path, wanted)
    meta: Dict[str, Dict[str, str]] = {}
    for k, dom in enumerate(DOMAINS):
        own, other = found.get(dom, {}), found.get(DOMAINS[1 - k], {})
        for t in ids[dom]:
            rec = own.get(asin.get(t, t)) or other.get(asin.get(t, t))
            if rec:
                meta[t] = rec
    return meta, {dom: len(recs) for dom, recs in found.items()}


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
    ``path``), ``meta_url`` (download base of the ``meta`` files; default ``url``), ``files`` (list of
    file names for ``abxi``; ``{A: file, B: file}`` or ``[A file, B file]`` otherwise), ``meta``
    (the same shapes, optional), ``recipe`` and ``recipe_options``.

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
        for fname in files.values():
            _download(str(source['url']), fname, folder)
        for fname in meta_files.values():  # the Amazon 2018 metadata lies in another folder than the reviews
            _download(str(source.get('meta_url') or source['url']), fname, folder)
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


__all__ = ['FORMATS', 'DOMAINS', 'RECIPE_DEFAULTS', 'KNOWN_SOURCES', 'INTER_HEADER', 'ITEM_HEADER', 'META_COLUMNS',
           'default_raw_root', 'atomic_paths', 'load_mixed_sequences', 'convert', 'prepare_dataset']
