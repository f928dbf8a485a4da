"""
recbole_ortho.utils.model_config
################################

:class:`ModelConfig`: the read-only view of a run's configuration that every model of the
family receives. ``config[key]`` returns the value set by a property file, a config file, a
``config_dict`` or the command line; a key set nowhere raises
:class:`~recbole_ortho.utils.errors.ConfigError` naming it (RecBole's ``Config`` returns None
for a missing key, which lets a typo or a deleted yaml line pass silently). Overrides give
trial values to one constructor (parameter matching builds models with a wider dimension).
"""

from recbole_ortho.utils.errors import ConfigError


class ModelConfig:
    """Read-only strict view of ``config`` (a RecBole ``Config`` or a dict) with ``overrides``.

    Args:
        config: the underlying configuration (itself a ModelConfig is unwrapped).
        model: the model name, for error messages.
        **overrides: keys whose value replaces the underlying one.
    """

    def __init__(self, config, model=None, **overrides):
        if isinstance(config, ModelConfig):
            overrides = {**config.overrides, **overrides}
            model = model or config.model
            config = config.config
        self.config, self.model, self.overrides = config, model, overrides

    def __contains__(self, key):
        return key in self.overrides or key in self.config

    def __getitem__(self, key):
        if key in self.overrides:
            return self.overrides[key]
        if key not in self.config:
            where = f'properties/model/{self.model}.yaml (or its base model\'s)' if self.model else 'a property file'
            raise ConfigError(f'{key}: missing setting{f" of {self.model}" if self.model else ""}; '
                              f'set it in {where}, --config_files or --{key}=VALUE')
        return self.config[key]

    def get(self, key, default=None):
        """``config[key]`` when the key is set, else ``default``."""
        return self[key] if key in self else default

    def __setitem__(self, key, value):
        raise TypeError(f'{key}: a model configuration is read-only (set it before the model is built)')

    def __repr__(self):
        return f'ModelConfig(model={self.model!r}, overrides={self.overrides!r})'
