"""
recbole_ortho.utils.param_match
###############################

Parameter matching, model-agnostic: ``--param_match=OTHER`` widens a model until its number of
trainable parameters is within ``tol`` (2 %) of ``OTHER``'s, so that a GCA variant can be
compared with a base model of the same size. The model declares the hyper-parameter that
widens in its class attribute ``param_match_key`` (ABXI: ``inner_size``, the hidden size of
its SwiGLU networks); :func:`match_parameters` searches its value.
"""

import torch

from recbole_ortho.utils.model_config import ModelConfig
from recbole_ortho.utils.errors import ConfigError


def count_parameters(model, trainable_only=True):
    """Number of (trainable) parameters of ``model``."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only))


def match_parameters(model_class, config, dataset, n_target, tol=0.02, max_builds=40):
    """Value of ``model_class.param_match_key`` that brings the model closest to ``n_target``
    parameters (``config`` gives every other setting).

    The count is assumed to grow with the key's value (monotone, not necessarily linear): the
    search starts from the configured value and its successor, jumps along the secant, and
    ends with a local step search for the closest value (a model whose count is linear in the
    key, such as ABXI, is solved by the first jump: three trial builds). Trial models are built
    under a forked RNG, so the global random state is untouched.

    Returns ``(updates, n_params)``: ``{key: value}`` and the widened model's count. Raises
    :class:`~recbole_ortho.utils.errors.ConfigError` when the model declares no key, when the
    count does not grow with it, or when the best value is not within ``tol`` (relative)."""
    name = model_class.__name__
    key = getattr(model_class, 'param_match_key', None)
    if not key:
        raise ConfigError(f'param_match: model [{name}] cannot be widened (it declares no param_match_key)')
    start = ModelConfig(config, model=name)[key]
    if isinstance(start, bool) or not isinstance(start, int) or start < 1:
        raise ConfigError(f'param_match: {key} of {name} is [{start}]; it must be a positive integer to be widened')
    cache = {}

    def count(v):
        if v not in cache:
            if len(cache) >= max_builds:
                raise ConfigError(f'param_match: no value of {key} found for {name} within {max_builds} trial builds')
            with torch.random.fork_rng(devices=[]):
                cache[v] = count_parameters(model_class(ModelConfig(config, model=name, **{key: v}), dataset))
        return cache[v]

    lo, p_lo = start, count(start)
    hi, p_hi = start + 1, count(start + 1)
    if p_hi <= p_lo:
        raise ConfigError(f'param_match: the parameter count of {name} does not grow with {key} '
                          f'({key}={lo}: {p_lo}, {hi}: {p_hi})')
    v = max(1, start + int(round((n_target - p_lo) / (p_hi - p_lo))))
    for _ in range(8):                                   # secant steps (exact at once when linear)
        p = count(v)
        if p == n_target:
            break
        prev = hi if v != hi else lo
        slope = (p - count(prev)) / (v - prev)
        nxt = max(1, v + int(round((n_target - p) / slope))) if slope > 0 else v
        if nxt == v:
            break
        v = nxt
    if count(v) != n_target:                            # the closest value around the last step
        while v > 1 and abs(count(v - 1) - n_target) < abs(count(v) - n_target):
            v -= 1
        while abs(count(v + 1) - n_target) < abs(count(v) - n_target):
            v += 1
    p = count(v)
    if abs(p - n_target) > tol * n_target:
        raise ConfigError(f'param_match: {name} with {key}={v} has {p} parameters, '
                          f'{100 * (p - n_target) / n_target:+.2f} % from the target {n_target} (tolerance {100 * tol:g} %)')
    return {key: v}, p
