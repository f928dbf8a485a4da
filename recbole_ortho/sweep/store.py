"""
recbole_ortho.sweep.store
#########################

The run store of a sweep, ``<sweep_dir>/runs/<run_id>/``, shared by every engine:

- ``spec.json``: the run (model, dataset, seed, settings, variant);
- ``result.json``: written atomically by the trial when it finishes (the result of
  ``run_recbole_ortho``, with ``trace``) -- its presence is what "finished" means;
- ``error.json``: the error of a failed attempt (type, message, traceback, attempts);
- ``running.json``: who runs it now: the sweep process that claimed it, then its trial's pid (a
  stale one, whose process is gone, is ignored and replaced by the next claim);
- ``stdout.log``, ``log/``: the trial's output and RecBole's log; ``tb/``: TensorBoard events;
- ``saved/``: the run's checkpoints while it runs (the best epoch's and the last epoch's), deleted
  once ``result.json`` is written (kept by a failed run, for ``retry_failed``).

A finished run is never run again; a failed one only with ``retry_failed``; an interrupted one
(no result, no error, no live process) is run again, from its last-epoch checkpoint when it has
one (:mod:`~recbole_ortho.sweep.trial`). An engine takes a run with :meth:`RunStore.claim` just
before it starts it, so two sweeps of one spec on one machine (say a second one started to use
a core the first leaves idle) share the work instead of running a run twice.
"""

import json
import os
import socket
import time

STATES = ('finished', 'failed', 'running', 'pending')


def write_json(path, payload):
    """Atomic JSON write (temporary file in the same folder, then rename)."""
    tmp = f'{path}.{os.getpid()}.tmp'
    with open(tmp, 'w') as f:
        json.dump(payload, f, indent=1, sort_keys=True, default=str)
    os.replace(tmp, path)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:                                   # a zombie child of a dead sweep is not alive
        with open(f'/proc/{pid}/stat') as f:
            return f.read().split(')')[-1].split()[0] != 'Z'
    except OSError:
        return True


class RunStore:
    """The runs of one sweep folder (see the module docstring)."""

    def __init__(self, sweep_dir):
        self.root = os.path.abspath(sweep_dir)
        self.runs_dir = os.path.join(self.root, 'runs')
        os.makedirs(self.runs_dir, exist_ok=True)

    def path(self, run_id, name=''):
        return os.path.join(self.runs_dir, run_id, name)

    def state(self, run_id):
        """``finished``, ``failed``, ``running`` (a live trial holds it) or ``pending``."""
        if os.path.isfile(self.path(run_id, 'result.json')):
            return 'finished'
        if os.path.isfile(self.path(run_id, 'error.json')):
            return 'failed'
        return 'running' if self._live(self.path(run_id, 'running.json')) else 'pending'

    def claim(self, run_id):
        """Take ``run_id`` for this process: ``True``, or ``False`` when it is finished or a live
        process holds it. Atomic: the lock file appears whole (a hard link of a written file) or not
        at all; a stale lock is moved aside before it is replaced, and put back if it turns out live."""
        os.makedirs(self.path(run_id), exist_ok=True)
        lock = self.path(run_id, 'running.json')
        for _ in range(3):
            if self.state(run_id) in ('finished', 'running'):
                return False
            if os.path.exists(lock):                       # stale: set it aside, then look again
                aside = f'{lock}.{os.getpid()}.stale'
                try:
                    os.rename(lock, aside)
                except FileNotFoundError:
                    continue
                if self._live(aside):                      # claimed afresh meanwhile: give it back
                    try:
                        os.link(aside, lock)
                    except FileExistsError:
                        pass
                    os.remove(aside)
                    return False
                os.remove(aside)
            tmp = f'{lock}.{os.getpid()}.tmp'
            write_json(tmp, {'pid': os.getpid(), 'host': socket.gethostname(), 'since': time.time()})
            try:
                os.link(tmp, lock)
                return True
            except FileExistsError:
                continue
            finally:
                os.remove(tmp)
        return False

    @staticmethod
    def _live(lock):
        try:
            info = read_json(lock)
            return info.get('host') == socket.gethostname() and _alive(int(info['pid']))
        except (OSError, ValueError, KeyError):
            return False

    def prepare(self, run):
        """Create the run's folder, write its spec, clear what an interrupted attempt left (the lock
        is :meth:`claim`'s business)."""
        d = self.path(run.run_id)
        os.makedirs(d, exist_ok=True)
        if os.path.exists(os.path.join(d, 'stdout.log')):
            os.remove(os.path.join(d, 'stdout.log'))
        write_json(os.path.join(d, 'spec.json'), run.to_json())
        return d

    def mark_running(self, run_id, pid):
        write_json(self.path(run_id, 'running.json'), {'pid': pid, 'host': socket.gethostname(), 'since': time.time()})

    def clear_running(self, run_id):
        try:
            os.remove(self.path(run_id, 'running.json'))
        except FileNotFoundError:
            pass

    def attempts(self, run_id):
        p = self.path(run_id, 'error.json')
        return read_json(p).get('attempts', 1) if os.path.isfile(p) else 0

    def record_failure(self, run_id, error, attempts, wall_s):
        write_json(self.path(run_id, 'error.json'), dict(error, attempts=attempts, wall_time_s=wall_s))

    def clear_failure(self, run_id):
        try:
            os.remove(self.path(run_id, 'error.json'))
        except FileNotFoundError:
            pass

    def results(self):
        """``[(spec, result), ...]`` of every finished run in the folder."""
        out = []
        for rid in sorted(os.listdir(self.runs_dir)):
            r, s = self.path(rid, 'result.json'), self.path(rid, 'spec.json')
            if os.path.isfile(r) and os.path.isfile(s):
                out.append((read_json(s), read_json(r)))
        return out
