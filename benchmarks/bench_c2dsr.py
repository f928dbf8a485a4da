#!/usr/bin/env python
"""Training-epoch time of C2DSR (and C2DSR_GCA) against the official C2DSR code, in one run, on Food-Kitchen.

Each code runs in its own process with ``--threads`` torch threads (2 by default) on the same users and
sequences (``benchmarks/official_c2dsr.py`` writes ours in the official format), in this order: ours, the
official code, ours again (the two measurements of ours bracket the official one, so that a change of the
machine's load shows as a difference between them). One epoch of ours = every batch of our training loader
(``zero_grad``, ``calculate_loss``, ``backward``, ``optimizer.step()`` with the optimizer our trainer builds);
one epoch of the official code = every batch of its training loader through its ``train_batch``
(``benchmarks/official_c2dsr.py --epoch``). The ratio is the official epoch over the mean of ours::

    C2DSR_OFFICIAL_DIR=../c2dsr_official .venv/bin/python benchmarks/bench_c2dsr.py --threads 2 \\
        --models C2DSR,C2DSR_GCA --json_out results/speed_c2dsr_cpu.json

``--batches K`` times K batches per code instead of full epochs (epoch estimated as batches per epoch x median).
The JSON holds every batch time, the CPU model (``lscpu``), the load average before and after, and the ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_model():
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True).stdout
        return next(line.split(':', 1)[1].strip() for line in out.splitlines() if line.startswith('Model name'))
    except (OSError, StopIteration):
        return None


def time_ours(model_name, dataset, batches, threads, count_flops=False, evaluate=False):
    """One training epoch (or ``batches`` batches) of our model: ``{batch_s_all, batches_per_epoch, ...}``."""
    import torch
    torch.set_num_threads(threads)
    sys.argv = [sys.argv[0]]
    from recbole_ortho.config import Config
    from recbole_ortho.data import create_dataset
    from recbole_ortho.data.dataloader import TrainDataLoader
    from recbole_ortho.model.registry import get_model
    from recbole_ortho.utils.param_match import count_parameters
    config = Config(model=model_name, dataset=dataset, config_dict={'show_progress': False, 'state': 'WARNING'})
    data = create_dataset(config)
    torch.manual_seed(config['seed'])
    model = get_model(model_name)(config, data)
    params = [p for p in model.parameters() if p.requires_grad]
    opts = {'adam': torch.optim.Adam, 'adamw': torch.optim.AdamW}
    optimizer = opts[config['learner'].lower()](params, lr=config['learning_rate'], weight_decay=config['weight_decay'])
    loader = TrainDataLoader(config, data)
    model.train()
    step_s, load_s, losses = [], [], []
    n = len(loader) if batches is None else batches
    it = iter(loader)
    for i in range(n):
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = model.calculate_loss(batch)
        loss.backward()
        if config['clip_grad_norm']:
            torch.nn.utils.clip_grad_norm_(model.parameters(), **config['clip_grad_norm'])
        optimizer.step()
        losses.append(loss.item())
        t2 = time.perf_counter()
        load_s.append(t1 - t0)
        step_s.append(t2 - t1)
        print(f'[{model_name}] batch {i + 1}/{n}: step {t2 - t1:.3f}s loss {losses[-1]:.4f}', file=sys.stderr)
    eval_s = None
    if evaluate:                                       # one validation pass, as our trainer runs it
        from recbole_ortho.data.dataloader import EvalDataLoader
        from recbole_ortho.evaluator import CDSREvaluator
        evaluator, valid = CDSREvaluator(config, data), EvalDataLoader(config, data, 'valid')
        t0 = time.perf_counter()
        evaluator.evaluate(model, valid)
        eval_s = time.perf_counter() - t0
        model.train()
    gflop = None
    if count_flops:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from official_c2dsr import count_gflop

        def step():
            optimizer.zero_grad(set_to_none=True)
            model.calculate_loss(batch).backward()
            optimizer.step()
        gflop = count_gflop(step)
    return {'model': model_name, 'eval_s': eval_s, 'gflop_per_step': gflop, 'batch_s_all': step_s,
            'load_s_all': load_s, 'losses': losses,
            'batches_per_epoch': len(loader), 'n_params': count_parameters(model),
            'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            'torch_num_threads': torch.get_num_threads()}


def epoch_of(res, full):
    per = [a + b for a, b in zip(res['batch_s_all'], res['load_s_all'])]
    if full:
        return sum(per)
    return res['batches_per_epoch'] * statistics.median(per[1:] if len(per) > 2 else per)


def row(r, epoch_s, **extra):
    """One row of the summary table."""
    out = {'epoch_s': epoch_s, 'batches_per_epoch': r['batches_per_epoch'],
           'batch_s_median': statistics.median(r['batch_s_all'][1:] if len(r['batch_s_all']) > 2 else r['batch_s_all']),
           'n_params': r['n_params'], 'gflop_per_step': r.get('gflop_per_step'), 'eval_s': r.get('eval_s'),
           'peak_rss_mb': r['peak_rss_mb']}
    out.update(extra)
    return out


def child(cmd):
    r = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=dict(os.environ))
    if r.returncode:
        sys.exit(f'{" ".join(cmd)} failed:\n{r.stderr[-4000:]}')
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--official_dir', default=os.environ.get('C2DSR_OFFICIAL_DIR'),
                   help='checkout of github cjx96/C2DSR (default: $C2DSR_OFFICIAL_DIR)')
    p.add_argument('--dataset', default='food_kitchen')
    p.add_argument('--models', default='C2DSR', help='our models, comma-separated (default C2DSR)')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--batches', type=int, default=None, help='K batches per code instead of full epochs')
    p.add_argument('--count_flops', action='store_true', help='also count the dense FLOPs of one step of each code')
    p.add_argument('--eval', action='store_true', help='also time one validation pass of each code')
    p.add_argument('--json_out', default=None)
    p.add_argument('--ours', default=None, help=argparse.SUPPRESS)        # child mode: time one of our models
    ns = p.parse_args(argv)
    if ns.ours:
        print(json.dumps(time_ours(ns.ours, ns.dataset, ns.batches, ns.threads, ns.count_flops, ns.eval)))
        return
    if not ns.official_dir:
        p.error('--official_dir (or C2DSR_OFFICIAL_DIR) is required')
    full = ns.batches is None
    extra = ([] if full else ['--batches', str(ns.batches)]) + (['--count_flops'] if ns.count_flops else []) + (
        ['--eval'] if ns.eval else [])
    me = [sys.executable, os.path.abspath(__file__), '--dataset', ns.dataset, '--threads', str(ns.threads)] + extra
    models = ns.models.split(',')
    load = [os.getloadavg()]
    runs = {m: [child(me + ['--ours', m])] for m in models}
    official = child([sys.executable, os.path.join(REPO_ROOT, 'benchmarks', 'official_c2dsr.py'), '--official_dir',
                      ns.official_dir, '--dataset', ns.dataset, '--threads', str(ns.threads)]
                     + (['--epoch'] if full else []) + extra)
    load.append(os.getloadavg())
    for m in models:
        runs[m].append(child(me + ['--ours', m]))
    load.append(os.getloadavg())
    off_epoch = official['epoch_s_measured'] if full else official['epoch_s_est']
    rows = {'official': row(official, off_epoch)}
    for m in models:
        ep = [epoch_of(r, full) for r in runs[m]]
        rows[m] = row(runs[m][0], statistics.mean(ep), epoch_s_runs=ep,
                      eval_s=statistics.mean(r['eval_s'] for r in runs[m]) if ns.eval else None)
    res = {'cpu': cpu_model(), 'threads': ns.threads, 'full_epochs': full, 'load_avg_1_5_15': load,
           'command': 'benchmarks/bench_c2dsr.py ' + ' '.join(
               a for a in (argv if argv is not None else sys.argv[1:])
               if a != ns.official_dir and not a.startswith('--official_dir')),
           'summary': rows, 'official': official, 'ours': runs}
    for m in models:
        res[f'epoch_ratio_official_over_{m}'] = off_epoch / rows[m]['epoch_s']
        if ns.eval:
            res[f'eval_ratio_official_over_{m}'] = official['eval_s'] / rows[m]['eval_s']
    if len(models) > 1:
        res[f'epoch_ratio_{models[1]}_over_{models[0]}'] = rows[models[1]]['epoch_s'] / rows[models[0]]['epoch_s']
    print(json.dumps({k: v for k, v in res.items() if k not in ('official', 'ours')}))
    if ns.json_out:
        from recbole_ortho.quick_start import write_json_atomic
        write_json_atomic(ns.json_out, res)


if __name__ == '__main__':
    main()
