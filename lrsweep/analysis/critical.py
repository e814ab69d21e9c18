"""Train-loss curves -> steps S and examples E to a target -> critical batch size (science.md §2).

A target is "reached" on the bias-corrected EMA of the per-step train loss, exactly as the
trainer decides it (training/tracker.py, `train.target_smoothing`): single batches are noisy, and at small
B a lucky batch would otherwise hit the target early. So S here equals the trainer's
steps_to_train_loss for the configured target, and any other target can be read afterwards.

For each batch size the LR that reaches the target in the fewest steps is used (McCandlish et
al.'s S and E are for the tuned LR), then the hyperbola (S/S_min − 1)(E/E_min − 1) = 1 is fitted
as the line 1/S = −B_noise·(1/E) + 1/S_min, with E_min = B_noise·S_min.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from lrsweep import storage

DEFAULT_SMOOTHING = 0.9  # config.py's default, for runs whose config.json lacks the field
# Per-step oscillation is the spread of the loss around a centred moving average of this many
# steps: long enough to average out batch noise, short enough to follow the descent.
OSCILLATION_WINDOW = 21


def smoothing_of(run_dir: str | Path) -> float:
    try:
        cfg = json.loads((Path(run_dir) / storage.CONFIG).read_text())
        return float(cfg["train"]["target_smoothing"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_SMOOTHING


def smoothed_loss(metrics: pd.DataFrame, smoothing: float) -> np.ndarray:
    """The trainer's bias-corrected EMA at each logged step.

    With log_every = 1 this is the trainer's EMA exactly. With log_every > 1 the unlogged losses
    are interpolated linearly between logged ones (constant before the first), which keeps
    the EMA's lag right on a descending curve.
    """
    steps = metrics["step"].to_numpy(float)
    loss = metrics["train_loss"].to_numpy(float)
    if len(steps) and steps[0] == 1 and np.all(np.diff(steps) == 1):  # every step logged: the fast path
        ema = lfilter([1 - smoothing], [1, -smoothing], loss)
        corr = 1 - smoothing ** steps
        return np.where(corr > 0, ema / np.where(corr > 0, corr, 1), loss)
    out = np.empty_like(loss)
    ema, prev_step, prev_loss = 0.0, 0.0, None
    for i, (st, v) in enumerate(zip(steps, loss)):
        g = int(st - prev_step)
        if g <= 1:
            ema = smoothing * ema + (1 - smoothing) * v
        else:
            p = v if prev_loss is None else prev_loss
            j = np.arange(1, g + 1)
            filled = p + (v - p) * j / g
            ema = smoothing ** g * ema + float(np.sum((1 - smoothing) * smoothing ** (g - j) * filled))
        corr = 1 - smoothing ** st
        out[i] = ema / corr if corr > 0 else v
        prev_step, prev_loss = st, v
    return out


def first_reach(metrics: pd.DataFrame, smooth: np.ndarray, target: float) -> float:
    """First step whose smoothed loss is <= target, or nan."""
    hit = np.nonzero(smooth <= target)[0]
    return float(metrics["step"].iloc[hit[0]]) if len(hit) else math.nan


def loss_drop(metrics: pd.DataFrame, smooth: np.ndarray, target: float, after_steps: int) -> float:
    """Document 003's score: how much the smoothed loss falls in `after_steps` steps after the
    target is first reached. nan if the target is never reached or the run ends too soon."""
    s0 = first_reach(metrics, smooth, target)
    if math.isnan(s0):
        return math.nan
    later = np.nonzero(metrics["step"].to_numpy(float) >= s0 + after_steps)[0]
    if not len(later):
        return math.nan
    i0 = int(np.nonzero(metrics["step"].to_numpy(float) == s0)[0][0])
    return float(smooth[i0] - smooth[later[0]])


def oscillation(metrics: pd.DataFrame) -> float:
    """Std of the per-step loss around its centred moving average (document 001's wobble)."""
    loss = metrics["train_loss"]
    trend = loss.rolling(OSCILLATION_WINDOW, center=True).mean()
    resid = (loss - trend).dropna()
    return float(resid.std()) if len(resid) > 1 else math.nan


def curve_table(runs: pd.DataFrame, targets: list[float], after_steps: int = 10) -> tuple[pd.DataFrame, list[str]]:
    """One row per complete run: S and E per target, loss drop per target, oscillation and mean
    gradient norm. Columns S@<t>, E@<t>, drop@<t>. A missing or unreadable metrics.csv is
    skipped with a warning naming it."""
    rows, warnings = [], []
    for _, r in runs[runs["status"] == "complete"].iterrows():
        f = Path(r["path"]) / storage.METRICS
        try:
            m = pd.read_csv(f)
            if m.empty or not {"step", "train_loss"} <= set(m.columns):
                raise ValueError("no step/train_loss rows")
        except (OSError, ValueError, pd.errors.ParserError) as e:
            warnings.append(f"skipped {f}: unreadable ({type(e).__name__}: {str(e)[:80]})")
            continue
        smooth = smoothed_loss(m, smoothing_of(r["path"]))
        row = {"run_id": r["run_id"], "path": r["path"], "batch_size": r["batch_size"], "lr": r["lr"],
               "oscillation": oscillation(m),
               "grad_norm_mean": float(m["grad_norm"].mean()) if "grad_norm" in m else math.nan}
        for t in targets:
            s = first_reach(m, smooth, t)
            row[f"S@{t:g}"], row[f"E@{t:g}"] = s, s * r["batch_size"]
            row[f"drop@{t:g}"] = loss_drop(m, smooth, t, after_steps)
        rows.append(row)
    return pd.DataFrame(rows), warnings


def se_points(runs: pd.DataFrame, curves: pd.DataFrame, target: float) -> pd.DataFrame:
    """Per batch size: the LR reaching `target` in the fewest steps (seed mean; a cell where any
    seed never reached it does not count), with its S and E = S·B."""
    col = f"S@{target:g}"
    if curves.empty or col not in curves:
        return pd.DataFrame(columns=["batch_size", "lr", "S", "E", "n_seeds"])
    d = runs[["run_id", "batch_size", "lr"]].merge(curves[["run_id", col]], on="run_id", how="left")
    cells = d.groupby(["batch_size", "lr"]).agg(S=(col, lambda s: s.mean() if s.notna().all() else math.nan),
                                                n_seeds=(col, "size")).reset_index()
    cells = cells.dropna(subset=["S"])
    best = cells.loc[cells.groupby("batch_size")["S"].idxmin()] if not cells.empty else cells
    best = best.assign(E=best["S"] * best["batch_size"])
    return best[["batch_size", "lr", "S", "E", "n_seeds"]].reset_index(drop=True)


def fit_critical(points: pd.DataFrame, target: float | None = None) -> dict:
    """Fit 1/S = −B_noise/E + 1/S_min to the points; report B_noise, S_min, E_min and a note
    when the data cannot determine them (too few batch sizes, or the wrong sign)."""
    out = {"target": target, "n": len(points), "B_noise": math.nan, "S_min": math.nan,
           "E_min": math.nan, "r2": math.nan, "note": ""}
    if len(points) < 2:
        out["note"] = (f"only {len(points)} batch size(s) reached the target (need 2, better 3+): "
                       f"lower the target or train longer")
        return out
    x, y = 1.0 / points["E"].to_numpy(float), 1.0 / points["S"].to_numpy(float)
    slope, icpt = np.polyfit(x, y, 1)
    if len(points) > 2:
        pred = slope * x + icpt
        ss = float(np.sum((y - y.mean()) ** 2))
        out["r2"] = 1 - float(np.sum((y - pred) ** 2)) / ss if ss > 0 else math.nan
    if slope >= 0 or icpt <= 0:
        out["note"] = ("steps do not fall with batch size as the hyperbola needs (slope "
                       f"{slope:.3g}, intercept {icpt:.3g}): B_noise not determined")
        return out
    out["B_noise"], out["S_min"] = float(-slope), float(1.0 / icpt)
    out["E_min"] = out["B_noise"] * out["S_min"]
    if len(points) == 2:
        out["note"] = "two batch sizes: the line passes exactly through them, no error estimate"
    return out


def hyperbola(S_min: float, E_min: float, B_lo: float, B_hi: float, n: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Points (S, E) on (S/S_min − 1)(E/E_min − 1) = 1 for batch sizes B_lo..B_hi, for drawing:
    on it S = S_min(1 + B_crit/B) and E = S·B."""
    B = np.geomspace(B_lo, B_hi, n)
    S = S_min * (1 + E_min / (S_min * B))
    return S, S * B
