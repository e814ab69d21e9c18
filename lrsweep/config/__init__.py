"""The sweep file: YAML -> typed, validated objects.

One `RunConfig` describes one training run completely; a `SweepConfig` is a base RunConfig
plus the `sweep:` axes (see grid.py). Every error names the dotted YAML path and the value.
"""
from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lrsweep.errors import ConfigError

DATASETS = ("mnist", "fashion-mnist", "tiny-imagenet", "digits", "synthetic")
MODELS = ("mlp", "cnn5", "resnet18")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adafactor", "signsgd")
CAFFE_POLICIES = ("fixed", "step", "multistep", "exp", "inv", "poly", "sigmoid")
SCHEDULES = ("constant",) + CAFFE_POLICIES + ("cosine", "sgdr", "cyclic", "onecycle", "plateau")

# Short axis names users write in `sweep:` and `--set`.
SHORT_NAMES = {"lr": "optimizer.lr", "batch_size": "train.batch_size", "seed": "train.seed"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class SyntheticConfig(_Strict):
    """A generated classification problem: class-dependent Gaussian blobs shaped like images."""
    n_train: int = Field(2048, ge=1)
    n_val: int = Field(512, ge=1)
    classes: int = Field(4, ge=2)
    shape: list[int] = Field(default_factory=lambda: [1, 8, 8])
    noise: float = Field(1.0, ge=0)


class DatasetConfig(_Strict):
    name: Literal[DATASETS]  # type: ignore[valid-type]
    root: str = "data"
    download: bool = False
    # A fixed random subset of the training set (the same for every run: drawn with subset_seed).
    train_subset: Optional[int] = Field(None, ge=1)
    # A fresh random subset of the training set each epoch (document 003: 10k per epoch).
    epoch_subset: Optional[int] = Field(None, ge=1)
    # 'test' = the dataset's test split (digits/synthetic: a fixed 20% hold-out);
    # a number in (0, 1) = that fraction of the training set, held out.
    val_split: Union[Literal["test"], float] = "test"
    val_subset: Optional[int] = Field(None, ge=1)
    subset_seed: int = 0
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)

    @field_validator("val_split")
    @classmethod
    def _fraction(cls, v):
        if not isinstance(v, str) and not 0 < v < 1:
            raise ValueError(f"expected 'test' or a fraction in (0, 1), got {v}")
        return v


class ModelConfig(_Strict):
    name: Literal[MODELS]  # type: ignore[valid-type]
    hidden: list[int] = Field(default_factory=lambda: [256, 256])  # mlp only

    @field_validator("hidden")
    @classmethod
    def _positive(cls, v):
        if any(h < 1 for h in v):
            raise ValueError(f"layer widths must be >= 1, got {v}")
        return v


class OptimizerConfig(_Strict):
    name: Literal[OPTIMIZERS]  # type: ignore[valid-type]
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    dampening: float = Field(0.0, ge=0, le=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, ge=0)
    alpha: float = Field(0.99, ge=0, le=1)  # rmsprop smoothing
    centered: bool = False  # rmsprop
    lr_decay: float = Field(0.0, ge=0)  # adagrad
    beta2_decay: float = Field(-0.8, le=0)  # adafactor

    @field_validator("betas")
    @classmethod
    def _betas(cls, v):
        if not all(0 <= b < 1 for b in v):
            raise ValueError(f"each beta must be in [0, 1), got {list(v)}")
        return v

    @field_validator("lr")
    @classmethod
    def _finite(cls, v):
        if not math.isfinite(v):
            raise ValueError(f"must be finite, got {v}")
        return v

    @model_validator(mode="after")
    def _nesterov(self):
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening 0")
        return self


class ScheduleConfig(_Strict):
    name: Literal[SCHEDULES] = "constant"  # type: ignore[valid-type]
    warmup_steps: int = Field(0, ge=0)
    warmup_epochs: float = Field(0.0, ge=0)
    warmup_start_factor: float = Field(0.0, ge=0, le=1)
    # Caffe policies (science.md section 4)
    gamma: float = 0.1  # > 0; sigmoid may take < 0 (Caffe's decaying sigmoid)
    power: float = Field(1.0, ge=0)
    stepsize: Optional[int] = Field(None, ge=1)  # default: a third of the (post-warmup) steps
    stepvalues: list[int] = Field(default_factory=list)
    max_iter: Optional[int] = Field(None, ge=1)  # poly; default: the run's steps after warmup
    # cosine / sgdr
    min_lr: float = Field(0.0, ge=0)
    t_0: Optional[int] = Field(None, ge=1)  # sgdr first period in steps; default: one epoch
    t_mult: int = Field(1, ge=1)
    # cyclic (Smith 2017): the LR moves between base_lr=min_lr_factor*lr and max_lr=lr
    cycle_mode: Literal["triangular", "triangular2", "exp_range"] = "triangular"
    step_size_up: Optional[int] = Field(None, ge=1)  # default: 2 epochs' worth of steps, capped
    min_lr_factor: float = Field(0.25, gt=0, le=1)  # CLR: lower = upper/4 (or 1/3)
    # onecycle (torch.optim.lr_scheduler.OneCycleLR, anneal cos)
    pct_start: float = Field(0.3, gt=0, lt=1)
    div_factor: float = Field(25.0, gt=0)
    final_div_factor: float = Field(1e4, gt=0)
    # plateau (ReduceLROnPlateau; document 001's parameters)
    monitor: Literal["val_loss", "val_acc"] = "val_loss"
    factor: float = Field(0.1, gt=0, lt=1)
    patience: int = Field(10, ge=0)
    threshold: float = Field(1e-4, ge=0)
    threshold_mode: Literal["rel", "abs"] = "rel"
    cooldown: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _gamma(self):
        if not (self.gamma > 0 or (self.name == "sigmoid" and self.gamma < 0)):
            raise ValueError(f"gamma must be > 0 (or < 0 for a decaying sigmoid), got {self.gamma}")
        return self

    @field_validator("stepvalues")
    @classmethod
    def _sorted(cls, v):
        if any(s < 0 for s in v) or v != sorted(v):
            raise ValueError(f"must be non-negative and increasing, got {v}")
        return v


class LRScalingConfig(_Strict):
    rule: Literal["none", "linear", "sqrt"] = "none"
    base_batch_size: int = Field(256, ge=1)


class TrainConfig(_Strict):
    batch_size: int = Field(128, ge=1)
    # Budget: exactly one of epochs, steps, examples (default: 1 epoch).
    epochs: Optional[float] = None
    steps: Optional[int] = None
    examples: Optional[int] = None
    eval_every: Union[Literal["epoch"], int] = "epoch"  # 'epoch' or a number of steps
    eval_batch_size: int = Field(256, ge=1)
    log_every: int = Field(1, ge=1)
    target_train_loss: Optional[float] = Field(None, gt=0)
    target_val_accuracy: Optional[float] = Field(None, gt=0, le=1)
    # Smoothing of the per-step train loss used to decide when target_train_loss is reached.
    target_smoothing: float = Field(0.9, ge=0, lt=1)
    # Stop this many steps after target_train_loss is first reached (document 003's protocol).
    stop_after_target: Optional[int] = Field(None, ge=0)
    # Diverged: a NaN/inf loss, or a loss above divergence_factor x the first step's loss.
    divergence_factor: float = Field(10.0, gt=1)
    device: str = "auto"
    seed: int = 0
    # None (default): on for conv models trained by the sequential engine on the CPU, where it
    # was measured faster (engine.effective_config); true/false force it.
    channels_last: Optional[bool] = None
    # Resume point for long runs: 'epoch' writes <run_dir>/checkpoint.pt at each epoch end
    # (recommended for e.g. resnet18 on tiny-imagenet); it does not change the run's numbers.
    checkpoint: Literal["none", "epoch"] = "none"
    # How runs are executed (engine.py); none of these changes a run id (grid.NON_IDENTITY).
    # auto: vectorized on CUDA, sequential on CPU (measured; README "Speed").
    engine: Literal["auto", "vectorized", "sequential"] = "auto"
    max_members: Optional[int] = Field(None, ge=1)  # vectorized: at most this many runs in one stack
    compile: bool = False  # vectorized: torch.compile the stacked forward/backward (for CUDA)
    # bf16: forward passes under torch.autocast(bfloat16); vectorized engine only. Part of the run id.
    precision: Literal["fp32", "bf16"] = "fp32"

    @field_validator("epochs", "steps", "examples")
    @classmethod
    def _positive_budget(cls, v):
        if v is not None and not v > 0:
            raise ValueError(f"a budget must be > 0, got {v}")
        return v

    @field_validator("eval_every")
    @classmethod
    def _eval_every(cls, v):
        if not isinstance(v, str) and v < 1:
            raise ValueError(f"expected 'epoch' or a number of steps >= 1, got {v}")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v):
        ok = v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit())
        if not ok:
            raise ValueError(f"expected one of (auto, cpu, cuda, cuda:N), got {v!r}")
        return v

    @model_validator(mode="after")
    def _one_budget(self):
        given = [k for k in ("epochs", "steps", "examples") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one budget of (epochs, steps, examples), got {', '.join(given)}")
        if not given:
            self.epochs = 1.0
        return self


class RunConfig(_Strict):
    """Everything that defines one training run (the resolved config saved next to its results)."""
    name: str
    dataset: DatasetConfig
    model: ModelConfig
    optimizer: OptimizerConfig
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    lr_scaling: LRScalingConfig = Field(default_factory=LRScalingConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if not v or "/" in v or v.startswith("."):
            raise ValueError(f"must be a non-empty folder name without '/', got {v!r}")
        return v

    @property
    def effective_lr(self) -> float:
        """The nominal LR times the lr_scaling factor for this run's batch size."""
        return self.optimizer.lr * lr_scale(self.lr_scaling, self.train.batch_size)


def lr_scale(scaling: LRScalingConfig, batch_size: int) -> float:
    k = batch_size / scaling.base_batch_size
    return {"none": 1.0, "linear": k, "sqrt": math.sqrt(k)}[scaling.rule]


# --------------------------------------------------------------------------- loading


def load_yaml(path: str | Path) -> dict:
    """Read a sweep file with a safe loader; one-line errors for missing/invalid files."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("", f"config file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError("", f"{p}: invalid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError("", f"{p}: expected a mapping of sections (name, dataset, ...), got {type(raw).__name__}")
    return raw


def expand_short(key: str) -> str:
    return SHORT_NAMES.get(key, key)


def set_dotted(raw: dict, dotted: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, creating sections as needed."""
    parts = dotted.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(".".join(parts[: i + 1]), f"is a value, not a section; cannot set {dotted}")
        node = child
    node[parts[-1]] = value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `--set key=value` strings. Values are parsed as YAML (`0.1`, `[1, 2]`, `true`)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError("--set", f"expected key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}", f"value is not valid YAML: {text!r}") from None
        if key.startswith("sweep."):
            raw.setdefault("sweep", {})
            if raw["sweep"] is None:
                raw["sweep"] = {}
            raw["sweep"][key[len("sweep."):]] = value
        else:
            set_dotted(raw, expand_short(key), value)
    return raw


def _model_of(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation) if get_origin(annotation) else ():
        m = _model_of(arg)
        if m:
            return m
    return None


def check_unknown_keys(raw: Any, model: type[BaseModel], path: str = "") -> None:
    """Reject unknown keys with a did-you-mean, before pydantic's less friendly message."""
    if not isinstance(raw, dict):
        return
    fields = model.model_fields
    for key, value in raw.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in fields:
            hint = difflib.get_close_matches(str(key), list(fields), n=1)
            allowed = ", ".join(fields)
            msg = f"unknown key" + (f"; did you mean '{hint[0]}'?" if hint else "") + f" (allowed: {allowed})"
            raise ConfigError(where, msg)
        sub = _model_of(fields[key].annotation)
        if sub is not None:
            check_unknown_keys(value, sub, where)


def validation_error(e: ValidationError, prefix: str = "") -> ConfigError:
    """The first pydantic error as one line: `optimizer.lr: Input should be greater than 0, got -0.1`."""
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-after", "literal")))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "literal_error":
        msg = "expected one of (" + ", ".join(a.strip("'") for a in _literal_options(err)) + ")"
    value = err.get("input")
    if err["type"] != "missing" and not isinstance(value, dict) and "got" not in msg:
        msg += f", got {value!r}"
    path = ".".join(p for p in (prefix, loc) if p)
    return ConfigError(path, msg)


def _literal_options(err) -> list[str]:
    expected = err.get("ctx", {}).get("expected", "")
    return [s.strip() for s in expected.replace(" or ", ", ").split(",") if s.strip()]


def parse_run_config(raw: dict, where: str = "") -> RunConfig:
    check_unknown_keys(raw, RunConfig)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise validation_error(e, where) from None
