r"""
recbole_ortho.model.loss
########################

Losses of the cross-domain sequential models of this package (plain functions of tensors):

- :func:`info_nce` and :func:`per_domain_info_nce`: InfoNCE of a positive against sampled
  negatives, averaged per user within each target domain (ABXI);
- :func:`bce_sampled`: binary cross-entropy of a positive and sampled negatives (LLM4CDSR, SASRec);
- :func:`symmetric_soft_contrastive`: the symmetric contrastive loss with soft targets between
  two sets of embeddings (LLM4CDSR's ``L_reg`` and ``L_user``);
- :func:`domain_cross_entropy`: next-item cross-entropy over all items of one domain (C2DSR, CDSRNP);
- :func:`gaussian_kl`: :math:`\mathrm{KL}(q \| p)` of diagonal Gaussians (neural-process models).
"""

import torch
import torch.nn.functional as F

from recbole_ortho.model.kernels.amp import LOW_PRECISION
from recbole_ortho.model.kernels.linear_lse import linear_logsumexp


def info_nce(pos, neg, invalid, temperature):
    r"""Per-row InfoNCE :math:`-\log \frac{e^{s^+/\tau}}{e^{s^+/\tau} + \sum_k e^{s_k/\tau}}` of the
    positive logits ``pos [R]`` against ``neg [R, N]``; ``invalid [R, N]`` (or None) masks
    negatives out (logit -inf). Returns ``[R]``."""
    pos, neg = pos.float(), neg.float()                 # in fp32 under bf16 autocast (a no-op in fp32)
    if invalid is not None:
        neg = neg.masked_fill(invalid, float('-inf'))
    logits = torch.cat([pos[:, None], neg], dim=1) / temperature
    return torch.logsumexp(logits, dim=1) - logits[:, 0]


def mean_per_user(values, user, batch_size):
    """``sum_u mean_{rows of u} values / batch_size``: each user's rows averaged, then summed over
    users and divided by the batch size (a user without rows counts as 0)."""
    cnt = torch.bincount(user, minlength=batch_size).clamp_min(1).to(values.dtype)
    return (values / cnt[user]).sum() / batch_size


def per_domain_info_nce(pos, neg, invalid, temperature, users, batch_size):
    """InfoNCE per target domain: the rows are the targets of domain A, then of domain B
    (``users = [user_A [R_A], user_B [R_B]]``, the user of each row); the per-row losses
    (:func:`info_nce`) are averaged per user and domain (:func:`mean_per_user`). Returns
    ``[L_A, L_B]``."""
    nll = info_nce(pos, neg, invalid, temperature)
    return [mean_per_user(part, u, batch_size) for part, u in zip(nll.split([u.numel() for u in users]), users)]


def bce_sampled(pos, neg):
    """Per-row binary cross-entropy of the positive logits ``pos [R]`` (label 1) plus that of the
    negative logits ``neg [R]`` or ``[R, N]`` (label 0, summed over ``N``), as
    ``BCEWithLogitsLoss(reduction='none')`` on both. Returns ``[R]``."""
    pos, neg = pos.float(), neg.float()
    lp = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos), reduction='none')
    ln = F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg), reduction='none')
    return lp + (ln.sum(-1) if ln.dim() > 1 else ln)


def symmetric_soft_contrastive(x, y, tau=1.0):
    r"""Symmetric contrastive loss with soft targets between paired rows ``x [n, d]`` and
    ``y [n, d]`` (LLM4CDSR's ``Contrastive_Loss2``): logits :math:`S = x y^\top / \tau`, targets
    :math:`T = \mathrm{softmax}((y y^\top + x x^\top) / 2 \cdot \tau)` (row-wise; the official code
    multiplies by :math:`\tau` here, identical at its :math:`\tau = 1`), and the mean over rows of
    :math:`\frac12 (\mathrm{CE}(S, T) + \mathrm{CE}(S^\top, T^\top))` with
    :math:`\mathrm{CE}(P, T)_i = -\sum_j T_{ij} \log \mathrm{softmax}(P)_{ij}`."""
    logits = (x @ y.t()).float() / tau                  # products in bf16 under autocast, the rest in fp32
    targets = F.softmax(((y @ y.t()).float() + (x @ x.t()).float()) / 2 * tau, dim=-1)
    loss_x = -(targets * F.log_softmax(logits, dim=-1)).sum(1)
    loss_y = -(targets.t() * F.log_softmax(logits.t(), dim=-1)).sum(1)
    return ((loss_x + loss_y) / 2.0).mean()


def domain_cross_entropy(out, table, target, lo, hi):
    r"""Per-row cross-entropy of the rows ``out [R, d]`` over the items ``lo .. hi - 1`` of one
    domain (logits ``out @ table[lo:hi]^T``), the target ``target [R]`` being one of them:
    :math:`\log \sum_j e^{z_j} - z_{target}`. The log-sum-exp is
    :func:`~recbole_ortho.model.kernels.linear_lse.linear_logsumexp` (one ``[R, N]`` logit matrix,
    turned into the gradient in place: no log-softmax copy and no dense one-hot gradient, which
    ``F.cross_entropy`` builds), the target's logit a row-wise product. Under bf16 autocast both
    are formed from bf16 operands and rounded to bf16 as the logits of a bf16 product are. Returns
    ``[R]``."""
    lse = linear_logsumexp(out, table[lo:hi])
    tgt = table[target]
    if torch.is_autocast_enabled(out.device.type):
        z = (out.to(LOW_PRECISION).float() * tgt.to(LOW_PRECISION).float()).sum(-1).to(LOW_PRECISION).float()
    else:
        z = (out * tgt).sum(-1)
    return lse - z


def gaussian_kl(mu_q, sigma_q, mu_p, sigma_p):
    r""":math:`\mathrm{KL}(\mathcal N(\mu_q, \sigma_q^2) \,\|\, \mathcal N(\mu_p, \sigma_p^2))` of
    diagonal Gaussians, summed over the last dimension:
    :math:`\sum \log\frac{\sigma_p}{\sigma_q} + \frac{\sigma_q^2 + (\mu_q - \mu_p)^2}{2 \sigma_p^2} - \frac12`."""
    mu_q, sigma_q, mu_p, sigma_p = mu_q.float(), sigma_q.float(), mu_p.float(), sigma_p.float()
    var_q, var_p = sigma_q ** 2, sigma_p ** 2
    return (torch.log(sigma_p / sigma_q) + (var_q + (mu_q - mu_p) ** 2) / (2 * var_p) - 0.5).sum(-1)
