r"""
ABXI_GCA
################################################

ABXI with gated cross-attention (GCA) between its two domain inputs.

Reference:
    Hyunin Lee et al. "Cross-attention Secretly Performs Orthogonal Alignment in Recommendation
    Models." arXiv:2510.09435, 2025.

    Qingtian Bian et al. "ABXI: Invariant Interest Adaptation for Task-Guided Cross-Domain
    Sequential Recommendation." In WWW 2025 (https://github.com/DiMarzioBian/ABXI).
"""

from recbole_ortho.model.cross_domain_sequential.abxi import ABXI
from recbole_ortho.model.gca_wiring import GCAVariant


class ABXI_GCA(GCAVariant, ABXI):
    r"""ABXI + GCA between its A and B inputs: at each stage of ``gca_positions`` (0 = after the
    embeddings, ``i`` = after encoder block ``i``) the A and B states exchange information
    through two GCA layers, one per direction (:class:`~recbole_ortho.model.gca_wiring.GCAStages`, whose
    docstring defines the ``gca_*`` settings and the recorded orthogonality statistics).
    Everything else is ABXI's: ABXI's
    :meth:`~recbole_ortho.model.abstract_recommender.CrossDomainSeqRecommender.domain_interaction`
    hook is the only change (:class:`~recbole_ortho.model.gca_wiring.GCAVariant`).

    ``gca_query_steps``: ``occurrence`` (default) keeps ABXI's layout exactly, the A input having
    rows only at the steps where an A item occurs (the A state used at a later step is the one of
    the latest A occurrence, as in ABXI); ``every`` gives the domain inputs a state at every step
    after their domain's first item (``filled_domain_states``; ~1.4x the encoder rows and ~2x
    the GCA rows). In both modes nothing after step ``t`` reaches step ``t``, and with GCA layers
    that return their input the model computes exactly ABXI (tested).

    Extra parameters: ``2 * len(gca_positions) * (7 d^2 + 6 d [+ 2 d with LayerNorm])``.
    """

    #: the gca_* defaults come from properties/component/gca.yaml (ABXI_GCA.yaml overrides some)
    component_properties = ('gca',)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        if self.official_quirks:
            raise ValueError('official_quirks: ABXI_GCA does not support True '
                             '(the official layouts are not step-aligned in evaluation)')

        # define layers and loss (GCAStages reads and checks the gca_* settings; it initialises its layers)
        self.build_gca(config, self.embedding_size, self.n_layers, query_steps=('occurrence', 'every'),
                       layer_norm_eps=self.layer_norm_eps)
        self.filled_domain_states = self.gca.query_steps == 'every'
