"""What crosses a process boundary between the driver and whoever trains a unit: one dataclass
per message, so both ends agree on the fields by name (no tagged tuples to keep in step).

Local workers (worker.py), over their own pipe:
    driver -> worker   a WorkUnit to train, or Stop
    worker -> driver   Ready once started, then per unit: EventMsg*, RecordMsg per run,
                       UserErrorMsg if the user's config is at fault, Done last
Ray tasks (ray.py) return one TaskResult.

A UserError travels as its message: its subclasses take other constructor arguments than the
one pickle would give them back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from lrsweep.events import Event
from lrsweep.results import RunRecord


@dataclass(frozen=True)
class Stop:
    """Driver -> worker: no more work; exit."""


@dataclass(frozen=True)
class Ready:
    """The worker has started and imported the engines (its start-up cost is paid)."""
    pid: int


@dataclass(frozen=True)
class EventMsg:
    event: Event  # stamped with the worker's id


@dataclass(frozen=True)
class RecordMsg:
    record: RunRecord


@dataclass(frozen=True)
class UserErrorMsg:
    message: str


@dataclass(frozen=True)
class Done:
    """The unit is over: every record it will give has been sent."""


WorkerMessage = Union[Ready, EventMsg, RecordMsg, UserErrorMsg, Done]


@dataclass
class TaskResult:
    """What one Ray task returns: its records, and the user's error that stopped it, if any."""
    records: list[RunRecord] = field(default_factory=list)
    user_error: Optional[str] = None
