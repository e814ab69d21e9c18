"""train.stop_if_stalled: a run whose smoothed loss has not fallen by min_drop from a given step
on is stopped as `stalled`, in both engines, and scored like a diverged run."""
from __future__ import annotations

import copy
import json

import pytest
from typer.testing import CliRunner

from lrsweep.analysis.runs import load_runs
from lrsweep.analysis.cells import best_lr_table
from lrsweep.cli import app
from lrsweep.config import parse_run_config
from lrsweep.datasets import load_data
from lrsweep.results import RunStatus
from lrsweep.training.sequential import train
from lrsweep.training.setup import Budget
from lrsweep.training.tracker import RunTracker, StopReason
from lrsweep.training.vectorized import train_group

from conftest import apply_changes, make_config

runner = CliRunner()
BUD = Budget(steps_per_epoch=10, total_steps=40, epoch_size=160)
TRK = {
    "name": "stall",
    "dataset": {"name": "synthetic", "synthetic": {"n_train": 160, "n_val": 32, "classes": 4, "shape": [1, 4, 4]}},
    "model": {"name": "mlp", "hidden": [8]},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "train": {"steps": 40, "batch_size": 16, "eval_every": 10, "device": "cpu",
              "stop_if_stalled": {"steps": 10, "min_drop": 0.2}},
}


def cfg(**changes):
    return parse_run_config(apply_changes(copy.deepcopy(TRK), changes))


def feed(tracker, losses):
    for i, loss in enumerate(losses, start=1):
        d = tracker.on_step(i, 0.1, loss, 4, 1.0, 0.0, 0.0)
        if d.evaluate:
            tracker.on_eval(loss, 0.25)
        if d.stop:
            return i
    return None


def test_a_flat_loss_stalls_at_the_judging_step():
    t = RunTracker(cfg(), BUD)
    assert feed(t, [1.4] * 40) == 10
    assert t.status is RunStatus.STALLED and t.stop_reason == StopReason.STALLED
    assert "stop_if_stalled" in t.reason and "step 10" in t.reason


def test_a_falling_loss_trains_to_its_budget():
    t = RunTracker(cfg(), BUD)
    assert feed(t, [1.4 * 0.9 ** i for i in range(40)]) is None
    assert t.status is RunStatus.COMPLETE and t.stop_reason == StopReason.BUDGET


def test_a_loss_that_falls_then_climbs_back_stalls_later():
    """Judged on every step from `steps` on, not once: a run that learned and then went back to
    where it started is stopped when its smoothed loss gets back above the level."""
    t = RunTracker(cfg(), BUD)
    losses = [1.4 * 0.8 ** i for i in range(15)] + [1.4] * 25
    stop = feed(t, losses)
    assert stop is not None and stop > 15 and t.status is RunStatus.STALLED


def test_epochs_form_and_off_by_default():
    t = RunTracker(cfg(**{"train.stop_if_stalled": {"epochs": 2, "min_drop": 0.2}}), BUD)
    assert feed(t, [1.4] * 40) == 20
    t = RunTracker(cfg(**{"train.stop_if_stalled": None}), BUD)
    assert feed(t, [1.4] * 40) is None and t.status is RunStatus.COMPLETE


@pytest.mark.parametrize("bad, field", [({"min_drop": 0.1}, "steps, epochs"), ({"steps": 5, "epochs": 1}, "steps, epochs"),
                                        ({"steps": 5, "min_drop": 1.5}, "min_drop")])
def test_bad_stall_configs_are_refused(bad, field):
    with pytest.raises(Exception, match=field):
        cfg(**{"train.stop_if_stalled": bad})


def _results(tmp_path, engine, lrs):
    raw = make_config(**{"train.stop_if_stalled": {"steps": 8, "min_drop": 0.05}, "train.steps": 24,
                         "train.engine": engine, "sweep.lr": lrs, "sweep.batch_size": [16],
                         "optimizer.momentum": 0.0})
    path = tmp_path / f"{engine}.yaml"
    import yaml
    path.write_text(yaml.safe_dump(raw))
    r = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / engine), "--workers", "1"], env={"COLUMNS": "200"})
    return r, tmp_path / engine / "tiny"


@pytest.mark.parametrize("engine", ["sequential", "vectorized"])
def test_engines_stop_a_tiny_lr_as_stalled_and_summarize_scores_it_like_diverged(tmp_path, engine, one_thread):
    r, folder = _results(tmp_path, engine, [1e-6, 0.5])
    assert r.exit_code == 0, r.output
    results = {json.loads(p.read_text())["lr"]: json.loads(p.read_text()) for p in folder.glob("*/result.json")}
    stalled = results[1e-6]
    assert stalled["status"] == "stalled" and stalled["stop_reason"] == "stalled"
    assert stalled["steps"] == 8  # judged, and stopped, at step 8 (steps past it are dropped)
    assert results[0.5]["status"] == "complete" and results[0.5]["steps"] == 24
    runs = load_runs(folder)
    best = best_lr_table(runs, "final_val_acc")
    assert float(best["best_lr"].iloc[0]) == 0.5  # the stalled LR never wins


def test_only_stalled_runs_are_retried_with_retry_stalled(tmp_path, one_thread):
    r, folder = _results(tmp_path, "sequential", [1e-6])
    assert r.exit_code == 0
    [res] = folder.glob("*/result.json")
    before = res.stat().st_mtime_ns
    r = runner.invoke(app, ["run", str(tmp_path / "sequential.yaml"), "--out", str(tmp_path / "sequential"), "--workers", "1"])
    assert r.exit_code == 0 and res.stat().st_mtime_ns == before
    r = runner.invoke(app, ["run", str(tmp_path / "sequential.yaml"), "--out", str(tmp_path / "sequential"), "--workers", "1",
                            "--retry-stalled"])
    assert r.exit_code == 0 and res.stat().st_mtime_ns != before


def test_both_engines_stall_the_same_run_at_the_same_step(one_thread):
    c = cfg(**{"optimizer.lr": 1e-7, "train.stop_if_stalled": {"steps": 6, "min_drop": 0.05}})
    data = load_data(c.dataset)
    import torch
    seq = train(c, data, torch.device("cpu"))
    [vec] = train_group([c], data, torch.device("cpu"))
    assert seq.status is vec.status is RunStatus.STALLED
    assert seq.summary["steps"] == vec.summary["steps"] == 6
    assert seq.metrics["train_loss"] == pytest.approx(vec.metrics["train_loss"], rel=1e-4)
