"""The reproduction configs (configs/o*.yaml, docs/reproductions.md): every one plans, the
document grids are the documents' grids, and every small variant trains for a few steps.

Small variants read real MNIST from ../shared/datasets (skipped cleanly where it is absent);
full variants download their data (`download: true`), so `plan` accepts them without it.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from lrsweep.cli import app
from lrsweep.config.grid import load_sweep

from conftest import SHARED_DATASETS

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("o*.yaml"))
SMALL = [p for p in CONFIGS if p.name.endswith(".small.yaml")]
FULL = [p for p in CONFIGS if p.name.endswith(".full.yaml")]
HAVE_MNIST = (SHARED_DATASETS / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()
BUDGETS = ("epochs", "steps", "examples")


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO)  # dataset roots in the configs are relative to the repository root


def _raw(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _needs_mnist(path: Path) -> bool:
    return _raw(path)["dataset"]["name"] == "mnist"


def _id(p: Path) -> str:
    return p.name.removesuffix(".yaml")


def test_every_observation_has_both_variants():
    small = {p.name.removesuffix(".small.yaml") for p in SMALL}
    full = {p.name.removesuffix(".full.yaml") for p in FULL}
    # o11's full scale is two workloads (o11-fashion-mnist, o11-tiny-imagenet)
    assert {s for s in small if not any(f == s or f.startswith(s + "-") for f in full)} == set()
    for o in ("o1", "o2", "o3", "o4", "o5", "o6", "o7", "o8", "o9", "o10", "o11", "o12"):
        assert o in small, o
        assert any(f == o or f.startswith(o + "-") for f in full), o


@pytest.mark.parametrize("path", CONFIGS, ids=_id)
def test_config_starts_with_its_comment_block(path):
    head = path.read_text().splitlines()[:4]
    assert all(line.startswith("#") for line in head), head
    text = " ".join(line for line in path.read_text().lower().splitlines() if line.startswith("#"))
    assert re.search(r"documents? 00\d", text), "which document"
    assert "time" in text and "2-core cpu" in text and "gpu" in text, "how long on a CPU and on a GPU"
    assert _raw(path)["name"] == path.name.removesuffix(".yaml").replace(".", "-")


@pytest.mark.parametrize("path", CONFIGS, ids=_id)
def test_plan(path, tmp_path):
    args = ["plan", str(path), "--out", str(tmp_path)]
    if _needs_mnist(path) and not _raw(path)["dataset"].get("download") and not HAVE_MNIST:
        args += ["--set", "dataset.download=true"]  # plan checks the files exist unless downloading
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "runs, 0 finished" in r.output


def _grid(name: str) -> pd.DataFrame:
    sweep = load_sweep(REPO / "configs" / name)
    return pd.DataFrame([{"B": r.config.train.batch_size, "lr": r.config.optimizer.lr,
                          "effective_lr": r.config.effective_lr, "cfg": r.config} for r in sweep.runs])


def test_document_003_grids_are_as_listed():
    fm = _grid("o11-fashion-mnist.full.yaml")
    assert sorted(fm.B.unique()) == list(range(1, 13)) + list(range(64, 1165, 100))
    assert sorted(fm.lr.unique()) == pytest.approx([i * 1e-4 for i in range(1, 11)])
    assert len(fm) == 24 * 10 * 2  # the document's grid for each optimizer (O11's coarse pass)
    assert {tuple(c.optimizer.betas) for c in fm.cfg} == {(0.9, 0.999), (0.0, 0.0)}
    c = fm.cfg[0]
    assert (c.dataset.name, c.model.name, c.optimizer.name, tuple(c.optimizer.betas)) == \
        ("fashion-mnist", "cnn5", "adam", (0.9, 0.999))
    assert c.train.stop_after_target == 10
    ti = _grid("o11-tiny-imagenet.full.yaml")
    assert sorted(ti.B.unique()) == list(range(16, 377, 33))
    assert ti.lr.min() == pytest.approx(1e-4) and ti.lr.max() == pytest.approx(7.876e-4) and ti.lr.nunique() == 10
    c = ti.cfg[0]
    assert (c.dataset.name, c.dataset.epoch_subset, c.model.name, tuple(c.optimizer.betas)) == \
        ("tiny-imagenet", 10000, "resnet18", (0.0, 0.0))
    assert c.train.stop_after_target == 50


def test_document_004_matched_table_and_fixed_lr_arms():
    g = _grid("o12.full.yaml")
    matched = dict(zip([1, 2, 4, 8, 16, 32, 64, 128], [0.05, 0.1, 0.2, 0.5, 1, 1.5, 2, 4]))
    pairs = set(zip(g.B, g.lr))
    assert {(b, lr) for b, lr in matched.items()} <= pairs
    assert {(b, 0.05) for b in matched} <= pairs
    assert {(b, 0.5) for b in (1, 2, 4, 8, 10, 16, 20, 24, 28, 32, 36, 40, 48, 56, 64, 128)} <= pairs
    assert g.cfg[0].train.epochs == 500 and g.cfg[0].model.hidden == []


def test_document_001_and_000_002_settings():
    g = _grid("o8.full.yaml")
    assert g.B.min() == 1 and g.B.max() == 1000 and set(g.lr) == {0.02}
    c = g.cfg[0]
    assert (c.dataset.name, c.optimizer.momentum, c.train.target_val_accuracy) == ("mnist", 0.5, 0.98)
    policies = {r.config.schedule.name for r in load_sweep(REPO / "configs" / "o2.full.yaml").runs}
    assert policies == {"fixed", "step", "multistep", "exp", "inv", "poly", "sigmoid"}
    rec = _grid("o10.full.yaml")
    assert dict(zip(rec.B, rec.effective_lr)) == pytest.approx({256: 0.1, 512: 0.2, 1024: 0.4})
    assert {r.config.schedule.name for r in load_sweep(REPO / "configs" / "o10.full.yaml").runs} == {"step", "cosine"}
    assert rec.cfg[0].schedule.warmup_epochs == 5 and rec.cfg[0].train.epochs == 90


def _few_steps(path: Path, out: Path) -> Path:
    """The small config cut down to a smoke test: 3 steps per run, 512 validation images (MNIST), the
    smallest and largest batch size, the first and last entry of each zip group, the first value
    of every other axis."""
    raw = _raw(path)
    train = raw.setdefault("train", {})
    for k in BUDGETS:
        train.pop(k, None)
    train["steps"] = 3
    if raw["dataset"]["name"] == "mnist":
        raw["dataset"]["val_subset"] = 512
    ends = lambda v: v if len(v) <= 2 else [v[0], v[-1]]
    sweep = {}
    for name, spec in (raw.get("sweep") or {}).items():
        if name == "zip":
            # a budget zipped with B (o11's per-B step caps) goes: every run trains 3 steps here
            sweep["zip"] = [{k: ends(v) for k, v in z.items() if k.split(".")[-1] not in BUDGETS}
                            for z in (spec if isinstance(spec, list) else [spec])]
            continue
        values = spec
        if isinstance(spec, dict):  # a generator
            kind, (lo, hi, third) = next(iter(spec.items()))
            values = [lo, hi] if kind != "range" else [lo]
        sweep[name] = ends(values) if name in ("batch_size", "train.batch_size") else values[:1]
    raw["sweep"] = sweep
    assert not any(k.split(".")[-1] in BUDGETS for k in sweep), "a budget axis: adapt this test"
    f = out / path.name
    f.write_text(yaml.safe_dump(raw, sort_keys=False))
    return f


@pytest.mark.parametrize("path", SMALL, ids=_id)
def test_small_variant_trains_a_few_steps(path, tmp_path):
    if _needs_mnist(path) and not HAVE_MNIST:
        pytest.skip("real MNIST not found in ../shared/datasets")
    cfg = _few_steps(path, tmp_path)
    r = CliRunner().invoke(app, ["run", str(cfg), "--out", str(tmp_path / "runs"), "--workers", "1"])
    assert r.exit_code == 0, r.output
    index = pd.read_csv(tmp_path / "runs" / _raw(path)["name"] / "runs.csv")
    assert len(index) >= 1 and set(index.status) <= {"complete", "diverged"}, index[["status", "error"]]
    assert (index.status == "complete").any()
