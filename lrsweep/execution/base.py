"""The executor interface, and the executor that trains in the driver's own process.

An executor trains work units (training/units.py: plan_units, the engine already chosen) and
yields their RunRecords in completion order. It never writes results: the sweep driver is the
one writer of run folders (a run's checkpoint.pt is written by whoever trains it, at the unit's
run_dirs). Progress goes to `on_event` as typed events (events.py), RunStarted and Step stamped
with the worker that trains the run.
"""
from __future__ import annotations

from typing import Iterator

from lrsweep.events import Callback, ignore
from lrsweep.results import RunRecord
from lrsweep.training.units import WorkUnit, train_unit


class Executor:
    """Trains work units; yields their records as they finish."""
    name = "executor"

    def run(self, units: list[WorkUnit], on_event: Callback = ignore) -> Iterator[RunRecord]:
        """Records of the runs in `units`, as they finish. A UserError from a unit propagates;
        any other failure becomes `failed` records and the other units go on."""
        raise NotImplementedError

    def describe(self) -> str:
        """For the sweep's opening line: where the runs train."""
        return self.name

    def close(self) -> None:
        """Release workers; the driver calls it however the sweep ends."""


class InlineExecutor(Executor):
    """One unit after another in this process: the default, and what tests and notebooks want
    (no start-up cost, exceptions and monkeypatches where they are raised)."""
    name = "inline"

    def run(self, units, on_event=ignore):
        for unit in units:
            yield from train_unit(unit, on_event)

    def describe(self):
        return "1 worker (in-process)"
