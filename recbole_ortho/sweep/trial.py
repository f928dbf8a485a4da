"""
recbole_ortho.sweep.trial
#########################

One trial of a sweep, run by an engine as ``python -m recbole_ortho.sweep.trial RUN_DIR``: reads
``spec.json`` and the sweep's paths, runs ``run_recbole_ortho`` with the run's settings (its
result written atomically to ``result.json``), or writes ``error.json`` and exits 1.

While it runs, the trial keeps the run's checkpoints in ``RUN_DIR/saved/``: the best epoch's and
the last epoch's, written after every epoch. A trial killed mid-run (a killed sweep, a lost
machine) leaves the last one, and the next trial of the run resumes from it (``resume``) instead
of starting over; it says so in ``stdout.log`` (``trial: resuming from saved/<...>-last.pth``). Once ``result.json`` is
written the checkpoints are deleted: the run store keeps no weights. A run whose spec sets
``save_model: False`` writes no checkpoint and starts over.
"""

import json
import os
import sys
import traceback

#: the trial's checkpoint folder, relative to the run's folder
CHECKPOINT_DIR = 'saved'


def trial_config(spec, paths, threads):
    """The config_dict of a trial: the run's settings and seed, the sweep's data paths, this run's
    folder for outputs; the checkpoints in ``saved/`` (deleted when the run finishes); the per-user
    ranks written beside ``result.json`` (``result.ranks.npz``) unless the run's settings say otherwise."""
    run_dir = paths['run_dir']

    def rel(p):                                   # relative to the run's folder (the trial's cwd): no
        return os.path.relpath(p, run_dir) + os.sep   # machine-specific path lands in result.json

    cfg = dict(spec['settings'], seed=spec['seed'])
    cfg.update({'data_path': rel(paths['data_path']), 'cache_dir': rel(paths['cache_dir']),
                'checkpoint_dir': CHECKPOINT_DIR + os.sep, 'tensorboard_dir': 'tb' + os.sep,
                'result_file': 'result.json', 'show_progress': False, 'threads': threads})
    cfg.setdefault('save_model', True)            # the last-epoch checkpoint a killed trial resumes from
    cfg.setdefault('save_ranks', True)            # per-user ranks beside result.json (the analysis's user-level tests)
    return cfg


def last_checkpoint(run_dir):
    """The last-epoch checkpoint a killed trial left in ``<run_dir>/saved/`` (relative to
    ``run_dir``; the newest if several), or None."""
    from recbole_ortho.trainer.trainer import LAST_SUFFIX
    d = os.path.join(run_dir, CHECKPOINT_DIR)
    found = sorted(f for f in os.listdir(d) if f.endswith(LAST_SUFFIX)) if os.path.isdir(d) else []
    if not found:
        return None
    newest = max(found, key=lambda f: os.path.getmtime(os.path.join(d, f)))
    return os.path.join(CHECKPOINT_DIR, newest)


def clear_checkpoints(run_dir):
    """Delete the checkpoints (and their temporary files) in ``<run_dir>/saved/`` and the folder when empty."""
    d = os.path.join(run_dir, CHECKPOINT_DIR)
    if not os.path.isdir(d):
        return
    for f in os.listdir(d):
        if f.endswith(('.pth', '.pth.tmp')):
            os.remove(os.path.join(d, f))
    if not os.listdir(d):
        os.rmdir(d)


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
        from recbole_ortho.trainer.trainer import ResumeError
        cfg = trial_config(spec, paths, threads)

        def run(config_dict):
            run_recbole_ortho(model=spec['model'], dataset=spec['dataset'], config_dict=config_dict, saved=True,
                              keep_checkpoints=False)

        resume = last_checkpoint(run_dir) if cfg['save_model'] else None
        if resume is None:
            clear_checkpoints(run_dir)          # what a trial killed before its first last checkpoint left
            run(cfg)
        else:
            print(f'trial: resuming from {resume}', flush=True)
            try:
                run(dict(cfg, resume=resume))
            except ResumeError as e:            # e.g. the data changed: this run's checkpoint is of no use
                print(f'trial: cannot resume ({e}); starting over', flush=True)
                clear_checkpoints(run_dir)
                run(cfg)
        clear_checkpoints(run_dir)
    except BaseException as e:                  # noqa: B902 -- recorded, then the trial fails
        from recbole_ortho.sweep.store import write_json
        write_json(os.path.join(run_dir, 'error.json'),
                   {'type': type(e).__name__, 'message': str(e), 'traceback': traceback.format_exc()})
        print(f'error: {type(e).__name__}: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
