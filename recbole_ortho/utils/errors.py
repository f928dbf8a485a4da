"""
recbole_ortho.utils.errors
##########################

Exceptions shared by the configuration, the models and the evaluator.
"""


class ConfigError(ValueError):
    """An invalid or missing setting; the message starts with the key (``key: ...``)."""
