"""CDSRNP and CDSRNP_GCA on hand-made data (no dataset layer): the support pool and the
evaluation support (seeded, training data only), the KL, the neural-process paths, no future leak,
GCA identity, absent states of non-overlapped users, parameter counts, settings."""

import ast
import math
from pathlib import Path


import numpy as np
import pytest
import torch

from conftest_models import (IDENTITY_GCA, FakeDataset, assert_identity_gca_is_base, eval_batch, make_config,
                             random_sequences, train_batch)
from recbole_ortho.data.support import support_pool
from recbole_ortho.model.cross_domain_sequential.cdsrnp import CDSRNP
from recbole_ortho.model.cross_domain_sequential.cdsrnp_gca import CDSRNP_GCA
from recbole_ortho.model.encoders import PackedSASRec, SASRecBlock
from recbole_ortho.model.gca import GatedCrossAttention
from recbole_ortho.model.loss import gaussian_kl
from recbole_ortho.utils.errors import ConfigError, DataError
from recbole_ortho.utils.param_match import count_parameters

D = 16
SMALL = dict(hidden_size=D, inner_size=D, n_heads=2, support_size=6, eval_support_size=5, latent_size=4,
             MAX_ITEM_LIST_LENGTH=12)


class SeqDataset(FakeDataset):
    """:class:`FakeDataset` with the sequence arrays of :class:`~recbole_ortho.data.dataset.SeqData`
    (each user's *whole* sequence, validation and test targets included), as the support pool reads them."""

    def __init__(self, seqs, **kw):
        super().__init__(n_users=len(seqs), **kw)
        self.seqs = [torch.as_tensor(s) for s in seqs]
        lens = [len(s) for s in self.seqs]
        self.seq_items = torch.cat(self.seqs).numpy()
        self.seq_offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        self.eval_users = np.array([u for u, n in enumerate(lens) if n >= 3], dtype=np.int64)


def make_dataset(n_users=40, max_len=14, seed=0):
    base = FakeDataset()
    seqs = random_sequences(base, n_users, max_len, min_len=4, generator=torch.Generator().manual_seed(seed))
    return SeqDataset(seqs)


def build(cls=CDSRNP, seed=0, ds=None, **kw):
    ds = ds or make_dataset()
    torch.manual_seed(seed)
    return cls(make_config(cls.__name__, **dict(SMALL, **kw)), ds), ds


def batches(ds, n=12, width=12, seed=1):
    seqs = random_sequences(ds, n, width, min_len=3, generator=torch.Generator().manual_seed(seed))
    tr = train_batch(seqs, width)
    tr['user_id'] = torch.arange(n)
    return seqs, tr, eval_batch(seqs, width, ds)


# ------------------------------------------------------------------ KL
def test_gaussian_kl_identical_is_zero_and_known_matches_closed_form():
    mu, sigma = torch.tensor([0.3, -1.2, 2.0]), torch.tensor([0.5, 1.0, 2.0])
    assert gaussian_kl(mu, sigma, mu, sigma).item() == pytest.approx(0.0, abs=1e-7)
    # KL(N(1, 0.5^2) || N(0, 1)) = log(1/0.5) + (0.25 + 1) / 2 - 1/2 = 0.818147...
    # KL(N(0, 2^2) || N(1, 1)) = log(1/2) + (4 + 1) / 2 - 1/2 = 1.306853...
    kl = gaussian_kl(torch.tensor([1.0, 0.0]), torch.tensor([0.5, 2.0]), torch.tensor([0.0, 1.0]),
                     torch.tensor([1.0, 1.0]))
    assert kl.item() == pytest.approx((math.log(2) + 0.625 - 0.5) + (math.log(0.5) + 2.5 - 0.5), rel=1e-6)
    assert kl.item() == pytest.approx(0.818147 + 1.306853, abs=1e-5)


# ------------------------------------------------------------------ support pool
def test_support_pool_is_training_data_only_by_hand():
    # items: B = 1..40, A = 41..70 (FakeDataset); A items a1=41, a2=42, ...; B items b1=1, ...
    a = lambda k: 40 + k          # noqa: E731
    b = lambda k: k               # noqa: E731
    seqs = [[a(1), b(1), a(2), b(2), a(3), b(3)],     # train part a1 b1 a2 b2: history a1 b1 a2, target b2
            [a(1), a(2), a(3), b(1), b(2)],           # train part a1 a2 a3: history a1 a2 (no B) -> out
            [b(1), a(1), b(2)],                       # train part b1: too short -> out
            [b(5), a(5), b(6), a(6), b(7), a(7), b(8), b(9)]]   # history b5 a5 b6 a6 b7 (cut to 3: a6 b7 ... )
    ds = SeqDataset(seqs)
    pool = support_pool(ds, max_len=3)
    assert pool.users.tolist() == [0, 3]
    assert pool.item_seq.tolist() == [[a(1), b(1), a(2)], [b(6), a(6), b(7)]]
    assert pool.item_len.tolist() == [3, 3] and pool.target.tolist() == [b(2), a(7)]
    held_out = {(u, p) for u, s in enumerate(seqs) for p in (len(s) - 2, len(s) - 1)}     # validation, test
    for u, start, n in zip(pool.users, pool.start, pool.item_len):
        used = {(int(u), int(start - ds.seq_offsets[u] + j)) for j in range(int(n) + 1)}    # history + target
        assert not used & held_out
    # a history cut to max_len that loses one domain is not eligible
    assert support_pool(SeqDataset([[a(1), b(1), b(2), b(3), b(4), a(9)]]), max_len=2).users.tolist() == []


def test_evaluation_support_is_seeded_and_never_holds_held_out_items():
    ds = make_dataset()
    m1, _ = build(ds=ds, seed=1)
    m2, _ = build(ds=ds, seed=2)                                     # another model seed: same support
    m3, _ = build(ds=ds, eval_seed=7)
    assert torch.equal(m1.eval_support_idx, m2.eval_support_idx)
    assert not torch.equal(m1.eval_support_idx, m3.eval_support_idx)
    assert m1.eval_support_idx.numel() == SMALL['eval_support_size']
    for i in m1.eval_support_idx.tolist():
        u = int(m1.support_users[i])
        full = ds.seqs[u]
        n = int(m1.support_item_len[i])
        train_part = full[:-2]
        assert torch.equal(m1.support_item_seq[i, :n], train_part[-1 - n:-1])       # history: training part
        assert int(m1.support_target[i]) == int(train_part[-1])                    # its last training item
    m1.eval()
    _, _, ev = batches(ds)
    with torch.no_grad():
        s1 = m1.full_sort_predict(ev)
        m1.train()
        m1.eval()
        assert torch.equal(s1, m1.full_sort_predict(ev))                           # reproducible evaluation



def test_cached_evaluation_support_follows_loaded_weights():
    """The evaluation support is encoded once per pass and cached; weights loaded in evaluation mode
    (as the trainer loads the best epoch before testing) are used, never a stale encoding."""
    ds = make_dataset()
    m1, _ = build(ds=ds, seed=1)
    m2, _ = build(ds=ds, seed=2)
    for m in (m1, m2):                                   # FiLM starts at zero: make the support context matter
        torch.nn.init.normal_(m.film.weight, std=0.5)
    _, _, ev = batches(ds)
    m1.eval(), m2.eval()
    with torch.no_grad():
        s2 = m2.full_sort_predict(ev)
        m1.full_sort_predict(ev)                                                   # caches m1's support
        m1.load_state_dict(m2.state_dict())
        assert torch.allclose(m1.full_sort_predict(ev), s2, atol=1e-6)

def test_training_support_excludes_the_batch_users():
    model, ds = build(support_size=10)
    users = model.support_users[:15].clone()
    for _ in range(20):
        idx = model.sample_support(users)
        assert idx.numel() == 10 and not torch.isin(model.support_users[idx], users).any()
        assert idx.unique().numel() == idx.numel()


def test_no_overlapped_user_is_a_clear_error():
    seqs = [[41, 42, 43, 44, 45], [1, 2, 3, 4, 5]]                  # one A-only, one B-only user
    with pytest.raises(DataError, match='support set'):
        build(ds=SeqDataset(seqs))


# ------------------------------------------------------------------ model behaviour
@pytest.mark.parametrize('kw', [{}, {'ce_negatives': 7}, {'latent_path': False}, {'deterministic_path': False},
                                {'latent_path': False, 'deterministic_path': False}])
def test_training_step_reaches_every_parameter(kw):
    model, ds = build(**kw)
    if model.film is not None:            # FiLM starts at 0 (no gradient reaches its inputs): open it
        torch.nn.init.normal_(model.film.weight, std=0.1)
    _, tr, ev = batches(ds)
    loss = model.calculate_loss(tr)
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    trace = model.epoch_trace()
    assert set(trace) >= {'loss_a', 'loss_b'}
    assert ('kl' in trace) == model.latent_path
    model.eval()
    with torch.no_grad():
        scores = model.full_sort_predict(ev)
    assert scores.shape == (len(ev['item_id']), ds.n_items) and torch.isfinite(scores).all()


def test_kl_warmup_schedule():
    model, _ = build(kl_weight=2.0, kl_warmup_epochs=4)
    got = []
    for e in range(6):
        model.start_epoch(e)
        got.append(model.kl_beta())
    assert got == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    model, _ = build(kl_weight=0.3, kl_warmup_epochs=0)
    assert model.kl_beta() == pytest.approx(0.3)


def test_posterior_in_training_prior_mean_in_evaluation():
    model, ds = build(deterministic_path=False)
    a, b, y = torch.randn(5, D), torch.randn(5, D), torch.tensor([1, 2, 41, 42, 3])
    ctx = model.support_context(torch.randn(4, D), torch.randn(4, D), torch.tensor([4, 43, 5, 44]))
    film, kl = model.condition(a, b, ctx)                        # evaluation: z = prior mean, no KL
    assert kl is None and torch.allclose(film, ctx.mu.expand(5, -1))
    torch.manual_seed(0)
    film_q, kl_q = model.condition(a, b, ctx, y=y)               # training: z ~ q(z | S u Q)
    r_q = model.latent_encoder(torch.cat([a, b, model.item_embedding(y)], dim=1))
    mu_q, sigma_q = model._latent((ctx.r.sum(0) + r_q.sum(0)) / 9)
    torch.manual_seed(0)
    z = mu_q + sigma_q * torch.randn_like(sigma_q)
    assert torch.allclose(film_q[0], z) and (film_q == film_q[0]).all()        # one z per batch
    assert kl_q.item() == pytest.approx(gaussian_kl(mu_q, sigma_q, ctx.mu, ctx.sigma).item(), rel=1e-6)
    assert (ctx.sigma >= 0.1).all() and (ctx.sigma <= 0.1 + 0.9 * 50).all()


def test_deterministic_path_attends_over_support_pairs_by_hand():
    model, _ = build(latent_path=False, n_heads=1)
    a, b = torch.randn(3, D), torch.randn(3, D)
    sa, sb, sy = torch.randn(4, D), torch.randn(4, D), torch.tensor([1, 41, 2, 42])
    ctx = model.support_context(sa, sb, sy)
    got = model._deterministic(a, b, ctx)
    q = model.det_query(model.pair_encoder(torch.cat([a, b], 1)))
    k = model.det_key(model.pair_encoder(torch.cat([sa, sb], 1)))
    v = model.det_value(model.det_encoder(torch.cat([sa, sb, model.item_embedding(sy)], 1)))
    want = model.det_out(torch.softmax(q @ k.t() / math.sqrt(D), -1) @ v)
    assert torch.allclose(got, want, atol=1e-6)


def _position_outputs(model, seq, lens, tdom):
    """Training-layout head outputs of every step (evaluation mode: no dropout; z = the prior mean of
    the evaluation support), as a dict ``flat step -> [d]``."""
    plan = model.layout(seq, lens, tdom, train=True)
    out, _, _ = model.head(model.encode(plan), plan, model.eval_support())
    src = torch.cat([hd.src for hd in plan.head])
    return {int(s): o for s, o in zip(src, out)}


@pytest.mark.parametrize('cls,kw', [(CDSRNP, {}), (CDSRNP_GCA, {'gca_positions': [0, 1, 2]})])
def test_no_future_leak(cls, kw):
    """Changing the item at step t (for one of the same domain, so every step's target domain
    stays) changes no output at a step < t - 1 (the output at t - 1 predicts the item at t)."""
    model, ds = build(cls, **kw)
    model.eval()
    seqs, tr, _ = batches(ds)
    item_seq, item_len, L = model.trim_batch(tr)
    target = tr['target_id_list'][:, :L]
    t = 6
    changed = item_seq.clone()
    same_dom = torch.where(model.item_domain[item_seq[:, t]] == 0, ds.domain_range[0][0] + 1, ds.domain_range[1][0] + 1)
    changed[:, t] = torch.where(item_len > t, same_dom, changed[:, t])
    ctarget = target.clone()
    ctarget[:, t - 1] = torch.where(item_len > t, same_dom, ctarget[:, t - 1])
    assert (item_len > t).any() and (changed != item_seq).any()
    with torch.no_grad():
        o1 = _position_outputs(model, item_seq, item_len, model.item_domain[target])
        o2 = _position_outputs(model, changed, item_len, model.item_domain[ctarget])
    assert o1.keys() == o2.keys()
    early = [s for s in o1 if s % L < t]
    late = [s for s in o1 if s % L >= t and (changed != item_seq).view(-1)[s - s % L + t]]
    assert all(torch.allclose(o1[s], o2[s], atol=1e-5) for s in early)
    assert any(not torch.allclose(o1[s], o2[s], atol=1e-5) for s in late)


def test_gca_identity_layers_compute_cdsrnp():
    """CDSRNP_GCA whose GCA layers return their input (scalar gate alpha = 0, no LayerNorm) has
    CDSRNP's scores and loss with the same weights."""
    base, ds = build(hidden_dropout_prob=0.0, attn_dropout_prob=0.0)
    gca, _ = build(CDSRNP_GCA, ds=ds, hidden_dropout_prob=0.0, attn_dropout_prob=0.0, gca_positions=[0, 1, 2],
                   **IDENTITY_GCA)
    _, tr, ev = batches(ds)
    assert_identity_gca_is_base(base, gca, tr, ev)


def test_non_overlapped_users_use_absent_states_and_gca_counts_their_steps():
    model, ds = build(CDSRNP_GCA)
    a_only = torch.tensor([41, 42, 43, 44, 45, 46])
    mixed = torch.tensor([41, 1, 42, 2, 43, 3])
    seqs = [a_only, mixed]
    tr = train_batch(seqs, 8)
    tr['user_id'] = torch.tensor([0, 1])
    loss = model.calculate_loss(tr)
    loss.backward()
    assert torch.isfinite(loss) and model.absent.grad[1].abs().sum() > 0        # B absent for the A-only user
    model.eval()
    ev = eval_batch(seqs, 8, ds)
    model.start_recording()
    with torch.no_grad():
        model.full_sort_predict(ev)
    steps = model.pop_steps()
    model.stop_recording()
    v, u = steps['ortho_cos_a@gca0']
    # user 0 (A only): 5 A queries, none with a key; user 1: history a1 b1 a2 b2 a3 -> a1 has no B key yet
    assert torch.isnan(v[u == 0]).all() and (u == 0).sum() == 5
    assert torch.isnan(v[u == 1]).sum() == 1 and (~torch.isnan(v[u == 1])).sum() == 2
    # the support users were encoded (GCA included) but not recorded: only the 2 evaluated users appear
    assert set(u.tolist()) <= {0, 1}


def test_parameter_counts():
    model, ds = build()
    d, inner, L, n_layers, dz = D, D, 12, 2, SMALL['latent_size']
    mlp = lambda n_in: n_in * d + d + d * d + d          # noqa: E731
    lin = lambda i, o: i * o + o                          # noqa: E731
    expect = (ds.n_items * d + 3 * (L + 1) * d + 3 * 2 * d                                   # tables, LNs
              + 3 * n_layers * (4 * d * d + 4 * d + 2 * d * inner + inner + d + 4 * d)       # encoders
              + 2 * d                                                                       # absent states
              + mlp(2 * d) + mlp(3 * d) + lin(d, 2 * dz) + mlp(3 * d) + 4 * lin(d, d)       # NP paths
              + lin(dz + d, 2 * d)                                                          # FiLM
              + 2 * lin(d, d) + lin(d, 2 * d) + lin(d, d) + 2 * 2 * d)                       # adaptive layer, LNs
    assert count_parameters(model) == expect
    assert PackedSASRec.num_parameters(3, d, inner, n_layers) == 3 * n_layers * SASRecBlock.num_parameters(d, inner)
    gca, _ = build(CDSRNP_GCA, ds=ds, gca_positions=[0, 2])
    assert count_parameters(gca) - expect == 4 * GatedCrossAttention.num_parameters(d, True, 'vector')


@pytest.mark.parametrize('kw,key', [(dict(support_size=0), 'support_size'), (dict(latent_path='yes'), 'latent_path'),
                                    (dict(kl_weight=-1), 'kl_weight'), (dict(ce_negatives=-3), 'ce_negatives'),
                                    (dict(n_heads=3), 'n_heads'), (dict(kl_warmup_epochs=1.5), 'kl_warmup_epochs')])
def test_bad_settings_name_the_key(kw, key):
    with pytest.raises(ConfigError, match=key):
        build(**kw)


def test_model_files_import_nothing_from_other_models():
    src = Path(__file__).resolve().parents[1] / 'recbole_ortho/model/cross_domain_sequential'
    for name in ('cdsrnp.py', 'cdsrnp_gca.py'):
        tree = ast.parse((src / name).read_text())
        mods = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not any(m and ('abxi' in m or 'llm4cdsr' in m) for m in mods), name





def test_a_pool_smaller_than_the_support_size_is_said(caplog):
    with caplog.at_level('WARNING'):
        model, _ = build(support_size=1000, eval_support_size=500)
    assert 'fewer than support_size=1000' in caplog.text
    assert model.eval_support_idx.numel() == model.support_users.numel() < 500
