"""
recbole_ortho.model.kernels.pair_projection
###########################################

The fused input projections of
:meth:`recbole_ortho.model.gca.GatedCrossAttention.forward_packed_pair` (both GCA directions
between two sequences at disjoint steps).
"""

import torch

from recbole_ortho.model.kernels.amp import LOW_PRECISION, custom_bwd, custom_fwd


class PairProjection(torch.autograd.Function):
    """The input projections of :meth:`GatedCrossAttention.forward_packed_pair`, from the two
    layers' parameters (``in_proj`` ``W [3d, d]``/``b``, ``gate_fc1`` ``W_1 [d, 2d]``/``b_1``).
    Input ``x_a`` gets ``[q_a | k_b, v_b] = x_a [W^a_q; W^b_kv]^T + b`` (written into one
    ``[Ra + Rb, 3d]`` tensor with ``x_b``'s rows after it; no concatenation) and
    ``g_a = x_a W_1^{a,x T} + b_1^a`` in one GEMM, and ``z_a = x_a[zr_a] W_1^{b,z T}``: layer b's
    gate input ``z`` projected only on the rows ``zr_a`` of ``x_a`` that some query of b reads
    (``None``: layer b's gate reads no row of ``x_a``; ``z_a`` is then ``[0, d]``); ``x_b``
    likewise. The backward accumulates the input gradients in place and returns the
    parameters' gradients in their own shapes (no slicing / concatenation nodes)."""

    @staticmethod
    @custom_fwd(cast_inputs=LOW_PRECISION)
    def forward(ctx, x_a, x_b, w_a, b_a, w1_a, b1_a, w_b, b_b, w1_b, b1_b, zr_a, zr_b):
        d, ra = x_a.size(1), x_a.size(0)
        fa = (torch.cat([w_a[:d], w_b[d:], w1_a[:, :d]]), torch.cat([b_a[:d], b_b[d:], b1_a]))    # rows of x_a
        fb = (torch.cat([w_b[:d], w_a[d:], w1_b[:, :d]]), torch.cat([b_b[:d], b_a[d:], b1_b]))    # rows of x_b
        qkv = x_a.new_empty(ra + x_b.size(0), 3 * d)
        gs, zs, xzs = [], [], []
        for x, (w, b), sl, zr, w1_ot in ((x_a, fa, slice(0, ra), zr_a, w1_b), (x_b, fb, slice(ra, None), zr_b, w1_a)):
            torch.addmm(b[:3 * d], x, w[:3 * d].t(), out=qkv[sl])
            gs.append(torch.addmm(b[3 * d:], x, w[3 * d:].t()))
            xz = None if zr is None else x.index_select(0, zr)
            xzs.append(xz)
            zs.append(x.new_empty(0, d) if xz is None else torch.mm(xz, w1_ot[:, d:].t()))
        ctx.save_for_backward(x_a, x_b, fa[0], fb[0], w1_a, w1_b, zr_a, zr_b, *[t for t in xzs if t is not None])
        ctx.has_z = tuple(t is not None for t in xzs)
        return qkv, gs[0], gs[1], zs[0], zs[1]

    @staticmethod
    @custom_bwd
    def backward(ctx, g_qkv, g_gx_a, g_gx_b, g_z_a, g_z_b):
        x_a, x_b, w_a, w_b, w1_a, w1_b, zr_a, zr_b, *xz = ctx.saved_tensors
        xz = iter(xz)
        xz_a, xz_b = (next(xz) if h else None for h in ctx.has_z)
        d, ra = x_a.size(1), x_a.size(0)
        out = []
        for x, w, gq, gg, gz, zr, xzr, w1_ot in ((x_a, w_a, g_qkv[:ra], g_gx_a, g_z_a, zr_a, xz_a, w1_b),
                                                 (x_b, w_b, g_qkv[ra:], g_gx_b, g_z_b, zr_b, xz_b, w1_a)):
            gw = w.new_zeros(w.shape)
            gb = w.new_zeros(w.size(0))
            gx = torch.mm(gq, w[:3 * d])
            torch.mm(gq.t(), x, out=gw[:3 * d])
            torch.sum(gq, 0, out=gb[:3 * d])
            if gg is not None:
                gx.addmm_(gg, w[3 * d:])
                torch.mm(gg.t(), x, out=gw[3 * d:])
                torch.sum(gg, 0, out=gb[3 * d:])
            gw1z = None                                       # gradient of the other layer's W_1^z
            if xzr is not None and gz is not None and gz.numel():
                gx.index_add_(0, zr, torch.mm(gz, w1_ot[:, d:]))
                gw1z = torch.mm(gz.t(), xzr)
            out.append((gx, gw, gb, gw1z))
        (gxa, gwa, gba, gw1z_b), (gxb, gwb, gbb, gw1z_a) = out

        def params(gw_me, gb_me, gw_ot, gb_ot, gw1z):      # (in_proj W, b, gate_fc1 W, b) of one layer
            w1 = torch.cat([gw_me[3 * d:], gw_me.new_zeros(d, d) if gw1z is None else gw1z], dim=1)
            return (torch.cat([gw_me[:d], gw_ot[d:3 * d]]), torch.cat([gb_me[:d], gb_ot[d:3 * d]]),
                    w1, gb_me[3 * d:])

        return (gxa, gxb) + params(gwa, gba, gwb, gbb, gw1z_a) + params(gwb, gbb, gwa, gba, gw1z_b) + (None, None)

