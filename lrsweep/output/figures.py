"""Which figures a report has, and what data each one is drawn from. plots/ only draws; the
choice of figures for a group (a loss-oscillation figure only when runs were long enough to
measure it, ...) is made here; what they draw beyond the report's tables (the fitted laws as
curves, budget-limited optima, the critical-batch band) comes from figure_data."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lrsweep.analysis import noise
from lrsweep.analysis.report import Group, Report
from lrsweep.output import figure_data

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# Every figure a report can have, in report.md's order of first mention; file name = key + ".png".
PLOTS = ("heatmap", "metric_vs_lr", "optimal_lr", "loss_vs_step", "loss_vs_examples",
         "oscillation", "grad_norm", "critical_batch", "bnoise")


def draw(report: Report, g: Group) -> dict[str, Axes]:
    """The figures of one group, as name -> axes (not yet saved)."""
    from lrsweep import plots  # matplotlib's drawing stack, only when figures are wanted

    measured = g.cells[g.cells["n"] > 0]
    out = {"heatmap": plots.heatmap(g.cells, report.metric, report.higher, g.best),
           "metric_vs_lr": plots.metric_vs_lr(measured, report.metric, logy=_spans_decades(measured["mean"]),
                                              best=g.best)}
    sizes = g.best["batch_size"].to_numpy(float)
    runs = figure_data.group_runs(report.runs, g.keys)
    points = g.best.assign(budget_limited=figure_data.budget_limited(g.best, runs))
    out["optimal_lr"] = plots.optimal_lr(points, figure_data.law_curves(g.fits, sizes), report.tolerance, report.metric)
    if g.curves:
        out["loss_vs_step"] = plots.loss_curves(g.curves, "step")
        out["loss_vs_examples"] = plots.loss_curves(g.curves, "examples")
    if not g.stats.empty:
        stats = figure_data.stats_learned(g.stats, g.cells)
        if g.stats["oscillation"].notna().any():
            out["oscillation"] = plots.oscillation(stats)
        out["grad_norm"] = plots.grad_norm(stats)
    pts = {t: p for t, p in g.se.items() if not p.empty}
    if pts:
        fit = {r["target"]: r for r in g.critical.to_dict(orient="records")}
        hyp, bands = figure_data.critical_curves(fit, pts, sizes)
        out["critical_batch"] = plots.critical_batch(pts, fit, hyp, bands)
    if noise.has_estimates(g.bnoise):  # B_noise three ways against the target (analysis/noise.py)
        from lrsweep.plots.bnoise import plot_bnoise
        out["bnoise"] = plot_bnoise(g.bnoise)
    return out


def _spans_decades(values: pd.Series) -> bool:
    """Log y when a positive metric spans more than a factor of 20 (losses, step counts)."""
    v = values[np.isfinite(values)]
    return bool(len(v) and (v > 0).all() and v.max() / v.min() > 20)
