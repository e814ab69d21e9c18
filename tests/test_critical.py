"""S, E to a train-loss target and the critical batch size fit."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from lrsweep.analysis import bootstrap, critical


def test_smoothed_loss_is_the_trainers_bias_corrected_ema():
    rng = np.random.default_rng(0)
    loss = 2.0 * np.exp(-np.arange(1, 201) / 50) + rng.normal(0, 0.1, 200)
    m = pd.DataFrame({"step": np.arange(1, 201), "train_loss": loss})
    ema, ref = 0.0, []
    for n, v in enumerate(loss, 1):  # train.py's loop, verbatim
        ema = 0.9 * ema + 0.1 * v
        ref.append(ema / (1 - 0.9 ** n))
    assert critical.smoothed_loss(m, 0.9) == pytest.approx(np.array(ref), rel=1e-12)
    assert critical.smoothed_loss(m, 0.0) == pytest.approx(loss)
    # log_every = 5: still close to the per-step EMA on a smooth curve
    sparse = m.iloc[4::5].reset_index(drop=True)
    smooth = 2.0 * np.exp(-np.arange(1, 201) / 50)
    dense = critical.smoothed_loss(pd.DataFrame({"step": m["step"], "train_loss": smooth}), 0.9)[4::5]
    got = critical.smoothed_loss(sparse.assign(train_loss=smooth[4::5]), 0.9)
    assert got[3:] == pytest.approx(dense[3:], rel=0.005)  # the first few: steps before the first log unknown


def test_first_reach_and_loss_drop():
    m = pd.DataFrame({"step": np.arange(1, 101), "train_loss": np.linspace(2.0, 0.02, 100)})
    s = critical.smoothed_loss(m, 0.0)
    assert critical.first_reach(m, s, 1.0) == 51  # 2 - 0.02*(step-1) <= 1
    assert critical.loss_drop(m, s, 1.0, 10) == pytest.approx(0.2)
    assert math.isnan(critical.first_reach(m, s, 0.001))
    assert math.isnan(critical.loss_drop(m, s, 0.05, 10))  # reached at step 99: too late for 10 more


@pytest.mark.parametrize("S_min, B_crit", [(100.0, 64.0), (1000.0, 512.0)])
def test_hyperbola_points_give_back_s_min_e_min(S_min, B_crit):
    E_min = S_min * B_crit
    B = np.array([8, 16, 32, 64, 128, 256, 512, 1024], float)
    S = S_min * (1 + B_crit / B)  # on (S/S_min - 1)(E/E_min - 1) = 1
    pts = pd.DataFrame({"batch_size": B, "S": S, "E": S * B})
    fit = critical.fit_critical(pts, 0.5)
    assert fit["B_noise"] == pytest.approx(B_crit, rel=1e-9)
    assert fit["S_min"] == pytest.approx(S_min, rel=1e-9) and fit["E_min"] == pytest.approx(E_min, rel=1e-9)
    assert fit["r2"] == pytest.approx(1.0) and fit["note"] == ""
    S_noisy = S * np.exp(np.random.default_rng(1).normal(0, 0.02, len(S)))
    noisy = critical.fit_critical(pd.DataFrame({"batch_size": B, "S": S_noisy, "E": S_noisy * B}))
    assert noisy["B_noise"] == pytest.approx(B_crit, rel=0.1) and noisy["S_min"] == pytest.approx(S_min, rel=0.1)
    hs, he = critical.hyperbola(fit["S_min"], fit["E_min"], 8, 1024)
    assert np.allclose((hs / S_min - 1) * (he / E_min - 1), 1)


def test_fit_says_why_it_cannot():
    one = critical.fit_critical(pd.DataFrame({"batch_size": [8], "S": [10.0], "E": [80.0]}))
    assert math.isnan(one["B_noise"]) and "only 1 batch size" in one["note"]
    flat = pd.DataFrame({"batch_size": [8, 16, 32], "S": [100.0, 100.0, 100.0]})
    flat["E"] = flat["S"] * flat["batch_size"]  # more batch, no fewer steps: slope 0
    assert "not determined" in critical.fit_critical(flat)["note"]
    two = critical.fit_critical(pd.DataFrame({"batch_size": [8, 16], "S": [300.0, 200.0], "E": [2400.0, 3200.0]}))
    assert two["B_noise"] == pytest.approx(16.0) and two["S_min"] == pytest.approx(100.0)
    assert "two batch sizes" in two["note"]


def test_fit_intervals_come_from_the_replicates_and_say_when_some_fail():
    B = np.array([8, 32, 128, 512], float)
    S = 100.0 * (1 + 64.0 / B)
    pts = pd.DataFrame({"batch_size": B, "S": S, "E": S * B})
    boot = S * np.exp(np.random.default_rng(0).normal(0, 0.02, (200, len(B))))
    fit = critical.fit_critical(pts, 0.5, boot)
    for k, truth in (("B_noise", 64.0), ("S_min", 100.0), ("E_min", 6400.0)):
        assert fit[f"{k}_lo"] < truth < fit[f"{k}_hi"] < 1.3 * fit[f"{k}_lo"]
    assert fit["note"] == "" and math.isnan(critical.fit_critical(pts, 0.5)["B_noise_lo"])
    flat = np.tile(S[::-1], (200, 1))  # every replicate: steps rise with B
    assert "200 of 200 resamples give no B_noise > 0" in critical.fit_critical(pts, 0.5, flat)["note"]


def write_run(tmp_path, run_id, B, lr, loss, smoothing=0.9, status="complete"):
    d = tmp_path / run_id
    d.mkdir()
    steps = np.arange(1, len(loss) + 1)
    pd.DataFrame({"step": steps, "examples": steps * B, "train_loss": loss,
                  "grad_norm": np.full(len(loss), 1.0 / B)}).to_csv(d / "metrics.csv", index=False)
    (d / "config.json").write_text(json.dumps({"train": {"target_smoothing": smoothing}}))
    return {"run_id": run_id, "path": str(d), "batch_size": B, "lr": lr, "status": status}


def test_curve_table_and_se_points_pick_the_fastest_lr_and_skip_bad_files(tmp_path):
    steps = np.arange(1, 201)
    runs = [write_run(tmp_path, "a", 8, 0.1, 2.0 * 0.98 ** steps, smoothing=0.0),   # <=1 at step 35
            write_run(tmp_path, "b", 8, 0.3, 2.0 * 0.96 ** steps, smoothing=0.0),   # faster: step 17
            write_run(tmp_path, "c", 16, 0.1, np.full(200, 1.5), smoothing=0.0),    # never reaches
            write_run(tmp_path, "d", 16, 0.3, 2.0 * 0.95 ** steps, smoothing=0.0),  # step 14
            write_run(tmp_path, "e", 16, 1.0, 2.0 * 0.9 ** steps, status="diverged")]
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "metrics.csv").write_text("step,train_loss\n\x00garbage,\"")
    runs.append({"run_id": "f", "path": str(tmp_path / "f"), "batch_size": 16, "lr": 3.0, "status": "complete"})
    df = pd.DataFrame(runs)
    table, warnings = critical.curve_table(df, [1.0], after_steps=5)
    assert len(warnings) == 1 and str(tmp_path / "f" / "metrics.csv") in warnings[0]
    assert set(table["run_id"]) == {"a", "b", "c", "d"}  # diverged and unreadable left out
    S = dict(zip(table["run_id"], table["S_ema@1"]))  # the trainer's read-off: first logged step <= 1
    assert (S["a"], S["b"], S["d"]) == (35, 17, 14) and math.isnan(S["c"])
    exact = {r: math.log(2) / -math.log(q) for r, q in (("a", 0.98), ("b", 0.96), ("d", 0.95))}  # 34.3, 17.0, 13.5
    S = dict(zip(table["run_id"], table["S@1"]))  # summarize's: the crossing itself, between logged steps
    assert [S[r] for r in "abd"] == pytest.approx([exact[r] for r in "abd"], rel=0.005) and math.isnan(S["c"])
    assert table.set_index("run_id").loc["a", "E@1"] == pytest.approx(S["a"] * 8)
    assert table.set_index("run_id").loc["b", "drop@1"] == pytest.approx(2 * 0.96 ** 17 - 2 * 0.96 ** 22)
    assert table.set_index("run_id").loc["a", "grad_norm_mean"] == pytest.approx(1 / 8)
    pts = critical.se_points(df, table, 1.0)
    assert list(pts["batch_size"]) == [8, 16] and list(pts["lr"]) == [0.3, 0.3]
    assert list(pts["S"]) == [S["b"], S["d"]] and list(pts["E"]) == [S["b"] * 8, S["d"] * 16]
    assert critical.se_points(df, table, 0.123).empty  # a target never asked for


def test_oscillation_is_larger_for_noisier_curves():
    rng = np.random.default_rng(0)
    trend = np.linspace(2, 0.5, 300)
    quiet = critical.oscillation(pd.DataFrame({"train_loss": trend + rng.normal(0, 0.01, 300)}))
    loud = critical.oscillation(pd.DataFrame({"train_loss": trend + rng.normal(0, 0.1, 300)}))
    assert quiet == pytest.approx(0.01, rel=0.2) and loud == pytest.approx(0.1, rel=0.2)


def test_critical_fit_returns_the_b_noise_replicates_its_interval_is_made_of(tmp_path):
    steps = np.arange(1, 301)
    rng = np.random.default_rng(0)
    runs = pd.DataFrame([write_run(tmp_path, f"r{B}", B, 0.1, (0.1 + 2.0 / (1 + 4.5 * steps / (20 * (1 + 40 / B))))
                                   * np.exp(rng.normal(0, 0.05, len(steps))), smoothing=0.0) for B in (8, 32, 128, 512)])
    table, _ = critical.curve_table(runs, [0.5])
    assert table["b_simple@0.5"].isna().all()  # metrics.csv has no b_simple column: no B_simple
    pts, fit, reps = critical.critical_fit(runs, table, 0.5)
    assert fit["B_noise"] == pytest.approx(40, rel=0.1) and len(reps) == critical.N_BOOT
    assert bootstrap.interval(reps) == (fit["B_noise_lo"], fit["B_noise_hi"])  # the same replicates
    assert np.median(reps) == pytest.approx(fit["B_noise"], rel=0.05)
