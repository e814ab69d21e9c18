"""The `sweep:` section: axes -> the cartesian grid of resolved run configs.

An axis is any config field by its dotted name (`optimizer.name`, or the short names `lr`,
`batch_size`, `seed`). Values are a list or a generator:
    {logspace: [lo, hi, n]}   n values geometrically spaced from lo to hi inclusive (np.geomspace)
    {linspace: [lo, hi, n]}   n values evenly spaced from lo to hi inclusive
    {range: [start, stop, step]}  start, start+step, ... up to and including stop when it lands on it
A `zip:` group (a mapping, or a list of mappings) pairs its axes element-wise.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lrsweep.config import (
    RunConfig, apply_overrides, check_unknown_keys, expand_short, load_yaml,
    parse_run_config, set_dotted,
)
from lrsweep.config.roles import identity_dict
from lrsweep.errors import ConfigError, GridTooLarge, quote

GENERATORS = ("logspace", "linspace", "range")
MAX_RUNS = 100_000  # grid cells, counted before the grid is expanded (`max_runs` raises it)
MAX_AXIS_VALUES = 1_000_000  # values one generator may make (numbers, before any grid)


@dataclass
class RunSpec:
    """One cell of the grid."""
    run_id: str
    axes: dict[str, Any]  # axis name as written -> value
    config: RunConfig


@dataclass
class Sweep:
    name: str
    raw: dict  # the resolved YAML (overrides applied), saved next to the results
    axes: list[list[tuple[str, list]]]  # independent groups; a zip group has several axes
    runs: list[RunSpec] = field(default_factory=list)

    @property
    def axis_names(self) -> list[str]:
        return [name for group in self.axes for name, _ in group]


def _clean(v: Any) -> Any:
    """numpy scalars -> Python; floats within 1e-9 of an integer -> that integer (for batch sizes).
    NaN and inf stay as they are (the schema refuses them, naming the field)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return v
    if isinstance(v, float) and abs(v - round(v)) < 1e-9 * max(1.0, abs(v)):
        return int(round(v))
    if isinstance(v, float):
        return float(f"{v:.12g}")  # 0.30000000000000004 -> 0.3, for readable tables and stable ids
    return v


def _number(a: Any) -> Any:
    """A generator's bound as a finite number, or None. YAML 1.1 reads `1e-4` as a string: taken."""
    if isinstance(a, str):
        try:
            a = float(a.strip())
        except ValueError:
            return None
    ok = isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a)
    return a if ok else None


def axis_values(name: str, spec: Any, limit: int = MAX_AXIS_VALUES) -> list:
    """An axis's values; a generator may make at most `limit` of them (counted before any is made)."""
    where = f"sweep.{name}"
    if isinstance(spec, dict):
        if len(spec) != 1 or next(iter(spec)) not in GENERATORS:
            raise ConfigError(where, f"expected a list or one of ({', '.join(GENERATORS)}), got {quote(spec)}")
        kind, args = next(iter(spec.items()))
        numbers = [_number(a) for a in args] if isinstance(args, list) else []
        if len(numbers) != 3 or None in numbers:
            raise ConfigError(f"{where}.{kind}", f"expected [start, stop, {'n' if kind != 'range' else 'step'}] "
                                                 f"(finite numbers), got {quote(args)}")
        lo, hi, third = args = numbers
        if kind == "range":
            if third == 0 or (hi - lo) * third < 0:
                raise ConfigError(f"{where}.range", f"step must move from start towards stop, got {args}")
            count = (hi - lo) / third
            if count >= limit:
                raise ConfigError(f"{where}.range", f"{args} makes more than {limit} values (the limit)")
            n = int(np.floor(count + 1e-9)) + 1
            values = [lo + i * third for i in range(n)]
        else:
            if int(third) != third or third < 1:
                raise ConfigError(f"{where}.{kind}", f"n must be an integer >= 1, got {third!r}")
            if third > limit:
                raise ConfigError(f"{where}.{kind}", f"n is {third:g}, more than {limit} values (the limit)")
            if kind == "logspace" and (lo <= 0 or hi <= 0):
                raise ConfigError(f"{where}.logspace", f"bounds must be > 0 (values, not exponents), got {args}")
            fn = np.geomspace if kind == "logspace" else np.linspace
            values = list(fn(lo, hi, int(third)))
    elif isinstance(spec, list):
        values = spec
    else:
        values = [spec]
    if not values:
        raise ConfigError(where, "empty axis: give at least one value")
    return [_clean(v) for v in values]


def _parse_axes(sweep_raw: Any, limit: int = MAX_AXIS_VALUES) -> list[list[tuple[str, list]]]:
    if sweep_raw is None:
        return []
    if not isinstance(sweep_raw, dict):
        raise ConfigError("sweep", f"expected a mapping of axis -> values, got {quote(sweep_raw)}")
    groups: list[list[tuple[str, list]]] = []
    for name, spec in sweep_raw.items():
        if name == "zip":
            zips = spec if isinstance(spec, list) else [spec]
            for i, z in enumerate(zips):
                if not isinstance(z, dict) or not z:
                    raise ConfigError("sweep.zip", f"expected a mapping of axis -> values, got {quote(z)}")
                group = [(n, axis_values(n, s, limit)) for n, s in z.items()]
                lengths = {n: len(v) for n, v in group}
                if len(set(lengths.values())) > 1:
                    raise ConfigError("sweep.zip", f"zipped axes must have equal lengths, got {lengths}")
                groups.append(group)
        else:
            groups.append([(str(name), axis_values(str(name), spec, limit))])
    seen: set[str] = set()
    for group in groups:
        for n, _ in group:
            full = expand_short(n)
            if full in seen:
                raise ConfigError(f"sweep.{n}", "axis given twice")
            seen.add(full)
    return groups


def run_id(config: RunConfig) -> str:
    """10 hex digits of the SHA-1 of the config's identity fields (config/roles.py)."""
    blob = json.dumps(identity_dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def grid_size(groups: list[list[tuple[str, list]]]) -> int:
    """Cells of the grid (before duplicates are merged): the product of the group lengths."""
    return math.prod(len(g[0][1]) for g in groups)


def check_grid_size(groups: list[list[tuple[str, list]]], max_runs: int = MAX_RUNS) -> int:
    """The grid's size, or GridTooLarge above `max_runs`: counted, never expanded."""
    count = grid_size(groups)
    if count > max_runs:
        sizes = " x ".join(f"{'+'.join(n for n, _ in g)} {len(g[0][1])}" for g in groups)
        raise GridTooLarge(count, max_runs, sizes)
    return count


def build_sweep(raw: dict, overrides: list[str] | None = None, max_runs: int = MAX_RUNS,
                warn_axes: bool = True) -> Sweep:
    """The grid of `raw` (a sweep file's YAML) with `overrides` (--set strings) applied. A grid
    of more than `max_runs` cells is refused (GridTooLarge) before it is expanded."""
    if isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 1:
        from lrsweep.errors import ParameterError

        raise ParameterError("max_runs", f"expected a number >= 1, got {quote(max_runs)}")
    raw = apply_overrides(copy.deepcopy(raw), overrides or [], warn_axes)
    base = {k: v for k, v in raw.items() if k != "sweep"}
    base_cfg = parse_run_config(base)
    groups = _parse_axes(raw.get("sweep"), max(MAX_AXIS_VALUES, max_runs))
    check_grid_size(groups, max_runs)

    # Check each axis value (with its zip partners) alone first, so an error names the axis and value.
    for group in groups:
        for i in range(len(group[0][1])):
            cell = copy.deepcopy(base)
            for name, values in group:
                set_dotted(cell, expand_short(name), values[i])
            try:
                check_unknown_keys(cell, RunConfig)
                parse_run_config(cell)
            except ConfigError as e:
                named = [n for n, _ in group if expand_short(n) == e.path or e.path.startswith(expand_short(n) + ".")]
                if named and expand_short(named[0]) == e.path:
                    raise ConfigError(f"sweep.{named[0]}", e.message) from None
                name = named[0] if named else group[0][0]
                value = dict(group)[name][i]
                raise ConfigError(f"sweep.{name}", f"value {quote(value)}: {e}") from None

    runs: list[RunSpec] = []
    seen: set[str] = set()
    for combo in itertools.product(*[range(len(g[0][1])) for g in groups]):
        cell = copy.deepcopy(base)
        axes: dict[str, Any] = {}
        for group, i in zip(groups, combo):
            for name, values in group:
                set_dotted(cell, expand_short(name), values[i])
                axes[name] = values[i]
        try:
            cfg = parse_run_config(cell, keys_checked=True)  # each axis value's keys were checked above
        except ConfigError as e:
            raise ConfigError(e.path, f"{e.message} (in the grid cell {quote(axes)})") from None
        rid = run_id(cfg)
        if rid in seen:  # duplicate grid points (e.g. a value listed twice) run once
            continue
        seen.add(rid)
        runs.append(RunSpec(rid, axes, cfg))
    return Sweep(name=base_cfg.name, raw=raw, axes=groups, runs=runs)


def load_sweep(path: str | Path, overrides: list[str] | None = None, max_runs: int = MAX_RUNS,
               warn_axes: bool = True) -> Sweep:
    raw = load_yaml(path)
    axes = raw.get("sweep") if isinstance(raw.get("sweep"), dict) else {}
    for section in ("model", "dataset"):
        node = raw.get(section)
        uses_factory = (isinstance(node, dict) and "factory" in node) or any(
            f"{section}.factory" in str(k) for k in axes) or any(f"{section}.factory" in o for o in overrides or [])
        if uses_factory and isinstance(node, dict) and "factory_path" not in node:
            node["factory_path"] = str(Path(path).resolve().parent)  # a mynets.py next to the YAML is found
    return build_sweep(raw, overrides, max_runs, warn_axes)
