#!/usr/bin/env python
"""Speed of ABXI and ABXI_GCA on Food-Kitchen, optionally side by side with the official code.

    .venv/bin/python benchmarks/bench_abxi.py --batches 10 --threads 2 \
        [--official_dir /path/to/ABXI-checkout --official_batches 3] [--json_out bench.json]

Each model runs in its own subprocess (so the peak RSS is that model's): it builds the dataset
(cached), the model with its yaml defaults (Food-Kitchen: d 256, 1 block, 2 heads, rd 16,
ri 64, batch 256, 128 + 128 negatives), and times ``--batches`` training steps
(forward + loss + backward + optimizer step, the first one left out as warm-up) and
``--eval_passes`` full validation passes (7,144 users x 1,000 candidates; the median is reported,
the official code's likewise). Reported: median step time, the epoch time
it implies (28 batches) and one measured full epoch with ``--full_epoch``, evaluation time,
peak RSS, parameters, and the fraction of the machine's fp32 matmul throughput achieved
(model FLOPs of a step counted by torch's FlopCounterMode / step time, against a measured
2-thread 4096^3 matmul). With ``--official_dir`` the official code is timed in the same run
by ``benchmarks/official_abxi.py`` and the epoch-time ratio is printed.

With ``--compare_dir OTHER`` (another checkout of this repository, e.g. a ``git worktree`` of an
earlier commit) the training step of each model is timed in both trees, alternating the two
processes ``--rounds`` times, and the medians over rounds of the step-time ratios (this tree /
OTHER; wall clock and process CPU time, the latter less sensitive to a shared machine) are
printed: a refactoring's cost measured in one run::

    git worktree add ../base <commit>
    .venv/bin/python benchmarks/bench_abxi.py --compare_dir ../base --rounds 5 --batches 8 --threads 2

With ``--interleave`` as well, both trees run in *one* process: OTHER's package is copied to a
temporary folder under another name (``recbole_ortho_other``), both models are built with the
same weights on the same batches, and their training steps alternate (A B, B A, ...), so the
machine's drift hits both equally; the median of the per-pair ratios is printed. ``--dataset`` and
``--config_json`` apply to both. The result file names each tree by its commit, never by its path.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def machine_facts(threads):
    """What every benchmark file records beside its timings: the code's provenance (commit), the CPU
    model, whether it has bf16 hardware (``avx512_bf16``/``amx_bf16``), and the fp32 and bf16 matmul
    rates measured now."""
    from recbole_ortho.utils.precision import bf16_supported
    from recbole_ortho.utils.provenance import cpu_model, provenance
    return {'provenance': provenance(device='cpu'),
            'cpu': cpu_model(), 'cpu_bf16_hardware': bool(bf16_supported('cpu')), 'threads': threads,
            'matmul_gflops_fp32': _matmul_gflops(threads), 'matmul_gflops_bf16': _matmul_gflops(threads, dtype='bf16')}


def bench_setup(model, dataset, settings):
    """What a benchmark builds for ``model``, as ``run_recbole_ortho.py`` does: the config (quiet,
    no checkpoint; ``settings`` on top), the seed, the dataset, its splits in the model's training
    format and the model. Returns ``(config, data, (train, valid, test), model, info)``."""
    from recbole.utils import init_seed
    from recbole_ortho.config import Config
    from recbole_ortho.data import create_dataset, data_preparation
    from recbole_ortho.model.registry import get_model
    from recbole_ortho.quick_start import build_model
    config = Config(model=model, dataset=dataset,
                    config_dict=dict({'show_progress': False, 'save_model': False, 'state': 'WARNING'}, **settings))
    init_seed(config['seed'], config['reproducibility'])
    data = create_dataset(config)
    splits = data_preparation(config, data, getattr(get_model(model), 'train_format', 'prefix'))
    net, info = build_model(config, data)
    return config, data, splits, net, info


def _matmul_gflops(threads, n=2048, reps=5, dtype='fp32'):
    import torch
    torch.set_num_threads(threads)
    dt = torch.bfloat16 if dtype == 'bf16' else torch.float32
    a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
    a @ b
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(ts) / 1e9


def _use_tree(tree):
    """Import recbole_ortho from ``tree`` instead of this checkout: put it first on sys.path and
    drop setuptools' editable-install finders (they would map recbole_ortho.properties back to
    this checkout)."""
    tree = os.path.abspath(tree)
    sys.path.insert(0, tree)
    sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in getattr(f, '__module__', '') +
                        getattr(f, '__name__', '') + type(f).__name__]
    import recbole_ortho
    if not os.path.abspath(recbole_ortho.__file__).startswith(tree + os.sep):
        sys.exit(f'recbole_ortho was imported from {recbole_ortho.__file__}, not from {tree}')
    return recbole_ortho.__file__


def worker(args):
    imported_from = _use_tree(args.tree) if args.tree else None
    import torch
    sys.argv = [sys.argv[0]]
    from recbole.utils import init_seed
    from recbole_ortho.config import Config
    from recbole_ortho.data import create_dataset, data_preparation
    from recbole_ortho.quick_start import build_model
    from recbole_ortho.trainer import CDSRTrainer

    torch.set_num_threads(args.threads)
    cfg = {'show_progress': False, 'save_model': False, 'state': 'WARNING', 'threads': args.threads}
    if args.param_match:
        cfg['param_match'] = args.param_match
    cfg.update(json.loads(args.config_json or '{}'))
    config = Config(model=args.model, dataset=args.dataset, config_dict=cfg)
    init_seed(config['seed'], config['reproducibility'])
    data = create_dataset(config)
    train, valid, _ = data_preparation(config, data, 'per_user')
    model, info = build_model(config, data)
    trainer = CDSRTrainer(config, model, data)
    it = iter(train)
    step_times, cpu_times = [], []
    model.train()
    from torch.utils.flop_counter import FlopCounterMode
    flops = None
    for k in range(args.batches):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(train)
            batch = next(it)
        t, c = time.perf_counter(), time.process_time()
        trainer.optimizer.zero_grad(set_to_none=True)
        if k == 1:
            with FlopCounterMode(display=False) as fc:
                loss = model.calculate_loss(batch)
                loss.backward()
            flops = fc.get_total_flops()
        else:
            loss = model.calculate_loss(batch)
            loss.backward()
        trainer.optimizer.step()
        step_times.append(time.perf_counter() - t)
        cpu_times.append(time.process_time() - c)
    steps = step_times[1:] if len(step_times) > 2 else step_times
    steps_no_fc = [s for i, s in enumerate(step_times) if i not in (0, 1)] or steps
    med = statistics.median(steps_no_fc)
    cpu_no_fc = [s for i, s in enumerate(cpu_times) if i not in (0, 1)] or cpu_times
    out = {'model': args.model, 'n_params': info['n_params'], 'threads': args.threads,
           'step_s_median': med, 'step_cpu_s_median': statistics.median(cpu_no_fc), 'step_s_all': step_times, 'batches_per_epoch': len(train),
           'epoch_s_est': med * len(train), 'step_gflop': flops / 1e9 if flops else None}
    if imported_from:
        out['imported_from'] = imported_from
        from recbole_ortho.utils import properties_dir
        out['properties_dir'] = properties_dir()
    if args.no_eval:
        out['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(out))
        return
    if args.full_epoch:
        t = time.perf_counter()
        trainer._train_epoch(train, 0)
        out['epoch_s_measured'] = time.perf_counter() - t
    passes = []
    for _ in range(args.eval_passes):
        t = time.perf_counter()
        trainer.evaluator.evaluate(model, valid)
        passes.append(time.perf_counter() - t)
    out['eval_s'], out['eval_s_all'] = statistics.median(passes), passes
    if 'param_match' in info:
        out['param_match'] = info['param_match']
    out['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--models', default='ABXI,ABXI_GCA')
    p.add_argument('--batches', type=int, default=10)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--full_epoch', action='store_true')
    p.add_argument('--official_dir', default=os.environ.get('ABXI_OFFICIAL_DIR'))
    p.add_argument('--official_batches', type=int, default=3)
    p.add_argument('--eval_passes', type=int, default=3,
                   help='evaluation passes timed per model and for the official code; the median is reported')
    p.add_argument('--json_out')
    p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--model', help=argparse.SUPPRESS)
    p.add_argument('--param_match', help=argparse.SUPPRESS)
    p.add_argument('--tree', help=argparse.SUPPRESS)
    p.add_argument('--config_json', help='settings (a JSON object) given to every model of ours, e.g. paths')
    p.add_argument('--dataset', default='food_kitchen', help='dataset of our models (the official code: Food-Kitchen)')
    p.add_argument('--no_eval', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--compare_dir', help='another checkout of this repository: time both trees side by side')
    p.add_argument('--rounds', type=int, default=5, help='alternations of the two trees with --compare_dir')
    p.add_argument('--interleave', action='store_true', help='with --compare_dir: both trees in one process')
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if args.compare_dir and args.interleave:
        return interleave(args)
    if args.compare_dir:
        return compare(args)

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    results = dict(machine_facts(args.threads), runs=[])
    runs = [(m, None) for m in args.models.split(',')]
    if 'ABXI' in args.models.split(',') and 'ABXI_GCA' in args.models.split(','):
        runs.append(('ABXI', 'ABXI_GCA'))
    for model, pm in runs:
        cmd = [sys.executable, __file__, '--worker', '--model', model, '--batches', str(args.batches),
               '--threads', str(args.threads), '--eval_passes', str(args.eval_passes), '--dataset', args.dataset]
        cmd += (['--config_json', args.config_json] if args.config_json else []) + \
            (['--full_epoch'] if args.full_epoch else []) + (['--param_match', pm] if pm else [])
        r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        if r.returncode:
            sys.exit(f'{model} failed:\n{r.stderr[-3000:]}')
        res = json.loads(r.stdout.strip().splitlines()[-1])
        if pm:
            res['model'] = f'ABXI (param-matched to {pm})'
        if res.get('step_gflop'):
            res['matmul_fraction'] = res['step_gflop'] / res['step_s_median'] / results['matmul_gflops_fp32']
        results['runs'].append(res)
        print(json.dumps(res), file=sys.stderr)
    if args.official_dir:
        cmd = [sys.executable, os.path.join(REPO, 'benchmarks', 'official_abxi.py'), '--official_dir',
               args.official_dir, '--batches', str(args.official_batches), '--threads', str(args.threads), '--eval',
               '--eval_passes', str(args.eval_passes)]
        r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        if r.returncode:
            sys.exit(f'official run failed:\n{r.stderr[-3000:]}')
        off = json.loads(r.stdout.strip().splitlines()[-1])
        results['official'] = off
    # table
    lines = ['| model | params | step (median) | epoch (28 batches) | eval pass | peak RSS | GFLOP/step | matmul share |',
             '|---|---:|---:|---:|---:|---:|---:|---:|']
    for r in results['runs']:
        ep = r.get('epoch_s_measured', r['epoch_s_est'])
        lines.append(f"| {r['model']} | {r['n_params']:,} | {r['step_s_median']:.3f} s | {ep:.1f} s | "
                     f"{r['eval_s']:.2f} s | {r['peak_rss_mb']:.0f} MB | {r.get('step_gflop') or 0:.1f} | "
                     f"{100 * r.get('matmul_fraction', 0):.0f} % |")
    if 'official' in results:
        o = results['official']
        lines.append(f"| official ABXI | {o['n_params']:,} | {o['batch_s_median']:.3f} s | {o['epoch_s_est']:.1f} s | "
                     f"{o.get('eval_s') or float('nan'):.2f} s | {o['peak_rss_mb']:.0f} MB | | |")
        base = results['runs'][0]
        results['speedup_epoch_vs_official'] = o['epoch_s_est'] / base.get('epoch_s_measured', base['epoch_s_est'])
        if o.get('eval_s'):
            results['speedup_eval_vs_official'] = o['eval_s'] / base['eval_s']
    names = [r['model'] for r in results['runs']]
    if 'ABXI' in names and 'ABXI_GCA' in names:
        a = results['runs'][names.index('ABXI')]
        g = results['runs'][names.index('ABXI_GCA')]
        results['gca_step_ratio'] = g['step_s_median'] / a['step_s_median']
    print('\n'.join(lines))
    print(f"{results['cpu']} (bf16 hardware: {results['cpu_bf16_hardware']}); matmul throughput ({args.threads} threads): "
          f"fp32 {results['matmul_gflops_fp32']:.0f}, bf16 {results['matmul_gflops_bf16']:.0f} GFLOP/s")
    for k in ('speedup_epoch_vs_official', 'speedup_eval_vs_official', 'gca_step_ratio'):
        if k in results:
            print(f'{k}: {results[k]:.2f}')
    if args.json_out:
        from recbole_ortho.quick_start import write_json_atomic
        write_json_atomic(args.json_out, results)


def _import_other(tree, tmp):
    """Copy ``tree``'s package as ``recbole_ortho_other`` (imports renamed) into ``tmp`` and import it."""
    import re
    import shutil
    dst = os.path.join(tmp, 'recbole_ortho_other')
    shutil.copytree(os.path.join(tree, 'recbole_ortho'), dst, ignore=shutil.ignore_patterns('__pycache__'))
    shutil.copytree(os.path.join(tree, 'properties'), os.path.join(tmp, 'properties'))
    for root, _, files in os.walk(dst):
        for f in files:
            if f.endswith('.py'):
                path = os.path.join(root, f)
                text = open(path).read()
                open(path, 'w').write(re.sub(r'\brecbole_ortho\b', 'recbole_ortho_other', text))
    sys.path.insert(0, tmp)
    import importlib
    return importlib.import_module('recbole_ortho_other')


def alternating_steps(models, opts, batches, n_pairs, warmup=2):
    """Training steps of the two ``models`` (a dict of two) alternating on the same batches (A B, B A,
    ...), ``warmup`` untimed pairs first; returns ``{name: [step seconds]}`` (``n_pairs`` each)."""
    a, b = list(models)
    times = {a: [], b: []}
    for k in range(n_pairs + warmup):
        batch = batches[k % len(batches)]
        for name in ((a, b) if k % 2 == 0 else (b, a)):
            m, opt = models[name], opts[name]
            m.train()
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            m.calculate_loss(batch).backward()
            opt.step()
            if k >= warmup:
                times[name].append(time.perf_counter() - t)
    return times


def interleave(args):
    """Training steps of this tree and ``--compare_dir`` alternating in one process (see module docstring)."""
    import copy
    import tempfile
    import torch
    sys.argv = [sys.argv[0]]
    torch.set_num_threads(args.threads)
    from recbole.utils import init_seed
    from recbole_ortho.config import Config
    from recbole_ortho.data import create_dataset, data_preparation
    from recbole_ortho.model.registry import get_model
    tmp = tempfile.mkdtemp(prefix='bench_other_')
    other_dir = os.path.abspath(args.compare_dir)
    other_pkg = _import_other(other_dir, tmp)
    import importlib
    trees = _tree_commits(other_dir)
    results = dict(machine_facts(args.threads), trees=trees, dataset=args.dataset, models={})
    for model in args.models.split(','):
        config = Config(model=model, dataset=args.dataset, config_dict=dict({
            'show_progress': False, 'save_model': False, 'state': 'WARNING', 'threads': args.threads},
            **json.loads(args.config_json or '{}')))
        init_seed(config['seed'], config['reproducibility'])
        data = create_dataset(config)
        train, _, _ = data_preparation(config, data, 'per_user')
        other_cls = getattr(importlib.import_module(
            f'recbole_ortho_other.model.cross_domain_sequential.{model.lower()}'), model)
        init_seed(config['seed'], config['reproducibility'])
        mine = get_model(model)(config, data)
        init_seed(config['seed'], config['reproducibility'])
        theirs = other_cls(config, data)
        theirs.load_state_dict(copy.deepcopy(mine.state_dict()))
        models = {'this': mine, 'other': theirs}
        opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=3.0) for k, m in models.items()}
        times = alternating_steps(models, opts, list(train), args.batches * args.rounds)
        ratios = [a / b for a, b in zip(times['this'], times['other'])]
        r = {'steps': len(ratios), 'this_s_median': statistics.median(times['this']),
             'other_s_median': statistics.median(times['other']), 'pair_ratio_median': statistics.median(ratios),
             'ratio_of_medians': statistics.median(times['this']) / statistics.median(times['other'])}
        results['models'][model] = r
        print(f"{model}: {r['steps']} steps each, this {r['this_s_median']:.3f} s, other {r['other_s_median']:.3f} s, "
              f"pair ratio median {r['pair_ratio_median']:.3f}", file=sys.stderr)
    print('| model | steps | this tree: step (median) | other tree | ratio this / other (median of pairs) |')
    print('|---|---:|---:|---:|---:|')
    for model, r in results['models'].items():
        print(f"| {model} | {r['steps']} | {r['this_s_median']:.3f} s | {r['other_s_median']:.3f} s | "
              f"{r['pair_ratio_median']:.3f} |")
    print(f"this tree {trees['this']['git_commit'][:7]}, other tree {trees['other']['git_commit'][:7]} "
          f"(imported from {other_pkg.__file__})")
    if args.json_out:
        from recbole_ortho.quick_start import write_json_atomic
        write_json_atomic(args.json_out, results)


def _run_worker(model, args, env, tree=None):
    cmd = [sys.executable, __file__, '--worker', '--model', model, '--batches', str(args.batches),
           '--threads', str(args.threads), '--no_eval'] + (['--tree', tree] if tree else [])
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f'{model} ({tree or REPO}) failed:\n{r.stderr[-3000:]}')
    return json.loads(r.stdout.strip().splitlines()[-1])


def _tree_commits(other):
    """``{'this': {git_commit, git_dirty}, 'other': ...}``: each compared tree by its commit (a result
    file keeps no machine path)."""
    from recbole_ortho.utils.provenance import git_state
    return {name: dict(zip(('git_commit', 'git_dirty'), git_state(os.path.join(d, 'recbole_ortho'))))
            for name, d in (('this', REPO), ('other', other))}


def _inside(path, folder):
    return bool(path) and os.path.realpath(path).startswith(os.path.realpath(folder) + os.sep)


def compare(args):
    """Step times of this tree against ``--compare_dir``, alternating the two (see module docstring)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    other = os.path.abspath(args.compare_dir)
    trees = _tree_commits(other)
    results = dict(machine_facts(args.threads), trees=trees, batches=args.batches, rounds=args.rounds, models={})
    for model in args.models.split(','):
        rows = []
        for k in range(args.rounds):
            order = [None, other] if k % 2 == 0 else [other, None]
            res = {('other' if t else 'this'): _run_worker(model, args, env, t) for t in order}
            ratio = res['this']['step_s_median'] / res['other']['step_s_median']
            cpu_ratio = res['this']['step_cpu_s_median'] / res['other']['step_cpu_s_median']
            rows.append({'this_s': res['this']['step_s_median'], 'other_s': res['other']['step_s_median'],
                         'ratio': ratio, 'this_cpu_s': res['this']['step_cpu_s_median'],
                         'other_cpu_s': res['other']['step_cpu_s_median'], 'cpu_ratio': cpu_ratio,
                         # the other tree's package and property files were the ones used (no path kept)
                         'other_tree_used': _inside(res['other'].get('imported_from'), other)
                         and _inside(res['other'].get('properties_dir'), other)})
            print(f"{model} round {k}: wall this {rows[-1]['this_s']:.3f} s, other {rows[-1]['other_s']:.3f} s, "
                  f"ratio {ratio:.3f}; cpu ratio {cpu_ratio:.3f}", file=sys.stderr)
        results['models'][model] = {'rounds': rows, 'ratio_median': statistics.median(r['ratio'] for r in rows),
                                    'cpu_ratio_median': statistics.median(r['cpu_ratio'] for r in rows),
                                    'this_s_median': statistics.median(r['this_s'] for r in rows),
                                    'other_s_median': statistics.median(r['other_s'] for r in rows)}
    print('| model | this tree: step (median) | other tree | wall ratio this / other | CPU-time ratio |')
    print('|---|---:|---:|---:|---:|')
    for model, r in results['models'].items():
        print(f"| {model} | {r['this_s_median']:.3f} s | {r['other_s_median']:.3f} s | {r['ratio_median']:.3f} | "
              f"{r['cpu_ratio_median']:.3f} |")
    if args.json_out:
        from recbole_ortho.quick_start import write_json_atomic
        write_json_atomic(args.json_out, results)


if __name__ == '__main__':
    main()
