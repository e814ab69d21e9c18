"""B_noise three ways, per train-loss target: the S-E fit, the peak of the fitted surge law, and the
gradient noise scale B_simple the trainer logs (train.noise_scale), side by side with their
intervals. Document 003 (§2.3) says B_peak = B_noise ~ B_crit = E_min/S_min, and that all of them
grow as the loss falls; McCandlish et al. (2018) measure B_simple = tr(Sigma)/|G|^2 as a cheap
stand-in for B_noise = tr(H Sigma)/(G^T H G) (equal when the Hessian is a multiple of the
identity, otherwise off by a factor, so the trend with the target is the sharper comparison).

- S-E fit (critical.py): B_noise of 1/S = -B_noise/E + 1/S_min at the target.
- Surge-law peak (fits.py): B_noise of the fitted surge law, where its optimal LR peaks. The optima
  belong to one target only when the metric is loss_drop_after_target (judged at the first
  target); for any other metric they are the whole run's, and the peak is shown for every target.
- B_simple at the target: in each run, the logged b_simple at the step where the trainer's
  smoothed loss (the bias-corrected EMA of train.target_smoothing, critical.smoothed_loss) first
  reaches the target: the last finite value up to that step, as the logged value is itself an
  EMA carried between measurements. The runs are those the S-E fit uses, each batch size's
  fastest LR at that target (all its seeds): the same trajectories, at the same loss, and at the
  tuned LR McCandlish et al. define B_crit for. The estimate is their median (robust to the
  noisy estimates of the smallest batches), its interval the median's bootstrap over those runs.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lrsweep.analysis import bootstrap

COLUMN = "b_simple"  # metrics.csv's column (train.noise_scale)
# What compare adds to the critical table, per target.
COLUMNS = ("B_peak", "B_peak_lo", "B_peak_hi", "B_peak_at", "B_simple", "B_simple_lo", "B_simple_hi", "B_simple_runs")
# The comparison as one table: the S-E fit's columns, then those.
TABLE = ("target", "B_noise", "B_noise_lo", "B_noise_hi", *COLUMNS)


def b_simple_at(metrics: pd.DataFrame, smooth: np.ndarray, target: float) -> float:
    """The run's B_simple where its smoothed loss `smooth` first reaches `target`: the last
    positive finite b_simple logged up to that step (NaN before the first measurement, when the
    target is never reached, or without the column). A value <= 0 is no noise scale: early on the
    estimate of |G|^2 can come out negative."""
    if COLUMN not in metrics:
        return math.nan
    hit = np.nonzero(np.asarray(smooth) <= target)[0]
    if not len(hit):
        return math.nan
    v = metrics[COLUMN].to_numpy(float)[: hit[0] + 1]
    v = v[np.isfinite(v) & (v > 0)]
    return float(v[-1]) if len(v) else math.nan


def estimate(values) -> dict:
    """Median of the runs' B_simple and its 90% bootstrap interval over the runs (from 2 runs)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v) & (v > 0)]
    out = {"B_simple": float(np.median(v)) if len(v) else math.nan,
           "B_simple_lo": math.nan, "B_simple_hi": math.nan, "B_simple_runs": int(len(v))}
    if len(v) >= 2:
        medians = np.median(v[bootstrap.generator().integers(0, len(v), size=(bootstrap.RESAMPLES, len(v)))], axis=1)
        out["B_simple_lo"], out["B_simple_hi"] = bootstrap.interval(medians, log=True)
    return out


def cell_values(curves: pd.DataFrame, points: pd.DataFrame, target: float) -> pd.DataFrame:
    """The runs of `points`' cells (critical.se_points: batch_size, lr) with their B_simple at
    `target`: columns run_id, batch_size, lr, b_simple."""
    col = f"{COLUMN}@{target:g}"
    if points.empty or col not in curves:
        return pd.DataFrame(columns=["run_id", "batch_size", "lr", COLUMN])
    d = curves[["run_id", "batch_size", "lr", col]].merge(points[["batch_size", "lr"]], on=["batch_size", "lr"])
    return d.rename(columns={col: COLUMN}).reset_index(drop=True)


def surge_peak(fits: pd.DataFrame) -> tuple[float, float, float]:
    """B_noise of the fitted surge law with its interval; NaN when it was not fitted or sits at a
    bound of its search range (then the optima do not place a peak)."""
    row = fits[(fits["law"] == "surge") & (fits["kind"] == "fit")] if not fits.empty else fits
    if row.empty or row.iloc[0]["at_bound"]:
        return math.nan, math.nan, math.nan
    r = row.iloc[0]
    return float(r["B_noise"]), float(r["B_noise_lo"]), float(r["B_noise_hi"])


def compare(critical: pd.DataFrame, se: dict, curves: pd.DataFrame, fits: pd.DataFrame,
            judged_at: float | None) -> tuple[pd.DataFrame, dict]:
    """The critical table (one row per target) with COLUMNS added, and each target's S-E points
    with the median B_simple of their cell (column B_simple). `judged_at`: the target whose
    loss drop picked the optima (metric loss_drop_after_target), None when the metric is not
    tied to a target."""
    if critical.empty:
        return critical, se
    peak = surge_peak(fits)
    rows, points = [], {}
    for t in critical["target"]:
        mine = judged_at is None or math.isclose(t, judged_at)
        row = dict(zip(COLUMNS[:4], [*peak, math.nan if judged_at is None else judged_at] if mine else [math.nan] * 4))
        pts = se.get(t, pd.DataFrame())
        vals = cell_values(curves, pts, t)
        row.update(estimate(vals[COLUMN]))
        rows.append(row)
        if not pts.empty:
            per_cell = vals.groupby(["batch_size", "lr"])[COLUMN].median().rename("B_simple").reset_index()
            pts = pts.drop(columns=["B_simple"], errors="ignore").merge(per_cell, on=["batch_size", "lr"], how="left")
        points[t] = pts
    added = pd.DataFrame(rows, index=critical.index)
    out = pd.concat([critical.drop(columns=[c for c in COLUMNS if c in critical]), added], axis=1)
    return out, points


def has_estimates(table: pd.DataFrame) -> bool:
    """Whether a comparison table (TABLE's columns) has a finite estimate to show."""
    cols = [c for c in ("B_noise", "B_peak", "B_simple") if c in table]
    return bool(len(table) and cols and np.isfinite(table[cols].to_numpy(float)).any())
