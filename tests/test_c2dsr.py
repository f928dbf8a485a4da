"""C2DSR and C2DSR_GCA (recbole_ortho.model.cross_domain_sequential.c2dsr / c2dsr_gca), the item graph of
the data layer (recbole_ortho.data.item_graph), and, when C2DSR_OFFICIAL_DIR points at a checkout of
github cjx96/C2DSR, the official code on the same weights and batches (benchmarks/official_c2dsr.py)."""

import importlib.util
import math
import os
import sys
import tempfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import REPO  # noqa: E402
from conftest_models import (IDENTITY_GCA, FakeDataset, assert_identity_gca_is_base, eval_batch,  # noqa: E402
                             make_config, random_sequences, train_batch)

from recbole_ortho.data.item_graph import build_item_graph, item_graph  # noqa: E402
from recbole_ortho.model.cross_domain_sequential import C2DSR, C2DSR_GCA  # noqa: E402
from recbole_ortho.model.gca import GatedCrossAttention  # noqa: E402
from recbole_ortho.quick_start import run_recbole_ortho  # noqa: E402
from recbole_ortho.utils.param_match import count_parameters  # noqa: E402

W = 15                                     # the official maxlen: histories are left-padded to 15 steps
D = 16
SMALL = dict(hidden_size=D, inner_size=D, n_heads=2, MAX_ITEM_LIST_LENGTH=W)


class SeqDataset(FakeDataset):
    """:class:`FakeDataset` (``a_first``: A ids 1..n_a, B ids n_a+1..) with the sequence arrays of
    :class:`~recbole_ortho.data.dataset.SeqData` (whole sequences, validation and test targets included)."""

    def __init__(self, seqs, n_a=30, n_b=40):
        super().__init__(n_a=n_a, n_b=n_b, a_first=True, n_users=len(seqs))
        lens = [len(s) for s in seqs]
        self.seq_items = np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs])
        self.seq_offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        self.eval_users = np.array([u for u, n in enumerate(lens) if n >= 3], dtype=np.int64)


def both_domain_sequences(n_users, max_len, n_a=30, n_b=40, seed=0, min_len=6):
    """Random whole sequences (ids of :class:`SeqDataset`) whose training part (all but the last two items,
    its last ``W`` items) has two items of each domain, so that its training row has a next item in both
    domains, and does not end with the first B item (an official quirk drops it; see the docs)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n_users:
        s = rng.integers(1, n_a + n_b + 1, size=int(rng.integers(min_len, max_len + 1)))
        t = s[:-2][-W:]
        if (t <= n_a).sum() >= 2 and (t > n_a).sum() >= 2 and t[-1] != n_a + 1:
            out.append(s)
    return out


def build(cls=C2DSR, ds=None, seed=0, **kw):
    ds = ds if ds is not None else SeqDataset(both_domain_sequences(30, 20))
    torch.manual_seed(seed)
    return cls(make_config(cls.__name__, **dict(SMALL, **kw)), ds), ds


def randomize(model, scale=0.3):
    """Perturb every parameter (LayerNorms at 1 / 0 and zero biases would hide mistakes)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


# ------------------------------------------------------------------ the item graph (data layer)
def test_item_graph_by_hand():
    # ids: A 1..3, B 4..5. user 0: a1 b4 a2 a1 b5 | valid a3, test b4 -> training part a1 b4 a2 a1 b5
    # user 1: b4 b5 a1 | valid b4, test a2 -> b4 b5 a1 ; user 2: a1 a2 (2 items: not evaluated, no edge)
    ds = SeqDataset([[1, 4, 2, 1, 5, 3, 4], [4, 5, 1, 4, 2], [1, 2]], n_a=3, n_b=2)
    g = build_item_graph(ds)
    mixed = np.zeros((6, 6))
    for i, j in [(1, 4), (4, 2), (2, 1), (1, 5), (4, 5), (5, 1)]:
        mixed[i, j] += 1
    single = np.zeros((6, 6))
    for i, j in [(1, 2), (2, 1), (4, 5), (4, 5)]:          # user 0: a1 a2 a1 / b4 b5; user 1: b4 b5
        single[i, j] += 1
    for m in (mixed, single):
        s = m.sum(1, keepdims=True)
        m /= np.where(s > 0, s, 1)
    assert np.allclose(g.mixed.toarray(), mixed) and np.allclose(g.single.toarray(), single)
    assert (g.n_mixed, g.n_single) == (6, 4) and g.mixed.dtype == np.float32
    assert item_graph(ds) is item_graph(ds)                # built once per dataset object


# ------------------------------------------------------------------ the official code
def _official_module():
    spec = importlib.util.spec_from_file_location('official_c2dsr', REPO / 'benchmarks' / 'official_c2dsr.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def copy_official_weights(off, me, n_a, n_b):
    """Our state dict from the official model's parameters (official ids: A 0..n_a-1, B n_a.., padding last;
    ours: padding 0, A 1..n_a, B n_a+1..; domain tables: padding 0, then the domain's items)."""
    o = {k: v.detach() for k, v in off.named_parameters()}
    sd = {}
    emb = o['item_emb.weight']
    sd['item_embedding.0.weight'] = torch.cat([emb[-1:], emb[:-1]])
    for k, (name, lo, n) in enumerate((('item_emb_X', 0, n_a), ('item_emb_Y', n_a, n_b))):
        sd[f'item_embedding.{k + 1}.weight'] = torch.cat([torch.zeros(1, emb.size(1)), o[f'{name}.weight'][lo:lo + n]])
    for k, name in enumerate(('GNN_encoder', 'GNN_encoder_X', 'GNN_encoder_Y')):
        n_gnn = sum(1 for key in o if key.startswith(f'{name}.encoder.') and key.endswith('.bias'))
        for i in range(n_gnn):
            sd[f'gcn.{k}.bias.{i}'] = o[f'{name}.encoder.{i}.gc1.bias']
    for k, name in enumerate(('encoder', 'encoder_X', 'encoder_Y')):
        pos = dict(me.named_parameters())[f'encoder.{k}.pos.weight'].detach().clone()
        pos[:o[f'{name}.pos_emb.weight'].size(0)] = o[f'{name}.pos_emb.weight']
        sd[f'encoder.{k}.pos.weight'] = pos
        for i in range(me.n_layers):
            for ours, theirs in (('attn_norm', 'attention_layernorms'), ('ffn_norm', 'forward_layernorms')):
                for p in ('weight', 'bias'):
                    sd[f'encoder.{k}.{ours}.{i}.{p}'] = o[f'{name}.{theirs}.{i}.{p}']
            for p in ('in_proj_weight', 'in_proj_bias', 'out_proj.weight', 'out_proj.bias'):
                sd[f'encoder.{k}.attn.{i}.{p}'] = o[f'{name}.attention_layers.{i}.{p}']
            for ours, theirs in (('ffn_in', 'conv1'), ('ffn_out', 'conv2')):
                sd[f'encoder.{k}.{ours}.{i}.weight'] = o[f'{name}.forward_layers.{i}.{theirs}.weight'].squeeze(-1)
                sd[f'encoder.{k}.{ours}.{i}.bias'] = o[f'{name}.forward_layers.{i}.{theirs}.bias']
        for p in ('weight', 'bias'):
            sd[f'encoder.{k}.last_norm.{p}'] = o[f'{name}.last_layernorm.{p}']
    for k, name in enumerate(('D_X', 'D_Y')):
        for p in ('weight', 'bias'):
            sd[f'discriminator.{k}.{p}'] = o[f'{name}.f_k.{p}']
    for ours, theirs in (('head.0', 'lin_X'), ('head.1', 'lin_Y'), ('head_pad', 'lin_PAD')):
        for p in ('weight', 'bias'):
            sd[f'{ours}.{p}'] = o[f'{theirs}.{p}']
    return sd


@pytest.mark.skipif(not os.environ.get('C2DSR_OFFICIAL_DIR'), reason='set C2DSR_OFFICIAL_DIR to a C2DSR checkout')
@pytest.mark.parametrize('gnn_layers,n_heads', [(1, 1), (2, 2)])
def test_official_code_same_weights_same_loss_gradients_and_scores(gnn_layers, n_heads):
    """The official C2DSR (graph from its GraphMaker, batches from its loader) and ours on the same weights:
    the item graph, the training loss and its gradients with the same corrupted sequences, the scores of
    every candidate of the target's domain in evaluation."""
    oc = _official_module()
    n_a, n_b = 30, 40
    seqs = both_domain_sequences(24, W + 2, n_a, n_b, seed=3)      # whole sequences, valid and test targets last
    ds = SeqDataset(seqs, n_a, n_b)
    me, _ = build(ds=ds, dropout_prob=0.0, gnn_layers=gnn_layers, n_heads=n_heads)
    to_off = lambda s: [int(i) - 1 for i in s]                     # noqa: E731  ours -> official ids
    pad = n_a + n_b
    to_ours = lambda t: torch.where(t == pad, 0, t + 1)            # noqa: E731
    lines = {'train': [to_off(s[:-2][-W:]) for s in seqs], 'valid': [to_off(s[:-1][-W:]) for s in seqs],
             'test': [to_off(s[-W:]) for s in seqs]}
    with tempfile.TemporaryDirectory() as work, oc.official_code(os.environ['C2DSR_OFFICIAL_DIR']) as off:
        oc.write_official_input(work, lines, n_a, n_b)
        opt, train, valid, _, trainer = oc.official_setup(off, work, hidden_units=D, dropout=0.0, GNN=gnn_layers,
                                                          num_heads=n_heads, batch_size=len(seqs))
        model = randomize(trainer.model)
        # 1. the item graph: our data layer's = the official GraphMaker's (official ids -> ours)
        perm = torch.cat([torch.tensor([pad]), torch.arange(pad)])
        adj_off = model.adj.to_dense()[perm][:, perm]
        assert torch.allclose(me.gcn[0].adj.to_dense(), adj_off, atol=1e-7)
        for k, (lo, n) in enumerate(((0, n_a), (n_a, n_b))):
            blk = model.adj_single.to_dense()[lo:lo + n, lo:lo + n]
            assert torch.allclose(me.gcn[k + 1].adj.to_dense()[1:, 1:], blk, atol=1e-7)
        me.load_state_dict(copy_official_weights(model, me, n_a, n_b), strict=True)
        # 2. evaluation scores (official: the target domain's head on the shared + specific states)
        vb = valid.data[0]
        batch = [torch.LongTensor(x) for x in zip(*vb)]
        model.eval()
        with torch.no_grad():
            model.graph_convolution()
            h, hx, hy = model(*batch[:6])
            x_last, y_last, xory = batch[6], batch[7], batch[8]
            u = torch.arange(len(vb))
            s_x = model.lin_X(h[:, -1] + hx[u, x_last])
            s_y = model.lin_Y(h[:, -1] + hy[u, y_last])
        me.eval()
        with torch.no_grad():
            ours = me.full_sort_predict(eval_batch([torch.as_tensor(s[:-1][-W:]) for s in seqs], W, ds))
        for k, s_off, lo, n in ((0, s_x, 1, n_a), (1, s_y, 1 + n_a, n_b)):
            m = xory == k
            assert m.any()
            assert torch.allclose(ours[m, lo:lo + n], s_off[m], rtol=1e-4, atol=1e-3)
        # 3. the training loss and its gradients, with the official corrupted sequences
        tb = train.data[0]
        assert len(tb) == len(seqs)                                # no row dropped ("pass sequence")
        order = [lines['train'].index([int(i) for i in row[0] if i != pad] + [int(row[6][-1])]) for row in tb]
        batch = [torch.LongTensor(x) for x in zip(*tb)]
        loss_off = trainer.train_batch(batch)                      # zero_grad, forward, backward, step
        grads_off = {k: v.grad.clone() for k, v in model.named_parameters() if v.grad is not None}
    me.train()
    me.corrupt = lambda seq, dom: (to_ours(batch[16]), to_ours(batch[17]))
    loss = me.calculate_loss(train_batch([torch.as_tensor(seqs[i][:-2][-W:]) for i in order], W))
    assert loss.item() == pytest.approx(loss_off, rel=1e-5, abs=1e-5)
    loss.backward()
    g = {k: v.grad for k, v in me.named_parameters()}
    pairs = [('head.0.weight', 'lin_X.weight'), ('head_pad.weight', 'lin_PAD.weight'),
             ('discriminator.1.weight', 'D_Y.f_k.weight'), ('gcn.2.bias.0', 'GNN_encoder_Y.encoder.0.gc1.bias'),
             ('encoder.1.attn.0.in_proj_weight', 'encoder_X.attention_layers.0.in_proj_weight'),
             ('encoder.2.ffn_out.1.bias', 'encoder_Y.forward_layers.1.conv2.bias'),
             ('encoder.0.last_norm.weight', 'encoder.last_layernorm.weight')]
    for ours_k, off_k in pairs:
        assert torch.allclose(g[ours_k], grads_off[off_k], rtol=1e-3, atol=1e-5), ours_k
    assert torch.allclose(g['item_embedding.0.weight'][1:], grads_off['item_emb.weight'][:-1], rtol=1e-3, atol=1e-5)
    assert torch.allclose(g['item_embedding.1.weight'][1:], grads_off['item_emb_X.weight'][:n_a], rtol=1e-3, atol=1e-5)
    # 4. parameters: the official's minus the rows and weights it never uses, plus one position row per encoder
    dead = 2 * (n_a + n_b + 1) * D - (n_a + n_b + 2) * D + 3 * gnn_layers * D * D
    assert count_parameters(model) - dead + 3 * D == count_parameters(me)


# ------------------------------------------------------------------ kernels
def test_linear_logsumexp_and_sparse_mm_match_autograd():
    from recbole_ortho.model.kernels.linear_lse import linear_logsumexp, sparse_mm
    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True) for s in ((7, 5), (11, 5), (11,)))
    up = torch.randn(7, generator=g, dtype=torch.float64)
    ours = linear_logsumexp(x, w, b, chunk=3)
    ref = torch.logsumexp(x @ w.t() + b, 1)
    assert torch.allclose(ours, ref)
    for a, r in zip(torch.autograd.grad(ours, (x, w, b), up), torch.autograd.grad(ref, (x, w, b), up)):
        assert torch.allclose(a, r)
    assert linear_logsumexp(x[:0], w, b).shape == (0,)
    adj = torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    y = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    sp_adj, sp_t = adj.to_sparse_csr(), adj.t().to_sparse_csr()
    assert torch.allclose(sparse_mm(sp_adj, sp_t, y), adj @ y)
    assert torch.autograd.gradcheck(lambda y: sparse_mm(sp_adj, sp_t, y), (y,))


# ------------------------------------------------------------------ the model against a plain re-computation
def plain_loss(m, seqs, states, lam, used=10):
    """The official loss (model/trainer.py train_batch, targets as utils/loader.py preprocess), per user in plain
    Python: ``seqs`` the training rows (inputs + final target, our ids), ``states`` the encoders' outputs of
    the kept rows (mixed, corrupted-A, corrupted-B, A, B) in order."""
    h, hc_a, hc_b, h_a, h_b = states
    n_a = m.domain_range[0][1] - m.domain_range[0][0]
    kept, pred, mi, r = [], 0.0, 0.0, 0
    rows = []
    for s in seqs:
        s = [int(i) for i in s]
        d, ground = s[:-1], s[1:]
        dom = [0 if i <= n_a else 1 for i in s]
        own = [[0] * len(d) for _ in range(2)]                   # next item of the own domain after each step
        for t in range(len(d)):
            for u in range(t + 1, len(s)):
                if dom[u] == dom[t]:
                    own[dom[t]][t] = s[u]
                    break
        if not any(own[0]) or not any(own[1]):
            continue                                             # the official loader drops the row
        rows.append((d, ground, dom, own))
    n = len(rows)
    for r, (d, ground, dom, own) in enumerate(rows):
        off = W - len(d)                                         # left padding
        for t in range(max(0, len(d) - used), len(d)):
            for k, hd, lin in ((0, h_a, m.head[0]), (1, h_b, m.head[1])):
                lo = m.domain_range[k][0]
                if dom[t + 1] == k:                              # the shared head: the next mixed item
                    z = torch.cat([lin(h[r, off + t]), m.head_pad(h[r, off + t])])
                    pred = pred + F.cross_entropy(z[None], torch.tensor([ground[t] - lo]))
                if own[k][t]:                                    # the domain head: the next item of the domain
                    z = torch.cat([lin(h[r, off + t] + hd[r, off + t]), m.head_pad(hd[r, off + t])])
                    pred = pred + F.cross_entropy(z[None], torch.tensor([own[k][t] - lo]))
        means = {}
        for k in (0, 1):
            steps = [off + t for t in range(len(d)) if own[k][t]]
            means[k] = [x[r, steps].mean(0) for x in (h, (hc_a, hc_b)[k], (h_a, h_b)[k])]
        for k in (0, 1):
            o = 1 - k
            real, fake, spec = means[o][0], means[o][1], means[k][2]
            pos, neg = m.discriminator[k](real, spec), m.discriminator[k](fake, spec)
            mi = mi + (F.binary_cross_entropy_with_logits(pos, torch.ones(1))
                       + F.binary_cross_entropy_with_logits(neg, torch.zeros(1))) / n
    return lam * pred / (n * used) + (1 - lam) * mi, n


def test_training_loss_equals_plain_recomputation():
    m, ds = build(dropout_prob=0.0)
    randomize(m)
    seqs = [torch.as_tensor(s[:-2][-(W + 1):]) for s in both_domain_sequences(9, 24, seed=5)]
    seqs += [torch.tensor([1, 2, 3, 4, 40]), torch.tensor([35, 36, 2, 37])]   # A once / no A target: weigh 0
    b = train_batch(seqs, W)
    fixed = {}

    def corrupt(seq, dom):                                       # one fixed draw, kept for the re-computation
        fixed['c'] = [torch.where(dom == k, torch.randint_like(seq, *m.domain_range[k]), seq) for k in (1, 0)]
        return fixed['c']
    m.corrupt = corrupt
    m.train()
    loss = m.calculate_loss(b)
    item_seq, item_len, _ = m.trim_batch(b)
    seq = m.left_pad(item_seq, item_len)
    own = m.own_targets(seq, m.left_pad(b['target_id_list'], item_len))
    ok = (own[0] > 0).any(1) & (own[1] > 0).any(1)
    assert ok.tolist() == [True] * 9 + [False, False]
    with torch.no_grad():
        states = m.encode(seq[ok], fixed['c'])
        ref, n = plain_loss(m, seqs, states, m.lam)
    assert n == 9 and torch.allclose(loss, ref, rtol=1e-5, atol=1e-5)
    tr = m.epoch_trace()
    assert set(tr) == {'loss_pred', 'loss_infomax'} and loss.item() == pytest.approx(
        0.7 * tr['loss_pred'] + 0.3 * tr['loss_infomax'], rel=1e-5)
    loss.backward()                                              # every trainable parameter gets a gradient
    assert [k for k, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []


def test_evaluation_scores_by_hand_and_without_a_domain_item():
    m, ds = build()
    randomize(m).eval()
    # user 0: history b35 b36 b37 (no A item), target a5; user 1: history a1 b40 a2 b41 a3, target b42
    seqs = [torch.tensor([35, 36, 37, 5]), torch.tensor([1, 40, 2, 41, 3, 42])]
    ev = eval_batch(seqs, W, ds)
    with torch.no_grad():
        scores = m.full_sort_predict(ev)
        h, h_a, h_b = m.encode(m.left_pad(ev['item_id_list'], ev['item_length']))
        want0 = m.head[0](h[0, -1] + m.encoder[1].last_norm.bias)          # no A step: the final LN's bias
        want1 = m.head[1](h[1, -1] + h_b[1, W - 2])                         # the latest B step, b41
    assert torch.allclose(h_a[0, -1], m.encoder[1].last_norm.bias, atol=1e-6)
    assert torch.allclose(scores[0, 1:31], want0, atol=1e-5) and torch.allclose(scores[1, 31:], want1, atol=1e-5)
    assert (scores[:, 0] == 0).all()          # the padding id (the other domain's items: unranked, as LLM4CDSR)
    with torch.no_grad():
        assert torch.allclose(m.predict(ev), scores.gather(1, ev['item_id'][:, None]).squeeze(1))


@pytest.mark.parametrize('cls,kw', [(C2DSR, {}), (C2DSR_GCA, {'gca_positions': [0, 2]})])
def test_no_future_leak(cls, kw):
    m, ds = build(cls, **kw)
    randomize(m).eval()
    a = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 1, 35, 2, 36, 3, 37, 4, 38]])
    b = a.clone()
    b[0, -1] = 5                                                 # the last step: B item -> A item
    with torch.no_grad():
        for x, y in zip(m.encode(a), m.encode(b)):
            assert torch.allclose(x[:, :-1], y[:, :-1], atol=1e-5)
            assert not torch.allclose(x[:, -1], y[:, -1])


def test_identity_gca_computes_c2dsr():
    base, ds = build(dropout_prob=0.0)
    randomize(base)
    gca, _ = build(C2DSR_GCA, ds=ds, dropout_prob=0.0, gca_positions=[0, 1, 2], **IDENTITY_GCA)
    seqs = [torch.as_tensor(s[:-2]) for s in both_domain_sequences(8, 24, seed=7)]
    assert_identity_gca_is_base(base, gca, train_batch(seqs, W), eval_batch(seqs, W, ds))


def test_gca_records_orthogonality_statistics_in_evaluation_only():
    m, ds = build(C2DSR_GCA, gca_positions=[0, 2])
    seqs = [torch.as_tensor(s[:-2]) for s in both_domain_sequences(6, 24, seed=8)]
    m.train()
    m.calculate_loss(train_batch(seqs, W))
    assert m.pop_stats() == {}
    m.eval()
    m.start_recording()
    with torch.no_grad():
        m.full_sort_predict(eval_batch(seqs, W, ds))
    st, steps = m.pop_stats(), m.pop_steps()
    assert {f'{k}_cos_{d}@gca{p}' for k in ('ortho', 'cross') for d in 'ab' for p in (0, 2)} == set(st)
    assert all(v.shape == (6,) for v in st.values())
    assert set(steps) == {f'ortho_cos_{d}@gca{p}' for d in 'ab' for p in (0, 2)}
    m.stop_recording()


def test_parameter_count_by_formula_and_bad_settings():
    m, ds = build(inner_size=24, gnn_layers=2)
    n_a, n_b, d, h = 30, 40, D, 24
    block = 4 * d * d + 4 * d + 2 * 2 * d + d * h + h + h * d + d
    encoder = (W + 1) * d + 2 * block + 2 * d
    tables = (1 + n_a + n_b) * d + (n_a + 1) * d + (n_b + 1) * d
    want = tables + 3 * 2 * d + 3 * encoder + (n_a + n_b) * (d + 1) + (d + 1) + 2 * (d * d + 1)
    assert count_parameters(m) == want
    assert C2DSR.param_match_key == 'inner_size'
    from recbole_ortho.utils.errors import ConfigError
    for key, value in (('lambda', 1.5), ('train_positions', 0), ('gnn_layers', -1), ('n_layers', 'two')):
        with pytest.raises(ConfigError, match=rf'^{key}: \['):
            build(ds=ds, **{key: value})


def test_paper_gca_positions_are_documented():
    from test_gca_paper_positions import documented_positions
    n = make_config('C2DSR_GCA')['n_layers']
    assert n == 2 and documented_positions('C2DSR_GCA') == {'GCA0': [0], 'GCA1': [n], 'GCA0 + GCA1': [0, n]}


# ------------------------------------------------------------------ one epoch through the package
SMOKE = dict(hidden_size=16, inner_size=16, n_heads=2, epochs=1, save_model=False, MAX_ITEM_LIST_LENGTH=10)


@pytest.fixture
def _argv(monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['pytest'])


def test_one_epoch_c2dsr_and_c2dsr_gca_with_dropout_and_param_match(tiny, _argv):
    seqs, cfg = tiny
    base = run_recbole_ortho(model='C2DSR', dataset='tiny', config_dict=dict(cfg, **SMOKE))
    gca = run_recbole_ortho(model='C2DSR_GCA', dataset='tiny', config_dict=dict(cfg, **SMOKE, gca_positions=[0, 2]))
    for res in (base, gca):
        assert res['config']['dropout_prob'] == 0.2 and res['config']['eval_neg_exclude'] == 'target'
        assert set(res['trace'][0]) >= {'loss_pred', 'loss_infomax'} and math.isfinite(res['trace'][0]['train_loss'])
        for d in ('A', 'B'):
            assert res['test'][d]['n_users'] > 0 and 0.0 <= res['test'][d]['ndcg@10'] <= 1.0
    for k in ('ortho_cos_a@gca0', 'ortho_cos_b@gca2'):
        assert 0.0 <= gca['test']['all'][k] <= 1.0
    per_layer = GatedCrossAttention.num_parameters(16, layer_norm=True)
    assert gca['n_params'] - base['n_params'] == 2 * 2 * per_layer
    matched = run_recbole_ortho(model='C2DSR', dataset='tiny', config_dict=dict(cfg, **SMOKE,
                                                                                param_match='C2DSR_GCA'))
    pm = matched['param_match']
    assert pm['target_model'] == 'C2DSR_GCA' and abs(pm['rel_diff']) <= 0.02
    assert matched['config']['inner_size'] == pm['updates']['inner_size'] > 16


@pytest.mark.parametrize('cls', [C2DSR, C2DSR_GCA])
def test_bf16_autocast_trains_and_scores_close_to_fp32(cls):
    """Under ``torch.autocast('cpu', torch.bfloat16)`` (the trainer's ``precision: bf16``) the loss and its
    gradients are finite and the loss and scores are within bf16 rounding of fp32."""
    m, ds = build(cls, dropout_prob=0.0)
    seqs = [torch.as_tensor(s[:-2]) for s in both_domain_sequences(6, 24, seed=9)]
    tb, ev = train_batch(seqs, W), eval_batch(seqs, W, ds)
    m.train()
    torch.manual_seed(1)
    ref = m.calculate_loss(tb)
    torch.manual_seed(1)
    with torch.autocast('cpu', torch.bfloat16):
        loss = m.calculate_loss(tb)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    assert abs(loss.item() - ref.item()) < 0.05 * abs(ref.item()) and loss.item() != ref.item()
    m.eval()
    with torch.no_grad():
        full = m.full_sort_predict(ev)
        with torch.autocast('cpu', torch.bfloat16):
            low = m.full_sort_predict(ev)
    assert torch.allclose(low.float(), full, atol=0.1 * full.abs().max().item())


def test_sweep_runner_trains_base_gca_and_matched_base(tiny, tmp_path):
    """The shipped spec's shape (base, GCA, parameter-matched base) through the sweep runner, on the tiny data."""
    import yaml
    from recbole_ortho.sweep import RunStore, load_spec, run_sweep
    shipped = load_spec(str(REPO / 'properties' / 'sweep' / 'food_kitchen_c2dsr.yaml'))
    assert set(shipped['models']) == {'C2DSR', 'C2DSR_GCA'} and shipped['param_matched']
    _, cfg = tiny
    small = dict({k: v for k, v in SMOKE.items() if k != 'save_model'}, eval_neg_num=10, train_batch_size=16)
    spec = tmp_path / 'spec.yaml'
    spec.write_text(yaml.safe_dump({'datasets': ['tiny'], 'seeds': [1], 'settings': small, 'param_matched': True,
                                    'models': {'C2DSR': {}, 'C2DSR_GCA': {}}}))
    summary = run_sweep(spec, tmp_path / 'sw', workers=2, threads=1, show_progress=False,
                        data_path=cfg['data_path'], cache_dir=cfg['cache_dir'])
    assert summary['states']['finished'] == summary['runs'] == 3
    res = {(s['model'], s['settings'].get('param_match')): r for s, r in RunStore(tmp_path / 'sw').results()}
    assert set(res) == {('C2DSR', None), ('C2DSR_GCA', None), ('C2DSR', 'C2DSR_GCA')}
    assert 'ortho_cos_a@gca0' in res[('C2DSR_GCA', None)]['test']['all']
    assert abs(res[('C2DSR', 'C2DSR_GCA')]['n_params'] - res[('C2DSR_GCA', None)]['n_params']) \
        <= 0.02 * res[('C2DSR_GCA', None)]['n_params']


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get('C2DSR_OFFICIAL_DIR'), reason='set C2DSR_OFFICIAL_DIR to a C2DSR checkout')
def test_official_driver_on_food_kitchen(tmp_path):
    """benchmarks/official_c2dsr.py end to end on our Food-Kitchen data: one official training batch."""
    import json
    import subprocess
    from conftest import shared_food_kitchen
    if shared_food_kitchen() is None and not (REPO / 'dataset' / 'food_kitchen' / 'food_kitchen_A').is_dir():
        pytest.skip('Food-Kitchen data is not available')
    out = tmp_path / 'r.json'
    r = subprocess.run([sys.executable, str(REPO / 'benchmarks' / 'official_c2dsr.py'), '--batches', '1', '--threads',
                        '1', '--json_out', str(out)], cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert (res['n_users'], res['n_item_a'], res['n_item_b'], res['maxlen']) == (7144, 11837, 16258, 15)
    assert res['n_params'] == 31_514_562 and 6000 < res['train_rows'] <= 7144 and math.isfinite(res['losses'][0])


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason='this torch build has no oneDNN')
@pytest.mark.parametrize('cls', [C2DSR, C2DSR_GCA])
def test_new_batch_shapes_need_no_new_onednn_kernels(cls, capfd):
    """As tests/test_memory.py for the other models: after a first epoch, epochs of new batch shapes use no
    new oneDNN kernel (a kernel compiled per shape is memory the process never gets back)."""
    from test_memory import _epoch, _onednn_created
    model, ds = build(cls)
    capfd.readouterr()
    with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON_CREATION):
        _epoch(model, ds, seed=0)
        first = set(_onednn_created(capfd.readouterr().out))
        for seed in (1, 2):
            _epoch(model, ds, seed=seed)
        later = _onednn_created(capfd.readouterr().out)
    assert not [p for p in later if p not in first]
