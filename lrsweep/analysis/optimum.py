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
    edge: str  # "low", "high" or "" (bracketed)
    suggest_lo: float  # LR range to add when at an edge (nan otherwise)
    suggest_hi: float
    note: str

    def as_dict(self) -> dict:
        return asdict(self)


def _sorted(lrs, values) -> tuple[np.ndarray, np.ndarray]:
    lrs, values = np.asarray(lrs, float), np.asarray(values, float)
    order = np.argsort(lrs)
    return lrs[order], values[order]


def grid_ratio(lrs: np.ndarray) -> float:
    """Typical multiplicative step of the grid (median of neighbour ratios); 10 if one point."""
    if len(lrs) < 2:
        return 10.0
    return float(np.median(lrs[1:] / lrs[:-1]))


def find_optimum(lrs, values, higher: bool, log_metric: bool = False) -> Optimum:
    """Best grid LR, refined by a parabola in log10(LR) through it and its two neighbours.

    Why a 3-point parabola and not a fit over the whole curve: the metric is only parabolic near
    its optimum; far points (often diverged, scored ±inf) would bend the fit. Because the middle
    point is the best of the three, the vertex lies within half a grid step of it, towards the
    better neighbour (the clip only guards rounding). `value_opt` is the parabola's value there,
    a rough guide only: next to a cliff (typical just below divergence) it overshoots.
    `log_metric`: fit log(metric) instead, for positive metrics that vary by factors (losses,
    step counts), where a parabola in the raw value can dip below zero.
    """
    lrs, values = _sorted(lrs, values)
    raw = values
    if log_metric:
        # a loss of exactly 0 (a memorised toy set) still counts as the best, not as -inf
        values = np.where(np.isfinite(values), np.log(np.maximum(values, 1e-300)), values)
    back = np.exp if log_metric else (lambda v: v)
    if len(lrs) == 0:
        raise ValueError("no learning rates")
    sign = 1.0 if higher else -1.0
    score = sign * values  # larger is better from here on
    if not np.isfinite(score).any():
        nan = math.nan
        return Optimum(nan, nan, nan, False, "", nan, nan, "every LR diverged or failed")
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
        return Optimum(best, best, best_v, False, edge, lo, hi,
                       f"best LR is the {side} on the grid: the optimum may lie beyond; "
                       f"add LRs from {lo:.3g} to {hi:.3g}")
    if len(lrs) == 1:
        return Optimum(best, best, best_v, False, "", math.nan, math.nan, "one LR only: nothing to interpolate")
    x = np.log10(lrs[i - 1:i + 2])
    y = score[i - 1:i + 2]
    if not np.isfinite(y).all():
        j = i - 1 if not np.isfinite(y[0]) else i + 1
        return Optimum(best, best, best_v, False, "", math.nan, math.nan,
                       f"LR {lrs[j]:.3g} next to it diverged or failed: grid best kept")
    a, b, c = np.polyfit(x, y, 2)
    if a >= 0:  # flat or convex through three points: no interior maximum to trust
        return Optimum(best, best, best_v, False, "", math.nan, math.nan, "flat around the best: grid best kept")
    xv = float(np.clip(-b / (2 * a), (x[0] + x[1]) / 2, (x[1] + x[2]) / 2))
    return Optimum(best, float(10 ** xv), float(back(sign * (a * xv * xv + b * xv + c))), True, "",
                   math.nan, math.nan, "")


def flat_range(lrs, values, higher: bool, tolerance: float) -> tuple[float, float, int]:
    """The contiguous LRs around the best whose metric is within `tolerance` (relative) of it.

    Relative for every metric so one rule covers accuracies, losses and step counts:
    within 1% of 0.96 accuracy means >= 0.9504; within 5% of 120 steps means <= 126.
    Returns (lo, hi, n_points); nan bounds when nothing finite was measured.
    """
    lrs, values = _sorted(lrs, values)
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
