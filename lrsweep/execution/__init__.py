"""Executors: where the sweep's work units (training/units.py: plan_units) are trained. Each
yields RunRecords back to the sweep driver, which stays the one writer of `runs/<name>/`.

- `InlineExecutor` (base.py): in the driver's own process (one worker, no GPU pinning).
- `LocalExecutor` (local.py, worker.py): N worker processes, each pinned to one device; a
  dead worker is replaced and its runs retried; workers die with the driver.
- `RayExecutor` (ray.py): one Ray task per unit; Ray retries tasks whose worker died.

devices.py says what the machine offers, messages.py what crosses process boundaries,
faults.py how the tests kill workers. `make_executor` turns `lrsweep run`'s options into one
(its device look-ups go through the devices module, where tests replace visible_gpus).
"""
from __future__ import annotations

import os
import warnings
from typing import Optional

from lrsweep.config.grid import RunSpec
from lrsweep.errors import LrsweepWarning, ParameterError, UserError
from lrsweep.execution import devices as _devices
from lrsweep.execution.base import Executor, InlineExecutor
from lrsweep.execution.faults import CRASH_ONCE_ENV  # noqa: F401
from lrsweep.execution.local import LocalExecutor
from lrsweep.execution.ray import CONNECT_TIMEOUT_S, RayExecutor
from lrsweep.execution.worker import STEP_EVENT_INTERVAL_S  # noqa: F401

EXECUTORS = ("local", "ray")
WORKERS_ENV = "LRSWEEP_WORKERS"  # the local executor's default number of workers


def _env_workers() -> Optional[int]:
    env = os.environ.get(WORKERS_ENV)
    if not env:
        return None
    if not env.isdigit() or int(env) < 1:
        raise UserError(f"{WORKERS_ENV}: expected a number >= 1, got {env!r}")
    return int(env)


def make_executor(specs: list[RunSpec], kind: str = "local", workers: Optional[int] = None,
                  devices: Optional[str] = None, max_retries: int = 2,
                  address: Optional[str] = None, gpus_per_task: Optional[float] = None,
                  connect_timeout: float = CONNECT_TIMEOUT_S) -> Executor:
    """The executor for `lrsweep run`'s options. `devices`: GPU ids like '0,2,3' (devices.py).
    Without workers or devices: $LRSWEEP_WORKERS, else one worker per GPU when the runs use
    GPUs, else one single-threaded worker per core, at most one per run. One worker without
    devices trains in the driver's process. More workers than the machine has cores (or
    devices, if more) are capped to that, with a warning. `connect_timeout`: seconds Ray's
    `address` may take to answer."""
    if kind not in EXECUTORS:
        raise ParameterError("executor", f"expected one of ({', '.join(EXECUTORS)}), got {kind!r}")
    if max_retries < 0:
        raise ParameterError("max_retries", f"expected a number >= 0, got {max_retries}")
    if kind == "ray":
        for name, value in (("workers", workers), ("devices", devices)):
            if value is not None:
                raise ParameterError(name, "is for the local executor; Ray places tasks itself (by GPUs per task)")
        return RayExecutor(address, gpus_per_task, max_retries=max_retries, connect_timeout=connect_timeout)
    for name, value in (("address", address), ("gpus_per_task", gpus_per_task)):
        if value is not None:
            raise ParameterError(name, "is for the ray executor")
    if workers is None and devices is None:  # the environment sets the local default only
        workers = _env_workers()
    dev_list = _devices.parse_devices(devices) if devices is not None else None
    if workers is not None and workers < 1:
        raise ParameterError("workers", f"expected at least 1, got {workers}")
    n = workers if workers is not None else max(1, min(_devices.default_workers(specs, dev_list), len(specs)))
    if n == 1 and not dev_list:
        return InlineExecutor()
    if dev_list is None and _devices.uses_gpu(specs):
        dev_list = _devices.visible_gpus()
    most = max(_devices.visible_cores(), len(dev_list or ()))  # a worker per core, or per GPU if more
    if n > most:
        warnings.warn(LrsweepWarning(f"{n} workers asked for, but this machine has {most} "
                                     f"{'cores' if most > len(dev_list or ()) else 'GPUs'}: starting {most}"))
        n = most
    return LocalExecutor(n, dev_list, max_retries=max_retries)
