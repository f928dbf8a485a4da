"""
recbole_ortho.utils.utils
#########################

Model lookup (ours first, then RecBole's built-in sequential models), property-file
location, threads, and checkpoint loading under torch >= 2.6.
"""

import importlib
import importlib.util
import os
import pkgutil

import torch

from recbole_ortho.utils.paths import properties_dir  # noqa: F401  (re-exported)


def _our_model_modules():
    import recbole_ortho.model.cross_domain_sequential as pkg
    return [m.name for m in pkgutil.iter_modules(pkg.__path__)]


def known_models():
    """Names of the models ``run_recbole_ortho.py`` can run: ours and RecBole's sequential ones."""
    ours = []
    for mod in _our_model_modules():
        module = importlib.import_module(f'recbole_ortho.model.cross_domain_sequential.{mod}')
        ours += [n for n, obj in vars(module).items()
                 if isinstance(obj, type) and n.lower() == mod and getattr(obj, '__module__', '') == module.__name__]
    import recbole.model.sequential_recommender as seq
    builtin = []
    for m in pkgutil.iter_modules(seq.__path__):
        module = importlib.import_module(f'recbole.model.sequential_recommender.{m.name}')
        builtin += [n for n, obj in vars(module).items()
                    if isinstance(obj, type) and n.lower() == m.name and getattr(obj, '__module__', '') == module.__name__]
    return sorted(ours), sorted(builtin)


def get_model(model_name):
    """Return the model class called ``model_name``: this package's models first, then
    RecBole's built-in sequential recommenders. Raises ``ValueError`` listing the known ones."""
    file_name = model_name.lower()
    for prefix in ('recbole_ortho.model.cross_domain_sequential', 'recbole.model.sequential_recommender'):
        path = f'{prefix}.{file_name}'
        if importlib.util.find_spec(path) is not None:
            module = importlib.import_module(path)
            if hasattr(module, model_name):
                return getattr(module, model_name)
    ours, builtin = known_models()
    raise ValueError(
        f'Unknown model [{model_name}]. Models of recbole_ortho: {", ".join(ours)}; '
        f'RecBole sequential models: {", ".join(builtin)}.')


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
