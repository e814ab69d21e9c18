"""The report/ folder of `lrsweep summarize`: best_lr.csv, cells.csv, fits.json, the PNG
figures and report.md. analysis.saved.read_report reads it back."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lrsweep import storage
from lrsweep.analysis.report import Report
from lrsweep.output import figures, report_md


def _plain(x):
    """numpy scalars and DataFrames -> JSON-ready Python values."""
    if isinstance(x, pd.DataFrame):
        return [_plain(r) for r in x.to_dict(orient="records")]
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def fits_record(report: Report) -> dict:
    """fits.json: the settings, and per group its keys, best-LR table, fits, critical batch size,
    S/E points and warnings."""
    return _plain({
        "metric": report.metric, "higher_is_better": report.higher, "tolerance": report.tolerance,
        "targets": report.targets, "after_steps": report.after_steps, "sweeps": report.sweeps,
        "groups": [{"keys": g.keys, "best": g.best, "fits": g.fits, "critical": g.critical,
                    "se_points": {f"{t:g}": p for t, p in g.se.items()}, "warnings": g.warnings}
                   for g in report.groups],
        "warnings": report.warnings,
    })


def write_report(report: Report, out_dir: str | Path, with_plots: bool = True) -> list[Path]:
    """Write the report folder; returns the files written."""
    out = storage.check_writable(Path(out_dir), create=True)
    written = []
    for name, df in (("best_lr.csv", report.table("best")), ("cells.csv", report.table("cells"))):
        storage.atomic_write(out / name, df.to_csv(index=False))
        written.append(out / name)
    storage.write_json(out / "fits.json", fits_record(report))
    written.append(out / "fits.json")
    for stale in [f for name in figures.PLOTS for f in out.glob(f"{name}*.png")]:
        stale.unlink()  # a figure not redrawn this time must not pass for a current one
    images: dict[int, dict[str, str]] = {}
    if with_plots:
        from lrsweep.plots import save
        for i, g in enumerate(report.groups):
            suffix = f"-{i + 1}" if len(report.groups) > 1 else ""
            images[i] = {}
            for name, ax in figures.draw(report, g).items():
                path = out / f"{name}{suffix}.png"
                try:
                    f = save(ax, path)
                except OSError as e:
                    raise storage.storage_error(path, e) from e
                images[i][name] = f.name
                written.append(f)
    storage.atomic_write(out / "report.md", report_md.render(report, images))
    written.append(out / "report.md")
    return written
