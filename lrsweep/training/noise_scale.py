"""The gradient noise scale B_simple = tr(Sigma) / |G|^2, measured while training
(`train.noise_scale`; McCandlish et al. 2018, appendix A; docs/science.md section 2).

G is the true gradient (the mean over the training set) and Sigma the covariance of one
example's gradient, at the current parameters. A random batch of B examples has a gradient G_B
with E[G_B] = G and Cov(G_B) = Sigma / B, so E|G_B|^2 = |G|^2 + tr(Sigma)/B: a squared gradient
norm overstates |G|^2 by the very noise being measured (by 1 + B_simple/B), and both quantities
have to be estimated without that bias.

What is measured. At every `every`-th step (the first at initialisation), before the update,
one extra forward/backward on the step's first b = small_batch examples (default B/2) gives
G_s; the step's own gradient G_B, the one the optimizer uses, is the other. The rest of the
batch, r = B - b examples, then has the gradient G_r = (B G_B - b G_s) / r with no further pass
(the batch's mean loss is the weighted mean of its two parts'). G_s and G_r are means over
disjoint examples: independent, both with mean G, covariances Sigma/b and Sigma/r. Hence, each
without bias:

    |G|^2     ~  G_s . G_r                                  E[G_s . G_r] = |G|^2
    tr(Sigma) ~  |G_s - G_r|^2 / (1/b + 1/r)                E|G_s - G_r|^2 = tr(Sigma) (1/b + 1/r)

Why this form rather than the paper's two-norm one, |G|^2 ~ (B|G_B|^2 - b|G_s|^2)/(B - b) and
tr(Sigma) ~ (|G_s|^2 - |G_B|^2)/(1/b - 1/B): both are unbiased and cost the same one extra pass
(they are two quadratic forms in the same G_s, G_r), but the paper's adds zero-mean terms in
|G_s|^2 and |G_r|^2 that carry most of its noise. With Gaussian noise and G = 0, at b = B/2 the
variance of the |G|^2 estimate is tr(Sigma^2)/(b r) against the paper's 4 tr(Sigma^2)/(r B), half,
and the tr(Sigma) estimate's 2 tr(Sigma^2) against 6 tr(Sigma^2), a third (the split |G|^2
estimate is the better one for any b > B/4; tests/test_noise_scale.py measures both forms).
Why a sub-batch of the same step: per-example gradients would be exact but cost B backward
passes (or B x the parameters in memory under vmap), and per-worker gradients need several
workers per run, which lrsweep does not have. The extra pass costs about (b/B)/every of a run's
compute: 5% at the default (every 10 steps, b = B/2); 6-7% measured on the MNIST MLP 256-256.
From G_s and G_B the estimates take three dot products per parameter tensor (`estimates`).

Smoothing. One measurement is noisy (G_s . G_r has a variance of order tr(Sigma^2)/(b r), large
once B_simple >> B) and the ratio of two noisy numbers is biased, so, as in the paper, each
estimate is averaged with a bias-corrected EMA (factor `ema`, over measurements) and B_simple is
the ratio of the averages: NaN before the first measurement and while the |G|^2 average is <= 0.
The average spans about every / (1 - ema) steps (100 at the default), so it lags where B_simple
changes fast: early in training, where |G|^2 falls, it reads low (the MNIST MLP at step 300:
515 against an exact 1935; README).

The measurement changes nothing the run does: the optimizer's gradient is the step's own (the
sub-batch gradient comes from torch.autograd.grad, never into .grad), the extra forward runs on
copies of the buffers (BatchNorm's running statistics still see each step once) and under a
forked random state (later steps' dropout masks are unchanged).

Caveats: batches are drawn without replacement from a finite training set of N examples
(batches.py), so the two parts are slightly anti-correlated and the estimates target tr(S) (the
covariance with 1/(N - 1)) and |G|^2 - tr(S)/N: negligible when N >> B_simple. With BatchNorm a
part's gradient is not a mean of per-example gradients (each part is normalised by its own
statistics): B_simple is then only indicative.
"""
from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.linalg import vecdot

from lrsweep.config.train_options import NoiseScaleConfig

# metrics.csv columns, when train.noise_scale is set: the smoothed estimates and their ratio.
NOISE_COLUMNS = ("noise_g2", "noise_trace", "b_simple")


def small_batch_size(ns: NoiseScaleConfig, batch_size: int) -> int:
    """b: `small_batch`, else half the batch (the schema keeps it below train.batch_size)."""
    return ns.small_batch or batch_size // 2


def measured(ns: NoiseScaleConfig, steps_done: int) -> bool:
    """Whether the step after `steps_done` steps is measured: the first, then every `every`-th."""
    return steps_done % ns.every == 0


def estimates(small: list[Optional[torch.Tensor]], full: list[Optional[torch.Tensor]], b: int, B: int,
              stacked: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(|G|^2, tr(Sigma)) estimates, float64, from the gradient of the first b examples of a
    batch of B (`small`, one tensor per parameter) and of the whole batch (`full`). `stacked`:
    the tensors are [members, ...] and the estimates [members]. A None gradient is zero (a
    parameter the loss does not reach)."""
    if not 0 < b < B:
        raise ValueError(f"expected 0 < small batch < batch, got {b} of {B}")
    r = B - b
    start = 1 if stacked else 0
    rows = []
    for gs, gb in zip(small, full):
        if gs is None and gb is None:
            continue
        gs = torch.zeros_like(gb) if gs is None else gs
        gb = torch.zeros_like(gs) if gb is None else gb
        gs, gb = gs.flatten(start), gb.flatten(start)
        e = gs - gb
        rows.append(torch.stack([vecdot(gs, gb), vecdot(gs, gs), vecdot(e, e)]))
    if not rows:
        raise ValueError("no gradients to measure")
    # With G_r = (B G_B - b G_s)/r: G_s.G_r = (B G_s.G_B - b|G_s|^2)/r and G_s - G_r = (B/r)(G_s - G_B).
    # Three float32 dot products per tensor (one pass each; a float64 copy of every gradient measured
    # 20x slower), summed in float64: their rounding (~1e-4 of |G|^2 even where |G_s|^2 is 1000x
    # larger) is far below the measurement's own noise.
    sb, ss, ee = torch.stack(rows).double().sum(0)
    return (B * sb - b * ss) / r, ee * (B * b / r)


@contextlib.contextmanager
def untouched_rng(device: torch.device):
    """Random numbers drawn inside (dropout) do not move the run's generators."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [],
                               device_type=device.type if device.type == "cuda" else None):
        yield


def module_gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                    autocast=None) -> list[Optional[torch.Tensor]]:
    """The gradient of the mean cross-entropy on (x, y) with respect to the model's trainable
    parameters (in order), leaving the model as it was: .grad untouched, buffers (BatchNorm's
    running statistics) updated on copies, the random state restored. `autocast`: a context
    for the forward (the engine's precision)."""
    params = [p for p in model.parameters() if p.requires_grad]
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    with untouched_rng(x.device), autocast or contextlib.nullcontext():
        loss = F.cross_entropy(functional_call(model, buffers, (x,)), y)
    return list(torch.autograd.grad(loss, params, allow_unused=True))


def measure(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, ns: NoiseScaleConfig) -> tuple[float, float]:
    """The sequential engine's measurement, after the step's backward and before its update:
    (|G|^2, tr(Sigma)) estimates from the step's batch (x, y) and the gradients in .grad."""
    B = len(y)
    b = small_batch_size(ns, B)
    full = [p.grad for p in model.parameters() if p.requires_grad]
    small = module_gradient(model, x[:b], y[:b])
    with torch.no_grad():
        g2, trace = estimates(small, full, b, B)
        g2, trace = torch.stack([g2, trace]).tolist()  # one copy: the step syncs for its loss anyway
    return g2, trace


class NoiseAverages:
    """The run's smoothed estimates (one per tracker): bias-corrected EMAs of |G|^2 and tr(Sigma)
    over the measurements, the columns of metrics.csv and result.json's `noise_scale`."""

    def __init__(self, ns: NoiseScaleConfig, batch_size: int):
        self.ns, self.small_batch = ns, small_batch_size(ns, batch_size)
        self.g2 = self.trace = 0.0  # the EMAs, before bias correction
        self.n = 0  # measurements averaged
        self.skipped = 0  # non-finite measurements (e.g. an overflowing sub-batch), left out
        self.first: Optional[dict] = None  # {step, g2, trace, b_simple} of the first measurement
        self.last_step: Optional[int] = None

    def add(self, step: int, g2: float, trace: float) -> None:
        """A measurement on the batch of step `step` (1-based, as the step table counts)."""
        if not (math.isfinite(g2) and math.isfinite(trace)):
            self.skipped += 1
            return
        e = self.ns.ema
        self.g2 = e * self.g2 + (1 - e) * g2
        self.trace = e * self.trace + (1 - e) * trace
        self.n += 1
        self.last_step = step
        if self.first is None:
            self.first = {"step": step, "g2": g2, "trace": trace, "b_simple": _ratio(trace, g2)}

    def values(self) -> tuple[float, float, float]:
        """(|G|^2, tr(Sigma), B_simple) smoothed; NaN before the first measurement."""
        if self.n == 0:
            return math.nan, math.nan, math.nan
        c = 1 - self.ns.ema ** self.n
        g2, trace = self.g2 / c, self.trace / c
        return g2, trace, _ratio(trace, g2)

    def columns(self) -> dict[str, float]:
        return dict(zip(NOISE_COLUMNS, self.values()))

    def summary(self) -> dict:
        g2, trace, b = self.values()
        first = self.first or {}
        return {"every": self.ns.every, "small_batch": self.small_batch, "ema": self.ns.ema,
                "measurements": self.n, "skipped": self.skipped,
                "first_step": first.get("step"), "first_b_simple": first.get("b_simple", math.nan),
                "first_g2": first.get("g2", math.nan), "first_trace": first.get("trace", math.nan),
                "last_step": self.last_step, "last_b_simple": b, "last_g2": g2, "last_trace": trace}

    def state_dict(self) -> dict:
        return {"g2": self.g2, "trace": self.trace, "n": self.n, "skipped": self.skipped,
                "first": self.first, "last_step": self.last_step}

    def load_state_dict(self, state: dict) -> None:
        self.g2, self.trace, self.n = state["g2"], state["trace"], state["n"]
        self.skipped, self.first, self.last_step = state["skipped"], state["first"], state["last_step"]


def _ratio(trace: float, g2: float) -> float:
    return trace / g2 if g2 > 0 else math.nan
