"""Run a sweep: every grid cell not yet finished; a failing run is recorded and the sweep goes
on (results.RunStatus: complete, diverged, failed).

The driver cuts the pending runs into work units once (training/units.py: plan_units, which
also decides each unit's engine), hands them to an executor (execution/: in-process, local
worker processes, or Ray tasks) and is the one writer of `runs/<name>/`: each record that
comes back is saved with storage.save_run (result.json last) and runs.csv is rewritten from the
result rows. Hence, whatever is killed when:
- a run is finished iff its result.json is readable; unfinished runs are redone (from their
  checkpoint.pt, if they have one), finished ones never are, unless `retry` names their status;
- runs.csv has one row per finished run (keyed by run folder), so never a duplicate;
- the sweep lock (flock) keeps a second driver out; workers die with their driver.

A folder holds one experiment (config/experiment.py): a sweep whose base config differs from
the folder's sweep.yaml in anything but its axes and seed is refused (ExperimentMismatch),
unless `add_experiment` (then the old sweep.yaml is kept as sweep.N.yaml, and summarize
analyses the experiments apart). Runs are found by id; a finished run whose folder is named by
an id of an older lrsweep (e.g. from before dataset.root left the id) is recognised from its
config.json, so it is never retrained.

Progress goes to `callback(event)` as events.py's dataclasses, in this order: SweepStarted;
WorkersStarting (from an executor that starts worker processes); per run RunStarted (from
whoever trains it, numbered here), Step..., RunFinished (once its files are written);
SweepFinished. This module never prints.
"""
from __future__ import annotations

import dataclasses
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from lrsweep import datasets_check, storage
from lrsweep.config.experiment import describe, sweep_differences
from lrsweep.config.grid import RunSpec, Sweep, run_id as current_id
from lrsweep.datasets import check_available
from lrsweep.errors import ExperimentMismatch, LrsweepWarning, ParameterError, StorageError
from lrsweep.events import Callback, Event, RunFinished, RunStarted, SweepFinished, SweepStarted, ignore
from lrsweep.execution import Executor, InlineExecutor
from lrsweep.results import RunStatus
from lrsweep.training.setup import budget, resolve_device
from lrsweep.training.units import plan_units


@dataclass
class SweepOutcome:
    sweep_dir: Path
    total: int
    skipped: int
    counts: dict[str, int] = field(default_factory=dict)  # status value -> runs finished this time
    failed: int = 0  # runs of the grid recorded `failed` after this invocation (this time or before)


def sweep_dir_for(sweep: Sweep, out_root: str | Path = "runs") -> Path:
    return Path(out_root) / sweep.name


def pending_runs(sweep: Sweep, sweep_dir: Path) -> list[RunSpec]:
    done = finished_folders(sweep_dir, storage.read_index_rows(sweep_dir), {r.run_id for r in sweep.runs})
    return [r for r in sweep.runs if r.run_id not in done]


def preflight(sweep: Sweep) -> None:
    """Fail before training anything (ConfigError, naming the field or file) if a dataset is
    missing or damaged, a batch size exceeds the examples of an epoch, a model cannot take the
    dataset's inputs, or a device is not there. Reads headers only; `plan` runs it too."""
    counts: dict[str, Optional[tuple[int, int]]] = {}
    models: set[str] = set()
    for spec in sweep.runs:
        cfg = spec.config
        key = cfg.dataset.model_dump_json()
        if key not in counts:
            check_available(cfg.dataset)
            counts[key] = datasets_check.check_files(cfg.dataset)
        if counts[key] is not None:
            budget(cfg, datasets_check.train_examples(cfg.dataset, counts[key]))
        model_key = cfg.model.model_dump_json() + key
        if model_key not in models:
            models.add(model_key)
            _check_model(cfg)
        resolve_device(cfg.train.device)


def _check_model(cfg) -> None:
    """Build a built-in model on the meta device (no memory, no compute): its ConfigError (e.g.
    inputs too small for cnn5's poolings) now. The user's own models are checked when built."""
    import torch

    from lrsweep.models import BUILTIN, build_model

    shape = datasets_check.input_shape(cfg.dataset)
    if cfg.model.name not in BUILTIN:
        return
    with torch.device("meta"):
        build_model(cfg.model, shape, datasets_check.num_classes(cfg.dataset) or 2)


def _statuses(retry: Iterable[str]) -> tuple[str, ...]:
    try:
        return tuple(RunStatus(s).value for s in retry)
    except ValueError:
        choices = ", ".join(s.value for s in RunStatus)
        raise ParameterError("retry", f"expected statuses among ({choices}), got {tuple(retry)!r}") from None


class _Numbering:
    """Numbers RunStarted events among this invocation's runs and remembers who trains each run
    (its RunFinished names the same worker)."""

    def __init__(self, on_event: Callback, pending: int):
        self.on_event, self.pending, self.started = on_event, pending, 0
        self.worker: dict[str, int] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            event = dataclasses.replace(event, index=self.started, pending=self.pending)
            self.started += 1
            self.worker[event.run_id] = event.worker
        self.on_event(event)


def claim_folder(sweep_dir: Path, raw: dict, add_experiment: bool = False) -> None:
    """Write the sweep file into the folder, unless the folder holds another experiment."""
    files = storage.sweep_files(sweep_dir)
    diffs = []
    for f in files:
        old = storage.read_sweep_file(f)
        d = sweep_differences(old, raw) if old is not None else []
        if not d:  # the same experiment (perhaps with more axis values): it is this one's file now
            storage.write_sweep_file(sweep_dir, raw, f.name)
            return
        diffs = diffs or d
    if files and not add_experiment:
        raise ExperimentMismatch(sweep_dir, diffs, (
            f"{sweep_dir} holds another experiment ({describe(diffs)}); a folder holds one, so that "
            f"runs of different configs are never averaged as seeds: train into a new folder "
            f"(`name`, or `out`) or keep both here (`add_experiment`; summarize analyses them apart)"))
    if files:
        storage.archive_sweep_file(sweep_dir)
    storage.write_sweep_file(sweep_dir, raw)


def finished_folders(sweep_dir: Path, rows: dict[str, dict], wanted: set[str]) -> dict[str, str]:
    """Run id -> folder of every finished run; a folder named by an id no run of the grid has
    (an older lrsweep's) is matched through the id of its config.json as this version computes it."""
    import json

    from lrsweep.config import parse_run_config
    from lrsweep.errors import UserError

    found = {name: name for name in rows if name in wanted}
    for name in rows.keys() - wanted:
        try:
            rid = current_id(parse_run_config(json.loads((sweep_dir / name / storage.CONFIG).read_text())))
        except (OSError, ValueError, UserError):
            continue  # unreadable: left alone (summarize reads it by its folder)
        if rid in wanted and rid not in found:
            found[rid] = name
    return found


def run_sweep(sweep: Sweep, out_root: str | Path = "runs", callback: Optional[Callback] = None,
              retry: tuple[str, ...] = (), executor: Optional[Executor] = None,
              engine: Optional[str] = None, add_experiment: bool = False) -> SweepOutcome:
    """Run every unfinished cell. `retry` names statuses to redo (e.g. ('failed',)).
    `executor` trains the units (default: in this process, one after another). `engine`:
    None or 'auto' (each run's train.engine), 'sequential' or 'vectorized'. `add_experiment`:
    train into a folder that holds another experiment, keeping both (claim_folder)."""
    on_event = callback or ignore
    retry = _statuses(retry)
    executor = executor or InlineExecutor()
    sweep_dir = sweep_dir_for(sweep, out_root)
    preflight(sweep)
    storage.check_writable(sweep_dir, create=True)  # a read-only or full disk: said now, not after training
    with storage.SweepLock(sweep_dir):
        storage.remove_stale_temp(sweep_dir)
        storage.check_sweep_folder(sweep_dir)
        claim_folder(sweep_dir, sweep.raw, add_experiment)
        rows, invalid = storage.scan_results(sweep_dir)  # every result.json read once
        for path, why in invalid:
            warnings.warn(LrsweepWarning(f"{path}: {why}; the run counts as unfinished and is trained again"))
        folders = finished_folders(sweep_dir, rows, {r.run_id for r in sweep.runs})
        todo = [r for r in sweep.runs if r.run_id not in folders or rows[folders[r.run_id]]["status"] in retry]
        storage.check_sweep_folder(sweep_dir, [folders.get(r.run_id, r.run_id) for r in todo])
        on_event(SweepStarted(total=len(sweep.runs), done=len(sweep.runs) - len(todo), pending=len(todo),
                              executor=executor.describe()))
        specs = {r.run_id: r for r in todo}  # less those saved
        for run_id in rows.keys() - {folders.get(r, r) for r in specs}:  # finished: a checkpoint left by a killed worker is stale
            (sweep_dir / run_id / storage.CHECKPOINT).unlink(missing_ok=True)
        counts: dict[str, int] = {}
        numbering = _Numbering(on_event, len(todo))
        try:
            # Resolved: whoever trains a unit finds its checkpoints whatever its working directory.
            units = plan_units(todo, sweep_dir.resolve(), engine) if todo else []
            for record in executor.run(units, numbering) if units else ():
                spec = specs.pop(record.run_id, None)
                if spec is None:
                    continue  # a retried task that finished twice: keep the first
                try:
                    storage.save_run(sweep_dir, record, folders.get(record.run_id))  # a retried run keeps its folder
                except StorageError as e:  # e.g. the disk is full: every run saved before is whole
                    raise StorageError(f"{e}; the runs saved before are intact: fix it and run the same "
                                       "command again to continue") from e
                result = record.result.to_dict()
                counts[result["status"]] = counts.get(result["status"], 0) + 1
                rows[folders.get(record.run_id, record.run_id)] = storage.index_row(result)
                storage.write_index(sweep_dir, rows)
                on_event(RunFinished(record.run_id, spec.axes, result,
                                     worker=numbering.worker.get(record.run_id, 0)))
        finally:
            failing = sys.exc_info()[0] is not None
            executor.close()
            if sweep_dir.is_dir():
                storage.remove_stale_temp(sweep_dir)  # workers are gone: their temp files are stale
                try:
                    storage.rebuild_index(sweep_dir)
                except StorageError:
                    if not failing:
                        raise  # else the error on its way out says more (a full disk, most likely)
        on_event(SweepFinished(counts=counts))
    failed = sum(rows[folders.get(r.run_id, r.run_id)]["status"] == RunStatus.FAILED.value
                 for r in sweep.runs if folders.get(r.run_id, r.run_id) in rows)
    return SweepOutcome(sweep_dir, len(sweep.runs), len(sweep.runs) - len(todo), counts, failed)
