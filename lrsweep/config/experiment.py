"""One experiment per sweep folder: which runs may be compared as cells of one grid.

Two runs belong to the same experiment when their configs are equal in every field that is
part of a run's identity (config/roles.py), except the sweep's axes and the seed: those are
what the grid varies and what summarize averages over. A budget, a model, an optimizer
setting or a dataset that differs makes another experiment, whose numbers must never be
averaged with these as if they were seeds.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

from lrsweep.config.loading import expand_short
from lrsweep.config.roles import identity_dict
from lrsweep.config.schema import RunConfig

SEED = "train.seed"  # a different seed is another sample of the same experiment


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'train': {'steps': 5}} -> {'train.steps': 5}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _varied(path: str, axes: set[str]) -> bool:
    return path == SEED or any(path == a or path.startswith(a + ".") for a in axes)


def experiment_fields(cfg: RunConfig, axes: Iterable[str]) -> dict[str, Any]:
    """The fields that define the experiment `cfg` belongs to, given the sweep's axis names."""
    full = {expand_short(a) for a in axes}
    return {k: v for k, v in flatten(identity_dict(cfg)).items() if not _varied(k, full)}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, old value, new value) for every field that differs (None: absent)."""
    return [(k, old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]


def describe(diffs: list[tuple[str, Any, Any]], limit: int = 4) -> str:
    """`train.steps 5 -> 60, optimizer.momentum 0.9 -> 0.0` (the first `limit`, then a count)."""
    shown = [f"{k} {a!r} -> {b!r}" for k, a, b in diffs[:limit]]
    more = len(diffs) - limit
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def base_fields(raw: dict) -> Optional[tuple[dict[str, Any], set[str]]]:
    """(the experiment fields of a resolved sweep file — its base config, less its axes — and
    its axes' full names), or None when it no longer parses (written by another version: the
    run ids decide then)."""
    from lrsweep.config.grid import build_sweep
    from lrsweep.errors import UserError

    try:
        sweep = build_sweep(raw)
    except (UserError, TypeError, ValueError, KeyError, AttributeError):
        return None
    if not sweep.runs:
        return None
    return (experiment_fields(sweep.runs[0].config, sweep.axis_names),
            {expand_short(a) for a in sweep.axis_names})


def sweep_differences(old_raw: dict, new_raw: dict) -> list[tuple[str, Any, Any]]:
    """How the experiment of sweep file `new_raw` differs from that of `old_raw`. Axes of either
    file are not compared (adding values to an axis, or a new axis, is the same experiment)."""
    old, new = base_fields(old_raw), base_fields(new_raw)
    if old is None or new is None:
        return []
    axes = old[1] | new[1]
    return [d for d in differences(old[0], new[0]) if not _varied(d[0], axes)]
