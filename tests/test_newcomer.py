"""What a newcomer types first: the README's example file, -h/--version, --debug after the
command, and --set on an axis or a second budget."""
from __future__ import annotations

import re
from pathlib import Path

import yaml
from typer.testing import CliRunner

from lrsweep.cli import app
from lrsweep.config.grid import build_sweep, load_sweep
from lrsweep.errors import ConfigError

from conftest import SHARED_DATASETS, make_config

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_the_readme_sweep_file_ships_as_configs_mnist_yaml():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## The sweep file\n\n```yaml\n(.*?)```", readme, re.S).group(1)
    assert yaml.safe_load(block) == yaml.safe_load((REPO / "configs" / "mnist.yaml").read_text())
    assert "lrsweep run configs/mnist.yaml" in readme
    sweep = load_sweep(REPO / "configs" / "mnist.yaml")
    assert len(sweep.runs) == 24
    if (SHARED_DATASETS / "MNIST" / "raw").is_dir():
        r = runner.invoke(app, ["plan", str(REPO / "configs" / "mnist.yaml"), "--set", f"dataset.root={SHARED_DATASETS}",
                                "--set", "dataset.download=false", "--out", "/nonexistent-lrsweep-out"])
        assert r.exit_code == 0, r.output
        assert "24 runs, 0 finished, 24 to run" in r.output


def test_help_and_version():
    for args in (["-h"], ["--help"], ["plan", "-h"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 0 and "Usage" in r.output, args
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and re.match(r"lrsweep \d+\.\d+", r.output)


def test_debug_works_after_the_command_too(write_config):
    cfg = write_config(**{"optimizer.lr": -1})
    quiet = runner.invoke(app, ["plan", str(cfg)])
    assert quiet.exit_code == 2 and "optimizer.lr" in quiet.stderr and "Traceback" not in quiet.output
    for args in (["--debug", "plan", str(cfg)], ["plan", str(cfg), "--debug"]):
        r = runner.invoke(app, args)
        assert isinstance(r.exception, ConfigError) and r.exception.path.startswith("optimizer.lr"), args


def test_set_on_an_axis_warns_that_it_changes_nothing(write_config):
    import pytest

    from lrsweep.errors import LrsweepWarning

    raw = make_config(sweep={"lr": [0.01, 0.1], "batch_size": [16]})
    with pytest.warns(LrsweepWarning, match=r"--set lr: lr is a sweep axis \(sweep.lr\), so this changes no run"):
        sweep = build_sweep(raw, ["lr=0.05"])
    assert sorted(r.config.optimizer.lr for r in sweep.runs) == [0.01, 0.1]  # what the warning says
    zipped = make_config(sweep={"zip": {"batch_size": [16, 32], "lr": [0.01, 0.1]}})
    with pytest.warns(LrsweepWarning, match=r"sweep axis \(sweep.lr\)"):
        build_sweep(zipped, ["optimizer.lr=0.05"])
    assert len(build_sweep(raw, ["sweep.lr=[0.05]"]).runs) == 1  # the way it says
    r = runner.invoke(app, ["plan", str(write_config(raw)), "--set", "lr=0.05"])
    assert r.exit_code == 0 and "warning: --set lr: lr is a sweep axis" in r.stderr


def test_setting_one_budget_replaces_the_files_budget():
    raw = make_config(**{"train.steps": None, "train.epochs": 2})
    (spec, *_) = build_sweep(raw, ["train.steps=7"]).runs
    assert spec.config.train.steps == 7 and spec.config.train.epochs is None
    (spec, *_) = build_sweep(make_config(), ["train.epochs=0.5"]).runs  # BASE sets steps
    assert spec.config.train.epochs == 0.5 and spec.config.train.steps is None
    raw2 = make_config(**{"train.epochs": 2})  # a file with two budgets is still refused
    try:
        build_sweep(raw2)
    except ConfigError as e:
        assert "one budget" in e.message
    else:
        raise AssertionError("two budgets in a file were accepted")
