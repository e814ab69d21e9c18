"""Training curves and per-run statistics: each batch size's best run against steps or examples,
and the loss oscillation and gradient norm against batch size, one line per LR."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from lrsweep.plots.base import batch_ticks, colours, legend_outside, log_ticks, new_axes, proxy, set_log

# The y range of a loss figure: from the lowest smoothed loss / LOW_MARGIN to the highest * HIGH_MARGIN.
# The raw per-step loss of a small batch dips to 1e-4 on one easy batch; it is noise around the
# smoothed curve, and letting it set the range squashed every curve into the top third.
LOW_MARGIN, HIGH_MARGIN = 2.0, 1.3


def loss_curves(curves: dict[float, pd.DataFrame], x: str = "step", ax: Optional[Axes] = None) -> Axes:
    """Train loss of each batch size's best run vs `x` (step or examples): raw per-step loss
    faint underneath, the smoothed loss the targets are judged on solid on top. The y range
    follows the smoothed curves. curves: B -> DataFrame with step, examples, train_loss, smoothed, lr."""
    ax = ax or new_axes()
    col = colours(curves)
    lows, highs = [], []
    for B, m in sorted(curves.items()):
        ax.plot(m[x], m["train_loss"], color=col[B], alpha=0.2, linewidth=0.6, zorder=1)
    for B, m in sorted(curves.items()):  # every smoothed line above every raw one
        ax.plot(m[x], m["smoothed"], color=col[B], linewidth=2.0, zorder=3,
                label=f"B = {B:g}, lr {m['lr'].iloc[0]:.3g}")
        s = pd.to_numeric(m["smoothed"], errors="coerce").to_numpy(float)
        s = s[np.isfinite(s) & (s > 0)]
        if len(s):
            lows.append(s.min())
            highs.append(s.max())
    proxy(ax, "faint: loss of each step", color="0.5", alpha=0.35, lw=0.8, ls="-")
    set_log(ax, "xy")
    if lows and ax.get_yscale() == "log":
        ax.set_ylim(min(lows) / LOW_MARGIN, max(highs) * HIGH_MARGIN)
    ax.set_xlabel({"step": "optimizer steps (log scale)", "examples": "training examples seen (log scale)"}[x])
    ax.set_ylabel("train loss (smoothed; log scale)")
    legend_outside(ax, title="best run per batch size", title_fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(f"best run per batch size: loss vs {'steps' if x == 'step' else 'examples'}")
    log_ticks(ax)
    return ax


def _per_batch(stats: pd.DataFrame, value: str, ylabel: str, title: str, ax: Optional[Axes]) -> Axes:
    """value vs batch size: a thin line per LR (a fixed-LR comparison), black for the best LR per B.
    Cells whose runs never learned (`learned` False: diverged-and-recovered or stuck at chance)
    are left out: their wobble is no property of the batch size, and it set the y range."""
    ax = ax or new_axes()
    learned = stats["learned"].astype(bool) if "learned" in stats else pd.Series(True, index=stats.index)
    left_out = stats[~learned & stats[value].notna()]
    kept = stats[learned]
    lrs = sorted(kept["lr"].unique())
    col = colours(lrs)
    markers = "os^vDP<>"
    for i, lr in enumerate(lrs):
        s = kept[kept["lr"] == lr].sort_values("batch_size")
        ax.plot(s["batch_size"], s[value], "-", marker=markers[i % len(markers)], ms=4, linewidth=1, alpha=0.75,
                color=col[lr], label=f"lr {lr:.3g}")
    best = kept[kept["is_best"].astype(bool)].sort_values("batch_size")
    ax.plot(best["batch_size"], best[value], "o-", color="black", linewidth=2.2, ms=6, label="best LR of each B",
            zorder=4)
    if len(left_out):
        proxy(ax, f"left out: {len(left_out)} cell{'s' * (len(left_out) > 1)} that did not learn", color="none")
    set_log(ax, "y")
    batch_ticks(ax, stats["batch_size"])
    ax.set_xlabel("batch size B (examples, log scale)")
    ax.set_ylabel(ylabel)
    legend_outside(ax, fontsize=7.5)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    log_ticks(ax, "y")
    return ax


def oscillation(stats: pd.DataFrame, ax: Optional[Axes] = None) -> Axes:
    """Per-step loss oscillation vs B (document 001). stats: batch_size, lr, oscillation, is_best, learned."""
    return _per_batch(stats, "oscillation", "std of step loss around its moving average (log scale)",
                      "per-step loss oscillation vs batch size", ax)


def grad_norm(stats: pd.DataFrame, ax: Optional[Axes] = None) -> Axes:
    """Mean global gradient norm vs B (document 004). stats: batch_size, lr, grad_norm_mean, is_best, learned."""
    return _per_batch(stats, "grad_norm_mean", "mean gradient norm ‖g‖ (log scale)",
                      "mean gradient norm vs batch size", ax)
