"""`lrsweep summarize`, the computing half: sweep folders -> a Report (tables, fits, critical
batch size). Writing the report/ folder is output.files.write_report's job.

build_report only computes, so the CLI, notebooks and tests use the same numbers. A sweep with
another axis besides LR, batch size and seed (say optimizer.name), or several sweeps, is
analysed per group: one fit per optimizer, not a blend.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from lrsweep import storage
from lrsweep.analysis import critical, crossing, fits, noise, optimum
from lrsweep.analysis.laws_anchored import Anchor
from lrsweep.analysis.cells import add_loss_drop, best_lr_table, cell_counts, cell_keys, cell_table, expected_runs
from lrsweep.analysis.metrics import check_metric
from lrsweep.analysis.runs import load_runs
from lrsweep.errors import ParameterError, UserError


def default_tolerance(metric: str) -> float:
    """1% of the best accuracy, 5% of the best loss or step count (the issue's defaults)."""
    return 0.01 if metric.endswith("_acc") else 0.05


@dataclass
class Group:
    """Everything computed for one group of runs (one optimizer, one sweep, ...)."""
    label: str  # "" when the runs form a single group
    keys: dict
    cells: pd.DataFrame  # per (B, LR): mean, std, n, counts incl. missing
    best: pd.DataFrame  # per B: grid best, interpolated optimum, edge, flat range
    fits: pd.DataFrame  # one row per law, best first
    critical: pd.DataFrame  # one row per target: the S-E fit, then the B_noise comparison (noise.COLUMNS)
    se: dict = field(default_factory=dict)  # target -> per-B S, E points
    stats: pd.DataFrame = field(default_factory=pd.DataFrame)  # per run: oscillation, grad norm
    curves: dict = field(default_factory=dict)  # B -> best run's metrics.csv + smoothed loss
    tie: float = math.nan  # decades: laws whose residual errors differ by less are tied (fits.fit_laws)
    warnings: list = field(default_factory=list)

    @property
    def measured_sizes(self) -> list[float]:
        """Batch sizes whose optimum is bracketed: the points the laws were fitted to."""
        ok = self.best["bracketed"] & np.isfinite(self.best["lr_opt"])
        return [float(b) for b in self.best.loc[ok, "batch_size"]]

    def note(self, text: str) -> str:
        """A warning about this group, prefixed with its label when there are groups."""
        return f"{self.label}: {text}" if self.label else text

    @property
    def bnoise(self) -> pd.DataFrame:
        """B_noise three ways per target (noise.py): the S-E fit, the surge law's peak, B_simple."""
        return self.critical[[c for c in noise.TABLE if c in self.critical]] if not self.critical.empty else self.critical


@dataclass
class Report:
    metric: str
    higher: bool
    tolerance: float
    targets: list[float]
    after_steps: int
    sweeps: list[str]
    runs: pd.DataFrame
    groups: list[Group]
    warnings: list[str]

    def table(self, name: str) -> pd.DataFrame:
        """best | cells | fits | critical | bnoise, all groups stacked, group columns first."""
        return stack_groups([(g.keys, getattr(g, name)) for g in self.groups])


def stack_groups(tables: list[tuple[dict, pd.DataFrame]]) -> pd.DataFrame:
    """Per-group tables as one, each row with its group's key values, key columns first (in the
    first group's order). Shared by Report.table and the fits.json reader (analysis.saved)."""
    # [v] * n: a tuple-valued key (optimizer.betas) is one value, not a column of its items
    parts = [t.assign(**{k: [v] * len(t) for k, v in keys.items()}) for keys, t in tables if not t.empty]
    if not parts:
        return pd.DataFrame()
    df = pd.concat(parts, ignore_index=True)
    first = [k for k in tables[0][0] if k in df]
    return df[first + [c for c in df.columns if c not in first]]


def _configured_targets(runs: pd.DataFrame) -> list[float]:
    """The sweeps' own train.target_train_loss values (read from one config.json per sweep)."""
    found = []
    for _, r in runs.groupby("sweep").head(1).iterrows():
        try:
            t = json.loads((Path(r["path"]) / storage.CONFIG).read_text())["train"].get("target_train_loss")
        except (OSError, ValueError, KeyError, AttributeError):
            continue
        if t is not None and t not in found:
            found.append(float(t))
    return found


def _check_settings(tolerance: Optional[float], after_steps: int) -> None:
    if tolerance is not None and not 0 <= tolerance < 1:
        raise ParameterError("tolerance", f"expected a fraction in [0, 1), got {tolerance}")
    if after_steps < 1:
        raise ParameterError("after_steps", f"expected an integer >= 1, got {after_steps}")


def build_report(paths, metric: str = "final_val_acc", targets: Optional[list[float]] = None,
                 tolerance: Optional[float] = None, after_steps: int = 10, curves: bool = True) -> Report:
    """Analyse the sweeps under `paths`. `targets`: train-loss levels for S/E and the loss-drop
    metric (default: the sweep's target_train_loss). `curves=False` skips reading metrics.csv
    (no critical batch size, oscillation or loss curves) for a quick best-LR answer."""
    higher = check_metric(metric)
    _check_settings(tolerance, after_steps)
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    runs = load_runs(paths)
    warnings = list(runs.warnings)
    if runs.df.empty:
        raise UserError(f"no finished runs under {', '.join(map(str, paths))}")
    expected, w = expected_runs(runs.sweep_dirs)
    warnings += w
    targets = list(targets or []) or _configured_targets(runs.df)
    if any(not 0 < t < math.inf for t in targets):
        raise ParameterError("targets", f"expected train-loss values > 0 (finite), got {targets}")
    table = pd.DataFrame()
    if curves or metric == "loss_drop_after_target":
        table, w = critical.curve_table(runs.df, targets, after_steps)
        warnings += w
    if metric == "loss_drop_after_target":
        if not targets:
            raise ParameterError("targets", "none given and the sweep sets no train.target_train_loss, but "
                                            "metric loss_drop_after_target needs a train-loss target")
        runs = add_loss_drop(runs, table, targets[0])
    tol = default_tolerance(metric) if tolerance is None else tolerance
    keys = cell_keys(runs)
    cells = cell_table(runs, metric).merge(cell_counts(runs, expected), on=keys, how="outer")
    cells = cells.sort_values(keys, ignore_index=True)
    best = best_lr_table(runs, metric)
    gkeys = keys[:-2]
    groups = []
    for gvals, gcells in (cells.groupby(gkeys, dropna=False, sort=True) if gkeys else [((), cells)]):
        kd = dict(zip(gkeys, gvals if isinstance(gvals, tuple) else (gvals,)))
        groups.append(_group(kd, gcells.drop(columns=gkeys).reset_index(drop=True),
                             best[_matches(best, kd)].drop(columns=gkeys).reset_index(drop=True),
                             runs.df[_matches(runs.df, kd)], table, metric, higher, tol, targets))
    return Report(metric, higher, tol, targets, after_steps, sorted({d.name for d in runs.sweep_dirs}),
                  runs.df, groups, warnings)


def _matches(df: pd.DataFrame, keys: dict) -> np.ndarray:
    """Rows whose columns equal the group's key values, where a missing value (an axis left
    null in a zip) equals a missing value."""
    ok = np.ones(len(df), bool)
    for k, v in keys.items():
        ok &= df[k].isna().to_numpy() if pd.isna(v) else (df[k] == v).to_numpy()
    return ok


def _group(keys, cells, best, runs, curve_table, metric, higher, tol, targets) -> Group:
    g = Group(", ".join(f"{k}={v}" for k, v in keys.items()), keys, cells, best, pd.DataFrame(), pd.DataFrame())
    rows, ratios = [], []
    for _, b in best.iterrows():
        c = cells[(cells["batch_size"] == b["batch_size"]) & (cells["n"] > 0)]
        lo, hi, nflat = optimum.flat_range(c["lr"], c["mean"], higher, tol)
        rows.append({"flat_lo": lo, "flat_hi": hi, "flat_n": nflat,
                     "flat_decades": math.log10(hi / lo) if lo > 0 else math.nan})
        ratios.append(optimum.grid_ratio(c["lr"].to_numpy(float)))
        if b["edge"]:  # the other notes explain a cell; this one asks for more runs
            g.warnings.append(g.note(f"B={b['batch_size']:g}: {b['note']}"))
    best = pd.concat([best, pd.DataFrame(rows, index=best.index)], axis=1)
    g.best = best
    have_curves = not curve_table.empty
    mine = curve_table[curve_table["run_id"].isin(runs["run_id"])] if have_curves else curve_table
    anchor = _add_critical(g, runs, mine, targets) if have_curves else None
    fit_pts = best[best["bracketed"] & np.isfinite(best["lr_opt"])]
    g.tie = optimum.interpolation_error(float(np.median(ratios))) if ratios else fits.TIE_DECADES
    g.fits, w = fits.fit_laws(fit_pts["batch_size"], fit_pts["lr_opt"], tie=g.tie, anchor=anchor)
    g.warnings += [g.note(x) for x in w]
    for law in fits.RULES:  # how far the measured optimum departs from the anchored rules
        row = g.fits[g.fits["law"] == law] if not g.fits.empty else g.fits
        best[law] = fits.law_value(law, row.iloc[0]["params"], best["batch_size"]) if len(row) else math.nan
    if have_curves:
        judged_at = targets[0] if metric == "loss_drop_after_target" and targets else None
        g.critical, g.se = noise.compare(g.critical, g.se, mine, g.fits, judged_at)
        _add_curves(g, mine)
    return g


def _add_critical(g: Group, runs: pd.DataFrame, mine: pd.DataFrame, targets: list[float]) -> Optional[Anchor]:
    """The S-E fit per target (g.critical, g.se); returns the first target's B_noise with its
    replicates, for document 003's anchored laws (laws_anchored.py)."""
    crit, anchor = [], None
    for t in targets:
        pts, res, reps = critical.critical_fit(runs, mine, t)  # with bootstrap intervals
        g.se[t] = pts
        crit.append(res)
        if res["note"]:
            g.warnings.append(g.note(f"target {t:g}: {res['note']}"))
        if anchor is None:
            anchor = Anchor(t, res["B_noise"], res["B_noise_lo"], res["B_noise_hi"], reps)
    g.critical = pd.DataFrame(crit)
    return anchor


def _add_curves(g: Group, mine: pd.DataFrame) -> None:
    """Per-cell oscillation and gradient norm (g.stats), and each batch size's best run's curve."""
    best_cells = set(zip(g.best["batch_size"], g.best["best_lr"]))
    stats = mine.groupby(["batch_size", "lr"])[["oscillation", "grad_norm_mean"]].mean().reset_index()
    stats["is_best"] = [(b, lr) in best_cells for b, lr in zip(stats["batch_size"], stats["lr"])]
    g.stats = stats
    if stats["oscillation"].isna().all():
        g.warnings.append(f"runs shorter than {critical.OSCILLATION_WINDOW} logged steps: no loss-oscillation figure")
    for _, b in g.best.iterrows():
        run = mine[(mine["batch_size"] == b["batch_size"]) & (mine["lr"] == b["best_lr"])]
        if run.empty:
            continue
        path = run.iloc[0]["path"]  # the first seed: one curve per B keeps the figure readable
        try:
            m = pd.read_csv(Path(path) / storage.METRICS)
        except (OSError, ValueError) as e:
            g.warnings.append(f"skipped {path}: unreadable metrics.csv ({type(e).__name__})")
            continue
        m["smoothed"] = crossing.local_trend(m["step"], m["train_loss"])  # what S is read from
        g.curves[float(b["batch_size"])] = m


def predict(report: Report, batch_sizes: list[float], law: Optional[str] = None) -> pd.DataFrame:
    """The optimal LR at each batch size, per group, from the best-ranked (or named) law."""
    bad = [b for b in batch_sizes if not 0 < b < math.inf]
    if bad:
        raise ParameterError("batch_sizes", f"expected a number > 0, got {bad[0]:g} (it must be finite)")
    rows = []
    for g in report.groups:
        if g.fits.empty:
            raise UserError(g.note("no scaling law could be fitted: need batch sizes whose best LR is "
                                   "bracketed by LRs that trained (2 for a rule, 3 for a law; "
                                   f"{len(g.measured_sizes)} now)"))
        for B in batch_sizes:
            try:
                p = fits.predict(g.fits, B, g.measured_sizes, law)
            except ValueError as e:
                raise ParameterError("law", str(e)) from None
            trained = g.cells.loc[g.cells["n_learned"] > 0, "lr"].max()
            if not p["lr"] <= trained:  # the law knows nothing about divergence
                above = (f"above the largest LR at which a run learned ({trained:.3g}) at any measured B"
                         if np.isfinite(trained) else "and no run learned at any measured B")
                p["warning"] = "; ".join(filter(None, [p["warning"], f"LR {p['lr']:.3g} is {above}"]))
            rows.append({**g.keys, **p})
    return pd.DataFrame(rows)
