"""The custom autograd kernels (recbole_ortho.model.kernels) against plain autograd: values and
gradients (float64 gradcheck where the kernel is differentiable in its inputs)."""

import pytest
import torch
import torch.nn.functional as F

from recbole_ortho.model.gca import GatedCrossAttention
from recbole_ortho.model.kernels import (DropoutFunction, GatheredLogits, PairProjection, SwiGLUFunction, TakeRows,
                                         attention_chunks, gathered_logits, keep_mask, packed_attention,
                                         projected_query_attention, take_rows)
from recbole_ortho.model.layers import Dropout, SwiGLU, masked_attention

D = 16


# ------------------------------------------------------------------ PackedAttention
@pytest.mark.parametrize('self_attn', [True, False])
@pytest.mark.parametrize('zero_empty,keep_grids', [(True, False), (False, False), (False, True), (True, True)])
def test_packed_attention_matches_dense_and_gradcheck(self_attn, zero_empty, keep_grids):
    """packed_attention (length-sorted chunks, explicit softmax, hand-written backward) = dense
    masked SDPA on [n, H, L, dh] grids; gradients checked numerically (float64)."""
    torch.manual_seed(0)
    n_seq, L, H, dh = 5, 7, 2, 4
    d = H * dh
    qm, km = torch.rand(n_seq, L) > 0.3, torch.rand(n_seq, L) > 0.4
    km[2] = False
    if self_attn:
        km = qm
    allowed = km[:, None, :] & torch.ones(L, L, dtype=torch.bool).tril()[None]
    qi, ki = torch.nonzero(qm.reshape(-1)).squeeze(1), torch.nonzero(km.reshape(-1)).squeeze(1)
    q = torch.randn(qi.numel(), 3 * d if self_attn else d, dtype=torch.double, requires_grad=True)
    kv = None if self_attn else torch.randn(ki.numel(), 2 * d, dtype=torch.double, requires_grad=True)
    chunks = attention_chunks(qi, ki, n_seq, L, L, max_chunk_bytes=200, row_bytes=8)    # several chunks
    assert len(chunks) > 1

    def f(*t):
        return packed_attention(t[0], None if self_attn else t[1], chunks, allowed, H, zero_empty=zero_empty,
                                keep_grids=keep_grids)

    inputs = (q,) if self_attn else (q, kv)
    torch.autograd.gradcheck(f, inputs)
    qq, kk, vv = (q[:, :d], q[:, d:2 * d], q[:, 2 * d:]) if self_attn else (q, kv[:, :d], kv[:, d:])
    ki_ = qi if self_attn else ki

    def grid(x, idx):
        g = x.new_zeros(n_seq * L, d)
        g[idx] = x
        return g.view(n_seq, L, H, dh).transpose(1, 2)

    ref, has = masked_attention(grid(qq, qi), grid(kk, ki_), grid(vv, ki_), allowed)
    ref = ref.transpose(1, 2).reshape(n_seq * L, d)[qi]
    out = f(*inputs)
    hq = has.reshape(-1)[qi]
    assert torch.allclose(out[hq], ref[hq], atol=1e-12)
    if zero_empty:
        assert torch.equal(out[~hq], torch.zeros_like(out[~hq]))
    else:
        assert torch.isfinite(out).all()



@pytest.mark.parametrize('bias', [True, False])
def test_projected_query_attention_equals_projecting_every_row(bias):
    """The evaluation shortcut (keys and values never projected) = packed_attention on the
    projected rows, for one query per sequence (the last of some sequences, an inner row of
    others, one sequence whose query sees no key); None when a sequence has two queries."""
    torch.manual_seed(1)
    n_seq, L, H, dh = 6, 9, 2, 4
    d = H * dh
    km = torch.rand(n_seq, L) > 0.3
    km[:, 0] = True
    allowed = km[:, None, :] & torch.ones(L, L, dtype=torch.bool).tril()[None]
    allowed[4] = False                                                    # sequence 4: no key at all
    ki = torch.nonzero(km.reshape(-1)).squeeze(1)
    x = torch.randn(ki.numel(), d, dtype=torch.double)
    in_proj = torch.nn.Linear(d, 3 * d, bias=bias).double()
    if bias:
        torch.nn.init.normal_(in_proj.bias)
    last = torch.stack([ki[ki // L == s].max() for s in range(n_seq)])  # one query per sequence
    last[1] = ki[ki // L == 1].min()                                      # an inner row: later keys masked
    q_rows = torch.searchsorted(ki, last)
    chunks = attention_chunks(ki[q_rows], ki, n_seq, L, L, max_chunk_bytes=300, row_bytes=8)
    assert len(chunks) > 1
    qkv = in_proj(x)
    with torch.no_grad():
        ref = packed_attention(qkv[q_rows, :d], qkv[:, d:], chunks, allowed, H)
        out = projected_query_attention(x, q_rows, in_proj, chunks, allowed, H)
    assert torch.allclose(out, ref, atol=1e-12)
    assert torch.equal(out[4], torch.zeros(d, dtype=torch.double)) and out.abs().sum() > 0
    two = torch.cat([q_rows, q_rows[:1] + 1])                             # sequence 0 twice
    chunks2 = attention_chunks(ki[two], ki, n_seq, L, L)
    with torch.no_grad():
        assert projected_query_attention(x, two, in_proj, chunks2, allowed, H) is None


@pytest.mark.parametrize('self_attn', [True, False])
def test_packed_attention_dropout_matches_dense_reference_and_gradcheck(self_attn):
    """dropout_p > 0: the probabilities of each chunk are multiplied by keep / (1 - p), the keep
    mask drawn by keep_mask on the chunk's [H, n, lq, lk] probabilities; the output equals a dense
    reference with the same mask (one chunk, same seed), and the hand-written backward passes
    gradcheck (the seed is reset before every call, so the mask is fixed)."""
    torch.manual_seed(0)
    n_seq, L, H, dh, p = 4, 6, 2, 3, 0.5
    d = H * dh
    qm = torch.rand(n_seq, L) > 0.3
    km = qm if self_attn else torch.rand(n_seq, L) > 0.3
    allowed = km[:, None, :] & torch.ones(L, L, dtype=torch.bool).tril()[None]
    qi, ki = torch.nonzero(qm.reshape(-1)).squeeze(1), torch.nonzero(km.reshape(-1)).squeeze(1)
    q = torch.randn(qi.numel(), 3 * d if self_attn else d, dtype=torch.double, requires_grad=True)
    kv = None if self_attn else torch.randn(ki.numel(), 2 * d, dtype=torch.double, requires_grad=True)
    inputs = (q,) if self_attn else (q, kv)

    for many in (True, False):
        chunks = attention_chunks(qi, ki, n_seq, L, L, max_chunk_bytes=200 if many else 1 << 30, row_bytes=8)

        def f(*t):
            torch.manual_seed(7)
            return packed_attention(t[0], None if self_attn else t[1], chunks, allowed, H, dropout_p=p)

        torch.autograd.gradcheck(f, inputs)
        with torch.no_grad():                      # the no-grad path draws the same masks
            assert torch.equal(f(*inputs), f(*[x.detach() for x in inputs]))
    # dense reference on the single chunk
    c, = chunks
    qq, kk, vv = (q[:, :d], q[:, d:2 * d], q[:, 2 * d:]) if self_attn else (q, kv[:, :d], kv[:, d:])
    ki_ = qi if self_attn else ki

    def grid(x, idx, length):
        g = x.new_zeros(n_seq * L, d)
        g[idx] = x
        return g.view(n_seq, L, H, dh).permute(2, 0, 1, 3)[:, c.seqs, :length]        # [H, n, l, dh]

    Q, K, V = grid(qq, qi, c.lq), grid(kk, ki_, c.lk), grid(vv, ki_, c.lk)
    m = allowed[c.seqs][:, None, :c.lq, :c.lk].permute(1, 0, 2, 3)
    has = m.any(-1)
    S = (Q @ K.transpose(-1, -2)) * dh ** -0.5
    P = torch.softmax(S.masked_fill(~(m | ~has[..., None]), float('-inf')), dim=-1)
    torch.manual_seed(7)
    keep = keep_mask(P, p)
    O = (P * keep / (1 - p)) @ V * has[..., None]                                      # [H, n, lq, dh]
    ref = O.permute(1, 2, 0, 3).reshape(-1, d)
    slot = {int(s): i for i, s in enumerate(c.seqs)}
    rows = torch.tensor([slot[int(i) // L] * c.lq + int(i) % L for i in qi])
    out = f(*inputs)
    assert torch.allclose(out, ref[rows], atol=1e-12)
    assert not torch.allclose(out, packed_attention(*(inputs if not self_attn else (q, None)), chunks, allowed, H))


# ------------------------------------------------------------------ SwiGLUFunction
def test_swiglu_fused_backward_matches_autograd():
    torch.manual_seed(0)
    m = SwiGLU(D, 24)
    x = torch.randn(5, 7, D, requires_grad=True)
    y = m(x)
    w = torch.randn_like(y)
    grads = torch.autograd.grad((y * w).sum(), [x, m.fc_in.weight, m.fc_out.weight])
    u, gt = F.linear(x, m.fc_in.weight).chunk(2, dim=-1)
    ref = F.linear(F.silu(gt) * u, m.fc_out.weight)
    assert torch.allclose(y, ref, atol=1e-6)
    refs = torch.autograd.grad((ref * w).sum(), [x, m.fc_in.weight, m.fc_out.weight])
    for a, b in zip(grads, refs):
        assert torch.allclose(a, b, atol=1e-5)



def test_swiglu_function_gradcheck():
    torch.manual_seed(0)
    x = torch.randn(9, 6, dtype=torch.double, requires_grad=True)
    w_in = torch.randn(2 * 5, 6, dtype=torch.double, requires_grad=True)
    w_out = torch.randn(6, 5, dtype=torch.double, requires_grad=True)
    torch.autograd.gradcheck(lambda *t: SwiGLUFunction.apply(*t, 4), (x, w_in, w_out))     # chunks of 4 rows


# ------------------------------------------------------------------ DropoutFunction
def test_dropout_distribution_and_gradient():
    torch.manual_seed(0)
    x = torch.ones(400, 500, requires_grad=True)
    for p in (0.1, 0.5):
        d = Dropout(p)
        y = d(x)
        kept = y != 0
        assert abs(1 - kept.float().mean().item() - p) < 0.01
        assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
        g, = torch.autograd.grad(y.sum(), x)
        assert torch.equal(g, y.detach())
        d.eval()
        assert d(x) is x


def test_dropout_function_is_mask_times_scale():
    """Replaying the RNG gives the kernel's mask: output and gradient are x * keep / (1 - p)."""
    x = torch.randn(37, 11, requires_grad=True)
    torch.manual_seed(5)
    y = DropoutFunction.apply(x, 0.3)
    torch.manual_seed(5)
    keep = keep_mask(x, 0.3)
    ref = x * keep.to(x.dtype) / (1 - 0.3)
    assert torch.allclose(y, ref, atol=1e-6)
    w = torch.randn_like(y)
    g, = torch.autograd.grad((y * w).sum(), x)
    r, = torch.autograd.grad((ref * w).sum(), x)
    assert torch.allclose(g, r, atol=1e-6)
    assert 0.6 < keep.float().mean() < 0.8


# ------------------------------------------------------------------ GatheredLogits / TakeRows
def test_gathered_logits_matches_dense():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(5, 3, 8, generator=g, requires_grad=True)
    table = torch.randn(20, 8, generator=g, requires_grad=True)
    idx = torch.randint(0, 20, (5, 6), generator=g)
    out = gathered_logits(h, table, idx, max_chunk_bytes=2 * 6 * 8 * 4)      # chunks of 2 rows
    ref = torch.einsum('bld,bkd->blk', h, table[idx])
    assert torch.allclose(out, ref, atol=1e-6)
    w = torch.randn_like(out)
    gh, gt = torch.autograd.grad((out * w).sum(), (h, table))
    rh, rt = torch.autograd.grad((ref * w).sum(), (h, table))
    assert torch.allclose(gh, rh, atol=1e-5) and torch.allclose(gt, rt, atol=1e-5)


def test_gathered_logits_gradcheck():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(4, 3, 5, dtype=torch.double, generator=g, requires_grad=True)
    table = torch.randn(9, 5, dtype=torch.double, generator=g, requires_grad=True)
    idx = torch.tensor([[1, 1, 4], [0, 8, 2], [3, 3, 3], [7, 6, 5]])           # repeated rows too
    torch.autograd.gradcheck(lambda a, b: GatheredLogits.apply(a, b, idx, 1), (h, table))


@pytest.mark.parametrize('idx', [[4, 0, 2, 7], [5, 1, 3], [2, 2, 0, 7, 2], [6, 6]],
                         ids=['distinct', 'distinct-unsorted', 'repeated', 'all-same'])
def test_take_rows_equals_index_select(idx):
    """Values and gradients of x[idx], distinct or repeated indices (a repeated index
    accumulates its rows' gradients)."""
    idx = torch.tensor(idx)
    x = torch.randn(8, 3, requires_grad=True)
    w = torch.randn(idx.numel(), 3)
    y = take_rows(x, idx)
    ref = x.index_select(0, idx)
    assert torch.equal(y, ref)
    g, = torch.autograd.grad((y * w).sum(), x)
    r, = torch.autograd.grad((ref * w).sum(), x)
    assert torch.allclose(g, r, atol=1e-6)
    xd = x.detach().double().requires_grad_(True)
    torch.autograd.gradcheck(lambda t: TakeRows.apply(t, idx), (xd,))


# ------------------------------------------------------------------ PairProjection
@pytest.mark.parametrize('gate_input', ['concat_other', 'concat_attn'])
def test_pair_projection_equals_plain_projections_and_gradcheck(gate_input):
    """The fused projections of forward_packed_pair = the plain matmuls of both layers' weights."""
    torch.manual_seed(0)
    d = 4
    la, lb = (GatedCrossAttention(d, n_heads=2, gate_input=gate_input).double() for _ in range(2))
    for p in list(la.parameters()) + list(lb.parameters()):
        with torch.no_grad():
            p.add_(0.3 * torch.randn_like(p))
    xa = torch.randn(5, d, dtype=torch.double, requires_grad=True)
    xb = torch.randn(3, d, dtype=torch.double, requires_grad=True)
    zr_a = torch.tensor([0, 3]) if gate_input == 'concat_other' else None      # rows of x_a read by b's gate
    zr_b = torch.tensor([1, 2]) if gate_input == 'concat_other' else None
    params = [la.attn.in_proj.weight, la.attn.in_proj.bias, la.gate_fc1.weight, la.gate_fc1.bias,
              lb.attn.in_proj.weight, lb.attn.in_proj.bias, lb.gate_fc1.weight, lb.gate_fc1.bias]
    qkv, gx_a, gx_b, z_a, z_b = PairProjection.apply(xa, xb, *params, zr_a, zr_b)
    wa, ba, w1a, b1a, wb, bb, w1b, b1b = params
    assert torch.allclose(qkv[:5, :d], F.linear(xa, wa[:d], ba[:d]))                # q of a
    assert torch.allclose(qkv[:5, d:], F.linear(xa, wb[d:], bb[d:]))                # k, v for b
    assert torch.allclose(qkv[5:, :d], F.linear(xb, wb[:d], bb[:d]))
    assert torch.allclose(qkv[5:, d:], F.linear(xb, wa[d:], ba[d:]))
    assert torch.allclose(gx_a, F.linear(xa, w1a[:, :d], b1a)) and torch.allclose(gx_b, F.linear(xb, w1b[:, :d], b1b))
    if zr_a is not None:
        assert torch.allclose(z_a, xa[zr_a] @ w1b[:, d:].t()) and torch.allclose(z_b, xb[zr_b] @ w1a[:, d:].t())
    else:
        assert z_a.shape == (0, d) and z_b.shape == (0, d)
    torch.autograd.gradcheck(lambda *t: PairProjection.apply(*t, zr_a, zr_b), (xa, xb, *params))
