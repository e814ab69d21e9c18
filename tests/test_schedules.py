"""LR schedules: Caffe policies against hand-computed values, the rest against torch's own schedulers."""
import math
import random

import pytest
import torch

from lrsweep.config import ScheduleConfig
from lrsweep.errors import ConfigError
from lrsweep.schedules import LRSchedule, lr_at


def sched(total=100, spe=10, base=1.0, **kw):
    return LRSchedule(ScheduleConfig(**kw), base, total, spe)


def close(x):
    return pytest.approx(x, rel=1e-9, abs=1e-15)


def torch_lrs(make, base, n):
    """The LR torch's scheduler gives to each of n updates (read before each optimizer step)."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    s = make(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        s.step()
    return out


# ----------------------------------------------------------------- hand-computed values


def test_constant_and_fixed():
    for name in ("constant", "fixed"):
        s = sched(name=name, base=0.3)
        assert s.lr(0) == s.lr(57) == s.lr(500) == 0.3


def test_step():
    s = sched(name="step", gamma=0.5, stepsize=10, base=0.1)
    assert s.lr(9) == close(0.1) and s.lr(10) == close(0.05) and s.lr(25) == close(0.025)
    s = sched(name="step", gamma=0.5, total=90)  # default stepsize: a third of the run = 30
    assert s.lr(29) == 1.0 and s.lr(30) == 0.5 and s.lr(60) == 0.25


def test_multistep():
    s = sched(name="multistep", gamma=0.1, stepvalues=[5, 8])
    assert [s.lr(t) for t in (4, 5, 7, 8, 99)] == [close(v) for v in (1, 0.1, 0.1, 0.01, 0.01)]


def test_exp_inv():
    assert sched(name="exp", gamma=0.9).lr(2) == close(0.81)
    s = sched(name="inv", gamma=0.5, power=2)
    assert s.lr(0) == 1 and s.lr(2) == close(0.25) and s.lr(6) == close(1 / 16)
    assert sched(name="exp", gamma=2.0, total=10**6).lr(5000) == math.inf  # no OverflowError


def test_poly():
    s = sched(name="poly", power=2, max_iter=10)
    assert s.lr(5) == close(0.25) and s.lr(10) == 0 and s.lr(15) == 0  # clamped at 0
    # default max_iter = steps after warmup: 100 - 20 = 80, so t' = 40 is halfway
    s = sched(name="poly", power=1, warmup_steps=20)
    assert s.lr(60) == close(0.5) and s.lr(99) == close(1 / 80)


def test_sigmoid():
    s = sched(name="sigmoid", gamma=0.5, stepsize=10)
    assert s.lr(10) == close(0.5)
    assert s.lr(12) == close(0.7310585786300049) and s.lr(8) == close(0.2689414213699951)
    assert sched(name="sigmoid", gamma=1000.0, stepsize=10).lr(0) == 0.0  # no overflow


def test_warmup():
    s = sched(name="step", gamma=0.5, stepsize=10, warmup_steps=4)
    assert [s.lr(t) for t in range(4)] == [close(v) for v in (0.25, 0.5, 0.75, 1.0)]
    assert s.lr(4) == 1.0 and s.lr(13) == 1.0 and s.lr(14) == 0.5  # policy restarts at t' = 0
    s = sched(warmup_steps=4, warmup_start_factor=0.2)
    assert s.lr(0) == close(0.4) and s.lr(1) == close(0.6) and s.lr(4) == 1.0
    s = sched(warmup_steps=2, warmup_epochs=0.5, spe=10)  # W = 2 + 5
    assert s.lr(0) == close(1 / 7) and s.lr(6) == close(1.0)


def test_warmup_longer_than_run_is_clamped():
    s = sched(warmup_steps=200, total=100)
    assert s.lr(49) == close(0.5) and s.lr(99) == close(1.0)


def test_cosine():
    s = sched(name="cosine", min_lr=0.1)
    assert s.lr(0) == 1 and s.lr(50) == close(0.55) and s.lr(100) == close(0.1) and s.lr(150) == close(0.1)
    s = sched(name="cosine", warmup_steps=20)  # cosine over the 80 steps after warmup
    assert s.lr(60) == close(0.5)


def test_lr_at_is_what_the_schedule_uses():
    cfg = ScheduleConfig(name="onecycle", warmup_steps=5)
    s = LRSchedule(cfg, 0.2, 100, 10)
    assert all(s.lr(t) == lr_at(cfg, 0.2, t, 100, 10) for t in range(100))


# ----------------------------------------------------------------- against torch


@pytest.mark.parametrize("t_0,t_mult", [(7, 1), (5, 2), (None, 3)])
def test_sgdr_matches_torch(t_0, t_mult):
    n, spe, base = 300, 9, 0.1
    s = sched(name="sgdr", t_0=t_0, t_mult=t_mult, min_lr=0.01, base=base, total=n, spe=spe)
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        o, T_0=t_0 or spe, T_mult=t_mult, eta_min=0.01), base, n)
    assert [s.lr(t) for t in range(n)] == [close(v) for v in ref]


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
@pytest.mark.parametrize("up", [13, None])
def test_cyclic_matches_torch(mode, up):
    n, base, W = 300, 0.1, 10
    s = sched(name="cyclic", cycle_mode=mode, step_size_up=up, gamma=0.995, min_lr_factor=0.25,
              base=base, total=n + W, spe=20, warmup_steps=W)
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.CyclicLR(
        o, base_lr=0.25 * base, max_lr=base, step_size_up=up or 40, mode=mode, gamma=0.995,
        cycle_momentum=False), base, n)
    assert [s.lr(W + t) for t in range(n)] == [close(v) for v in ref]


@pytest.mark.parametrize("T,pct,div,final", [(300, 0.3, 25.0, 1e4), (257, 0.25, 10.0, 100.0), (10, 0.1, 25.0, 1e4)])
def test_onecycle_matches_torch(T, pct, div, final):
    base = 0.5
    s = sched(name="onecycle", pct_start=pct, div_factor=div, final_div_factor=final, base=base, total=T)
    if pct * T == 1:  # torch divides by zero on a one-step warm phase; we give max_lr
        assert s.lr(0) == base
        return
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=base, total_steps=T, pct_start=pct, div_factor=div, final_div_factor=final,
        anneal_strategy="cos", three_phase=False, cycle_momentum=False), base, T)
    assert [s.lr(t) for t in range(T)] == [close(v) for v in ref]
    assert s.lr(T + 50) == s.lr(T - 1)  # held past the end


@pytest.mark.parametrize("monitor,threshold_mode,threshold,cooldown,min_lr", [
    ("val_loss", "rel", 1e-3, 0, 0.0), ("val_acc", "abs", 1e-3, 2, 0.0), ("val_loss", "abs", 1e-3, 1, 2e-3),
    ("val_acc", "rel", 0.0, 0, 0.0), ("val_loss", "abs", 0.0, 0, 0.0)])  # threshold 0: an equal metric is not an improvement
def test_plateau_matches_torch(monitor, threshold_mode, threshold, cooldown, min_lr):
    base, rng = 0.1, random.Random(0)
    kw = dict(factor=0.5, patience=3, threshold=threshold, threshold_mode=threshold_mode, cooldown=cooldown,
              min_lr=min_lr)
    s = sched(name="plateau", monitor=monitor, base=base, total=1000, **kw)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min" if monitor == "val_loss" else "max", **kw)
    value, seen = 1.0, set()
    for i in range(300):  # a noisy metric with long flat stretches
        value *= rng.choice([0.99, 1.0, 1.0, 1.0, 1.01])
        opt.step()
        s.report(value)
        ref.step(value)
        assert s.lr(500) == close(opt.param_groups[0]["lr"]), i
        seen.add(s.lr(500))
    assert len(seen) >= 3  # the sequence really triggered reductions


def test_plateau_warmup_nan_and_state_roundtrip():
    s = sched(name="plateau", patience=0, factor=0.5, warmup_steps=4)
    s.report(1.0)
    s.report(float("nan"))  # a NaN metric is a bad evaluation: patience 0 -> reduce
    assert s.lr(1) == close(0.25) and s.lr(50) == close(0.5)
    t = sched(name="plateau", patience=0, factor=0.5, warmup_steps=4)
    t.load_state_dict(s.state_dict())
    s.report(2.0)
    t.report(2.0)
    assert s.lr(50) == t.lr(50) == close(0.25)


def test_report_ignored_by_other_schedules():
    s = sched(name="cosine", patience=0)
    before = [s.lr(t) for t in range(100)]
    for v in (1.0, 2.0, 3.0, 4.0):
        s.report(v)
    assert [s.lr(t) for t in range(100)] == before


# ----------------------------------------------------------------- errors


def test_errors():
    with pytest.raises(ConfigError) as e:
        sched(name="multistep")
    assert e.value.path == "schedule.stepvalues"
    with pytest.raises(ConfigError) as e:
        sched(name="cosine", min_lr=0.5, base=0.1)
    assert e.value.path == "schedule.min_lr" and "0.5" in str(e.value)
    with pytest.raises(ValueError):
        sched(total=0)
