"""Running the benchmark and reading its report: run_bench writes the JSON report; the other
functions turn it into the tables and lines `lrsweep bench` prints (the CLI only prints them).
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import pandas as pd
import torch

from lrsweep.benchmark.grid import DATA_ENV, FULL, VARIANTS, BenchGrid, check_variants, find_mnist, write_fake_mnist
from lrsweep.benchmark.measure import agreement, cell_flops, load_average, machine_info, peak_flop_s
from lrsweep.benchmark.options import engine_options
from lrsweep.benchmark.plain import Net, plain_sweep
from lrsweep.benchmark.variants import cli_sweep, engine_sweep, sweep_raw

Log = Callable[[str], None]
# Float rounding alone (1 vs 2 threads, channels_last or not) moves a cell's accuracy by up to
# ~0.02-0.03 after 256 momentum steps near the edge of stability; the plain loop also has
# another data order and normalization.
TOLERANCE = {"plain": 0.05}
DEFAULT_TOLERANCE = 0.03


def _quiet(message: str) -> None:
    """The default log: the library does not print."""


def _train_variant(v: str, root: Path, grid: BenchGrid, dev: torch.device, raw: dict, tmp: Path) -> tuple[list, dict]:
    if v == "plain":
        return plain_sweep(root, grid, dev), {}
    if v in ("sequential", "vectorized"):
        return engine_sweep(raw, v), {}
    cells, tail = cli_sweep(raw, tmp)
    return cells, {"stdout_tail": tail}


def _compare(report: dict, peaks: list[dict]) -> None:
    """Peak fractions against the better peak, speed-ups, ratios and accuracy agreement."""
    report["matmul_peaks"] = peaks
    report["matmul_peak_flop_s"] = peak = max(p["peak"] for p in peaks)
    V = report["variants"]
    for r in V.values():
        r["peak_fraction"] = r["flop_s"] / peak
    if "plain" in V:
        report["speedup_vs_plain"] = {v: V["plain"]["wall_s"] / V[v]["wall_s"] for v in V}
    if "vectorized" in V:
        report["ratios"] = {f"{v}/vectorized": V[v]["wall_s"] / V["vectorized"]["wall_s"] for v in V}
    ref = "sequential" if "sequential" in V else next(iter(V), None)
    report["agreement"] = {v: agreement(V[ref]["cells"], V[v]["cells"], tol=TOLERANCE.get(v, DEFAULT_TOLERANCE))
                           for v in V if v != ref}
    report["agreement_reference"] = ref


def run_bench(grid: BenchGrid = FULL, variants: tuple[str, ...] = VARIANTS, data_root: Optional[str | Path] = None,
              device: str = "auto", out: Optional[str | Path] = "bench.json",
              log: Log = _quiet, peak_seconds: float = 1.5) -> dict:
    """Train `grid` each way in `variants` (grid.py), time it, and return (and write to `out`)
    the report. `data_root`: a folder with MNIST/raw/ (default: grid.find_mnist's search)."""
    from lrsweep.models import count_flops
    from lrsweep.training.setup import resolve_device

    check_variants(tuple(variants))
    dev = resolve_device(device)
    tmp = Path(tempfile.mkdtemp(prefix="lrsweep-bench-"))
    try:
        root = find_mnist(data_root)
        source = "MNIST"
        if root is None:
            source = f"generated MNIST-shaped data (no data_root, ${DATA_ENV} or ../shared/datasets/MNIST)"
            log("MNIST not found: generating IDX files of the same shape")
            root = write_fake_mnist(tmp / "data")
        n_test = grid.test_subset or 10000
        fwd = count_flops(Net(), (1, 28, 28))
        report: dict = {"grid": {**asdict(grid), "lrs": grid.lrs, "runs": len(grid.cells)},
                        "data": {"root": str(root), "source": source, "n_test": n_test},
                        "machine": machine_info(dev), "model_forward_flops": fwd, "variants": {}}
        m = report["machine"]
        log(f"machine: {m['cpu']}, {m['cores']} cores, torch {torch.__version__}, device {dev}"
            + (f" ({m.get('gpu')})" if dev.type == "cuda" else ""))
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
            cells, extra = _train_variant(v, root, grid, dev, raw, tmp)
            wall = time.perf_counter() - t0
            flops = cell_flops(cells, fwd, n_test)
            report["variants"][v] = {"wall_s": wall, "runs_per_hour": len(cells) * 3600 / wall,
                                     "flops": flops, "flop_s": flops / wall, "peak_fraction": flops / wall / peak,
                                     "cells": sorted(cells, key=lambda c: (c["batch_size"], c["lr"])), **extra}
            log(f"[{v}] {wall:.1f} s, {flops / wall / 1e9:.1f} GFLOP/s")

        peaks.append(peak_flop_s(dev, peak_seconds))  # again at the end: the better of the two is the peak
        _compare(report, peaks)
        if (load := load_average()) is not None:
            report["machine"]["load_average_after"] = load
        if out:
            Path(out).write_text(json.dumps(report, indent=2, default=float) + "\n")
        return report
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- reading the report


@dataclass(frozen=True)
class Table:
    title: str
    frame: pd.DataFrame


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


def options_rows(report: dict) -> pd.DataFrame:
    """The options as a table: one row per option, one column per batch size."""
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


def ratios_line(report: dict) -> Optional[str]:
    """Wall-time ratios not already in the table (plain/x is its speed-up column)."""
    ratios = {**{f"plain/{k}": v for k, v in report.get("speedup_vs_plain", {}).items() if k != "plain"},
              **{k: v for k, v in report.get("ratios", {}).items() if not k.startswith(("plain/", "vectorized/"))}}
    return "wall-time ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()) if ratios else None


def peak_line(report: dict, out: Optional[str | Path] = None) -> str:
    peaks = " and ".join(", ".join(f"{k.replace('_', ' ')} {v / 1e9:.0f}" for k, v in p.items() if k not in ("peak", "threads"))
                         for p in report["matmul_peaks"])
    load = [report["machine"].get(k) for k in ("load_average_before", "load_average_after")]
    load = " / ".join(f"{x[0]:.1f}" if x else "?" for x in load)
    return (f"fp32 matmul peak {report['matmul_peak_flop_s'] / 1e9:.0f} GFLOP/s (best of {peaks} GFLOP/s at the "
            f"start and end; one thread x threads counts); 1-min load average before / after: {load}"
            + (f"; wrote {out}" if out else ""))


def summary(report: dict, out: Optional[str | Path] = None) -> list[Union[Table, str]]:
    """What `lrsweep bench` prints, in order: tables and lines."""
    g, m = report["grid"], report["machine"]
    blocks: list[Union[Table, str]] = []
    if "options" in report:
        blocks += [Table(f"engine options: ms per member-step (cnn5, {m['device']})", options_rows(report)),
                   eval_line(report)]
    if report["variants"]:
        blocks.append(Table(f"{g['runs']} runs: B {g['batch_sizes']} x {g['n_lr']} LRs, {g['train_subset']} examples, "
                            f"{report['data']['n_test']} test; {m['cpu']} ({m['device']})",
                            pd.DataFrame(table_rows(report))))
    if (line := ratios_line(report)) is not None:
        blocks.append(line)
    blocks.append(peak_line(report, out))
    return blocks
