"""Where, between grid points, the best LR lies; whether the grid brackets it; how flat it is.

Everything here works on one batch size's curve: LRs and the (seed-mean) metric at each, with
diverged/failed cells already scored as ±inf by summary.scores. Pure functions, no I/O.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

# How many grid steps to add beyond an edge. The tuning playbook only says "expand the space";
# three more points at the grid's own spacing give the parabola a bracket with room to spare.
EDGE_EXTEND_STEPS = 3


@dataclass
class Optimum:
    lr_grid: float  # best LR on the grid
    lr_opt: float  # interpolated optimum (= lr_grid when no parabola could be fitted)
    value_opt: float  # metric at lr_opt, as the parabola predicts it
    interpolated: bool
    bracketed: bool  # a grid neighbour on each side: the optimum lies between them (fit it)
    edge: str  # "low", "high" or "" (not at the edge of the grid)
    suggest_lo: float  # LR range to add when at an edge (nan otherwise)
    suggest_hi: float
    note: str

    def as_dict(self) -> dict:
        return asdict(self)


def _sorted(lrs, *columns) -> tuple[np.ndarray, ...]:
    lrs = np.asarray(lrs, float)
    order = np.argsort(lrs)
    return (lrs[order], *[np.asarray(c)[order] for c in columns])


def grid_ratio(lrs: np.ndarray) -> float:
    """Typical multiplicative step of the grid (median of neighbour ratios); 10 if one point."""
    lrs = np.sort(np.asarray(lrs, float))
    if len(lrs) < 2:
        return 10.0
    return float(np.median(lrs[1:] / lrs[:-1]))


def interpolation_error(ratio: float) -> float:
    """How far (in decades) the 3-point parabola's vertex can miss a real optimum on a grid with
    neighbour ratio `ratio`, step h = log10(ratio): the lower end of the error for an optimum
    that is not quite a parabola.

    Near its optimum a metric curve is f(u) = −a·u² + c·u³ (u = log10 LR − log10 LR*). The
    parabola through the grid points u0 − h, u0, u0 + h has its vertex at c·(h² − 3·u0²)/(2a)
    to first order in c: between c·h²/(8a) (u0 = ±h/2) and c·h²/(2a) (u0 = 0). For a curve twice
    as steep one decade above the optimum as one decade below (c/a = 1/3, the typical shape next
    to divergence) the smaller end is h²/24: 0.010 decades on a half-decade grid (the issue's
    measured ~0.01), 0.004 on a factor-2 grid, 0.04 on a decade grid. Two laws whose residual
    errors differ by less than this cannot be told apart by these optima.
    """
    return math.log10(ratio) ** 2 / 24


def _vertex(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """The parabola y = a x² + b x + c through three points (closed form: polyfit costs 100 µs,
    and the seed bootstrap interpolates thousands of times)."""
    d1, d2 = (y[1] - y[0]) / (x[1] - x[0]), (y[2] - y[1]) / (x[2] - x[1])
    a = (d2 - d1) / (x[2] - x[0])
    b = d1 - a * (x[0] + x[1])
    return float(a), float(b), float(y[0] - a * x[0] ** 2 - b * x[0])


def find_optimum(lrs, values, higher: bool, log_metric: bool = False, failures=None) -> Optimum:
    """Best grid LR, refined by a parabola in log10(LR) through it and its two neighbours.

    Why a 3-point parabola and not a fit over the whole curve: the metric is only parabolic near
    its optimum; far points (often diverged, scored ±inf) would bend the fit. Because the middle
    point is the best of the three, the vertex lies within half a grid step of it, towards the
    better neighbour (the clip only guards rounding): lr_opt never leaves the bracket of the
    grid best's neighbours. `value_opt` is the parabola's value there, a rough guide only.
    `log_metric`: fit log(metric) instead, for positive metrics that vary by factors (losses,
    step counts), where a parabola in the raw value can dip below zero.
    `failures`: per LR, "" where its cell trained, else what happened ("diverged", "stayed at
    chance", ...); default: a non-finite value "diverged or failed". Next to a neighbour that did
    not train the curve has a cliff, and a parabola through a cliff puts its vertex away from it
    for no reason in the data: the grid best is kept, not interpolated, and marked unreliable.
    It is still `bracketed` (a neighbour that diverged is worse: the optimum lies between the
    neighbours) and fitted at the grid best: with SGD the optimum often sits just below the edge
    of stability, and leaving those out would leave little to fit.
    """
    if failures is None:
        failures = np.where(np.isfinite(np.asarray(values, float)), "", "diverged or failed")
    lrs, values, failures = _sorted(lrs, np.asarray(values, float), failures)
    raw = values
    if log_metric:
        # a loss of exactly 0 (a memorised toy set) still counts as the best, not as -inf
        values = np.where(np.isfinite(values), np.log(np.maximum(values, 1e-300)), values)
    back = np.exp if log_metric else (lambda v: v)
    if len(lrs) == 0:
        raise ValueError("no learning rates")
    sign = 1.0 if higher else -1.0
    score = sign * values  # larger is better from here on
    nan = math.nan
    if not np.isfinite(score).any():
        every = "every LR diverged or failed" if all(f in ("diverged", "stalled", "failed", "diverged or failed")
                                                    for f in failures) else "no LR has a value"
        return Optimum(nan, nan, nan, False, False, "", nan, nan, every)
    i = int(np.nanargmax(np.where(np.isfinite(score), score, -np.inf)))
    best, best_v = float(lrs[i]), float(raw[i])
    edge = ""
    if len(lrs) > 1 and i == 0:
        edge = "low"
    elif len(lrs) > 1 and i == len(lrs) - 1:
        edge = "high"
    if edge:
        r = grid_ratio(lrs) ** EDGE_EXTEND_STEPS
        lo, hi = (best / r, best) if edge == "low" else (best, best * r)
        side = "smallest" if edge == "low" else "largest"
        return Optimum(best, best, best_v, False, False, edge, lo, hi,
                       f"best LR is the {side} on the grid: the optimum may lie beyond; "
                       f"add LRs from {lo:.3g} to {hi:.3g}")
    if len(lrs) == 1:
        return Optimum(best, best, best_v, False, False, "", nan, nan,
                       "one LR only: nothing to interpolate, the optimum is not bracketed")
    bad = [j for j in (i - 1, i + 1) if failures[j] or not np.isfinite(score[j])]
    if bad:
        what = "; ".join(f"LR {lrs[j]:.3g} next to it {failures[j] or 'has no value'}" for j in bad)
        return Optimum(best, best, best_v, False, True, "", nan, nan,
                       f"{what}: grid best kept, not interpolated across it (unreliable: the optimum "
                       f"lies between {lrs[i - 1]:.3g} and {lrs[i + 1]:.3g})")
    x = np.log10(lrs[i - 1:i + 2])
    a, b, c = _vertex(x, score[i - 1:i + 2])
    if a >= 0:  # flat or convex through three points: no interior maximum to trust
        return Optimum(best, best, best_v, False, True, "", nan, nan, "flat around the best: grid best kept")
    xv = float(np.clip(-b / (2 * a), (x[0] + x[1]) / 2, (x[1] + x[2]) / 2))
    return Optimum(best, float(10 ** xv), float(back(sign * (a * xv * xv + b * xv + c))), True, True, "",
                   nan, nan, "")


def flat_range(lrs, values, higher: bool, tolerance: float) -> tuple[float, float, int]:
    """The contiguous LRs around the best whose metric is within `tolerance` (relative) of it.

    Relative for every metric so one rule covers accuracies, losses and step counts:
    within 1% of 0.96 accuracy means >= 0.9504; within 5% of 120 steps means <= 126.
    Returns (lo, hi, n_points); nan bounds when nothing finite was measured.
    """
    lrs, values = _sorted(lrs, np.asarray(values, float))
    sign = 1.0 if higher else -1.0
    score = np.where(np.isfinite(values), sign * values, -np.inf)
    if not np.isfinite(score).any():
        return math.nan, math.nan, 0
    i = int(np.argmax(score))
    best = values[i]
    bound = best - sign * tolerance * abs(best)
    ok = np.isfinite(values) & (sign * values >= sign * bound)
    lo = hi = i
    while lo > 0 and ok[lo - 1]:
        lo -= 1
    while hi < len(lrs) - 1 and ok[hi + 1]:
        hi += 1
    return float(lrs[lo]), float(lrs[hi]), hi - lo + 1
