"""`lrsweep bench` (`make bench`): one grid trained four ways, timed in one process.

The grid (issue 5): MNIST (../shared/datasets when present, else generated IDX files of the same
shape), cnn5, SGD momentum 0.9, batch sizes {32, 128, 512} x 8 LRs logspace 1e-3..1, one epoch
over a fixed 8192-example subset, test accuracy on the 10k test set after each run.
`--quick`: {32, 128} x 4 LRs, 2048 examples, 2000 test examples.

Variants:
  plain       a PyTorch loop as users write it (pytorch/examples' MNIST): torchvision dataset +
              ToTensor/Normalize transforms + DataLoader(shuffle=True), torch.optim.SGD, test
              batches of 1000, one run after another, in this process
  sequential  lrsweep's sequential engine, in this process (engine.run_group, 'sequential')
  vectorized  lrsweep's vectorized engine, in this process (one stacked model per batch size)
  auto        `lrsweep run` end to end in a subprocess with every default (engine: auto and the
              default executor), including start-up and writing the run folders

Reported per variant: wall time, runs/hour, the speed-up of each over `plain`, FLOP/s (the
FLOPs actually trained and evaluated, from models.count_flops: 3x forward per training example)
against an fp32 matmul peak measured in this process, and accuracy agreement per cell.
Same seeds everywhere: lrsweep's engines share init and data order (they should agree closely);
the plain loop shares the init but not the data order (DataLoader's shuffling) nor the
normalization constants, so it agrees within run-to-run noise only.
"""
from __future__ import annotations

import json
import math
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

VARIANTS = ("plain", "sequential", "vectorized", "auto")
EXTRA_VARIANTS = ("options",)  # per member-step timings of every engine option (not a grid run)
# The full grid on an idle 2-core CPU (README): plain ~3 min, each lrsweep variant ~70 s, so
# about 7 minutes; `options` adds about a minute and runs by default with --quick only (or ask:
# --variants all). On a busy machine, multi-threaded kernels (plain, sequential) slow down most.
DEFAULT_FULL = VARIANTS
DEFAULT_QUICK = ("options",) + VARIANTS
REPO = Path(__file__).resolve().parents[2]
SHARED_MNIST_ROOTS = (Path("../shared/datasets"), REPO.parent / "shared" / "datasets")


@dataclass
class BenchGrid:
    batch_sizes: tuple[int, ...] = (32, 128, 512)
    n_lr: int = 8
    lr_min: float = 1e-3
    lr_max: float = 1.0
    train_subset: int = 8192
    test_subset: Optional[int] = None  # None: the whole 10k test set
    momentum: float = 0.9
    seed: int = 0
    epochs: int = 1

    @property
    def lrs(self) -> list[float]:
        return [float(f"{v:.12g}") for v in np.geomspace(self.lr_min, self.lr_max, self.n_lr)]

    @property
    def cells(self) -> list[tuple[int, float]]:
        return [(b, lr) for b in self.batch_sizes for lr in self.lrs]


FULL = BenchGrid()
QUICK = BenchGrid(batch_sizes=(32, 128), n_lr=4, train_subset=2048, test_subset=2000)


# --------------------------------------------------------------------------- data


def find_mnist(root: Optional[str | Path] = None) -> Optional[Path]:
    """A folder holding MNIST/raw/ (the given one, else ../shared/datasets), or None."""
    for r in ([Path(root)] if root else list(SHARED_MNIST_ROOTS)):
        if (r / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
            return r.resolve()
    return None


def write_fake_mnist(root: Path, n_train: int = 60000, n_test: int = 10000, seed: int = 0) -> Path:
    """Generated MNIST of the real shape (uint8 28x28, 10 classes) in torchvision's IDX files:
    a fixed random stroke-like template per class plus noise, so it is learnable."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    templates = (rng.random((10, 28, 28)) > 0.8).astype(np.float32)
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = templates[labels] * 200 + rng.normal(0, 40, (n, 28, 28))
        images = np.clip(images, 0, 255).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
    return Path(root)


def subset_indices(n: int, k: Optional[int], subset_seed: int, salt: int) -> Optional[torch.Tensor]:
    """The indices lrsweep's dataset.train_subset (salt 1) / val_subset (salt 2) picks."""
    if k is None:
        return None
    from lrsweep.datasets import _gen
    return torch.randperm(n, generator=_gen(subset_seed, salt))[:k].sort().values


# --------------------------------------------------------------------------- (a) the plain loop


class Net(nn.Module):
    """cnn5 written the usual way (same layers in the same order: the same init for a seed)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 3 * 3, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


def plain_sweep(root: Path, grid: BenchGrid, device: torch.device) -> list[dict]:
    """(a) One run after another, as in pytorch/examples/mnist (DataLoader, transforms)."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train_set = datasets.MNIST(str(root), train=True, download=False, transform=transform)
    test_set = datasets.MNIST(str(root), train=False, download=False, transform=transform)
    idx = subset_indices(len(train_set), grid.train_subset, 0, 1)
    train_set = Subset(train_set, idx.tolist())
    if grid.test_subset is not None:
        test_set = Subset(test_set, subset_indices(len(test_set), grid.test_subset, 0, 2).tolist())
    kwargs = {"num_workers": 1, "pin_memory": True} if device.type == "cuda" else {}
    results = []
    for batch_size, lr in grid.cells:
        torch.manual_seed(grid.seed)
        model = Net().to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=grid.momentum)
        train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, **kwargs)
        test_loader = DataLoader(test_set, batch_size=1000, **kwargs)
        steps = 0
        for _ in range(grid.epochs):
            model.train()
            for data, target in train_loader:
                data, target = data.to(device), target.to(device)
                optimizer.zero_grad()
                loss = F.cross_entropy(model(data), target)
                loss.backward()
                optimizer.step()
                steps += 1
        model.eval()
        correct = 0
        with torch.no_grad():
            for data, target in test_loader:
                data, target = data.to(device), target.to(device)
                correct += (model(data).argmax(1) == target).sum().item()
        acc = correct / len(test_set)
        results.append({"batch_size": batch_size, "lr": lr, "val_acc": acc, "steps": steps,
                        "status": "complete" if math.isfinite(loss.item()) else "nan", "evaluated": True})
    return results


# --------------------------------------------------------------------------- (b), (c), (d): lrsweep


def sweep_raw(root: Path, grid: BenchGrid, device: str) -> dict:
    ds = {"name": "mnist", "root": str(root), "download": False, "train_subset": grid.train_subset,
          "val_split": "test"}
    if grid.test_subset is not None:
        ds["val_subset"] = grid.test_subset
    return {
        "name": "bench",
        "dataset": ds,
        "model": {"name": "cnn5"},
        "optimizer": {"name": "sgd", "momentum": grid.momentum},
        "train": {"epochs": grid.epochs, "eval_every": "epoch", "device": device, "seed": grid.seed},
        "sweep": {"batch_size": list(grid.batch_sizes), "lr": grid.lrs},
    }


def _cell(result: dict) -> dict:
    acc = result.get("final_val_acc")
    evaluated = result.get("status") == "complete"
    return {"batch_size": result["batch_size"], "lr": result["nominal_lr"],
            "val_acc": acc if acc is not None and evaluated else float("nan"),
            "steps": result.get("steps"), "status": result.get("status"), "evaluated": evaluated}


def engine_sweep(raw: dict, engine: str) -> list[dict]:
    """(b)/(c): the engine in this process, group by group (as the inline executor runs it)."""
    from lrsweep.datasets import clear_cache
    from lrsweep.training.units import make_groups, run_group
    from lrsweep.config.grid import build_sweep

    clear_cache()  # each variant pays its own data loading
    specs = build_sweep(raw).runs
    cells = []
    for group in make_groups(specs, engine):
        for rec in run_group(group, engine):
            cells.append(_cell(rec.result))
    return cells


def cli_sweep(raw: dict, workdir: Path) -> tuple[list[dict], str]:
    """(d): `python -m lrsweep run` with every default, in a fresh process."""
    import yaml

    cfg = workdir / "bench.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = workdir / "runs"
    proc = subprocess.run([sys.executable, "-m", "lrsweep", "run", str(cfg), "--out", str(out)],
                          capture_output=True, text=True, cwd=str(REPO))
    if proc.returncode != 0:
        raise RuntimeError(f"lrsweep run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    cells = []
    for run_dir in sorted((out / raw["name"]).iterdir()):
        res = run_dir / "result.json"
        if res.is_file():
            cells.append(_cell(json.loads(res.read_text())))
    return cells, proc.stdout[-3000:]


# --------------------------------------------------------------------------- the options, per member-step


def engine_options(raw: dict, grid: BenchGrid, members: int = 8, log: Callable[[str], None] = print) -> dict:
    """Per member-step training time of each way lrsweep could train cnn5 on this device, at each
    batch size (a few steps each, on the bench data), and the evaluation batch size. What
    `engine: auto` and the defaults were chosen from; slow options are shown, not hidden."""
    import copy as _copy

    from lrsweep.config import parse_run_config
    from lrsweep.datasets import load_data
    from lrsweep.training.sequential import evaluate, resolve_device, train
    from lrsweep.training.vectorized import train_group

    base = {k: v for k, v in _copy.deepcopy(raw).items() if k != "sweep"}
    base["dataset"]["val_subset"] = 256  # train.train evaluates at its last step: keep that cheap
    dev = resolve_device(base["train"]["device"])
    data = load_data(parse_run_config(base).dataset, dev)
    threads = torch.get_num_threads()

    def cfg(B, steps, cl, lr=0.01):
        d = _copy.deepcopy(base)
        d["train"].update(batch_size=B, steps=steps, channels_last=cl, eval_every=10 ** 9)
        d["train"].pop("epochs", None)
        d["optimizer"]["lr"] = lr
        return parse_run_config(d)

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return time.perf_counter() - t0

    options = [(f"sequential, {threads} threads", threads, False, None),
                (f"sequential, {threads} threads, channels_last", threads, True, None),
                ("sequential, 1 thread, channels_last", 1, True, None),
                (f"vectorized vmap x{members}", threads, False, "vmap"),
                (f"vectorized threads x{members}, channels_last", threads, True, "threads")]
    if dev.type == "cuda":
        options = [o for o in options if o[1] == threads and "threads x" not in o[0]]
    rows = []
    try:
        for B in grid.batch_sizes:
            steps = max(3, 768 // B)
            for name, n_thr, cl, form in options:
                torch.set_num_threads(n_thr)
                if form is None:
                    train(cfg(B, 2, cl), data, dev)  # warm-up: kernels, allocator
                    dt = timed(lambda: train(cfg(B, steps, cl), data, dev)) / steps
                else:
                    group = lambda n: [cfg(B, n, cl, lr=0.01 * (1 + i)) for i in range(members)]  # noqa: E731
                    train_group(group(2), data, dev, formulation=form)
                    dt = timed(lambda: train_group(group(steps), data, dev, formulation=form)) / steps / members
                rows.append({"batch_size": B, "option": name, "ms_per_member_step": 1e3 * dt})
                log(f"  B={B} {name}: {1e3 * dt:.1f} ms per member-step")
        torch.set_num_threads(threads)
        from lrsweep.models import build_model
        model = build_model(parse_run_config(base).model, data.input_shape, data.num_classes).to(dev)
        full = load_data(parse_run_config({**base, "dataset": {**base["dataset"], "val_subset": None}}).dataset, dev)
        evals = []
        for eb in (256, 1000):
            for cl in (False, True):
                m = model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
                evaluate(m, full, full.val_x[:eb], full.val_y[:eb], eb, cl)
                dt = timed(lambda: evaluate(m, full, full.val_x, full.val_y, eb, cl))
                evals.append({"eval_batch_size": eb, "channels_last": cl, "s_per_10k": dt * 10000 / len(full.val_y)})
                log(f"  eval batch {eb}{', channels_last' if cl else ''}: {dt * 10000 / len(full.val_y):.2f} s per 10k")
    finally:
        torch.set_num_threads(threads)
    return {"train": rows, "eval": evals, "members": members, "threads": threads}


# --------------------------------------------------------------------------- measuring


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
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    a @ b
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(4 if device.type == "cuda" else 1):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        k = 4 if device.type == "cuda" else 1
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


def machine_info(device: torch.device) -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu": _cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        info["load_average_before"] = os.getloadavg()
    except OSError:
        pass
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# --------------------------------------------------------------------------- the benchmark


def run_bench(grid: BenchGrid = FULL, variants: tuple[str, ...] = VARIANTS, data_root: Optional[str | Path] = None,
              device: str = "auto", out: Optional[str | Path] = "bench.json",
              log: Callable[[str], None] = print, peak_seconds: float = 1.5) -> dict:
    from lrsweep.models import count_flops
    from lrsweep.training.sequential import resolve_device

    unknown = [v for v in variants if v not in VARIANTS + EXTRA_VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; expected some of {VARIANTS + EXTRA_VARIANTS}")
    dev = resolve_device(device)
    tmp = Path(tempfile.mkdtemp(prefix="lrsweep-bench-"))
    try:
        root = find_mnist(data_root)
        source = "MNIST" if root else "generated MNIST-shaped data (../shared/datasets/MNIST not found)"
        if root is None:
            log("MNIST not found: generating IDX files of the same shape")
            root = write_fake_mnist(tmp / "data")
        n_test = grid.test_subset or 10000
        fwd = count_flops(Net(), (1, 28, 28))
        report: dict = {"grid": {**asdict(grid), "lrs": grid.lrs, "runs": len(grid.cells)},
                        "data": {"root": str(root), "source": source, "n_test": n_test},
                        "machine": machine_info(dev), "model_forward_flops": fwd, "variants": {}}
        log(f"machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, torch "
            f"{torch.__version__}, device {dev}" + (f" ({report['machine'].get('gpu')})" if dev.type == "cuda" else ""))
        peaks = [peak_flop_s(dev, peak_seconds)]
        report["matmul_peak_flop_s"] = peak = peaks[0]["peak"]
        log(f"fp32 matmul peak: {peak / 1e9:.0f} GFLOP/s")
        raw = sweep_raw(root, grid, "cuda" if dev.type == "cuda" else "cpu")

        if "options" in variants:
            log("[options] per member-step times ...")
            t0 = time.perf_counter()
            report["options"] = engine_options(raw, grid, log=log)
            report["options"]["wall_s"] = time.perf_counter() - t0
        for v in [v for v in variants if v in VARIANTS]:
            log(f"[{v}] {len(grid.cells)} runs ...")
            t0 = time.perf_counter()
            extra = {}
            if v == "plain":
                cells = plain_sweep(root, grid, dev)
            elif v in ("sequential", "vectorized"):
                cells = engine_sweep(raw, v)
            else:
                cells, tail = cli_sweep(raw, tmp)
                extra["stdout_tail"] = tail
            wall = time.perf_counter() - t0
            flops = cell_flops(cells, fwd, n_test)
            report["variants"][v] = {"wall_s": wall, "runs_per_hour": len(cells) * 3600 / wall,
                                     "flops": flops, "flop_s": flops / wall, "peak_fraction": flops / wall / peak,
                                     "cells": sorted(cells, key=lambda c: (c["batch_size"], c["lr"])), **extra}
            log(f"[{v}] {wall:.1f} s, {flops / wall / 1e9:.1f} GFLOP/s")

        peaks.append(peak_flop_s(dev, peak_seconds))  # again at the end: the better of the two is the peak
        report["matmul_peaks"] = peaks
        report["matmul_peak_flop_s"] = peak = max(p["peak"] for p in peaks)
        for r in report["variants"].values():
            r["peak_fraction"] = r["flop_s"] / peak
        V = report["variants"]
        if "plain" in V:
            report["speedup_vs_plain"] = {v: V["plain"]["wall_s"] / V[v]["wall_s"] for v in V}
        if "vectorized" in V:
            report["ratios"] = {f"{v}/vectorized": V[v]["wall_s"] / V["vectorized"]["wall_s"] for v in V}
        ref = "sequential" if "sequential" in V else next(iter(V), None)
        # Tolerances: float rounding alone (1 vs 2 threads, channels_last or not) moves a cell's
        # accuracy by up to ~0.02-0.03 after 256 momentum steps near the edge of stability; the
        # plain loop also has another data order and normalization.
        report["agreement"] = {v: agreement(V[ref]["cells"], V[v]["cells"], tol=0.05 if v == "plain" else 0.03)
                               for v in V if v != ref}
        report["agreement_reference"] = ref
        try:
            report["machine"]["load_average_after"] = os.getloadavg()
        except OSError:
            pass
        if out:
            Path(out).write_text(json.dumps(report, indent=2, default=float) + "\n")
        return report
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def table_rows(report: dict) -> list[dict]:
    """One row per variant, for the CLI table."""
    rows = []
    V, peak = report["variants"], report["matmul_peak_flop_s"]
    sp = report.get("speedup_vs_plain", {})
    ag, ref = report.get("agreement", {}), report.get("agreement_reference")
    for v, r in V.items():
        a = ag.get(v)
        if v == ref:
            acc = "reference"
        elif a is None or a["max_abs_diff"] is None:
            acc = "n/a"
        else:
            acc = f"max |Δacc| {a['max_abs_diff']:.3f} over {a['cells']}" + ("" if a["agree"] else " (!)")
        rows.append({"variant": v, "wall s": r["wall_s"], "runs/hour": r["runs_per_hour"],
                     "speed-up vs plain": sp.get(v, float("nan")),
                     "GFLOP/s": r["flop_s"] / 1e9, "% of matmul peak": 100 * r["flop_s"] / peak,
                     f"accuracy vs {ref}": acc})
    return rows


def options_rows(report: dict):
    """The options as a table: one row per option, one column per batch size."""
    import pandas as pd

    o = report["options"]
    df = pd.DataFrame(o["train"]).pivot(index="option", columns="batch_size", values="ms_per_member_step")
    order = list(dict.fromkeys(r["option"] for r in o["train"]))
    df = df.loc[order]
    df.columns = [f"B={b}" for b in df.columns]
    return df.reset_index()


def eval_line(report: dict) -> str:
    return "evaluation, s per 10k examples: " + ", ".join(
        f"batch {e['eval_batch_size']}{' channels_last' if e['channels_last'] else ''} {e['s_per_10k']:.2f}"
        for e in report["options"]["eval"])
