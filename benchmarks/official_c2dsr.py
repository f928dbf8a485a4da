#!/usr/bin/env python
"""Time training batches of the OFFICIAL C2DSR code (github cjx96/C2DSR) on CPU, on our data.

The official code is NOT part of this repository. Check it out somewhere outside the repo and point
``--official_dir`` (or ``C2DSR_OFFICIAL_DIR``) at the checkout (the folder holding ``C2DSR_src/``)::

    git clone <mirror of cjx96/C2DSR> ../c2dsr_official
    C2DSR_OFFICIAL_DIR=../c2dsr_official .venv/bin/python benchmarks/official_c2dsr.py --batches 5 --threads 2

**Input data.** Our dataset (``create_dataset``, the users and mixed sequences our models train on) is
written in the official format into a temporary working directory, ``dataset/Food-Kitchen/``:
``Alist.txt`` / ``Blist.txt`` (one line per item of A / B), ``traindata_new.txt``,
``validdata_new.txt``, ``testdata_new.txt`` (one line per user: ``user <tab> 0 <tab> item|time ...``;
the official loader reads the fields from the third on and sorts them by time, so ``time`` is the
item's position). Official item ids: A items ``0 .. n_A - 1``, B items ``n_A .. n_A + n_B - 1`` (our id
order within each domain). Leave-one-out as ours: a user's training line is the last ``maxlen`` (15)
items of its training part (the mixed sequence without the validation and test targets), a
validation / test line the last ``maxlen - 1`` items before the target, then the target. The official
loader cannot read longer lines (its position table has ``maxlen`` rows, row 0 for padding, so at most
``maxlen - 1`` inputs; a longer line indexes past it).

**How the official code is driven** (by import from ``C2DSR_src``; none of its files is edited):

* ``opt`` = the argument defaults of the official ``train_rec.py`` (d 256, 2 blocks, 1 head, GNN depth 1,
  dropout 0.2, Adam lr 1e-3, batch 256, maxlen 15, lambda 0.7, seed 2040) with ``cuda=False``; the
  official data loaders (training, validation, test), ``GraphMaker`` and ``CDSRTrainer`` are built in
  that order in the working directory, after the official ``seed_everything(2040)`` (re-implemented:
  it is defined in ``train_rec.py``, a script that trains at import).
* One shim: the official ``train_batch`` moves its BCE labels with a hard-coded ``.cuda()``;
  ``torch.Tensor.cuda`` returns the tensor itself while the official code runs
  (:func:`official_code`). Python 3.11 warns about its ``is not -1`` comparisons (they still work).
* One timed batch = the official ``trainer.train_batch(batch)`` (``zero_grad``, the three GNN passes,
  the encoders, the loss, ``backward``, ``optimizer.step()``, ``.item()``), i.e. the body of the
  official epoch loop. Fetching the batch (tensors from the loader's pre-built lists) is timed
  apart (``load_s_*``). ``--epoch`` times every batch of one epoch.
* ``--eval`` times one validation pass as ``train_rec.py`` runs it (``model.eval()``, ``graph_convolution()``,
  ``trainer.test_batch`` per batch with its per-user ranking, the metrics; without ``torch.no_grad``, as the
  script); ``--count_flops`` counts the dense FLOPs of one more, untimed, batch (``FlopCounterMode``; the sparse
  products of the item GCNs are left out, since the counter would count them as dense ones).

Output: one JSON line on stdout (official prints go to stderr), optionally also ``--json_out``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
import types

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFICIAL_NAME = 'Food-Kitchen'          # the official loader reads ./dataset/<name>/ (maxlen 15 unless "Enter")
#: the argument defaults of the official train_rec.py (HEAD 89d4b92), cuda off
TRAIN_REC_DEFAULTS = dict(
    data_dir=OFFICIAL_NAME, model='C2DSR', hidden_units=256, num_blocks=2, num_heads=1, GNN=1, dropout=0.2,
    optim='adam', lr=0.001, lr_decay=1, weight_decay=5e-4, decay_epoch=5, max_grad_norm=5.0, leakey=0.1,
    maxlen=15, cpu=True, cuda=False, num_epoch=100, batch_size=256, log_step=200, log='logs.txt',
    save_epoch=100, save_dir='./saved_models', id='00', seed=2040, load=False, model_file=None, info='',
    undebug=True, **{'lambda': 0.7})
OFFICIAL_MODULES = ('model', 'utils')


# ------------------------------------------------------------------------------------------ data
def our_data(dataset='food_kitchen', model='C2DSR'):
    """``(config, SeqData)`` of our ``dataset`` (the sequences every model of the package reads; ``model`` only
    picks the settings, and the sequences are the same under every model)."""
    old_argv = sys.argv
    sys.argv = [old_argv[0]]          # RecBole's Config reads --key=value from the command line
    try:
        from recbole_ortho.config import Config
        from recbole_ortho.data import create_dataset
        config = Config(model=model, dataset=dataset,
                        config_dict={'show_progress': False, 'save_model': False, 'state': 'WARNING'})
        return config, create_dataset(config)
    finally:
        sys.argv = old_argv


def official_lines(data, maxlen=15):
    """The official files' item lists of our ``data``: ``{'train': [...], 'valid': [...], 'test': [...]}``
    (lists of official item ids per evaluated user, see module docstring), ``n_a``, ``n_b``."""
    import numpy as np
    (a_lo, a_hi), (b_lo, b_hi) = data.domain_range[0], data.domain_range[1]
    n_a = a_hi - a_lo
    off = np.full(data.n_items, -1, dtype=np.int64)
    off[a_lo:a_hi] = np.arange(n_a)
    off[b_lo:b_hi] = n_a + np.arange(b_hi - b_lo)
    out = {'train': [], 'valid': [], 'test': []}
    for u in np.asarray(data.eval_users):
        s = off[data.seq_items[data.seq_offsets[u]:data.seq_offsets[u + 1]]]
        out['train'].append(s[:-2][-maxlen:].tolist())
        out['valid'].append(s[:-2][-(maxlen - 1):].tolist() + [int(s[-2])])
        out['test'].append(s[:-1][-(maxlen - 1):].tolist() + [int(s[-1])])
    return out, n_a, b_hi - b_lo


def write_official_input(workdir, lines, n_a, n_b, name=OFFICIAL_NAME):
    """Write ``workdir/dataset/<name>/`` in the official format (see module docstring)."""
    d = os.path.join(workdir, 'dataset', name)
    os.makedirs(d, exist_ok=True)
    for fname, n in (('Alist.txt', n_a), ('Blist.txt', n_b)):
        with open(os.path.join(d, fname), 'w') as f:
            f.writelines(f'{i}\n' for i in range(n))
    for split, fname in (('train', 'traindata_new.txt'), ('valid', 'validdata_new.txt'), ('test', 'testdata_new.txt')):
        with open(os.path.join(d, fname), 'w') as f:
            for k, seq in enumerate(lines[split]):
                f.write(f'{k}\t0\t' + '\t'.join(f'{i}|{t}' for t, i in enumerate(seq)) + '\n')
    return d


# -------------------------------------------------------------------------------- official code
@contextlib.contextmanager
def official_code(official_dir):
    """Import the official modules from ``<official_dir>/C2DSR_src`` (their top-level names ``model`` and
    ``utils`` are put back as they were afterwards) with ``torch.Tensor.cuda`` returning the tensor
    itself; yields a namespace with ``C2DSR``, ``GCNLayer``, ``CDSRTrainer``, ``DataLoader``,
    ``GraphMaker``."""
    import torch
    src = os.path.join(os.path.abspath(official_dir), 'C2DSR_src')
    if not os.path.isfile(os.path.join(src, 'model', 'C2DSR.py')):
        raise FileNotFoundError(f'{official_dir} does not look like a C2DSR checkout (no C2DSR_src/model/C2DSR.py)')
    saved = {k: v for k, v in sys.modules.items() if k.split('.')[0] in OFFICIAL_MODULES}
    for k in saved:
        del sys.modules[k]
    sys.path.insert(0, src)
    cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self
    try:
        import importlib
        mods = {m: importlib.import_module(m) for m in ('model.C2DSR', 'model.GNN', 'model.trainer', 'utils.loader',
                                                         'utils.GraphMaker')}
        for m in mods.values():
            if not os.path.abspath(m.__file__).startswith(src + os.sep):
                raise RuntimeError(f'{m.__name__} was imported from {m.__file__}, not from {src}')
        yield types.SimpleNamespace(C2DSR=mods['model.C2DSR'].C2DSR, GCNLayer=mods['model.GNN'].GCNLayer,
                                    CDSRTrainer=mods['model.trainer'].CDSRTrainer,
                                    DataLoader=mods['utils.loader'].DataLoader,
                                    GraphMaker=mods['utils.GraphMaker'].GraphMaker)
    finally:
        torch.Tensor.cuda = cuda
        sys.path.remove(src)
        for k in [k for k in sys.modules if k.split('.')[0] in OFFICIAL_MODULES]:
            del sys.modules[k]
        sys.modules.update(saved)


def seed_everything(seed):
    """The official ``train_rec.seed_everything`` (random, torch, numpy, PYTHONHASHSEED)."""
    import numpy as np
    import torch
    random.seed(seed)
    torch.manual_seed(seed)
    np.random.seed(seed)
    os.environ['PYTHONHASHSEED'] = str(seed)


def official_setup(off, workdir, **over):
    """What official ``train_rec.py`` builds before its epoch loop, in its order, in ``workdir``:
    ``(opt, train_loader, valid_loader, test_loader, trainer)``."""
    opt = dict(TRAIN_REC_DEFAULTS, **over)
    seed_everything(opt['seed'])
    old = os.getcwd()
    os.chdir(workdir)
    try:
        train = off.DataLoader(opt['data_dir'], opt['batch_size'], opt, evaluation=-1)
        valid = off.DataLoader(opt['data_dir'], opt['batch_size'], opt, evaluation=2)
        test = off.DataLoader(opt['data_dir'], opt['batch_size'], opt, evaluation=1)
        opt['itemnum'] = opt['source_item_num'] + opt['target_item_num'] + 1
        g = off.GraphMaker(opt, os.path.join('dataset', opt['data_dir'], 'traindata_new.txt'))
        trainer = off.CDSRTrainer(opt, g.adj, g.adj_single)
    finally:
        os.chdir(old)
    return opt, train, valid, test, trainer


# ------------------------------------------------------------------------------------------- cli
def parse_cli(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--official_dir', default=os.environ.get('C2DSR_OFFICIAL_DIR'),
                   help='checkout of github cjx96/C2DSR (default: $C2DSR_OFFICIAL_DIR)')
    p.add_argument('--dataset', default='food_kitchen', help='our dataset (default food_kitchen)')
    p.add_argument('--batches', type=int, default=5, help='training batches to time (without --epoch)')
    p.add_argument('--epoch', action='store_true', help='time every batch of one full training epoch')
    p.add_argument('--threads', type=int, default=2, help='torch.set_num_threads')
    p.add_argument('--eval', action='store_true',
                   help='also time one validation pass as train_rec.py runs it (eval(), graph_convolution(), '
                        'test_batch over the validation loader, cal_test_score; without torch.no_grad, as the script)')
    p.add_argument('--count_flops', action='store_true',
                   help='count the dense FLOPs of one more, untimed, batch (FlopCounterMode; sparse products left out)')
    p.add_argument('--json_out', default=None, help='also write the JSON result here')
    ns = p.parse_args(argv)
    if not ns.official_dir:
        p.error('--official_dir (or C2DSR_OFFICIAL_DIR) is required')
    ns.official_dir = os.path.abspath(ns.official_dir)
    if not os.path.isfile(os.path.join(ns.official_dir, 'C2DSR_src', 'model', 'C2DSR.py')):
        p.error(f'{ns.official_dir} does not look like a C2DSR checkout (no C2DSR_src/model/C2DSR.py)')
    if ns.batches < 1:
        p.error('--batches must be >= 1')
    return ns


@contextlib.contextmanager
def dense_flops_only():
    """Within this block sparse-dense products (the item GCNs) return zeros of their shape: for counting the
    dense FLOPs of a step with ``FlopCounterMode``, which would count a sparse product as a dense one."""
    import torch
    saved = torch.sparse.mm, torch.spmm
    torch.sparse.mm = torch.spmm = lambda a, x: x * 0.0
    try:
        yield
    finally:
        torch.sparse.mm, torch.spmm = saved


def count_gflop(step):
    """Dense GFLOP of ``step()`` (forward, backward and optimizer) with torch's ``FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode
    with dense_flops_only(), FlopCounterMode(display=False) as fc:
        step()
    return fc.get_total_flops() / 1e9


def time_eval(trainer, valid):
    """Seconds of one official validation pass (train_rec.py's evaluation block: model.eval(),
    graph_convolution(), trainer.test_batch per batch, the per-user ranks, cal_test_score's metrics)."""
    import numpy as np
    t0 = time.perf_counter()
    trainer.model.eval()
    trainer.model.graph_convolution()
    ranks = {0: [], 1: []}
    for batch in valid:
        x, y = trainer.test_batch(batch)
        ranks[0] += x
        ranks[1] += y
    for r in ranks.values():                           # cal_test_score: MRR, NDCG@5/10, HR@1/5/10 per domain
        r = np.asarray(r, dtype=np.float64)
        _ = [np.mean(1 / r), np.mean((r <= 5) / np.log2(r + 1)), np.mean((r <= 10) / np.log2(r + 1)), np.mean(r <= 10)]
    return time.perf_counter() - t0


def git_commit(folder):
    """The commit of the checkout in ``folder`` (None when it is not a git checkout): recorded instead of its path."""
    import subprocess
    r = subprocess.run(['git', '-C', folder, 'rev-parse', 'HEAD'], capture_output=True, text=True)
    return r.stdout.strip() or None if r.returncode == 0 else None


def median_skip_warmup(xs):
    return statistics.median(xs[1:] if len(xs) > 2 else xs)


def run(ns):
    import torch
    torch.set_num_threads(ns.threads)
    t0 = time.perf_counter()
    _, data = our_data(ns.dataset)
    lines, n_a, n_b = official_lines(data, TRAIN_REC_DEFAULTS['maxlen'])
    with tempfile.TemporaryDirectory(prefix='c2dsr_official_') as workdir, contextlib.redirect_stdout(sys.stderr):
        write_official_input(workdir, lines, n_a, n_b)
        convert_s = time.perf_counter() - t0
        with official_code(ns.official_dir) as off:
            t0 = time.perf_counter()
            opt, train, valid, _, trainer = official_setup(off, workdir)
            setup_s = time.perf_counter() - t0
            n = len(train) if ns.epoch else ns.batches
            step_s, load_s, losses = [], [], []
            for i in range(n):
                t0 = time.perf_counter()
                batch = train[i % len(train)]
                t1 = time.perf_counter()
                losses.append(trainer.train_batch(batch))
                t2 = time.perf_counter()
                load_s.append(t1 - t0)
                step_s.append(t2 - t1)
                print(f'[official_c2dsr] batch {i + 1}/{n}: load {t1 - t0:.3f}s step {t2 - t1:.3f}s '
                      f'loss {losses[-1]:.4f}')
            eval_s = time_eval(trainer, valid) if ns.eval else None
            gflop = count_gflop(lambda: trainer.train_batch(train[0])) if ns.count_flops else None
    model = trainer.model
    per_batch = median_skip_warmup([a + b for a, b in zip(step_s, load_s)])
    res = {
        'batch_s_median': median_skip_warmup(step_s), 'batch_s_all': step_s, 'load_s_all': load_s,
        'batches_per_epoch': len(train), 'epoch_s_est': len(train) * per_batch,
        'epoch_s_measured': sum(step_s) + sum(load_s) if ns.epoch else None,
        'eval_s': eval_s, 'gflop_per_step': gflop, 'losses': losses, 'train_rows': train.num_examples,
        'n_users': len(lines['train']),
        'n_item_a': n_a, 'n_item_b': n_b, 'maxlen': opt['maxlen'], 'batch_size': opt['batch_size'],
        'n_params': sum(p.numel() for p in model.parameters()), 'threads': ns.threads,
        'torch_num_threads': torch.get_num_threads(), 'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        / 1024.0, 'convert_s': convert_s, 'setup_s': setup_s, 'official_commit': git_commit(ns.official_dir),
        'torch': torch.__version__,
    }
    return res


def main(argv=None):
    ns = parse_cli(argv)
    res = run(ns)
    print(json.dumps(res))
    if ns.json_out:
        from recbole_ortho.quick_start import write_json_atomic
        write_json_atomic(ns.json_out, res)


if __name__ == '__main__':
    main()
