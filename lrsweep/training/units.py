"""Work units: the grid's pending runs cut into what one worker trains at a time, each with
its engine decided once, here, and the folders its runs keep checkpoints in.

- `sequential` units hold one run, trained by training/sequential.py (the reference numbers).
- `vectorized` units hold a group of runs trained as one stacked model (training/vectorized/).

Which engine (`resolve_engine`): the `engine` argument unless it is None or `auto`, else the
run's `train.engine`; `auto` means, from measurements (README, "Speed: engines and benchmark"),
vectorized on CUDA and sequential on the CPU, where parallelism comes from the executor (one
single-threaded worker per core) and one-run units balance best over workers. Neither changes
a run's id. Runs the vectorized engine cannot train (adafactor, checkpoints, a batch schedule)
train sequentially; a batch schedule's fallback is said (`note:`, result.json's engine_note),
as its runs are otherwise like those the vectorized engine groups.

Grouping (`group_key`): runs share a vectorized unit when their configs are equal except for
the fields declared MEMBER on the schema (config/schema.py: the optimizer's scalar settings,
the schedule's parameters, lr_scaling, the seed, targets, ...). Groups are chunked by
train.max_members.
"""
from __future__ import annotations

import json
import traceback
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Iterator, Optional

from lrsweep.config import RunConfig
from lrsweep.config.schema import ENGINES
from lrsweep.config.grid import RunSpec
from lrsweep.config.roles import group_dict
from lrsweep.datasets import load_data
from lrsweep.errors import ConfigError, UserError
from lrsweep.models import BUILTIN
from lrsweep.events import Callback, Note, RunStarted, Step, ignore
from lrsweep.results import RunRecord, RunResult
from lrsweep.training.setup import budget, resolve_device

CONV_MODELS = ("cnn5", "resnet18")


class Engine(str, Enum):
    SEQUENTIAL = "sequential"
    VECTORIZED = "vectorized"

    def __str__(self) -> str:
        return self.value


ENGINE_CHOICES = ENGINES  # auto, or an Engine


@dataclass(frozen=True)
class WorkUnit:
    """Runs trained together by one engine; `run_dirs[i]` holds run i's checkpoint.pt (None:
    no checkpoints). Specs carry the config as trained (effective_config applied)."""
    engine: Engine
    specs: tuple[RunSpec, ...]
    run_dirs: tuple[Optional[Path], ...]
    note: Optional[str] = None  # why these runs train on another engine than asked (a fallback)

    @property
    def run_ids(self) -> list[str]:
        return [s.run_id for s in self.specs]

    def relocated(self, root: Optional[Path]) -> "WorkUnit":
        """The same unit with checkpoints under `root` (a worker that cannot see the sweep folder)."""
        return replace(self, run_dirs=tuple(root / s.run_id if root else None for s in self.specs))

    def on_device(self, device: str) -> "WorkUnit":
        """The same unit trained on `device` (a worker pinned to one GPU sees it as `cuda`)."""
        specs = []
        for s in self.specs:
            t = s.config.train
            if t.device.startswith("cuda:"):
                s = RunSpec(s.run_id, s.axes, s.config.model_copy(update={"train": t.model_copy(update={"device": device})}))
            specs.append(s)
        return replace(self, specs=tuple(specs))


# --------------------------------------------------------------------------- choosing


def resolve_engine(cfg: RunConfig, engine: Optional[str] = None) -> Engine:
    """The engine that trains this run (see the module docstring)."""
    from lrsweep.training.vectorized import vectorizable

    if engine is not None and engine not in ENGINE_CHOICES:
        from lrsweep.errors import ParameterError

        raise ParameterError("engine", f"expected one of ({', '.join(ENGINE_CHOICES)}), got {engine!r}")
    t = cfg.train
    choice = _asked(cfg, engine, resolve_auto=False)
    if t.precision == "bf16":  # only the vectorized engine implements it
        if choice == "sequential" or not vectorizable(cfg) or t.checkpoint != "none" or t.batch_schedule is not None:
            raise ConfigError("train.precision", "bf16 is implemented by the vectorized engine only "
                              "(not with engine: sequential, adafactor, checkpoint: epoch or a batch_schedule)")
        return Engine.VECTORIZED
    choice = _asked(cfg, engine)
    if choice == "vectorized" and (not vectorizable(cfg) or t.checkpoint != "none" or t.batch_schedule is not None):
        return Engine.SEQUENTIAL  # adafactor, runs that checkpoint (sequential's resume) or grow B, train alone
    return Engine(choice)


def _asked(cfg: RunConfig, engine: Optional[str], resolve_auto: bool = True) -> str:
    """The engine asked for: the argument, else train.engine; `auto` decided by the device."""
    choice = engine if engine not in (None, "auto") else cfg.train.engine
    if choice == "auto" and resolve_auto:
        choice = "vectorized" if resolve_device(cfg.train.device).type == "cuda" else "sequential"
    return choice


def fallback_note(cfg: RunConfig, engine: Optional[str] = None) -> Optional[str]:
    """Why a run the vectorized engine would train goes to the sequential one, or None."""
    if _asked(cfg, engine) == "vectorized" and cfg.train.batch_schedule is not None:
        return "train.batch_schedule is implemented by the sequential engine only: its runs train sequentially"
    return None


def effective_config(cfg: RunConfig, engine: Engine | str) -> RunConfig:
    """The config a run trains with. train.channels_last unset (None) becomes True for conv
    models on the CPU (cnn5 measured 24-33% faster per step there; the same for both engines,
    as the vectorized engine runs members as separate modules on the CPU), else False (on
    CUDA it is unmeasured)."""
    if cfg.train.channels_last is not None:
        return cfg
    cl = cfg.model.name in CONV_MODELS and resolve_device(cfg.train.device).type == "cpu"  # user models: unmeasured
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"channels_last": cl})})


def group_key(cfg: RunConfig) -> str:
    """Runs with equal keys may train as one vectorized group."""
    return json.dumps(group_dict(cfg), sort_keys=True, separators=(",", ":"))


def plan_units(specs: list[RunSpec], sweep_dir: Optional[Path] = None,
               engine: Optional[str] = None) -> list[WorkUnit]:
    """The units of work, in the order of `specs` (by each unit's first run). `sweep_dir`: where
    run folders (and so checkpoints) live; None: no checkpoints."""
    groups: dict[str, list[RunSpec]] = {}
    engines: dict[str, Engine] = {}
    notes: dict[str, Optional[str]] = {}
    for i, spec in enumerate(specs):
        e = resolve_engine(spec.config, engine)
        key = "v" + group_key(spec.config) if e is Engine.VECTORIZED else f"s{i}"
        engines[key], notes[key] = e, fallback_note(spec.config, engine)
        groups.setdefault(key, []).append(
            RunSpec(spec.run_id, spec.axes, effective_config(spec.config, e)))
    units = []
    for key, group in groups.items():
        limit = group[0].config.train.max_members or len(group)
        for i in range(0, len(group), limit):
            chunk = tuple(group[i:i + limit])
            units.append(WorkUnit(engines[key], chunk, (), notes[key]).relocated(Path(sweep_dir) if sweep_dir else None))
    return units


# --------------------------------------------------------------------------- training


def _record(spec: RunSpec, trained) -> RunRecord:
    res = RunResult.for_spec(spec, trained.status, trained.error, **trained.summary)
    return RunRecord(spec.run_id, spec.config.model_dump(mode="json"), trained.metrics, trained.evals, res)


def _train_vectorized(unit: WorkUnit, on_event: Callback) -> Iterator[RunRecord]:
    from lrsweep.training import vectorized

    cfgs = [s.config for s in unit.specs]
    device = resolve_device(cfgs[0].train.device)
    data = load_data(cfgs[0].dataset, device)
    for c in cfgs:
        budget(c, len(data.train_y))  # a ConfigError is the user's to fix: let it out
    first = unit.specs[0]

    def on_step(step, total, loss, lr, members):
        on_event(Step(first.run_id, step, total, loss, lr, members))

    try:
        trained = vectorized.train_group(cfgs, data, device, on_step=on_step)
    except (KeyboardInterrupt, SystemExit, UserError):
        raise
    except Exception as e:  # noqa: BLE001
        if cfgs[0].model.name in BUILTIN or _is_oom(e):
            raise
        # A user's model that vmap/functional_call cannot stack (in-place buffers, hooks, ...):
        # train its runs one at a time instead, and say so.
        why = f"the vectorized engine cannot train {cfgs[0].model.label} ({type(e).__name__}: {str(e)[:160]}); " \
              f"its {len(cfgs)} runs train sequentially"
        on_event(Note(why))
        for spec in unit.specs:
            rec = _train_one(spec, None, on_event)
            rec.result.engine_note = why
            yield rec
        return
    for spec, t in zip(unit.specs, trained):
        yield _record(spec, t)


def _is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.cuda.OutOfMemoryError)


def _train_one(spec: RunSpec, run_dir: Optional[Path], on_event: Callback) -> RunRecord:
    from lrsweep.training import sequential

    cfg = spec.config
    device = resolve_device(cfg.train.device)
    data = load_data(cfg.dataset, device)
    budget(cfg, len(data.train_y))  # a ConfigError is the user's to fix: let it out

    def on_step(step, total, loss, lr):
        on_event(Step(spec.run_id, step, total, loss, lr))

    return _record(spec, sequential.train(cfg, data, device, on_step=on_step, run_dir=run_dir))


def _free_device_memory() -> None:
    import gc

    import torch

    gc.collect()  # the failed run's tensors are garbage once its frames are gone
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def train_unit(unit: WorkUnit, on_event: Callback = ignore) -> Iterator[RunRecord]:
    """One record per run of the unit, as each finishes (a vectorized unit's all at its end).
    Emits RunStarted and Step events. A UserError (the user's config) propagates; any other
    exception becomes `failed` records for the runs not yet finished, and the sweep goes on."""
    left = {s.run_id: s for s in unit.specs}
    try:
        if unit.engine is Engine.VECTORIZED:
            for spec in unit.specs:
                on_event(RunStarted(spec.run_id, spec.axes))
            records: Iterator[RunRecord] = _train_vectorized(unit, on_event)
        else:
            def one_by_one():
                if unit.note:
                    on_event(Note(unit.note))
                for spec, run_dir in zip(unit.specs, unit.run_dirs):
                    on_event(RunStarted(spec.run_id, spec.axes))
                    rec = _train_one(spec, run_dir, on_event)
                    rec.result.engine_note = unit.note
                    yield rec
            records = one_by_one()
        for rec in records:
            left.pop(rec.run_id, None)
            yield rec
    except (KeyboardInterrupt, SystemExit, UserError):
        raise
    except Exception as e:  # noqa: BLE001 - e.g. CUDA out of memory: recorded, the sweep goes on
        err, tb = f"{type(e).__name__}: {e}", traceback.format_exc(limit=8)
        _free_device_memory()  # what the failed run held must not fail the next one (no cascade)
        for spec in list(left.values()):
            left.pop(spec.run_id)
            yield RunRecord.failed(spec, err, tb)
    for spec in left.values():
        yield RunRecord.failed(spec, "the engine returned no result for this run")
