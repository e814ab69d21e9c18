"""Best learning rate per batch size, from the runs DataFrame (records.load_runs).

Seeds are aggregated as mean, std and n per (other axes, batch size, LR) cell. A run that
diverged or failed, or never reached the target, scores the worst possible value (inf in the
bad direction): it is never silently dropped, and a cell with one diverged seed loses.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .errors import UserError

# metric -> True if larger is better
METRICS = {
    "final_val_acc": True, "best_val_acc": True, "final_val_loss": False, "final_train_loss": False,
    "steps_to_target": False, "examples_to_target": False, "time_to_target": False,
}
_NON_GROUP = {"lr", "nominal_lr", "optimizer.lr", "seed", "train.seed", "batch_size", "train.batch_size"}


def check_metric(metric: str, known: dict = METRICS) -> bool:
    if metric not in known:
        raise UserError(f"--metric: expected one of ({', '.join(known)}), got {metric!r}")
    return known[metric]


def scores(df: pd.DataFrame, metric: str, higher: bool) -> pd.Series:
    """The metric per run, with diverged/failed/missing values replaced by the worst value."""
    worst = -math.inf if higher else math.inf
    v = pd.to_numeric(df[metric], errors="coerce") if metric in df else pd.Series(np.nan, index=df.index)
    ok = (df["status"] == "complete") if "status" in df else True
    return v.where(ok & v.notna(), worst).astype(float)


def group_axes(df: pd.DataFrame) -> list[str]:
    """Axes other than LR, batch size and seed (e.g. optimizer.name): one table section each."""
    return [a for a in df.attrs.get("axes", []) if a not in _NON_GROUP and a in df and df[a].nunique() > 1]


def cell_table(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (group axes, batch size, LR): mean, std, n over seeds, and status counts."""
    higher = check_metric(metric)
    d = df.copy()
    d["_score"] = scores(d, metric, higher)
    keys = ["sweep"] * ("sweep" in d and d["sweep"].nunique() > 1) + group_axes(df) + ["batch_size", "lr"]
    out = d.groupby(keys, dropna=False).agg(
        nominal_lr=("nominal_lr", "first"), mean=("_score", "mean"), std=("_score", "std"),
        n=("_score", "size"),
        n_diverged=("status", lambda s: int((s == "diverged").sum())),
        n_failed=("status", lambda s: int((s == "failed").sum())),
    ).reset_index()
    out["std"] = out["std"].fillna(0.0).where(np.isfinite(out["mean"]), np.nan)
    out.attrs["keys"], out.attrs["metric"], out.attrs["higher"] = keys, metric, higher
    return out


def best_lr_table(df: pd.DataFrame, metric: str = "final_val_acc") -> pd.DataFrame:
    """Per batch size (and per value of any other axis): the LR with the best mean metric."""
    if df.empty:
        raise UserError("no finished runs to summarize")
    cells = cell_table(df, metric)
    higher = cells.attrs["higher"]
    keys = cells.attrs["keys"][:-1]  # everything but lr
    rows = []
    for _, g in cells.groupby(keys, dropna=False, sort=True):
        order = g.sort_values("mean", ascending=not higher)
        best = order.iloc[0]
        lrs = sorted(g["lr"])
        rows.append({**{k: best[k] for k in keys}, "best_lr": best["lr"], "nominal_lr": best["nominal_lr"],
                     metric: best["mean"], "std": best["std"], "n_seeds": int(best["n"]),
                     "n_lrs": len(lrs), "n_diverged": int(g["n_diverged"].sum()), "n_failed": int(g["n_failed"].sum()),
                     "at_edge": "low" if best["lr"] == lrs[0] and len(lrs) > 1 else
                                "high" if best["lr"] == lrs[-1] and len(lrs) > 1 else ""})
    out = pd.DataFrame(rows)
    out.attrs["metric"] = metric
    return out
