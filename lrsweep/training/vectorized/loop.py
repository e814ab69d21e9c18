"""A group of runs trained as one stacked model, top to bottom.

Each member has the sequential engine's pieces: its own schedule, its own tracker
(tracker.py: logging, targets, divergence), batches from its seed's sampler (batches.py;
members that share a seed share one unbatched input [B, ...], cheaper; otherwise the input is
[members, B, ...]). A member that diverges or stops after its target is finished exactly as
the sequential engine finishes it, then removed from the stack (parameters, buffers,
optimizer state, settings): the others go on untouched and no compute is spent on it.
"""
from __future__ import annotations

import itertools
import math
import time
from typing import Callable, Optional

import torch

from lrsweep.config import RunConfig
from lrsweep.datasets import Data
from lrsweep.results import RunStatus
from lrsweep.schedules import LRSchedule
from lrsweep.training import noise_scale
from lrsweep.training.batches import BatchSampler
from lrsweep.training.setup import Budget, budget, init_model, uses_channels_last
from lrsweep.training.tracker import RunTracker, TrainedRun
from lrsweep.training.vectorized.optim import StackedOptimizer
from lrsweep.training.vectorized.stacks import (
    ThreadStack, VmapStack, check_stackable, default_formulation, single_threaded_kernels,
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
    check_stackable(models[0])
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


def _seed_rows(active: list[_Member], device) -> tuple[list[int], Optional[torch.Tensor]]:
    """The live members' seeds, and for batched inputs the row of its seed's batch each member
    takes (None: one shared seed). Fixed while the members are: computed once per block."""
    seeds = list(dict.fromkeys(m.cfg.train.seed for m in active))
    if len(seeds) == 1:
        return seeds, None
    return seeds, torch.tensor([seeds.index(m.cfg.train.seed) for m in active], device=device)


def _batch(data: Data, samplers: dict, seeds: list[int], which: Optional[torch.Tensor], step: int):
    """The step's inputs: [B, ...] shared when every live member has one seed, else [M, B, ...]."""
    if which is None:
        idx = samplers[seeds[0]].indices(step)
        return data.normalize(data.train_x[idx]), data.train_y[idx], False
    idx = torch.stack([samplers[s].indices(step) for s in seeds])  # [S, B]
    xs, ys = data.normalize(data.train_x[idx.flatten()]), data.train_y[idx]
    xs = xs.view(len(seeds), idx.shape[1], *xs.shape[1:])
    return xs.index_select(0, which), ys.index_select(0, which), True


def _block_end(step: int, active: list[_Member], bud: Budget, eval_every: int, sync_every: int) -> int:
    """The last step of the block that starts after `step` steps: at most sync_every steps, and
    ending at the next evaluation, the budget's end and any member's stop-after-target step, so
    that every evaluation and every early stop happens at its exact step. A member that has a
    stop_after_target and has not reached its target yet is evaluated at the step it does (the
    tracker asks for it): the block ends where its smoothed loss could first reach the target
    (RunTracker.steps_until_target_possible), so the hit is at a block's end or in a later block."""
    end = min(step + sync_every, bud.total_steps, (step // eval_every + 1) * eval_every)
    for m in active:
        t, hit = m.cfg.train, m.track.hit_loss
        if t.stop_after_target is None or t.target_train_loss is None:
            continue
        end = min(end, hit["step"] + t.stop_after_target if hit else step + m.track.steps_until_target_possible())
    return max(end, step + 1)


def _loop(cfgs, data, device, on_step, states, stack, bud: Budget, cl: bool) -> list[TrainedRun]:
    """Steps run in blocks with no host synchronisation inside: the per-step losses, accuracies
    and gradient norms stay on the device and are copied once per block, then fed to the
    trackers step by step. A member that diverges inside a block runs to the block's end (at
    most sync_every - 1 steps more, isolated from the others) and its steps past the divergence
    are never recorded. On CUDA the block's compute time is spread evenly over its steps.
    With train.noise_scale, a measured step's |G|^2 and tr(Sigma) estimates (noise_scale.py)
    are two more rows of those numbers, copied with them."""
    eval_batch, eval_every = cfgs[0].train.eval_batch_size, bud.eval_every(cfgs[0])
    sync_every = cfgs[0].train.sync_every
    ns = cfgs[0].train.noise_scale  # shared by the group (not a per-member field)
    opt = StackedOptimizer(stack.stacked(), [c.optimizer for c in cfgs])
    start = time.perf_counter()
    members = [_Member(c, bud, start) for c in cfgs]
    active = list(members)  # row j of the stacks is active[j]
    samplers = {s: BatchSampler(s, len(data.train_y), bud, cfgs[0].train.batch_size, device)
                for s in dict.fromkeys(c.train.seed for c in cfgs)}
    step = 0
    while step < bud.total_steps and active:
        end = _block_end(step, active, bud, eval_every, sync_every)
        lrs = [[m.sched.lr(s) for m in active] for s in range(step, end)]  # fixed between evaluations
        lr_dev = torch.tensor(lrs, dtype=torch.float64, device=device)  # one copy per block
        seeds, which = _seed_rows(active, device)
        stats, times = [], []
        block_start = time.perf_counter()
        for k in range(end - step):
            t0 = time.perf_counter()
            x, y, batched = _batch(data, samplers, seeds, which, step + k)
            t1 = time.perf_counter()
            losses, correct, grads = stack.train_step(x, y, batched, cl)
            small = None  # train.noise_scale: a sub-batch's gradients, before the update
            if ns is not None and noise_scale.measured(ns, step + k):
                b = noise_scale.small_batch_size(ns, y.shape[-1])
                small = stack.sub_batch_grads(x, y, batched, cl, b)
            with torch.no_grad():
                gnorm = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)
                row = [losses.double(), correct.double(), gnorm.double()]
                if ns is not None:  # on the device, copied with the block's other numbers
                    row += noise_scale.estimates(small, grads, b, y.shape[-1], stacked=True) if small is not None \
                        else [torch.full_like(row[2], math.nan)] * 2
                opt.step(lr_dev[k], grads)
                stats.append(torch.stack(row))
            times.append((t1 - t0, time.perf_counter() - t1))
        host = torch.stack(stats).cpu().tolist()  # [steps, 3 (5 with noise_scale), members]: the block's one sync
        if device.type == "cuda":  # kernels ran asynchronously: only the block's total is known
            per = (time.perf_counter() - block_start - sum(d for d, _ in times)) / len(times)
            times = [(d, per) for d, _ in times]
        ends = list(itertools.accumulate((d + c for d, c in times), initial=block_start - start))[1:]

        stopped: dict[int, int] = {}  # row -> step it stopped at
        to_eval = []
        for k, (loss_l, correct_l, gn_l, *noise_l) in enumerate(host):
            s = step + k + 1
            if (s - 1) % bud.steps_per_epoch == 0:
                for j, m in enumerate(active):
                    if j not in stopped:
                        m.track.new_epoch(s - 1)
            for j, m in enumerate(active):
                if j in stopped:
                    continue  # steps past a divergence are not this run's
                if ns is not None and noise_scale.measured(ns, s - 1):
                    m.track.on_noise(noise_l[0][j], noise_l[1][j])
                d = m.track.on_step(s, lrs[k][j], loss_l[j], int(correct_l[j]), gn_l[j], *times[k], now=ends[k])
                if (d.evaluate or (d.stop and m.track.status is RunStatus.COMPLETE)) and s != end:
                    raise RuntimeError(f"internal: step {s} needs the model inside a block ending at {end}")
                if d.evaluate:
                    to_eval.append(j)
                if d.stop:
                    stopped[j] = s
        step = end
        if on_step is not None:
            on_step(step, bud.total_steps, host[-1][0][0], lrs[-1][0], len(active))
        if to_eval:
            vls, vas = stack.evaluate(to_eval, len(active), data, eval_batch, cl)
            for j, vl, va in zip(to_eval, vls, vas):
                active[j].sched.report(active[j].track.on_eval(vl, va))
        for j in stopped:
            _finish(active[j], j, stack, states, device, len(cfgs))
        if stopped:
            keep = [j for j in range(len(active)) if j not in stopped]
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
