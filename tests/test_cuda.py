"""The CUDA path, run by `make gpu-check` where a GPU is (every test here is marked `cuda` and is
skipped without one): the engines agree on CUDA, bf16 and torch.compile run, out-of-memory
halves a group, pinned workers, checkpoint resume, and no host sync per step."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch

from lrsweep.config import parse_run_config
from lrsweep.datasets import load_data
from lrsweep.training.sequential import train
from lrsweep.training.vectorized import loop as vectorized_loop
from lrsweep.training.vectorized import train_group

from conftest import apply_changes, make_config

pytestmark = pytest.mark.cuda
GPU = torch.device("cuda")
BASE = {
    "name": "cuda",
    "dataset": {"name": "synthetic", "synthetic": {"n_train": 512, "n_val": 128, "classes": 4, "shape": [1, 8, 8]}},
    "model": {"name": "mlp", "hidden": [64]},
    "optimizer": {"name": "sgd", "momentum": 0.9},
    "train": {"steps": 40, "batch_size": 32, "eval_every": 20, "device": "cuda", "seed": 0},
}


def cfg(**changes):
    return parse_run_config(apply_changes(copy.deepcopy(BASE), changes))


def test_vectorized_matches_sequential_on_cuda_in_fp32():
    cfgs = [cfg(**{"optimizer.lr": lr, "train.seed": s}) for lr, s in ((0.01, 0), (0.05, 1), (0.1, 0))]
    data = load_data(cfgs[0].dataset, GPU)
    outs = train_group(cfgs, data, GPU)
    for c, out in zip(cfgs, outs):
        ref = train(c, data, GPU)
        assert (out.status, out.summary["steps"]) == (ref.status, ref.summary["steps"])
        assert out.metrics["train_loss"] == pytest.approx(ref.metrics["train_loss"], rel=1e-3)
        assert out.summary["device"].startswith("cuda")


def test_bf16_autocast_trains_close_to_fp32():
    c32, c16 = cfg(**{"optimizer.lr": 0.05}), cfg(**{"optimizer.lr": 0.05, "train.precision": "bf16"})
    data = load_data(c32.dataset, GPU)
    (a,), (b,) = train_group([c32], data, GPU), train_group([c16], data, GPU)
    assert b.status == "complete" and all(map(torch.isfinite, map(torch.tensor, b.metrics["train_loss"])))
    assert b.metrics["train_loss"][-1] == pytest.approx(a.metrics["train_loss"][-1], rel=0.1)


def test_torch_compile_gives_the_eager_numbers(monkeypatch):
    monkeypatch.setattr(vectorized_loop, "default_formulation", lambda device: "vmap")
    eager = [cfg(**{"optimizer.lr": lr}) for lr in (0.01, 0.05)]
    compiled = [cfg(**{"optimizer.lr": lr, "train.compile": True}) for lr in (0.01, 0.05)]
    data = load_data(eager[0].dataset, GPU)
    for a, b in zip(train_group(eager, data, GPU), train_group(compiled, data, GPU)):
        assert a.summary["steps"] == b.summary["steps"]
        assert a.metrics["train_loss"] == pytest.approx(b.metrics["train_loss"], rel=1e-3)


def test_out_of_memory_halves_the_group_and_every_run_completes(monkeypatch):
    big = {"model.hidden": [4096, 4096], "dataset.synthetic.shape": [1, 32, 32], "train.steps": 4, "train.eval_every": 4}
    cfgs = [cfg(**big, **{"optimizer.lr": 0.001 * (i + 1)}) for i in range(32)]
    data = load_data(cfgs[0].dataset, GPU)
    sizes = []
    real = vectorized_loop._train_chunk

    def recording(chunk, *a, **k):
        sizes.append(len(chunk))
        return real(chunk, *a, **k)

    monkeypatch.setattr(vectorized_loop, "_train_chunk", recording)
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(3 * 2**30 / total)  # ~3 GiB: not 32 members of ~200 MB
    try:
        outs = train_group(cfgs, data, GPU)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert sizes[0] == 32 and len(sizes) > 1 and min(sizes) < 32  # it halved
    assert [o.status for o in outs] == ["complete"] * 32


def test_two_workers_pinned_to_two_gpus(tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    from lrsweep.config.grid import build_sweep
    from lrsweep.execution import make_executor
    from lrsweep.sweep import run_sweep

    sweep = build_sweep(make_config(sweep={"lr": [0.01, 0.1, 0.3, 0.5]}, **{"train.device": "cuda"}))
    pool = make_executor(sweep.runs, "local", workers=2, devices="0,1")
    out = run_sweep(sweep, tmp_path, executor=pool)
    assert out.counts == {"complete": 4}


def test_checkpoint_resume_on_cuda(tmp_path):
    c = cfg(**{"train.steps": 64, "train.batch_size": 32, "train.checkpoint": "epoch", "dataset.synthetic.n_train": 256})
    data = load_data(c.dataset, GPU)
    ref = train(c, data, GPU)

    class Killed(Exception):
        pass

    def kill(step, *a):
        if step == 20:
            raise Killed

    with pytest.raises(Killed):
        train(c, data, GPU, on_step=kill, run_dir=tmp_path)
    resumed = train(c, data, GPU, run_dir=tmp_path)
    assert resumed.summary["resumed_at_step"] == 16
    assert resumed.metrics["train_loss"] == pytest.approx(ref.metrics["train_loss"], rel=1e-4)


def test_no_host_sync_inside_a_block_on_cuda(monkeypatch):
    monkeypatch.setattr(vectorized_loop, "default_formulation", lambda device: "vmap")
    cfgs = [cfg(**{"optimizer.lr": lr, "train.steps": 64, "train.eval_every": 64, "train.sync_every": 16})
            for lr in (0.01, 0.1)]
    data = load_data(cfgs[0].dataset, GPU)
    train_group(cfgs[:1], data, GPU)  # warm-up
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train_group(cfgs, data, GPU)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    # 4 block copies, the evaluation's, the optimizer's and the models' set-up: not one per step
    assert len(syncs) < 32, [str(w.message)[:80] for w in syncs[:5]]
