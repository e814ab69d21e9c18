"""Variants `sequential`, `vectorized` and `auto`: the grid trained by lrsweep.

- `sequential` / `vectorized`: that engine in this process, unit after unit, as the inline
  executor runs them (training/units.py: plan_units with the engine forced, then train_unit).
- `auto`: `python -m lrsweep run` with every default (engine auto, the default executor) in a
  fresh process of this interpreter, start-up and run folders included: what a user waits for.
  Its sweep file and runs live in a temp folder; it needs lrsweep installed, not a checkout.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lrsweep.benchmark.grid import BenchGrid
from lrsweep.results import RunStatus


def sweep_raw(root: Path, grid: BenchGrid, device: str) -> dict:
    """The grid as an lrsweep sweep file (a dict)."""
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


def cell(result: dict) -> dict:
    """A run's result.json as a bench cell (plain.py's keys)."""
    acc = result.get("final_val_acc")
    evaluated = result.get("status") == RunStatus.COMPLETE.value
    return {"batch_size": result["batch_size"], "lr": result["nominal_lr"],
            "val_acc": acc if acc is not None and evaluated else float("nan"),
            "steps": result.get("steps"), "status": result.get("status"), "evaluated": evaluated}


def engine_sweep(raw: dict, engine: str) -> list[dict]:
    """The grid trained by one engine ('sequential' or 'vectorized') in this process."""
    from lrsweep.config.grid import build_sweep
    from lrsweep.datasets import clear_cache
    from lrsweep.training.units import plan_units, train_unit

    clear_cache()  # each variant pays its own data loading
    return [cell(rec.result.to_dict())
            for unit in plan_units(build_sweep(raw).runs, None, engine) for rec in train_unit(unit)]


def cli_sweep(raw: dict, workdir: Path) -> tuple[list[dict], str]:
    """`python -m lrsweep run` with every default, in a fresh process working in `workdir`;
    the cells and the end of its output."""
    import yaml

    cfg = workdir / "bench.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = workdir / "runs"
    proc = subprocess.run([sys.executable, "-m", "lrsweep", "run", str(cfg), "--out", str(out)],
                          capture_output=True, text=True, cwd=str(workdir))
    if proc.returncode != 0:
        raise RuntimeError(f"lrsweep run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    cells = []
    for run_dir in sorted((out / raw["name"]).iterdir()):
        res = run_dir / "result.json"
        if res.is_file():
            cells.append(cell(json.loads(res.read_text())))
    return cells, proc.stdout[-3000:]
