"""Run a resumable sweep of recbole_ortho runs (datasets x models x grid x seeds).

    python run_sweep.py properties/sweep/food_kitchen_abxi.yaml --sweep_dir=sweeps/fk [--workers=2 --threads=1]

A run that finished is never run again: run the same command to resume after an interruption;
--retry_failed runs the failed ones again. Results: <sweep_dir>/runs/<run_id>/result.json.
"""

import argparse
import json
import sys

from recbole_ortho.sweep import run_sweep


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('spec', help='sweep spec (yaml), e.g. properties/sweep/food_kitchen_abxi.yaml')
    p.add_argument('--sweep_dir', required=True, help='folder of the run store (created if missing)')
    p.add_argument('--engine', default='local', choices=['local', 'ray'])
    p.add_argument('--ray_address', default=None, help='ray engine: an existing cluster (auto, host:port); '
                   'default: a local one')
    p.add_argument('--num_cpus', type=int, default=None, help='ray engine: CPUs of the local cluster')
    p.add_argument('--cpus_per_trial', type=float, default=1, help='ray engine: CPUs per trial (= its torch threads)')
    p.add_argument('--gpus_per_trial', type=float, default=0, help='ray engine: GPUs per trial (0.25: four share one)')
    p.add_argument('--workers', type=int, default=1, help='trials at a time')
    p.add_argument('--threads', type=int, default=1, help='torch threads per trial')
    p.add_argument('--retry_failed', action='store_true', help='run the failed runs again')
    p.add_argument('--data_path', default=None, help='datasets folder (default: data_path of the config)')
    p.add_argument('--no_progress', action='store_true')
    a = p.parse_args(argv)
    try:
        engine_args = {} if a.engine == 'local' else {
            'ray_address': a.ray_address, 'num_cpus': a.num_cpus, 'cpus_per_trial': a.cpus_per_trial,
            'gpus_per_trial': a.gpus_per_trial, 'max_concurrent': a.workers if a.workers > 1 else None}
        summary = run_sweep(a.spec, a.sweep_dir, engine=a.engine, workers=a.workers, threads=a.threads,
                            retry_failed=a.retry_failed, show_progress=not a.no_progress, data_path=a.data_path,
                            **engine_args)
    except KeyboardInterrupt as e:
        print(f'interrupted: {e}', file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if k != 'failed'}, indent=1))
    for rid, msg in summary['failed'].items():
        print(f'failed: {rid}: {msg}', file=sys.stderr)
    return 1 if summary['failed'] else 0


if __name__ == '__main__':
    sys.exit(main())
