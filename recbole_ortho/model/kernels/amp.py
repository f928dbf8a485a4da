"""
recbole_ortho.model.kernels.amp
###############################

Mixed precision for the custom autograd kernels: :func:`custom_fwd` / :func:`custom_bwd` apply
torch's decorators for custom functions (:func:`torch.amp.custom_fwd` /
:func:`torch.amp.custom_bwd`) for the device of the kernel's first tensor argument, CPU or CUDA,
so one kernel serves ``torch.autocast('cpu', torch.bfloat16)`` and
``torch.autocast('cuda', torch.bfloat16)`` (torch's decorators take one fixed device type).

- ``custom_fwd(cast_inputs=torch.bfloat16)`` (the matmul kernels): inside an autocast region the
  floating inputs (parameters included) are cast to bf16 and the forward runs with autocast off;
  the backward runs in the same state, and autograd casts each returned gradient to its input's
  dtype (fp32 parameters get fp32 gradients). The kernels accumulate sums over chunks or rows in
  fp32 and compute the softmax in fp32.
- ``custom_fwd()`` (element-wise kernels: GELU, dropout, row gathers): the forward runs in the
  current autocast state on its input's dtype, and the backward in the same state.

Outside an autocast region both are no-ops: the fp32 path is unchanged, bit for bit.
"""

import functools

import torch

#: the device types the decorators are applied for
DEVICE_TYPES = ('cpu', 'cuda')
#: the dtype the matmul kernels compute in under autocast (the package's only low precision)
LOW_PRECISION = torch.bfloat16


def _device_type(args):
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device.type
    return 'cpu'


def custom_fwd(fwd=None, *, cast_inputs=None):
    """:func:`torch.amp.custom_fwd` for the device of the first tensor argument (see the module
    docstring); use on a ``forward`` staticmethod below ``@staticmethod``."""
    if fwd is None:
        return functools.partial(custom_fwd, cast_inputs=cast_inputs)
    per_device = {d: torch.amp.custom_fwd(fwd, device_type=d, cast_inputs=cast_inputs) for d in DEVICE_TYPES}

    @functools.wraps(fwd)
    def forward(ctx, *args, **kwargs):
        dev = _device_type(args)
        ctx._amp_device_type = dev
        return per_device[dev](ctx, *args, **kwargs) if dev in per_device else fwd(ctx, *args, **kwargs)
    return forward


def custom_bwd(bwd):
    """:func:`torch.amp.custom_bwd` for the device its forward ran on (:func:`custom_fwd`)."""
    per_device = {d: torch.amp.custom_bwd(bwd, device_type=d) for d in DEVICE_TYPES}

    @functools.wraps(bwd)
    def backward(ctx, *grads):
        dev = getattr(ctx, '_amp_device_type', None)
        return per_device[dev](ctx, *grads) if dev in per_device else bwd(ctx, *grads)
    return backward


def accumulation_dtype(t):
    """fp32 for a low-precision tensor (sums over chunks or rows are accumulated in fp32), else
    its own dtype."""
    return torch.float32 if t.dtype in (torch.bfloat16, torch.float16) else t.dtype
