"""
recbole_ortho.model.kernels.swiglu
##################################

The SwiGLU kernel behind :class:`recbole_ortho.model.layers.SwiGLU`: the forward runs in row
chunks and keeps only its input; the backward recomputes each chunk's hidden pre-activations.
"""

import torch
import torch.nn.functional as F


class SwiGLUFunction(torch.autograd.Function):
    """``y = (SiLU(x W_g^T) * x W_u^T) W_o^T`` on rows ``x [R, d]``, processed in row chunks;
    only ``x`` is kept for backward, which recomputes each chunk's hidden pre-activations, so
    the ``[R, hidden]`` temporaries never exist for all rows at once."""

    @staticmethod
    def forward(ctx, x, w_in, w_out, chunk):
        y = x.new_empty(x.size(0), w_out.size(0))
        for s in range(0, x.size(0), chunk):
            u, g = F.linear(x[s:s + chunk], w_in).chunk(2, dim=-1)
            torch.mm(F.silu(g).mul_(u), w_out.t(), out=y[s:s + chunk])
        ctx.save_for_backward(x, w_in, w_out)
        ctx.chunk = chunk
        return y

    @staticmethod
    def backward(ctx, gy):
        x, w_in, w_out = ctx.saved_tensors
        h = w_out.size(1)
        gx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        g_w_in, g_w_out = torch.zeros_like(w_in), torch.zeros_like(w_out)
        for s in range(0, x.size(0), ctx.chunk):
            xc, gyc = x[s:s + ctx.chunk], gy[s:s + ctx.chunk]
            ug = xc.mm(w_in.t())
            u, g = ug[:, :h], ug[:, h:]
            sig = torch.sigmoid(g)
            silu = g * sig
            g_w_out.addmm_(gyc.t(), silu * u)
            ga = gyc.mm(w_out)                                     # dL/d(activation)
            gug = torch.empty_like(ug)
            torch.mul(ga, silu, out=gug[:, :h])                    # dL/du
            silu.neg_().add_(g).add_(1.0).mul_(sig)                # dSiLU/dg = sig (1 + g - SiLU(g))
            torch.mul(ga, u, out=gug[:, h:]).mul_(silu)            # dL/dg
            if gx is not None:
                torch.mm(gug, w_in, out=gx[s:s + ctx.chunk])
            g_w_in.addmm_(gug.t(), xc)
        return gx, g_w_in, g_w_out, None

