"""benchmarks/bench_abxi.py end to end on the tiny fixture (our models only; the official code is
not here): each model in its own process, the evaluation pass timed ``--eval_passes`` times with
the median reported, the table and the JSON file."""

import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_abxi_on_the_tiny_fixture(tiny, tmp_path):
    _, cfg = tiny
    settings = {k: cfg[k] for k in ('data_path', 'cache_dir', 'MAX_ITEM_LIST_LENGTH', 'train_batch_size',
                                    'eval_batch_size', 'eval_neg_num')}
    settings.update(hidden_size=16, inner_size=16, n_heads=2)
    out = tmp_path / 'bench.json'
    cmd = [sys.executable, str(REPO / 'benchmarks' / 'bench_abxi.py'), '--models', 'ABXI,ABXI_GCA',
           '--dataset', 'tiny', '--batches', '3', '--threads', '1', '--eval_passes', '3',
           '--config_json', json.dumps(settings), '--json_out', str(out)]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    names = [x['model'] for x in res['runs']]
    assert names == ['ABXI', 'ABXI_GCA', 'ABXI (param-matched to ABXI_GCA)']
    for x in res['runs']:
        assert len(x['eval_s_all']) == 3 and x['eval_s'] == statistics.median(x['eval_s_all']) > 0
        assert x['step_s_median'] > 0 and x['peak_rss_mb'] > 0
    assert res['runs'][2]['n_params'] == res['runs'][1]['n_params']      # the matched base
    assert res['gca_step_ratio'] > 0 and 'official' not in res
    assert res['provenance']['git_commit']
    assert '| ABXI_GCA |' in r.stdout


def test_interleave_times_two_trees_in_one_process_and_names_them_by_commit(tiny, tmp_path):
    """``--compare_dir`` with ``--interleave`` against this very tree: both sides' steps timed
    alternately, each tree named by its commit, and no machine path in the file."""
    _, cfg = tiny
    settings = {k: cfg[k] for k in ('data_path', 'cache_dir', 'MAX_ITEM_LIST_LENGTH', 'train_batch_size', 'eval_neg_num')}
    settings.update(hidden_size=16, inner_size=16, n_heads=2)
    out = tmp_path / 'ab.json'
    cmd = [sys.executable, str(REPO / 'benchmarks' / 'bench_abxi.py'), '--models', 'ABXI', '--dataset', 'tiny',
           '--batches', '2', '--rounds', '2', '--threads', '1', '--compare_dir', str(REPO), '--interleave',
           '--config_json', json.dumps(settings), '--json_out', str(out)]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    m = res['models']['ABXI']
    assert m['steps'] == 4 and m['this_s_median'] > 0 and m['other_s_median'] > 0 and m['pair_ratio_median'] > 0
    assert res['trees']['this'] == res['trees']['other'] and res['trees']['this']['git_commit']
    assert res['dataset'] == 'tiny' and res['cpu'] and res['threads'] == 1
    assert str(REPO) not in out.read_text() and str(tmp_path) not in out.read_text()
    assert '| ABXI | 4 |' in r.stdout
