"""Every command the README shows is exercised: run by `make docs` (docs/make_docs.py's
README_COMMANDS), run here when it is cheap, or mapped in EXERCISED to the tests that run it.
A command block that none of them covers fails test_every_readme_command_is_exercised.

What counts as a command: each line of a ```bash (or sh, shell) block, with `\\` continuations
joined and `# comments` dropped, and each `$ ` line of a ```console block (the lines after it
are its output). Every fence names its language, so that output (```text) is never mistaken for
commands or the other way round. Also here: the README's table of contents, and its generated
blocks against docs/make_docs.py."""
from __future__ import annotations

import ast
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import lrsweep
from lrsweep.cli import app

from conftest import make_config

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SHELL = ("bash", "sh", "shell")


def load_make_docs():
    spec = importlib.util.spec_from_file_location("make_docs", REPO / "docs" / "make_docs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_docs"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


make_docs = load_make_docs()


def normal(command: str) -> str:
    """One spelling per command: shell words joined by single spaces, quotes and comments gone."""
    return " ".join(shlex.split(command, comments=True))


def fences(text: str) -> list[tuple[int, str, list[str]]]:
    """(line number of the opening fence, language, body lines) of every fenced block."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = re.match(r"\s*```(\S*)\s*$", lines[i])
        if m:
            j = i + 1
            while j < len(lines) and not re.match(r"\s*```\s*$", lines[j]):
                j += 1
            out.append((i + 1, m.group(1), lines[i + 1:j]))
            i = j
        i += 1
    return out


def readme_commands(text: str | None = None) -> list[tuple[int, str]]:
    """(line number, normalised command) of every command in the README's command blocks."""
    found = []
    for start, lang, body in fences(README.read_text() if text is None else text):
        pending, first = "", 0
        for k, line in enumerate(body):
            n = start + 1 + k
            if lang in SHELL:
                pending, first = (pending + " " + line.strip(), first or n) if pending else (line.strip(), n)
                if pending.endswith("\\"):
                    pending = pending[:-1]
                    continue
                if normal(pending):
                    found.append((first, normal(pending)))
                pending, first = "", 0
            elif lang == "console" and line.startswith("$ "):
                found.append((n, normal(line[2:])))
    return found


# Commands run by tests: a README command (as `normal` spells it; a trailing " *" matches any
# command that starts with what precedes it) -> the tests that run it or what it does.
EXERCISED: dict[str, tuple[str, ...]] = {
    "make *": ("test_readme.py::test_make_targets_run_what_the_readme_says",),
    "lrsweep run configs/mnist.yaml --set dataset.root=../shared/datasets --set dataset.download=false": (
        "test_newcomer.py::test_the_readme_sweep_file_ships_as_configs_mnist_yaml", "test_mnist_e2e.py::test_mnist_sweep_from_the_cli"),
    "lrsweep run base.yaml --set train.steps=60": (
        "test_experiment.py::test_a_second_budget_into_the_same_folder_is_refused_and_the_folder_untouched",),
    "lrsweep run config.yaml *": ("test_readme.py::test_the_scaling_out_lines_choose_the_executors_they_describe",
                                  "test_executor.py::test_two_workers_give_the_same_tables_as_one_even_when_a_worker_dies",
                                  "test_ray.py::test_a_grid_through_ray_gives_the_same_tables_as_local",
                                  "test_hardening_folders.py::test_a_ray_address_where_nothing_or_no_ray_answers_times_out_with_one_line",
                                  "test_cuda.py::test_two_workers_pinned_to_two_gpus"),
    "lrsweep run config.yaml --engine vectorized --max-members 16": (
        "test_engine.py::test_cli_engine_and_max_members_options",),
    "lrsweep summarize runs/o11-small --metric *": ("test_surge_protocol.py::test_summarize_ranks_by_the_denoised_drop",
                                                   "test_surge_protocol.py::test_val_loss_drop_after_target_reads_the_evaluations_at_the_target_and_the_stop"),
    "COLUMNS=80 lrsweep summarize runs/mnist > summary.txt": (
        "test_terminal.py::test_summarize_fits_80_columns_showing_every_lr_and_the_notes",
        "test_terminal.py::test_a_log_is_160_columns_wide_unless_columns_says_otherwise"),
    "ray start *": ("test_readme.py::test_ray_start_takes_the_readme_flags",),
    "lrsweep bench *": ("test_readme.py::test_the_bench_commands_time_what_they_say",
                        "test_engine.py::test_bench_on_a_tiny_grid_writes_its_report"),
    "pip install *": ("test_readme.py::test_the_extras_the_readme_installs_exist",),
    "lrsweep export runs/quickstart *": ("test_readme.py::test_the_export_commands_work_as_written",),
    "lrsweep export runs/quickstart --tensorboard tb": ("test_export.py::test_a_missing_extra_says_how_to_install_it",),
    "tensorboard --logdir tb/quickstart": ("test_export.py::test_tensorboard_has_one_run_per_cell_with_its_curves",
                                           "test_readme.py::test_the_export_commands_work_as_written"),
}


def pattern_of(command: str) -> str | None:
    """The EXERCISED entry for a command: its exact spelling first, else the longest prefix."""
    if command in EXERCISED:
        return command
    prefixes = [p for p in EXERCISED if p.endswith(" *") and (command + " ").startswith(p[:-1])]
    return max(prefixes, key=len) if prefixes else None


def exists(test_id: str) -> bool:
    path, name = test_id.split("::")
    tree = ast.parse((REPO / "tests" / path).read_text())
    return any(isinstance(n, ast.FunctionDef) and n.name == name for n in tree.body)


def commands_matching(prefix: str) -> list[str]:
    return [c for _, c in readme_commands() if pattern_of(c) == prefix]


def test_every_fence_names_its_language():
    unnamed = [n for n, lang, _ in fences(README.read_text()) if not lang]
    assert not unnamed, (f"README.md lines {unnamed}: name each fence's language (bash: commands; console: "
                         "`$ command` with its output; text: output; yaml, python)")


def test_every_readme_command_is_exercised():
    by_docs = {normal(c) for c in make_docs.README_COMMANDS}
    commands = readme_commands()
    assert len(commands) > 20  # the parser finds the README's commands
    missing = [f"line {n}: {c}" for n, c in commands if c not in by_docs and pattern_of(c) is None]
    assert not missing, ("README commands that nothing runs; run them in docs/make_docs.py (README_COMMANDS) or a "
                         "test, and add them to EXERCISED in tests/test_readme.py:\n" + "\n".join(missing))
    unknown = [t for ts in EXERCISED.values() for t in ts if not exists(t)]
    assert not unknown, f"EXERCISED names tests that do not exist: {unknown}"
    unused = [p for p in EXERCISED if not any(pattern_of(c) == p for _, c in commands)]
    assert not unused, f"EXERCISED entries no README command uses any more (remove them): {unused}"


def test_make_docs_runs_what_the_readme_shows_and_fills_every_generated_block():
    text = README.read_text()
    shown = {c for _, c in readme_commands(text)}
    assert not [c for c in make_docs.README_COMMANDS if normal(c) not in shown], "make_docs runs commands the README does not show"
    opened = re.findall(r"<!-- auto:([\w-]+) -->", text)
    closed = re.findall(r"<!-- /auto:([\w-]+) -->", text)
    assert sorted(opened) == sorted(closed) == sorted(make_docs.BLOCKS), "README auto blocks and make_docs.BLOCKS differ"
    for key in make_docs.BLOCKS:  # fill() writes between the markers and keeps them
        once = make_docs.fill(text, key, "x")
        assert make_docs.fill(once, key, "y") == make_docs.fill(text, key, "y")
    for name in [*make_docs.FIGURES.values(), make_docs.RANGE_FIGURE]:
        assert f"(docs/img/{name})" in text, f"the README does not show docs/img/{name}, which make docs writes"


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_table_of_contents_lists_every_section_and_every_link_lands():
    text = README.read_text()
    sections = [h for h in re.findall(r"^## (.+)$", text, re.M) if h != "Contents"]
    toc = re.search(r"^## Contents\n\n((?:- .*\n)+)", text, re.M).group(1)
    links = re.findall(r"- \[(.+?)\]\(#(.+?)\)", toc)
    assert [t for t, _ in links] == sections, "the table of contents lists the ## sections, in order"
    anchors = {anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}
    assert [a for _, a in links if a not in anchors] == []
    for target in re.findall(r"\]\(#([\w\-]+)\)", text):  # every in-page link
        assert target in anchors, target
    science = (REPO / "docs" / "science.md").read_text()
    science_anchors = {anchor(h) for h in re.findall(r"^#+ (.+)$", science, re.M)}
    for target in re.findall(r"\(docs/science\.md#([\w\-]+)\)", text):
        assert target in science_anchors, f"docs/science.md#{target}"
    for target in re.findall(r"\]\(#([\w\-]+)\)", science):  # science.md's own contents
        assert target in science_anchors, f"docs/science.md: #{target}"


def test_the_readme_depends_on_nothing_outside_the_repository():
    text = README.read_text()
    for bad in ("../shared/docs", "document 0", "issue 5", "issue 7"):
        at = text.lower().find(bad)
        assert at < 0, (f"README.md says {text[max(0, at - 60):at + 40]!r}; an internal reference (in a generated "
                        "block it comes from the CLI's output: fix the message there, then run make docs)")
    for link in re.findall(r"\]\(((?!https?:|#)[^)#]+)", text):  # relative links: files of this repository
        assert (REPO / link).exists(), link


# --------------------------------------------------------------------------- commands run here

def make_dry_run(*args: str) -> list[str]:
    """What `make` would run, every target rebuilt (-B), nothing executed (-n)."""
    # Under `make test` (CI) the outer make's MAKEFLAGS/MAKELEVEL would make this one print
    # "make[1]: Entering directory" lines around the recipe: run it as a top-level make.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")}
    p = subprocess.run(["make", "--no-print-directory", "-n", "-B", *args], cwd=REPO, capture_output=True, text=True,
                       timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip().splitlines()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_targets_run_what_the_readme_says():
    """`make run` trains what make docs runs (README_COMMANDS' RUN), without installing Ray;
    `make test` installs the test extras with Ray and runs pytest, as .ci/run does; `make bench`
    is `lrsweep bench` with BENCH_ARGS."""
    expect = {
        "make run": lambda lines: lines[-1].endswith(f"/{make_docs.RUN}"),
        "make test": lambda lines: lines[-1].endswith("-m pytest"),
        "make bench": lambda lines: lines[-1].endswith("lrsweep bench"),
        "make bench BENCH_ARGS=--quick": lambda lines: lines[-1].endswith("lrsweep bench --quick"),
        "make reproduce REPRO_ARGS=--only=o11": lambda lines: lines[-1].endswith("docs/reproduce.py --only=o11"),
    }
    commands = commands_matching("make *")
    assert commands and set(commands) <= set(expect), f"a README make command without a check here: {set(commands) - set(expect)}"
    for command in commands:
        lines = make_dry_run(*shlex.split(command)[1:])
        assert expect[command](lines), (command, lines)
    install = lambda lines: next(line for line in lines if "pip install -q -e" in line)  # noqa: E731
    assert "ray" not in install(make_dry_run("run")) and "ray" not in install(make_dry_run("install"))
    assert re.search(r"\[.*test.*ray|\[.*ray.*test", install(make_dry_run("test")))
    assert "ray" not in install(make_dry_run("install", "EXTRAS=export"))
    assert "export]" in install(make_dry_run("install", "EXTRAS=export"))
    assert "make test" in (REPO / ".ci" / "run").read_text().splitlines()[-1]


def test_the_extras_the_readme_installs_exist():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    commands = commands_matching("pip install *")
    assert commands
    for command in commands:
        m = re.fullmatch(r"pip install lrsweep\[([\w,]+)\]", command)
        assert m, command
        assert set(m.group(1).split(",")) <= set(extras), command


def test_ray_start_takes_the_readme_flags():
    pytest.importorskip("ray", reason="ray is not installed (make test installs it)")
    from ray.scripts.scripts import start

    commands = commands_matching("ray start *")
    assert commands
    for command in commands:
        start.make_context("ray start", shlex.split(command)[2:])  # parses and checks every flag; starts nothing


def test_the_export_commands_work_as_written(tmp_path, monkeypatch, one_thread):
    """In a folder with a (tiny) runs/quickstart, each export command of the README as written."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("pyarrow")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    lrsweep.run(make_config(name="quickstart", sweep={"batch_size": [16], "lr": [0.01, 0.1]}, **{"train.steps": 10}), out="runs")
    commands = commands_matching("lrsweep export runs/quickstart *")
    assert len(commands) >= 3
    runner = CliRunner()
    for command in commands:
        r = runner.invoke(app, shlex.split(command)[1:])
        assert r.exit_code == 0, (command, r.output)
    cells = sorted(p for p in (tmp_path / "tb" / "quickstart").iterdir() if p.is_dir())
    assert len(cells) == 2  # what `tensorboard --logdir tb/quickstart` shows: one run per cell
    acc = EventAccumulator(str(cells[0]))
    acc.Reload()
    assert "train/loss" in acc.Tags()["scalars"]
    assert (tmp_path / "runs" / "quickstart" / "steps.parquet").is_file() and (tmp_path / "steps.jsonl").is_file()


class Chosen(Exception):
    """Raised where `lrsweep run` would start training: the executor it chose."""

    def __init__(self, executor):
        self.executor = executor


def test_the_scaling_out_lines_choose_the_executors_they_describe(tmp_path, monkeypatch):
    """Each `lrsweep run config.yaml ...` line of "Scaling out", on a machine with 4 GPUs and 8
    cores, picks what its comment says (the executors themselves: the tests in EXERCISED)."""
    from lrsweep import execution
    from lrsweep.execution import devices

    monkeypatch.delenv("LRSWEEP_WORKERS", raising=False)  # conftest's default for tests
    monkeypatch.setattr(devices, "visible_gpus", lambda: ["0", "1", "2", "3"])
    cores = {"n": 8}
    monkeypatch.setattr(devices, "visible_cores", lambda: cores["n"])
    real = execution.make_executor

    def stop(*args, **kwargs):
        raise Chosen(real(*args, **kwargs))
    monkeypatch.setattr(execution, "make_executor", stop)
    monkeypatch.chdir(tmp_path)
    import yaml
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(make_config(
        sweep={"batch_size": [16, 32, 64], "lr": [0.01, 0.03, 0.1]}, **{"train.device": "auto"})))
    ray_ok = importlib.util.find_spec("ray") is not None
    Local, Inline = execution.LocalExecutor, execution.InlineExecutor
    expect = {
        "": lambda e: isinstance(e, Local) and e.workers == 4 and e.devices == ["0", "1", "2", "3"],
        "--workers 1": lambda e: isinstance(e, Inline),
        "--devices 0,2,3": lambda e: isinstance(e, Local) and e.workers == 3 and e.devices == ["0", "2", "3"],
        "--workers 6 --devices 0,1": lambda e: isinstance(e, Local) and e.workers == 6 and e.devices == ["0", "1"],
        "--executor ray --gpus-per-task 0.25 --max-retries 2":
            lambda e: e.name == "ray" and e.address is None and e.gpus_per_task == 0.25 and e.max_retries == 2,
        "--executor ray --address auto": lambda e: e.name == "ray" and e.address == "auto",
        "--executor ray --address ray://HEAD_IP:10001": lambda e: e.name == "ray" and e.address == "ray://HEAD_IP:10001",
    }
    commands = commands_matching("lrsweep run config.yaml *")
    flags = [c[len("lrsweep run config.yaml"):].strip() for c in commands]
    assert set(flags) == set(expect), f"README lines without a check here, or checks without a line: {set(flags) ^ set(expect)}"
    runner = CliRunner()
    for command, flag in zip(commands, flags):
        if "ray" in flag and not ray_ok:
            continue
        r = runner.invoke(app, shlex.split(command)[1:])
        assert isinstance(r.exception, Chosen), (command, r.output)
        assert expect[flag](r.exception.executor), (command, vars(r.exception.executor))
    cores["n"] = 2  # "at most one per core": a 2-core machine with 2 GPUs gets 2 workers, and a warning
    r = runner.invoke(app, ["run", "config.yaml", "--workers", "6", "--devices", "0,1"])
    assert r.exception.executor.workers == 2 and "6 workers asked for" in r.stderr
    monkeypatch.setattr(devices, "visible_gpus", lambda: [])  # no GPU: one single-threaded worker per core
    cores["n"] = 8
    r = runner.invoke(app, ["run", "config.yaml"])
    assert isinstance(r.exception.executor, Local) and r.exception.executor.workers == 8 and not r.exception.executor.devices


def test_the_bench_commands_time_what_they_say(monkeypatch):
    """The README's `lrsweep bench` lines, and what `make bench [BENCH_ARGS=--quick]` runs, reach the
    benchmark with the grid, variants and output file they name (the timing itself:
    test_engine.py's tiny grid)."""
    from lrsweep import benchmark

    def stop(grid, variants, data_root, device, out, log):
        raise Chosen((grid, variants, out))
    monkeypatch.setattr(benchmark, "run_bench", stop)
    expect = {
        "lrsweep bench": (benchmark.FULL, benchmark.DEFAULT_FULL, Path("bench.json")),
        "lrsweep bench --quick": (benchmark.QUICK, benchmark.DEFAULT_QUICK, Path("bench.json")),
        "lrsweep bench --variants plain,auto --out bench-plain-auto.json":
            (benchmark.FULL, ("plain", "auto"), Path("bench-plain-auto.json")),
    }
    commands = commands_matching("lrsweep bench *")
    assert commands and set(commands) <= set(expect), set(commands) - set(expect)
    make_recipes = [make_dry_run("bench")[-1], make_dry_run("bench", "BENCH_ARGS=--quick")[-1]] if shutil.which("make") else []
    runner = CliRunner()
    for command in [*commands, *(line[line.index("lrsweep bench"):] for line in make_recipes)]:
        r = runner.invoke(app, shlex.split(command)[1:])
        assert isinstance(r.exception, Chosen), (command, r.output)
        assert r.exception.executor == expect[command], command
