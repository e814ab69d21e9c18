"""The two formulations of a group's forward/backward, with the same numbers
(tests/test_vectorized.py). Both hold the members' parameters as stacked tensors [M, ...]
(what StackedOptimizer updates) and give per step the members' losses, correct counts and
stacked gradients.

- "vmap": one forward/backward for all members, torch.func.vmap over functional_call on the
  stacked parameters (torch.func.stack_module_state); the members' losses are summed before
  backward, and member i's parameters only reach loss i, so each gets exactly its own gradient.
  The fast path on GPUs; on a 2-core CPU measured 2-4x slower per member-step than separate
  models (grouped convolutions), so there:
- "threads": each member is an ordinary nn.Module whose parameters and buffers are views into
  the stacked tensors; members run forward/backward in parallel Python threads (one per
  intra-op thread the process had), each with single-threaded kernels (torch releases the GIL
  in kernels). Each member's arithmetic is then exactly the sequential engine's with one thread.
"""
from __future__ import annotations

import contextlib
import copy
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from lrsweep.datasets import Data
from lrsweep.training.evaluate import autocast as _autocast, evaluate
from lrsweep.training.noise_scale import module_gradient, untouched_rng


def _stack(tensors: list[torch.Tensor], channels_last: bool) -> torch.Tensor:
    """torch.stack, laid out so every [i] slice of a 4-D member tensor is channels_last if asked."""
    t = torch.stack(tensors)
    if channels_last and t.dim() == 5:
        m, o, i, h, w = t.shape
        out = torch.empty((m, o, h, w, i), dtype=t.dtype, device=t.device).permute(0, 1, 4, 2, 3)
        out.copy_(t)
        return out
    return t


def check_stackable(model: torch.nn.Module) -> None:
    """Refuse what stacking would silently get wrong: a parameter shared between modules (tied
    weights) would be stacked once and the other use left unstacked."""
    named = list(model.named_parameters(remove_duplicate=False))
    if len(named) != len(dict(model.named_parameters())):
        raise ValueError("the model shares parameters between modules (tied weights)")


class VmapStack:
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

    def sub_batch_grads(self, x, y, batched: bool, cl: bool, b: int) -> list[torch.Tensor]:
        """train.noise_scale: the stacked gradients of the batch's first b examples, leaving
        .grad, the buffers and the random state as they were (noise_scale.module_gradient)."""
        xs, ys = (x[:, :b], y[:, :b]) if batched else (x[:b], y[:b])
        if cl and not batched:
            xs = xs.contiguous(memory_format=torch.channels_last)
        buffers = {k: v.clone() for k, v in self.buffers.items()}
        with untouched_rng(self.device):  # eager: another shape would recompile the compiled step's graph
            losses, _ = self._train_forward(self.params, buffers, xs, ys, batched)
        return list(torch.autograd.grad(losses.sum(), self.stacked()))

    @torch.no_grad()
    def evaluate(self, rows: list[int], n_active: int, data: Data, eb: int, cl: bool):
        """(val losses, val accuracies) of members `rows`, in one vmapped pass per batch."""
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
        n = len(data.val_y)
        return [ls / n for ls in loss_sum.tolist()], [c / n for c in correct.tolist()]

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


class ThreadStack:
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

    def sub_batch_grads(self, x, y, batched: bool, cl: bool, b: int) -> list[torch.Tensor]:
        """train.noise_scale: the stacked gradients of the batch's first b examples (each member's
        as the sequential engine computes it, noise_scale.module_gradient)."""
        def member(j):
            xj, yj = (x[j, :b], y[j, :b]) if batched else (x[:b], y[:b])
            if cl:
                xj = xj.contiguous(memory_format=torch.channels_last)
            return module_gradient(self.models[j], xj, yj, _autocast(self.device, self.precision))

        res = self._map(member, list(range(len(self.models))))
        return [torch.stack([r[i] for r in res]) for i in range(len(self.names))]

    def evaluate(self, rows: list[int], n_active: int, data: Data, eb: int, cl: bool):
        """(val losses, val accuracies) of members `rows`, each evaluated as the sequential engine does."""
        res = self._map(lambda j: evaluate(self.models[j], data, eb, cl, self.precision), rows)
        return [loss for loss, _ in res], [acc for _, acc in res]

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
def single_threaded_kernels(active: bool):
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
