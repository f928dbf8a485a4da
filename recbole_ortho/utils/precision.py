"""
recbole_ortho.utils.precision
#############################

The ``precision`` setting: ``fp32`` (default: the official codes' precision and the golden runs')
or ``bf16``, which trains and evaluates under ``torch.autocast(<device>, torch.bfloat16)``.

Under bf16 the matrix products run in bf16 (``F.linear``/``matmul`` by autocast, the custom
kernels by their autocast decorators, :mod:`recbole_ortho.model.kernels.amp`); the parameters and
the optimizer state stay fp32, and the losses (:mod:`recbole_ortho.model.loss`), LayerNorm
(:class:`recbole_ortho.model.layers.LayerNorm`), the softmax / log-sum-exp and the orthogonality
statistics (:mod:`recbole_ortho.model.ortho`) compute in fp32.

bf16 needs hardware that runs it: a CPU with ``avx512_bf16`` or ``amx_bf16`` (elsewhere oneDNN
emulates bf16, several times slower than fp32), or a CUDA GPU with bf16
(``torch.cuda.is_bf16_supported()``). Elsewhere ``bf16`` falls back to fp32 with one warning line,
and the result JSON's provenance says which precision actually ran.

``bf16_emulation: True`` runs ``bf16`` on a CPU without bf16 hardware anyway, through oneDNN's
emulation: the same bf16 roundings (bf16 inputs, fp32 accumulation), several times slower than
fp32. It exists for the accuracy check of bf16 (``properties/sweep/food_kitchen_precision.yaml``)
on machines that have no bf16 hardware; such a result's provenance says ``precision_emulated``.
"""

import contextlib
import os
from logging import getLogger

import torch

from recbole_ortho.utils.errors import ConfigError

PRECISIONS = ('fp32', 'bf16')
#: CPU flags (``/proc/cpuinfo``) that run bf16 matrix products in hardware
CPU_BF16_FLAGS = ('avx512_bf16', 'amx_bf16')


def cpu_flags(path='/proc/cpuinfo'):
    """The CPU's feature flags (empty where ``/proc/cpuinfo`` is not readable)."""
    if not os.path.isfile(path):
        return set()
    with open(path) as f:
        for line in f:
            if line.startswith('flags'):
                return set(line.split(':', 1)[1].split())
    return set()


def bf16_supported(device):
    """Whether ``device`` (a ``torch.device`` or its type) runs bf16 matrix products in hardware."""
    kind = device.type if isinstance(device, torch.device) else str(device).split(':')[0]
    if kind == 'cuda':
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if kind == 'cpu':
        return bool(cpu_flags() & set(CPU_BF16_FLAGS))
    return False


def resolve_precision(requested, device, emulate=False):
    """The precision a run uses: ``requested`` (``fp32`` or ``bf16``; another value raises a
    :class:`ConfigError` naming the key), or ``fp32`` with one warning when ``bf16`` was asked for
    on a device without bf16 hardware, unless ``emulate`` (``bf16_emulation``) asks for bf16 on
    a CPU all the same (one warning: emulated, slow)."""
    requested = 'fp32' if requested is None else str(requested)
    if requested not in PRECISIONS:
        raise ConfigError(f"precision: [{requested}] must be one of {', '.join(PRECISIONS)}")
    if emulate not in (True, False, None):
        raise ConfigError(f'bf16_emulation: [{emulate}] must be True or False')
    if requested == 'bf16' and not bf16_supported(device):
        kind = device.type if isinstance(device, torch.device) else str(device)
        if emulate and kind.split(':')[0] == 'cpu':
            getLogger().warning('precision: bf16 on a CPU without bf16 hardware, emulated by oneDNN '
                                '(bf16_emulation: True): the bf16 numbers, several times slower than fp32')
            return 'bf16'
        getLogger().warning(f'precision: bf16 asked for, but this {kind} has no bf16 hardware '
                            f"({' / '.join(CPU_BF16_FLAGS) if kind == 'cpu' else 'torch.cuda.is_bf16_supported()'}); "
                            f'running in fp32')
        return 'fp32'
    return requested


def is_emulated(precision, device):
    """Whether ``precision`` runs on ``device`` without bf16 hardware (``bf16_emulation``)."""
    return precision == 'bf16' and not bf16_supported(device)


def autocast(precision, device):
    """The context a training step or an evaluation pass runs in: bf16 autocast on ``device``'s
    type for ``bf16``, nothing for ``fp32``."""
    if precision == 'bf16':
        kind = device.type if isinstance(device, torch.device) else str(device).split(':')[0]
        return torch.autocast(kind, dtype=torch.bfloat16)
    return contextlib.nullcontext()
