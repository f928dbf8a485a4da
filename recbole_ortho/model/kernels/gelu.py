"""
recbole_ortho.model.kernels.gelu
################################

The exact (erf) GELU of the GCA gate and of the packed SASRec encoder, computed with ATen's
element-wise ops instead of ``F.gelu`` on CPU.

Why: on CPU, ``F.gelu`` of a contiguous float tensor runs as a oneDNN primitive that is
JIT-compiled for each new input *shape* and kept in oneDNN's primitive cache (forward and
backward apart). The packed rows give a new row count in almost every batch, so every training
step compiled new kernels and the process grew by about 0.5 MB per new shape, without bound
(the heap memory is not reused nor given back, also after the cache evicts a primitive):
ABXI_GCA on Food-Kitchen grew by ~120 MB per epoch, CDSRNP_GCA by ~450 MB. ``erf``, ``exp``
and the arithmetic below are plain ATen kernels with no per-shape state. Same formula,
``x / 2 * (1 + erf(x / sqrt(2)))``, at least as accurate as oneDNN's (max error 4.4e-7 vs
1.2e-6 on [-10, 10], float32); other devices use ``F.gelu``. Tested in ``tests/test_memory.py``.
"""

import math

import torch
import torch.nn.functional as F

from recbole_ortho.model.kernels.amp import custom_bwd, custom_fwd

_SQRT1_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _gelu(x):
    return (x * _SQRT1_2).erf_().add_(1.0).mul_(x * 0.5)


class GELUFunction(torch.autograd.Function):
    """Exact GELU; keeps only its input for backward (as ``F.gelu``):
    ``d/dx = Phi(x) + x phi(x)``."""

    @staticmethod
    @custom_fwd
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _gelu(x)

    @staticmethod
    @custom_bwd
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        cdf = (x * _SQRT1_2).erf_().add_(1.0).mul_(0.5)
        pdf = x.square().mul_(-0.5).exp_().mul_(_INV_SQRT_2PI)
        return grad * cdf.addcmul_(x, pdf)


def gelu(x):
    """Exact (erf) GELU, ``F.gelu(x)`` up to rounding, without oneDNN's per-shape kernels on CPU
    (see the module docstring)."""
    if x.device.type != 'cpu':
        return F.gelu(x)
    if torch.is_grad_enabled() and x.requires_grad:
        return GELUFunction.apply(x)
    return _gelu(x)
