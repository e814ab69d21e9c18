"""Hostile input gets one line, exit 2, at once (README "Bad input and damaged folders"): numbers
that are none (NaN, inf, booleans), sweep files that are no sweep files (not UTF-8, a folder,
duplicate keys, 20,000 levels deep, alias bombs), grids too large to expand, plans that `run`
would reject, and the CLI's own error path (Ctrl-C, OS errors, quoting limits)."""
import signal
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lrsweep.cli import app
from lrsweep.cli import root
from lrsweep.config import loading
from lrsweep.config.grid import MAX_RUNS, build_sweep
from lrsweep.errors import ConfigError, GridTooLarge

from conftest import make_config

runner = CliRunner()
BOMB = ("[&a [1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], "
        "&d [*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], &f [*e,*e,*e,*e,*e,*e,*e,*e,*e], "
        "&g [*f,*f,*f,*f,*f,*f,*f,*f,*f]]")  # 9^7 = 4.8 million values once expanded


def one_line_error(r, fragment: str) -> None:
    """The README's promise: exit 2, one line naming the problem, no traceback."""
    assert r.exit_code == 2, r.output
    assert fragment in r.output.replace("\n", ""), r.output
    assert "Traceback" not in r.output
    assert r.output.strip().count("\n") <= 3 and len(r.output) < 1500, r.output  # rich may wrap a long line


def plan(cfg, *sets, out=None):
    args = ["plan", str(cfg), *[a for s in sets for a in ("--set", s)]]
    return runner.invoke(app, args + (["--out", str(out)] if out else []))


# --------------------------------------------------------------------------- numbers that are none

@pytest.mark.parametrize("setting, fragment", [
    ("sweep.lr=[.nan]", "sweep.lr: Input should be a finite number, got nan"),
    ("sweep.lr=[0.1, .inf]", "sweep.lr: Input should be a finite number, got inf"),
    ("optimizer.momentum=.nan", "optimizer.momentum: Input should be a finite number, got nan"),
    ("train.epochs=.inf", "train.epochs: Input should be a finite number, got inf"),
    ("dataset.val_split=.nan", "dataset.val_split: Input should be a finite number, got nan"),
    ("sweep.batch_size=[true, 32]", "sweep.batch_size: expected a number, got true"),
    ("train.batch_size=true", "train.batch_size: expected a number, got true"),
    ("optimizer.betas=[true, 0.9]", "optimizer.betas: expected a number, got [true, 0.9]"),
    ("sweep.lr={logspace: [a, 1, 3]}", "sweep.lr.logspace: expected [start, stop, n] (finite numbers), got ['a', 1, 3]"),
    ("sweep.lr={logspace: [.nan, 1, 3]}", "sweep.lr.logspace: expected [start, stop, n] (finite numbers)"),
    ("sweep.lr={linspace: [0.1, .inf, 3]}", "sweep.lr.linspace: expected [start, stop, n] (finite numbers)"),
    ("sweep.batch_size={range: [true, 64, 16]}", "sweep.batch_size.range: expected [start, stop, step]"),
    ("sweep.lr={logspace: [0.001, 1, 1.0e12]}", "sweep.lr.logspace: n is 1e+12, more than 1000000 values (the limit)"),
    ("sweep.lr={logspace: [1e-3, 1, 1e12]}", "n is 1e+12, more than 1000000 values"),  # YAML 1.1 reads 1e12 as text
    ("sweep.batch_size={range: [1, 1.0e15, 1]}", "sweep.batch_size.range: [1, 1000000000000000.0, 1] makes more than"),
])
def test_numbers_that_are_none_are_refused_naming_the_field(setting, fragment, write_config):
    one_line_error(plan(write_config(), setting), fragment)


def test_a_boolean_is_still_a_boolean_and_a_number_written_as_text_still_a_number():
    sweep = build_sweep(make_config(**{"optimizer.momentum": 0.9}),
                        ["sweep.optimizer.nesterov=[true, false]", "sweep.lr={logspace: [1e-4, 1e-1, 4]}"])
    assert len(sweep.runs) == 16  # 2 batch sizes x 2 nesterov x 4 LRs
    assert sorted({r.config.optimizer.lr for r in sweep.runs}) == [0.0001, 0.001, 0.01, 0.1]


# --------------------------------------------------------------------------- files that are no sweep files

def test_sweep_files_that_are_none_get_one_line_naming_the_limit(tmp_path, write_config):
    base = write_config().read_text()
    cases = {
        "latin1.yaml": (b"name: caf\xe9\n", "not UTF-8 text (byte 0xe9 at offset 9); save it as UTF-8"),
        "dup.yaml": ((base + "name: other\n").encode(), "duplicate key 'name' (first at line 1); a key may appear once"),
        "flowdup.yaml": (b"name: t\ntrain: {steps: 1, steps: 2}\n", "duplicate key 'steps'"),
        "deep.yaml": (("name: " + "[" * 20000 + "]" * 20000 + "\n").encode(), "nested more than 64 levels deep (the limit)"),
        "deepmap.yaml": (("a: " + "{b: " * 20000 + "1" + "}" * 20000 + "\n").encode(), "nested more than 64 levels deep"),
        "bomb.yaml": ((base + "x: " + BOMB + "\n").encode(), "aliases expand it to more than 1000000 values (the limit)"),
        "loop.yaml": (b"name: &a [1, *a]\n", "an alias refers to a value that contains it (a loop)"),
        "big.yaml": (b"name: t\n" + b"#" * loading.MAX_FILE_BYTES, f"larger than {loading.MAX_FILE_BYTES} bytes (the limit"),
        "longint.yaml": (b"name: t\ntrain: {steps: " + b"9" * 5000 + b"}\n", "Exceeds the limit (4300 digits)"),
    }
    for name, (content, fragment) in cases.items():
        (tmp_path / name).write_bytes(content)
        t0 = time.monotonic()
        one_line_error(plan(tmp_path / name), fragment)
        assert time.monotonic() - t0 < 10, name  # the bomb and the deep file are refused at once
    (tmp_path / "folder.yaml").mkdir()
    one_line_error(plan(tmp_path / "folder.yaml"), "folder.yaml is a folder, not a config file")
    one_line_error(plan(tmp_path / "missing.yaml"), "config file not found")


def test_merge_keys_may_be_overridden_and_a_byte_order_mark_is_fine(tmp_path):
    text = "\ufeffbase: &b {name: sgd, momentum: 0.5}\n"
    assert loading.parse_yaml(text + "o: {<<: *b, momentum: 0.9}\n")["o"] == {"name": "sgd", "momentum": 0.9}
    p = tmp_path / "bom.yaml"
    p.write_bytes(yaml.safe_dump(make_config()).encode("utf-8-sig"))
    assert loading.load_yaml(p)["name"] == "tiny"


def test_an_alias_bomb_in_an_axis_quotes_a_few_hundred_characters_not_megabytes(write_config):
    small = BOMB.rsplit(", &f", 1)[0] + "]"  # 9^5 = 59,049 values: under the limit, a huge value
    for setting, fragment in ((f"sweep.lr={small}", "sweep.lr: Input should be a valid number"),
                              (f"name={small}", "name: Input should be a valid string"),
                              (f"sweep.lr={BOMB}", "--set sweep.lr: invalid YAML"),
                              ("sweep.lr=&a [1, *a]", "a loop")):
        r = plan(write_config(), setting)
        one_line_error(r, fragment)
        assert len(r.output) < 600, len(r.output)


def test_set_on_a_sweep_that_is_a_list_and_keys_that_are_none(write_config):
    cfg = write_config(sweep=[1, 2])
    one_line_error(plan(cfg, "sweep.lr=[0.1]"), "sweep: is a list, not a mapping of axis -> values; cannot set sweep.lr")
    one_line_error(plan(write_config(), "sweep.=1"), "--set: expected key=value with a dotted key")
    one_line_error(plan(write_config(), "=1"), "--set: expected key=value with a dotted key")


@pytest.mark.parametrize("setting, fragment", [
    ("name=" + "n" * 300, "name: a folder name of at most 255 bytes, got 300"),
    ('name="a\\0b"', "without '/' or a NUL byte"),
])
def test_folder_names_the_file_system_would_refuse(setting, fragment, write_config):
    one_line_error(plan(write_config(), setting), fragment)


# --------------------------------------------------------------------------- grids

def test_a_huge_grid_is_counted_not_expanded_and_refused_at_once(write_config):
    t0 = time.monotonic()
    r = plan(write_config(), "sweep.lr={logspace: [0.001, 1, 1000]}", "sweep.batch_size={range: [1, 1000, 1]}")
    one_line_error(r, "sweep: the grid has 1000000 runs (batch_size 1000 x lr 1000), more than the limit of 100000")
    assert "--max-runs" in r.output and time.monotonic() - t0 < 10
    with pytest.raises(GridTooLarge) as e:
        build_sweep(make_config(), ["sweep.seed={range: [0, 99, 1]}"], max_runs=50)  # 2 x 2 x 100
    assert (e.value.count, e.value.limit) == (400, 50) and "`max_runs`" in str(e.value)
    assert MAX_RUNS == 100_000


def test_max_runs_raises_the_limit_and_plan_shows_a_large_grid_in_part(write_config, monkeypatch, tmp_path):
    from lrsweep.cli import run as cli_run

    cfg = write_config()
    r = runner.invoke(app, ["plan", str(cfg), "--out", str(tmp_path), "--max-runs", "3"])
    one_line_error(r, "the grid has 4 runs")
    monkeypatch.setattr(cli_run, "PLAN_ROWS", 2)
    r = runner.invoke(app, ["plan", str(cfg), "--out", str(tmp_path), "--max-runs", "4"])
    assert r.exit_code == 0 and "4 runs, 0 finished, 4 to run" in r.output.replace("\n", "")
    assert r.output.count("pending") == 2 and "(the first 2 of 4 runs shown)" in r.output
    one_line_error(runner.invoke(app, ["run", str(cfg), "--out", str(tmp_path), "--max-runs", "2"]), "more than the limit of 2")
    with pytest.raises(Exception, match="max_runs: expected a number >= 1"):
        build_sweep(make_config(), max_runs=0)


# --------------------------------------------------------------------------- plans that run would reject

@pytest.mark.parametrize("settings, fragment", [
    (["sweep.batch_size=[300]"], "train.batch_size: 300 exceeds the 256 training examples per epoch"),
    (["dataset.epoch_subset=20", "sweep.batch_size=[32]"], "train.batch_size: 32 exceeds the 20 training examples"),
    (["dataset.name=digits", "sweep.batch_size=[1439]"], "1439 exceeds the 1438 training examples"),
    (["dataset.train_subset=1000"], "dataset.train_subset: is 1000 but the train split has only 256 examples"),
    (["dataset.synthetic.shape=[1, 0, 8]"], "dataset.synthetic.shape: expected [C, H, W] with positive sizes"),
    (["model.name=cnn5", "dataset.synthetic.shape=[1, 4, 4]"], "cnn5 needs inputs of at least 8x8"),
    (["dataset.synthetic.n_train=1000000000000"], "more than the limit of 2147483648"),
])
def test_plan_refuses_what_run_would_refuse(settings, fragment, write_config, tmp_path):
    one_line_error(plan(write_config(), *settings, out=tmp_path), fragment)


def test_the_largest_batch_size_the_data_allows_is_planned(write_config, tmp_path):
    r = plan(write_config(), "dataset.name=digits", "sweep.batch_size=[1438]", out=tmp_path)
    assert r.exit_code == 0, r.output


# --------------------------------------------------------------------------- the CLI's error path

def test_quoting_and_messages_are_capped():
    from lrsweep.errors import quote

    assert len(quote(list(range(10**6)))) <= 200 and quote([1, 2]) == "[1, 2]"
    assert len(str(ConfigError("x", "y" * 10**6))) < 1100


def test_an_os_error_no_check_foresaw_is_one_line_too():
    import typer

    app_ = typer.Typer()

    @app_.command()
    @root.guarded
    def cmd():
        raise PermissionError(13, "Permission denied", "/some/file")

    r = runner.invoke(app_, [])
    one_line_error(r, "/some/file: Permission denied")


def test_after_the_first_ctrl_c_more_are_only_counted_then_ignored():
    handler = root._Interrupts()
    with handler:
        with pytest.raises(KeyboardInterrupt):
            handler(signal.SIGINT, None)
        handler(signal.SIGINT, None)  # the clean-up after the first is not interrupted
        handler(signal.SIGINT, None)
    assert handler.count == 3 and signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with root._Interrupts():
        pass
    assert signal.getsignal(signal.SIGINT) == signal.default_int_handler  # no Ctrl-C: left as it was


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_three_quick_ctrl_c_leave_no_traceback_and_exit_130(tmp_path, write_config):
    import os
    import subprocess

    cfg = write_config(**{"train.steps": 4000, "sweep.lr": [0.01, 0.02, 0.03]})
    env = {k: v for k, v in os.environ.items() if k != "LRSWEEP_WORKERS"}
    p = subprocess.Popen([sys.executable, "-m", "lrsweep", "run", str(cfg), "--out", str(tmp_path / "runs"),
                          "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert "to run" in p.stdout.readline()  # the sweep has started its workers
        time.sleep(1.0)
        for _ in range(3):
            p.send_signal(signal.SIGINT)
            time.sleep(0.05)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 130, err
    assert "Traceback" not in err and "interrupted: finished runs are saved" in err, err


def test_the_ray_extra_brings_ray_client_and_the_cli_default_timeout_is_the_librarys():
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    line = next(l for l in text.splitlines() if l.startswith("ray = "))
    assert "ray[client]" in line
    from lrsweep.cli.run import RAY_CONNECT_TIMEOUT_S
    from lrsweep.execution.ray import CONNECT_TIMEOUT_S

    assert RAY_CONNECT_TIMEOUT_S == CONNECT_TIMEOUT_S <= 30
