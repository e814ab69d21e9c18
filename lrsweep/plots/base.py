"""What every figure shares: the axes, log scales with readable ticks, the colours of an
ordered axis (batch sizes, LRs), and a legend that never covers the data."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator

# Saturated colours, cool to warm, each visible on white (viridis's light green end was not):
# an ordered axis (B small to large) reads left to right along this list.
# Evenly spaced picks stay apart: 5 batch sizes get indigo, teal, amber, vermillion, magenta.
PALETTE = ("#2c3e9e", "#1f77b4", "#17a589", "#5a9e1b", "#e69f00", "#d55e00", "#a50f15", "#b0226e")
# The dotted style of an LR that did not learn, a diverged cell, ...: one grey for every "bad" mark.
BAD = "0.45"


def new_axes(figsize=(7.6, 4.4)) -> Axes:
    return Figure(figsize=figsize, layout="constrained").add_subplot()


def save(ax: Axes, path: str | Path, dpi: int = 110) -> Path:
    ax.figure.savefig(path, dpi=dpi)
    return Path(path)


def colours(values: Iterable) -> dict:
    """One colour per value (batch size or LR), in sorted order, the same rule in every figure."""
    values = sorted(set(values))
    n = len(values)
    if n <= len(PALETTE):  # spread over the palette, ends included
        idx = [round(i * (len(PALETTE) - 1) / max(n - 1, 1)) for i in range(n)]
        return {v: PALETTE[i] for v, i in zip(values, idx)}
    cmap = colormaps["plasma"]
    return {v: cmap(0.82 * i / (n - 1)) for i, v in enumerate(values)}


def set_log(ax: Axes, which: str = "xy") -> None:
    """Log scale on the axes whose plotted data has a positive value (a run too short for a
    statistic leaves only NaN, and matplotlib refuses to log-scale nothing)."""
    for name in which:
        data = [np.asarray(ln.get_xdata() if name == "x" else ln.get_ydata(), float) for ln in ax.lines]
        values = np.concatenate(data) if data else np.array([])
        if np.any(np.isfinite(values) & (values > 0)):
            (ax.set_xscale if name == "x" else ax.set_yscale)("log")


def _fmt(v: float, _pos=None) -> str:
    return f"{v:g}"


def log_ticks(ax: Axes, axes: str = "xy") -> None:
    """Log axes labelled 0.01, 0.02, 0.05 (or 1 to 9 within a decade) rather than 10^-2 alone:
    a value can be read off a figure spanning two decades. Call after the limits are final."""
    for name in axes:
        axis = ax.xaxis if name == "x" else ax.yaxis
        if axis.get_scale() != "log":
            continue
        lo, hi = sorted(ax.get_xlim() if name == "x" else ax.get_ylim())
        decades = math.log10(hi / lo) if lo > 0 else math.inf
        if decades > 4:
            subs = (1.0,)
        elif decades > 2.5:
            subs = (1.0, 3.0)
        elif decades > (0.7 if name == "x" else 1.3):  # x labels are wider: fewer of them fit
            subs = (1.0, 2.0, 5.0)
        else:
            subs = (1.0, 2.0, 3.0, 5.0) if decades > 0.8 else tuple(range(1, 10))
        axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=30))
        axis.set_major_formatter(FuncFormatter(_fmt))
        axis.set_minor_locator(LogLocator(base=10, subs=tuple(range(1, 10)), numticks=30) if decades <= 8 else NullLocator())
        axis.set_minor_formatter(NullFormatter())


def batch_ticks(ax: Axes, sizes: Iterable[float]) -> None:
    """The x axis of a figure against batch size, log base 2, ticked at the measured sizes only."""
    sizes = sorted({float(b) for b in sizes if np.isfinite(b) and b > 0})
    if not sizes:
        return
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(sizes))
    ax.xaxis.set_major_formatter(FuncFormatter(_fmt))
    ax.xaxis.set_minor_locator(NullLocator())


def legend_outside(ax: Axes, **kw):
    """The legend to the right of the axes (constrained layout makes room): it never hides data.
    None when there is nothing to name (a group where nothing could be drawn)."""
    if not (kw.get("handles") if "handles" in kw else ax.get_legend_handles_labels()[0]):
        return None
    kw.setdefault("fontsize", 8)
    return ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kw)


def proxy(ax: Axes, label: str, **style) -> None:
    """A legend entry for marks that are drawn without a label (one per batch size)."""
    ax.plot([], [], ls=style.pop("ls", "none"), label=label, **style)
