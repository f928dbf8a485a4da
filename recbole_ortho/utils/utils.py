"""
recbole_ortho.utils.utils
#########################

Property-file location, dataset names, threads, and checkpoint loading under torch >= 2.6.
(Model lookup is :mod:`recbole_ortho.model.registry`.)
"""

import os

import torch

from recbole_ortho.utils.paths import properties_dir  # noqa: F401  (re-exported)


def known_datasets():
    """Dataset names that have a property file under ``properties/dataset/``."""
    d = os.path.join(properties_dir(), 'dataset')
    return sorted(f[:-5] for f in os.listdir(d) if f.endswith('.yaml'))


def set_threads(n):
    """Set torch's intra-op threads when ``n`` > 0 (``threads`` setting)."""
    if n and int(n) > 0:
        torch.set_num_threads(int(n))


def load_checkpoint(path, map_location='cpu'):
    """Load a checkpoint written by our trainer.

    torch >= 2.6 defaults to ``weights_only=True``, which refuses RecBole checkpoints (they hold
    the Config object). Our checkpoints are files this package wrote itself, so they are loaded
    with ``weights_only=False`` *at this call site only*; the process-wide default is untouched.
    Never point this at a checkpoint from an untrusted source.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    return torch.load(path, map_location=map_location, weights_only=False)
