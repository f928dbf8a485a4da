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


def test_result_carries_provenance_and_per_user_ranks(tiny, tmp_path):
    """``provenance`` in the result JSON (versions, device, precision, commit; no host or path);
    ``save_ranks`` writes each evaluated user's rank beside it, and the per-domain means of the
    metrics recomputed from those ranks are the result's."""
    import numpy as np
    from recbole_ortho.evaluator.metrics import compute_metrics
    seqs, cfg = tiny
    out = tmp_path / 'r.json'
    res = run_recbole_ortho(model='ABXI', dataset='tiny', config_dict=dict(
        cfg, embedding_size=16, n_heads=2, inner_size=24, rd=2, ri=4, n_neg_per_domain=8, epochs=1,
        warmup_epochs=0, result_file=str(out), save_ranks=True))
    on_disk = json.loads(out.read_text())
    prov = on_disk['provenance']
    assert set(prov) == {'package_version', 'git_commit', 'git_dirty', 'versions', 'device', 'precision',
                         'precision_emulated'}
    assert prov['versions']['torch'] == torch.__version__ and prov['versions']['recbole'] == '1.0.1'
    assert prov['device']['threads'] >= 1 and prov['device']['cpu'] and prov['precision'] == 'fp32'
    assert prov['git_commit'] == 'unknown' or len(prov['git_commit']) == 40
    import socket
    assert socket.gethostname() not in json.dumps(prov) and str(tmp_path) not in json.dumps(prov)
    assert on_disk['ranks_file'] == 'r.ranks.npz'
    z = np.load(tmp_path / 'r.ranks.npz')
    for split in ('valid', 'test'):
        assert len(z[f'{split}_user']) == len(seqs) and z[f'{split}_user'].dtype.kind == 'U'
        vals = compute_metrics(['ndcg@10', 'mrr'], torch.as_tensor(z[f'{split}_rank']),
                               torch.as_tensor(z[f'{split}_n_neg']), torch.as_tensor(z[f'{split}_ties']), 'average')
        for dom, name in ((0, 'A'), (1, 'B')):
            m = z[f'{split}_domain'] == dom
            for k in ('ndcg@10', 'mrr'):
                assert vals[k].numpy()[m].mean() == pytest.approx(res[split][name][k])


def test_save_ranks_without_result_file_is_refused(tiny):
    _, cfg = tiny
    with pytest.raises(Exception, match='save_ranks'):
        run_recbole_ortho(model='SASRec', dataset='tiny', config_dict=dict(cfg, save_ranks=True, result_file=None))


def test_also_evaluate_reuses_the_best_weights_under_other_protocols(tiny):
    """``also_evaluate`` evaluates the same weights again: its entry with the run's own settings
    reproduces the run's metrics exactly; another protocol gives other numbers; a setting that is
    not an evaluation setting is refused, naming it."""
    from recbole_ortho.config import ConfigError
    _, cfg = tiny
    res = run_recbole_ortho(model='ABXI_GCA', dataset='tiny', config_dict=dict(
        cfg, eval_neg_num=20, also_evaluate={'same': {'eval_neg_num': 20}, 'ten': {'eval_neg_num': 10},
                                              'full': {'eval_protocol': 'full'}}))
    assert set(res['also']) == {'same', 'ten', 'full'}
    assert res['also']['same']['test'] == res['test'] and res['also']['same']['valid'] == res['valid']
    assert res['also']['ten']['settings'] == {'eval_neg_num': 10}
    assert res['also']['ten']['test']['all']['auc'] != res['test']['all']['auc']
    assert res['also']['full']['test']['all']['n_users'] == res['test']['all']['n_users']
    with pytest.raises(ConfigError, match=r'also_evaluate.x: learning_rate cannot change'):
        run_recbole_ortho(model='SASRec', dataset='tiny', config_dict=dict(cfg, also_evaluate={'x': {'learning_rate': 1}}))
