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
