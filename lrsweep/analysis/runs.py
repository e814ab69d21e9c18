"""Finished runs -> one pandas DataFrame (optuna's trials_dataframe). Everything that analyses
results starts here. Unreadable run files are skipped with a warning naming them, never a crash.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from lrsweep import storage
from lrsweep.errors import UserError

# Keys of result.json that are nested or bulky; not DataFrame columns.
_NESTED = ("axes", "targets", "epoch_times", "traceback")


def find_sweep_dirs(path: str | Path) -> list[Path]:
    """A sweep folder itself, or a parent folder holding sweep folders."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{p}: no such folder (give runs/<name> or a folder of sweeps)")
    if _is_sweep(p):
        return [p]
    subs = sorted(d for d in p.iterdir() if d.is_dir() and _is_sweep(d))
    if not subs:
        raise UserError(f"{p}: not a sweep folder (no {storage.SWEEP_FILE} or run folders inside)")
    return subs


def _is_sweep(p: Path) -> bool:
    return (p / storage.SWEEP_FILE).is_file() or any(
        (d / storage.CONFIG).is_file() or (d / storage.RESULT).is_file() for d in p.iterdir() if d.is_dir())


def hashable(value):
    """List values of an axis (optimizer.betas, schedule.stepvalues) as tuples, so pandas can group them."""
    return tuple(hashable(v) for v in value) if isinstance(value, list) else value


def load_runs(paths: list[str | Path] | str | Path) -> tuple[pd.DataFrame, list[str]]:
    """All finished runs under the given sweep folders, one row each, plus warnings.

    Columns: sweep, run_id, path, status, error, the axis values (as named in the sweep file,
    unless they are already a column such as `batch_size`, `lr` (effective), `seed`),
    `nominal_lr`, and every scalar of result.json (final_val_acc, steps_to_target, ...).
    `df.attrs['axes']` lists the axis names.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    rows, warnings, axes = [], [], []
    for sweep_dir in [d for p in paths for d in find_sweep_dirs(p)]:
        for run_dir in sorted(d for d in sweep_dir.iterdir() if d.is_dir()):
            f = run_dir / storage.RESULT
            if not f.exists():
                continue  # unfinished: no result yet
            try:
                res = json.loads(f.read_text())
                if not isinstance(res, dict) or "status" not in res:
                    raise ValueError("no status field")
            except (OSError, ValueError) as e:
                warnings.append(f"skipped {f}: unreadable ({type(e).__name__}: {str(e)[:80]})")
                continue
            row = {"sweep": sweep_dir.name, "run_id": res.get("run_id", run_dir.name), "path": str(run_dir)}
            row.update({k: v for k, v in res.items() if k not in _NESTED})
            for name, value in (res.get("axes") or {}).items():
                axes.append(name) if name not in axes else None
                row.setdefault(name, hashable(value))
            rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs["axes"] = axes
    return df, warnings


def read_table(run_path: str | Path, which: str = "metrics") -> pd.DataFrame:
    """A run's metrics.csv (per step) or evals.csv (per evaluation)."""
    name = {"metrics": storage.METRICS, "evals": storage.EVALS}[which]
    return pd.read_csv(Path(run_path) / name)
