"""Best learning rate per batch size, from the finished runs (runs.load_runs).

Seeds are aggregated as mean, std and n per (other axes, batch size, LR) cell. A run that
diverged or failed, or never reached the target, scores the worst possible value (metrics.scores):
it is never silently dropped, and a cell with one diverged seed loses.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from lrsweep.analysis.metrics import check_metric, scores
from lrsweep.analysis.runs import EXPERIMENT, Runs, hashable
from lrsweep.config.grid import load_sweep
from lrsweep.errors import UserError

_NON_GROUP = {"lr", "nominal_lr", "optimizer.lr", "seed", "train.seed", "batch_size", "train.batch_size"}


def group_axes(runs: Runs) -> list[str]:
    """Axes other than LR, batch size and seed (e.g. optimizer.name): one table section each.

    An axis whose value is fixed by the batch size (zipped with it, e.g. an eval interval per B)
    describes the batch-size axis rather than splitting it, so it is not a group.
    """
    df, out = runs.df, []
    for a in runs.axes:
        if a in _NON_GROUP or a not in df or df[a].nunique(dropna=False) < 2:
            continue
        if a == EXPERIMENT:  # experiments of one folder are never blended, whatever their grids
            out.append(a)
            continue
        if "batch_size" in df and (df.groupby("batch_size")[a].nunique(dropna=False) <= 1).all():
            continue
        out.append(a)
    return out


def cell_keys(runs: Runs) -> list[str]:
    """The columns that name a cell: the sweep (when there are several), the group axes, B, LR."""
    df = runs.df
    return ["sweep"] * ("sweep" in df and df["sweep"].nunique() > 1) + group_axes(runs) + ["batch_size", "lr"]


def cell_table(runs: Runs, metric: str) -> pd.DataFrame:
    """One row per cell (cell_keys): mean, std, n over seeds, and status counts."""
    higher = check_metric(metric)
    d = runs.df.assign(_score=scores(runs.df, metric, higher))
    out = d.groupby(cell_keys(runs), dropna=False).agg(
        nominal_lr=("nominal_lr", "first"), mean=("_score", "mean"), std=("_score", "std"),
        n=("_score", "size"),
        n_diverged=("status", lambda s: int((s == "diverged").sum())),
        n_failed=("status", lambda s: int((s == "failed").sum())),
    ).reset_index()
    out["std"] = out["std"].fillna(0.0).where(np.isfinite(out["mean"]), np.nan)
    return out


def best_lr_table(runs: Runs, metric: str = "final_val_acc") -> pd.DataFrame:
    """Per batch size (and per value of any other axis): the LR with the best mean metric."""
    if runs.df.empty:
        raise UserError("no finished runs to summarize")
    higher = check_metric(metric)
    cells = cell_table(runs, metric)
    keys = cell_keys(runs)[:-1]  # everything but lr
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
    return pd.DataFrame(rows)


def add_loss_drop(runs: Runs, curves: pd.DataFrame, target: float) -> Runs:
    """The runs with a `loss_drop_after_target` column from critical.curve_table's drop@<target>."""
    col = f"drop@{target:g}"
    drop = (curves.set_index("run_id")[col] if not curves.empty and col in curves
            else pd.Series(dtype=float))
    return replace(runs, df=runs.df.assign(loss_drop_after_target=runs.df["run_id"].map(drop).astype(float)))


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


def cell_counts(runs: Runs, expected: pd.DataFrame) -> pd.DataFrame:
    """Per cell (cell_keys): runs asked for, complete, diverged, failed, missing.

    Matched by cell values, not run ids: ids hash the whole config, so a sweep finished by an
    older lrsweep (or with a since-edited base config) still has its runs counted where they
    belong. missing = asked for − finished, never below 0."""
    df, keys = runs.df, cell_keys(runs)
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
