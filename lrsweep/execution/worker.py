"""A local worker process: pinned to its device before torch is imported, then work units in
over its pipe and events/records out (messages.py), until Stop or the driver's end.

A worker must never outlive its driver (kill -9 of the driver included): it would go on
training and writing checkpoints into a sweep folder another driver may own by then.
"""
from __future__ import annotations

import os
import threading
import time
import warnings
from typing import Optional

from lrsweep.errors import LrsweepWarning, UserError
from lrsweep.events import Callback, Step, with_worker
from lrsweep.execution.faults import crash_if_asked
from lrsweep.execution.messages import Done, EventMsg, Ready, RecordMsg, Stop, UserErrorMsg

STEP_EVENT_INTERVAL_S = 0.2  # workers send at most ~5 step events a second (plus each run's last)


def throttled(on_event: Callback, interval: float) -> Callback:
    """`on_event` with Step events dropped when one was passed less than `interval` seconds ago
    (a run's last step always passes): pickling every step through a pipe costs the worker."""
    last = [0.0]

    def forward(event):
        if isinstance(event, Step):
            now = time.monotonic()
            if now - last[0] < interval and event.step != event.total:
                return
            last[0] = now
        on_event(event)

    return forward


def die_with_parent(parent_pid: int) -> None:
    """Exit when the driver does: PR_SET_PDEATHSIG on Linux, and a watchdog thread elsewhere."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except Exception:  # noqa: BLE001 - not Linux: the watchdog below does it
        pass
    if os.getppid() != parent_pid:
        os._exit(1)

    def watchdog():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watchdog, daemon=True, name="lrsweep-watchdog").start()


def _one_line(message, category, filename, lineno, line=None, _default=warnings.formatwarning) -> str:
    """errors.LrsweepWarning as one `warning:` line on the worker's stderr (the driver's too)."""
    if issubclass(category, LrsweepWarning):
        return f"warning: {message}\n"
    return _default(message, category, filename, lineno, line)


def worker_main(wid: int, conn, device: Optional[str], threads: int, parent_pid: int) -> None:
    """The worker process's body (spawned: nothing inherited but these arguments)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    warnings.formatwarning = _one_line  # the library's warnings as the driver's CLI shows them
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    die_with_parent(parent_pid)
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    from lrsweep.training.units import train_unit  # import cost paid before Ready

    conn.send(Ready(os.getpid()))
    while True:
        try:
            unit = conn.recv()
        except (EOFError, OSError):
            unit = Stop()
        if isinstance(unit, Stop):  # everything is sent (send is synchronous): skip torch's slow teardown
            conn.close()
            os._exit(0)
        if device is not None:  # pinned: this worker's only GPU is cuda:0
            unit = unit.on_device("cuda")
        crash_if_asked()
        send = throttled(lambda event: conn.send(EventMsg(with_worker(event, wid))), STEP_EVENT_INTERVAL_S)
        try:
            for record in train_unit(unit, send):
                conn.send(RecordMsg(record))
        except UserError as e:
            conn.send(UserErrorMsg(str(e)))
        conn.send(Done())
