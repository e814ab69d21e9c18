"""Learning-rate schedules: the LR for every update of a run, as a function of the step.

All schedules share one shape:

    warmup (W steps)  then  policy(t', T')   with  t' = t - W,  T' = total_steps - W

- Warmup: W = warmup_steps + round(warmup_epochs * steps_per_epoch), clamped to the run
  length (a warmup longer than the run just means the whole run is warmup). For t < W,
  lr = base * (s + (1 - s) * (t + 1) / W), s = warmup_start_factor. Warmup ramps to `base`,
  not to the policy's first value (onecycle/cyclic/sigmoid start below base).
- Caffe policies (science.md section 4), with t = t':
    fixed/constant base              step      base * gamma^floor(t / stepsize)
    multistep base * gamma^(#stepvalues <= t)  exp  base * gamma^t
    inv   base * (1 + gamma t)^-power          poly base * (1 - t / max_iter)^power  (0 past max_iter)
    sigmoid base / (1 + exp(-gamma (t - stepsize)))
  stepsize defaults to max(1, T' // 3), max_iter to T'.
  `exp` decays by gamma every step, so gamma must be close to 1 (e.g. 0.999); the config
  default 0.1 would kill the LR after a few steps. Caffe's decaying `sigmoid` uses gamma < 0
  (allowed for sigmoid only); gamma > 0 gives a smooth *rise* centred on stepsize.
- cosine: min_lr + (base - min_lr) * (1 + cos(pi t' / T')) / 2, holding min_lr past T'.
- sgdr / cyclic / onecycle: exactly torch's CosineAnnealingWarmRestarts / CyclicLR / OneCycleLR
  stepped once per update (see the functions below for the parameter mapping).
- plateau: torch's ReduceLROnPlateau, driven by LRSchedule.report(metric) after each
  evaluation; its current LR replaces `base` in the formulas above (so warmup still applies).

Steps past total_steps are allowed (they hold the final value for cosine/onecycle/poly).
`lr_at` is a pure function so vectorized engines can compute whole LR tables from it.
"""
from __future__ import annotations

import math

from lrsweep.config import ScheduleConfig
from lrsweep.errors import ConfigError


def _pow(x: float, n: float) -> float:
    """x ** n, but inf instead of OverflowError (a growing schedule is the user's choice)."""
    try:
        return x ** n
    except OverflowError:
        return math.inf


def _sigmoid(z: float) -> float:
    # The two branches avoid exp() overflow for large |z|.
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def warmup_steps(cfg: ScheduleConfig, total_steps: int, steps_per_epoch: int) -> int:
    """W: the number of warmup updates, clamped to the run length."""
    w = cfg.warmup_steps + round(cfg.warmup_epochs * steps_per_epoch)
    return min(w, total_steps)


def default_step_size_up(cfg: ScheduleConfig, T: int, steps_per_epoch: int) -> int:
    """CLR half-cycle: given, else 2 epochs (Smith 2017's 2-10 epochs), capped at half the run."""
    return cfg.step_size_up or max(1, min(2 * steps_per_epoch, T // 2))


def _sgdr(cfg: ScheduleConfig, base: float, t: int, steps_per_epoch: int) -> float:
    # CosineAnnealingWarmRestarts(T_0, T_mult, eta_min), stepped once per update.
    T_i = cfg.t_0 or steps_per_epoch
    if cfg.t_mult == 1:
        t_cur = t % T_i
    else:  # integer walk through the periods T_0, T_0*m, T_0*m^2, ... (O(log t))
        t_cur = t
        while t_cur >= T_i:
            t_cur -= T_i
            T_i *= cfg.t_mult
    return cfg.min_lr + (base - cfg.min_lr) * (1 + math.cos(math.pi * t_cur / T_i)) / 2


def _cyclic(cfg: ScheduleConfig, base: float, t: int, T: int, steps_per_epoch: int) -> float:
    # CyclicLR(base_lr=min_lr_factor*base, max_lr=base, step_size_up=step_size_down, mode, gamma),
    # same arithmetic as torch's get_lr. exp_range scales by gamma**t with gamma as configured:
    # the default gamma 0.1 flattens the cycle to the lower bound within a few steps, so
    # exp_range wants gamma just below 1 (e.g. 0.9999).
    low, high = cfg.min_lr_factor * base, base
    total = 2.0 * default_step_size_up(cfg, T, steps_per_epoch)
    cycle = math.floor(1 + t / total)
    x = 1.0 + t / total - cycle
    scale = x / 0.5 if x <= 0.5 else (x - 1) / (0.5 - 1)
    amplitude = {"triangular": 1.0, "triangular2": 1 / (2.0 ** (cycle - 1)),
                 "exp_range": _pow(cfg.gamma, t)}[cfg.cycle_mode]
    return low + (high - low) * scale * amplitude


def _onecycle(cfg: ScheduleConfig, base: float, t: int, T: int) -> float:
    # OneCycleLR(max_lr=base, total_steps=T, pct_start, div_factor, final_div_factor,
    # anneal_strategy='cos', three_phase=False): cos from base/div up to base, then down to
    # base/div/final_div. Same phase boundaries (floats) as torch.
    t = min(t, T - 1)
    initial = base / cfg.div_factor
    phases = [(cfg.pct_start * T - 1, initial, base), (T - 1, base, initial / cfg.final_div_factor)]
    start = 0.0
    for i, (end, lr0, lr1) in enumerate(phases):
        if t <= end or i == len(phases) - 1:
            # A zero-length phase (pct_start*T == 1) is already finished: torch divides by 0 here.
            pct = (t - start) / (end - start) if end != start else 1.0
            return lr1 + (lr0 - lr1) / 2.0 * (math.cos(math.pi * pct) + 1)
        start = end
    raise AssertionError("unreachable")


def lr_at(cfg: ScheduleConfig, base_lr: float, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """The LR for update number `step` (0-based). Pure; `plateau` here is just warmup + base."""
    W = warmup_steps(cfg, total_steps, steps_per_epoch)
    if step < W:
        s = cfg.warmup_start_factor
        return base_lr * (s + (1 - s) * (step + 1) / W)
    t, T = step - W, max(1, total_steps - W)
    name, g = cfg.name, cfg.gamma
    if name in ("constant", "fixed", "plateau"):
        return base_lr
    if name == "step":
        return base_lr * _pow(g, t // (cfg.stepsize or max(1, T // 3)))
    if name == "multistep":
        return base_lr * _pow(g, sum(1 for v in cfg.stepvalues if v <= t))
    if name == "exp":
        return base_lr * _pow(g, t)
    if name == "inv":
        return base_lr * (1 + g * t) ** (-cfg.power)
    if name == "poly":
        return base_lr * max(0.0, 1 - t / (cfg.max_iter or T)) ** cfg.power
    if name == "sigmoid":
        return base_lr * _sigmoid(g * (t - (cfg.stepsize or max(1, T // 3))))
    if name == "cosine":
        return cfg.min_lr + (base_lr - cfg.min_lr) * (1 + math.cos(math.pi * min(t, T) / T)) / 2
    if name == "sgdr":
        return _sgdr(cfg, base_lr, t, steps_per_epoch)
    if name == "cyclic":
        return _cyclic(cfg, base_lr, t, T, steps_per_epoch)
    if name == "onecycle":
        return _onecycle(cfg, base_lr, t, T)
    raise ConfigError("schedule.name", f"unknown schedule {name!r}")


def check_schedule(cfg: ScheduleConfig, base_lr: float) -> None:
    """Combinations the field validators cannot see (they need the run's base LR)."""
    if cfg.name == "multistep" and not cfg.stepvalues:
        raise ConfigError("schedule.stepvalues", "the multistep policy needs at least one step, e.g. [1000, 2000]")
    if cfg.name in ("cosine", "sgdr") and cfg.min_lr > base_lr:
        raise ConfigError("schedule.min_lr", f"{cfg.min_lr} is above the run's LR {base_lr}: "
                          f"{cfg.name} would anneal upwards; lower min_lr")


class LRSchedule:
    """The LR schedule of one run. `lr(step)` is pure except for the plateau state,
    which only `report()` changes (ReduceLROnPlateau, step for step)."""

    def __init__(self, cfg: ScheduleConfig, base_lr: float, total_steps: int, steps_per_epoch: int):
        if total_steps < 1 or steps_per_epoch < 1:
            raise ValueError(f"need total_steps >= 1 and steps_per_epoch >= 1, got {total_steps}, {steps_per_epoch}")
        check_schedule(cfg, base_lr)
        self.cfg, self.base_lr = cfg, base_lr
        self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch
        self.mode = "min" if cfg.monitor == "val_loss" else "max"
        # ReduceLROnPlateau state; `current` is the plateau's LR, used in place of base_lr.
        self.current = base_lr
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad = 0
        self.cooldown_counter = 0

    def lr(self, step: int) -> float:
        return lr_at(self.cfg, self.current, step, self.total_steps, self.steps_per_epoch)

    def _is_better(self, a: float) -> bool:
        c = self.cfg
        if self.mode == "min":
            return a < (self.best * (1 - c.threshold) if c.threshold_mode == "rel" else self.best - c.threshold)
        return a > (self.best * (1 + c.threshold) if c.threshold_mode == "rel" else self.best + c.threshold)

    def report(self, value: float) -> None:
        """The monitored metric after an evaluation. Mirrors ReduceLROnPlateau.step."""
        if self.cfg.name != "plateau":
            return
        value = float(value)
        if self._is_better(value):  # NaN is never better: it counts as a bad evaluation
            self.best, self.num_bad = value, 0
        else:
            self.num_bad += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad = 0  # bad evaluations during cooldown do not count
        if self.num_bad > self.cfg.patience:
            new = max(self.current * self.cfg.factor, self.cfg.min_lr)
            if self.current - new > 1e-8:  # torch's eps: ignore negligible reductions
                self.current = new
            self.cooldown_counter, self.num_bad = self.cfg.cooldown, 0

    def state_dict(self) -> dict:
        return {"current": self.current, "best": self.best, "num_bad": self.num_bad,
                "cooldown_counter": self.cooldown_counter}

    def load_state_dict(self, d: dict) -> None:
        self.current, self.best = float(d["current"]), float(d["best"])
        self.num_bad, self.cooldown_counter = int(d["num_bad"]), int(d["cooldown_counter"])
