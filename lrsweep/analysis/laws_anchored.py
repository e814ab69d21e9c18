"""Document 003's own estimate of the LR laws (its section 3.2): B_noise is not fitted to the
optima but taken from the S-E fit at a train-loss target (critical.py: 1/S = -B_noise/E + 1/S_min),
and eps_max is then the mean the document writes

    Adam:  E[eps_max] = E[ eps_opt/2 * (sqrt(B_noise/B) + sqrt(B/B_noise)) ]   (law surge_se)
    SGD:   E[eps_max] = E[ eps_opt * (1 + B_noise/B)^alpha ],  alpha = 1, 0.5    (linear_se, sqrt_se)

over the batch sizes with a bracketed optimum. Where the optimal LR peaks is then a prediction
from the loss curves that the measured optima test: compare the residuals of these rows with
those of the same law fitted freely (fits.py). They spend one parameter (eps_max) on the optima.

The interval of eps_max draws, per resample, the optima with replacement and a B_noise from the
S-E fit's own bootstrap replicates (critical.se_replicates), so it carries both uncertainties;
B_noise's interval is the S-E fit's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lrsweep.analysis import bootstrap

# anchored law -> (the law whose formula it evaluates, its alpha; None: the surge form)
ANCHORED = {"surge_se": ("surge", None), "linear_se": ("linear", 1.0), "sqrt_se": ("sqrt", 0.5)}


@dataclass
class Anchor:
    """The S-E fit at one target: B_noise with its interval and bootstrap replicates."""
    target: float
    B_noise: float
    lo: float = math.nan
    hi: float = math.nan
    replicates: np.ndarray = field(default_factory=lambda: np.array([]))

    @property
    def usable(self) -> bool:
        return bool(np.isfinite(self.B_noise) and self.B_noise > 0)


def factor(law: str, B, B_noise) -> np.ndarray:
    """eps_max / eps(B) of the anchored law's form: what each optimum is multiplied by."""
    B, bn = np.asarray(B, float), np.asarray(B_noise, float)
    alpha = ANCHORED[law][1]
    return 0.5 * (np.sqrt(bn / B) + np.sqrt(B / bn)) if alpha is None else (1 + bn / B) ** alpha


def eps_max(law: str, B: np.ndarray, lr: np.ndarray, B_noise: float) -> float:
    """The document's E[eps_max]: the plain mean over the optima (as it writes it, not a mean in
    log space)."""
    return float(np.mean(lr * factor(law, B, B_noise)))


def eps_max_interval(law: str, B: np.ndarray, lr: np.ndarray, anchor: Anchor) -> list[float]:
    """eps_max's interval over the optima resampled and B_noise drawn from the S-E replicates
    (the point estimate's B_noise alone when there are none)."""
    rng = bootstrap.generator()
    n = len(B)
    idx = rng.integers(0, n, size=(bootstrap.RESAMPLES, n))
    reps = anchor.replicates[np.isfinite(anchor.replicates) & (anchor.replicates > 0)]
    bn = rng.choice(reps, size=bootstrap.RESAMPLES) if len(reps) else np.full(bootstrap.RESAMPLES, anchor.B_noise)
    values = (lr[idx] * factor(law, B[idx], bn[:, None])).mean(1)
    return list(bootstrap.interval(values, log=True))


def rows(B: np.ndarray, lr: np.ndarray, anchor: Anchor) -> list[tuple[str, dict, dict]]:
    """(law, params, ci) of each anchored law for the optima (B, lr), sorted by B."""
    out = []
    for law in ANCHORED:
        params = {"eps_max": eps_max(law, B, lr, anchor.B_noise), "B_noise": float(anchor.B_noise)}
        ci = {"eps_max": eps_max_interval(law, B, lr, anchor)}
        if np.isfinite(anchor.lo) and np.isfinite(anchor.hi):
            ci["B_noise"] = [float(anchor.lo), float(anchor.hi)]
        out.append((law, params, ci))
    return out
