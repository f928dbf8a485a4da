#!/usr/bin/env python
"""What GCA costs in training: the step of each ``<BASE>_GCA`` against its base model's, in one process.

    .venv/bin/python benchmarks/bench_gca_overhead.py --models ABXI,LLM4CDSR,CDSRNP,C2DSR \
        --pairs 8 --threads 2 --json_out results/speed_gca_overhead_cpu.json

For each base model, the base and its ``_GCA`` variant are built on Food-Kitchen with their yaml
defaults (fp32) and take training steps (forward, loss, backward, optimizer step) alternating on
the same batches (A B, B A, ...; two untimed pairs first), so that the machine's drift hits both
alike. Reported per base model: the median step of each and the median over pairs of the ratio
GCA / base (the issue's goal: at most 1.15), and the FLOPs of one step of each (torch's
``FlopCounterMode``: matmuls and attention) with their ratio, the floor of the time ratio at equal
efficiency. The file also records the CPU model, whether it has
bf16 hardware, and the fp32 and bf16 matmul rates measured in the same run.
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_abxi import alternating_steps, machine_facts  # noqa: E402


def pair(base, args):
    """``{'base_s_median', 'gca_s_median', 'pair_ratio_median', 'pairs', ...}`` of ``base`` and ``base_GCA``."""
    import torch
    from recbole.utils import init_seed
    from recbole_ortho.config import Config
    from recbole_ortho.data import create_dataset, data_preparation
    from recbole_ortho.model.registry import get_model
    from recbole_ortho.quick_start import build_model
    from recbole_ortho.trainer import CDSRTrainer
    models, opts, train = {}, {}, None
    for name in (base, f'{base}_GCA'):
        config = Config(model=name, dataset=args.dataset, config_dict={
            'show_progress': False, 'save_model': False, 'state': 'WARNING', 'threads': args.threads})
        init_seed(config['seed'], config['reproducibility'])
        data = create_dataset(config)
        if train is None:
            train, _, _ = data_preparation(config, data, getattr(get_model(name), 'train_format', 'prefix'))
        models[name], info = build_model(config, data)
        opts[name] = CDSRTrainer(config, models[name], data).optimizer
    batches = [b for _, b in zip(range(args.pairs + 2), train)]
    times = alternating_steps(models, opts, batches, args.pairs)
    t_base, t_gca = times[base], times[f'{base}_GCA']
    ratios = [g / b for g, b in zip(t_gca, t_base)]
    flops = {}
    from torch.utils.flop_counter import FlopCounterMode
    for name, m in models.items():                # one more step each, its FLOPs counted (not timed)
        with FlopCounterMode(display=False) as fc:
            m.calculate_loss(batches[0]).backward()
        flops[name] = fc.get_total_flops()
        opts[name].zero_grad(set_to_none=True)
    return {'base': base, 'pairs': len(ratios), 'base_s_median': statistics.median(t_base),
            'gca_s_median': statistics.median(t_gca), 'pair_ratio_median': statistics.median(ratios),
            'base_step_gflop': flops[base] / 1e9, 'gca_step_gflop': flops[f'{base}_GCA'] / 1e9,
            'flop_ratio': flops[f'{base}_GCA'] / flops[base],
            'n_params_base': sum(p.numel() for p in models[base].parameters() if p.requires_grad),
            'n_params_gca': sum(p.numel() for p in models[f'{base}_GCA'].parameters() if p.requires_grad),
            'batch_size': batches[0][models[base].ITEM_SEQ].size(0)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--models', default='ABXI,LLM4CDSR,CDSRNP,C2DSR', help='base models (each with its _GCA)')
    p.add_argument('--pairs', type=int, default=8, help='timed step pairs per base model')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--dataset', default='food_kitchen')
    p.add_argument('--json_out')
    args = p.parse_args()
    sys.argv = [sys.argv[0]]
    import torch
    torch.set_num_threads(args.threads)
    results = dict(machine_facts(args.threads), dataset=args.dataset, precision='fp32', goal_ratio=1.15, models={})
    for base in args.models.split(','):
        r = pair(base, args)
        results['models'][base] = r
        print(f"{base}: base {r['base_s_median']:.3f} s, GCA {r['gca_s_median']:.3f} s, "
              f"GCA / base {r['pair_ratio_median']:.3f} (median of {r['pairs']} pairs); FLOPs {r['base_step_gflop']:.1f} / "
              f"{r['gca_step_gflop']:.1f} GFLOP, ratio {r['flop_ratio']:.3f}", file=sys.stderr, flush=True)
    print(f"{results['cpu']}, {args.threads} threads")
    print('| base model | step, base (median) | step, _GCA (median) | _GCA / base (median of pairs) | FLOP ratio | goal |')
    print('|---|---:|---:|---:|---:|---|')
    for base, r in results['models'].items():
        print(f"| {base} | {r['base_s_median']:.3f} s | {r['gca_s_median']:.3f} s | {r['pair_ratio_median']:.3f} | "
              f"{r['flop_ratio']:.3f} | {'met' if r['pair_ratio_median'] <= results['goal_ratio'] else 'not met'} (<= {results['goal_ratio']}) |")
    if args.json_out:
        from recbole_ortho.quick_start import write_json_atomic
        write_json_atomic(args.json_out, results)


if __name__ == '__main__':
    main()
