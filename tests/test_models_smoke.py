"""One epoch of every model of this package on the tiny fixture, through run_recbole_ortho:
per-domain metrics, orthogonality statistics in the result, parameter matching."""

import itertools
import math
import sys

import pytest

from recbole_ortho.model.gca import GatedCrossAttention
from recbole_ortho.quick_start import run_recbole_ortho

SMALL = dict(embedding_size=16, inner_size=24, rd=2, ri=4, n_heads=2, n_neg_per_domain=8, epochs=1)


@pytest.fixture(autouse=True)
def _argv(monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['pytest'])


def _check(res, n_users):
    for phase in ('valid', 'test'):
        assert res[phase]['all']['n_users'] == n_users
        assert 0.0 <= res[phase]['all']['ndcg@10'] <= 1.0


@pytest.mark.parametrize('official_quirks', [False, True])
def test_abxi_one_epoch(tiny, official_quirks):
    seqs, cfg = tiny
    res = run_recbole_ortho(model='ABXI', dataset='tiny',
                            config_dict=dict(cfg, **SMALL, official_quirks=official_quirks, warmup_epochs=0))
    _check(res, len(seqs))


COMBOS = list(itertools.product(['sigmoid', 'tanh'], [4, 8], [True, False], ['concat_other', 'concat_attn']))


@pytest.mark.parametrize('act,heads,ln,gate', COMBOS)
def test_abxi_gca_one_epoch_each_option(tiny, act, heads, ln, gate):
    seqs, cfg = tiny
    res = run_recbole_ortho(model='ABXI_GCA', dataset='tiny', config_dict=dict(
        cfg, **SMALL, gca_activation=act, gca_heads=heads, gca_layernorm=ln, gca_gate_input=gate, warmup_epochs=0))
    _check(res, len(seqs))
    for d in ('A', 'B', 'all'):
        for k in ('ortho_cos_a@gca0', 'ortho_cos_b@gca0', 'cross_cos_a@gca0', 'cross_cos_b@gca0'):
            v = res['test'][d][k]
            assert math.isnan(v) or 0.0 <= v <= 1.0 + 1e-6
    assert 0.0 <= res['test']['all']['ortho_cos_a@gca0'] <= 1.0
    assert 'ortho_cos_a@gca0' in res['trace'][-1]['valid']['all']
    t = res['test']['all']                          # the pooled summaries of every query step's cosine
    assert abs(t['ortho_cos_a@gca0/pooled_signed']) == pytest.approx(t['ortho_cos_a@gca0/paper'])
    assert t['ortho_cos_a@gca0/paper'] <= t['ortho_cos_a@gca0/pooled_abs'] + 1e-9
    assert 0.0 <= t['ortho_cos_b@gca0/median_abs'] <= 1.0


@pytest.mark.parametrize('gate,query_steps,weight', [('scalar', 'occurrence', 0.0), ('none', 'every', 0.0),
                                                    ('vector', 'occurrence', 0.3), ('none', 'occurrence', 0.3)])
def test_abxi_gca_gate_ablations_and_ortho_weight_one_epoch(tiny, gate, query_steps, weight):
    seqs, cfg = tiny
    res = run_recbole_ortho(model='ABXI_GCA', dataset='tiny', config_dict=dict(
        cfg, **SMALL, gca_gate=gate, gca_query_steps=query_steps, gca_ortho_weight=weight, warmup_epochs=0,
        save_model=False))
    _check(res, len(seqs))
    assert 0.0 <= res['test']['all']['ortho_cos_a@gca0'] <= 1.0
    assert ('ortho_penalty' in res['trace'][0]) == (weight > 0)


@pytest.mark.parametrize('query_steps', ['occurrence', 'every'])
def test_abxi_gca_stacked_positions_and_param_count(tiny, query_steps):
    seqs, cfg = tiny
    base = run_recbole_ortho(model='ABXI', dataset='tiny', config_dict=dict(cfg, **SMALL, n_layers=2,
                                                                            warmup_epochs=0, save_model=False))
    res = run_recbole_ortho(model='ABXI_GCA', dataset='tiny', config_dict=dict(
        cfg, **SMALL, n_layers=2, gca_positions=[0, 2], gca_query_steps=query_steps, warmup_epochs=0,
        save_model=False))
    _check(res, len(seqs))
    assert 'ortho_cos_b@gca2' in res['test']['all']
    per_layer = GatedCrossAttention.num_parameters(16, layer_norm=True)
    assert per_layer == 7 * 16 * 16 + 6 * 16 + 2 * 16
    assert res['n_params'] - base['n_params'] == 2 * 2 * per_layer


def abxi_parameter_count(n_items, window, d, inner, rd, ri, n_layers=1):
    """ABXI's parameter count from its layers: item and position tables; per block attention
    (4 d^2 + 4 d), its LayerNorm, the SwiGLU FFN (3 d h), three dLoRA (2 d rd each) and three
    LayerNorms; the projector: P_i, P_A, P_B (3 d h each), two iLoRA (2 d ri each), four LayerNorms."""
    block = 4 * d * d + 4 * d + 2 * d + 3 * d * inner + 3 * 2 * d * rd + 3 * 2 * d
    return n_items * d + (window + 1) * d + n_layers * block + 3 * 3 * d * inner + 2 * 2 * d * ri + 4 * 2 * d


def test_param_match_reaches_the_gca_count_by_the_layer_formula(tiny):
    from recbole_ortho.config import Config
    from recbole_ortho.data import create_dataset
    _, cfg = tiny
    n_items = create_dataset(Config(model='ABXI', dataset='tiny', config_dict=cfg)).n_items
    d, h0, L = SMALL['embedding_size'], SMALL['inner_size'], cfg['MAX_ITEM_LIST_LENGTH']
    base = abxi_parameter_count(n_items, L, d, h0, SMALL['rd'], SMALL['ri'])
    target = base + 2 * GatedCrossAttention.num_parameters(d, layer_norm=True)   # ABXI_GCA, one stage
    per_unit = 3 * d * (1 + 3)                  # one inner_size unit: encoder FFN + three projectors
    h = h0 + round((target - base) / per_unit)
    res = run_recbole_ortho(model='ABXI', dataset='tiny', config_dict=dict(
        cfg, **SMALL, param_match='ABXI_GCA', warmup_epochs=0, save_model=False))
    pm = res['param_match']
    assert pm['target_model'] == 'ABXI_GCA' and pm['target_n_params'] == target
    assert pm['updates'] == {'inner_size': h}
    assert res['n_params'] == abxi_parameter_count(n_items, L, d, h, SMALL['rd'], SMALL['ri'])
    assert abs(res['n_params'] - target) <= per_unit / 2 and abs(pm['rel_diff']) <= 0.02
    assert res['config']['inner_size'] == h


# ------------------------------------------------------------------ LLM4CDSR family
LLM_SMALL = dict(hidden_size=16, inner_size=16, text_domain_dim=16, text_global_dim=24, epochs=1, save_model=False)


@pytest.mark.parametrize('quirks', [False, True])
def test_llm4cdsr_one_epoch(tiny, quirks):
    seqs, cfg = tiny
    extra = dict(causal_attention=False, global_emb_scale='table', independent_negatives=True,
                 negatives_skip_last_item=True, empty_thread='official', profile_include_valid=True) if quirks else {}
    res = run_recbole_ortho(model='LLM4CDSR', dataset='tiny', config_dict=dict(cfg, **LLM_SMALL, **extra))
    _check(res, len(seqs))
    assert set(res['trace'][0]) >= {'loss_a', 'loss_b', 'loss_reg', 'loss_user'}
    for d in ('A', 'B'):
        assert res['test'][d]['n_users'] > 0 and 0.0 <= res['test'][d]['hit@10'] <= 1.0


@pytest.mark.parametrize('act,heads,ln,gate,positions', [('sigmoid', 4, True, 'vector', [0]),
                                                         ('tanh', 8, False, 'vector', [1]),
                                                         ('sigmoid', 4, True, 'scalar', [0, 2]),
                                                         ('tanh', 4, True, 'none', [2])])
def test_llm4cdsr_gca_one_epoch_each_option(tiny, act, heads, ln, gate, positions):
    seqs, cfg = tiny
    res = run_recbole_ortho(model='LLM4CDSR_GCA', dataset='tiny', config_dict=dict(
        cfg, **LLM_SMALL, gca_activation=act, gca_heads=heads, gca_layernorm=ln, gca_gate=gate,
        gca_positions=positions))
    _check(res, len(seqs))
    for p in positions:
        for k in (f'ortho_cos_a@gca{p}', f'ortho_cos_b@gca{p}'):
            assert 0.0 <= res['test']['all'][k] <= 1.0
            assert 0.0 <= res['test']['all'][k + '/paper'] <= 1.0
            assert k in res['trace'][-1]['valid']['all']


def test_llm4cdsr_param_match_and_no_profile_term(tiny):
    seqs, cfg = tiny
    gca = run_recbole_ortho(model='LLM4CDSR_GCA', dataset='tiny', config_dict=dict(cfg, **LLM_SMALL))
    res = run_recbole_ortho(model='LLM4CDSR', dataset='tiny', config_dict=dict(cfg, **LLM_SMALL,
                                                                              param_match='LLM4CDSR_GCA'))
    assert res['param_match']['target_n_params'] == gca['n_params']
    assert abs(res['n_params'] - gca['n_params']) <= 0.02 * gca['n_params']
    assert res['config']['inner_size'] > LLM_SMALL['inner_size']
    off = run_recbole_ortho(model='LLM4CDSR', dataset='tiny', config_dict=dict(cfg, **LLM_SMALL, user_weight=0.0,
                                                                              user_profile='none'))
    assert 'loss_user' not in off['trace'][0]
    _check(off, len(seqs))


# ------------------------------------------------------------------ CDSRNP family
NP_SMALL = dict(hidden_size=16, inner_size=16, n_heads=2, support_size=8, eval_support_size=6, latent_size=4,
                epochs=2, kl_warmup_epochs=2, save_model=False)


@pytest.mark.parametrize('extra', [{}, {'ce_negatives': 5}, {'latent_path': False}, {'deterministic_path': False},
                                   {'latent_path': False, 'deterministic_path': False}, {'n_layers': 1, 'n_heads': 1}])
def test_cdsrnp_one_epoch_each_option(tiny, extra):
    seqs, cfg = tiny
    res = run_recbole_ortho(model='CDSRNP', dataset='tiny', config_dict=dict(cfg, **dict(NP_SMALL, **extra)))
    _check(res, len(seqs))
    latent = extra.get('latent_path', True)
    assert set(res['trace'][0]) >= {'loss_a', 'loss_b'} and ('kl' in res['trace'][0]) == latent
    if latent:                                              # the KL warm-up: 1/2, then 1 of kl_weight
        assert [t['kl_beta'] for t in res['trace']] == [0.5, 1.0]
    for d in ('A', 'B'):
        assert res['test'][d]['n_users'] > 0 and 0.0 <= res['test'][d]['hit@10'] <= 1.0


@pytest.mark.parametrize('act,heads,ln,gate,gate_input,positions', [
    ('sigmoid', 4, True, 'vector', 'concat_other', [0]), ('tanh', 8, False, 'vector', 'concat_attn', [1]),
    ('sigmoid', 4, True, 'scalar', 'concat_other', [0, 2]), ('tanh', 2, True, 'none', 'concat_other', [2])])
def test_cdsrnp_gca_one_epoch_each_option(tiny, act, heads, ln, gate, gate_input, positions):
    seqs, cfg = tiny
    res = run_recbole_ortho(model='CDSRNP_GCA', dataset='tiny', config_dict=dict(
        cfg, **NP_SMALL, gca_activation=act, gca_heads=heads, gca_layernorm=ln, gca_gate=gate,
        gca_gate_input=gate_input, gca_positions=positions))
    _check(res, len(seqs))
    t = res['test']['all']
    for p in positions:
        for k in (f'ortho_cos_a@gca{p}', f'ortho_cos_b@gca{p}'):
            assert 0.0 <= t[k] <= 1.0 and 0.0 <= t[k + '/paper'] <= 1.0 and 0.0 <= t[k + '/median_abs'] <= 1.0
            assert t[k + '/n_steps'] > 0 and t[k + '/no_key_steps'] > 0      # steps before the other domain's first
            assert k in res['trace'][-1]['valid']['all']


def test_cdsrnp_gca_ortho_weight_and_param_match(tiny):
    seqs, cfg = tiny
    gca = run_recbole_ortho(model='CDSRNP_GCA', dataset='tiny', config_dict=dict(cfg, **NP_SMALL, gca_ortho_weight=0.3))
    assert 'ortho_penalty' in gca['trace'][0]
    res = run_recbole_ortho(model='CDSRNP', dataset='tiny', config_dict=dict(cfg, **NP_SMALL, param_match='CDSRNP_GCA'))
    pm = res['param_match']
    assert pm['target_n_params'] == gca['n_params'] and abs(pm['rel_diff']) <= 0.02
    assert res['config']['inner_size'] == pm['updates']['inner_size'] > NP_SMALL['inner_size']


def test_cdsrnp_gca_reports_overlap_groups(tiny):
    """overlap_ratio 0.5: the non-overlapped users get metrics of their own, and their GCA queries
    (no key on the other side) are counted, not averaged into the orthogonality statistics."""
    seqs, cfg = tiny
    res = run_recbole_ortho(model='CDSRNP_GCA', dataset='tiny', config_dict=dict(cfg, **NP_SMALL, overlap_ratio=0.5))
    t = res['test']
    assert t['all/overlap']['n_users'] > 0 and t['all/non_overlap']['n_users'] > 0
    assert t['all/overlap']['n_users'] + t['all/non_overlap']['n_users'] == t['all']['n_users']
    non = t['all/non_overlap']
    assert non['ortho_cos_a@gca0/n_steps'] == 0 and non['ortho_cos_a@gca0/no_key_steps'] > 0
    assert math.isnan(non['ortho_cos_a@gca0/paper'])
    assert res['data']['overlap_ratio'] == 0.5
