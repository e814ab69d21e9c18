"""The yardsticks: the machine, its fp32 matmul peak, the FLOPs a variant did, and whether two
variants agree on the accuracies (a speed-up that changes the numbers is not one)."""
from __future__ import annotations

import math
import os
import platform
import time
from pathlib import Path

import torch


def peak_flop_s(device: torch.device, seconds: float = 1.5) -> dict:
    """The fp32 matmul peak: on CPU the better of the process's threads together and one thread
    times the thread count (on a shared machine, other processes make multi-threaded kernels
    stall, so the per-core figure is the steadier estimate of what the cores can do)."""
    if device.type == "cuda":
        out = {"all_threads": matmul_peak(device, seconds=seconds)}
        out["bf16"] = matmul_peak(device, torch.bfloat16, seconds=seconds)
        out["peak"] = out["all_threads"]
        return out
    n = torch.get_num_threads()
    out = {"all_threads": matmul_peak(device, seconds=seconds), "threads": n}
    torch.set_num_threads(1)
    try:
        out["one_thread"] = matmul_peak(device, seconds=seconds)
    finally:
        torch.set_num_threads(n)
    out["peak"] = max(out["all_threads"], out["one_thread"] * n)
    return out


def matmul_peak(device: torch.device, dtype=torch.float32, seconds: float = 1.5) -> float:
    """Best achieved FLOP/s of an n x n matmul (n = 2048 on CPU, 8192 on CUDA)."""
    n = 8192 if device.type == "cuda" else 2048
    k = 4 if device.type == "cuda" else 1  # matmuls per timing
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    a @ b
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(k):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = max(best, k * 2 * n ** 3 / (time.perf_counter() - t0))
    return best


def cell_flops(cells: list[dict], fwd_flops: int, n_test: int) -> float:
    """FLOPs actually done: 3x forward per trained example, 1x per evaluated test example."""
    total = 0.0
    for c in cells:
        total += 3 * fwd_flops * (c["steps"] or 0) * c["batch_size"]
        if c.get("evaluated"):
            total += fwd_flops * n_test
    return total


def agreement(a: list[dict], b: list[dict], tol: float) -> dict:
    """Per-cell |acc_a - acc_b| over cells both trained to the end with acc_b >= 0.5 (the
    trainable ones); cells where exactly one diverged/failed are listed apart."""
    ka = {(c["batch_size"], c["lr"]): c for c in a}
    diffs, mismatched = [], []
    for c in b:
        o = ka.get((c["batch_size"], c["lr"]))
        if o is None:
            continue
        ok_a = math.isfinite(o["val_acc"]) and o["val_acc"] > 0.2
        ok_b = math.isfinite(c["val_acc"]) and c["val_acc"] > 0.2
        if ok_a != ok_b:
            mismatched.append({"batch_size": c["batch_size"], "lr": c["lr"], "a": o["val_acc"], "b": c["val_acc"]})
        elif ok_a and c["val_acc"] >= 0.5:
            diffs.append(abs(o["val_acc"] - c["val_acc"]))
    return {"cells": len(diffs), "max_abs_diff": max(diffs) if diffs else None,
            "mean_abs_diff": sum(diffs) / len(diffs) if diffs else None, "tolerance": tol,
            "agree": bool(diffs) and max(diffs) <= tol and not mismatched, "one_sided_divergence": mismatched}


def load_average() -> tuple | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def machine_info(device: torch.device) -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu": _cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    if (load := load_average()) is not None:
        info["load_average_before"] = load
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
