"""One training run, top to bottom: the sequential engine.

Reads like a hand-written PyTorch loop on purpose: users must be able to check that lrsweep's
numbers are the ones a careful loop would give. Differences from a textbook loop, and why:
- the dataset lives as tensors on the device and batches are drawn by index (document 001:
  data loading, not compute, dominates epoch time once B is large);
- the LR is set on every step from a pure function of the step (schedules.py);
- the global gradient norm is logged before each update (document 004);
- targets are recorded when first reached (document 001's time-to-98%, document 003's S and E);
- a diverging run stops early and is recorded as a result, not an error;
- with `train.checkpoint: epoch`, the whole loop state is saved at each epoch end and a
  restarted run continues from it, giving the same numbers as an uninterrupted run on CPU.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
import torch.nn.functional as F

from lrsweep import storage
from lrsweep.config import RunConfig
from lrsweep.datasets import Data
from lrsweep.errors import ConfigError
from lrsweep.models import build_model
from lrsweep.optimizers import build_optimizer
from lrsweep.schedules import LRSchedule

COMPLETE, DIVERGED, FAILED = "complete", "diverged", "failed"
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_VERSION = 1

# The run folder of the run being trained, for its checkpoint.pt. The executor sets it around
# each record it asks engine.run_group for (sequential runs train lazily, one per record), so
# engines need not pass run folders through; `train(run_dir=...)` overrides it.
_RUN_DIR: contextvars.ContextVar[Optional[Path]] = contextvars.ContextVar("run_dir", default=None)


@contextlib.contextmanager
def checkpoint_dir(path: Optional[str | Path]) -> Iterator[None]:
    """A run trained inside this block keeps its checkpoint in `path` (None: no checkpoint)."""
    token = _RUN_DIR.set(Path(path) if path is not None else None)
    try:
        yield
    finally:
        _RUN_DIR.reset(token)


def config_id(cfg: RunConfig) -> str:
    """Which config a checkpoint belongs to (the run id of the config as trained)."""
    from lrsweep.config.grid import run_id  # grid imports config only

    return run_id(cfg)


def save_checkpoint(path: Path, state: dict) -> None:
    storage.atomic_replace(path, lambda f: torch.save(state, f), binary=True)


def load_checkpoint(path: Path) -> Optional[dict]:
    """The checkpoint, or None if there is none or it cannot be read (then the run starts over)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a bad checkpoint costs a restart, never the run
        warnings.warn(f"ignoring unreadable checkpoint {path}: {type(e).__name__}: {e}")
        return None
    return state if isinstance(state, dict) and state.get("version") == CHECKPOINT_VERSION else None


@dataclass
class Budget:
    steps_per_epoch: int
    total_steps: int
    epoch_size: int  # examples drawn per epoch


@dataclass
class RunOutcome:
    status: str
    metrics: dict[str, list] = field(default_factory=dict)  # per logged step -> metrics.csv
    evals: dict[str, list] = field(default_factory=dict)  # per evaluation -> evals.csv
    summary: dict = field(default_factory=dict)  # -> result.json
    error: Optional[str] = None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("train.device", f"{name!r} asked for but CUDA is not available; use cpu or auto")
    return torch.device(name)


def budget(cfg: RunConfig, n_train: int) -> Budget:
    t = cfg.train
    epoch_size = min(cfg.dataset.epoch_subset or n_train, n_train)
    if t.batch_size > epoch_size:
        raise ConfigError("train.batch_size", f"{t.batch_size} exceeds the {epoch_size} training examples per epoch")
    spe = epoch_size // t.batch_size  # drop_last: every step sees exactly B examples
    if t.steps is not None:
        total = t.steps
    elif t.examples is not None:
        total = math.ceil(t.examples / t.batch_size)
    else:
        total = max(1, round(t.epochs * spe))
    return Budget(spe, total, epoch_size)


@torch.no_grad()
def evaluate(model, data: Data, x_all, y_all, batch_size: int, channels_last: bool) -> tuple[float, float]:
    """Mean loss and accuracy over a split, in batches (256 measured faster than 1000 on CPU)."""
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(y_all), batch_size):
        x = data.normalize(x_all[i:i + batch_size])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = y_all[i:i + batch_size]
        out = model(x)
        loss_sum += F.cross_entropy(out, y, reduction="sum").item()
        correct += (out.argmax(1) == y).sum().item()
    model.train(was_training)
    n = len(y_all)
    return loss_sum / n, correct / n


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_summary(cfg: RunConfig, bud: Budget, status: str, step: int, final_lr: float, initial_loss,
                evals: dict, hit_loss: Optional[dict], hit_acc: Optional[dict], timing: dict) -> dict:
    """result.json's training part, shared by the sequential and the vectorized engine.
    Final metrics are NaN unless the run completed; `timing` adds time and device fields."""
    nan = float("nan")
    E, t, B = evals, cfg.train, cfg.train.batch_size
    finished = status == COMPLETE and E["step"]
    return {
        "steps": step, "examples": step * B, "epochs": step / bud.steps_per_epoch,
        "total_steps": bud.total_steps, "steps_per_epoch": bud.steps_per_epoch,
        "batch_size": B, "lr": cfg.effective_lr, "nominal_lr": cfg.optimizer.lr, "final_lr": final_lr,
        "initial_loss": initial_loss,
        "final_train_loss": E["train_loss"][-1] if finished else nan,
        "final_train_acc": E["train_acc"][-1] if finished else nan,
        "final_val_loss": E["val_loss"][-1] if finished else nan,
        "final_val_acc": E["val_acc"][-1] if finished else nan,
        "best_val_acc": max(E["val_acc"]) if E["val_acc"] else nan,
        "best_val_loss": min(E["val_loss"]) if E["val_loss"] else nan,
        "targets": {
            "train_loss": {"target": t.target_train_loss, **(hit_loss or {})} if t.target_train_loss else None,
            "val_acc": {"target": t.target_val_accuracy, **(hit_acc or {})} if t.target_val_accuracy else None,
        },
        **timing,
    }


def train(cfg: RunConfig, data: Data, device: torch.device,
          on_step: Optional[Callable[[int, int, float, float], None]] = None,
          run_dir: Optional[str | Path] = None) -> RunOutcome:
    """Train one run to its budget. `on_step(step, total_steps, loss, lr)` reports progress.

    `run_dir` (default: from `checkpoint_root`) holds checkpoint.pt: if one is there the run
    continues from it; with `train.checkpoint: epoch` one is written at each epoch end.
    """
    t = cfg.train
    B = t.batch_size
    bud = budget(cfg, len(data.train_y))
    lr0 = cfg.effective_lr
    cl = t.channels_last and len(data.input_shape) == 3

    torch.manual_seed(t.seed)  # model init follows the run's seed
    model = build_model(cfg.model, data.input_shape, data.num_classes).to(device)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = build_optimizer(model.parameters(), cfg.optimizer, lr0)
    sched = LRSchedule(cfg.schedule, lr0, bud.total_steps, bud.steps_per_epoch)
    order = torch.Generator().manual_seed(t.seed)  # data order follows the run's seed
    eval_every = bud.steps_per_epoch if t.eval_every == "epoch" else t.eval_every

    M = {k: [] for k in ("step", "epoch", "examples", "lr", "batch_size", "train_loss", "train_acc",
                         "grad_norm", "data_time", "compute_time", "elapsed")}
    E = {k: [] for k in ("step", "epoch", "examples", "elapsed", "lr", "train_loss", "train_acc",
                         "val_loss", "val_acc")}
    epoch_times: list[dict] = []
    status, reason = COMPLETE, None
    initial_loss = None
    ema, ema_steps = 0.0, 0
    hit_loss = hit_acc = None  # {step, examples, seconds} when first reached
    win_loss, win_correct, win_n = 0.0, 0, 0
    data_t = comp_t = ep_data = ep_comp = 0.0
    perm = None
    start = time.perf_counter()
    step = 0
    lr = lr0

    run_dir = Path(run_dir) if run_dir is not None else _RUN_DIR.get()
    ckpt_path = run_dir / CHECKPOINT if run_dir is not None else None
    ckpt = load_checkpoint(ckpt_path) if ckpt_path is not None else None
    cid = config_id(cfg) if ckpt_path is not None else None
    if ckpt is not None and ckpt.get("config_id") != cid:
        ckpt = None  # another config's (e.g. an older version of the code's): start over
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["schedule"])
        order.set_state(ckpt["order"])
        torch.set_rng_state(ckpt["torch_rng"])
        if device.type == "cuda" and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng"], device)
        L = ckpt["loop"]
        step, lr, initial_loss = L["step"], L["lr"], L["initial_loss"]
        ema, ema_steps, hit_loss, hit_acc = L["ema"], L["ema_steps"], L["hit_loss"], L["hit_acc"]
        win_loss, win_correct, win_n = L["win_loss"], L["win_correct"], L["win_n"]
        data_t, comp_t, ep_data, ep_comp = L["data_t"], L["comp_t"], L["ep_data"], L["ep_comp"]
        M, E, epoch_times = ckpt["metrics"], ckpt["evals"], ckpt["epoch_times"]
        start -= L["elapsed"]  # times continue from where the run stopped
    resumed_at = step if ckpt is not None else None

    def write_checkpoint():
        loop = {"step": step, "lr": lr, "initial_loss": initial_loss, "ema": ema, "ema_steps": ema_steps,
                "hit_loss": hit_loss, "hit_acc": hit_acc, "win_loss": win_loss, "win_correct": win_correct,
                "win_n": win_n, "data_t": data_t, "comp_t": comp_t, "ep_data": ep_data, "ep_comp": ep_comp,
                "elapsed": time.perf_counter() - start}
        save_checkpoint(ckpt_path, {
            "version": CHECKPOINT_VERSION, "config_id": cid,
            "model": model.state_dict(), "optimizer": opt.state_dict(), "schedule": sched.state_dict(),
            "order": order.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "loop": loop, "metrics": M, "evals": E, "epoch_times": epoch_times})

    def run_eval(step: int, lr: float):
        nonlocal win_loss, win_correct, win_n, hit_acc
        vl, va = evaluate(model, data, data.val_x, data.val_y, t.eval_batch_size, cl)
        for k, v in (("step", step), ("epoch", step / bud.steps_per_epoch), ("examples", step * B),
                     ("elapsed", time.perf_counter() - start), ("lr", lr),
                     ("train_loss", win_loss / max(win_n, 1)), ("train_acc", win_correct / max(win_n, 1)),
                     ("val_loss", vl), ("val_acc", va)):
            E[k].append(v)
        win_loss, win_correct, win_n = 0.0, 0, 0
        if hit_acc is None and t.target_val_accuracy is not None and va >= t.target_val_accuracy:
            hit_acc = {"step": step, "examples": step * B, "seconds": time.perf_counter() - start}
        sched.report(vl if cfg.schedule.monitor == "val_loss" else va)

    while step < bud.total_steps:
        pos = step % bud.steps_per_epoch
        if pos == 0:  # a new epoch: fresh order (and a fresh random subset, if asked)
            perm = torch.randperm(len(data.train_y), generator=order)[: bud.epoch_size].to(device)
            if step > 0:
                epoch_times.append({"epoch": step // bud.steps_per_epoch, "data_s": ep_data, "compute_s": ep_comp})
                ep_data = ep_comp = 0.0

        t0 = time.perf_counter()
        idx = perm[pos * B:(pos + 1) * B]
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
        opt.step()
        loss_v = loss.item()  # also syncs the device, so compute time is honest
        correct = (out.argmax(1) == y).sum().item()
        t2 = time.perf_counter()
        step += 1

        dt, ct = t1 - t0, t2 - t1
        data_t += dt; comp_t += ct; ep_data += dt; ep_comp += ct
        if initial_loss is None:
            initial_loss = loss_v
        if step % t.log_every == 0 or step == bud.total_steps or not math.isfinite(loss_v):
            for k, v in (("step", step), ("epoch", step / bud.steps_per_epoch), ("examples", step * B),
                         ("lr", lr), ("batch_size", B), ("train_loss", loss_v), ("train_acc", correct / B),
                         ("grad_norm", float(gnorm)), ("data_time", dt), ("compute_time", ct),
                         ("elapsed", t2 - start)):
                M[k].append(v)
        if on_step is not None:
            on_step(step, bud.total_steps, loss_v, lr)

        if not math.isfinite(loss_v) or loss_v > t.divergence_factor * initial_loss:
            status = DIVERGED
            reason = f"loss {loss_v:.4g} at step {step} (first step: {initial_loss:.4g})"
            break
        win_loss += loss_v * B; win_correct += correct; win_n += B

        # Train-loss target on a bias-corrected EMA of the step loss: single batches are noisy.
        s = t.target_smoothing
        ema = s * ema + (1 - s) * loss_v
        ema_steps += 1
        if hit_loss is None and t.target_train_loss is not None and ema / (1 - s ** ema_steps) <= t.target_train_loss:
            hit_loss = {"step": step, "examples": step * B, "seconds": time.perf_counter() - start}
        if step % eval_every == 0 or step == bud.total_steps:
            run_eval(step, lr)
        if hit_loss is not None and t.stop_after_target is not None and step >= hit_loss["step"] + t.stop_after_target:
            if not E["step"] or E["step"][-1] != step:
                run_eval(step, lr)
            break
        if t.checkpoint == "epoch" and ckpt_path is not None and step % bud.steps_per_epoch == 0 \
                and step < bud.total_steps:
            try:
                write_checkpoint()
            except OSError as e:  # e.g. disk full: the run goes on, only its resume point is lost
                warnings.warn(f"could not write checkpoint {ckpt_path}: {e}")

    epoch_times.append({"epoch": math.ceil(step / bud.steps_per_epoch), "data_s": ep_data, "compute_s": ep_comp})
    elapsed = time.perf_counter() - start
    summary = run_summary(cfg, bud, status, step, lr, initial_loss, E, hit_loss, hit_acc,
                          {"time_s": elapsed, "data_time_s": data_t, "compute_time_s": comp_t,
                           "epoch_times": epoch_times, "device": str(device), "resumed_at_step": resumed_at})
    return RunOutcome(status=status, metrics=M, evals=E, summary=summary, error=reason)
