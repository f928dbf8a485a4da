"""
recbole_ortho.utils.provenance
##############################

Where a result came from, recorded in every ``result.json`` (``run_recbole_ortho``, the sweeps,
``run_hyper.py``) under ``provenance``:

- ``package_version``: the version of recbole_ortho;
- ``git_commit`` / ``git_dirty``: the commit of the checkout the package was imported from, and
  whether tracked files of the package code (``recbole_ortho/``) or its property files
  (``properties/``) differed from it; ``unknown`` / ``None`` when the package does not run from a
  git checkout (e.g. an installed wheel);
- ``versions``: python, torch, numpy, recbole, recbole-cdr;
- ``device``: the CPU model (or the GPU's name on CUDA) and torch's thread count;
- ``precision``: the arithmetic the run used; ``precision_emulated``: bf16 ran without bf16 hardware
  (``bf16_emulation``), the same roundings but not the speed.

No host name and no path is recorded.
"""

import os
import platform
import subprocess
from functools import lru_cache
from importlib import metadata

import torch

from recbole_ortho.utils.precision import is_emulated

#: the paths (relative to the checkout) whose changes make a run's code differ from its commit
CODE_PATHS = ('recbole_ortho', 'properties')


def _version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return 'unknown'


def _git(root, *args):
    out = subprocess.run(['git', '-C', root, *args], capture_output=True, text=True, timeout=20)
    if out.returncode != 0:
        raise OSError(out.stderr.strip())
    return out.stdout


def git_state(package_dir=None):
    """``(commit, dirty)`` of the git checkout holding the package, ``('unknown', None)`` outside one
    (or without git)."""
    package_dir = package_dir or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    root = os.path.dirname(package_dir)
    try:
        top = _git(root, 'rev-parse', '--show-toplevel').strip()
        if os.path.realpath(top) != os.path.realpath(root):      # the package is not the checkout's own
            return 'unknown', None
        commit = _git(root, 'rev-parse', 'HEAD').strip()
        status = _git(root, 'status', '--porcelain', '--untracked-files=no', '--', *CODE_PATHS)
        return commit, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return 'unknown', None


@lru_cache(maxsize=1)
def cpu_model():
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.lower().startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or 'unknown'


def device_info(device=None):
    """``{'cpu', 'gpu', 'threads'}``: the GPU's name when ``device`` is a CUDA device, else None."""
    gpu = None
    device = torch.device(device) if device is not None else torch.device('cpu')
    if device.type == 'cuda' and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(device)
    return {'cpu': cpu_model(), 'gpu': gpu, 'threads': torch.get_num_threads()}


def provenance(device=None, precision='fp32'):
    """The ``provenance`` block of a result (see the module docstring)."""
    import recbole_ortho
    commit, dirty = git_state()
    return {
        'package_version': recbole_ortho.__version__,
        'git_commit': commit,
        'git_dirty': dirty,
        'versions': {'python': platform.python_version(), 'torch': torch.__version__,
                     'numpy': _version('numpy'), 'recbole': _version('recbole'),
                     'recbole_cdr': _version('recbole-cdr')},
        'device': device_info(device),
        'precision': precision,
        # bf16 on a CPU without bf16 hardware (bf16_emulation): the same numbers, not the speed
        'precision_emulated': is_emulated(precision, device or 'cpu'),
    }
