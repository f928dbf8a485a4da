"""
recbole_ortho.model.registry
############################

Model lookup for ``run_recbole_ortho.py``, the sweeps and the tools: this package's models
(one file per model under ``model/cross_domain_sequential/``, file name = lower-case class
name) first, then RecBole's built-in sequential recommenders. It lives in the model layer so
that nothing under ``utils/`` imports ``model/``.
"""

import importlib
import importlib.util
import pkgutil


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
