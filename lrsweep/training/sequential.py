"""One training run, top to bottom: the sequential engine.

Reads like a hand-written PyTorch loop on purpose: users must be able to check that lrsweep's
numbers are the ones a careful loop would give. Differences from a textbook loop, and why:
- batches are drawn by index from tensors on the device (batches.py);
- the LR is set on every step from a pure function of the step (schedules.py);
- the global gradient norm is logged before each update (document 004);
- with `train.batch_schedule`, each step's batch size comes from the budget's plan
  (setup.py; Smith et al. 2017), fixed before the run starts;
- with `train.noise_scale`, every N steps one more gradient, of the batch's first examples,
  measures the gradient noise scale (noise_scale.py); the update is the same as without;
- what a step means (logging, targets, divergence, when to evaluate) is the tracker's
  (tracker.py), shared with the vectorized engine;
- with `train.checkpoint: epoch`, the whole loop state is saved at each epoch end and a
  restarted run continues from it, giving the same numbers as an uninterrupted run on CPU.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from lrsweep.config import RunConfig
from lrsweep.datasets import Data
from lrsweep.errors import LrsweepWarning
from lrsweep.optimizers import build_optimizer
from lrsweep.schedules import LRSchedule
from lrsweep.training import checkpoint, noise_scale
from lrsweep.training.batches import BatchSampler
from lrsweep.training.evaluate import evaluate
from lrsweep.training.setup import budget, init_model, uses_channels_last
from lrsweep.training.tracker import RunTracker, TrainedRun

StepCallback = Callable[[int, int, float, float], None]  # (step, total_steps, loss, lr)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(cfg: RunConfig, data: Data, device: torch.device, on_step: Optional[StepCallback] = None,
          run_dir: Optional[str | Path] = None) -> TrainedRun:
    """Train one run to its budget. `run_dir` holds checkpoint.pt: if one of this config is
    there the run continues from it; with `train.checkpoint: epoch` one is written at each
    epoch end."""
    from lrsweep.config.grid import run_id

    t = cfg.train
    B = t.batch_size
    bud = budget(cfg, len(data.train_y))
    cl = uses_channels_last(cfg, data.input_shape)

    def fresh():  # the run's start (again when a checkpoint does not fit: a partial load is no start)
        model = init_model(cfg, data, device)
        return (model, build_optimizer(model.parameters(), cfg.optimizer, cfg.effective_lr),
                LRSchedule(cfg.schedule, cfg.effective_lr, bud.total_steps, bud.steps_per_epoch),
                BatchSampler(t.seed, len(data.train_y), bud, B, device), RunTracker(cfg, bud))

    model, opt, sched, batches, track = fresh()
    ckpt_path = Path(run_dir) / checkpoint.CHECKPOINT if run_dir is not None else None
    cid = run_id(cfg) if ckpt_path is not None else None
    state = checkpoint.load(ckpt_path, cid) if ckpt_path is not None else None
    if state is not None and not checkpoint.restore(ckpt_path, state, model, opt, sched, batches, track, device):
        model, opt, sched, batches, track = fresh()

    step = track.step
    epoch_start = True  # a run starts, or resumes (checkpoints are written at epoch ends), with an epoch
    while step < bud.total_steps:
        if epoch_start:
            track.new_epoch(step)
        t0 = time.perf_counter()
        idx = batches.indices(step, bud.batch_size_at(step))
        x, y = data.normalize(data.train_x[idx]), data.train_y[idx]
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        _sync(device)
        t1 = time.perf_counter()

        lr = sched.lr(step)
        for g in opt.param_groups:
            g["lr"] = lr
        out = model(x)
        loss = F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))  # inf: measure, never clip
        ns = t.noise_scale  # a sub-batch's gradient beside the step's, which stays the update's
        noise = noise_scale.measure(model, x, y, ns) if ns is not None and noise_scale.measured(ns, step) else None
        opt.step()
        loss_v = loss.item()  # also syncs the device, so compute time is honest
        correct = (out.argmax(1) == y).sum().item()
        t2 = time.perf_counter()
        step += 1

        if noise is not None:
            track.on_noise(*noise)
        decision = track.on_step(step, lr, loss_v, correct, float(gnorm), t1 - t0, t2 - t1, batch_size=len(idx))
        epoch_start = decision.epoch_end
        if on_step is not None:
            on_step(step, bud.total_steps, loss_v, lr)
        if decision.evaluate:
            vl, va = evaluate(model, data, t.eval_batch_size, cl)
            sched.report(track.on_eval(vl, va))
        if decision.stop:
            break
        if t.checkpoint == "epoch" and ckpt_path is not None and decision.epoch_end and step < bud.total_steps:
            try:
                checkpoint.save(ckpt_path, {
                    "config_id": cid, "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "schedule": sched.state_dict(), "order": batches.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                    **track.state_dict()})
            except OSError as e:  # e.g. disk full: the run goes on, only its resume point is lost
                warnings.warn(LrsweepWarning(f"could not write checkpoint {ckpt_path}: {e}"))
    return track.finish(device, "sequential")
