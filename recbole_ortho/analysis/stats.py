"""
recbole_ortho.analysis.stats
############################

The statistics of the paper's comparisons, on plain numpy arrays:

- :func:`mean_ci`: mean, standard deviation and the 95 % t-interval over seeds;
- :func:`paired_comparison`: a GCA variant against a base, paired by seed: the paired t-test,
  the effect size (Cohen's d_z = mean difference / sd of the differences), and the Wilcoxon
  signed-rank test as a secondary test (with ``n`` pairs its smallest two-sided p is
  ``2 / 2^n``: 0.0625 for 5 seeds, so it can never reach 0.05 there -- :func:`wilcoxon_floor`);
- :func:`holm`: Holm's step-down correction across comparisons;
- :func:`correlation`: Pearson and Spearman coefficients with percentile bootstrap intervals
  (seeded, so the report is reproducible).
"""

import math

import numpy as np
from scipy import stats as sps


def mean_ci(values, level=0.95):
    """``{'n', 'mean', 'std', 'ci_low', 'ci_high'}`` of ``values`` (sample std, t-interval; NaN
    interval for fewer than 2 values)."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    if n == 0:
        return {'n': 0, 'mean': math.nan, 'std': math.nan, 'ci_low': math.nan, 'ci_high': math.nan}
    mean = float(v.mean())
    if n < 2:
        return {'n': 1, 'mean': mean, 'std': math.nan, 'ci_low': math.nan, 'ci_high': math.nan}
    std = float(v.std(ddof=1))
    half = float(sps.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return {'n': n, 'mean': mean, 'std': std, 'ci_low': mean - half, 'ci_high': mean + half}


def wilcoxon_floor(n):
    """The smallest two-sided p-value the exact Wilcoxon signed-rank test can give with ``n`` pairs."""
    return 2.0 / 2 ** n if n > 0 else math.nan


def paired_comparison(a, b):
    """``a`` (e.g. GCA) against ``b`` (the base), both indexed by the same seeds: mean difference
    ``a - b``, paired t-test (two-sided), Cohen's d_z, and the exact Wilcoxon signed-rank test."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f'paired_comparison: {a.shape} and {b.shape} pairs')
    d = a - b
    n = len(d)
    out = {'n': n, 'mean_diff': float(d.mean()) if n else math.nan, 't': math.nan, 'p_t': math.nan,
           'cohens_dz': math.nan, 'p_wilcoxon': math.nan, 'p_wilcoxon_floor': wilcoxon_floor(n)}
    if n >= 2:
        sd = float(d.std(ddof=1))
        if sd > 0:
            t = sps.ttest_rel(a, b)
            out.update(t=float(t.statistic), p_t=float(t.pvalue), cohens_dz=float(d.mean()) / sd)
        if np.any(d != 0):
            out['p_wilcoxon'] = float(sps.wilcoxon(a, b, alternative='two-sided').pvalue)
    return out


def holm(pvalues):
    """Holm's step-down adjusted p-values (same order as given; NaN stays NaN and is not counted)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, math.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    order = ok[np.argsort(p[ok], kind='stable')]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def correlation(x, y, n_boot=2000, seed=0, level=0.95):
    """Pearson and Spearman correlation of paired points, each with a percentile bootstrap
    interval over resampled points (``n_boot`` resamples, RNG ``seed``)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    out = {'n': n}
    if n < 3:
        for k in ('pearson', 'spearman'):
            out.update({k: math.nan, f'{k}_p': math.nan, f'{k}_ci_low': math.nan, f'{k}_ci_high': math.nan})
        return out
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    for name, fn in (('pearson', sps.pearsonr), ('spearman', sps.spearmanr)):
        r = fn(x, y)
        bx, by = x[idx], y[idx]                                   # [n_boot, n] resampled points
        if name == 'spearman':
            bx, by = sps.rankdata(bx, axis=1), sps.rankdata(by, axis=1)
        boot = _row_pearson(bx, by)
        boot = boot[~np.isnan(boot)]                             # resamples with a constant side
        out[name], out[f'{name}_p'] = float(r[0]), float(r[1])
        out[f'{name}_ci_low'], out[f'{name}_ci_high'] = (float(np.percentile(boot, lo)), float(np.percentile(boot, hi))) \
            if len(boot) else (math.nan, math.nan)
    return out


def _row_pearson(a, b):
    """Pearson's r of each row pair of ``a, b [m, n]`` (NaN where a row is constant)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(den > 0, (a * b).sum(1) / den, np.nan)
