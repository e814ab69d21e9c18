"""Run a sweep: every grid cell not yet finished; a failing run is recorded and the sweep goes
on (optuna's trial states: complete, diverged, failed).

The driver groups the pending runs (engine.make_groups), hands the groups to an executor
(executor.py: in-process, local worker processes, or Ray tasks) and is the one writer of
`runs/<name>/`: each record that comes back is saved with storage.save_run (result.json last)
and runs.csv is rewritten from the result rows. Hence, whatever is killed when:
- a run is finished iff its result.json is readable; unfinished runs are redone (from their
  checkpoint.pt, if they have one), finished ones never are, unless `retry` names their status;
- runs.csv has one row per finished run (keyed by run folder), so never a duplicate;
- the sweep lock (flock) keeps a second driver out; workers die with their driver.

Progress is reported through `callback(event, **info)`; this module never prints. Events:
    sweep_start(total, done, pending, executor)   run_start(spec, index, pending, worker)
    step(step, total, loss, lr, worker)           run_end(spec, result)   sweep_end(counts)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from lrsweep import storage
from lrsweep.datasets import check_available
from lrsweep.training.units import make_groups
from lrsweep.execution import Executor, InlineExecutor
from lrsweep.config.grid import RunSpec, Sweep
from lrsweep.training.sequential import resolve_device

Callback = Callable[..., None]


@dataclass
class SweepOutcome:
    sweep_dir: Path
    total: int
    skipped: int
    counts: dict[str, int] = field(default_factory=dict)


def sweep_dir_for(sweep: Sweep, out_root: str | Path = "runs") -> Path:
    return Path(out_root) / sweep.name


def pending_runs(sweep: Sweep, sweep_dir: Path) -> list[RunSpec]:
    done = storage.finished_ids(sweep_dir)
    return [r for r in sweep.runs if r.run_id not in done]


def preflight(sweep: Sweep) -> None:
    """Fail before training anything if a dataset is missing or a budget cannot work."""
    seen = set()
    for spec in sweep.runs:
        key = spec.config.dataset.model_dump_json()
        if key not in seen:
            seen.add(key)
            check_available(spec.config.dataset)
        resolve_device(spec.config.train.device)


def run_sweep(sweep: Sweep, out_root: str | Path = "runs", callback: Optional[Callback] = None,
              retry: tuple[str, ...] = (), executor: Optional[Executor] = None,
              engine: str = "auto") -> SweepOutcome:
    """Run every unfinished cell. `retry` names statuses to redo (e.g. ('failed',)).
    `executor` trains the groups (default: in this process, one run after another)."""
    notify = callback or (lambda *a, **k: None)
    executor = executor or InlineExecutor()
    sweep_dir = sweep_dir_for(sweep, out_root)
    preflight(sweep)
    with storage.SweepLock(sweep_dir):
        storage.remove_stale_temp(sweep_dir)
        storage.write_sweep_file(sweep_dir, sweep.raw)
        rows = storage.read_index_rows(sweep_dir)
        todo = [r for r in sweep.runs if r.run_id not in rows
                or (retry and rows[r.run_id]["status"] in retry)]
        notify("sweep_start", total=len(sweep.runs), done=len(sweep.runs) - len(todo), pending=len(todo),
               executor=executor.describe())
        specs = {r.run_id: r for r in todo}
        for run_id in rows.keys() - specs.keys():  # finished: a checkpoint left by a killed worker is stale
            (sweep_dir / run_id / storage.CHECKPOINT).unlink(missing_ok=True)
        counts: dict[str, int] = {}
        saved: set[str] = set()
        started = [0]

        def forward(event, **info):
            if event == "run_start":
                info.update(index=started[0], pending=len(todo))
                started[0] += 1
            notify(event, **info)

        try:
            if todo:
                for record in executor.run(make_groups(todo, engine), sweep_dir, forward, engine=engine):
                    if record.run_id in saved or record.run_id not in specs:
                        continue  # a retried task that finished twice: keep the first
                    storage.save_run(sweep_dir, record.run_id, record.config, record.metrics,
                                     record.evals, record.result)
                    saved.add(record.run_id)
                    result = record.result
                    counts[result["status"]] = counts.get(result["status"], 0) + 1
                    rows[record.run_id] = storage.index_row(result)
                    storage.write_index(sweep_dir, rows)
                    notify("run_end", spec=specs[record.run_id], result=result)
        finally:
            executor.close()
            if sweep_dir.is_dir():
                storage.remove_stale_temp(sweep_dir)  # workers are gone: their temp files are stale
                storage.rebuild_index(sweep_dir)
        notify("sweep_end", counts=counts)
    return SweepOutcome(sweep_dir, len(sweep.runs), len(sweep.runs) - len(todo), counts)
