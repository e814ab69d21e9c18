"""Drawing only: every function takes prepared data and `ax=None`, and returns the axes.

Figures are made with matplotlib.figure.Figure, never pyplot, so nothing here touches global
backend state: saving renders with Agg, and works headless and from threads.

Modules by figure: sweep (heatmap, metric_vs_lr), optimal_lr, curves (loss curves,
oscillation, gradient norm), critical (critical batch size), range_test; base holds what they share.
"""
from .base import new_axes, save
from .critical import critical_batch
from .curves import grad_norm, loss_curves, oscillation
from .optimal_lr import optimal_lr
from .sweep import heatmap, metric_vs_lr

__all__ = ["critical_batch", "grad_norm", "heatmap", "loss_curves", "metric_vs_lr", "new_axes",
           "optimal_lr", "oscillation", "save"]
