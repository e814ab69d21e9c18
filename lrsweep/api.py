"""The Python API: what the CLI does, as functions that return the CLI's own objects.

    import lrsweep
    sweep = lrsweep.load_sweep("configs/quickstart.yaml", ["train.epochs=2"])  # or a dict
    outcome = lrsweep.run(sweep, out="runs", callback=print)                 # SweepOutcome
    df = lrsweep.runs_frame(outcome.sweep_dir)      # one row per run, config fields as columns
    report = lrsweep.summarize(outcome.sweep_dir)   # Report: .table("best"), .groups, .warnings
    lrsweep.write_report(report, "report")          # best_lr.csv, fits.json, figures, report.md

Bad input raises lrsweep.UserError (ConfigError naming the field, ParameterError naming the
argument), with the one-line message the CLI prints. Nothing here prints.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional, Sequence

if TYPE_CHECKING:
    import pandas as pd

    from lrsweep.analysis.report import Report
    from lrsweep.config.grid import Sweep
    from lrsweep.events import Callback
    from lrsweep.sweep import SweepOutcome

def factory_spec(fn: Callable) -> str:
    """`package.module:function` for a model factory given as a callable: lrsweep imports it by
    that name wherever a run trains (a worker process too), so it must be a module-level
    function (or a class's static/class method) that importing its module gives back."""
    from lrsweep.errors import ParameterError
    from lrsweep.models import load_factory

    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not callable(fn) or not module or not name or "<" in name:
        raise ParameterError("model", f"expected a function defined at the top level of a module (lrsweep imports "
                                      f"it by name in every worker), got {fn!r}")
    spec = f"{module}:{name}"
    try:
        found = load_factory(spec, field="model")
    except Exception as e:  # noqa: BLE001 - ConfigError or the module's own import error
        raise ParameterError("model", f"{spec}: cannot be imported back by name ({e})") from None
    if found is not fn:
        raise ParameterError("model", f"{spec}: importing it by name gives another object than the one passed")
    return spec


def load_sweep(source: str | Path | Mapping[str, Any], overrides: Optional[Sequence[str]] = None, *,
               model: Optional[Callable] = None, max_runs: Optional[int] = None) -> "Sweep":
    """The grid of a sweep: `source` is a YAML file's path or the same content as a dict
    (name, dataset, model, optimizer, schedule, lr_scaling, train, sweep; see the README).
    `overrides`: `--set` strings such as "train.steps=50" (the value is YAML). `model`: your
    own model, a top-level function `fn(num_classes, input_shape, **args) -> nn.Module` used
    instead of the file's model (its `args`, if any, are kept); it is stored as
    `model.factory: "module:function"`. More than `max_runs` grid cells (default 100,000) is
    refused.

    Returns a config.grid.Sweep: `.name`, `.runs` (RunSpec: run_id, axes, config), `.axis_names`.
    Raises ConfigError (a UserError) naming the bad field."""
    import copy

    from lrsweep.config import grid, load_yaml
    from lrsweep.errors import ParameterError, quote

    overrides = list(overrides or [])
    max_runs = grid.MAX_RUNS if max_runs is None else max_runs
    if isinstance(source, (str, Path)):
        if model is None:
            return grid.load_sweep(source, overrides, max_runs)
        raw = load_yaml(source)
    elif isinstance(source, Mapping):
        raw = copy.deepcopy(dict(source))
    else:
        raise ParameterError("source", f"expected a path to a sweep YAML file or a dict, got {quote(source)}")
    if model is not None:
        section = raw.get("model") if isinstance(raw.get("model"), dict) else {}
        raw["model"] = {"factory": factory_spec(model), **({"args": section["args"]} if "args" in section else {})}
    return grid.build_sweep(raw, overrides, max_runs)


def run(sweep: "Sweep | str | Path | Mapping[str, Any]", out: str | Path = "runs",
        callback: Optional["Callback"] = None, workers: Optional[int] = 1, *,
        devices: Optional[str] = None, executor: str = "local", retry: Iterable[str] = (),
        engine: Optional[str] = None, add_experiment: bool = False, max_retries: int = 2,
        address: Optional[str] = None, gpus_per_task: Optional[float] = None) -> "SweepOutcome":
    """Train every grid cell of `sweep` (a Sweep from load_sweep, or what load_sweep takes)
    not yet finished in `out`/<name>/, as `lrsweep run` does; finished runs are skipped.

    `callback(event)` gets the progress events of lrsweep.events, in order: SweepStarted,
    per run RunStarted, Step..., RunFinished (its result.json as a dict), then SweepFinished.
    `workers`: 1 trains in this process; N > 1 in N worker processes; None picks as the CLI
    does (one per GPU, else one per core). `devices` ("0,2"), `executor` ("local" or "ray"),
    `address`, `gpus_per_task`, `max_retries`: as the CLI's flags. `retry`: statuses to train
    again, e.g. ("failed",). `engine`: None (each run's train.engine), "sequential" or
    "vectorized". `add_experiment`: train into a folder that holds another experiment.

    Returns a SweepOutcome: `.sweep_dir`, `.total` cells, `.skipped` (finished before),
    `.counts` (status -> runs finished this time), `.failed` (runs of the grid now failed)."""
    from lrsweep.config.grid import Sweep
    from lrsweep.execution import make_executor
    from lrsweep.sweep import run_sweep

    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep)
    pool = make_executor(sweep.runs, executor, workers=workers, devices=devices, max_retries=max_retries,
                         address=address, gpus_per_task=gpus_per_task)
    return run_sweep(sweep, out, callback, retry=tuple(retry), executor=pool, engine=engine,
                     add_experiment=add_experiment)


def runs_frame(paths: str | Path | Sequence[str | Path]) -> "pd.DataFrame":
    """One row per finished run under the sweep folders `paths` (a folder of sweeps works too):
    sweep, run_id, path, status, error; the axis values (batch_size, lr (effective), seed, or
    as named in the sweep file); every scalar of result.json (final_val_acc, best_val_acc,
    final_train_loss, steps_to_target, time_s, ...); chance_acc; then every field of the run's
    config.json as a dotted column (optimizer.momentum, train.steps, dataset.name, ...; lists
    as tuples). `.attrs["axes"]`: the axis names; `.attrs["warnings"]`: files skipped."""
    from lrsweep.export.tables import runs_frame as frame

    return frame(paths)


def steps_frame(paths: str | Path | Sequence[str | Path]) -> "pd.DataFrame":
    """One row per logged step of every finished run (metrics.csv, with evals.csv's val_loss and
    val_acc at the steps evaluated): sweep, run_id, status, the axes by their full dotted
    names, the step columns, then the run's other config fields. What `lrsweep export
    --format` writes."""
    from lrsweep.export.tables import steps_frame as frame

    return frame(paths)


def summarize(paths: str | Path | Sequence[str | Path], metric: str = "final_val_acc",
              targets: Optional[Sequence[float]] = None, tolerance: Optional[float] = None,
              after_steps: int = 10, curves: bool = True) -> "Report":
    """The analysis `lrsweep summarize` prints and writes, as a Report (analysis.report).

    `metric` picks the best LR (final_val_acc, best_val_acc, final_val_loss, final_train_loss,
    steps_to_target, loss_drop_after_target, ...; lower is better for losses and step counts).
    `targets`: train-loss levels for steps/examples-to-target and the critical batch size
    (default: the sweeps' train.target_train_loss). `tolerance`: the flat range's fraction of
    the best (default 0.01 for accuracies, 0.05 otherwise). `curves=False` skips metrics.csv
    (no critical batch size, loss curves or oscillation): a quick best-LR answer.

    The Report:
      .table(name) -> DataFrame, every group stacked, the group's key columns first:
          "best"     per batch size: best_lr (grid), lr_opt (interpolated optimum) with its
                     interval over seeds, the metric's mean/std, n_seeds, bracketed/edge,
                     the flat range (flat_lo, flat_hi), each law's LR, note
          "fits"     per scaling law, best first: law, rank, params, B_noise and its interval,
                     se_log10 (residual error in decades), note
          "critical" per train-loss target: B_noise, S_min, E_min with intervals, r2, note,
                     then the B_noise comparison (B_peak, B_simple with intervals, ...)
          "bnoise"   per train-loss target, B_noise three ways with intervals: the S-E fit
                     (B_noise), the fitted surge law's peak (B_peak), B_simple at the target
          "cells"    per (batch size, LR): the metric's mean, std, n, counts incl. missing runs
      .groups      list of Group, one per group of runs (an extra axis such as
                   optimizer.name, or several sweeps): .label, .keys, .cells, .best, .fits,
                   .critical, .se (target -> S/E points), .curves (batch size -> the best
                   run's metrics.csv), .measured_sizes, .warnings
      .warnings    files skipped and other notes about the whole analysis
      .metric, .higher (is better), .tolerance, .targets, .sweeps, .runs (load_runs's table)
    Raises UserError when there are no finished runs, ParameterError for a bad argument."""
    from lrsweep.analysis.report import build_report

    return build_report(paths, metric, targets=list(targets) if targets else None, tolerance=tolerance,
                        after_steps=after_steps, curves=curves)


def write_report(report: "Report", out_dir: str | Path, with_plots: bool = True) -> list[Path]:
    """The report/ folder `lrsweep summarize` writes (best_lr.csv, cells.csv, fits.json, the PNG
    figures unless with_plots=False, report.md) into `out_dir`; returns the files written."""
    from lrsweep.output.files import write_report as write

    return write(report, out_dir, with_plots=with_plots)
