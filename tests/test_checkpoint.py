"""Per-epoch checkpoints: a run killed mid-epoch resumes from its last epoch end and gives the
numbers of an uninterrupted run; the checkpoint is read with weights_only=True and deleted
once the run's result is written."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from lrsweep import storage
from lrsweep import sweep as sweep_mod
from lrsweep.datasets import load_data
from lrsweep.config.grid import build_sweep
from lrsweep.training.checkpoint import CHECKPOINT
from lrsweep.training.sequential import train

from conftest import make_config

REPO = Path(__file__).resolve().parents[1]
TIMES = ("data_time", "compute_time", "elapsed", "time_s", "data_time_s", "compute_time_s", "epoch_times",
         "resumed_at_step", "targets", "seconds")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread


class Killed(BaseException):
    """Stands in for kill -9: nothing after it runs (BaseException: not caught as a failure)."""


def _config(**changes):
    # A fresh subset of 224 of the 256 examples each epoch, B=32: 7 steps an epoch; 44 steps.
    # Adam + plateau exercise optimizer and schedule state; evals every 6 steps fall mid-epoch.
    raw = make_config(**{"optimizer.name": "adam", "optimizer.lr": 0.01, "train.steps": 44, "train.batch_size": 32,
                         "train.eval_every": 6, "train.checkpoint": "epoch", "train.target_train_loss": 0.3,
                         "schedule.name": "plateau", "schedule.patience": 0, "schedule.monitor": "val_loss",
                         "dataset.epoch_subset": 224, "sweep": None, **changes})
    (spec,) = build_sweep(raw).runs
    return spec.config


def _numbers(out):
    m = pd.DataFrame(out.metrics).drop(columns=["data_time", "compute_time", "elapsed"])
    e = pd.DataFrame(out.evals).drop(columns=["elapsed"])
    s = {k: v for k, v in out.summary.items() if k not in TIMES}
    hit = (out.summary["targets"]["train_loss"] or {}).get("step")
    return m, e, s, hit


def test_a_run_killed_mid_epoch_resumes_from_its_checkpoint_with_the_same_numbers(tmp_path):
    cfg = _config()
    data = load_data(cfg.dataset, "cpu")
    ref = train(cfg, data, torch.device("cpu"))

    run_dir = tmp_path / "run"
    seen = []

    def kill_at_step_31(step, total, loss, lr):  # epoch ends: 7, 14, 21, 28, 35, 42
        seen.append(step)
        if step == 31:
            raise Killed

    with pytest.raises(Killed):
        train(cfg, data, torch.device("cpu"), on_step=kill_at_step_31, run_dir=run_dir)
    state = torch.load(run_dir / CHECKPOINT, weights_only=True)  # only tensors and plain containers
    assert state["loop"]["step"] == 28 and not list(run_dir.glob("*.tmp"))

    seen.clear()
    resumed = train(cfg, data, torch.device("cpu"), on_step=lambda s, *a: seen.append(s), run_dir=run_dir)
    assert seen[0] == 29 and seen[-1] == 44 and resumed.summary["resumed_at_step"] == 28
    m0, e0, s0, hit0 = _numbers(ref)
    m1, e1, s1, hit1 = _numbers(resumed)
    pd.testing.assert_frame_equal(m0, m1)
    pd.testing.assert_frame_equal(e0, e1)
    assert s0 == s1 and hit0 == hit1 and len(m1) == 44
    assert resumed.status == ref.status == "complete"
    assert [t["epoch"] for t in resumed.summary["epoch_times"]] == [t["epoch"] for t in ref.summary["epoch_times"]]


def test_checkpoint_none_writes_nothing_and_is_not_part_of_the_run_id(tmp_path):
    cfg = _config(**{"train.checkpoint": "none"})
    train(cfg, load_data(cfg.dataset, "cpu"), torch.device("cpu"), run_dir=tmp_path)
    assert not (tmp_path / CHECKPOINT).exists()
    ids = {build_sweep(make_config(**{"train.checkpoint": c})).runs[0].run_id for c in ("none", "epoch")}
    assert len(ids) == 1


def test_a_checkpoint_of_another_config_is_ignored(tmp_path):
    cfg = _config()
    data = load_data(cfg.dataset, "cpu")
    with pytest.raises(Killed):
        train(cfg, data, torch.device("cpu"), run_dir=tmp_path,
              on_step=lambda s, *a: (_ for _ in ()).throw(Killed) if s == 20 else None)
    other = _config(**{"optimizer.lr": 0.02})
    out = train(other, data, torch.device("cpu"), run_dir=tmp_path)
    assert out.summary["resumed_at_step"] is None


def test_sigkill_mid_run_then_rerun_resumes_and_the_driver_removes_the_checkpoint(tmp_path, write_config):
    # One long-ish run (~2-4 s of training, 12 epochs of 128 steps); kill -9 the CLI once a
    # checkpoint exists, at a random point of a later epoch.
    raw = make_config(name="ckpt", sweep=None, **{"dataset.synthetic.n_train": 4096, "train.steps": 1536,
                                                   "train.batch_size": 32, "train.eval_every": "epoch",
                                                   "train.log_every": 10, "train.checkpoint": "epoch"})
    cfg = write_config(raw)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lrsweep", "run", str(cfg), "--out", str(out), "--workers", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (spec,) = build_sweep(raw).runs
    ckpt = out / "ckpt" / spec.run_id / CHECKPOINT
    deadline = time.monotonic() + 60
    while not ckpt.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(random.uniform(0.1, 0.6))
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert ckpt.exists() and not (ckpt.parent / "result.json").exists(), "finished before the kill: test proves nothing"
    at = torch.load(ckpt, weights_only=True)["loop"]["step"]
    assert 0 < at < 1536

    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    res = json.loads((ckpt.parent / "result.json").read_text())
    assert res["status"] == "complete" and res["steps"] == 1536 and res["resumed_at_step"] >= at
    assert not ckpt.exists() and not list((out / "ckpt").rglob("*.tmp"))

    ref = sweep_mod.run_sweep(build_sweep(raw), tmp_path / "ref")  # uninterrupted, same numbers
    a = pd.read_csv(ckpt.parent / "metrics.csv").drop(columns=["data_time", "compute_time", "elapsed"])
    b = pd.read_csv(ref.sweep_dir / spec.run_id / "metrics.csv").drop(columns=["data_time", "compute_time", "elapsed"])
    pd.testing.assert_frame_equal(a, b)
    assert len(pd.read_csv(out / "ckpt" / storage.INDEX)) == 1
