"""
recbole_ortho.sweep.ray_engine
##############################

The ``ray`` engine: the sweep's runs as Ray Tune trials, on an existing cluster
(``ray_address``, e.g. ``auto`` or ``host:port``) or on a local one started for the sweep
(``num_cpus``), each with its own resources (``cpus_per_trial``, ``gpus_per_trial``; a fraction
such as 0.25 lets four small trials share one GPU). Each Tune trial runs the same trial process
as the local engine and writes the same run store (a folder every node can reach), so the
analysis does not care which engine ran a sweep.
"""

import os
import time

from recbole_ortho.sweep.local import finish_trial, launch_trial
from recbole_ortho.sweep.spec import RunSpec


def _trainable(config):
    """One Tune trial = one run of the store: launch the trial process, wait, book-keep."""
    from recbole_ortho.sweep.store import RunStore, read_json
    store = RunStore(config['store'])
    run = RunSpec(**config['run'])
    if not store.claim(run.run_id):                 # another sweep of this store took or finished it
        return {'run_id': run.run_id, 'state': 'skipped', 'wall_s': 0.0, 'finished': False}
    attempts = store.attempts(run.run_id) + 1
    store.clear_failure(run.run_id)
    t0 = time.perf_counter()
    proc = launch_trial(store, run, config['paths'], config['threads'])
    rc = proc.wait()
    wall = time.perf_counter() - t0
    state = finish_trial(store, run, rc, wall, attempts)
    out = {'run_id': run.run_id, 'state': state, 'wall_s': wall, 'finished': state == 'finished'}
    if state == 'finished':
        res = read_json(store.path(run.run_id, 'result.json'))
        out['best_valid_score'] = res['best_valid_score']
    return out


def run_ray(store, runs, paths, cpus_per_trial=1, gpus_per_trial=0, ray_address=None, num_cpus=None,
            max_concurrent=None, show_progress=True):
    """Run ``runs`` as Ray Tune trials (see the module docstring); returns ``{run_id: {'state', 'wall_s'}}``."""
    if not runs:
        return {}
    import ray
    from ray import tune
    started = not ray.is_initialized()
    if started:
        kw = {'address': ray_address} if ray_address else {'num_cpus': num_cpus}
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **kw)
    try:
        threads = max(1, int(cpus_per_trial))
        trainable = tune.with_resources(_trainable, {'cpu': cpus_per_trial, 'gpu': gpus_per_trial})
        space = {'run': tune.grid_search([{k: v for k, v in r.to_json().items()} | {'resolved': {}} for r in runs]),
                 'store': store.root, 'paths': paths, 'threads': threads}
        tuner = tune.Tuner(trainable, param_space=space,
                           tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent),
                           run_config=tune.RunConfig(storage_path=os.path.join(store.root, 'ray'), name='tune',
                                                     verbose=1 if show_progress else 0))
        results = tuner.fit()
        done = {}
        for r in results:
            m = r.metrics or {}
            if 'run_id' in m and m['state'] != 'skipped':
                done[m['run_id']] = {'state': m['state'], 'wall_s': m['wall_s']}
        return done
    finally:
        if started:
            ray.shutdown()
