"""Sweeps: expansion (grid x seeds x matched bases, ids stable across processes), the local
engine, resume after a kill, failed runs recorded and retried on request, .hyper grids."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from recbole_ortho.sweep import RunStore, expand, load_spec, read_hyper_grid, run_sweep
from recbole_ortho.utils import ConfigError
from tests.conftest import REPO

SMALL = dict(embedding_size=16, inner_size=24, rd=2, ri=4, n_heads=2, n_neg_per_domain=8, epochs=1, warmup_epochs=0,
             eval_neg_num=10, MAX_ITEM_LIST_LENGTH=10, train_batch_size=16, state='WARNING')


@pytest.fixture(autouse=True)
def _argv(monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['pytest'])


def write_spec(tmp_path, **over):
    spec = {'datasets': ['tiny'], 'seeds': [1, 2], 'settings': dict(SMALL),
            'models': {'ABXI': {}, 'ABXI_GCA': {'grid': {'gca_layernorm': [True, False]}}}, 'param_matched': True}
    spec.update(over)
    path = tmp_path / 'spec.yaml'
    path.write_text(yaml.safe_dump(spec))
    return path


def test_expansion_grid_seeds_and_matched_bases(tiny, tmp_path):
    _, cfg = tiny
    spec = load_spec(write_spec(tmp_path))
    runs = expand(spec, data_root=cfg['data_path'])
    by = {}
    for r in runs:
        by.setdefault((r.model, r.variant), []).append(r.seed)
    # 2 seeds x (ABXI base + 2 GCA points + the base matched to each of the 2 distinct GCA counts)
    assert len(runs) == 10 and all(sorted(s) == [1, 2] for s in by.values())
    assert ('ABXI', 'base') in by and ('ABXI_GCA', 'gca_layernorm=true') in by and ('ABXI_GCA', 'gca_layernorm=false') in by
    matched = [r for r in runs if r.settings.get('param_match') == 'ABXI_GCA']
    assert len(matched) == 4 and {r.settings['gca_layernorm'] for r in matched} == {True, False}
    assert len({r.run_id for r in runs}) == 10
    # the same ids in another process
    code = ('import sys, json; sys.argv = ["x"]; from recbole_ortho.sweep import expand, load_spec; '
            'print(json.dumps([r.run_id for r in expand(load_spec(sys.argv[1] if False else SPEC), data_root=DATA)]))')
    code = code.replace('SPEC', repr(str(tmp_path / 'spec.yaml'))).replace('DATA', repr(cfg['data_path']))
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [r.run_id for r in runs]
    # a changed setting is another run
    other = expand(load_spec(write_spec(tmp_path, seeds=[1], settings=dict(SMALL, epochs=2))), data_root=cfg['data_path'])
    assert not {r.run_id for r in other} & {r.run_id for r in runs}


def test_excluded_grid_points_are_not_run(tiny, tmp_path):
    """``exclude`` drops a grid point (and the matched base of a parameter count only it had); the
    other runs keep the ids of the full expansion; a point the grid lacks, or an excluded primary, is an error."""
    _, cfg = tiny
    full = expand(load_spec(write_spec(tmp_path)), data_root=cfg['data_path'])
    models = {'ABXI': {}, 'ABXI_GCA': {'grid': {'gca_layernorm': [True, False]}, 'exclude': [{'gca_layernorm': False}]}}
    runs = expand(load_spec(write_spec(tmp_path, models=models)), data_root=cfg['data_path'])
    # 2 seeds x (base, the GCA point left, the base matched to its count); 10 without the exclusion
    assert len(runs) == 6 and len(full) == 10
    assert {r.variant for r in runs if r.model == 'ABXI_GCA'} == {'gca_layernorm=true'}
    assert {r.settings['gca_layernorm'] for r in runs if r.settings.get('param_match')} == {True}
    assert {r.run_id for r in runs} < {r.run_id for r in full}
    bad = {'ABXI_GCA': {'grid': {'gca_layernorm': [True, False]}, 'exclude': [{'gca_layernorm': 'maybe'}]}}
    with pytest.raises(ConfigError, match=r'models.ABXI_GCA.exclude\[0\]: .* is not a grid point'):
        load_spec(write_spec(tmp_path, models=bad))
    with pytest.raises(ConfigError, match='models.ABXI.exclude: the model has no grid'):
        load_spec(write_spec(tmp_path, models={'ABXI': {'exclude': [{}]}}))
    with pytest.raises(ConfigError, match=r'primary.variant: .* is excluded'):
        load_spec(write_spec(tmp_path, models=models, primary={'model': 'ABXI_GCA', 'against': 'matched',
                                                               'variant': {'gca_layernorm': False}}))


def test_local_sweep_runs_everything_once(tiny, tmp_path):
    _, cfg = tiny
    spec = write_spec(tmp_path, models={'ABXI_GCA': {'grid': {'gca_activation': ['sigmoid', 'tanh']}}},
                      param_matched=False)
    summary = run_sweep(spec, tmp_path / 'sw', workers=2, threads=1, show_progress=False,
                        data_path=cfg['data_path'], cache_dir=cfg['cache_dir'])
    assert summary['states']['finished'] == summary['runs'] == summary['ran_now'] == 4
    store = RunStore(tmp_path / 'sw')
    results = store.results()
    assert len(results) == 4
    for spec_json, res in results:
        assert res['model'] == 'ABXI_GCA' and res['trace'] and 'ortho_cos_a@gca0' in res['test']['all']
        assert res['config']['seed'] == spec_json['seed']
        # the trial checkpoints every epoch (a killed run resumes) and deletes its checkpoints once finished
        assert res['config']['save_model'] is True and res['checkpoint'] is None
        assert not list(Path(store.path(spec_json['run_id'])).rglob('*.pth*'))
        assert not os.path.isabs(res['config']['data_path']) and str(tmp_path) not in json.dumps(res)
        assert (Path(store.path(spec_json['run_id'])) / 'stdout.log').is_file()
    assert summary['overhead_s_median'] is not None and summary['runs_per_hour'] > 0
    again = run_sweep(spec, tmp_path / 'sw', workers=2, show_progress=False, data_path=cfg['data_path'],
                      cache_dir=cfg['cache_dir'])
    assert again['ran_now'] == 0 and again['states']['finished'] == 4


def test_claim_is_exclusive_and_replaces_only_stale_locks(tmp_path):
    store = RunStore(tmp_path / 'sw')
    lock = Path(store.path('r1', 'running.json'))
    assert store.claim('r1') is True
    assert json.loads(lock.read_text())['pid'] == os.getpid() and store.state('r1') == 'running'
    assert store.claim('r1') is False                                   # held by a live process (this one)
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    lock.write_text(json.dumps({'pid': dead.pid, 'host': socket.gethostname(), 'since': 0}))
    assert store.state('r1') == 'pending' and store.claim('r1') is True  # a stale lock is replaced
    assert json.loads(lock.read_text())['pid'] == os.getpid()
    lock.write_text('')                                                  # a lock its writer never finished
    assert store.claim('r1') is True
    live = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        held = json.dumps({'pid': live.pid, 'host': socket.gethostname(), 'since': 0})
        lock.write_text(held)
        assert store.claim('r1') is False and lock.read_text() == held   # another live sweep keeps it
    finally:
        live.kill()
        live.wait()
    Path(store.path('r2')).mkdir()
    Path(store.path('r2', 'result.json')).write_text('{}')
    assert store.claim('r2') is False                                    # finished
    assert sorted(p.name for p in Path(store.runs_dir).rglob('*')) == ['r1', 'r2', 'result.json', 'running.json']


def test_a_run_another_sweep_took_meanwhile_is_skipped(tiny, tmp_path):
    from recbole_ortho.sweep import plan
    from recbole_ortho.sweep.local import run_local
    _, cfg = tiny
    spec = write_spec(tmp_path, models={'ABXI': {}}, param_matched=False)
    _, runs, store, paths = plan(spec, tmp_path / 'sw', cfg['data_path'], cfg['cache_dir'])
    assert len(runs) == 2 and all(store.state(r.run_id) == 'pending' for r in runs)
    other = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])   # the other sweep
    try:
        Path(store.path(runs[0].run_id)).mkdir(parents=True)
        Path(store.path(runs[0].run_id, 'running.json')).write_text(
            json.dumps({'pid': other.pid, 'host': socket.gethostname(), 'since': 0}))
        done = run_local(store, runs, paths, workers=1, threads=1, show_progress=False)
    finally:
        other.kill()
        other.wait()
    assert list(done) == [runs[1].run_id] and done[runs[1].run_id]['state'] == 'finished'
    assert store.state(runs[0].run_id) == 'pending'                      # its holder died: free again


def test_killed_sweep_resumes_without_rerunning_finished_runs(tiny, tmp_path):
    _, cfg = tiny
    spec = write_spec(tmp_path, seeds=[1, 2, 3], models={'ABXI': {}}, param_matched=False,
                      settings=dict(SMALL, epochs=3))
    cmd = [sys.executable, str(REPO / 'run_sweep.py'), str(spec), f'--sweep_dir={tmp_path / "sw"}', '--workers=1',
           '--no_progress', f'--data_path={cfg["data_path"]}']
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs_dir = tmp_path / 'sw' / 'runs'
    deadline = time.time() + 240
    while time.time() < deadline and not list(runs_dir.glob('*/result.json')):
        time.sleep(0.2)
    finished = list(runs_dir.glob('*/result.json'))
    assert finished, 'no run finished in time'
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(1.0)                                           # the trial dies with the sweep (PDEATHSIG)
    stamps = {p: p.stat().st_mtime_ns for p in runs_dir.glob('*/result.json')}
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / 'sw' / 'summary.json').read_text())
    assert summary['states']['finished'] == 3 and summary['ran_now'] == 3 - len(stamps)
    for p, t in stamps.items():
        assert p.stat().st_mtime_ns == t                      # finished runs were not run again


def test_failed_run_is_recorded_and_retried_on_request(tiny, tmp_path):
    _, cfg = tiny
    spec = write_spec(tmp_path, seeds=[1], models={'ABXI': {'grid': {'learning_rate': [0.001, 1.0e+30]}}},
                      param_matched=False, settings=dict(SMALL, learner='sgd', epochs=5))
    kw = dict(workers=2, show_progress=False, data_path=cfg['data_path'], cache_dir=cfg['cache_dir'])
    s1 = run_sweep(spec, tmp_path / 'sw', **kw)
    assert s1['states'] == {'finished': 1, 'failed': 1, 'running': 0, 'pending': 0}
    (rid, msg), = s1['failed'].items()
    assert 'training loss is' in msg and 'at epoch' in msg and 'batch' in msg
    store = RunStore(tmp_path / 'sw')
    err = json.loads(Path(store.path(rid, 'error.json')).read_text())
    assert err['type'] == 'NonFiniteLossError' and err['attempts'] == 1 and 'Traceback' in err['traceback']
    assert run_sweep(spec, tmp_path / 'sw', **kw)['ran_now'] == 0         # not retried unasked
    s3 = run_sweep(spec, tmp_path / 'sw', retry_failed=True, **kw)
    assert s3['ran_now'] == 1 and json.loads(Path(store.path(rid, 'error.json')).read_text())['attempts'] == 2


def test_hyper_grid_file_and_spec_errors(tmp_path):
    hyper = tmp_path / 'g.hyper'
    hyper.write_text('learning_rate choice [0.001, 0.0003]\n# a comment\ngca_heads choice [4, 8]\n')
    assert read_hyper_grid(hyper) == {'learning_rate': [0.001, 0.0003], 'gca_heads': [4, 8]}
    (tmp_path / 'bad.hyper').write_text('learning_rate loguniform -8,0\n')
    with pytest.raises(ConfigError, match=r'bad.hyper line 1: \[loguniform\] is a distribution'):
        read_hyper_grid(tmp_path / 'bad.hyper')
    path = write_spec(tmp_path, models={'ABXI_GCA': {'grid_file': 'g.hyper'}})
    assert load_spec(path)['models']['ABXI_GCA']['grid'] == {'learning_rate': [0.001, 0.0003], 'gca_heads': [4, 8]}
    with pytest.raises(ConfigError, match=r'spec.yaml: unknown keys \[.colour.\]'):
        load_spec(write_spec(tmp_path, colour='red'))
    with pytest.raises(ConfigError, match='seeds missing or empty'):
        load_spec(write_spec(tmp_path, seeds=[]))


def test_shipped_sweep_specs_load():
    folder = REPO / 'properties' / 'sweep'
    specs = sorted(folder.glob('*.yaml'))
    assert len(specs) >= 2
    for f in specs:
        spec = load_spec(f)
        assert spec['datasets'] and spec['seeds'] and spec['models']
    paper = load_spec(folder / 'abxi_paper_grid.yaml')
    grid = paper['models']['ABXI_GCA']['grid']
    assert {'gca_positions', 'gca_activation', 'gca_heads', 'gca_layernorm'} <= set(grid)
    assert len(paper['seeds']) == 5 and paper['param_matched']


def test_run_hyper_selects_on_validation(tiny, tmp_path):
    _, cfg = tiny
    hyper = tmp_path / 'tiny.hyper'
    hyper.write_text("gca_activation choice ['sigmoid', 'tanh']\nlearning_rate choice [0.001, 0.01]\n")
    args = [f'--{k}={v}' for k, v in dict(cfg, **SMALL).items() if k not in ('state',)]
    out = subprocess.run([sys.executable, str(REPO / 'run_hyper.py'), '--model=ABXI_GCA', '--dataset=tiny',
                          f'--params_file={hyper}', f'--output_file={tmp_path / "h.result"}', *args],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / 'h.result.json').read_text())
    assert len(summary['trials']) == 4                                  # the exhaustive grid
    scores = [t['valid_score'] for t in summary['trials']]
    assert summary['best_valid_score'] == max(scores) and summary['selected_on'].startswith('validation')
    best = summary['trials'][summary['best_trial']]
    assert json.loads(Path(summary['best_result_file']).read_text())['best_valid_score'] == best['valid_score']
    assert 'Valid result' in (tmp_path / 'h.result').read_text()
    assert {tuple(sorted(t['params'].items())) for t in summary['trials']} == {
        (('gca_activation', a), ('learning_rate', lr)) for a in ('sigmoid', 'tanh') for lr in (0.001, 0.01)}


def test_shipped_hyper_files_parse():
    from recbole.trainer import HyperTuning
    for f in sorted((REPO / 'properties' / 'hyper').glob('*.hyper')):
        assert HyperTuning(lambda *a: None, params_file=str(f), algo='exhaustive' if 'loguniform' not in f.read_text()
                           else __import__('hyperopt').rand.suggest).space


def test_ray_engine_writes_the_same_run_store(tiny, tmp_path):
    """A small sweep on a local Ray cluster (2 CPUs, one CPU per trial): the same run ids and
    result files as the local engine; a second call runs nothing."""
    pytest.importorskip('ray')
    _, cfg = tiny
    spec = write_spec(tmp_path, models={'ABXI': {}}, param_matched=False)
    kw = dict(engine='ray', show_progress=False, data_path=cfg['data_path'], cache_dir=cfg['cache_dir'],
              num_cpus=2, cpus_per_trial=1)
    summary = run_sweep(spec, tmp_path / 'ray_sw', **kw)
    assert summary['states']['finished'] == summary['ran_now'] == 2 and summary['engine'] == 'ray'
    local = expand(load_spec(spec), data_root=cfg['data_path'])
    ids = {s['run_id'] for s, _ in RunStore(tmp_path / 'ray_sw').results()}
    assert ids == {r.run_id for r in local}
    assert run_sweep(spec, tmp_path / 'ray_sw', **kw)['ran_now'] == 0


@pytest.mark.parametrize('path', sorted((Path(__file__).resolve().parents[1] / 'properties' / 'sweep').glob('*.yaml')),
                         ids=lambda p: p.name)
def test_shipped_sweep_specs_load_and_name_known_models_and_keys(path):
    """Every shipped spec loads, its models exist and every setting / grid key is a key of the model's
    property files or of overall.yaml (a typo would otherwise only fail hours into a sweep)."""
    import yaml
    from conftest_models import model_defaults
    from recbole_ortho.model.registry import get_model
    spec = load_spec(str(path))
    overall = yaml.safe_load(open(Path(__file__).resolve().parents[1] / 'properties' / 'overall.yaml'))
    for name, entry in spec['models'].items():
        known = set(model_defaults(get_model(name))) | set(overall)
        grid = (entry or {}).get('grid') or {}
        unknown = (set(grid) | set(spec.get('settings') or {})) - known
        assert not unknown, f'{path.name}: {name}: unknown keys {sorted(unknown)}'


@pytest.mark.parametrize('path', sorted((Path(__file__).resolve().parents[1] / 'properties' / 'hyper').glob('*.hyper')),
                         ids=lambda p: p.name)
def test_shipped_hyper_files_name_known_keys(path):
    """Every shipped .hyper file parses (RecBole's syntax) and names keys of the model it is for."""
    from conftest_models import model_defaults
    from recbole_ortho.model.registry import known_models
    name = {m.lower(): m for m in known_models()[0]}[path.stem]     # <model in lower case>.hyper
    keys = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    assert keys and not set(keys) - set(model_defaults(name))


#: the keys of properties/overall.yaml that enter every run id (all others are in ID_NEUTRAL)
ID_KEYS = ['ITEM_ID_FIELD', 'ITEM_LIST_LENGTH_FIELD', 'LIST_SUFFIX', 'MAX_ITEM_LIST_LENGTH', 'SEQ_INDEX_FIELD',
           'TIME_FIELD', 'USER_ID_FIELD', 'cache_dir', 'checkpoint_dir', 'clip_grad_norm', 'data_path', 'epochs',
           'eval_batch_size', 'eval_neg_num', 'eval_protocol', 'eval_seed', 'eval_step', 'gpu_id', 'learner',
           'learning_rate', 'loss_type', 'lr_plateau_factor', 'lr_plateau_patience', 'lr_scheduler',
           'metric_decimal_place', 'metrics', 'param_match', 'raw_source', 'reproducibility', 'result_file',
           'save_model', 'seed', 'show_progress', 'state', 'stopping_step', 'tensorboard_dir', 'threads',
           'time_budget_s', 'train_batch_size', 'use_gpu', 'valid_domain', 'valid_metric', 'warmup_epochs',
           'weight_decay']


def test_a_new_overall_setting_does_not_change_every_run_id():
    """Every key of overall.yaml enters each run id unless ID_NEUTRAL names it with its neutral
    value: a new setting added without an ID_NEUTRAL entry would give every committed run a new id
    (the sweeps would run them all again). Add the new key to ID_NEUTRAL, or, if every run really
    changes, to ID_KEYS here."""
    import yaml
    from recbole_ortho.sweep.spec import ID_NEUTRAL
    from recbole_ortho.utils import properties_dir
    with open(os.path.join(properties_dir(), 'overall.yaml')) as f:
        keys = set(yaml.safe_load(f))
    assert sorted(keys - set(ID_NEUTRAL)) == ID_KEYS
    assert ID_NEUTRAL['precision'] == 'fp32' and ID_NEUTRAL['also_evaluate'] is None
