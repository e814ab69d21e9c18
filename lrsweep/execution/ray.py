"""One Ray task per work unit (`num_gpus` may be fractional: several tasks share a GPU).

Records come back as task results (messages.TaskResult), so workers need no shared
filesystem; a task that cannot see the sweep folder keeps its checkpoints in a local temp folder
instead (and deletes each once its record is made: the driver cannot). Ray retries a task whose
worker died (`max_retries`); a unit that keeps failing becomes `failed` records and the sweep
goes on. Tasks report no progress events: the driver reports runs as their records arrive.
"""
from __future__ import annotations

import hashlib
import math
import tempfile
from pathlib import Path
from typing import Optional

from lrsweep import storage
from lrsweep.errors import ParameterError, UserError
from lrsweep.events import ignore
from lrsweep.execution.base import Executor
from lrsweep.execution.faults import crash_if_asked
from lrsweep.execution.messages import TaskResult
from lrsweep.results import RunRecord
from lrsweep.training.units import WorkUnit

INSTALL_HINT = "'ray' needs Ray: pip install 'lrsweep[ray]'"
CONNECT_TIMEOUT_S = 30.0  # how long `--address` may take to answer (ray.init alone retries for minutes)


def local_checkpoint_root(sweep_dir: Path) -> Path:
    """Where a task keeps checkpoints when it cannot see the driver's sweep folder."""
    h = hashlib.sha1(str(sweep_dir).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / "lrsweep-checkpoints" / f"{sweep_dir.name}-{h}"


def ray_train_unit(unit: WorkUnit) -> TaskResult:
    """The body of one Ray task."""
    crash_if_asked()
    import ray

    from lrsweep.training.units import train_unit

    if ray.get_gpu_ids():  # Ray pinned this task to its GPU(s): cuda:N in a config means that one
        unit = unit.on_device("cuda")
    sweep_dir = next((d.parent for d in unit.run_dirs if d is not None), None)
    shared = sweep_dir is None or sweep_dir.is_dir()  # the driver's folder is visible here
    if not shared:
        unit = unit.relocated(local_checkpoint_root(sweep_dir))
    dirs = dict(zip(unit.run_ids, unit.run_dirs))
    out = TaskResult()
    try:
        for rec in train_unit(unit):
            if not shared:
                (dirs[rec.run_id] / storage.CHECKPOINT).unlink(missing_ok=True)
            out.records.append(rec)
    except UserError as e:
        out.user_error = str(e)
    return out


class _NoSigtermNote:
    """Drops Ray's note that a driver connecting from a thread installs no SIGTERM handler."""

    def filter(self, record) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, address: Optional[str] = None, gpus_per_task: Optional[float] = None,
                 cpus_per_task: float = 1.0, max_retries: int = 2, connect_timeout: float = CONNECT_TIMEOUT_S):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ParameterError("executor", INSTALL_HINT) from None
        if gpus_per_task is not None and gpus_per_task < 0:
            raise ParameterError("gpus_per_task", f"expected a number >= 0, got {gpus_per_task}")
        if max_retries < 0:
            raise ParameterError("max_retries", f"expected a number >= 0, got {max_retries}")
        if isinstance(connect_timeout, bool) or not isinstance(connect_timeout, (int, float)) \
                or not 0 < connect_timeout < math.inf:
            raise ParameterError("connect_timeout", f"expected a number of seconds > 0, got {connect_timeout!r}")
        self.address, self.gpus_per_task, self.cpus_per_task = address, gpus_per_task, cpus_per_task
        self.max_retries, self.connect_timeout = max_retries, float(connect_timeout)
        self.started_ray = False

    def describe(self):
        where = self.address or "a local Ray instance"
        gpus = f", {self.gpus_per_task} GPU per task" if self.gpus_per_task else ""
        return f"Ray tasks on {where}{gpus}, up to {self.max_retries} retries"

    def _connect(self):
        import logging

        import ray

        if ray.is_initialized():
            return ray
        kwargs: dict = {}
        if self.address:
            import lrsweep

            # Ship this lrsweep to the cluster's workers (they need torch etc. installed).
            kwargs["runtime_env"] = {"py_modules": [str(Path(lrsweep.__file__).parent)]}
        else:
            kwargs["include_dashboard"] = False
        if not (self.address or "").startswith("ray://"):  # Ray Client takes few ray.init arguments
            kwargs["logging_level"] = logging.WARNING
        try:
            if self.address:
                self._init_within_timeout(ray, kwargs)
            else:  # a local Ray of our own: nothing to wait for but its start
                ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ParameterError("address", f"cannot connect to Ray at {self.address}: "
                                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        self.started_ray = True
        return ray

    def _init_within_timeout(self, ray, kwargs: dict) -> None:
        """ray.init(address), or ParameterError within connect_timeout: nothing listening is
        found by a TCP connect at once; a port that answers but is no Ray cluster makes
        ray.init retry for minutes in C++, deaf to signals, so it runs in a daemon thread that
        is given up after the timeout (the main thread stays responsive to SIGTERM)."""
        import logging
        import socket
        import threading

        host, _, port = self.address.removeprefix("ray://").rpartition(":")
        if self.address != "auto" and port.isdigit():
            try:
                socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=self.connect_timeout).close()
            except OSError as e:
                raise ParameterError("address", f"nothing answers at {self.address} "
                                                f"({e.strerror or type(e).__name__}); is the Ray cluster up?") from None
        outcome: dict = {}

        def connect():
            try:
                ray.init(address=self.address, **kwargs)
                outcome["ok"] = True
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                outcome["error"] = e

        logging.getLogger("ray._private.worker").addFilter(_NoSigtermNote())  # it is on purpose
        thread = threading.Thread(target=connect, name="lrsweep-ray-connect", daemon=True)
        thread.start()
        thread.join(self.connect_timeout)
        if "error" in outcome:
            raise outcome["error"]
        if "ok" not in outcome:
            raise ParameterError("address", f"no Ray cluster answered at {self.address} within "
                                            f"{self.connect_timeout:g} s (`connect_timeout`)")

    def _gpus_per_task(self, ray, units: list[WorkUnit]) -> float:
        """The GPUs each task asks for: given, else 1 if the runs may use CUDA and the cluster has GPUs."""
        devices = [s.config.train.device for u in units for s in u.specs]
        cluster_gpus = ray.cluster_resources().get("GPU", 0)
        gpus = self.gpus_per_task
        if gpus is None:
            gpus = 1 if any(d != "cpu" for d in devices) and cluster_gpus else 0  # auto or cuda
        if gpus and not cluster_gpus:
            raise ParameterError("gpus_per_task", f"{gpus:g}: the Ray cluster has no GPUs, so the tasks could never start")
        if not gpus and any(d.startswith("cuda") for d in devices):
            raise ParameterError("gpus_per_task", f"train.device cuda needs GPUs for the Ray tasks: set it above 0 "
                                                  f"(the cluster has {cluster_gpus:g})")
        return gpus

    def run(self, units, on_event=ignore):
        ray = self._connect()
        task = ray.remote(ray_train_unit).options(
            num_cpus=self.cpus_per_task, num_gpus=self._gpus_per_task(ray, units), max_retries=self.max_retries,
            retry_exceptions=False)
        pending = {task.remote(u): u for u in units}
        try:
            while pending:
                refs = list(pending)
                done, _ = ray.wait(refs, num_returns=1, timeout=1.0)
                if done:  # and every other finished one, in one call
                    done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                for ref in done:
                    unit = pending.pop(ref)
                    try:
                        out: TaskResult = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
                        for spec in unit.specs:
                            yield RunRecord.failed(spec, f"Ray task failed after {self.max_retries} retries: "
                                                         f"{type(e).__name__}: {reason}")
                        continue
                    yield from out.records
                    if out.user_error is not None:
                        raise UserError(out.user_error)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self):
        if self.started_ray:
            import ray

            ray.shutdown()
            self.started_ray = False
