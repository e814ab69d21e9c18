"""`lrsweep export`: TensorBoard event files read back with TensorBoard's own reader (scalars,
HParams sessions and experiment), the parquet/jsonl step table round trip, and the errors."""
from __future__ import annotations

import json
import math
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

import lrsweep
from lrsweep.cli import app
from lrsweep.export import MissingExtra
from lrsweep.export.tables import write_steps
from lrsweep.export.tensorboard import export_tensorboard, run_name

from conftest import make_config

EventAccumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator").EventAccumulator
from tensorboard.plugins.hparams import metadata  # noqa: E402

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """Two sweeps in one folder: `tiny` (2 x 2 cells, evaluated every 10 steps, one run with a
    logged b_simple column) and `other` (one cell, evaluated every epoch)."""
    root = tmp_path_factory.mktemp("export") / "runs"
    lrsweep.run(make_config(**{"train.target_train_loss": 1.0}), out=root)
    lrsweep.run(make_config(name="other", sweep={"batch_size": [16], "lr": [0.1]}, **{"train.eval_every": "epoch"}), out=root)
    first = sorted(p for p in (root / "tiny").iterdir() if (p / "metrics.csv").is_file())[0]
    m = pd.read_csv(first / "metrics.csv")
    m["b_simple"] = m["step"] * 2.5  # as a run that logs the simple noise scale would
    m.to_csv(first / "metrics.csv", index=False)
    return root


def _accumulator(path) -> EventAccumulator:
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
    acc.Reload()
    return acc


def _scalars(acc, tag) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_tensorboard_has_one_run_per_cell_with_its_curves(sweeps, tmp_path):
    folders, warnings = export_tensorboard(sweeps / "tiny", tmp_path / "tb")
    runs = lrsweep.runs_frame(sweeps / "tiny")
    assert warnings == [] and len(folders) == 4
    expected = {run_name({"batch_size": r.batch_size, "lr": r.lr}, r.run_id) for r in runs.itertuples()}
    assert {f.name for f in folders} == expected
    assert any(f.name.startswith("batch_size=16,lr=0.01,id=") for f in folders)
    for run in runs.itertuples():
        acc = _accumulator(tmp_path / "tb" / run_name({"batch_size": run.batch_size, "lr": run.lr}, run.run_id))
        metrics = pd.read_csv(f"{run.path}/metrics.csv")
        evals = pd.read_csv(f"{run.path}/evals.csv")
        tags = set(acc.Tags()["scalars"])
        assert {"train/loss", "train/acc", "train/lr", "train/grad_norm", "eval/val_loss", "eval/val_acc"} <= tags
        for tag, table, col in (("train/loss", metrics, "train_loss"), ("train/lr", metrics, "lr"),
                                ("train/grad_norm", metrics, "grad_norm"), ("eval/val_acc", evals, "val_acc"),
                                ("eval/val_loss", evals, "val_loss")):
            got = _scalars(acc, tag)
            assert [s for s, _ in got] == table["step"].tolist(), tag
            assert [v for _, v in got] == pytest.approx(table[col].tolist(), rel=1e-6), tag  # float32 in the file
        assert _scalars(acc, "hparam/final_val_acc") == [(20, pytest.approx(run.final_val_acc, rel=1e-6))]
        assert ("train/b_simple" in tags) == ("b_simple" in metrics)
        if "b_simple" in metrics:
            assert _scalars(acc, "train/b_simple") == [(s, pytest.approx(2.5 * s)) for s in range(1, 21)]
        wall = [e.wall_time for e in acc.Scalars("train/loss")]
        assert wall == sorted(wall) and wall[-1] - wall[0] == pytest.approx(metrics["elapsed"].iloc[-1] - metrics["elapsed"].iloc[0], abs=1e-3)


def test_hparams_give_one_session_per_cell_and_the_experiment(sweeps, tmp_path):
    export_tensorboard(sweeps / "tiny", tmp_path / "tb")
    runs = lrsweep.runs_frame(sweeps / "tiny")
    for run in runs.itertuples():
        acc = _accumulator(tmp_path / "tb" / run_name({"batch_size": run.batch_size, "lr": run.lr}, run.run_id))
        content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
        start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
        hp = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
        assert hp["batch_size"] == run.batch_size and hp["lr"] == pytest.approx(run.lr)
        assert hp["optimizer.name"] == "sgd" and hp["model.name"] == "mlp" and hp["status"] == "complete"
        assert hp["dataset.name"] == "synthetic" and hp["train.seed"] == 0
        end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
        assert end.status == 1  # STATUS_SUCCESS
    root = _accumulator(tmp_path / "tb")
    experiment = metadata.parse_experiment_plugin_data(root.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.EXPERIMENT_TAG])
    infos = {h.name: [getattr(v, v.WhichOneof("kind")) for v in h.domain_discrete.values] for h in experiment.hparam_infos}
    assert infos["batch_size"] == [16, 32] and infos["lr"] == [0.01, 0.1] and infos["status"] == ["complete"]
    differs = {h.name: h.differs for h in experiment.hparam_infos}
    assert differs["batch_size"] and differs["lr"] and not differs["optimizer.name"]
    metric_tags = [m.name.tag for m in experiment.metric_infos]
    assert {"hparam/final_val_acc", "hparam/best_val_acc", "hparam/final_train_loss", "hparam/steps_to_target"} <= set(metric_tags)


def test_reexport_replaces_its_event_files_and_several_sweeps_nest(sweeps, tmp_path):
    export_tensorboard(sweeps / "tiny", tmp_path / "tb")
    folders, _ = export_tensorboard(sweeps / "tiny", tmp_path / "tb")
    assert all(len(list(f.glob("events.out.tfevents.*"))) == 1 for f in folders)
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 1
    folders, _ = export_tensorboard(sweeps, tmp_path / "both")  # a folder of sweeps
    assert sorted({f.parent.name for f in folders}) == ["other", "tiny"] and len(folders) == 5
    other = _accumulator(next(f for f in folders if f.parent.name == "other"))
    evals = pd.read_csv(next(p for p in (sweeps / "other").iterdir() if p.is_dir()) / "evals.csv")
    assert [s for s, _ in _scalars(other, "eval/val_acc")] == evals["step"].tolist() and 16 in evals["step"].tolist()
    start = metadata.parse_session_start_info_plugin_data(
        other.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG])
    assert start.hparams["sweep"].string_value == "other"


def test_jsonl_round_trip_is_exact(sweeps, tmp_path):
    rows, n_runs, warnings = write_steps(sweeps / "tiny", tmp_path / "steps.jsonl", "jsonl")
    frame = lrsweep.steps_frame(sweeps / "tiny")
    lines = [json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert (rows, n_runs, warnings) == (80, 4, []) and len(lines) == 80
    assert list(lines[0]) == list(frame.columns)
    for line, (_, row) in zip(lines, frame.iterrows()):
        for col, value in line.items():
            want = row[col]
            if isinstance(want, tuple):
                assert value == list(want), col
            elif value is None:
                assert want is None or (isinstance(want, float) and math.isnan(want)), col
            else:
                assert value == want, col  # floats exactly: the repr round-trips
    assert {line["optimizer.momentum"] for line in lines} == {0.9} and lines[0]["model.hidden"] == [32]


def test_parquet_round_trip_and_mixed_types(sweeps, tmp_path):
    pytest.importorskip("pyarrow")
    rows, n_runs, _ = write_steps(sweeps, tmp_path / "steps.parquet", "parquet")
    back = pd.read_parquet(tmp_path / "steps.parquet")
    frame = lrsweep.steps_frame(sweeps)
    assert (rows, n_runs, len(back)) == (len(frame), 5, len(frame)) and list(back.columns) == list(frame.columns)
    for col in ("step", "train_loss", "lr", "val_acc", "optimizer.lr", "train.batch_size", "optimizer.momentum"):
        pd.testing.assert_series_equal(back[col], frame[col], check_dtype=False, check_names=False)
    assert back["train.eval_every"].tolist() == [str(v) for v in frame["train.eval_every"]]  # "epoch" and 10: text
    assert [list(v) for v in back["model.hidden"]] == [[32]] * len(back)


def test_cli_exports_both_and_says_where(sweeps, tmp_path):
    r = invoke("export", sweeps / "tiny", "--tensorboard", tmp_path / "tb", "--format", "jsonl", "--out", tmp_path / "s.jsonl")
    assert r.exit_code == 0, r.output
    assert "s.jsonl: 80 rows from 4 runs" in r.output and "wrote 4 TensorBoard runs" in r.output
    assert "tensorboard --logdir" in r.output
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) == 80


@pytest.mark.parametrize("args, message", [
    ((), "--tensorboard: give a folder for TensorBoard runs, or --format parquet|jsonl"),
    (("--out", "x.jsonl"), "--out: names the table's file: give --format parquet|jsonl too"),
    (("--format", "xml"), "--format: expected one of (parquet, jsonl), got 'xml'"),
])
def test_cli_bad_flags_are_one_line_errors(sweeps, args, message):
    r = invoke("export", sweeps / "tiny", *args)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output


def test_not_a_sweep_folder_is_a_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    for args in (("--tensorboard", tmp_path / "tb"), ("--format", "jsonl")):
        r = invoke("export", tmp_path / "empty", *args)
        assert r.exit_code == 2 and "not a sweep folder" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "tb").exists()


@pytest.mark.parametrize("module, args, extra", [
    ("tensorboard", ("--tensorboard", "tb"), "export"),
    ("pyarrow", ("--format", "parquet"), "parquet"),
])
def test_a_missing_extra_says_how_to_install_it(sweeps, tmp_path, monkeypatch, module, args, extra):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    monkeypatch.chdir(tmp_path)
    r = invoke("export", sweeps / "tiny", *args)
    assert r.exit_code == 2, r.output
    assert f"needs {module}, which is not installed: pip install 'lrsweep[{extra}]'" in r.output
    assert len(r.output.strip().splitlines()) == 1
    with pytest.raises(MissingExtra):
        (export_tensorboard(sweeps, tmp_path / "tb") if module == "tensorboard"
         else write_steps(sweeps, tmp_path / "s.parquet", "parquet"))


def test_an_unreadable_step_table_is_skipped_with_a_warning(sweeps, tmp_path):
    import shutil

    copy = tmp_path / "tiny"
    shutil.copytree(sweeps / "tiny", copy)
    broken = sorted(p for p in copy.iterdir() if p.is_dir())[-1]
    (broken / "metrics.csv").write_text("")
    rows, n_runs, warnings = write_steps(copy, tmp_path / "s.jsonl", "jsonl")
    assert (rows, n_runs) == (60, 4) and len(warnings) == 1 and warnings[0].startswith(f"skipped {broken}")
    folders, warnings = export_tensorboard(copy, tmp_path / "tb")
    assert len(folders) == 3 and len(warnings) == 1 and str(broken) in warnings[0]
    r = invoke("export", copy, "--format", "jsonl", "--out", tmp_path / "t.jsonl")
    assert r.exit_code == 0 and "warning: skipped" in r.output
    empty = tmp_path / "empty-sweep"
    (empty / "abc").mkdir(parents=True)
    (empty / "abc" / "config.json").write_text("{}")  # a run folder, unfinished
    r = invoke("export", empty, "--format", "jsonl")
    assert r.exit_code == 2 and "no finished runs under" in r.output
