"""Unit tests of the shared GCA layer (recbole_ortho.model.layers) and of its use in ABXI_GCA."""

import itertools
import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest_models import FakeDataset, make_config, random_sequences, train_batch  # noqa: E402

from recbole_ortho.model.gca import GatedCrossAttention  # noqa: E402
from recbole_ortho.model.layers import causal_key_mask  # noqa: E402
from recbole_ortho.model.ortho import abs_cosine, masked_row_mean  # noqa: E402
from recbole_ortho.utils.param_match import count_parameters  # noqa: E402

D = 16
COMBOS = list(itertools.product(('sigmoid', 'tanh'), (4, 8), (True, False), ('concat_other', 'concat_attn')))


def _layer(activation='sigmoid', heads=4, layer_norm=True, gate_input='concat_other', seed=0):
    torch.manual_seed(seed)
    layer = GatedCrossAttention(D, n_heads=heads, activation=activation, layer_norm=layer_norm,
                                gate_input=gate_input, dropout=0.0)
    with torch.no_grad():                       # non-trivial gate (zero biases -> constant gate)
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return layer.eval()


def _inputs(B=3, L=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, L, D, generator=g), torch.randn(B, L, D, generator=g)


# ------------------------------------------------------------------ masks / causality
def test_causal_key_mask():
    km = torch.tensor([[True, False, True]])
    m = causal_key_mask(km)
    expected = torch.tensor([[[True, False, False], [True, False, False], [True, False, True]]])
    assert torch.equal(m, expected)


@pytest.mark.parametrize('gate_input', ['concat_other', 'concat_attn'])
def test_no_future_leak(gate_input):
    layer = _layer(gate_input=gate_input)
    x, kv = _inputs()
    L = x.size(1)
    y = layer(x, kv)
    for t in range(L - 1):
        kv2 = kv.clone()
        kv2[:, t + 1:] += torch.randn_like(kv2[:, t + 1:])         # change only steps > t
        y2 = layer(x, kv2)
        assert torch.allclose(y[:, :t + 1], y2[:, :t + 1], atol=1e-6), t
        assert not torch.allclose(y[:, t + 1:], y2[:, t + 1:], atol=1e-4)
    for s in range(L):                                               # a change at step s <= t shows at t
        kv3 = kv.clone()
        kv3[:, s] += 1.0
        y3 = layer(x, kv3)
        assert (y3[:, s:] - y[:, s:]).abs().amax(dim=(0, 2)).min() > 1e-5, s
        assert torch.allclose(y3[:, :s], y[:, :s], atol=1e-6)


def test_padding_keys_never_attended():
    layer = _layer(gate_input='concat_other')
    x, kv = _inputs()
    other = torch.randn_like(kv)
    key_mask = torch.rand(kv.shape[:2], generator=torch.Generator().manual_seed(3)) > 0.4
    key_mask[:, 0] = True
    y = layer(x, kv, key_mask=key_mask, other=other)
    kv2 = kv.clone()
    kv2[~key_mask] = 100.0 * torch.randn_like(kv2[~key_mask])
    y2 = layer(x, kv2, key_mask=key_mask, other=other)
    assert torch.allclose(y, y2, atol=1e-6)
    # and the attention output is exactly the softmax over the allowed keys only
    x_att, has = layer.attn(x, kv, causal_key_mask(key_mask))
    x_att2, _ = layer.attn(x, kv2, causal_key_mask(key_mask))
    assert torch.allclose(x_att, x_att2, atol=1e-6) and has.all()


@pytest.mark.parametrize('layer_norm', [True, False])
def test_query_without_key_gets_zero_attention(layer_norm):
    layer = _layer(layer_norm=layer_norm)
    x, kv = _inputs()
    key_mask = torch.ones(kv.shape[:2], dtype=torch.bool)
    key_mask[0] = False                  # user 0: no key at all
    key_mask[1, :3] = False              # user 1: steps 0..2 have no key yet
    x.requires_grad_(True)
    kv.requires_grad_(True)
    y, st = layer(x, kv, key_mask=key_mask, return_stats=True)
    assert torch.isfinite(y).all()
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(kv.grad).all()
    x_att, has = layer.attn(x, kv, causal_key_mask(key_mask))
    assert not has[0].any() and not has[1, :3].any() and has[1, 3:].all()
    assert torch.equal(x_att[0], torch.zeros_like(x_att[0]))
    ref = layer.norm(x[0])               # X' = 0 -> GCA = LN(X)
    assert torch.allclose(y[0], ref, atol=1e-6)
    assert torch.isnan(st['ortho'][0]) and torch.isfinite(st['ortho'][1:]).all()


@pytest.mark.parametrize('gate_input', ['concat_other', 'concat_attn'])
def test_packed_rows_equal_padded_tensors(gate_input):
    layer = _layer(gate_input=gate_input)
    x, kv = _inputs(B=4, L=9)
    g = torch.Generator().manual_seed(7)
    qm = torch.rand(4, 9, generator=g) > 0.3                       # query steps with a state
    km = torch.rand(4, 9, generator=g) > 0.4                       # key steps
    km[3] = False                                                   # a sequence without keys
    om = torch.rand(4, 9, generator=g) > 0.2                       # steps where `other` exists
    other = torch.randn(4, 9, D, generator=g) * om[..., None]
    y, st = layer(x, kv, key_mask=km, other=other, query_mask=qm, other_mask=om, return_stats=True)
    qi, ki = torch.nonzero(qm.reshape(-1)).squeeze(1), torch.nonzero(km.reshape(-1)).squeeze(1)
    d = x.size(-1)
    yp, stp = layer.forward_packed(x.reshape(-1, d)[qi], qi, kv.reshape(-1, d)[ki], ki, 4, 9,
                                   other=other.reshape(-1, d)[qi], other_valid=om.reshape(-1)[qi], return_stats=True)
    assert torch.allclose(y.reshape(-1, d)[qi], yp, atol=1e-6)
    for k in ('ortho', 'cross'):
        assert torch.allclose(st[k], stp[k], atol=1e-6, equal_nan=True)
    assert torch.isnan(stp['ortho'][3])


def test_packed_other_index_equals_explicit_other():
    layer = _layer()
    x, kv = _inputs(B=3, L=8)
    g = torch.Generator().manual_seed(9)
    qm = torch.rand(3, 8, generator=g) > 0.5
    km = ~qm                                                        # disjoint steps
    qi, ki = torch.nonzero(qm.reshape(-1)).squeeze(1), torch.nonzero(km.reshape(-1)).squeeze(1)
    d = x.size(-1)
    xq, xk = x.reshape(-1, d)[qi], kv.reshape(-1, d)[ki]
    oi = torch.tensor([max([j for j, f in enumerate(ki.tolist()) if f // 8 == q // 8 and f < q], default=-1)
                       for q in qi.tolist()])
    other = torch.where((oi >= 0)[:, None], xk[oi.clamp_min(0)], torch.zeros_like(xq))
    y1, s1 = layer.forward_packed(xq, qi, xk, ki, 3, 8, other=other, other_valid=oi >= 0, return_stats=True)
    y2, s2 = layer.forward_packed(xq, qi, xk, ki, 3, 8, other_index=oi, return_stats=True)
    assert torch.allclose(y1, y2, atol=1e-6)
    for k in ('ortho', 'cross'):
        assert torch.allclose(s1[k], s2[k], atol=1e-6, equal_nan=True)


def _latest(src, dst, L):
    """Row of ``dst`` at the latest step < each step of ``src`` in the same sequence (-1: none)."""
    out = []
    for f in src.tolist():
        c = [i for i, g in enumerate(dst.tolist()) if g // L == f // L and g < f]
        out.append(max(c) if c else -1)
    return torch.tensor(out, dtype=torch.long)


@pytest.mark.parametrize('activation,heads,layer_norm,gate_input', COMBOS)
def test_pair_equals_two_packed_calls(activation, heads, layer_norm, gate_input):
    """forward_packed_pair (both directions as one masked self-attention over the merged rows,
    one fused projection per input) = the two single-direction calls: outputs, gradients of the
    inputs and of every parameter, statistics."""
    la, lb = _layer(activation, heads, layer_norm, gate_input, seed=1).double(), \
        _layer(activation, heads, layer_norm, gate_input, seed=2).double()
    n, L = 5, 9
    dom = torch.randint(-1, 2, (n, L), generator=torch.Generator().manual_seed(4))
    dom[0] = 0                                                      # a sequence with A rows only
    ia, ib = torch.nonzero((dom == 0).reshape(-1)).squeeze(1), torch.nonzero((dom == 1).reshape(-1)).squeeze(1)
    xa = torch.randn(ia.numel(), D, dtype=torch.double, requires_grad=True)
    xb = torch.randn(ib.numel(), D, dtype=torch.double, requires_grad=True)
    oa, ob = _latest(ia, ib, L), _latest(ib, ia, L)
    (ya, yb), (sa, sb) = GatedCrossAttention.forward_packed_pair(la, lb, xa, ia, xb, ib, n, L, oa, ob,
                                                                 return_stats=True)
    ra, rsa = la.forward_packed(xa, ia, xb, ib, n, L, other_index=oa, return_stats=True)
    rb, rsb = lb.forward_packed(xb, ib, xa, ia, n, L, other_index=ob, return_stats=True)
    assert torch.allclose(ya, ra, atol=1e-10) and torch.allclose(yb, rb, atol=1e-10)
    params = [xa, xb] + list(la.parameters()) + list(lb.parameters())
    w = torch.randn_like(yb)
    g1 = torch.autograd.grad(ya.sum() + (yb * w).sum(), params, allow_unused=True)
    g2 = torch.autograd.grad(ra.sum() + (rb * w).sum(), params, allow_unused=True)
    for a, b in zip(g1, g2):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-10)
    for got, exp in ((sa, rsa), (sb, rsb)):
        for k in ('ortho', 'cross'):
            assert torch.allclose(got[k], exp[k], equal_nan=True)


def test_pair_input_checks():
    la, lb = _layer(), _layer(seed=1)
    x = torch.randn(2, D)
    idx = torch.tensor([0, 1])
    with pytest.raises(ValueError):                                 # the two sequences share a step
        GatedCrossAttention.forward_packed_pair(la, lb, x, idx, x, idx, 1, 4, idx * 0 - 1, idx * 0 - 1)
    with pytest.raises(ValueError):                                 # concat_other needs other_index
        GatedCrossAttention.forward_packed_pair(la, lb, x, idx, x, idx + 2, 1, 4)


# ------------------------------------------------------------------ shared building blocks
# ------------------------------------------------------------------ statistics
def test_abs_cosine_known_angles():
    e1 = torch.tensor([1.0, 0.0, 0.0])
    ys = torch.tensor([[0.0, 1.0, 0.0],                                   # 90 deg -> 0
                       [2.0, 0.0, 0.0],                                   # 0 deg -> 1
                       [-3.0, 0.0, 0.0],                                  # 180 deg -> |-1| = 1
                       [math.cos(math.pi / 3), math.sin(math.pi / 3), 0.0],   # 60 deg -> 0.5
                       [math.cos(2 * math.pi / 3), 0.0, math.sin(2 * math.pi / 3)],  # 120 deg -> 0.5
                       [0.0, 0.0, 0.0]])                                  # zero vector -> 0
    c = abs_cosine(e1.expand_as(ys), 5.0 * ys)
    assert torch.allclose(c, torch.tensor([0.0, 1.0, 1.0, 0.5, 0.5, 0.0]), atol=1e-6)


def test_masked_row_mean():
    v = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    m = torch.tensor([[True, False, True], [False, False, False], [True, True, True]])
    r = masked_row_mean(v, m)
    assert r[0] == 2.0 and torch.isnan(r[1]) and r[2] == 8.0


def test_gca_statistics_on_hand_made_inputs():
    layer = _layer()
    B, L = 2, 4
    x = torch.zeros(B, L, D)
    x[..., 0] = 1.0
    other = torch.zeros(B, L, D)
    other[..., 0] = math.cos(math.pi / 3)
    other[..., 1] = math.sin(math.pi / 3)
    other[1, :, 0] = 0.0                                   # user 1: other orthogonal to x
    kv = torch.randn(B, L, D)
    qm = torch.tensor([[True, True, True, False], [True, True, False, False]])
    om = torch.tensor([[True, True, True, True], [False, True, True, True]])
    _, st = layer(x, kv, other=other, query_mask=qm, other_mask=om, return_stats=True)
    assert torch.allclose(st['cross'], torch.tensor([0.5, 0.0]), atol=1e-6)
    x_att, has = layer.attn(x, kv, causal_key_mask(torch.ones(B, L, dtype=torch.bool)))
    ref = masked_row_mean(abs_cosine(x, x_att), qm & has)
    assert torch.allclose(st['ortho'], ref, atol=1e-6)


# ------------------------------------------------------------------ options, parameters, gradients
@pytest.mark.parametrize('activation,heads,layer_norm,gate_input', COMBOS)
def test_layer_forward_backward_all_options(activation, heads, layer_norm, gate_input):
    layer = _layer(activation, heads, layer_norm, gate_input)
    layer.train()
    layer.dropout.p = 0.3
    x, kv = _inputs()
    x.requires_grad_(True)
    y = layer(x, kv, key_mask=torch.rand(kv.shape[:2]) > 0.3)
    y.square().mean().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())
    assert count_parameters(layer) == GatedCrossAttention.num_parameters(D, layer_norm)


def test_gate_activation_range():
    x, kv = _inputs()
    for act, lo in (('sigmoid', 0.0), ('tanh', -1.0)):
        g = _layer(activation=act).gate(x, kv)
        assert g.shape == x.shape and g.min() >= lo and g.max() <= 1.0


def test_invalid_options():
    with pytest.raises(ValueError):
        GatedCrossAttention(D, activation='relu')
    with pytest.raises(ValueError):
        GatedCrossAttention(D, gate_input='sum')
    with pytest.raises(ValueError):
        GatedCrossAttention(D, n_heads=3)


# ------------------------------------------------------------------ inside ABXI_GCA
def _models(**kw):
    from recbole_ortho.model.cross_domain_sequential import ABXI, ABXI_GCA
    ds = FakeDataset(n_a=20, n_b=25)
    base = dict(embedding_size=D, n_heads=2, inner_size=24, rd=2, ri=4, n_neg_per_domain=8)
    torch.manual_seed(0)
    abxi = ABXI(make_config(**base, **{k: v for k, v in kw.items() if not k.startswith('gca')}), ds)
    torch.manual_seed(0)
    gca = ABXI_GCA(make_config('ABXI_GCA', **base, **kw), ds)
    return abxi, gca, ds


@pytest.mark.parametrize('activation,heads,layer_norm,gate_input', COMBOS)
def test_abxi_gca_extra_parameters(activation, heads, layer_norm, gate_input):
    abxi, gca, _ = _models(gca_activation=activation, gca_heads=heads, gca_layernorm=layer_norm,
                           gca_gate_input=gate_input)
    assert count_parameters(gca) - count_parameters(abxi) == 2 * GatedCrossAttention.num_parameters(D, layer_norm)


@pytest.mark.parametrize('mode', ['occurrence', 'every'])
@pytest.mark.parametrize('positions', [[0], [1], [0, 1, 2]])
def test_abxi_gca_positions_parameters_and_training(positions, mode):
    abxi, gca, ds = _models(n_layers=2, gca_positions=positions, gca_layernorm=True, gca_query_steps=mode)
    assert count_parameters(gca) - count_parameters(abxi) == 2 * len(positions) * GatedCrossAttention.num_parameters(D)
    batch = train_batch(random_sequences(ds, 5, 10), 10)
    loss = gca.calculate_loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    for p in positions:
        assert all(q.grad is not None and torch.isfinite(q.grad).all() for q in gca.gca[str(p)].parameters())


@pytest.mark.parametrize('mode', ['occurrence', 'every'])
@pytest.mark.parametrize('activation,heads,layer_norm,gate_input', COMBOS[::3])
def test_abxi_gca_model_forward_backward(activation, heads, layer_norm, gate_input, mode):
    _, gca, ds = _models(gca_activation=activation, gca_heads=heads, gca_layernorm=layer_norm,
                         gca_gate_input=gate_input, gca_dedup_keys=heads == 8, gca_query_steps=mode)
    batch = train_batch(random_sequences(ds, 4, 9), 9)
    loss = gca.calculate_loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(q.grad is not None and torch.isfinite(q.grad).all() for q in gca.parameters() if q.requires_grad)


def test_abxi_gca_rejects_bad_positions_and_quirks():
    with pytest.raises(ValueError):
        _models(gca_positions=[2])
    with pytest.raises(ValueError):
        _models(official_quirks=True)


# ------------------------------------------------------------------ gate ablations and the orthogonality penalty
@pytest.mark.parametrize('gate,layer_norm', [(g, ln) for g in ('vector', 'scalar', 'none') for ln in (True, False)])
def test_gate_variants_parameter_counts(gate, layer_norm):
    layer = GatedCrossAttention(D, n_heads=4, layer_norm=layer_norm, gate=gate)
    expect = 4 * D * D + 4 * D + {'vector': 3 * D * D + 2 * D, 'scalar': 1, 'none': 0}[gate] + (2 * D if layer_norm else 0)
    assert count_parameters(layer) == GatedCrossAttention.num_parameters(D, layer_norm, gate) == expect
    _, gca, ds = _models(gca_gate=gate, gca_layernorm=layer_norm)
    assert gca.gca.num_parameters() == 2 * expect


def test_scalar_and_no_gate_forms():
    """scalar: LN(X + alpha X') with alpha starting at 0 (so GCA starts as LN(X)); none: LN(X + X');
    on padded, packed and paired entry points alike."""
    torch.manual_seed(0)
    x, kv = _inputs()
    for gate in ('scalar', 'none'):
        layer = GatedCrossAttention(D, n_heads=4, gate=gate).eval()
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(0.1 * torch.randn_like(p))
        x_att, _ = layer.attn(x, kv, causal_key_mask(torch.ones(x.shape[:2], dtype=torch.bool)))
        scale = layer.alpha if gate == 'scalar' else 1.0
        assert torch.allclose(layer(x, kv), layer.norm(x + scale * x_att), atol=1e-5)
    fresh = GatedCrossAttention(D, gate='scalar').eval()
    assert torch.allclose(fresh(x, kv), fresh.norm(x), atol=1e-6)            # alpha = 0 at the start
    # the pair entry point falls back to the two single-direction calls
    la, lb = GatedCrossAttention(D, gate='none').eval(), GatedCrossAttention(D, gate='scalar').eval()
    ia, ib = torch.tensor([0, 2, 5]), torch.tensor([1, 3, 4, 6])
    xa, xb = torch.randn(3, D), torch.randn(4, D)
    oa, ob = _latest(ia, ib, 7), _latest(ib, ia, 7)
    ya, yb = GatedCrossAttention.forward_packed_pair(la, lb, xa, ia, xb, ib, 1, 7, oa, ob)
    assert torch.allclose(ya, la.forward_packed(xa, ia, xb, ib, 1, 7, other_index=oa), atol=1e-6)
    assert torch.allclose(yb, lb.forward_packed(xb, ib, xa, ia, 1, 7, other_index=ob), atol=1e-6)


def test_ortho_weight_zero_changes_nothing_and_positive_adds_the_penalty():
    seqs = random_sequences(FakeDataset(n_a=20, n_b=25), 6, 10, generator=torch.Generator().manual_seed(4))
    b = train_batch(seqs, 10)

    def loss_of(**kw):
        _, gca, _ = _models(**kw)
        gca.train()
        torch.manual_seed(7)
        loss = gca.calculate_loss(b)
        grads = torch.autograd.grad(loss, list(gca.gca.parameters()))
        return loss, gca.epoch_trace(), grads

    base, tr0, g0 = loss_of()
    zero, trz, gz = loss_of(gca_ortho_weight=0.0)
    assert torch.equal(base, zero) and all(torch.equal(a, c) for a, c in zip(g0, gz)) and 'ortho_penalty' not in trz
    lam = 0.5
    pen, trp, gp = loss_of(gca_ortho_weight=lam)
    assert 0.0 < trp['ortho_penalty'] < 1.0
    assert pen.item() == pytest.approx(base.item() + lam * trp['ortho_penalty'], rel=1e-5)
    assert trp['loss_a'] == pytest.approx(tr0['loss_a']) and trp['loss_b'] == pytest.approx(tr0['loss_b'])
    assert any(not torch.allclose(a, c) for a, c in zip(g0, gp))            # the penalty has a gradient
