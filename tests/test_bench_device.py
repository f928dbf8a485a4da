"""benchmarks/bench_device.py (the prepared script for a lent GPU) end to end on the tiny fixture on
the CPU: every model and precision in its own process, the precision that ran, the epochs to the
best epoch from a run store, a failing combination recorded in its row, the table and the file."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'benchmarks'))


def _store(root, rows):
    for i, r in enumerate(rows):
        d = root / 'runs' / f'run{i}'
        d.mkdir(parents=True)
        (d / 'result.json').write_text(json.dumps(r))


def test_epochs_to_best_reads_converged_unmatched_runs(tmp_path):
    from bench_device import epochs_to_best
    _store(tmp_path / 'study_x', [
        {'model': 'ABXI', 'best_epoch': 9, 'stop_reason': 'early_stopping'},
        {'model': 'ABXI', 'best_epoch': 19, 'stop_reason': 'early_stopping'},
        {'model': 'ABXI', 'best_epoch': 99, 'stop_reason': 'epoch_cap'},                      # not converged
        {'model': 'ABXI', 'best_epoch': 49, 'stop_reason': 'early_stopping', 'param_match': {'target_model': 'X'}},
        {'model': 'ABXI_GCA', 'best_epoch': 4, 'stop_reason': 'early_stopping'}])
    assert epochs_to_best(str(tmp_path / 'study_*'), 'ABXI') == (15, 2)
    assert epochs_to_best(str(tmp_path / 'study_*'), 'CDSRNP') == (None, 0)


def test_bench_device_on_the_tiny_fixture(tiny, tmp_path):
    _, cfg = tiny
    extra = {k: cfg[k] for k in ('data_path', 'cache_dir', 'MAX_ITEM_LIST_LENGTH', 'train_batch_size',
                                 'eval_batch_size', 'eval_neg_num')}
    extra.update(embedding_size=16, inner_size=24, rd=2, ri=4, n_heads=2, n_neg_per_domain=8)
    _store(tmp_path / 'store', [{'model': 'ABXI', 'best_epoch': 4, 'stop_reason': 'early_stopping'}])
    out = tmp_path / 'device.json'
    cmd = [sys.executable, str(REPO / 'benchmarks' / 'bench_device.py'), '--models', 'ABXI,NoSuchModel',
           '--precisions', 'fp32,bf16', '--steps', '2', '--threads', '1', '--dataset', 'tiny',
           '--config_json', json.dumps(extra), '--study_store', str(tmp_path / 'store'), '--json_out', str(out)]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    ok = [x for x in res['runs'] if 'error' not in x]
    assert [(x['model'], x['precision_requested']) for x in ok] == [('ABXI', 'fp32'), ('ABXI', 'bf16')]
    for x in ok:
        assert x['step_s_median'] > 0 and x['epoch_s'] > 0 and x['eval_s'] > 0 and x['peak_mem_mb'] > 0
        assert x['precision'] in ('fp32', 'bf16') and x['epochs_to_best'] == 5
        assert abs(x['device_s_per_converged_run'] - 5 * (x['epoch_s'] + x['eval_s'])) < 1e-9
    assert ok[0]['precision'] == 'fp32'
    for x in ok:                                      # the profile of two steps: top operators, matmul share
        prof = x['profile']
        assert 0 < prof['matmul_share'] < 1 and prof['total_ms'] > 0
        assert len(prof['top']) == 12 and abs(sum(o['share'] for o in prof['top']) - 1) < 1 and \
            prof['top'][0]['self_ms'] >= prof['top'][-1]['self_ms']
        assert any(o['op'] in ('aten::mm', 'aten::addmm', 'aten::bmm') for o in prof['top'])
    bad = [x for x in res['runs'] if 'error' in x]
    assert [x['model'] for x in bad] == ['NoSuchModel', 'NoSuchModel'] and all(x['error'] for x in bad)
    assert '| ABXI | bf16 (' in r.stdout and 'failed:' in r.stdout


def test_summarise_profile_by_hand():
    from bench_device import summarise_profile

    class E:
        def __init__(self, key, us, n):
            self.key, self.self_cpu_time_total, self.count = key, us, n

    out = summarise_profile([E('aten::mm', 600, 3), E('aten::add', 300, 9), E('aten::bmm', 100, 1), E('x', 0, 1)],
                            device_time=False, top=2)
    assert out['total_ms'] == 1.0 and out['matmul_share'] == 0.7
    assert out['products_only_bound'] == pytest.approx(1 / 0.3)
    inplace = summarise_profile([E('aten::addmm_', 500, 2), E('aten::mul', 500, 4)], device_time=False)
    assert inplace['matmul_share'] == 0.5 and inplace['products_only_bound'] == 2.0   # addmm_ is a product too
    assert out['top'] == [{'op': 'aten::mm', 'self_ms': 0.6, 'calls': 3, 'share': 0.6},
                          {'op': 'aten::add', 'self_ms': 0.3, 'calls': 9, 'share': 0.3}]
