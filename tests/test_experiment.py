"""A sweep folder holds one experiment; a run's id covers what changes its numbers and nothing
else; a grid with failed runs is not a success."""
from __future__ import annotations

import json
import shutil

import pandas as pd
from typer.testing import CliRunner

from lrsweep import storage
from lrsweep.analysis.cells import best_lr_table
from lrsweep.analysis.runs import load_runs
from lrsweep.cli import app
from lrsweep.config.experiment import sweep_differences
from lrsweep.config.grid import build_sweep
from lrsweep.sweep import run_sweep

from conftest import make_config

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_a_second_budget_into_the_same_folder_is_refused_and_the_folder_untouched(tmp_path, write_config):
    cfg = write_config(sweep={"batch_size": [16], "lr": [0.01, 0.1]}, **{"train.steps": 5})
    assert invoke("run", cfg, "--out", tmp_path).exit_code == 0
    sweep_yaml = (tmp_path / "tiny" / "sweep.yaml").read_text()
    r = invoke("run", cfg, "--out", tmp_path, "--set", "train.steps=60")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "holds another experiment (train.steps 5 -> 60)" in r.stderr
    assert "--name" in r.stderr and "--add-experiment" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert (tmp_path / "tiny" / "sweep.yaml").read_text() == sweep_yaml  # nothing overwritten
    assert len(list((tmp_path / "tiny").glob("*/result.json"))) == 2  # nothing trained
    # more values on an axis, a new axis, another seed, another device: the same experiment
    for extra in (["--set", "sweep.lr=[0.01, 0.1, 0.3]"], ["--set", "sweep.seed=[0, 1]"], ["--set", "train.seed=3"]):
        r = invoke("run", cfg, "--out", tmp_path, *extra)
        assert r.exit_code == 0, (extra, r.output)
    assert "lr" in (tmp_path / "tiny" / "sweep.yaml").read_text()


def test_add_experiment_keeps_both_and_summarize_never_averages_them(tmp_path, write_config):
    cfg = write_config(sweep={"batch_size": [16], "lr": [0.01, 0.1]}, **{"train.steps": 5})
    assert invoke("run", cfg, "--out", tmp_path).exit_code == 0
    r = invoke("run", cfg, "--out", tmp_path, "--set", "train.steps=60", "--add-experiment")
    assert r.exit_code == 0, r.output
    folder = tmp_path / "tiny"
    assert "steps: 60" in (folder / "sweep.yaml").read_text() and "steps: 5" in (folder / "sweep.1.yaml").read_text()
    runs = load_runs(folder)
    assert len(runs.df) == 4 and runs.axes[0] == "experiment"
    assert sorted(runs.df["experiment"].unique()) == ["train.steps=5", "train.steps=60"]
    assert any("holds 2 experiments" in w and "train.steps" in w for w in runs.warnings)
    best = best_lr_table(runs, "final_val_acc")
    assert len(best) == 2 and (best["n_seeds"] == 1).all()  # one row per experiment, never "2 seeds"
    r = invoke("summarize", folder, "--no-plots")
    assert r.exit_code == 0, r.output
    assert "train.steps=60" in r.output and "holds 2 experiments" in r.stderr
    # the same experiment again (either one) is recognised in its own sweep file
    assert invoke("run", cfg, "--out", tmp_path).exit_code == 0
    assert not (folder / "sweep.2.yaml").exists()


def test_sweep_differences_ignore_axes_seed_and_execution_fields():
    base = make_config(sweep={"lr": [0.1]})
    same = make_config(sweep={"lr": [0.1, 0.3], "seed": [0, 1]}, **{"train.device": "cpu", "train.engine": "vectorized",
                                                                    "dataset.root": "./elsewhere"})
    assert sweep_differences(base, same) == []
    other = make_config(sweep={"lr": [0.1]}, **{"optimizer.momentum": 0.5, "model.hidden": [64]})
    assert [d[0] for d in sweep_differences(base, other)] == ["model.hidden", "optimizer.momentum"]


def test_where_the_data_lives_is_not_part_of_a_run_id():
    ids = {build_sweep(make_config(sweep={"lr": [0.1]}), s).runs[0].run_id
           for s in ([], ["dataset.root=./data"], ["dataset.root=/abs/data"], ["dataset.download=true"])}
    assert len(ids) == 1
    assert build_sweep(make_config(sweep={"lr": [0.1]}), ["dataset.subset_seed=1"]).runs[0].run_id not in ids


def test_runs_of_an_older_id_are_recognised_from_their_config_and_never_retrained(tmp_path):
    raw = make_config(sweep={"batch_size": [16], "lr": [0.01, 0.1]}, **{"train.steps": 5})
    first = run_sweep(build_sweep(raw), tmp_path)
    assert first.counts == {"complete": 2}
    # As an older lrsweep named them (ids that hashed dataset.root): other folder names, same configs.
    for i, d in enumerate(sorted(p for p in first.sweep_dir.iterdir() if p.is_dir())):
        shutil.move(d, d.with_name(f"0ld1d{i:05d}"))
    again = run_sweep(build_sweep(raw, ["dataset.root=./data"]), tmp_path)
    assert again.skipped == 2 and again.counts == {}
    index = pd.read_csv(first.sweep_dir / "runs.csv")
    assert len(index) == 2
    # a retried run keeps its folder: still one result per cell
    res = first.sweep_dir / "0ld1d00000" / "result.json"
    data = json.loads(res.read_text())
    res.write_text(json.dumps({**data, "status": "failed"}))
    retried = run_sweep(build_sweep(raw), tmp_path, retry=("failed",))
    assert retried.counts == {"complete": 1} and len(list(first.sweep_dir.glob("*/result.json"))) == 2
    assert json.loads(res.read_text())["status"] == "complete"


def test_a_grid_with_failed_runs_exits_1_and_says_how_to_retry(tmp_path, write_config, monkeypatch):
    from lrsweep.training import sequential

    def boom(*a, **k):
        raise RuntimeError("simulated failure")

    cfg = write_config(sweep={"batch_size": [16], "lr": [0.01, 0.1]}, **{"train.steps": 5})
    monkeypatch.setattr(sequential, "train", boom)
    r = invoke("run", cfg, "--out", tmp_path, "--workers", "1")
    assert r.exit_code == 1, r.output
    assert "2 runs of this grid failed" in r.stderr and "--retry-failed" in r.stderr
    monkeypatch.undo()
    r = invoke("run", cfg, "--out", tmp_path, "--workers", "1")  # not retried: still failed
    assert r.exit_code == 1 and "2 runs of this grid failed" in r.stderr
    r = invoke("run", cfg, "--out", tmp_path, "--workers", "1", "--retry-failed")
    assert r.exit_code == 0, r.output
    assert {json.loads(p.read_text())["status"] for p in (tmp_path / "tiny").glob("*/result.json")} == {"complete"}


def test_plan_and_run_take_a_name(tmp_path, write_config):
    cfg = write_config(sweep={"batch_size": [16], "lr": [0.1]}, **{"train.steps": 5})
    assert invoke("run", cfg, "--out", tmp_path, "--name", "other").exit_code == 0
    assert (tmp_path / "other" / storage.SWEEP_FILE).is_file() and not (tmp_path / "tiny").exists()
    r = invoke("plan", cfg, "--out", tmp_path, "--name", "other")
    assert r.exit_code == 0 and "1 finished, 0 to run" in r.output
