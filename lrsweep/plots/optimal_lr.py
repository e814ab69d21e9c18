"""The optimal LR against batch size, with the fitted laws: what each point is (an interpolated
optimum, a grid best kept at a cliff, a bound at the grid's edge, a budget-limited one), where
the grid best and the flat range lie, and one measure per law (the residual standard error the
ranking uses)."""
from __future__ import annotations

import math
import textwrap
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from lrsweep.plots.base import batch_ticks, legend_outside, log_ticks, new_axes, proxy

# Curves closer than this everywhere (decades of LR) are one line to the eye: drawn once, named together.
SAME_CURVE = 0.005
LAW_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")
LABEL_WIDTH = 46  # characters per legend line: long law names wrap instead of squeezing the axes
DASHES = ((0, (6, 2)), (0, (2, 1.5)), (0, (8, 2, 2, 2)), (0, (4, 1, 1, 1, 1, 1)), (0, (1, 1)), (0, (10, 3)))


def _merge_same(laws: list[dict]) -> list[dict]:
    """Laws whose curves coincide (a law that reduced to another, e.g. surge and sqrt with
    B_noise at its bound) as one entry, so no law hides under another unnamed."""
    out: list[dict] = []
    for law in laws:
        for kept in out:
            if len(kept["lr"]) == len(law["lr"]) and np.allclose(kept["B"], law["B"]) and \
                    np.nanmax(np.abs(np.log10(kept["lr"]) - np.log10(law["lr"]))) < SAME_CURVE:
                kept["names"].append(law["name"])
                break
        else:
            out.append({**law, "names": [law["name"]]})
    return out


def _wrap(text: str) -> str:
    return textwrap.fill(text, LABEL_WIDTH, subsequent_indent="   ")


def _label(law: dict) -> str:
    names = " = ".join(law["names"]) + (" (the same curve here)" if len(law["names"]) > 1 else "")
    se = f"se {law['se']:.3f}" if np.isfinite(law.get("se", math.nan)) else "se —"
    rank = law.get("rank", math.nan)
    if np.isfinite(rank):
        return _wrap(f"#{int(rank)} {names}: {se}")
    what = "prediction, not ranked" if law.get("kind") == "anchored" else "not ranked"
    return _wrap(f"{what}: {names}: {se}")


def _col(points: pd.DataFrame, name: str, default) -> pd.Series:
    return points[name] if name in points else pd.Series(default, index=points.index)


def optimal_lr(points: pd.DataFrame, laws: list[dict], tolerance: Optional[float] = None,
               metric: Optional[str] = None, ax: Optional[Axes] = None) -> Axes:
    """Optimal LR vs batch size, log-log.

    points (the best-LR table): batch_size, lr_opt, best_lr, bracketed, interpolated, edge,
    flat_lo, flat_hi, lr_opt_lo, lr_opt_hi (90% interval over seeds), budget_limited; missing
    columns are simply not drawn. laws: best first, each {name, rank (NaN: not ranked), se
    (residual standard error, decades: the ranking key), kind (fit, rule, or anchored: a
    prediction), at_bound (a parameter at its search bound), B, lr (the curve)}.
    `tolerance` and `metric` word the flat range's legend entry."""
    ax = ax or new_axes((9.2, 4.8))
    fin = lambda s: np.isfinite(pd.to_numeric(s, errors="coerce").astype(float))  # noqa: E731
    pts = points[fin(_col(points, "lr_opt", math.nan))]
    ys: list[float] = list(pts["lr_opt"])

    # A law not ranked because a parameter sits at its search bound is one arbitrary point of a
    # valley of equally good fits: named in the legend, not drawn as if it were a curve.
    unbounded = [law for law in laws if not (law.get("at_bound") and not np.isfinite(law.get("rank", math.nan)))]
    bounded = [law["name"] for law in laws if law not in unbounded]
    drawn = _merge_same([dict(law) for law in unbounded])
    for i, law in reversed(list(enumerate(drawn))):  # the best drawn last: on top
        ranked = np.isfinite(law.get("rank", math.nan))
        style = dict(color=LAW_COLOURS[i % len(LAW_COLOURS)], zorder=2 + (i == 0))
        if i == 0 and ranked:
            style.update(ls="-", lw=2.4)
        else:
            style.update(ls=DASHES[i % len(DASHES)] if ranked else ":", lw=1.5, alpha=1.0 if ranked else 0.85)
        ax.plot(law["B"], law["lr"], label=_label(law), **style)
    # legend order: laws best first (they were drawn in reverse)
    handles, labels = ax.get_legend_handles_labels()
    handles, labels = handles[::-1], labels[::-1]
    if bounded:
        handles.append(ax.plot([], [], ls="none")[0])
        labels.append(_wrap(f"not ranked, not drawn (a parameter at its search bound): {', '.join(bounded)}"))
    n_laws = len(handles)

    flat_lo, flat_hi = _col(pts, "flat_lo", math.nan).astype(float), _col(pts, "flat_hi", math.nan).astype(float)
    wide = fin(flat_lo) & fin(flat_hi) & (flat_hi > flat_lo)
    if wide.any():
        ax.vlines(pts.loc[wide, "batch_size"], flat_lo[wide], flat_hi[wide], color="0.55", lw=7, alpha=0.35, zorder=1)
        within = f"within {tolerance:.0%} of the best" if tolerance is not None else "near the best"
        proxy(ax, f"flat range: grid LRs {within}" + (f" {metric}" if metric else ""), color="0.55", lw=7,
              alpha=0.35, ls="-")
        ys += list(flat_lo[wide]) + list(flat_hi[wide])
    grid = pts[fin(_col(pts, "best_lr", math.nan))]
    if len(grid):
        ax.plot(grid["batch_size"], grid["best_lr"], "s", ms=7, mfc="none", mec="0.3", mew=1.0, zorder=4,
                label="grid best LR")
        ys += list(grid["best_lr"])

    bracketed = _col(pts, "bracketed", True).astype(bool)
    interpolated = _col(pts, "interpolated", True).astype(bool)
    good, kept, edge = pts[bracketed & interpolated], pts[bracketed & ~interpolated], pts[~bracketed]
    lo, hi = _col(good, "lr_opt_lo", math.nan).astype(float), _col(good, "lr_opt_hi", math.nan).astype(float)
    ci = fin(lo) & fin(hi)
    if ci.any():
        g = good[ci]
        err = np.clip([g["lr_opt"] - lo[ci], hi[ci] - g["lr_opt"]], 0, None)
        ax.errorbar(g["batch_size"], g["lr_opt"], yerr=err, fmt="none", ecolor="black", elinewidth=1.2, capsize=3,
                    zorder=5)
        ys += list(lo[ci]) + list(hi[ci])
    if len(good):
        ax.plot(good["batch_size"], good["lr_opt"], "o", color="black", ms=7, zorder=6,
                label="optimum (interpolated)" + (", 90% interval over seeds" if ci.any() else ""))
    if len(kept):
        ax.plot(kept["batch_size"], kept["lr_opt"], "D", color="#e69f00", mec="black", ms=7, zorder=6,
                label="unreliable: grid best kept, not interpolated\n(next to an LR that did not learn, or flat)")
    if len(edge):
        up = _col(edge, "edge", "") == "high"
        for sel, marker, side in ((up, "^", "largest"), (~up, "v", "smallest")):
            if sel.any():
                ax.plot(edge.loc[sel, "batch_size"], edge.loc[sel, "lr_opt"], marker, ms=8, mfc="none", mec="red",
                        mew=1.5, zorder=6, label=f"not bracketed: {side} LR on the grid (a bound, not fitted)")
    budget = pts[_col(pts, "budget_limited", False).astype(bool)]
    if len(budget):
        ax.plot(budget["batch_size"], budget["lr_opt"], "o", ms=16, mfc="none", mec="#b0226e", mew=1.6, zorder=7,
                label="budget-limited: its best run ended before\nthe train-loss target (fewer steps)")

    all_sizes = points["batch_size"].to_numpy(float)
    if len(all_sizes):
        batch_ticks(ax, all_sizes)
        ax.set_xlim(all_sizes.min() / 1.5, all_sizes.max() * 1.5)
    ax.set_yscale("log")
    # the range of the measurements: a law far off them (the linear rule, often) runs out of the
    # figure rather than squeezing the points into a corner
    ys = np.asarray([y for y in ys if np.isfinite(y) and y > 0], float)
    if len(ys):
        ax.set_ylim(ys.min() / 2, ys.max() * 2)
    ax.set_xlabel("batch size B (examples, log scale)")
    ax.set_ylabel("optimal learning rate (log scale)")
    h2, l2 = ax.get_legend_handles_labels()
    extra = [(h, lab) for h, lab in zip(h2, l2) if lab not in labels]
    legend_outside(ax, handles=handles + [h for h, _ in extra], labels=labels + [lab for _, lab in extra],
                   title=("laws, best first (se: residual std error,\ndecades of LR; the ranking key)" if n_laws else None),
                   title_fontsize=7, fontsize=7.5)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("optimal LR vs batch size, with fitted laws")
    log_ticks(ax, "y")
    return ax
