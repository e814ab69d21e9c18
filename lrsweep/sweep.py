"""Run a sweep: every grid cell not yet finished, one after another; a failing run is recorded
and the sweep goes on (optuna's trial states: complete, diverged, failed).

Progress is reported through `callback(event, **info)`; this module never prints. Events:
    sweep_start(total, done, pending)   run_start(spec, index)   step(step, total, loss, lr)
    run_end(spec, result)               sweep_end(counts)
"""
from __future__ import annotations

import datetime as _dt
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from . import storage
from .datasets import check_available, load_data
from .grid import RunSpec, Sweep
from .train import FAILED, budget, resolve_device, train

Callback = Callable[..., None]


@dataclass
class SweepOutcome:
    sweep_dir: Path
    total: int
    skipped: int
    counts: dict[str, int] = field(default_factory=dict)


def sweep_dir_for(sweep: Sweep, out_root: str | Path = "runs") -> Path:
    return Path(out_root) / sweep.name


def result_record(spec: RunSpec, status: str, summary: dict, error: Optional[str]) -> dict:
    """result.json: status, axes, headline metrics; *_to_target = the train-loss target if set, else val-acc."""
    cfg = spec.config
    rec = {"run_id": spec.run_id, "status": status, "error": error, "axes": spec.axes,
           "optimizer": cfg.optimizer.name, "schedule": cfg.schedule.name, "model": cfg.model.name,
           "dataset": cfg.dataset.name, "seed": cfg.train.seed, "batch_size": cfg.train.batch_size,
           "nominal_lr": cfg.optimizer.lr, "lr": cfg.effective_lr, **summary}
    targets = summary.get("targets") or {}
    for name in ("train_loss", "val_acc"):
        hit = targets.get(name) or {}
        rec[f"steps_to_{name}"] = hit.get("step")
        rec[f"examples_to_{name}"] = hit.get("examples")
        rec[f"time_to_{name}"] = hit.get("seconds")
    primary = "train_loss" if targets.get("train_loss") else "val_acc"
    for k in ("steps", "examples", "time"):
        rec[f"{k}_to_target"] = rec[f"{k}_to_{primary}"]
    rec["torch_version"] = torch.__version__
    rec["finished_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return rec


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


def run_one(spec: RunSpec, sweep_dir: Path, callback: Optional[Callback] = None) -> dict:
    """Train one run and write its folder. Exceptions inside training become a `failed` record."""
    cfg = spec.config
    notify = callback or (lambda *a, **k: None)
    device = resolve_device(cfg.train.device)
    data = load_data(cfg.dataset, device)
    budget(cfg, len(data.train_y))  # a ConfigError here is the user's to fix: let it out
    try:
        outcome = train(cfg, data, device, on_step=lambda s, n, l, lr: notify("step", step=s, total=n, loss=l, lr=lr))
        status, error, summary = outcome.status, outcome.error, outcome.summary
        metrics, evals = outcome.metrics, outcome.evals
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # e.g. CUDA out of memory: record it, the sweep goes on
        status, error, summary, metrics, evals = FAILED, f"{type(e).__name__}: {e}", {}, {}, {}
        summary["traceback"] = traceback.format_exc(limit=5)
    result = result_record(spec, status, summary, error)
    storage.save_run(sweep_dir, spec.run_id, cfg.model_dump(mode="json"), metrics, evals, result)
    return result


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
                result = run_one(spec, sweep_dir, notify)
                counts[result["status"]] = counts.get(result["status"], 0) + 1
                storage.rebuild_index(sweep_dir)
                notify("run_end", spec=spec, result=result)
        finally:
            if sweep_dir.is_dir():
                storage.rebuild_index(sweep_dir)
        notify("sweep_end", counts=counts)
    return SweepOutcome(sweep_dir, len(sweep.runs), len(sweep.runs) - len(todo), counts)
