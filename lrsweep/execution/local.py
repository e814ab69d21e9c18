"""N worker processes on this machine (spawned), each pinned to one device.

On CUDA each worker sees one GPU (CUDA_VISIBLE_DEVICES, round robin over `devices`); on the
CPU workers are single-threaded, one per core by default. Each worker has its own pipe to the
driver for units, events and records, so a worker killed in the middle of a message corrupts
nothing but its own pipe. A worker that dies is replaced and its unit's unfinished runs are
retried: `max_retries` times for the run it was training, then that run is recorded `failed`
and the rest of its unit retried without it. Workers die with the driver (worker.py).
"""
from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Iterator, Optional

from lrsweep.errors import ParameterError, UserError
from lrsweep.events import RunStarted, WorkersStarting, ignore
from lrsweep.execution.base import Executor
from lrsweep.execution.devices import visible_cores
from lrsweep.execution.messages import Done, EventMsg, Ready, RecordMsg, Stop, UserErrorMsg
from lrsweep.execution.worker import worker_main
from lrsweep.results import RunRecord
from lrsweep.training.units import WorkUnit

START_FAILURES_LIMIT = 3  # a worker that dies this many times before Ready: something is broken


def without(unit: WorkUnit, run_ids: set[str]) -> Optional[WorkUnit]:
    """`unit` less the runs in `run_ids` (None if nothing is left): what to retry of it."""
    keep = [i for i, s in enumerate(unit.specs) if s.run_id not in run_ids]
    if not keep:
        return None
    dirs = unit.run_dirs or (None,) * len(unit.specs)
    return replace(unit, specs=tuple(unit.specs[i] for i in keep), run_dirs=tuple(dirs[i] for i in keep))


@dataclass
class _Slot:
    """One worker: its process and pipe, and the unit it trains (busy until its Done)."""
    wid: int
    device: Optional[str]
    proc: object = None
    conn: object = None
    ready: bool = False
    start_failures: int = 0
    unit: Optional[WorkUnit] = None
    returned: set = field(default_factory=set)  # run ids of the unit whose records came back
    started: list = field(default_factory=list)  # run ids of the unit it reported starting

    def assign(self, unit: WorkUnit) -> None:
        self.unit, self.returned, self.started = unit, set(), []


class LocalExecutor(Executor):
    """`workers` processes; `devices` (GPU ids) they are pinned to, round robin; None: CPU."""
    name = "local"

    def __init__(self, workers: int, devices: Optional[list[str]] = None, threads: Optional[int] = None,
                 max_retries: int = 2):
        if workers < 1:
            raise ParameterError("workers", f"expected at least 1, got {workers}")
        if max_retries < 0:
            raise ParameterError("max_retries", f"expected a number >= 0, got {max_retries}")
        self.workers, self.devices, self.max_retries = workers, devices or None, max_retries
        self.threads = threads or max(1, visible_cores() // workers)
        self.slots: list[_Slot] = []

    def describe(self):
        where = f"GPUs {','.join(self.devices)}" if self.devices else f"CPU, {self.threads} thread(s) each"
        return f"{self.workers} worker processes ({where})"

    def _start(self, slot: _Slot, ctx) -> None:
        ours, theirs = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=worker_main, name=f"lrsweep-worker-{slot.wid}", daemon=True,
                           args=(slot.wid, theirs, slot.device, self.threads, os.getpid()))
        try:
            proc.start()
        finally:
            theirs.close()
        slot.proc, slot.conn, slot.ready = proc, ours, False

    def run(self, units, on_event=ignore):
        import multiprocessing as mp
        from multiprocessing.connection import wait

        ctx = mp.get_context("spawn")
        queue = deque(units)
        deaths: dict[str, int] = {}
        n = min(self.workers, len(queue))
        self.slots = [_Slot(i, self.devices[i % len(self.devices)] if self.devices else None) for i in range(n)]
        if n:
            on_event(WorkersStarting(n))
        try:
            while queue or any(s.unit for s in self.slots):
                for s in self.slots:
                    if s.unit or not queue:
                        continue
                    if s.proc is None:
                        self._start(s, ctx)
                    s.assign(queue.popleft())
                    try:
                        s.conn.send(s.unit)
                    except OSError:
                        pass  # it died: its sentinel says so below
                live = [s for s in self.slots if s.proc is not None]
                ready = wait([s.conn for s in live] + [s.proc.sentinel for s in live], timeout=1.0)
                for s in live:
                    if s.conn in ready or s.proc.sentinel in ready:
                        yield from self._drain(s, on_event)
                    if not s.proc.is_alive():
                        yield from self._drain(s, on_event)  # all it managed to send
                        yield from self._bury(s, queue, deaths)
        finally:
            self.close()

    def _drain(self, s: _Slot, on_event) -> Iterator[RunRecord]:
        """Every whole message waiting on a worker's pipe."""
        try:
            while s.conn is not None and s.conn.poll():
                msg = s.conn.recv()
                if isinstance(msg, Ready):
                    s.ready, s.start_failures = True, 0
                elif isinstance(msg, EventMsg):
                    if isinstance(msg.event, RunStarted):
                        s.started.append(msg.event.run_id)
                    on_event(msg.event)
                elif isinstance(msg, RecordMsg):
                    s.returned.add(msg.record.run_id)
                    yield msg.record
                elif isinstance(msg, UserErrorMsg):
                    raise UserError(msg.message)
                elif isinstance(msg, Done):
                    s.unit = None
        except (EOFError, OSError):  # the worker died mid-message: its sentinel will tell
            pass

    def _bury(self, s: _Slot, queue: deque, deaths: dict[str, int]) -> Iterator[RunRecord]:
        """A worker died: replace it later; retry its unfinished runs, or give up on the culprit."""
        s.proc.join(timeout=5)
        code = s.proc.exitcode
        if not s.ready:
            s.start_failures += 1
            if s.start_failures >= START_FAILURES_LIMIT:
                raise RuntimeError(f"lrsweep worker processes keep dying at start (exit code {code})")
        s.conn.close()
        s.proc = s.conn = None
        left = without(s.unit, s.returned) if s.unit else None
        s.unit = None
        if left is None:
            return
        culprit = next((x for x in left.specs if x.run_id in s.started), left.specs[0])
        deaths[culprit.run_id] = deaths.get(culprit.run_id, 0) + 1
        if deaths[culprit.run_id] > self.max_retries:
            n = deaths[culprit.run_id]
            yield RunRecord.failed(culprit, f"its worker process died while training it ({n} time{'s' * (n > 1)}, "
                                            f"last exit code {code}); see the system log (out of memory?)")
            left = without(left, {culprit.run_id})
        if left:
            queue.appendleft(left)

    def close(self):
        for s in self.slots:
            if s.proc is None:
                continue
            try:
                s.conn.send(Stop())
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 3
        for s in self.slots:
            if s.proc is None:
                continue
            if s.unit:  # still training: nothing to wait for
                s.proc.terminate()
            s.proc.join(timeout=max(0.1, deadline - time.monotonic()))
            if s.proc.is_alive():
                s.proc.kill()
                s.proc.join(timeout=2)
            s.conn.close()
            s.proc = s.conn = None
