"""Custom autograd kernels of recbole_ortho (each tested against plain autograd in
``tests/test_kernels.py``): the plain modules of :mod:`recbole_ortho.model.layers` and the GCA layer
call them; models normally use those modules, not the kernels."""

from recbole_ortho.model.kernels.attention import (AttentionChunk, PackedAttention, attention_chunks, grid_row_bytes,
                                                   packed_attention, projected_query_attention,
                                                   sequence_ranks)
from recbole_ortho.model.kernels.dropout import DropoutFunction, keep_mask
from recbole_ortho.model.kernels.gather import GatheredLogits, TakeRows, gathered_logits, take_rows
from recbole_ortho.model.kernels.gelu import GELUFunction, gelu
from recbole_ortho.model.kernels.pair_projection import PairProjection
from recbole_ortho.model.kernels.swiglu import SwiGLUFunction

__all__ = ['AttentionChunk', 'PackedAttention', 'attention_chunks', 'grid_row_bytes', 'packed_attention',
           'projected_query_attention', 'sequence_ranks',
           'DropoutFunction', 'keep_mask', 'GatheredLogits', 'TakeRows', 'gathered_logits', 'take_rows',
           'GELUFunction', 'gelu', 'PairProjection', 'SwiGLUFunction']
