"""Suggested LRs read off a range-test curve, each with its reason, NaN-safe (only finite
points inside the window are used), and a warning where a suggestion depends on `--min-lr`."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from lrsweep.rangetest.ramp import MIN_POINTS, SKIP_END, SUGGESTIONS, Curve, _window


# The --min-lr check re-reads the curve as if the ramp had started MIN_LR_SHIFT times higher,
# but at least MIN_LR_GAP (1.5 decades) below the suggestion, so the start stays below its descent.
MIN_LR_SHIFT = 1000.0
MIN_LR_GAP = 30.0
# A suggestion that moves by more than this factor depends on --min-lr: half a grid step of the
# sweep --emit-sweep writes (7 LRs over 2 decades, a factor 2.15 apart) is a factor 1.47.
MIN_LR_MOVE = 1.5


@dataclass
class Suggestion:
    name: str
    lr: Optional[float]  # None when the curve does not allow it; `reason` says why
    step: Optional[int]
    reason: str
    warning: str = ""  # set when the suggestion depends on where the ramp starts (min_lr_check)


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


def suggest(curve: Curve, check_min_lr: bool = True) -> dict[str, Suggestion]:
    """Every suggestion in SUGGESTIONS, computed on the finite smoothed losses inside the window;
    with `check_min_lr`, each carries a warning when it depends on the ramp's start (min_lr_check)."""
    out = _read(curve)
    return min_lr_check(curve, out) if check_min_lr else out


def cut_curve(curve: Curve, lr_from: float) -> Curve:
    """The curve from the first LR >= lr_from on, as a ramp that had started there with the same
    LRs per step (its planned steps shrink by the steps cut). The smoothed losses are the
    recorded ones, nothing is trained again: what the cut changes is where the suggestions'
    window begins and how far back a descent can reach, the part of the dependence on the
    start that a curve can show by itself (a real rerun also gives each LR more or fewer steps)."""
    k = int(np.searchsorted(np.asarray(curve.lr, float), lr_from))
    return replace(curve, planned=max(curve.planned - k, 0),
                   **{f: list(getattr(curve, f))[k:] for f in ("lr", "loss", "smoothed", "val_loss", "val_acc")})


def _moves(curve: Curve, found: dict[str, Suggestion]) -> dict[str, tuple[float, float, float]]:
    """Per suggestion that can be re-read: (the later start, the LR read from it, the factor it moved)."""
    start, reread, out = float(curve.lr[0]), {}, {}
    for name, s in found.items():
        if s.lr is None:
            continue
        cut = min(MIN_LR_SHIFT * start, s.lr / MIN_LR_GAP)
        if cut <= 2 * start:  # too little curve below the suggestion to start anywhere else
            continue
        if cut not in reread:
            reread[cut] = _read(cut_curve(curve, cut))
        moved = reread[cut][name].lr
        if moved is not None:
            out[name] = (cut, moved, max(moved / s.lr, s.lr / moved))
    return out


def min_lr_check(curve: Curve, found: dict[str, Suggestion]) -> dict[str, Suggestion]:
    """`found` with a warning on each suggestion that moves by more than MIN_LR_MOVE when the
    same curve is read from a later start: from LR min(MIN_LR_SHIFT x its first LR, the
    suggestion / MIN_LR_GAP). fastai's valley is the usual one: it lies halfway along the
    longest descent, and on a curve that creeps down for decades before it falls (the EMA's
    first steps sit high, or the loss drifts) that descent starts wherever the ramp starts, so
    its middle follows --min-lr (quickstart, B = 16: 0.026 with --min-lr 1e-7, 0.048 with 1e-4).
    On a curve flat until it falls, it holds. A suggestion too close to the start to re-read gets none."""
    if not curve.lr:
        return found
    out = dict(found)
    for name, (cut, moved, factor) in _moves(curve, found).items():
        if factor <= MIN_LR_MOVE:
            continue
        s = found[name]
        out[name] = replace(s, warning=(
            f"'{name}' {s.lr:.3g} depends on --min-lr: read from LR {cut:.2g} on (as a ramp starting there), "
            f"the same curve gives {moved:.3g}, {factor:.2g}x {'higher' if moved > s.lr else 'lower'}; rerun with "
            f"--min-lr nearer where the loss starts to fall, or use another suggestion"))
    return out


def _read(curve: Curve) -> dict[str, Suggestion]:
    """The suggestions of one curve, without the --min-lr check."""
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
    out["clr-upper"] = Suggestion("clr-upper", up, step(u), f"CLR upper bound (Smith 2017): LR at {where}")
    for k in (3, 4):
        out[f"clr-lower/{k}"] = Suggestion(f"clr-lower/{k}", up / k, step(u), f"CLR lower bound: upper {up:.3g} / {k}")
    return out
