"""Suggested LRs read off a range-test curve, each with its reason, NaN-safe (only finite
points inside the window are used)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from lrsweep.rangetest.ramp import MIN_POINTS, SKIP_END, SUGGESTIONS, Curve, _window


@dataclass
class Suggestion:
    name: str
    lr: Optional[float]  # None when the curve does not allow it; `reason` says why
    step: Optional[int]
    reason: str


def valley_index(loss: np.ndarray) -> tuple[int, int, int]:
    """fastai's `valley`: the longest decreasing run (not necessarily contiguous) ending at each point;
    take the longest, from start to end, and return the point halfway along it, with start and end."""
    lds = np.ones(len(loss), dtype=int)
    for i in range(1, len(loss)):
        higher = loss[:i] > loss[i]
        if higher.any():
            lds[i] = lds[:i][higher].max() + 1
    end = int(np.argmax(lds))
    start = end - int(lds[end])
    sections = (end - start) / 3
    return max(0, start + int(sections) + int(sections / 2)), max(0, start), end


def suggest(curve: Curve) -> dict[str, Suggestion]:
    """Every suggestion in SUGGESTIONS, computed on the finite smoothed losses inside the window."""
    lo, hi = _window(curve.planned, len(curve.lr))
    lr, s = np.array(curve.lr), np.array(curve.smoothed)
    idx = np.arange(len(lr))[lo:max(lo, hi)]
    idx = idx[np.isfinite(s[idx])]
    if len(idx) < MIN_POINTS:
        why = f"it stopped after {len(lr)} steps: {curve.stopped}" if curve.stopped else f"{len(lr)} steps"
        reason = (f"only {len(idx)} points to read (need {MIN_POINTS} after skipping the first 10% and last "
                  f"{SKIP_END}); {why}: lower --max-lr or raise --steps")
        return {name: Suggestion(name, None, None, reason) for name in SUGGESTIONS}
    lr_w, s_w = lr[idx], s[idx]
    step = lambda j: int(idx[j]) + 1
    out: dict[str, Suggestion] = {}

    v, a, b = valley_index(s_w)
    out["valley"] = Suggestion("valley", float(lr_w[v]), step(v),
                               f"fastai's valley: halfway along the longest descent of the smoothed loss, "
                               f"LR {lr_w[a]:.3g} to {lr_w[b]:.3g} (steps {step(a)}-{step(b)})") if b > a else \
        Suggestion("valley", None, None, "the smoothed loss never decreases: lower --min-lr")

    m = int(np.argmin(s_w))
    slope = np.gradient(s_w, np.log(lr_w))[: m + 1]  # the descent only: past the minimum is noise
    j = int(np.argmin(slope))
    out["steepest"] = Suggestion("steepest", float(lr_w[j]), step(j),
                                 f"steepest fall of the smoothed loss before its minimum: {slope[j]:.3g} per unit "
                                 f"ln(LR) at step {step(j)}") if slope[j] < 0 else \
        Suggestion("steepest", None, None, "the smoothed loss never decreases: lower --min-lr")

    out["minimum/10"] = Suggestion("minimum/10", float(lr_w[m]) / 10, step(m),
                                   f"a tenth of LR {lr_w[m]:.3g}, where the smoothed loss is lowest ({s_w[m]:.4g}, step {step(m)})")

    acc = np.array(curve.val_acc)[idx]
    if np.isfinite(acc).any():
        u = int(np.nanargmax(acc))
        where = f"the best validation accuracy ({acc[u]:.4f}, step {step(u)})"
    else:
        u, where = m, f"the lowest smoothed loss ({s_w[m]:.4g}, step {step(m)}; --val uses accuracy)"
    up = float(lr_w[u])
    out["clr-upper"] = Suggestion("clr-upper", up, step(u), f"CLR upper bound (document 000): LR at {where}")
    for k in (3, 4):
        out[f"clr-lower/{k}"] = Suggestion(f"clr-lower/{k}", up / k, step(u), f"CLR lower bound: upper {up:.3g} / {k}")
    return out
