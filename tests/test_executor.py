"""Local worker processes: the same tables as one process, dead workers replaced and their runs
retried, and kill -9 of the driver at random moments leaves every run exactly once."""
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
from typer.testing import CliRunner

from lrsweep import execution as ex
from lrsweep import storage
from lrsweep import sweep as sweep_mod
from lrsweep.cli import app
from lrsweep.config.grid import build_sweep
from lrsweep.errors import UserError
from lrsweep.events import RunFinished, RunStarted, Step, SweepFinished, SweepStarted
from lrsweep.execution import devices

from conftest import make_config

REPO = Path(__file__).resolve().parents[1]
TIME_COLUMNS = ["data_time", "compute_time", "elapsed", "time_s"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread


def assert_same_tables(a: Path, b: Path) -> None:
    """runs.csv, metrics.csv and evals.csv equal, except for wall-clock columns."""
    ia, ib = pd.read_csv(a / storage.INDEX), pd.read_csv(b / storage.INDEX)
    drop = lambda df: df.drop(columns=[c for c in TIME_COLUMNS if c in df.columns])  # noqa: E731
    pd.testing.assert_frame_equal(drop(ia), drop(ib))
    for run_id in ia.run_id:
        for f in (storage.METRICS, storage.EVALS):
            pd.testing.assert_frame_equal(drop(pd.read_csv(a / run_id / f)), drop(pd.read_csv(b / run_id / f)))


def test_two_workers_give_the_same_tables_as_one_even_when_a_worker_dies(tmp_path, monkeypatch):
    raw = make_config(sweep={"batch_size": [16, 32], "lr": [0.01, 0.1, 50.0]}, **{"train.steps": 30})
    one = sweep_mod.run_sweep(build_sweep(raw), tmp_path / "one", executor=ex.InlineExecutor())
    marker = tmp_path / "crashed"
    monkeypatch.setenv(ex.CRASH_ONCE_ENV, str(marker))  # the first unit's worker hard-exits, once
    events = []
    two = sweep_mod.run_sweep(build_sweep(raw), tmp_path / "two", executor=ex.LocalExecutor(2),
                              callback=events.append)
    assert marker.exists()  # a worker died; it was replaced and its run retried
    assert one.counts == two.counts == {"complete": 4, "diverged": 2}
    assert_same_tables(one.sweep_dir, two.sweep_dir)
    # The typed messages came through the workers' pipes: events stamped with their worker.
    started = [e for e in events if isinstance(e, RunStarted)]
    assert {e.worker for e in started} == {0, 1}  # the display sees both workers
    assert {e.worker for e in events if isinstance(e, Step)} == {0, 1}
    finished = [e for e in events if isinstance(e, RunFinished)]
    assert len(finished) == 6
    # The worker died before starting its run: each run started once, and finished where it started.
    assert sorted(e.run_id for e in started) == sorted(e.run_id for e in finished)
    worker_of = {e.run_id: e.worker for e in started}
    assert all(e.worker == worker_of[e.run_id] for e in finished)
    assert sorted(e.index for e in started) == list(range(6)) and {e.pending for e in started} == {6}
    assert isinstance(events[0], SweepStarted) and events[-1] == SweepFinished(two.counts)


def test_a_run_whose_worker_keeps_dying_is_failed_and_the_sweep_goes_on(tmp_path, monkeypatch):
    marker = tmp_path / "crashed"
    monkeypatch.setenv(ex.CRASH_ONCE_ENV, str(marker))
    raw = make_config(sweep={"lr": [0.01, 0.03, 0.1]}, **{"train.steps": 10})
    out = sweep_mod.run_sweep(build_sweep(raw), tmp_path / "runs", executor=ex.LocalExecutor(2, max_retries=0))
    index = pd.read_csv(out.sweep_dir / storage.INDEX)
    assert len(index) == 3 and index.run_id.is_unique
    assert index.status.value_counts().to_dict() == {"complete": 2, "failed": 1} == out.counts
    assert "worker process died while training it (1 time, last exit code 17)" in index[index.status == "failed"].iloc[0]["error"]


def test_a_user_error_in_a_worker_stops_the_sweep_with_its_message(tmp_path):
    raw = make_config(sweep={"batch_size": [16, 512]})  # 512 > the 256 training examples
    with pytest.raises(UserError, match="train.batch_size: 512 exceeds the 256 training examples"):
        sweep_mod.run_sweep(build_sweep(raw), tmp_path / "runs", executor=ex.LocalExecutor(2))


def _children(pid: int) -> set[int]:
    kids = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids |= {int(k) for k in (task / "children").read_text().split()}
        except OSError:
            pass
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# 16 runs of ~0.3-1 s each (a checkpoint every epoch, so kills also land mid-checkpoint): the
# whole sweep takes ~8 s on 2 idle cores, longer than every kill window below, so that a run
# is always left to be killed (at 200 steps it took 5.5 s and a late second kill could let
# the sweep finish, which the test rightly refuses as proving nothing).
KILL_RAW = make_config(name="killworkers", sweep={"lr": {"logspace": [0.01, 0.1, 8]}, "batch_size": [16, 32]},
                       **{"train.steps": 300, "train.eval_every": 50, "train.log_every": 2, "train.checkpoint": "epoch"})


def test_sigkill_the_driver_of_two_workers_at_random_moments_then_every_run_exactly_once(tmp_path, write_config):
    cfg = write_config(KILL_RAW)
    out = tmp_path / "out"
    sweep_dir = out / "killworkers"
    cmd = [sys.executable, "-m", "lrsweep", "run", str(cfg), "--out", str(out), "--workers", "2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    rng = random.Random()
    finished = []
    for attempt in range(3):
        p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before = len(storage.finished_ids(sweep_dir))
        # Kill at a random moment: the second time anywhere in the first seconds (start-up,
        # workers starting, first runs); else once it has made progress, a random time later.
        deadline = time.monotonic() + (rng.uniform(1.0, 3.0) if attempt == 1 else 60)
        workers: set[int] = set()
        while time.monotonic() < deadline and p.poll() is None and (
                attempt == 1 or len(storage.finished_ids(sweep_dir)) == before):
            workers |= _children(p.pid)
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.4))
        workers |= _children(p.pid)
        p.send_signal(signal.SIGKILL)
        p.wait()
        finished.append(len(storage.finished_ids(sweep_dir)))
        # The workers die with their driver (none goes on training or writing checkpoints).
        gone_by = time.monotonic() + 5
        while any(_alive(w) for w in workers) and time.monotonic() < gone_by:
            time.sleep(0.05)
        assert not any(_alive(w) for w in workers)
        index = pd.read_csv(sweep_dir / storage.INDEX)  # parses at every moment
        assert index.run_id.is_unique and len(index) <= finished[-1]
    assert finished[-1] < 16, f"the sweep finished before it was killed ({finished}); the test proves nothing"

    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert f"{finished[-1]} already finished" in done.stdout  # finished runs are not redone
    index = pd.read_csv(sweep_dir / storage.INDEX)
    assert len(index) == 16 and index.run_id.is_unique and set(index.status) == {"complete"}
    for run_id in index.run_id:
        assert len(pd.read_csv(sweep_dir / run_id / storage.METRICS)) == 150  # 300 steps, log_every 2
        assert len(pd.read_csv(sweep_dir / run_id / storage.EVALS)) > 0
        json.loads((sweep_dir / run_id / storage.RESULT).read_text())
        assert not (sweep_dir / run_id / storage.CHECKPOINT).exists()
    assert not list(sweep_dir.rglob("*.tmp"))


runner = CliRunner()


def test_retry_flags_redo_failed_and_diverged_only_when_asked(write_config, tmp_path):
    cfg = write_config(make_config(sweep={"lr": [0.05, 50.0]}, **{"train.steps": 20}))
    args = ["run", str(cfg), "--out", str(tmp_path / "runs"), "--workers", "1"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    diverged = next(p for p in (tmp_path / "runs" / "tiny").iterdir()
                    if p.is_dir() and storage.read_result(p)["status"] == "diverged")
    stamp = (diverged / storage.RESULT).stat().st_mtime_ns
    r = runner.invoke(app, args + ["--retry-failed"])
    assert "nothing new" in r.output and (diverged / storage.RESULT).stat().st_mtime_ns == stamp
    r = runner.invoke(app, args + ["--retry-diverged"])
    assert r.exit_code == 0 and "1 diverged" in r.output and "1 already finished" in r.output
    assert (diverged / storage.RESULT).stat().st_mtime_ns != stamp
    assert len(pd.read_csv(tmp_path / "runs" / "tiny" / storage.INDEX)) == 2


@pytest.mark.parametrize("flags, fragment", [
    (["--executor", "ray"], "pip install 'lrsweep[ray]'"),
    (["--executor", "dask"], "--executor: expected one of (local, ray)"),
    (["--workers", "0"], "--workers: expected at least 1"),
    (["--devices", "0,1"], "--devices: no CUDA GPU is visible"),
    (["--address", "auto"], "--address: is for the ray executor"),
])
def test_executor_flag_errors_are_one_line(flags, fragment, write_config, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    monkeypatch.setattr(devices, "visible_gpus", lambda: [])
    r = runner.invoke(app, ["run", str(write_config()), "--out", str(tmp_path / "runs"), *flags])
    assert r.exit_code == 2, r.output
    assert fragment in r.output.replace("\n", "") and "Traceback" not in r.output


def test_devices_are_numbered_like_cuda_n_and_default_to_one_worker_per_gpu(monkeypatch):
    monkeypatch.delenv("LRSWEEP_WORKERS", raising=False)  # conftest's in-process default
    monkeypatch.setattr(devices, "visible_gpus", lambda: ["2", "3", "5"])  # e.g. CUDA_VISIBLE_DEVICES=2,3,5
    specs = build_sweep(make_config(**{"train.device": "auto"})).runs
    picked = ex.make_executor(specs, devices="0,2")
    assert isinstance(picked, ex.LocalExecutor) and picked.devices == ["2", "5"] and picked.workers == 2
    default = ex.make_executor(specs)
    assert default.devices == ["2", "3", "5"] and default.workers == 3
    assert isinstance(ex.make_executor(specs, workers=1), ex.InlineExecutor)  # 1: in the driver's process
    assert ex.make_executor(specs, workers=1, devices="1").devices == ["3"]  # one worker, pinned
    cpu = build_sweep(make_config()).runs  # train.device: cpu
    assert ex.make_executor(cpu).devices is None
    assert isinstance(ex.make_executor(cpu, workers=1), ex.InlineExecutor)
