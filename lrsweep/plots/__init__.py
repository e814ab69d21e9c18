"""Drawing only: every function takes prepared data and `ax=None`, and returns the axes.

Figures are made with matplotlib.figure.Figure, never pyplot, so nothing here touches global
backend state: saving renders with Agg, and works headless and from threads.
"""
from .sweep import (
    critical_batch, grad_norm, heatmap, loss_curves, metric_vs_lr, new_axes, optimal_lr, oscillation, save,
)

__all__ = ["critical_batch", "grad_norm", "heatmap", "loss_curves", "metric_vs_lr", "new_axes",
           "optimal_lr", "oscillation", "save"]
