"""Bootstrap confidence intervals: the settings, the percentile interval, and the interval of
one batch size's optimal LR over seeds. (A fitted law's intervals resample its points' residuals:
fits.law_intervals.)

Every interval is a 90% percentile interval over 1000 resamples drawn from a fixed seed, so the
same runs always give the same interval.
"""
from __future__ import annotations

import math

import numpy as np

from lrsweep.analysis.optimum import find_optimum

LEVEL = 0.9
RESAMPLES = 1000
SEED = 0


def generator() -> np.random.Generator:
    """A fresh generator from the fixed seed: an interval does not depend on what ran before."""
    return np.random.default_rng(SEED)


def interval(samples, log: bool = False, level: float = LEVEL) -> tuple[float, float]:
    """The central `level` percentile interval of the finite samples (of their log10 when `log`:
    an LR's or a batch size's spread is multiplicative); NaN when fewer than half are finite."""
    s = np.asarray(samples, float)
    ok = np.isfinite(s) & (s > 0 if log else True)
    if ok.sum() < max(1, len(s) / 2):
        return math.nan, math.nan
    v = np.log10(s[ok]) if log else s[ok]
    lo, hi = np.percentile(v, [50 * (1 - level), 50 * (1 + level)])
    return (float(10 ** lo), float(10 ** hi)) if log else (float(lo), float(hi))


def lr_opt_interval(lrs, scores: np.ndarray, learned: np.ndarray, higher: bool,
                    log_metric: bool = False) -> tuple[float, float]:
    """Interval of the interpolated optimal LR over seeds: resample the seeds with replacement
    (the same seeds at every LR: seed s shares its initialization and data order across LRs),
    average each LR's scores, and pick and interpolate the best again (optimum.find_optimum,
    with an LR whose resampled runs did not all learn counted as untrained).

    scores, learned: [LR, seed] (NaN score where that seed has no run at that LR). Needs 2 seeds.
    """
    lrs = np.asarray(lrs, float)
    scores, learned = np.asarray(scores, float), np.asarray(learned, bool)
    m = scores.shape[1]
    if m < 2:
        return math.nan, math.nan
    idx = np.sort(generator().integers(0, m, size=(RESAMPLES, m)), axis=1)
    # the mean over a multiset of seeds does not depend on their order: each one is solved once
    uniq, inverse = np.unique(idx, axis=0, return_inverse=True)
    values = np.empty(len(uniq))
    for u, cols in enumerate(uniq):
        s, have = scores[:, cols], ~np.isnan(scores[:, cols])
        count = have.sum(axis=1)
        keep = count > 0
        mean = np.where(have, s, 0.0).sum(axis=1)[keep] / count[keep]
        trained = np.where(have, learned[:, cols], True).all(axis=1)[keep] & np.isfinite(mean)
        values[u] = find_optimum(lrs[keep], mean, higher, log_metric,
                                 np.where(trained, "", "did not train")).lr_opt if keep.any() else math.nan
    return interval(values[np.ravel(inverse)], log=True)
