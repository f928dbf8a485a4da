from recbole_ortho.config.configurator import Config, model_property_files
from recbole_ortho.utils.model_config import ModelConfig
from recbole_ortho.utils.errors import ConfigError

__all__ = ['Config', 'ConfigError', 'ModelConfig', 'model_property_files']
