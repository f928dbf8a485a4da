"""Unit tests of the shared GCA layer (recbole_ortho.model.layers) and of its use in ABXI_GCA."""

import itertools
import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest_models import FakeDataset, make_config, random_sequences, train_batch  # noqa: E402

from recbole_ortho.model.layers import (Dropout, GatedCrossAttention, SwiGLU, abs_cosine,  # noqa: E402
                                        causal_key_mask, count_parameters, masked_row_mean)

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


# ------------------------------------------------------------------ shared building blocks
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
    gca = ABXI_GCA(make_config(**base, **kw), ds)
    return abxi, gca, ds


@pytest.mark.parametrize('activation,heads,layer_norm,gate_input', COMBOS)
def test_abxi_gca_extra_parameters(activation, heads, layer_norm, gate_input):
    abxi, gca, _ = _models(gca_activation=activation, gca_heads=heads, gca_layernorm=layer_norm,
                           gca_gate_input=gate_input)
    assert count_parameters(gca) - count_parameters(abxi) == 2 * GatedCrossAttention.num_parameters(D, layer_norm)


@pytest.mark.parametrize('positions', [[0], [1], [0, 1, 2]])
def test_abxi_gca_positions_parameters_and_training(positions):
    abxi, gca, ds = _models(n_layers=2, gca_positions=positions, gca_layernorm=True)
    assert count_parameters(gca) - count_parameters(abxi) == 2 * len(positions) * GatedCrossAttention.num_parameters(D)
    batch = train_batch(random_sequences(ds, 5, 10), 10)
    loss = gca.calculate_loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    for p in positions:
        assert all(q.grad is not None and torch.isfinite(q.grad).all() for q in gca.gca[str(p)].parameters())


@pytest.mark.parametrize('activation,heads,layer_norm,gate_input', COMBOS[::3])
def test_abxi_gca_model_forward_backward(activation, heads, layer_norm, gate_input):
    _, gca, ds = _models(gca_activation=activation, gca_heads=heads, gca_layernorm=layer_norm,
                         gca_gate_input=gate_input, gca_dedup_keys=heads == 8)
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
