"""`lrsweep plan` and `lrsweep run`: show the grid, train it."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
import typer

from lrsweep.cli.choices import Engine, Executor, ResultMetric
from lrsweep.cli.root import OutOpt, SetOpt, app, console, err_console, guarded, warn
from lrsweep.cli.tables import WideOpt, best_title, compact_best, print_frame
from lrsweep.config.grid import MAX_RUNS
from lrsweep.errors import StorageError

ConfigArg = Annotated[Path, typer.Argument(help="Sweep YAML file.")]
NameOpt = Annotated[Optional[str], typer.Option("--name", help="Sweep folder name under --out (sets `name`; default: the config's).")]
MaxRunsOpt = Annotated[int, typer.Option("--max-runs", help="Refuse a grid of more runs than this (counted before it is expanded).")]
RAY_CONNECT_TIMEOUT_S = 30.0  # execution.ray.CONNECT_TIMEOUT_S (spelled out: execution/ imports torch)
PLAN_ROWS = 1000  # rows `plan` prints (a larger grid is summed up by its first line)


@app.command()
@guarded
def plan(config: ConfigArg, set_: SetOpt = None, out: OutOpt = Path("runs"), name: NameOpt = None,
         max_runs: MaxRunsOpt = MAX_RUNS):
    """Print the expanded grid (count, runs, which already finished) without training."""
    from lrsweep import storage
    from lrsweep.config.grid import load_sweep
    from lrsweep.sweep import finished_folders, preflight, sweep_dir_for

    sweep = load_sweep(config, [*(set_ or []), *([f"name={name}"] if name else [])], max_runs=max_runs)
    preflight(sweep)
    sweep_dir = sweep_dir_for(sweep, out)
    try:
        storage.check_writable(sweep_dir)  # what `run` would refuse, without writing anything
    except StorageError as e:  # a read-only copy of a sweep can still be planned: said, not refused
        warn(f"{e} (`lrsweep run` would stop there)")
    index = storage.read_index_rows(sweep_dir)
    folders = finished_folders(sweep_dir, index, {r.run_id for r in sweep.runs})
    done = {rid: index[folder]["status"] for rid, folder in folders.items()}
    rows = [{"run_id": r.run_id, **r.axes, "status": done.get(r.run_id) or "pending"} for r in sweep.runs]
    df = pd.DataFrame(rows)
    n_done = int((df["status"] != "pending").sum())
    print_frame(df.head(PLAN_ROWS), title=f"{sweep.name}: {len(rows)} runs, {n_done} finished, {len(rows) - n_done} to run → {sweep_dir}")
    if len(df) > PLAN_ROWS:
        console.print(f"(the first {PLAN_ROWS} of {len(df)} runs shown)", highlight=False)


@app.command()
@guarded
def run(config: ConfigArg, set_: SetOpt = None, out: OutOpt = Path("runs"), name: NameOpt = None,
        add_experiment: Annotated[bool, typer.Option("--add-experiment", help="Train into a folder that holds another experiment (a different budget, model, ...), keeping both; summarize analyses them apart.")] = False,
        retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Rerun failed runs.")] = False,
        retry_diverged: Annotated[bool, typer.Option("--retry-diverged", help="Rerun diverged runs (divergence is a result: only when asked).")] = False,
        retry_stalled: Annotated[bool, typer.Option("--retry-stalled", help="Rerun runs stopped by train.stop_if_stalled.")] = False,
        metric: Annotated[ResultMetric, typer.Option(help="Metric for the closing best-LR table.")] = ResultMetric.final_val_acc,
        workers: Annotated[Optional[int], typer.Option("--workers", help="Worker processes (default: $LRSWEEP_WORKERS, else one per GPU, else on CPU one single-threaded worker per core; 1 = in this process).")] = None,
        devices: Annotated[Optional[str], typer.Option("--devices", help="GPU ids the workers are pinned to, e.g. 0,2,3.")] = None,
        executor: Annotated[Executor, typer.Option("--executor", help="Where runs train: worker processes here, or a Ray cluster.")] = Executor.local,
        address: Annotated[Optional[str], typer.Option("--address", help="Ray cluster: auto or ray://host:port (default: start a local Ray).")] = None,
        gpus_per_task: Annotated[Optional[float], typer.Option("--gpus-per-task", help="GPUs per Ray task; fractions share a GPU (default: 1 if runs use CUDA, else 0).")] = None,
        max_retries: Annotated[int, typer.Option("--max-retries", help="Retries of a run whose worker dies, before it is marked failed.")] = 2,
        engine: Annotated[Optional[Engine], typer.Option("--engine", help="Sets train.engine (default: the config's, auto).")] = None,
        max_members: Annotated[Optional[int], typer.Option("--max-members", help="Vectorized engine: at most this many runs in one stacked model (sets train.max_members).")] = None,
        max_runs: MaxRunsOpt = MAX_RUNS,
        connect_timeout: Annotated[float, typer.Option("--connect-timeout", help="Ray: seconds to wait for the cluster to answer.")] = RAY_CONNECT_TIMEOUT_S,
        wide: WideOpt = False):
    """Train every grid cell not yet finished; print the best LR per batch size."""
    from lrsweep.analysis.report import build_report
    from lrsweep.cli.progress import make_progress
    from lrsweep.config.grid import load_sweep
    from lrsweep.execution import make_executor
    from lrsweep.sweep import run_sweep

    set_ = [*(set_ or []), *([f"name={name}"] if name else [])]
    if engine is not None:  # engine options are config fields (not part of the run ids)
        set_.append(f"train.engine={engine.value}")
    if max_members is not None:
        set_.append(f"train.max_members={max_members}")
    sweep = load_sweep(config, set_, max_runs=max_runs)
    retry = ("failed",) * retry_failed + ("diverged",) * retry_diverged + ("stalled",) * retry_stalled
    pool = make_executor(sweep.runs, executor.value, workers=workers, devices=devices, max_retries=max_retries,
                         address=address, gpus_per_task=gpus_per_task, connect_timeout=connect_timeout)
    progress = make_progress(console, metric.value)
    try:
        outcome = run_sweep(sweep, out, progress, retry=retry, executor=pool, add_experiment=add_experiment)
    finally:
        progress.close()
    counts = ", ".join(f"{v} {k}" for k, v in outcome.counts.items()) or "nothing new"
    console.print(f"{outcome.total} runs in {outcome.sweep_dir} ({outcome.skipped} already finished; this time: {counts})")
    if outcome.skipped or outcome.counts:  # some run of the grid is finished
        # summarize's own best-LR table (its flat ranges too), without reading the loss curves
        report = build_report(outcome.sweep_dir, metric.value, curves=False)
        print_frame(compact_best(report.table("best"), metric.value, wide), notes="note", wide=wide,
                    split=list(report.groups[0].keys), title=best_title(metric.value, report.tolerance))
        console.print(f"next: lrsweep summarize {outcome.sweep_dir}  (fits, plots, report.md)", highlight=False)
    failed = outcome.failed
    if failed:  # the grid is not answered: say so in the exit code, for scripts and CI
        err_console.print(f"{failed} run{'s' * (failed > 1)} of this grid failed (their errors: {outcome.sweep_dir}/runs.csv); "
                          f"rerun with --retry-failed to train {'them' if failed > 1 else 'it'} again", highlight=False)
        raise typer.Exit(1)
