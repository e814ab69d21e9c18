"""best-LR tables from real (tiny) sweeps with awkward axes: list values, axes zipped with B, nulls."""
from typer.testing import CliRunner

from lrsweep.cli import app
from lrsweep.config.grid import build_sweep
from lrsweep.analysis.runs import load_runs
from lrsweep.analysis.cells import best_lr_table, group_axes
from lrsweep.sweep import run_sweep

from conftest import make_config


def sweep_df(tmp_path, sweep, **changes):
    out = run_sweep(build_sweep(make_config(sweep=sweep, **{"train.steps": 6, **changes})), tmp_path / "runs")
    df, warnings = load_runs(out.sweep_dir)
    assert not warnings
    return df, out.sweep_dir


def test_list_valued_axis_is_a_group(tmp_path):
    df, sweep_dir = sweep_df(tmp_path, {"optimizer.betas": [[0.9, 0.999], [0.0, 0.0]], "lr": [1e-3, 1e-2],
                                        "batch_size": [16, 32]}, **{"optimizer.name": "adam"})
    assert group_axes(df) == ["optimizer.betas"]
    table = best_lr_table(df)
    assert len(table) == 4 and set(table["optimizer.betas"]) == {(0.9, 0.999), (0.0, 0.0)}
    r = CliRunner().invoke(app, ["summarize", str(sweep_dir), "--no-plots"])
    assert r.exit_code == 0, r.output


def test_axis_zipped_with_batch_size_is_not_a_group(tmp_path):
    df, sweep_dir = sweep_df(tmp_path, {"zip": {"batch_size": [16, 32], "train.eval_every": [2, 3]}, "lr": [0.01, 0.1]})
    assert group_axes(df) == []
    assert list(best_lr_table(df).batch_size) == [16, 32]


def test_null_in_a_zip_group_keeps_the_arms_apart(tmp_path):
    df, sweep_dir = sweep_df(tmp_path, {"zip": {"train.steps": [4, None], "train.examples": [None, 96]},
                                        "lr": [0.01, 0.1], "batch_size": [16, 32]}, **{"train.steps": None})
    assert group_axes(df) == ["train.steps", "train.examples"]
    assert len(best_lr_table(df)) == 4
    r = CliRunner().invoke(app, ["summarize", str(sweep_dir), "--no-plots"])
    assert r.exit_code == 0, r.output
