#!/usr/bin/env python
"""Does ``torch.compile`` speed up a training step on this CPU? Measured, not assumed.

    .venv/bin/python benchmarks/bench_compile.py --models ABXI,ABXI_GCA --pairs 8 --threads 2 \
        --json_out results/speed_compile_cpu.json

Per model (Food-Kitchen, yaml defaults, fp32): two copies with the same weights, one eager and
one whose ``calculate_loss`` is wrapped by ``torch.compile(..., dynamic=True)`` (inductor; the
batches' packed shapes change from batch to batch, hence dynamic shapes). The compiled copy
first takes ``--warmup`` steps, timed apart (compilation and recompilations happen there); then
both take training steps alternating on the same batches. Reported: the warm-up time, the
median step of each, the median over pairs of compiled / eager, the graph breaks and
recompilations dynamo counted, and the largest difference of the two copies' losses at the
first timed step (the same weights and batch: it should be rounding only).
"""

import argparse
import copy
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_abxi import machine_facts  # noqa: E402


def measure(model_name, args):
    import torch
    import torch._dynamo
    from torch._dynamo.utils import counters
    from recbole.utils import init_seed
    from recbole_ortho.config import Config
    from recbole_ortho.data import create_dataset, data_preparation
    from recbole_ortho.model.registry import get_model
    from recbole_ortho.quick_start import build_model
    from recbole_ortho.trainer import CDSRTrainer
    config = Config(model=model_name, dataset=args.dataset, config_dict={
        'show_progress': False, 'save_model': False, 'state': 'WARNING', 'threads': args.threads})
    init_seed(config['seed'], config['reproducibility'])
    data = create_dataset(config)
    train, _, _ = data_preparation(config, data, getattr(get_model(model_name), 'train_format', 'prefix'))
    eager, _ = build_model(config, data)
    comp = copy.deepcopy(eager)
    opt = {'eager': CDSRTrainer(config, eager, data).optimizer, 'compiled': CDSRTrainer(config, comp, data).optimizer}
    torch._dynamo.reset()
    counters.clear()
    loss_fn = {'eager': eager.calculate_loss, 'compiled': torch.compile(comp.calculate_loss, dynamic=True)}
    batches = [b for _, b in zip(range(args.warmup + args.pairs + 2), train)]
    out = {'model': model_name}

    def step(kind, batch):
        t = time.perf_counter()
        opt[kind].zero_grad(set_to_none=True)
        loss = loss_fn[kind](batch)
        loss.backward()
        opt[kind].step()
        return time.perf_counter() - t, float(loss)

    t0 = time.perf_counter()
    try:
        for b in batches[:args.warmup]:
            step('compiled', b)
    except Exception as e:            # report what failed instead of a number
        out['error'] = f'{type(e).__name__}: {str(e).splitlines()[0][:300]}'
        return out
    out['warmup_steps'], out['warmup_s'] = args.warmup, time.perf_counter() - t0
    comp.load_state_dict(eager.state_dict())             # same weights again for the timed pairs
    times, first_diff = {'eager': [], 'compiled': []}, None
    for k, b in enumerate(batches[args.warmup:args.warmup + args.pairs]):
        res = {}
        for kind in (('eager', 'compiled') if k % 2 == 0 else ('compiled', 'eager')):
            torch.manual_seed(1000 + k)                  # the same negatives and dropout draws for both
            res[kind] = step(kind, b)
            times[kind].append(res[kind][0])
        if first_diff is None:
            first_diff = abs(res['eager'][1] - res['compiled'][1])
    ratios = [c / e for c, e in zip(times['compiled'], times['eager'])]
    out.update(pairs=len(ratios), eager_s_median=statistics.median(times['eager']),
               compiled_s_median=statistics.median(times['compiled']), pair_ratio_median=statistics.median(ratios),
               first_loss_abs_diff=first_diff,
               graph_breaks=int(sum(counters['graph_break'].values())),
               unique_graphs=int(counters['stats'].get('unique_graphs', 0)),
               recompilations=int(counters['recompiles'].get('total', 0)) if 'recompiles' in counters else None)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--models', default='ABXI,ABXI_GCA')
    p.add_argument('--pairs', type=int, default=8)
    p.add_argument('--warmup', type=int, default=4, help='untimed compiled steps before the pairs (compilation)')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--dataset', default='food_kitchen')
    p.add_argument('--json_out')
    args = p.parse_args()
    sys.argv = [sys.argv[0]]
    import torch
    torch.set_num_threads(args.threads)
    results = dict(machine_facts(args.threads), torch=torch.__version__, dataset=args.dataset, precision='fp32', models={})
    for m in args.models.split(','):
        r = measure(m, args)
        results['models'][m] = r
        print(r, file=sys.stderr, flush=True)
    print('| model | warm-up (s) | eager step | compiled step | compiled / eager | graph breaks |')
    print('|---|---:|---:|---:|---:|---:|')
    for m, r in results['models'].items():
        if 'error' in r:
            print(f"| {m} | failed: {r['error']} | | | | |")
        else:
            print(f"| {m} | {r['warmup_s']:.1f} | {r['eager_s_median']:.3f} s | {r['compiled_s_median']:.3f} s | "
                  f"{r['pair_ratio_median']:.3f} | {r['graph_breaks']} |")
    if args.json_out:
        from recbole_ortho.quick_start import write_json_atomic
        write_json_atomic(args.json_out, results)


if __name__ == '__main__':
    main()
