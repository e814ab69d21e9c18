"""What every engine sets up the same way: the device, the step budget, the seeded model."""
from __future__ import annotations

import bisect
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
    """The run's length in steps. An epoch is steps_per_epoch x B_0 examples: one pass at the
    initial batch size B_0 (drop_last), also when train.batch_schedule grows B later, so that
    epochs count examples seen and a growing batch takes fewer steps per epoch."""
    steps_per_epoch: int  # at the initial batch size
    total_steps: int  # the steps the run takes (with a batch schedule: computed from it up front)
    epoch_size: int  # examples drawn per epoch
    # (first update, examples seen before it, batch size) from update 0 on; one entry when B is
    # constant. Only phases the run reaches are listed. () in budgets built by hand (tests).
    phases: tuple[tuple[int, int, int], ...] = ()

    def eval_every(self, cfg: RunConfig) -> int:
        """Steps between evaluations at a constant B (the tracker counts `epoch` in examples)."""
        return self.steps_per_epoch if cfg.train.eval_every == "epoch" else cfg.train.eval_every

    def batch_size_at(self, step: int) -> int:
        """The batch size of update `step` (0-based)."""
        i = bisect.bisect_right(self.phases, step, key=lambda p: p[0]) - 1
        return self.phases[i][2]

    @property
    def total_examples(self) -> int:
        """The examples the run sees in its total_steps."""
        start, seen, B = self.phases[-1]
        return seen + (self.total_steps - start) * B


def budget(cfg: RunConfig, n_train: int) -> Budget:
    t = cfg.train
    epoch_size = min(cfg.dataset.epoch_subset or n_train, n_train)
    if t.batch_size > epoch_size:
        raise ConfigError("train.batch_size", f"{t.batch_size} exceeds the {epoch_size} training examples per epoch")
    spe = epoch_size // t.batch_size  # drop_last: every step sees exactly B examples
    if t.batch_schedule is not None:
        return _scheduled(cfg, spe, epoch_size)
    if t.steps is not None:
        total = t.steps
    elif t.examples is not None:
        total = math.ceil(t.examples / t.batch_size)
    else:
        total = max(1, round(t.epochs * spe))
    return Budget(spe, total, epoch_size, ((0, 0, t.batch_size),))


def scheduled_batch_size(cfg: RunConfig, k: int) -> int:
    """B after the first k milestones of train.batch_schedule: B_0 x factor^k rounded to the
    nearest integer (from B_0 each time, so rounding does not compound), capped at max_batch_size."""
    bs, B0 = cfg.train.batch_schedule, cfg.train.batch_size
    return min(math.floor(B0 * bs.factor ** k + 0.5), bs.max_batch_size or math.inf)


def _scheduled(cfg: RunConfig, spe: int, epoch_size: int) -> Budget:
    """train.batch_schedule's phases. The budget stays in examples: `epochs` means the examples
    an unscheduled run at B_0 would see (round(epochs x steps_per_epoch) x B_0), `examples` as
    given; the run takes full batches until it has seen them (the last one may overshoot by
    less than a batch, as an unscheduled `examples` budget does). `steps` stays steps. A milestone
    in epochs is passed once the examples seen reach milestone x steps_per_epoch x B_0; one in
    steps after that many updates. Update t uses the batch size after every milestone passed
    before it (several passed in one step apply together)."""
    t, bs = cfg.train, cfg.train.batch_schedule
    B0 = t.batch_size
    if bs.max_batch_size is not None and bs.max_batch_size < B0:
        raise ConfigError("train.batch_schedule.max_batch_size",
                          f"{bs.max_batch_size} is below train.batch_size {B0}; the schedule only grows B")
    epoch_examples = spe * B0
    if bs.epochs is not None:  # the examples seen at each milestone (round(): float noise, e.g. 0.1 x 60000)
        marks = [("examples", math.ceil(round(m * epoch_examples, 6)), f"epoch {m:g}") for m in bs.epochs]
    else:
        marks = [("steps", m, f"step {m}") for m in bs.steps]
    max_steps = t.steps
    max_examples = None if t.steps is not None else (
        t.examples if t.examples is not None else max(1, round(t.epochs * spe)) * B0)

    def steps_to(kind: str, at: int, step: int, seen: int, B: int) -> int:
        """Updates at B from (step, seen) until that mark is passed (0 if it already is)."""
        return max(0, at - step) if kind == "steps" else max(0, -(-(at - seen) // B))

    def steps_left(step: int, seen: int, B: int) -> int:
        return max_steps - step if max_steps is not None else -(-(max_examples - seen) // B)

    phases = [(0, 0, B0)]
    step = seen = 0
    for k, (kind, at, label) in enumerate(marks, start=1):
        n = steps_to(kind, at, step, seen, phases[-1][2])
        left = steps_left(step, seen, phases[-1][2])
        if n >= left:  # the budget ends before this milestone
            break
        step, seen = step + n, seen + n * phases[-1][2]
        B = scheduled_batch_size(cfg, k)
        if B > epoch_size:
            raise ConfigError("train.batch_schedule",
                              f"the batch size after {label} would be {B}, more than the {epoch_size} training "
                              f"examples per epoch; set max_batch_size to at most {epoch_size}")
        if B == phases[-1][2]:
            continue  # capped, or rounded to the same size: no new phase
        if phases[-1][0] == step:  # several milestones passed in one step: they apply together
            phases[-1] = (step, seen, B)
        else:
            phases.append((step, seen, B))
    start, seen0, B = phases[-1]
    total = start + steps_left(start, seen0, B)
    return Budget(spe, max(total, 1), epoch_size, tuple(phases))


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
