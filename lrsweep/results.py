"""What a finished run is: its status, and the one record type written to result.json.

optuna's trial states, for training runs: a run is `complete` (trained to its budget or to
its stop-after-target point), `diverged` (stopped early on a blown-up loss: a result, not an
error) or `failed` (an exception: recorded, and the sweep goes on).
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Optional


class RunStatus(str, Enum):
    COMPLETE = "complete"
    DIVERGED = "diverged"
    FAILED = "failed"
    STALLED = "stalled"  # stopped by train.stop_if_stalled; scored like a diverged run

    def __str__(self) -> str:  # f-strings and tables show the value
        return self.value


@dataclass
class RunResult:
    """result.json. Final metrics are NaN unless the run completed; *_to_target are the
    train-loss target's when one is set, else the val-acc target's."""
    run_id: str
    status: RunStatus
    error: Optional[str]
    axes: dict[str, Any]
    optimizer: str
    schedule: str
    model: str
    dataset: str
    seed: int
    batch_size: int
    nominal_lr: float
    lr: float  # effective (after lr_scaling)
    # training: absent (None) for a failed run
    steps: Optional[int] = None
    examples: Optional[int] = None
    epochs: Optional[float] = None
    total_steps: Optional[int] = None
    steps_per_epoch: Optional[int] = None
    final_lr: Optional[float] = None
    initial_loss: Optional[float] = None
    final_train_loss: Optional[float] = None
    final_train_acc: Optional[float] = None
    final_val_loss: Optional[float] = None
    final_val_acc: Optional[float] = None
    best_val_acc: Optional[float] = None
    best_val_loss: Optional[float] = None
    targets: dict = field(default_factory=dict)  # name -> {target, step, examples, seconds} or None
    time_s: Optional[float] = None
    data_time_s: Optional[float] = None
    compute_time_s: Optional[float] = None
    epoch_times: list = field(default_factory=list)
    device: Optional[str] = None
    resumed_at_step: Optional[int] = None
    engine: Optional[str] = None
    group_size: Optional[int] = None
    stop_reason: Optional[str] = None  # budget, stop_after_target, nonfinite_loss, loss_blowup
    engine_note: Optional[str] = None  # why the engine asked for did not train it (a fallback)
    # train.batch_schedule's effect: {final_batch_size, changes: [{step, examples, batch_size}]}
    batch_schedule: Optional[dict] = None
    noise_scale: Optional[dict] = None  # train.noise_scale's summary (training/noise_scale.py), when set
    traceback: Optional[str] = None
    steps_to_train_loss: Optional[int] = None
    examples_to_train_loss: Optional[int] = None
    time_to_train_loss: Optional[float] = None
    steps_to_val_acc: Optional[int] = None
    examples_to_val_acc: Optional[int] = None
    time_to_val_acc: Optional[float] = None
    steps_to_target: Optional[int] = None
    examples_to_target: Optional[int] = None
    time_to_target: Optional[float] = None
    torch_version: str = ""
    finished_at: str = ""

    def __post_init__(self):
        self.status = RunStatus(self.status)
        for name in ("train_loss", "val_acc"):
            hit = (self.targets or {}).get(name) or {}
            setattr(self, f"steps_to_{name}", hit.get("step"))
            setattr(self, f"examples_to_{name}", hit.get("examples"))
            setattr(self, f"time_to_{name}", hit.get("seconds"))
        primary = "train_loss" if (self.targets or {}).get("train_loss") else "val_acc"
        for k in ("steps", "examples", "time"):
            setattr(self, f"{k}_to_target", getattr(self, f"{k}_to_{primary}"))
        if not self.torch_version:
            import torch

            self.torch_version = torch.__version__
        if not self.finished_at:
            self.finished_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

    @classmethod
    def for_spec(cls, spec, status: RunStatus, error: Optional[str] = None, **fields) -> "RunResult":
        """The record of `spec` (a grid cell) with the training fields given."""
        cfg = spec.config
        base = dict(run_id=spec.run_id, status=status, error=error, axes=spec.axes,
                    optimizer=cfg.optimizer.name, schedule=cfg.schedule.name, model=cfg.model.label,
                    dataset=cfg.dataset.label, seed=cfg.train.seed, batch_size=cfg.train.batch_size,
                    nominal_lr=cfg.optimizer.lr, lr=cfg.effective_lr)
        return cls(**{**base, **fields})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["status"] = self.status.value
        return d


@dataclass
class RunRecord:
    """Everything a finished run writes, as plain data (it crosses process boundaries); the
    sweep driver (sweep.py) is the one writer of run folders."""
    run_id: str
    config: dict  # -> config.json (the config as trained)
    metrics: dict  # -> metrics.csv, one row per logged step
    evals: dict  # -> evals.csv, one row per evaluation
    result: RunResult  # -> result.json, written last

    @classmethod
    def failed(cls, spec, error: str, tb: Optional[str] = None, config: Optional[dict] = None) -> "RunRecord":
        res = RunResult.for_spec(spec, RunStatus.FAILED, error, traceback=tb)
        return cls(spec.run_id, config or spec.config.model_dump(mode="json"), {}, {}, res)
