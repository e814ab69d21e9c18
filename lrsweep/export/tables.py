"""A sweep folder's runs as tables: one row per run (`runs_frame`) or one per logged step
(`steps_frame`), each with the run's config fields as dotted columns (`optimizer.momentum`,
`train.steps`, read from its config.json); and the step table written as parquet or jsonl
(`write_steps`, `lrsweep export --format`).

Only finished runs (those with a result.json) are listed, as everywhere in lrsweep. Unreadable
files are skipped with a warning, never a crash: the frames carry them in `df.attrs["warnings"]`,
and the sweep axes' names in `df.attrs["axes"]`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from lrsweep import storage
from lrsweep.analysis.runs import EXPERIMENT, Runs, hashable, load_runs
from lrsweep.config.experiment import flatten
from lrsweep.config.loading import expand_short
from lrsweep.errors import ParameterError
from lrsweep.export import FORMATS, no_runs, require
RUN_COLUMNS = ("sweep", "run_id", "status", EXPERIMENT)  # first in the step table (experiment: when a folder has several)


def config_columns(run_dir: str | Path) -> dict:
    """A run's config.json as dotted columns ({"optimizer.momentum": 0.9, "train.steps": 20, ...}),
    lists as tuples (so pandas can group by them); {} when the file cannot be read."""
    try:
        cfg = json.loads((Path(run_dir) / storage.CONFIG).read_text())
    except (OSError, ValueError):
        return {}
    return {k: hashable(v) for k, v in flatten(cfg).items()} if isinstance(cfg, dict) else {}


def with_config(runs: Runs) -> pd.DataFrame:
    """The runs' table (analysis.runs.load_runs) with every config field as a dotted column
    after result.json's scalars (a field already a column, such as an axis, is not repeated)."""
    df = runs.df
    if not df.empty:
        cfg = pd.DataFrame([config_columns(p) for p in df["path"]], index=df.index)
        df = pd.concat([df, cfg[[c for c in cfg.columns if c not in df.columns]]], axis=1)
    df.attrs.update(axes=list(runs.axes), warnings=list(runs.warnings))
    return df


def runs_frame(paths) -> pd.DataFrame:
    """One row per finished run under the sweep folders `paths`: load_runs's columns (sweep,
    run_id, path, status, the axes, result.json's scalars, chance_acc), then config.json's fields."""
    return with_config(load_runs(paths))


def run_steps(run_dir: str | Path) -> pd.DataFrame:
    """A run's metrics.csv (per logged step), with the columns of evals.csv that it lacks
    (val_loss, val_acc) joined on the step: NaN at steps without an evaluation. An evaluation at
    a step that was not logged gets a row of its own."""
    run_dir = Path(run_dir)
    steps = pd.read_csv(run_dir / storage.METRICS)
    if (run_dir / storage.EVALS).is_file():
        evals = pd.read_csv(run_dir / storage.EVALS)
        extra = [c for c in evals.columns if c not in steps.columns]
        if extra and "step" in evals and "step" in steps:
            steps = steps.merge(evals[["step", *extra]], on="step", how="outer").sort_values("step", ignore_index=True)
    return steps


def step_tables(runs: Runs, config: pd.DataFrame) -> Iterator[tuple[dict, pd.DataFrame, dict]]:
    """Per run (a row of `config`, from with_config): the values that are the same on all its
    steps, split in two, and its step table between them: (sweep, run id, status, axes), the
    steps, (the other config fields). A run whose tables cannot be read is skipped, with a
    warning added to `runs.warnings`."""
    axes = [expand_short(a) for a in runs.axes if a != EXPERIMENT]
    fields = [c for c in config.columns if "." in c or c == "name"]
    lead = [c for c in RUN_COLUMNS if c in config] + [a for a in axes if a in fields]
    rest = [c for c in fields if c not in lead]
    for _, row in config.iterrows():
        try:
            steps = run_steps(row["path"])
        except (OSError, ValueError) as e:  # pandas' EmptyDataError and ParserError are ValueErrors
            runs.warnings.append(f"skipped {row['path']}: unreadable step table ({type(e).__name__}: {str(e)[:80]})")
            continue
        yield {c: row[c] for c in lead}, steps, {c: row[c] for c in rest}


def steps_frame(paths) -> pd.DataFrame:
    """Every finished run's step table (run_steps), concatenated, each row with its run's sweep,
    run_id, status, the axes (by their full dotted names, e.g. optimizer.lr), then the step
    columns, then the run's other config fields."""
    return _steps_frame(load_runs(paths))


def _steps_frame(runs: Runs) -> pd.DataFrame:
    config = with_config(runs)
    parts = []
    for lead, steps, rest in step_tables(runs, config):
        const = pd.DataFrame([{**lead, **rest}] * len(steps), index=steps.index)
        parts.append(pd.concat([const[list(lead)], steps, const[list(rest)]], axis=1))
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    df.attrs.update(axes=[expand_short(a) for a in runs.axes], warnings=list(runs.warnings))
    return df


def _json_value(v):
    """A cell as JSON: NaN/inf and pandas' missing values -> null, numpy scalars -> Python."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (tuple, list, np.ndarray)):
        return [_json_value(x) for x in v]
    return None if v is pd.NA or v is pd.NaT else v


def _jsonl(runs: Runs, config: pd.DataFrame, out) -> int:
    """The step table as JSON lines, written run by run (floats exact: Python's repr; pandas'
    to_json keeps 15 decimals, which loses small LRs). Returns the rows written."""
    n = 0
    for lead, steps, rest in step_tables(runs, config):
        head = json.dumps({k: _json_value(v) for k, v in lead.items()})[:-1]
        tail = json.dumps({k: _json_value(v) for k, v in rest.items()})[1:]
        for record in steps.to_dict(orient="records"):
            body = json.dumps({k: _json_value(v) for k, v in record.items()})[1:-1]
            out.write(_join(head, body, tail) + "\n")
            n += 1
    return n


def _join(head: str, body: str, tail: str) -> str:
    """'{"a": 1' + '"b": 2' + '"c": 3}' -> one JSON object (any part may be empty)."""
    inner = [p for p in (head[1:], body, tail[:-1]) if p]
    return "{" + ", ".join(inner) + "}"


def _arrow_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Columns that mix types across runs (train.eval_every: "epoch" in one, 50 in another) as
    strings: parquet columns have one type."""
    out = df.copy()
    for c in out.columns[out.dtypes == object]:
        kinds = {type(v) for v in out[c] if v is not None and not (isinstance(v, float) and math.isnan(v))}
        if len(kinds) > 1 and not kinds <= {int, float}:
            out[c] = [None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in out[c]]
    return out


def write_steps(paths, out: str | Path, fmt: str) -> tuple[int, int, list[str]]:
    """Write steps_frame(paths) to `out` as `fmt` (parquet needs pyarrow: the `parquet` extra).
    Returns (rows, runs, warnings). No finished runs is a UserError."""
    if fmt not in FORMATS:
        raise ParameterError("format", f"expected one of ({', '.join(FORMATS)}), got {fmt!r}")
    if fmt == "parquet":
        require("pyarrow", "--format parquet")
    runs = load_runs(paths)
    if runs.df.empty:
        raise no_runs(paths)
    out = Path(out)
    if fmt == "jsonl":
        config, written = with_config(runs), []
        storage.atomic_replace(out, lambda f: written.append(_jsonl(runs, config, f)))
        return written[0], len(runs.df), runs.warnings
    df = _arrow_safe(_steps_frame(runs))
    storage.atomic_replace(out, lambda f: df.to_parquet(f, index=False), binary=True)
    return len(df), len(runs.df), runs.warnings
