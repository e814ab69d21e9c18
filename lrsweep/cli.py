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
from rich.table import Table

from .errors import UserError

app = typer.Typer(help="Which learning rate goes with which batch size? Sweep, measure, fit.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console()
err_console = Console(stderr=True)
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
            err_console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
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
    from . import storage
    from .grid import load_sweep
    from .sweep import preflight, sweep_dir_for

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
        metric: Annotated[str, typer.Option(help="Metric for the closing best-LR table.")] = "final_val_acc"):
    """Train every grid cell not yet finished; print the best LR per batch size."""
    from .grid import load_sweep
    from .progress import make_progress
    from .records import load_runs
    from .summary import best_lr_table, check_metric
    from .sweep import run_sweep

    check_metric(metric)
    sweep = load_sweep(config, set_ or [])
    progress = make_progress(console)
    try:
        outcome = run_sweep(sweep, out, progress, retry=("failed",) if retry_failed else ())
    finally:
        progress.close()
    counts = ", ".join(f"{v} {k}" for k, v in outcome.counts.items()) or "nothing new"
    console.print(f"{outcome.total} runs in {outcome.sweep_dir} ({outcome.skipped} already finished; this time: {counts})")
    df, _ = load_runs(outcome.sweep_dir)
    if not df.empty:
        print_frame(best_lr_table(df, metric), title=f"best LR per batch size by {metric}")


@app.command()
@guarded
def summarize(paths: Annotated[list[Path], typer.Argument(help="Sweep folder(s), or a folder of sweeps.")],
              metric: Annotated[str, typer.Option(help="Metric that picks the best LR.")] = "final_val_acc",
              out: Annotated[Optional[Path], typer.Option("--out", help="Where to write best_lr.csv (default: <sweep>/report/).")] = None,
              format_: Annotated[str, typer.Option("--format", help="table, csv, json or markdown.")] = "table"):
    """Best LR per batch size (mean ± std over seeds), written as CSV."""
    from .records import load_runs
    from .summary import best_lr_table, check_metric

    check_choice("--format", format_, ("table", "csv", "json", "markdown"))
    check_metric(metric)
    df, warnings = load_runs(paths)
    for w in warnings:
        err_console.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
    table = best_lr_table(df, metric)
    out_dir = out or Path(paths[0]) / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    from .storage import atomic_write
    atomic_write(out_dir / "best_lr.csv", table.to_csv(index=False))
    print_frame(table, title=f"best LR per batch size by {metric}", fmt_out=format_)
    if format_ == "table":
        console.print(f"wrote {out_dir / 'best_lr.csv'}")


def main():
    app()


if __name__ == "__main__":
    main()
