"""
recbole_ortho.utils.errors
##########################

Exceptions shared by the configuration, the data layer, the models and the evaluator.
"""


class ConfigError(ValueError):
    """An invalid or missing setting; the message starts with the key (``key: ...``)."""


class DataError(ValueError):
    """Invalid dataset content; the message names the file or setting."""
