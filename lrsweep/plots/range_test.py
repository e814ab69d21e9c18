"""Drawing only: a range test's loss vs LR (log x), one colour per batch size, the raw loss faint
under the smoothed one, the recommended suggestion marked and labelled, the others in the legend."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from lrsweep.plots.base import colours, legend_outside, log_ticks, new_axes, proxy

MARKERS = {"valley": "o", "steepest": "v", "minimum/10": "s", "clr-upper": "^", "clr-lower/3": "<", "clr-lower/4": ">"}
# The y range leaves out the first tenth of each curve, as the suggestions do: the bias-corrected
# EMA of the first steps is one noisy batch, and it set the range of the whole figure.
SKIP_START = 0.1
WARN = "#c0392b"


def _y_range(s: np.ndarray) -> tuple[float, float]:
    """(lowest, highest before the lowest) of a smoothed curve after its first tenth: the
    descent, without the blow-up at the end that would flatten it."""
    s = s[int(SKIP_START * len(s)):] if len(s) >= 10 else s
    m = int(np.argmin(s))
    return float(s[m]), float(s[: m + 1].max())


def plot_range_test(frame: pd.DataFrame, suggestions: dict[int, dict[str, Optional[float]]], ax=None,
                    chosen: Optional[str] = None, title: str = "", warnings: Optional[dict[int, str]] = None):
    """frame: range_test.csv (batch_size, lr, loss, smoothed_loss, val_loss); suggestions:
    {B: {name: lr or None}}. The `chosen` suggestion gets a star and a dotted line across, and
    its value goes into its batch size's legend entry; the others a small marker each, named
    in the legend.
    `warnings` {B: text} flags a chosen suggestion that depends on --min-lr (suggest.min_lr_check).
    Returns the axes (a new Figure's if ax is None)."""
    ax = ax if ax is not None else new_axes((8.4, 4.8))
    warnings = warnings or {}
    col = colours(frame["batch_size"].unique())
    lows, highs, has_val, warned = [], [], False, False
    for b, df in frame.groupby("batch_size", sort=True):
        c = col[b]
        if "loss" in df:
            raw = df[np.isfinite(df["loss"])]
            ax.plot(raw["lr"], raw["loss"], color=c, alpha=0.25, lw=0.7, zorder=1)
        ok = df[np.isfinite(df["smoothed_loss"])]
        lr, s = ok["lr"].to_numpy(float), ok["smoothed_loss"].to_numpy(float)
        pick = (suggestions.get(b) or {}).get(chosen) if chosen else None
        warn = bool(warnings.get(b)) and pick is not None
        named = f"B = {b}" + (f": {chosen} {pick:.2g}" + (" (!)" if warn else "") if pick is not None else "")
        ax.plot(lr, s, color=c, lw=2.0, zorder=3, label=named)
        if "val_loss" in df and df["val_loss"].notna().any():
            ax.plot(df["lr"], df["val_loss"], color=c, ls="--", lw=0.9, alpha=0.7, zorder=2)
            has_val = True
        if len(s):
            lo, hi = _y_range(s)
            lows.append(lo)
            highs.append(hi)
        for name, x in (suggestions.get(b) or {}).items():
            if x is None or not len(lr):
                continue
            y = float(np.interp(np.log(x), np.log(lr), s))
            if name != chosen:
                ax.plot([x], [y], marker=MARKERS.get(name, "x"), ms=6, color=c, mec="black", mew=0.5, ls="none",
                        zorder=4)
                continue
            warned |= warn
            ax.plot([x], [y], marker="*", ms=17, color=c, mec=WARN if warn else "black", mew=1.4 if warn else 0.9,
                    ls="none", zorder=6)
            ax.axvline(x, color=c, ls=":", lw=1.2, zorder=2)
    if chosen:
        proxy(ax, f"{chosen}: the recommended LR (dotted line)", marker="*", ms=13, color="white", mec="black")
    for name, m in MARKERS.items():  # one legend entry per other suggestion kind
        if name != chosen and any(name in (suggestions.get(b) or {}) for b in suggestions):
            proxy(ax, name, marker=m, color="white", mec="black", ms=6)
    proxy(ax, "faint: loss of each step", color="0.5", alpha=0.4, lw=0.8, ls="-")
    if has_val:
        proxy(ax, "dashed: validation loss", color="0.5", ls="--", lw=0.9)
    if warned:
        proxy(ax, f"(!) '{chosen}' depends on --min-lr", marker="*", ms=13, color="white", mec=WARN, mew=1.4)
    ax.set_xscale("log")
    if lows:  # the descent fills the figure; the raw noise and the blow-up run off it
        lo, hi = min(lows), max(highs)
        pad = max(hi - lo, 1e-3 * abs(hi))
        ax.set_ylim(lo - 0.15 * pad, hi + 0.25 * pad)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss (smoothed; faint: per step)")
    ax.set_title(title or "LR range test")
    ax.grid(True, which="major", alpha=0.3)
    legend_outside(ax)
    log_ticks(ax, "x")
    return ax
