"""Trainer: warm-up schedule, validation schedule, per-epoch trace."""

import re
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
    assert res['stop_reason'] == 'time_budget'


def test_stop_reason_early_stopping_or_epoch_cap(tiny, monkeypatch):
    """Scores forced to peak at epoch 0: patience 2 stops after epoch 3, the third evaluation without
    improvement, as RecBole's early_stopping (``early_stopping``); a run that
    reaches ``epochs`` says ``epoch_cap`` (not converged)."""
    from recbole_ortho.evaluator import CDSREvaluator
    _, cfg = tiny
    forced = iter([0.9, 0.1, 0.2, 0.3, 0.4])
    monkeypatch.setattr(CDSREvaluator, 'valid_score', lambda self, result: next(forced))
    res = run_recbole_ortho(model='GRU4Rec', dataset='tiny', config_dict=dict(cfg, epochs=5, stopping_step=2,
                                                                              save_model=False))
    assert (res['stop_reason'], res['epochs_run'], res['best_epoch']) == ('early_stopping', 4, 0)   # RecBole: > 2
    monkeypatch.undo()
    monkeypatch.setattr(sys, 'argv', ['pytest'])
    res = run_recbole_ortho(model='GRU4Rec', dataset='tiny', config_dict=dict(cfg, epochs=2, save_model=False))
    assert (res['stop_reason'], res['epochs_run']) == ('epoch_cap', 2)


@pytest.mark.parametrize('save_model', [True, False])
def test_reported_model_is_the_best_epoch_not_the_last(tiny, monkeypatch, save_model):
    """The validation scores are forced to peak at epoch 1 of 4 (the metrics themselves are the
    real ones of each epoch): the reported validation result equals the trace at best_epoch,
    and the test result is that of the epoch-1 weights, with and without a checkpoint."""
    import copy

    from recbole_ortho.evaluator import CDSREvaluator
    from recbole_ortho.trainer import CDSRTrainer

    _, cfg = tiny
    forced = iter([0.1, 0.9, 0.2, 0.3])
    monkeypatch.setattr(CDSREvaluator, 'valid_score', lambda self, result: next(forced))
    weights = {}
    fit = CDSRTrainer._run_epoch

    def run_epoch(self, train_data, epoch):            # remember each epoch's trained weights
        loss = fit(self, train_data, epoch)
        weights[epoch] = copy.deepcopy(self.model.state_dict())
        return loss

    monkeypatch.setattr(CDSRTrainer, '_run_epoch', run_epoch)
    res = run_recbole_ortho(model='GRU4Rec', dataset='tiny', config_dict=dict(
        cfg, epochs=4, learning_rate=0.05, save_model=save_model, stopping_step=10))
    assert res['best_epoch'] == 1 and res['epochs_run'] == 4
    assert res['valid'] == res['trace'][1]['valid'] != res['trace'][3]['valid']
    assert (res['checkpoint'] is not None) == save_model
    # the test metrics come from the epoch-1 weights
    from recbole_ortho.config import Config
    from recbole_ortho.data import create_dataset, data_preparation
    from recbole_ortho.quick_start import build_model
    config = Config(model='GRU4Rec', dataset='tiny', config_dict=dict(cfg, epochs=4))
    data = create_dataset(config)
    _, _, test = data_preparation(config, data, train_format='prefix')
    model, _ = build_model(config, data)
    trainer = CDSRTrainer(config, model, data)
    for epoch, expect_equal in ((1, True), (3, False)):
        model.load_state_dict(weights[epoch])
        got = trainer.evaluate(test, load_best_model=False)
        assert (got == res['test']) == expect_equal, epoch


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_non_finite_loss_stops_at_once_naming_epoch_and_batch(tiny, monkeypatch, bad):
    from recbole.model.sequential_recommender.gru4rec import GRU4Rec
    from recbole_ortho.trainer import NonFiniteLossError
    from recbole_ortho.config import Config
    from recbole_ortho.data import create_dataset, data_preparation
    _, cfg = tiny
    cfg = dict(cfg, epochs=3, train_batch_size=64)
    config = Config(model='GRU4Rec', dataset='tiny', config_dict=cfg)
    n_batches = len(data_preparation(config, create_dataset(config), train_format='prefix')[0])
    assert n_batches >= 2
    calls = {'n': 0}
    orig = GRU4Rec.calculate_loss

    def loss(self, interaction):
        calls['n'] += 1
        out = orig(self, interaction)
        return out * bad if calls['n'] == n_batches + 2 else out       # epoch 1, batch 1
    monkeypatch.setattr(GRU4Rec, 'calculate_loss', loss)
    with pytest.raises(NonFiniteLossError, match=r'training loss is (nan|inf) at epoch 1, batch 1 '):
        run_recbole_ortho(model='GRU4Rec', dataset='tiny', config_dict=cfg)
    assert calls['n'] == n_batches + 2                                  # stopped at once


def test_absurd_learning_rate_fails_clearly(tiny, tmp_path):
    import subprocess
    from tests.conftest import REPO
    _, cfg = tiny
    args = [f'--{k}={v}' for k, v in cfg.items() if k in ('data_path', 'cache_dir', 'checkpoint_dir', 'tensorboard_dir',
                                                            'eval_neg_num', 'MAX_ITEM_LIST_LENGTH', 'show_progress')]
    p = subprocess.run([sys.executable, str(REPO / 'run_recbole_ortho.py'), '--model=SASRec', '--dataset=tiny',
                        '--epochs=20', '--learner=sgd', '--learning_rate=1e30', *args],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    assert re.search(r'error: training loss is (nan|inf) at epoch \d+, batch \d+', p.stderr), p.stderr[-2000:]
