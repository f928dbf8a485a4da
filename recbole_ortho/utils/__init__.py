from recbole_ortho.utils.errors import ConfigError
from recbole_ortho.utils.utils import (
    known_datasets, properties_dir, load_checkpoint, set_threads,
)
from recbole_ortho.utils.param_match import count_parameters, match_parameters

__all__ = ['ConfigError', 'known_datasets', 'properties_dir', 'load_checkpoint',
           'set_threads', 'count_parameters', 'match_parameters']
