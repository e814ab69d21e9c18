"""The `lrsweep` command. Commands only parse, call the library and print."""
from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lrsweep.errors import UserError

app = typer.Typer(help="Which learning rate goes with which batch size? Sweep, measure, fit.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
# Logs and CI are not terminals: rich would wrap at 80 columns; give tables room instead.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
STATE = {"debug": False}

SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a field: key=value (YAML value). Repeatable.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Put the sweep folder under this directory.")]


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False):
    STATE["debug"] = debug


def guarded(fn: Callable) -> Callable:
    """User errors -> one line on stderr, exit 2; Ctrl-C -> a note, exit 130. --debug shows the traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            if STATE["debug"]:
                raise
            err_console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        except KeyboardInterrupt:
            err_console.print("interrupted: finished runs are saved; run the same command again to continue")
            raise typer.Exit(130)
    return wrapper


def fmt(v) -> str:
    if isinstance(v, float):
        return "—" if not math.isfinite(v) else f"{v:.4g}"
    return str(v)


def print_frame(df: pd.DataFrame, title: str = "", fmt_out: str = "table") -> None:
    """Print a DataFrame as a rich table, or csv/json/markdown for scripts."""
    if fmt_out == "csv":
        sys.stdout.write(df.to_csv(index=False))
    elif fmt_out == "json":
        sys.stdout.write(df.to_json(orient="records", indent=2) + "\n")
    elif fmt_out == "markdown":
        sys.stdout.write(markdown_table(df) + "\n")
    else:
        table = Table(title=title or None)
        for c in df.columns:
            table.add_column(str(c), justify="right" if pd.api.types.is_numeric_dtype(df[c]) else "left")
        for row in df.itertuples(index=False):
            table.add_row(*[fmt(v) for v in row])
        console.print(table)


def markdown_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def check_choice(option: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise UserError(f"{option}: expected one of ({', '.join(allowed)}), got {value!r}")
    return value


@app.command()
@guarded
def plan(config: Annotated[Path, typer.Argument(help="Sweep YAML file.")],
         set_: SetOpt = None, out: OutOpt = Path("runs")):
    """Print the expanded grid (count, runs, which already finished) without training."""
    from lrsweep import storage
    from lrsweep.config.grid import load_sweep
    from lrsweep.sweep import preflight, sweep_dir_for

    sweep = load_sweep(config, set_ or [])
    preflight(sweep)
    sweep_dir = sweep_dir_for(sweep, out)
    done = {p.name: (storage.read_result(p) or {}).get("status") for p in sweep_dir.glob("*") if p.is_dir()}
    rows = [{"run_id": r.run_id, **r.axes, "status": done.get(r.run_id) or "pending"} for r in sweep.runs]
    df = pd.DataFrame(rows)
    n_done = int((df["status"] != "pending").sum())
    print_frame(df, title=f"{sweep.name}: {len(rows)} runs, {n_done} finished, {len(rows) - n_done} to run → {sweep_dir}")


@app.command()
@guarded
def run(config: Annotated[Path, typer.Argument(help="Sweep YAML file.")],
        set_: SetOpt = None, out: OutOpt = Path("runs"),
        retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Rerun failed runs.")] = False,
        retry_diverged: Annotated[bool, typer.Option("--retry-diverged", help="Rerun diverged runs (divergence is a result: only when asked).")] = False,
        metric: Annotated[str, typer.Option(help="Metric for the closing best-LR table.")] = "final_val_acc",
        workers: Annotated[Optional[int], typer.Option("--workers", help="Worker processes (default: $LRSWEEP_WORKERS, else one per GPU, else on CPU one single-threaded worker per core; 1 = in this process).")] = None,
        devices: Annotated[Optional[str], typer.Option("--devices", help="GPU ids the workers are pinned to, e.g. 0,2,3.")] = None,
        executor: Annotated[str, typer.Option("--executor", help="local or ray.")] = "local",
        address: Annotated[Optional[str], typer.Option("--address", help="Ray cluster: auto or ray://host:port (default: start a local Ray).")] = None,
        gpus_per_task: Annotated[Optional[float], typer.Option("--gpus-per-task", help="GPUs per Ray task; fractions share a GPU (default: 1 if runs use CUDA, else 0).")] = None,
        max_retries: Annotated[int, typer.Option("--max-retries", help="Retries of a run whose worker dies, before it is marked failed.")] = 2,
        engine: Annotated[Optional[str], typer.Option("--engine", help="auto, vectorized or sequential (sets train.engine; default: the config's, auto).")] = None,
        max_members: Annotated[Optional[int], typer.Option("--max-members", help="Vectorized engine: at most this many runs in one stacked model (sets train.max_members).")] = None):
    """Train every grid cell not yet finished; print the best LR per batch size."""
    from lrsweep.execution import make_executor
    from lrsweep.config.grid import load_sweep
    from lrsweep.cli.progress import make_progress
    from lrsweep.analysis.runs import load_runs
    from lrsweep.analysis.cells import METRICS, best_lr_table, check_metric
    from lrsweep.sweep import run_sweep

    check_metric(metric, {k: v for k, v in METRICS.items() if k != "loss_drop_after_target"})
    set_ = list(set_ or [])
    if engine is not None:  # engine options are config fields (not part of the run ids)
        set_.append(f"train.engine={check_choice('--engine', engine, ('auto', 'vectorized', 'sequential'))}")
    if max_members is not None:
        set_.append(f"train.max_members={max_members}")
    sweep = load_sweep(config, set_)
    retry = ("failed",) * retry_failed + ("diverged",) * retry_diverged
    pool = make_executor(sweep.runs, executor, workers=workers, devices=devices, max_retries=max_retries,
                         address=address, gpus_per_task=gpus_per_task)
    progress = make_progress(console)
    try:
        outcome = run_sweep(sweep, out, progress, retry=retry, executor=pool)
    finally:
        progress.close()
    counts = ", ".join(f"{v} {k}" for k, v in outcome.counts.items()) or "nothing new"
    console.print(f"{outcome.total} runs in {outcome.sweep_dir} ({outcome.skipped} already finished; this time: {counts})")
    df, _ = load_runs(outcome.sweep_dir)
    if not df.empty:
        print_frame(compact_best(best_lr_table(df, metric), metric), title=f"best LR per batch size by {metric}")
        console.print(f"next: lrsweep summarize {outcome.sweep_dir}  (fits, plots, report.md)", highlight=False)


def compact_best(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The best-LR table narrowed for an 80-column terminal: mean ± std in one column."""
    keys = [c for c in table.columns if c not in ("best_lr", "nominal_lr", metric, "std", "n_seeds", "n_lrs",
                                                   "n_diverged", "n_failed", "at_edge")]
    out = table[keys].copy()
    out["best LR"] = table["best_lr"]
    if (table["nominal_lr"] != table["best_lr"]).any():  # lr_scaling: show what the user wrote too
        out["nominal LR"] = table["nominal_lr"]
    out[metric] = [fmt(m) + (f" ± {s:.2g}" if n > 1 else "") for m, s, n in zip(table[metric], table["std"], table["n_seeds"])]
    out["seeds"] = table["n_seeds"]
    out["diverged"] = table["n_diverged"]
    out["edge of grid"] = table["at_edge"]
    return out


@app.command()
@guarded
def summarize(paths: Annotated[list[Path], typer.Argument(help="Sweep folder(s), or a folder of sweeps.")],
              metric: Annotated[str, typer.Option(help="Metric that picks the best LR.")] = "final_val_acc",
              target: Annotated[Optional[list[float]], typer.Option("--target", help="Train-loss target for S, E and the critical batch size. Repeatable. Default: the sweep's target_train_loss.")] = None,
              tolerance: Annotated[Optional[float], typer.Option("--tolerance", help="Flat range: LRs within this fraction of the best (default 0.01 for accuracies, 0.05 otherwise).")] = None,
              after_steps: Annotated[int, typer.Option("--after-steps", help="Steps after the target for loss_drop_after_target.")] = 10,
              out: Annotated[Optional[Path], typer.Option("--out", help="Report folder (default: <first path>/report/).")] = None,
              format_: Annotated[str, typer.Option("--format", help="table, csv, json or markdown (the best-LR table on stdout).")] = "table",
              plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw the PNG figures.")] = True):
    """Best LR per batch size, sub-grid optimum, scaling-law fits, critical batch size; writes report/."""
    from lrsweep.analysis.report import build_report, write_report

    check_choice("--format", format_, ("table", "csv", "json", "markdown"))
    report = build_report(paths, metric, targets=target, tolerance=tolerance, after_steps=after_steps)
    out_dir = out or Path(paths[0]) / "report"
    written = write_report(report, out_dir, with_plots=plots)
    best = report.table("best")
    skipped = [w for w in report.warnings if w.startswith("skipped ")]
    notes = [w for w in report.warnings if w not in skipped] + [w for g in report.groups for w in g.warnings]
    for w in skipped if format_ != "table" else skipped + notes:  # scripts get data on stdout only
        err_console.print(f"[yellow]warning:[/yellow] {w}", highlight=False, soft_wrap=True)
    if format_ != "table":
        print_frame(best, fmt_out=format_)
        return
    cols = [c for c in best.columns if c in report.groups[0].keys] + [
        "batch_size", "best_lr", "lr_opt", metric, "std", "n_seeds", "flat_lo", "flat_hi", "edge", "n_diverged", "n_failed"]
    print_frame(best[cols], title=f"best LR per batch size by {metric} (lr_opt: interpolated; flat: within {report.tolerance:g} of best)")
    fits = report.table("fits")
    if not fits.empty:
        fits = fits.assign(params=[", ".join(f"{k}={v:.3g}" for k, v in p.items()) for p in fits["params"]])
        print_frame(fits[[c for c in fits.columns if c in report.groups[0].keys] + ["rank", "law", "params", "rms_log10", "se_log10"]],
                    title="optimal LR vs batch size: fitted laws (errors in decades of LR)")
    crit = report.table("critical")
    if not crit.empty:
        print_frame(crit.drop(columns=["note"]), title="critical batch size per train-loss target")
    console.print(f"wrote {out_dir / 'report.md'} and {len(written) - 1} more files")


@app.command()
@guarded
def predict(paths: Annotated[list[Path], typer.Argument(help="Sweep folder(s), or a folder of sweeps.")],
            batch_size: Annotated[list[float], typer.Option("--batch-size", help="Batch size to predict for. Repeatable.")],
            metric: Annotated[str, typer.Option(help="Metric that picks the best LR.")] = "final_val_acc",
            law: Annotated[Optional[str], typer.Option("--law", help="Use this law instead of the best ranked: linear, sqrt, power, surge, linear_rule, sqrt_rule.")] = None,
            format_: Annotated[str, typer.Option("--format", help="table or json.")] = "table"):
    """The optimal LR at a new batch size, from the best-fitting scaling law."""
    from lrsweep.analysis.fits import LAWS, RULES
    from lrsweep.analysis.report import build_report, predict as predict_lr

    check_choice("--format", format_, ("table", "json"))
    if law is not None:
        check_choice("--law", law, (*LAWS, *RULES))
    bad = [b for b in batch_size if not b > 0]
    if bad:
        raise UserError(f"--batch-size: expected a number > 0, got {bad[0]:g}")
    report = build_report(paths, metric, curves=False)
    table = predict_lr(report, batch_size, law)
    if format_ == "json":
        sys.stdout.write(table.to_json(orient="records", indent=2) + "\n")
        return
    for w in report.warnings:
        if w.startswith("skipped "):
            err_console.print(f"[yellow]warning:[/yellow] {w}", highlight=False, soft_wrap=True)
    shown = table.assign(params=[", ".join(f"{k}={v:.3g}" for k, v in p.items()) for p in table["params"]])
    print_frame(shown.drop(columns=["warning", "formula"]), title=f"predicted optimal LR (best LR by {metric})")
    for w in table["warning"]:
        if w:
            err_console.print(f"[yellow]warning:[/yellow] {w}", highlight=False, soft_wrap=True)


@app.command("range-test")
@guarded
def range_test(config: Annotated[Path, typer.Argument(help="Sweep YAML file: its base config is tested.")],
               batch_size: Annotated[Optional[list[int]], typer.Option("--batch-size", help="Repeatable. Default: the sweep's batch sizes.")] = None,
               min_lr: Annotated[float, typer.Option("--min-lr", help="First LR of the ramp.")] = 1e-7,
               max_lr: Annotated[float, typer.Option("--max-lr", help="Last LR of the ramp.")] = 10.0,
               steps: Annotated[Optional[int], typer.Option("--steps", help="Ramp length in steps (default 100).")] = None,
               epochs: Annotated[Optional[float], typer.Option("--epochs", help="Ramp length in epochs instead.")] = None,
               mode: Annotated[str, typer.Option("--mode", help="LR ramp: exp or linear.")] = "exp",
               val: Annotated[bool, typer.Option("--val", help="Validation loss and accuracy after every step (slower).")] = False,
               smooth: Annotated[float, typer.Option("--smooth", help="EMA factor of the smoothed loss.")] = 0.98,
               diverge: Annotated[float, typer.Option("--diverge", help="Stop when smoothed loss > this x best.")] = 4.0,
               suggest: Annotated[str, typer.Option("--suggest", help="Suggestion listed first and used for the sweep: valley, steepest, minimum/10, clr-upper, clr-lower/3, clr-lower/4.")] = "valley",
               emit_sweep: Annotated[Optional[Path], typer.Option("--emit-sweep", help="Write a sweep YAML with LRs centred on the suggestions.")] = None,
               out: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default runs/<name>/range_test).")] = None,
               format_: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
               set_: SetOpt = None):
    """LR range test: ramp the LR, record the loss, suggest LRs (one curve per batch size)."""
    from rich.progress import Progress

    from lrsweep.rangetest import emit_sweep as write_sweep, load_base, run_range_test, save

    check_choice("--format", format_, ("table", "json"))
    base, sizes, raw, ignored = load_base(config, set_ or [])
    progress = Progress(console=err_console, transient=True, disable=not err_console.is_terminal)
    tasks: dict = {}

    def on_event(event, **info):
        b = info["batch_size"]
        if event == "start":
            tasks[b] = progress.add_task(f"B={b}", total=info["steps"])
        elif event == "step":
            progress.update(tasks[b], completed=info["step"], description=f"B={b} lr {info['lr']:.2g} loss {info['loss']:.3g}")

    with progress:
        test = run_range_test(base, batch_size or sizes, min_lr=min_lr, max_lr=max_lr, steps=steps, epochs=epochs,
                              mode=mode, val=val, smooth=smooth, diverge=diverge, suggest_name=suggest, on_event=on_event)
    paths = save(test, out or Path("runs") / base.name / "range_test")
    if emit_sweep:
        write_sweep(raw, test, emit_sweep)
    if format_ == "json":
        sys.stdout.write(paths["json"].read_text())
        return
    if ignored:
        console.print(f"note: the test uses the base config; sweep axes {', '.join(ignored)} are ignored")
    print_frame(test.suggestion_table(), title=f"{test.name}: LR suggestions ({suggest} first)")
    table = test.scaling_table()
    if len(table) == 1:
        table = table.drop(columns=[c for c in table.columns[2:] if c not in ("steps", "stopped at lr")])
    print_frame(table, title=f"'{suggest}' per batch size" + (" vs scaling from the smallest; measured lr ∝ B^k" if len(table) > 1 else ""))
    console.print(f"wrote {paths['csv'].parent}/: {', '.join(p.name for p in paths.values())}", highlight=False)
    if emit_sweep:
        console.print(f"wrote {emit_sweep}: check it with `lrsweep plan {emit_sweep}`", highlight=False)


@app.command()
@guarded
def bench(quick: Annotated[bool, typer.Option("--quick", help="A smaller grid: B {32, 128} x 4 LRs, 2048 examples, 2000 test examples.")] = False,
          out: Annotated[Path, typer.Option("--out", help="Where to write the JSON report.")] = Path("bench.json"),
          data_root: Annotated[Optional[Path], typer.Option("--data-root", help="Folder with MNIST/raw/ (default: ../shared/datasets, else generated data).")] = None,
          device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
          variants: Annotated[Optional[str], typer.Option("--variants", help="Comma-separated subset of options,plain,sequential,vectorized,auto, or all (options: per member-step time of each engine option). Default: plain,sequential,vectorized,auto; with --quick all.")] = None):
    """Time one grid several ways: a plain PyTorch loop, the sequential and vectorized engines, and `lrsweep run`."""
    from lrsweep.benchmark import (DEFAULT_FULL, DEFAULT_QUICK, EXTRA_VARIANTS, FULL, QUICK, VARIANTS, eval_line,
                        options_rows, run_bench, table_rows)

    if variants is None:
        chosen = DEFAULT_QUICK if quick else DEFAULT_FULL
    elif variants.strip() == "all":
        chosen = DEFAULT_QUICK
    else:
        chosen = tuple(v.strip() for v in variants.split(",") if v.strip())
    for v in chosen:
        check_choice("--variants", v, VARIANTS + EXTRA_VARIANTS)
    report = run_bench(QUICK if quick else FULL, chosen, data_root, device, out,
                       log=lambda m: err_console.print(m, highlight=False, markup=False))
    g = report["grid"]
    if "options" in report:
        print_frame(options_rows(report), title=f"engine options: ms per member-step (cnn5, {report['machine']['device']})")
        console.print(eval_line(report), highlight=False)
    if report["variants"]:
        print_frame(pd.DataFrame(table_rows(report)),
                    title=f"{g['runs']} runs: B {g['batch_sizes']} x {g['n_lr']} LRs, {g['train_subset']} examples, "
                          f"{report['data']['n_test']} test; {report['machine']['cpu']} ({report['machine']['device']})")
    ratios = {**{f"plain/{k}": v for k, v in report.get("speedup_vs_plain", {}).items() if k != "plain"},
              **{k: v for k, v in report.get("ratios", {}).items() if not k.startswith(("plain/", "vectorized/"))}}
    if ratios:
        console.print("wall-time ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()), highlight=False)
    peaks = " and ".join(", ".join(f"{k.replace('_', ' ')} {v / 1e9:.0f}" for k, v in p.items() if k not in ("peak", "threads"))
                         for p in report["matmul_peaks"])
    load = [report["machine"].get(k) for k in ("load_average_before", "load_average_after")]
    load = " / ".join(f"{x[0]:.1f}" if x else "?" for x in load)
    console.print(f"fp32 matmul peak {report['matmul_peak_flop_s'] / 1e9:.0f} GFLOP/s (best of {peaks} GFLOP/s at the "
                  f"start and end; one thread x threads counts); 1-min load average before / after: {load}; "
                  f"wrote {out}", highlight=False)


def main():
    app()


if __name__ == "__main__":
    main()
