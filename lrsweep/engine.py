"""Engines turn run specs into run records; they never touch the sweep folder.

A `RunRecord` holds plain dicts and lists only, so it can come back from a worker process or a
remote task; the sweep driver (sweep.py) is the one writer of `runs/<name>/`.

- `sequential`: one run after another with train.train (the reference numbers).
"""
from __future__ import annotations

import datetime as _dt
import traceback
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch

from .datasets import load_data
from .grid import RunSpec
from .train import FAILED, budget, resolve_device, train

StepCallback = Callable[..., None]
ENGINES = ("auto", "sequential")


@dataclass
class RunRecord:
    run_id: str
    config: dict  # -> config.json
    metrics: dict  # -> metrics.csv
    evals: dict  # -> evals.csv
    result: dict  # -> result.json (written last)


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


def run_spec(spec: RunSpec, on_step: Optional[StepCallback] = None) -> RunRecord:
    """Train one run. An exception inside training becomes a `failed` record; bad config raises."""
    cfg = spec.config
    device = resolve_device(cfg.train.device)
    data = load_data(cfg.dataset, device)
    budget(cfg, len(data.train_y))  # a ConfigError here is the user's to fix: let it out
    step_cb = None
    if on_step is not None:
        step_cb = lambda s, n, loss, lr: on_step("step", step=s, total=n, loss=loss, lr=lr)  # noqa: E731
    try:
        out = train(cfg, data, device, on_step=step_cb)
        status, error, summary, metrics, evals = out.status, out.error, out.summary, out.metrics, out.evals
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # e.g. CUDA out of memory: record it, the sweep goes on
        status, error, metrics, evals = FAILED, f"{type(e).__name__}: {e}", {}, {}
        summary = {"traceback": traceback.format_exc(limit=5)}
    return RunRecord(spec.run_id, cfg.model_dump(mode="json"), metrics, evals,
                     result_record(spec, status, summary, error))


def make_groups(specs: list[RunSpec], engine: str = "auto") -> list[list[RunSpec]]:
    """Units of work. The sequential engine trains each run alone."""
    return [[s] for s in specs]


def run_group(group: list[RunSpec], engine: str = "auto",
              on_step: Optional[StepCallback] = None) -> Iterator[RunRecord]:
    for spec in group:
        yield run_spec(spec, on_step)
