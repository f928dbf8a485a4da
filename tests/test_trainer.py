"""Trainer: warm-up schedule, validation schedule, per-epoch trace."""

import sys

import pytest

from recbole_ortho.quick_start import run_recbole_ortho


@pytest.fixture(autouse=True)
def _argv(monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['pytest'])


def test_warmup_ramp_and_no_validation_during_warmup(tiny):
    _, cfg = tiny
    res = run_recbole_ortho(model='GRU4Rec', dataset='tiny',
                            config_dict=dict(cfg, epochs=5, warmup_epochs=4, learning_rate=0.01, save_model=False))
    lrs = [e['lr'] for e in res['trace']]
    # epoch k < 4 trains at 0.01 * (1e-5 + (1 - 1e-5) * k / 4), then 0.01
    expect = [0.01 * (1e-5 + (1 - 1e-5) * k / 4) for k in range(4)] + [0.01]
    assert lrs == pytest.approx(expect)
    assert ['valid' in e for e in res['trace']] == [False, False, False, False, True]
    assert res['best_epoch'] == 4


def test_eval_step_and_trace(tiny):
    _, cfg = tiny
    res = run_recbole_ortho(model='GRU4Rec', dataset='tiny', config_dict=dict(cfg, epochs=4, eval_step=2,
                                                                              save_model=False))
    assert ['valid' in e for e in res['trace']] == [False, True, False, True]
    for e in res['trace']:
        assert e['train_time_s'] > 0 and e['train_loss'] > 0


def test_time_budget_stops_after_the_epoch_that_exceeds_it(tiny):
    _, cfg = tiny
    res = run_recbole_ortho(model='GRU4Rec', dataset='tiny', config_dict=dict(cfg, epochs=50, time_budget_s=1e-9,
                                                                              save_model=False))
    assert res['epochs_run'] == 1 and res['stopped_by_time_budget']
    assert 'valid' in res['trace'][0]
