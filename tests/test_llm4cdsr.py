"""LLM4CDSR and LLM4CDSR_GCA on hand-made batches (no dataset layer): scores and losses against a
plain re-computation, no future leak, the official-quirk switches, GCA identity, parameter counts."""

import ast
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest_models import (IDENTITY_GCA, FakeDataset, assert_identity_gca_is_base, eval_batch, make_config,
                             random_sequences, train_batch)
from recbole_ortho.model.cross_domain_sequential.llm4cdsr import LLM4CDSR
from recbole_ortho.model.cross_domain_sequential.llm4cdsr_gca import LLM4CDSR_GCA
from recbole_ortho.model.gca import GatedCrossAttention
from recbole_ortho.model.loss import symmetric_soft_contrastive
from recbole_ortho.utils.param_match import count_parameters

D, G, P = 16, 24, 20
SMALL = dict(hidden_size=D, inner_size=D, text_domain_dim=D, MAX_ITEM_LIST_LENGTH=12)


def fake_features(ds, n_users=100, seed=0, profiles=True):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(ds.n_items, G)).astype(np.float32)
    loc = rng.normal(size=(ds.n_items, D)).astype(np.float32)
    g[0] = loc[0] = 0
    prof = rng.normal(size=(n_users + 1, P)).astype(np.float32) if profiles else None
    return SimpleNamespace(global_table=g, domain_table=loc, user_profiles=prof, n_missing={0: 0, 1: 0})


def build(cls=LLM4CDSR, seed=0, ds=None, **kw):
    ds = ds or FakeDataset()
    ds.given['item_text'] = fake_features(ds, profiles=kw.get('user_weight', 0.1) > 0)
    torch.manual_seed(seed)
    return cls(make_config(cls.__name__, **dict(SMALL, **kw)), ds), ds


def batches(ds, n=12, width=12, seed=0):
    seqs = random_sequences(ds, n, width, min_len=3, generator=torch.Generator().manual_seed(seed))
    return seqs, train_batch(seqs, width), eval_batch(seqs, width, ds)


# ------------------------------------------------------------------ reference computation
def reference_states(model, seq, drop=lambda x: x):
    """Plain per-user re-computation of the three threads for one history ``seq`` (1-D ids):
    padded dense tensors, torch's own MultiheadAttention math, causal masks; ``drop`` stands for
    dropout at the official places (the embeddings, after each FFN layer)."""
    d = model.hidden_size
    dom = model.item_domain[seq]
    subseqs = [seq, seq[dom == 0], seq[dom == 1]]
    out = []
    for k, (th, s) in enumerate(zip(model.threads, subseqs)):
        if s.numel() == 0:
            out.append(None)
            continue
        if k == 0:
            x = model.adapter(model.global_table[s]) * model.emb_scale
        else:
            x = model.domain_table[s] * math.sqrt(d)
        h = drop(x + model.position_embedding[k](torch.arange(1, s.numel() + 1)))
        n = s.numel()
        mask = torch.ones(n, n, dtype=torch.bool).tril() if model.causal_attention else torch.ones(n, n, dtype=torch.bool)
        for i in range(model.n_layers):
            q = th.attn_norm[i](h)
            w, b = th.in_proj[i].weight, th.in_proj[i].bias
            Q, K, V = F.linear(q, w[:d], b[:d]), F.linear(h, w[d:2 * d], b[d:2 * d]), F.linear(h, w[2 * d:], b[2 * d:])
            att = torch.softmax((Q @ K.t() / math.sqrt(d)).masked_fill(~mask, float('-inf')), -1) @ V
            h = th.ffn_norm[i](q + th.out_proj[i](att))
            h = h + drop(th.ffn_out[i](F.relu(drop(th.ffn_in[i](h)))))
        out.append(th.last_norm(h))
    return out, dom


def test_evaluation_scores_equal_plain_recomputation():
    model, ds = build()
    model.eval()
    seqs, _, ev = batches(ds)
    with torch.no_grad():
        scores = model.full_sort_predict(ev)
        table = model.adapter(model.global_table)
        for b, s in enumerate(seqs):
            hist = s[:-1][-12:]
            states, dom = reference_states(model, hist)
            td = int(model.item_domain[s[-1]])
            hd = states[1 + td][-1] if states[1 + td] is not None else torch.zeros(D)
            ref = table @ states[0][-1] + model.domain_table @ hd
            lo, hi = ds.domain_range[td]
            assert torch.allclose(scores[b, lo:hi], ref[lo:hi], atol=1e-4), b


class ColumnMaskDropout(torch.nn.Module):
    """A dropout whose mask is one fixed pattern over the last dimension (every third feature
    dropped, the rest scaled by 3/2), the same at every call: a packed and a dense computation
    can then share it, and each extra application changes the result."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        keep = (torch.arange(x.size(-1)) % 3 != 0).to(x.dtype)
        return x * keep * 1.5


def test_train_mode_dropout_at_the_official_places():
    """Train mode, dropout on: one mask per call at the official places only (3 embeddings + per
    block and thread one after each FFN layer = 15 applications for 2 blocks, where a dropout
    inside the inner activation made 21), and the mixed thread's states equal a plain
    re-computation that applies the same mask there."""
    model, ds = build(dropout_prob=0.5)
    model.train()
    model.dropout = ColumnMaskDropout()
    model.dropout_prob = 0.0                       # attention dropout off: the mask above is the only noise
    seqs, _, _ = batches(ds)
    item_seq = torch.nn.utils.rnn.pad_sequence([s[:-1][-12:] for s in seqs], batch_first=True)
    item_len = torch.tensor([min(s.numel() - 1, 12) for s in seqs])
    tdom = model.eval_target_domains({'item_id': torch.stack([s[-1] for s in seqs])}, item_seq, item_len)
    plan = model.layout(item_seq, item_len, tdom, train=False)
    hs = model.encode(plan, model.adapter(model.global_table[plan.tokens[:plan.seg[0]]]))
    assert model.dropout.calls == 3 + model.n_layers * 3 * 2 == 15
    drop = ColumnMaskDropout()
    for b, s in enumerate(seqs):
        states, _ = reference_states(model, item_seq[b, :item_len[b]], drop=drop)
        rows = plan.row_of[b * item_seq.size(1) + torch.arange(int(item_len[b]))]
        assert torch.allclose(hs[0][rows], states[0], atol=1e-4), b


def test_cached_item_table_follows_loaded_weights():
    """The adapted item table is cached per evaluation pass; weights loaded into a model already in
    evaluation mode are used at once, never the stale table."""
    m1, ds = build(seed=1)
    m2, _ = build(seed=2, ds=ds)
    _, _, ev = batches(ds)
    m1.eval(), m2.eval()
    with torch.no_grad():
        s2 = m2.full_sort_predict(ev)
        m1.full_sort_predict(ev)                                   # caches m1's item table
        m1.load_state_dict(m2.state_dict())
        assert torch.allclose(m1.full_sort_predict(ev), s2, atol=1e-6)


def test_the_adapter_runs_once_per_evaluation_pass():
    """Evaluating, the adapter maps the whole global table once per pass, shared by every batch and
    the scoring table (the scores are checked against a per-token recomputation above); training,
    it runs once per batch, on the ids the batch needs (inputs, targets, negatives)."""
    model, ds = build()
    seqs, tr, ev = batches(ds)
    rows = []
    model.adapter.register_forward_hook(lambda mod, inp, out: rows.append(inp[0].shape[0]))
    model.eval()
    with torch.no_grad():
        model.full_sort_predict(ev), model.full_sort_predict(ev)
    assert rows == [ds.n_items]
    model.train()
    rows.clear()
    model.calculate_loss(tr)
    assert len(rows) == 1 and rows[0] != ds.n_items


def test_training_loss_equals_plain_recomputation():
    """BCE of each target (score = mixed + domain thread) and its negative, means per domain, plus
    alpha L_reg and beta L_user, with the model's own negatives and reg picks (dropout off)."""
    model, ds = build(dropout_prob=0.0)
    model.train()
    seqs, tr, _ = batches(ds)
    draws = {}
    orig_neg, orig_reg = model._negatives, model._reg_items

    def spy_neg(domains, own, users):
        out = orig_neg(domains, own, users)
        draws.setdefault('neg', []).append(out)
        return out

    def spy_reg(item_seq, item_len):
        out = orig_reg(item_seq, item_len)
        draws['reg'] = out
        return out

    model._negatives, model._reg_items = spy_neg, spy_reg
    loss = model.calculate_loss(tr)
    neg = {0: iter(draws['neg'][0].tolist()), 1: iter(draws['neg'][1].tolist())}
    table = model.adapter(model.global_table)
    terms = {0: [], 1: []}
    last_states = []
    for b, s in enumerate(seqs):
        s = s[-13:]
        inp, tgt = s[:-1], s[1:]
        states, dom = reference_states(model, inp)
        last_states.append(states[0][-1])
        for t in range(inp.numel()):
            td = int(model.item_domain[tgt[t]])
            before = (dom[:t + 1] == td).nonzero()
            hd = states[1 + td][before.numel() - 1] if before.numel() else torch.zeros(D)
            sc = lambda i: table[i] @ states[0][t] + model.domain_table[i] @ hd  # noqa: E731
            n = next(neg[td])
            terms[td].append(F.softplus(-sc(tgt[t])) + F.softplus(sc(n)))
    ref = torch.stack(terms[0]).mean() + torch.stack(terms[1]).mean()
    ra, rb = draws['reg']
    ref = ref + 0.1 * symmetric_soft_contrastive(table[ra], table[rb], 1.0)
    prof = model.user_adapter(model.user_profiles[tr['user_id']])
    ref = ref + 0.1 * symmetric_soft_contrastive(prof, torch.stack(last_states), 1.0)
    assert torch.allclose(loss, ref, atol=1e-4)
    trace = model.epoch_trace()
    assert set(trace) == {'loss_a', 'loss_b', 'loss_reg', 'loss_user'}


def test_backward_reaches_every_trainable_parameter_and_tables_are_frozen():
    model, ds = build()
    _, tr, _ = batches(ds)
    model.calculate_loss(tr).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert not any(n.endswith('_table') for n, _ in model.named_parameters())
    assert 'global_table' not in model.state_dict()


@pytest.mark.parametrize('cls,kw', [(LLM4CDSR, {}), (LLM4CDSR_GCA, {'gca_positions': [0, 1, 2]})])
def test_no_future_leak(cls, kw):
    """Changing the item at step t changes no state at a step < t (causal by default)."""
    model, ds = build(cls, **kw)
    model.eval()
    seqs, tr, _ = batches(ds)
    item_seq, item_len, L = model.trim_batch(tr)
    target = tr['target_id_list'][:, :L]
    t = 5
    changed = item_seq.clone()
    other = torch.where(model.item_domain[item_seq[:, t]] == 0, ds.domain_range[1][0], ds.domain_range[0][0])
    changed[:, t] = torch.where(item_len > t, other, changed[:, t])          # an item of the other domain
    assert (item_len > t).any()
    with torch.no_grad():
        out = []
        for x in (item_seq, changed):
            plan = model.layout(x, item_len, model.item_domain[target], train=True)
            hs = model.encode(plan, model.adapter(model.global_table[plan.tokens[:plan.seg[0]]]))
            grid = torch.zeros(3, x.numel(), D)
            flat = plan.flat_idx % x.numel()
            for k, h in enumerate(hs):
                rows = torch.arange(sum(plan.seg[:k]), sum(plan.seg[:k + 1]))
                grid[k, flat[rows]] = h
            out.append(grid.view(3, *x.shape, D))
    assert torch.allclose(out[0][:, :, :t], out[1][:, :, :t], atol=1e-5)
    assert not torch.allclose(out[0][:, :, t:], out[1][:, :, t:], atol=1e-5)


def test_bidirectional_quirk_sees_the_future():
    model, ds = build(causal_attention=False)
    model.eval()
    seqs, tr, _ = batches(ds)
    item_seq, item_len, L = model.trim_batch(tr)
    tdom = model.item_domain[tr['target_id_list'][:, :L]]
    changed = item_seq.clone()
    u = int(torch.nonzero(item_len > 6)[0])
    changed[u, int(item_len[u]) - 1] = changed[u, 0]
    with torch.no_grad():
        firsts = []
        for x in (item_seq, changed):
            plan = model.layout(x, item_len, tdom, train=True)
            hs = model.encode(plan, model.adapter(model.global_table[plan.tokens[:plan.seg[0]]]))
            firsts.append(hs[0][plan.row_of[u * L]])
    assert not torch.allclose(firsts[0], firsts[1])


def test_quirk_switches():
    base, ds = build()
    assert base.emb_scale == pytest.approx(math.sqrt(D))
    assert build(global_emb_scale='table')[0].emb_scale == pytest.approx(math.sqrt(G))
    # the official randint never draws the last item of a domain
    skip, _ = build(negatives_skip_last_item=True)
    for d in (0, 1):
        draws = skip.sampler.sample_in_domain(torch.full((20000,), d))[:, 0]
        lo, hi = ds.domain_range[d]
        assert int(draws.min()) == lo and int(draws.max()) == hi - 2
        draws = base.sampler.sample_in_domain(torch.full((20000,), d))[:, 0]
        assert int(draws.max()) == hi - 1
    # independent negatives: the mixed thread's negative comes from the input item's domain
    ind, _ = build(independent_negatives=True, dropout_prob=0.0)
    _, tr, _ = batches(ds)
    calls = []
    orig = ind._negatives

    def spy(domains, own, users):
        calls.append((domains.clone(), orig(domains, own, users)))
        return calls[-1][1]

    ind._negatives = spy
    ind.calculate_loss(tr)
    assert len(calls) == 4                             # per target domain: the domain draw, then the mixed draw
    item_seq, _, L = ind.trim_batch(tr)
    for k in (1, 3):
        doms, negs = calls[k]
        assert torch.equal(ind.item_domain[negs], doms)
    first_dom = ind.item_domain[item_seq[:, 0]]
    assert (calls[1][0] != 0).any() or (first_dom != 0).any()
    # empty thread: official = the final LayerNorm's bias, and such targets are not trained
    off, _ = build(empty_thread='official')
    with torch.no_grad():
        off.threads[1].last_norm.bias.fill_(0.25)
        st = off._empty_states(torch.zeros(1, D))
    assert torch.equal(st[0], torch.full((D,), 0.25))
    assert torch.equal(base._empty_states(torch.zeros(1, D)), torch.zeros(2, D))


def test_reg_items_are_inputs_of_each_domain():
    model, ds = build()
    seqs, tr, _ = batches(ds, n=30)
    item_seq, item_len, _ = model.trim_batch(tr)
    ra, rb = model._reg_items(item_seq, item_len)
    dom = model.item_domain[item_seq]
    valid = torch.arange(item_seq.size(1))[None] < item_len[:, None]
    both = ((dom == 0) & valid).any(1) & ((dom == 1) & valid).any(1)
    assert ra.numel() == int(both.sum())
    for a, b, row in zip(ra, rb, item_seq[both]):
        assert int(model.item_domain[a]) == 0 and int(model.item_domain[b]) == 1
        assert a in row and b in row


def test_gca_identity_layers_compute_llm4cdsr():
    """LLM4CDSR_GCA whose GCA layers return their input (scalar gate alpha = 0, no LayerNorm) has
    LLM4CDSR's scores and loss with the same weights."""
    base, ds = build(dropout_prob=0.0)
    gca, _ = build(LLM4CDSR_GCA, ds=ds, dropout_prob=0.0, gca_positions=[0, 1, 2], **IDENTITY_GCA)
    _, tr, ev = batches(ds)
    assert_identity_gca_is_base(base, gca, tr, ev)


def test_gca_records_orthogonality_per_module_and_direction():
    gca, ds = build(LLM4CDSR_GCA, gca_positions=[0, 2])
    gca.eval()
    _, _, ev = batches(ds, n=20)
    gca.start_recording()
    with torch.no_grad():
        gca.full_sort_predict(ev)
    stats, steps = gca.pop_stats(), gca.pop_steps()
    gca.stop_recording()
    for p in (0, 2):
        for d in 'ab':
            assert f'ortho_cos_{d}@gca{p}' in stats and f'ortho_cos_{d}@gca{p}' in steps
            v = stats[f'ortho_cos_{d}@gca{p}']
            assert v.shape == (20,) and ((v[~v.isnan()] >= 0) & (v[~v.isnan()] <= 1)).all()


def test_parameter_counts():
    model, ds = build()
    d, inner, G2, P2, L = D, D, G // 2, P // 2, 12
    block = (3 * d * d + 3 * d) + (d * d + d) + 4 * d + (d * inner + inner) + (inner * d + d)
    thread = 2 * block + 2 * d
    expect = 3 * thread + 3 * (L + 1) * d + (G * G2 + G2 + G2 * d + d) + (P * P2 + P2 + P2 * d + d)
    assert count_parameters(model) == expect
    gca, _ = build(LLM4CDSR_GCA, ds=ds, gca_positions=[0, 2])
    assert count_parameters(gca) - expect == 4 * GatedCrossAttention.num_parameters(d, True, 'vector')
    no_user, _ = build(ds=ds, user_weight=0.0)
    assert no_user.user_adapter is None and count_parameters(no_user) == expect - (P * P2 + P2 + P2 * d + d)


def test_bad_settings_name_the_key():
    for kw, key in ((dict(empty_thread='nope'), 'empty_thread'), (dict(causal_attention='yes'), 'causal_attention'),
                    (dict(global_emb_scale='x'), 'global_emb_scale'), (dict(reg_weight=-1), 'reg_weight'),
                    (dict(text_domain_dim=8), 'text_domain_dim')):
        with pytest.raises(Exception, match=key):
            ds = FakeDataset()
            ds.given['item_text'] = fake_features(ds)
            if key == 'text_domain_dim':
                ds.given['item_text'].domain_table = ds.given['item_text'].domain_table[:, :8]
            LLM4CDSR(make_config('LLM4CDSR', **dict(SMALL, **kw)), ds)


def test_model_file_imports_nothing_from_abxi():
    src = Path(__file__).resolve().parents[1] / 'recbole_ortho/model/cross_domain_sequential'
    for name in ('llm4cdsr.py', 'llm4cdsr_gca.py'):
        tree = ast.parse((src / name).read_text())
        mods = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        mods += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not any('abxi' in (m or '') for m in mods), name
