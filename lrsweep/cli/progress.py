"""Progress display for the CLI (the library reports events.py's events; this draws them).

On a terminal: a rich display with overall runs done/total and ETA, and the current run's
step, loss and LR. Otherwise (CI, logs): one plain line per finished run.
"""
from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lrsweep.events import Event, Note, RunFinished, RunStarted, Step, SweepStarted
from lrsweep.results import RunStatus


def describe(axes: dict) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in axes.items())


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _outcome(result: dict) -> str:
    if result["status"] != RunStatus.COMPLETE.value:
        return f"{result['status']}: {result.get('error') or ''}"
    acc, loss = result.get("final_val_acc"), result.get("final_train_loss")
    return f"val_acc={acc:.4f} train_loss={loss:.4f} ({result.get('time_s', 0):.1f}s)"


class PlainProgress:
    """One line per run: for logs and CI."""

    def __init__(self, console: Console):
        self.console, self.done, self.total = console, 0, 0

    def __call__(self, event: Event):
        if isinstance(event, SweepStarted):
            self.done, self.total = event.done, event.total
            on = f" on {event.executor}" if event.executor and event.pending else ""
            self.console.print(f"{event.total} runs: {event.done} already finished, {event.pending} to run{on}")
        elif isinstance(event, Note):
            self.console.print(f"note: {event.text}", markup=False, highlight=False)
        elif isinstance(event, RunFinished):
            self.done += 1
            self.console.print(f"[{self.done}/{self.total}] {event.run_id} {describe(event.axes)} "
                               f"{_outcome(event.result)}", markup=False, highlight=False)

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

    def __call__(self, event: Event):
        p = self.progress
        if isinstance(event, SweepStarted):
            p.start()
            self.overall = p.add_task("runs", total=event.total, completed=event.done, info="")
        elif isinstance(event, RunStarted):
            w = event.worker
            if w not in self.current:
                self.current[w] = p.add_task("run", total=1, info="")
            label = (f"[{w}] " if len(self.current) > 1 or w else "") + describe(event.axes)
            p.update(self.current[w], description=label[:50], completed=0, info="")
        elif isinstance(event, Step) and event.worker in self.current:
            w, now = event.worker, time.monotonic()
            if now - self._last.get(w, 0.0) > 0.1 or event.step == event.total:  # redraw at most 10x a second
                self._last[w] = now
                p.update(self.current[w], total=event.total, completed=event.step,
                         info=f"loss {event.loss:.4g} lr {event.lr:.3g}")
        elif isinstance(event, Note):
            p.console.print(f"note: {event.text}", markup=False, highlight=False)
        elif isinstance(event, RunFinished):
            p.advance(self.overall)
            p.console.print(f"{event.run_id} {describe(event.axes)} {_outcome(event.result)}",
                            markup=False, highlight=False)

    def close(self):
        self.progress.stop()


def make_progress(console: Console):
    return RichProgress(console) if console.is_terminal else PlainProgress(console)
