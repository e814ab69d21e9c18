"""Sweep folders of synthetic train-loss curves with a KNOWN critical batch size (test helper).

On the S–E relation (S/S_min − 1)(E/E_min − 1) = 1 with E = S·B, a batch size B reaches a train
loss target at S(B) = S_min (1 + B_noise / B) steps (McCandlish et al. 2018; science.md §2). Each
curve here is one shape stretched in time so that it crosses the target exactly there:

    loss(step) = L_INF + (L0 − L_INF) / (1 + c · step / S)^p,    c chosen so loss(S) = target

times mean-one lognormal noise exp(σ ε − σ²/2) per logged step, σ = noise · sqrt(4 / B) (batch
losses are noisier at small B; `noise` is σ at B = 4). The mean loss, which the target is on,
is the smooth curve, so the truth is exact: S(B), and B_noise, S_min, E_min = B_noise · S_min.
"""
from __future__ import annotations

import math

import numpy as np

import pandas as pd

from lrsweep.analysis.critical import first_reach, smoothed_loss  # the trainer's rule, as it recorded S

from conftest import make_config
from sweepdirs import write_sweep_dir

L0, L_INF, TARGET = 2.3, 0.1, 0.5
SIZES = (4, 8, 16, 32, 64, 128, 256, 512, 1024)
LRS = (0.01, 0.03, 0.1)  # 0.03 is the fastest at every B; its neighbours need 1.5x the steps


def steps_to_target(B, S_min: float, B_noise: float) -> np.ndarray:
    return S_min * (1 + B_noise / np.asarray(B, float))


def loss_curve(S: float, steps: np.ndarray, p: float = 1.0, target: float = TARGET) -> np.ndarray:
    """The noise-free mean loss at `steps`, first equal to `target` at step S."""
    c = ((L0 - L_INF) / (target - L_INF)) ** (1 / p) - 1
    return L_INF + (L0 - L_INF) / (1 + c * np.asarray(steps, float) / S) ** p


def noisy(curve: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return curve * np.exp(sigma * rng.standard_normal(len(curve)) - sigma ** 2 / 2)


def se_sweep(root, S_min: float, B_noise: float = 40.0, noise: float = 0.0, seeds=(0,), sizes=SIZES,
             length: float = 2.5, log_every: int = 1, smoothing: float = 0.9, p: float = 1.0, name: str = "se",
             draw: int = 0):
    """A sweep folder as lrsweep writes it (storage.write_run), batch size x LRS x seeds, every
    run `length` x S(B) steps long at the fastest LR, its metrics.csv from loss_curve + noise.
    result.json's steps_to_train_loss is the trainer's own read-off (EMA `smoothing`). `draw`:
    another draw of the same noise."""
    raw = make_config(name=name, sweep={"batch_size": list(sizes), "lr": list(LRS), "seed": list(seeds)},
                      **{"train.target_train_loss": TARGET, "train.target_smoothing": smoothing,
                         "train.log_every": log_every, "train.steps": 100, "train.eval_every": 100})

    def run(cfg):
        B, lr, seed = cfg.train.batch_size, cfg.effective_lr, cfg.train.seed
        k = abs(LRS.index(round(lr, 6)) - 1)
        S_fast = float(steps_to_target(B, S_min, B_noise))
        rng = np.random.default_rng([seed, B, LRS.index(round(lr, 6)), draw])
        every = pd.DataFrame({"step": np.arange(1, int(math.ceil(length * S_fast)) + 1)})  # trained every step
        every["train_loss"] = noisy(loss_curve(S_fast * (1 + 0.5 * k), every["step"], p), noise * math.sqrt(4 / B), rng)
        hit = first_reach(every, smoothed_loss(every, smoothing), TARGET)
        logged = every[every["step"] % log_every == 0]
        steps, loss = logged["step"].to_numpy(), logged["train_loss"].to_numpy()
        metrics = {"step": steps, "examples": steps * B, "lr": lr, "batch_size": B, "train_loss": loss,
                   "train_acc": 0.5, "grad_norm": 1 / math.sqrt(B), "data_time": 0.0, "compute_time": 0.0, "elapsed": 0.0}
        acc = 0.9 - 0.05 * k
        return metrics, {"status": "complete", "optimizer": cfg.optimizer.name, "seed": seed, "batch_size": B,
                         "nominal_lr": cfg.optimizer.lr, "lr": lr, "final_val_acc": acc, "best_val_acc": acc,
                         "final_train_loss": float(loss[-1]), "final_val_loss": 1 - acc,
                         "steps_to_train_loss": None if math.isnan(hit) else int(hit)}

    return write_sweep_dir(root, name, raw, run)
