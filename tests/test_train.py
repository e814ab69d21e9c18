"""The training loop with every optimizer and schedule, through the real trainer."""
import math

import pytest
import torch

from lrsweep.config import OPTIMIZERS, SCHEDULES
from lrsweep.datasets import load_data
from lrsweep.config.grid import build_sweep
from lrsweep.schedules import lr_at
from lrsweep.training.sequential import train
from lrsweep.training.setup import budget

from conftest import make_config

LR = {"sgd": 0.1, "adam": 3e-3, "adamw": 3e-3, "rmsprop": 1e-3, "adagrad": 0.05, "adafactor": 1e-2, "signsgd": 1e-3}


def one_run(**changes):
    spec = build_sweep(make_config(sweep={}, **changes)).runs[0]
    data = load_data(spec.config.dataset, "cpu")
    return spec.config, train(spec.config, data, torch.device("cpu"))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_trains(name):
    cfg, out = one_run(**{"optimizer": {"name": name, "lr": LR[name]}, "train.steps": 40, "train.batch_size": 32})
    assert out.status == "complete"
    losses = out.metrics["train_loss"]
    assert sum(losses[-8:]) / 8 < 0.8 * sum(losses[:4]) / 4, (name, losses[:4], losses[-8:])


@pytest.mark.parametrize("name", SCHEDULES)
def test_every_schedule_sets_the_logged_lr(name):
    sched = {"name": name, "warmup_steps": 3, "stepvalues": [10, 20], "gamma": 0.99 if name == "exp" else 0.5}
    cfg, out = one_run(**{"schedule": sched, "optimizer.lr": 0.05, "train.steps": 30, "train.batch_size": 16,
                          "train.eval_every": 5})
    assert out.status == "complete"
    b = budget(cfg, 256)
    if name != "plateau":  # plateau reacts to evaluations; its pure part is lr_at
        want = [lr_at(cfg.schedule, 0.05, s, b.total_steps, b.steps_per_epoch) for s in range(30)]
        assert out.metrics["lr"] == pytest.approx(want)
    assert out.metrics["lr"][0] == pytest.approx(0.05 / 3)  # warmup: the first step uses lr / W


def test_lr_scaling_reaches_the_optimizer():
    cfg, out = one_run(**{"lr_scaling": {"rule": "linear", "base_batch_size": 8}, "train.batch_size": 32,
                          "optimizer.lr": 0.01, "train.steps": 5})
    assert out.metrics["lr"] == pytest.approx([0.04] * 5)
    assert out.summary["lr"] == pytest.approx(0.04) and out.summary["nominal_lr"] == 0.01


def test_divergence_stops_the_run():
    cfg, out = one_run(**{"optimizer.lr": 100.0, "train.steps": 50, "train.batch_size": 32})
    assert out.status == "diverged" and out.summary["steps"] < 50
    assert math.isnan(out.summary["final_val_acc"])


def test_epoch_subset_and_budget_in_examples():
    cfg, out = one_run(**{"dataset.epoch_subset": 64, "train.steps": None, "train.examples": 200, "train.batch_size": 16})
    assert out.summary["steps"] == 13 and out.summary["steps_per_epoch"] == 4  # ceil(200/16); 64/16
    assert [e["epoch"] for e in out.summary["epoch_times"]] == [1, 2, 3, 4]
