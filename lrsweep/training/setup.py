"""What every engine sets up the same way: the device, the step budget, the seeded model."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lrsweep.config import RunConfig
from lrsweep.errors import ConfigError
from lrsweep.models import BUILTIN, build_model, check_forward


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("train.device", f"{name!r} asked for but CUDA is not available; use cpu or auto")
    return torch.device(name)


@dataclass(frozen=True)
class Budget:
    steps_per_epoch: int
    total_steps: int
    epoch_size: int  # examples drawn per epoch

    def eval_every(self, cfg: RunConfig) -> int:
        return self.steps_per_epoch if cfg.train.eval_every == "epoch" else cfg.train.eval_every


def budget(cfg: RunConfig, n_train: int) -> Budget:
    t = cfg.train
    epoch_size = min(cfg.dataset.epoch_subset or n_train, n_train)
    if t.batch_size > epoch_size:
        raise ConfigError("train.batch_size", f"{t.batch_size} exceeds the {epoch_size} training examples per epoch")
    spe = epoch_size // t.batch_size  # drop_last: every step sees exactly B examples
    if t.steps is not None:
        total = t.steps
    elif t.examples is not None:
        total = math.ceil(t.examples / t.batch_size)
    else:
        total = max(1, round(t.epochs * spe))
    return Budget(spe, total, epoch_size)


def uses_channels_last(cfg: RunConfig, input_shape) -> bool:
    return bool(cfg.train.channels_last) and len(input_shape) == 3


def init_model(cfg: RunConfig, data, device: torch.device) -> torch.nn.Module:
    """The run's model, initialised from its seed (torch.manual_seed(seed), then build): the
    same weights in every engine and in the range test."""
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, data.input_shape, data.num_classes).to(device)
    if cfg.model.name not in BUILTIN:  # the user's: check its shapes (after the seeded init, so no draw moves)
        check_forward(model, cfg.model, data.input_shape, data.num_classes)
    if uses_channels_last(cfg, data.input_shape):
        model = model.to(memory_format=torch.channels_last)
    model.train()
    return model
