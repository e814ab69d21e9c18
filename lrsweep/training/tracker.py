"""The bookkeeping of one run, shared by every engine: what is logged per step (metrics.csv)
and per evaluation (evals.csv), when a run has diverged or reached a target, its timings, and
result.json's training fields. An engine feeds it numbers; the tracker decides what they mean.

The vectorized engine keeps one tracker per member, so a column added here appears in both
engines' files. Its whole state is checkpointable (state_dict / load_state_dict).

Rules (from the source documents):
- targets are recorded when first reached (document 001's time-to-98%, document 003's S and E);
  the train-loss target is judged on a bias-corrected EMA of the step loss (single batches are
  noisy); the val-acc target on each evaluation;
- a run has diverged at a NaN/inf step loss, or when the smoothed step loss (a bias-corrected
  EMA, train.divergence_smoothing) exceeds divergence_factor x its first loss: it stops early
  and that is a result, not an error. Smoothed, because at B = 1 a single confidently wrong
  example gives a step loss > 10x the first while the run is learning fine;
- `stop_after_target`: stop this many steps after the train-loss target (document 003), with an
  evaluation at the step the target is reached and one at the stop (its denoised judging);
- `stop_if_stalled` (off by default): from a given step on, a run whose smoothed loss (the
  target's EMA) is not at least `min_drop` below its first loss is stopped as `stalled`: at a
  too-high LR a run can sit at chance for its whole budget without ever blowing up.
- `noise_scale` (off by default): the smoothed |G|^2, tr(Sigma) and B_simple as columns of
  their own (noise_scale.py), from the measurements an engine passes to on_noise.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional

from lrsweep.config import RunConfig
from lrsweep.results import RunStatus
from lrsweep.training.noise_scale import NOISE_COLUMNS, NoiseAverages
from lrsweep.training.setup import Budget

STEP_COLUMNS = ("step", "epoch", "examples", "lr", "batch_size", "train_loss", "train_acc",
                "grad_norm", "data_time", "compute_time", "elapsed")
EVAL_COLUMNS = ("step", "epoch", "examples", "elapsed", "lr", "train_loss", "train_acc", "val_loss", "val_acc")
# Loop state saved in a checkpoint, besides the tables (names kept from checkpoint version 1).
_STATE = ("initial_loss", "ema", "ema_steps", "div_ema", "hit_loss", "hit_acc", "win_loss", "win_correct",
          "win_n", "data_t", "comp_t", "ep_data", "ep_comp", "stop_reason")


class StopReason:
    """Why a run ended (result.json's stop_reason)."""
    BUDGET = "budget"  # trained all its steps
    TARGET = "stop_after_target"  # train.stop_after_target steps after the train-loss target
    NONFINITE = "nonfinite_loss"  # diverged: a NaN/inf step loss
    BLOWUP = "loss_blowup"  # diverged: the smoothed loss above divergence_factor x the first
    STALLED = "stalled"  # train.stop_if_stalled: the smoothed loss had not fallen enough


@dataclass(frozen=True)
class StepDecision:
    evaluate: bool  # evaluate now (the schedule's or the budget's end, or a stop after the target)
    stop: bool  # the run is over (diverged, or stop_after_target reached)
    epoch_end: bool = False  # this step completed an epoch of examples (a checkpoint point)


@dataclass
class TrainedRun:
    """What an engine returns per run: the tables and result.json's training fields."""
    status: RunStatus
    metrics: dict[str, list] = field(default_factory=dict)
    evals: dict[str, list] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    error: Optional[str] = None


class RunTracker:
    def __init__(self, cfg: RunConfig, bud: Budget, start: Optional[float] = None):
        self.cfg, self.t, self.bud = cfg, cfg.train, bud
        self.B = cfg.train.batch_size  # the initial one: train.batch_schedule may grow it
        # An epoch is steps_per_epoch x B_0 examples (setup.Budget); epochs count examples seen.
        self.epoch_examples = bud.steps_per_epoch * self.B
        self.examples = 0  # seen so far: a running count, as B may change between steps
        self.last_B = self.B  # the batch size of the latest step
        self.eval_every = bud.eval_every(cfg)
        self.start = time.perf_counter() if start is None else start
        # train.noise_scale: B_simple's smoothed estimates (noise_scale.py), as columns of their own
        ns = cfg.train.noise_scale
        self.noise: Optional[NoiseAverages] = None if ns is None else NoiseAverages(ns, cfg.train.batch_size)
        self.metrics: dict[str, list] = {k: [] for k in STEP_COLUMNS + (NOISE_COLUMNS if ns else ())}
        self.evals: dict[str, list] = {k: [] for k in EVAL_COLUMNS}
        self.epoch_times: list[dict] = []
        self.status, self.reason = RunStatus.COMPLETE, None
        self.initial_loss: Optional[float] = None
        self.ema, self.ema_steps = 0.0, 0  # the train-loss target's EMA
        self.div_ema = 0.0  # the divergence rule's EMA (bias-corrected over ema_steps + 1 steps)
        self.stop_reason = StopReason.BUDGET
        self.hit_loss: Optional[dict] = None  # {step, examples, seconds} when first reached
        self.hit_acc: Optional[dict] = None
        self.win_loss, self.win_correct, self.win_n = 0.0, 0, 0  # train loss/acc since the last evaluation
        self.data_t = self.comp_t = self.ep_data = self.ep_comp = 0.0
        self.step, self.lr = 0, cfg.effective_lr
        self.resumed_at: Optional[int] = None
        st = cfg.train.stop_if_stalled  # judged from this step on (None: never)
        self.stall_from = None if st is None else (
            st.steps if st.steps is not None else max(1, math.ceil(st.epochs * bud.steps_per_epoch)))

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def _at(self, step: int, now: Optional[float] = None) -> dict:
        return {"step": step, "examples": self.examples, "seconds": self.elapsed() if now is None else now}

    # ------------------------------------------------------------------ feeding it

    def new_epoch(self, step: int) -> None:
        """Call before the first step of each epoch (step: steps done so far)."""
        if step > 0:
            self.epoch_times.append({"epoch": self.examples // self.epoch_examples,
                                     "data_s": self.ep_data, "compute_s": self.ep_comp})
            self.ep_data = self.ep_comp = 0.0

    def on_step(self, step: int, lr: float, loss: float, correct: int, grad_norm: float,
                data_time: float, compute_time: float, now: Optional[float] = None,
                batch_size: Optional[int] = None) -> StepDecision:
        """Record step `step` (1-based, after the update) and say what the engine does next.
        `now`: seconds since the start when the step ended (default: now; an engine that reports
        steps after the fact, in blocks, passes the step's own time). `batch_size`: the step's
        (default: train.batch_size; train.batch_schedule changes it)."""
        now = self.elapsed() if now is None else now
        t, B = self.t, self.B if batch_size is None else batch_size
        self.step, self.lr, self.last_B = step, lr, B
        epochs_before = self.examples // self.epoch_examples
        self.examples += B
        epoch_end = self.examples // self.epoch_examples > epochs_before
        self.data_t += data_time; self.comp_t += compute_time
        self.ep_data += data_time; self.ep_comp += compute_time
        if self.initial_loss is None:
            self.initial_loss = loss
        last = step == self.bud.total_steps
        if step % t.log_every == 0 or last or not math.isfinite(loss):
            for k, v in zip(STEP_COLUMNS, (step, self.examples / self.epoch_examples, self.examples, lr, B, loss,
                                           correct / B, grad_norm, data_time, compute_time, now)):
                self.metrics[k].append(v)
            if self.noise is not None:  # the latest estimate on every row
                for k, v in self.noise.columns().items():
                    self.metrics[k].append(v)
        if not math.isfinite(loss):
            return self._stopped(RunStatus.DIVERGED, StopReason.NONFINITE,
                                 f"loss {loss} at step {step} (first step: {self.initial_loss:.4g})")
        d = t.divergence_smoothing
        self.div_ema = d * self.div_ema + (1 - d) * loss
        smoothed = self.div_ema / (1 - d ** (self.ema_steps + 1))
        if smoothed > t.divergence_factor * self.initial_loss:
            return self._stopped(RunStatus.DIVERGED, StopReason.BLOWUP,
                                 f"smoothed loss {smoothed:.4g} > {t.divergence_factor:g} x the first "
                                 f"step's {self.initial_loss:.4g} at step {step} (step loss {loss:.4g})")
        self.win_loss += loss * B; self.win_correct += correct; self.win_n += B
        s = t.target_smoothing
        self.ema = s * self.ema + (1 - s) * loss
        self.ema_steps += 1
        at_target = False  # evaluate at the hit too: document 003's denoised judging compares the
        # val loss there with the one at the stop (analysis/metrics.val_loss_drop_after_target)
        smooth = self.ema / (1 - s ** self.ema_steps)  # bias-corrected: the target's and the stall rule's
        if self.hit_loss is None and t.target_train_loss is not None and smooth <= t.target_train_loss:
            self.hit_loss = self._at(step, now)
            at_target = t.stop_after_target is not None
        if self.stall_from is not None and step >= self.stall_from:
            if smooth > (1 - t.stop_if_stalled.min_drop) * self.initial_loss:
                return self._stopped(RunStatus.STALLED, StopReason.STALLED,
                                     f"stalled: smoothed loss {smooth:.4g} at step {step} is not {t.stop_if_stalled.min_drop:.0%} "
                                     f"below the first step's {self.initial_loss:.4g} (train.stop_if_stalled)")
        after = self.hit_loss is not None and t.stop_after_target is not None \
            and step >= self.hit_loss["step"] + t.stop_after_target
        if after:
            self.stop_reason = StopReason.TARGET
        due = epoch_end if t.eval_every == "epoch" else step % self.eval_every == 0
        return StepDecision(evaluate=due or last or after or at_target, stop=after, epoch_end=epoch_end)

    def steps_until_target_possible(self) -> int:
        """A lower bound (>= 1) on the steps from now until the smoothed loss can first reach
        target_train_loss, for an engine that steps in blocks and must stop at the hit to evaluate:
        losses are >= 0, so each step keeps at least a factor s of the EMA, and the bias
        correction only raises it; the hit needs s^k x EMA <= target (floor, not ceil: rounding
        can only shorten the bound)."""
        s, target = self.t.target_smoothing, self.t.target_train_loss
        if target is None or s == 0 or self.ema <= target:
            return 1
        return max(1, math.floor(math.log(target / self.ema) / math.log(s)))

    def on_noise(self, g2: float, trace: float) -> None:
        """A noise-scale measurement (|G|^2, tr(Sigma) estimates) on the batch of the step about
        to be recorded: call before that step's on_step."""
        self.noise.add(self.step + 1, g2, trace)

    def _stopped(self, status: RunStatus, why: str, message: str) -> StepDecision:
        """The run ends here as `status` (diverged, stalled): a result, not an error."""
        self.status, self.reason, self.stop_reason = status, message, why
        return StepDecision(evaluate=False, stop=True)

    def on_eval(self, val_loss: float, val_acc: float) -> float:
        """Record an evaluation after the current step; returns the value the schedule monitors."""
        step = self.step
        train_loss, train_acc = self.win_loss / max(self.win_n, 1), self.win_correct / max(self.win_n, 1)
        for k, v in zip(EVAL_COLUMNS, (step, self.examples / self.epoch_examples, self.examples, self.elapsed(), self.lr,
                                       train_loss, train_acc, val_loss, val_acc)):
            self.evals[k].append(v)
        self.win_loss, self.win_correct, self.win_n = 0.0, 0, 0
        if self.hit_acc is None and self.t.target_val_accuracy is not None and val_acc >= self.t.target_val_accuracy:
            self.hit_acc = self._at(step)
        return val_loss if self.cfg.schedule.monitor == "val_loss" else val_acc

    # ------------------------------------------------------------------ the result

    def finish(self, device, engine: str, group_size: int = 1) -> TrainedRun:
        """The run's tables and result.json's training fields (`engine` trained it, in a group of
        `group_size`). Final metrics are NaN unless the run completed."""
        nan = float("nan")
        E, t, B, step = self.evals, self.t, self.B, self.step
        done = self.status is RunStatus.COMPLETE and bool(E["step"])
        epoch_times = self.epoch_times + [{"epoch": -(-self.examples // self.epoch_examples),
                                           "data_s": self.ep_data, "compute_s": self.ep_comp}]
        summary = {
            "steps": step, "examples": self.examples, "epochs": self.examples / self.epoch_examples,
            "total_steps": self.bud.total_steps, "steps_per_epoch": self.bud.steps_per_epoch,
            "batch_size": B, "lr": self.cfg.effective_lr, "nominal_lr": self.cfg.optimizer.lr, "final_lr": self.lr, "initial_loss": self.initial_loss,
            "final_train_loss": E["train_loss"][-1] if done else nan,
            "final_train_acc": E["train_acc"][-1] if done else nan,
            "final_val_loss": E["val_loss"][-1] if done else nan,
            "final_val_acc": E["val_acc"][-1] if done else nan,
            "best_val_acc": max(E["val_acc"]) if E["val_acc"] else nan,
            "best_val_loss": min(E["val_loss"]) if E["val_loss"] else nan,
            "targets": {
                "train_loss": {"target": t.target_train_loss, **(self.hit_loss or {})} if t.target_train_loss else None,
                "val_acc": {"target": t.target_val_accuracy, **(self.hit_acc or {})} if t.target_val_accuracy else None,
            },
            "time_s": self.elapsed(), "data_time_s": self.data_t, "compute_time_s": self.comp_t,
            "epoch_times": epoch_times, "device": str(device), "resumed_at_step": self.resumed_at,
            "engine": engine, "group_size": group_size, "stop_reason": self.stop_reason,
        }
        if t.batch_schedule is not None:  # its effect: the batch sizes the run reached, and when
            summary["batch_schedule"] = {
                "final_batch_size": self.last_B,
                "changes": [{"step": s, "examples": e, "batch_size": b} for s, e, b in self.bud.phases[1:] if s < step]}
        if self.noise is not None:
            summary["noise_scale"] = self.noise.summary()
        return TrainedRun(self.status, self.metrics, self.evals, summary, self.reason)

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        loop = {k: getattr(self, k) for k in _STATE}
        loop.update(step=self.step, lr=self.lr, elapsed=self.elapsed(), examples=self.examples, last_B=self.last_B)
        state = {"loop": loop, "metrics": self.metrics, "evals": self.evals, "epoch_times": self.epoch_times}
        if self.noise is not None:
            state["noise"] = self.noise.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        loop = state["loop"]
        for k in _STATE:
            setattr(self, k, loop[k])
        self.step, self.lr = loop["step"], loop["lr"]
        # Checkpoints from before the running count: B was constant then.
        self.examples, self.last_B = loop.get("examples", self.step * self.B), loop.get("last_B", self.B)
        self.metrics, self.evals, self.epoch_times = state["metrics"], state["evals"], state["epoch_times"]
        if self.noise is not None:
            self.noise.load_state_dict(state["noise"])
        self.start = time.perf_counter() - loop["elapsed"]  # times continue from where the run stopped
        self.resumed_at = self.step
