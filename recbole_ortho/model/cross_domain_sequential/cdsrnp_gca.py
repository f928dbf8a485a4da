r"""
CDSRNP_GCA
################################################

CDSRNP with gated cross-attention (GCA) between its A-view and B-view encoders.

Reference:
    Hyunin Lee et al. "Cross-attention Secretly Performs Orthogonal Alignment in Recommendation
    Models." arXiv:2510.09435, 2025.

    Haipeng Li et al. "Cross-Domain Sequential Recommendation via Neural Process."
    arXiv:2410.13588, 2024 (no public code; CDSRNP here is a reconstruction, see its docstring).
"""

from recbole_ortho.model.cross_domain_sequential.cdsrnp import CDSRNP
from recbole_ortho.model.gca_wiring import GCAVariant


class CDSRNP_GCA(GCAVariant, CDSRNP):
    r"""CDSRNP + GCA between the A-view and B-view encoder states: at each stage of
    ``gca_positions`` (0 = after the embeddings, ``i`` = after block ``i``) the two views
    exchange information through two GCA layers, one per direction
    (:class:`~recbole_ortho.model.gca_wiring.GCAStages`, whose docstring defines the ``gca_*`` settings
    and the recorded orthogonality statistics).

    As in LLM4CDSR_GCA, a view has a row at each of its domain's items: a query at the step of an
    A item attends to the B view's rows at the B items that came *earlier* in the user's mixed
    sequence (causal in mixed time, never padding); the gate's second input is the B state at the
    latest B item before the query. A non-overlapped user (or a step before the user's first
    item of the other domain) has no key: ``X' = 0`` and GCA reduces to ``LN(X)``; those steps are
    left out of the orthogonality statistics and counted (``<stat>/no_key_steps``). The support
    users are encoded by the same encoders, GCA included (their rows are never recorded).
    Everything else is CDSRNP's; with GCA layers that return their input the model computes
    exactly CDSRNP.

    Extra parameters: ``2 * len(gca_positions) * (7 d^2 + 6 d [+ 2 d with LayerNorm])``.
    """

    #: the gca_* defaults come from properties/component/gca.yaml
    component_properties = ('gca',)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # define layers and loss (GCAStages reads and checks the gca_* settings; it initialises its layers)
        self.build_gca(config, self.hidden_size, self.n_layers, query_steps=('occurrence',),
                       layer_norm_eps=self.layer_norm_eps)
