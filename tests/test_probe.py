"""The probe of a trained _GCA model (recbole_ortho.probe) and the GCA layer's capture hook
(GatedCrossAttention.capture / GCAStages.capturing): the captured tensors are the layer's own
(they rebuild its output), capture leaves results unchanged, and the probe's statistics equal the
evaluator's for the same checkpoint and split."""

import json
import math
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_gca_layer import D, _inputs, _latest, _layer  # noqa: E402

from recbole_ortho.model.gca import GatedCrossAttention  # noqa: E402
from recbole_ortho.probe import AGREEMENT_TOL, main, probe, probe_checkpoint  # noqa: E402
from recbole_ortho.quick_start import load_data_and_model, run_recbole_ortho  # noqa: E402

SMALL = {'ABXI_GCA': dict(embedding_size=16, inner_size=24, rd=2, ri=4, n_heads=2, n_neg_per_domain=8),
         'LLM4CDSR_GCA': dict(hidden_size=16, inner_size=16, text_domain_dim=16, text_global_dim=24),
         'CDSRNP_GCA': dict(hidden_size=16, inner_size=16, n_heads=2, support_size=8, eval_support_size=6,
                            latent_size=4, kl_warmup_epochs=1)}
SMALL['ABXI'] = SMALL['ABXI_GCA']
PNGS = ('cosines.png', 'decomposition.png', 'gate.png', 'by_position.png', 'by_history.png')


@pytest.fixture(autouse=True)
def _argv(monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['pytest'])


# ------------------------------------------------------------------ the layer's capture hook
def _reference(layer, rec):
    """The layer's output rebuilt from a captured record: ``LN(X + G * X')`` with the reference gate
    ``act(W_2 GELU(W_1 [X; Z]))`` (Z = Y for concat_other, X' for concat_attn); also returns that gate."""
    z = rec['x_att'] if layer.gate_input == 'concat_attn' else rec['other']
    g = layer.gate(rec['x'], z)
    return layer.norm(rec['x'] + g * rec['x_att']), g


def _per_seq_abs_cos(rec):
    cos = torch.nn.functional.cosine_similarity(rec['x'], rec['x_att'], dim=-1, eps=1e-8).abs()
    out = []
    for s in range(rec['n_seq']):
        m = (rec['seq'] == s) & rec['has_key']
        out.append(cos[m].mean() if m.any() else torch.tensor(math.nan))
    return torch.stack(out)


@pytest.mark.parametrize('gate_input', ['concat_other', 'concat_attn'])
def test_capture_padded_and_packed(gate_input):
    layer = _layer(gate_input=gate_input)
    x, kv = _inputs(B=4, L=9)
    g = torch.Generator().manual_seed(7)
    qm, km, om = torch.rand(4, 9, generator=g) > 0.3, torch.rand(4, 9, generator=g) > 0.4, \
        torch.rand(4, 9, generator=g) > 0.2
    km[3] = False                                                   # a sequence without keys
    other = torch.randn(4, 9, D, generator=g) * om[..., None]
    qi, ki = torch.nonzero(qm.reshape(-1)).squeeze(1), torch.nonzero(km.reshape(-1)).squeeze(1)
    calls = {
        'padded': lambda: layer(x, kv, key_mask=km, other=other, query_mask=qm, other_mask=om, return_stats=True),
        'packed': lambda: layer.forward_packed(x.reshape(-1, D)[qi], qi, kv.reshape(-1, D)[ki], ki, 4, 9,
                                               other=other.reshape(-1, D)[qi], other_valid=om.reshape(-1)[qi],
                                               return_stats=True)}
    for name, call in calls.items():
        y0, st0 = call()
        recs = []
        layer.capture = recs.append
        try:
            y1, st1 = call()
        finally:
            del layer.capture
        assert layer.capture is None and torch.equal(y0, y1), name            # capture changes nothing
        assert len(recs) == 1
        rec = recs[0]
        assert torch.equal(rec['x'], x.reshape(-1, D)[qi]) and torch.equal(rec['step'], qi % 9) \
            and torch.equal(rec['seq'], qi // 9), name
        assert torch.equal(rec['other_valid'], om.reshape(-1)[qi]) and not rec['has_key'][rec['seq'] == 3].any()
        y_ref, g_ref = _reference(layer, rec)
        rows = y1.reshape(-1, D)[qi] if name == 'padded' else y1
        assert torch.allclose(rows, y_ref, atol=1e-5), name                    # X, X', G are the layer's own
        assert torch.allclose(rec['gate'], g_ref, atol=1e-6)
        assert torch.allclose(_per_seq_abs_cos(rec), st1['ortho'], atol=1e-6, equal_nan=True)


@pytest.mark.parametrize('gate', ['vector', 'scalar'])
def test_capture_packed_pair(gate):
    torch.manual_seed(0)
    la, lb = (GatedCrossAttention(D, n_heads=4, gate=gate).eval() for _ in range(2))
    with torch.no_grad():
        for p in list(la.parameters()) + list(lb.parameters()):
            p.add_(0.1 * torch.randn_like(p))
    n, L = 5, 9
    dom = torch.randint(-1, 2, (n, L), generator=torch.Generator().manual_seed(4))
    ia, ib = torch.nonzero((dom == 0).reshape(-1)).squeeze(1), torch.nonzero((dom == 1).reshape(-1)).squeeze(1)
    xa, xb = torch.randn(ia.numel(), D), torch.randn(ib.numel(), D)
    oa, ob = _latest(ia, ib, L), _latest(ib, ia, L)
    (ya0, yb0), _ = GatedCrossAttention.forward_packed_pair(la, lb, xa, ia, xb, ib, n, L, oa, ob, return_stats=True)
    recs = {'a': [], 'b': []}
    la.capture, lb.capture = recs['a'].append, recs['b'].append
    try:
        (ya, yb), (sa, sb) = GatedCrossAttention.forward_packed_pair(la, lb, xa, ia, xb, ib, n, L, oa, ob,
                                                                     return_stats=True)
    finally:
        del la.capture, lb.capture
    assert torch.equal(ya, ya0) and torch.equal(yb, yb0)
    for layer, (r,), y, st, x, idx, oi, xo in ((la, recs['a'], ya, sa, xa, ia, oa, xb),
                                               (lb, recs['b'], yb, sb, xb, ib, ob, xa)):
        assert torch.equal(r['x'], x) and torch.equal(r['step'], idx % L) and torch.equal(r['seq'], idx // L)
        assert torch.equal(r['other_valid'], oi >= 0)
        assert torch.equal(r['other'][oi >= 0], xo[oi[oi >= 0]])               # Y: the other's latest row
        if gate == 'vector':
            y_ref, _ = _reference(layer, r)
        else:
            assert r['gate'].shape == (1,) and r['gate'].item() == layer.alpha.item()
            y_ref = layer.norm(r['x'] + r['gate'] * r['x_att'])
        assert torch.allclose(y, y_ref, atol=1e-5)
        assert torch.allclose(_per_seq_abs_cos(r), st['ortho'], atol=1e-6, equal_nan=True)


def test_gate_reservoir_keeps_a_uniform_sample(monkeypatch):
    import recbole_ortho.probe as probe_mod
    from recbole_ortho.probe import Capture
    monkeypatch.setattr(probe_mod, 'GATE_SAMPLE_ROWS', 50)
    cap = Capture(None, [])
    cap.meta['m'] = ('', 0, 'a', type('S', (), {'activation': 'sigmoid'})())
    cap.gate['m'] = None
    rows = torch.arange(1000, dtype=torch.float64)[:, None].repeat(1, 3) / 1000      # row i holds i / 1000
    for s in range(0, 1000, 37):
        cap._add_gate('m', rows[s:s + 37])
    acc = cap.gate['m']
    assert acc['n'] == 1000 and acc['sample'].shape == (50, 3)
    idx = np.round(acc['sample'][:, 0] * 1000).astype(int)
    assert len(set(idx)) == 50 and (acc['sample'][:, 1] == acc['sample'][:, 0]).all()    # whole rows, no repeats
    assert 300 < idx.mean() < 700 and idx.max() > 900                 # spread over the stream, not its first rows
    np.testing.assert_allclose(acc['sum'] / acc['n'], 0.4995)                        # means use every row
    assert acc['hist'].sum() == 3000 and acc['min'].min() == 0.0 and acc['max'].max() == pytest.approx(0.999)


# ------------------------------------------------------------------ trained models
def _train(tiny, model, **extra):
    _, cfg = tiny
    res = run_recbole_ortho(model=model, dataset='tiny', config_dict=dict(cfg, **SMALL[model], **extra, epochs=1,
                                                                       warmup_epochs=0, save_model=True))
    assert res['checkpoint'] and os.path.isfile(res['checkpoint'])
    return res


def _is_png(path):
    with open(path, 'rb') as f:
        return f.read(8) == b'\x89PNG\r\n\x1a\n' and os.path.getsize(path) > 5000


def _assert_agrees(payload, result):
    """Every orthogonality statistic the evaluator reported (``ortho_cos_*`` / ``cross_cos_*``, every
    domain and group) equals the probe's, counts exactly, the rest within AGREEMENT_TOL."""
    n = 0
    for group, ev in result.items():
        if not isinstance(ev, dict):
            continue
        for name, e in ev.items():
            if not name.startswith(('ortho_cos_', 'cross_cos_')):
                continue
            stage, direction = int(name.split('@gca')[1].split('/')[0]), name.split('@')[0][-1]
            got = payload['modules'][f'gca{stage}_{direction}']['statistics'][group][name]
            if e is None or (isinstance(e, float) and math.isnan(e)):
                assert got is None or math.isnan(got), (group, name)
            elif name.endswith(('/n_steps', '/no_key_steps')):
                assert got == e, (group, name)
            else:
                assert abs(got - e) <= AGREEMENT_TOL, (group, name, got, e)
            n += 1
    assert n >= 3 * 2 * 8                                           # A/B/all x 2 directions x 8 statistics
    assert payload['agreement']['ok'] and payload['agreement']['max_abs_diff'] <= AGREEMENT_TOL


MODULE_KEYS = {'module', 'stage', 'direction', 'query_domain', 'key_domain', 'label', 'description',
               'n_query_steps', 'n_no_key_steps', 'n_no_other_steps', 'cos_x_xatt', 'cos_x_y', 'cos_x_update',
               'statistics', 'decomposition', 'gate', 'by_position', 'by_history_length'}


def _check_payload(payload, out, model, plots=True):
    assert set(payload) >= {'model', 'dataset', 'split', 'n_users', 'gca', 'headline', 'modules', 'evaluator',
                            'agreement', 'figures'}
    assert payload['model'] == model and set(payload['modules']) == {'gca0_a', 'gca0_b'}
    for key, m in payload['modules'].items():
        assert set(m) == MODULE_KEYS, key
        assert m['label'] == ('gca0 A\u2190B' if key.endswith('_a') else 'gca0 B\u2190A')
        for part in ('cross_attention', 'gated_update'):          # the two shares of the squared norm add up to 1
            dec = m['decomposition'][part]
            assert dec['parallel_energy_share'] + dec['orthogonal_energy_share'] == pytest.approx(1.0, abs=1e-9)
        assert sum(m['by_position']['position']['n']) == m['n_query_steps']
        assert sum(m['by_history_length']['n_a']['n']) == payload['n_users']
        g = m['gate']
        assert g['kind'] == 'vector' and len(g['per_dim_mean']) == 16
        assert g['n_steps'] == m['n_query_steps'] - m['n_no_key_steps']
        assert sum(g['hist']['counts']) == g['n_steps'] * 16
        assert 0.0 < g['mean'] < 1.0 and g['mean'] == pytest.approx(float(np.mean(g['per_dim_mean'])), abs=1e-12)
    with open(os.path.join(out, 'probe.json')) as f:
        assert json.load(f)['headline'].keys() == payload['headline'].keys()
    assert sorted(payload['figures']) == (sorted(PNGS) if plots else [])
    for name in PNGS if plots else ():
        assert _is_png(os.path.join(out, name)), name


@pytest.mark.parametrize('model', ['LLM4CDSR_GCA', 'CDSRNP_GCA'])
def test_probe_agrees_with_the_evaluator(tiny, tmp_path, model):
    res = _train(tiny, model)
    out = str(tmp_path / 'probe')
    payload = probe_checkpoint(res['checkpoint'], split='test', out=out, plots=False)   # figures: the ABXI test
    _assert_agrees(payload, res['test'])                        # the training run's test pass, same checkpoint
    _check_payload(payload, out, model, plots=False)


def test_probe_cli_abxi_gca_both_splits_and_hand_checks(tiny, tmp_path, capsys):
    res = _train(tiny, 'ABXI_GCA')
    out = str(tmp_path / 'probe_test')
    assert main(['--model_file', res['checkpoint'], '--out', out]) == 0
    printed = capsys.readouterr().out
    assert 'gca0 A\u2190B' in printed and 'agreement with the evaluator' in printed and ': ok' in printed
    with open(os.path.join(out, 'probe.json')) as f:
        payload = json.load(f)
    _assert_agrees(payload, res['test'])
    _check_payload(payload, out, 'ABXI_GCA')
    assert payload['split'] == 'test' and payload['n_users'] == len(tiny[0])

    # the validation split: the result's valid entry was evaluated with the same (best) checkpoint
    config, model, dataset, _, valid_data, _ = load_data_and_model(res['checkpoint'])
    payload, cap = probe(config, model, dataset, valid_data, split='valid')
    _assert_agrees(payload, res['valid'])
    assert not hasattr(model.gca['0']['a'], '_captured_gate') and model.gca['0']['a'].capture is None
    assert 'full_sort_predict' not in model.__dict__                       # the evaluator's hook is removed

    # hand-checkable facts on the per-step arrays
    for key, m in payload['modules'].items():
        r = cap.row_arrays(key)
        has = r['has_key']
        for name in ('att', 'upd'):
            e, ep, eo = r[f'e_{name}'][has], r[f'e_{name}_par'][has], r[f'e_{name}_perp'][has]
            np.testing.assert_allclose(ep + eo, e, rtol=1e-9)           # Pythagoras: X' = X'_par + X'_perp
            np.testing.assert_allclose(ep / e, r[f'cos_{name}'][has] ** 2, rtol=1e-9)   # ||X'_par|| / ||X'|| = |cos|
            dec = m['decomposition']['cross_attention' if name == 'att' else 'gated_update']
            assert dec['parallel_energy_share'] == pytest.approx(ep.sum() / e.sum(), rel=1e-12)
            np.testing.assert_allclose(np.sqrt(ep / e) ** 2 + np.sqrt(eo / e) ** 2, 1.0, rtol=1e-9)
        g, acc = m['gate'], cap.gate[key]                   # every gate row is in the sample here (< its size)
        assert g['n_sampled_steps'] == g['n_steps'] == len(acc['sample']) == has.sum()
        np.testing.assert_allclose(acc['sample'].mean(0), g['per_dim_mean'], atol=1e-6)
        q = g['per_dim_quantiles']
        assert g['min'] <= min(q['q05']) and all(a <= b <= c for a, b, c in zip(q['q05'], q['q50'], q['q95'])) \
            and max(q['q95']) <= g['max']
        cos = r['cos_att'][has]
        o = f"ortho_cos_{m['direction']}@gca0"
        st = m['statistics']['all']
        assert st[f'{o}/paper'] == pytest.approx(abs(cos.mean()), abs=1e-12)
        assert st[f'{o}/median_abs'] == pytest.approx(float(np.median(np.abs(cos))), abs=1e-12)
        assert st[f'{o}/n_steps'] == has.sum() and st[f'{o}/no_key_steps'] == (~has).sum()
        per_user = [np.abs(r['cos_att'][(r['user'] == u) & has]).mean() for u in range(payload['n_users'])
                    if ((r['user'] == u) & has).any()]
        assert st[o] == pytest.approx(float(np.mean(per_user)), abs=1e-12)
        hist = m['cos_x_xatt']['hist']
        assert sum(hist['counts']) == has.sum() and hist['edges'][0] == -1.0 and hist['edges'][-1] == 1.0
        lengths = np.concatenate(cap.users['length'])            # ABXI pads on the right: position = grid step
        assert (r['position'] == r['step']).all() and (r['before_target'] == lengths[r['user']] - 1 - r['step']).all()
        pos = m['by_position']['position']
        for t in (1, 2):
            sel = has & (r['step'] == t)
            if sel.any():
                assert pos['abs_cos_x_xatt'][t] == pytest.approx(np.abs(r['cos_att'][sel]).mean(), abs=1e-12)


def test_probe_refuses_a_base_model_in_one_line(tiny, capsys):
    res = _train(tiny, 'ABXI')
    assert main(['--model_file', res['checkpoint']]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and 'ABXI has no GCA layer' in err[0]
    assert main(['--model_file', 'no/such/file.pth']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'no/such/file.pth' in err[0]
