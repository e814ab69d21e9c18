"""Odd file systems, damaged run folders and damaged dataset files (README "Bad input and
damaged folders"): one line and exit 2 before anything trains, or a warning and the damaged
part redone; never a traceback, never a finished run lost."""
import errno
import json
import os
import shutil
import socket
import struct
import sys
import time
import types
import warnings
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lrsweep import storage
from lrsweep.cli import app
from lrsweep.config.grid import build_sweep, run_id
from lrsweep.errors import LrsweepWarning, ParameterError, StorageError
from lrsweep.results import RunStatus

from conftest import make_config
from fakedata import write_idx
from test_hardening import one_line_error

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


def run(cfg, out, *extra):
    return runner.invoke(app, ["run", str(cfg), "--out", str(out), *map(str, extra)])


def results(sweep_dir: Path) -> dict[str, dict]:
    return {p.name: json.loads((p / storage.RESULT).read_text())
            for p in sweep_dir.iterdir() if (p / storage.RESULT).is_file()}


# --------------------------------------------------------------------------- result.json of the wrong shape

GOOD = {"run_id": "abc", "status": "complete", "error": None, "axes": {"lr": 0.1}, "optimizer": "sgd",
        "schedule": "constant", "model": "mlp", "dataset": "synthetic", "seed": 0, "batch_size": 16,
        "nominal_lr": 0.1, "lr": 0.1, "final_val_acc": None, "targets": {}}


@pytest.mark.parametrize("change, why", [
    ({"status": "weird"}, "status 'weird' is not one of (complete, diverged, failed, stalled)"),
    ({"status": ["complete"]}, "status ['complete'] is not one of"),
    ({"axes": [1, 2]}, "axes is [1, 2], not an object"),
    ({"batch_size": None}, "batch_size is None, not an integer"),
    ({"batch_size": True}, "batch_size is True, not an integer"),
    ({"batch_size": 0}, "batch_size is 0, not >= 1"),
    ({"lr": "big"}, "lr is 'big', not a number"),
    ({"final_val_acc": "high"}, "final_val_acc is 'high', not a number or null"),
    ({"run_id": None}, "no 'run_id' field"),
])
def test_validate_result_says_why_a_record_is_none(change, why):
    assert storage.validate_result(GOOD) is None
    bad = {k: v for k, v in {**GOOD, **change}.items() if v is not None or k != "run_id"}
    assert why in storage.validate_result(bad)
    assert storage.validate_result({"status": "complete"}) == "no 'run_id' field"
    assert storage.validate_result([GOOD]) == "expected a JSON object, got list"


def test_a_result_of_the_wrong_shape_is_unfinished_warned_about_and_trained_again(write_config, tmp_path):
    cfg = write_config()
    assert run(cfg, tmp_path).exit_code == 0
    sweep_dir = tmp_path / "tiny"
    victim = sorted(results(sweep_dir))[0]
    good = results(sweep_dir)[victim]
    for bad in ({"status": "complete"}, {**good, "axes": [1, 2]}, {**good, "status": "weird"}, [1, 2]):
        (sweep_dir / victim / storage.RESULT).write_text(json.dumps(bad))
        assert victim not in storage.read_index_rows(sweep_dir)  # it counts as unfinished
        r = run(cfg, tmp_path)
        assert r.exit_code == 0, r.output
        assert "warning:" in r.output and f"{victim}/result.json" in r.output.replace("\n", "")
        assert "trained again" in r.output and "Traceback" not in r.output
        assert storage.validate_result(results(sweep_dir)[victim]) is None  # redone, whole
    (sweep_dir / victim / storage.RESULT).write_bytes(b"\xff\xfe not json")
    r = run(cfg, tmp_path)
    assert r.exit_code == 0 and "unreadable (UnicodeDecodeError" in r.output.replace("\n", "")


def test_folders_where_files_belong_and_files_where_folders_belong_stop_before_training(write_config, tmp_path):
    cfg = write_config()
    assert run(cfg, tmp_path).exit_code == 0
    sweep_dir = tmp_path / "tiny"
    a, b = sorted(results(sweep_dir))[:2]
    shutil.rmtree(sweep_dir / a)
    (sweep_dir / a).write_text("not a folder")
    shutil.rmtree(sweep_dir / b)
    before = results(sweep_dir)
    one_line_error(run(cfg, tmp_path), f"{sweep_dir / a} is a file where the run's folder belongs: move it away")
    assert results(sweep_dir) == before and not (sweep_dir / b).exists()  # nothing was trained
    (sweep_dir / a).unlink()
    (sweep_dir / a / storage.RESULT).mkdir(parents=True)
    one_line_error(run(cfg, tmp_path), f"cannot write {sweep_dir / a / storage.RESULT}: it is a folder")
    shutil.rmtree(sweep_dir / a)
    for name in (storage.LOCK, storage.INDEX, storage.SWEEP_FILE):
        (sweep_dir / name).unlink()
        (sweep_dir / name).mkdir()
        one_line_error(run(cfg, tmp_path), f"cannot write {sweep_dir / name}: it is a folder (lrsweep writes a file there)")
        (sweep_dir / name).rmdir()
    r = run(cfg, tmp_path)
    assert r.exit_code == 0 and set(results(sweep_dir)) >= {a, b}


# --------------------------------------------------------------------------- odd file systems

def test_out_that_is_a_file_or_a_name_the_file_system_cannot_take(write_config, tmp_path):
    cfg = write_config()
    (tmp_path / "afile").write_text("x")
    one_line_error(run(cfg, tmp_path / "afile"), f"cannot write {tmp_path / 'afile' / 'tiny'}: {tmp_path / 'afile'} is a file")
    r = runner.invoke(app, ["plan", str(cfg), "--out", str(tmp_path / "afile")])  # plan only looks: a warning
    assert r.exit_code == 0 and "warning:" in r.output and "run` would stop there" in r.output.replace("\n", "")
    with pytest.raises(StorageError, match="a file name is too long for the file system"):
        storage.check_writable(tmp_path / ("n" * 300))
    with pytest.raises(StorageError, match="too long"):
        storage.check_writable(tmp_path / ("n" * 300), create=True)
    with pytest.raises(StorageError, match="cannot contain a NUL byte"):
        storage.check_writable(tmp_path / "a\0b")


def _refuse_writes(monkeypatch, code):
    def refuse(*a, **k):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(storage.tempfile, "mkstemp", refuse)


def test_a_read_only_file_system_is_said_before_training_for_run_and_range_test(write_config, tmp_path, monkeypatch):
    from lrsweep.rangetest import run as rt_run
    from lrsweep.training import units

    def never(*a, **k):
        raise AssertionError("trained although nothing could be saved")

    monkeypatch.setattr(units, "train_unit", never)
    monkeypatch.setattr(rt_run, "run_range_test", never)
    _refuse_writes(monkeypatch, errno.EROFS)
    cfg = write_config()
    one_line_error(run(cfg, tmp_path / "runs"), f"cannot write {tmp_path / 'runs' / 'tiny'}: read-only file system")
    r = runner.invoke(app, ["range-test", str(cfg), "--out", str(tmp_path / "rt"), "--steps", "20"])
    one_line_error(r, f"cannot write {tmp_path / 'rt'}: read-only file system")
    monkeypatch.undo()  # a writable disk again, but the sweep file to emit is a folder
    monkeypatch.setattr(rt_run, "run_range_test", never)
    r = runner.invoke(app, ["range-test", str(cfg), "--out", str(tmp_path / "rt"), "--steps", "20",
                            "--emit-sweep", str(tmp_path)])
    one_line_error(r, f"cannot write {tmp_path}: it is a folder")


def test_a_full_disk_is_named_and_every_run_saved_before_stays_whole(write_config, tmp_path, monkeypatch):
    cfg = write_config()
    real_fsync, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) > 7:  # sweep.yaml, then the first run's 4 files and runs.csv (and one spare)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(storage.os, "fsync", fsync)
    r = run(cfg, tmp_path)
    one_line_error(r, "no space left on the device (the disk is full); the runs saved before are intact")
    sweep_dir = tmp_path / "tiny"
    saved = results(sweep_dir)
    assert len(saved) == 1 and all(storage.validate_result(v) is None for v in saved.values())
    assert not list(sweep_dir.glob("*/.*.tmp"))  # no temp file left behind
    monkeypatch.setattr(storage.os, "fsync", real_fsync)
    r = run(cfg, tmp_path)
    assert r.exit_code == 0 and "(1 already finished" in r.output.replace("\n", "")


def test_result_files_follow_the_umask(write_config, tmp_path):
    old = os.umask(0o022)
    try:
        assert run(write_config(), tmp_path).exit_code == 0
        files = [tmp_path / "tiny" / storage.INDEX, *(tmp_path / "tiny").glob("*/result.json")]
        assert {f.stat().st_mode & 0o777 for f in files} == {0o644}
        os.umask(0o077)
        storage.write_json(tmp_path / "private.json", {})
        assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


# --------------------------------------------------------------------------- damaged dataset files

def _damage(raw: Path, how: str) -> Path:
    images, labels = raw / "train-images-idx3-ubyte", raw / "train-labels-idx1-ubyte"
    if how == "truncated":
        images.write_bytes(images.read_bytes()[:-100])
    elif how == "random":
        images.write_bytes(os.urandom(5000))
    elif how == "magic":
        images.write_bytes(struct.pack(">I", 2049) + images.read_bytes()[4:])
    elif how == "count":
        labels.write_bytes(struct.pack(">II", 2049, 19) + labels.read_bytes()[8:-1])
    elif how == "empty":
        labels.write_bytes(b"")
    elif how == "label":
        labels.write_bytes(labels.read_bytes()[:-1] + bytes([200]))
    return images if how in ("truncated", "random", "magic") else labels


@pytest.mark.parametrize("how, fragment", [
    ("truncated", "15596 bytes, but its header promises 20 x 28 x 28 = 15696 (truncated or damaged)"),
    ("random", "not an IDX image file (magic number"),
    ("magic", "not an IDX image file (magic number 0x00000801, expected 0x00000803)"),
    ("count", "19 labels for the 20 images of train-images-idx3-ubyte"),
    ("empty", "the file is empty"),
    ("label", "holds label 200; the labels of 10 classes are 0-9"),
])
def test_a_damaged_dataset_file_stops_plan_and_run_naming_it_and_is_never_a_run_result(how, fragment, write_config, tmp_path):
    write_idx(tmp_path / "data", n_train=20, n_test=8)
    cfg = write_config(**{"dataset": {"name": "fashion-mnist", "root": str(tmp_path / "data")},
                          "sweep.batch_size": [4, 8]})
    bad = _damage(tmp_path / "data" / "FashionMNIST" / "raw", how)
    one_line_error(runner.invoke(app, ["plan", str(cfg), "--out", str(tmp_path / "runs")]), f"{bad}: {fragment}")
    one_line_error(run(cfg, tmp_path / "runs"), f"dataset.root: {bad}: {fragment}")
    assert not (tmp_path / "runs" / "tiny").exists() or not results(tmp_path / "runs" / "tiny")
    write_idx(tmp_path / "data", n_train=20, n_test=8)  # fixed: the rerun trains, no --retry-failed needed
    r = run(cfg, tmp_path / "runs")
    assert r.exit_code == 0, r.output
    assert {v["status"] for v in results(tmp_path / "runs" / "tiny").values()} <= {"complete", "diverged"}


def test_a_dataset_file_damaged_after_preflight_is_still_a_user_error(tmp_path):
    from lrsweep.datasets import clear_cache, load_data
    from lrsweep.errors import ConfigError

    write_idx(tmp_path, n_train=20, n_test=8)
    _damage(tmp_path / "FashionMNIST" / "raw", "label")
    clear_cache()
    cfg = build_sweep(make_config(**{"dataset": {"name": "fashion-mnist", "root": str(tmp_path)}, "sweep": None})).runs[0].config
    with pytest.raises(ConfigError, match="holds label 200"):
        load_data(cfg.dataset)  # what a worker does: a UserError, which stops the sweep, not a `failed` run


# --------------------------------------------------------------------------- checkpoints

def test_a_checkpoint_of_the_right_version_that_does_not_fit_restarts_the_run(tmp_path):
    from lrsweep.datasets import load_data
    from lrsweep.training import checkpoint
    from lrsweep.training.sequential import train

    (spec,) = build_sweep(make_config(**{"train.checkpoint": "epoch", "train.steps": 24, "sweep": None})).runs
    cfg = spec.config
    data = load_data(cfg.dataset, "cpu")
    ref = train(cfg, data, torch.device("cpu"))
    for bad in ({"model": {"bogus": torch.zeros(3)}}, {"model": None}, {}):
        torch.save({"version": checkpoint.VERSION, "config_id": run_id(cfg), **bad}, tmp_path / checkpoint.CHECKPOINT)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = train(cfg, data, torch.device("cpu"), run_dir=tmp_path)
        assert any(issubclass(w.category, LrsweepWarning) and "does not fit this run" in str(w.message)
                   and "starts over" in str(w.message) for w in caught), [str(w.message) for w in caught]
        assert out.status == RunStatus.COMPLETE and out.metrics["train_loss"] == ref.metrics["train_loss"]


# --------------------------------------------------------------------------- executors

def test_more_workers_than_the_machine_has_are_capped_with_a_warning(monkeypatch):
    from lrsweep import execution as ex
    from lrsweep.execution import devices

    monkeypatch.setattr(devices, "visible_cores", lambda: 4)
    monkeypatch.setattr(devices, "visible_gpus", lambda: [])
    specs = build_sweep(make_config()).runs
    with pytest.warns(LrsweepWarning, match="1000 workers asked for, but this machine has 4 cores: starting 4"):
        pool = ex.make_executor(specs, workers=1000)
    assert pool.workers == 4 and pool.describe().startswith("4 worker processes")
    with pytest.raises(ParameterError, match="expected at least 1"):
        ex.make_executor(specs, workers=0)


def test_a_ray_address_where_nothing_or_no_ray_answers_times_out_with_one_line(monkeypatch):
    from lrsweep.execution.ray import RayExecutor

    fake = types.ModuleType("ray")
    fake.is_initialized = lambda: False
    fake.init = lambda **kw: time.sleep(60)  # a port that answers but is no Ray: ray.init retries for minutes
    monkeypatch.setitem(sys.modules, "ray", fake)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens once it is closed
    t0 = time.monotonic()
    with pytest.raises(ParameterError, match=f"nothing answers at 127.0.0.1:{port}"):
        RayExecutor(f"127.0.0.1:{port}", connect_timeout=5)._connect()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = "127.0.0.1:%d" % server.getsockname()[1]
        with pytest.raises(ParameterError, match=rf"no Ray cluster answered at {address} within 0.5 s"):
            RayExecutor(address, connect_timeout=0.5)._connect()
    assert time.monotonic() - t0 < 10
    for bad in (0, -1, float("inf"), True):
        with pytest.raises(ParameterError, match="connect_timeout: expected a number of seconds > 0"):
            RayExecutor("auto", connect_timeout=bad)
