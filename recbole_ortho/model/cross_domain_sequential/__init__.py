from recbole_ortho.model.cross_domain_sequential.abxi import ABXI
from recbole_ortho.model.cross_domain_sequential.abxi_gca import ABXI_GCA
from recbole_ortho.model.cross_domain_sequential.c2dsr import C2DSR
from recbole_ortho.model.cross_domain_sequential.c2dsr_gca import C2DSR_GCA
from recbole_ortho.model.cross_domain_sequential.cdsrnp import CDSRNP
from recbole_ortho.model.cross_domain_sequential.cdsrnp_gca import CDSRNP_GCA
from recbole_ortho.model.cross_domain_sequential.llm4cdsr import LLM4CDSR
from recbole_ortho.model.cross_domain_sequential.llm4cdsr_gca import LLM4CDSR_GCA

__all__ = ['ABXI', 'ABXI_GCA', 'C2DSR', 'C2DSR_GCA', 'CDSRNP', 'CDSRNP_GCA', 'LLM4CDSR', 'LLM4CDSR_GCA']
