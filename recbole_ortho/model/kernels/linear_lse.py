"""
recbole_ortho.model.kernels.linear_lse
######################################

Two kernels of full-catalogue models (C2DSR; CDSRNP's cross-entropy through
:func:`recbole_ortho.model.loss.domain_cross_entropy`):

- :func:`linear_logsumexp`: ``logsumexp(x @ w^T + b, dim=1)`` for a softmax over every item of a domain,
  keeping one ``[R, N]`` logit matrix for backward (no softmax copy, no concatenation) and turning it into
  the gradient in place;
- :func:`sparse_mm`: ``adj @ x`` for a constant sparse ``adj`` whose transpose is prepared once (the
  backward of ``torch.sparse.mm`` transposes and coalesces ``adj`` at every call).
"""

import torch

from recbole_ortho.model.kernels.amp import LOW_PRECISION, custom_bwd, custom_fwd


class LinearLogSumExp(torch.autograd.Function):
    """See :func:`linear_logsumexp`. Under autocast the matmuls run in bf16 and the softmax in fp32."""

    @staticmethod
    @custom_fwd(cast_inputs=LOW_PRECISION)
    def forward(ctx, x, w, b, chunk):
        z = torch.addmm(b, x, w.t()) if b is not None else x @ w.t()  # [R, N], kept for backward
        lse = torch.empty(z.size(0), dtype=torch.float32 if z.dtype == LOW_PRECISION else z.dtype, device=z.device)
        for s in range(0, z.size(0), chunk):
            zc = z[s:s + chunk].to(lse.dtype)
            m = zc.amax(1, keepdim=True)
            lse[s:s + chunk] = (zc - m).exp_().sum(1).log_() + m.squeeze(1)
        ctx.save_for_backward(x, w, z, lse)
        ctx.chunk = chunk
        return lse

    @staticmethod
    @custom_bwd
    def backward(ctx, grad):
        x, w, z, lse = ctx.saved_tensors
        for s in range(0, z.size(0), ctx.chunk):                      # z -> softmax(z) * grad, in place
            zc = z[s:s + ctx.chunk]
            p = zc.to(lse.dtype).sub_(lse[s:s + ctx.chunk, None]).exp_().mul_(grad[s:s + ctx.chunk, None])
            if p is not zc:
                zc.copy_(p)
        gx = z @ w if ctx.needs_input_grad[0] else None
        gw = z.t() @ x if ctx.needs_input_grad[1] else None
        gb = z.sum(0) if ctx.needs_input_grad[2] else None
        return gx, gw, gb, None


def linear_logsumexp(x, w, b=None, chunk=512):
    """``torch.logsumexp(x @ w.t() + b, dim=1)`` (``x [R, d]``, ``w [N, d]``, ``b [N]`` or None) -> ``[R]``; the
    logits are formed once and become the gradient in place (backward may run once). ``chunk`` rows at a
    time for the max / exp passes."""
    if x.size(0) == 0:
        return (x @ w[:0].t()).sum(1)
    return LinearLogSumExp.apply(x, w, b, chunk)


class SparseMM(torch.autograd.Function):
    """See :func:`sparse_mm`. In fp32 under autocast (the sparse kernels have no bf16 form)."""

    @staticmethod
    @custom_fwd(cast_inputs=torch.float32)
    def forward(ctx, adj, adj_t, x):
        ctx.adj_t = adj_t
        return torch.sparse.mm(adj, x)

    @staticmethod
    @custom_bwd
    def backward(ctx, grad):
        return None, None, torch.sparse.mm(ctx.adj_t, grad)


def sparse_mm(adj, adj_t, x):
    """``adj @ x`` (``adj`` sparse ``[n, m]``, constant; ``adj_t`` its transpose; ``x`` dense ``[m, d]``)."""
    return SparseMM.apply(adj, adj_t, x)
