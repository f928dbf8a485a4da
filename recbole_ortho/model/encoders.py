r"""
recbole_ortho.model.encoders
############################

Sequence encoders that run on the packed rows of a
:class:`~recbole_ortho.model.layout.PackedLayout` (one row per step that has a state, no padding).

- :class:`PackedSASRec`: one SASRec encoder per thread of the layout (e.g. the mixed, A and B
  views), each with its own weights, all computed together: the blocks of RecBole's
  ``TransformerEncoder`` (post-LayerNorm multi-head self-attention and a GELU feed-forward
  network, dropout on the attention probabilities and after each sub-layer), causal, each thread's
  rows attending only to the rows the layout allows. The attention of all threads is one
  :func:`~recbole_ortho.model.kernels.packed_attention` call per block, and a model's
  domain-interaction hook (:meth:`~recbole_ortho.model.abstract_recommender.CrossDomainSeqRecommender.interact`)
  may act between the blocks.
"""

import torch
import torch.nn as nn

from recbole_ortho.model.kernels import gelu, packed_attention
from recbole_ortho.model.layers import Dropout, LayerNorm, MultiHeadAttention


class SASRecBlock(nn.Module):
    r"""The weights of one block of RecBole's ``TransformerEncoder`` for one thread:
    ``h = LN_1(h + Drop(MHA(h)));  h = LN_2(h + Drop(W_2\,GELU(W_1 h + b_1) + b_2))``
    (``d -> inner_size -> d``). Parameters: ``4 d^2 + 4 d`` (attention) ``+ 2 d\,inner + inner + d``
    (FFN) ``+ 4 d`` (two LayerNorms)."""

    def __init__(self, d_model, n_heads, inner_size, layer_norm_eps):
        super().__init__()
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.norm_attn = LayerNorm(d_model, eps=layer_norm_eps)
        self.ffn_in = nn.Linear(d_model, inner_size)
        self.ffn_out = nn.Linear(inner_size, d_model)
        self.norm_ffn = LayerNorm(d_model, eps=layer_norm_eps)

    @staticmethod
    def num_parameters(d_model, inner_size):
        """``4 d^2 + 4 d + 2 d inner + inner + d + 4 d``."""
        return 4 * d_model * d_model + 4 * d_model + 2 * d_model * inner_size + inner_size + d_model + 4 * d_model


class PackedSASRec(nn.Module):
    r"""``n_threads`` SASRec encoders (``n_layers`` :class:`SASRecBlock` each, own weights per
    thread) over the packed rows of a :class:`~recbole_ortho.model.layout.PackedLayout`, whose
    ``seg`` gives each thread's rows (in thread order) and whose ``chunks`` / ``allowed`` say who
    attends to whom.

    Args:
        n_threads: number of threads (``len(layout.seg)``).
        d_model, n_heads, inner_size, n_layers: sizes.
        hidden_dropout: dropout after the attention and the FFN (``hidden_dropout_prob``).
        attn_dropout: dropout on the attention probabilities (``attn_dropout_prob``).
        layer_norm_eps: epsilon of the LayerNorms.

    :meth:`forward` takes the input rows (after the embeddings) and a hook ``interact(stage, h)``
    called after block ``i`` with ``stage = i`` (1-based); stage 0, after the embeddings, is the
    caller's. Initialisation: :meth:`reset_parameters` (RecBole's: normal(0, 0.02) weights, zero
    biases, LayerNorms 1 / 0).
    """

    def __init__(self, n_threads, d_model, n_heads, inner_size, n_layers, hidden_dropout, attn_dropout,
                 layer_norm_eps):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f'n_heads ({n_heads}) must divide the hidden size ({d_model})')
        self.n_threads, self.d_model, self.n_heads, self.n_layers = n_threads, d_model, n_heads, n_layers
        self.attn_dropout = float(attn_dropout)
        self.dropout = Dropout(hidden_dropout)
        self.blocks = nn.ModuleList([
            nn.ModuleList([SASRecBlock(d_model, n_heads, inner_size, layer_norm_eps) for _ in range(n_threads)])
            for _ in range(n_layers)])
        self.reset_parameters()

    def reset_parameters(self, std=0.02):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=std)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def num_parameters(n_threads, d_model, inner_size, n_layers):
        return n_threads * n_layers * SASRecBlock.num_parameters(d_model, inner_size)

    def forward(self, h, plan, interact=None):
        """Rows ``h [R, d]`` (thread segments ``plan.seg``) -> the rows after every block; with
        ``interact``, ``h = interact(i, h)`` after block ``i``."""
        p_att = self.attn_dropout if self.training else 0.0
        for i, blocks in enumerate(self.blocks):
            hs = h.split(plan.seg)
            qkv = torch.cat([blk.attn.in_proj(x) for blk, x in zip(blocks, hs)])
            att = packed_attention(qkv, None, plan.chunks, plan.allowed, self.n_heads,
                                   dropout_p=p_att).split(plan.seg)
            out = []
            for blk, x, a in zip(blocks, hs, att):
                x = blk.norm_attn(x + self.dropout(blk.attn.out_proj(a)))
                out.append(blk.norm_ffn(x + self.dropout(blk.ffn_out(gelu(blk.ffn_in(x))))))
            h = torch.cat(out)
            if interact is not None:
                h = interact(i + 1, h)
        return h
