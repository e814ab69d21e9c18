"""Optional parts of a training run, each off by default (and then left out of the run id):
- `train.noise_scale`: measure the gradient noise scale B_simple while training;
- `train.batch_schedule`: grow the batch size at given epochs or steps;
- `train.stop_if_stalled`: stop a run whose loss has not fallen after a while.
"""
from __future__ import annotations

from typing import Optional

from pydantic import Field, model_validator

from lrsweep.config.base import Strict


def _exactly_one(section, names: tuple[str, ...], what: str) -> str:
    """The one of `names` that is set (ValueError naming them when none or several are)."""
    given = [k for k in names if getattr(section, k) is not None]
    if len(given) != 1:
        raise ValueError(f"give {what} as one of ({', '.join(names)})" + (f", got {', '.join(given)}" if given else ""))
    return given[0]


class NoiseScaleConfig(Strict):
    """McCandlish et al. 2018, appendix A: every `every` steps (the first at initialisation), the
    gradient of the step's first `small_batch` examples and the step's own gradient give unbiased
    estimates of |G|^2 and tr(Sigma) (training/noise_scale.py derives them); B_simple =
    tr(Sigma) / |G|^2, each smoothed by an EMA over measurements (`ema`) first, as the paper
    does (the ratio of two noisy estimates is biased; the ratio of their averages much less).
    The smoothing spans about every / (1 - ema) steps."""
    every: int = Field(10, ge=1)
    small_batch: Optional[int] = Field(None, ge=1)  # default: half the batch (B >= 2 needed)
    ema: float = Field(0.9, ge=0, lt=1)


class BatchScheduleConfig(Strict):
    """Smith et al. 2017 ("Don't decay the learning rate, increase the batch size"): multiply the
    batch size by `factor` at each of `epochs` (or `steps`), up to `max_batch_size`. The budget
    stays in examples seen, so a run with a growing batch takes fewer steps."""
    factor: float = Field(gt=1)
    epochs: Optional[list[float]] = None
    steps: Optional[list[int]] = None
    max_batch_size: Optional[int] = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_of(self):
        given = _exactly_one(self, ("epochs", "steps"), "the milestones")
        at = getattr(self, given)
        if not at or any(b <= a for a, b in zip(at, at[1:])) or at[0] <= 0:
            raise ValueError(f"{given}: expected increasing values > 0, got {at}")
        return self


class StallConfig(Strict):
    """Stop a hopeless run: from step `steps` (or epoch `epochs`) on, a run whose smoothed train
    loss is not at least `min_drop` (a fraction) below its first step's loss is stopped with
    status `stalled`, scored like a diverged run."""
    steps: Optional[int] = Field(None, ge=1)
    epochs: Optional[float] = Field(None, gt=0)
    min_drop: float = Field(0.1, gt=0, lt=1)

    @model_validator(mode="after")
    def _one_of(self):
        _exactly_one(self, ("steps", "epochs"), "when to judge")
        return self
