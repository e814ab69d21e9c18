"""Best learning rate per batch size, from the finished runs (runs.load_runs).

Seeds are aggregated as mean, std (from 2 seeds) and n per (other axes, batch size, LR) cell. A
run that diverged or failed, or never reached the target, scores the worst possible value
(metrics.scores): it is never silently dropped, and a cell with one diverged seed loses. A cell
"trained" when all its runs learned (metrics.learned: better than chance).
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd

from lrsweep.analysis.bootstrap import lr_opt_interval
from lrsweep.analysis.metrics import TARGET_METRICS, check_metric, learned, scores
from lrsweep.analysis.optimum import find_optimum
from lrsweep.analysis.runs import EXPERIMENT, Runs, hashable
from lrsweep.config.grid import load_sweep
from lrsweep.errors import GridTooLarge, UserError

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


def _scored(runs: Runs, metric: str) -> pd.DataFrame:
    """The runs with their score (metrics.scores) and whether they learned (metrics.learned)."""
    return runs.df.assign(_score=scores(runs.df, metric, check_metric(metric)), _learned=learned(runs.df))


def _aggregate(d: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Seeds -> one row per `keys`: mean, std (only from 2 seeds: one run has no spread), n, and
    how many runs diverged, failed, learned, and have a value (a target reached)."""
    out = d.groupby(keys, dropna=False).agg(
        nominal_lr=("nominal_lr", "first"), mean=("_score", "mean"), std=("_score", "std"),
        n=("_score", "size"),
        n_diverged=("status", lambda s: int((s == "diverged").sum())),
        n_failed=("status", lambda s: int((s == "failed").sum())),
        n_stalled=("status", lambda s: int((s == "stalled").sum())),
        n_learned=("_learned", "sum"), n_valued=("_score", lambda s: int(np.isfinite(s).sum())),
    ).reset_index()
    out["std"] = out["std"].where(np.isfinite(out["mean"]) & (out["n"] >= 2))
    out["n_learned"] = out["n_learned"].astype(int)
    return out


def cell_table(runs: Runs, metric: str) -> pd.DataFrame:
    """One row per cell (cell_keys): mean, std, n over seeds, and status counts."""
    return _aggregate(_scored(runs, metric), cell_keys(runs))


def _failure(c, metric: str) -> str:
    """What happened in a cell (a row of _aggregate) that did not train, in words; "" if it did."""
    n, parts = int(c.n), []
    unlearned = n - int(c.n_diverged) - int(c.n_stalled) - int(c.n_failed) - int(c.n_learned)
    for count, what in ((c.n_diverged, "diverged"), (c.n_stalled, "stalled"), (c.n_failed, "failed"),
                        (unlearned, "stayed at chance")):
        if count:
            parts.append(what if count == n else f"{what} ({int(count)} of {n} seeds)")
    if not parts and not np.isfinite(c.mean):
        missing = n - int(c.n_valued)
        what = "never reached the target" if metric in TARGET_METRICS else "has no value"
        parts.append(what if missing == n else f"{what} ({missing} of {n} seeds)")
    return ", ".join(parts)


def _counts(d: pd.DataFrame) -> str:
    st = d["status"].value_counts()
    return ", ".join(f"{int(st[k])} {k}" for k in ("complete", "diverged", "stalled", "failed") if st.get(k))


def _no_best(d: pd.DataFrame, metric: str, best_lr: float) -> str:
    """Why a batch size has no best LR ("" when it has one): nothing reached the target, nothing
    learned, or the best by the metric did not learn. Always what happened, with the counts."""
    n, valued, counts = len(d), int(np.isfinite(d["_score"]).sum()), _counts(d)
    if metric in TARGET_METRICS and valued < n:
        if valued == 0:
            return f"no run reached the target ({counts})"
        if not np.isfinite(best_lr):
            return f"no LR where every seed reached the target ({valued} of {n} runs did; {counts})"
    if not d["_learned"].any():
        if not (d["status"] == "complete").any():
            return f"every run diverged, stalled or failed ({counts})"
        return f"no run learned: the complete ones stayed at chance ({counts})"
    if not np.isfinite(best_lr):
        return f"no LR where every seed has a value ({valued} of {n} runs do; {counts})"
    if not d.loc[d["lr"] == best_lr, "_learned"].any():
        return f"the best LR by {metric} ({best_lr:.3g}) stayed at chance ({counts})"
    return ""


def _seed_interval(runs: pd.DataFrame, lrs: pd.Series, higher: bool) -> tuple[float, float]:
    """The bootstrap interval over seeds of one batch size's optimum (bootstrap.lr_opt_interval),
    from its runs' scores and learned flags as [LR, seed] grids."""
    score, ok = (runs.pivot_table(index="lr", columns="seed", values=v, aggfunc=f, dropna=False).reindex(lrs)
                 for v, f in (("_score", "mean"), ("_learned", "min")))
    return lr_opt_interval(lrs, score.to_numpy(float), ok.fillna(False).to_numpy(bool), higher, log_metric=not higher)


def best_lr_table(runs: Runs, metric: str = "final_val_acc") -> pd.DataFrame:
    """Per batch size (and per value of any other axis): the LR with the best mean metric, its
    interpolated optimum (optimum.find_optimum; `bracketed` when it has a neighbour on each side) with a
    bootstrap interval over seeds (lr_opt_lo/hi, from 2 seeds, bracketed optima only), and a
    note. A batch size where nothing learned, or nothing reached the target of a *_to_target
    metric, has no best LR (NaN), and its note says what happened."""
    if runs.df.empty:
        raise UserError("no finished runs to summarize")
    higher = check_metric(metric)
    d = _scored(runs, metric)
    if "seed" not in d:
        d["seed"] = 0
    keys = cell_keys(runs)[:-1]  # everything but lr
    rows = []
    for gv, sub in d.groupby(keys, dropna=False, sort=True):
        key = dict(zip(keys, gv if isinstance(gv, tuple) else (gv,)))
        cells = _aggregate(sub, ["lr"]).sort_values("lr", ignore_index=True)
        fails = [_failure(c, metric) for c in cells.itertuples()]
        opt = find_optimum(cells["lr"], cells["mean"], higher, log_metric=not higher, failures=fails)
        why = _no_best(sub, metric, opt.lr_grid)
        best = (cells[cells["lr"] == opt.lr_grid].iloc[0] if not why else
                {**dict.fromkeys(("lr", "nominal_lr", "mean", "std"), math.nan), "n": cells["n"].max()})
        ci = (_seed_interval(sub, cells["lr"], higher) if not why and opt.bracketed and sub["seed"].nunique() >= 2
              else (math.nan, math.nan))
        o = opt.as_dict()
        rows.append({**key, "best_lr": best["lr"], "nominal_lr": best["nominal_lr"],
                     "lr_opt": math.nan if why else opt.lr_opt, "lr_opt_lo": ci[0], "lr_opt_hi": ci[1],
                     metric: best["mean"], "std": best["std"], "n_seeds": int(best["n"]),
                     "n_lrs": len(cells), "n_diverged": int(cells["n_diverged"].sum()),
                     "n_failed": int(cells["n_failed"].sum()), "n_learned": int(cells["n_learned"].sum()),
                     "interpolated": o["interpolated"] and not why, "bracketed": o["bracketed"] and not why,
                     "edge": "" if why else o["edge"], "suggest_lo": o["suggest_lo"], "suggest_hi": o["suggest_hi"],
                     "note": why or o["note"]})
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
        except GridTooLarge as e:
            warnings.append(f"{f}: asks for {e.count} runs, more than {e.limit}: runs never started are not counted as missing")
            continue
        except (UserError, OSError, ValueError) as e:
            warnings.append(f"{f}: unreadable, missing runs not counted ({str(e)[:80]})")
            continue
        for r in sweep.runs:
            rows.append({**{k: hashable(v) for k, v in r.axes.items()}, "sweep": d.name, "run_id": r.run_id,
                         "batch_size": r.config.train.batch_size, "lr": r.config.effective_lr})
    return pd.DataFrame(rows), warnings


def cell_counts(runs: Runs, expected: pd.DataFrame) -> pd.DataFrame:
    """Per cell (cell_keys): runs asked for, complete, diverged, stalled, failed, missing.

    Matched by cell values, not run ids: ids hash the whole config, so a sweep finished by an
    older lrsweep (or with a since-edited base config) still has its runs counted where they
    belong. missing = asked for − finished, never below 0."""
    df, keys = runs.df, cell_keys(runs)
    states = ("complete", "diverged", "stalled", "failed")
    done = df[keys].assign(**{c: (df["status"] == c).astype(int) for c in states})
    out = done.groupby(keys, dropna=False)[list(states)].sum()
    if not expected.empty and set(keys) <= set(expected.columns):
        asked = expected.groupby(keys, dropna=False).size().rename("expected")
        out = out.join(asked, how="outer").fillna(0).astype(int)
    else:
        out["expected"] = out.sum(axis=1)
    out["missing"] = (out["expected"] - out[list(states)].sum(axis=1)).clip(lower=0)
    return out.reset_index()[[*keys, "expected", *states, "missing"]]
