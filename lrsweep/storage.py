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

import errno
import fcntl
import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Optional

import pandas as pd
import yaml

from lrsweep.errors import LockedError, StorageError, quote, shorten
from lrsweep.result_check import validate_result  # noqa: F401 (storage.validate_result)
from lrsweep.results import RunRecord

RESULT, CONFIG, METRICS, EVALS = "result.json", "config.json", "metrics.csv", "evals.csv"
INDEX, SWEEP_FILE, LOCK = "runs.csv", "sweep.yaml", ".lock"
CHECKPOINT = "checkpoint.pt"  # written by the sequential engine; removed once the run's result is written


def _umask() -> int:
    """The process's umask (Linux reads it without changing it; elsewhere set and restored)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_REASONS = {errno.EROFS: "read-only file system", errno.ENOSPC: "no space left on the device (the disk is full)",
            errno.EDQUOT: "disk quota exceeded", errno.ENAMETOOLONG: "a file name is too long for the file system",
            errno.EACCES: "permission denied", errno.EPERM: "operation not permitted"}


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. a name too long to look up
        return False


def _file_in_the_way(path: Path) -> Optional[Path]:
    """The first of `path` and its parents that exists and is not a folder."""
    for p in reversed([path, *path.parents]):
        try:
            if p.exists() and not p.is_dir():
                return p
        except OSError:
            return None
    return None


def storage_error(path: Path, e: OSError) -> StorageError:
    """One line for an OSError met writing `path`, naming it and the cause."""
    if isinstance(e, StorageError):
        return e
    if e.errno == errno.EISDIR:
        return StorageError(f"cannot write {path}: it is a folder (lrsweep writes a file there): move it away")
    blocker = _file_in_the_way(Path(path)) if e.errno in (errno.EEXIST, errno.ENOTDIR) else None
    if blocker is not None:
        return StorageError(f"cannot write {path}: {blocker} is a file, not a folder: move it away")
    return StorageError(f"cannot write {path}: {_REASONS.get(e.errno) or e.strerror or e}")


def atomic_replace(path: Path, write: Callable[[IO], None], binary: bool = False) -> None:
    """write(f) to a temp file, fsync, rename: a reader sees the old or the new file, whole. The
    file gets the permissions the umask gives (mkstemp's are 0600). OS errors -> StorageError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise storage_error(path, e) from e
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise storage_error(path, e) from e
        raise


def check_writable(folder: str | Path, create: bool = False) -> Path:
    """Raise StorageError unless lrsweep can write into `folder`: it is a folder or can be made
    one, on a writable file system, with names the file system takes. `create`: make it and
    write a probe file (the sure test); else only look (for `plan`, which writes nothing)."""
    folder = Path(folder)
    if "\0" in str(folder):
        raise StorageError(f"{quote(str(folder))}: a path cannot contain a NUL byte")
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".lrsweep-probe.", suffix=".tmp")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise storage_error(folder, e) from e
        return folder
    blocker = _file_in_the_way(folder)
    if blocker is not None:
        raise StorageError(f"cannot write {folder}: {blocker} is a file, not a folder: move it away")
    existing = next((p for p in [folder, *folder.parents] if _exists(p)), Path("."))
    missing = folder.relative_to(existing).parts if existing != folder else ()
    try:
        longest = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        longest = 255
    too_long = [n for n in missing if len(os.fsencode(n)) > longest]
    if too_long:
        raise StorageError(f"cannot write {folder}: a file name is too long for the file system "
                           f"({len(os.fsencode(too_long[0]))} bytes; at most {longest})")
    if not os.access(existing, os.W_OK | os.X_OK):
        read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
        raise StorageError(f"cannot write {folder}: {existing} is on a read-only file system" if read_only
                           else f"cannot write {folder}: permission denied in {existing}")
    return folder


def check_sweep_folder(sweep_dir: Path, run_folders: Iterable[str] = ()) -> None:
    """Before training: StorageError where a finished run could not be saved, so that nothing is
    trained only to be lost: a folder where the sweep's or a run's file belongs, a file where a
    run's folder belongs."""
    for name in (LOCK, INDEX, SWEEP_FILE):
        if (sweep_dir / name).is_dir():
            raise storage_error(sweep_dir / name, OSError(errno.EISDIR, "is a folder"))
    for folder in run_folders:
        run_dir = sweep_dir / folder
        if run_dir.exists() and not run_dir.is_dir():
            raise StorageError(f"{run_dir} is a file where the run's folder belongs: move it away "
                               "(the run is trained again)")
        for name in (CONFIG, METRICS, EVALS, RESULT, CHECKPOINT):
            if (run_dir / name).is_dir():
                raise storage_error(run_dir / name, OSError(errno.EISDIR, "is a folder"))


def atomic_write(path: Path, text: str) -> None:
    atomic_replace(path, lambda f: f.write(text))


def remove_stale_temp(sweep_dir: Path) -> int:
    """Temp files left by a process killed mid-write (call with the sweep lock held)."""
    stale = [f for f in list(sweep_dir.glob(".*.tmp")) + list(sweep_dir.glob("*/.*.tmp")) if not f.is_dir()]
    for f in stale:
        try:
            f.unlink(missing_ok=True)
        except OSError:
            pass  # e.g. a read-only folder: a stale temp file harms nothing
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


def check_result(run_dir: Path) -> tuple[Optional[dict], Optional[str]]:
    """(the run's result, None), or (None, why not): None, None when it has no result.json."""
    f = run_dir / RESULT
    try:
        if not f.exists() or f.is_dir():  # a folder in its place: check_sweep_folder says so
            return None, None
        data = json.loads(f.read_text())
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        return None, f"unreadable ({type(e).__name__}: {shorten(str(e))})"
    why = validate_result(data)
    return (None, why) if why else (data, None)


def read_result(run_dir: Path) -> Optional[dict]:
    """The run's result, or None if it is unfinished or its result file is unreadable or not a
    run record (validate_result): then the run is unfinished, and redone."""
    return check_result(run_dir)[0]


def scan_results(sweep_dir: Path) -> tuple[dict[str, dict], list[tuple[Path, str]]]:
    """One pass over the run folders: (folder name -> runs.csv row of every finished run,
    [(result.json, why) for every one that is unreadable or not a run record])."""
    rows: dict[str, dict] = {}
    invalid: list[tuple[Path, str]] = []
    if not sweep_dir.is_dir():
        return rows, invalid
    for p in sorted(sweep_dir.iterdir()):
        if not p.is_dir():
            continue
        result, why = check_result(p)
        if why:
            invalid.append((p / RESULT, why))
        elif result is not None:
            rows[p.name] = index_row(result)
    return rows, invalid


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
    try:
        (run_dir / CHECKPOINT).unlink(missing_ok=True)  # a finished run is never resumed
    except OSError as e:
        raise storage_error(run_dir / CHECKPOINT, e) from e
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
    return scan_results(sweep_dir)[0]


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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise storage_error(self.path, e) from e
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
