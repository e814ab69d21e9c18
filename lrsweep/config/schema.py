"""The config schema: one `RunConfig` describes one training run completely.

Field roles are declared here, on the fields, and nowhere else (roles.py reads them):
- `NOT_IDENTITY`: does not change a run's numbers (where it runs, how it is executed), so it
  is left out of the run id;
- `IDENTITY_UNLESS_DEFAULT`: added after run ids were first published; left out of the id while
  it has its default, so older folders keep their ids;
- `MEMBER`: may differ between the runs of one vectorized group (scalar hyperparameters the
  stacked optimizer and the per-member schedules take as numbers). A role on a section applies
  to its fields; a field's own role overrides it.
"""
from __future__ import annotations

import math
from typing import Any, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from lrsweep.config.base import Strict
from lrsweep.config.train_options import BatchScheduleConfig, NoiseScaleConfig, StallConfig
from lrsweep.errors import quote

NOT_IDENTITY = {"identity": False}
IDENTITY_UNLESS_DEFAULT = {"identity": "unless-default"}
MEMBER = {"member": True}
NOT_MEMBER = {"member": False}

DATASETS = ("mnist", "fashion-mnist", "tiny-imagenet", "digits", "synthetic", "cifar10", "cifar100", "imagefolder")
MODELS = ("mlp", "cnn5", "resnet18", "torchvision")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adafactor", "signsgd")
CAFFE_POLICIES = ("fixed", "step", "multistep", "exp", "inv", "poly", "sigmoid")
SCHEDULES = ("constant",) + CAFFE_POLICIES + ("cosine", "sgdr", "cyclic", "onecycle", "plateau")
ENGINES = ("auto", "vectorized", "sequential")  # train.engine (training/units.py)

MAX_SYNTHETIC_VALUES = 1 << 31  # numbers in a generated dataset (8 GiB as float32)
MAX_NAME_BYTES = 255  # the sweep's folder name (most file systems' limit)

# Short axis names users write in `sweep:` and `--set`.
SHORT_NAMES = {"lr": "optimizer.lr", "batch_size": "train.batch_size", "seed": "train.seed"}


def _check_factory(kind: str, names: tuple, name, factory) -> None:
    """A section takes a `name` or a `factory` "package.module:function" (ValueError if not)."""
    if (name is None) == (factory is None):
        raise ValueError(f"give a {kind} `name` (one of " + ", ".join(names) + ") or a `factory` "
                         "(\"package.module:function\"), not both")
    if factory is not None and (":" not in factory or factory.startswith(":") or factory.endswith(":")):
        raise ValueError(f"factory: expected \"package.module:function\", got {factory!r}")



class _Strict(Strict):
    pass


class SyntheticConfig(_Strict):
    """A generated classification problem: class-dependent Gaussian blobs shaped like images."""
    n_train: int = Field(2048, ge=1)
    n_val: int = Field(512, ge=1)
    classes: int = Field(4, ge=2)
    shape: list[int] = Field(default_factory=lambda: [1, 8, 8])
    noise: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _size(self):
        values = (self.n_train + self.n_val) * math.prod(self.shape)
        if values > MAX_SYNTHETIC_VALUES:
            raise ValueError(f"(n_train + n_val) x shape is {values} numbers, more than the limit of "
                             f"{MAX_SYNTHETIC_VALUES} ({MAX_SYNTHETIC_VALUES * 4 >> 30} GiB of float32)")
        return self


class DatasetConfig(_Strict):
    """A built-in dataset or files in a standard layout by `name` (datasets/); or the user's own:
    `factory: "package.module:function"`, called as function(**args) and returning tensors or
    torch Datasets (datasets/factory.py)."""
    name: Optional[Literal[DATASETS]] = None  # type: ignore[valid-type]
    # Where the files are and how they were obtained do not change a run's numbers: not in its id.
    root: str = Field("data", json_schema_extra=NOT_IDENTITY)
    download: bool = Field(False, json_schema_extra=NOT_IDENTITY)
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
    factory: Optional[str] = Field(None, json_schema_extra=IDENTITY_UNLESS_DEFAULT)
    args: dict[str, Any] = Field(default_factory=dict, json_schema_extra=IDENTITY_UNLESS_DEFAULT)
    # Folder searched for the factory's module first: set by the loader to the sweep file's folder.
    factory_path: Optional[str] = Field(None, json_schema_extra=NOT_IDENTITY)
    # imagefolder: images are resized (shorter side) and centre-cropped to image_size x image_size.
    image_size: int = Field(64, ge=1, le=4096, json_schema_extra=IDENTITY_UNLESS_DEFAULT)
    # The most an image folder decodes to, or a factory's Datasets are materialised into (GiB).
    max_gib: float = Field(8.0, gt=0, json_schema_extra=NOT_IDENTITY)

    @model_validator(mode="after")
    def _one_kind(self):
        _check_factory("dataset", DATASETS, self.name, self.factory)
        if self.args and self.factory is None:
            raise ValueError(f"`args` are for a dataset factory, not {self.name}")
        if self.image_size != 64 and self.name != "imagefolder":
            raise ValueError(f"`image_size` is for name: imagefolder, not {self.label}")
        if self.download and (self.factory is not None or self.name == "imagefolder"):
            raise ValueError(f"{self.label} has nothing to download: set download: false")
        return self

    @property
    def label(self) -> str:
        """What result.json and the tables call it: mnist, imagefolder, mydata:load."""
        return self.factory if self.factory is not None else self.name

    @field_validator("val_split")
    @classmethod
    def _fraction(cls, v):
        if not isinstance(v, str) and not 0 < v < 1:
            raise ValueError(f"expected 'test' or a fraction in (0, 1), got {v}")
        return v


class ModelConfig(_Strict):
    """A built-in model by `name`; torchvision's zoo (`name: torchvision`, `arch`, `args`); or the
    user's own: `factory: "package.module:function"`, called as function(num_classes,
    input_shape, **args) and returning an nn.Module (models.py)."""
    name: Optional[Literal[MODELS]] = None  # type: ignore[valid-type]
    hidden: list[int] = Field(default_factory=lambda: [256, 256])  # mlp only
    factory: Optional[str] = Field(None, json_schema_extra=IDENTITY_UNLESS_DEFAULT)
    arch: Optional[str] = Field(None, json_schema_extra=IDENTITY_UNLESS_DEFAULT)  # torchvision
    args: dict[str, Any] = Field(default_factory=dict, json_schema_extra=IDENTITY_UNLESS_DEFAULT)
    # Folder searched for the factory's module before the Python path: set by the loader to the
    # sweep file's folder. Where the code lives is not part of a run's id.
    factory_path: Optional[str] = Field(None, json_schema_extra=NOT_IDENTITY)

    @model_validator(mode="after")
    def _one_kind(self):
        _check_factory("model", MODELS, self.name, self.factory)
        if (self.name == "torchvision") != (self.arch is not None):
            raise ValueError("`arch` (e.g. resnet50) goes with name: torchvision, and only with it")
        if self.args and self.name not in (None, "torchvision"):
            raise ValueError(f"`args` are for a factory or a torchvision model, not {self.name}")
        return self

    @property
    def label(self) -> str:
        """What result.json and the tables call it: mlp, torchvision:resnet50, mynets:build."""
        if self.factory is not None:
            return self.factory
        return f"torchvision:{self.arch}" if self.name == "torchvision" else self.name

    @field_validator("hidden")
    @classmethod
    def _positive(cls, v):
        if any(h < 1 for h in v):
            raise ValueError(f"layer widths must be >= 1, got {v}")
        return v


class OptimizerConfig(_Strict):
    name: Literal[OPTIMIZERS]  # type: ignore[valid-type]
    lr: float = Field(0.1, gt=0, json_schema_extra=MEMBER)
    momentum: float = Field(0.0, ge=0, lt=1, json_schema_extra=MEMBER)
    dampening: float = Field(0.0, ge=0, le=1, json_schema_extra=MEMBER)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0, json_schema_extra=MEMBER)
    betas: tuple[float, float] = Field((0.9, 0.999), json_schema_extra=MEMBER)
    eps: float = Field(1e-8, ge=0, json_schema_extra=MEMBER)
    alpha: float = Field(0.99, ge=0, le=1, json_schema_extra=MEMBER)  # rmsprop smoothing
    centered: bool = False  # rmsprop
    lr_decay: float = Field(0.0, ge=0, json_schema_extra=MEMBER)  # adagrad
    beta2_decay: float = Field(-0.8, le=0, json_schema_extra=MEMBER)  # adafactor

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
    name: Literal[SCHEDULES] = Field("constant", json_schema_extra=NOT_MEMBER)  # type: ignore[valid-type]
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
    log_every: int = Field(1, ge=1, json_schema_extra=MEMBER)
    target_train_loss: Optional[float] = Field(None, gt=0, json_schema_extra=MEMBER)
    target_val_accuracy: Optional[float] = Field(None, gt=0, le=1, json_schema_extra=MEMBER)
    # Smoothing of the per-step train loss used to decide when target_train_loss is reached.
    target_smoothing: float = Field(0.9, ge=0, lt=1, json_schema_extra=MEMBER)
    # Stop this many steps after target_train_loss is first reached (document 003's protocol).
    stop_after_target: Optional[int] = Field(None, ge=0, json_schema_extra=MEMBER)
    # Diverged: a NaN/inf step loss (at once), or a smoothed loss (bias-corrected EMA with factor
    # divergence_smoothing) above divergence_factor x the first step's loss. Smoothed, so that
    # one confidently wrong example at a small batch size (a step loss of 25-36 at B = 1 while
    # the median is 0.03) is not a blow-up; a real one (lr 5) still stops within a few steps.
    divergence_factor: float = Field(10.0, gt=1, json_schema_extra=MEMBER)
    divergence_smoothing: float = Field(0.9, ge=0, lt=1, json_schema_extra={**MEMBER, **IDENTITY_UNLESS_DEFAULT})
    device: str = Field("auto", json_schema_extra=NOT_IDENTITY)
    seed: int = Field(0, json_schema_extra=MEMBER)
    # None (default): on for conv models trained by the sequential engine on the CPU, where it
    # was measured faster (training/units.py: effective_config); true/false force it.
    channels_last: Optional[bool] = Field(None, json_schema_extra=NOT_IDENTITY)
    # Resume point for long runs: 'epoch' writes <run_dir>/checkpoint.pt at each epoch end
    # (recommended for e.g. resnet18 on tiny-imagenet); it does not change the run's numbers.
    checkpoint: Literal["none", "epoch"] = Field("none", json_schema_extra=NOT_IDENTITY)
    # How runs are executed (training/units.py); none of these changes a run id.
    # auto: vectorized on CUDA, sequential on CPU (measured; README "Speed").
    engine: Literal[ENGINES] = Field(  # type: ignore[valid-type]
        "auto", json_schema_extra={**MEMBER, **NOT_IDENTITY})
    # vectorized: at most this many runs in one stack
    max_members: Optional[int] = Field(None, ge=1, json_schema_extra={**MEMBER, **NOT_IDENTITY})
    # vectorized: torch.compile the stacked forward/backward (for CUDA)
    compile: bool = Field(False, json_schema_extra=NOT_IDENTITY)
    # vectorized: copy per-step losses/accuracies/grad norms to the host once per this many steps
    # (and at every evaluation), not every step: no host sync inside the GPU's hot loop.
    sync_every: int = Field(16, ge=1, json_schema_extra={**MEMBER, **NOT_IDENTITY})
    # bf16: forward passes under torch.autocast(bfloat16); vectorized engine only. Part of the run id.
    precision: Literal["fp32", "bf16"] = Field("fp32", json_schema_extra=IDENTITY_UNLESS_DEFAULT)
    # Optional parts (train_options.py), off by default; each is part of the run id once set.
    # noise_scale: log B_simple (McCandlish et al. 2018) every N steps; both engines.
    noise_scale: Optional[NoiseScaleConfig] = Field(None, json_schema_extra=IDENTITY_UNLESS_DEFAULT)
    # batch_schedule: multiply B at given epochs/steps (Smith et al. 2017); sequential engine.
    batch_schedule: Optional[BatchScheduleConfig] = Field(None, json_schema_extra=IDENTITY_UNLESS_DEFAULT)
    # stop_if_stalled: stop a run whose smoothed loss has not fallen (status `stalled`).
    stop_if_stalled: Optional[StallConfig] = Field(None, json_schema_extra={**MEMBER, **IDENTITY_UNLESS_DEFAULT})

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

    @model_validator(mode="after")
    def _noise_scale_split(self):
        """train.noise_scale splits a batch into a sub-batch and the rest: both must be non-empty."""
        ns, B = self.noise_scale, self.batch_size
        if ns is not None and B < 2:
            raise ValueError(f"noise_scale needs batch_size >= 2 (noise_scale.small_batch examples and the rest), got {B}")
        if ns is not None and ns.small_batch is not None and ns.small_batch >= B:
            raise ValueError(f"noise_scale.small_batch must be below batch_size ({B}), got {ns.small_batch}")
        return self


class RunConfig(_Strict):
    """Everything that defines one training run (the resolved config saved next to its results)."""
    name: str = Field(json_schema_extra={**MEMBER, **NOT_IDENTITY})
    dataset: DatasetConfig
    model: ModelConfig
    optimizer: OptimizerConfig
    # Every schedule parameter is per member (their LRs are computed on the host), not its name.
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, json_schema_extra=MEMBER)
    lr_scaling: LRScalingConfig = Field(default_factory=LRScalingConfig, json_schema_extra=MEMBER)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if not v or "/" in v or "\0" in v or v.startswith("."):
            raise ValueError(f"must be a non-empty folder name without '/' or a NUL byte, got {quote(v)}")
        if len(v.encode()) > MAX_NAME_BYTES:
            raise ValueError(f"a folder name of at most {MAX_NAME_BYTES} bytes, got {len(v.encode())}: {quote(v)}")
        return v

    @property
    def effective_lr(self) -> float:
        """The nominal LR times the lr_scaling factor for this run's batch size."""
        return self.optimizer.lr * lr_scale(self.lr_scaling, self.train.batch_size)


def lr_scale(scaling: LRScalingConfig, batch_size: int) -> float:
    k = batch_size / scaling.base_batch_size
    return {"none": 1.0, "linear": k, "sqrt": math.sqrt(k)}[scaling.rule]
