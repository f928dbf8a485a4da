"""
recbole_ortho.data.converters.common
####################################

Names shared by the Amazon converters: input formats, domains, recipe defaults, the headers of
the atomic files written.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Tuple, Union

logger = logging.getLogger('recbole_ortho.data.converters')

PathLike = Union[str, 'os.PathLike[str]']

FORMATS: Tuple[str, ...] = ('abxi', 'amazon2014', 'amazon2018', 'amazon2023')
DOMAINS: Tuple[str, str] = ('A', 'B')

#: Default thresholds of each recipe; ``recipe_options`` overrides them key by key.
RECIPE_DEFAULTS: Dict[str, Dict[str, Any]] = {
    'abxi': {'item_min': 10, 'max_len': 50, 'user_min_per_domain': 5},
    'llm4cdsr': {'start': None, 'end': None, 'user_min': 5, 'item_min': 3, 'strict': True, 'rating_min': 0,
                 'shared_items': 'keep'},
    'none': {},
}

INTER_HEADER: Tuple[str, ...] = ('user_id:token', 'item_id:token', 'timestamp:float', 'seq_idx:float')
ITEM_HEADER: Tuple[str, ...] = ('item_id:token', 'title:token')

#: Text columns of the ``.item`` files per input format (``title`` only when absent).  The Amazon
#: 2018 metadata has ``title``, ``brand``, ``category`` (list), ``price`` and ``description`` (list).
META_COLUMNS: Dict[str, Tuple[str, ...]] = {
    'amazon2018': ('title', 'brand', 'category', 'price', 'description'),
}

#: Suffixes of an item kept in both domains by ``llm4cdsr`` (``shared_items: keep``): ``<asin>@A``, ``<asin>@B``.
SHARED_ITEM_SUFFIX: Tuple[str, str] = ('@A', '@B')
