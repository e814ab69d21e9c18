"""Which figures a report has, and what data each one is drawn from. plots/ only draws; the
choice of figures for a group (a loss-oscillation figure only when runs were long enough to
measure it, ...) and the curves laid over them (the fitted laws) are made here."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lrsweep.analysis import critical, fits
from lrsweep.analysis.report import Group, Report

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# Every figure a report can have, in report.md's order of first mention; file name = key + ".png".
PLOTS = ("heatmap", "metric_vs_lr", "optimal_lr", "loss_vs_step", "loss_vs_examples",
         "oscillation", "grad_norm", "critical_batch")


def draw(report: Report, g: Group) -> dict[str, Axes]:
    """The figures of one group, as name -> axes (not yet saved)."""
    from lrsweep import plots  # matplotlib's drawing stack, only when figures are wanted

    measured = g.cells[g.cells["n"] > 0]
    out = {"heatmap": plots.heatmap(g.cells, report.metric, report.higher, g.best),
           "metric_vs_lr": plots.metric_vs_lr(measured, report.metric, logy=_spans_decades(measured["mean"]))}
    sizes = g.best["batch_size"].to_numpy(float)
    out["optimal_lr"] = plots.optimal_lr(g.best, _law_curves(g.fits, sizes))
    if g.curves:
        out["loss_vs_step"] = plots.loss_curves(g.curves, "step")
        out["loss_vs_examples"] = plots.loss_curves(g.curves, "examples")
    if not g.stats.empty:
        if g.stats["oscillation"].notna().any():
            out["oscillation"] = plots.oscillation(g.stats)
        out["grad_norm"] = plots.grad_norm(g.stats)
    pts = {t: p for t, p in g.se.items() if not p.empty}
    if pts:
        fit = {r["target"]: r for r in g.critical.to_dict(orient="records")}
        hyp = {t: critical.hyperbola(f["S_min"], f["E_min"], sizes.min() / 2, sizes.max() * 2)
               for t, f in fit.items() if np.isfinite(f["B_noise"])}
        out["critical_batch"] = plots.critical_batch(pts, fit, hyp)
    return out


def _law_curves(fitted: pd.DataFrame, sizes: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each fitted law over the measured batch sizes and a factor 2 beyond, labelled for the legend."""
    B = np.geomspace(sizes.min() / 2, sizes.max() * 2, 100)
    laws = {}
    for _, f in fitted.iterrows():
        rank = f"#{int(f['rank'])} " if np.isfinite(f["rank"]) else ""
        laws[f"{rank}{f['law']} (±{f['rms_log10']:.2f} decades)"] = (B, fits.law_value(f["law"], f["params"], B))
    return laws


def _spans_decades(values: pd.Series) -> bool:
    """Log y when a positive metric spans more than a factor of 20 (losses, step counts)."""
    v = values[np.isfinite(values)]
    return bool(len(v) and (v > 0).all() and v.max() / v.min() > 20)
