"""What a range test writes: range_test.csv/json/png, and the sweep file it proposes."""
from __future__ import annotations

import copy
import errno
from pathlib import Path

import numpy as np
import yaml

from lrsweep.config import expand_short
from lrsweep.errors import ParameterError
from lrsweep.rangetest.run import RangeTest
from lrsweep.storage import atomic_write, check_writable, storage_error, write_csv, write_json


def check_outputs(out_dir: str | Path, sweep_file: str | Path | None = None) -> None:
    """Before the test trains: StorageError if its files (save's, and emit_sweep's `sweep_file`)
    could not be written, so that no training is lost to a read-only or misnamed folder."""
    out = check_writable(out_dir, create=True)
    targets = [out / f"range_test.{k}" for k in ("csv", "json", "png")]
    if sweep_file is not None:
        check_writable(Path(sweep_file).parent, create=True)
        targets.append(Path(sweep_file))
    for path in targets:
        if path.is_dir():
            raise storage_error(path, OSError(errno.EISDIR, "is a folder"))


def save(test: RangeTest, out_dir: str | Path) -> dict[str, Path]:
    """range_test.csv (every step), range_test.json (suggestions), range_test.png (the plot)."""
    from lrsweep.plots.range_test import plot_range_test
    out = Path(out_dir)
    paths = {k: out / f"range_test.{k}" for k in ("csv", "json", "png")}
    frame = test.frame()
    write_csv(paths["csv"], frame.to_dict(orient="list"))
    write_json(paths["json"], test.to_json())
    marks = {b: {n: s.lr for n, s in ss.items()} for b, ss in test.suggestions.items()}
    warned = {b: ss[test.suggest].warning for b, ss in test.suggestions.items()
              if test.suggest in ss and ss[test.suggest].warning}
    ax = plot_range_test(frame, marks, chosen=test.suggest, warnings=warned or None, title=f"LR range test: {test.name} "
                         f"({test.settings['optimizer']['name']}, {test.settings['mode']} ramp)")
    ax.figure.savefig(paths["png"], dpi=120)
    return paths


def emit_sweep(raw: dict, test: RangeTest, path: str | Path, points: int = 7, decades: float = 2.0) -> dict:
    """Write a sweep YAML: for each batch size, `points` LRs log-spaced over `decades` centred on its
    suggestion, as a `zip:` of batch_size and lr (batch sizes repeated). Other axes are kept."""
    missing = [f"{b} ({test.suggestions[b][test.suggest].reason})" for b in sorted(test.curves) if not test.chosen(b)]
    if missing:
        raise ParameterError("emit_sweep", f"no '{test.suggest}' suggestion for batch size {'; '.join(missing)}")
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
