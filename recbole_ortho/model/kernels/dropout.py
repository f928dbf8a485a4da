"""
recbole_ortho.model.kernels.dropout
###################################

The dropout kernel behind :class:`recbole_ortho.model.layers.Dropout`: a keep mask cut out of
random 16-bit integers (several times cheaper than ``rand_like`` / ``bernoulli_`` on CPU), kept
as a 1-byte mask for backward and applied as a multiplication.
"""

import torch

from recbole_ortho.model.kernels.amp import custom_bwd, custom_fwd


def keep_mask(x, p):
    """Boolean keep mask of dropout: an element is dropped (False) with probability
    ``round(p * 2^16) / 2^16``, decided by 16-bit uniform integers cut out of random ``int64``
    words (several times cheaper than ``rand_like`` / ``bernoulli_`` on CPU)."""
    n = x.numel()
    words = torch.randint(-2 ** 63, 2 ** 63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
    r = words.view(torch.int16)[:n].view(x.shape)
    return r >= int(round(p * 65536)) - 32768


class DropoutFunction(torch.autograd.Function):
    # ``x * keep`` with the mask viewed as uint8 (0/1) is ~4x cheaper on CPU than
    # ``masked_fill`` (same values; a dropped element is 0 * x = +-0)
    @staticmethod
    @custom_fwd
    def forward(ctx, x, p):
        keep = keep_mask(x, p)
        ctx.scale = 1.0 / (1.0 - p)
        ctx.save_for_backward(keep)
        return torch.mul(x, keep.view(torch.uint8)).mul_(ctx.scale)

    @staticmethod
    @custom_bwd
    def backward(ctx, grad):
        keep, = ctx.saved_tensors
        return torch.mul(grad, keep.view(torch.uint8)).mul_(ctx.scale), None

