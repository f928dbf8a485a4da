"""
recbole_ortho.sweep.trial
#########################

One trial of a sweep, run by an engine as ``python -m recbole_ortho.sweep.trial RUN_DIR``: reads
``spec.json`` and the sweep's paths, runs ``run_recbole_ortho`` with the run's settings (its
result written atomically to ``result.json``), or writes ``error.json`` and exits 1.
"""

import json
import os
import sys
import traceback


def trial_config(spec, paths, threads):
    """The config_dict of a trial: the run's settings and seed, the sweep's data paths, this run's
    folder for outputs; no checkpoint (the best epoch is kept in memory); the per-user ranks
    written beside ``result.json`` (``result.ranks.npz``) unless the run's settings say otherwise."""
    run_dir = paths['run_dir']

    def rel(p):                                   # relative to the run's folder (the trial's cwd): no
        return os.path.relpath(p, run_dir) + os.sep   # machine-specific path lands in result.json

    cfg = dict(spec['settings'], seed=spec['seed'])
    cfg.update({'data_path': rel(paths['data_path']), 'cache_dir': rel(paths['cache_dir']),
                'checkpoint_dir': 'saved' + os.sep, 'tensorboard_dir': 'tb' + os.sep,
                'result_file': 'result.json', 'show_progress': False, 'threads': threads})
    cfg.setdefault('save_model', False)
    cfg.setdefault('save_ranks', True)            # per-user ranks beside result.json (the analysis's user-level tests)
    return cfg


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    run_dir = os.path.abspath(argv[0])
    with open(os.path.join(run_dir, 'spec.json')) as f:
        spec = json.load(f)
    with open(os.path.join(run_dir, 'paths.json')) as f:
        paths = json.load(f)
    paths['run_dir'] = run_dir
    threads = int(os.environ.get('RECBOLE_ORTHO_TRIAL_THREADS', '0') or 0)
    sys.argv = [sys.argv[0]]
    os.chdir(run_dir)                           # RecBole's log/ goes into the run's folder
    try:
        from recbole_ortho.quick_start import run_recbole_ortho
        run_recbole_ortho(model=spec['model'], dataset=spec['dataset'], config_dict=trial_config(spec, paths, threads),
                          saved=False)
    except BaseException as e:                  # noqa: B902 -- recorded, then the trial fails
        from recbole_ortho.sweep.store import write_json
        write_json(os.path.join(run_dir, 'error.json'),
                   {'type': type(e).__name__, 'message': str(e), 'traceback': traceback.format_exc()})
        print(f'error: {type(e).__name__}: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
