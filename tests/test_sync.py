"""The vectorized engine's hot loop copies to the host once per block, not once per step, and
the block size changes no recorded number. Checked on the CPU by counting every call that
copies a tensor to the host (.cpu, .tolist, .item, .numpy) while a group trains."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from lrsweep.config import parse_run_config
from lrsweep.datasets import load_data
from lrsweep.training.vectorized import loop as vectorized_loop
from lrsweep.training.vectorized import train_group

from conftest import apply_changes

CPU = torch.device("cpu")
BASE = {
    "name": "sync",
    "dataset": {"name": "synthetic", "synthetic": {"n_train": 256, "n_val": 32, "classes": 4, "shape": [1, 4, 4]}},
    "model": {"name": "mlp", "hidden": [8]},
    "optimizer": {"name": "sgd", "momentum": 0.9},
    "train": {"steps": 64, "batch_size": 8, "eval_every": 64, "device": "cpu"},
}
HOST_COPIES = ("cpu", "tolist", "item", "numpy")


def cfg(**changes):
    return parse_run_config(apply_changes(copy.deepcopy(BASE), changes))


@pytest.fixture(params=["vmap", "threads"])
def formulation(request, monkeypatch):
    monkeypatch.setattr(vectorized_loop, "default_formulation", lambda device: request.param)
    return request.param


def count_host_copies(monkeypatch, fn):
    """fn() with every Tensor -> host copy counted; (result, count)."""
    counts = [0]
    for name in HOST_COPIES:
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, **k):
            counts[0] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    try:
        return fn(), counts[0]
    finally:
        monkeypatch.undo()


def test_host_copies_are_per_block_not_per_step(monkeypatch):
    monkeypatch.setattr(vectorized_loop, "default_formulation", lambda device: "vmap")  # the GPU path
    cfgs = [cfg(**{"optimizer.lr": lr, "train.sync_every": 16}) for lr in (0.01, 0.1, 0.3)]
    data = load_data(cfgs[0].dataset, CPU)
    _, blocked = count_host_copies(monkeypatch, lambda: train_group(cfgs, data, CPU))
    monkeypatch.setattr(vectorized_loop, "default_formulation", lambda device: "vmap")
    per_step = [c.model_copy(update={"train": c.train.model_copy(update={"sync_every": 1})}) for c in cfgs]
    _, stepped = count_host_copies(monkeypatch, lambda: train_group(per_step, data, CPU))
    # 64 steps: 4 blocks of 16, each one .cpu().tolist() (2 calls), plus one evaluation (2 .tolist)
    assert blocked == 2 * 64 // 16 + 2, blocked
    assert stepped == 2 * 64 + 2, stepped


def test_the_block_size_changes_no_recorded_number(formulation):
    torch.set_num_threads(1)
    variants = [{"optimizer.lr": 0.05}, {"optimizer.lr": 0.02, "train.seed": 1},
                {"optimizer.lr": 90.0},  # diverges inside a block
                {"optimizer.lr": 0.1, "train.target_train_loss": 1.3, "train.stop_after_target": 5},
                {"optimizer.lr": 0.08, "schedule.name": "plateau", "schedule.patience": 0, "schedule.factor": 0.5,
                 "schedule.monitor": "val_acc"}]
    base = {"train.eval_every": 10, "train.log_every": 3}
    data = load_data(cfg().dataset, CPU)
    runs = {}
    for k in (1, 7, 16):
        runs[k] = train_group([cfg(**base, **v, **{"train.sync_every": k}) for v in variants], data, CPU)
    for a, b, c in zip(runs[1], runs[7], runs[16]):
        assert a.status == b.status == c.status and a.error == b.error == c.error
        assert a.summary["stop_reason"] == b.summary["stop_reason"] == c.summary["stop_reason"]
        for col in ("step", "lr", "train_acc", "train_loss", "grad_norm"):
            assert a.metrics[col] == b.metrics[col] == c.metrics[col], col
        for col in ("step", "lr", "val_loss", "val_acc", "train_loss"):
            assert a.evals[col] == b.evals[col] == c.evals[col], col
        untimed = lambda r: {n: {k: v for k, v in (t or {}).items() if k != "seconds"}  # noqa: E731
                             for n, t in r.summary["targets"].items()}
        assert untimed(a) == untimed(b) == untimed(c)
    assert runs[16][2].status == "diverged" and runs[16][2].summary["steps"] < 64
    assert runs[16][3].summary["stop_reason"] == "stop_after_target"
    assert len(set(runs[16][4].metrics["lr"])) > 1  # the plateau cut its LR at an evaluation


def test_block_ends_fall_on_evaluations_budget_and_stop_steps():
    from lrsweep.training.setup import Budget
    from lrsweep.training.vectorized.loop import _Member, _block_end

    bud = Budget(steps_per_epoch=32, total_steps=64, epoch_size=256)
    plain = _Member(cfg(), bud, 0.0)
    assert _block_end(0, [plain], bud, eval_every=10, sync_every=16) == 10
    assert _block_end(10, [plain], bud, eval_every=100, sync_every=16) == 26
    assert _block_end(60, [plain], bud, eval_every=100, sync_every=16) == 64
    waiting = _Member(cfg(**{"train.target_train_loss": 1.0, "train.stop_after_target": 3}), bud, 0.0)
    assert _block_end(0, [plain, waiting], bud, eval_every=100, sync_every=16) == 1  # EMA 0: a hit may come next
    waiting.track.ema = 2.0  # target 1, s = 0.9: 0.9^k x 2 > 1 for k <= 6, so no hit within 6 steps
    assert _block_end(3, [plain, waiting], bud, eval_every=100, sync_every=16) == 9
    waiting.track.hit_loss = {"step": 6, "examples": 48, "seconds": 0.1}
    assert _block_end(7, [waiting], bud, eval_every=100, sync_every=16) == 9
    assert math.isfinite(_block_end(0, [], bud, 100, 16))


def test_gpu_check_table_reads_a_report():
    from lrsweep.benchmark.gpu_check import table

    report = {"torch": "2.x", "gpu": "NVIDIA H200", "cuda_tests": {"summary": "7 passed in 30s"},
              "bench": {"speedup_vs_plain": {"auto": 31.5}},
              "fashion_mnist_grid": {"projected_full_grid_s": 540.0,
                                     "timed": {1: {"members": 10, "s_per_step": 0.002}}}}
    rows = dict(table(report))
    assert rows["GPU"] == "NVIDIA H200" and rows["CUDA tests"] == "7 passed in 30s"
    assert rows["bench: auto vs plain"] == "31.50x"
    assert rows["O11 Fashion-MNIST grid (projected, upper bound)"] == "9.0 min"
    assert rows["  B=1: 10 members"] == "2.00 ms/step"
    assert dict(table({"torch": "2.x"}))["GPU"].startswith("none")
