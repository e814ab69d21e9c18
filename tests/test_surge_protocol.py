"""Document 003's protocol (O11, docs/reproductions.md): runs stop a fixed number of steps after
their train-loss target and are evaluated at the target and at the stop; the denoised judging
(`val_loss_drop_after_target`) reads those two evaluations; docs/repro/o11.py's coarse-to-fine LR
grid and its verdict, on tables made up here."""
from __future__ import annotations

import copy
import math
import random
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lrsweep import storage
from lrsweep.analysis.cells import best_lr_table
from lrsweep.analysis.metrics import METRICS, RESULT_METRICS, TARGET_METRICS, val_loss_drop_after_target
from lrsweep.analysis.runs import load_runs
from lrsweep.config import parse_run_config
from lrsweep.config.grid import build_sweep
from lrsweep.datasets import load_data
from lrsweep.training.sequential import train
from lrsweep.training.setup import Budget
from lrsweep.training.tracker import RunTracker
from lrsweep.training.vectorized import train_group

from conftest import apply_changes
from sweepdirs import record

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "docs"))  # docs/repro/: the page's observation blocks
from repro import o11  # noqa: E402

CPU = torch.device("cpu")
BASE = {
    "name": "surge",
    "dataset": {"name": "synthetic", "synthetic": {"n_train": 128, "n_val": 32, "classes": 4, "shape": [1, 4, 4]}},
    "model": {"name": "mlp", "hidden": [8]},
    "optimizer": {"name": "adam", "lr": 0.01, "betas": [0.0, 0.0]},
    "train": {"steps": 40, "batch_size": 16, "eval_every": 1000, "device": "cpu"},
}
BUD = Budget(steps_per_epoch=8, total_steps=40, epoch_size=128)


def cfg(**changes):
    return parse_run_config(apply_changes(copy.deepcopy(BASE), changes))


def evaluated_steps(tracker: RunTracker, losses) -> list[int]:
    """Feed a loss trace; the steps the tracker asked to evaluate."""
    out = []
    for i, loss in enumerate(losses, start=1):
        d = tracker.on_step(i, 0.01, loss, 8, 1.0, 0.0, 0.0)
        if d.evaluate:
            tracker.on_eval(loss, 0.5)
            out.append(i)
        if d.stop:
            break
    return out


# --------------------------------------------------------------------------- the tracker

def test_the_step_that_reaches_the_target_is_evaluated_when_the_run_stops_after_it():
    trace = [2.0, 2.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]  # bias-corrected EMA (s = 0.5) reaches 1.0 at step 4
    protocol = cfg(**{"train.target_train_loss": 1.0, "train.target_smoothing": 0.5, "train.stop_after_target": 3})
    t = RunTracker(protocol, BUD)
    assert evaluated_steps(t, trace) == [4, 7] and t.hit_loss["step"] == 4
    # a target without stop_after_target (O5's S and E, O8's time to target) adds no evaluation
    plain = RunTracker(cfg(**{"train.target_train_loss": 1.0, "train.target_smoothing": 0.5}), BUD)
    assert evaluated_steps(plain, trace) == [] and plain.hit_loss["step"] == 4


def test_the_vectorized_block_bound_never_passes_a_hit():
    rng = random.Random(0)
    for _ in range(200):
        s = rng.choice([0.0, 0.5, 0.9, 0.99])
        t = RunTracker(cfg(**{"train.target_train_loss": 0.5, "train.target_smoothing": s, "train.stop_after_target": 1,
                              "train.steps": 400}), Budget(8, 400, 128))
        bounds, loss = [], rng.uniform(1, 3)
        for step in range(1, 400):
            bounds.append(t.steps_until_target_possible())  # said before step `step`
            loss = max(0.0, loss * rng.uniform(0.3, 1.05))  # sometimes a cliff: the bound must hold anyway
            t.on_step(step, 0.01, loss, 8, 1.0, 0.0, 0.0)
            if t.hit_loss:
                break
        if t.hit_loss:
            h = t.hit_loss["step"]
            assert all(h >= n + k for n, k in enumerate(bounds)), (s, h)  # never inside a block
    far = RunTracker(cfg(**{"train.target_train_loss": 0.1, "train.target_smoothing": 0.9}), BUD)
    far.ema = 1.0
    assert far.steps_until_target_possible() == 21  # 0.9^21 = 0.109 > 0.1: blocks of 21 steps are safe


def test_both_engines_evaluate_at_the_target_and_at_the_stop():
    torch.set_num_threads(1)
    c = cfg(**{"train.target_train_loss": 1.2, "train.stop_after_target": 5, "train.steps": 200})
    data = load_data(c.dataset, CPU)
    seq = train(c, data, CPU)
    hit = seq.summary["targets"]["train_loss"]["step"]
    assert 1 < hit and seq.summary["stop_reason"] == "stop_after_target"
    assert seq.evals["step"] == [hit, hit + 5]
    (vec,) = train_group([c], data, CPU)  # blocks of train.sync_every = 16 steps: the hit lies inside one
    assert vec.evals["step"] == seq.evals["step"]
    assert vec.evals["val_loss"] == pytest.approx(seq.evals["val_loss"], rel=1e-5)


# --------------------------------------------------------------------------- the metric

def _sweep(tmp_path, runs: dict) -> Path:
    """A sweep folder, one run per LR: lr -> (result fields, evals rows [(step, val_loss)])."""
    raw = {**copy.deepcopy(BASE), "train": {**BASE["train"], "target_train_loss": 1.0, "stop_after_target": 5},
           "sweep": {"lr": sorted(runs)}}
    d = tmp_path / "surge"
    d.mkdir()
    sweep = build_sweep(raw)
    storage.write_sweep_file(d, sweep.raw)
    for spec in sweep.runs:
        fields, evals = runs[spec.config.optimizer.lr]
        storage.write_run(d, spec.run_id, spec.config.model_dump(mode="json"), {"step": [1], "train_loss": [2.0]},
                          {"step": [s for s, _ in evals], "val_loss": [v for _, v in evals]},
                          record(spec, final_val_acc=0.9, **fields))
    return d


def _reached(step, stop_reason="stop_after_target"):
    """result.json's fields of a run that reached its train-loss target at `step` (RunResult
    writes the target's step both nested and flat)."""
    return {"stop_reason": stop_reason, "steps_to_train_loss": step,
            "targets": {"train_loss": {"target": 1.0, "step": step, "examples": 16 * step}, "val_acc": None}}


def test_val_loss_drop_after_target_reads_the_evaluations_at_the_target_and_the_stop(tmp_path):
    d = _sweep(tmp_path, {
        0.001: (_reached(10), [(10, 1.0), (15, 0.9)]),
        0.003: (_reached(8), [(8, 1.1), (13, 0.8)]),  # the largest drop: the best LR
        0.01: (_reached(6), [(6, 1.0), (11, 1.05)]),  # the loss rose after the target
        0.03: ({"stop_reason": "budget", "targets": {"train_loss": {"target": 1.0}, "val_acc": None}}, [(40, 2.0)]),
        0.1: (_reached(20, "budget"), [(20, 1.0), (25, 0.5)]),  # the budget ended first: not the protocol's window
        0.3: (_reached(7), [(10, 1.0), (12, 0.2)]),  # no evaluation at its target (an older lrsweep)
    })
    runs = load_runs(d)
    drop = val_loss_drop_after_target(runs.df).set_axis(runs.df["lr"])
    assert drop[0.001] == pytest.approx(0.1) and drop[0.003] == pytest.approx(0.3) and drop[0.01] == pytest.approx(-0.05)
    assert drop[[0.03, 0.1, 0.3]].isna().all()
    best = best_lr_table(runs, "val_loss_drop_after_target").iloc[0]
    assert best["best_lr"] == 0.003 and best["val_loss_drop_after_target"] == pytest.approx(0.3)
    assert METRICS["val_loss_drop_after_target"] is True and "val_loss_drop_after_target" in TARGET_METRICS
    assert "val_loss_drop_after_target" not in RESULT_METRICS  # evals.csv, not result.json


def test_summarize_ranks_by_the_denoised_drop(tmp_path):
    from typer.testing import CliRunner

    from lrsweep.cli import app

    d = _sweep(tmp_path, {0.001: (_reached(10), [(10, 1.0), (15, 0.95)]),
                          0.003: (_reached(8), [(8, 1.0), (13, 0.7)]),
                          0.01: (_reached(6), [(6, 1.0), (11, 0.9)])})
    res = CliRunner().invoke(app, ["summarize", str(d), "--metric", "val_loss_drop_after_target", "--no-plots",
                                   "--format", "csv"])
    assert res.exit_code == 0, res.output
    best = pd.read_csv(__import__("io").StringIO(res.stdout))
    assert list(best["best_lr"]) == [0.003]


# --------------------------------------------------------------------------- docs/repro/o11.py

def _optima(B, lr, spread):
    """A best-LR table as summarize writes it: optimum and a multiplicative 90% interval."""
    lr, spread = np.asarray(lr, float), np.asarray(spread, float)
    return pd.DataFrame({"batch_size": B, "lr_opt": lr, "lr_opt_lo": lr / spread, "lr_opt_hi": lr * spread,
                         "bracketed": True})


B = [4, 16, 64, 256, 1024, 4096, 16384]


def test_a_resolved_rise_and_fall_is_a_surge():
    law = [o11.surge_law_ratio(b, 300) * 1e-3 for b in B]  # document 003's eq. 2, peak at B = 300
    v = o11.judge_surge(_optima(B, law, [1.05] * 7), b_noise=300)
    assert v["word"] == "surge reproduced" and v["peak_B"] == 256 and v["rise"] and v["fall"]


def test_a_curve_that_keeps_rising_past_b_noise_is_not_a_surge():
    rising = [1e-4 * b ** 0.3 for b in B]
    v = o11.judge_surge(_optima(B, rising, [1.1] * 7), b_noise=300)
    assert v["word"] == "not reproduced" and not v["fall"]
    assert v["predicted"] < 0 < v["measured_lo"]  # the law's fall lies below the whole measured interval
    # the same curve with intervals too wide to exclude the law's fall decides nothing
    assert o11.judge_surge(_optima(B, rising, [4.0] * 7), b_noise=300)["word"] == "inconclusive"


def test_a_fall_within_the_intervals_is_inconclusive_and_so_are_too_few_points():
    flat_peak = [1e-3, 1.2e-3, 1.3e-3, 1.35e-3, 1.3e-3, 1.25e-3, 1.2e-3]
    v = o11.judge_surge(_optima(B, flat_peak, [1.3] * 7), b_noise=2048)
    assert v["word"] == "inconclusive" and not v["fall"]  # the law's 0.2-decade fall to B = 16384 fits the intervals
    # with B_noise = 64 the law would fall 0.9 decades by B = 16384: these intervals exclude that
    assert o11.judge_surge(_optima(B, flat_peak, [1.3] * 7), b_noise=64)["word"] == "not reproduced"
    few = _optima(B[:2], [1e-3, 2e-3], [1.1, 1.1])
    assert o11.judge_surge(few)["word"] == "inconclusive"
    unbracketed = _optima(B, flat_peak, [1.05] * 7).assign(bracketed=False)
    assert o11.judge_surge(unbracketed)["n"] == 0  # an optimum at the grid's edge is a bound, not a point


def test_growth_with_training_needs_intervals_apart():
    assert o11.grows([(0.6, 100, 80, 120), (0.3, 300, 200, 400)]) == "grows"
    assert o11.grows([(0.6, 100, 80, 220), (0.3, 150, 110, 200)]) == "not resolved"
    assert o11.grows([(0.6, 300, 250, 350), (0.3, 100, 80, 120)]) == "falls"
    assert o11.grows([(0.6, 100, math.nan, math.nan), (0.3, 300, 200, 400)]) == "not determined"


def test_the_refined_pass_covers_each_coarse_optimum_on_the_shared_lattice():
    optima = pd.DataFrame([
        {"optimizer.betas": (0.0, 0.0), "batch_size": 16, "center": 10 ** -3.33, "below": 0.2, "above": 0.2},  # off the lattice
        {"optimizer.betas": (0.0, 0.0), "batch_size": 16, "center": 10 ** -3.0, "below": 0.2, "above": 0.4},  # at the high edge
        {"optimizer.betas": (0.9, 0.999), "batch_size": 16, "center": math.nan, "below": math.nan, "above": math.nan},  # no target
    ])
    coarse = {-34: 0.000398107170553}  # the coarse grid's own value at 10^-3.4
    cells = o11.refined_cells(optima, coarse)
    assert list(cells["k"]) == [-35, -34, -33, -32, -31, -30, -29, -28, -27, -26]  # the union, wider past the edge
    assert cells.loc[cells.k == -34, "lr"].item() == 0.000398107170553  # the same run as the coarse one
    assert cells.loc[cells.k == -30, "lr"].item() == 0.001
    assert set(cells["optimizer.betas"]) == {(0.0, 0.0)}
