"""Replaying the first epochs of a stored run (recbole_ortho.sweep.replay): the same code on the
same machine trains them again exactly; a changed record shows as a difference; bad input names
the file or the option."""

import json
import sys

import pytest
import yaml

from recbole_ortho.sweep import RunStore, run_sweep
from recbole_ortho.sweep.replay import compare_traces, main, replay
from tests.conftest import tiny_config_dict, write_tiny_dataset, write_tiny_items
from tests.test_sweep import SMALL


@pytest.fixture(autouse=True)
def _argv(monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['pytest'])


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
    """One finished ABXI_GCA run of a tiny sweep (3 epochs, 1 thread), shared by the tests."""
    tmp = tmp_path_factory.mktemp('replay')
    write_tiny_dataset(tmp / 'data')
    write_tiny_items(tmp / 'data')
    cfg = tiny_config_dict(tmp)
    spec = tmp / 'spec.yaml'
    spec.write_text(yaml.safe_dump({'datasets': ['tiny'], 'seeds': [3], 'settings': dict(SMALL, epochs=3),
                                    'models': {'ABXI_GCA': {}}, 'param_matched': False}))
    argv, sys.argv = sys.argv, ['pytest']
    try:
        run_sweep(spec, tmp / 'sw', workers=1, threads=1, show_progress=False, data_path=cfg['data_path'],
                  cache_dir=cfg['cache_dir'])
    finally:
        sys.argv = argv
    (run_id, *_), = [(s['run_id'],) for s, _ in RunStore(tmp / 'sw').results()]
    return tmp / 'sw' / 'runs' / run_id, cfg


def test_same_code_same_machine_trains_the_first_epochs_again_exactly(finished_run, tmp_path):
    run_dir, cfg = finished_run
    out = main([str(run_dir), '--epochs=2', f'--data_path={cfg["data_path"]}', f'--json_out={tmp_path / "r.json"}'])
    assert out['epochs_replayed'] == 2 and [e['epoch'] for e in out['epochs']] == [0, 1]
    assert out['train_loss_max_rel_diff'] == 0.0 and out['valid_score_max_abs_diff'] == 0.0
    assert out['stored']['git_commit'] == out['replayed']['git_commit'] and out['replayed']['threads'] == 1
    written = json.loads((tmp_path / 'r.json').read_text())
    assert written['run_id'] == run_dir.name and str(tmp_path) not in json.dumps(written)


def test_a_changed_record_shows_as_a_difference(finished_run, tmp_path):
    run_dir, cfg = finished_run
    copy = tmp_path / run_dir.name
    copy.mkdir()
    (copy / 'spec.json').write_text((run_dir / 'spec.json').read_text())
    res = json.loads((run_dir / 'result.json').read_text())
    res['trace'][1]['train_loss'] *= 1.01                      # as if another code had trained it
    res['trace'][0]['valid_score'] += 0.002
    (copy / 'result.json').write_text(json.dumps(res))
    out = replay(copy, epochs=2, data_path=cfg['data_path'])
    assert out['train_loss_max_rel_diff'] == pytest.approx(0.01 / 1.01, rel=1e-6)
    assert out['valid_score_max_abs_diff'] == pytest.approx(0.002, rel=1e-6)


def test_compare_traces_by_hand():
    out = compare_traces([{'epoch': 0, 'train_loss': 2.0, 'valid_score': 0.10}, {'epoch': 1, 'train_loss': 1.0}],
                         [{'epoch': 0, 'train_loss': 2.1, 'valid_score': 0.12}, {'epoch': 1, 'train_loss': 1.0}])
    assert out['train_loss_max_rel_diff'] == pytest.approx(0.05) and out['valid_score_max_abs_diff'] == pytest.approx(0.02)


def test_bad_input_names_the_file_or_option(finished_run, tmp_path):
    run_dir, _ = finished_run
    with pytest.raises(FileNotFoundError, match='spec.json is missing'):
        replay(tmp_path)
    (tmp_path / 'spec.json').write_text((run_dir / 'spec.json').read_text())
    with pytest.raises(FileNotFoundError, match='result.json is missing'):
        replay(tmp_path)                                                 # an unfinished run
    with pytest.raises(ValueError, match='--epochs=9: the stored run has 3 epochs'):
        replay(run_dir, epochs=9)
