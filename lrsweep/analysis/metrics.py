"""Which metrics pick the best LR, which direction is better, and how a failed run scores.

Kept apart from cells.py, with no heavy imports, because the CLI builds its `--metric` choices
from METRICS when it starts.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lrsweep.errors import ParameterError

# metric -> True if larger is better
METRICS = {
    "final_val_acc": True, "best_val_acc": True, "final_val_loss": False, "final_train_loss": False,
    "steps_to_target": False, "examples_to_target": False, "time_to_target": False,
    # document 003: train-loss reduction over a fixed number of steps after the target loss is
    # first reached; not in result.json, computed from metrics.csv (cells.add_loss_drop)
    "loss_drop_after_target": True,
}
# What `lrsweep run` can rank right after training: everything result.json holds.
RESULT_METRICS = {k: v for k, v in METRICS.items() if k != "loss_drop_after_target"}


def check_metric(metric: str, known: dict = METRICS) -> bool:
    """True if larger is better; a ParameterError naming `metric` if it is not known."""
    if metric not in known:
        raise ParameterError("metric", f"expected one of ({', '.join(known)}), got {metric!r}")
    return known[metric]


def scores(df: pd.DataFrame, metric: str, higher: bool) -> pd.Series:
    """The metric per run, with diverged/failed/missing values replaced by the worst value, so
    a run that blew up is never silently dropped and a cell with one diverged seed loses."""
    worst = -math.inf if higher else math.inf
    v = pd.to_numeric(df[metric], errors="coerce") if metric in df else pd.Series(np.nan, index=df.index)
    ok = (df["status"] == "complete") if "status" in df else True
    return v.where(ok & v.notna(), worst).astype(float)
