"""Shared fixtures: a tiny hand-made cross-domain sequential dataset written as atomic files."""

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
HEADER = 'user_id:token\titem_id:token\ttimestamp:float\tseq_idx:float\n'


def write_tiny_dataset(root, name='tiny', n_users=40, n_a=30, n_b=40, seed=0, min_len=4, max_len=14):
    """Write ``<root>/<name>/<name>_A|B/<name>_A|B.inter`` with random mixed sequences.

    Returns ``{user_token: [item_token, ...]}``, the mixed sequences in order (item tokens are
    ``a<k>`` for domain A and ``b<k>`` for domain B)."""
    rng = np.random.default_rng(seed)
    seqs = {}
    rows = {'A': [], 'B': []}
    for u in range(n_users):
        n = int(rng.integers(min_len, max_len + 1))
        seq = []
        for k in range(n):
            if rng.random() < 0.5:
                it = f'a{int(rng.integers(n_a))}'
            else:
                it = f'b{int(rng.integers(n_b))}'
            seq.append(it)
            rows['A' if it[0] == 'a' else 'B'].append(f'u{u}\t{it}\t{1000 + k // 2}\t{k}\n')  # ties on time
        seqs[f'u{u}'] = seq
    for dom in 'AB':
        d = Path(root) / name / f'{name}_{dom}'
        d.mkdir(parents=True, exist_ok=True)
        with open(d / f'{name}_{dom}.inter', 'w') as f:
            f.write(HEADER)
            f.writelines(rows[dom])
    return seqs


ITEM_WORDS = ('tea', 'pan', 'knife', 'coffee', 'spoon', 'rice', 'kettle', 'sauce', 'bowl', 'honey')


def write_tiny_items(root, name='tiny', n_a=30, n_b=40, empty_every=7):
    """Write ``<name>_A.item`` / ``<name>_B.item`` with a title for every item of
    :func:`write_tiny_dataset` (``a<k>`` / ``b<k>``), empty for every ``empty_every``-th one."""
    for dom, pre, n in (('A', 'a', n_a), ('B', 'b', n_b)):
        path = Path(root) / name / f'{name}_{dom}' / f'{name}_{dom}.item'
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, 'w') as f:
            f.write('item_id:token\ttitle:token\n')
            for k in range(n):
                title = '' if k % empty_every == 3 else f'{ITEM_WORDS[k % len(ITEM_WORDS)].title()} {pre} pack of {k}'
                f.write(f'{pre}{k}\t{title}\n')


def tiny_config_dict(tmp_path, **over):
    d = {'data_path': str(tmp_path / 'data') + os.sep, 'cache_dir': str(tmp_path / 'cache'),
         'checkpoint_dir': str(tmp_path / 'saved'), 'tensorboard_dir': str(tmp_path / 'tb'),
         'eval_neg_num': 10, 'epochs': 1, 'train_batch_size': 16, 'eval_batch_size': 16,
         'show_progress': False, 'MAX_ITEM_LIST_LENGTH': 10, 'state': 'WARNING', 'threads': 1}
    d.update(over)
    return d


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A tiny dataset on disk and the config dict that points at it (cwd = tmp_path)."""
    monkeypatch.chdir(tmp_path)
    seqs = write_tiny_dataset(tmp_path / 'data')
    write_tiny_items(tmp_path / 'data')             # item titles (LLM4CDSR's text features)
    return seqs, tiny_config_dict(tmp_path)


def shared_food_kitchen():
    """Path of the real Food-Kitchen raw data beside the repo, or None."""
    root = os.environ.get('RECBOLE_ORTHO_DATA') or str(REPO.parent / 'shared' / 'data')
    p = Path(root) / 'food_kitchen'
    return p if (p / 'afk_50_preprocessed.txt').is_file() else None


def build_times(config, data, n=5):
    """``(first, again)``: seconds to build ``config['model']`` on ``data`` once (with the data work
    of the features it declares) and ``n`` more times (quick_start.build_model)."""
    from time import perf_counter
    from recbole_ortho.quick_start import build_model
    t0 = perf_counter()
    build_model(config, data)
    first = perf_counter() - t0
    t0 = perf_counter()
    for _ in range(n):
        build_model(config, data)
    return first, perf_counter() - t0
