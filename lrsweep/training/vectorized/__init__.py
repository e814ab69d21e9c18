"""The vectorized engine: a group of runs trained as one stacked model.

Runs that share dataset, model, batch size, budget and optimizer/schedule type but differ in
scalar hyperparameters (LR, momentum, weight decay, betas, eps, schedule parameters, seed) are
trained together (engine.make_groups forms the groups):

- Parameters (and BatchNorm buffers) are stacked along a new leading "member" dimension and
  updated by StackedOptimizer, which follows torch.optim's math for each member with its own
  hyperparameters, held as [M] tensors broadcast over the stacked parameters. Nothing is faked
  by scaling losses (Adam ignores gradient scale). Adafactor is not vectorized: the engine
  trains it sequentially.
- Forward/backward, two formulations with the same numbers (tests/test_vectorized.py):
  `vmap` (default on CUDA): one pass for all members, torch.func.vmap over functional_call on
  the stacked parameters (torch.func.stack_module_state); the members' losses are summed before
  backward, and member i's parameters only reach loss i, so each gets exactly its own gradient.
  `threads` (default on CPU, where vmap measured 2-4x slower per member-step: grouped
  convolutions): every member is an ordinary module whose parameters/buffers are views into the
  stacked tensors; members run in parallel Python threads (one per intra-op thread the process
  had) with single-threaded kernels, so each member's arithmetic is train.train's.
- Data order: member i draws batches exactly as the sequential engine does for its seed
  (torch.randperm with a generator seeded by train.seed, per epoch). Members that share a seed
  share one unbatched input [B, ...] (cheaper); otherwise the input is [members, B, ...].
- BatchNorm running statistics are per member (stacked buffers, updated in place); evaluation
  uses each member's own statistics.
- A member that diverges (or stops after its target) is finished exactly as train.train
  finishes it, then removed from the stack (parameters, buffers, optimizer state, settings):
  the others go on untouched and no compute is spent on it.
- A group larger than `max_members` is trained in chunks; on CUDA an out-of-memory error
  halves the chunk and trains it again from the start (runs are deterministic given the seed).
- train.precision = bf16 runs forward passes under torch.autocast(bfloat16); train.compile
  compiles the vmap formulation's stacked forward/backward with torch.compile (the update stays
  eager). Both are meant for CUDA and are unmeasured so far (no GPU was available).

Results are RunOutcomes with the same metrics/evals/summary as train.train (plus engine and
group_size); data_time, compute_time and time_s are the group's (every member lived through
the whole group step).
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from lrsweep.config import OptimizerConfig, RunConfig
from lrsweep.datasets import Data
from lrsweep.models import build_model
from lrsweep.schedules import LRSchedule
from lrsweep.training.sequential import COMPLETE, DIVERGED, RunOutcome, budget, run_summary

VECTORIZED_OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "signsgd")

# on_step(step, total_steps, loss, lr, members): loss and lr of the first member still training.
GroupStepCallback = Callable[[int, int, float, float, int], None]


def vectorizable(cfg: RunConfig) -> bool:
    return cfg.optimizer.name in VECTORIZED_OPTIMIZERS


# --------------------------------------------------------------------------- optimizer


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


# --------------------------------------------------------------------------- per-member bookkeeping


class _Member:
    """Host-side state of one run: the same bookkeeping as train.train, line for line."""

    def __init__(self, index: int, cfg: RunConfig, bud):
        self.index, self.cfg, self.t = index, cfg, cfg.train
        self.lr0 = cfg.effective_lr
        self.sched = LRSchedule(cfg.schedule, self.lr0, bud.total_steps, bud.steps_per_epoch)
        self.lr = self.lr0
        self.M = {k: [] for k in ("step", "epoch", "examples", "lr", "batch_size", "train_loss", "train_acc",
                                  "grad_norm", "data_time", "compute_time", "elapsed")}
        self.E = {k: [] for k in ("step", "epoch", "examples", "elapsed", "lr", "train_loss", "train_acc",
                                  "val_loss", "val_acc")}
        self.status, self.reason = COMPLETE, None
        self.initial_loss = None
        self.ema, self.ema_steps = 0.0, 0
        self.hit_loss = self.hit_acc = None
        self.win_loss, self.win_correct, self.win_n = 0.0, 0, 0
        self.steps = 0
        self.stop = False  # finished before the budget (diverged, or stop_after_target)
        self.outcome: Optional[RunOutcome] = None
        self.state: Optional[dict] = None  # final state_dict, when asked for


# --------------------------------------------------------------------------- formulations
#
# Both hold the members' parameters as stacked tensors [M, ...] (what StackedOptimizer updates)
# and give per step the members' losses, correct counts and stacked gradients.
# - "vmap": one forward/backward for all members, torch.func.vmap over functional_call. The
#   fast path on GPUs; on a 2-core CPU measured slower per member-step than separate models
#   (grouped convolutions), so there:
# - "threads": each member is an ordinary nn.Module whose parameters and buffers are views into
#   the stacked tensors; members run forward/backward in parallel Python threads (one per
#   intra-op thread the process had), each with single-threaded kernels (torch releases the GIL
#   in kernels). Each member's arithmetic is then exactly train.train's with one thread.


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _stack(tensors: list[torch.Tensor], channels_last: bool) -> torch.Tensor:
    """torch.stack, laid out so every [i] slice of a 4-D member tensor is channels_last if asked."""
    t = torch.stack(tensors)
    if channels_last and t.dim() == 5:
        m, o, i, h, w = t.shape
        out = torch.empty((m, o, h, w, i), dtype=t.dtype, device=t.device).permute(0, 1, 4, 2, 3)
        out.copy_(t)
        return out
    return t


class _VmapStack:
    def __init__(self, models: list[torch.nn.Module], device: torch.device, precision: str, compile_: bool):
        self.skeleton = copy.deepcopy(models[0]).to("meta")
        self.skeleton.train()
        params, self.buffers = stack_module_state(models)
        self.names = list(params)
        self.params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        self.device, self.precision = device, precision
        fwd = self._train_forward
        self.train_forward = torch.compile(fwd) if compile_ else fwd  # forward + AOT backward

    def stacked(self) -> list[torch.Tensor]:
        return [self.params[k] for k in self.names]

    def _forward(self, p, b, x):
        return functional_call(self.skeleton, (p, b), (x,))

    def _member_loss(self, p, b, x, y):
        out = self._forward(p, b, x)
        return F.cross_entropy(out, y), out

    def _train_forward(self, p, b, x, y, x_batched: bool):
        d = 0 if x_batched else None
        with _autocast(self.device, self.precision):
            losses, out = vmap(self._member_loss, in_dims=(0, 0, d, d))(p, b, x, y)
        return losses, out

    def train_step(self, x, y, batched: bool, cl: bool):
        if cl and not batched:
            x = x.contiguous(memory_format=torch.channels_last)
        losses, out = self.train_forward(self.params, self.buffers, x, y, batched)
        for p in self.params.values():
            p.grad = None
        losses.sum().backward()
        correct = (out.detach().argmax(-1) == y).sum(-1)  # [M]: y is [B] (shared) or [M, B]
        return losses.detach(), correct, [self.params[k].grad for k in self.names]

    @torch.no_grad()
    def evaluate(self, rows: list[int], n_active: int, data: Data, eb: int, cl: bool):
        if len(rows) == n_active:
            p = {k: v.detach() for k, v in self.params.items()}
            b = self.buffers
        else:
            sel = torch.tensor(rows, device=self.device)
            p = {k: v.detach().index_select(0, sel) for k, v in self.params.items()}
            b = {k: v.index_select(0, sel) for k, v in self.buffers.items()}
        n_m = len(rows)
        self.skeleton.eval()
        loss_sum = torch.zeros(n_m, dtype=torch.float64, device=self.device)
        correct = torch.zeros(n_m, dtype=torch.int64, device=self.device)
        fn = vmap(self._forward, in_dims=(0, 0, None))
        try:
            for i in range(0, len(data.val_y), eb):
                x = data.normalize(data.val_x[i:i + eb])
                if cl:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = data.val_y[i:i + eb]
                with _autocast(self.device, self.precision):
                    out = fn(p, b, x)
                if out.dtype == torch.bfloat16:
                    out = out.float()
                ls = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.repeat(n_m), reduction="none")
                loss_sum += ls.view(n_m, -1).sum(1, dtype=torch.float64)
                correct += (out.argmax(-1) == y).sum(1)
        finally:
            self.skeleton.train()
        return loss_sum.tolist(), correct.tolist()

    def select(self, keep: list[int]) -> None:
        sel = torch.tensor(keep, device=self.device)
        with torch.no_grad():
            self.params = {k: v.detach().index_select(0, sel).requires_grad_(True) for k, v in self.params.items()}
            self.buffers = {k: v.index_select(0, sel) for k, v in self.buffers.items()}

    def member_state(self, j: int) -> dict:
        return {**{k: v[j].detach().cpu().clone() for k, v in self.params.items()},
                **{k: v[j].detach().cpu().clone() for k, v in self.buffers.items()}}

    def close(self):
        pass


class _ThreadStack:
    def __init__(self, models: list[torch.nn.Module], device: torch.device, precision: str, cl: bool,
                 threads: int):
        self.models, self.device, self.precision, self.cl = models, device, precision, cl
        self.names = [k for k, _ in models[0].named_parameters()]
        self.buffer_names = [k for k, _ in models[0].named_buffers()]
        self.params = {k: _stack([m.get_parameter(k).detach() for m in models], cl) for k in self.names}
        self.buffers = {k: torch.stack([m.get_buffer(k) for m in models]) for k in self.buffer_names}
        self._bind()
        self.threads = max(1, min(threads, len(models)))
        self.pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def _bind(self) -> None:
        """Point every member module's parameters and buffers at its row of the stacked tensors."""
        for j, m in enumerate(self.models):
            for k in self.names:
                mod, _, attr = k.rpartition(".")
                m.get_submodule(mod)._parameters[attr] = torch.nn.Parameter(self.params[k][j])
            for k in self.buffer_names:
                mod, _, attr = k.rpartition(".")
                m.get_submodule(mod)._buffers[attr] = self.buffers[k][j]

    def stacked(self) -> list[torch.Tensor]:
        return [self.params[k] for k in self.names]

    def _map(self, fn, rows: list[int]) -> list:
        """fn(row) for every row, spread over the threads; results in row order."""
        if self.pool is None:
            return [fn(j) for j in rows]
        parts = [rows[t::self.threads] for t in range(self.threads)]
        done = dict(kv for part in self.pool.map(lambda part: [(j, fn(j)) for j in part], parts) for kv in part)
        return [done[j] for j in rows]

    def train_step(self, x, y, batched: bool, cl: bool):
        def member(j):
            m = self.models[j]
            xj, yj = (x[j], y[j]) if batched else (x, y)
            if cl:
                xj = xj.contiguous(memory_format=torch.channels_last)
            for p in m.parameters():
                p.grad = None
            with _autocast(self.device, self.precision):  # cross_entropy autocasts to fp32
                out = m(xj)
                loss = F.cross_entropy(out, yj)
            loss.backward()
            return loss.detach(), (out.detach().argmax(1) == yj).sum()

        res = self._map(member, list(range(len(self.models))))
        losses = torch.stack([r[0] for r in res])
        correct = torch.stack([r[1] for r in res])
        grads = [torch.stack([m.get_parameter(k).grad for m in self.models]) for k in self.names]
        return losses, correct, grads

    @torch.no_grad()
    def evaluate(self, rows: list[int], n_active: int, data: Data, eb: int, cl: bool):
        def member(j):
            m = self.models[j]
            m.eval()
            loss_sum, correct = 0.0, 0
            try:
                for i in range(0, len(data.val_y), eb):  # as train.evaluate does
                    x = data.normalize(data.val_x[i:i + eb])
                    if cl:
                        x = x.contiguous(memory_format=torch.channels_last)
                    y = data.val_y[i:i + eb]
                    with _autocast(self.device, self.precision):
                        out = m(x)
                    if out.dtype == torch.bfloat16:
                        out = out.float()
                    loss_sum += F.cross_entropy(out, y, reduction="sum").item()
                    correct += (out.argmax(1) == y).sum().item()
            finally:
                m.train()
            return loss_sum, correct

        res = self._map(member, rows)
        return [r[0] for r in res], [r[1] for r in res]

    def select(self, keep: list[int]) -> None:
        sel = torch.tensor(keep, device=self.device)
        with torch.no_grad():
            self.params = {k: _stack(list(v.index_select(0, sel).unbind(0)), self.cl) for k, v in self.params.items()}
            self.buffers = {k: v.index_select(0, sel) for k, v in self.buffers.items()}
        self.models = [self.models[j] for j in keep]
        self._bind()

    def member_state(self, j: int) -> dict:
        return {k: v.detach().cpu().clone() for k, v in self.models[j].state_dict().items()}

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()


@contextlib.contextmanager
def _single_threaded_kernels(active: bool):
    n = torch.get_num_threads()
    if active:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if active:
            torch.set_num_threads(n)


def default_formulation(device: torch.device) -> str:
    return "vmap" if device.type == "cuda" else "threads"


# --------------------------------------------------------------------------- the group


def train_group(cfgs: list[RunConfig], data: Data, device: torch.device,
                on_step: Optional[GroupStepCallback] = None,
                max_members: Optional[int] = None,
                state_out: Optional[list] = None,
                formulation: Optional[str] = None) -> list[RunOutcome]:
    """Train every config of a group (see engine.group_key) as stacked members; one RunOutcome
    per config, in order. Chunks of at most `max_members` (default: cfgs[0].train.max_members,
    else all); on CUDA out-of-memory a chunk is halved and retrained. If `state_out` is a list,
    each member's final model state_dict (parameters and buffers, on the CPU) is appended to it.
    `formulation`: 'vmap' or 'threads' (default: vmap on CUDA, threads on CPU)."""
    formulation = formulation or default_formulation(device)
    if formulation not in ("vmap", "threads"):
        raise ValueError(f"unknown formulation {formulation!r}")
    limit = max_members or cfgs[0].train.max_members or len(cfgs)
    outcomes: list[RunOutcome] = []
    todo = [cfgs[i:i + limit] for i in range(0, len(cfgs), limit)]
    while todo:
        chunk = todo.pop(0)
        states: Optional[list] = [] if state_out is not None else None
        try:
            outcomes += _train_chunk(chunk, data, device, on_step, states, formulation)
        except torch.cuda.OutOfMemoryError:
            if len(chunk) == 1:
                raise
            torch.cuda.empty_cache()
            half = (len(chunk) + 1) // 2
            todo[:0] = [chunk[:half], chunk[half:]]
            continue
        if state_out is not None:
            state_out += states
    return outcomes


def _train_chunk(cfgs: list[RunConfig], data: Data, device: torch.device,
                 on_step: Optional[GroupStepCallback], states: Optional[list] = None,
                 formulation: str = "vmap") -> list[RunOutcome]:
    c0 = cfgs[0]
    t0cfg = c0.train
    B = t0cfg.batch_size
    bud = budget(c0, len(data.train_y))
    for c in cfgs[1:]:
        b = budget(c, len(data.train_y))
        if (b.total_steps, b.steps_per_epoch, b.epoch_size, c.train.batch_size) != \
                (bud.total_steps, bud.steps_per_epoch, bud.epoch_size, B):
            raise ValueError("members of a vectorized group must share batch size and budget")
    eval_every = bud.steps_per_epoch if t0cfg.eval_every == "epoch" else t0cfg.eval_every
    cl = bool(t0cfg.channels_last) and len(data.input_shape) == 3
    threads = torch.get_num_threads() if formulation == "threads" and device.type == "cpu" else 1

    # Models: each initialized exactly as train.train does (torch.manual_seed(seed), then build).
    models = []
    for c in cfgs:
        torch.manual_seed(c.train.seed)
        models.append(build_model(c.model, data.input_shape, data.num_classes).to(device))
    if formulation == "threads":
        stack = _ThreadStack(models, device, t0cfg.precision, cl, threads)
    else:
        stack = _VmapStack(models, device, t0cfg.precision, t0cfg.compile)
    del models
    with _single_threaded_kernels(threads > 1):
        try:
            return _loop(cfgs, data, device, on_step, states, stack, bud, B, eval_every, cl)
        finally:
            stack.close()


def _loop(cfgs, data, device, on_step, states, stack, bud, B, eval_every, cl) -> list[RunOutcome]:
    t0cfg = cfgs[0].train
    opt = StackedOptimizer(stack.stacked(), [c.optimizer for c in cfgs])
    members = [_Member(i, c, bud) for i, c in enumerate(cfgs)]
    active = list(members)  # row j of the stacks is active[j]
    gens = {s: torch.Generator().manual_seed(s) for s in dict.fromkeys(m.t.seed for m in members)}
    perms: dict[int, torch.Tensor] = {}

    start = time.perf_counter()
    data_t = comp_t = ep_data = ep_comp = 0.0
    epoch_times: list[dict] = []
    step = 0
    n_val = len(data.val_y)

    def run_eval(rows: list[int]):
        loss_sums, corrects = stack.evaluate(rows, len(active), data, t0cfg.eval_batch_size, cl)
        now = time.perf_counter() - start
        for j, ls, cr in zip(rows, loss_sums, corrects):
            m = active[j]
            vloss, vacc = ls / n_val, cr / n_val
            for k, v in (("step", step), ("epoch", step / bud.steps_per_epoch), ("examples", step * B),
                         ("elapsed", now), ("lr", m.lr),
                         ("train_loss", m.win_loss / max(m.win_n, 1)), ("train_acc", m.win_correct / max(m.win_n, 1)),
                         ("val_loss", vloss), ("val_acc", vacc)):
                m.E[k].append(v)
            m.win_loss, m.win_correct, m.win_n = 0.0, 0, 0
            t = m.t
            if m.hit_acc is None and t.target_val_accuracy is not None and vacc >= t.target_val_accuracy:
                m.hit_acc = {"step": step, "examples": step * B, "seconds": time.perf_counter() - start}
            m.sched.report(vloss if m.cfg.schedule.monitor == "val_loss" else vacc)

    def finish(m: _Member):
        if states is not None:
            m.state = stack.member_state(active.index(m))
        ets = epoch_times + [{"epoch": math.ceil(step / bud.steps_per_epoch), "data_s": ep_data, "compute_s": ep_comp}]
        m.outcome = _outcome(m, step, bud, ets, time.perf_counter() - start, data_t, comp_t, device, len(cfgs))

    while step < bud.total_steps and active:
        pos = step % bud.steps_per_epoch
        live_seeds = list(dict.fromkeys(m.t.seed for m in active))
        if pos == 0:  # a new epoch: a fresh order per seed (as train.train draws it)
            for s in live_seeds:
                perms[s] = torch.randperm(len(data.train_y), generator=gens[s])[: bud.epoch_size].to(device)
            if step > 0:
                epoch_times.append({"epoch": step // bud.steps_per_epoch, "data_s": ep_data, "compute_s": ep_comp})
                ep_data = ep_comp = 0.0

        t0 = time.perf_counter()
        if len(live_seeds) == 1:  # shared batch: the input is not batched over members
            idx = perms[live_seeds[0]][pos * B:(pos + 1) * B]
            x, y = data.normalize(data.train_x[idx]), data.train_y[idx]
            batched = False
        else:
            idx = torch.stack([perms[s][pos * B:(pos + 1) * B] for s in live_seeds])  # [S, B]
            xs, ys = data.normalize(data.train_x[idx.flatten()]), data.train_y[idx]
            xs = xs.view(len(live_seeds), B, *xs.shape[1:])
            which = torch.tensor([live_seeds.index(m.t.seed) for m in active], device=device)
            x, y = xs.index_select(0, which), ys.index_select(0, which)
            batched = True
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t1 = time.perf_counter()

        lrs = [m.sched.lr(step) for m in active]
        for m, lr in zip(active, lrs):
            m.lr = lr
        losses, correct, grads = stack.train_step(x, y, batched, cl)
        with torch.no_grad():
            gnorm = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)
            opt.step(torch.tensor(lrs, dtype=torch.float64, device=device), grads)
            stats = torch.stack([losses.double(), correct.double(), gnorm.double()]).cpu()
        t2 = time.perf_counter()
        step += 1
        dt, ct = t1 - t0, t2 - t1
        data_t += dt; comp_t += ct; ep_data += dt; ep_comp += ct
        loss_l, correct_l, gn_l = stats.tolist()

        eval_now = step % eval_every == 0 or step == bud.total_steps
        to_eval, stopping = [], []
        for j, m in enumerate(active):
            t = m.t
            loss_v, corr, lr = loss_l[j], int(correct_l[j]), m.lr
            m.steps = step
            if m.initial_loss is None:
                m.initial_loss = loss_v
            if step % t.log_every == 0 or step == bud.total_steps or not math.isfinite(loss_v):
                for k, v in (("step", step), ("epoch", step / bud.steps_per_epoch), ("examples", step * B),
                             ("lr", lr), ("batch_size", B), ("train_loss", loss_v), ("train_acc", corr / B),
                             ("grad_norm", gn_l[j]), ("data_time", dt), ("compute_time", ct),
                             ("elapsed", t2 - start)):
                    m.M[k].append(v)
            if not math.isfinite(loss_v) or loss_v > t.divergence_factor * m.initial_loss:
                m.status = DIVERGED
                m.reason = f"loss {loss_v:.4g} at step {step} (first step: {m.initial_loss:.4g})"
                m.stop = True
                stopping.append(j)
                continue
            m.win_loss += loss_v * B; m.win_correct += corr; m.win_n += B
            s = t.target_smoothing
            m.ema = s * m.ema + (1 - s) * loss_v
            m.ema_steps += 1
            if m.hit_loss is None and t.target_train_loss is not None \
                    and m.ema / (1 - s ** m.ema_steps) <= t.target_train_loss:
                m.hit_loss = {"step": step, "examples": step * B, "seconds": time.perf_counter() - start}
            after = m.hit_loss is not None and t.stop_after_target is not None \
                and step >= m.hit_loss["step"] + t.stop_after_target
            if eval_now or after:
                to_eval.append(j)
            if after:
                m.stop = True
                stopping.append(j)
        if on_step is not None:
            on_step(step, bud.total_steps, loss_l[0], active[0].lr, len(active))
        if to_eval:
            run_eval(to_eval)
        if stopping:
            for j in stopping:
                finish(active[j])
            keep = [j for j in range(len(active)) if not active[j].stop]
            if keep:
                sel = torch.tensor(keep, device=device)
                stack.select(keep)
                opt.select(sel)
                opt.set_params(stack.stacked())
            active = [active[j] for j in keep]

    for m in active:
        finish(m)
    if states is not None:
        states += [m.state for m in members]
    return [m.outcome for m in members]


def _outcome(m: _Member, step: int, bud, epoch_times: list, elapsed: float, data_t: float,
             comp_t: float, device, group_size: int) -> RunOutcome:
    summary = run_summary(m.cfg, bud, m.status, step, m.lr, m.initial_loss, m.E, m.hit_loss, m.hit_acc,
                          {"time_s": elapsed, "data_time_s": data_t, "compute_time_s": comp_t,
                           "epoch_times": epoch_times, "device": str(device),
                           "resumed_at_step": None,  # no mid-run checkpoints in a group
                           "engine": "vectorized", "group_size": group_size})
    return RunOutcome(status=m.status, metrics=m.M, evals=m.E, summary=summary, error=m.reason)
