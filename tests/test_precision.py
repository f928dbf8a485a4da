"""The ``precision`` setting (recbole_ortho/utils/precision.py): bf16 training and evaluation under
autocast for every model, fp32 where it must stay fp32, and the fallback to fp32 (one warning, the
result says so) on a device without bf16 hardware. This machine's CPU may have none: the bf16 runs
below declare the CPU bf16-capable (``bf16_supported`` patched), which makes torch emulate bf16,
numerically the same as on hardware that has it."""

import logging
import math
import sys

import pytest
import torch

import recbole_ortho.utils.precision as precision
from recbole_ortho.config import ConfigError
from recbole_ortho.model.layers import LayerNorm
from recbole_ortho.quick_start import run_recbole_ortho
from tests.test_models_smoke import LLM_SMALL, NP_SMALL, SMALL


@pytest.fixture(autouse=True)
def _argv(monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['pytest'])


def test_bf16_hardware_is_read_from_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(precision, 'cpu_flags', lambda: {'avx2', 'avx512f'})
    assert not precision.bf16_supported('cpu')
    monkeypatch.setattr(precision, 'cpu_flags', lambda: {'avx512f', 'amx_bf16'})
    assert precision.bf16_supported(torch.device('cpu'))


def test_resolve_precision_falls_back_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(precision, 'bf16_supported', lambda device: False)
    with caplog.at_level(logging.WARNING):
        assert precision.resolve_precision('bf16', torch.device('cpu')) == 'fp32'
    assert len(caplog.records) == 1 and 'no bf16 hardware' in caplog.records[0].getMessage()
    assert precision.resolve_precision('fp32', 'cpu') == 'fp32'
    with pytest.raises(ConfigError, match=r'precision: \[fp16\] must be one of fp32, bf16'):
        precision.resolve_precision('fp16', 'cpu')


def test_layer_norm_normalises_in_fp32_under_autocast():
    torch.manual_seed(0)
    ln = LayerNorm(16)
    x = torch.randn(5, 16) * 30 + 7
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = ln(x.bfloat16())
    assert y.dtype == torch.float32
    assert torch.allclose(y, torch.nn.functional.layer_norm(x.bfloat16().float(), (16,), ln.weight, ln.bias))
    assert torch.equal(ln(x), torch.nn.LayerNorm(16)(x))          # fp32: nn.LayerNorm itself


MODELS = [('ABXI', dict(SMALL, warmup_epochs=0)), ('ABXI_GCA', dict(SMALL, warmup_epochs=0)),
          ('LLM4CDSR', LLM_SMALL), ('LLM4CDSR_GCA', LLM_SMALL), ('CDSRNP', NP_SMALL), ('CDSRNP_GCA', NP_SMALL),
          ('SASRec', dict(epochs=1))]


@pytest.mark.parametrize('model,small', MODELS, ids=[m for m, _ in MODELS])
def test_every_model_trains_and_evaluates_in_bf16(tiny, monkeypatch, model, small):
    """One epoch in train mode (dropout on) under bf16 autocast: finite loss and metrics, fp32
    parameters and gradients, the result and its provenance say bf16; the loss and the metrics
    differ from the fp32 run's (bf16 really ran) but stay close."""
    seqs, cfg = tiny
    monkeypatch.setattr(precision, 'bf16_supported', lambda device: True)
    fp32 = run_recbole_ortho(model=model, dataset='tiny', config_dict=dict(cfg, **small))
    bf16 = run_recbole_ortho(model=model, dataset='tiny', config_dict=dict(cfg, **small, precision='bf16'))
    assert fp32['precision'] == 'fp32' and bf16['precision'] == 'bf16'
    assert bf16['provenance']['precision'] == 'bf16'
    l32, l16 = fp32['trace'][0]['train_loss'], bf16['trace'][0]['train_loss']
    assert math.isfinite(l16) and l16 != l32 and abs(l16 - l32) <= 0.05 * abs(l32)
    for d in ('A', 'B'):
        assert 0.0 <= bf16['test'][d]['ndcg@10'] <= 1.0
    if model.endswith('_GCA'):
        v = bf16['test']['all']['ortho_cos_a@gca0']
        assert 0.0 <= v <= 1.0


def test_bf16_without_hardware_runs_fp32_and_says_so(tiny, monkeypatch):
    seqs, cfg = tiny
    monkeypatch.setattr(precision, 'bf16_supported', lambda device: False)
    res = run_recbole_ortho(model='ABXI_GCA', dataset='tiny', config_dict=dict(cfg, **SMALL, warmup_epochs=0,
                                                                                precision='bf16'))
    ref = run_recbole_ortho(model='ABXI_GCA', dataset='tiny', config_dict=dict(cfg, **SMALL, warmup_epochs=0))
    assert res['precision'] == 'fp32' and res['provenance']['precision'] == 'fp32'
    assert res['config']['precision'] == 'bf16'                    # what was asked for stays in the config
    assert res['test'] == ref['test']                              # and it is the fp32 run, bit for bit


def test_resolve_precision_emulates_bf16_only_on_request_and_only_on_a_cpu(monkeypatch, caplog):
    monkeypatch.setattr(precision, 'bf16_supported', lambda device: False)
    with caplog.at_level(logging.WARNING):
        assert precision.resolve_precision('bf16', torch.device('cpu'), emulate=True) == 'bf16'
    assert len(caplog.records) == 1 and 'emulated' in caplog.records[0].getMessage()
    assert precision.is_emulated('bf16', 'cpu') and not precision.is_emulated('fp32', 'cpu')
    assert precision.resolve_precision('bf16', 'cuda', emulate=True) == 'fp32'   # no emulation on a GPU
    assert precision.resolve_precision('fp32', 'cpu', emulate=True) == 'fp32'
    with pytest.raises(ConfigError, match=r'bf16_emulation: \[yes\] must be True or False'):
        precision.resolve_precision('bf16', 'cpu', emulate='yes')


def test_bf16_emulation_gives_the_bf16_run_and_says_so(tiny, monkeypatch):
    """``bf16_emulation: True`` on a CPU without bf16 hardware runs bf16 (not the fp32 fallback):
    the same numbers as on a CPU declared bf16-capable, and the provenance says emulated."""
    seqs, cfg = tiny
    run_cfg = dict(cfg, **SMALL, warmup_epochs=0, precision='bf16')
    monkeypatch.setattr(precision, 'bf16_supported', lambda device: True)
    hw = run_recbole_ortho(model='ABXI_GCA', dataset='tiny', config_dict=run_cfg)
    monkeypatch.setattr(precision, 'bf16_supported', lambda device: False)
    emu = run_recbole_ortho(model='ABXI_GCA', dataset='tiny', config_dict=dict(run_cfg, bf16_emulation=True))
    fb = run_recbole_ortho(model='ABXI_GCA', dataset='tiny', config_dict=run_cfg)
    assert emu['precision'] == 'bf16' and emu['provenance']['precision_emulated'] is True
    assert hw['provenance']['precision_emulated'] is False and fb['precision'] == 'fp32'
    assert emu['test'] == hw['test'] and emu['test'] != fb['test']
