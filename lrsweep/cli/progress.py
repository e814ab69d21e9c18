"""Progress display for the CLI (the library reports events.py's events; this draws them).

Both displays report, from the events alone (Tally): the runs finished of the grid, counts by
status, an ETA from the measured run times, and the best LR so far per batch size by the
metric of `run`'s closing table. On a terminal: a live display with that, one bar per worker
(its current run's steps, a timer of its own, loss and LR) and a line while the workers start.
Otherwise (CI, logs): one plain line per finished run, carrying the same information.
"""
from __future__ import annotations

import math
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from lrsweep.analysis.metrics import RESULT_METRICS
from lrsweep.events import Event, Note, RunFinished, RunStarted, Step, SweepStarted, WorkersStarting

STATUSES = ("complete", "diverged", "stalled", "failed")  # results.RunStatus, in the order counts are shown
# Axes that are not a group of the best-LR table (analysis.cells: _NON_GROUP)
_NOT_GROUP = {"lr", "nominal_lr", "optimizer.lr", "seed", "train.seed", "batch_size", "train.batch_size"}
REDRAW_S = 0.1  # a worker's bar is redrawn at most this often (Step events come per step)
LABEL_WIDTH = 26  # characters of a run's label on its bar: bar, steps, timer and loss fit 80 columns


def describe(axes: dict) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in axes.items())


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _num(v, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) and math.isfinite(v) else "—"


def _outcome(result: dict) -> str:
    if result["status"] != "complete":
        why = result.get("error") or result.get("stop_reason")
        return f"{result['status']}: {why}" if why else result["status"]
    return (f"complete val_acc={_num(result.get('final_val_acc'), '.4f')} "
            f"train_loss={_num(result.get('final_train_loss'), '.4f')} ({result.get('time_s') or 0:.1f}s)")


def _starting(workers: int) -> str:
    return f"starting {workers} worker process{'es' * (workers != 1)}…"


def duration(seconds: float) -> str:
    """A rough duration for an estimate: <1s, 45s, 12m, 3h 20m."""
    if seconds < 1:
        return "<1s"
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f}m"
    return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60):02d}m"


class Tally:
    """Counts, ETA and best LR so far, updated per run (never per step: cheap enough for any grid).

    The ETA: the mean measured run time (RunStarted to RunFinished, as the driver sees them)
    times the runs left, over how many runs were seen training at once (workers × the runs of
    a vectorized group). The best LR: per batch size (and value of any other axis but seed),
    the LR whose finished seeds have the best mean `metric`, a run that did not complete
    scoring the worst value, as in the closing table (analysis.metrics.scores).
    """

    def __init__(self, metric: str = "final_val_acc"):
        self.metric, self.higher = metric, RESULT_METRICS.get(metric, True)
        self.total = self.done = self.pending = self.finished = 0
        self.counts = dict.fromkeys(STATUSES, 0)
        self.started: dict[str, float] = {}  # run id -> when it started (time.monotonic)
        self.seconds, self.timed, self.width = 0.0, 0, 0  # summed run times, runs timed, most at once
        self.estimate: tuple[float, float] | None = None  # (seconds left, when estimated)
        self.scores: dict = {}  # (group, B) -> LR -> [score per finished run]
        self.best: dict = {}  # (group, B) -> (LR, mean score)

    def sweep_started(self, event: SweepStarted) -> None:
        self.total, self.done, self.pending = event.total, event.done, event.pending

    def run_started(self, event: RunStarted, now: float) -> None:
        self.started[event.run_id] = now
        self.width = max(self.width, len(self.started))

    def run_finished(self, event: RunFinished, now: float) -> bool:
        """Count the run; True if it changed the best LR of its batch size."""
        self.finished += 1
        self.done += 1
        status = event.result.get("status", "")
        self.counts[status] = self.counts.get(status, 0) + 1
        t0 = self.started.pop(event.run_id, None)
        if t0 is not None:  # a run failed by its worker's death may never have started
            self.seconds, self.timed = self.seconds + now - t0, self.timed + 1
        if self.timed:
            left = max(0, self.pending - self.finished)
            self.estimate = (self.seconds / self.timed * left / max(1, self.width), now)
        return self._score(event)

    def eta(self, now: float) -> str:
        if self.finished >= self.pending:
            return "no runs left"
        if self.estimate is None:
            return "ETA: after the first run"
        left, at = self.estimate
        return f"ETA ~{duration(max(0.0, left - (now - at)))} (from {self.timed} finished run{'s' * (self.timed != 1)})"

    def counts_text(self) -> str:
        return ", ".join(f"{n} {s}" for s, n in self.counts.items())

    def _score(self, event: RunFinished) -> bool:
        r = event.result
        group = tuple((k, str(v)) for k, v in event.axes.items() if k not in _NOT_GROUP)
        key = (group, r.get("batch_size", event.axes.get("batch_size")))
        v = r.get(self.metric)
        ok = r.get("status") == "complete" and isinstance(v, (int, float)) and math.isfinite(v)
        per_lr = self.scores.setdefault(key, {})
        per_lr.setdefault(r.get("lr", event.axes.get("lr")), []).append(v if ok else -math.inf if self.higher else math.inf)
        means = {lr: sum(s) / len(s) for lr, s in per_lr.items()}
        finite = {lr: m for lr, m in means.items() if math.isfinite(m)}
        if not finite:
            return False
        lr = (max if self.higher else min)(finite, key=finite.get)
        changed = self.best.get(key, (None,))[0] != lr
        self.best[key] = (lr, finite[lr])
        return changed

    def _label(self, key) -> str:
        group, b = key
        return " ".join([*(f"{k}={v}" for k, v in group), f"B={_fmt(b)}"])

    def best_of(self, event: RunFinished) -> str:
        """The best LR of this run's batch size, as the plain log says it."""
        r = event.result
        group = tuple((k, str(v)) for k, v in event.axes.items() if k not in _NOT_GROUP)
        key = (group, r.get("batch_size", event.axes.get("batch_size")))
        lr, m = self.best[key]
        return f"best LR at {self._label(key)} so far: {lr:.3g} ({self.metric} {m:.4g})"

    def best_line(self) -> str:
        if not self.best:
            return ""
        items = sorted(self.best.items(), key=lambda kv: (kv[0][0], float(kv[0][1] or 0)))
        return f"best LR so far by {self.metric}: " + " · ".join(
            f"{self._label(k)} {lr:.3g} ({m:.4g})" for k, (lr, m) in items)


class PlainProgress:
    """One line per finished run, for logs and CI: the run and its outcome, then the counts,
    the ETA and, when it changed, the best LR of its batch size."""

    def __init__(self, console: Console, metric: str = "final_val_acc"):
        self.console, self.tally = console, Tally(metric)

    def _print(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)  # wrapped at the width of the log (COLUMNS)

    def __call__(self, event: Event):
        t, now = self.tally, time.monotonic()
        if isinstance(event, SweepStarted):
            t.sweep_started(event)
            on = f" on {event.executor}" if event.executor and event.pending else ""
            self._print(f"{event.total} runs: {event.done} already finished, {event.pending} to run{on}")
        elif isinstance(event, WorkersStarting):
            self._print(_starting(event.count))
        elif isinstance(event, RunStarted):
            t.run_started(event, now)
        elif isinstance(event, Note):
            self._print(f"note: {event.text}")
        elif isinstance(event, RunFinished):
            changed = t.run_finished(event, now)
            parts = [f"[{t.done}/{t.total}] {event.run_id} {describe(event.axes)} {_outcome(event.result)}",
                     t.counts_text(), t.eta(now)]
            self._print(" · ".join(parts + ([t.best_of(event)] if changed else [])))

    def close(self):
        pass


class _Display(Progress):
    """rich's Progress with a line above the bars (workers starting) and lines below them (ETA
    and counts; best LRs). Strings set by the events' thread; the refresh thread only reads them."""
    above = status = best = ""

    def get_renderables(self):
        if self.above:
            yield Text(self.above, style="dim")
        yield self.make_tasks_table(self.tasks)
        for line in (self.status, self.best):
            if line:
                yield Text(line)


def _label(axes: dict, worker: int, workers: int) -> str:
    """A run's bar label, short enough for an 80-column terminal: `[1] B=32 lr=0.1 seed=0`."""
    text = " ".join(f"{'B' if k == 'batch_size' else k.rsplit('.', 1)[-1]}={_fmt(v)}" for k, v in axes.items())
    text = (f"[{worker}] " if workers > 1 else "") + text
    return text if len(text) <= LABEL_WIDTH else text[:LABEL_WIDTH - 1] + "…"


class RichProgress:
    def __init__(self, console: Console, metric: str = "final_val_acc"):
        self.console, self.tally = console, Tally(metric)
        self.progress = _Display(TextColumn("{task.description}"), BarColumn(bar_width=12), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=console, transient=False)
        self.overall = None
        self.current: dict = {}  # worker -> its bar: every worker's current run is shown
        self.run_t0: dict = {}  # worker -> when its current run started
        self.run_of: dict = {}  # worker -> the run its bar shows
        self._last: dict = {}
        self.workers, self.running = 0, set()  # workers starting, workers seen training

    def _overall(self, now: float) -> None:
        self.progress.status = f"{self.tally.eta(now)} · {self.tally.counts_text()}"

    def __call__(self, event: Event):
        p, t, now = self.progress, self.tally, time.monotonic()
        if isinstance(event, SweepStarted):
            t.sweep_started(event)
            p.start()
            self.overall = p.add_task("runs", total=event.total, completed=event.done, info="")
            self._overall(now)
        elif isinstance(event, WorkersStarting):
            self.workers = event.count
            p.above = _starting(event.count)
        elif isinstance(event, RunStarted):
            t.run_started(event, now)
            w = event.worker
            self.running.add(w)
            if self.workers:
                n = len(self.running)
                p.above = "" if n >= self.workers else f"{_starting(self.workers)} {n} training"
            label = _label(event.axes, w, max(self.workers, len(self.running)))
            if w in self.current:  # reset: its timer starts again with each run
                p.reset(self.current[w], completed=0, description=label, info="")
            else:
                self.current[w] = p.add_task(label, total=None, info="")
            self.run_t0[w], self.run_of[w] = now, event.run_id
        elif isinstance(event, Step) and event.worker in self.current:
            w = event.worker
            if now - self._last.get(w, 0.0) > REDRAW_S or event.step == event.total:
                self._last[w] = now
                spent = now - self.run_t0.get(w, now)
                left = f" · ~{duration(spent / event.step * (event.total - event.step))} left" if event.step else ""
                group = f"{event.members} runs · " if event.members > 1 else ""
                p.update(self.current[w], total=event.total, completed=event.step,
                         info=f"{group}loss {event.loss:.4g}{left}")
                self._overall(now)  # the ETA counts down between finished runs
        elif isinstance(event, Note):
            p.console.print(f"note: {event.text}", markup=False, highlight=False)
        elif isinstance(event, RunFinished):
            t.run_finished(event, now)
            if self.run_of.get(event.worker) == event.run_id:  # its bar says how it ended, not a time left
                p.update(self.current[event.worker], info=event.result.get("status", ""))
            p.advance(self.overall)
            self._overall(now)
            p.best = t.best_line()
            p.console.print(f"{event.run_id} {describe(event.axes)} {_outcome(event.result)}",
                            markup=False, highlight=False)

    def close(self):
        self.progress.stop()


def make_progress(console: Console, metric: str = "final_val_acc"):
    return RichProgress(console, metric) if console.is_terminal else PlainProgress(console, metric)
