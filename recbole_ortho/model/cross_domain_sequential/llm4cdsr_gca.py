r"""
LLM4CDSR_GCA
################################################

LLM4CDSR with gated cross-attention (GCA) between its A and B threads.

Reference:
    Hyunin Lee et al. "Cross-attention Secretly Performs Orthogonal Alignment in Recommendation
    Models." arXiv:2510.09435, 2025.

    Qidong Liu et al. "Bridge the Domains: Large Language Models Enhanced Cross-domain Sequential
    Recommendation." In SIGIR 2025 (https://github.com/Applied-Machine-Learning-Lab/LLM4CDSR-pytorch).
"""

from recbole_ortho.model.cross_domain_sequential.llm4cdsr import LLM4CDSR
from recbole_ortho.model.gca_wiring import GCAVariant


class LLM4CDSR_GCA(GCAVariant, LLM4CDSR):
    r"""LLM4CDSR + GCA between the A and B threads: at each stage of ``gca_positions`` (0 = after
    the embeddings, ``i`` = after block ``i``) the A and B thread states exchange information
    through two GCA layers, one per direction (:class:`~recbole_ortho.model.gca_wiring.GCAStages`, whose
    docstring defines the ``gca_*`` settings and the recorded orthogonality statistics).

    The threads are not position-aligned: a domain thread has a row at each occurrence of its
    domain's items. A query at the step of an A item attends to the B thread's rows at the B
    items that came *earlier* in the user's mixed sequence (causal in mixed time, never padding);
    the gate's second input (``gca_gate_input: concat_other``) is the B thread's state at the
    latest B item before the query (0 before the user's first B item, where ``X' = 0`` and GCA
    reduces to ``LN(X)``). B likewise. Everything else is LLM4CDSR's; with GCA layers that
    return their input the model computes exactly LLM4CDSR.

    Extra parameters: ``2 * len(gca_positions) * (7 d^2 + 6 d [+ 2 d with LayerNorm])``.
    """

    #: the gca_* defaults come from properties/component/gca.yaml (LLM4CDSR_GCA.yaml overrides some)
    component_properties = ('gca',)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # define layers and loss (GCAStages reads and checks the gca_* settings; it initialises its layers)
        self.build_gca(config, self.hidden_size, self.n_layers, query_steps=('occurrence',),
                       layer_norm_eps=self.layer_norm_eps)
