"""Losses (recbole_ortho.model.loss) and training negatives (recbole_ortho.model.negatives)
against hand-computed values."""

import math

import pytest
import torch

from recbole_ortho.model.loss import (bce_sampled, domain_cross_entropy, gaussian_kl, info_nce, mean_per_user,
                                      per_domain_info_nce, symmetric_soft_contrastive)
from recbole_ortho.model.negatives import (DomainNegativeSampler, row_negative_logits, shared_negative_logits,
                                           user_items_sorted)

RANGES = {1: (1, 6), 0: (6, 11)}        # B ids 1..5, A ids 6..10


# ------------------------------------------------------------------ losses
def test_info_nce_hand_computed():
    pos = torch.tensor([0.0, 1.0])
    neg = torch.tensor([[0.0, 0.0, 0.0], [1.0, 3.0, 0.0]])
    invalid = torch.tensor([[False, False, False], [False, True, False]])
    nll = info_nce(pos, neg, invalid, temperature=1.0)
    # row 0: log 4 - 0; row 1 (the 3.0 masked): log(e + e + 1) - 1
    assert nll.tolist() == pytest.approx([math.log(4), math.log(2 * math.e + 1) - 1])
    # temperature 0.5 doubles every logit: row 0 is still log 4
    assert info_nce(pos, neg, None, 0.5)[0].item() == pytest.approx(math.log(4))


def test_mean_per_user_and_per_domain_info_nce():
    values = torch.tensor([1.0, 3.0, 5.0])
    user = torch.tensor([0, 0, 2])
    assert mean_per_user(values, user, batch_size=4).item() == pytest.approx((2.0 + 5.0) / 4)
    # two A rows of user 0, one B row of user 1, batch of 2: L_A = mean(log 2, log 3) / 2, L_B = log 2 / 2
    pos = torch.zeros(3)
    neg = torch.tensor([[0.0, -1e9], [0.0, 0.0], [0.0, -1e9]])
    la, lb = per_domain_info_nce(pos, neg, None, 1.0, [torch.tensor([0, 0]), torch.tensor([1])], 2)
    assert la.item() == pytest.approx((math.log(2) + math.log(3)) / 2 / 2)
    assert lb.item() == pytest.approx(math.log(2) / 2)


def test_bce_sampled_hand_computed():
    pos, neg = torch.tensor([0.0, 2.0]), torch.tensor([0.0, -1.0])
    expect = [2 * math.log(2), math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))]
    assert bce_sampled(pos, neg).tolist() == pytest.approx(expect)
    # several negatives per row are summed
    two = bce_sampled(pos, torch.tensor([[0.0, 0.0], [-1.0, -1.0]]))
    assert two.tolist() == pytest.approx([3 * math.log(2), math.log(1 + math.exp(-2)) + 2 * math.log(1 + math.exp(-1))])


def test_symmetric_soft_contrastive_hand_computed():
    # x = y = the unit vectors: logits = I, targets = softmax((I + I) / 2) = softmax(I) row-wise;
    # CE of each row = log(1 + e) - e / (1 + e), the same in both directions
    x = torch.eye(2)
    expect = math.log(1 + math.e) - math.e / (1 + math.e)
    assert symmetric_soft_contrastive(x, x.clone()).item() == pytest.approx(expect)
    # y = x with its rows swapped: logits = [[0, 1], [1, 0]], the same targets; CE = log(1 + e) - 1 / (1 + e)
    y = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert symmetric_soft_contrastive(x, y).item() == pytest.approx(math.log(1 + math.e) - 1 / (1 + math.e))
    # tau divides the logits and (as the official code) multiplies the target similarities:
    # logits I / tau, targets softmax(I * tau) with p = e^tau / (1 + e^tau): CE = log(1 + e^(1/tau)) - p / tau
    tau = 0.5
    p = math.exp(tau) / (1 + math.exp(tau))
    assert symmetric_soft_contrastive(x, x.clone(), tau=tau).item() == pytest.approx(
        math.log(1 + math.exp(1 / tau)) - p / tau)


def test_domain_cross_entropy_hand_computed_and_against_autograd():
    # items 0..4; domain block 1..3 (lo 1, hi 4); row 0 scores (0, 1, 2) on items 1, 2, 3, target item 2
    table = torch.tensor([[9.0, 9.0], [0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [9.0, 9.0]])
    out = torch.tensor([[1.0, 5.0]])
    ce = domain_cross_entropy(out, table, torch.tensor([2]), 1, 4)
    assert ce.item() == pytest.approx(math.log(1 + math.e + math.e ** 2) - 1.0)
    # random rows, float64: value and gradients (rows and the whole table) equal F.cross_entropy's
    g = torch.Generator().manual_seed(0)
    out = torch.randn(9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    table = torch.randn(12, 4, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(3, 10, (9,), generator=g)
    up = torch.rand(9, generator=g, dtype=torch.float64)
    ours = domain_cross_entropy(out, table, target, 3, 10)
    ref = torch.nn.functional.cross_entropy(out @ table[3:10].t(), target - 3, reduction='none')
    assert torch.allclose(ours, ref)
    for a, r in zip(torch.autograd.grad(ours, (out, table), up), torch.autograd.grad(ref, (out, table), up)):
        assert torch.allclose(a, r)
    assert domain_cross_entropy(out[:0], table, target[:0], 3, 10).shape == (0,)
    # under bf16 autocast: the logits of bf16 operands, as F.linear's there (fp32 loss, bf16 rounding apart)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        low = domain_cross_entropy(out.float(), table.float(), target, 3, 10)
        ref_low = torch.nn.functional.cross_entropy(torch.nn.functional.linear(out.float(), table[3:10].float()).float(),
                                                    target - 3, reduction='none')
    assert low.dtype == torch.float32 and torch.allclose(low, ref_low, atol=2e-2)


def test_gaussian_kl_hand_computed():
    one, zero = torch.ones(2, 3), torch.zeros(2, 3)
    assert torch.equal(gaussian_kl(zero, one, zero, one), torch.zeros(2))
    assert gaussian_kl(one, one, zero, one).tolist() == pytest.approx([1.5, 1.5])       # 3 dims x 1/2
    # sigma_q = 2, sigma_p = 1, same mean: log(1/2) + 4/2 - 1/2 per dim
    kl = gaussian_kl(zero[:1, :1], 2 * one[:1, :1], zero[:1, :1], one[:1, :1])
    assert kl.item() == pytest.approx(math.log(0.5) + 1.5)


# ------------------------------------------------------------------ negatives
def test_sampler_per_domain_blocks_and_exclusion():
    s = DomainNegativeSampler(RANGES, n_per_domain=4)
    torch.manual_seed(0)
    negs = s.sample(300, 'cpu')
    assert negs.shape == (300, 8)
    assert ((negs[:, :4] >= 6) & (negs[:, :4] < 11)).all() and ((negs[:, 4:] >= 1) & (negs[:, 4:] < 6)).all()
    assert set(negs[:, :4].unique().tolist()) == {6, 7, 8, 9, 10}         # the last id of a range is drawn
    own = user_items_sorted(torch.tensor([[7, 0, 2]]), torch.tensor([[9, 0, 0]]))
    assert own.tolist() == [[0, 0, 0, 2, 7, 9]]
    cand = torch.tensor([[7, 8, 8, 6, 2, 2, 3, 1]])
    #                     own  .  dup  .  own dup  .  .
    assert s.invalid(cand, own)[0].tolist() == [True, False, True, False, True, True, False, False]


def test_sampler_in_domain_and_the_official_extra_id():
    s = DomainNegativeSampler(RANGES, n_per_domain=1)
    torch.manual_seed(0)
    dom = torch.tensor([0, 1] * 500)
    negs = s.sample_in_domain(dom)
    assert negs.shape == (1000, 1)
    a, b = negs[dom == 0, 0], negs[dom == 1, 0]
    assert set(a.tolist()) == {6, 7, 8, 9, 10} and set(b.tolist()) == {1, 2, 3, 4, 5}
    own = torch.tensor([[0, 3]]).expand(2, 2).contiguous()
    assert s.invalid(torch.tensor([[3], [4]]), own, groups=1)[:, 0].tolist() == [True, False]
    # ABXI's official off-by-one: A's last id (10) is in B's pool and never excluded
    q = DomainNegativeSampler(RANGES, n_per_domain=6, extra_id={1: 10})
    negs = q.sample(500, 'cpu')[:, 6:]
    assert set(negs.unique().tolist()) == {1, 2, 3, 4, 5, 10}
    assert not q.invalid(torch.tensor([[10] * 12]), torch.tensor([[0, 10]]))[0, 6]


def test_negative_logits_equal_plain_products():
    g = torch.Generator().manual_seed(2)
    B, L, d = 3, 4, 5
    table = torch.randn(11, d, generator=g)
    src = torch.tensor([0, 2, 5, 6, 7, 11])                 # flat steps b * L + t
    out = torch.randn(src.numel(), d, generator=g)
    negs = torch.randint(1, 11, (B, 6), generator=g)
    got = shared_negative_logits(out, src, table, negs, B, L)
    user = src // L
    assert torch.allclose(got, (out[:, None, :] * table[negs[user]]).sum(-1), atol=1e-6)
    per_row = torch.randint(1, 11, (src.numel(), 6), generator=g)
    assert torch.allclose(row_negative_logits(out, table, per_row), (out[:, None, :] * table[per_row]).sum(-1), atol=1e-6)
