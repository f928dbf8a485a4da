#!/usr/bin/env python
"""The speed table of every model in fp32 and bf16 on the machine at hand: the one prepared script
for a lent GPU (it runs on a CPU too, which is how CI tests it).

    .venv/bin/python benchmarks/bench_device.py --json_out results/speed_<gpu>_device.json

Per model and precision, a separate process (its own peak memory) builds the model as
``run_recbole_ortho.py`` does (yaml defaults, Food-Kitchen; ``precision`` set, ``device`` the GPU
when there is one) and measures, with the device synchronised around each timing:

- the median of ``--steps`` training steps (the trainer's own step: autocast under bf16, backward,
  optimizer; the first step left out), the epoch they imply, and one measured full epoch
  (``trainer._train_epoch``);
- one evaluation pass (the trainer's evaluator on the validation split, the model's protocol);
- peak memory: ``torch.cuda.max_memory_allocated`` on a GPU, the peak RSS on a CPU;
- a profile of ``--profile_steps`` training steps: the top operators by self time (the device's on
  a GPU) and the share of the matrix products, i.e. what limits a bf16 step once the products run
  on bf16 hardware;
- the device's seconds per converged run: (epoch + evaluation pass) x the epochs to the best
  epoch that the converged runs of the study store (``--study_store``) took for that model, where
  it has them.

The precision that actually ran is recorded (``bf16`` falls back to fp32 on a CPU without bf16
hardware, with one warning), with the device's name, the CPU model and torch's version. A
failure of one combination is recorded in its row (``error``) and the others go on.
"""

import argparse
import glob
import json
import os
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = 'ABXI,ABXI_GCA,LLM4CDSR,LLM4CDSR_GCA,CDSRNP,CDSRNP_GCA,C2DSR,C2DSR_GCA'


def epochs_to_best(store_glob, model):
    """Mean ``best_epoch + 1`` of the runs of ``model`` (not parameter-matched) that early stopping
    ended, in the run stores matching ``store_glob``; None without any."""
    eps = []
    for path in glob.glob(os.path.join(store_glob, 'runs', '*', 'result.json')):
        with open(path) as fh:
            r = json.load(fh)
        if r.get('model') == model and not r.get('param_match') and r.get('stop_reason') == 'early_stopping':
            eps.append(r['best_epoch'] + 1)
    return (statistics.mean(eps), len(eps)) if eps else (None, 0)


#: the matrix-product operators of a profile (what bf16 hardware speeds up); the rest is what
#: limits a bf16 step once the products are fast
MATMUL_OPS = ('aten::mm', 'aten::addmm', 'aten::addmm_', 'aten::bmm', 'aten::baddbmm', 'aten::baddbmm_',
              'aten::addbmm', 'aten::addbmm_', 'aten::matmul', 'aten::linear',
              'aten::_scaled_dot_product_flash_attention', 'aten::_scaled_dot_product_efficient_attention',
              'aten::_scaled_dot_product_flash_attention_for_cpu', 'aten::mkldnn_matmul')


def summarise_profile(events, device_time, top=12):
    """``{'total_ms', 'matmul_share', 'products_only_bound', 'top': [{'op', 'self_ms', 'calls', 'share'}]}``
    of profiler ``events`` (``key_averages()``): self time per operator (the device's where
    ``device_time``). ``products_only_bound`` = 1 / (1 - matmul_share): the most the step could
    speed up if only the matrix products got faster (Amdahl), however fast they got."""
    def t(e):
        return (getattr(e, 'self_device_time_total', 0) or getattr(e, 'self_cuda_time_total', 0)) if device_time \
            else e.self_cpu_time_total
    evs = [e for e in events if t(e) > 0]
    total = sum(t(e) for e in evs)
    mm = sum(t(e) for e in evs if e.key in MATMUL_OPS)
    evs.sort(key=lambda e: -t(e))
    share = mm / total if total else None
    return {'total_ms': total / 1e3, 'matmul_share': share,
            'products_only_bound': 1 / (1 - share) if share is not None and share < 1 else None,
            'top': [{'op': e.key, 'self_ms': t(e) / 1e3, 'calls': e.count, 'share': t(e) / total} for e in evs[:top]]}


def cycle(loader, dev):
    """The loader's batches on ``dev``, started again at its end (a benchmark may take more steps
    than one epoch has)."""
    while True:
        for batch in loader:
            yield batch.to(dev)


def train_step(model, trainer, batch, dev):
    """One training step as the trainer takes it: autocast in its precision, backward, optimizer."""
    from recbole_ortho.utils.precision import autocast
    trainer.optimizer.zero_grad(set_to_none=True)
    with autocast(trainer.precision, dev):
        loss = model.calculate_loss(batch)
    loss.backward()
    trainer.optimizer.step()


def step_profile(model, trainer, batches, dev, steps):
    """The top operators of ``steps`` training steps (from ``batches``) under torch's profiler
    (self time; on a GPU the device's), and the share of the matrix products in it."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    cuda = torch.device(dev).type == 'cuda'
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            train_step(model, trainer, next(batches), dev)
        if cuda:
            torch.cuda.synchronize()
    return summarise_profile(prof.key_averages(), device_time=cuda)


def worker(args):
    import torch
    sys.argv = [sys.argv[0]]
    from bench_abxi import bench_setup
    from recbole_ortho.trainer import CDSRTrainer
    from recbole_ortho.utils.provenance import cpu_model
    torch.set_num_threads(args.threads)
    settings = dict({'threads': args.threads, 'precision': args.precision}, **json.loads(args.config_json or '{}'))
    config, data, (train, valid, _), model, info = bench_setup(args.model, args.dataset, settings)
    trainer = CDSRTrainer(config, model, data)
    dev = trainer.device
    cuda = torch.device(dev).type == 'cuda'

    def sync():
        if cuda:
            torch.cuda.synchronize()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    batches, times = cycle(train, dev), []
    model.train()
    for k in range(args.steps + 1):
        batch = next(batches)
        sync()
        t = time.perf_counter()
        train_step(model, trainer, batch, dev)
        sync()
        times.append(time.perf_counter() - t)
    step = statistics.median(times[1:])
    profile = step_profile(model, trainer, batches, dev, args.profile_steps) if args.profile_steps else None
    sync()
    t = time.perf_counter()
    trainer._train_epoch(train, 0)
    sync()
    epoch = time.perf_counter() - t
    t = time.perf_counter()
    trainer.evaluator.evaluate(model, valid)
    sync()
    ev = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({'model': args.model, 'precision_requested': args.precision, 'precision': trainer.precision,
                      'device': torch.cuda.get_device_name(0) if cuda else cpu_model(), 'n_params': info['n_params'],
                      'step_s_median': step, 'batches_per_epoch': len(train), 'epoch_s_est': step * len(train),
                      'epoch_s': epoch, 'eval_s': ev, 'peak_mem_mb': peak,
                      'peak_mem_kind': 'cuda max_memory_allocated' if cuda else 'process peak RSS',
                      'profile': profile}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--models', default=MODELS)
    p.add_argument('--precisions', default='fp32,bf16')
    p.add_argument('--steps', type=int, default=10, help='timed training steps (after one untimed)')
    p.add_argument('--threads', type=int, default=2, help='CPU threads (a GPU run uses them for data work)')
    p.add_argument('--dataset', default='food_kitchen')
    p.add_argument('--config_json', help='extra settings for every model (JSON), e.g. a data_path')
    p.add_argument('--study_store', default=os.path.join(REPO, 'results', 'sweeps', 'food_kitchen_study_*'),
                   help='run stores (a glob) whose converged runs give the epochs to the best epoch')
    p.add_argument('--timeout', type=int, default=1800, help='seconds per model and precision')
    p.add_argument('--profile_steps', type=int, default=2,
                   help='training steps under the profiler (top operators, matmul share; 0: none)')
    p.add_argument('--json_out')
    p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--model', help=argparse.SUPPRESS)
    p.add_argument('--precision', help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    import torch
    from recbole_ortho.utils.provenance import cpu_model, provenance
    results = {'provenance': provenance(device='cuda' if torch.cuda.is_available() else 'cpu'), 'torch': torch.__version__, 'cpu': cpu_model(), 'cuda': torch.cuda.is_available(),
               'gpu': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
               'dataset': args.dataset, 'steps': args.steps, 'runs': []}
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    for model in args.models.split(','):
        best, n_best = epochs_to_best(args.study_store, model)
        for prec in args.precisions.split(','):
            cmd = [sys.executable, __file__, '--worker', '--model', model, '--precision', prec, '--steps',
                   str(args.steps), '--threads', str(args.threads), '--dataset', args.dataset,
                   '--profile_steps', str(args.profile_steps)] + \
                  (['--config_json', args.config_json] if args.config_json else [])
            try:
                r = subprocess.run(cmd, cwd=os.getcwd(), env=env, capture_output=True, text=True, timeout=args.timeout)
                row = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else \
                    {'model': model, 'precision_requested': prec, 'error': r.stderr.strip().splitlines()[-1][:300]}
            except subprocess.TimeoutExpired:
                row = {'model': model, 'precision_requested': prec, 'error': f'timed out after {args.timeout} s'}
            row['epochs_to_best'], row['converged_runs_behind_it'] = best, n_best
            if best is not None and 'epoch_s' in row:
                row['device_s_per_converged_run'] = best * (row['epoch_s'] + row['eval_s'])
            results['runs'].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"{results['gpu'] or results['cpu']}, torch {results['torch']}")
    print('| model | precision (ran) | step | epoch | eval pass | peak memory | device s / converged run | '
          'matmul share of a step | step speed-up bound, products only | top operator besides the products |')
    print('|---|---|---:|---:|---:|---:|---:|---:|---:|---|')
    for r in results['runs']:
        if 'error' in r:
            print(f"| {r['model']} | {r['precision_requested']} | failed: {r['error']} | | | | | | | |")
            continue
        conv = f"{r['device_s_per_converged_run']:.0f}" if r.get('device_s_per_converged_run') else 'n/a'
        prof = r.get('profile') or {}
        share = f"{prof['matmul_share']:.0%}" if prof.get('matmul_share') is not None else 'n/a'
        bound = f"{prof['products_only_bound']:.2f}x" if prof.get('products_only_bound') else 'n/a'
        other = next((f"{o['op']} ({o['share']:.0%})" for o in prof.get('top', []) if o['op'] not in MATMUL_OPS), 'n/a')
        print(f"| {r['model']} | {r['precision_requested']} ({r['precision']}) | {r['step_s_median']:.3f} s | "
              f"{r['epoch_s']:.1f} s | {r['eval_s']:.2f} s | {r['peak_mem_mb']:,.0f} MB | {conv} | {share} | {bound} | {other} |")
    if args.json_out:
        from recbole_ortho.quick_start import write_json_atomic
        write_json_atomic(args.json_out, results)


if __name__ == '__main__':
    main()
