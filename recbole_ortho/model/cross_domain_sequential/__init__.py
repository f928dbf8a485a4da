from recbole_ortho.model.cross_domain_sequential.abxi import ABXI
from recbole_ortho.model.cross_domain_sequential.abxi_gca import ABXI_GCA

__all__ = ['ABXI', 'ABXI_GCA']
