"""
recbole_ortho.model.kernels.swiglu
##################################

The SwiGLU kernel behind :class:`recbole_ortho.model.layers.SwiGLU`: the forward runs in row
chunks and keeps only its input; the backward recomputes each chunk's hidden pre-activations.
"""

import torch
import torch.nn.functional as F

from recbole_ortho.model.kernels.amp import LOW_PRECISION, accumulation_dtype, custom_bwd, custom_fwd


def _add_mm(out, a, b):
    """``out += a @ b`` (``out`` in fp32 when ``a``, ``b`` are bf16)."""
    if out.dtype == a.dtype:
        out.addmm_(a, b)
    else:
        out.add_(torch.mm(a, b))


class SwiGLUFunction(torch.autograd.Function):
    """``y = (SiLU(x W_g^T) * x W_u^T) W_o^T`` on rows ``x [R, d]``, processed in row chunks;
    only ``x`` is kept for backward, which recomputes each chunk's hidden pre-activations, so
    the ``[R, hidden]`` temporaries never exist for all rows at once."""

    @staticmethod
    @custom_fwd(cast_inputs=LOW_PRECISION)
    def forward(ctx, x, w_in, w_out, chunk):
        y = x.new_empty(x.size(0), w_out.size(0))
        for s in range(0, x.size(0), chunk):
            u, g = F.linear(x[s:s + chunk], w_in).chunk(2, dim=-1)
            torch.mm(F.silu(g).mul_(u), w_out.t(), out=y[s:s + chunk])
        ctx.save_for_backward(x, w_in, w_out)
        ctx.chunk = chunk
        return y

    @staticmethod
    @custom_bwd
    def backward(ctx, gy):
        x, w_in, w_out = ctx.saved_tensors
        h = w_out.size(1)
        gx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        acc = accumulation_dtype(w_in)                          # the weights' gradients sum over chunks
        g_w_in, g_w_out = torch.zeros_like(w_in, dtype=acc), torch.zeros_like(w_out, dtype=acc)
        for s in range(0, x.size(0), ctx.chunk):
            xc, gyc = x[s:s + ctx.chunk], gy[s:s + ctx.chunk]
            ug = xc.mm(w_in.t())
            u, g = ug[:, :h], ug[:, h:]
            sig = torch.sigmoid(g)
            silu = g * sig
            _add_mm(g_w_out, gyc.t(), silu * u)
            ga = gyc.mm(w_out)                                     # dL/d(activation)
            gug = torch.empty_like(ug)
            torch.mul(ga, silu, out=gug[:, :h])                    # dL/du
            silu.neg_().add_(g).add_(1.0).mul_(sig)                # dSiLU/dg = sig (1 + g - SiLU(g))
            torch.mul(ga, u, out=gug[:, h:]).mul_(silu)            # dL/dg
            if gx is not None:
                torch.mm(gug, w_in, out=gx[s:s + ctx.chunk])
            _add_mm(g_w_in, gug.t(), xc)
        return gx, g_w_in, g_w_out, None

