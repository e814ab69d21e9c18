"""LR range test (Smith 2015/2017), as in fastai `lr_find`, Lightning `Tuner.lr_find` and
pytorch-lr-finder: train from the configured init while the LR ramps from min to max, record
the loss at every step, stop when it diverges, and read suggested LRs off the curve.

Layers, so each can be tested alone:
- `lr_ramp(min_lr, max_lr, steps, mode)`: the LRs, hitting min and max exactly;
- `ramp(step_fn, lrs, ...)`: the loop; `step_fn(lr) -> loss` does one update at that LR.
  Smoothing is an EMA with bias correction, s_t = m_t / (1 - beta^t) over the finite losses;
  the test stops at the first non-finite loss or when s_t > diverge x the best s so far;
- `suggest(curve)` (suggest.py): the suggestions, each with its reason, NaN-safe (only finite points used);
- `run_range_test(cfg, batch_sizes, ...)`: the config-driven test, one curve per batch size,
  each from the config's seed (model init and data order), so nothing trained is left behind;
- `emit_sweep(raw, test, path)`: a sweep file whose LR axis is centred on each suggestion.
The configured schedule and lr_scaling do not apply: the ramp sets the LR itself.
This module never prints; progress goes to `on_event(event, **info)`:
    start(batch_size, index, count, steps)   step(batch_size, step, total, loss, lr)   end(batch_size, curve)
"""
from lrsweep.rangetest.ramp import (  # noqa: F401
    MIN_POINTS, MIN_STEPS, MODES, SKIP_END, SUGGESTIONS, Curve, check_settings, check_steps, lr_ramp, ramp,
)
from lrsweep.rangetest.suggest import Suggestion, suggest, valley_index  # noqa: F401

# The config-driven test and its files need torch; loaded when first used, so that reading the
# ramp's constants (the CLI's choices) stays cheap.
_LAZY = {"RangeTest": "run", "config_step_fn": "run", "load_base": "run", "run_range_test": "run",
         "emit_sweep": "files", "save": "files", "check_outputs": "files"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"lrsweep.rangetest.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'lrsweep.rangetest' has no attribute {name!r}")
