"""End-to-end runs on the tiny fixture: every runnable model trains one epoch; result JSON;
determinism; checkpoints under torch >= 2.6; errors before training."""

import json
import subprocess
import sys

import pytest
import torch

from recbole_ortho.quick_start import run_recbole_ortho
from recbole_ortho.utils import load_checkpoint
from tests.conftest import REPO

BUILTIN = ['SASRec', 'GRU4Rec', 'BERT4Rec']


@pytest.fixture(autouse=True)
def _argv(monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['pytest'])


def check_result(res, n_users):
    for phase in ('valid', 'test'):
        r = res[phase]
        assert r['A']['n_users'] + r['B']['n_users'] == r['all']['n_users'] == n_users
        for d in ('A', 'B', 'all'):
            for m in ('ndcg@1', 'ndcg@10', 'hit@5', 'hit@10', 'hit@20', 'mrr', 'auc'):
                assert 0.0 <= r[d][m] <= 1.0
    assert res['n_params'] > 0


@pytest.mark.parametrize('model', BUILTIN)
def test_builtin_models_one_epoch(tiny, tmp_path, model):
    seqs, cfg = tiny
    res = run_recbole_ortho(model=model, dataset='tiny', config_dict=dict(cfg, result_file=str(tmp_path / 'r.json')))
    check_result(res, len(seqs))
    on_disk = json.loads((tmp_path / 'r.json').read_text())
    assert set(on_disk) >= {'valid', 'test', 'n_params', 'config', 'trace'}
    assert on_disk['test']['all']['mrr'] == pytest.approx(res['test']['all']['mrr'])
    assert on_disk['config']['model'] == model


def test_same_seed_same_metrics(tiny):
    _, cfg = tiny
    a = run_recbole_ortho(model='SASRec', dataset='tiny', config_dict=dict(cfg, epochs=2))
    b = run_recbole_ortho(model='SASRec', dataset='tiny', config_dict=dict(cfg, epochs=2))
    assert a['test'] == b['test'] and a['valid'] == b['valid']
    c = run_recbole_ortho(model='SASRec', dataset='tiny', config_dict=dict(cfg, epochs=2, seed=99))
    assert c['trace'][0]['train_loss'] != a['trace'][0]['train_loss']


def test_full_protocol(tiny):
    seqs, cfg = tiny
    res = run_recbole_ortho(model='GRU4Rec', dataset='tiny', config_dict=dict(cfg, eval_protocol='full'))
    check_result(res, len(seqs))


def test_checkpoint_loads_under_torch_weights_only(tiny):
    _, cfg = tiny
    res = run_recbole_ortho(model='SASRec', dataset='tiny', config_dict=cfg)
    path = res['checkpoint']
    ckpt = load_checkpoint(path)
    assert 'state_dict' in ckpt and ckpt['config']['model'] == 'SASRec'
    # the process-wide default stays safe: a plain torch.load refuses the pickled Config
    with pytest.raises(Exception):
        torch.load(path)


def test_cli_errors_before_training(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, str(REPO / 'run_recbole_ortho.py'), *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
    p = run('--model=NoSuch', '--dataset=food_kitchen')
    assert p.returncode == 2 and 'Unknown model [NoSuch]' in p.stderr and 'SASRec' in p.stderr
    p = run('--model=SASRec', '--dataset=nowhere')
    assert p.returncode == 2 and 'dataset [nowhere]' in p.stderr and 'food_kitchen' in p.stderr
    p = run('--model=SASRec', '--dataset=food_kitchen', '--eval_protocol=bogus')
    assert p.returncode == 2 and 'eval_protocol' in p.stderr
    assert not (tmp_path / 'saved').exists() or not list((tmp_path / 'saved').glob('*.pth'))
