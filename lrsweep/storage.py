"""The sweep folder on disk, and the rules that make it crash-proof.

    runs/<name>/sweep.yaml        the resolved sweep config (overrides applied)
    runs/<name>/runs.csv          index: one row per finished run (derived from result.json files)
    runs/<name>/<run_id>/         config.json, metrics.csv, evals.csv, result.json
    runs/<name>/<run_id>/checkpoint.pt   only while a run with train.checkpoint=epoch is unfinished

Every file is written to a temporary name and renamed into place, and result.json is written
last: a run folder without a readable result.json is unfinished and is redone. runs.csv is
rebuilt from the result.json files, so each run appears in it exactly once whatever happened.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Optional

import pandas as pd
import yaml

from lrsweep.errors import LockedError
from lrsweep.results import RunRecord

RESULT, CONFIG, METRICS, EVALS = "result.json", "config.json", "metrics.csv", "evals.csv"
INDEX, SWEEP_FILE, LOCK = "runs.csv", "sweep.yaml", ".lock"
CHECKPOINT = "checkpoint.pt"  # written by the sequential engine; removed once the run's result is written


def atomic_replace(path: Path, write: Callable[[IO], None], binary: bool = False) -> None:
    """write(f) to a temp file, fsync, rename: a reader sees the old or the new file, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write(path: Path, text: str) -> None:
    atomic_replace(path, lambda f: f.write(text))


def remove_stale_temp(sweep_dir: Path) -> int:
    """Temp files left by a process killed mid-write (call with the sweep lock held)."""
    stale = list(sweep_dir.glob(".*.tmp")) + list(sweep_dir.glob("*/.*.tmp"))
    for f in stale:
        f.unlink(missing_ok=True)
    return len(stale)


def _jsonable(x: Any) -> Any:
    """NaN/inf are not JSON: store them as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def write_csv(path: Path, columns: dict[str, list]) -> None:
    atomic_write(path, pd.DataFrame(columns).to_csv(index=False))


def read_result(run_dir: Path) -> Optional[dict]:
    """The run's result, or None if it is unfinished or its result file is unreadable."""
    try:
        data = json.loads((run_dir / RESULT).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "status" in data else None


def finished_ids(sweep_dir: Path) -> set[str]:
    if not sweep_dir.is_dir():
        return set()
    return {p.name for p in sweep_dir.iterdir() if p.is_dir() and read_result(p) is not None}


def save_run(sweep_dir: Path, record: RunRecord, folder: Optional[str] = None) -> Path:
    """A finished run's folder, from its record (results.RunRecord). `folder`: the run's folder
    when it is not named by its id (a run recorded under an older id, retried)."""
    return write_run(sweep_dir, folder or record.run_id, record.config, record.metrics, record.evals,
                     record.result.to_dict())


def write_run(sweep_dir: Path, run_id: str, config: dict, metrics: dict, evals: dict, result: dict) -> Path:
    """A run folder from plain data (save_run's files; for records made by hand, e.g. fixtures)."""
    run_dir = sweep_dir / run_id
    write_json(run_dir / CONFIG, config)
    write_csv(run_dir / METRICS, metrics)
    write_csv(run_dir / EVALS, evals)
    write_json(run_dir / RESULT, result)  # last: its presence marks the run finished
    (run_dir / CHECKPOINT).unlink(missing_ok=True)  # a finished run is never resumed
    return run_dir


def write_sweep_file(sweep_dir: Path, raw: dict, name: str = SWEEP_FILE) -> None:
    atomic_write(sweep_dir / name, yaml.safe_dump(raw, sort_keys=False))


def sweep_files(sweep_dir: Path) -> list[Path]:
    """The folder's experiments: sweep.yaml (the latest), then sweep.1.yaml, sweep.2.yaml, ...
    (earlier ones kept by `lrsweep run --add-experiment`)."""
    if not sweep_dir.is_dir():
        return []
    return [p for p in [sweep_dir / SWEEP_FILE] if p.is_file()] + _older_sweep_files(sweep_dir)


def _older_sweep_files(sweep_dir: Path) -> list[Path]:
    older = [p for p in sweep_dir.glob("sweep.*.yaml") if p.stem.split(".")[-1].isdigit()]
    return sorted(older, key=lambda p: int(p.stem.split(".")[-1]))


def read_sweep_file(path: Path) -> Optional[dict]:
    """A stored sweep file, or None if it cannot be read (the check it serves is skipped then)."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    return raw if isinstance(raw, dict) else None


def archive_sweep_file(sweep_dir: Path) -> Path:
    """Keep the current sweep.yaml as the next sweep.N.yaml (another experiment joins the folder)."""
    n = 1 + max([int(p.stem.split(".")[-1]) for p in _older_sweep_files(sweep_dir)] or [0])
    target = sweep_dir / f"sweep.{n}.yaml"
    atomic_write(target, (sweep_dir / SWEEP_FILE).read_text())
    return target


INDEX_METRICS = ("final_val_acc", "best_val_acc", "final_val_loss", "final_train_loss",
                 "steps_to_target", "examples_to_target", "time_to_target", "steps", "time_s")


def index_row(result: dict) -> dict:
    row = {"run_id": result["run_id"], **result.get("axes", {}), "status": result["status"]}
    for k in INDEX_METRICS:
        row[k] = result.get(k)
    row["error"] = result.get("error")
    return row


def read_index_rows(sweep_dir: Path) -> dict[str, dict]:
    """run folder name -> runs.csv row, from the result.json files (the source of truth)."""
    if not sweep_dir.is_dir():
        return {}
    return {p.name: index_row(r) for p in sweep_dir.iterdir() if p.is_dir() and (r := read_result(p))}


def write_index(sweep_dir: Path, rows: dict[str, dict]) -> pd.DataFrame:
    """runs.csv from rows keyed by run folder: one row per run, sorted like the folders."""
    df = pd.DataFrame([rows[k] for k in sorted(rows)])
    atomic_write(sweep_dir / INDEX, df.to_csv(index=False))
    return df


def rebuild_index(sweep_dir: Path) -> pd.DataFrame:
    return write_index(sweep_dir, read_index_rows(sweep_dir))


class SweepLock:
    """An exclusive lock on a sweep folder. The OS drops it when the process dies (even kill -9)."""

    def __init__(self, sweep_dir: Path):
        self.path = sweep_dir / LOCK
        self.fd: Optional[int] = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise LockedError(f"{self.path.parent} is in use by another lrsweep run (pid {other}); "
                              f"wait for it to finish or stop it") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
