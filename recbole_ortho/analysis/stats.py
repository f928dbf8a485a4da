"""
recbole_ortho.analysis.stats
############################

The statistics of the paper's comparisons, on plain numpy arrays:

- :func:`mean_ci`: mean, standard deviation and the 95 % t-interval over seeds;
- :func:`paired_comparison`: a GCA variant against a base, paired by seed: the paired t-test,
  the effect size (Cohen's d_z = mean difference / sd of the differences), and the Wilcoxon
  signed-rank test as a secondary test (:func:`wilcoxon_signed_rank`);
- :func:`wilcoxon_signed_rank`: Pratt's treatment of zero differences (:data:`WILCOXON_ZERO_METHOD`),
  p from the exact sign-flip distribution up to :data:`WILCOXON_EXACT_MAX_N` pairs, else from the
  normal approximation; with ``n`` pairs of which ``z`` are zero the smallest two-sided p is
  ``2 / 2^(n - z)`` (:func:`wilcoxon_floor`): 0.0625 for 5 seeds without a zero, 0.125 with one;
- :func:`holm`: Holm's step-down correction across a family of comparisons;
- :func:`correlation`: Pearson and Spearman coefficients with percentile bootstrap intervals
  (seeded, so the report is reproducible); :func:`within_correlation`: the pooled
  within-configuration (repeated-measures) correlation;
- :func:`paired_t_power`, :func:`detectable_effect`, :func:`pairs_needed`: power of the two-sided
  paired t-test from the noncentral t distribution.
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


#: How the Wilcoxon signed-rank test treats a zero difference: Pratt's method (scipy's
#: ``zero_method='pratt'``) ranks the zeros with the other absolute differences and then leaves
#: them out of both rank sums, so a zero still pushes the larger differences' ranks up (Wilcoxon's
#: original method, scipy's default ``'wilcox'``, drops the zeros before ranking; ``'zsplit'``
#: gives half of each zero's rank to either sum). Pratt's method is the one usually recommended
#: when zeros occur (Pratt 1959; Conover 1973).
WILCOXON_ZERO_METHOD = 'pratt'
#: Up to this many pairs the p-value is exact: scipy's permutation distribution over all 2^n
#: sign flips of the differences (zeros and tied differences included as observed; 2^12 = 4,096
#: flips take about half a second); above it, the normal approximation (Cureton's adjustment of
#: mean and variance for Pratt's zeros, tie correction, no continuity correction).
WILCOXON_EXACT_MAX_N = 12


def wilcoxon_floor(n, n_zero=0):
    """The smallest two-sided p-value the exact Wilcoxon signed-rank test
    (:func:`wilcoxon_signed_rank`) can give with ``n`` pairs of which ``n_zero`` have a zero
    difference: ``2 / 2^(n - n_zero)`` (at most 1). Flipping the sign of a zero changes nothing,
    so only the ``2^(n - n_zero)`` sign patterns of the non-zero differences count, and the most
    extreme one (all of one sign) has probability ``1 / 2^(n - n_zero)`` on each side; this holds
    for every zero method. NaN for ``n = 0``."""
    if n <= 0:
        return math.nan
    return min(1.0, 2.0 / 2 ** (n - n_zero))


def wilcoxon_signed_rank(d, exact_max_n=WILCOXON_EXACT_MAX_N):
    """Two-sided Wilcoxon signed-rank test of the paired differences ``d`` with Pratt's zero method
    (:data:`WILCOXON_ZERO_METHOD`): ``{'p', 'statistic', 'method', 'n', 'n_zero', 'floor'}``.

    ``method`` is ``'exact'`` for ``n <= exact_max_n`` (scipy's permutation test enumerating all
    ``2^n`` sign flips: exact with zeros and ties, where scipy's tabulated ``method='exact'`` is
    not) and ``'normal'`` above (scipy's ``method='asymptotic'``, no continuity correction).
    ``floor`` is :func:`wilcoxon_floor` for the exact test (NaN for the normal approximation).
    Every difference zero, or a single pair: p = 1."""
    d = np.asarray(d, dtype=float)
    n, n_zero = len(d), int(np.sum(d == 0))
    out = {'n': n, 'n_zero': n_zero, 'p': math.nan, 'statistic': math.nan,
           'method': 'exact' if n <= exact_max_n else 'normal',
           'floor': wilcoxon_floor(n, n_zero) if n <= exact_max_n else math.nan}
    if n == 0:
        return out
    if n_zero == n or n == 1:          # nothing to rank, or one pair: its two signs are equally likely
        out.update(p=1.0, statistic=0.0)
        return out
    method = sps.PermutationMethod(n_resamples=2 ** n) if out['method'] == 'exact' else 'asymptotic'
    r = sps.wilcoxon(d, zero_method=WILCOXON_ZERO_METHOD, method=method, alternative='two-sided')
    out.update(p=float(r.pvalue), statistic=float(r.statistic))
    return out


def paired_comparison(a, b):
    """``a`` (e.g. GCA) against ``b`` (the base), both indexed by the same seeds: mean difference
    ``a - b``, paired t-test (two-sided), Cohen's d_z, and the Wilcoxon signed-rank test
    (:func:`wilcoxon_signed_rank`: Pratt's zeros, exact sign-flip p; ``n_zero`` zero differences,
    ``p_wilcoxon_floor`` its smallest possible p ``2 / 2^(n - n_zero)``)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f'paired_comparison: {a.shape} and {b.shape} pairs')
    d = a - b
    n = len(d)
    w = wilcoxon_signed_rank(d)
    out = {'n': n, 'mean_diff': float(d.mean()) if n else math.nan, 'sd_diff': math.nan, 't': math.nan,
           'p_t': math.nan, 'cohens_dz': math.nan, 'p_wilcoxon': w['p'] if n >= 2 else math.nan,
           'wilcoxon_method': w['method'], 'n_zero': w['n_zero'], 'p_wilcoxon_floor': w['floor']}
    if n >= 2:
        sd = float(d.std(ddof=1))
        out['sd_diff'] = sd
        if float(np.ptp(d)) > 0:                  # constant differences (sd 0 up to rounding): no t
            t = sps.ttest_rel(a, b)
            out.update(t=float(t.statistic), p_t=float(t.pvalue), cohens_dz=float(d.mean()) / sd)
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
    interval over resampled points (``n_boot`` resamples, RNG ``seed``), and Pearson's Fisher-z
    interval (``pearson_fisher_ci_low/high``, NaN with 3 points or fewer). With few points the
    bootstrap interval is degenerate (3 points give about ten distinct resamples, and an interval
    that can exclude 0 where the t-test of r is far from significant): judge few points by
    ``pearson_p`` and the Fisher interval."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    out = {'n': n}
    if n < 3:
        for k in ('pearson', 'spearman'):
            out.update({k: math.nan, f'{k}_p': math.nan, f'{k}_ci_low': math.nan, f'{k}_ci_high': math.nan})
        out['pearson_fisher_ci_low'] = out['pearson_fisher_ci_high'] = math.nan
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
    out['pearson_fisher_ci_low'], out['pearson_fisher_ci_high'] = fisher_interval(out['pearson'], n, level)
    return out


def sd_interval(sd, n, level=0.95):
    """``(low, high)``: the ``level`` interval of a normal population's standard deviation from a
    sample sd over ``n`` values (chi-square with ``n - 1`` degrees of freedom); NaNs below 2 values.
    With 2 values it spans 0.45x to 32x the sample sd, with 3 values 0.52x to 6.3x."""
    if n < 2 or sd is None or math.isnan(sd):
        return math.nan, math.nan
    df, tail = n - 1, (1 - level) / 2
    return sd * math.sqrt(df / sps.chi2.ppf(1 - tail, df)), sd * math.sqrt(df / sps.chi2.ppf(tail, df))


def fisher_interval(r, n, level=0.95):
    """The Fisher-z interval of a Pearson ``r`` from ``n`` points: tanh(atanh(r) -/+ z / sqrt(n - 3));
    NaN for ``n <= 3`` or an undefined ``r``."""
    if n <= 3 or not math.isfinite(r):
        return math.nan, math.nan
    z, half = math.atanh(max(min(r, 1 - 1e-15), -1 + 1e-15)), sps.norm.ppf((1 + level) / 2) / math.sqrt(n - 3)
    return float(math.tanh(z - half)), float(math.tanh(z + half))


def _row_pearson(a, b):
    """Pearson's r of each row pair of ``a, b [m, n]`` (NaN where a row is constant: tested on the
    values, since a constant row's centred values are rounding noise, not zeros, and gave r = +/-1)."""
    const = (a.max(axis=1) == a.min(axis=1)) | (b.max(axis=1) == b.min(axis=1))
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where((den > 0) & ~const, (a * b).sum(1) / den, np.nan)


def within_correlation(x, y, groups, level=0.95):
    """The pooled within-configuration correlation of paired points ``x, y`` in ``groups`` (e.g.
    the seeds of each configuration): each group's ``x`` and ``y`` centred on the group's means,
    then Pearson's r of all centred points, so that differences between the groups' means do not
    drive it (the repeated-measures correlation of Bakdash & Marusich 2017). ``df = N - k - 1``
    (``N`` points in ``k`` groups of two or more points; groups of one point are left out): the
    two-sided p from the t distribution with ``df``, the interval from Fisher's z with standard
    error ``1 / sqrt(df - 1)``. ``{'n', 'groups', 'df', 'r', 'p', 'ci_low', 'ci_high'}``."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    groups = np.asarray(groups, dtype=object)
    xc, yc, k = [], [], 0
    for g in dict.fromkeys(groups.tolist()):
        m = groups == g
        if m.sum() < 2:
            continue
        k += 1
        xc.append(x[m] - x[m].mean())
        yc.append(y[m] - y[m].mean())
    n = int(sum(len(v) for v in xc))
    df = n - k - 1
    out = {'n': n, 'groups': k, 'df': df, 'r': math.nan, 'p': math.nan, 'ci_low': math.nan, 'ci_high': math.nan}
    if df < 1:
        return out
    xc, yc = np.concatenate(xc), np.concatenate(yc)
    den = math.sqrt(float((xc * xc).sum() * (yc * yc).sum()))
    if den == 0:
        return out
    r = float((xc * yc).sum() / den)
    out['r'] = r
    if abs(r) < 1:
        t = r * math.sqrt(df / (1 - r * r))
        out['p'] = float(2 * sps.t.sf(abs(t), df))
    else:
        out['p'] = 0.0
    if df > 1 and abs(r) < 1:
        half = float(sps.norm.ppf(0.5 + level / 2)) / math.sqrt(df - 1)
        out['ci_low'], out['ci_high'] = math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half)
    return out


def paired_t_power(effect, sd, n, alpha=0.05):
    """Power of the two-sided paired t-test at level ``alpha`` with ``n`` pairs whose differences
    have mean ``effect`` and standard deviation ``sd``: the noncentral t distribution with ``n - 1``
    degrees of freedom and noncentrality ``effect * sqrt(n) / sd``."""
    if n < 2 or not sd > 0:
        return math.nan
    df, nc = n - 1, effect * math.sqrt(n) / sd
    tc = float(sps.t.ppf(1 - alpha / 2, df))
    power = float(sps.nct.sf(tc, df, nc) + sps.nct.cdf(-tc, df, nc))
    if math.isnan(power):        # scipy's noncentral t fails for few degrees of freedom: integrate instead
        from scipy.integrate import quad

        def tails(v):            # P(|Z + nc| > tc sqrt(v / df)) given the chi-square draw v
            c = tc * math.sqrt(v / df)
            return (sps.norm.sf(c - nc) + sps.norm.cdf(-c - nc)) * sps.chi2.pdf(v, df)
        power = float(quad(tails, 0, np.inf, limit=200)[0])
    return power


def detectable_effect(sd, n, alpha=0.05, power=0.8):
    """The smallest mean difference the two-sided paired t-test with ``n`` pairs (differences of
    standard deviation ``sd``) detects with probability ``power`` at level ``alpha``."""
    from scipy.optimize import brentq
    if n < 2 or not sd > 0:
        return math.nan
    hi = sd
    while paired_t_power(hi, sd, n, alpha) < power:
        hi *= 2
    return float(brentq(lambda e: paired_t_power(e, sd, n, alpha) - power, 0.0, hi, xtol=1e-12 * sd))


def pairs_needed(effect, sd, alpha=0.05, power=0.8, max_n=100000):
    """The smallest number of pairs (at least 2) with which the two-sided paired t-test detects a
    mean difference ``effect`` (differences of standard deviation ``sd``) with probability
    ``power`` at level ``alpha``; None if more than ``max_n`` are needed."""
    if not sd > 0 or effect == 0:
        return None
    lo, hi = 2, 2
    while paired_t_power(effect, sd, hi, alpha) < power:
        lo, hi = hi, hi * 2
        if hi > max_n:
            return None
    while lo < hi:                                  # power grows with n: bisect for the first n
        mid = (lo + hi) // 2
        if paired_t_power(effect, sd, mid, alpha) >= power:
            hi = mid
        else:
            lo = mid + 1
    return hi


def power_summary(a, b, gain=0.02, alpha=0.05, power=0.8):
    """What a sweep of seeds could detect, comparing ``a`` (e.g. GCA) with ``b`` (the base), both
    indexed by the same seeds: the smallest mean difference the two-sided paired t-test detects
    at ``power`` and ``alpha`` with these ``n`` seeds (absolute and as a share of ``b``'s mean), the
    seeds a relative gain ``gain`` (0.02 = +2 % of ``b``'s mean) needs, and the 95 % t-interval of
    the mean difference as a share of ``b``'s mean. Two spreads: ``paired`` = the standard
    deviation of the observed paired differences; ``arms`` = ``sqrt(2)`` x the pooled standard
    deviation of the two arms (as if the seeds paired nothing)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = len(a)
    base = float(b.mean()) if n else math.nan
    d = a - b
    out = {'n': n, 'base_mean': base, 'gain': gain, 'alpha': alpha, 'power': power}
    if n < 2:
        return out
    ci = mean_ci(d)
    out['diff_ci_rel'] = (ci['ci_low'] / base, ci['ci_high'] / base)
    for name, sd in (('paired', float(d.std(ddof=1))),
                     ('arms', math.sqrt(2) * math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2))):
        mde = detectable_effect(sd, n, alpha, power)
        out[name] = {'sd': sd, 'mde': mde, 'mde_rel': mde / base,
                     'seeds_for_gain': pairs_needed(gain * base, sd, alpha, power)}
    return out
