"""`lrsweep export --tensorboard DIR`: one TensorBoard run per grid cell.

    DIR/<axes>,id=<run_id>/   e.g. `batch_size=32,lr=0.01,id=2382d1b0ca` (under DIR/<sweep>/
                              when several sweeps are exported at once)
        train/<col>   per logged step, every numeric column of metrics.csv but the step
                      counters (train/loss, train/acc, train/lr, train/grad_norm, train/b_simple
                      when logged, train/data_time, train/compute_time)
        eval/<col>    per evaluation, from evals.csv (eval/val_loss, eval/val_acc, and the
                      running eval/train_loss, eval/train_acc)
        hparam/<m>    the run's headline metrics (final_val_acc, best_val_acc, ...) at its last step
        the HParams plugin's session: the run's hyperparameters (its axis values, key config
        fields, status) and its end status
    DIR/              the HParams experiment: which hyperparameters and metrics the HParams tab
                      shows as columns, with every value the cells take

The session is written into the cell's own run (not a subfolder per call, as
SummaryWriter.add_hparams does), so the HParams tab has one row per cell, linked to its curves.
Wall times are the run's own (finished_at - time_s + elapsed): TensorBoard's "relative" axis
is training time. Re-exporting into DIR replaces the event files lrsweep wrote there before.
"""
from __future__ import annotations

import math
import re
from datetime import datetime
from pathlib import Path

import pandas as pd

from lrsweep import storage
from lrsweep.analysis.runs import EXPERIMENT, load_runs
from lrsweep.export import no_runs, require
from lrsweep.export.tables import config_columns

SUFFIX = ".lrsweep"  # on the event files lrsweep writes, so that a re-export removes only those
COUNTERS = ("step", "epoch", "examples", "batch_size", "elapsed")  # x axes and constants, not curves
KEY_FIELDS = ("model.name", "model.factory", "dataset.name", "dataset.factory", "optimizer.name",
              "schedule.name", "lr_scaling.rule", "train.seed")
METRICS = ("final_val_acc", "best_val_acc", "final_val_loss", "best_val_loss", "final_train_loss",
           "final_train_acc", "initial_loss", "steps_to_target", "examples_to_target", "time_to_target", "time_s")
METRIC_TAG = "hparam/"


def _text(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (tuple, list)):
        return "_".join(_text(x) for x in v)
    return str(v)


def run_name(axes: dict, run_id: str) -> str:
    """The cell's folder: its axis values and run id, `batch_size=32,lr=0.01,id=2382d1b0ca`,
    with characters other than letters, digits and `._=,+-` as `_`."""
    name = ",".join([*(f"{k}={_text(v)}" for k, v in axes.items()), f"id={run_id}"])
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", name)


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


def _hparam(v):
    """A value the HParams plugin takes: bool, float or str (lists as text); None when missing."""
    if _missing(v):
        return None
    if hasattr(v, "item") and not isinstance(v, (tuple, list)):
        v = v.item()
    if isinstance(v, bool) or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    return _text(v)


def cell_hparams(row: pd.Series, axes: list[str], config: dict) -> dict:
    """A run's hyperparameters: its axis values (as named in the sweep file), the key config
    fields (KEY_FIELDS) and its status; missing ones left out."""
    hp = {a: row.get(a) for a in axes}
    hp.update({k: config.get(k) for k in KEY_FIELDS if k not in hp})
    hp["status"] = row.get("status")
    return {k: h for k, v in hp.items() if (h := _hparam(v)) is not None}


def cell_metrics(row: pd.Series) -> dict:
    """A run's headline metrics (METRICS), finite ones only, keyed by their scalar tag."""
    out = {}
    for m in METRICS:
        v = row.get(m)
        if not _missing(v) and isinstance(v, (int, float)) and math.isfinite(v):
            out[METRIC_TAG + m] = float(v)
    return out


def _harmonize(sessions: list[dict]) -> dict[str, list]:
    """Every hparam's distinct values across the cells (sorted); an hparam whose values mix
    types (a number here, text there) becomes text in every cell, as the HParams tab needs."""
    names = list(dict.fromkeys(k for hp in sessions for k in hp))
    domains = {}
    for k in names:
        values = [hp[k] for hp in sessions if k in hp]
        if len({type(v) for v in values}) > 1:
            for hp in sessions:
                if k in hp:
                    hp[k] = _text(hp[k])
            values = [hp[k] for hp in sessions if k in hp]
        domains[k] = sorted(set(values))
    return domains


class _Protos:
    """The protobuf classes of the HParams plugin (tensorboard's, imported on first use)."""

    def __init__(self):
        require("tensorboard", "--tensorboard")
        from google.protobuf import struct_pb2
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
        from torch.utils.tensorboard.writer import FileWriter

        self.struct, self.Summary, self.SummaryMetadata = struct_pb2, Summary, SummaryMetadata
        self.api, self.meta, self.data, self.FileWriter = api_pb2, metadata, plugin_data_pb2, FileWriter

    def plugin(self, tag: str, **content):
        data = self.data.HParamsPluginData(version=self.meta.PLUGIN_DATA_VERSION, **content)
        md = self.SummaryMetadata(plugin_data=self.SummaryMetadata.PluginData(
            plugin_name=self.meta.PLUGIN_NAME, content=data.SerializeToString()))
        return self.Summary(value=[self.Summary.Value(tag=tag, metadata=md)])

    def value(self, v):
        if isinstance(v, bool):
            return self.struct.Value(bool_value=v)
        return self.struct.Value(number_value=v) if isinstance(v, float) else self.struct.Value(string_value=v)

    def experiment(self, domains: dict[str, list], metrics: list[str]):
        kind = {bool: "DATA_TYPE_BOOL", float: "DATA_TYPE_FLOAT64", str: "DATA_TYPE_STRING"}
        infos = [self.api.HParamInfo(name=k, type=self.api.DataType.Value(kind[type(vs[0])]), differs=len(vs) > 1,
                                     domain_discrete=self.struct.ListValue(values=[self.value(v) for v in vs]))
                 for k, vs in domains.items()]
        mts = [self.api.MetricInfo(name=self.api.MetricName(tag=m)) for m in metrics]
        return self.plugin(self.meta.EXPERIMENT_TAG, experiment=self.api.Experiment(hparam_infos=infos, metric_infos=mts))

    def session(self, hparams: dict, status: str, start: float | None, end: float | None):
        ssi = self.data.SessionStartInfo(start_time_secs=start or 0.0)
        for k, v in hparams.items():
            ssi.hparams[k].CopyFrom(self.value(v))
        ok = self.api.Status.Value("STATUS_FAILURE" if status == "failed" else "STATUS_SUCCESS")
        sei = self.data.SessionEndInfo(status=ok, end_time_secs=end or 0.0)
        return (self.plugin(self.meta.SESSION_START_INFO_TAG, session_start_info=ssi),
                self.plugin(self.meta.SESSION_END_INFO_TAG, session_end_info=sei))

    def scalars(self, values: dict):
        return self.Summary(value=[self.Summary.Value(tag=t, simple_value=v) for t, v in values.items()])


def _start_time(row: pd.Series) -> float | None:
    """When the run started (result.json's finished_at less its time_s), in seconds since the epoch."""
    try:
        return datetime.fromisoformat(str(row.get("finished_at"))).timestamp() - float(row.get("time_s") or 0.0)
    except (TypeError, ValueError):
        return None


def _curves(writer, protos: _Protos, table: pd.DataFrame, prefix: str, rename, start: float | None) -> int:
    """One event per row of a metrics.csv or evals.csv table: every numeric column but the
    counters, as `prefix/rename(col)`. Returns the last step written (0 if none)."""
    cols = [c for c in table.columns if c not in COUNTERS and pd.api.types.is_numeric_dtype(table[c])]
    if "step" not in table or not cols:
        return 0
    tags = [f"{prefix}/{rename(c)}" for c in cols]
    elapsed = table["elapsed"] if "elapsed" in table and start is not None else None
    for i, (step, *values) in enumerate(table[["step", *cols]].itertuples(index=False, name=None)):
        scalars = {t: float(v) for t, v in zip(tags, values) if not pd.isna(v)}
        if scalars and not pd.isna(step):
            wall = start + float(elapsed.iloc[i]) if elapsed is not None and not pd.isna(elapsed.iloc[i]) else None
            writer.add_summary(protos.scalars(scalars), int(step), wall)
    return int(table["step"].max()) if len(table) else 0


def _read(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        return pd.DataFrame()


def _clear(folder: Path) -> None:
    for f in folder.glob(f"events.out.tfevents.*{SUFFIX}"):
        f.unlink()


def export_tensorboard(paths, out_dir: str | Path) -> tuple[list[Path], list[str]]:
    """Write the finished runs under the sweep folders `paths` as TensorBoard runs under
    `out_dir` (layout: the module's docstring). Returns (the run folders, warnings: files
    skipped). Needs tensorboard (the `export` extra): MissingExtra otherwise."""
    protos = _Protos()
    runs = load_runs(paths)
    if runs.df.empty:
        raise no_runs(paths)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    nested = runs.df["sweep"].nunique() > 1
    cells = []
    for _, row in runs.df.iterrows():
        axes = {a: row.get(a) for a in runs.axes if a != EXPERIMENT or not _missing(row.get(a))}
        folder = out / row["sweep"] if nested else out
        hp = cell_hparams(row, runs.axes, config_columns(row["path"]))
        cells.append((row, folder / run_name(axes, str(row["run_id"])), {**hp, "sweep": row["sweep"]} if nested else hp))
    domains = _harmonize([hp for _, _, hp in cells])
    metrics = list(dict.fromkeys(m for row, _, _ in cells for m in cell_metrics(row)))
    folders, warnings = [], list(runs.warnings)
    for row, folder, hp in cells:
        run_dir, start = Path(row["path"]), _start_time(row)
        try:
            steps, evals = _read(run_dir / storage.METRICS), _read(run_dir / storage.EVALS)
        except (OSError, ValueError) as e:
            warnings.append(f"skipped {run_dir}: unreadable step table ({type(e).__name__}: {str(e)[:80]})")
            continue
        folder.mkdir(parents=True, exist_ok=True)
        _clear(folder)
        writer = protos.FileWriter(str(folder), filename_suffix=SUFFIX)
        try:
            last = _curves(writer, protos, steps, "train", lambda c: c.removeprefix("train_"), start)
            last = max(last, _curves(writer, protos, evals.drop(columns=["lr"], errors="ignore"), "eval", str, start))
            end = start + float(row.get("time_s") or 0.0) if start is not None else None
            for summary in protos.session(hp, str(row.get("status")), start, end):
                writer.add_summary(summary, 0, start)
            if cell_metrics(row):
                writer.add_summary(protos.scalars(cell_metrics(row)), last, end)
        finally:
            writer.close()
        folders.append(folder)
    _clear(out)
    writer = protos.FileWriter(str(out), filename_suffix=SUFFIX)
    writer.add_summary(protos.experiment(domains, metrics))
    writer.close()
    return folders, warnings
