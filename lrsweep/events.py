"""Progress events: what the sweep driver and the engines report, one dataclass per event.

The library never prints; it calls `callback(event)` with one of these, and the CLI draws them
(cli/progress.py). Events cross process boundaries (worker pipes), so they hold plain data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Union


@dataclass(frozen=True)
class SweepStarted:
    total: int  # grid cells
    done: int  # already finished before this invocation
    pending: int  # to train now
    executor: str  # e.g. "2 worker processes (CPU, 1 thread(s) each)"


@dataclass(frozen=True)
class WorkersStarting:
    """Worker processes are starting: each imports torch and builds its data before its first
    run, seconds to tens of seconds in which nothing else is reported."""
    count: int


@dataclass(frozen=True)
class RunStarted:
    run_id: str
    axes: dict[str, Any]
    index: int = 0  # 0-based, among the runs started by this invocation
    pending: int = 0
    worker: int = 0


@dataclass(frozen=True)
class Step:
    """One training step of the run (or, for a vectorized group, of its first live member)."""
    run_id: str
    step: int
    total: int
    loss: float
    lr: float
    members: int = 1  # runs still training in the group
    worker: int = 0


@dataclass(frozen=True)
class RunFinished:
    run_id: str
    axes: dict[str, Any]
    result: dict  # the run's result.json
    worker: int = 0


@dataclass(frozen=True)
class Note:
    """Something the user should know that is not an error, e.g. an engine fallback."""
    text: str
    worker: int = 0


@dataclass(frozen=True)
class SweepFinished:
    counts: dict[str, int] = field(default_factory=dict)  # status -> runs finished this time


Event = Union[SweepStarted, WorkersStarting, RunStarted, Step, RunFinished, Note, SweepFinished]
Callback = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The default callback."""


def with_worker(event: Event, worker: int) -> Event:
    """The event as reported by `worker` (events that carry one)."""
    import dataclasses

    if hasattr(event, "worker"):
        return dataclasses.replace(event, worker=worker)
    return event

