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
            self.console.print(f"{info['total']} runs: {info['done']} already finished, {info['pending']} to run")
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
        self.overall = self.current = None
        self._last = 0.0

    def __call__(self, event: str, **info):
        p = self.progress
        if event == "sweep_start":
            p.start()
            self.overall = p.add_task("runs", total=info["total"], completed=info["done"], info="")
            self.current = p.add_task("run", total=1, info="")
        elif event == "run_start":
            p.update(self.current, description=describe(info["spec"].axes)[:50], completed=0, info="")
        elif event == "step":
            now = time.monotonic()
            if now - self._last > 0.1 or info["step"] == info["total"]:  # redraw at most 10x a second
                self._last = now
                p.update(self.current, total=info["total"], completed=info["step"],
                         info=f"loss {info['loss']:.4g} lr {info['lr']:.3g}")
        elif event == "run_end":
            p.advance(self.overall)
            p.console.print(f"{info['spec'].run_id} {describe(info['spec'].axes)} {_outcome(info['result'])}",
                            markup=False, highlight=False)

    def close(self):
        self.progress.stop()


def make_progress(console: Console):
    return RichProgress(console) if console.is_terminal else PlainProgress(console)
