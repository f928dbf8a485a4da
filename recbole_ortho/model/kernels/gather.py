"""
recbole_ortho.model.kernels.gather
##################################

Row gathers with cheap backward passes:

- :func:`gathered_logits`: ``h @ table[idx]^T`` per row group without keeping the gathered
  ``[.., K, d]`` candidate embeddings (the logits of sampled negatives),
- :func:`take_rows`: ``x[idx]`` along dim 0 whose backward is a scatter (``index_copy``) when the
  indices are distinct and a scatter-add otherwise.
"""

import torch

from recbole_ortho.model.kernels.amp import LOW_PRECISION, accumulation_dtype, custom_bwd, custom_fwd


class GatheredLogits(torch.autograd.Function):
    """``out[b, l, k] = <h[b, l], table[idx[b, k]]>`` computed ``chunk`` rows of ``b`` at a time
    (see :func:`gathered_logits`); the backward gathers the candidate rows again per chunk and
    accumulates the table's (dense) gradient with ``index_add``."""

    @staticmethod
    @custom_fwd(cast_inputs=LOW_PRECISION)
    def forward(ctx, h, table, idx, chunk):
        out = h.new_empty(h.size(0), h.size(1), idx.size(1))
        for s in range(0, idx.size(0), chunk):
            torch.bmm(h[s:s + chunk], table[idx[s:s + chunk]].transpose(1, 2), out=out[s:s + chunk])
        ctx.save_for_backward(h, table, idx)
        ctx.chunk = chunk
        return out

    @staticmethod
    @custom_bwd
    def backward(ctx, grad):
        h, table, idx = ctx.saved_tensors
        chunk = ctx.chunk
        gh = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        gt = torch.zeros_like(table, dtype=accumulation_dtype(table)) if ctx.needs_input_grad[1] else None
        for s in range(0, idx.size(0), chunk):
            g, ii = grad[s:s + chunk], idx[s:s + chunk]
            if gh is not None:
                torch.bmm(g, table[ii], out=gh[s:s + chunk])
            if gt is not None:
                gt.index_add_(0, ii.reshape(-1), torch.bmm(g.transpose(1, 2), h[s:s + chunk]).reshape(-1, h.size(2)).to(gt.dtype))
        return gh, gt, None, None


class TakeRows(torch.autograd.Function):
    """``x[idx]`` along dim 0. Backward: a scatter (``index_copy``) when the indices are distinct
    (checked in the forward pass with one boolean scatter, ``O(len(x) + len(idx))``), otherwise a
    scatter-add, so repeated indices accumulate their gradients as autograd's ``index_select``
    does. ``index_copy`` is about 3x cheaper than ``index_add`` on CPU."""

    @staticmethod
    @custom_fwd
    def forward(ctx, x, idx):
        seen = torch.zeros(x.size(0), dtype=torch.bool, device=x.device)
        seen[idx] = True
        ctx.distinct = int(seen.sum()) == idx.numel()
        ctx.save_for_backward(idx)
        ctx.n = x.size(0)
        return x.index_select(0, idx)

    @staticmethod
    @custom_bwd
    def backward(ctx, grad):
        idx, = ctx.saved_tensors
        out = grad.new_zeros((ctx.n,) + tuple(grad.shape[1:]))
        if ctx.distinct:
            return out.index_copy_(0, idx, grad), None
        return out.index_add_(0, idx, grad), None


def take_rows(x, idx):
    """``x[idx]`` along dim 0 (:class:`TakeRows`): the same values and gradients as
    ``x.index_select(0, idx)``, with a cheaper backward when the indices are distinct."""
    return TakeRows.apply(x, idx)


def gathered_logits(h, table, idx, max_chunk_bytes=1 << 24):
    """``out[b, l, k] = <h[b, l], table[idx[b, k]]>`` for ``h [B, L, d]``, ``idx [B, K]``
    (``[B, L, K]``), computed in chunks of ``b`` so that at most ``max_chunk_bytes`` of gathered
    candidate embeddings exist at a time, in the forward and in the backward pass (the
    gradient of ``table`` is dense)."""
    K, d = idx.size(1), table.size(1)
    chunk = max(1, max_chunk_bytes // (K * d * table.element_size()))
    return GatheredLogits.apply(h, table, idx, chunk)

