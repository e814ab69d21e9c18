"""A group of runs trained as one stacked model, top to bottom.

Each member has the sequential engine's pieces: its own schedule, its own tracker
(tracker.py: logging, targets, divergence), batches from its seed's sampler (batches.py;
members that share a seed share one unbatched input [B, ...], cheaper; otherwise the input is
[members, B, ...]). A member that diverges or stops after its target is finished exactly as
the sequential engine finishes it, then removed from the stack (parameters, buffers,
optimizer state, settings): the others go on untouched and no compute is spent on it.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import torch

from lrsweep.config import RunConfig
from lrsweep.datasets import Data
from lrsweep.schedules import LRSchedule
from lrsweep.training.batches import BatchSampler
from lrsweep.training.setup import Budget, budget, init_model, uses_channels_last
from lrsweep.training.tracker import RunTracker, TrainedRun
from lrsweep.training.vectorized.optim import StackedOptimizer
from lrsweep.training.vectorized.stacks import (
    ThreadStack, VmapStack, default_formulation, single_threaded_kernels,
)

# on_step(step, total_steps, loss, lr, members): loss and lr of the first member still training.
GroupStepCallback = Callable[[int, int, float, float, int], None]
FORMULATIONS = ("vmap", "threads")


def train_group(cfgs: list[RunConfig], data: Data, device: torch.device,
                on_step: Optional[GroupStepCallback] = None,
                max_members: Optional[int] = None,
                state_out: Optional[list] = None,
                formulation: Optional[str] = None) -> list[TrainedRun]:
    """Train every config of a group (units.group_key) as stacked members; one TrainedRun per
    config, in order. Chunks of at most `max_members` (default: cfgs[0].train.max_members, else
    all); on CUDA out-of-memory a chunk is halved and retrained (runs are deterministic given
    the seed). If `state_out` is a list, each member's final model state_dict (parameters and
    buffers, on the CPU) is appended to it. `formulation`: 'vmap' or 'threads' (default: vmap
    on CUDA, threads on CPU)."""
    formulation = formulation or default_formulation(device)
    if formulation not in FORMULATIONS:
        raise ValueError(f"formulation: expected one of ({', '.join(FORMULATIONS)}), got {formulation!r}")
    limit = max_members or cfgs[0].train.max_members or len(cfgs)
    outcomes: list[TrainedRun] = []
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


def _shared_budget(cfgs: list[RunConfig], n_train: int) -> Budget:
    bud = budget(cfgs[0], n_train)
    for c in cfgs[1:]:
        if budget(c, n_train) != bud or c.train.batch_size != cfgs[0].train.batch_size:
            raise ValueError("members of a vectorized group must share batch size and budget")
    return bud


def _train_chunk(cfgs: list[RunConfig], data: Data, device: torch.device,
                 on_step: Optional[GroupStepCallback], states: Optional[list] = None,
                 formulation: str = "vmap") -> list[TrainedRun]:
    t0 = cfgs[0].train
    bud = _shared_budget(cfgs, len(data.train_y))
    cl = uses_channels_last(cfgs[0], data.input_shape)
    threads = torch.get_num_threads() if formulation == "threads" and device.type == "cpu" else 1
    models = [init_model(c, data, device) for c in cfgs]  # each exactly as the sequential engine's
    if formulation == "threads":
        stack = ThreadStack(models, device, t0.precision, cl, threads)
    else:
        stack = VmapStack(models, device, t0.precision, t0.compile)
    del models
    with single_threaded_kernels(threads > 1):
        try:
            return _loop(cfgs, data, device, on_step, states, stack, bud, cl)
        finally:
            stack.close()


class _Member:
    """One run of the group: its config, schedule and tracker."""

    def __init__(self, cfg: RunConfig, bud: Budget, start: float):
        self.cfg = cfg
        self.sched = LRSchedule(cfg.schedule, cfg.effective_lr, bud.total_steps, bud.steps_per_epoch)
        self.track = RunTracker(cfg, bud, start)
        self.outcome: Optional[TrainedRun] = None
        self.state: Optional[dict] = None  # final state_dict, when asked for


def _batch(data: Data, samplers: dict, active: list[_Member], step: int, device):
    """The step's inputs: [B, ...] shared when every live member has one seed, else [M, B, ...]."""
    seeds = list(dict.fromkeys(m.cfg.train.seed for m in active))
    if len(seeds) == 1:
        idx = samplers[seeds[0]].indices(step)
        return data.normalize(data.train_x[idx]), data.train_y[idx], False
    idx = torch.stack([samplers[s].indices(step) for s in seeds])  # [S, B]
    xs, ys = data.normalize(data.train_x[idx.flatten()]), data.train_y[idx]
    xs = xs.view(len(seeds), idx.shape[1], *xs.shape[1:])
    which = torch.tensor([seeds.index(m.cfg.train.seed) for m in active], device=device)
    return xs.index_select(0, which), ys.index_select(0, which), True


def _loop(cfgs, data, device, on_step, states, stack, bud: Budget, cl: bool) -> list[TrainedRun]:
    eval_batch = cfgs[0].train.eval_batch_size
    opt = StackedOptimizer(stack.stacked(), [c.optimizer for c in cfgs])
    start = time.perf_counter()
    members = [_Member(c, bud, start) for c in cfgs]
    active = list(members)  # row j of the stacks is active[j]
    samplers = {s: BatchSampler(s, len(data.train_y), bud, cfgs[0].train.batch_size, device)
                for s in dict.fromkeys(c.train.seed for c in cfgs)}
    step = 0
    while step < bud.total_steps and active:
        if step % bud.steps_per_epoch == 0:
            for m in active:
                m.track.new_epoch(step)
        t0 = time.perf_counter()
        x, y, batched = _batch(data, samplers, active, step, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t1 = time.perf_counter()

        lrs = [m.sched.lr(step) for m in active]
        losses, correct, grads = stack.train_step(x, y, batched, cl)
        with torch.no_grad():
            gnorm = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)
            opt.step(torch.tensor(lrs, dtype=torch.float64, device=device), grads)
            stats = torch.stack([losses.double(), correct.double(), gnorm.double()]).cpu()
        t2 = time.perf_counter()
        step += 1
        loss_l, correct_l, gn_l = stats.tolist()

        decisions = [m.track.on_step(step, lr, loss_l[j], int(correct_l[j]), gn_l[j], t1 - t0, t2 - t1)
                     for j, (m, lr) in enumerate(zip(active, lrs))]
        if on_step is not None:
            on_step(step, bud.total_steps, loss_l[0], lrs[0], len(active))
        to_eval = [j for j, d in enumerate(decisions) if d.evaluate]
        if to_eval:
            vls, vas = stack.evaluate(to_eval, len(active), data, eval_batch, cl)
            for j, vl, va in zip(to_eval, vls, vas):
                active[j].sched.report(active[j].track.on_eval(vl, va))
        stopping = [j for j, d in enumerate(decisions) if d.stop]
        for j in stopping:
            _finish(active[j], j, stack, states, device, len(cfgs))
        if stopping:
            keep = [j for j in range(len(active)) if j not in stopping]
            if keep:
                stack.select(keep)
                opt.select(torch.tensor(keep, device=device))
                opt.set_params(stack.stacked())
            active = [active[j] for j in keep]

    for j, m in enumerate(active):
        _finish(m, j, stack, states, device, len(cfgs))
    if states is not None:
        states += [m.state for m in members]
    return [m.outcome for m in members]


def _finish(m: _Member, row: int, stack, states, device, group_size: int) -> None:
    if states is not None:
        m.state = stack.member_state(row)
    m.outcome = m.track.finish(device, "vectorized", group_size)
