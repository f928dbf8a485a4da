"""Memory of long runs: nothing may grow with the number of distinct batch shapes a run sees.

The cause of the ABXI_GCA memory growth (~120 MB per Food-Kitchen epoch): ``F.gelu`` on CPU
runs as a oneDNN primitive that is JIT-compiled for each new input shape and never given back.
The packed rows give a new row count in almost every batch, so the GELU of the GCA gate (and of
CDSRNP's encoder) compiled new kernels at every step. :func:`recbole_ortho.model.kernels.gelu`
computes GELU with shape-independent ATen ops instead.

Fast tests: the GELU kernel against ``F.gelu``; no oneDNN kernel is compiled for a new batch
shape by any ``_GCA`` model (training and evaluation); the resident memory of a small ABXI_GCA
stays flat over epochs of new batch shapes. Slow test (``-m slow``): ABXI_GCA on the shared
Food-Kitchen data, resident memory after epoch 10 within 100 MB of that after epoch 2.
"""

import gc
import os
import sys

import pytest
import torch
import torch.nn.functional as F

from conftest_models import FakeDataset, eval_batch, make_config, random_sequences, train_batch
from recbole_ortho.model.kernels import GELUFunction, gelu
from recbole_ortho.model.registry import get_model
from tests.conftest import REPO, shared_food_kitchen


def rss_mb():
    """Resident memory of this process in MB (Linux ``/proc/self/status``)."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    raise RuntimeError('VmRSS not in /proc/self/status')


needs_proc = pytest.mark.skipif(not os.path.exists('/proc/self/status'), reason='needs /proc/self/status (Linux)')


# ------------------------------------------------------------------ the GELU kernel
def test_gelu_matches_torch_gelu_and_gradcheck():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(5000) * 3, torch.linspace(-10, 10, 2001)]).requires_grad_()
    ref = F.gelu(x.detach().double())
    y = gelu(x)
    assert (y.double() - ref).abs().max() < 1e-6
    g = torch.randn_like(x)
    y.backward(g)
    xd = x.detach().double().requires_grad_()
    F.gelu(xd).backward(g.double())
    assert (x.grad.double() - xd.grad).abs().max() < 1e-6
    with torch.no_grad():
        assert torch.equal(gelu(x), y.detach())
    torch.autograd.gradcheck(GELUFunction.apply, (torch.randn(40, 3, dtype=torch.double, requires_grad=True),))


# ------------------------------------------------------------------ every _GCA model
def _build(name, **abxi):
    torch.manual_seed(0)
    if name.startswith('CDSRNP'):
        from test_cdsrnp import build
        return build(get_model(name))
    if name.startswith('LLM4CDSR'):
        from test_llm4cdsr import build
        return build(get_model(name))
    ds = FakeDataset()
    settings = dict(dict(embedding_size=16, n_heads=2, inner_size=24, rd=2, ri=4, n_neg_per_domain=8), **abxi)
    return get_model(name)(make_config(name, **settings), ds), ds


def _epoch(model, ds, seed, steps=3, users=6, width=12):
    """``steps`` training steps and one recorded evaluation batch on random users; the number of
    users changes every step, so (nearly) every batch has new packed row counts."""
    g = torch.Generator().manual_seed(seed)
    for s in range(steps):
        seqs = random_sequences(ds, users + 3 * s + seed % 5, width, min_len=3, generator=g)
        model.train()
        loss = model.calculate_loss(train_batch(seqs, width))
        (sum(loss) if isinstance(loss, tuple) else loss).backward()
        model.zero_grad(set_to_none=True)
    model.eval()
    model.start_recording()
    with torch.no_grad():
        model.full_sort_predict(eval_batch(seqs, width, ds))
    model.stop_recording()


def _onednn_created(log):
    """The primitives that oneDNN's verbose ``log`` says were created (compiled, or taken from its
    cache), each as its description without the timing: kind, implementation, data layout, shape."""
    out = []
    for line in log.splitlines():
        fields = line.split(',')
        at = [i for i, f in enumerate(fields) if f.startswith('create:')]
        if line.startswith('onednn_verbose') and at:
            out.append(','.join(fields[at[0] + 1:-1]))
    return out


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason='this torch build has no oneDNN')
@pytest.mark.parametrize('name', ['ABXI_GCA', 'LLM4CDSR_GCA', 'CDSRNP_GCA', 'CDSRNP'])
def test_new_batch_shapes_need_no_new_onednn_kernels(name, capfd):
    """oneDNN compiles a kernel per op and input *shape* and the process never gets that memory
    back: an op that ran through it on the packed rows (whose shapes change with every batch)
    grew the process without bound. After a first epoch, epochs of new batch shapes (training
    and evaluation) may use only the oneDNN kernels of the first epoch (none at present):
    nothing shape-dependent. (oneDNN's cache is process-wide, so the test compares the kernels'
    descriptions, not cache misses.)"""
    model, ds = _build(name)
    capfd.readouterr()
    with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON_CREATION):
        _epoch(model, ds, seed=0)
        first = set(_onednn_created(capfd.readouterr().out))
        for seed in (1, 2):
            _epoch(model, ds, seed=seed)
        later = _onednn_created(capfd.readouterr().out)
    new = [p for p in later if p not in first]
    assert not new, f'{len(new)} oneDNN kernels for new batch shapes, e.g. {new[:2]}'


@needs_proc
def test_abxi_gca_resident_memory_flat_over_epochs():
    """ABXI_GCA (d = 128) over 6 epochs of new batch shapes: the resident memory after the last
    epoch is within 40 MB of that after the second (before the fix: +65 to +100 MB, about 0.5 MB
    per new GELU shape; after: -20 to +20 MB)."""
    model, ds = _build('ABXI_GCA', embedding_size=128, inner_size=128, MAX_ITEM_LIST_LENGTH=30)
    rss = []
    for epoch in range(6):
        _epoch(model, ds, seed=epoch, steps=8, users=64, width=30)
        gc.collect()
        rss.append(rss_mb())
    assert rss[-1] - rss[1] < 40, f'resident memory per epoch (MB): {[round(r) for r in rss]}'


# ------------------------------------------------------------------ real data (slow)
@pytest.mark.slow
@needs_proc
def test_abxi_gca_resident_memory_flat_on_food_kitchen(tmp_path, monkeypatch):
    """ABXI_GCA on the shared Food-Kitchen data, the quick schedule for 10 epochs (validated
    every epoch, 2 threads): the resident memory after epoch 10 is within 100 MB of that after
    epoch 2 (before the fix: +979 MB, ~120 MB per epoch)."""
    raw = shared_food_kitchen()
    if raw is None:
        pytest.skip('../shared/data/food_kitchen is not available')
    from recbole.utils import init_seed

    from recbole_ortho.config import Config
    from recbole_ortho.data import create_dataset, data_preparation
    from recbole_ortho.quick_start import build_model
    from recbole_ortho.trainer import CDSRTrainer
    from recbole_ortho.utils.utils import set_threads

    monkeypatch.setattr(sys, 'argv', ['pytest'])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('RECBOLE_ORTHO_DATA', str(raw.parent))
    config = Config(model='ABXI_GCA', dataset='food_kitchen',
                    config_file_list=[str(REPO / 'properties' / 'quick_start' / 'food_kitchen_quick.yaml')],
                    config_dict={'data_path': str(tmp_path / 'dataset'), 'cache_dir': str(tmp_path / 'cache'),
                                 'checkpoint_dir': str(tmp_path / 'saved'), 'tensorboard_dir': str(tmp_path / 'tb'),
                                 'epochs': 10, 'show_progress': False, 'save_model': False, 'threads': 2,
                                 'state': 'WARNING'})
    init_seed(config['seed'], config['reproducibility'])
    set_threads(config['threads'])
    data = create_dataset(config)
    train_data, valid_data, _ = data_preparation(config, data, train_format='per_user')
    model, _ = build_model(config, data)
    rss = []

    class Trainer(CDSRTrainer):
        def _train_epoch(self, train_data, epoch):
            loss = super()._train_epoch(train_data, epoch)
            gc.collect()
            rss.append(rss_mb())                  # after training epoch `epoch` (and validation epoch-1)
            return loss

    threads = torch.get_num_threads()
    try:
        Trainer(config, model, data).fit(train_data, valid_data, saved=False)
    finally:
        torch.set_num_threads(threads)
    print('resident memory after each epoch (MB):', [round(r) for r in rss])
    assert len(rss) == 10
    assert rss[9] - rss[1] < 100, f'resident memory per epoch (MB): {[round(r) for r in rss]}'
