"""`make gpu-check`: the checks and figures that need a CUDA GPU, as one prepared command.

Runs, in order, stopping at nothing (each step's failure is recorded and the next one runs):
1. the CUDA tests (`pytest -m cuda`: vectorized vs sequential on CUDA in fp32, bf16 autocast,
   torch.compile, out-of-memory halving forced with a memory fraction, two pinned workers,
   checkpoint resume, host syncs per step);
2. `lrsweep bench --device cuda` (plain PyTorch loop vs lrsweep's engines; the ratio and
   GFLOP/s against the measured matmul peak);
3. a timing of document 003's Fashion-MNIST CNN grid (configs/o11-fashion-mnist.full.yaml) on
   generated data of the real shape: each sampled batch size's group (its 10 LRs, one stacked
   model) for a few hundred steps, projected to the full grid at its 10-epoch budget (an upper
   bound: stop_after_target ends most runs sooner).
Writes one JSON file (default gpu-check.json) with every figure and the GPU model, and returns
a short table; `python -m lrsweep.benchmark.gpu_check [--out F] [--quick]`.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

O11 = Path("configs") / "o11-fashion-mnist.full.yaml"
SAMPLE_SIZES = (1, 12, 64, 1164)  # spans the grid's batch sizes (1 ... 12 and 64 ... 1164)


def _run(cmd: list[str], timeout: float) -> dict:
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        out, rc = (p.stdout + p.stderr)[-4000:], p.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = f"timed out after {timeout:.0f} s: {(e.stdout or '')[-2000:]}", 124
    return {"command": " ".join(cmd), "returncode": rc, "wall_s": round(time.perf_counter() - t0, 1), "tail": out}


def cuda_tests(timeout: float = 240) -> dict:
    res = _run([sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-m", "cuda", "tests", "-p", "no:cacheprovider"],
               timeout)  # addopts cleared: the project's -q plus this -q would hide the summary line
    last = [ln for ln in res["tail"].splitlines() if any(w in ln for w in (" passed", " failed", " error", " skipped"))]
    res["summary"] = last[-1] if last else ""
    return res


def bench(out_dir: Path, quick: bool, timeout: float = 300) -> dict:
    path = out_dir / "bench-cuda.json"
    res = _run([sys.executable, "-m", "lrsweep", "bench", "--device", "cuda", "--out", str(path),
                "--variants", "plain,sequential,vectorized,auto", *(["--quick"] if quick else [])], timeout)
    if path.is_file():
        report = json.loads(path.read_text())
        res["speedup_vs_plain"] = report.get("speedup_vs_plain")
        res["matmul_peak_flop_s"] = report.get("matmul_peak_flop_s")
        res["gflop_s"] = {k: v.get("flop_s", 0) / 1e9 for k, v in report.get("variants", {}).items()}
    return res


def fashion_grid(data_root: Path, steps: int = 300, sizes=SAMPLE_SIZES) -> dict:
    """Time each sampled batch size's group and project the grid's 10-epoch budget from it."""
    import torch

    from lrsweep.benchmark.grid import write_fake_mnist
    from lrsweep.config.grid import load_sweep
    from lrsweep.datasets import load_data
    from lrsweep.training.setup import budget, resolve_device
    from lrsweep.training.units import effective_config
    from lrsweep.training.vectorized import train_group

    write_fake_mnist(data_root, folder="FashionMNIST")
    sweep = load_sweep(O11, [f"dataset.root={data_root}", "dataset.download=false", "train.checkpoint=none",
                             "train.device=cuda"])
    by_b: dict[int, list] = {}
    for r in sweep.runs:
        by_b.setdefault(r.config.train.batch_size, []).append(r.config)
    data = load_data(sweep.runs[0].config.dataset, resolve_device("cuda"))
    timed = {}
    for b in sizes:
        cfgs = [effective_config(c, "vectorized").model_copy(update={"train": c.train.model_copy(update={
            "steps": steps, "epochs": None, "target_train_loss": None, "stop_after_target": None,
            "eval_every": steps})}) for c in by_b[b]]
        train_group(cfgs[:1], data, torch.device("cuda"))  # warm-up: kernels, allocator
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        outs = train_group(cfgs, data, torch.device("cuda"))
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        full_steps = budget(by_b[b][0], len(data.train_y)).total_steps
        timed[b] = {"members": len(cfgs), "steps": steps, "wall_s": wall, "s_per_step": wall / steps,
                    "full_steps": full_steps, "statuses": sorted({str(o.status) for o in outs})}
    # Interpolate seconds per step over log B for the batch sizes not timed.
    logs = sorted((math.log(b), v["s_per_step"]) for b, v in timed.items())

    def per_step(b: int) -> float:
        x = math.log(b)
        for (x0, y0), (x1, y1) in zip(logs, logs[1:]):
            if x0 <= x <= x1:
                return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
        return logs[0][1] if x < logs[0][0] else logs[-1][1]

    projected = sum(per_step(b) * budget(cs[0], len(data.train_y)).total_steps for b, cs in by_b.items())
    return {"runs": len(sweep.runs), "groups": len(by_b), "timed": timed, "projected_full_grid_s": projected,
            "note": "upper bound: every run at its full 10-epoch budget; stop_after_target stops most runs sooner"}


def gpu_check(out: Path = Path("gpu-check.json"), quick: bool = False,
              log: Optional[Callable[[str], None]] = None) -> dict:
    import torch

    log = log or (lambda m: None)
    report: dict = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        report["gpu"] = torch.cuda.get_device_name(0)
        report["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    steps = [("cuda_tests", lambda: cuda_tests()), ("bench", lambda: bench(out.parent, quick))]
    if torch.cuda.is_available():
        steps.append(("fashion_mnist_grid", lambda: fashion_grid(Path(tempfile.mkdtemp(prefix="lrsweep-gpu-")),
                                                                 steps=100 if quick else 300)))
    for name, fn in steps:
        log(f"[gpu-check] {name} ...")
        try:
            report[name] = fn()
        except Exception as e:  # noqa: BLE001 - a failing step is a finding; the next one runs
            report[name] = {"error": f"{type(e).__name__}: {e}"}
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")  # what is done so far survives
    return report


def table(report: dict) -> list[tuple[str, str]]:
    """(figure, value) rows for the terminal."""
    rows = [("GPU", report.get("gpu", "none (CUDA not available)")), ("torch", report["torch"])]
    t = report.get("cuda_tests", {})
    rows.append(("CUDA tests", t.get("summary") or t.get("error", "")))
    b = report.get("bench", {})
    for k, v in (b.get("speedup_vs_plain") or {}).items():
        rows.append((f"bench: {k} vs plain", f"{v:.2f}x"))
    f = report.get("fashion_mnist_grid", {})
    if "projected_full_grid_s" in f:
        rows.append(("O11 Fashion-MNIST grid (projected, upper bound)", f"{f['projected_full_grid_s'] / 60:.1f} min"))
        for bsz, v in f["timed"].items():
            rows.append((f"  B={bsz}: {v['members']} members", f"{1e3 * v['s_per_step']:.2f} ms/step"))
    elif "error" in f:
        rows.append(("O11 Fashion-MNIST grid", f["error"]))
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("gpu-check.json"))
    ap.add_argument("--quick", action="store_true", help="the quick bench grid and 100-step timings")
    args = ap.parse_args(argv)
    report = gpu_check(args.out, args.quick, log=lambda m: print(m, file=sys.stderr, flush=True))
    width = max(len(k) for k, _ in table(report))
    for k, v in table(report):
        print(f"{k:<{width}}  {v}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
