"""Engines turn run specs into run records; they never touch the sweep folder.

A `RunRecord` holds plain dicts and lists only, so it can come back from a worker process or a
remote task; the sweep driver (sweep.py) is the one writer of `runs/<name>/`.

- `sequential`: one run after another with train.train (the reference numbers).
- `vectorized`: a group of runs as one stacked model (vectorized.py); same records and files.
- `auto` (default): chosen per device from measurements (README, "Speed: engines and
  benchmark"): on CUDA the vectorized engine; on CPU the sequential one, with channels_last for
  conv models where train.channels_last is left unset. On CPU, parallelism comes from the
  executor (one single-threaded worker per core), and one-run units balance best over workers.

The engine is picked by the `engine` argument unless that is `auto`, then by the run's
`train.engine`. Neither changes a run's id (grid.NON_IDENTITY).

Grouping rule (make_groups/group_key): runs go in one vectorized group when their configs are
equal except for the scalar fields in MEMBER_FIELDS: the optimizer's scalar settings (not its
name, nesterov or centered), the schedule's parameters (not its name), lr_scaling, the seed,
targets, divergence factor, log_every. Same dataset, model, batch size, budget and evaluation.
Groups are split into chunks of train.max_members.
"""
from __future__ import annotations

import datetime as _dt
import json
import traceback
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch

from lrsweep.config import RunConfig
from lrsweep.datasets import load_data
from lrsweep.errors import ConfigError, UserError
from lrsweep.config.grid import RunSpec
from lrsweep.training.sequential import FAILED, budget, resolve_device, train

StepCallback = Callable[..., None]
ENGINES = ("auto", "vectorized", "sequential")
CONV_MODELS = ("cnn5", "resnet18")

# Fields that may differ inside a vectorized group (None: the whole section).
MEMBER_FIELDS: dict[str, Optional[tuple[str, ...]]] = {
    "name": None,
    "optimizer": ("lr", "momentum", "dampening", "weight_decay", "betas", "eps", "alpha", "lr_decay",
                  "beta2_decay"),
    "lr_scaling": None,
    "train": ("seed", "target_train_loss", "target_val_accuracy", "target_smoothing", "stop_after_target",
              "divergence_factor", "log_every", "engine", "max_members"),
}
SCHEDULE_STRUCTURE = ("name",)  # every other schedule field is per member (LRs come from the host)


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


# --------------------------------------------------------------------------- choosing


def resolve_engine(cfg: RunConfig, engine: str = "auto") -> str:
    """'vectorized' or 'sequential' for this run (see the module docstring)."""
    from lrsweep.training.vectorized import vectorizable

    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")
    t = cfg.train
    choice = engine if engine != "auto" else t.engine
    if t.precision == "bf16":  # only the vectorized engine implements it
        if choice == "sequential" or not vectorizable(cfg) or t.checkpoint != "none":
            raise ConfigError("train.precision", "bf16 is implemented by the vectorized engine only "
                                                 "(not with engine: sequential, adafactor or checkpoint: epoch)")
        return "vectorized"
    if choice == "auto":
        choice = "vectorized" if resolve_device(t.device).type == "cuda" else "sequential"
    if choice == "vectorized" and (not vectorizable(cfg) or t.checkpoint != "none"):
        return "sequential"  # adafactor, and runs that checkpoint (train.py's resume), train alone
    return choice


def effective_config(cfg: RunConfig, engine: str) -> RunConfig:
    """The config a run trains with (`engine`: the one that trains it). train.channels_last unset
    (None) becomes True for conv models on the CPU (cnn5 measured 24-33% faster per step there;
    the same for both engines, as the vectorized engine runs members as separate modules on the
    CPU), else False (on CUDA it is unmeasured)."""
    if cfg.train.channels_last is not None:
        return cfg
    cl = cfg.model.name in CONV_MODELS and resolve_device(cfg.train.device).type == "cpu"
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"channels_last": cl})})


def group_key(cfg: RunConfig) -> str:
    """Runs with equal keys may train as one vectorized group."""
    d = cfg.model_dump(mode="json")
    for section, fields in MEMBER_FIELDS.items():
        if fields is None:
            d.pop(section, None)
        else:
            for f in fields:
                d[section].pop(f, None)
    d["schedule"] = {k: d["schedule"][k] for k in SCHEDULE_STRUCTURE}
    return json.dumps(d, sort_keys=True, separators=(",", ":"))


def make_groups(specs: list[RunSpec], engine: str = "auto") -> list[list[RunSpec]]:
    """Units of work, in the order of `specs` (by each group's first run). Sequential runs are
    alone; vectorized runs are grouped by group_key and chunked by train.max_members."""
    groups: dict[str, list[RunSpec]] = {}
    for i, spec in enumerate(specs):
        if resolve_engine(spec.config, engine) == "vectorized":
            key = "v" + group_key(spec.config)
        else:
            key = f"s{i}"
        groups.setdefault(key, []).append(spec)
    out: list[list[RunSpec]] = []
    for group in groups.values():
        limit = group[0].config.train.max_members or len(group)
        out += [group[i:i + limit] for i in range(0, len(group), limit)]
    return out


# --------------------------------------------------------------------------- running


def _failed(spec: RunSpec, cfg: RunConfig, e: BaseException) -> RunRecord:
    summary = {"traceback": traceback.format_exc(limit=5)}
    return RunRecord(spec.run_id, cfg.model_dump(mode="json"), {}, {},
                     result_record(spec, FAILED, summary, f"{type(e).__name__}: {e}"))


def run_spec(spec: RunSpec, on_step: Optional[StepCallback] = None, engine: str = "sequential") -> RunRecord:
    """Train one run with train.train. An exception inside training becomes a `failed` record;
    bad config raises."""
    cfg = effective_config(spec.config, "sequential" if engine == "auto" else engine)
    device = resolve_device(cfg.train.device)
    data = load_data(cfg.dataset, device)
    budget(cfg, len(data.train_y))  # a ConfigError here is the user's to fix: let it out
    step_cb = None
    if on_step is not None:
        step_cb = lambda s, n, loss, lr: on_step("step", step=s, total=n, loss=loss, lr=lr)  # noqa: E731
    try:
        out = train(cfg, data, device, on_step=step_cb)
    except (KeyboardInterrupt, SystemExit, UserError):
        raise
    except Exception as e:  # e.g. CUDA out of memory: record it, the sweep goes on
        return _failed(spec, cfg, e)
    summary = {**out.summary, "engine": "sequential", "group_size": 1}
    return RunRecord(spec.run_id, cfg.model_dump(mode="json"), out.metrics, out.evals,
                     result_record(spec, out.status, summary, out.error))


def run_vectorized(group: list[RunSpec], on_step: Optional[StepCallback] = None) -> list[RunRecord]:
    """Train a group (make_groups) as stacked members; one record per run, in order."""
    from lrsweep.training.vectorized import train_group

    cfgs = [effective_config(s.config, "vectorized") for s in group]
    device = resolve_device(cfgs[0].train.device)
    data = load_data(cfgs[0].dataset, device)
    for c in cfgs:
        budget(c, len(data.train_y))  # ConfigError: the user's to fix
    step_cb = None
    if on_step is not None:
        def step_cb(s, n, loss, lr, members):
            on_step("step", step=s, total=n, loss=loss, lr=lr, members=members)
    try:
        outcomes = train_group(cfgs, data, device, on_step=step_cb)
    except (KeyboardInterrupt, SystemExit, UserError):
        raise
    except Exception as e:  # every member of the group failed with it; the sweep goes on
        return [_failed(s, c, e) for s, c in zip(group, cfgs)]
    return [RunRecord(s.run_id, c.model_dump(mode="json"), o.metrics, o.evals,
                      result_record(s, o.status, o.summary, o.error))
            for s, c, o in zip(group, cfgs, outcomes)]


def run_group(group: list[RunSpec], engine: str = "auto",
              on_step: Optional[StepCallback] = None) -> Iterator[RunRecord]:
    """Records for a group from make_groups, in order. Sequential runs are trained lazily (one
    per record asked for); a vectorized group is trained at the first record asked for."""
    if group and resolve_engine(group[0].config, engine) == "vectorized" \
            and all(resolve_engine(s.config, engine) == "vectorized" for s in group) \
            and len({group_key(s.config) for s in group}) == 1:
        yield from run_vectorized(group, on_step)
        return
    for spec in group:
        yield run_spec(spec, on_step, resolve_engine(spec.config, engine))
