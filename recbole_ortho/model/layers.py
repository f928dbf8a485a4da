"""
recbole_ortho.model.layers
##########################

Plain building blocks shared by the models of this package (their fast kernels live in
:mod:`recbole_ortho.model.kernels`; the GCA layer in :mod:`recbole_ortho.model.gca`):

- :class:`Dropout`: ``nn.Dropout`` with a cheaper mask (random 16-bit integers, a 1-byte mask
  kept for backward and applied as a multiplication; CPU ``bernoulli_`` / ``masked_fill`` are
  several times slower),
- :class:`LowRankAdapter`: a LoRA-style low-rank linear map ``x -> x (A B)^T`` (no frozen base),
- :class:`SwiGLU`: the bias-free SwiGLU feed-forward network (fused; its backward recomputes the
  hidden pre-activations instead of storing them),
- :class:`MultiHeadAttention`, :func:`masked_attention` and :func:`causal_key_mask`: multi-head
  (self- or cross-) attention with a boolean "may attend" mask, safe for queries that have no
  key at all (on packed rows: :func:`recbole_ortho.model.kernels.packed_attention`).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_ortho.model.kernels import DropoutFunction, SwiGLUFunction


class LayerNorm(nn.LayerNorm):
    """:class:`torch.nn.LayerNorm` that normalises in fp32 under bf16 autocast (CPU autocast would
    run it in its input's dtype); its output is fp32 then. The same module (parameters, state dict)
    and, in fp32, the same result."""

    def forward(self, x):
        if x.dtype in (torch.bfloat16, torch.float16):
            return F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps)
        return super().forward(x)


class Dropout(nn.Module):
    """Drop-in for :class:`torch.nn.Dropout`: in training each element is zeroed with
    probability ``p`` (quantised to a multiple of ``2^-16``; exact for 0.5) and the rest scaled
    by ``1 / (1 - p)``; identity in evaluation. The mask comes from random 16-bit integers and
    is kept as a bool tensor for backward (CPU ``bernoulli_`` costs ~4x more)."""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f'dropout probability has to be between 0 and 1, but got {p}')
        self.p = float(p)

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * 0.0
        return DropoutFunction.apply(x, self.p)

    def extra_repr(self):
        return f'p={self.p}'


class LowRankAdapter(nn.Module):
    r"""Low-rank linear map :math:`\Delta(x) = x\,(A B)^\top` with :math:`A \in R^{d \times r}`,
    :math:`B \in R^{r \times d}` (a LoRA branch without a frozen base weight; ABXI's dLoRA / iLoRA).

    ``A`` starts as :math:`\mathcal N(0, 0.02^2)` and ``B`` as zeros, so the branch starts at 0.
    Computed as two thin matmuls, never forming the ``d x d`` product. Parameters: ``2 d r``.
    """

    def __init__(self, d_model, rank):
        super().__init__()
        self.weight_a = nn.Parameter(torch.empty(d_model, rank))
        self.weight_b = nn.Parameter(torch.empty(rank, d_model))
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.normal_(self.weight_a, mean=0.0, std=0.02)
        nn.init.zeros_(self.weight_b)

    def forward(self, x):
        return F.linear(F.linear(x, self.weight_b), self.weight_a)


class SwiGLU(nn.Module):
    r"""Bias-free SwiGLU feed-forward network :math:`W_o\,(\mathrm{SiLU}(W_g x) \odot W_u x)`,
    ``d -> hidden -> d``. ``W_u`` and ``W_g`` are stored as one ``Linear(d, 2 hidden)`` (one GEMM).
    Parameters: ``3 d hidden``. In training only ``x`` is kept for backward.
    """

    def __init__(self, d_model, hidden):
        super().__init__()
        self.hidden = hidden
        self.fc_in = nn.Linear(d_model, 2 * hidden, bias=False)   # [W_u; W_g]
        self.fc_out = nn.Linear(hidden, d_model, bias=False)
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.normal_(self.fc_in.weight, mean=0.0, std=0.02)
        nn.init.normal_(self.fc_out.weight, mean=0.0, std=0.02)

    def forward(self, x):
        if torch.is_grad_enabled() and (x.requires_grad or self.fc_in.weight.requires_grad):
            shape = x.shape
            chunk = max(256, (1 << 23) // (4 * 2 * self.hidden))          # ~8 MB of pre-activations
            y = SwiGLUFunction.apply(x.reshape(-1, shape[-1]), self.fc_in.weight, self.fc_out.weight, chunk)
            return y.view(*shape[:-1], y.size(-1))
        up, gate = self.fc_in(x).chunk(2, dim=-1)
        return self.fc_out(F.silu(gate).mul_(up))


def causal_key_mask(key_mask, n_query=None):
    """``allowed[b, q, k] = key_mask[b, k] and k <= q``: a boolean ``[B, Lq, Lk]`` mask for
    step-aligned sequences (query step ``q`` may attend to key steps ``<= q`` that are not padding)."""
    B, Lk = key_mask.shape
    Lq = Lk if n_query is None else n_query
    ar_q = torch.arange(Lq, device=key_mask.device)
    ar_k = torch.arange(Lk, device=key_mask.device)
    causal = ar_k[None, :] <= ar_q[:, None]
    return key_mask[:, None, :] & causal[None, :, :]


def masked_attention(q, k, v, allowed, zero_empty=True):
    """Scaled dot-product attention of ``q [B, H, Lq, dh]`` over ``k, v [B, H, Lk, dh]`` where
    ``allowed [B, Lq, Lk]`` (or ``[B, 1, Lq, Lk]``) is True for the keys a query may attend to.

    Returns ``(out [B, H, Lq, dh], has_key [B, Lq])``. A query without any allowed key gets an
    all-zero output (never NaN): its mask row is opened before the softmax and its output zeroed
    (``zero_empty=False``: left as is, for callers that zero those rows themselves).
    """
    if allowed.dim() == 3:
        allowed = allowed.unsqueeze(1)
    has_key = allowed.any(-1)                                  # [B, 1, Lq]
    safe = allowed | ~has_key.unsqueeze(-1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe)
    if zero_empty:
        out = out * has_key.unsqueeze(-1).to(out.dtype)
    return out, has_key.squeeze(1)


class MultiHeadAttention(nn.Module):
    r"""Multi-head attention with a packed input projection ``in_proj: d -> 3d`` (query, key, value,
    with biases) and an output projection ``out_proj: d -> d`` (with bias), as
    :class:`torch.nn.MultiheadAttention`; the mask is boolean (True = may attend), no attention
    dropout. Parameters: ``4 d^2 + 4 d``.

    Initialisation: ``in_proj`` Xavier-uniform over the packed ``[3d, d]`` matrix and zero bias
    (torch's default for ``nn.MultiheadAttention``), ``out_proj`` :math:`\mathcal N(0, 0.02^2)`
    and zero bias.
    """

    def __init__(self, d_model, n_heads):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f'n_heads ({n_heads}) must divide the hidden size ({d_model})')
        self.d_model, self.n_heads = d_model, n_heads
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.xavier_uniform_(self.in_proj.weight)
        nn.init.zeros_(self.in_proj.bias)
        nn.init.normal_(self.out_proj.weight, mean=0.0, std=0.02)
        nn.init.zeros_(self.out_proj.bias)

    def split_heads(self, x):
        """``[B, L, d] -> [B, H, L, d / H]``."""
        B, L, _ = x.shape
        return x.view(B, L, self.n_heads, -1).transpose(1, 2)

    def forward(self, x_q, x_kv=None, allowed=None):
        """``x_q [B, Lq, d]`` attends to ``x_kv [B, Lk, d]`` (``x_q`` itself when None) under
        ``allowed [B, Lq, Lk]`` (None = everything). Returns ``(out [B, Lq, d], has_key [B, Lq])``;
        the output of a query without any allowed key is exactly 0 (the output bias included)."""
        d = self.d_model
        w, b = self.in_proj.weight, self.in_proj.bias
        if x_kv is None:
            q, k, v = F.linear(x_q, w, b).split(d, dim=-1)
        else:
            q = F.linear(x_q, w[:d], b[:d])
            k, v = F.linear(x_kv, w[d:], b[d:]).split(d, dim=-1)
        if allowed is None:
            allowed = torch.ones(x_q.size(0), x_q.size(1), k.size(1), dtype=torch.bool, device=x_q.device)
        out, has_key = masked_attention(self.split_heads(q), self.split_heads(k), self.split_heads(v), allowed)
        out = self.out_proj(out.transpose(1, 2).reshape(x_q.shape))
        return out * has_key.unsqueeze(-1).to(out.dtype), has_key      # no key -> exactly 0
