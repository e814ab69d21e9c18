"""RunTracker: the per-run bookkeeping both engines share. A fixed trace in gives fixed columns,
decisions and result fields out; its state survives a checkpoint round trip; and the two
engines, fed the same run, write the same columns."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from lrsweep.config import parse_run_config
from lrsweep.datasets import load_data
from lrsweep.results import RunStatus
from lrsweep.training.sequential import train
from lrsweep.training.setup import Budget, budget
from lrsweep.training.tracker import EVAL_COLUMNS, STEP_COLUMNS, RunTracker
from lrsweep.training.vectorized import train_group

from conftest import apply_changes

BASE = {
    "name": "trk",
    "dataset": {"name": "synthetic", "synthetic": {"n_train": 128, "n_val": 32, "classes": 4, "shape": [1, 4, 4]}},
    "model": {"name": "mlp", "hidden": [8]},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "train": {"steps": 12, "batch_size": 16, "eval_every": 4, "device": "cpu"},
}
BUD = Budget(steps_per_epoch=8, total_steps=12, epoch_size=128)


def cfg(**changes):
    return parse_run_config(apply_changes(copy.deepcopy(BASE), changes))


def feed(tracker: RunTracker, losses, start_step: int = 0):
    """Feed a loss trace (correct = 8 of 16 each step); evaluate when told. Returns the decisions."""
    out = []
    for i, loss in enumerate(losses, start=start_step + 1):
        if (i - 1) % BUD.steps_per_epoch == 0:
            tracker.new_epoch(i - 1)
        d = tracker.on_step(i, 0.1, loss, 8, 1.5, 0.01, 0.02)
        if d.evaluate:
            tracker.on_eval(val_loss=loss / 2, val_acc=0.5)
        out.append(d)
        if d.stop:
            break
    return out


def test_a_trace_gives_its_columns_and_result():
    t = RunTracker(cfg(), BUD)
    decisions = feed(t, [2.0] * 12)
    assert [d.evaluate for d in decisions] == [i % 4 == 0 for i in range(1, 13)]
    assert not any(d.stop for d in decisions)
    assert list(t.metrics) == list(STEP_COLUMNS) and list(t.evals) == list(EVAL_COLUMNS)
    assert t.metrics["step"] == list(range(1, 13)) and t.metrics["examples"] == [16 * s for s in range(1, 13)]
    assert t.metrics["train_acc"] == [0.5] * 12 and t.metrics["grad_norm"] == [1.5] * 12
    assert t.evals["step"] == [4, 8, 12] and t.evals["val_loss"] == [1.0] * 3
    assert t.evals["train_loss"] == [2.0] * 3  # the mean over the steps since the last evaluation
    run = t.finish("cpu", "sequential")
    assert run.status is RunStatus.COMPLETE and run.error is None
    s = run.summary
    assert (s["steps"], s["examples"], s["epochs"], s["final_val_loss"]) == (12, 192, 1.5, 1.0)
    assert [e["epoch"] for e in s["epoch_times"]] == [1, 2]
    assert s["data_time_s"] == pytest.approx(0.12) and s["compute_time_s"] == pytest.approx(0.24)
    assert (s["engine"], s["group_size"], s["resumed_at_step"]) == ("sequential", 1, None)


def test_nonfinite_loss_stops_at_once_and_is_recorded():
    t = RunTracker(cfg(), BUD)
    decisions = feed(t, [2.0, 1.9, float("nan"), 1.0])
    assert len(decisions) == 3 and decisions[-1].stop and not decisions[-1].evaluate
    run = t.finish("cpu", "sequential")
    assert run.status is RunStatus.DIVERGED and "loss nan at step 3 (first step: 2)" in run.error
    assert run.summary["stop_reason"] == "nonfinite_loss"
    assert math.isnan(run.summary["final_val_acc"]) and t.metrics["step"] == [1, 2, 3]


def test_a_single_spike_is_not_divergence_but_a_blowup_is():
    spike = RunTracker(cfg(), BUD)
    assert not any(d.stop for d in feed(spike, [2.0, 1.9, 25.0, 1.0, 30.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]))
    run = spike.finish("cpu", "sequential")
    assert run.status is RunStatus.COMPLETE and run.summary["stop_reason"] == "budget"
    blowup = RunTracker(cfg(), BUD)
    decisions = feed(blowup, [2.0, 50.0, 500.0, 5000.0, 1.0])
    # smoothed (EMA 0.9, bias-corrected): 2, 27.7 > 10 x 2 -> stops at step 2
    assert len(decisions) == 2 and decisions[-1].stop
    run = blowup.finish("cpu", "sequential")
    assert run.status is RunStatus.DIVERGED and run.summary["stop_reason"] == "loss_blowup"
    assert "smoothed loss" in run.error and "x the first step's 2" in run.error


def test_recorded_b1_traces_spikes_train_on_and_lr_5_stops_within_3_steps():
    """Real traces (tests/data/b1_traces.json): MNIST MLP 256-256 at B = 1, SGD momentum 0.5. At
    lr 0.02 seven single-example spikes exceed 10x the first loss (the first at step 1595, where
    the old per-step rule stopped the run); at lr 5 the loss explodes from step 2."""
    traces = json.loads((Path(__file__).parent / "data" / "b1_traces.json").read_text())
    spikes = traces["spike_lr_0.02"]
    assert sum(x > 10 * spikes[0] for x in spikes) == 7  # the trace really holds the spikes
    bud = Budget(steps_per_epoch=60000, total_steps=len(spikes), epoch_size=60000)
    c = cfg(**{"train.steps": len(spikes), "train.batch_size": 1, "train.eval_every": 10**6})
    t = RunTracker(c, bud)
    for i, loss in enumerate(spikes, start=1):
        assert not t.on_step(i, 0.02, loss, 1, 1.0, 0.0, 0.0).stop, f"stopped at step {i} (loss {loss})"
    assert t.finish("cpu", "sequential").status is RunStatus.COMPLETE
    blowup = traces["blowup_lr_5"]
    t = RunTracker(c, bud)
    stopped = next(i for i, loss in enumerate(blowup, start=1) if t.on_step(i, 5.0, loss, 0, 1.0, 0.0, 0.0).stop)
    assert stopped <= 3 and t.stop_reason == "loss_blowup"


def test_log_every_thins_the_step_table_but_keeps_the_last_and_nonfinite_steps():
    t = RunTracker(cfg(**{"train.log_every": 5}), BUD)
    feed(t, [2.0] * 12)
    assert t.metrics["step"] == [5, 10, 12]


def test_train_loss_target_on_the_bias_corrected_ema_and_stop_after_target():
    c = cfg(**{"train.target_train_loss": 1.0, "train.target_smoothing": 0.5, "train.stop_after_target": 2})
    t = RunTracker(c, BUD)
    # EMA (bias-corrected, s=0.5) of 2, 2, 0.5, 0.5: 2, 2, 1.143, 0.8 -> reached at step 4
    decisions = feed(t, [2.0, 2.0, 0.5, 0.5, 0.5, 0.5, 0.5])
    assert t.hit_loss["step"] == 4 and t.hit_loss["examples"] == 64
    assert len(decisions) == 6 and decisions[-1].stop and decisions[-1].evaluate  # 2 steps after the target
    res = t.finish("cpu", "sequential").summary["targets"]["train_loss"]
    assert res["target"] == 1.0 and res["step"] == 4


def test_val_acc_target_and_the_monitored_value():
    t = RunTracker(cfg(**{"train.target_val_accuracy": 0.5, "schedule.monitor": "val_acc"}), BUD)
    feed(t, [2.0] * 3)
    assert t.on_eval(1.0, 0.25) == 0.25 and t.hit_acc is None
    assert t.on_eval(1.0, 0.5) == 0.5 and t.hit_acc["step"] == 3


def test_state_dict_round_trip_continues_identically():
    whole = RunTracker(cfg(), BUD)
    feed(whole, [2.0 - 0.1 * i for i in range(12)])
    first = RunTracker(cfg(), BUD)
    feed(first, [2.0 - 0.1 * i for i in range(8)])
    resumed = RunTracker(cfg(), BUD)
    resumed.load_state_dict(copy.deepcopy(first.state_dict()))
    feed(resumed, [2.0 - 0.1 * i for i in range(8, 12)], start_step=8)
    timeless = lambda t: {k: v for k, v in t.metrics.items() if k != "elapsed"}  # noqa: E731
    assert timeless(resumed) == timeless(whole)
    assert {k: v for k, v in resumed.evals.items() if k != "elapsed"} == \
        {k: v for k, v in whole.evals.items() if k != "elapsed"}
    assert resumed.finish("cpu", "sequential").summary["resumed_at_step"] == 8


def test_both_engines_write_identical_columns_for_the_same_run():
    torch.set_num_threads(1)
    c = cfg(**{"train.target_train_loss": 1.2, "train.target_val_accuracy": 0.3})
    data = load_data(c.dataset, torch.device("cpu"))
    seq = train(c, data, torch.device("cpu"))
    (vec,) = train_group([c], data, torch.device("cpu"))
    assert list(seq.metrics) == list(vec.metrics) == list(STEP_COLUMNS)
    assert list(seq.evals) == list(vec.evals) == list(EVAL_COLUMNS)
    for k in ("step", "epoch", "examples", "lr", "batch_size"):
        assert seq.metrics[k] == vec.metrics[k], k
    assert seq.metrics["train_loss"] == pytest.approx(vec.metrics["train_loss"], rel=1e-5)
    assert seq.evals["val_acc"] == pytest.approx(vec.evals["val_acc"], abs=1 / 32)
    assert set(seq.summary) == set(vec.summary)
    assert (seq.summary["engine"], vec.summary["engine"]) == ("sequential", "vectorized")
    assert budget(c, len(data.train_y)).total_steps == seq.summary["steps"] == vec.summary["steps"]
