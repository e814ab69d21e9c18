"""Train-loss curves -> steps S and examples E to a target -> critical batch size (science.md §2).

S is where the run's train loss first reaches the target, read afterwards from metrics.csv
without lag (analysis/crossing.py: a two-sided local fit, interpolated between logged steps).
The trainer's own read-off, on the causal EMA of `train.target_smoothing` (steps_to_train_loss
in result.json, which decides stop_after_target), is late by a few steps and is kept beside it
as S_ema@<target>; the loss-drop score after the target is still judged on that EMA.

For each batch size the LR that reaches the target in the fewest steps is used (McCandlish et
al.'s S and E are for the tuned LR), then the hyperbola (S/S_min − 1)(E/E_min − 1) = 1 is fitted
as the line 1/S = −B_noise·(1/E) + 1/S_min, with E_min = B_noise·S_min.

Intervals (bootstrap.LEVEL, 90%) of B_noise, S_min and E_min come from N_BOOT replicates of the
whole read-off: each run's S is redrawn from a residual bootstrap of its own curve
(crossing.replicates), the seeds of a cell are resampled with replacement when it has several,
the fastest LR per batch size is picked again among the cells within CANDIDATES of the fastest,
and the line is fitted again. They cover the noise of the curves and of the seeds, not a bias
of the model (a curve shape the local fit cannot follow, a hyperbola that does not hold).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from lrsweep import storage
from lrsweep.analysis import bootstrap, crossing, noise

DEFAULT_SMOOTHING = 0.9  # config.py's default, for runs whose config.json lacks the field
# Per-step oscillation is the spread of the loss around a centred moving average of this many
# steps: long enough to average out batch noise, short enough to follow the descent.
OSCILLATION_WINDOW = 21
N_BOOT = 200  # replicates per target: ~0.1 s per batch size for curves of a few thousand steps
CANDIDATES = 1.25  # cells within this factor of a batch size's fewest steps may win a replicate


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
    gradient norm. Columns S@<t>, E@<t> (lag-free), S_ema@<t> (the trainer's read-off), drop@<t>,
    b_simple@<t> (the logged gradient noise scale where S_ema@<t> is read: noise.b_simple_at).
    A missing or unreadable metrics.csv is skipped with a warning naming it."""
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
        trend = crossing.local_trend(m["step"], m["train_loss"])
        row = {"run_id": r["run_id"], "path": r["path"], "batch_size": r["batch_size"], "lr": r["lr"],
               "oscillation": oscillation(m),
               "grad_norm_mean": float(m["grad_norm"].mean()) if "grad_norm" in m else math.nan}
        for t in targets:
            s = float(crossing.first_crossing(m["step"], trend, t))
            row[f"S@{t:g}"], row[f"E@{t:g}"] = s, s * r["batch_size"]
            row[f"S_ema@{t:g}"] = first_reach(m, smooth, t)
            row[f"sparse@{t:g}"] = crossing.sparse(m["step"], s)
            row[f"drop@{t:g}"] = loss_drop(m, smooth, t, after_steps)
            row[f"b_simple@{t:g}"] = noise.b_simple_at(m, smooth, t)
        rows.append(row)
    return pd.DataFrame(rows), warnings


def _runs_by_cell(runs: pd.DataFrame, curves: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Every run of the group with its `cols` of curve_table (NaN: never reached, or not a
    complete run)."""
    return runs[["run_id", "batch_size", "lr"]].merge(curves[["run_id", *cols]], on="run_id", how="left")


def se_points(runs: pd.DataFrame, curves: pd.DataFrame, target: float) -> pd.DataFrame:
    """Per batch size: the LR reaching `target` in the fewest steps (seed mean; a cell where any
    seed never reached it does not count), with its S and E = S·B."""
    col, cols = f"S@{target:g}", ["batch_size", "lr", "S", "E", "n_seeds", "sparse"]
    if curves.empty or col not in curves:
        return pd.DataFrame(columns=cols)
    sp = f"sparse@{target:g}"
    d = _runs_by_cell(runs, curves.assign(**({} if sp in curves else {sp: False})), [col, sp])
    cells = d.groupby(["batch_size", "lr"]).agg(S=(col, lambda s: s.mean() if s.notna().all() else math.nan),
                                                n_seeds=(col, "size"), sparse=(sp, lambda s: s.eq(True).any())).reset_index()
    cells = cells.dropna(subset=["S"])
    best = cells.loc[cells.groupby("batch_size")["S"].idxmin()] if not cells.empty else cells
    best = best.assign(E=best["S"] * best["batch_size"])
    return best[cols].reset_index(drop=True)




def _run_replicates(path: str, target: float, rng: np.random.Generator) -> np.ndarray:
    try:
        m = pd.read_csv(Path(path) / storage.METRICS)
        return crossing.replicates(m["step"], m["train_loss"], target, N_BOOT, rng)
    except (OSError, ValueError, KeyError, pd.errors.ParserError):
        return np.full(N_BOOT, np.nan)


def se_replicates(runs: pd.DataFrame, curves: pd.DataFrame, target: float, points: pd.DataFrame) -> np.ndarray:
    """[N_BOOT, len(points)]: bootstrap replicates of each batch size's S in `points`
    (se_points'), NaN where a replicate has no cell reaching the target."""
    out = np.full((N_BOOT, len(points)), np.nan)
    col = f"S@{target:g}"
    if points.empty:
        return out
    d = _runs_by_cell(runs, curves, ["path", col])
    rng = bootstrap.generator()
    for j, (B, fewest) in enumerate(zip(points["batch_size"], points["S"])):
        per_cell = []
        for _, cell in d[d["batch_size"] == B].groupby("lr"):
            if not cell[col].notna().all() or cell[col].mean() > CANDIDATES * fewest:
                continue
            reps = np.array([_run_replicates(p, target, rng) for p in cell.sort_values("run_id")["path"]])
            if len(reps) > 1:  # the seeds, resampled
                reps = reps[rng.integers(0, len(reps), size=(N_BOOT, len(reps))), np.arange(N_BOOT)[:, None]].T
            per_cell.append(reps.mean(axis=0))
        if per_cell:
            out[:, j] = np.fmin.reduce(np.array(per_cell), axis=0)  # the fastest cell again; NaN ignored
    return out


def _line(B: np.ndarray, S: np.ndarray) -> tuple[float, float]:
    """Least-squares slope and intercept of 1/S against 1/E = 1/(S·B) over the finite S."""
    ok = np.isfinite(S)
    x, y = 1.0 / (S[ok] * B[ok]), 1.0 / S[ok]
    if ok.sum() < 2 or np.ptp(x) == 0:
        return math.nan, math.nan
    xm, ym = x.mean(), y.mean()
    slope = float(np.sum((x - xm) * (y - ym)) / np.sum((x - xm) ** 2))
    return slope, float(ym - slope * xm)


def fit_critical(points: pd.DataFrame, target: float | None = None, boot: np.ndarray | None = None) -> dict:
    """Fit 1/S = −B_noise/E + 1/S_min to the points; report B_noise, S_min, E_min and a note
    when the data cannot determine them (too few batch sizes, or the wrong sign). With `boot`
    (se_replicates' S per replicate and point), also their interval: <name>_lo, <name>_hi."""
    out = {"target": target, "n": len(points)}
    for name in ("B_noise", "S_min", "E_min"):
        out.update({name: math.nan, f"{name}_lo": math.nan, f"{name}_hi": math.nan})
    out.update({"r2": math.nan, "note": ""})
    if len(points) < 2:
        out["note"] = (f"only {len(points)} batch size(s) reached the target (need 2, better 3+): "
                       f"lower the target or train longer")
        return out
    B, S = points["batch_size"].to_numpy(float), points["S"].to_numpy(float)
    slope, icpt = _line(B, S)
    if len(points) > 2:
        x, y = 1.0 / (S * B), 1.0 / S
        ss = float(np.sum((y - y.mean()) ** 2))
        out["r2"] = 1 - float(np.sum((y - slope * x - icpt) ** 2)) / ss if ss > 0 else math.nan
    if not slope < 0 or not icpt > 0:
        out["note"] = ("steps do not fall with batch size as the hyperbola needs (slope "
                       f"{slope:.3g}, intercept {icpt:.3g}): B_noise not determined")
        return out
    out["B_noise"], out["S_min"] = float(-slope), float(1.0 / icpt)
    out["E_min"] = out["B_noise"] * out["S_min"]
    if len(points) == 2:
        out["note"] = "two batch sizes: the line passes exactly through them; nothing checks the hyperbola"
    if "sparse" in points and points["sparse"].astype(bool).any():
        sizes = ", ".join(f"{b:g}" for b in points.loc[points["sparse"].astype(bool), "batch_size"])
        out["note"] = "; ".join(filter(None, [out["note"], (
            f"B={sizes}: fewer than {crossing.MIN_POINTS} logged steps within a factor {crossing.WINDOW:g} "
            "of S, so S is read off a coarse curve (can be ~10% late): log more often (train.log_every)")]))
    if boot is not None and len(boot):
        spans, bad = _intervals(B, boot)
        out.update(spans)
        if bad > 0.05 * len(boot):
            out["note"] = "; ".join(filter(None, [out["note"], (
                f"{bad} of {len(boot)} resamples give no B_noise > 0 with S_min > 0: "
                "the intervals leave them out and are too narrow")]))
    return out


def _replicate_fits(B: np.ndarray, boot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """B_noise and S_min of each replicate's line; NaN where it lacks the hyperbola's signs."""
    lines = np.array([_line(B, S) for S in boot]).reshape(-1, 2)
    good = (lines[:, 0] < 0) & (lines[:, 1] > 0)
    return (np.where(good, -lines[:, 0], np.nan),
            np.where(good, 1 / np.where(good, lines[:, 1], 1), np.nan))


def _intervals(B: np.ndarray, boot: np.ndarray) -> tuple[dict, int]:
    """The bootstrap intervals of B_noise, S_min, E_min, and how many replicates give no line
    with the hyperbola's signs (they are left out)."""
    bn, sm = _replicate_fits(B, boot)
    out = {}
    for name, v in (("B_noise", bn), ("S_min", sm), ("E_min", bn * sm)):
        out[f"{name}_lo"], out[f"{name}_hi"] = bootstrap.interval(v)
    return out, int(np.isnan(bn).sum())


def critical_fit(runs: pd.DataFrame, curves: pd.DataFrame, target: float) -> tuple[pd.DataFrame, dict, np.ndarray]:
    """se_points, with each batch size's interval of S (S_lo, S_hi), and fit_critical of them
    with the intervals of B_noise, S_min and E_min (all from the same replicates); then B_noise
    per replicate (NaN where a replicate has no line), for what is computed from B_noise
    (laws_anchored's eps_max interval)."""
    pts = se_points(runs, curves, target)
    boot = se_replicates(runs, curves, target, pts)
    spans = [bootstrap.interval(boot[:, j]) for j in range(len(pts))]
    pts = pts.assign(S_lo=[lo for lo, _ in spans], S_hi=[hi for _, hi in spans])
    fit = fit_critical(pts, target, boot)
    reps = _replicate_fits(pts["batch_size"].to_numpy(float), boot)[0] if np.isfinite(fit["B_noise"]) else np.array([])
    return pts, fit, reps


def hyperbola(S_min: float, E_min: float, B_lo: float, B_hi: float, n: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Points (S, E) on (S/S_min − 1)(E/E_min − 1) = 1 for batch sizes B_lo..B_hi, for drawing:
    on it S = S_min(1 + B_crit/B) and E = S·B."""
    B = np.geomspace(B_lo, B_hi, n)
    S = S_min * (1 + E_min / (S_min * B))
    return S, S * B
