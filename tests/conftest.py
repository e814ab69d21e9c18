"""Shared fixtures: small sweep files on the generated `synthetic` dataset (no downloads)."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

# In-process runs unless a test asks for workers: spawning processes for each tiny sweep costs seconds.
os.environ.setdefault("LRSWEEP_WORKERS", "1")

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"

BASE = {
    "name": "tiny",
    "dataset": {"name": "synthetic", "synthetic": {"n_train": 256, "n_val": 128, "classes": 4, "shape": [1, 8, 8]}},
    "model": {"name": "mlp", "hidden": [32]},
    "optimizer": {"name": "sgd", "momentum": 0.9},
    "train": {"steps": 20, "eval_every": 10, "seed": 0, "device": "cpu"},
    "sweep": {"batch_size": [16, 32], "lr": [0.01, 0.1]},
}


def apply_changes(raw: dict, changes: dict) -> dict:
    """Set dotted keys in a nested dict, in place ({"train.steps": 5}); None removes the key."""
    for key, value in changes.items():
        node = raw
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = value
    return raw


def make_config(**changes) -> dict:
    """BASE with dotted-key changes, e.g. make_config(**{"train.steps": 5})."""
    return apply_changes(copy.deepcopy(BASE), changes)


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` run where a GPU is (make gpu-check) and are skipped elsewhere (CI)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (make gpu-check runs these where one is)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """Tiny models are fastest, and steadiest on a busy machine, on one thread."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def write_config(tmp_path):
    def write(raw: dict | None = None, name: str = "sweep.yaml", **changes) -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(raw if raw is not None else make_config(**changes), sort_keys=False))
        return path
    return write
