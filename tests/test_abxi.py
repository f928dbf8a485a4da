"""Unit tests of ABXI (recbole_ortho.model.cross_domain_sequential.abxi) and ABXI_GCA's hook."""

import importlib
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest_models import FakeDataset, eval_batch, make_config, random_sequences, train_batch  # noqa: E402

from recbole_ortho.model.cross_domain_sequential import ABXI, ABXI_GCA  # noqa: E402
from recbole_ortho.model.gca import GatedCrossAttention  # noqa: E402
from recbole_ortho.model import kernels  # noqa: E402
from recbole_ortho.model.layout import aligned_domain_inputs, step_facts  # noqa: E402
from recbole_ortho.utils.param_match import count_parameters, match_parameters  # noqa: E402

TINY = dict(embedding_size=16, n_heads=2, inner_size=24, rd=2, ri=4, n_neg_per_domain=8)
DS = FakeDataset(n_a=30, n_b=40)          # B ids 1..40, A ids 41..70
A1, A2, A3, B1, B2, B3 = 41, 42, 43, 1, 2, 3


def build(cls=ABXI, seed=0, ds=DS, randomize=False, **kw):
    torch.manual_seed(seed)
    cfg = make_config(cls, **{**TINY, **kw})
    m = cls(cfg, ds)
    if randomize:                 # LoRA B starts at 0 and LayerNorms at 1/0: make every part matter
        with torch.no_grad():
            for name, p in m.named_parameters():
                if 'weight_b' in name or 'norm' in name:
                    p.add_(0.2 * torch.randn_like(p))
    return m


def hand_batch(width=7):
    # user 0: b1 a1 a2 b2 a3 -> targets a1 a2 b2 a3 b3 ; user 1: a1 a1 b1 -> a1 b1 a2
    seqs = [torch.tensor([B1, A1, A2, B2, A3, B3]), torch.tensor([A1, A1, B1, A2])]
    return train_batch(seqs, width)


# ------------------------------------------------------------------ inputs
def test_aligned_domain_inputs_hand_written():
    m = build()
    b = hand_batch()
    seq_a, seq_b = aligned_domain_inputs(b['item_id_list'], b['item_length'], m.item_domain)
    assert seq_a.tolist() == [[0, A1, A2, A2, A3, 0, 0], [A1, A1, A1, 0, 0, 0, 0]]
    assert seq_b.tolist() == [[B1, B1, B1, B2, B2, 0, 0], [0, 0, B1, 0, 0, 0, 0]]


def test_domain_positions_follow_official_aligned_sequences():
    # official aligned training inputs of user 0: seq_a = [0, a1, 0, a2, 0], seq_b = [0, 0, b1, 0, b2]
    # -> positions counted from the end among non-zero slots: a1 = 2, a2 = 1; b1 = 2, b2 = 1;
    # a3 (after A's last target step) gets 1
    m = build()
    b = hand_batch()
    tdom = m.item_domain[b['target_id_list']]
    f = step_facts(b['item_id_list'], b['item_length'], m.item_domain, tdom)
    pa, pb = m.domain_positions(f)
    assert [pa[0, t].item() for t in (1, 2, 4)] == [2, 1, 1]
    assert [pb[0, t].item() for t in (0, 3)] == [2, 1]
    assert [pa[1, t].item() for t in (0, 1)] == [2, 1] and pb[1, 2].item() == 1


def test_official_layout_hand_written():
    m = build(official_quirks=True, MAX_ITEM_LIST_LENGTH=7)
    b = hand_batch()
    tdom = m.item_domain[b['target_id_list']]
    plan = m.layout(b['item_id_list'], b['item_length'], tdom, train=True)
    tok = plan.tokens.view(3, 2, 7)
    pos = plan.positions.view(3, 2, 7)
    assert tok[:, 0].tolist() == [[0, 0, B1, A1, A2, B2, A3], [0, 0, 0, A1, 0, A2, 0], [0, 0, 0, 0, B1, 0, B2]]
    assert pos[:, 0].tolist() == [[0, 0, 5, 4, 3, 2, 1], [0, 0, 0, 2, 0, 1, 0], [0, 0, 0, 0, 2, 0, 1]]
    # evaluation: compacted domain histories
    ev = eval_batch([torch.tensor([B1, A1, A2, B2, A3, B3])], 7, DS)
    tdom = m.eval_target_domains(ev, ev['item_id_list'], ev['item_length'])
    assert tdom[0, :5].tolist() == [0, 0, 1, 0, 1]
    plan = m.layout(ev['item_id_list'], ev['item_length'], tdom, train=False)
    tok = plan.tokens.view(3, 1, 7)
    assert tok[1, 0].tolist() == [0, 0, 0, 0, A1, A2, A3] and tok[2, 0].tolist() == [0, 0, 0, 0, 0, B1, B2]


# ------------------------------------------------------------------ naive reference
# Plain autograd only: per user and step, padded torch ops (SDPA attention through
# MultiHeadAttention.forward, SwiGLU and the GCA gate written out), none of the package's kernels.
def _plain_swiglu(ffn, x):
    up, gate = F.linear(x, ffn.fc_in.weight).chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, ffn.fc_out.weight)


def _naive_block(blk, h, s):
    n = h.size(1)
    a, _ = blk.attn(h, allowed=torch.ones(1, n, n, dtype=torch.bool).tril())
    h = blk.norm_attn(h + a)
    return blk.norm_ffn[s](h + _plain_swiglu(blk.ffn, h) + blk.dlora[s](h))


def _naive_blocks(m, h, s):
    for blk in m.blocks:
        h = _naive_block(blk, h, s)
    return h


def _naive_gca(layer, xq, steps_q, xk, steps_k):
    """ABXI_GCA's occurrence-mode GCA of one user, from the formula: the query at step t attends
    to the other domain's occurrences at steps < t; the gate's other input is the other domain's
    state at its latest occurrence before t (0 if none); LN(X + G * X')."""
    d = xq.size(1)
    if xk.size(0) == 0:
        xk, steps_k = torch.zeros(1, d), torch.tensor([10 ** 6])      # one key no query may see
    allowed = steps_k[None, :] < steps_q[:, None]                        # [nq, nk]
    latest = (allowed.long().cumsum(1) == allowed.long().sum(1, keepdim=True)) & allowed
    other = (latest.to(xk.dtype) @ xk)                                   # 0 where no earlier key
    x_att, _ = layer.attn(xq[None], xk[None], allowed[None])             # 0 without a key
    x_att = x_att[0]
    g = layer.gate(xq, x_att if layer.gate_input == 'concat_attn' else other)
    return layer.norm(xq + g * x_att)


def _naive_domains(m, comp, steps):
    """Encoder of the compacted domain sequences, with ABXI_GCA's stages when ``m`` has them."""
    stages = m.gca.positions if hasattr(m, 'gca') else []
    for i in range(m.n_layers + 1):
        if i in stages and all(k in comp for k in (0, 1)):
            gca = m.gca[str(i)]
            comp = {0: _naive_gca(gca['a'], comp[0], steps[0], comp[1], steps[1]),
                    1: _naive_gca(gca['b'], comp[1], steps[1], comp[0], steps[0])}
        elif i in stages:                                                # no key at all: GCA = LN(X)
            comp = {d: m.gca[str(i)]['ab'[d]].norm(h) for d, h in comp.items()}
        if i < m.n_layers:
            comp = {d: _naive_block(m.blocks[i], h[None], d + 1)[0] for d, h in comp.items()}
    return comp


def _naive_head(m, x, hd, d):
    return (m.norm_inv[d](x + _plain_swiglu(m.proj_inv, x) + m.ilora[d](x))
            + m.norm_dom[d](hd + _plain_swiglu(m.proj_dom[d], hd)))


def naive_abxi(m, item_seq, item_len, tdom, steps):
    """Per user, per step loop over unpadded sequences: the mixed sequence and the *compacted*
    domain sequences (each domain item once), no masks but the causal one."""
    out = {}
    E, P = m.item_embedding, m.position_embedding
    for b in range(item_seq.size(0)):
        n = int(item_len[b])
        s, td = item_seq[b, :n], tdom[b, :n]
        dom = m.item_domain[s]
        x = _naive_blocks(m, (E(s) + P(n - torch.arange(n)))[None], 0)[0]
        comp, occs = {}, {}
        for d in (0, 1):
            occ = torch.nonzero(dom == d).squeeze(1)
            tl = int(torch.nonzero(td == d).max()) if (td == d).any() else -1
            pos = torch.tensor([max(1, int(((occ >= p) & (occ <= tl)).sum())) for p in occ.tolist()], dtype=torch.long)
            occs[d] = occ
            if len(occ):
                comp[d] = E(s[occ]) + P(pos)
        comp = _naive_domains(m, comp, occs)
        for t in (range(n) if steps == 'all' else [n - 1]):
            d = int(td[t])
            if d < 0:
                continue
            k = int((occs[d] <= t).sum())
            hd = comp[d][k - 1] if k else torch.zeros(m.embedding_size)
            out[(b, t)] = _naive_head(m, x[t], hd, d)
    return out


def naive_info_nce(m, ref, item_seq, target, negs):
    """ABXI's loss from the naive states: per target step the InfoNCE of the target against the
    user's shared draws ``negs[b]`` (a draw that is one of the user's items or repeats an earlier
    draw of its domain half is left out), averaged per user and domain, summed / batch size."""
    B, K = item_seq.size(0), negs.size(1) // 2
    E = m.item_embedding.weight
    per = {0: {}, 1: {}}
    for (b, t), h in ref.items():
        own = set(item_seq[b].tolist()) | set(target[b].tolist())
        keep = [j for j in range(2 * K) if int(negs[b, j]) not in own
                and int(negs[b, j]) not in negs[b, (j // K) * K:j].tolist()]
        logits = torch.cat([(h * E[target[b, t]]).sum()[None], E[negs[b, keep]] @ h]) / m.temperature
        d = int(m.item_domain[target[b, t]])
        per[d].setdefault(b, []).append(torch.logsumexp(logits, 0) - logits[0])
    return [sum(torch.stack(v).mean() for v in per[d].values()) / B for d in (0, 1)]


def _grads(m, loss):
    m.zero_grad()
    loss.backward()
    return {k: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for k, p in m.named_parameters()}


def assert_grads_close(g1, g2, atol=1e-5):
    assert set(g1) == set(g2)
    for k in g1:
        assert torch.allclose(g1[k], g2[k], atol=atol, rtol=1e-4), k
    assert any(g.abs().sum() > 0 for g in g1.values())


def assert_matches_naive(m, seqs):
    """The packed fast path of ``m`` (public seams: ``head_rows``, ``calculate_loss``,
    ``final_representation``) equals :func:`naive_abxi` on every training row (all positions),
    in value and in the gradients of every parameter, the training loss too (same negatives),
    and on the evaluation state after the last history item."""
    b = train_batch(seqs, 10)
    item_seq, item_len, L = m.trim_batch(b)
    target = b['target_id_list'][:, :L]
    tdom = m.item_domain[target]
    outs, plan = m.head_rows(item_seq, item_len, tdom, train=True)
    ref = naive_abxi(m, item_seq, item_len, tdom, 'all')
    w = torch.randn(len(ref), m.embedding_size, generator=torch.Generator().manual_seed(3))
    keys = [(src // L, src % L) for hd in plan.head for src in hd.src.tolist()]
    assert sorted(keys) == sorted(ref) and len(ref) == int(item_len.sum())
    for (k, row) in zip(keys, torch.cat(outs)):
        assert torch.allclose(row, ref[k], atol=1e-5)
    g_packed = _grads(m, (torch.cat(outs) * w).sum())
    g_naive = _grads(m, sum((ref[k] * w[i]).sum() for i, k in enumerate(keys)))
    assert_grads_close(g_packed, g_naive)
    # the training loss with fixed shared negatives (with repeats and own items among them)
    gen = torch.Generator().manual_seed(11)
    (lo_a, hi_a), (lo_b, hi_b) = m.domain_range[0], m.domain_range[1]
    K = m.n_neg
    negs = torch.cat([torch.randint(lo_a, hi_a, (len(seqs), K), generator=gen),
                      torch.randint(lo_b, hi_b, (len(seqs), K), generator=gen)], dim=1)
    negs[:, 1] = negs[:, 0]                                  # a repeated draw
    for r in range(len(seqs)):                               # one of the user's own items
        first = int(item_seq[r, 0])
        negs[r, int(m.item_domain[first]) * K + 2] = first
    sampler_sample = m.sampler.sample
    m.sampler.sample = lambda n, dev: negs
    try:
        loss = m.calculate_loss(b)
        la, lb = naive_info_nce(m, naive_abxi(m, item_seq, item_len, tdom, 'all'), item_seq, target, negs)
        assert torch.allclose(loss, la + lb, atol=1e-5)
        assert_grads_close(_grads(m, m.calculate_loss(b)), _grads(m, la + lb))
    finally:
        m.sampler.sample = sampler_sample
    # evaluation: state after the last history item, target domain from domain_id
    ev = eval_batch(seqs, 10, DS)
    with torch.no_grad():
        h = m.final_representation(ev)
        tdom_e = m.eval_target_domains(ev, ev['item_id_list'], ev['item_length'])
        ref = naive_abxi(m, ev['item_id_list'], ev['item_length'], tdom_e, 'last')
    for u in range(len(seqs)):
        assert torch.allclose(h[u], ref[(u, int(ev['item_length'][u]) - 1)], atol=1e-5)


@pytest.mark.parametrize('n_layers', [1, 2])
def test_packed_fast_path_matches_naive_reference(n_layers):
    m = build(randomize=True, n_layers=n_layers).eval()
    assert_matches_naive(m, random_sequences(DS, 6, 10, generator=torch.Generator().manual_seed(5)))


@pytest.mark.parametrize('kw', [dict(), dict(n_layers=2, gca_positions=[0, 2]), dict(n_layers=2, gca_positions=[1]),
                                dict(gca_gate_input='concat_attn', gca_activation='tanh', gca_layernorm=False)])
def test_gca_occurrence_mode_matches_naive_reference(kw):
    """gca_query_steps=occurrence, against a per-user loop with the padded GCA layer: the A state
    at an A occurrence t attends to the B occurrences < t (gate: the latest of them), the rest
    is ABXI (the A state used at a later step is the latest A occurrence's)."""
    m = build(cls=ABXI_GCA, randomize=True, gca_query_steps='occurrence', **kw).eval()
    with torch.no_grad():
        for p in m.gca.parameters():
            p.add_(0.1 * torch.randn_like(p))
    seqs = random_sequences(DS, 7, 10, generator=torch.Generator().manual_seed(6))
    seqs.append(torch.tensor([A1, A2, A3, A1, A2]))                      # a user without B items
    assert_matches_naive(m, seqs)


def _head_outputs(m, item_seq, item_len, tdom):
    with torch.no_grad():
        outs, plan = m.head_rows(item_seq, item_len, tdom, train=True)
    return {src: row for hd, o in zip(plan.head, outs) for src, row in zip(hd.src.tolist(), o)}


@pytest.mark.parametrize('mode', ['occurrence', 'every'])
def test_gca_no_future_leak_in_model(mode):
    """Replacing a B item at step s by another B item (same layout) leaves every output at
    steps < s unchanged and changes the A states after s (GCA keys / gate)."""
    m = build(cls=ABXI_GCA, randomize=True, gca_query_steps=mode).eval()
    with torch.no_grad():
        for p in m.gca.parameters():
            p.add_(0.1 * torch.randn_like(p))
    #             b1  a1  a2  b2  a3  a1  b3  a2   (targets: the next item)
    seq = torch.tensor([B1, A1, A2, B2, A3, A1, B3, A2, B1])
    b = train_batch([seq], 8)
    item_seq, item_len, L = m.trim_batch(b)
    tdom = m.item_domain[b['target_id_list'][:, :L]]
    seen = {}
    orig = m.domain_interaction

    def spy(stage, h_a, h_b, ctx):
        out = orig(stage, h_a, h_b, ctx)
        seen['a'] = ctx.to_grid(out[0], 0)[0]
        return out

    m.domain_interaction = spy
    base = _head_outputs(m, item_seq, item_len, tdom)
    base_a = seen['a']
    for s in (0, 3):                                          # the B items at steps 0 and 3
        item2 = item_seq.clone()
        item2[0, s] = B3 if int(item_seq[0, s]) != B3 else B2
        new = _head_outputs(m, item2, item_len, tdom)
        for t in range(s):
            assert torch.allclose(new[t], base[t], atol=1e-6), (s, t)
        assert not torch.allclose(seen['a'][s + 1:], base_a[s + 1:], atol=1e-5)     # A states after s change
        a_steps = [t for t in range(s + 1, 8) if int(m.item_domain[item_seq[0, t]]) == 0]
        for t in a_steps:                                      # ... at each A occurrence after s
            assert not torch.allclose(seen['a'][t], base_a[t], atol=1e-6), (s, t)


@pytest.mark.parametrize('mode', ['occurrence', 'every'])
def test_gca_identity_layers_compute_abxi(mode):
    """GCA layers that return their input (tanh gate with a zero last layer, no LayerNorm: y = x +
    Dropout(0 * X') = x) -> ABXI_GCA computes exactly ABXI (loss and scores)."""
    # occurrence: ABXI's very rows, so even the dropout masks are the same draws; every: more
    # domain rows (other dropout draws), compared without dropout
    p = 0.3 if mode == 'occurrence' else 0.0
    m = build(randomize=True, dropout_prob=p).eval()
    g = build(cls=ABXI_GCA, randomize=True, dropout_prob=p, gca_query_steps=mode, gca_activation='tanh',
              gca_layernorm=False, gca_positions=[0, 1], gca_dropout=0.0).eval()   # (no random draws of its own)
    g.load_state_dict(m.state_dict(), strict=False)
    with torch.no_grad():
        for p in g.gca.parameters():
            p.add_(0.1 * torch.randn_like(p))
        for pos in g.gca.values():
            for layer in pos.values():
                layer.gate_fc2.weight.zero_()
                layer.gate_fc2.bias.zero_()
    seqs = random_sequences(DS, 6, 10, generator=torch.Generator().manual_seed(8))
    b, ev = train_batch(seqs, 10), eval_batch(seqs, 10, DS)
    for train in (True, False):
        m.train(train)
        g.train(train)
        torch.manual_seed(4)
        l1 = m.calculate_loss(b)
        torch.manual_seed(4)
        l2 = g.calculate_loss(b)
        assert torch.allclose(l1, l2, atol=1e-5), train
    with torch.no_grad():
        assert torch.allclose(m.full_sort_predict(ev), g.full_sort_predict(ev), atol=1e-5)


def test_gca_occurrence_statistics_by_hand():
    """ortho_cos / cross_cos of the occurrence mode: per user, over its A occurrences t with a
    B item before t: |cos(X_A[t], X'_A[t])| and |cos(X_A[t], X_B[latest B occurrence < t])|."""
    g = build(cls=ABXI_GCA, randomize=True).eval()
    seen = {}
    orig = g.domain_interaction

    def spy(stage, h_a, h_b, ctx):
        seen['in'] = (ctx.to_grid(h_a, 0)[0], ctx.to_grid(h_b, 1)[0])
        return orig(stage, h_a, h_b, ctx)

    g.domain_interaction = spy
    seq = torch.tensor([A1, B1, A2, A3, B2, A1, A2])              # history = all but the last
    ev = eval_batch([seq], 8, DS)
    g.start_recording()
    with torch.no_grad():
        g.full_sort_predict(ev)
    st = g.pop_stats()
    g.stop_recording()
    xa, xb = seen['in']
    layer = g.gca['0']['a']
    cross = [abs(F.cosine_similarity(xa[t], xb[bt], dim=0)) for t, bt in ((2, 1), (3, 1), (5, 4))]
    assert torch.allclose(st['cross_cos_a@gca0'][0], torch.stack(cross).mean(), atol=1e-5)
    # X'_A at the A occurrences with a key, by the padded layer
    with torch.no_grad():
        q = xa[[0, 2, 3, 5]]
        k = xb[[1, 4]]
        allowed = torch.tensor([[0, 0], [1, 0], [1, 0], [1, 1]], dtype=torch.bool)
        x_att, _ = layer.attn(q[None], k[None], allowed[None])
    ortho = [abs(F.cosine_similarity(q[i], x_att[0, i], dim=0)) for i in (1, 2, 3)]
    assert torch.allclose(st['ortho_cos_a@gca0'][0], torch.stack(ortho).mean(), atol=1e-5)
    # B direction: B occurrences 1 (A before: step 0) and 4 (latest A: step 3)
    cross_b = [abs(F.cosine_similarity(xb[t], xa[at], dim=0)) for t, at in ((1, 0), (4, 3))]
    assert torch.allclose(st['cross_cos_b@gca0'][0], torch.stack(cross_b).mean(), atol=1e-5)


def test_gca_query_steps_option():
    assert build(cls=ABXI_GCA).gca.query_steps == 'occurrence'
    assert not build(cls=ABXI_GCA).filled_domain_states
    assert build(cls=ABXI_GCA, gca_query_steps='every').filled_domain_states
    with pytest.raises(ValueError):
        build(cls=ABXI_GCA, gca_query_steps='sometimes')


class _FilledABXI(ABXI):
    filled_domain_states = True


def test_filled_domain_states_equal_occurrence_states():
    m1 = build(randomize=True).eval()
    m2 = build(cls=_FilledABXI, randomize=True).eval()
    m2.load_state_dict(m1.state_dict())
    b = train_batch(random_sequences(DS, 6, 10), 10)
    ev = eval_batch(random_sequences(DS, 6, 10), 10, DS)
    with torch.no_grad():
        torch.manual_seed(1)
        l1 = m1.calculate_loss(b)
        torch.manual_seed(1)
        l2 = m2.calculate_loss(b)
        assert torch.allclose(l1, l2, atol=1e-5)
        assert torch.allclose(m1.full_sort_predict(ev), m2.full_sort_predict(ev), atol=1e-4)


@pytest.mark.parametrize('mode', ['every', 'occurrence'])
def test_gca_hook_receives_aligned_states_and_identity_hook_is_abxi(mode):
    m = build(randomize=True, dropout_prob=0.0).eval()
    g = build(cls=ABXI_GCA, randomize=True, dropout_prob=0.0, gca_query_steps=mode).eval()
    g.load_state_dict(m.state_dict(), strict=False)
    seen = {}

    def identity(stage, h_a, h_b, ctx):
        seen[stage] = (ctx.to_grid(h_a, 0), ctx.to_grid(h_b, 1), ctx)
        assert torch.equal(ctx.from_grid(seen[stage][0], 0), h_a)
        return h_a, h_b

    g.domain_interaction = identity
    b = hand_batch()
    with torch.no_grad():
        torch.manual_seed(3)
        l1 = m.calculate_loss(b)
        torch.manual_seed(3)
        l2 = g.calculate_loss(b)
    assert torch.allclose(l1, l2, atol=1e-5)
    h_a, h_b, ctx = seen[0]
    item_seq, item_len, L = m.trim_batch(b)                 # batches are trimmed to their longest row
    seq_a, seq_b = aligned_domain_inputs(item_seq, item_len, m.item_domain)
    f = step_facts(item_seq, item_len, m.item_domain, m.item_domain[b['target_id_list'][:, :L]])
    pos = m.domain_positions(f)
    for d, (seq, h) in enumerate(((seq_a, h_a), (seq_b, h_b))):
        exp = m.item_embedding(seq) + m.position_embedding(pos[d].gather(1, f.last[d].clamp_min(0)) * (seq > 0))
        # every: a state at each step after the domain's first item; occurrence: only where it occurs
        present = (seq > 0) if mode == 'every' else f.occ[d]
        assert torch.allclose(h, exp * present[..., None], atol=1e-6)
        assert torch.equal(ctx.rows[d], torch.nonzero(present.reshape(-1)).squeeze(1))
        # latest_row: the row of the domain's latest state at or before each step (-1: none)
        steps = torch.nonzero(f.valid.reshape(-1)).squeeze(1)
        lr = ctx.latest_row(d, steps)
        assert torch.equal(lr >= 0, (seq > 0).reshape(-1)[steps])
        ok = lr >= 0
        rows_of = ctx.rows[d][lr[ok]]
        exp_step = steps[ok] if mode == 'every' else (steps[ok] // L) * L + f.last[d].reshape(-1)[steps[ok]]
        assert torch.equal(rows_of, exp_step)
    assert torch.equal(ctx.has[0], seq_a > 0) and torch.equal(ctx.has[1], seq_b > 0)
    assert torch.equal(ctx.occ[0], m.item_domain[item_seq] == 0)


# ------------------------------------------------------------------ training / evaluation
@pytest.mark.parametrize('kw', [dict(), dict(official_quirks=True), dict(shared_negatives=False),
                                dict(official_quirks=True, shared_negatives=False)])
def test_loss_finite_and_decreases(kw):
    m = build(**kw, dropout_prob=0.1)
    seqs = random_sequences(DS, 8, 10, generator=torch.Generator().manual_seed(2))
    b = train_batch(seqs, 10)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = m.calculate_loss(b)
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])
    tr = m.epoch_trace()
    assert set(tr) == {'loss_a', 'loss_b'} and m.epoch_trace() == {}
    m.eval()
    with torch.no_grad():
        ev = eval_batch(seqs, 10, DS)
        scores = m.full_sort_predict(ev)
        assert scores.shape == (len(seqs), DS.n_items) and torch.isfinite(scores).all()
        assert torch.allclose(m.predict(ev), scores.gather(1, ev['item_id'][:, None]).squeeze(1), atol=1e-5)


def test_quirk_mode_changes_the_computation():
    b = train_batch(random_sequences(DS, 4, 6), 6)
    m1, m2 = build(randomize=True).eval(), build(randomize=True, official_quirks=True).eval()
    with torch.no_grad():
        torch.manual_seed(0)
        l1 = m1.calculate_loss(b)
        torch.manual_seed(0)
        l2 = m2.calculate_loss(b)
    assert torch.isfinite(l1) and torch.isfinite(l2) and not torch.allclose(l1, l2)


def test_negative_sampling_ranges_and_exclusion():
    m = build()
    torch.manual_seed(0)
    negs = m.sampler.sample(500, 'cpu')
    (lo_a, hi_a), (lo_b, hi_b) = DS.domain_range[0], DS.domain_range[1]
    K = m.n_neg
    assert negs.shape == (500, 2 * K)
    assert ((negs[:, :K] >= lo_a) & (negs[:, :K] < hi_a)).all()
    assert ((negs[:, K:] >= lo_b) & (negs[:, K:] < hi_b)).all()
    own = torch.tensor([[0, 0, 5, 45]])
    cand = torch.tensor([[41, 45, 41, 44, 50, 51, 52, 53, 5, 6, 5, 7, 8, 9, 10, 11]])
    bad = m.sampler.invalid(cand, own)
    assert bad[0].tolist() == [False, True, True, False, False, False, False, False,
                               True, False, True, False, False, False, False, False]
    q = build(official_quirks=True)
    torch.manual_seed(0)
    negs = q.sampler.sample(2000, 'cpu')[:, K:]
    quirk = hi_a - 1                       # the last A id sits in the B pool (official off-by-one)
    assert ((negs >= lo_b) & (negs < hi_b) | (negs == quirk)).all() and (negs == quirk).any()
    own = torch.tensor([[0, 7, quirk]])                  # sorted, as built by the model
    cand = torch.zeros(1, 2 * K, dtype=torch.long) + 9
    cand[0, :2 * K:] = torch.arange(2 * K) % 60 + 1
    cand[0, K] = quirk
    cand[0, K + 1] = 7
    badq = q.sampler.invalid(cand, own)
    assert not badq[0, K] and badq[0, K + 1]


def test_official_parameter_count_and_gca_count():
    ds = FakeDataset(n_a=11837, n_b=16258)            # Food-Kitchen: 28,096 ids with padding
    assert count_parameters(ABXI(make_config('ABXI', MAX_ITEM_LIST_LENGTH=47), ds)) == 9_651_200   # = official
    gca = ABXI_GCA(make_config('ABXI_GCA', MAX_ITEM_LIST_LENGTH=47), ds)
    assert count_parameters(gca) == 9_651_200 + 2 * GatedCrossAttention.num_parameters(256) \
        == 9_651_200 + gca.gca.num_parameters()


def test_param_match_widens_inner_size_to_the_gca_count():
    cfg = make_config('ABXI', **TINY)
    n_gca = count_parameters(ABXI_GCA(make_config('ABXI_GCA', **TINY), DS))
    state = torch.get_rng_state()
    updates, n = match_parameters(ABXI, cfg, DS, n_gca)
    assert torch.equal(state, torch.get_rng_state())          # trial builds leave the RNG alone
    assert list(updates) == ['inner_size'] and updates['inner_size'] > TINY['inner_size']
    assert count_parameters(ABXI(make_config('ABXI', **{**TINY, **updates}), DS)) == n
    # one inner_size unit adds 3 * d * (n_layers + 3) = 3 * 16 * 4 parameters: the best is within half of it
    assert abs(n - n_gca) <= 3 * 16 * 4 / 2
    for h in (updates['inner_size'] - 1, updates['inner_size'] + 1):
        assert abs(count_parameters(ABXI(make_config('ABXI', **{**TINY, 'inner_size': h}), DS)) - n_gca) >= abs(n - n_gca)
    with pytest.raises(ValueError, match='param_match'):
        match_parameters(ABXI, cfg, DS, n_gca + 50, tol=1e-9)


@pytest.mark.parametrize('mode', ['occurrence', 'every'])
def test_gca_records_statistics_in_evaluation(mode):
    g = build(cls=ABXI_GCA, gca_positions=[0, 1], gca_query_steps=mode).eval()
    seqs = random_sequences(DS, 5, 10)
    g.start_recording()
    with torch.no_grad():
        g.full_sort_predict(eval_batch(seqs, 10, DS))
    st = g.pop_stats()
    names = {f'{k}_{d}@gca{p}' for k in ('ortho_cos', 'cross_cos') for d in 'ab' for p in (0, 1)}
    assert set(st) == names
    for v in st.values():
        assert v.shape == (5,)
        ok = v[~torch.isnan(v)]
        assert ((ok >= 0) & (ok <= 1 + 1e-6)).all()
    g.stop_recording()
    g.train()
    g.calculate_loss(train_batch(seqs, 10))               # training records nothing
    assert g.pop_stats() == {}


# ------------------------------------------------------------------ optional: the official code
@pytest.mark.skipif(not os.environ.get('ABXI_OFFICIAL_DIR'), reason='set ABXI_OFFICIAL_DIR to an official ABXI checkout')
def test_official_quirks_reproduce_official_code():
    off_dir = os.environ['ABXI_OFFICIAL_DIR']
    saved = {k: v for k, v in sys.modules.items() if k == 'models' or k.startswith('models.')}
    for k in saved:
        del sys.modules[k]
    sys.path.insert(0, off_dir)
    try:
        OffABXI = importlib.import_module('models.ABXI').ABXI
        loader = importlib.import_module('models.data.dataloader')
    finally:
        sys.path.remove(off_dir)
        for k in [k for k in sys.modules if k == 'models' or k.startswith('models.')]:
            del sys.modules[k]
        sys.modules.update(saved)
    from argparse import Namespace
    n_a, n_b, W, d = 30, 40, 12, 16
    ds = FakeDataset(n_a, n_b, a_first=True)
    torch.manual_seed(0)
    off = OffABXI(Namespace(bs=8, len_trim=W, n_head=2, n_item=n_a + n_b, n_item_a=n_a, n_neg=5, temp=0.75,
                            d_embed=d, rd=2, ri=4, dropout=0.0))
    me = ABXI(make_config(MAX_ITEM_LIST_LENGTH=W, embedding_size=d, n_heads=2, inner_size=680, rd=2, ri=4,
                          dropout_prob=0.0, n_neg_per_domain=5, official_quirks=True), ds)
    o = dict(off.named_parameters())
    with torch.no_grad():
        for k, v in o.items():
            v.copy_(torch.randn_like(v) * 0.3 + (1.0 if 'norm' in k and k.endswith('weight') else 0.0))
    sd = {'item_embedding.weight': o['ei.weight'], 'position_embedding.weight': o['ep.weight'],
          'blocks.0.attn.in_proj.weight': o['mha.mha.in_proj_weight'], 'blocks.0.attn.in_proj.bias': o['mha.mha.in_proj_bias'],
          'blocks.0.attn.out_proj.weight': o['mha.mha.out_proj.weight'], 'blocks.0.attn.out_proj.bias': o['mha.mha.out_proj.bias'],
          'blocks.0.norm_attn.weight': o['mha.norm_mha.weight'], 'blocks.0.norm_attn.bias': o['mha.norm_mha.bias']}
    for dst, src in (('blocks.0.ffn', 'ffn'), ('proj_inv', 'proj_i'), ('proj_dom.0', 'proj_a'), ('proj_dom.1', 'proj_b')):
        sd[dst + '.fc_in.weight'] = torch.cat([o[src + '.fc_1.weight'], o[src + '.fc_2.weight']])
        sd[dst + '.fc_out.weight'] = o[src + '.fc_3.weight']
    for i, s in enumerate('xab'):
        sd.update({f'blocks.0.dlora.{i}.weight_a': o[f'dlora_{s}.mat_A'], f'blocks.0.dlora.{i}.weight_b': o[f'dlora_{s}.mat_B'],
                   f'blocks.0.norm_ffn.{i}.weight': o[f'norm_sa_{s}.weight'], f'blocks.0.norm_ffn.{i}.bias': o[f'norm_sa_{s}.bias']})
    for i, s in enumerate('ab'):
        sd.update({f'ilora.{i}.weight_a': o[f'ilora_{s}.mat_A'], f'ilora.{i}.weight_b': o[f'ilora_{s}.mat_B'],
                   f'norm_inv.{i}.weight': o[f'norm_i2{s}.weight'], f'norm_inv.{i}.bias': o[f'norm_i2{s}.bias'],
                   f'norm_dom.{i}.weight': o[f'norm_{s}2{s}.weight'], f'norm_dom.{i}.bias': o[f'norm_{s}2{s}.bias']})
    me.load_state_dict(sd, strict=True)
    assert count_parameters(me) == count_parameters(off)
    rng = np.random.default_rng(1)
    raws = []
    while len(raws) < 8:
        s = rng.integers(1, n_a + n_b + 1, size=int(rng.integers(4, W + 2)))
        if (s[1:] <= n_a).any() and (s[1:] > n_a).any():
            raws.append(s)
    raws.append(np.array([n_a + 3, n_a + 5, n_a + 7, 2]))        # eval: no A history, A target

    def masks(sx, sa, sb, gt):
        m = [(t != 0).unsqueeze(-1).int() for t in (sx, sa, sb)]
        return m + [(0 < gt) & (gt <= n_a).int(), (gt > n_a).int()]

    # training representations and loss with the same per-position negatives
    tr = [loader.process_train(s, n_a, W) for s in raws]
    sx, sa, sb, gt = [torch.LongTensor(np.stack([t[i] for t in tr])) for i in range(4)]
    off.train()
    me.train()
    mk = masks(sx, sa, sb, gt)
    h_off = off(sx, sa, sb, *mk)
    b = train_batch([torch.as_tensor(s) for s in raws], W)
    item_seq, item_len, L = me.trim_batch(b)
    target = b['target_id_list'][:, :L]
    outs, plan = me.head_rows(item_seq, item_len, me.item_domain[target], train=True)
    pools = [(np.setdiff1d(np.arange(1, n_a + 1), s), np.setdiff1d(np.arange(n_a + 1, n_a + n_b + 1), s))
             for s in raws]                              # the official loader excludes the user's items
    gt_neg = torch.as_tensor(np.stack([np.concatenate([rng.choice(pools[u][0], 5, replace=False),
                                                       rng.choice(pools[u][1], 5, replace=False)])
                                       for u in range(len(raws)) for _ in range(W)])).view(len(raws), W, 10)
    rows = []
    for hd, out in zip(plan.head, outs):
        g = W - item_len[hd.user] + hd.src % L
        assert torch.allclose(h_off[hd.user, g], out, atol=1e-4)
        rows.append(gt_neg[hd.user, g])
    la, lb = off.cal_rec_loss(h_off, gt, gt_neg, mk[3], mk[4])
    me.shared_negatives = False
    me.sampler.sample = lambda n, dev: torch.cat(rows)         # the official draws, per position
    me.epoch_trace()
    loss = me.calculate_loss(b)
    tr = me.epoch_trace()
    assert torch.allclose(la + lb, loss, atol=1e-4)
    assert tr['loss_a'] == pytest.approx(float(la), abs=1e-4) and tr['loss_b'] == pytest.approx(float(lb), abs=1e-4)
    # evaluation representations
    ev = [loader.process_evaluate(s, n_a, W) for s in raws]
    sx, sa, sb, gt = [torch.LongTensor(np.stack([t[i] for t in ev])) for i in range(4)]
    off.eval()
    me.eval()
    with torch.no_grad():
        h_off = off(sx, sa, sb, *masks(sx, sa, sb, gt))
        h_me = me.final_representation(eval_batch([torch.as_tensor(s) for s in raws], W, ds))
    assert torch.allclose(h_off, h_me, atol=1e-4)


@pytest.mark.parametrize('mode', ['occurrence', 'every'])
def test_chunked_evaluation_equals_one_pass(mode):
    g = build(cls=ABXI_GCA, randomize=True, gca_query_steps=mode).eval()
    ev = eval_batch(random_sequences(DS, 7, 10), 10, DS)
    with torch.no_grad():
        g.start_recording()
        full = g.full_sort_predict(ev)
        st_full = g.pop_stats()
        steps_full = g.pop_steps()
        g.eval_chunk_size = 3
        chunked = g.full_sort_predict(ev)
        st_chunk = g.pop_stats()
        steps_chunk = g.pop_steps()
    assert torch.allclose(full, chunked, atol=1e-5)
    assert set(st_full) == set(st_chunk)
    for k in st_full:
        assert torch.allclose(st_full[k], st_chunk[k], atol=1e-6, equal_nan=True)
    assert set(steps_full) == set(steps_chunk) == {f'ortho_cos_{d}@gca0' for d in 'ab'}
    for k, (v, u) in steps_full.items():            # the same steps, with users as batch rows
        vc, uc = steps_chunk[k]
        assert torch.equal(torch.sort(u).values, torch.sort(uc).values)
        for user in u.unique():
            assert torch.allclose(torch.sort(v[u == user]).values, torch.sort(vc[uc == user]).values,
                                  atol=1e-6, equal_nan=True)          # NaN: a query step without any key


def test_batch_with_a_single_domain():
    seqs = [torch.tensor([A1, A2, A3, A1]), torch.tensor([A2, A3])]
    for cls in (ABXI, ABXI_GCA):
        m = build(cls=cls)
        loss = m.calculate_loss(train_batch(seqs, 5))
        loss.backward()
        assert torch.isfinite(loss)
        m.eval()
        m.start_recording()
        with torch.no_grad():
            assert torch.isfinite(m.full_sort_predict(eval_batch(seqs, 5, DS))).all()


@pytest.mark.parametrize('cls,kw', [(ABXI, {}), (ABXI, {'official_quirks': True}), (ABXI, {'n_layers': 2}),
                                    (ABXI_GCA, {}), (ABXI_GCA, {'n_layers': 2, 'gca_positions': [1]}),
                                    (ABXI_GCA, {'gca_query_steps': 'every'})])
def test_evaluation_shortcut_equals_full_last_block(cls, kw, monkeypatch):
    m = build(cls=cls, randomize=True, **kw).eval()
    ev = eval_batch(random_sequences(DS, 6, 10), 10, DS)
    import recbole_ortho.model.cross_domain_sequential.abxi as abxi_module
    calls = []

    def counted(*a, **k):
        calls.append(kernels.projected_query_attention(*a, **k))
        return calls[-1]

    monkeypatch.setattr(abxi_module, 'projected_query_attention', counted)
    with torch.no_grad():
        fast = m.final_representation(ev)            # last block: only the rows the head reads
    assert calls and all(c is not None for c in calls)   # the unprojected path ran, not the fallback
    full = m.final_representation(ev).detach()       # with autograd on: every row
    assert torch.allclose(fast, full, atol=1e-5)
