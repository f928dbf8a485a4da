"""
recbole_ortho.model.negatives
#############################

Training negatives of the cross-domain sequential models, drawn on the device:

- :class:`DomainNegativeSampler`: uniform draws from each domain's item-id range, ``k`` per
  domain for every target (ABXI: 128 from A *and* 128 from B) or ``k`` from a given domain per
  row (LLM4CDSR-style BCE: one from the target's domain), with the exclusion mask of draws that
  are one of the user's items or repeat an earlier draw (masked, not redrawn);
- :func:`user_items_sorted`: the sorted item ids of each user's row (what is excluded);
- :func:`shared_negative_logits` / :func:`row_negative_logits`: the logits of the draws against
  the output states, as matmuls that never hold the ``[rows, K, d]`` candidate embeddings.
"""

import torch

from recbole_ortho.model.kernels import gathered_logits, take_rows


def user_items_sorted(*item_tensors):
    """Sorted ``[B, M]`` item ids of each row of the ``[B, *]`` tensors (e.g. the input and the
    target sequence of a training row; padding 0 included, it is never drawn)."""
    return torch.cat(item_tensors, dim=1).sort(dim=1).values.contiguous()


class DomainNegativeSampler:
    """Uniform negatives per domain (with replacement) and their exclusion masks.

    Args:
        domain_range: ``{0: (lo, hi), 1: (lo, hi)}`` half-open item-id ranges of A and B.
        n_per_domain: ``k``, draws per domain (or per row with :meth:`sample_in_domain`).
        extra_id: ``{domain: item_id}``: one more id in a domain's pool that is never excluded
            (ABXI's official off-by-one puts A's last id into B's pool); None for exact pools.
    """

    def __init__(self, domain_range, n_per_domain, extra_id=None):
        self.ranges = [tuple(int(x) for x in domain_range[d]) for d in (0, 1)]
        self.k = int(n_per_domain)
        self.extra_id = dict(extra_id or {})

    def _draw(self, d, shape, device):
        lo, hi = self.ranges[d]
        if d not in self.extra_id:
            return torch.randint(lo, hi, shape, device=device)
        r = torch.randint(lo, hi + 1, shape, device=device)
        return torch.where(r == hi, torch.full_like(r, self.extra_id[d]), r)

    def sample(self, n, device):
        """``[n, 2k]``: ``k`` uniform draws from A's range, then ``k`` from B's."""
        return torch.cat([self._draw(d, (n, self.k), device) for d in (0, 1)], dim=1)

    def sample_in_domain(self, domains, device=None):
        """``[n, k]`` uniform draws, row ``i`` from the range of domain ``domains[i]`` (0 or 1)."""
        device = domains.device if device is None else device
        lo = torch.tensor([r[0] for r in self.ranges], device=device)[domains]
        size = torch.tensor([r[1] - r[0] for r in self.ranges], device=device)[domains]
        u = torch.rand(domains.numel(), self.k, device=device)
        return lo[:, None] + (u * size[:, None]).long().clamp_max(size[:, None] - 1)

    def invalid(self, negs, own_sorted, groups=2):
        """True for a draw that is one of the row's items (``own_sorted``: sorted ``[n, M]``, see
        :func:`user_items_sorted`) or repeats an earlier draw of its group (the columns are
        ``groups`` equal blocks, one per domain in :meth:`sample`'s layout; ``groups=1`` for
        :meth:`sample_in_domain`); those logits are masked to -inf. The ``extra_id`` of a pool is
        never marked."""
        M = own_sorted.size(1)
        i = torch.searchsorted(own_sorted, negs).clamp_max(M - 1)
        bad = own_sorted.gather(1, i) == negs
        for never in self.extra_id.values():
            bad &= negs != never
        k = negs.size(1) // groups
        dup = torch.zeros_like(bad)
        for s in (slice(g * k, (g + 1) * k) for g in range(groups)):
            srt, order = negs[:, s].sort(dim=1)
            d_s = torch.zeros_like(srt, dtype=torch.bool)
            d_s[:, 1:] = srt[:, 1:] == srt[:, :-1]
            dup[:, s] = torch.zeros_like(d_s).scatter(1, order, d_s)
        return bad | dup


def shared_negative_logits(out, src, table, negs, batch_size, length):
    """Logits ``[R, N]`` of the output rows ``out [R, d]`` at flat steps ``src [R]`` (``b * L + t``,
    distinct) against their user's draws ``negs [B, N]`` (one draw per user, shared by its
    positions): one batched matmul ``[B, L, d] x [B, d, N]`` over a zero-filled grid, computed in
    chunks (:func:`~recbole_ortho.model.kernels.gathered_logits`)."""
    d = out.size(1)
    grid = out.new_zeros(batch_size * length, d).index_copy(0, src, out).view(batch_size, length, d)
    return take_rows(gathered_logits(grid, table, negs).view(batch_size * length, -1), src)


def row_negative_logits(out, table, negs):
    """Logits ``[R, N]`` of the rows ``out [R, d]`` against their own draws ``negs [R, N]``."""
    return gathered_logits(out[:, None, :], table, negs).squeeze(1)
