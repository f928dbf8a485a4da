#!/usr/bin/env python
"""Build a RecBole-style markdown results page from the result JSONs of run_recbole_ortho.py.

    python benchmarks/make_results.py RUN_DIR [--title TITLE] > results/food_kitchen.md

Every ``*.json`` in RUN_DIR written with ``--result_file`` becomes one row per domain. The page
holds the setting, the data statistics, per-domain test metrics (HR@5, HR@10, NDCG@10, MRR,
NDCG@1, AUC), the orthogonality statistics of GCA models, parameters, seed, epochs and wall
time, and the official ABXI README's numbers for comparison.
"""

import argparse
import glob
import json
import math
import os
import sys

OFFICIAL = {  # ABXI README, Food-Kitchen, mean of 5 seeds
    'A': {'hit@5': .2519, 'hit@10': .3243, 'ndcg@10': .1971, 'mrr': .1655},
    'B': {'hit@5': .1745, 'hit@10': .2438, 'ndcg@10': .1427, 'mrr': .1219},
}
METRICS = ['hit@5', 'hit@10', 'ndcg@10', 'mrr', 'ndcg@1', 'auc']
NAMES = {'A': 'Food (A)', 'B': 'Kitchen (B)', 'all': 'all'}


def fmt(v, digits=4):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return '–'
    return f'{v:.{digits}f}'


def label(r, fname):
    name = r['model']
    cfg = r['config']
    if r.get('param_match'):
        name += f" (param-matched to {r['param_match']['target_model']})"
    if cfg.get('model') == 'ABXI' and cfg.get('shared_negatives') is False:
        name += ' (per-position negatives)'
    return name


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('run_dir')
    p.add_argument('--title', default='Food-Kitchen (Amazon 2014, ABXI preparation)')
    args = p.parse_args()
    files = sorted(glob.glob(os.path.join(args.run_dir, '*.json')))
    runs = []
    for f in files:
        with open(f) as fh:
            r = json.load(fh)
        if 'test' in r and 'config' in r:
            runs.append((os.path.basename(f), r))
    if not runs:
        sys.exit(f'{args.run_dir}: no result JSON files (written by run_recbole_ortho.py --result_file)')
    out = [f'# Results: {args.title}', '']
    c0 = runs[0][1]['config']
    out += ['## Setting', '',
            f"- Protocol: leave-one-out on the mixed sequence; `eval_protocol={c0.get('eval_protocol')}`, "
            f"{c0.get('eval_neg_num')} negatives from the target's domain (excluding the user's items), "
            f"`eval_seed={c0.get('eval_seed')}`; rank = 1 + #candidates scored strictly higher.",
            f"- Model selection: `{c0.get('valid_metric')}` summed over A and B (`valid_domain={c0.get('valid_domain')}`); "
            'test metrics of the best validation epoch.',
            f"- Device: `{c0.get('device')}`; MAX_ITEM_LIST_LENGTH {c0.get('MAX_ITEM_LIST_LENGTH')}.",
            '']
    out += ['## Runs', '', '| run | model | parameters | seed | epochs run | best epoch | stopped by | wall time |',
            '|---|---|---:|---:|---:|---:|---|---:|']
    for f, r in runs:
        stop = 'time budget' if r.get('stopped_by_time_budget') else (
            'early stopping' if r.get('epochs_run', 0) < r['config'].get('epochs', 0) else 'max epochs')
        out.append(f"| {f[:-5]} | {label(r, f)} | {r['n_params']:,} | {r['config'].get('seed')} | "
                   f"{r.get('epochs_run', len(r.get('trace', [])))} | {r.get('best_epoch')} | {stop} | "
                   f"{r.get('wall_time_s', float('nan')) / 60:.1f} min |")
    out += ['', '## Test metrics per target domain', '',
            '| run | domain | users | ' + ' | '.join(m.upper() if m == 'mrr' else m for m in METRICS) + ' |',
            '|---|---|---:|' + '---:|' * len(METRICS)]
    for f, r in runs:
        for d in ('A', 'B', 'all'):
            t = r['test'][d]
            out.append(f"| {f[:-5]} | {NAMES[d]} | {t['n_users']} | " + ' | '.join(fmt(t.get(m)) for m in METRICS) + ' |')
    for d in ('A', 'B'):
        o = OFFICIAL[d]
        out.append(f"| official ABXI README (5 seeds) | {NAMES[d]} | | " + ' | '.join(fmt(o.get(m)) for m in METRICS) + ' |')
    stats = sorted({k for _, r in runs for k in r['test']['all'] if '@gca' in k})
    if stats:
        out += ['', '## Orthogonality of the GCA modules (test data)', '',
                '`ortho_cos_a@gcaP` = mean |cos(X_A, CA(X_A, X_B))| of the GCA at position P where A attends to B '
                '(`_b`: B attends to A); `cross_cos` = |cos(X_A, X_B)| of the two inputs at the same step. '
                'Means over users (each user: mean over its query steps).', '',
                '| run | domain | ' + ' | '.join(stats) + ' |', '|---|---|' + '---:|' * len(stats)]
        for f, r in runs:
            if not any(k in r['test']['all'] for k in stats):
                continue
            for d in ('A', 'B', 'all'):
                out.append(f"| {f[:-5]} | {NAMES[d]} | " + ' | '.join(fmt(r['test'][d].get(k)) for k in stats) + ' |')
        out += ['', 'Validation trace of the orthogonality (per evaluated epoch, all users):', '']
        for f, r in runs:
            tr = [(e['epoch'], e['valid']['all']) for e in r.get('trace', []) if 'valid' in e]
            for k in stats:
                if tr and k in tr[0][1]:
                    pts = ', '.join(f"{ep}: {fmt(v.get(k), 3)}" for ep, v in tr[:: max(1, len(tr) // 12)])
                    out.append(f"- {f[:-5]} `{k}` by epoch — {pts}")
        out += ['', 'Validation score (MRR_A + MRR_B) at equal epochs:', '',
                '| epoch | ' + ' | '.join(f[:-5] for f, _ in runs) + ' |', '|---:|' + '---:|' * len(runs)]
        traces = [{e['epoch']: e.get('valid_score') for e in r.get('trace', []) if 'valid_score' in e} for _, r in runs]
        last_common = min(max(t) for t in traces if t)
        for ep in sorted({e for t in traces for e in t if e <= last_common})[:: 10] + [last_common]:
            out.append(f'| {ep} | ' + ' | '.join(fmt(t.get(ep)) for t in traces) + ' |')
    print('\n'.join(out))


if __name__ == '__main__':
    main()
