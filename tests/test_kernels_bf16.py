"""The custom autograd kernels under ``torch.autocast('cpu', torch.bfloat16)`` against plain autograd.

Each kernel is declared with torch's autocast decorators for custom functions
(recbole_ortho/model/kernels/amp.py). Under autocast the matmul kernels compute in bf16 (inputs
cast, sums over chunks and the softmax in fp32), the element-wise ones in their input's dtype;
every gradient comes back in its leaf's dtype (fp32 parameters get fp32 gradients).

Stated tolerance: bf16 keeps 8 significant bits (unit roundoff 2^-8 = 3.9e-3). A value or gradient
is accepted when its largest error, relative to the largest magnitude of the fp32 reference, is
at most ``TOL`` = 3e-2 (a few roundoffs through two matmuls); the same kernels in fp32 agree to
1e-6 (tests/test_kernels.py). Each test also checks that bf16 really ran (the error is not 0).
"""

import pytest
import torch
import torch.nn.functional as F

from recbole_ortho.model.gca import GatedCrossAttention
from recbole_ortho.model.kernels import (DropoutFunction, GatheredLogits, GELUFunction, PairProjection, SwiGLUFunction,
                                         TakeRows, attention_chunks, packed_attention)

TOL = 3e-2


def rel_err(a, b):
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def grads(out, w, leaves):
    return torch.autograd.grad((out.float() * w).sum(), leaves)


def autocast():
    return torch.autocast('cpu', dtype=torch.bfloat16)


def check(fn, ref_fn, leaves, low_precision_output=True):
    """``fn`` under autocast against ``ref_fn`` in fp32 (values and gradients)."""
    ref = ref_fn(*leaves)
    w = torch.randn(ref.shape, generator=torch.Generator().manual_seed(9))
    ref_g = grads(ref, w, leaves)
    with autocast():
        out = fn(*leaves)
    assert out.dtype == (torch.bfloat16 if low_precision_output else leaves[0].dtype)
    out_g = grads(out, w, leaves)
    errs = [rel_err(out, ref)] + [rel_err(a, b) for a, b in zip(out_g, ref_g)]
    for g, leaf in zip(out_g, leaves):
        assert g.dtype == leaf.dtype == torch.float32
    assert max(errs) <= TOL, errs
    return errs


def test_swiglu_bf16():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 32, generator=g, requires_grad=True)
    w_in = (torch.randn(2 * 48, 32, generator=g) / 6).requires_grad_()
    w_out = (torch.randn(32, 48, generator=g) / 7).requires_grad_()

    def ref(x, a, b):
        u, gt = F.linear(x, a).chunk(2, dim=-1)
        return F.linear(F.silu(gt) * u, b)
    errs = check(lambda *t: SwiGLUFunction.apply(*t, 64), ref, (x, w_in, w_out))       # 5 chunks of rows
    assert max(errs) > 1e-4                                                              # bf16 did run


def test_gathered_logits_bf16_accumulates_the_table_gradient_in_fp32():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(16, 5, 32, generator=g, requires_grad=True)
    table = torch.randn(40, 32, generator=g, requires_grad=True)
    idx = torch.randint(0, 40, (16, 12), generator=g)          # many repeats: the table's rows sum many terms
    errs = check(lambda a, b: GatheredLogits.apply(a, b, idx, 3), lambda a, b: torch.einsum('bld,bkd->blk', a, b[idx]),
                 (h, table))
    assert max(errs) > 1e-4


@pytest.mark.parametrize('self_attn', [True, False])
@pytest.mark.parametrize('dropout_p', [0.0, 0.2])
def test_packed_attention_bf16(self_attn, dropout_p):
    g = torch.Generator().manual_seed(2)
    n_seq, L, H, dh = 6, 9, 2, 8
    d = H * dh
    qm = torch.rand(n_seq, L, generator=g) > 0.3
    km = qm if self_attn else torch.rand(n_seq, L, generator=g) > 0.4
    allowed = km[:, None, :] & torch.ones(L, L, dtype=torch.bool).tril()[None]
    qi, ki = torch.nonzero(qm.reshape(-1)).squeeze(1), torch.nonzero(km.reshape(-1)).squeeze(1)
    q = torch.randn(qi.numel(), 3 * d if self_attn else d, generator=g, requires_grad=True)
    kv = None if self_attn else torch.randn(ki.numel(), 2 * d, generator=g, requires_grad=True)
    chunks = attention_chunks(qi, ki, n_seq, L, L, max_chunk_bytes=400, row_bytes=4)
    leaves = (q,) if self_attn else (q, kv)

    def f(*t):
        torch.manual_seed(5)                                    # the same dropout masks in both runs
        return packed_attention(t[0], None if self_attn else t[1], chunks, allowed, H, dropout_p=dropout_p)
    check(f, f, leaves)
    with torch.no_grad(), autocast():                           # the evaluation path (no autograd)
        out = f(*leaves)
    assert out.dtype == torch.bfloat16 and rel_err(out, f(*leaves)) <= TOL


@pytest.mark.parametrize('gate_input', ['concat_other', 'concat_attn'])
def test_pair_projection_bf16(gate_input):
    torch.manual_seed(0)
    d = 16
    la, lb = GatedCrossAttention(d, n_heads=2, gate_input=gate_input), GatedCrossAttention(d, n_heads=2, gate_input=gate_input)
    params = [la.attn.in_proj.weight, la.attn.in_proj.bias, la.gate_fc1.weight, la.gate_fc1.bias,
              lb.attn.in_proj.weight, lb.attn.in_proj.bias, lb.gate_fc1.weight, lb.gate_fc1.bias]
    xa = torch.randn(20, d, requires_grad=True)
    xb = torch.randn(12, d, requires_grad=True)
    zr_a, zr_b = (torch.tensor([0, 3, 7]), torch.tensor([1, 2])) if gate_input == 'concat_other' else (None, None)
    w = [torch.randn(s, generator=torch.Generator().manual_seed(i)) for i, s in
         enumerate([(32, 3 * d), (20, d), (12, d)])]

    def loss(outs):
        qkv, gx_a, gx_b = outs[:3]
        return sum((o.float() * wi).sum() for o, wi in zip((qkv, gx_a, gx_b), w))

    leaves = [xa, xb] + params
    ref = loss(PairProjection.apply(*leaves, zr_a, zr_b))
    ref_g = torch.autograd.grad(ref, leaves)
    with autocast():
        outs = PairProjection.apply(*leaves, zr_a, zr_b)
    assert all(o.dtype == torch.bfloat16 for o in outs[:3])
    out_g = torch.autograd.grad(loss(outs), leaves)
    for a, b, leaf in zip(out_g, ref_g, leaves):
        assert a.dtype == leaf.dtype == torch.float32
        assert rel_err(a, b) <= TOL


def test_elementwise_kernels_keep_their_input_dtype_under_autocast():
    """GELU, dropout and row gathers are not cast: on fp32 input they give exactly the fp32 result under
    autocast, and on bf16 input they run in bf16."""
    x = torch.randn(50, 8, requires_grad=True)
    with autocast():
        y = GELUFunction.apply(x)
        torch.manual_seed(3)
        z = DropoutFunction.apply(x, 0.25)
        r = TakeRows.apply(x, torch.tensor([3, 3, 1]))
    assert y.dtype == z.dtype == r.dtype == torch.float32
    assert torch.equal(y, GELUFunction.apply(x))
    torch.manual_seed(3)
    assert torch.equal(z, DropoutFunction.apply(x, 0.25))                   # the same mask, the same values
    xb = x.detach().bfloat16().requires_grad_()
    with autocast():
        yb = GELUFunction.apply(xb)
    assert yb.dtype == torch.bfloat16
    gb, = torch.autograd.grad(yb.float().sum(), xb)
    gf, = torch.autograd.grad(F.gelu(x).sum(), x)
    assert gb.dtype == torch.bfloat16 and rel_err(gb, gf) <= TOL
