"""Optimizers: OptimizerConfig -> torch.optim.Optimizer.

`lr` is the run's effective LR (after lr_scaling); the trainer overwrites param_group['lr']
every step from the schedule, so the value here only matters before the first update.
Adam with betas (0, 0) is document 003's sign-like setting: m = g and v = g^2, so each
coordinate moves by lr * g / (|g| + eps), i.e. about lr * sign(g). torch accepts it.
"""
from __future__ import annotations

import torch

from lrsweep.config import OptimizerConfig

# The OptimizerConfig fields each optimizer reads (docs; the vectorized engine later).
OPTIMIZER_HPARAMS: dict[str, tuple[str, ...]] = {
    "sgd": ("lr", "momentum", "dampening", "nesterov", "weight_decay"),
    "adam": ("lr", "betas", "eps", "weight_decay"),
    "adamw": ("lr", "betas", "eps", "weight_decay"),
    "rmsprop": ("lr", "alpha", "eps", "momentum", "weight_decay", "centered"),
    "adagrad": ("lr", "lr_decay", "weight_decay", "eps"),
    "adafactor": ("lr", "beta2_decay", "weight_decay"),
    "signsgd": ("lr", "momentum", "weight_decay"),
}


class SignSGD(torch.optim.Optimizer):
    """signSGD (momentum 0) and Signum (Bernstein et al. 2018):

        buf = momentum * buf + (1 - momentum) * grad;   p *= 1 - lr * wd;   p -= lr * sign(buf)

    Weight decay is decoupled (AdamW-style): inside sign() it would be lost in the sign.
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, weight_decay: float = 0.0):
        if lr < 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError(f"invalid SignSGD settings lr={lr}, momentum={momentum}, weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, m, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if m > 0:
                    buf = self.state[p].get("momentum_buffer")
                    if buf is None:
                        buf = self.state[p]["momentum_buffer"] = torch.zeros_like(p)
                    buf.mul_(m).add_(d, alpha=1 - m)
                    d = buf
                if wd:
                    p.mul_(1 - lr * wd)
                p.add_(torch.sign(d), alpha=-lr)
        return loss


def build_optimizer(params, cfg: OptimizerConfig, lr: float) -> torch.optim.Optimizer:
    """A torch optimizer for `params` (tensors or param groups) with the config's settings at `lr`."""
    o, wd = cfg, cfg.weight_decay
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=o.momentum, dampening=o.dampening,
                               nesterov=o.nesterov, weight_decay=wd)
    if o.name in ("adam", "adamw"):
        cls = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
        return cls(params, lr=lr, betas=tuple(o.betas), eps=o.eps, weight_decay=wd)
    if o.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=o.alpha, eps=o.eps, momentum=o.momentum,
                                   weight_decay=wd, centered=o.centered)
    if o.name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, lr_decay=o.lr_decay, weight_decay=wd, eps=o.eps)
    if o.name == "adafactor":  # eps: torch's default (relative to the RMS of the parameters)
        return torch.optim.Adafactor(params, lr=lr, beta2_decay=o.beta2_decay, weight_decay=wd)
    if o.name == "signsgd":
        return SignSGD(params, lr=lr, momentum=o.momentum, weight_decay=wd)
    raise ValueError(f"unknown optimizer {o.name!r}")  # unreachable: the config validates names
