"""The Python API (`import lrsweep`): loading, running with a callback, the runs as a DataFrame,
the report; and the worked example in docs/examples, executed as a user would run it."""
from __future__ import annotations

import math
import runpy
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from torch import nn

import lrsweep
from lrsweep.events import RunFinished, RunStarted, SweepFinished, SweepStarted

from conftest import make_config

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "api_example.py"


def tiny_net(num_classes, input_shape, width=8):
    """A model factory passed to load_sweep as a callable (top level: importable by name)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.ReLU(),
                         nn.Linear(width, num_classes))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The conftest sweep (2 batch sizes x 2 LRs, 20 steps) run once through the API, with every event."""
    out = tmp_path_factory.mktemp("api") / "runs"
    events = []
    outcome = lrsweep.run(lrsweep.load_sweep(make_config(**{"train.target_train_loss": 1.0})), out=out,
                          callback=events.append)
    return outcome, events


def test_import_is_cheap_and_the_api_is_there_on_first_use():
    code = ("import sys, lrsweep; heavy = [m for m in ('torch', 'pandas', 'numpy') if m in sys.modules]; "
            "print(heavy, callable(lrsweep.summarize), lrsweep.Report.__name__, 'runs_frame' in dir(lrsweep))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]", "True", "Report", "True"]
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lrsweep.nope  # noqa: B018


def test_load_sweep_from_a_dict_equals_the_yaml_file(write_config):
    raw = make_config()
    from_dict = lrsweep.load_sweep(raw, overrides=["train.steps=7"])
    from_file = lrsweep.load_sweep(write_config(raw), overrides=["train.steps=7"])
    assert [r.run_id for r in from_dict.runs] == [r.run_id for r in from_file.runs]
    assert from_dict.axis_names == ["batch_size", "lr"] and from_dict.runs[0].config.train.steps == 7
    assert raw["train"]["steps"] == 20  # the caller's dict is left as it was


def test_load_sweep_errors_name_the_field_or_argument():
    with pytest.raises(lrsweep.ConfigError, match="optimizer.momentum"):
        lrsweep.load_sweep(make_config(**{"optimizer.momentum": "lots"}))
    with pytest.raises(lrsweep.ParameterError, match="source: expected a path to a sweep YAML file or a dict"):
        lrsweep.load_sweep(42)
    with pytest.raises(lrsweep.ParameterError, match="model: expected a function defined at the top level"):
        lrsweep.load_sweep(make_config(), model=lambda num_classes, input_shape: None)


def test_run_reports_progress_events_in_order_and_resumes(trained):
    outcome, events = trained
    assert (outcome.total, outcome.skipped, outcome.counts, outcome.failed) == (4, 0, {"complete": 4}, 0)
    assert isinstance(events[0], SweepStarted) and events[0].pending == 4
    assert isinstance(events[-1], SweepFinished)
    started = [e for e in events if isinstance(e, RunStarted)]
    finished = [e for e in events if isinstance(e, RunFinished)]
    assert [e.index for e in started] == [0, 1, 2, 3] and len(finished) == 4
    assert {(e.axes["batch_size"], e.axes["lr"]) for e in finished} == {(16, 0.01), (16, 0.1), (32, 0.01), (32, 0.1)}
    again = lrsweep.run(make_config(**{"train.target_train_loss": 1.0}), out=outcome.sweep_dir.parent)  # a dict works too
    assert (again.skipped, again.counts) == (4, {})


def test_runs_frame_has_one_row_per_run_with_config_columns(trained):
    outcome, _ = trained
    df = lrsweep.runs_frame(outcome.sweep_dir)
    assert len(df) == 4 and df["run_id"].is_unique
    assert (df["optimizer.momentum"] == 0.9).all() and (df["train.steps"] == 20).all()
    assert (df["dataset.name"] == "synthetic").all() and df["model.hidden"].tolist() == [(32,)] * 4
    assert sorted(zip(df["batch_size"], df["lr"])) == [(16, 0.01), (16, 0.1), (32, 0.01), (32, 0.1)]
    assert df["final_val_acc"].between(0, 1).all() and (df["status"] == "complete").all()
    assert df.attrs["axes"] == ["batch_size", "lr"] and df.attrs["warnings"] == []
    assert df.groupby("optimizer.name")["final_val_acc"].max().index.tolist() == ["sgd"]


def test_steps_frame_has_every_logged_step(trained):
    outcome, _ = trained
    steps = lrsweep.steps_frame(outcome.sweep_dir)
    assert len(steps) == 4 * 20 and list(steps.columns[:5]) == ["sweep", "run_id", "status", "train.batch_size", "optimizer.lr"]
    one = steps[steps["run_id"] == steps["run_id"].iloc[0]]
    assert one["step"].tolist() == list(range(1, 21))
    assert one["val_acc"].notna().tolist() == [s in (10, 20) for s in range(1, 21)]  # evaluated every 10 steps
    assert (steps["optimizer.momentum"] == 0.9).all()


def test_summarize_gives_the_report_the_cli_prints(trained, tmp_path):
    outcome, _ = trained
    report = lrsweep.summarize(outcome.sweep_dir, metric="final_val_loss", targets=[1.0])
    assert isinstance(report, lrsweep.Report) and report.metric == "final_val_loss" and not report.higher
    best = report.table("best")
    assert best["batch_size"].tolist() == [16, 32] and best["best_lr"].isin([0.01, 0.1]).all()
    assert len(report.groups) == 1 and report.groups[0].label == ""
    assert set(report.table("cells")["lr"]) == {0.01, 0.1}
    assert isinstance(report.table("fits"), pd.DataFrame) and isinstance(report.table("critical"), pd.DataFrame)
    assert isinstance(report.warnings, list)
    files = lrsweep.write_report(report, tmp_path / "report", with_plots=False)
    assert {f.name for f in files} == {"best_lr.csv", "cells.csv", "fits.json", "report.md"}
    with pytest.raises(lrsweep.UserError, match="not a sweep folder"):
        lrsweep.summarize(tmp_path / "report")


def test_a_model_given_as_a_callable_trains(tmp_path, write_config):
    raw = make_config(**{"model": {"name": "mlp", "args": {"width": 4}}, "train.steps": 3, "sweep": {"lr": [0.1]}})
    sweep = lrsweep.load_sweep(raw, model=tiny_net)
    assert sweep.runs[0].config.model.factory.endswith(":tiny_net")
    assert sweep.runs[0].config.model.args == {"width": 4}  # the file's args are kept
    assert [r.run_id for r in lrsweep.load_sweep(write_config(raw), model=tiny_net).runs] == [sweep.runs[0].run_id]
    outcome = lrsweep.run(sweep, out=tmp_path)
    assert outcome.counts == {"complete": 1}
    df = lrsweep.runs_frame(outcome.sweep_dir)
    assert df["model.factory"].iloc[0].endswith(":tiny_net")


def test_the_worked_example_runs(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE)])
    monkeypatch.chdir(tmp_path)  # it writes into a temporary folder of its own; nothing lands here
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out
    assert "api-example: 28 runs over batch_size, lr" in out
    assert "runs_frame: 28 rows" in out and "best-fitting law:" in out and "wrote 4 report files" in out
    assert list(tmp_path.iterdir()) == []
