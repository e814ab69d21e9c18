"""What the terminal shows: tables that fit 80 columns (COLUMNS, for output that is not a
terminal) without cutting an LR, --wide for every column, the footnotes that explain a —,
the progress (ETA from measured run times, counts, best LR so far, the workers-start line),
and --help without `<bool>`."""
from __future__ import annotations

import io
import math
import re

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from lrsweep.analysis.report import build_report
from lrsweep.cli import app
from lrsweep.cli.progress import PlainProgress, RichProgress, Tally
from lrsweep.cli.tables import fmt
from lrsweep.events import RunFinished, RunStarted, Step, SweepStarted, WorkersStarting

from conftest import make_config
from sweepdirs import write_sweep_dir

runner = CliRunner()
LRS = [float(x) for x in np.geomspace(1e-4, 0.1, 7)]  # 0.0003162 ...: LRs of 4 significant figures
NARROW = {"COLUMNS": "80"}


def invoke(*args, env=NARROW):
    r = runner.invoke(app, [str(a) for a in args], env=env)
    assert r.exit_code == 0, r.output
    return r


def widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def headers(text: str) -> set[str]:
    """The column names of the tables in `text` (rich's header rows: between ┃ bars)."""
    return {c.strip() for line in text.splitlines() if line.startswith("┃") for c in line.split("┃")} - {""}


@pytest.fixture(scope="module")
def two_optimizers(tmp_path_factory):
    """A made-up sweep of two optimizers (a group axis), two seeds, seven LRs and two batch
    sizes: accuracy peaks at an LR that grows with B; at B=256 every adam run diverged (its
    best LR is — and a note says why)."""
    raw = make_config(sweep={"batch_size": [16, 256], "lr": LRS, "seed": [0, 1], "optimizer.name": ["sgd", "adam"]})

    def run(cfg):
        B, lr, name = cfg.train.batch_size, cfg.effective_lr, cfg.optimizer.name
        peak = 1e-3 * (B / 16) ** 0.5 * (10 if name == "sgd" else 1)
        acc = 0.95 - 0.05 * math.log10(lr / peak) ** 2 - 0.001 * cfg.train.seed
        diverged = name == "adam" and B == 256
        steps = np.arange(1, 11)
        metrics = {"step": steps, "examples": steps * B, "lr": lr, "batch_size": B, "train_loss": 1.0 / steps,
                   "train_acc": 0.5, "grad_norm": 1.0, "data_time": 0.0, "compute_time": 0.0, "elapsed": 0.0}
        return metrics, {"status": "diverged" if diverged else "complete", "final_val_acc": math.nan if diverged else acc,
                         "final_train_loss": 0.1, "initial_loss": 1.4, "best_val_acc": acc}

    return write_sweep_dir(tmp_path_factory.mktemp("terminal"), "two", raw, run)


@pytest.fixture(scope="module")
def narrow(two_optimizers, tmp_path_factory) -> str:
    """What summarize prints of it at COLUMNS=80."""
    return invoke("summarize", two_optimizers, "--out", tmp_path_factory.mktemp("rep"), "--no-plots").stdout


def test_summarize_fits_80_columns_showing_every_lr_and_the_notes(two_optimizers, narrow):
    assert widest(narrow) <= 80, narrow
    assert "…" not in narrow  # nothing cut
    best = build_report(two_optimizers, curves=False).table("best")
    for v in [*best["best_lr"].dropna(), *best["lr_opt"].dropna()]:
        assert fmt(v) in narrow, (fmt(v), narrow)  # every LR in full (4 significant figures)
    assert "optimizer.name=adam" in narrow and "optimizer.name=sgd" in narrow  # one table per group
    assert {"B", "best LR", "optimum", "final_val_acc", "flat range", "note"} <= headers(narrow)
    assert "seeds" not in headers(narrow)  # core columns only
    why = best.loc[best["best_lr"].isna(), "note"].iloc[0]  # the — of adam at B=256, explained
    assert why.startswith("every run diverged") and why in " ".join(narrow.split())


def test_wide_shows_every_column_at_its_full_width(two_optimizers, narrow, tmp_path):
    r = invoke("summarize", two_optimizers, "--out", tmp_path / "rep", "--no-plots", "--wide")
    for column in ("seeds", "LRs", "diverged", "suggest", "formula", "params (90% CI)", "rms"):
        assert column in headers(r.stdout) and column not in headers(narrow), column
    assert widest(r.stdout) > 80 and "…" not in r.stdout


def test_a_log_is_160_columns_wide_unless_columns_says_otherwise(two_optimizers, tmp_path):
    log = invoke("summarize", two_optimizers, "--out", tmp_path / "rep", "--no-plots", env={"COLUMNS": None}).stdout
    assert 80 < widest(log) <= 160 and "…" not in log
    assert "optimizer.name" in headers(log) and "optimizer.name=adam" not in log  # room for one table of both groups
    narrow = invoke("summarize", two_optimizers, "--out", tmp_path / "rep", "--no-plots", env={"COLUMNS": "60"}).stdout
    assert widest(narrow) <= 60 and "…" not in narrow  # too narrow for whole LRs: folded, never cut


def test_run_logs_counts_eta_and_best_lr_per_run_and_closes_with_a_table_that_fits(write_config, tmp_path):
    cfg = write_config(make_config(sweep={"batch_size": [16], "lr": [0.0316227766, 0.1, 50.0]}, **{"train.steps": 10}))
    r = invoke("run", cfg, "--out", tmp_path / "runs")
    out = r.stdout
    assert widest(out) <= 80, out
    log = " ".join(out.split())  # log lines are wrapped at COLUMNS: read them as one
    for n in (1, 2, 3):
        assert f"[{n}/3] " in log
    assert re.search(r"ETA ~\S+ \(from 1 finished run\)", log) and re.search(r"\(from 2 finished runs\)", log)
    assert "2 complete, 1 diverged, 0 stalled, 0 failed" in log  # the counts after the last run
    assert re.search(r"best LR at B=16 so far: (0\.0316|0\.1) \(final_val_acc 0\.\d+\)", log)
    table = out.split("best LR per batch size by final_val_acc")[1]
    best = build_report(tmp_path / "runs" / "tiny", curves=False).table("best")
    assert fmt(best["best_lr"].iloc[0]) in table and "…" not in table
    assert "flat range" in headers(table) and "seeds" not in headers(table)
    wide = invoke("run", cfg, "--out", tmp_path / "runs", "--wide").stdout
    assert "0 to run" in wide and "seeds" in headers(wide)


def test_the_workers_start_line_comes_before_any_run(write_config, tmp_path, monkeypatch):
    from lrsweep.execution import devices
    from lrsweep.execution.local import LocalExecutor

    def no_process(self, slot, ctx):  # what the user waits for: nothing to see until the first run
        raise RuntimeError("stopped before starting a worker")

    monkeypatch.setattr(devices, "visible_cores", lambda: 4)  # 2 workers even on a 1-core machine
    monkeypatch.setattr(LocalExecutor, "_start", no_process)
    r = runner.invoke(app, ["run", str(write_config()), "--out", str(tmp_path / "runs"), "--workers", "2"], env=NARROW)
    assert isinstance(r.exception, RuntimeError)
    assert "on 2 worker processes" in r.stdout and "starting 2 worker processes…" in r.stdout


def finished(run_id, B, lr, status="complete", acc=0.9):
    return RunFinished(run_id, {"batch_size": B, "lr": lr},
                       {"status": status, "final_val_acc": acc if status == "complete" else math.nan,
                        "final_train_loss": 0.1, "batch_size": B, "lr": lr})


def test_the_eta_comes_from_measured_run_times_and_the_best_lr_from_seed_means():
    t = Tally("final_val_acc")
    t.sweep_started(SweepStarted(total=6, done=0, pending=6, executor=""))
    assert t.eta(0.0) == "ETA: after the first run"
    for run_id, lr in (("a", 0.1), ("b", 0.3)):  # two workers, one run each at a time
        t.run_started(RunStarted(run_id, {"batch_size": 16, "lr": lr}), 0.0)
    t.run_finished(finished("a", 16, 0.1, acc=0.8), 10.0)
    assert t.eta(10.0) == "ETA ~25s (from 1 finished run)"  # 10 s a run, 5 left, 2 at a time: 25 s
    t.run_finished(finished("b", 16, 0.3, acc=0.9), 20.0)  # 15 s a run, 4 left, 2 at a time: 30 s
    assert t.eta(20.0) == "ETA ~30s (from 2 finished runs)" and t.eta(35.0).startswith("ETA ~15s")
    assert t.best_line() == "best LR so far by final_val_acc: B=16 0.3 (0.9)"
    changed = t.run_finished(finished("c", 16, 0.3, status="stalled"), 30.0)  # another seed of 0.3
    assert changed and t.best_line() == "best LR so far by final_val_acc: B=16 0.1 (0.8)"  # a stalled seed loses
    assert t.counts_text() == "2 complete, 0 diverged, 1 stalled, 0 failed"
    lower = Tally("final_train_loss")  # lower is better
    lower.run_finished(RunFinished("d", {"batch_size": 8, "lr": 1.0}, {"status": "complete", "final_train_loss": 0.2}), 1.0)
    lower.run_finished(RunFinished("e", {"batch_size": 8, "lr": 2.0}, {"status": "complete", "final_train_loss": 0.1}), 1.0)
    assert lower.best_line().endswith("B=8 2 (0.1)")


def test_the_live_display_resets_each_run_timer_and_shows_eta_counts_and_best_lr():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=80, color_system=None)
    p = RichProgress(console, "final_val_acc")
    p(SweepStarted(total=3, done=0, pending=3, executor="2 worker processes"))
    p(WorkersStarting(2))
    assert p.progress.above == "starting 2 worker processes…" and p.progress.status.startswith("ETA: after the first run")
    p(RunStarted("a", {"batch_size": 16, "lr": 0.1}, worker=0))
    first = p.progress.tasks[-1]
    p(Step("a", 5, 10, 0.5, 0.1, worker=0))
    assert first.completed == 5 and "loss 0.5" in first.fields["info"]
    p(finished("a", 16, 0.1))
    before = p.progress.get_time()
    p(RunStarted("b", {"batch_size": 16, "lr": 0.3}, worker=0))
    assert first.start_time >= before and first.completed == 0 and "lr=0.3" in first.description  # its own timer again
    p(RunStarted("c", {"batch_size": 32, "lr": 0.3}, worker=1))
    assert p.progress.above == ""  # both workers are training
    assert "from 1 finished run" in p.progress.status and "1 complete, 0 diverged, 0 stalled, 0 failed" in p.progress.status
    assert p.progress.best == "best LR so far by final_val_acc: B=16 0.1 (0.9)"
    p.close()
    shown = buf.getvalue()
    assert "[0] B=16 lr=0.3" in shown and "best LR so far by final_val_acc: B=16 0.1" in shown


def test_the_plain_log_says_workers_are_starting_and_a_line_per_run():
    buf = io.StringIO()
    p = PlainProgress(Console(file=buf, width=200), "final_val_acc")
    p(SweepStarted(total=3, done=1, pending=2, executor="1 worker process"))
    p(WorkersStarting(1))
    assert buf.getvalue().splitlines()[-1] == "starting 1 worker process…"
    p(finished("a", 8, 0.1, status="failed"))  # no best LR at B=8 yet: none said
    assert buf.getvalue().splitlines()[-1].endswith("0 complete, 0 diverged, 0 stalled, 1 failed · ETA: after the first run")
    p(RunStarted("b", {"batch_size": 8, "lr": 0.3}))
    p(finished("b", 8, 0.3, acc=0.7))
    assert buf.getvalue().splitlines()[-1].startswith("[3/3] b batch_size=8 lr=0.3 complete val_acc=0.7000")
    assert buf.getvalue().splitlines()[-1].endswith("no runs left · best LR at B=8 so far: 0.3 (final_val_acc 0.7)")


def test_help_shows_no_bool_for_flags():
    for command in ("run", "summarize"):
        r = invoke(command, "-h")
        assert "--wide" in r.stdout and "<bool>" not in r.stdout, command
    assert "<int>" in invoke("run", "-h").stdout  # options that take a value keep their type
