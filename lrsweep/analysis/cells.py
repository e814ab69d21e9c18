"""Best learning rate per batch size, from the runs DataFrame (records.load_runs).

Seeds are aggregated as mean, std and n per (other axes, batch size, LR) cell. A run that
diverged or failed, or never reached the target, scores the worst possible value (inf in the
bad direction): it is never silently dropped, and a cell with one diverged seed loses.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lrsweep.errors import UserError
from lrsweep.config.grid import load_sweep
from lrsweep.analysis.runs import hashable

# metric -> True if larger is better
METRICS = {
    "final_val_acc": True, "best_val_acc": True, "final_val_loss": False, "final_train_loss": False,
    "steps_to_target": False, "examples_to_target": False, "time_to_target": False,
    # document 003: train-loss reduction over a fixed number of steps after the target loss is
    # first reached; not in result.json, computed from metrics.csv (add_loss_drop)
    "loss_drop_after_target": True,
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
    """Axes other than LR, batch size and seed (e.g. optimizer.name): one table section each.

    An axis whose value is fixed by the batch size (zipped with it, e.g. an eval interval per B)
    describes the batch-size axis rather than splitting it, so it is not a group.
    """
    out = []
    for a in df.attrs.get("axes", []):
        if a in _NON_GROUP or a not in df or df[a].nunique(dropna=False) < 2:
            continue
        if "batch_size" in df and (df.groupby("batch_size")[a].nunique(dropna=False) <= 1).all():
            continue
        out.append(a)
    return out


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


def add_loss_drop(df: pd.DataFrame, curves: pd.DataFrame, target: float) -> pd.DataFrame:
    """df with a `loss_drop_after_target` column from critical.curve_table's drop@<target>."""
    col = f"drop@{target:g}"
    drop = (curves.set_index("run_id")[col] if not curves.empty and col in curves
            else pd.Series(dtype=float))
    out = df.assign(loss_drop_after_target=df["run_id"].map(drop).astype(float))
    out.attrs = dict(df.attrs)  # the axis list, which group_axes needs
    return out


def expected_runs(sweep_dirs: list) -> tuple[pd.DataFrame, list[str]]:
    """Every grid cell the sweep files ask for (run_id, sweep, batch_size, lr, axes), so that the
    cells of a partial sweep with no result yet can be counted as missing."""
    rows, warnings = [], []
    for d in sweep_dirs:
        f = d / "sweep.yaml"
        if not f.is_file():
            warnings.append(f"{d}: no sweep.yaml, so runs never started cannot be counted as missing")
            continue
        try:
            sweep = load_sweep(f)
        except (UserError, OSError, ValueError) as e:
            warnings.append(f"{f}: unreadable, missing runs not counted ({str(e)[:80]})")
            continue
        for r in sweep.runs:
            rows.append({**{k: hashable(v) for k, v in r.axes.items()}, "sweep": d.name, "run_id": r.run_id,
                         "batch_size": r.config.train.batch_size, "lr": r.config.effective_lr})
    return pd.DataFrame(rows), warnings


def cell_counts(df: pd.DataFrame, expected: pd.DataFrame) -> pd.DataFrame:
    """Per (group axes, batch size, LR) cell: runs asked for, complete, diverged, failed, missing.

    Matched by cell values, not run ids: ids hash the whole config, so a sweep finished by an
    older lrsweep (or with a since-edited base config) still has its runs counted where they
    belong. missing = asked for − finished, never below 0."""
    keys = ["sweep"] * ("sweep" in df and df["sweep"].nunique() > 1) + group_axes(df) + ["batch_size", "lr"]
    states = ("complete", "diverged", "failed")
    done = df[keys].assign(**{c: (df["status"] == c).astype(int) for c in states})
    out = done.groupby(keys, dropna=False)[list(states)].sum()
    if not expected.empty and set(keys) <= set(expected.columns):
        asked = expected.groupby(keys, dropna=False).size().rename("expected")
        out = out.join(asked, how="outer").fillna(0).astype(int)
    else:
        out["expected"] = out.sum(axis=1)
    out["missing"] = (out["expected"] - out[list(states)].sum(axis=1)).clip(lower=0)
    return out.reset_index()[[*keys, "expected", *states, "missing"]]
