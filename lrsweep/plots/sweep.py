"""The sweep grid's figures: the metric in every cell (heatmap) and against LR per batch size.
Inputs are the tables report.py builds; nothing is computed here beyond what drawing needs
(cell edges, colours, where a mark goes)."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.collections import PatchCollection
from matplotlib.colors import Normalize
from matplotlib.patches import Rectangle
from matplotlib.ticker import FixedLocator

from lrsweep.plots.base import BAD, colours, legend_outside, log_ticks, new_axes, proxy, set_log


def _edges(x: np.ndarray) -> np.ndarray:
    """Cell edges at geometric midpoints: the grid is spaced in log LR."""
    if len(x) == 1:
        return np.array([x[0] / 2, x[0] * 2])
    mid = np.sqrt(x[1:] * x[:-1])
    return np.concatenate([[x[0] ** 2 / mid[0]], mid, [x[-1] ** 2 / mid[-1]]])


def heatmap(cells: pd.DataFrame, metric: str, higher: bool, best: Optional[pd.DataFrame] = None,
            ax: Optional[Axes] = None) -> Axes:
    """Metric over log-LR (x) x batch size (rows). cells: batch_size, lr, mean, and optional
    n, n_diverged, n_failed counts. Cells without a value (diverged, failed, target never reached)
    are hatched and labelled, cells never run dotted; `best` (batch_size, best_lr) gets a black frame."""
    ax = ax or new_axes((7.2, 0.55 * cells["batch_size"].nunique() + 2.2))
    sizes = sorted(cells["batch_size"].unique())
    finite = cells["mean"][np.isfinite(cells["mean"])]
    norm = Normalize(finite.min(), finite.max()) if len(finite) else Normalize(0, 1)
    cmap = colormaps["viridis" if higher else "viridis_r"]
    patches, colours = [], []
    annotate = len(cells) <= 120
    for row, B in enumerate(sizes):
        c = cells[cells["batch_size"] == B].sort_values("lr")
        lrs = c["lr"].to_numpy(float)
        edges = _edges(lrs)
        for j, r in enumerate(c.itertuples(index=False)):
            x0, x1 = edges[j], edges[j + 1]
            rect = Rectangle((x0, row - 0.5), x1 - x0, 1)
            ran = getattr(r, "n", 1) > 0  # NaN (a cell only the sweep file knows) is False
            if np.isfinite(r.mean):
                patches.append(rect)
                colours.append(r.mean)
                label = f"{r.mean:.3g}"
            elif ran:
                bad = "div" if getattr(r, "n_diverged", 0) or getattr(r, "n_stalled", 0) else \
                    "fail" if getattr(r, "n_failed", 0) else "—"
                ax.add_patch(Rectangle((x0, row - 0.5), x1 - x0, 1, facecolor="0.85", hatch="xx",
                                       edgecolor="0.55", linewidth=0))
                label = bad
            else:
                ax.add_patch(Rectangle((x0, row - 0.5), x1 - x0, 1, fill=False, linestyle=":", edgecolor="0.5"))
                label = "not run"
            if annotate:
                mid = math.sqrt(x0 * x1)
                shade = cmap(norm(r.mean)) if np.isfinite(r.mean) else (1, 1, 1, 1)
                dark = sum(shade[:3]) < 1.5
                ax.text(mid, row, label, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    pc = PatchCollection(patches, cmap=cmap, norm=norm, linewidth=0)
    pc.set_array(np.asarray(colours, float))
    ax.add_collection(pc)
    if best is not None:
        for _, b in best.iterrows():
            if not np.isfinite(b["best_lr"]):
                continue
            row = sizes.index(b["batch_size"])
            lrs = np.sort(cells.loc[cells["batch_size"] == b["batch_size"], "lr"].to_numpy(float))
            e = _edges(lrs)
            j = int(np.argmin(np.abs(np.log(lrs / b["best_lr"]))))
            ax.add_patch(Rectangle((e[j], row - 0.5), e[j + 1] - e[j], 1, fill=False, edgecolor="black", linewidth=2))
    ax.set_xscale("log")
    all_edges = np.concatenate([_edges(np.sort(cells.loc[cells["batch_size"] == B, "lr"].to_numpy(float))) for B in sizes])
    ax.set_xlim(all_edges.min(), all_edges.max())
    ax.set_ylim(-0.5, len(sizes) - 0.5)
    ax.set_yticks(range(len(sizes)), [str(int(B)) if float(B).is_integer() else str(B) for B in sizes])
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("batch size B (examples)")
    ax.figure.colorbar(pc, ax=ax, label=metric + (" (higher is better)" if higher else " (lower is better)"))
    ax.set_title(f"{metric} per cell; black frame = best LR per batch size")
    log_ticks(ax, "x")
    return ax


def _bad_kind(r) -> str:
    """Why a cell has no value, for its mark: diverged (or stalled), failed, or no value (target never reached)."""
    if getattr(r, "n_diverged", 0) or getattr(r, "n_stalled", 0):
        return "diverged"
    return "failed" if getattr(r, "n_failed", 0) else "no value"


# How a cell without a value is marked in the strip under the curves, per reason.
BAD_MARKS = {"diverged": dict(marker="x", ms=7, mew=1.6), "failed": dict(marker="D", ms=5, mfc="none", mew=1.2),
             "no value": dict(marker="o", ms=5, mfc="none", mew=1.2)}


def metric_vs_lr(cells: pd.DataFrame, metric: str, logy: bool = False, best: Optional[pd.DataFrame] = None,
                 ax: Optional[Axes] = None) -> Axes:
    """One line per batch size: the seed-mean metric vs LR, with ±1 std bars only where a cell has
    2+ seeds. Cells without a value (diverged, failed, target never reached: mean ±inf) leave a
    gap and are marked in a strip under the curves, a row per batch size that has any, in its
    colour, so two batch sizes diverging at the same LR stay apart. `best` (batch_size, best_lr)
    puts a star on each batch size's best LR. cells: batch_size, lr, mean, std, n (n_diverged,
    n_failed). `logy` for losses."""
    ax = ax or new_axes()
    col = colours(cells["batch_size"].unique())
    sizes = sorted(col)
    multi = "n" in cells and bool((cells["n"] >= 2).any()) and cells["std"].notna().any()
    best_lr = {} if best is None else {b: lr for b, lr in zip(best["batch_size"], best["best_lr"]) if np.isfinite(lr)}
    bad = {}  # B -> its cells without a value
    for B in sizes:
        c = cells[cells["batch_size"] == B].sort_values("lr")
        ok = np.isfinite(c["mean"])
        y = c["mean"].where(ok)
        ax.plot(c["lr"], y, marker="o", ms=4, color=col[B], label=f"B = {B:g}", zorder=3)
        std = c["std"].where(ok & (c["n"] >= 2)) if {"std", "n"} <= set(c.columns) else None
        if multi and std is not None and std.notna().any():  # a single seed has no spread: no bar
            ax.errorbar(c["lr"], y, yerr=std, fmt="none", ecolor=col[B], elinewidth=1, capsize=2.5, zorder=3)
        if B in best_lr:
            at = c[np.isclose(c["lr"], best_lr[B], rtol=1e-9) & ok]
            ax.plot(at["lr"], at["mean"], "*", ms=15, color=col[B], mec="black", mew=0.8, zorder=5)
        if (~ok).any():
            bad[B] = c[~ok]
            ax.plot(c.loc[~ok, "lr"], np.full(int((~ok).sum()), np.nan))  # keeps the LR in the x range
    if best_lr:
        proxy(ax, "best LR of each B", marker="*", ms=12, color="white", mec="black")
    set_log(ax, "xy" if logy else "x")
    log_ticks(ax)
    kinds = _strip(ax, bad, col) if bad else set()
    for kind in ("diverged", "failed", "no value"):
        if kind in kinds:
            text = {"no value": "no value (target never reached)"}.get(kind, kind)
            proxy(ax, text + " (strip below)", color=BAD, **BAD_MARKS[kind])
    ax.set_xlabel("learning rate (log scale)")
    spread = "mean ± std over seeds" if multi else "one seed"
    ax.set_ylabel(f"{metric} ({spread}{', log scale' if logy else ''})")
    legend_outside(ax)
    ax.grid(True, alpha=0.3)
    ax.set_title(f"{metric} vs learning rate")
    return ax


def _strip(ax: Axes, bad: dict, col: dict) -> set:
    """The cells without a value, in a strip under the data: the y range grows downwards, a
    line separates the strip, and the y ticks stay on the data (no accuracy of -0.2)."""
    lo, hi = ax.get_ylim()
    log = ax.get_yscale() == "log"
    ticks = [t for t in ax.get_yticks() if lo <= t <= hi]
    row_h, pad = min(0.055, 0.2 / len(bad)), 0.02  # axes fraction per row (the strip stays under ~1/4), around them
    strip = 2 * pad + row_h * len(bad)
    room = strip / (1 - strip)  # the data range grows by this so the strip sits below it
    ax.set_ylim(lo / (hi / lo) ** room if log else lo - room * (hi - lo), hi)
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.axhline(lo, color="0.6", lw=0.8, zorder=1)
    trans = ax.get_xaxis_transform()
    kinds = set()
    for j, (B, cells) in enumerate(sorted(bad.items())):
        y = pad + row_h * (len(bad) - 1 - j + 0.5)  # the smallest B on top, as in the legend
        for r in cells.itertuples(index=False):
            kind = _bad_kind(r)
            kinds.add(kind)
            ax.plot([r.lr], [y], ls="none", color=col[B], transform=trans, zorder=4, **BAD_MARKS[kind])
        ax.text(-0.01, y, f"B={B:g}", transform=ax.transAxes, fontsize=7, ha="right", va="center", color=col[B],
                clip_on=False)  # in the tick label column, which the strip leaves empty
    return kinds
