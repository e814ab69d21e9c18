"""What the figures draw beyond the report's tables: the fitted laws as curves with their
readable names, which optima are budget-limited, which cells learned, and the hyperbolas of the
critical batch size with their uncertainty band. Derived here from columns the analysis
already carries (figures.py decides which figures there are; plots/ only draws)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lrsweep.analysis import critical, fits


def law_curves(fitted: pd.DataFrame, sizes: np.ndarray) -> list[dict]:
    """Each fitted law over the measured batch sizes and a factor 2 beyond, best first, with
    its readable name, rank and residual standard error (the one measure the ranking uses)."""
    if fitted.empty or not len(sizes):
        return []
    B = np.geomspace(sizes.min() / 2, sizes.max() * 2, 100)
    out = []
    for _, f in fitted.iterrows():
        out.append({"law": f["law"], "name": fits.law_label(f["law"]), "kind": f.get("kind", "fit"),
                    "rank": float(f["rank"]), "se": float(f["se_log10"]), "at_bound": bool(f.get("at_bound")),
                    "B": B, "lr": fits.law_value(f["law"], f["params"], B)})
    return out


def group_runs(runs: pd.DataFrame, keys: dict) -> pd.DataFrame:
    """The runs of one group (its key values; a missing value matches a missing value)."""
    ok = np.ones(len(runs), bool)
    for k, v in keys.items():
        if k in runs:
            ok &= runs[k].isna().to_numpy() if pd.isna(v) else (runs[k] == v).to_numpy()
    return runs[ok]


def budget_limited(best: pd.DataFrame, runs: pd.DataFrame) -> pd.Series:
    """Per batch size: True when every run at its best LR completed its budget without the train
    loss reaching the sweep's target (steps_to_train_loss empty) while some run of the group
    did reach it. Such an optimum is the best LR for a run cut short (a large B gets few steps
    in a fixed-epoch sweep), not for training to the same loss as the others. False when the
    target is unknown or never reached by anyone (nothing to compare with)."""
    col = "steps_to_train_loss"
    out = pd.Series(False, index=best.index)
    if col not in runs or not runs[col].notna().any():
        return out
    for i, b in best.iterrows():
        if not np.isfinite(b["best_lr"]):
            continue
        at = runs[(runs["batch_size"] == b["batch_size"]) & np.isclose(runs["lr"], b["best_lr"], rtol=1e-9)]
        done = at[at["status"] == "complete"]
        out[i] = bool(len(done)) and bool(done[col].isna().all())
    return out


def stats_learned(stats: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """The per-cell statistics with `learned`: every complete run of the cell learned (cells'
    n_learned against its complete runs; metrics.learned: better than chance). The statistics
    average a cell's complete runs, so one seed stuck at chance, or one that diverged and came
    back, would put a wobble into it that is no property of the batch size."""
    if stats.empty or "n_learned" not in cells:
        return stats.assign(learned=True)
    done = cells["complete"] if "complete" in cells else cells["n"] - cells.get("n_diverged", 0) - cells.get("n_stalled", 0) - cells.get("n_failed", 0)
    c = cells.assign(_ok=(cells["n_learned"] > 0) & (cells["n_learned"] >= done))
    ok = c.groupby(["batch_size", "lr"])["_ok"].all().rename("learned").reset_index()
    out = stats.drop(columns=["learned"], errors="ignore").merge(ok, on=["batch_size", "lr"], how="left")
    return out.assign(learned=out["learned"].fillna(False).astype(bool))


def critical_curves(fit: dict[float, dict], points: dict[float, pd.DataFrame], sizes: np.ndarray):
    """(hyperbolas, bands) per target with a B_noise, over the measured batch sizes and a factor
    2 beyond: the fitted curve, and the band between the best curves with B_noise held at the
    low and at the high end of its 90% interval (profile fits: with the slope −B_noise of the
    line 1/S = 1/S_min − B_noise/E fixed, least squares puts 1/S_min at the mean of
    1/S + B_noise/E over the points). Both pass through the data as well as they can, so the
    band is narrow where the points pin the curve and opens where the interval lets it bend."""
    lo_B, hi_B = sizes.min() / 2, sizes.max() * 2
    hyp, bands = {}, {}
    for t, f in fit.items():
        if not np.isfinite(f["B_noise"]):
            continue
        hyp[t] = critical.hyperbola(f["S_min"], f["E_min"], lo_B, hi_B)
        p = points.get(t)
        ends = [f.get(f"B_noise_{e}", math.nan) for e in ("lo", "hi")]
        if p is None or len(p) < 2 or not (np.isfinite(ends).all() and min(ends) > 0):
            continue
        S, E = p["S"].to_numpy(float), p["E"].to_numpy(float)
        curves = []
        for bn in ends:
            icpt = float(np.mean(1 / S + bn / E))  # > 0: every term is
            curves.append(critical.hyperbola(1 / icpt, bn / icpt, lo_B, hi_B))
        bands[t] = tuple(curves)
    return hyp, bands
