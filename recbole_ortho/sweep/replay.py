"""
recbole_ortho.sweep.replay
##########################

Does this checkout, on this machine, still train a stored run the way it was trained? Re-train the
first ``--epochs`` epochs of a finished run of a run store (its model, dataset, seed and settings
from ``spec.json``; its thread count from its provenance) and compare them, epoch by epoch, with
the ``trace`` of its ``result.json``: training loss, validation score, and test nothing (the
replay stops long before the best epoch)::

    python -m recbole_ortho.sweep.replay results/sweeps/food_kitchen_study_abxi/runs/<run id> \\
        --epochs=2 --json_out=results/replays/<run id>.json

The output names both sides by commit, CPU and threads. Runs made by different package code are
compared across commits only where the code agrees (:mod:`recbole_ortho.analysis.provenance`);
a replay is the measured answer to "agrees": equal training up to floating-point noise (a
different CPU or commit reorders sums) or not. No schedule of the trainer depends on ``epochs``
(the warm-up counts epochs from the start, ``plateau`` watches the validation score), so the
first epochs of a shortened run are those of the full one.
"""

import argparse
import json
import os
import sys
import tempfile


def _load(run_dir):
    paths = {n: os.path.join(run_dir, f'{n}.json') for n in ('spec', 'result')}
    for name, p in paths.items():
        if not os.path.isfile(p):
            raise FileNotFoundError(f'replay: {p} is missing (a finished run of a run store has spec.json and '
                                    'result.json)')
    with open(paths['spec']) as f:
        spec = json.load(f)
    with open(paths['result']) as f:
        result = json.load(f)
    if not result.get('trace'):
        raise ValueError(f"replay: {paths['result']} has no 'trace' (per-epoch record) to compare with")
    return spec, result


def compare_traces(stored, replayed):
    """Per epoch: the stored and replayed training loss and validation score, and the largest
    relative loss difference and absolute score difference over the epochs."""
    epochs = []
    for s, r in zip(stored, replayed):
        epochs.append({'epoch': s['epoch'], 'train_loss': [s['train_loss'], r['train_loss']],
                       'valid_score': [s.get('valid_score'), r.get('valid_score')]})
    rel = [abs(b - a) / abs(a) for a, b in (e['train_loss'] for e in epochs)]
    val = [abs(b - a) for a, b in (e['valid_score'] for e in epochs) if a is not None and b is not None]
    return {'epochs': epochs, 'train_loss_max_rel_diff': max(rel) if rel else None,
            'valid_score_max_abs_diff': max(val) if val else None}


def replay(run_dir, epochs=2, data_path=None, threads=None):
    """Re-train the first ``epochs`` epochs of the finished run in ``run_dir``; returns the
    comparison (:func:`compare_traces`) with both sides' provenance."""
    from recbole_ortho.quick_start import run_recbole_ortho
    spec, stored = _load(run_dir)
    have = len(stored['trace'])
    if not 1 <= epochs <= have:
        raise ValueError(f'replay: --epochs={epochs}: the stored run has {have} epochs in its trace')
    prov = stored.get('provenance') or {}
    threads = threads or (prov.get('device') or {}).get('threads') or 1
    with tempfile.TemporaryDirectory(prefix='replay-') as tmp:
        cfg = dict(spec['settings'], seed=spec['seed'], epochs=epochs, threads=threads, save_model=False,
                   show_progress=False, state='WARNING', checkpoint_dir=os.path.join(tmp, 'saved') + os.sep,
                   tensorboard_dir=os.path.join(tmp, 'tb') + os.sep)
        if data_path:
            cfg['data_path'] = data_path
        argv, sys.argv = sys.argv, sys.argv[:1]       # the replay's own options are not RecBole's
        try:
            new = run_recbole_ortho(model=spec['model'], dataset=spec['dataset'], config_dict=cfg, saved=False)
        finally:
            sys.argv = argv
    def side(p):
        dev = p.get('device') or {}
        return {'git_commit': p.get('git_commit'), 'git_dirty': p.get('git_dirty'), 'cpu': dev.get('cpu'),
                'threads': dev.get('threads'), 'precision': p.get('precision')}
    out = {'run_id': spec.get('run_id') or os.path.basename(os.path.normpath(run_dir)), 'model': spec['model'],
           'dataset': spec['dataset'], 'seed': spec['seed'], 'epochs_replayed': epochs,
           'stored': side(prov), 'replayed': side(new['provenance']), 'provenance': new['provenance']}
    out.update(compare_traces(stored['trace'][:epochs], new['trace'][:epochs]))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].split('\n', 3)[-1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('run_dir', help='a finished run of a run store (spec.json, result.json)')
    p.add_argument('--epochs', type=int, default=2, help='epochs to re-train and compare (default 2)')
    p.add_argument('--threads', type=int, help="torch threads (default: the stored run's)")
    p.add_argument('--data_path', help='folder holding the dataset (default: the data_path setting)')
    p.add_argument('--json_out', help='write the comparison here (atomically)')
    a = p.parse_args(argv)
    out = replay(a.run_dir, a.epochs, a.data_path, a.threads)
    for e in out['epochs']:
        print(f"epoch {e['epoch']}: train loss {e['train_loss'][0]:.6f} -> {e['train_loss'][1]:.6f}, "
              f"valid score {e['valid_score'][0]:.5f} -> {e['valid_score'][1]:.5f}")
    print(f"stored {out['stored']}\nreplayed {out['replayed']}\n"
          f"train loss max relative difference {out['train_loss_max_rel_diff']:.2e}, "
          f"valid score max difference {out['valid_score_max_abs_diff']:.2e}")
    if a.json_out:
        from recbole_ortho.quick_start import write_json_atomic
        os.makedirs(os.path.dirname(os.path.abspath(a.json_out)), exist_ok=True)
        write_json_atomic(a.json_out, out)
    return out


if __name__ == '__main__':
    main()
