"""B_noise three ways against the train-loss target (analysis/noise.py): the S–E fit, B_simple at
the target and the peak of the fitted surge law, each with its 90% interval."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from lrsweep.plots.base import PALETTE, legend_outside, log_ticks, new_axes

# (column, legend, marker, colour, x offset factor): the offsets keep overlapping bars apart
SERIES = (("B_noise", "S–E fit", "o", PALETTE[1], 0.97),
          ("B_simple", "B_simple at the target", "s", PALETTE[3], 1.03),
          ("B_peak", "surge-law peak", "D", PALETTE[5], 1.0))


def _err(v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Error bar lengths below and above; 0 where there is no interval."""
    return np.nan_to_num(np.array([v - lo, hi - v]).clip(min=0))


def plot_bnoise(table: pd.DataFrame, ax: Optional[Axes] = None) -> Axes:
    """table: one row per target with target, B_noise, B_noise_lo/_hi, B_simple, B_simple_lo/_hi,
    B_peak, B_peak_lo/_hi, B_peak_at (noise.TABLE; a missing column is a series not drawn). The
    surge-law peak is a point at B_peak_at, the target whose loss drop picked the optima, or a
    band across the plot when the optima are not tied to a target (B_peak_at NaN). The x axis
    runs from high to low loss: left to right is later in training."""
    ax = ax or new_axes((6.8, 4.4))
    t = table["target"].to_numpy(float)
    drawn = False
    for col, label, marker, colour, shift in SERIES:
        if col not in table:
            continue
        v = table[col].to_numpy(float)
        lo = table.get(f"{col}_lo", pd.Series(np.nan, index=table.index)).to_numpy(float)
        hi = table.get(f"{col}_hi", pd.Series(np.nan, index=table.index)).to_numpy(float)
        ok = np.isfinite(v) & (v > 0)
        if col == "B_peak":
            at = table.get("B_peak_at", pd.Series(np.nan, index=table.index)).to_numpy(float)
            band = ok & ~np.isfinite(at)
            if band.any():  # the same peak on every row: one line across, its interval shaded
                i = int(np.argmax(band))
                ax.axhline(v[i], color=colour, ls="--", lw=1.2, label=f"{label} (every target)")
                drawn = True
                if np.isfinite(lo[i]) and np.isfinite(hi[i]):
                    ax.axhspan(lo[i], hi[i], color=colour, alpha=0.12, lw=0)
            ok &= np.isfinite(at)
        if ok.any():
            ax.errorbar(t[ok] * shift, v[ok], yerr=_err(v[ok], lo[ok], hi[ok]), fmt=marker, ms=6, color=colour,
                        capsize=3, label=label)
            drawn = True
    if drawn:  # every value drawn is > 0
        ax.set_yscale("log")
        log_ticks(ax, "y")
    if len(t) and np.isfinite(t).any():
        ax.set_xscale("log")
        ax.set_xlim(np.nanmax(t) * 1.3, np.nanmin(t) / 1.3)  # high loss first: training goes left to right
        ax.xaxis.set_major_locator(FixedLocator(sorted(set(t[np.isfinite(t)]))))  # ticked at the targets only
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("train-loss target (lower = later in training)")
    ax.set_ylabel("B_noise estimate (batch size)")
    ax.set_title("B_noise three ways, 90% intervals")
    if ax.get_legend_handles_labels()[0]:
        legend_outside(ax, fontsize=7)
    return ax
