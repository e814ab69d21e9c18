"""The CLI through typer's CliRunner: exit codes, output, and one-line errors without tracebacks."""
import io
import json
import typing

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from lrsweep.cli import app
from lrsweep.cli import choices, root
from lrsweep.cli.root import guarded
from lrsweep.errors import ConfigError, ParameterError

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
    printed = pd.read_csv(io.StringIO(r.stdout))  # stdout is the same table as the file, nothing else
    pd.testing.assert_frame_equal(printed, table)
    r = invoke("summarize", sweep_dir, "--format", "json", "--metric", "final_train_loss")
    rows = json.loads(r.output)
    assert len(rows) == 2 and "final_train_loss" in rows[0]
    assert [row["batch_size"] for row in rows] == [16, 32] and all(row["n_seeds"] == 2 for row in rows)
    r = invoke("summarize", tmp_path / "runs", "--format", "markdown")
    assert r.exit_code == 0 and r.output.startswith("| batch_size")
    head, sep, *body = r.stdout.strip().splitlines()
    assert sep.startswith("|---|") and [line.split(" | ")[0] for line in body] == ["| 16", "| 32"]
    best = dict(zip(head.split(" | "), body[0].split(" | ")))
    assert float(best["best_lr"]) == table.best_lr[0]  # 4 significant figures, as the terminal table
    r = invoke("summarize", sweep_dir, "--no-plots")
    assert r.exit_code == 0, r.output
    assert "best LR per batch size by final_val_acc" in r.stdout
    assert f"wrote {sweep_dir / 'report' / 'report.md'} and 3 more files" in r.stdout.replace("\n", "")


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
    assert isinstance(r.exception, ConfigError), repr(r.exception)  # raised as is, not turned into exit 2
    assert r.exception.path == "optimizer.lr" and "greater than 0" in r.exception.message


def _raises(param: str, message: str) -> typer.Typer:
    """A one-command app whose command fails with ParameterError(param, message)."""
    mini = typer.Typer()

    @mini.command()
    @guarded(batch_sizes="--batch-size")
    def cmd(min_lr: float = 1.0, max_lr: float = 2.0, max_retries: int = 0, gpus_per_task: float = 0.0,
            workers: int = 1, batch_size: int = 1):
        raise ParameterError(param, message)
    return mini


@pytest.mark.parametrize("param, message, shown", [
    ("min_lr", "must be below `max_lr`, got 1", "--min-lr: must be below --max-lr, got 1"),
    ("workers", "expected at least 1, got 0", "--workers: expected at least 1, got 0"),
    ("max_retries", "expected a number >= 0", "--max-retries: expected a number >= 0"),
    ("gpus_per_task", "expected a number >= 0", "--gpus-per-task: expected a number >= 0"),
    ("batch_sizes", "must be >= 1, got 0", "--batch-size: must be >= 1, got 0"),  # renamed by the command
    ("min_lr", "no `valley` suggestion", "--min-lr: no valley suggestion"),  # not a parameter: only unmarked
])
def test_parameter_errors_are_shown_under_their_flags(param, message, shown, monkeypatch):
    monkeypatch.setitem(root.STATE, "debug", False)  # the app's --debug callback is not in this one
    r = runner.invoke(_raises(param, message), [])
    assert r.exit_code == 2, r.output
    assert r.stderr.strip() == f"error: {shown}"
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit)


def test_library_parameter_errors_reach_the_user_as_flags(write_config, tmp_path):
    cfg = write_config()
    assert invoke("run", cfg, "--out", tmp_path / "runs").exit_code == 0
    r = invoke("summarize", tmp_path / "runs" / "tiny", "--after-steps", 0)  # analysis: after_steps
    assert r.exit_code == 2 and r.stderr.strip() == "error: --after-steps: expected an integer >= 1, got 0"
    r = invoke("summarize", tmp_path / "runs" / "tiny", "--target", -1)  # analysis: targets
    assert r.exit_code == 2 and r.stderr.startswith("error: --target: expected train-loss values > 0")
    assert "Traceback" not in r.output


@pytest.mark.parametrize("command, fragment", [
    ("summarize", "table|csv|json|markdown"), ("predict", "linear|sqrt|power|surge|saturating|linear_rule|sqrt_rule"),
    ("run", "local|ray"), ("run", "auto|vectorized|sequential"), ("range-test", "exp|linear"),
])
def test_help_lists_the_choices(command, fragment):
    r = runner.invoke(app, [command, "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    assert r.exit_code == 0 and fragment in r.output, r.output


def test_choices_are_the_library_lists():
    """The CLI spells some lists out (their modules are slow to import); they must not drift."""
    from lrsweep.config import TrainConfig
    from lrsweep.execution import EXECUTORS
    from lrsweep.rangetest import MODES, SUGGESTIONS

    assert [c.value for c in choices.Executor] == list(EXECUTORS)
    assert [c.value for c in choices.Engine] == list(typing.get_args(TrainConfig.model_fields["engine"].annotation))
    assert [c.value for c in choices.RampMode] == list(MODES)
    assert [c.value for c in choices.Suggestion] == list(SUGGESTIONS)
    assert f"{choices.Format.csv}" == "csv"  # prints as its value


def test_corrupt_result_is_skipped_with_a_warning(write_config, tmp_path):
    cfg = write_config()
    assert invoke("run", cfg, "--out", tmp_path / "runs").exit_code == 0
    sweep_dir = tmp_path / "runs" / "tiny"
    victim = next(p for p in sweep_dir.iterdir() if p.is_dir())
    (victim / "result.json").write_text("{not json")
    r = invoke("summarize", sweep_dir)
    assert r.exit_code == 0, r.output
    assert "warning" in r.output and victim.name in r.output.replace("\n", "")
