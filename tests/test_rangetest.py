"""LR range test: the known-answer quadratic, the ramp, smoothing, NaN, suggestions, the CLI."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from lrsweep.cli import app
from lrsweep.config.grid import load_sweep
from lrsweep.rangetest import (
    MIN_STEPS, SUGGESTIONS, Curve, lr_ramp, ramp, suggest, valley_index,
)

from conftest import make_config

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


# --------------------------------------------------------------------------- a problem with a known answer


def least_squares(lam_max: float, d=20, n=200, noise=0.5, seed=0):
    """step_fn for GD on 0.5*mean((Xw - y)^2) with Hessian X^T X/n of eigenvalues logspace(-2, 0) * lam_max.
    Fresh label noise each step keeps every eigendirection excited, so the loss blows up as soon as
    lr > 2/lam_max (|1 - lr*lam_max| > 1) instead of after the top direction has decayed to zero."""
    g = torch.Generator().manual_seed(seed)
    eig = torch.logspace(-2, 0, d, dtype=torch.float64) * lam_max
    Q, _ = torch.linalg.qr(torch.randn(n, d, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    X = Q @ torch.diag((eig * n).sqrt()) @ V.T
    assert torch.allclose(torch.linalg.eigvalsh(X.T @ X / n).max(), torch.tensor(lam_max, dtype=torch.float64))
    w_star = torch.randn(d, generator=g, dtype=torch.float64)
    w = torch.zeros(d, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([w], lr=1.0)

    def step_fn(lr):
        opt.param_groups[0]["lr"] = lr
        y = X @ w_star + noise * torch.randn(n, generator=g, dtype=torch.float64)
        loss = 0.5 * ((X @ w - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()
    return step_fn


@pytest.mark.parametrize("lam_max", [1.0, 8.0])
def test_gd_on_least_squares_blows_up_past_2_over_lambda_max(lam_max):
    edge = 2 / lam_max
    lrs = lr_ramp(1e-3 * edge, 50 * edge, 100)
    curve = ramp(least_squares(lam_max), lrs)
    lr, loss = np.array(curve.lr), np.array(curve.loss)
    # Below the edge the loss only falls (up to the label noise); past it, it explodes.
    assert loss[lr < edge].max() <= loss[0] * 1.05
    assert loss[lr > edge].max() > 100 * loss[lr < edge].min()
    first_above_start = lr[np.argmax(loss > loss[0] * 1.05)]
    assert edge < first_above_start < 3 * edge
    # The early stop fired, past the edge, long before max_lr.
    assert curve.stopped and "smoothed loss" in curve.stopped
    assert edge < curve.lr[-1] < 5 * edge and len(curve.lr) < 100
    s = curve.smoothed  # ... at the first step whose smoothed loss exceeds 4x the best before it
    assert s[-1] > 4 * min(s[:-1]) and all(s[i] <= 4 * min(s[:i]) for i in range(1, len(s) - 1))
    s = suggest(curve)
    for name in ("steepest", "valley", "minimum/10", "clr-lower/3", "clr-lower/4"):
        assert 0.01 * edge < s[name].lr < edge, (name, s[name])


def test_valley_matches_fastai_reference():
    def fastai_valley(losses):  # fastai.callback.schedule.valley, verbatim apart from the return
        n = len(losses)
        max_start, max_end = 0, 0
        lds = [1] * n
        for i in range(1, n):
            for j in range(0, i):
                if (losses[i] < losses[j]) and (lds[i] < lds[j] + 1):
                    lds[i] = lds[j] + 1
                if lds[max_end] < lds[i]:
                    max_end = i
                    max_start = max_end - lds[max_end]
        sections = (max_end - max_start) / 3
        return max_start + int(sections) + int(sections / 2)

    rng = np.random.default_rng(0)
    for _ in range(20):
        x = np.cumsum(rng.normal(-0.1, 1, 60))
        assert valley_index(x)[0] == fastai_valley(list(x))


# --------------------------------------------------------------------------- ramp, smoothing, NaN


@pytest.mark.parametrize("mode", ["exp", "linear"])
def test_ramps_hit_min_and_max_exactly(mode):
    lrs = lr_ramp(3e-6, 7.0, 37, mode)
    assert len(lrs) == 37 and lrs[0] == 3e-6 and lrs[-1] == 7.0
    steps = np.diff(np.log(lrs)) if mode == "exp" else np.diff(lrs)
    assert np.allclose(steps, steps[0])
    seen = []
    curve = ramp(lambda lr: seen.append(lr) or 1.0, lrs)
    assert seen == curve.lr == list(lrs) and curve.stopped is None


def test_smoothing_is_a_bias_corrected_ema():
    losses = iter([1.0, 2.0, 3.0, 10.0])
    curve = ramp(lambda lr: next(losses), lr_ramp(1e-3, 1, MIN_STEPS)[:4], smooth=0.5, diverge=100)
    # m_t = 0.5 m_{t-1} + 0.5 x_t; s_t = m_t / (1 - 0.5^t)
    assert curve.smoothed == pytest.approx([1.0, 1.25 / 0.75, 2.125 / 0.875, 6.0625 / 0.9375])
    curve = ramp(lambda lr: 2.0, [0.1, 0.2, 0.3], smooth=0.98)  # bias correction: no pull towards 0
    assert curve.smoothed == pytest.approx([2.0, 2.0, 2.0])


def test_early_stop_fires_at_the_first_smoothed_loss_above_diverge_times_best():
    losses = iter([2.0] + [1.0] * 20 + [3.9, 4.1, 1.0])
    lrs = lr_ramp(1e-3, 1, 24)
    curve = ramp(lambda lr: next(losses), lrs, smooth=0.0, diverge=4)
    assert len(curve.lr) == 23 and curve.stopped == f"smoothed loss 4.1 > 4 x best 1 at step 23 (lr {lrs[22]:.3g})"


def parabola(nan_at=None):
    """Loss falling with log-LR to a minimum at lr=1e-2, then rising; NaN from step `nan_at` on."""
    state = {"step": 0}

    def step_fn(lr):
        state["step"] += 1
        return math.nan if nan_at and state["step"] >= nan_at else 1 + (math.log10(lr) + 2) ** 2
    return step_fn


def test_nan_loss_stops_the_test_and_suggestions_use_only_finite_points():
    lrs = lr_ramp(1e-6, 1, 100)
    curve = ramp(parabola(nan_at=70), lrs, smooth=0.0, diverge=1e9)
    assert len(curve.lr) == 70 and "loss nan at step 70" in curve.stopped
    assert math.isnan(curve.smoothed[-1]) and np.isfinite(curve.smoothed[:-1]).all()
    s = suggest(curve)
    assert all(math.isfinite(x.lr) and x.lr <= curve.lr[64] for x in s.values())
    assert s["minimum/10"].lr == pytest.approx(curve.lr[int(np.argmin(curve.loss[:65]))] / 10)
    # NaN points inside the curve (a CSV from elsewhere, fastai #3476) are skipped, not propagated.
    holes = Curve(0, 100, curve.lr[:65], curve.loss[:65], curve.smoothed[:65], [math.nan] * 65, [math.nan] * 65)
    for i in (20, 30, 49):
        holes.smoothed[i] = math.nan
    s = suggest(holes)
    assert all(math.isfinite(x.lr) and x.step - 1 not in (20, 30, 49) for x in s.values())
    # NaN straight away: no suggestion, and the reason says what to change.
    early = suggest(ramp(parabola(nan_at=3), lrs))
    assert all(x.lr is None for x in early.values())
    assert "only 0 points" in early["valley"].reason and "lower --max-lr or raise --steps" in early["valley"].reason


def test_val_mode_records_each_step_and_clr_bounds_follow_the_accuracy_peak():
    lrs = lr_ramp(1e-6, 1, 50)
    accs = iter(np.minimum(np.arange(50), 30) / 100 - (np.arange(50) > 30) * 0.2)  # peaks at step 31
    curve = ramp(parabola(), lrs, val_fn=lambda: (0.5, next(accs)), smooth=0.0, diverge=1e9)
    assert curve.val_loss == [0.5] * 50
    s = suggest(curve)
    assert s["clr-upper"].lr == curve.lr[30] and s["clr-upper"].step == 31 and "validation accuracy" in s["clr-upper"].reason
    assert s["clr-lower/3"].lr == pytest.approx(curve.lr[30] / 3)
    assert s["clr-lower/4"].lr == pytest.approx(curve.lr[30] / 4)


def test_suggestions_have_reasons_and_the_parabola_minimum():
    curve = ramp(parabola(), lr_ramp(1e-5, 10, 100), smooth=0.0, diverge=1e9)
    s = suggest(curve)
    assert list(s) == list(SUGGESTIONS) and all(x.reason for x in s.values())
    assert s["clr-upper"].lr == pytest.approx(1e-2, rel=0.08)  # the true minimum
    assert s["steepest"].lr < s["valley"].lr < 1e-2
    # Past the minimum a dead network's loss jumps about; steepest must not pick a fall there.
    after = iter([None] * 60 + list(45.0 - np.arange(40)))  # a jump, then a steep fall, all above the minimum
    noisy = parabola()
    curve = ramp(lambda lr: next(after) or noisy(lr), lr_ramp(1e-5, 10, 100), smooth=0.0, diverge=1e9)
    assert suggest(curve)["steepest"].lr < 1e-2


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def cfg(write_config):
    return write_config(make_config(sweep={"batch_size": [16, 32], "lr": [0.01, 0.1], "seed": [0, 1]}))


def test_emit_sweep_loads_and_plans(cfg, tmp_path):
    out_yaml = tmp_path / "next.yaml"
    r = invoke("range-test", cfg, "--steps", 30, "--min-lr", 1e-4, "--out", tmp_path / "rt", "--emit-sweep", out_yaml,
               "--set", "lr_scaling.rule=linear")
    assert r.exit_code == 0, r.output
    sugg = json.loads((tmp_path / "rt" / "range_test.json").read_text())
    sweep = load_sweep(out_yaml)
    assert len(sweep.runs) == 2 * 7 * 2  # batch sizes x LRs x the kept seed axis
    for res in sugg["results"]:  # the LRs the runs will use (lr_scaling must not rescale them)
        lrs = sorted({r.config.effective_lr for r in sweep.runs if r.config.train.batch_size == res["batch_size"]})
        assert len(lrs) == 7 and math.exp(np.mean(np.log(lrs))) == pytest.approx(res["lr"], rel=0.01)
    r = invoke("plan", out_yaml, "--out", tmp_path / "runs")
    assert r.exit_code == 0, r.output
    assert "28 runs, 0 finished, 28 to run" in r.output


def test_range_test_is_reproducible_and_val_does_not_change_training(cfg, tmp_path):
    outs = [invoke("range-test", cfg, "--steps", 20, "--batch-size", 16, "--out", tmp_path / str(i), "--format", "json",
                   *(["--val"] if i == 2 else [])) for i in range(3)]
    assert all(o.exit_code == 0 for o in outs), outs[0].output
    a, b, v = (pd.read_csv(tmp_path / str(i) / "range_test.csv") for i in range(3))
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a[["lr", "loss", "smoothed_loss"]], v[["lr", "loss", "smoothed_loss"]])
    assert a.val_loss.isna().all() and v.val_loss.notna().all()
    assert json.loads(outs[0].stdout)["results"][0]["batch_size"] == 16


@pytest.mark.parametrize("args, message", [
    (["--min-lr", 1, "--max-lr", 0.1], "--min-lr: must be below --max-lr, got --min-lr 1 >= --max-lr 0.1"),
    (["--min-lr", 0], "--min-lr: must be a positive number, got 0"),
    (["--max-lr=-2"], "--max-lr: must be a positive number, got -2"),
    (["--steps", 10], f"--steps: 10 is too few to suggest anything; at least {MIN_STEPS} are needed"),
    (["--epochs", 0.05], f"--epochs: 0.05 gives 1 steps at batch size 16 (16 per epoch); at least {MIN_STEPS} are needed: use --epochs 1 or more"),
    (["--steps", 20, "--epochs", 1], "give --steps or --epochs, not both"),
    (["--mode", "foo"], "--mode: expected one of (exp, linear), got 'foo'"),
    (["--suggest", "best"], "--suggest: expected one of (valley, steepest, minimum/10, clr-upper, clr-lower/3, clr-lower/4), got 'best'"),
    (["--smooth", 1], "--smooth: expected a value in [0, 1), got 1"),
    (["--diverge", 1], "--diverge: must be > 1"),
    (["--batch-size", 1000], "--batch-size: 1000 exceeds the 256 training examples per epoch"),
    (["--batch-size", 0], "--batch-size: must be >= 1, got 0"),
    (["--format", "csv"], "--format: expected one of (table, json), got 'csv'"),
    (["--set", "optimizer.lr=-1"], "optimizer.lr: Input should be greater than 0"),
    (["--min-lr", 100, "--max-lr", 1e6, "--steps", 20, "--emit-sweep", "x.yaml"], "--emit-sweep: no 'valley' suggestion for batch size 16 (only"),
])
def test_errors_are_one_line_and_exit_2(cfg, tmp_path, args, message):
    r = invoke("range-test", cfg, "--out", tmp_path, *args)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and len(r.stderr.strip().splitlines()) == 1
    assert message in r.stderr, r.stderr


# --------------------------------------------------------------------------- end to end on digits


def test_digits_end_to_end_writes_csv_json_and_plot(tmp_path):
    r = invoke("range-test", ROOT / "configs" / "quickstart.yaml", "--batch-size", 16, "--batch-size", 32,
               "--steps", 30, "--min-lr", 1e-3, "--out", tmp_path)
    assert r.exit_code == 0, r.output
    assert "'valley' per batch size vs scaling from the smallest" in r.output and "fastai's valley" in r.output
    df = pd.read_csv(tmp_path / "range_test.csv")
    assert set(df.batch_size) == {16, 32} and df.groupby("batch_size").step.max().le(30).all()
    assert df.loss.iloc[0] == pytest.approx(math.log(10), abs=0.1)  # a fresh 10-class model: nothing trained before
    res = json.loads((tmp_path / "range_test.json").read_text())["results"]
    assert [x["batch_size"] for x in res] == [16, 32] and all(1e-3 <= x["lr"] <= 10 for x in res)
    png = (tmp_path / "range_test.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
