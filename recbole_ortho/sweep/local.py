"""
recbole_ortho.sweep.local
#########################

The ``local`` engine: up to ``workers`` trials at a time on this machine, each a fresh Python
process (``python -m recbole_ortho.sweep.trial``) with ``threads`` torch threads. Trials die with
the sweep (``PR_SET_PDEATHSIG``), so a killed sweep leaves no orphan; its unfinished runs are
run again on resume, each from its last-epoch checkpoint (:mod:`~recbole_ortho.sweep.trial`).
"""

import ctypes
import os
import signal
import subprocess
import sys
import time

from tqdm import tqdm

from recbole_ortho.sweep.store import read_json, write_json


def _die_with_parent():
    try:
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)     # PR_SET_PDEATHSIG
    except OSError:
        pass


def launch_trial(store, run, paths, threads):
    """Start one trial process for ``run``, which the caller has claimed (``store.claim``); returns
    the ``Popen`` (its output goes to stdout.log)."""
    d = store.prepare(run)
    write_json(os.path.join(d, 'paths.json'), paths)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               RECBOLE_ORTHO_TRIAL_THREADS=str(threads))
    out = open(os.path.join(d, 'stdout.log'), 'w')
    try:
        proc = subprocess.Popen([sys.executable, '-m', 'recbole_ortho.sweep.trial', d], stdout=out,
                                stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent)
    finally:
        out.close()
    store.mark_running(run.run_id, proc.pid)
    return proc


def finish_trial(store, run, returncode, wall_s, attempts):
    """Book-keeping after a trial process ended: ``'finished'`` or ``'failed'`` (error.json with the
    attempt count; a process that died without writing one gets its exit code and output tail)."""
    store.clear_running(run.run_id)
    if returncode == 0 and os.path.isfile(store.path(run.run_id, 'result.json')):
        return 'finished'
    err_path = store.path(run.run_id, 'error.json')
    if os.path.isfile(err_path):
        err = read_json(err_path)
    else:
        try:
            with open(store.path(run.run_id, 'stdout.log'), errors='replace') as f:
                tail = f.read()[-3000:]
        except OSError:
            tail = ''
        err = {'type': 'TrialDied', 'message': f'trial process exited with status {returncode}', 'output_tail': tail}
    store.record_failure(run.run_id, err, attempts, wall_s)
    return 'failed'


def run_local(store, runs, paths, workers=1, threads=1, show_progress=True, poll_s=0.2):
    """Run ``runs`` (those not finished / failed / running elsewhere when the sweep started) with up
    to ``workers`` trials at a time, each claimed just before it starts, so a run that another
    sweep of the same store took meanwhile is skipped. Returns ``{run_id: {'state', 'wall_s'}}``
    of the runs it ran."""
    queue = list(runs)
    running, done = {}, {}
    bar = tqdm(total=len(queue), desc='sweep', unit='run', ncols=100, disable=not show_progress)
    stop = {'signal': None}

    def on_signal(signum, frame):
        stop['signal'] = signum

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while (queue or running) and stop['signal'] is None:
            while queue and len(running) < workers:
                run = queue.pop(0)
                if not store.claim(run.run_id):         # another sweep of this store took or finished it
                    bar.update(1)
                    continue
                attempts = store.attempts(run.run_id) + 1
                store.clear_failure(run.run_id)
                running[run.run_id] = (run, launch_trial(store, run, paths, threads), time.perf_counter(), attempts)
            for rid, (run, proc, t0, attempts) in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                wall = time.perf_counter() - t0
                state = finish_trial(store, run, rc, wall, attempts)
                done[rid] = {'state': state, 'wall_s': wall}
                del running[rid]
                bar.update(1)
                n_fail = sum(v['state'] == 'failed' for v in done.values())
                bar.set_postfix(finished=len(done) - n_fail, failed=n_fail, running=len(running))
            time.sleep(poll_s)
    finally:
        for run, proc, _, _ in running.values():        # interrupted: stop the trials, keep nothing half-done
            proc.terminate()
        for run, proc, _, _ in running.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            store.clear_running(run.run_id)
        for s, h in old.items():
            signal.signal(s, h)
        bar.close()
    if stop['signal'] is not None:
        raise KeyboardInterrupt(f'sweep stopped by signal {stop["signal"]}; run it again to resume')
    return done
