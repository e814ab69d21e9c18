"""Drawing only: smoothed loss vs LR (log x), one line per batch size, suggestions marked."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

MARKERS = {"valley": "o", "steepest": "v", "minimum/10": "s", "clr-upper": "^", "clr-lower/3": "<", "clr-lower/4": ">"}


def plot_range_test(frame: pd.DataFrame, suggestions: dict[int, dict[str, Optional[float]]], ax=None,
                    chosen: Optional[str] = None, title: str = ""):
    """frame: range_test.csv (batch_size, lr, smoothed_loss, val_loss); suggestions: {B: {name: lr or None}}.
    The `chosen` suggestion gets a larger marker. Returns the axes (a new Figure's if ax is None)."""
    if ax is None:
        from matplotlib.figure import Figure
        ax = Figure(figsize=(7, 4.5), layout="constrained").subplots()
    colors = [f"C{i}" for i in range(10)]
    tops, bottoms, has_val = [], [], False
    for i, (b, df) in enumerate(frame.groupby("batch_size", sort=True)):
        color = colors[i % len(colors)]
        ok = df[np.isfinite(df["smoothed_loss"])]
        lr, s = ok["lr"].to_numpy(), ok["smoothed_loss"].to_numpy()
        ax.plot(lr, s, color=color, label=f"B={b}")
        if "val_loss" in df and df["val_loss"].notna().any():
            ax.plot(df["lr"], df["val_loss"], color=color, ls="--", lw=0.8, alpha=0.6)
            has_val = True
        if len(s):  # the y range: from the lowest point up to the highest before it (not the blow-up)
            bottoms.append(s.min())
            tops.append(s[: s.argmin() + 1].max())
        for name, x in (suggestions.get(b) or {}).items():
            if x is None or not len(lr):
                continue
            y = np.interp(np.log(x), np.log(lr), s)
            big = name == chosen
            ax.plot([x], [y], marker=MARKERS.get(name, "x"), ms=10 if big else 6, color=color,
                    mec="black", mew=1.2 if big else 0.5, ls="none")
    if has_val:
        ax.plot([], [], color="gray", ls="--", lw=0.8, label="validation loss")
    for name, m in MARKERS.items():  # one legend entry per suggestion kind, in black
        if any(name in (suggestions.get(b) or {}) for b in suggestions):
            ax.plot([], [], marker=m, color="white", mec="black", ls="none",
                    label=name + (" (chosen)" if name == chosen else ""))
    ax.set_xscale("log")
    if tops:  # keep the blow-up at the end from flattening the interesting part
        lo, hi = min(bottoms), max(tops)
        ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.25 * (hi - lo))
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed training loss")
    ax.set_title(title or "LR range test")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return ax
