"""
recbole_ortho.analysis.ranks
############################

Per-user results: the ranks a run saves beside its result file (``save_ranks: True``:
``<result_file without .json>.ranks.npz``, e.g. ``runs/<id>/result.ranks.npz`` in a sweep's run
store), and the user-level statistics built on them.

The file holds, for each split ``valid`` and ``test``, one entry per evaluated user:

=====================  =========  ==============================================================
array                  dtype      meaning
=====================  =========  ==============================================================
``{split}_user``       unicode    the user's token
``{split}_domain``     int8       the target's domain (0 = A, 1 = B)
``{split}_rank``       int32      1 + number of candidates scored strictly higher than the target
``{split}_ties``       int32      number of other candidates scored exactly as the target
``{split}_n_neg``      int32      number of negatives
=====================  =========  ==============================================================

A user's metric comes from :func:`recbole_ortho.evaluator.metrics.compute_metrics` with the run's
tie rule (its result's ``config['eval_ties']``; a result without it is from before tie rules,
which counted ties in the target's favour: ``optimistic``), so it averages to the run's own
reported metric.

- :func:`load_ranks` reads and checks a file (errors name it);
- :func:`paired_user_test`: two runs' users paired by token and domain, Wilcoxon signed-rank
  (Pratt's zeros: users where both runs score 0 are many) and paired t-test on the per-user
  differences;
- :func:`hierarchical_bootstrap`: the difference between two configurations over seeds and users
  (seeds resampled with replacement, then users with replacement within each resampled seed
  pair); :func:`configuration_difference` builds it from the runs' files.
"""

import math
import os
import zipfile

import numpy as np
from scipy import stats as sps

from recbole_ortho.analysis.stats import wilcoxon_signed_rank
from recbole_ortho.utils.paths import ranks_path  # noqa: F401  (re-exported: the reader names the writer's file)

SPLITS = ('valid', 'test')
#: the arrays of each split and the dtype kind each must have
FIELDS = {'user': 'U', 'domain': 'i', 'rank': 'i', 'ties': 'i', 'n_neg': 'i'}
DOMAIN_CODES = {'A': 0, 'B': 1}


class RanksError(ValueError):
    """A ranks file that is missing, unreadable or inconsistent (the message names the file)."""


def load_ranks(path):
    """``{split: {'user', 'domain', 'rank', 'ties', 'n_neg'}}`` of a ranks file (numpy arrays, one
    entry per user), checked: every array of both splits present, one-dimensional, of one length
    per split and of its dtype kind; domains 0 or 1; ``1 <= rank``, ``0 <= ties`` and
    ``rank + ties <= n_neg + 1``; each (user, domain) once. Raises :class:`RanksError` naming the
    file (missing, not a readable ``.npz``, or failing a check)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise RanksError(f'{path}: no ranks file (a run writes it with save_ranks: True)')
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise RanksError(f'{path}: not a readable ranks file ({type(e).__name__}: {e})') from None
    out = {}
    for split in SPLITS:
        arrays = {}
        for name, kind in FIELDS.items():
            key = f'{split}_{name}'
            if key not in data:
                raise RanksError(f'{path}: array {key} missing (has {sorted(data)})')
            a = data[key]
            if a.ndim != 1:
                raise RanksError(f'{path}: {key} has shape {a.shape}, expected one dimension')
            if a.dtype.kind != kind and not (kind == 'i' and a.dtype.kind == 'u'):
                raise RanksError(f'{path}: {key} has dtype {a.dtype}, expected {"unicode" if kind == "U" else "integer"}')
            arrays[name] = a
        n = {len(a) for a in arrays.values()}
        if len(n) != 1:
            raise RanksError(f'{path}: the {split} arrays differ in length '
                             f'({ {k: len(a) for k, a in arrays.items()} })')
        d, r, t, nn = (arrays[k].astype(np.int64) for k in ('domain', 'rank', 'ties', 'n_neg'))
        bad = ~np.isin(d, (0, 1))
        if bad.any():
            raise RanksError(f'{path}: {split}_domain has values other than 0 and 1 ({np.unique(d[bad])[:5]})')
        bad = (r < 1) | (t < 0) | (r + t > nn + 1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise RanksError(f'{path}: {split} user {arrays["user"][i]!r}: rank {r[i]}, ties {t[i]} and '
                             f'{nn[i]} negatives are inconsistent (need 1 <= rank, 0 <= ties, rank + ties <= n_neg + 1)')
        keys = _keys(arrays)
        if len(np.unique(keys)) != len(keys):
            raise RanksError(f'{path}: a (user, domain) occurs twice in {split}')
        out[split] = arrays
    return out


def _keys(arrays):
    """One string per entry: ``<domain>|<user>`` (the pairing key)."""
    return np.char.add(np.char.add(arrays['domain'].astype(np.int64).astype(str), '|'), arrays['user'].astype(str))


def run_tie_rule(result):
    """The tie rule a run's metrics used: its result's ``config['eval_ties']``, ``optimistic`` when
    absent (results from before the tie rules: ties counted in the target's favour)."""
    return ((result or {}).get('config') or {}).get('eval_ties') or 'optimistic'


def user_metric(split_ranks, metric='ndcg@10', tie_rule='optimistic'):
    """Per-user values of ``metric`` (float64 numpy array) from one split of :func:`load_ranks`,
    ties resolved by ``tie_rule`` (:func:`recbole_ortho.evaluator.metrics.compute_metrics`)."""
    import torch
    from recbole_ortho.evaluator.metrics import compute_metrics
    rank = torch.from_numpy(split_ranks['rank'].astype(np.int64))
    n_neg = torch.from_numpy(split_ranks['n_neg'].astype(np.int64))
    ties = torch.from_numpy(split_ranks['ties'].astype(np.int64))
    return compute_metrics([metric], rank, n_neg, ties=ties, tie_rule=tie_rule)[metric].numpy().astype(np.float64)


def pair_users(a, b, domain=None):
    """Indices ``(ia, ib)`` of the users two splits share (same token and domain; ``domain`` 'A' or
    'B' keeps that domain only), in key order, and the counts of users only in ``a`` and only in
    ``b``."""
    ka, kb = _keys(a), _keys(b)
    ia_all = np.arange(len(ka)) if domain is None else np.flatnonzero(a['domain'] == DOMAIN_CODES[domain])
    ib_all = np.arange(len(kb)) if domain is None else np.flatnonzero(b['domain'] == DOMAIN_CODES[domain])
    _, ia, ib = np.intersect1d(ka[ia_all], kb[ib_all], assume_unique=True, return_indices=True)
    return ia_all[ia], ib_all[ib], len(ia_all) - len(ia), len(ib_all) - len(ib)


def user_differences(a, b, metric='ndcg@10', split='test', domain=None, tie_rules=('optimistic', 'optimistic')):
    """Per-user ``metric`` of run ``a`` minus run ``b`` (both :func:`load_ranks` dicts), users
    paired by token and domain: ``(diff, values_a, values_b, n_only_a, n_only_b)``."""
    sa, sb = a[split], b[split]
    ia, ib, only_a, only_b = pair_users(sa, sb, domain)
    va = user_metric(sa, metric, tie_rules[0])[ia]
    vb = user_metric(sb, metric, tie_rules[1])[ib]
    return va - vb, va, vb, only_a, only_b


def paired_user_test(a, b, metric='ndcg@10', split='test', domain=None, tie_rules=('optimistic', 'optimistic')):
    """Run ``a`` against run ``b`` user by user (users paired by token and domain; ``domain`` 'A',
    'B' or None for both): mean per-user difference, paired t-test (two-sided) and the Wilcoxon
    signed-rank test (:func:`~recbole_ortho.analysis.stats.wilcoxon_signed_rank`: Pratt's zeros;
    the normal approximation above 12 users). Raises :class:`RanksError` when no user is shared."""
    d, va, vb, only_a, only_b = user_differences(a, b, metric, split, domain, tie_rules)
    n = len(d)
    if n == 0:
        raise RanksError(f'the two runs share no {split} user{"" if domain is None else " in domain " + domain}')
    w = wilcoxon_signed_rank(d)
    out = {'n_users': n, 'n_only_a': only_a, 'n_only_b': only_b, 'mean_a': float(va.mean()), 'mean_b': float(vb.mean()),
           'mean_diff': float(d.mean()), 't': math.nan, 'p_t': math.nan, 'p_wilcoxon': w['p'],
           'wilcoxon_method': w['method'], 'n_zero': w['n_zero']}
    if n >= 2 and float(np.ptp(d)) > 0:                  # constant differences: no t
        t = sps.ttest_1samp(d, 0.0)
        out.update(t=float(t.statistic), p_t=float(t.pvalue))
    return out


def hierarchical_bootstrap(diffs_by_seed, n_boot=2000, seed=0, level=0.95, chunk=256):
    """The mean per-user difference between two configurations, ``diffs_by_seed = {seed: [U_s]
    per-user differences of the seed pair}``: the estimate is the mean over seeds of each seed
    pair's mean over users (every seed weighs the same); the interval is the percentile interval
    of ``n_boot`` hierarchical resamples (RNG ``seed``): the seeds drawn with replacement, then,
    for every drawn seed (again for each repeat), its users drawn with replacement.
    ``{'estimate', 'ci_low', 'ci_high', 'n_seeds', 'n_users', 'n_boot', 'level'}``."""
    seeds = sorted(diffs_by_seed)
    diffs = [np.asarray(diffs_by_seed[s], dtype=float) for s in seeds]
    if not seeds or any(len(d) == 0 for d in diffs):
        raise ValueError('hierarchical_bootstrap: every seed pair needs at least one user')
    k = len(diffs)
    estimate = float(np.mean([d.mean() for d in diffs]))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, k, size=(n_boot, k))                 # the seeds of each resample
    total = np.zeros(n_boot)
    for j in range(k):                                           # slot j of every resample
        for s in range(k):
            rows = np.flatnonzero(draws[:, j] == s)
            d = diffs[s]
            for c in range(0, len(rows), chunk):
                part = rows[c:c + chunk]
                total[part] += d[rng.integers(0, len(d), size=(len(part), len(d)))].mean(axis=1)
    boot = total / k
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    return {'estimate': estimate, 'ci_low': float(np.percentile(boot, lo)), 'ci_high': float(np.percentile(boot, hi)),
            'n_seeds': k, 'n_users': [len(d) for d in diffs], 'n_boot': n_boot, 'level': level}


def configuration_difference(runs_a, runs_b, metric='ndcg@10', split='test', domain=None, n_boot=2000, seed=0,
                             level=0.95):
    """Configuration ``a`` against configuration ``b`` from their runs' ranks: ``runs_a`` and
    ``runs_b`` map a seed to ``(ranks, tie_rule)`` (ranks as :func:`load_ranks` returns); the seeds
    both have are paired. Per seed pair: :func:`paired_user_test`; over all:
    :func:`hierarchical_bootstrap` of the per-user differences. ``{'seeds', 'per_seed',
    'bootstrap', 'tie_rules'}``."""
    seeds = sorted(set(runs_a) & set(runs_b))
    if not seeds:
        raise RanksError('the two configurations share no seed')
    per_seed, diffs = {}, {}
    for s in seeds:
        (ra, ta), (rb, tb) = runs_a[s], runs_b[s]
        per_seed[s] = paired_user_test(ra, rb, metric, split, domain, (ta, tb))
        diffs[s] = user_differences(ra, rb, metric, split, domain, (ta, tb))[0]
    return {'seeds': seeds, 'per_seed': per_seed, 'bootstrap': hierarchical_bootstrap(diffs, n_boot, seed, level),
            'tie_rules': sorted({runs_a[s][1] for s in seeds} | {runs_b[s][1] for s in seeds})}
