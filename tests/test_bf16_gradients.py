"""benchmarks/bf16_gradients.py: the error measures by hand, and the script end to end on the tiny
fixture (two fp32 passes see the same draws, bf16 moves the gradients, the JSON file)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'benchmarks'))

from bf16_gradients import part_of, relative_errors  # noqa: E402


def test_parts_and_relative_errors_by_hand():
    assert part_of('threads.1.ffn_in.0.weight') == 'threads.1'
    assert part_of('adapter.0.weight') == 'adapter.0' and part_of('item_embedding.weight') == 'item_embedding'
    ref = {'a.weight': torch.tensor([3.0, 4.0]), 'b.0.w': torch.tensor([1.0, 0.0])}
    new = {'a.weight': torch.tensor([3.0, 4.0]), 'b.0.w': torch.tensor([1.0, 1.0])}
    total, per = relative_errors(ref, new)
    assert per == {'a': 0.0, 'b.0': 1.0}
    assert total == pytest.approx((1.0 / 26.0) ** 0.5)               # ||(0, 0, 0, 1)|| / ||(3, 4, 1, 0)||


def test_bf16_gradients_on_the_tiny_fixture(tiny, tmp_path):
    _, cfg = tiny
    settings = {k: cfg[k] for k in ('data_path', 'cache_dir', 'MAX_ITEM_LIST_LENGTH', 'train_batch_size', 'eval_neg_num')}
    settings.update(hidden_size=16, inner_size=16, n_heads=2)
    out = tmp_path / 'grads.json'
    cmd = [sys.executable, str(REPO / 'benchmarks' / 'bf16_gradients.py'), '--models', 'ABXI,ABXI_GCA',
           '--dataset', 'tiny', '--batches', '2', '--threads', '1', '--config_json', json.dumps(settings),
           '--json_out', str(out)]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    for name in ('ABXI', 'ABXI_GCA'):
        m = res['models'][name]
        assert m['batches'] == 2 and m['fp32_repeat_error'] == 0.0
        assert 0 < m['grad_rel_error_median'] < 0.5                   # bf16 moved the gradients, a little
        assert m['worst_part'] == next(iter(m['parts']))
    assert res['models']['ABXI']['gca_input_norm'] is None
    norm = res['models']['ABXI_GCA']['gca_input_norm']
    assert list(norm) == ['0'] and len(norm['0']) == 2 and min(norm['0']) > 0   # gca_positions [0]: one stage
    gca_parts = [[p for p in res['models'][n]['parts'] if p.split('.')[0] == 'gca'] for n in ('ABXI', 'ABXI_GCA')]
    assert gca_parts[0] == [] and gca_parts[1]                       # the GCA layers: a part of their own
    assert res['provenance']['git_commit'] and 'ABXI_GCA: loss' in r.stdout
