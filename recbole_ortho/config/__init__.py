from recbole_ortho.config.configurator import Config, ConfigError

__all__ = ['Config', 'ConfigError']
