"""The CLI through typer's CliRunner: exit codes, output, and one-line errors without tracebacks."""
import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from lrsweep.cli import app

from conftest import make_config

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_plan_prints_the_grid_and_run_marks_it_finished(write_config, tmp_path):
    cfg = write_config()
    r = invoke("plan", cfg, "--out", tmp_path / "runs")
    assert r.exit_code == 0, r.output
    assert "4 runs, 0 finished, 4 to run" in r.output and r.output.count("pending") == 4
    r = invoke("run", cfg, "--out", tmp_path / "runs")
    assert r.exit_code == 0, r.output
    assert "best LR per batch size" in r.output
    r = invoke("plan", cfg, "--out", tmp_path / "runs", "--set", "sweep.lr=[0.01, 0.1, 0.3]")
    assert "6 runs, 4 finished, 2 to run" in r.output


def test_run_then_summarize_writes_csv_in_every_format(write_config, tmp_path):
    cfg = write_config(make_config(sweep={"batch_size": [16, 32], "lr": [0.01, 0.1], "seed": [0, 1]}))
    assert invoke("run", cfg, "--out", tmp_path / "runs").exit_code == 0
    sweep_dir = tmp_path / "runs" / "tiny"
    r = invoke("summarize", sweep_dir, "--format", "csv")
    assert r.exit_code == 0, r.output
    table = pd.read_csv(sweep_dir / "report" / "best_lr.csv")
    assert list(table.batch_size) == [16, 32] and (table.n_seeds == 2).all()
    assert set(table.best_lr) <= {0.01, 0.1}
    r = invoke("summarize", sweep_dir, "--format", "json", "--metric", "final_train_loss")
    rows = json.loads(r.output)
    assert len(rows) == 2 and "final_train_loss" in rows[0]
    r = invoke("summarize", tmp_path / "runs", "--format", "markdown")
    assert r.exit_code == 0 and r.output.startswith("| batch_size")


@pytest.mark.parametrize("args, fragment", [
    (["summarize", "{tmp}/nope"], "no such folder"),
    (["summarize", "{tmp}", "--metric", "accuracy"], "--metric: expected one of (final_val_acc"),
    (["summarize", "{tmp}", "--format", "xml"], "--format: expected one of (table, csv, json, markdown)"),
    (["run", "{tmp}/missing.yaml"], "config file not found"),
    (["run", "{cfg}", "--set", "lr=-1"], "optimizer.lr: Input should be greater than 0, got -1"),
    (["plan", "{cfg}", "--set", "optimizer.lrr=1"], "did you mean 'lr'"),
    (["plan", "{cfg}", "--set", "dataset.name=mnist", "--set", "dataset.root={tmp}/nodata"], "dataset.root"),
])
def test_errors_are_one_line_exit_2_no_traceback(args, fragment, write_config, tmp_path):
    cfg = write_config()
    (tmp_path / "empty").mkdir()
    args = [a.replace("{tmp}", str(tmp_path / "empty") if args[0] == "summarize" and a == "{tmp}" else str(tmp_path))
             .replace("{cfg}", str(cfg)) for a in args]
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert fragment in r.output.replace("\n", ""), r.output
    assert "Traceback" not in r.output
    assert r.output.strip().count("\n") <= 3  # one logical line (rich may wrap it)


def test_debug_shows_the_traceback(write_config):
    cfg = write_config()
    r = runner.invoke(app, ["--debug", "plan", str(cfg), "--set", "lr=-1"])
    assert r.exit_code != 0 and r.exception is not None


def test_corrupt_result_is_skipped_with_a_warning(write_config, tmp_path):
    cfg = write_config()
    assert invoke("run", cfg, "--out", tmp_path / "runs").exit_code == 0
    sweep_dir = tmp_path / "runs" / "tiny"
    victim = next(p for p in sweep_dir.iterdir() if p.is_dir())
    (victim / "result.json").write_text("{not json")
    r = invoke("summarize", sweep_dir)
    assert r.exit_code == 0, r.output
    assert "warning" in r.output and victim.name in r.output.replace("\n", "")
