"""The ramp: LRs from min to max (hitting both exactly), and the loop that records the loss at
each, smoothed by an EMA with bias correction, s_t = m_t / (1 - beta^t) over the finite
losses; it stops at the first non-finite loss or when s_t > diverge x the best s so far."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import pandas as pd

from lrsweep.errors import ParameterError

MODES = ("exp", "linear")
SUGGESTIONS = ("valley", "steepest", "minimum/10", "clr-upper", "clr-lower/3", "clr-lower/4")
SKIP_END = 5  # last points dropped before suggesting (fastai, pytorch-lr-finder): the blow-up
MIN_POINTS = 10  # points left after skipping both ends that a suggestion needs


def _window(planned: int, n: int) -> tuple[int, int]:
    """Indices [lo, hi) used for suggestions: skip the first 10% of the planned steps and the last SKIP_END."""
    return planned // 10, n - SKIP_END


def _points(steps: int) -> int:
    lo, hi = _window(steps, steps)
    return hi - lo


MIN_STEPS = next(s for s in range(1, 1000) if _points(s) >= MIN_POINTS)  # 16


@dataclass
class Curve:
    """One range test: per-step records, and why it stopped early (None: it reached max_lr)."""
    batch_size: int
    planned: int
    lr: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    stopped: Optional[str] = None

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"batch_size": self.batch_size, "step": np.arange(1, len(self.lr) + 1),
                             "lr": self.lr, "loss": self.loss, "smoothed_loss": self.smoothed,
                             "val_loss": self.val_loss, "val_acc": self.val_acc})


# --------------------------------------------------------------------------- checks and the ramp


def check_settings(min_lr: float, max_lr: float, mode: str = "exp", smooth: float = 0.98,
                   diverge: float = 4.0, suggest: str = "valley") -> None:
    if mode not in MODES:
        raise ParameterError("mode", f"expected one of ({', '.join(MODES)}), got {mode!r}")
    if suggest not in SUGGESTIONS:
        raise ParameterError("suggest", f"expected one of ({', '.join(SUGGESTIONS)}), got {suggest!r}")
    for name, v in (("min_lr", min_lr), ("max_lr", max_lr)):
        if not (math.isfinite(v) and v > 0):
            raise ParameterError(name, f"must be a positive number, got {v:g}")
    if min_lr >= max_lr:
        raise ParameterError("min_lr", f"must be below `max_lr`, got `min_lr` {min_lr:g} >= `max_lr` {max_lr:g}")
    if not 0 <= smooth < 1:
        raise ParameterError("smooth", f"expected a value in [0, 1), got {smooth:g}")
    if not diverge > 1:
        raise ParameterError("diverge", f"must be > 1 (a multiple of the best smoothed loss), got {diverge:g}")


def check_steps(steps: int) -> None:
    if steps < MIN_STEPS:
        raise ParameterError("steps", f"{steps} is too few to suggest anything; at least {MIN_STEPS} are needed "
                        f"(the first 10% and the last {SKIP_END} are skipped, then {MIN_POINTS} points remain)")


def lr_ramp(min_lr: float, max_lr: float, steps: int, mode: str = "exp") -> np.ndarray:
    """`steps` LRs from min_lr to max_lr inclusive, geometric (exp) or arithmetic (linear) spacing."""
    check_settings(min_lr, max_lr, mode)
    check_steps(steps)
    lrs = (np.geomspace if mode == "exp" else np.linspace)(min_lr, max_lr, steps)
    lrs[0], lrs[-1] = min_lr, max_lr
    return lrs


def ramp(step_fn: Callable[[float], float], lrs, *, smooth: float = 0.98, diverge: float = 4.0,
         val_fn: Optional[Callable[[], tuple[float, float]]] = None, batch_size: int = 0,
         on_step: Optional[Callable[..., None]] = None) -> Curve:
    """Run `step_fn(lr)` for each LR and record the curve. `val_fn() -> (val_loss, val_acc)` after each step."""
    curve = Curve(batch_size, len(lrs))
    avg, n, best, nan = 0.0, 0, math.inf, math.nan
    for i, lr in enumerate(map(float, lrs), start=1):
        loss = float(step_fn(lr))
        finite = math.isfinite(loss)
        if finite:
            n += 1
            avg = smooth * avg + (1 - smooth) * loss
        s = avg / (1 - smooth ** n) if finite else nan
        vl, va = val_fn() if val_fn is not None and finite else (nan, nan)
        for column, v in ((curve.lr, lr), (curve.loss, loss), (curve.smoothed, s), (curve.val_loss, vl), (curve.val_acc, va)):
            column.append(float(v))
        if on_step is not None:
            on_step(step=i, total=len(lrs), loss=loss, lr=lr)
        if not finite:
            curve.stopped = f"loss {loss} at step {i} (lr {lr:.3g})"
            break
        if s > diverge * best:
            curve.stopped = f"smoothed loss {s:.4g} > {diverge:g} x best {best:.4g} at step {i} (lr {lr:.3g})"
            break
        best = min(best, s)
    return curve
