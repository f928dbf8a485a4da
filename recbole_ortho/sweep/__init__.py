"""
recbole_ortho.sweep
###################

Resumable multi-seed sweeps (``run_sweep.py``): a spec (:mod:`~recbole_ortho.sweep.spec`) expands
into runs with deterministic ids; an engine (:mod:`~recbole_ortho.sweep.local`) runs the ones not
finished yet; every run's result lands in the run store (:mod:`~recbole_ortho.sweep.store`).
"""

import os
import statistics
import time

from recbole_ortho.sweep.spec import RunSpec, expand, load_spec, read_hyper_grid
from recbole_ortho.sweep.store import RunStore, read_json, write_json

__all__ = ['RunSpec', 'RunStore', 'expand', 'load_spec', 'read_hyper_grid', 'run_sweep', 'plan']


def _paths(spec, data_path=None, cache_dir=None):
    """Absolute data and cache folders shared by the sweep's trials (the overall defaults, relative
    to the working directory, unless given)."""
    import sys
    from recbole_ortho.config import Config
    model, dataset = next(iter(spec['models'])), spec['datasets'][0]
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        cfg = Config(model=model, dataset=dataset, config_dict=dict(spec['settings']))
    finally:
        sys.argv = argv
    return {'data_path': os.path.abspath(data_path or cfg['data_path']) + os.sep,
            'cache_dir': os.path.abspath(cache_dir or cfg['cache_dir']) + os.sep}


def plan(spec_path, sweep_dir, data_path=None, cache_dir=None):
    """``(spec, runs, store, paths)``: the expanded runs of a spec and the store they go to; the
    sweep folder gets ``sweep.json`` (the spec and every run's id, variant and state)."""
    spec = load_spec(spec_path)
    paths = _paths(spec, data_path, cache_dir)
    runs = expand(spec, data_root=paths['data_path'])
    store = RunStore(sweep_dir)
    write_json(os.path.join(store.root, 'sweep.json'), {
        'spec': spec, 'spec_file': os.path.abspath(spec_path), 'paths': paths,
        'runs': [dict(r.to_json(), state=store.state(r.run_id)) for r in runs]})
    return spec, runs, store, paths


def run_sweep(spec_path, sweep_dir, engine='local', workers=1, threads=1, retry_failed=False, show_progress=True,
              data_path=None, cache_dir=None, **engine_args):
    """Run a sweep to completion (or until interrupted; run it again to resume). Finished runs
    are skipped, failed ones too unless ``retry_failed``. Returns the summary written to
    ``<sweep_dir>/summary.json``: run counts per state, wall time, runs per hour, and the
    engine's overhead per trial (the trial process's wall time minus the run's own)."""
    spec, runs, store, paths = plan(spec_path, sweep_dir, data_path, cache_dir)
    states = {r.run_id: store.state(r.run_id) for r in runs}
    todo = [r for r in runs if states[r.run_id] == 'pending' or (retry_failed and states[r.run_id] == 'failed')]
    t0 = time.perf_counter()
    if engine == 'local':
        from recbole_ortho.sweep.local import run_local
        done = run_local(store, todo, paths, workers=workers, threads=threads, show_progress=show_progress)
    elif engine == 'ray':
        from recbole_ortho.sweep.ray_engine import run_ray
        done = run_ray(store, todo, paths, show_progress=show_progress, **engine_args)
    else:
        raise ValueError(f"engine: [{engine}] must be 'local' or 'ray'")
    wall = time.perf_counter() - t0
    overhead = []
    for rid, d in done.items():
        if d['state'] == 'finished':
            overhead.append(d['wall_s'] - read_json(store.path(rid, 'result.json'))['wall_time_s'])
    final = {r.run_id: store.state(r.run_id) for r in runs}
    summary = {'runs': len(runs), 'ran_now': len(done), 'wall_time_s': wall,
               'states': {s: sum(v == s for v in final.values()) for s in ('finished', 'failed', 'running', 'pending')},
               'runs_per_hour': 3600 * len(done) / wall if wall > 0 and done else None,
               'overhead_s_median': statistics.median(overhead) if overhead else None,
               'overhead_share_median': statistics.median(
                   o / done[rid]['wall_s'] for o, rid in zip(overhead, [k for k, d in done.items() if d['state'] == 'finished']))
               if overhead else None,
               'failed': {rid: read_json(store.path(rid, 'error.json')).get('message') for rid, s in final.items()
                          if s == 'failed'},
               'engine': engine, 'workers': workers, 'threads': threads}
    write_json(os.path.join(store.root, 'summary.json'), summary)
    return summary
