"""Engine choice and grouping: which runs train together, `engine: auto` per device, the same
files and numbers from both engines through the sweep driver, and the CLI/bench entry points."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from lrsweep.training import units as engine_mod
from lrsweep import sweep as sweep_mod
from lrsweep.cli import app
from lrsweep.errors import ConfigError
from lrsweep.config.grid import build_sweep, run_id

from conftest import make_config


def specs(**changes):
    return build_sweep(make_config(**changes)).runs


def groups(runs, engine=None):
    """Run ids per work unit (the engine is decided once, in plan_units)."""
    return [[s.run_id for s in u.specs] for u in engine_mod.plan_units(runs, engine=engine)]


def ids(runs):
    return [r.run_id for r in runs]


def test_auto_trains_alone_on_the_cpu():
    runs = specs()
    assert engine_mod.resolve_engine(runs[0].config) == "sequential"
    assert groups(runs) == [[r] for r in ids(runs)]
    assert groups(runs, "sequential") == [[r] for r in ids(runs)]
    assert {u.engine for u in engine_mod.plan_units(runs)} == {engine_mod.Engine.SEQUENTIAL}


def test_vectorized_groups_share_everything_but_scalars():
    runs = specs(sweep={"batch_size": [16, 32], "lr": [0.01, 0.1], "seed": [0, 1],
                        "optimizer.momentum": [0.0, 0.9]})
    units = engine_mod.plan_units(runs, engine="vectorized")
    assert sorted(len(u.specs) for u in units) == [8, 8]  # one group per batch size
    for u in units:
        assert len({s.config.train.batch_size for s in u.specs}) == 1 and u.engine == "vectorized"
    assert sorted(s.run_id for u in units for s in u.specs) == sorted(r.run_id for r in runs)
    # the config's train.engine does the same when the argument is auto
    runs_cfg = specs(sweep={"lr": [0.01, 0.1, 0.3]}, **{"train.engine": "vectorized"})
    assert [len(g) for g in groups(runs_cfg)] == [3]
    # ... and the argument wins over the config
    assert [len(g) for g in groups(runs_cfg, "sequential")] == [1, 1, 1]


@pytest.mark.parametrize("axis,values", [
    ("model.name", ["mlp", "cnn5"]), ("optimizer.name", ["sgd", "adam"]), ("optimizer.nesterov", [False, True]),
    ("schedule.name", ["constant", "cosine"]), ("train.steps", [10, 20]), ("train.eval_every", [5, 10]),
    ("dataset.train_subset", [128, 256]),
])
def test_structural_differences_split_groups(axis, values):
    runs = specs(sweep={axis: values, "lr": [0.01, 0.1]}, **{"train.engine": "vectorized"})
    assert sorted(len(g) for g in groups(runs)) == [2, 2]


def test_adafactor_and_checkpointing_runs_train_alone_and_max_members_chunks():
    runs = specs(sweep={"lr": [0.01, 0.1]}, **{"train.engine": "vectorized", "optimizer.name": "adafactor"})
    assert [len(g) for g in groups(runs)] == [1, 1]
    assert engine_mod.resolve_engine(runs[0].config) == "sequential"
    runs = specs(sweep={"lr": [0.01, 0.1]}, **{"train.engine": "vectorized", "train.checkpoint": "epoch"})
    assert [len(g) for g in groups(runs)] == [1, 1]
    runs = specs(sweep={"lr": [0.01, 0.02, 0.03, 0.1, 0.3]}, **{"train.engine": "vectorized", "train.max_members": 2})
    assert [len(g) for g in groups(runs)] == [2, 2, 1]


def test_engine_options_do_not_change_run_ids_but_precision_does():
    base = make_config(sweep={"lr": [0.1]})
    ids = {build_sweep(base).runs[0].run_id}
    for opt in ("train.engine=vectorized", "train.max_members=3", "train.compile=true", "train.channels_last=true",
                "train.channels_last=false", "train.precision=fp32"):
        ids.add(build_sweep(base, [opt]).runs[0].run_id)
    assert len(ids) == 1
    bf16 = build_sweep(base, ["train.precision=bf16", "train.engine=vectorized"]).runs[0]
    assert bf16.run_id not in ids and run_id(bf16.config) == bf16.run_id


def test_bf16_needs_the_vectorized_engine():
    (spec,) = specs(sweep={"lr": [0.1]}, **{"train.precision": "bf16"})
    assert engine_mod.resolve_engine(spec.config) == "vectorized"  # auto picks the engine that has it
    with pytest.raises(ConfigError, match="train.precision"):
        engine_mod.resolve_engine(spec.config, "sequential")


def test_channels_last_default_is_per_device(monkeypatch):
    (mlp,) = specs(sweep={"lr": [0.1]})
    (cnn,) = specs(sweep={"lr": [0.1]}, **{"model.name": "cnn5"})
    assert cnn.config.train.channels_last is None
    assert engine_mod.effective_config(cnn.config, "sequential").train.channels_last is True
    assert engine_mod.effective_config(cnn.config, "vectorized").train.channels_last is True
    gpu = cnn.config.model_copy(update={"train": cnn.config.train.model_copy(update={"device": "cuda"})})
    monkeypatch.setattr(engine_mod, "resolve_device", lambda name: __import__("torch").device(name))
    assert engine_mod.effective_config(gpu, "vectorized").train.channels_last is False
    assert engine_mod.effective_config(mlp.config, "sequential").train.channels_last is False
    forced = build_sweep(make_config(sweep={"lr": [0.1]}, **{"model.name": "cnn5", "train.channels_last": False})).runs[0]
    assert engine_mod.effective_config(forced.config, "sequential").train.channels_last is False


def _sweep_files(out_dir: Path) -> dict:
    return {p.name: sorted(f.name for f in p.iterdir()) for p in out_dir.iterdir() if p.is_dir()}


def test_both_engines_write_the_same_files_and_numbers_through_the_driver(tmp_path):
    raw = make_config(sweep={"lr": [0.01, 0.1, 60.0], "seed": [0, 1]}, **{"train.steps": 20})
    seq = sweep_mod.run_sweep(build_sweep(raw), tmp_path / "seq", engine="sequential")
    vec = sweep_mod.run_sweep(build_sweep(raw), tmp_path / "vec", engine="vectorized")
    assert _sweep_files(seq.sweep_dir) == _sweep_files(vec.sweep_dir)
    assert seq.counts == vec.counts and vec.counts.get("diverged") == 2
    a = pd.read_csv(seq.sweep_dir / "runs.csv").set_index("run_id").sort_index()
    b = pd.read_csv(vec.sweep_dir / "runs.csv").set_index("run_id").sort_index()
    assert list(a.columns) == list(b.columns)
    assert (a.status == b.status).all() and (a.steps == b.steps).all()
    done = a.status == "complete"
    assert (abs(a.final_val_acc[done] - b.final_val_acc[done]) <= 1 / 128 + 1e-9).all()
    for rid in a.index:
        for f in ("metrics.csv", "evals.csv"):
            ma, mb = pd.read_csv(seq.sweep_dir / rid / f), pd.read_csv(vec.sweep_dir / rid / f)
            assert list(ma.columns) == list(mb.columns) and list(ma.step) == list(mb.step)
        ra = json.loads((seq.sweep_dir / rid / "result.json").read_text())
        rb = json.loads((vec.sweep_dir / rid / "result.json").read_text())
        assert set(ra) == set(rb) and (ra["engine"], rb["engine"]) == ("sequential", "vectorized")
    # resume is per run: a finished run is kept, an unfinished one redone (by itself)
    victim = a.index[0]
    (vec.sweep_dir / victim / "result.json").unlink()
    again = sweep_mod.run_sweep(build_sweep(raw), tmp_path / "vec", engine="vectorized")
    assert again.skipped == 5 and sum(again.counts.values()) == 1


def test_a_failing_group_fails_its_runs_and_the_sweep_goes_on(tmp_path, monkeypatch):
    from lrsweep.training import vectorized

    def boom(*a, **k):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(vectorized, "train_group", boom)
    out = sweep_mod.run_sweep(build_sweep(make_config(sweep={"lr": [0.01, 0.1]})), tmp_path, engine="vectorized")
    assert out.counts == {"failed": 2}
    errors = {json.loads(p.read_text())["error"] for p in out.sweep_dir.glob("*/result.json")}
    assert errors == {"RuntimeError: CUDA out of memory (simulated)"}


def test_cli_engine_and_max_members_options(tmp_path, write_config):
    cfg = write_config(sweep={"lr": [0.01, 0.1, 0.3]}, **{"train.steps": 6, "train.eval_every": 3})
    res = CliRunner().invoke(app, ["run", str(cfg), "--out", str(tmp_path / "o"), "--workers", "1",
                                   "--engine", "vectorized", "--max-members", "2"])
    assert res.exit_code == 0, res.output
    results = [json.loads(p.read_text()) for p in (tmp_path / "o" / "tiny").glob("*/result.json")]
    assert len(results) == 3 and {r["engine"] for r in results} == {"vectorized"}
    assert sorted(r["group_size"] for r in results) == [1, 2, 2]
    bad = CliRunner().invoke(app, ["run", str(cfg), "--out", str(tmp_path / "o"), "--engine", "fast"])
    assert bad.exit_code == 2 and "--engine" in bad.output


def test_bench_on_a_tiny_grid_writes_its_report(tmp_path):
    from lrsweep import benchmark as bench

    root = bench.write_fake_mnist(tmp_path / "data", n_train=600, n_test=200)
    grid = bench.BenchGrid(batch_sizes=(32,), n_lr=2, lr_min=0.01, lr_max=0.1, train_subset=256, test_subset=100)
    report = bench.run_bench(grid, ("plain", "sequential", "vectorized"), data_root=root, device="cpu",
                             out=tmp_path / "bench.json", log=lambda m: None, peak_seconds=0.05)
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert set(saved["variants"]) == {"plain", "sequential", "vectorized"}
    for v in saved["variants"].values():
        assert len(v["cells"]) == 2 and v["wall_s"] > 0 and v["flop_s"] > 0
        assert all(c["steps"] == 8 for c in v["cells"])
    assert saved["matmul_peak_flop_s"] > 0 and "plain/vectorized" in saved["ratios"]
    assert report["agreement"]["vectorized"]["one_sided_divergence"] == []
    rows = bench.table_rows(report)
    assert [r["variant"] for r in rows] == ["plain", "sequential", "vectorized"]
    table, *lines = bench.summary(report, tmp_path / "bench.json")  # what `lrsweep bench` prints
    assert isinstance(table, bench.Table) and list(table.frame["variant"]) == ["plain", "sequential", "vectorized"]
    assert table.title.startswith("2 runs: B (32,) x 2 LRs, 256 examples, 100 test")
    assert lines[0].startswith("wall-time ratios: plain/sequential") and lines[-1].endswith(f"wrote {tmp_path / 'bench.json'}")
