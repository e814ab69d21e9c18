"""Variant `options`: the per member-step training time of each way lrsweep could train cnn5
on this device, at each batch size (a few steps each, on the bench data), and the evaluation
batch size. What `engine: auto` and the defaults were chosen from; slow options are shown, not
hidden. Not a grid run: it times the engines directly (training/sequential.py, vectorized/).
"""
from __future__ import annotations

import copy
import dataclasses
import time
from typing import Callable

import torch

from lrsweep.benchmark.grid import BenchGrid

MEMBERS = 8  # runs in one vectorized group
EVAL_BATCH_SIZES = (256, 1000)


def _timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0
    return timed


def _options(threads: int, members: int, device: torch.device) -> list[tuple[str, int, bool, object]]:
    """(name, torch threads, channels_last, vectorized formulation or None for sequential)."""
    options = [(f"sequential, {threads} threads", threads, False, None),
               (f"sequential, {threads} threads, channels_last", threads, True, None),
               ("sequential, 1 thread, channels_last", 1, True, None),
               (f"vectorized vmap x{members}", threads, False, "vmap"),
               (f"vectorized threads x{members}, channels_last", threads, True, "threads")]
    if device.type == "cuda":
        options = [o for o in options if o[1] == threads and "threads x" not in o[0]]
    return options


def engine_options(raw: dict, grid: BenchGrid, members: int = MEMBERS, log: Callable[[str], None] = lambda m: None) -> dict:
    """{train: rows of (batch_size, option, ms_per_member_step), eval: rows of (eval_batch_size,
    channels_last, s_per_10k), members, threads}; `log` gets a line per measurement."""
    from lrsweep.config import parse_run_config
    from lrsweep.datasets import load_data
    from lrsweep.models import build_model
    from lrsweep.training.evaluate import evaluate
    from lrsweep.training.sequential import train
    from lrsweep.training.setup import resolve_device
    from lrsweep.training.vectorized import train_group

    base = {k: v for k, v in copy.deepcopy(raw).items() if k != "sweep"}
    base["dataset"]["val_subset"] = 256  # training evaluates at its last step: keep that cheap
    dev = resolve_device(base["train"]["device"])
    data = load_data(parse_run_config(base).dataset, dev)
    threads = torch.get_num_threads()
    timed = _timer(dev)

    def cfg(B, steps, cl, lr=0.01):
        d = copy.deepcopy(base)
        d["train"].update(batch_size=B, steps=steps, channels_last=cl, eval_every=10 ** 9)
        d["train"].pop("epochs", None)
        d["optimizer"]["lr"] = lr
        return parse_run_config(d)

    rows = []
    try:
        for B in grid.batch_sizes:
            steps = max(3, 768 // B)
            for name, n_thr, cl, form in _options(threads, members, dev):
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
        model = build_model(parse_run_config(base).model, data.input_shape, data.num_classes).to(dev)
        full = load_data(parse_run_config({**base, "dataset": {**base["dataset"], "val_subset": None}}).dataset, dev)
        evals = []
        for eb in EVAL_BATCH_SIZES:
            for cl in (False, True):
                m = model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
                warm = dataclasses.replace(full, val_x=full.val_x[:eb], val_y=full.val_y[:eb])
                evaluate(m, warm, eb, cl)
                per_10k = timed(lambda: evaluate(m, full, eb, cl)) * 10000 / len(full.val_y)
                evals.append({"eval_batch_size": eb, "channels_last": cl, "s_per_10k": per_10k})
                log(f"  eval batch {eb}{', channels_last' if cl else ''}: {per_10k:.2f} s per 10k")
    finally:
        torch.set_num_threads(threads)
    return {"train": rows, "eval": evals, "members": members, "threads": threads}
