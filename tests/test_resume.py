"""Resume (``--resume``): the last-epoch checkpoint, bit-for-bit continuation of a run killed after
epoch 2 (ABXI_GCA, LLM4CDSR, CDSRNP), refusals with one line, and a sweep trial killed with
SIGKILL that resumes from its checkpoint."""

import glob
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from recbole_ortho.quick_start import run_recbole_ortho
from recbole_ortho.trainer import CDSRTrainer
from recbole_ortho.trainer import trainer as trainer_module
from recbole_ortho.trainer.trainer import (RESUME_FREE_KEYS, ResumeError, private_generators, rng_state,
                                           set_rng_state)
from recbole_ortho.utils.utils import load_checkpoint

#: tiny settings; ABXI_GCA with a warm-up and a ReduceLROnPlateau of patience 0, so that the resumed
#: epochs depend on the restored learning rate and scheduler state
SETTINGS = {
    'ABXI_GCA': dict(embedding_size=16, inner_size=24, rd=2, ri=4, n_heads=2, n_neg_per_domain=8, warmup_epochs=2,
                     lr_scheduler='plateau', lr_plateau_patience=0),
    'LLM4CDSR': dict(hidden_size=16, inner_size=16, text_domain_dim=16, text_global_dim=24),
    'CDSRNP': dict(hidden_size=16, inner_size=16, n_heads=2, support_size=8, eval_support_size=6, latent_size=4,
                   kl_warmup_epochs=3),
}
#: trace fields that hold wall-clock time (the only ones allowed to differ)
TIME_FIELDS = ('train_time_s', 'valid_time_s')


@pytest.fixture(autouse=True)
def _argv(monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['pytest'])


class Killed(Exception):
    """Stands for the process dying right after an epoch's last checkpoint."""


def run_killed(monkeypatch, model, config_dict, after):
    """Run until the last checkpoint of epoch ``after`` is written, then die; returns its path."""
    orig = CDSRTrainer._save_last_checkpoint

    def save_then_die(self, epoch, *args):
        orig(self, epoch, *args)
        if epoch == after:
            raise Killed

    with monkeypatch.context() as m:
        m.setattr(CDSRTrainer, '_save_last_checkpoint', save_then_die)
        with pytest.raises(Killed):
            run_recbole_ortho(model=model, dataset='tiny', config_dict=config_dict)
    last, = glob.glob(os.path.join(config_dict['checkpoint_dir'], '*-last.pth'))
    return last


def same(a, b):
    """Exact equality of nested results, NaN equal to NaN (a statistic without steps)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def untimed(trace):
    return [{k: v for k, v in e.items() if k not in TIME_FIELDS} for e in trace]


def config_for(cfg, tmp_path, tag, model, **over):
    return dict(cfg, checkpoint_dir=str(tmp_path / tag / 'saved'), tensorboard_dir=str(tmp_path / tag / 'tb'),
                **SETTINGS.get(model, {}), **over)


@pytest.mark.parametrize('model', ['ABXI_GCA', 'LLM4CDSR', 'CDSRNP'])
def test_killed_after_epoch_2_and_resumed_equals_an_uninterrupted_run(tiny, tmp_path, monkeypatch, model):
    _, cfg = tiny
    full = run_recbole_ortho(model=model, dataset='tiny',
                             config_dict=config_for(cfg, tmp_path, 'full', model, epochs=5))
    last = run_killed(monkeypatch, model, config_for(cfg, tmp_path, 'kill', model, epochs=5), after=2)
    ckpt = load_checkpoint(last)
    assert ckpt['epoch'] == 2 and len(ckpt['trace']) == 3 and ckpt['checkpoint_kind'] == 'last'
    assert ckpt['data_fingerprint'] and set(ckpt['rng']['generators']) >= {'train_loader'}
    assert (ckpt['scheduler'] is not None) == (model == 'ABXI_GCA')
    res = run_recbole_ortho(model=model, dataset='tiny', config_dict=config_for(cfg, tmp_path, 'kill', model, epochs=5,
                                                                                resume=last))
    assert res['resumed_from'] == {'checkpoint': last, 'epoch': 2}
    # wall_time_s is the whole run: this process's time plus the fitting time before the checkpoint
    assert res['wall_time_s'] == pytest.approx(res['wall_time_process_s'] + ckpt['fit_time_s'], abs=0.01)
    assert ckpt['fit_time_s'] > 0 and full['wall_time_s'] == full['wall_time_process_s']
    for key in ('valid', 'test', 'best_epoch', 'best_valid_score', 'epochs_run', 'stop_reason'):
        assert same(full[key], res[key]), key
    assert len(res['trace']) == 5 and same(untimed(full['trace']), untimed(res['trace']))
    # the best checkpoints hold the same weights; the last one continued at the resumed path
    best_full, = glob.glob(str(tmp_path / 'full' / 'saved' / f'{model}-tiny-*[0-9].pth'))
    a, b = load_checkpoint(best_full), load_checkpoint(res['checkpoint'])
    assert a['epoch'] == b['epoch'] == full['best_epoch']
    assert all(torch.equal(a['state_dict'][k], b['state_dict'][k]) for k in a['state_dict'])
    assert load_checkpoint(last)['epoch'] == 4
    assert res['checkpoint'] == last[:-len('-last.pth')] + '.pth'


def test_resume_needs_the_random_states(tiny, tmp_path, monkeypatch):
    """Negative control of the test above: restoring everything but the random states gives
    another run (the comparison can fail)."""
    _, cfg = tiny
    model = 'CDSRNP'
    full = run_recbole_ortho(model=model, dataset='tiny',
                             config_dict=config_for(cfg, tmp_path, 'full', model, epochs=4))
    last = run_killed(monkeypatch, model, config_for(cfg, tmp_path, 'kill', model, epochs=4), after=1)
    monkeypatch.setattr(trainer_module, 'set_rng_state', lambda state, generators: None)
    res = run_recbole_ortho(model=model, dataset='tiny', config_dict=config_for(cfg, tmp_path, 'kill', model, epochs=4,
                                                                                resume=last))
    assert same(untimed(full['trace'][:2]), untimed(res['trace'][:2]))            # restored from the checkpoint
    assert full['trace'][2]['train_loss'] != res['trace'][2]['train_loss']      # redrawn: another run


def test_private_generators_are_found_and_restored():
    """A torch, numpy or python generator held by a module or by a helper object one level below
    it (a sampler) is saved and restored with the global ones."""
    import random

    import numpy as np

    class Sampler:
        def __init__(self):
            self.generator = torch.Generator().manual_seed(5)
            self.rng = np.random.default_rng(3)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = torch.nn.Linear(2, 2)
            self.inner.sampler = Sampler()
            self.own = torch.Generator().manual_seed(7)
            self.legacy = np.random.RandomState(1)
            self.py = random.Random(2)

    class Loader:
        generator = torch.Generator().manual_seed(9)

    def draw(gens):
        out = []
        for g in gens.values():
            if isinstance(g, torch.Generator):
                out += torch.rand(3, generator=g).tolist()
            elif isinstance(g, random.Random):
                out.append(g.random())
            else:
                out += list(g.random(3))
        return out + torch.rand(3).tolist() + list(np.random.random(3)) + [random.random()]

    net, loader = Net(), Loader()
    gens = private_generators(net, {'train': loader})
    assert set(gens) == {'train_loader', 'model.inner.sampler.generator', 'model.inner.sampler.rng', 'model.own',
                         'model.legacy', 'model.py'}
    state = rng_state(gens)
    first = draw(gens)
    set_rng_state(state, gens)
    assert draw(gens) == first
    assert draw(gens) != first                          # the states move on: the equality above is not trivial
    with pytest.raises(ResumeError, match=r"resume: the checkpoint's private random generators"):
        set_rng_state(state, {'train_loader': loader.generator})


def test_refusals_name_the_problem_in_one_line(tiny, tmp_path, monkeypatch):
    _, cfg = tiny
    base = config_for(cfg, tmp_path, 'kill', 'GRU4Rec', epochs=4)
    last = run_killed(monkeypatch, 'GRU4Rec', base, after=1)

    def refused(pattern, **over):
        with pytest.raises(ResumeError, match=pattern) as err:
            run_recbole_ortho(model='GRU4Rec', dataset='tiny', config_dict=dict(base, **dict({'resume': last}, **over)))
        assert '\n' not in str(err.value) and str(err.value).startswith('resume: ')
        return str(err.value)

    msg = refused(r'settings differ .* in \[\'learning_rate\', \'seed\'\]', learning_rate=0.01, seed=7)
    assert 'learning_rate=0.01 (checkpoint: 0.001)' in msg and 'seed=7 (checkpoint: 2020)' in msg
    refused(r"in \['stopping_step'\]", stopping_step=3)
    refused(r'epochs=1 is below the 2 epochs', epochs=1)
    refused(r'checkpoint not found', resume=str(tmp_path / 'nope-last.pth'))
    best = last[:-len('-last.pth')] + '.pth'
    refused(r'is not a last-epoch checkpoint', resume=best)
    bad = tmp_path / 'corrupt-last.pth'
    bad.write_bytes(open(last, 'rb').read()[:1000])
    refused(r'cannot read .*corrupt-last\.pth', resume=str(bad))
    with open(Path(cfg['data_path']) / 'tiny' / 'tiny_A' / 'tiny_A.inter', 'a') as f:
        f.write('u0\ta1\t5000\t99\n')
    refused(r'data files of dataset \[tiny\] differ')


def test_operational_keys_may_change(tiny, tmp_path, monkeypatch):
    """A resume may move the outputs, the data and the cache and change what is shown; the run
    continues its own checkpoint files. A run that had stopped early trains nothing more."""
    from recbole_ortho.evaluator import CDSREvaluator
    _, cfg = tiny
    assert 'epochs' in RESUME_FREE_KEYS and 'seed' not in RESUME_FREE_KEYS
    forced = iter([0.9, 0.1, 0.2, 0.3, 0.4, 0.5])
    monkeypatch.setattr(CDSREvaluator, 'valid_score', lambda self, result: next(forced))
    base = config_for(cfg, tmp_path, 'kill', 'GRU4Rec', epochs=6, stopping_step=1)
    last = run_killed(monkeypatch, 'GRU4Rec', base, after=2)         # stopped early at epoch 2 (best 0)
    assert load_checkpoint(last)['stop_reason'] == 'early_stopping'
    data2 = tmp_path / 'data2'
    os.rename(cfg['data_path'], data2)
    monkeypatch.setattr(CDSRTrainer, '_train_epoch', lambda *a: pytest.fail('a stopped run trained again'))
    res = run_recbole_ortho(model='GRU4Rec', dataset='tiny', config_dict=dict(
        base, resume=last, epochs=10, data_path=str(data2) + os.sep, cache_dir=str(tmp_path / 'cache2'),
        tensorboard_dir=str(tmp_path / 'tb2'), checkpoint_dir=str(tmp_path / 'elsewhere'), show_progress=True,
        result_file=str(tmp_path / 'r.json'), state='INFO'))
    assert (res['stop_reason'], res['epochs_run'], res['best_epoch']) == ('early_stopping', 3, 0)
    assert res['checkpoint'] == last[:-len('-last.pth')] + '.pth' and os.listdir(tmp_path / 'elsewhere') == []


def test_best_checkpoint_ahead_of_the_last_one_is_repaired(tiny, tmp_path, monkeypatch):
    """A kill between writing the best checkpoint and the last one leaves a best file of a later
    epoch than the last checkpoint knows: the resumed run rewrites it from the last checkpoint's
    weights, and reports the true best epoch (validation scores forced to peak at epoch 1 of 4)."""
    from recbole_ortho.evaluator import CDSREvaluator
    _, cfg = tiny
    scores = iter([0.1, 0.9, 0.2, 0.3] + [0.1, 0.9] + [0.2, 0.3])       # full run, killed run, resumed run
    monkeypatch.setattr(CDSREvaluator, 'valid_score', lambda self, result: next(scores))
    full = run_recbole_ortho(model='GRU4Rec', dataset='tiny', config_dict=config_for(cfg, tmp_path, 'full', 'GRU4Rec',
                                                                                     epochs=4))
    last = run_killed(monkeypatch, 'GRU4Rec', config_for(cfg, tmp_path, 'kill', 'GRU4Rec', epochs=4), after=1)
    best = last[:-len('-last.pth')] + '.pth'
    ahead = load_checkpoint(best)
    assert ahead['epoch'] == 1
    ahead.update(epoch=2, state_dict={k: torch.zeros_like(v) for k, v in ahead['state_dict'].items()})
    torch.save(ahead, best)
    res = run_recbole_ortho(model='GRU4Rec', dataset='tiny', config_dict=config_for(cfg, tmp_path, 'kill', 'GRU4Rec',
                                                                                    epochs=4, resume=last))
    assert full['best_epoch'] == res['best_epoch'] == 1
    assert same(full['valid'], res['valid']) and same(full['test'], res['test'])
    fixed = load_checkpoint(best)
    assert fixed['epoch'] == 1 and fixed['optimizer'] is None


def test_resume_enters_no_run_id(tiny):
    """``resume`` joined overall.yaml after sweeps were recorded: it changes no run id, whatever its
    value (a resumed run is the same run), while a real setting does."""
    from recbole_ortho.config import Config
    from recbole_ortho.sweep import spec as sp
    _, cfg = tiny
    base = Config(model='ABXI', dataset='tiny', config_dict=cfg)
    assert base['resume'] is None                                                   # the yaml default
    legacy = {k: base[k] for k in base.final_config_dict if k != 'resume'}          # as before the key existed
    fingerprint = [['x', 1, 'y']]

    def rid(settings, base_cfg=base):
        return sp._run('ABXI', 'tiny', 2020, dict(settings), 'base', base_cfg, fingerprint).run_id

    assert rid({'epochs': 3}) == rid({'epochs': 3}, legacy) == rid({'epochs': 3, 'resume': 'saved/X-last.pth'})
    assert rid({'epochs': 4}) != rid({'epochs': 3})


# ------------------------------------------------------------------ sweeps: a trial killed with SIGKILL
STALL = '''
import os, sys, time
from recbole_ortho.trainer.trainer import CDSRTrainer
orig = CDSRTrainer._train_epoch

def stall(self, train_data, epoch):          # the test kills the process while it waits here
    if epoch == int(os.environ['STALL_EPOCH']):
        open(os.environ['STALL_MARKER'], 'w').close()
        time.sleep(600)
    return orig(self, train_data, epoch)

CDSRTrainer._train_epoch = stall
from recbole_ortho.sweep.trial import main
sys.exit(main(sys.argv[1:]))
'''


def test_sweep_trial_killed_with_sigkill_resumes_from_its_last_checkpoint(tiny, tmp_path):
    import yaml
    from recbole_ortho.sweep import RunStore, plan, run_sweep
    from recbole_ortho.sweep.store import read_json, write_json
    _, cfg = tiny
    small = dict(embedding_size=16, inner_size=24, rd=2, ri=4, n_heads=2, n_neg_per_domain=8, epochs=4,
                 warmup_epochs=0, eval_neg_num=10, MAX_ITEM_LIST_LENGTH=10, train_batch_size=16, state='INFO')
    spec = tmp_path / 'spec.yaml'
    spec.write_text(yaml.safe_dump({'datasets': ['tiny'], 'seeds': [1], 'settings': small, 'models': {'ABXI': {}},
                                    'param_matched': False}))
    kw = dict(workers=1, threads=1, show_progress=False, data_path=cfg['data_path'], cache_dir=cfg['cache_dir'])
    assert run_sweep(spec, tmp_path / 'ref', **kw)['states']['finished'] == 1        # uninterrupted
    (_, ref), = RunStore(tmp_path / 'ref').results()

    _, (run,), store, paths = plan(spec, tmp_path / 'sw', cfg['data_path'], cfg['cache_dir'])
    run_dir = Path(store.prepare(run))
    write_json(str(run_dir / 'paths.json'), paths)
    (tmp_path / 'stall.py').write_text(STALL)
    marker = tmp_path / 'stalled'
    env = dict(os.environ, OMP_NUM_THREADS='1', RECBOLE_ORTHO_TRIAL_THREADS='1', STALL_EPOCH='2',
               STALL_MARKER=str(marker))
    with open(run_dir / 'stdout.log', 'w') as out:
        proc = subprocess.Popen([sys.executable, str(tmp_path / 'stall.py'), str(run_dir)], stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 240
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert marker.exists(), (run_dir / 'stdout.log').read_text()[-2000:]
        last, = (run_dir / 'saved').glob('*-last.pth')
        assert load_checkpoint(str(last))['epoch'] == 1               # epochs 0 and 1 done, killed in epoch 2
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None and not marker.exists():                # a failed wait leaves no stalled process
            proc.kill()
        proc.wait(timeout=30)
    assert store.state(run.run_id) == 'pending'
    (run_dir / 'saved' / (last.name + '.tmp')).write_bytes(b'half-written')   # as a kill during a save leaves

    summary = run_sweep(spec, tmp_path / 'sw', **kw)
    assert summary['states']['finished'] == summary['ran_now'] == 1, summary
    log = (run_dir / 'stdout.log').read_text()
    assert f'trial: resuming from saved{os.sep}{last.name}' in log.splitlines(), log[:2000]
    assert 'Resuming from' in log and 'epoch 1 done' in log
    (_, res), = store.results()
    assert res['resumed_from'] == {'checkpoint': f'saved{os.sep}{last.name}', 'epoch': 1}
    for key in ('valid', 'test', 'best_epoch', 'best_valid_score', 'epochs_run', 'stop_reason'):
        assert same(ref[key], res[key]), key
    assert same(untimed(ref['trace']), untimed(res['trace']))
    # the run store keeps no weights and no machine-specific path
    assert res['checkpoint'] is None and not (run_dir / 'saved').exists()
    assert not list((tmp_path / 'ref').rglob('*.pth*')) and not list((tmp_path / 'sw').rglob('*.pth*'))
    assert str(tmp_path) not in json.dumps(read_json(str(run_dir / 'result.json')))
