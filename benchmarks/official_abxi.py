#!/usr/bin/env python
"""Time training batches of the OFFICIAL ABXI code (github DiMarzioBian/ABXI) on CPU.

This is our own driver; the official code is NOT part of this repository. Check it out
somewhere outside the repo and point ``--official_dir`` (or ``ABXI_OFFICIAL_DIR``) at it::

    git --git-dir=<mirror> --work-tree=../abxi_official checkout HEAD -- .
    ABXI_OFFICIAL_DIR=../abxi_official \\
        .venv/bin/python benchmarks/official_abxi.py --batches 5 --threads 2 [--eval]

How the official code is driven (by import, nothing of it is edited):

* ``main.main()`` of the official checkout is run with the Food-Kitchen command line of its
  ``demo.sh`` (``--data afk --bs 256 --lr 1e-4 --l2 3e0 --rd 16 --ri 64 --n_warmup 10
  --seed 3407``) but ``--cuda cpu`` (supported natively by main.py) and ``--n_worker`` from
  our CLI (default 0; demo.sh uses 28). It runs inside a temporary directory whose
  ``data/afk/`` holds symlinks to ``--data_dir`` files, so the official path logic, argument
  post-processing (len_trim, bse, n_warmup, ...) and seeding (random/torch/numpy 3407) run
  unchanged. The only monkey-patch: ``main.Noter`` is replaced by a stub that raises right
  after seeding, which hands us the fully prepared ``args`` (so no log file is written and
  main's 500-epoch loop never starts).
* ``trainer.Trainer(args, noter)`` (official) then builds the data loaders (raw text ->
  serialized pickle, written to the temporary directory), the ``ABXI`` model, AdamW and the
  schedulers exactly like the official run.
* One timed training batch = ``optimizer.zero_grad()`` + official ``Trainer.train_batch``
  (forward, InfoNCE loss, backward, ``optimizer.step()``, ``.item()``), i.e. the body of the
  official ``run_epoch`` loop minus tqdm/loss bookkeeping. Fetching the batch from the
  DataLoader (which includes the official per-sample negative sampling, 128 A + 128 B
  negatives per target position) is timed separately (``load_s_all``).
* Evaluation (``--eval`` full pass, or ``--eval_batches K`` extrapolated) runs the official
  ``Trainer.evaluate_batch`` over ``trainer.val_loader`` (batch size bs*4 = 1024, 999
  negatives per user sampled in the loader) under ``torch.no_grad()``, loading included.

Output: one JSON line on stdout (official prints are redirected to stderr), optionally also
written to ``--json_out``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# demo.sh, "afk" line (n_worker and cuda are replaced, see module docstring)
AFK_DEMO_ARGV = ['--n_warmup', '10', '--bs', '256', '--data', 'afk', '--lr', '1e-4',
                 '--l2', '3e0', '--rd', '16', '--ri', '64', '--seed', '3407']
DATA_FILES = ('afk_50_preprocessed.txt', 'map_item_50.txt', 'map_user_50.txt')


class _Captured(Exception):
    def __init__(self, args):
        super().__init__('captured official args')
        self.captured = args


class _QuietNoter:
    """Stand-in for the official Noter (which writes a log file); only what Trainer uses."""

    def __init__(self):
        self.n_params = None

    def log_num_param(self, model):
        self.n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def __getattr__(self, name):  # any other log_* call: ignore
        return lambda *a, **k: None


def _portable(path):
    """``path`` with the ``RECBOLE_ORTHO_DATA`` root written as ``$RECBOLE_ORTHO_DATA`` (a result file
    must not carry a machine's absolute path)."""
    root = os.environ.get('RECBOLE_ORTHO_DATA')
    if root and os.path.abspath(path).startswith(os.path.abspath(root) + os.sep):
        return '$RECBOLE_ORTHO_DATA/' + os.path.relpath(path, root)
    return os.path.basename(path)


def default_data_dir() -> str:
    root = os.environ.get('RECBOLE_ORTHO_DATA')
    if root is None:
        root = os.path.join(REPO_ROOT, '..', 'shared', 'data')
    return os.path.normpath(os.path.join(root, 'food_kitchen'))


def parse_cli(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--official_dir', default=os.environ.get('ABXI_OFFICIAL_DIR'),
                   help='checkout of github DiMarzioBian/ABXI (default: $ABXI_OFFICIAL_DIR)')
    p.add_argument('--data_dir', default=default_data_dir(),
                   help='folder with afk_50_preprocessed.txt, map_item_50.txt, map_user_50.txt '
                        '(default: $RECBOLE_ORTHO_DATA/food_kitchen, RECBOLE_ORTHO_DATA '
                        'defaulting to <repo>/../shared/data)')
    p.add_argument('--batches', type=int, default=5, help='training batches to time')
    p.add_argument('--threads', type=int, default=2, help='torch.set_num_threads')
    p.add_argument('--n_worker', type=int, default=0,
                   help='official --n_worker (DataLoader workers); demo.sh uses 28, default 0')
    p.add_argument('--eval', action='store_true', help='time full validation passes (--eval_passes)')
    p.add_argument('--eval_passes', type=int, default=3,
                   help='with --eval: full passes timed; eval_s is their median (each draws its negatives)')
    p.add_argument('--eval_batches', type=int, default=0,
                   help='time K validation batches and extrapolate to a full pass')
    p.add_argument('--json_out', default=None, help='also write the JSON result here')
    p.add_argument('--extra', nargs=argparse.REMAINDER, default=[],
                   help='further official main.py arguments appended after the demo.sh ones')
    ns = p.parse_args(argv)
    if not ns.official_dir:
        p.error('--official_dir (or ABXI_OFFICIAL_DIR) is required')
    ns.official_dir = os.path.abspath(ns.official_dir)
    ns.data_dir = os.path.abspath(ns.data_dir)
    for f in ('main.py', 'trainer.py', os.path.join('models', 'ABXI.py')):
        if not os.path.isfile(os.path.join(ns.official_dir, f)):
            p.error(f'{ns.official_dir} does not look like an ABXI checkout (no {f})')
    for f in DATA_FILES:
        if not os.path.isfile(os.path.join(ns.data_dir, f)):
            p.error(f'missing data file {os.path.join(ns.data_dir, f)}')
    if ns.batches < 1:
        p.error('--batches must be >= 1')
    return ns


def official_args(ns: argparse.Namespace, workdir: str):
    """Run official main.main() up to (and including) seeding; return its args."""
    data_link = os.path.join(workdir, 'data', 'afk')
    os.makedirs(data_link)
    for f in DATA_FILES:
        os.symlink(os.path.join(ns.data_dir, f), os.path.join(data_link, f))

    sys.path.insert(0, ns.official_dir)
    import main as official_main  # noqa: E402  (sets float32 matmul precision 'high')

    argv = ['main.py'] + AFK_DEMO_ARGV + ['--cuda', 'cpu', '--n_worker', str(ns.n_worker)]
    argv += list(ns.extra)

    def _capture(args):
        raise _Captured(args)

    old_argv, old_cwd, old_noter = sys.argv, os.getcwd(), official_main.Noter
    sys.argv, official_main.Noter = argv, _capture
    os.chdir(workdir)
    try:
        official_main.main()
    except _Captured as c:
        args = c.captured
    else:  # pragma: no cover
        raise RuntimeError('official main() returned without constructing Noter')
    finally:
        sys.argv, official_main.Noter = old_argv, old_noter
        os.chdir(old_cwd)
    return args, argv


def median_skip_warmup(xs):
    xs = xs[1:] if len(xs) > 2 else xs
    return statistics.median(xs)


def run(ns: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(ns.threads)
    with tempfile.TemporaryDirectory(prefix='abxi_official_') as workdir, \
            contextlib.redirect_stdout(sys.stderr):
        args, argv = official_args(ns, workdir)

        from trainer import Trainer  # official
        from models.data.evaluation import cal_metrics  # official

        t0 = time.perf_counter()
        noter = _QuietNoter()
        trainer = Trainer(args, noter)
        setup_s = time.perf_counter() - t0

        loader = trainer.train_loader
        batches_per_epoch = len(loader)

        # ---- training batches
        trainer.model.train()
        it = iter(loader)
        batch_s, load_s, losses = [], [], []
        for _ in range(ns.batches):
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                it = iter(loader)
                batch = next(it)
            t1 = time.perf_counter()
            trainer.optimizer.zero_grad()
            loss_a, loss_b = trainer.train_batch(batch)
            t2 = time.perf_counter()
            load_s.append(t1 - t0)
            batch_s.append(t2 - t1)
            losses.append([loss_a, loss_b])
            print(f'[official_abxi] batch {len(batch_s)}: load {t1 - t0:.3f}s '
                  f'step {t2 - t1:.3f}s loss_a {loss_a:.4f} loss_b {loss_b:.4f}')
        del it

        # ---- evaluation (validation loader, official evaluate_batch)
        eval_s = None
        eval_info = {}
        n_eval = len(trainer.val_loader)
        k = n_eval if ns.eval else min(ns.eval_batches, n_eval)
        if k > 0:
            trainer.model.eval()
            passes = []
            for _ in range(ns.eval_passes if ns.eval else 1):
                ranks_a, ranks_b, per_batch = [], [], []
                with torch.no_grad():
                    vit = iter(trainer.val_loader)
                    for _ in range(k):
                        t0 = time.perf_counter()
                        vb = next(vit)
                        ra, rb = trainer.evaluate_batch(vb)
                        per_batch.append(time.perf_counter() - t0)
                        ranks_a += ra
                        ranks_b += rb
                t0 = time.perf_counter()
                if ranks_a:
                    cal_metrics(ranks_a)
                if ranks_b:
                    cal_metrics(ranks_b)
                metric_s = time.perf_counter() - t0
                if k == n_eval:
                    passes.append(sum(per_batch) + metric_s)
                else:
                    passes.append(statistics.mean(per_batch) * n_eval + metric_s)
            eval_s = statistics.median(passes)
            eval_info = {'eval_batches_timed': k, 'eval_batches_per_pass': n_eval,
                         'eval_batch_size': args.bse, 'eval_batch_s_all': per_batch,
                         'eval_extrapolated': k != n_eval, 'eval_s_all': passes}

    bm = median_skip_warmup(batch_s)
    lm = median_skip_warmup(load_s)
    tot = median_skip_warmup([a + b for a, b in zip(batch_s, load_s)])
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    res = {
        'batch_s_median': bm,
        'batch_s_all': batch_s,
        'batches_per_epoch': batches_per_epoch,
        'epoch_s_est': batches_per_epoch * tot,
        'epoch_s_est_compute_only': batches_per_epoch * bm,
        'eval_s': eval_s,
        'peak_rss_mb': rss_kb / 1024.0,
        'n_params': noter.n_params,
        'threads': ns.threads,
        # extra detail
        'load_s_median': lm,
        'load_s_all': load_s,
        'step_plus_load_s_median': tot,
        'warmup_skipped': len(batch_s) > 2,
        'losses': losses,
        'setup_s': setup_s,
        'n_user': args.n_user,
        'n_item_a': int(args.n_item_a),
        'n_item_b': int(args.n_item_b),
        'batch_size': args.bs,
        'n_worker': args.n_worker,
        'official_argv': argv[1:],
        'official_dir': '<official checkout>',           # no machine's path in a committed result
        'data_dir': _portable(ns.data_dir),
        'torch': torch.__version__,
        'torch_num_threads': torch.get_num_threads(),
        # official main.py sets 'high' at import (a bitwise no-op for fp32 matmul on this CPU)
        'float32_matmul_precision': torch.get_float32_matmul_precision(),
        **eval_info,
    }
    return res


def main(argv=None) -> None:
    ns = parse_cli(argv)
    res = run(ns)
    line = json.dumps(res)
    print(line)
    if ns.json_out:
        os.makedirs(os.path.dirname(os.path.abspath(ns.json_out)), exist_ok=True)
        with open(ns.json_out, 'w') as f:
            f.write(json.dumps(res, indent=2) + '\n')


if __name__ == '__main__':
    main()
