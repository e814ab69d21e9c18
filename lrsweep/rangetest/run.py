"""The config-driven range test: one curve per batch size, each from the config's seed (model
init and data order: the engines' own pieces), so nothing trained is left behind. The
configured schedule and lr_scaling do not apply: the ramp sets the LR itself."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import torch
import torch.nn.functional as F

from lrsweep.config import RunConfig, expand_short, parse_run_config
from lrsweep.config.grid import load_sweep
from lrsweep.datasets import load_data
from lrsweep.errors import ConfigError, ParameterError
from lrsweep.optimizers import build_optimizer
from lrsweep.rangetest.ramp import MIN_STEPS, SUGGESTIONS, Curve, check_settings, check_steps, lr_ramp, ramp
from lrsweep.rangetest.suggest import Suggestion, suggest
from lrsweep.training.batches import BatchSampler
from lrsweep.training.evaluate import evaluate
from lrsweep.training.setup import budget, init_model, resolve_device, uses_channels_last


def config_step_fn(cfg: RunConfig, data, device: torch.device, first_lr: float):
    """(step_fn, val_fn) training cfg's model from its seed, with the engines' own model init,
    batch order and evaluation."""
    bud = budget(cfg, len(data.train_y))
    cl = uses_channels_last(cfg, data.input_shape)
    model = init_model(cfg, data, device)
    opt = build_optimizer(model.parameters(), cfg.optimizer, first_lr)
    batches = BatchSampler(cfg.train.seed, len(data.train_y), bud, cfg.train.batch_size, device)
    done = [0]  # steps taken

    def step_fn(lr: float) -> float:
        idx = batches.indices(done[0])
        x, y = data.normalize(data.train_x[idx]), data.train_y[idx]
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done[0] += 1
        return loss.item()

    def val_fn() -> tuple[float, float]:
        return evaluate(model, data, cfg.train.eval_batch_size, cl)

    return step_fn, val_fn


@dataclass
class RangeTest:
    name: str
    suggest: str  # the suggestion reported first, used for the scaling table and emit_sweep
    settings: dict
    curves: dict[int, Curve]
    suggestions: dict[int, dict[str, Suggestion]]

    def chosen(self, batch_size: int) -> Optional[float]:
        return self.suggestions[batch_size][self.suggest].lr

    def frame(self) -> pd.DataFrame:
        """Every step of every batch size (range_test.csv)."""
        return pd.concat([c.frame() for c in self.curves.values()], ignore_index=True)

    def scaling_table(self) -> pd.DataFrame:
        """The chosen suggestion per batch size next to linear and sqrt scaling from the smallest one,
        and the measured exponent k of lr ∝ B^k (1 = linear, 0.5 = sqrt, 0 = flat)."""
        bs = sorted(self.curves)
        b0, lr0 = bs[0], self.chosen(bs[0])
        nan = math.nan
        rows = []
        for b in bs:
            lr = self.chosen(b) or nan
            lin, sq = (lr0 * b / b0, lr0 * math.sqrt(b / b0)) if lr0 else (nan, nan)
            k = math.log(lr / lr0) / math.log(b / b0) if b != b0 and lr0 else nan  # lr ∝ B^k: 1 linear, 0.5 sqrt
            c = self.curves[b]
            rows.append({"batch_size": b, self.suggest: lr, f"linear from {b0}": lin, f"sqrt from {b0}": sq,
                         "k": k, "steps": len(c.lr), "stopped at lr": c.lr[-1] if c.stopped else nan})
        return pd.DataFrame(rows)

    def suggestion_table(self) -> pd.DataFrame:
        """Every suggestion with its reason, per batch size, the chosen one first."""
        order = [self.suggest] + [n for n in SUGGESTIONS if n != self.suggest]
        return pd.DataFrame([{"batch_size": b, "suggestion": n, "lr": ss[n].lr or math.nan, "reason": ss[n].reason}
                             for b, ss in sorted(self.suggestions.items()) for n in order])

    def to_json(self) -> dict:
        return {"name": self.name, "suggest": self.suggest, **self.settings,
                "results": [{"batch_size": b, "lr": self.chosen(b), "steps": len(c.lr), "planned_steps": c.planned,
                             "stopped": c.stopped,
                             "suggestions": {n: asdict(s) for n, s in self.suggestions[b].items()}}
                            for b, c in sorted(self.curves.items())],
                "scaling": self.scaling_table().to_dict(orient="records")}


def load_base(path: str | Path, overrides: list[str] | None = None) -> tuple[RunConfig, list[int], dict, list[str]]:
    """(base config, the sweep's batch sizes, the resolved raw YAML, sweep axes the test ignores)."""
    sweep = load_sweep(path, overrides or [], warn_axes=False)  # the test uses the base config
    base = parse_run_config({k: v for k, v in sweep.raw.items() if k != "sweep"})
    sizes = sorted({r.config.train.batch_size for r in sweep.runs}) or [base.train.batch_size]
    ignored = [n for n in sweep.axis_names if expand_short(n) not in ("optimizer.lr", "train.batch_size")]
    return base, sizes, sweep.raw, ignored


def run_range_test(base: RunConfig, batch_sizes: list[int], *, min_lr: float = 1e-7, max_lr: float = 10.0,
                   steps: Optional[int] = None, epochs: Optional[float] = None, mode: str = "exp",
                   val: bool = False, smooth: float = 0.98, diverge: float = 4.0, suggest_name: str = "valley",
                   on_event: Optional[Callable[..., None]] = None) -> RangeTest:
    """One range test per batch size from the same config; `steps` (default 100) or `epochs` sets the length."""
    check_settings(min_lr, max_lr, mode, smooth, diverge, suggest_name)
    if steps is not None and epochs is not None:
        raise ParameterError("steps", "give `steps` or `epochs`, not both")
    if epochs is not None and not epochs > 0:
        raise ParameterError("epochs", f"must be > 0, got {epochs:g}")
    if any(b < 1 for b in batch_sizes):
        raise ParameterError("batch_sizes", f"must be >= 1, got {min(batch_sizes)}")
    if steps is not None:
        check_steps(steps)
    notify = on_event or (lambda *a, **k: None)
    device = resolve_device(base.train.device)
    data = load_data(base.dataset, device)
    plans = {}
    for b in sorted(set(batch_sizes)):  # check every batch size before training any
        cfg = base.model_copy(deep=True)
        cfg.train.batch_size = b
        try:
            bud = budget(cfg, len(data.train_y))
        except ConfigError as e:
            raise ParameterError("batch_sizes", e.message) from None
        n = steps if steps is not None else (round(epochs * bud.steps_per_epoch) if epochs else 100)
        if epochs is not None and n < MIN_STEPS:
            need = MIN_STEPS / bud.steps_per_epoch
            raise ParameterError("epochs", f"{epochs:g} gives {n} steps at batch size {b} ({bud.steps_per_epoch} per epoch); "
                            f"at least {MIN_STEPS} are needed: use `epochs` {math.ceil(need * 100) / 100:g} or more")
        check_steps(n)
        plans[b] = (cfg, n)
    curves, suggestions = {}, {}
    for i, (b, (cfg, n)) in enumerate(plans.items()):
        notify("start", batch_size=b, index=i, count=len(plans), steps=n)
        lrs = lr_ramp(min_lr, max_lr, n, mode)
        step_fn, val_fn = config_step_fn(cfg, data, device, float(lrs[0]))
        curves[b] = ramp(step_fn, lrs, smooth=smooth, diverge=diverge, val_fn=val_fn if val else None,
                         batch_size=b, on_step=lambda **k: notify("step", batch_size=b, **k))
        suggestions[b] = suggest(curves[b])
        notify("end", batch_size=b, curve=curves[b])
    settings = {"min_lr": min_lr, "max_lr": max_lr, "mode": mode, "val": val, "smooth": smooth, "diverge": diverge,
                "seed": base.train.seed, "optimizer": base.optimizer.model_dump(mode="json")}
    return RangeTest(base.name, suggest_name, settings, curves, suggestions)
