"""B_noise, S_min and E_min recovered from train-loss curves of KNOWN critical batch size, through
the whole summarize path (run folders -> build_report -> report.md, fits.json, the CLI), with
their bootstrap intervals; and the lag of the trainer's causal EMA that summarize no longer uses."""
import json
import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lrsweep.analysis import critical, crossing
from lrsweep.analysis.report import build_report
from lrsweep.cli import app
from lrsweep.output.files import write_report
from lrsweep.output.markdown import with_ci

import se_curves

B_NOISE = 40.0


def ema_b_noise(rep) -> float:
    """What summarize reported before: S read off the trainer's causal EMA (its steps_to_train_loss)."""
    t = se_curves.TARGET
    table, _ = critical.curve_table(rep.runs, [t])
    lagged = table.assign(**{f"S@{t:g}": table[f"S_ema@{t:g}"]})
    return critical.fit_critical(critical.se_points(rep.runs, lagged, t))["B_noise"]


@pytest.mark.parametrize("S_min, noise, seeds, ema_off", [
    (20.0, 0.0, (0,), 0.10), (20.0, 0.3, (0,), 0.10), (20.0, 0.3, (0, 1, 2), 0.10),
    (100.0, 0.0, (0,), 0.05), (100.0, 0.3, (0,), 0.10)])
def test_b_noise_of_known_curves_is_recovered_within_its_interval(tmp_path, S_min, noise, seeds, ema_off):
    d = se_curves.se_sweep(tmp_path, S_min, B_NOISE, noise=noise, seeds=seeds)
    rep = build_report(d)
    (c,) = rep.groups[0].critical.to_dict(orient="records")
    tol = 0.1 if noise else 0.01  # noise-free: only the local fit's own bias is left
    assert c["B_noise"] == pytest.approx(B_NOISE, rel=tol) and c["S_min"] == pytest.approx(S_min, rel=tol)
    assert c["E_min"] == pytest.approx(B_NOISE * S_min, rel=tol) and c["note"] == ""
    for k in ("B_noise", "S_min", "E_min"):
        assert c[f"{k}_lo"] <= c[k] <= c[f"{k}_hi"]
    if noise:
        assert c["B_noise_lo"] <= B_NOISE <= c["B_noise_hi"] and c["S_min_lo"] <= S_min <= c["S_min_hi"]
        assert c["B_noise_hi"] - c["B_noise_lo"] < 0.3 * B_NOISE
    # the trainer's EMA lags the loss by several steps at every B: B_noise biased low (25 at S_min = 20)
    assert ema_b_noise(rep) < B_NOISE * (1 - ema_off)
    pts = rep.groups[0].se[se_curves.TARGET]
    true_S = se_curves.steps_to_target(pts["batch_size"], S_min, B_NOISE)
    assert list(pts["lr"]) == [0.03] * len(se_curves.SIZES)  # the fastest LR at every B
    assert pts["S"].to_numpy() == pytest.approx(true_S, rel=0.1 if noise else 0.005)
    assert (pts["S_lo"] <= pts["S"]).all() and (pts["S"] <= pts["S_hi"]).all()


def test_one_low_point_does_not_reach_the_target():
    steps = np.arange(1, 251)
    loss = se_curves.loss_curve(100.0, steps)
    loss[39] = 0.05  # one lucky batch at step 40, far below the target 0.5 while the loss is ~0.8
    assert crossing.reach_step(steps, loss, se_curves.TARGET) == pytest.approx(100.0, rel=0.02)
    raw = pd.DataFrame({"step": steps, "train_loss": loss})
    assert critical.first_reach(raw, critical.smoothed_loss(raw, 0.0), se_curves.TARGET) == 40  # unsmoothed: fooled


@pytest.mark.parametrize("log_every", [1, 2, 5, 10])
def test_the_crossing_is_interpolated_between_logged_steps(log_every):
    steps = np.arange(log_every, 601, log_every)
    for S in (20.0, 41.0, 103.0, 207.0):
        loss = se_curves.loss_curve(S, steps)
        got = crossing.reach_step(steps, loss, se_curves.TARGET)
        if crossing.sparse(steps, got):  # ~4 logged steps before S: flagged, and only roughly right
            assert S / log_every < 5 and got == pytest.approx(S, rel=0.1)
        else:
            assert got == pytest.approx(S, rel=0.003)
    flat = np.full(len(steps), 0.6)  # never reached
    assert math.isnan(crossing.reach_step(steps, flat, se_curves.TARGET))


def test_coarse_logging_is_noted(tmp_path):
    d = se_curves.se_sweep(tmp_path, 20.0, B_NOISE, log_every=5, sizes=(16, 64, 256, 1024))
    (c,) = build_report(d).groups[0].critical.to_dict(orient="records")
    assert "B=256, 1024: fewer than 10 logged steps" in c["note"] and "train.log_every" in c["note"]
    assert c["B_noise"] == pytest.approx(B_NOISE, rel=0.2)


def test_replicates_are_deterministic_and_spread_with_the_noise():
    steps = np.arange(1, 301)
    rng = np.random.default_rng(0)
    curve = se_curves.loss_curve(100.0, steps)
    spreads = []
    for sigma in (0.05, 0.2):
        loss = se_curves.noisy(curve, sigma, rng)
        a = crossing.replicates(steps, loss, se_curves.TARGET, 200, np.random.default_rng(1))
        b = crossing.replicates(steps, loss, se_curves.TARGET, 200, np.random.default_rng(1))
        assert np.array_equal(a, b) and np.isfinite(a).all()
        assert np.median(a) == pytest.approx(crossing.reach_step(steps, loss, se_curves.TARGET))
        spreads.append(np.percentile(a, 95) - np.percentile(a, 5))
    assert 0 < spreads[0] < spreads[1] < 30


def test_intervals_reach_report_md_fits_json_and_an_80_column_terminal(tmp_path):
    d = se_curves.se_sweep(tmp_path, 20.0, B_NOISE, noise=0.3)
    rep = build_report(d)
    c = rep.groups[0].critical.iloc[0]
    again = build_report(d).groups[0].critical.iloc[0]  # a fixed seed: the same interval every time
    assert (again["B_noise_lo"], again["B_noise_hi"]) == (c["B_noise_lo"], c["B_noise_hi"])
    write_report(rep, tmp_path / "report", with_plots=False)
    saved = json.loads((tmp_path / "report" / "fits.json").read_text())["groups"][0]
    assert saved["critical"][0]["B_noise_lo"] == pytest.approx(c["B_noise_lo"])
    assert saved["critical"][0]["S_min_hi"] == pytest.approx(c["S_min_hi"])
    assert all(p["S_lo"] <= p["S"] <= p["S_hi"] for p in saved["se_points"]["0.5"])
    md = (tmp_path / "report" / "report.md").read_text()
    assert "B_noise ≈ B_crit [90% CI]" in md and with_ci(c["B_noise"], c["B_noise_lo"], c["B_noise_hi"]) in md
    r = CliRunner().invoke(app, ["summarize", str(d), "--out", str(tmp_path / "cli"), "--no-plots"])
    assert r.exit_code == 0, r.output
    table = r.output.split("critical batch size per train-loss target")[1].split("wrote")[0]
    assert "B_noise (90% CI)" in table and with_ci(c["B_noise"], c["B_noise_lo"], c["B_noise_hi"]) in table
    assert max(len(line) for line in table.splitlines()) <= 80
