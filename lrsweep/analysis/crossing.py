"""The step at which a run's train loss first reaches a target, read afterwards from metrics.csv
without lag, and bootstrap replicates of it.

The trainer decides "reached" on a causal, bias-corrected EMA (train.target_smoothing): it has
only the past, and lags a falling curve by about s/(1 − s) steps (9 at the default 0.9; 6–9 early
on, bias-corrected). The lag is the same few steps at every batch size, so it inflates the small
S of large batches most, and the hyperbola fit turns that into a B_noise far too low: on curves
of known B_noise = 40, S_min = 20 (tests/se_curves.py) it reads B_noise ≈ 25 and S_min ≈ 32.

Afterwards the whole curve is known, so summarize reads S from a two-sided trend instead:

- the trend at each logged step is a local quadratic least-squares fit of the loss against
  log(step) over the logged steps within a factor WINDOW of it (step/WINDOW .. step·WINDOW), or
  the MIN_POINTS logged steps nearest to it where the window holds fewer. Two-sided: no lag.
  Quadratic: a centred moving average, or a local line, of a convex falling curve sits above
  it (S late by ~1–2%, enough to put the truth outside a tight interval of S_min); a parabola
  follows the bend. In log(step): loss curves change on a scale proportional to the step count,
  so the window holds few points early, where the curve bends fast, and many late, where only
  noise is left to average. The loss itself, not its log, is averaged: the target is on the mean
  loss (as the trainer's EMA has it), and noisy batch losses average above their geometric mean.
- where the parabola would weigh one logged loss more than MAX_INFLUENCE (its own step far off
  the window's centre: the first steps, spaced widely in log(step), or the end of a short run)
  the trend is a local line instead, evaluated no further out than that weight allows.
- S is the first step where the trend is ≤ the target, interpolated linearly between the two
  logged steps around the crossing (log_every > 1 costs no resolution as long as the window
  holds MIN_POINTS logged steps; `sparse` says when it does not, and S can then be ~10% late).

The trend is kept within the lowest and highest logged loss of its window (a spike elsewhere
in the window cannot drag a parabola below every loss around it). Not fooled by one noisy low point: it moves the trend by at most MAX_INFLUENCE of its dip, and
in the middle of a window of n points by ≈ 2.25/n (0.07 for the 31 steps around S = 20; the
trainer's EMA weighs its newest loss 0.1). Unlike a fit of one global curve shape, nothing is
assumed about how the loss falls.

Replicates (for the interval of B_noise, critical.py): the relative residuals loss/trend − 1
around the crossing, scaled by 1/sqrt(1 − leverage) back to the size of the noise, resampled
step by step, multiplied back onto the trend, each replicate read exactly like the data. Step by
step, not in blocks: residuals of a local fit are negatively correlated across its window (the
fit took out their local mean), and blocks of them under-state the trend's noise (by ~20% at
S ≈ 20). So noise correlated over many steps within one run is not modelled; it differs between
seeds, and seeds are resampled when there are several.
"""
from __future__ import annotations

import math

import numpy as np

WINDOW = 2.0  # the trend at step s is fitted to the logged steps in [s/WINDOW, s·WINDOW]
MIN_POINTS = 10  # ... and at least this many of them
MAX_INFLUENCE = 0.2  # the most one logged loss can move the trend by, as a fraction of its deviation
REGION = 3.0  # replicates are drawn over steps [S/REGION, S·REGION] around the crossing
SPREAD = 1.5  # ... and read over [S/SPREAD, S·SPREAD]
MAX_REPLICATE_POINTS = 1500  # longer stretches are thinned for the replicates


def _windows(x: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per point i in `at`, the window [lo_i, hi_i) of indices within log(WINDOW) of x_i, or,
    where that holds fewer than MIN_POINTS, the MIN_POINTS nearest to x_i."""
    n, h, m = len(x), math.log(WINDOW), min(MIN_POINTS, len(x))
    lo = np.searchsorted(x, x[at] - h, side="left")
    hi = np.searchsorted(x, x[at] + h, side="right")
    short = hi - lo < m
    # else the m points nearest to x_i: of the m-point blocks holding i, the one reaching least far
    starts = np.clip(at[:, None] - np.arange(m), 0, n - m)
    reach = np.maximum(x[at][:, None] - x[starts], x[starts + m - 1] - x[at][:, None])
    lo_m = starts[np.arange(len(at)), np.argmin(reach, axis=1)]
    return np.where(short, lo_m, lo), np.where(short, lo_m + m, hi)


def _range_extreme(v: np.ndarray, lo: np.ndarray, hi: np.ndarray, fn) -> np.ndarray:
    """fn (np.minimum or np.maximum) of v[..., lo_i:hi_i] for each window, along the last axis,
    from a sparse table of power-of-two blocks: O(n log n), for many curves at once."""
    table, width = [v], 1
    while 2 * width <= v.shape[-1]:
        prev = table[-1]
        table.append(fn(prev[..., :-width], prev[..., width:]))
        width *= 2
    size = np.maximum(hi - lo, 1)
    j = np.floor(np.log2(size)).astype(int)
    out = np.empty(v.shape[:-1] + (len(lo),))
    for level in np.unique(j):
        sel = np.nonzero(j == level)[0]
        t = table[level]
        out[..., sel] = fn(t[..., lo[sel]], t[..., hi[sel] - (1 << level)])
    return out


def local_trend(steps, loss, at: np.ndarray | None = None, leverage: bool = False):
    """The two-sided local trend of `loss` (shape (n,) or (k, n): k curves on the same steps)
    at each step (or at the indices `at`): local quadratic in log(step), or local linear where
    the quadratic would let one logged loss weigh more than MAX_INFLUENCE. Non-finite losses
    are left out of every window. `leverage`: also return each point's weight on its own trend
    value (for the replicates' residuals)."""
    x = np.log(np.asarray(steps, float))
    x = x - x.mean()  # centred: the sums below lose little precision
    y = np.asarray(loss, float)
    ok = np.isfinite(y)
    w = np.ones(len(x)) if ok.all() else ok.astype(float)  # one row when every loss is finite
    y = np.where(ok, y, 0.0)
    at = np.arange(len(x)) if at is None else np.asarray(at)
    lo, hi = _windows(x, at)
    xi = x[at]

    def wsum(v):  # windowed sums via prefix sums, along the last axis
        c = np.concatenate([np.zeros(v.shape[:-1] + (1,)), np.cumsum(v, axis=-1)], axis=-1)
        return c[..., hi] - c[..., lo]

    S = [wsum(w * x ** k) for k in range(5)]  # sum of w x^k over each window
    T = [wsum(y * x ** k) for k in range(3)]  # sum of y x^k
    # moments about each point's own step: sum of w (x - x_i)^k, sum of y (x - x_i)^k
    m = [sum(math.comb(k, j) * (-xi) ** (k - j) * S[j] for j in range(k + 1)) for k in range(5)]
    v = [sum(math.comb(k, j) * (-xi) ** (k - j) * T[j] for j in range(k + 1)) for k in range(3)]
    with np.errstate(invalid="ignore", divide="ignore"):
        minor = m[2] * m[4] - m[3] ** 2
        det = m[0] * minor - m[1] * (m[1] * m[4] - m[2] * m[3]) + m[2] * (m[1] * m[3] - m[2] ** 2)
        quad = (v[0] * minor - m[1] * (v[1] * m[4] - m[3] * v[2]) + m[2] * (v[1] * m[3] - m[2] * v[2])) / det
        use_quad = (det > 1e-9 * m[0] * minor) & (minor / det <= MAX_INFLUENCE)  # (M^-1)_00: the leverage
        n = np.where(m[0] > 0, m[0], np.nan)
        xm, ym = m[1] / n, v[0] / n  # the window's mean offset in log-step, and mean loss
        sxx = m[2] - m[1] * xm
        lin = sxx > 1e-12 * np.maximum(m[2], 1e-300)
        slope = np.where(lin, (v[1] - m[1] * ym) / np.where(lin, sxx, 1), 0.0)
        # the line is evaluated no further from the window's centre than leverage
        # MAX_INFLUENCE allows (the first steps, spaced widely in log(step), sit far out)
        reach = np.sqrt(np.clip(MAX_INFLUENCE - 1 / n, 0, None) * np.where(lin, sxx, 0))
        off = np.clip(-xm, -reach, reach)
        trend = np.where(use_quad, quad, ym + slope * off)
        # Never outside the losses of its own window: next to a spike (a step loss 10x its
        # neighbours) a parabola swings far below every loss around it, and a run whose lowest
        # loss was 2.1 "reached" 0.5 (quickstart, B = 128, LR 1.0). A smoother lies between its data.
        trend = np.clip(trend, _range_extreme(np.where(ok, y, np.inf), lo, hi, np.minimum),
                        _range_extreme(np.where(ok, y, -np.inf), lo, hi, np.maximum))
        if not leverage:
            return trend
        # each point's weight on its own trend value, H_ii: quadratic (M^-1)_00; line 1/n + off·(x_i − x̄)/Sxx
        return trend, np.where(use_quad, minor / det, 1 / n + off * -xm / np.where(lin, sxx, np.inf))


def first_crossing(steps: np.ndarray, trend: np.ndarray, target: float) -> np.ndarray:
    """First step where `trend` ((n,) or (k, n)) is <= target, interpolated linearly between
    the logged steps around it; nan where never. The first logged step when it starts below."""
    steps = np.asarray(steps, float)
    tr = np.atleast_2d(trend)
    below = tr <= target
    any_ = below.any(axis=1)
    i = np.argmax(below, axis=1)
    rows = np.arange(len(tr))
    prev = np.maximum(i - 1, 0)
    y0, y1 = tr[rows, prev], tr[rows, i]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where((i > 0) & (y0 > y1), (y0 - target) / (y0 - y1), 1.0)
    s = np.where(i > 0, steps[prev] + frac * (steps[i] - steps[prev]), steps[i])
    s = np.where(any_, s, np.nan)
    return s if np.ndim(trend) > 1 else s[0]


def sparse(steps, s: float) -> bool:
    """Whether fewer than MIN_POINTS logged steps lie within the window around step s: the trend
    there spans a wider stretch of the curve than WINDOW, and bends with it (S may then be off
    by up to ~10% when only ~4 logged steps come before it)."""
    steps = np.asarray(steps, float)
    return bool(np.isfinite(s) and np.sum((steps >= s / WINDOW) & (steps <= s * WINDOW)) < MIN_POINTS)


def reach_step(steps, loss, target: float) -> float:
    """The lag-free S of one run: first crossing of the local trend."""
    return float(first_crossing(steps, local_trend(steps, loss), target))


def replicates(steps, loss, target: float, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """n_boot bootstrap replicates of reach_step (nan where the data never reach the target).
    Drawn over steps [S/REGION, S·REGION], read over [S/SPREAD, S·SPREAD]: a replicate that
    crosses outside reads as never (above) or at S/SPREAD (below)."""
    steps, loss = np.asarray(steps, float), np.asarray(loss, float)
    trend, lev = local_trend(steps, loss, leverage=True)
    s = float(first_crossing(steps, trend, target))
    if math.isnan(s):
        return np.full(n_boot, np.nan)
    keep = (steps >= s / REGION) & (steps <= s * REGION)
    st, tr = steps[keep], trend[keep]
    with np.errstate(invalid="ignore", divide="ignore"):  # residuals scaled back to the noise's size
        rel = (loss[keep] / tr - 1) / np.sqrt(np.clip(1 - lev[keep], 0.05, 1))
    rel = rel[np.isfinite(rel)]
    if len(st) < 2 or not len(rel):
        return np.full(n_boot, s)
    rel = rel - rel.mean()
    # a long curve is read at every k-th step with its noise scaled by 1/sqrt(k): the trend's
    # noise stays what it is on every step (independent noise), at a fixed cost per run
    k = max(1, -(-len(st) // MAX_REPLICATE_POINTS))
    st, tr = st[::k], tr[::k]
    at = np.nonzero((st >= s / SPREAD) & (st <= s * SPREAD))[0]
    draws = rel[rng.integers(0, len(rel), size=(n_boot, len(st)))] / math.sqrt(k)
    boot = first_crossing(st[at], local_trend(st, tr * (1 + draws), at), target)
    # a replicate curve is the trend smoothed once more, which shifts its crossing by the
    # smoothing's own (small) bias: re-centred on the run's S, the replicates keep only the spread
    mid = np.nanmedian(boot) if np.isfinite(boot).any() else s
    return boot + (s - mid)
