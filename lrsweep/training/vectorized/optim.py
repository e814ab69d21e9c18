"""StackedOptimizer: torch.optim's update rules on stacked parameters [M, ...], one run
(member) per row, each with its own hyperparameters held as [M] tensors broadcast over the
stacked parameters. Nothing is faked by scaling losses (Adam ignores gradient scale)."""
from __future__ import annotations

from typing import Optional

import torch

from lrsweep.config import OptimizerConfig

VECTORIZED_OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "signsgd")


class StackedOptimizer:
    """torch.optim's update rules on stacked parameters [M, ...], one member per row.

    Every hyperparameter is an [M] float64 tensor; derived per-step factors are computed in
    float64 (as torch does in Python floats) and cast to the parameter dtype. The order of
    operations follows torch.optim's single-tensor implementations, so member i matches
    torch.optim with its own settings up to float rounding.
    """

    def __init__(self, params: list[torch.Tensor], cfgs: list[OptimizerConfig]):
        names = {c.name for c in cfgs}
        if len(names) != 1 or cfgs[0].name not in VECTORIZED_OPTIMIZERS:
            raise ValueError(f"cannot stack optimizers {sorted(names)}")
        self.name = cfgs[0].name
        self.params = params
        dev = params[0].device
        self.step_count = 0

        def hp(f) -> torch.Tensor:
            return torch.tensor([float(f(c)) for c in cfgs], dtype=torch.float64, device=dev)

        o = cfgs[0]
        self.flags = {"nesterov": o.nesterov, "centered": o.centered}
        for c in cfgs:
            if (c.nesterov, c.centered) != (o.nesterov, o.centered):
                raise ValueError("nesterov/centered must be the same for every member of a group")
        h = {"wd": hp(lambda c: c.weight_decay)}
        if self.name == "sgd":
            h["momentum"] = hp(lambda c: c.momentum)
            # torch ignores dampening without momentum (there is no buffer): buf = 0 * buf + 1 * g.
            h["damp"] = hp(lambda c: c.dampening if c.momentum else 0.0)
        elif self.name in ("adam", "adamw"):
            h["beta1"], h["beta2"] = hp(lambda c: c.betas[0]), hp(lambda c: c.betas[1])
            h["eps"] = hp(lambda c: c.eps)
        elif self.name == "rmsprop":
            h["alpha"], h["eps"], h["momentum"] = hp(lambda c: c.alpha), hp(lambda c: c.eps), hp(lambda c: c.momentum)
        elif self.name == "adagrad":
            h["lr_decay"], h["eps"] = hp(lambda c: c.lr_decay), hp(lambda c: c.eps)
        elif self.name == "signsgd":
            h["momentum"] = hp(lambda c: c.momentum)
        self.h = h
        self.any = {k: bool((v != 0).any()) for k, v in h.items()}
        z = lambda: [torch.zeros_like(p) for p in params]  # noqa: E731
        self.state: dict[str, list[torch.Tensor]] = {}
        if self.name == "sgd" and self.any["momentum"]:
            self.state["buf"] = z()  # replaced by a clone of the first gradient, as torch does
        elif self.name in ("adam", "adamw"):
            self.state["exp_avg"], self.state["exp_avg_sq"] = z(), z()
        elif self.name == "rmsprop":
            self.state["square_avg"] = z()
            if self.flags["centered"]:
                self.state["grad_avg"] = z()
            if self.any["momentum"]:
                self.state["buf"] = z()
        elif self.name == "adagrad":
            self.state["sum"] = z()
        elif self.name == "signsgd" and self.any["momentum"]:
            self.state["buf"] = z()

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the members at indices `keep` (the parameters are re-selected by the caller)."""
        self.h = {k: v.index_select(0, keep) for k, v in self.h.items()}
        self.state = {k: [s.index_select(0, keep) for s in v] for k, v in self.state.items()}

    def set_params(self, params: list[torch.Tensor]) -> None:
        self.params = params

    @staticmethod
    def _b(v: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """An [M] float64 factor as p's dtype, shaped to broadcast over p [M, ...]."""
        return v.to(p.dtype).view((-1,) + (1,) * (p.dim() - 1))

    @torch.no_grad()
    def step(self, lr: torch.Tensor, grads: Optional[list[torch.Tensor]] = None) -> None:
        """One update with per-member learning rates `lr` ([M] float64) and stacked gradients
        `grads` (default: each stacked parameter's .grad)."""
        self.step_count += 1
        self._g = grads if grads is not None else [p.grad for p in self.params]
        try:
            getattr(self, f"_{self.name}")(lr)
        finally:
            self._g = None

    def _grads(self):
        return self._g

    def _sgd(self, lr):
        h, b, first = self.h, self._b, self.step_count == 1
        neg_lr, m, omd, wd = -lr, h["momentum"], 1 - h["damp"], h["wd"]
        for i, (p, g) in enumerate(zip(self.params, self._grads())):
            if self.any["wd"]:
                g = g.add(p * b(wd, p))
            if self.any["momentum"]:
                buf = self.state["buf"]
                if first:
                    buf[i] = g.clone()
                else:
                    buf[i].mul_(b(m, p)).add_(g * b(omd, p))
                g = g.add(buf[i] * b(m, p)) if self.flags["nesterov"] else buf[i]
            p.add_(g * b(neg_lr, p))

    def _adam(self, lr, decoupled=False):
        h, b, t = self.h, self._b, self.step_count
        beta1, beta2 = h["beta1"], h["beta2"]
        bc1 = 1 - beta1 ** t
        bc2_sqrt = (1 - beta2 ** t).sqrt()
        neg_step = -(lr / bc1)
        decay = 1 - lr * h["wd"]
        for p, g, ea, eas in zip(self.params, self._grads(), self.state["exp_avg"], self.state["exp_avg_sq"]):
            if self.any["wd"]:
                if decoupled:
                    p.mul_(b(decay, p))
                else:
                    g = g.add(p * b(h["wd"], p))
            ea.lerp_(g, b(1 - beta1, p))
            eas.mul_(b(beta2, p)).add_(g * g * b(1 - beta2, p))
            denom = (eas.sqrt() / b(bc2_sqrt, p)).add_(b(h["eps"], p))
            p.add_(ea.div(denom).mul_(b(neg_step, p)))

    def _adamw(self, lr):
        self._adam(lr, decoupled=True)

    def _rmsprop(self, lr):
        h, b = self.h, self._b
        alpha, neg_lr = h["alpha"], -lr
        for i, (p, g) in enumerate(zip(self.params, self._grads())):
            if self.any["wd"]:
                g = g.add(p * b(h["wd"], p))
            sq = self.state["square_avg"][i]
            sq.mul_(b(alpha, p)).add_(g * g * b(1 - alpha, p))
            if self.flags["centered"]:
                ga = self.state["grad_avg"][i]
                ga.lerp_(g, b(1 - alpha, p))
                avg = (sq - ga * ga).sqrt_()
            else:
                avg = sq.sqrt()
            avg = avg.add_(b(h["eps"], p))
            if self.any["momentum"]:  # momentum 0 members: buf = 0 * buf + g / avg
                buf = self.state["buf"][i]
                buf.mul_(b(h["momentum"], p)).add_(g / avg)
                p.add_(buf * b(neg_lr, p))
            else:
                p.add_((g / avg) * b(neg_lr, p))

    def _adagrad(self, lr):
        h, b = self.h, self._b
        neg_clr = -(lr / (1 + (self.step_count - 1) * h["lr_decay"]))
        for p, g, s in zip(self.params, self._grads(), self.state["sum"]):
            if self.any["wd"]:
                g = g.add(p * b(h["wd"], p))
            s.addcmul_(g, g)
            std = s.sqrt().add_(b(h["eps"], p))
            p.add_((g / std) * b(neg_clr, p))

    def _signsgd(self, lr):
        h, b = self.h, self._b
        m, decay, neg_lr = h["momentum"], 1 - lr * h["wd"], -lr
        for i, (p, g) in enumerate(zip(self.params, self._grads())):
            if self.any["momentum"]:
                buf = self.state["buf"][i]
                buf.mul_(b(m, p)).add_(g * b(1 - m, p))
                g = buf
            if self.any["wd"]:
                p.mul_(b(decay, p))
            p.add_(torch.sign(g) * b(neg_lr, p))
