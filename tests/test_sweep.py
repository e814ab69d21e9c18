"""Running sweeps: training works, divergence and failures are results, resume is exactly-once."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from lrsweep.training import sequential
from lrsweep import storage
from lrsweep import sweep as sweep_mod
from lrsweep.errors import LockedError
from lrsweep.events import RunFinished, RunStarted, Step, SweepFinished, SweepStarted
from lrsweep.config.grid import build_sweep
from lrsweep.analysis.runs import load_runs

from conftest import make_config

REPO = Path(__file__).resolve().parents[1]


def run(raw, tmp_path, **kw):
    return sweep_mod.run_sweep(build_sweep(raw), tmp_path / "runs", **kw)


def test_training_on_synthetic_lowers_the_loss(tmp_path):
    out = run(make_config(sweep={"lr": [0.05]}, **{"train.steps": 60, "train.batch_size": 32}), tmp_path)
    (run_dir,) = [p for p in out.sweep_dir.iterdir() if p.is_dir()]
    m = pd.read_csv(run_dir / "metrics.csv")
    assert len(m) == 60 and list(m["step"]) == list(range(1, 61))
    assert m["train_loss"].iloc[-10:].mean() < 0.5 * m["train_loss"].iloc[:5].mean()
    res = json.loads((run_dir / "result.json").read_text())
    assert res["status"] == "complete" and res["final_val_acc"] > 0.5
    e = pd.read_csv(run_dir / "evals.csv")
    assert list(e["step"]) == [10, 20, 30, 40, 50, 60]
    assert (m["grad_norm"] > 0).all() and (m["examples"] == m["step"] * 32).all()
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["optimizer"]["lr"] == 0.05 and (out.sweep_dir / "sweep.yaml").is_file()


def test_same_config_and_seed_give_the_same_numbers(tmp_path):
    raw = make_config(sweep={"lr": [0.05]})
    a = run(raw, tmp_path / "a")
    b = run(raw, tmp_path / "b")
    ma = pd.read_csv(next(p for p in a.sweep_dir.iterdir() if p.is_dir()) / "metrics.csv")
    mb = pd.read_csv(next(p for p in b.sweep_dir.iterdir() if p.is_dir()) / "metrics.csv")
    pd.testing.assert_series_equal(ma["train_loss"], mb["train_loss"])
    c = run(make_config(sweep={"lr": [0.05], "seed": [1]}), tmp_path / "c")
    mc = pd.read_csv(next(p for p in c.sweep_dir.iterdir() if p.is_dir()) / "metrics.csv")
    assert not ma["train_loss"].equals(mc["train_loss"])


def test_divergence_is_caught_and_the_sweep_goes_on(tmp_path):
    out = run(make_config(sweep={"lr": [0.05, 50.0]}, **{"train.steps": 40}), tmp_path)
    df = load_runs(out.sweep_dir).df
    by_lr = df.set_index("nominal_lr")
    assert by_lr.loc[50.0, "status"] == "diverged" and "loss" in by_lr.loc[50.0, "error"]
    assert by_lr.loc[50.0, "steps"] < 40
    assert by_lr.loc[0.05, "status"] == "complete" and by_lr.loc[0.05, "steps"] == 40
    assert out.counts == {"complete": 1, "diverged": 1}


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    real = sequential.train

    def flaky(cfg, *a, **k):
        if cfg.optimizer.lr == 0.1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(cfg, *a, **k)

    monkeypatch.setattr(sequential, "train", flaky)
    out = run(make_config(sweep={"lr": [0.01, 0.1]}), tmp_path)
    df = load_runs(out.sweep_dir).df
    failed = df[df.status == "failed"]
    assert len(failed) == 1 and "out of memory" in failed.iloc[0]["error"]
    assert (df.status == "complete").sum() == 1
    res = json.loads((out.sweep_dir / failed.iloc[0]["run_id"] / "result.json").read_text())
    assert res["status"] == "failed" and res["error"] == "RuntimeError: CUDA out of memory (simulated)"
    assert "flaky" in res["traceback"] and res["steps"] is None
    # failed runs are kept on a rerun, and redone with retry
    monkeypatch.setattr(sequential, "train", real)
    again = run(make_config(sweep={"lr": [0.01, 0.1]}), tmp_path)
    assert again.skipped == 2 and again.counts == {}
    retried = run(make_config(sweep={"lr": [0.01, 0.1]}), tmp_path, retry=("failed",))
    assert retried.counts == {"complete": 1}
    index = pd.read_csv(out.sweep_dir / "runs.csv")
    assert len(index) == 2 and set(index.status) == {"complete"}


def test_the_driver_reports_each_run_started_and_finished_between_sweep_start_and_end(tmp_path):
    (done_id,) = storage.finished_ids(run(make_config(sweep={"lr": [0.01]}), tmp_path).sweep_dir)
    events = []
    out = run(make_config(sweep={"lr": [0.01, 0.1, 50.0]}), tmp_path, callback=events.append)
    assert events[0] == SweepStarted(total=3, done=1, pending=2, executor="1 worker (in-process)")
    assert events[-1] == SweepFinished({"complete": 1, "diverged": 1}) and out.counts == events[-1].counts
    kinds = [type(e).__name__ for e in events[1:-1] if not isinstance(e, Step)]
    assert kinds == ["RunStarted", "RunFinished"] * 2  # one unit at a time, in process
    started = [e for e in events if isinstance(e, RunStarted)]
    finished = [e for e in events if isinstance(e, RunFinished)]
    assert [(e.index, e.pending, e.worker) for e in started] == [(0, 2, 0), (1, 2, 0)]
    assert [e.run_id for e in started] == [e.run_id for e in finished] and done_id not in {e.run_id for e in started}
    for e in finished:  # reported once its files are written
        on_disk = json.loads((out.sweep_dir / e.run_id / "result.json").read_text())
        assert e.worker == 0 and e.axes == on_disk["axes"] and e.axes["lr"] in (0.1, 50.0)
        assert (e.result["run_id"], e.result["status"]) == (on_disk["run_id"], on_disk["status"])
    steps = [e for e in events if isinstance(e, Step)]
    assert steps and {e.run_id for e in steps} == {e.run_id for e in started}


def test_rerun_skips_finished_and_new_axis_values_run_alone(tmp_path):
    first = run(make_config(sweep={"lr": [0.01, 0.1]}), tmp_path)
    assert first.counts == {"complete": 2}
    mtimes = {p.name: (p / "result.json").stat().st_mtime_ns for p in first.sweep_dir.iterdir() if p.is_dir()}
    second = run(make_config(sweep={"lr": [0.01, 0.1, 0.03]}), tmp_path)
    assert second.skipped == 2 and second.counts == {"complete": 1}
    for name, t in mtimes.items():
        assert (first.sweep_dir / name / "result.json").stat().st_mtime_ns == t
    assert len(pd.read_csv(first.sweep_dir / "runs.csv")) == 3


def test_unfinished_run_folder_is_redone(tmp_path):
    first = run(make_config(sweep={"lr": [0.01]}), tmp_path)
    (run_dir,) = [p for p in first.sweep_dir.iterdir() if p.is_dir()]
    (run_dir / "result.json").unlink()  # as if killed before the result was written
    again = run(make_config(sweep={"lr": [0.01]}), tmp_path)
    assert again.counts == {"complete": 1}


def test_second_writer_is_refused(tmp_path):
    sweep = build_sweep(make_config())
    d = sweep_mod.sweep_dir_for(sweep, tmp_path / "runs")
    with storage.SweepLock(d):
        with pytest.raises(LockedError, match="in use by another lrsweep run"):
            sweep_mod.run_sweep(sweep, tmp_path / "runs")


def test_targets_are_recorded(tmp_path):
    out = run(make_config(sweep={"lr": [0.05]}, **{"train.steps": 60, "train.batch_size": 32,
                                                    "train.target_train_loss": 0.8, "train.target_val_accuracy": 0.5}),
              tmp_path)
    res = json.loads(next(p for p in out.sweep_dir.iterdir() if p.is_dir()).joinpath("result.json").read_text())
    assert 0 < res["steps_to_train_loss"] <= 60 and res["examples_to_train_loss"] == 32 * res["steps_to_train_loss"]
    assert res["steps_to_target"] == res["steps_to_train_loss"] and res["time_to_target"] > 0
    assert res["steps_to_val_acc"] in (10, 20, 30, 40, 50, 60)


def test_stop_after_target(tmp_path):
    out = run(make_config(sweep={"lr": [0.05]}, **{"train.steps": 200, "train.batch_size": 32,
                                                    "train.target_train_loss": 1.0, "train.stop_after_target": 5}),
              tmp_path)
    res = json.loads(next(p for p in out.sweep_dir.iterdir() if p.is_dir()).joinpath("result.json").read_text())
    assert res["steps"] == res["steps_to_train_loss"] + 5 < 200


KILL_CONFIG = make_config(name="killme", sweep={"lr": {"logspace": [0.01, 0.1, 6]}, "batch_size": [16]},
                          **{"train.steps": 150})


def wait_for_runs(sweep_dir: Path, n: int, timeout: float = 120.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if sweep_dir.exists() and len(storage.finished_ids(sweep_dir)) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"fewer than {n} runs finished within {timeout} s")


def test_sigkill_mid_sweep_then_resume_gives_every_run_exactly_once(tmp_path, write_config):
    cfg = write_config(KILL_CONFIG)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lrsweep", "run", str(cfg), "--out", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    sweep_dir = out / "killme"
    for n, extra in ((1, 0.0), (3, 0.05)):  # kill right after a result lands, and a little later
        p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_runs(sweep_dir, n)
        time.sleep(extra)
        p.send_signal(signal.SIGKILL)
        p.wait()
    n_before = len(storage.finished_ids(sweep_dir))
    assert n_before < 6, "the sweep finished before it was killed; the test proves nothing"
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    index = pd.read_csv(sweep_dir / "runs.csv")
    assert len(index) == 6 and index.run_id.is_unique and set(index.status) == {"complete"}
    for run_id in index.run_id:
        for f in ("metrics.csv", "evals.csv"):
            assert len(pd.read_csv(sweep_dir / run_id / f)) > 0
        json.loads((sweep_dir / run_id / "result.json").read_text())
    assert not list(sweep_dir.rglob("*.tmp"))
