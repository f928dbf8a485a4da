#!/usr/bin/env python
"""Training speed of our LLM4CDSR and LLM4CDSR_GCA against the official LLM4CDSR code, in one run.

    LLM4CDSR_OFFICIAL_DIR=../llm4cdsr_official \\
        .venv/bin/python benchmarks/bench_llm4cdsr.py --random_features --rounds 3 \\
            --official_batches 3 --batches 8 --threads 2 [--eval] [--json_out bench.json]

Every measurement is a separate subprocess (so each peak RSS is that code's alone), and the
codes alternate round by round (official, ours, ours-GCA; the next round in reverse order), so a
drift of the machine's load hits all of them alike:

* **official**: ``benchmarks/official_llm4cdsr.py`` (see its docstring: the official code driven by
  import on our Food-Kitchen users and sequences, settings of ``experiments/amazon/llm4cdsr.bash``,
  CPU, ``--num_workers`` 0) times ``--official_batches`` training batches (the first is a warm-up
  and left out), data loading (the official DataLoader's per-sample Python negative sampling and
  padding) timed apart from the step;
* **ours**: a worker of this script builds the model through the package as ``quick_start`` does
  (``Config(model=..., dataset='food_kitchen')`` with its yaml defaults, ``create_dataset``,
  ``data_preparation`` with the model's ``train_format``, ``build_model``, ``CDSRTrainer``) and
  times ``--batches`` steps of the body of ``CDSRTrainer._run_epoch`` (zero_grad, calculate_loss,
  finiteness check, backward, optimizer step, ``.item()``), loading timed apart (our batches are
  precomputed tensors; negatives are drawn inside ``calculate_loss``, so they are in the step).

Per round each code gives the median of its timed batches; reported are the medians over rounds,
the ratio official / ours computed *per round* (median over rounds; wall clock and process CPU
time), the GCA / base step-time ratio (per round, median), the per-epoch times extrapolated as
``batches_per_epoch x median(load + step)`` (each code's own batches per epoch: the official
trains 128 users a batch, ours its yaml's ``train_batch_size``), and, with ``--full_epoch``, one
measured full epoch of each code after the rounds (the official one takes tens of minutes on 2
CPU threads). ``--eval`` adds an evaluation pass per code: ours a full ``evaluator.evaluate`` on
the validation loader, the official one extrapolated from ``--official_eval_batches`` batches of
its ``eval`` loop (``--official_full_eval``: the official ``trainer.eval()`` whole).

Features: with ``--random_features`` both codes get random tables of the shapes our text-feature
cache would have (ours as the dataset's ``text_features``, which the model takes instead of
calling ``load_text_features``); without it, both read our cache
(``recbole_ortho.data.text_features``), which must exist (nothing is encoded here).
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
OFFICIAL_DRIVER = os.path.join(REPO, 'benchmarks', 'official_llm4cdsr.py')


def _median_skip_warmup(xs):
    xs = xs[1:] if len(xs) > 2 else xs
    return statistics.median(xs)


# --------------------------------------------------------------------------- ours (worker side)
def _random_text_features(config, dataset):
    """A stand-in for ``load_text_features``: random tables of the shapes the cache would have."""
    import numpy as np
    from recbole_ortho.data import text_features as tf
    from recbole_ortho.utils.model_config import ModelConfig
    cfg = ModelConfig(config)
    s = tf._settings(cfg)
    text_dim = 384                                   # all-MiniLM-L6-v2
    gd, dd = min(text_dim, s['global_dim']), min(text_dim, s['domain_dim'])
    rng = np.random.default_rng(0)
    n_items, n_users = dataset.n_items, dataset.n_users
    glob = (rng.standard_normal((n_items, gd)) / np.sqrt(gd)).astype(np.float32)
    dom = (rng.standard_normal((n_items, dd)) / np.sqrt(dd)).astype(np.float32)
    glob[0] = 0
    dom[0] = 0
    prof = None
    if s['profile'] == 'cluster':
        prof = (rng.standard_normal((n_users, text_dim)) / np.sqrt(text_dim)).astype(np.float32)
        prof[0] = 0
    n_dom = {d: int(hi - lo) for d, (lo, hi) in dataset.domain_range.items()}
    return tf.TextFeatures(global_table=glob, domain_table=dom, user_profiles=prof, n_missing={0: 0, 1: 0},
                           n_items_domain=n_dom, encoder='random (benchmark stand-in)', text_dim=text_dim,
                           cache_path='', info={'from_cache': False, 'random': True})


def worker(args):
    import torch
    sys.argv = [sys.argv[0]]
    from recbole.utils import init_seed
    from recbole_ortho.config import Config
    from recbole_ortho.data import create_dataset, data_preparation
    from recbole_ortho.quick_start import build_model
    from recbole_ortho.trainer import CDSRTrainer
    from recbole_ortho.model.registry import get_model

    torch.set_num_threads(args.threads)
    cfg = {'show_progress': False, 'save_model': False, 'state': 'WARNING', 'threads': args.threads}
    import yaml
    for kv in args.ours_config or []:
        k, v = kv.split('=', 1)
        cfg[k] = yaml.safe_load(v)
    model_class = get_model(args.model)
    features = 'random' if args.random_features else 'real'
    config = Config(model=args.model, dataset='food_kitchen', config_dict=cfg)
    init_seed(config['seed'], config['reproducibility'])
    data = create_dataset(config)
    if args.random_features:       # the model takes a dataset's own ``text_features`` when it has them
        data.text_features = _random_text_features(config, data)
    else:                          # never encode every item inside a benchmark
        from official_llm4cdsr import text_cache_path
        cache = text_cache_path(config, data)
        if not (cache and os.path.isfile(cache)):
            sys.exit(f'no text-feature cache ({cache or "cache_dir unset"}); pass --random_features')
    train_format = getattr(model_class, 'train_format', 'prefix')
    train, valid, _ = data_preparation(config, data, train_format)
    t0 = time.perf_counter()
    model, info = build_model(config, data)
    build_s = time.perf_counter() - t0
    trainer = CDSRTrainer(config, model, data)
    device = config['device']
    model.train()
    it = iter(train)
    step_s, load_s, cpu_s, losses = [], [], [], []
    flops = None
    for k in range(args.batches + (1 if args.count_flops else 0)):
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = iter(train)
            batch = next(it)
        t1, c1 = time.perf_counter(), time.process_time()
        if args.count_flops and k == args.batches:      # one extra, untimed step under the flop counter
            from torch.utils.flop_counter import FlopCounterMode
            with FlopCounterMode(display=False) as fc:
                _our_step(trainer, model, batch, device, torch)
            flops = fc.get_total_flops()
            break
        losses.append(_our_step(trainer, model, batch, device, torch))
        t2, c2 = time.perf_counter(), time.process_time()
        load_s.append(t1 - t0)
        step_s.append(t2 - t1)
        cpu_s.append(c2 - c1)
    del it
    med = _median_skip_warmup(step_s)
    tot = _median_skip_warmup([a + b for a, b in zip(step_s, load_s)])
    out = {'model': args.model, 'n_params': info['n_params'],
           'n_params_all': sum(p.numel() for p in model.parameters()),
           'n_frozen_table_values': sum(b.numel() for b in model.buffers() if b.is_floating_point()),
           'threads': args.threads, 'features': features, 'train_format': train_format,
           'batch_s_median': med, 'batch_s_all': step_s, 'step_cpu_s_median': _median_skip_warmup(cpu_s),
           'load_s_median': _median_skip_warmup(load_s), 'load_s_all': load_s, 'step_plus_load_s_median': tot,
           'batches_timed': len(step_s), 'batches_per_epoch': len(train), 'epoch_s_est': tot * len(train),
           'epoch_s_est_compute_only': med * len(train), 'losses': losses, 'build_s': build_s,
           'step_gflop': flops / 1e9 if flops else None,
           'config': {k: _plain(config[k]) for k in ('embedding_size', 'hidden_size', 'n_layers', 'n_heads',
                                                     'train_batch_size', 'MAX_ITEM_LIST_LENGTH', 'dropout_prob',
                                                     'learning_rate', 'learner', 'eval_neg_num',
                                                     'eval_batch_size', 'eval_protocol')
                      if k in config}}
    if args.full_epoch:
        t0 = time.perf_counter()
        trainer._train_epoch(train, 0)
        out['epoch_s_measured'] = time.perf_counter() - t0
    if args.eval:
        t0 = time.perf_counter()
        trainer.evaluator.evaluate(model, valid)
        out['eval_s'] = time.perf_counter() - t0
        out['eval_batches_per_pass'] = len(valid)
    out['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def _plain(v):
    return v if isinstance(v, (int, float, str, bool, type(None), list, dict)) else str(v)


def _our_step(trainer, model, batch, device, torch):
    """The body of CDSRTrainer._run_epoch for one batch."""
    batch = batch.to(device)
    trainer.optimizer.zero_grad(set_to_none=True)
    loss = model.calculate_loss(batch)
    if isinstance(loss, tuple):
        loss = sum(loss)
    if not torch.isfinite(loss):
        raise FloatingPointError(f'non-finite loss {loss.item()}')
    loss.backward()
    if trainer.clip_grad_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), **trainer.clip_grad_norm)
    trainer.optimizer.step()
    return loss.item()


# ------------------------------------------------------------------------------ orchestration
def _run(cmd, env, what):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f'{what} failed (rc {r.returncode}):\n{r.stderr[-4000:]}')
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res['process_wall_s'] = time.perf_counter() - t0
    return res


def run_official(args, env, batches, extra=()):
    cmd = [sys.executable, OFFICIAL_DRIVER, '--official_dir', args.official_dir, '--batches', str(batches),
           '--threads', str(args.threads), '--num_workers', str(args.num_workers)] + list(extra)
    if args.random_features:
        cmd.append('--random_features')
    return _run(cmd, env, 'official LLM4CDSR')


def run_ours(args, env, model, batches, extra=()):
    cmd = [sys.executable, os.path.abspath(__file__), '--worker', '--model', model, '--batches', str(batches),
           '--threads', str(args.threads)] + list(extra)
    if args.random_features:
        cmd.append('--random_features')
    for kv in args.ours_config or []:
        cmd += ['--ours_config', kv]
    return _run(cmd, env, model)


def _brief(r):
    return {k: r.get(k) for k in ('batch_s_median', 'step_cpu_s_median', 'load_s_median', 'step_plus_load_s_median',
                                  'batches_timed', 'batches_per_epoch', 'epoch_s_est', 'peak_rss_mb',
                                  'process_wall_s', 'batch_s_all', 'load_s_all')}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--official_dir', default=os.environ.get('LLM4CDSR_OFFICIAL_DIR'),
                   help='LLM4CDSR-pytorch checkout (default $LLM4CDSR_OFFICIAL_DIR)')
    p.add_argument('--models', default='LLM4CDSR,LLM4CDSR_GCA', help='our models (comma-separated)')
    p.add_argument('--rounds', type=int, default=3, help='alternating rounds')
    p.add_argument('--batches', type=int, default=8, help='timed training batches of ours per round')
    p.add_argument('--official_batches', type=int, default=3,
                   help='timed training batches of the official code per round (first = warm-up)')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--num_workers', type=int, default=0, help='official DataLoader workers')
    p.add_argument('--random_features', action='store_true', help='random tables of the right shapes (both codes)')
    p.add_argument('--also_no_anomaly', action='store_true',
                   help='each round, also time the official code with autograd anomaly detection off')
    p.add_argument('--count_flops', action='store_true', help='count FLOPs of one step of each code (round 1)')
    p.add_argument('--full_epoch', action='store_true', help='after the rounds, one measured full epoch of each code')
    p.add_argument('--eval', action='store_true', help='after the rounds, an evaluation pass of each code')
    p.add_argument('--official_eval_batches', type=int, default=3,
                   help='official evaluation: time K batches and extrapolate (with --eval)')
    p.add_argument('--official_full_eval', action='store_true', help='official evaluation: the whole trainer.eval()')
    p.add_argument('--ours_config', action='append', metavar='KEY=VALUE',
                   help='override a setting of our models (repeatable; YAML values)')
    p.add_argument('--skip_official', action='store_true', help='time our models only')
    p.add_argument('--json_out')
    p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--model', help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if not args.skip_official and not args.official_dir:
        p.error('--official_dir (or LLM4CDSR_OFFICIAL_DIR) is required (or --skip_official)')
    models = [m for m in args.models.split(',') if m]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    codes = ([] if args.skip_official else ['official']) + \
            (['official_no_anomaly'] if args.also_no_anomaly and not args.skip_official else []) + models
    results = {'threads': args.threads, 'rounds': args.rounds, 'batches': args.batches,
               'official_batches': args.official_batches, 'features': 'random' if args.random_features else 'real',
               'load_average_start': os.getloadavg(), 'per_round': [], 'codes': codes}
    t_start = time.perf_counter()
    for r in range(args.rounds):
        order = codes if r % 2 == 0 else codes[::-1]
        row = {}
        for code in order:
            flop_extra = ['--count_flops'] if args.count_flops and r == 0 else []
            if code == 'official':
                res = run_official(args, env, args.official_batches, flop_extra)
            elif code == 'official_no_anomaly':
                res = run_official(args, env, args.official_batches, ['--no_detect_anomaly'])
            else:
                res = run_ours(args, env, code, args.batches, flop_extra)
            row[code] = res
            print(f"round {r} {code}: step {res['batch_s_median']:.3f} s (cpu {res['step_cpu_s_median']:.3f} s), "
                  f"load {res['load_s_median']:.4f} s, epoch est {res['epoch_s_est']:.1f} s, "
                  f"RSS {res['peak_rss_mb']:.0f} MB", file=sys.stderr)
        results['per_round'].append({c: _brief(v) for c, v in row.items()})
        if r == 0:
            results['first_round_full'] = row      # configs, shapes, argv, flops
    results['load_average_end'] = os.getloadavg()
    results['rounds_wall_s'] = time.perf_counter() - t_start

    summary = {}
    for c in codes:
        rows = [pr[c] for pr in results['per_round']]
        summary[c] = {
            'batch_s_median': statistics.median(x['batch_s_median'] for x in rows),
            'step_cpu_s_median': statistics.median(x['step_cpu_s_median'] for x in rows),
            'load_s_median': statistics.median(x['load_s_median'] for x in rows),
            'step_plus_load_s_median': statistics.median(x['step_plus_load_s_median'] for x in rows),
            'batches_per_epoch': rows[0]['batches_per_epoch'],
            'epoch_s_est': statistics.median(x['epoch_s_est'] for x in rows),
            'peak_rss_mb': max(x['peak_rss_mb'] for x in rows),
            'batches_measured_total': sum(x['batches_timed'] - (1 if x['batches_timed'] > 2 else 0) for x in rows),
        }
        first = results['first_round_full'][c]
        for k in ('n_params', 'n_params_trainable', 'n_params_all', 'n_frozen_table_values', 'step_gflop', 'config',
                  'features', 'detect_anomaly', 'max_len', 'batch_size', 'input', 'train_format'):
            if k in first:
                summary[c][k] = first[k]
    results['summary'] = summary
    results['epoch_est_method'] = ('per round: batches_per_epoch x median(load + step) of the timed batches '
                                   '(first batch of each process left out as warm-up when more than 2); '
                                   'then the median over rounds')
    ratios = {}

    def per_round_ratio(a, b, key):
        return statistics.median(pr[a][key] / pr[b][key] for pr in results['per_round'])

    def per_round_list(a, b, key='batch_s_median'):
        return [pr[a][key] / pr[b][key] for pr in results['per_round']]

    if 'official' in codes:
        for m in models:
            ratios[f'official/{m}'] = {
                'step_wall': per_round_ratio('official', m, 'batch_s_median'),
                'step_cpu': per_round_ratio('official', m, 'step_cpu_s_median'),
                'epoch_est': per_round_ratio('official', m, 'epoch_s_est'),
                'step_wall_per_round': per_round_list('official', m),
            }
    if 'official_no_anomaly' in codes:
        ratios['official/official_no_anomaly'] = {
            'step_wall': per_round_ratio('official', 'official_no_anomaly', 'batch_s_median'),
            'step_wall_per_round': per_round_list('official', 'official_no_anomaly')}
    if len(models) >= 2:
        base, gca = models[0], models[1]
        ratios[f'{gca}/{base}'] = {'step_wall': per_round_ratio(gca, base, 'batch_s_median'),
                                   'step_cpu': per_round_ratio(gca, base, 'step_cpu_s_median'),
                                   'epoch_est': per_round_ratio(gca, base, 'epoch_s_est'),
                                   'step_wall_per_round': per_round_list(gca, base)}
    results['ratios'] = ratios

    # ---- optional full epoch / evaluation (one process per code, after the rounds)
    if args.full_epoch or args.eval:
        extra_runs = {}
        for code in codes:
            if code == 'official_no_anomaly':
                continue
            if code == 'official':
                ex = (['--epoch'] if args.full_epoch else [])
                if args.eval:
                    ex += ['--eval'] if args.official_full_eval else ['--eval_batches', str(args.official_eval_batches)]
                res = run_official(args, env, 1, ex)
                extra_runs[code] = {k: res.get(k) for k in ('epoch_s_measured', 'epoch_compute_s', 'epoch_load_s',
                                                            'eval_s', 'eval_extrapolated', 'eval_batches_timed',
                                                            'eval_batches_per_pass', 'peak_rss_mb')}
            else:
                ex = (['--full_epoch'] if args.full_epoch else []) + (['--eval'] if args.eval else [])
                res = run_ours(args, env, code, 2, ex)
                extra_runs[code] = {k: res.get(k) for k in ('epoch_s_measured', 'eval_s', 'eval_batches_per_pass',
                                                            'peak_rss_mb')}
            print(f'{code}: {json.dumps(extra_runs[code])}', file=sys.stderr)
        results['extra_runs'] = extra_runs

    # ---- table
    lines = ['| code | params (trainable / all) | step (median) | CPU time / step | load / batch | batches / epoch | '
             'epoch (est.) | peak RSS |', '|---|---:|---:|---:|---:|---:|---:|---:|']
    for c in codes:
        s = summary[c]
        tr = s.get('n_params_trainable', s.get('n_params'))
        al = s.get('n_params_all', s.get('n_params'))
        lines.append(f"| {c} | {tr:,} / {al:,} | {s['batch_s_median']:.3f} s | {s['step_cpu_s_median']:.3f} s | "
                     f"{s['load_s_median']:.4f} s | {s['batches_per_epoch']} | {s['epoch_s_est']:.1f} s | "
                     f"{s['peak_rss_mb']:.0f} MB |")
    for c, x in results.get('extra_runs', {}).items():
        if x.get('eval_s') is not None:
            how = ' (extrapolated from %s of %s batches)' % (x['eval_batches_timed'], x['eval_batches_per_pass']) \
                if x.get('eval_extrapolated') else ''
            lines.append(f"eval pass {c}: {x['eval_s']:.1f} s{how}")
        if x.get('epoch_s_measured') is not None:
            lines.append(f"measured epoch {c}: {x['epoch_s_measured']:.1f} s")
    print('\n'.join(lines))
    for k, v in ratios.items():
        print(f'{k}: ' + ', '.join(f'{kk} {vv:.2f}' if isinstance(vv, float) else
                                   f"{kk} [{', '.join(f'{x:.2f}' for x in vv)}]" for kk, vv in v.items()))
    if args.json_out:
        os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
        with open(args.json_out + '.tmp', 'w') as f:
            json.dump(results, f, indent=2)
        os.replace(args.json_out + '.tmp', args.json_out)


if __name__ == '__main__':
    main()
