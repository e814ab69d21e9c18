"""`lrsweep summarize`: sweep folders -> a Report (tables, fits, critical batch size), then the
report/ folder (report.md, best_lr.csv, cells.csv, fits.json, PNGs).

build_report only computes and write_report only writes, so the CLI, notebooks and tests use
the same numbers. A sweep with another axis besides LR, batch size and seed (say
optimizer.name), or several sweeps, is analysed per group: one fit per optimizer, not a blend.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from lrsweep.analysis import critical
from lrsweep.analysis import fits
from lrsweep.analysis import optimum
from lrsweep import storage
from lrsweep.errors import UserError
from lrsweep.analysis.runs import find_sweep_dirs, load_runs
from lrsweep.analysis.cells import (
    add_loss_drop, best_lr_table, cell_counts, cell_table, check_metric, expected_runs,
)

PLOTS = ("heatmap", "metric_vs_lr", "optimal_lr", "loss_vs_step", "loss_vs_examples",
         "oscillation", "grad_norm", "critical_batch")


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
    critical: pd.DataFrame  # one row per target
    se: dict = field(default_factory=dict)  # target -> per-B S, E points
    stats: pd.DataFrame = field(default_factory=pd.DataFrame)  # per run: oscillation, grad norm
    curves: dict = field(default_factory=dict)  # B -> best run's metrics.csv + smoothed loss
    warnings: list = field(default_factory=list)

    @property
    def measured_sizes(self) -> list[float]:
        """Batch sizes whose optimum is inside the grid: the points the laws were fitted to."""
        ok = (self.best["edge"] == "") & np.isfinite(self.best["lr_opt"])
        return [float(b) for b in self.best.loc[ok, "batch_size"]]


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
        """best | cells | fits | critical, all groups stacked, group columns first."""
        # [v] * n: a tuple-valued key (optimizer.betas) is one value, not a column of its items
        parts = [t.assign(**{k: [v] * len(t) for k, v in g.keys.items()})
                 for g in self.groups if not (t := getattr(g, name)).empty]
        if not parts:
            return pd.DataFrame()
        df = pd.concat(parts, ignore_index=True)
        first = [k for k in self.groups[0].keys if k in df]
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


def build_report(paths, metric: str = "final_val_acc", targets: Optional[list[float]] = None,
                 tolerance: Optional[float] = None, after_steps: int = 10, curves: bool = True) -> Report:
    """Analyse the sweeps under `paths`. `targets`: train-loss levels for S/E and the loss-drop
    metric (default: the sweep's target_train_loss). `curves=False` skips reading metrics.csv
    (no critical batch size, oscillation or loss curves) for a quick best-LR answer."""
    higher = check_metric(metric)
    if tolerance is not None and not 0 <= tolerance < 1:
        raise UserError(f"--tolerance: expected a fraction in [0, 1), got {tolerance}")
    if after_steps < 1:
        raise UserError(f"--after-steps: expected an integer >= 1, got {after_steps}")
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    runs, warnings = load_runs(paths)
    if runs.empty:
        raise UserError(f"no finished runs under {', '.join(map(str, paths))}")
    sweep_dirs = [d for p in paths for d in find_sweep_dirs(p)]
    expected, w = expected_runs(sweep_dirs)
    warnings += w
    targets = list(targets or []) or _configured_targets(runs)
    if any(t <= 0 for t in targets):
        raise UserError(f"--target: expected train-loss values > 0, got {targets}")
    table = pd.DataFrame()
    if curves or metric == "loss_drop_after_target":
        table, w = critical.curve_table(runs, targets, after_steps)
        warnings += w
    if metric == "loss_drop_after_target":
        if not targets:
            raise UserError("--metric loss_drop_after_target needs a train-loss target: "
                            "pass --target or set train.target_train_loss in the sweep")
        runs = add_loss_drop(runs, table, targets[0])
    tol = default_tolerance(metric) if tolerance is None else tolerance
    cells = cell_table(runs, metric)
    counts = cell_counts(runs, expected)
    keys = cells.attrs["keys"]
    cells = cells.merge(counts, on=keys, how="outer").sort_values(keys, ignore_index=True)
    best = best_lr_table(runs, metric)
    gkeys = keys[:-2]
    groups = []
    for gvals, gcells in (cells.groupby(gkeys, dropna=False, sort=True) if gkeys else [((), cells)]):
        gvals = gvals if isinstance(gvals, tuple) else (gvals,)
        kd = dict(zip(gkeys, gvals))
        sel = np.logical_and.reduce([_same(best[k], v) for k, v in kd.items()]) if kd else np.ones(len(best), bool)
        rsel = np.logical_and.reduce([_same(runs[k], v) for k, v in kd.items()]) if kd else np.ones(len(runs), bool)
        groups.append(_group(kd, gcells.drop(columns=gkeys).reset_index(drop=True),
                             best[sel].drop(columns=gkeys).reset_index(drop=True), runs[rsel], table,
                             metric, higher, tol, targets))
    return Report(metric, higher, tol, targets, after_steps, sorted({d.name for d in sweep_dirs}),
                  runs, groups, warnings)


def _same(column: pd.Series, value) -> np.ndarray:
    """column == value, where a missing value (an axis left null in a zip) equals a missing value."""
    if pd.isna(value):
        return column.isna().to_numpy()
    return (column == value).to_numpy()


def _group(keys, cells, best, runs, curve_table, metric, higher, tol, targets) -> Group:
    label = ", ".join(f"{k}={v}" for k, v in keys.items())
    warnings = []
    rows = []
    for _, b in best.iterrows():
        c = cells[(cells["batch_size"] == b["batch_size"]) & (cells["n"] > 0)]
        opt = optimum.find_optimum(c["lr"], c["mean"], higher, log_metric=not higher)
        lo, hi, nflat = optimum.flat_range(c["lr"], c["mean"], higher, tol)
        rows.append({**opt.as_dict(), "flat_lo": lo, "flat_hi": hi, "flat_n": nflat,
                     "flat_decades": math.log10(hi / lo) if lo > 0 else math.nan})
        if opt.edge:  # the other notes explain a cell; this one asks for more runs
            warnings.append(f"{label + ': ' if label else ''}B={b['batch_size']:g}: {opt.note}")
    # lr_grid repeats best_lr; value_opt can overshoot on a cliff (optimum.py): neither is a result
    best = pd.concat([best.drop(columns=["at_edge"]), pd.DataFrame(rows).drop(columns=["lr_grid", "value_opt"])], axis=1)
    if (best["batch_size"] % 1 == 0).all():  # row-wise assembly made them floats
        best["batch_size"] = best["batch_size"].astype(int)
    fit_pts = best[(best["edge"] == "") & np.isfinite(best["lr_opt"])]
    fit_df, w = fits.fit_laws(fit_pts["batch_size"], fit_pts["lr_opt"])
    warnings += [f"{label + ': ' if label else ''}{x}" for x in w]
    for law in fits.RULES:  # how far the measured optimum departs from the anchored rules
        row = fit_df[fit_df["law"] == law] if not fit_df.empty else fit_df
        best[law] = fits.law_value(law, row.iloc[0]["params"], best["batch_size"]) if len(row) else math.nan
    g = Group(label, keys, cells, best, fit_df, pd.DataFrame(), warnings=warnings)
    if not curve_table.empty:
        _add_curves(g, runs, curve_table, targets)
    return g


def _add_curves(g: Group, runs: pd.DataFrame, table: pd.DataFrame, targets: list[float]) -> None:
    mine = table[table["run_id"].isin(runs["run_id"])]
    crit = []
    for t in targets:
        pts = critical.se_points(runs, mine, t)
        g.se[t] = pts
        res = critical.fit_critical(pts, t)
        crit.append(res)
        if res["note"]:
            g.warnings.append(f"{g.label + ': ' if g.label else ''}target {t:g}: {res['note']}")
    g.critical = pd.DataFrame(crit)
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
        m["smoothed"] = critical.smoothed_loss(m, critical.smoothing_of(path))
        g.curves[float(b["batch_size"])] = m


def predict(report: Report, batch_sizes: list[float], law: Optional[str] = None) -> pd.DataFrame:
    """The optimal LR at each batch size, per group, from the best-ranked (or named) law."""
    rows = []
    for g in report.groups:
        if g.fits.empty:
            raise UserError(f"{g.label + ': ' if g.label else ''}no scaling law could be fitted: "
                            f"need 2+ batch sizes whose best LR is inside the grid ({len(g.measured_sizes)} now)")
        for B in batch_sizes:
            try:
                p = fits.predict(g.fits, B, g.measured_sizes, law)
            except ValueError as e:
                raise UserError(f"--law: {e}") from None
            stable = g.cells.loc[g.cells["complete"] > 0, "lr"].max()
            if p["lr"] > stable:  # the law knows nothing about divergence
                p["warning"] = "; ".join(filter(None, [p["warning"], (
                    f"LR {p['lr']:.3g} is above the largest LR that trained without diverging "
                    f"({stable:.3g}) at any measured B")]))
            rows.append({**g.keys, **p})
    return pd.DataFrame(rows)


# ---- writing -------------------------------------------------------------------------------

def _plain(x):
    """numpy scalars and DataFrames -> JSON-ready Python values."""
    if isinstance(x, pd.DataFrame):
        return [_plain(r) for r in x.to_dict(orient="records")]
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def fits_record(report: Report) -> dict:
    return _plain({
        "metric": report.metric, "higher_is_better": report.higher, "tolerance": report.tolerance,
        "targets": report.targets, "after_steps": report.after_steps, "sweeps": report.sweeps,
        "groups": [{"keys": g.keys, "best": g.best, "fits": g.fits, "critical": g.critical,
                    "se_points": {f"{t:g}": p for t, p in g.se.items()}, "warnings": g.warnings}
                   for g in report.groups],
        "warnings": report.warnings,
    })


def draw(report: Report, g: Group) -> dict:
    """The figures of one group, as name -> axes (not yet saved)."""
    from lrsweep import plots
    measured = g.cells[g.cells["n"] > 0]
    out = {"heatmap": plots.heatmap(g.cells, report.metric, report.higher, g.best),
           "metric_vs_lr": plots.metric_vs_lr(measured, report.metric, logy=_spans_decades(measured["mean"]))}
    laws = {}
    sizes = g.best["batch_size"].to_numpy(float)
    B = np.geomspace(sizes.min() / 2, sizes.max() * 2, 100)
    for _, f in g.fits.iterrows():
        rank = f"#{int(f['rank'])} " if np.isfinite(f["rank"]) else ""
        laws[f"{rank}{f['law']} (±{f['rms_log10']:.2f} decades)"] = (B, fits.law_value(f["law"], f["params"], B))
    out["optimal_lr"] = plots.optimal_lr(g.best, laws)
    if g.curves:
        out["loss_vs_step"] = plots.loss_curves(g.curves, "step")
        out["loss_vs_examples"] = plots.loss_curves(g.curves, "examples")
    if not g.stats.empty:
        if g.stats["oscillation"].notna().any():
            out["oscillation"] = plots.oscillation(g.stats)
        out["grad_norm"] = plots.grad_norm(g.stats)
    pts = {t: p for t, p in g.se.items() if not p.empty}
    if pts:
        fit = {r["target"]: r for r in g.critical.to_dict(orient="records")}
        hyp = {t: critical.hyperbola(f["S_min"], f["E_min"], sizes.min() / 2, sizes.max() * 2)
               for t, f in fit.items() if np.isfinite(f["B_noise"])}
        out["critical_batch"] = plots.critical_batch(pts, fit, hyp)
    return out


def _spans_decades(values: pd.Series) -> bool:
    """Log y when a positive metric spans more than a factor of 20 (losses, step counts)."""
    v = values[np.isfinite(values)]
    return bool(len(v) and (v > 0).all() and v.max() / v.min() > 20)


def write_report(report: Report, out_dir: str | Path, with_plots: bool = True) -> list[Path]:
    """Write the report folder; returns the files written."""
    from lrsweep.plots import save
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, df in (("best_lr.csv", report.table("best")), ("cells.csv", report.table("cells"))):
        storage.atomic_write(out / name, df.to_csv(index=False))
        written.append(out / name)
    storage.write_json(out / "fits.json", fits_record(report))
    written.append(out / "fits.json")
    for stale in [f for name in PLOTS for f in out.glob(f"{name}*.png")]:
        stale.unlink()  # a figure not redrawn this time must not pass for a current one
    images: dict[int, dict[str, str]] = {}
    if with_plots:
        for i, g in enumerate(report.groups):
            suffix = f"-{i + 1}" if len(report.groups) > 1 else ""
            images[i] = {}
            for name, ax in draw(report, g).items():
                f = save(ax, out / f"{name}{suffix}.png")
                images[i][name] = f.name
                written.append(f)
    storage.atomic_write(out / "report.md", markdown(report, images))
    written.append(out / "report.md")
    return written


def _g(v, unit: str = "") -> str:
    if isinstance(v, (float, np.floating)):
        return "—" if not np.isfinite(v) else f"{v:.3g}{unit}"
    return str(v)


def md_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "---|" * len(df.columns)
    return "\n".join([head, sep] + ["| " + " | ".join(_g(v) for v in row) + " |" for row in df.itertuples(index=False)])


_CAPTIONS = {
    "heatmap": "The metric in every cell (log LR across, batch size down); black frame: best LR per batch size; hatched: no value (div = diverged, fail = failed, — = target never reached); dotted: not run yet.",
    "metric_vs_lr": "The metric against LR, one line per batch size, error bars ±1 std over seeds.",
    "optimal_lr": "Optimal LR (interpolated) against batch size, log-log, with every fitted law; solid = best ranked.",
    "loss_vs_step": "Train loss of each batch size's best run against optimizer steps: faint = per step, solid = the smoothed loss targets are judged on.",
    "loss_vs_examples": "The same runs against examples seen: large batches need fewer steps but more examples.",
    "oscillation": "Per-step loss oscillation against batch size (document 001: small batches wobble more).",
    "grad_norm": "Mean gradient norm against batch size (document 004: it shrinks as B grows).",
    "critical_batch": "Steps S against examples E to reach each target, with the fitted hyperbola (S/S_min − 1)(E/E_min − 1) = 1.",
}


def markdown(report: Report, images: dict) -> str:
    """report.md: readable on its own, every number also in best_lr.csv / fits.json."""
    r, runs = report, report.runs
    n = runs["status"].value_counts()
    missing = sum(int(g.cells["missing"].sum()) for g in r.groups)
    L = [f"# lrsweep report: {', '.join(r.sweeps)}", "",
         f"Best LR judged by **{r.metric}** ({'higher' if r.higher else 'lower'} is better), seeds averaged; "
         f"diverged and failed runs count as the worst value. Runs: {n.get('complete', 0)} complete, "
         f"{n.get('diverged', 0)} diverged, {n.get('failed', 0)} failed, {missing} not run yet.", ""]
    if r.warnings:
        L += ["Warnings:", ""] + [f"- {w}" for w in r.warnings] + [""]
    for i, g in enumerate(r.groups):
        img = images.get(i, {})
        if g.label:
            L += [f"## {g.label}", ""]
        b = g.best
        show = pd.DataFrame({
            "B": b["batch_size"], "best LR (grid)": b["best_lr"], "optimum (interp.)": b["lr_opt"],
            r.metric: [f"{m:.4g} ± {s:.2g} (n={k})" if np.isfinite(m) else "—"
                       for m, s, k in zip(b[r.metric], b["std"], b["n_seeds"])],
            f"within {r.tolerance:g} of best": [f"{lo:.3g} – {hi:.3g}" if np.isfinite(lo) else "—"
                                                for lo, hi in zip(b["flat_lo"], b["flat_hi"])],
            "linear rule": b["linear_rule"], "sqrt rule": b["sqrt_rule"],
            "note": b["note"].where(b["note"] != "", ""),
        })
        L += ["### Best LR per batch size", "", md_table(show), "",
              "*optimum*: parabola in log LR through the best grid LR and its neighbours. "
              "*linear/sqrt rule*: the LR those rules give when anchored at the smallest batch size "
              "with a bracketed optimum; compare with the measured optimum.", ""]
        L += _img(img, "heatmap") + _img(img, "metric_vs_lr")
        L += ["### Scaling-law fits (optimal LR vs batch size)", ""]
        if g.fits.empty:
            L += ["No fit: fewer than 2 batch sizes have an optimum inside the LR grid.", ""]
        else:
            f = g.fits
            params = [", ".join(f"{k}={v:.3g}" for k, v in p.items()) for p in f["params"]]
            L += [md_table(pd.DataFrame({"rank": f["rank"], "law": f["law"], "formula": f["formula"],
                                         "parameters": params, "rms error (decades)": f["rms_log10"],
                                         "residual std (decades)": f["se_log10"], "note": f["note"]})), "",
                  "Residuals are in log10(LR) (0.1 decade ≈ 26%). Ranked by residual standard error "
                  "sqrt(RSS/(n − k)), which charges each law for its k parameters.", ""]
        L += _img(img, "optimal_lr")
        if not g.critical.empty:
            c = g.critical
            L += ["### Critical batch size", "",
                  md_table(pd.DataFrame({"train-loss target": c["target"], "batch sizes": c["n"],
                                         "B_noise ≈ B_crit": c["B_noise"], "S_min (steps)": c["S_min"],
                                         "E_min (examples)": c["E_min"], "R²": c["r2"], "note": c["note"]})), "",
                  "S and E: steps and examples to first reach the target on the smoothed train loss, "
                  "at the LR that gets there fastest for each batch size; fitted as "
                  "1/S = −B_noise/E + 1/S_min.", ""]
            L += _img(img, "critical_batch")
        for name in ("loss_vs_step", "loss_vs_examples", "oscillation", "grad_norm"):
            L += _img(img, name)
        partial = g.cells[(g.cells[["diverged", "failed", "missing"]].sum(axis=1) > 0)]
        if len(partial):
            L += ["### Cells with diverged, failed or missing runs", "",
                  md_table(partial[["batch_size", "lr", "expected", "complete", "diverged", "failed", "missing"]]), ""]
        if g.warnings:
            L += ["Notes:", ""] + [f"- {w}" for w in g.warnings] + [""]
    return "\n".join(L)


def _img(images: dict, name: str) -> list[str]:
    return [f"![{name}]({images[name]})", "", f"*{_CAPTIONS[name]}*", ""] if name in images else []
