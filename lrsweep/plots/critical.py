"""Steps S against examples E to a train-loss target, with the fitted hyperbola
(S/S_min − 1)(E/E_min − 1) = 1 and how uncertain it is."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes

from lrsweep.plots.base import legend_outside, log_ticks, new_axes, proxy, set_log


def _span(f: dict, name: str) -> str:
    lo, hi = f.get(f"{name}_lo", math.nan), f.get(f"{name}_hi", math.nan)
    return f" [{lo:.3g}–{hi:.3g}]" if np.isfinite([lo, hi]).all() else ""


def critical_batch(points: dict[float, pd.DataFrame], fits: dict[float, dict],
                   hyperbolas: dict[float, tuple[np.ndarray, np.ndarray]],
                   bands: Optional[dict[float, tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]]] = None,
                   ax: Optional[Axes] = None) -> Axes:
    """Steps S vs examples E to reach each train-loss target (one colour per target).

    points: target -> batch_size, S, E (S_lo, S_hi: each S's 90% interval, drawn as bars);
    fits: target -> B_noise, S_min, E_min with their _lo/_hi (in the legend, and a cross at
    (E_min, S_min) spanning both intervals); hyperbolas: target -> (S, E) of the fitted curve;
    bands: target -> ((S, E), (S, E)), two curves filled between (at each B both lie on the
    line S = E/B, so the fill joins points of the same B): how far the fit could move, e.g. the
    best fits with B_noise at either end of its interval (output.figure_data.critical_curves)."""
    ax = ax or new_axes((8.2, 4.6))
    cmap = colormaps["tab10"]
    bands = bands or {}
    crossed = banded = False
    for i, (t, p) in enumerate(sorted(points.items(), reverse=True)):
        c = cmap(i % 10)
        f = fits.get(t, {})
        bn = f.get("B_noise", math.nan)
        fit = f"B_noise {bn:.3g}{_span(f, 'B_noise')}" if np.isfinite(bn) else "no fit (see the report's note)"
        ax.plot(p["E"], p["S"], "o", color=c, ms=6, zorder=4, label=f"train loss ≤ {t:g}: {fit}")
        if {"S_lo", "S_hi"} <= set(p.columns) and np.isfinite(p[["S_lo", "S_hi"]].to_numpy(float)).any():
            err = np.clip([p["S"] - p["S_lo"], p["S_hi"] - p["S"]], 0, None)  # 90% interval of each S
            ax.errorbar(p["E"], p["S"], yerr=np.nan_to_num(err), fmt="none", ecolor=c, elinewidth=1, capsize=2,
                        zorder=4)
        for _, r in p.iterrows():
            ax.annotate(f"B={r['batch_size']:g}", (r["E"], r["S"]), fontsize=7.5, xytext=(4, 4),
                        textcoords="offset points", color="0.2")
        if t in hyperbolas:
            S, E = hyperbolas[t]
            ax.plot(E, S, "-", color=c, linewidth=1.4, zorder=3)
        if t in bands:
            (S_lo, E_lo), (S_hi, E_hi) = bands[t]
            ax.fill(np.concatenate([E_lo, E_hi[::-1]]), np.concatenate([S_lo, S_hi[::-1]]), color=c, alpha=0.15,
                    lw=0, zorder=2)
            banded = True
        if np.isfinite([f.get("E_min", math.nan), f.get("S_min", math.nan)]).all():
            xerr = [[f["E_min"] - f.get("E_min_lo", f["E_min"])], [f.get("E_min_hi", f["E_min"]) - f["E_min"]]]
            yerr = [[f["S_min"] - f.get("S_min_lo", f["S_min"])], [f.get("S_min_hi", f["S_min"]) - f["S_min"]]]
            ax.errorbar([f["E_min"]], [f["S_min"]], xerr=np.nan_to_num(np.clip(xerr, 0, None)),
                        yerr=np.nan_to_num(np.clip(yerr, 0, None)), fmt="+", ms=12, mew=1.5, color=c,
                        elinewidth=0.9, capsize=3, zorder=4)
            crossed = True
    proxy(ax, "bars: 90% interval of each S", color="0.4", marker="|", ms=10)
    if hyperbolas:
        proxy(ax, "line: fitted (S/S_min − 1)(E/E_min − 1) = 1", color="0.4", ls="-", lw=1.4)
    if banded:
        ax.fill([], [], color="0.4", alpha=0.2, lw=0, label="band: the best fits with B_noise at either\nend of its 90% interval")
    if crossed:
        proxy(ax, "+: (E_min, S_min), bars = 90% intervals", color="0.4", marker="+", ms=10, mew=1.5)
    set_log(ax, "xy")
    ax.set_xlabel("examples E to reach the target (log scale)")
    ax.set_ylabel("optimizer steps S to reach the target (log scale)")
    legend_outside(ax, title="fastest LR per batch size", title_fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("steps vs examples to a train-loss target")
    log_ticks(ax)
    return ax
