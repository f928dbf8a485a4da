#!/usr/bin/env python
"""Speed and memory of CDSRNP and CDSRNP_GCA on Food-Kitchen beside ABXI (no official CDSRNP code
exists, so this package's own models are the anchors), on this machine, in one run:

    .venv/bin/python benchmarks/bench_cdsrnp.py --threads 2 --batches 8 --pairs 24 \
        [--full_epoch] [--set '{"ce_negatives": 1024}'] [--json_out results/speed_cdsrnp_cpu.json]

1. Each model of ``--models`` (default ABXI, CDSRNP, CDSRNP_GCA) runs in its own subprocess
   (``benchmarks/bench_abxi.py --worker``, so the peak RSS is that model's) with its yaml
   defaults (``--set`` adds settings to the CDSRNP runs): median training step (forward, loss,
   backward, optimizer step), the epoch it implies (or one measured epoch with ``--full_epoch``),
   one full validation pass (7,144 users x 1,000 candidates) and the peak RSS.
2. CDSRNP_GCA / CDSRNP step-time ratio in **one process**: both models built on the same data
   (the shared weights equal), their training steps alternating on the same batches (A B, B A,
   ...), the median of the ``--pairs`` per-pair ratios, so the machine's drift hits both alike.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'benchmarks'))


def _worker(model, args, env, extra):
    cmd = [sys.executable, os.path.join(REPO, 'benchmarks', 'bench_abxi.py'), '--worker', '--model', model,
           '--batches', str(args.batches), '--threads', str(args.threads), '--dataset', args.dataset,
           '--config_json', json.dumps(extra)]
    if args.full_epoch:
        cmd.append('--full_epoch')
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f'{model} failed:\n{r.stderr[-3000:]}')
    return json.loads(r.stdout.strip().splitlines()[-1])


def gca_pairs(args, extra):
    """Interleaved training steps of CDSRNP and CDSRNP_GCA in this process; per-pair ratios."""
    import torch
    sys.argv = [sys.argv[0]]
    torch.set_num_threads(args.threads)
    from recbole.utils import init_seed
    from recbole_ortho.config import Config
    from recbole_ortho.data import create_dataset, data_preparation
    from recbole_ortho.model.registry import get_model
    models, opts = {}, {}
    for name in ('CDSRNP', 'CDSRNP_GCA'):
        config = Config(model=name, dataset=args.dataset, config_dict=dict(
            {'show_progress': False, 'save_model': False, 'state': 'WARNING', 'threads': args.threads}, **extra))
        init_seed(config['seed'], config['reproducibility'])
        data = create_dataset(config)
        train, _, _ = data_preparation(config, data, 'per_user')
        init_seed(config['seed'], config['reproducibility'])
        models[name] = get_model(name)(config, data)
        opts[name] = torch.optim.Adam(models[name].parameters(), lr=config['learning_rate'],
                                      weight_decay=config['weight_decay'])
    models['CDSRNP_GCA'].load_state_dict(models['CDSRNP'].state_dict(), strict=False)
    from bench_abxi import alternating_steps
    times = alternating_steps(models, opts, list(train), args.pairs)
    ratios = [g / b for g, b in zip(times['CDSRNP_GCA'], times['CDSRNP'])]
    return {'pairs': len(ratios), 'cdsrnp_s_median': statistics.median(times['CDSRNP']),
            'cdsrnp_gca_s_median': statistics.median(times['CDSRNP_GCA']),
            'pair_ratio_median': statistics.median(ratios), 'pair_ratios': ratios}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--models', default='ABXI,CDSRNP,CDSRNP_GCA')
    p.add_argument('--batches', type=int, default=8, help='training steps timed per model (the first left out)')
    p.add_argument('--pairs', type=int, default=24, help='interleaved CDSRNP / CDSRNP_GCA step pairs (0: skip)')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--full_epoch', action='store_true', help='also time one whole training epoch per model')
    p.add_argument('--set', default='{}', help='JSON settings added to the CDSRNP runs, e.g. {"ce_negatives": 1024}')
    p.add_argument('--common', default='{}', help='JSON settings added to every run (e.g. data_path, cache_dir)')
    p.add_argument('--dataset', default='food_kitchen')
    p.add_argument('--json_out')
    args = p.parse_args()
    common = json.loads(args.common)
    extra = dict(common, **json.loads(args.set))
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    from bench_abxi import _matmul_gflops
    results = {'dataset': args.dataset, 'threads': args.threads, 'settings': extra, 'matmul_gflops_fp32': _matmul_gflops(args.threads),
               'runs': []}
    for model in args.models.split(','):
        res = _worker(model, args, env, extra if model.startswith('CDSRNP') else common)
        results['runs'].append(res)
        print(json.dumps({k: v for k, v in res.items() if k != 'step_s_all'}), file=sys.stderr)
    if args.pairs:
        results['gca_pairs'] = gca_pairs(args, extra)
    lines = ['| model | params | step (median) | epoch | eval pass | peak RSS |', '|---|---:|---:|---:|---:|---:|']
    for r in results['runs']:
        ep = r.get('epoch_s_measured')
        ep = f'{ep:.1f} s (measured)' if ep else f"{r['epoch_s_est']:.1f} s ({r['batches_per_epoch']} x step)"
        lines.append(f"| {r['model']} | {r['n_params']:,} | {r['step_s_median']:.3f} s | {ep} | {r['eval_s']:.2f} s | "
                     f"{r['peak_rss_mb']:.0f} MB |")
    print('\n'.join(lines))
    if 'gca_pairs' in results:
        g = results['gca_pairs']
        print(f"CDSRNP_GCA / CDSRNP step, {g['pairs']} interleaved pairs in one process: median ratio "
              f"{g['pair_ratio_median']:.3f} (CDSRNP {g['cdsrnp_s_median']:.3f} s, CDSRNP_GCA "
              f"{g['cdsrnp_gca_s_median']:.3f} s)")
    print(f"fp32 matmul throughput ({args.threads} threads): {results['matmul_gflops_fp32']:.0f} GFLOP/s")
    if args.json_out:
        from recbole_ortho.quick_start import write_json_atomic
        write_json_atomic(args.json_out, results)


if __name__ == '__main__':
    main()
