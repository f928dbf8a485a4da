"""
recbole_ortho.data.features
###########################

The features a model needs beside the interactions, handed to it by the dataset (as RecBole's
datasets hand models their item/user features): a model class declares them
(``dataset_features = ('item_text',)``) and reads each with ``dataset.feature(name, config)``;
it never imports the data layer, and never computes data itself.

Each feature is computed by the data layer once per dataset object and setting (the settings it
depends on, :data:`FEATURES`), then kept on the dataset: building a model again (a
parameter-matched run builds several, a sweep plans with more) does no data work. Features that
are expensive to compute are also cached on disk by their own module (the item text embeddings
under ``cache_dir``).

- ``item_text``: LLM4CDSR's item text tables and user profiles
  (:func:`recbole_ortho.data.text_features.load_text_features`);
- ``support_pool``: CDSRNP's support elements (:func:`recbole_ortho.data.support.support_pool`);
- ``item_graph``: C2DSR's item graphs (:func:`recbole_ortho.data.item_graph.item_graph`).
"""

from recbole_ortho.utils.errors import ConfigError


def _item_text(config, data):
    from recbole_ortho.data.text_features import load_text_features
    return load_text_features(config, data)


def _support_pool(config, data):
    from recbole_ortho.data.support import support_pool
    return support_pool(data, config['MAX_ITEM_LIST_LENGTH'])


def _item_graph(config, data):
    from recbole_ortho.data.item_graph import item_graph
    return item_graph(data)


#: name -> (compute(config, data), the settings the feature depends on)
FEATURES = {
    'item_text': (_item_text, ('dataset', 'cache_dir', 'text_encoder', 'text_batch_size', 'text_global_dim',
                               'text_domain_dim', 'text_seed', 'text_item_nouns', 'text_long_value', 'user_profile',
                               'user_profile_clusters', 'user_profile_recent', 'profile_include_valid')),
    'support_pool': (_support_pool, ('MAX_ITEM_LIST_LENGTH',)),
    'item_graph': (_item_graph, ()),
}


def _setting(config, key):
    try:
        return config[key]
    except KeyError:
        return None


def feature_key(name, config):
    """The memo key of feature ``name`` under ``config``: its name and the settings it depends on."""
    if name not in FEATURES:
        raise ConfigError(f'dataset feature [{name}] is unknown (known: {", ".join(sorted(FEATURES))})')
    return (name,) + tuple(repr(_setting(config, k)) for k in FEATURES[name][1])


def dataset_feature(data, name, config):
    """Feature ``name`` of ``data`` under ``config``: computed on first use, then kept on ``data``
    (``data.features``) for every later model built on it."""
    memo = data.__dict__.setdefault('features', {})
    key = feature_key(name, config)
    if key not in memo:
        memo[key] = FEATURES[name][0](config, data)
    return memo[key]


def attach_features(data, model_class, config):
    """Compute every feature ``model_class`` declares (``dataset_features``) on ``data`` ahead of
    the model's construction (the data time of a run then holds them)."""
    for name in getattr(model_class, 'dataset_features', ()):
        dataset_feature(data, name, config)
