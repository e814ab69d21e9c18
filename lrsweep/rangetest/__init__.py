"""LR range test (Smith 2015/2017), as in fastai `lr_find`, Lightning `Tuner.lr_find` and
pytorch-lr-finder: train from the configured init while the LR ramps from min to max, record
the loss at every step, stop when it diverges, and read suggested LRs off the curve.

Layers, so each can be tested alone:
- `lr_ramp(min_lr, max_lr, steps, mode)`: the LRs, hitting min and max exactly;
- `ramp(step_fn, lrs, ...)`: the loop; `step_fn(lr) -> loss` does one update at that LR.
  Smoothing is an EMA with bias correction, s_t = m_t / (1 - beta^t) over the finite losses;
  the test stops at the first non-finite loss or when s_t > diverge x the best s so far;
- `suggest(curve)`: the suggestions, each with its reason, NaN-safe (only finite points used);
- `run_range_test(cfg, batch_sizes, ...)`: the config-driven test, one curve per batch size,
  each from the config's seed (model init and data order), so nothing trained is left behind;
- `emit_sweep(raw, test, path)`: a sweep file whose LR axis is centred on each suggestion.
The configured schedule and lr_scaling do not apply: the ramp sets the LR itself.
This module never prints; progress goes to `on_event(event, **info)`:
    start(batch_size, index, count, steps)   step(batch_size, step, total, loss, lr)   end(batch_size, curve)
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import yaml

from lrsweep.config import RunConfig, expand_short, parse_run_config
from lrsweep.datasets import load_data
from lrsweep.errors import ConfigError, UserError
from lrsweep.config.grid import load_sweep
from lrsweep.models import build_model
from lrsweep.optimizers import build_optimizer
from lrsweep.storage import atomic_write, write_csv, write_json
from lrsweep.training.sequential import budget, evaluate, resolve_device

MODES = ("exp", "linear")
SUGGESTIONS = ("valley", "steepest", "minimum/10", "clr-upper", "clr-lower/3", "clr-lower/4")
SKIP_END = 5  # last points dropped before suggesting (fastai, pytorch-lr-finder): the blow-up
MIN_POINTS = 10  # points left after skipping both ends that a suggestion needs


def _window(planned: int, n: int) -> tuple[int, int]:
    """Indices [lo, hi) used for suggestions: skip the first 10% of the planned steps and the last SKIP_END."""
    return planned // 10, n - SKIP_END


def _points(steps: int) -> int:
    lo, hi = _window(steps, steps)
    return hi - lo


MIN_STEPS = next(s for s in range(1, 1000) if _points(s) >= MIN_POINTS)  # 16


@dataclass
class Curve:
    """One range test: per-step records, and why it stopped early (None: it reached max_lr)."""
    batch_size: int
    planned: int
    lr: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    stopped: Optional[str] = None

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"batch_size": self.batch_size, "step": np.arange(1, len(self.lr) + 1),
                             "lr": self.lr, "loss": self.loss, "smoothed_loss": self.smoothed,
                             "val_loss": self.val_loss, "val_acc": self.val_acc})


@dataclass
class Suggestion:
    name: str
    lr: Optional[float]  # None when the curve does not allow it; `reason` says why
    step: Optional[int]
    reason: str


# --------------------------------------------------------------------------- checks and the ramp


def check_settings(min_lr: float, max_lr: float, mode: str = "exp", smooth: float = 0.98,
                   diverge: float = 4.0, suggest: str = "valley") -> None:
    if mode not in MODES:
        raise UserError(f"--mode: expected one of ({', '.join(MODES)}), got {mode!r}")
    if suggest not in SUGGESTIONS:
        raise UserError(f"--suggest: expected one of ({', '.join(SUGGESTIONS)}), got {suggest!r}")
    for name, v in (("--min-lr", min_lr), ("--max-lr", max_lr)):
        if not (math.isfinite(v) and v > 0):
            raise UserError(f"{name}: must be a positive number, got {v:g}")
    if min_lr >= max_lr:
        raise UserError(f"--min-lr must be below --max-lr, got --min-lr {min_lr:g} >= --max-lr {max_lr:g}")
    if not 0 <= smooth < 1:
        raise UserError(f"--smooth: expected a value in [0, 1), got {smooth:g}")
    if not diverge > 1:
        raise UserError(f"--diverge: must be > 1 (a multiple of the best smoothed loss), got {diverge:g}")


def check_steps(steps: int) -> None:
    if steps < MIN_STEPS:
        raise UserError(f"--steps: {steps} is too few to suggest anything; at least {MIN_STEPS} are needed "
                        f"(the first 10% and the last {SKIP_END} are skipped, then {MIN_POINTS} points remain)")


def lr_ramp(min_lr: float, max_lr: float, steps: int, mode: str = "exp") -> np.ndarray:
    """`steps` LRs from min_lr to max_lr inclusive, geometric (exp) or arithmetic (linear) spacing."""
    check_settings(min_lr, max_lr, mode)
    check_steps(steps)
    lrs = (np.geomspace if mode == "exp" else np.linspace)(min_lr, max_lr, steps)
    lrs[0], lrs[-1] = min_lr, max_lr
    return lrs


def ramp(step_fn: Callable[[float], float], lrs, *, smooth: float = 0.98, diverge: float = 4.0,
         val_fn: Optional[Callable[[], tuple[float, float]]] = None, batch_size: int = 0,
         on_step: Optional[Callable[..., None]] = None) -> Curve:
    """Run `step_fn(lr)` for each LR and record the curve. `val_fn() -> (val_loss, val_acc)` after each step."""
    curve = Curve(batch_size, len(lrs))
    avg, n, best, nan = 0.0, 0, math.inf, math.nan
    for i, lr in enumerate(map(float, lrs), start=1):
        loss = float(step_fn(lr))
        finite = math.isfinite(loss)
        if finite:
            n += 1
            avg = smooth * avg + (1 - smooth) * loss
        s = avg / (1 - smooth ** n) if finite else nan
        vl, va = val_fn() if val_fn is not None and finite else (nan, nan)
        for column, v in ((curve.lr, lr), (curve.loss, loss), (curve.smoothed, s), (curve.val_loss, vl), (curve.val_acc, va)):
            column.append(float(v))
        if on_step is not None:
            on_step(step=i, total=len(lrs), loss=loss, lr=lr)
        if not finite:
            curve.stopped = f"loss {loss} at step {i} (lr {lr:.3g})"
            break
        if s > diverge * best:
            curve.stopped = f"smoothed loss {s:.4g} > {diverge:g} x best {best:.4g} at step {i} (lr {lr:.3g})"
            break
        best = min(best, s)
    return curve


# --------------------------------------------------------------------------- suggestions


def valley_index(loss: np.ndarray) -> tuple[int, int, int]:
    """fastai's `valley`: the longest decreasing run (not necessarily contiguous) ending at each point;
    take the longest, from start to end, and return the point halfway along it, with start and end."""
    lds = np.ones(len(loss), dtype=int)
    for i in range(1, len(loss)):
        higher = loss[:i] > loss[i]
        if higher.any():
            lds[i] = lds[:i][higher].max() + 1
    end = int(np.argmax(lds))
    start = end - int(lds[end])
    sections = (end - start) / 3
    return max(0, start + int(sections) + int(sections / 2)), max(0, start), end


def suggest(curve: Curve) -> dict[str, Suggestion]:
    """Every suggestion in SUGGESTIONS, computed on the finite smoothed losses inside the window."""
    lo, hi = _window(curve.planned, len(curve.lr))
    lr, s = np.array(curve.lr), np.array(curve.smoothed)
    idx = np.arange(len(lr))[lo:max(lo, hi)]
    idx = idx[np.isfinite(s[idx])]
    if len(idx) < MIN_POINTS:
        why = f"it stopped after {len(lr)} steps: {curve.stopped}" if curve.stopped else f"{len(lr)} steps"
        reason = (f"only {len(idx)} points to read (need {MIN_POINTS} after skipping the first 10% and last "
                  f"{SKIP_END}); {why}: lower --max-lr or raise --steps")
        return {name: Suggestion(name, None, None, reason) for name in SUGGESTIONS}
    lr_w, s_w = lr[idx], s[idx]
    step = lambda j: int(idx[j]) + 1
    out: dict[str, Suggestion] = {}

    v, a, b = valley_index(s_w)
    out["valley"] = Suggestion("valley", float(lr_w[v]), step(v),
                               f"fastai's valley: halfway along the longest descent of the smoothed loss, "
                               f"LR {lr_w[a]:.3g} to {lr_w[b]:.3g} (steps {step(a)}-{step(b)})") if b > a else \
        Suggestion("valley", None, None, "the smoothed loss never decreases: lower --min-lr")

    m = int(np.argmin(s_w))
    slope = np.gradient(s_w, np.log(lr_w))[: m + 1]  # the descent only: past the minimum is noise
    j = int(np.argmin(slope))
    out["steepest"] = Suggestion("steepest", float(lr_w[j]), step(j),
                                 f"steepest fall of the smoothed loss before its minimum: {slope[j]:.3g} per unit "
                                 f"ln(LR) at step {step(j)}") if slope[j] < 0 else \
        Suggestion("steepest", None, None, "the smoothed loss never decreases: lower --min-lr")

    out["minimum/10"] = Suggestion("minimum/10", float(lr_w[m]) / 10, step(m),
                                   f"a tenth of LR {lr_w[m]:.3g}, where the smoothed loss is lowest ({s_w[m]:.4g}, step {step(m)})")

    acc = np.array(curve.val_acc)[idx]
    if np.isfinite(acc).any():
        u = int(np.nanargmax(acc))
        where = f"the best validation accuracy ({acc[u]:.4f}, step {step(u)})"
    else:
        u, where = m, f"the lowest smoothed loss ({s_w[m]:.4g}, step {step(m)}; --val uses accuracy)"
    up = float(lr_w[u])
    out["clr-upper"] = Suggestion("clr-upper", up, step(u), f"CLR upper bound (document 000): LR at {where}")
    for k in (3, 4):
        out[f"clr-lower/{k}"] = Suggestion(f"clr-lower/{k}", up / k, step(u), f"CLR lower bound: upper {up:.3g} / {k}")
    return out


# --------------------------------------------------------------------------- config-driven test


def config_step_fn(cfg: RunConfig, data, device: torch.device, first_lr: float):
    """(step_fn, val_fn) training cfg's model from its seed, batches drawn by index as in train.py."""
    B = cfg.train.batch_size
    bud = budget(cfg, len(data.train_y))
    cl = cfg.train.channels_last and len(data.input_shape) == 3
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, data.input_shape, data.num_classes).to(device)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = build_optimizer(model.parameters(), cfg.optimizer, first_lr)
    order = torch.Generator().manual_seed(cfg.train.seed)
    state = {"step": 0, "perm": None}

    def step_fn(lr: float) -> float:
        pos = state["step"] % bud.steps_per_epoch
        if pos == 0:
            state["perm"] = torch.randperm(len(data.train_y), generator=order)[: bud.epoch_size].to(device)
        idx = state["perm"][pos * B:(pos + 1) * B]
        x, y = data.normalize(data.train_x[idx]), data.train_y[idx]
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state["step"] += 1
        return loss.item()

    def val_fn() -> tuple[float, float]:
        return evaluate(model, data, data.val_x, data.val_y, cfg.train.eval_batch_size, cl)

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
    sweep = load_sweep(path, overrides or [])
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
        raise UserError("give --steps or --epochs, not both")
    if epochs is not None and not epochs > 0:
        raise UserError(f"--epochs: must be > 0, got {epochs:g}")
    if any(b < 1 for b in batch_sizes):
        raise UserError(f"--batch-size: must be >= 1, got {min(batch_sizes)}")
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
            raise UserError(f"--batch-size: {e.message}") from None
        n = steps if steps is not None else (round(epochs * bud.steps_per_epoch) if epochs else 100)
        if epochs is not None and n < MIN_STEPS:
            need = MIN_STEPS / bud.steps_per_epoch
            raise UserError(f"--epochs: {epochs:g} gives {n} steps at batch size {b} ({bud.steps_per_epoch} per epoch); "
                            f"at least {MIN_STEPS} are needed: use --epochs {math.ceil(need * 100) / 100:g} or more")
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


def save(test: RangeTest, out_dir: str | Path) -> dict[str, Path]:
    """range_test.csv (every step), range_test.json (suggestions), range_test.png (the plot)."""
    from lrsweep.plots.range_test import plot_range_test
    out = Path(out_dir)
    paths = {k: out / f"range_test.{k}" for k in ("csv", "json", "png")}
    frame = test.frame()
    write_csv(paths["csv"], frame.to_dict(orient="list"))
    write_json(paths["json"], test.to_json())
    marks = {b: {n: s.lr for n, s in ss.items()} for b, ss in test.suggestions.items()}
    ax = plot_range_test(frame, marks, chosen=test.suggest, title=f"LR range test: {test.name} "
                         f"({test.settings['optimizer']['name']}, {test.settings['mode']} ramp)")
    ax.figure.savefig(paths["png"], dpi=120)
    return paths


# --------------------------------------------------------------------------- the sweep it proposes


def emit_sweep(raw: dict, test: RangeTest, path: str | Path, points: int = 7, decades: float = 2.0) -> dict:
    """Write a sweep YAML: for each batch size, `points` LRs log-spaced over `decades` centred on its
    suggestion, as a `zip:` of batch_size and lr (batch sizes repeated). Other axes are kept."""
    missing = [f"{b} ({test.suggestions[b][test.suggest].reason})" for b in sorted(test.curves) if not test.chosen(b)]
    if missing:
        raise UserError(f"--emit-sweep: no '{test.suggest}' suggestion for batch size {'; '.join(missing)}")
    out = copy.deepcopy({k: v for k, v in raw.items() if k != "sweep"})
    out["name"] = f"{raw['name']}-rt"
    if (out.get("lr_scaling") or {}).get("rule", "none") != "none":
        out["lr_scaling"] = {**out["lr_scaling"], "rule": "none"}  # the LRs below are already per batch size
    replaced = lambda name: expand_short(name) in ("optimizer.lr", "train.batch_size")
    axes, zips = {}, []
    for name, spec in (raw.get("sweep") or {}).items():
        if name != "zip" and not replaced(name):
            axes[name] = spec
        for group in (spec if isinstance(spec, list) else [spec]) if name == "zip" else []:
            kept = {k: v for k, v in group.items() if not replaced(k)}
            zips.append(kept) if len(kept) > 1 else axes.update(kept)
    factors = np.logspace(-decades / 2, decades / 2, points)
    bs, lrs = [], []
    for b in sorted(test.curves):
        bs += [b] * points
        lrs += [float(f"{test.chosen(b) * f:.3g}") for f in factors]
    axes["zip"] = [{"batch_size": bs, "lr": lrs}, *zips] if zips else {"batch_size": bs, "lr": lrs}
    out["sweep"] = axes
    head = [f"# Written by `lrsweep range-test --emit-sweep`: {points} LRs per batch size over {decades:g} decades",
            f"# centred on the '{test.suggest}' suggestion of the range test of '{raw['name']}':"]
    head += [f"#   batch size {b}: {test.chosen(b):.3g}" for b in sorted(test.curves)]
    atomic_write(Path(path), "\n".join(head) + "\n" + yaml.safe_dump(out, sort_keys=False, default_flow_style=None))
    return out
