"""benchmarks/bench_cdsrnp.py end to end on the tiny fixture (a few steps each): the per-model
subprocess timings, the interleaved CDSRNP / CDSRNP_GCA pairs, the table and the JSON file."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_cdsrnp_on_the_tiny_fixture(tiny, tmp_path):
    _, cfg = tiny
    common = {k: cfg[k] for k in ('data_path', 'cache_dir', 'MAX_ITEM_LIST_LENGTH', 'train_batch_size',
                                  'eval_batch_size', 'eval_neg_num')}
    small = dict(hidden_size=16, inner_size=16, n_heads=2, support_size=8, eval_support_size=6, latent_size=4)
    out = tmp_path / 'bench.json'
    cmd = [sys.executable, str(REPO / 'benchmarks' / 'bench_cdsrnp.py'), '--dataset', 'tiny', '--batches', '3',
           '--pairs', '2', '--threads', '1', '--common', json.dumps(common), '--set', json.dumps(small),
           '--json_out', str(out)]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert [x['model'] for x in res['runs']] == ['ABXI', 'CDSRNP', 'CDSRNP_GCA']
    for x in res['runs']:
        assert x['step_s_median'] > 0 and x['eval_s'] > 0 and x['peak_rss_mb'] > 0
    assert res['runs'][1]['n_params'] < res['runs'][2]['n_params']
    g = res['gca_pairs']
    assert g['pairs'] == 2 and len(g['pair_ratios']) == 2 and g['pair_ratio_median'] > 0
    assert '| CDSRNP_GCA |' in r.stdout and 'interleaved pairs' in r.stdout
