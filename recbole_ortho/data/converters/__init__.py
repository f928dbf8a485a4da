"""Converters from raw Amazon review data to the RecBole-CDR atomic files of a cross-domain
sequential dataset (:mod:`recbole_ortho.data.converters.amazon`; command line:
``dataset_scripts/convert_amazon.py``)."""

from recbole_ortho.data.converters import amazon
from recbole_ortho.data.converters.amazon import (atomic_paths, convert, default_raw_root, load_mixed_sequences,
                                                  prepare_dataset)
from recbole_ortho.data.converters.common import FORMATS, RECIPE_DEFAULTS

__all__ = ['amazon', 'atomic_paths', 'convert', 'default_raw_root', 'load_mixed_sequences', 'prepare_dataset',
           'FORMATS', 'RECIPE_DEFAULTS']
