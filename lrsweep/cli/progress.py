"""Progress display for the CLI (the library reports events; this draws them).

On a terminal: a rich display with overall runs done/total and ETA, and the current run's
step, loss and LR. Otherwise (CI, logs): one plain line per finished run.
"""
from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def describe(axes: dict) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in axes.items())


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _outcome(result: dict) -> str:
    if result["status"] != "complete":
        return f"{result['status']}: {result.get('error') or ''}"
    acc, loss = result.get("final_val_acc"), result.get("final_train_loss")
    return f"val_acc={acc:.4f} train_loss={loss:.4f} ({result.get('time_s', 0):.1f}s)"


class PlainProgress:
    """One line per run: for logs and CI."""

    def __init__(self, console: Console):
        self.console, self.done, self.total = console, 0, 0

    def __call__(self, event: str, **info):
        if event == "sweep_start":
            self.done, self.total = info["done"], info["total"]
            on = f" on {info['executor']}" if info.get("executor") and info["pending"] else ""
            self.console.print(f"{info['total']} runs: {info['done']} already finished, {info['pending']} to run{on}")
        elif event == "run_end":
            self.done += 1
            self.console.print(f"[{self.done}/{self.total}] {info['spec'].run_id} {describe(info['spec'].axes)} "
                               f"{_outcome(info['result'])}", markup=False, highlight=False)

    def close(self):
        pass


class RichProgress:
    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                 console=console, transient=False)
        self.overall = None
        self.current: dict = {}  # worker -> its bar: every worker's current run is shown
        self._last: dict = {}

    def __call__(self, event: str, **info):
        p = self.progress
        if event == "sweep_start":
            p.start()
            self.overall = p.add_task("runs", total=info["total"], completed=info["done"], info="")
        elif event == "run_start":
            w = info.get("worker", 0)
            if w not in self.current:
                self.current[w] = p.add_task("run", total=1, info="")
            label = (f"[{w}] " if len(self.current) > 1 or w else "") + describe(info["spec"].axes)
            p.update(self.current[w], description=label[:50], completed=0, info="")
        elif event == "step" and info.get("worker", 0) in self.current:
            w, now = info.get("worker", 0), time.monotonic()
            if now - self._last.get(w, 0.0) > 0.1 or info["step"] == info["total"]:  # redraw at most 10x a second
                self._last[w] = now
                p.update(self.current[w], total=info["total"], completed=info["step"],
                         info=f"loss {info['loss']:.4g} lr {info['lr']:.3g}")
        elif event == "run_end":
            p.advance(self.overall)
            p.console.print(f"{info['spec'].run_id} {describe(info['spec'].axes)} {_outcome(info['result'])}",
                            markup=False, highlight=False)

    def close(self):
        self.progress.stop()


def make_progress(console: Console):
    return RichProgress(console) if console.is_terminal else PlainProgress(console)
