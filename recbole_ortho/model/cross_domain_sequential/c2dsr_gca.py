r"""
C2DSR_GCA
################################################

C2DSR with gated cross-attention (GCA) between its A and B encoders.

Reference:
    Hyunin Lee et al. "Cross-attention Secretly Performs Orthogonal Alignment in Recommendation
    Models." arXiv:2510.09435, 2025.

    Jiangxia Cao et al. "Contrastive Cross-Domain Sequential Recommendation." In CIKM 2022
    (https://github.com/cjx96/C2DSR).
"""

from recbole_ortho.model.cross_domain_sequential.c2dsr import C2DSR
from recbole_ortho.model.gca_wiring import GCAVariant


class C2DSR_GCA(GCAVariant, C2DSR):
    r"""C2DSR + GCA between the A and B encoder states: at each stage of ``gca_positions`` (0 = after the
    embeddings, ``i`` = after block ``i``) the two encoders exchange information through two GCA layers, one
    per direction (:class:`~recbole_ortho.model.gca_wiring.GCAStages`, whose docstring defines the ``gca_*`` settings
    and the recorded orthogonality statistics).

    The A encoder has a state at each A step of the window, B likewise: a query at an A step attends to the B
    states at the B steps that came *earlier* in the user's mixed sequence (causal in mixed time, never
    padding); the gate's second input is the B state at the latest B step before the query (0 before the
    user's first B item, where ``X' = 0`` and GCA reduces to ``LN(X)``). B likewise. The corrupted sequences of
    the infomax loss go through the mixed encoder only. Everything else is C2DSR's; with GCA layers that return
    their input the model computes exactly C2DSR.

    Extra parameters: ``2 * len(gca_positions) * (7 d^2 + 6 d [+ 2 d with LayerNorm])``.
    """

    #: the gca_* defaults come from properties/component/gca.yaml (C2DSR_GCA.yaml overrides some)
    component_properties = ('gca',)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.build_gca(config, self.hidden_size, self.n_layers, layer_norm_eps=config['layer_norm_eps'])
