"""Finished runs -> one pandas DataFrame (optuna's trials_dataframe). Everything that analyses
results starts here. Unreadable run files are skipped with a warning naming them, never a crash.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lrsweep import storage
from lrsweep.analysis.metrics import chance_accuracy
from lrsweep.errors import UserError

# Keys of result.json that are nested or bulky; not DataFrame columns.
_NESTED = ("axes", "targets", "epoch_times", "traceback", "batch_schedule")
# The column (and group axis) that tells experiments of one folder apart (config/experiment.py).
EXPERIMENT = "experiment"


@dataclass
class Runs:
    """The finished runs of one or more sweeps.

    `axes` travels next to the table, not inside it (it used to ride in `df.attrs`, which
    pandas drops on many operations): which columns are sweep axes decides how runs are grouped.
    """
    df: pd.DataFrame  # one row per run
    axes: list[str] = field(default_factory=list)  # axis names, in the order the sweep files give them
    warnings: list[str] = field(default_factory=list)  # files skipped
    sweep_dirs: list[Path] = field(default_factory=list)


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
    """List values of an axis (optimizer.betas, schedule.stepvalues) as tuples, and mappings
    (train.batch_schedule) as their JSON text, so pandas can group them."""
    if isinstance(value, dict):
        return json.dumps(value, separators=(", ", ": "))
    return tuple(hashable(v) for v in value) if isinstance(value, list) else value


def load_runs(paths: list[str | Path] | str | Path) -> Runs:
    """All finished runs under the given sweep folders (or folders of sweeps).

    Columns of `.df`: sweep, run_id, path, status, error, the axis values (as named in the sweep
    file, unless they are already a column such as `batch_size`, `lr` (effective), `seed`),
    `nominal_lr`, every scalar of result.json (final_val_acc, steps_to_target, initial_loss, ...)
    and `chance_acc`, the accuracy of guessing (from config.json's dataset; NaN when unknown).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    sweep_dirs = [d for p in paths for d in find_sweep_dirs(p)]
    rows, warnings, axes = [], [], []
    for sweep_dir in sweep_dirs:
        for run_dir in sorted(d for d in sweep_dir.iterdir() if d.is_dir()):
            f = run_dir / storage.RESULT
            res, why = storage.check_result(run_dir)  # the record type's rules (result_check.py)
            if why:
                warnings.append(f"skipped {f}: {why}")
                continue
            if res is None:
                continue  # unfinished: no result yet
            row = {"sweep": sweep_dir.name, "run_id": res.get("run_id", run_dir.name), "path": str(run_dir)}
            row.update({k: v for k, v in res.items() if k not in _NESTED})
            row["chance_acc"] = chance_accuracy(_config(run_dir))
            for name, value in (res.get("axes") or {}).items():
                axes.append(name) if name not in axes else None
                row.setdefault(name, hashable(value))
            rows.append(row)
    warnings += _split_experiments(rows, axes)
    return Runs(pd.DataFrame(rows), axes, warnings, sweep_dirs)


def _split_experiments(rows: list[dict], axes: list[str]) -> list[str]:
    """Label each run with its experiment when a sweep folder holds several (runs whose configs
    differ in more than the axes and the seed), so they are grouped apart, never averaged."""
    from lrsweep.config import parse_run_config
    from lrsweep.config.experiment import describe, differences, experiment_fields

    warnings = []
    for sweep in dict.fromkeys(r["sweep"] for r in rows):
        mine = [r for r in rows if r["sweep"] == sweep]
        fields = {}
        for r in mine:
            try:
                cfg = parse_run_config(json.loads((Path(r["path"]) / storage.CONFIG).read_text()))
            except (OSError, ValueError, UserError):
                continue  # no readable config: it stays with the first experiment
            fields[r["path"]] = experiment_fields(cfg, axes)
        kinds = list({json.dumps(f, sort_keys=True, default=str): f for f in fields.values()}.values())
        if len(kinds) < 2:
            continue
        varying = sorted({k for f in kinds[1:] for k, _, _ in differences(kinds[0], f)})
        label = lambda f: ", ".join(f"{k}={f.get(k)}" for k in varying)  # noqa: E731
        for r in mine:
            r[EXPERIMENT] = label(fields.get(r["path"], kinds[0]))
        if EXPERIMENT not in axes:
            axes.insert(0, EXPERIMENT)
        warnings.append(f"{sweep}: holds {len(kinds)} experiments (runs differ in {', '.join(varying)}); "
                        f"analysed apart, never averaged as seeds ({describe(differences(kinds[0], kinds[1]), 2)})")
    return warnings


def _config(run_dir: Path) -> dict:
    """A run's config.json, or {} when it cannot be read (the chance level is then unknown)."""
    try:
        cfg = json.loads((run_dir / storage.CONFIG).read_text())
    except (OSError, ValueError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def read_table(run_path: str | Path, which: str = "metrics") -> pd.DataFrame:
    """A run's metrics.csv (per step) or evals.csv (per evaluation)."""
    name = {"metrics": storage.METRICS, "evals": storage.EVALS}[which]
    return pd.read_csv(Path(run_path) / name)
