"""best-LR tables from real (tiny) sweeps with awkward axes: list values, axes zipped with B, nulls."""
import json

from typer.testing import CliRunner

from lrsweep.cli import app
from lrsweep.config.grid import build_sweep
from lrsweep.analysis.runs import load_runs
from lrsweep.analysis.cells import best_lr_table, group_axes
from lrsweep.sweep import run_sweep

from conftest import make_config


def sweep_df(tmp_path, sweep, **changes):
    out = run_sweep(build_sweep(make_config(sweep=sweep, **{"train.steps": 6, **changes})), tmp_path / "runs")
    runs = load_runs(out.sweep_dir)
    assert not runs.warnings
    return runs, out.sweep_dir


def test_list_valued_axis_is_a_group(tmp_path):
    runs, sweep_dir = sweep_df(tmp_path, {"optimizer.betas": [[0.9, 0.999], [0.0, 0.0]], "lr": [1e-3, 1e-2],
                                        "batch_size": [16, 32]}, **{"optimizer.name": "adam"})
    assert group_axes(runs) == ["optimizer.betas"]
    table = best_lr_table(runs)
    assert len(table) == 4 and set(table["optimizer.betas"]) == {(0.9, 0.999), (0.0, 0.0)}
    r = CliRunner().invoke(app, ["summarize", str(sweep_dir), "--no-plots"])
    assert r.exit_code == 0, r.output
    rows = [line for line in r.stdout.splitlines() if line.startswith("│ (")]  # one table row per (betas, B)
    assert sorted(line.split("│")[1].strip() + " " + line.split("│")[2].strip() for line in rows) == [
        "(0.0, 0.0) 16", "(0.0, 0.0) 32", "(0.9, 0.999) 16", "(0.9, 0.999) 32"]
    for line, (_, best) in zip(sorted(rows), table.sort_values(["optimizer.betas", "batch_size"]).iterrows()):
        assert float(line.split("│")[3]) == best["best_lr"]
    md = (sweep_dir / "report" / "report.md").read_text()  # one section per group
    assert "## optimizer.betas=(0.0, 0.0)" in md and "## optimizer.betas=(0.9, 0.999)" in md


def test_axis_zipped_with_batch_size_is_not_a_group(tmp_path):
    runs, sweep_dir = sweep_df(tmp_path, {"zip": {"batch_size": [16, 32], "train.eval_every": [2, 3]}, "lr": [0.01, 0.1]})
    assert group_axes(runs) == []
    assert list(best_lr_table(runs).batch_size) == [16, 32]


def test_null_in_a_zip_group_keeps_the_arms_apart(tmp_path):
    runs, sweep_dir = sweep_df(tmp_path, {"zip": {"train.steps": [4, None], "train.examples": [None, 96]},
                                        "lr": [0.01, 0.1], "batch_size": [16, 32]}, **{"train.steps": None})
    assert group_axes(runs) == ["train.steps", "train.examples"]
    assert len(best_lr_table(runs)) == 4
    r = CliRunner().invoke(app, ["summarize", str(sweep_dir), "--no-plots", "--format", "json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)  # the arms stay apart: steps 4 (no examples) and examples 96 (no steps)
    arms = [(row["train.steps"], row["train.examples"], row["batch_size"]) for row in rows]
    assert sorted(arms, key=str) == [(4.0, None, 16), (4.0, None, 32), (None, 96.0, 16), (None, 96.0, 32)]
    assert all(row["best_lr"] in (0.01, 0.1) for row in rows)
    assert sorted(p.name for p in (sweep_dir / "report").iterdir()) == ["best_lr.csv", "cells.csv", "fits.json", "report.md"]
