"""Real Food-Kitchen data end to end (slow; skipped when ../shared/data is absent):
auto-preparation from the raw ABXI files, one epoch of ABXI_GCA, per-domain metrics and
orthogonality statistics for all 7,144 users."""

import json
import sys

import pytest

from recbole_ortho.quick_start import run_recbole_ortho
from tests.conftest import shared_food_kitchen

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _argv(monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['pytest'])


def run_on_food_kitchen(tmp_path, monkeypatch, model, **settings):
    """One run of ``model`` on the shared Food-Kitchen data, prepared into ``tmp_path`` (skips
    when ../shared/data is absent); ``settings`` are added to a one-epoch, quiet configuration."""
    raw = shared_food_kitchen()
    if raw is None:
        pytest.skip('../shared/data/food_kitchen is not available')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('RECBOLE_ORTHO_DATA', str(raw.parent))
    return run_recbole_ortho(model=model, dataset='food_kitchen', config_dict=dict({
        'data_path': str(tmp_path / 'dataset'), 'cache_dir': str(tmp_path / 'cache'), 'epochs': 1,
        'show_progress': False, 'save_model': False, 'threads': 2}, **settings))


def test_abxi_gca_one_epoch_on_food_kitchen(tmp_path, monkeypatch):
    run_on_food_kitchen(tmp_path, monkeypatch, 'ABXI_GCA', warmup_epochs=0, result_file=str(tmp_path / 'r.json'))
    assert (tmp_path / 'dataset' / 'food_kitchen' / 'food_kitchen_A' / 'food_kitchen_A.inter').is_file()
    r = json.loads((tmp_path / 'r.json').read_text())
    assert r['test']['A']['n_users'] == 2419 and r['test']['B']['n_users'] == 4725
    assert r['test']['all']['n_users'] == 7144
    assert r['n_params'] == 10572800
    for k in ('ortho_cos_a@gca0', 'ortho_cos_b@gca0', 'cross_cos_a@gca0', 'cross_cos_b@gca0'):
        assert 0.0 <= r['test']['all'][k] <= 1.0
    assert 0.0 < r['test']['all']['ndcg@10'] <= 1.0 and 0.3 < r['test']['all']['auc'] < 1.0
    assert r['trace'][0]['train_loss'] > 0


def test_readme_main_command_shows_learning(tmp_path):
    """The README's first command, as written, on a clean working directory: it finishes,
    writes r.json, and the test metrics are clearly above chance (NDCG@10 >= 0.05 on both
    domains; chance is about 0.0045) with the orthogonality statistics beside them."""
    raw = shared_food_kitchen()
    if raw is None:
        pytest.skip('../shared/data/food_kitchen is not available')
    import os
    import subprocess
    import time
    from tests.conftest import REPO
    cmd = [sys.executable, str(REPO / 'run_recbole_ortho.py'), '--model=ABXI_GCA', '--dataset=food_kitchen',
           f'--config_files={REPO / "properties" / "quick_start" / "food_kitchen_quick.yaml"}', '--result_file=r.json',
           '--show_progress=False']
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900,
                         env=dict(os.environ, RECBOLE_ORTHO_DATA=str(raw.parent)))
    wall = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads((tmp_path / 'r.json').read_text())
    for d in ('A', 'B'):
        assert r['test'][d]['ndcg@10'] >= 0.05, (d, r['test'][d]['ndcg@10'])
        for k in ('ortho_cos_a@gca0', 'ortho_cos_b@gca0'):
            assert 0.0 < r['test'][d][k] < 1.0
    assert r['epochs_run'] == 3 and r['config']['warmup_epochs'] == 0
    assert wall < 300, wall


def test_cdsrnp_gca_one_epoch_on_food_kitchen_with_overlap_groups(tmp_path, monkeypatch):
    """The issue's check: CDSRNP_GCA one epoch on Food-Kitchen gives per-domain metrics and the
    orthogonality statistics; with overlap_ratio 0.25 the overlapped / non-overlapped groups too
    (their GCA queries without a key counted, not averaged in). Sampled CE keeps it short."""
    res = run_on_food_kitchen(tmp_path, monkeypatch, 'CDSRNP_GCA', ce_negatives=256, overlap_ratio=0.25)
    t = res['test']
    assert t['all']['n_users'] == 7144
    assert res['data']['after']['overlapped'] == 1786 and res['data']['after']['A_only'] + \
        res['data']['after']['B_only'] == 7144 - 1786
    assert t['all/overlap']['n_users'] + t['all/non_overlap']['n_users'] == 7144
    for k in ('ortho_cos_a@gca0', 'ortho_cos_b@gca0'):
        assert 0.0 < t['all'][k] < 1.0 and 0.0 <= t['all'][k + '/median_abs'] <= 1.0
        assert t['all/non_overlap'][k + '/n_steps'] == 0 < t['all/non_overlap'][k + '/no_key_steps']
    assert 0.0 < t['all']['ndcg@10'] <= 1.0 and 0.3 < t['all']['auc'] < 1.0


def test_llm4cdsr_built_five_more_times_costs_under_5_percent_of_the_first_build(tmp_path, monkeypatch):
    """The dataset hands LLM4CDSR its text tables (computed once per dataset): on Food-Kitchen, with
    a cold text cache, five more builds cost under 5 % of the first (which ran the text pipeline)."""
    from recbole_ortho.config import Config
    from recbole_ortho.data import create_dataset
    from tests.conftest import build_times
    raw = shared_food_kitchen()
    if raw is None:
        pytest.skip('../shared/data/food_kitchen is not available')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('RECBOLE_ORTHO_DATA', str(raw.parent))
    config = Config(model='LLM4CDSR', dataset='food_kitchen', config_dict={
        'data_path': str(tmp_path / 'dataset'), 'cache_dir': str(tmp_path / 'cache'), 'threads': 2})
    first, again = build_times(config, create_dataset(config))
    print(f'first build {first:.2f} s, five more {again:.2f} s ({100 * again / first:.1f} %)')
    assert again < 0.05 * first, (again, first)
