"""The fixed-seed runs of the golden test (``tests/test_golden.py``).

Each run trains a model of this package for 2 epochs on the tiny fixture of
:mod:`tests.conftest` (seed 2020, 1 thread) and keeps what a refactoring must not change: the
per-epoch losses (total and per domain), every validation result of the trace, the best
validation and the test results (ranking metrics and orthogonality statistics), the parameter
count and the parameter match. ``golden.json`` was recorded with ``python -m tests.golden.runs``
from main at commit dfdc7ab, before the model family was restructured.
"""

import json
import os
import platform
import sys
import tempfile
from pathlib import Path

SMALL = dict(embedding_size=16, inner_size=24, rd=2, ri=4, n_heads=2, n_neg_per_domain=8, epochs=2,
             warmup_epochs=0, seed=2020)

RUNS = {
    'ABXI': ('ABXI', {}),
    'ABXI_quirks': ('ABXI', {'official_quirks': True}),
    'ABXI_pernegs_2layers': ('ABXI', {'shared_negatives': False, 'n_layers': 2}),
    'ABXI_param_matched': ('ABXI', {'param_match': 'ABXI_GCA'}),
    'ABXI_GCA': ('ABXI_GCA', {}),
    'ABXI_GCA_stack_tanh_attn': ('ABXI_GCA', {'n_layers': 2, 'gca_positions': [0, 2], 'gca_activation': 'tanh',
                                              'gca_gate_input': 'concat_attn', 'gca_heads': 8}),
    'ABXI_GCA_every_noLN': ('ABXI_GCA', {'gca_query_steps': 'every', 'gca_layernorm': False,
                                         'gca_positions': [1]}),
    'ABXI_GCA_every_dedup': ('ABXI_GCA', {'gca_query_steps': 'every', 'gca_dedup_keys': True}),
}


def summary(res):
    """What the golden test compares, from a result dictionary of ``run_recbole_ortho``."""
    def clean(r):
        return {d: {k: v for k, v in r[d].items()} for d in ('A', 'B', 'all')}
    trace = [{k: e[k] for k in ('epoch', 'train_loss', 'loss_a', 'loss_b') if k in e} |
             ({'valid': clean(e['valid'])} if 'valid' in e else {}) for e in res['trace']]
    out = {'n_params': res['n_params'], 'best_epoch': res['best_epoch'], 'trace': trace,
           'valid': clean(res['valid']), 'test': clean(res['test'])}
    if 'param_match' in res:
        pm = res['param_match']
        out['param_match'] = {'target_n_params': pm['target_n_params'], 'updates': pm['updates']}
    return out


def run_all(workdir, names=None):
    """Run the golden runs in ``workdir`` (tiny fixture written there); returns name -> summary."""
    import torch
    from tests.conftest import tiny_config_dict, write_tiny_dataset
    from recbole_ortho.quick_start import run_recbole_ortho
    torch.set_num_threads(1)
    workdir = Path(workdir)
    write_tiny_dataset(workdir / 'data')
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        out = {}
        for name in (names or RUNS):
            model, over = RUNS[name]
            cfg = dict(tiny_config_dict(workdir), **SMALL, **over)
            out[name] = summary(run_recbole_ortho(model=model, dataset='tiny', config_dict=cfg))
        return out
    finally:
        os.chdir(cwd)


def cpu_model():
    """The CPU's model name (``/proc/cpuinfo``), or None where it cannot be read."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return None


def machine():
    """What decides whether float results can be compared bit for bit: the torch build, the CPU
    capability torch dispatches to, the architecture and the CPU model (two CPUs with the same
    capability, e.g. an Intel and an AMD with AVX512, may still round reductions differently)."""
    import torch
    return {'torch': torch.__version__, 'cpu_capability': torch.backends.cpu.get_cpu_capability(),
            'machine': platform.machine(), 'cpu_model': cpu_model()}


if __name__ == '__main__':
    sys.argv = sys.argv[:1]
    with tempfile.TemporaryDirectory() as d:
        runs = run_all(d)
    path = Path(__file__).with_name('golden.json')
    payload = {'recorded_at': os.environ.get('GOLDEN_COMMIT', 'unknown'), 'machine': machine(), 'runs': runs}
    path.write_text(json.dumps(payload, indent=1, sort_keys=True) + '\n')
    print(f'wrote {path}')
