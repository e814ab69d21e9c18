"""What this machine offers the local executor: cores for CPU workers, GPUs to pin workers to.

GPU ids are the ones a worker is pinned to with CUDA_VISIBLE_DEVICES; the `devices` parameter
numbers them like torch's cuda:N, i.e. among the GPUs this process sees (so with
CUDA_VISIBLE_DEVICES=2,3,5, devices '0,2' means physical GPUs 2 and 5).
"""
from __future__ import annotations

import os
from typing import Optional

from lrsweep.config.grid import RunSpec
from lrsweep.errors import ParameterError


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
    """Whether the runs want a GPU (train.device auto or cuda) and one is there."""
    return any(s.config.train.device != "cpu" for s in specs) and bool(visible_gpus())


def parse_devices(devices: str) -> list[str]:
    """'0,2' -> the ids to pin workers to (see the module docstring)."""
    ids = [d.strip() for d in devices.split(",") if d.strip()]
    if not ids or not all(d.isdigit() for d in ids):
        raise ParameterError("devices", f"expected GPU ids like 0,2,3, got {devices!r}")
    visible = visible_gpus()
    if not visible:
        raise ParameterError("devices", "no CUDA GPU is visible; leave it out to use CPU workers")
    bad = [d for d in ids if int(d) >= len(visible)]
    if bad:
        raise ParameterError("devices", f"no GPU {', '.join(bad)}; {len(visible)} visible (0-{len(visible) - 1})")
    return [visible[int(d)] for d in ids]


def default_workers(specs: list[RunSpec], devices: Optional[list[str]] = None) -> int:
    """One worker per GPU when the runs use GPUs; else one single-threaded worker per core."""
    if devices:
        return len(devices)
    if uses_gpu(specs):
        return len(visible_gpus())
    return visible_cores()
