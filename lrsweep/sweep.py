"""Run a sweep: every grid cell not yet finished, one after another; a failing run is recorded
and the sweep goes on (optuna's trial states: complete, diverged, failed).

Progress is reported through `callback(event, **info)`; this module never prints. Events:
    sweep_start(total, done, pending)   run_start(spec, index)   step(step, total, loss, lr)
    run_end(spec, result)               sweep_end(counts)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from . import storage
from .datasets import check_available
from .engine import run_group
from .grid import RunSpec, Sweep
from .train import resolve_device

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
              retry: tuple[str, ...] = ()) -> SweepOutcome:
    """Run every unfinished cell. `retry` names statuses to redo (e.g. ('failed',))."""
    notify = callback or (lambda *a, **k: None)
    sweep_dir = sweep_dir_for(sweep, out_root)
    preflight(sweep)
    with storage.SweepLock(sweep_dir):
        storage.remove_stale_temp(sweep_dir)
        storage.write_sweep_file(sweep_dir, sweep.raw)
        todo = pending_runs(sweep, sweep_dir)
        if retry:
            todo += [r for r in sweep.runs if r not in todo
                     and (storage.read_result(sweep_dir / r.run_id) or {}).get("status") in retry]
        notify("sweep_start", total=len(sweep.runs), done=len(sweep.runs) - len(todo), pending=len(todo))
        counts: dict[str, int] = {}
        try:
            for i, spec in enumerate(todo):
                notify("run_start", spec=spec, index=i, pending=len(todo))
                record = next(iter(run_group([spec], on_step=notify)))
                storage.save_run(sweep_dir, record.run_id, record.config, record.metrics, record.evals, record.result)
                result = record.result
                counts[result["status"]] = counts.get(result["status"], 0) + 1
                storage.rebuild_index(sweep_dir)
                notify("run_end", spec=spec, result=result)
        finally:
            if sweep_dir.is_dir():
                storage.rebuild_index(sweep_dir)
        notify("sweep_end", counts=counts)
    return SweepOutcome(sweep_dir, len(sweep.runs), len(sweep.runs) - len(todo), counts)
