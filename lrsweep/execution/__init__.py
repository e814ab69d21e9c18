"""Executors: where groups of runs (engine.make_groups) are trained. Each yields RunRecords back
to the sweep driver, which stays the one writer of `runs/<name>/` (only a run's checkpoint.pt
is written by whoever trains it).

- `InlineExecutor`: in the driver's own process (one worker, no GPU pinning).
- `LocalExecutor`: N worker processes (spawn), each pinned to one device with
  CUDA_VISIBLE_DEVICES (on CPU: single-threaded workers, one per core by default). Each worker
  has its own pipe to the driver for work, progress events and records, so a worker killed in
  the middle of a message corrupts nothing but its own pipe. A worker that dies is replaced and
  its unfinished runs are retried (`max_retries` times for the run it was training, then that
  run is recorded as `failed`); workers die with the driver (PR_SET_PDEATHSIG + a watchdog).
- `RayExecutor`: one Ray task per group (`num_gpus` may be fractional); records come back as
  task results, so workers need no shared filesystem. Ray retries a task whose worker died
  (`max_retries`); a group that keeps failing becomes `failed` records and the sweep goes on.

Executors yield records in completion order and never write results themselves; a record the
driver has already saved (a retried task that finished twice) is dropped by the driver.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

from lrsweep.errors import UserError
from lrsweep.config.grid import RunSpec

Notify = Callable[..., None]
EXECUTORS = ("local", "ray")
RAY_INSTALL_HINT = "--executor ray needs Ray: pip install 'lrsweep[ray]'"
# Fault injection for tests: the first group to start anywhere (worker process or Ray task)
# creates this file and hard-exits its process, as if the machine had killed it.
CRASH_ONCE_ENV = "LRSWEEP_CRASH_ONCE"
STEP_EVENT_INTERVAL_S = 0.2  # workers send at most ~5 step events a second (plus each run's last)


def visible_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """Device ids a worker can be pinned to: CUDA_VISIBLE_DEVICES if set, else 0..count-1."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None and env.strip():
        return [d.strip() for d in env.split(",") if d.strip()][:n]
    return [str(i) for i in range(n)]


def uses_gpu(specs: list[RunSpec]) -> bool:
    return any(s.config.train.device != "cpu" for s in specs) and bool(visible_gpus())


def failed_record(spec: RunSpec, error: str, tb: Optional[str] = None):
    from lrsweep.training.units import RunRecord, result_record
    from lrsweep.training.sequential import FAILED

    summary = {"traceback": tb} if tb else {}
    return RunRecord(spec.run_id, spec.config.model_dump(mode="json"), {}, {},
                     result_record(spec, FAILED, summary, error))


def _crash_if_asked() -> None:
    marker = os.environ.get(CRASH_ONCE_ENV)
    if not marker:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os._exit(17)


def train_group(group: list[RunSpec], engine: str, emit: Notify, checkpoint_root: Optional[Path],
                throttle: float = 0.0) -> Iterator:
    """Train one group with engine.run_group, in this process. Emits run_start/step events;
    yields one record per run. A UserError (the user's config) propagates; any other exception
    escaping the engine becomes `failed` records for the runs it had not finished."""
    from lrsweep.training.units import run_group
    from lrsweep.training.sequential import checkpoint_dir

    by_id = {s.run_id: s for s in group}
    left = dict(by_id)
    last = [0.0]

    def on_step(event, **info):
        now = time.monotonic()
        if throttle <= 0 or now - last[0] >= throttle or info.get("step") == info.get("total"):
            last[0] = now
            emit(event, **info)

    try:
        records = run_group(group, engine, on_step=on_step)
        for spec in group:
            emit("run_start", run_id=spec.run_id)
            # Sequential engines train lazily, one run per record: this one is `spec`.
            with checkpoint_dir(checkpoint_root / spec.run_id if checkpoint_root else None):
                rec = next(records, None)
            if rec is None:
                break
            left.pop(rec.run_id, None)
            yield rec
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - recorded on the runs, the sweep goes on
        err, tb = f"{type(e).__name__}: {e}", traceback.format_exc(limit=8)
        for spec in list(left.values()):
            left.pop(spec.run_id)
            yield failed_record(spec, err, tb)
    for spec in left.values():
        yield failed_record(spec, "the engine returned no result for this run")


class Executor:
    """Trains groups of runs; yields their records as they finish."""
    name = "executor"

    def run(self, groups: list[list[RunSpec]], sweep_dir: Path, notify: Notify, engine: str = "auto") -> Iterator:
        """Records of the runs in `groups` (engine.make_groups(specs, engine)), as they finish.
        Checkpoints go to sweep_dir/<run_id>/; events go to notify(event, worker=..., **info)."""
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        pass


class InlineExecutor(Executor):
    name = "inline"

    def run(self, groups, sweep_dir, notify, engine="auto"):
        by_id = {s.run_id: s for g in groups for s in g}

        def emit(event, **info):
            if event == "run_start":
                info["spec"] = by_id[info.pop("run_id")]
            notify(event, worker=0, **info)

        for group in groups:
            yield from train_group(group, engine, emit, Path(sweep_dir))

    def describe(self):
        return "1 worker (in-process)"


# --------------------------------------------------------------------------- local workers


def _die_with_parent(parent_pid: int) -> None:
    """A worker must not outlive a driver killed with kill -9."""
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


def _worker_main(wid: int, conn, device: Optional[str], threads: int, parent_pid: int) -> None:
    """A worker process: pinned before torch is imported, then groups in, events/records out."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    _die_with_parent(parent_pid)
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    from lrsweep.training import units as _engine  # noqa: F401 - import cost paid before "ready"

    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            msg = None
        if msg is None:  # everything is sent (send is synchronous): skip torch's slow teardown
            conn.close()
            os._exit(0)
        root, group, engine = msg
        if device is not None:  # pinned: this worker's only GPU is cuda:0
            group = [_on_visible_gpu(s) for s in group]
        _crash_if_asked()
        emit = lambda event, **info: conn.send(("event", event, info))  # noqa: E731
        try:
            for rec in train_group(group, engine, emit, root, throttle=STEP_EVENT_INTERVAL_S):
                conn.send(("record", rec))
        except UserError as e:
            conn.send(("user_error", str(e)))
        conn.send(("done", None))


def _on_visible_gpu(spec: RunSpec) -> RunSpec:
    dev = spec.config.train.device
    if not dev.startswith("cuda:"):
        return spec
    train = spec.config.train.model_copy(update={"device": "cuda"})
    return RunSpec(spec.run_id, spec.axes, spec.config.model_copy(update={"train": train}))


@dataclass
class _Slot:
    wid: int
    device: Optional[str]
    proc: object = None
    conn: object = None
    ready: bool = False
    start_failures: int = 0
    group: list = field(default_factory=list)  # specs sent and not yet returned
    running: Optional[str] = None  # run id of the run being trained


class LocalExecutor(Executor):
    """`workers` processes; `devices` (GPU ids) they are pinned to, round robin; None: CPU."""
    name = "local"

    def __init__(self, workers: int, devices: Optional[list[str]] = None, threads: Optional[int] = None,
                 max_retries: int = 2):
        if workers < 1:
            raise UserError(f"--workers: expected at least 1, got {workers}")
        self.workers, self.devices, self.max_retries = workers, devices or None, max_retries
        self.threads = threads or max(1, visible_cores() // workers)
        self.slots: list[_Slot] = []

    def describe(self):
        where = f"GPUs {','.join(self.devices)}" if self.devices else f"CPU, {self.threads} thread(s) each"
        return f"{self.workers} worker processes ({where})"

    def _start(self, slot: _Slot, ctx) -> None:
        ours, theirs = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=_worker_main, name=f"lrsweep-worker-{slot.wid}", daemon=True,
                           args=(slot.wid, theirs, slot.device, self.threads, os.getpid()))
        try:
            proc.start()
        finally:
            theirs.close()
        slot.proc, slot.conn, slot.ready = proc, ours, False

    def run(self, groups, sweep_dir, notify, engine="auto"):
        import multiprocessing as mp
        from multiprocessing.connection import wait

        ctx = mp.get_context("spawn")
        by_id = {s.run_id: s for g in groups for s in g}
        queue = deque(list(g) for g in groups)
        deaths: dict[str, int] = {}
        n = min(self.workers, len(queue))
        self.slots = [_Slot(i, self.devices[i % len(self.devices)] if self.devices else None) for i in range(n)]
        root = Path(sweep_dir).resolve()
        try:
            while queue or any(s.group for s in self.slots):
                for s in self.slots:
                    if s.group or not queue:
                        continue
                    if s.proc is None:
                        self._start(s, ctx)
                    s.group = queue.popleft()
                    s.running = None
                    try:
                        s.conn.send((root, s.group, engine))
                    except OSError:
                        pass  # it died: its sentinel says so below
                live = [s for s in self.slots if s.proc is not None]
                ready = wait([s.conn for s in live] + [s.proc.sentinel for s in live], timeout=1.0)
                for s in live:
                    if s.conn in ready or s.proc.sentinel in ready:
                        yield from self._drain(s, by_id, notify)
                    if not s.proc.is_alive():
                        yield from self._drain(s, by_id, notify)  # all it managed to send
                        yield from self._bury(s, queue, deaths)
        finally:
            self.close()

    def _drain(self, s: _Slot, by_id, notify) -> Iterator:
        """Every whole message waiting on a worker's pipe."""
        try:
            while s.conn is not None and s.conn.poll():
                kind, payload, *rest = s.conn.recv()
                if kind == "ready":
                    s.ready, s.start_failures = True, 0
                elif kind == "event":
                    info = rest[0]
                    if payload == "run_start":
                        s.running = info["run_id"]
                        info = {"spec": by_id[info.pop("run_id")], **info}
                    notify(payload, worker=s.wid, **info)
                elif kind == "record":
                    s.group = [x for x in s.group if x.run_id != payload.run_id]
                    yield payload
                elif kind == "user_error":
                    raise UserError(payload)
                elif kind == "done":
                    s.group, s.running = [], None
        except (EOFError, OSError):  # the worker died mid-message: its sentinel will tell
            pass

    def _bury(self, s: _Slot, queue: deque, deaths: dict) -> Iterator:
        """A worker died: replace it later; retry its unfinished runs, or give up on the culprit."""
        s.proc.join(timeout=5)
        code = s.proc.exitcode
        if not s.ready:
            s.start_failures += 1
            if s.start_failures >= 3:
                raise RuntimeError(f"lrsweep worker processes keep dying at start (exit code {code})")
        s.conn.close()
        s.proc = s.conn = None
        left, s.group = s.group, []
        if not left:
            return
        culprit = next((x for x in left if x.run_id == s.running), left[0])
        deaths[culprit.run_id] = deaths.get(culprit.run_id, 0) + 1
        if deaths[culprit.run_id] > self.max_retries:
            left = [x for x in left if x is not culprit]
            n = deaths[culprit.run_id]
            yield failed_record(culprit, f"its worker process died while training it ({n} time{'s' * (n > 1)}, "
                                         f"last exit code {code}); see the system log (out of memory?)")
        if left:
            queue.appendleft(left)

    def close(self):
        for s in self.slots:
            if s.proc is None:
                continue
            try:
                s.conn.send(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 3
        for s in self.slots:
            if s.proc is None:
                continue
            if s.group:  # still training: nothing to wait for
                s.proc.terminate()
            s.proc.join(timeout=max(0.1, deadline - time.monotonic()))
            if s.proc.is_alive():
                s.proc.kill()
                s.proc.join(timeout=2)
            s.conn.close()
            s.proc = s.conn = None


# --------------------------------------------------------------------------- Ray


def _local_checkpoint_root(sweep_dir: str) -> Path:
    """Where a Ray task keeps checkpoints when it cannot see the driver's sweep folder."""
    h = hashlib.sha1(sweep_dir.encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / "lrsweep-checkpoints" / f"{Path(sweep_dir).name}-{h}"


def ray_train_group(group: list[RunSpec], engine: str, sweep_dir: str) -> list:
    """Body of one Ray task: the records of a group, or ('user_error', message)."""
    _crash_if_asked()
    import ray

    if ray.get_gpu_ids():  # Ray pinned this task to its GPU(s): cuda:N in a config means that one
        group = [_on_visible_gpu(s) for s in group]
    shared = Path(sweep_dir).is_dir()  # the driver's folder is visible here (same machine / shared FS)
    root = Path(sweep_dir) if shared else _local_checkpoint_root(sweep_dir)
    out = []
    try:
        for rec in train_group(group, engine, lambda *a, **k: None, root):
            if not shared:  # the driver cannot delete it for us
                (root / rec.run_id / "checkpoint.pt").unlink(missing_ok=True)
            out.append(rec)
    except UserError as e:
        return [("user_error", str(e))]
    return out


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, address: Optional[str] = None, gpus_per_task: Optional[float] = None,
                 cpus_per_task: float = 1.0, max_retries: int = 2):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UserError(RAY_INSTALL_HINT) from None
        if gpus_per_task is not None and gpus_per_task < 0:
            raise UserError(f"--gpus-per-task: expected a number >= 0, got {gpus_per_task}")
        if max_retries < 0:
            raise UserError(f"--max-retries: expected a number >= 0, got {max_retries}")
        self.address, self.gpus_per_task, self.cpus_per_task = address, gpus_per_task, cpus_per_task
        self.max_retries = max_retries
        self.started_ray = False

    def describe(self):
        where = self.address or "a local Ray instance"
        gpus = f", {self.gpus_per_task} GPU per task" if self.gpus_per_task else ""
        return f"Ray tasks on {where}{gpus}, up to {self.max_retries} retries"

    def _connect(self, specs: list[RunSpec]):
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
            ray.init(address=self.address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UserError(f"--address {self.address}: cannot connect to Ray: {str(e).splitlines()[0]}") from None
        self.started_ray = True
        return ray

    def run(self, groups, sweep_dir, notify, engine="auto"):
        specs = [s for g in groups for s in g]
        ray = self._connect(specs)
        cluster_gpus = ray.cluster_resources().get("GPU", 0)
        wants_gpu = any(s.config.train.device != "cpu" for s in specs)  # auto or cuda
        gpus = self.gpus_per_task
        if gpus is None:
            gpus = 1 if wants_gpu and cluster_gpus else 0
        if gpus and not cluster_gpus:
            raise UserError(f"--gpus-per-task {gpus:g}: the Ray cluster has no GPUs, so the tasks could never start")
        if not gpus and any(s.config.train.device.startswith("cuda") for s in specs):
            raise UserError(f"train.device cuda needs GPUs for the Ray tasks: --gpus-per-task above 0 "
                            f"(the cluster has {cluster_gpus:g})")
        task = ray.remote(ray_train_group).options(
            num_cpus=self.cpus_per_task, num_gpus=gpus, max_retries=self.max_retries, retry_exceptions=False)
        root = str(Path(sweep_dir).resolve())
        pending = {task.remote(g, engine, root): g for g in groups}
        try:
            while pending:
                refs = list(pending)
                done, _ = ray.wait(refs, num_returns=1, timeout=1.0)
                if done:  # and every other finished one, in one call
                    done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                for ref in done:
                    group = pending.pop(ref)
                    try:
                        out = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
                        for spec in group:
                            yield failed_record(spec, f"Ray task failed after {self.max_retries} retries: "
                                                      f"{type(e).__name__}: {reason}")
                        continue
                    for rec in out:
                        if isinstance(rec, tuple) and rec[:1] == ("user_error",):
                            raise UserError(rec[1])
                        yield rec
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self):
        if self.started_ray:
            import ray

            ray.shutdown()
            self.started_ray = False


# --------------------------------------------------------------------------- choosing one


def default_workers(specs: list[RunSpec], devices: Optional[list[str]] = None) -> int:
    """One worker per GPU when the runs use GPUs; else one single-threaded worker per core."""
    if devices:
        return len(devices)
    if uses_gpu(specs):
        return len(visible_gpus())
    return visible_cores()


def make_executor(specs: list[RunSpec], kind: str = "local", workers: Optional[int] = None,
                  devices: Optional[str] = None, max_retries: int = 2,
                  address: Optional[str] = None, gpus_per_task: Optional[float] = None) -> Executor:
    """The executor for `lrsweep run` flags. `devices`: '0,2,3'. workers=1 without devices
    trains in the driver's process."""
    if kind not in EXECUTORS:
        raise UserError(f"--executor: expected one of ({', '.join(EXECUTORS)}), got {kind!r}")
    if max_retries < 0:
        raise UserError(f"--max-retries: expected a number >= 0, got {max_retries}")
    if kind == "ray":
        if workers is not None or devices is not None:
            raise UserError("--workers/--devices are for --executor local; Ray places tasks itself "
                            "(use --gpus-per-task)")
        return RayExecutor(address, gpus_per_task, max_retries=max_retries)
    if address is not None or gpus_per_task is not None:
        raise UserError("--address/--gpus-per-task need --executor ray")
    if workers is None and devices is None and os.environ.get("LRSWEEP_WORKERS"):  # local default only
        env = os.environ["LRSWEEP_WORKERS"]
        if not env.isdigit() or int(env) < 1:
            raise UserError(f"LRSWEEP_WORKERS: expected a number >= 1, got {env!r}")
        workers = int(env)
    dev_list = None
    if devices is not None:
        dev_list = [d.strip() for d in devices.split(",") if d.strip()]
        if not dev_list or not all(d.isdigit() for d in dev_list):
            raise UserError(f"--devices: expected GPU ids like 0,2,3, got {devices!r}")
        visible = visible_gpus()
        if not visible:
            raise UserError("--devices: no CUDA GPU is visible; leave it out to use CPU workers")
        bad = [d for d in dev_list if int(d) >= len(visible)]
        if bad:
            raise UserError(f"--devices: no GPU {', '.join(bad)}; {len(visible)} visible (0-{len(visible) - 1})")
        # Numbered like torch's cuda:N: among the GPUs this process sees (CUDA_VISIBLE_DEVICES).
        dev_list = [visible[int(d)] for d in dev_list]
    n = workers if workers is not None else default_workers(specs, dev_list)
    n = max(1, min(n, len(specs))) if workers is None else n
    if n == 1 and not dev_list:
        return InlineExecutor()
    if dev_list is None and uses_gpu(specs):
        dev_list = visible_gpus()
    return LocalExecutor(n, dev_list, max_retries=max_retries)
