"""benchmarks/official_llm4cdsr.py end to end on a few users' worth of compute: our Food-Kitchen data
in the official input format, the official code driven by import, one tiny training batch and
two evaluation batches. Skipped unless LLM4CDSR_OFFICIAL_DIR points at a checkout of the official
code (it is not part of this repository) and the Food-Kitchen data is available."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_food_kitchen

REPO = Path(__file__).resolve().parents[1]
OFFICIAL = os.environ.get('LLM4CDSR_OFFICIAL_DIR')


@pytest.mark.skipif(not OFFICIAL, reason='LLM4CDSR_OFFICIAL_DIR is not set (official checkout absent)')
def test_official_driver_small_batch(tmp_path):
    if shared_food_kitchen() is None and not (REPO / 'dataset' / 'food_kitchen' / 'food_kitchen_A').is_dir():
        pytest.skip('Food-Kitchen data is not available')
    work = tmp_path / 'work'
    out = tmp_path / 'r.json'
    cmd = [sys.executable, str(REPO / 'benchmarks' / 'official_llm4cdsr.py'), '--official_dir', OFFICIAL,
           '--random_features', '--batches', '1', '--eval_batches', '1', '--threads', '1',
           '--workdir', str(work), '--json_out', str(out), '--extra', '--train_batch_size', '4']
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res == json.loads(out.read_text())
    assert res['features'] == 'random' and res['detect_anomaly'] is True and res['device'] == 'cpu'
    assert res['official_dir'] == '<official checkout>'           # no machine's path in a result
    assert res['batch_size'] == 4 and res['max_len'] == 200 and np.isfinite(res['losses'][0])
    assert res['eval_s'] > 0 and res['eval_batches_per_pass'] == 72
    inp = res['input']
    assert (inp['n_users'], inp['n_item_a'], inp['n_item_b']) == (7144, 11837, 16258)
    assert inp['table_shapes'] == {'global_all': [28095, 384], 'domain_A': [11837, 128],
                                   'domain_B': [16258, 128], 'user_profile': [7144, 384]}
    # the official model: frozen tables [n_items, 384], [n_A + 1, 128], [n_B + 1, 128], [n_users, 384]
    frozen = (11837 + 16258 + 1) * 384 + (11837 + 1) * 128 + (16258 + 1) * 128 + 7144 * 384
    assert res['n_params'] - res['n_params_trainable'] == frozen

    hd = work / 'data' / 'amazon' / 'handled'
    inter_seq, domain_seq = pickle.load(open(hd / 'food_kitchen.pkl', 'rb'))
    id_map = json.loads((hd / 'id_map.json').read_text())
    assert id_map['item_dict']['item_count'] == {'0': 11837, '1': 16258}
    assert max(id_map['user_dict']['str2id'].values()) == len(inter_seq) == 7144
    assert sorted(inter_seq) == list(range(1, 7145))
    items = np.concatenate(list(inter_seq.values()))
    doms = np.concatenate(list(domain_seq.values()))
    assert set(np.unique(doms)) == {0, 1}
    assert items.min() == 1 and items[doms == 0].max() <= 11837 and items[doms == 1].max() <= 16258
    assert len(items) == 173548
