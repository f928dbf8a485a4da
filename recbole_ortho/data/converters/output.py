"""
recbole_ortho.data.converters.output
####################################

Writing the atomic files and the statistics, through a temporary folder installed at the end.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from recbole_ortho.data.converters.common import (DOMAINS, INTER_HEADER, ITEM_HEADER)
from recbole_ortho.data.converters.readers import InteractionTable


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------
def clean_text(text: str) -> str:
    """One line of text: tabs, line breaks and runs of whitespace become one space."""
    return ' '.join(text.replace('\t', ' ').replace('\r', ' ').replace('\n', ' ').split())


def _title(table: InteractionTable, item: str) -> str:
    return clean_text(table.meta.get(item, {}).get('title', ''))


def _ts_text(ts: np.ndarray) -> np.ndarray:
    if ts.dtype.kind == 'f' and np.all(np.mod(ts, 1) == 0) and np.all(np.abs(ts) < 2 ** 53):
        ts = ts.astype(np.int64)
    return ts


def write_domain(table: InteractionTable, df: pd.DataFrame, seq_idx: np.ndarray, dom: int, folder: Path, name: str) -> None:
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
    item_codes = np.unique(part['i'].to_numpy())  # sorted codes = sorted item ids
    ids = table.items[item_codes]
    columns = {ITEM_HEADER[0]: ids}
    for col in table.item_columns:
        columns[f'{col}:token'] = [clean_text(table.meta.get(a, {}).get(col, '')) for a in ids]
    pd.DataFrame(columns).to_csv(sub / f'{name}_{label}.item', sep='\t', index=False, lineterminator='\n',
                                 quoting=csv.QUOTE_MINIMAL)


def dataset_stats(table: InteractionTable, df: pd.DataFrame) -> dict:
    u, i, d = df['u'].to_numpy(), df['i'].to_numpy(), df['d'].to_numpy()
    domains = {}
    for dom, label in enumerate(DOMAINS):
        m = d == dom
        n_u, n_i, n = int(np.unique(u[m]).size), int(np.unique(i[m]).size), int(m.sum())
        titled = sum(1 for a in table.items[np.unique(i[m])] if _title(table, a))
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

    def row(label: str, c: dict) -> str:
        return (f"| {label} | | | | | {c['interactions']:,} (A {c['interactions_A']:,} / "
                f"B {c['interactions_B']:,}) | |")

    def num(v) -> str:
        return '?' if v is None else f'{v:,}'

    steps = stats['steps']
    streamed = [s for s in steps if s.get('streamed')]  # recorded first: applied while reading
    if streamed:
        lines.append(row('read', stats['read']))
    for pos, s in enumerate(steps):
        if pos == len(streamed):
            lines.append(row('loaded', stats['loaded']))
        r = s['removed']
        params = ', '.join(f'{k}={v}' for k, v in s['params'].items())
        note = s.get('note', '')
        if 'rounds' in s:
            note = f"{s['rounds']} round(s)" + (f'; {note}' if note else '')
        if s.get('streamed'):
            note = 'applied while reading (removed users/items not counted)' + (f'; {note}' if note else '')
        lines.append(f"| {s['step']} | {params} | {r['interactions']:,} ({r['interactions_A']:,} / "
                     f"{r['interactions_B']:,}) | {num(r['users'])} | {num(r['items'])} | "
                     f"{s['remaining']['interactions']:,} | {note} |")
    if len(steps) == len(streamed):
        lines.append(row('loaded', stats['loaded']))
    return '\n'.join(lines) + '\n'


def write_stats(folder: Path, stats: dict) -> str:
    (folder / 'stats.json').write_text(json.dumps(stats, indent=2) + '\n', encoding='utf-8')
    text = _stats_markdown(stats)
    (folder / 'stats.md').write_text(text, encoding='utf-8')
    return text


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """Create ``parent/<prefix>XXXXXXXX`` with the usual (umask) permissions, unlike mkdtemp's 0700."""
    while True:
        path = parent / f'{prefix}{secrets.token_hex(4)}'
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def install_atomically(tmp: Path, dest: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` folder to ``dest``; with ``overwrite``, swap out an existing ``dest``."""
    if not dest.exists():
        os.replace(tmp, dest)
        return
    if not overwrite:
        raise FileExistsError(f'{dest} already exists; pass overwrite=True (--overwrite) to replace it')
    old = make_temp_dir(dest.parent, f'.{dest.name}.old-')
    old.rmdir()
    os.replace(dest, old)
    try:
        os.replace(tmp, dest)
    except BaseException:
        os.replace(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)
