"""`lrsweep summarize` (the report) and `lrsweep predict` (the LR at a new batch size)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lrsweep.cli.choices import Format, Law, Metric, TableOrJson
from lrsweep.cli.root import app, console, guarded, warn
from lrsweep.cli.tables import (WideOpt, best_title, compact_best, compact_critical, compact_fits, print_frame, print_json,
                                with_params_text)

PathsArg = Annotated[list[Path], typer.Argument(help="Sweep folder(s), or a folder of sweeps.")]
MetricOpt = Annotated[Metric, typer.Option(help="Metric that picks the best LR.")]


def _skipped(warnings: list[str]) -> tuple[list[str], list[str]]:
    """(files skipped, other notes): scripts get only the first on stderr, people both."""
    skipped = [w for w in warnings if w.startswith("skipped ")]
    return skipped, [w for w in warnings if w not in skipped]


def _bnoise(table, keys: list[str]):
    """The S-E fit, the surge law's peak and B_simple (with the runs it comes from) per target,
    each with its interval: four short columns besides the keys (analysis/noise.py)."""
    from lrsweep.output.markdown import with_ci

    out = table[[k for k in keys if k in table]].copy()
    out["target"] = table["target"]
    for col, name in (("B_noise", "S–E fit"), ("B_peak", "surge peak"), ("B_simple", "B_simple")):
        out[name] = [with_ci(*v) for v in zip(table[col], table[f"{col}_lo"], table[f"{col}_hi"])]
    out["runs"] = table["B_simple_runs"].fillna(0).astype(int)
    return out


@app.command()
@guarded(targets="--target")
def summarize(paths: PathsArg, metric: MetricOpt = Metric.final_val_acc,
              target: Annotated[Optional[list[float]], typer.Option("--target", help="Train-loss target for S, E and the critical batch size. Repeatable. Default: the sweep's target_train_loss.")] = None,
              tolerance: Annotated[Optional[float], typer.Option("--tolerance", help="Flat range: LRs within this fraction of the best (default 0.01 for accuracies, 0.05 otherwise).")] = None,
              after_steps: Annotated[int, typer.Option("--after-steps", help="Steps after the target for loss_drop_after_target.")] = 10,
              out: Annotated[Optional[Path], typer.Option("--out", help="Report folder (default: <first path>/report/).")] = None,
              format_: Annotated[Format, typer.Option("--format", help="How to print the best-LR table on stdout.")] = Format.table,
              plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw the PNG figures.")] = True,
              wide: WideOpt = False):
    """Best LR per batch size, sub-grid optimum, scaling-law fits, critical batch size; writes report/."""
    from lrsweep.analysis.report import build_report
    from lrsweep.output.files import write_report

    report = build_report(paths, metric.value, targets=target, tolerance=tolerance, after_steps=after_steps)
    out_dir = out or Path(paths[0]) / "report"
    written = write_report(report, out_dir, with_plots=plots)
    best = report.table("best")
    skipped, notes = _skipped(report.warnings)
    notes += [w for g in report.groups for w in g.warnings]
    for w in skipped if format_ != Format.table else skipped + notes:  # scripts get data on stdout only
        warn(w)
    if format_ != Format.table:
        print_frame(best, fmt_out=format_.value)
        return
    keys = list(report.groups[0].keys)
    print_frame(compact_best(best, metric.value, wide), notes="note", wide=wide, split=keys,
                title=best_title(metric.value, report.tolerance))
    fits = report.table("fits")
    if not fits.empty:
        print_frame(compact_fits(fits, keys, wide), notes="note", wide=wide, split=keys,
                    title="optimal LR vs batch size: fitted laws (se: residual std, decades of LR)")
    crit = report.table("critical")
    if not crit.empty:
        print_frame(compact_critical(crit, keys, wide), notes="note", wide=wide, split=keys,
                    title="critical batch size per train-loss target")
    bnoise = report.table("bnoise")
    if not bnoise.empty and bnoise[["B_peak", "B_simple"]].notna().to_numpy().any():
        print_frame(_bnoise(bnoise, keys), wide=wide, split=keys,
                    title="B_noise three ways per train-loss target (90% CI; see report.md)")
    console.print(f"wrote {out_dir / 'report.md'} and {len(written) - 1} more files")


@app.command()
@guarded(batch_sizes="--batch-size")
def predict(paths: PathsArg,
            batch_size: Annotated[list[float], typer.Option("--batch-size", help="Batch size to predict for. Repeatable.")],
            metric: MetricOpt = Metric.final_val_acc,
            law: Annotated[Optional[Law], typer.Option("--law", help="Use this law instead of the best ranked.")] = None,
            format_: Annotated[TableOrJson, typer.Option("--format", help="How to print the predictions.")] = TableOrJson.table):
    """The optimal LR at a new batch size, from the best-fitting scaling law."""
    from lrsweep.analysis.report import build_report, predict as predict_lr

    report = build_report(paths, metric.value, curves=False)
    table = predict_lr(report, batch_size, law.value if law else None)
    if format_ == TableOrJson.json:
        print_json(table)
        return
    for w in _skipped(report.warnings)[0]:
        warn(w)
    print_frame(with_params_text(table).drop(columns=["warning", "formula"]), title=f"predicted optimal LR (best LR by {metric})")
    for w in table["warning"]:
        if w:
            warn(w)
