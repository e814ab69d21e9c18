"""A report folder written by `lrsweep summarize`, read back: fits.json and best_lr.csv.

For scripts that compare sweeps after the fact (docs/reproduce.py) without recomputing the
report. output.files writes what this reads; the group order is the same in both, which is
how a group's figure (`heatmap-2.png`) is found from its key values.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lrsweep.analysis import noise
from lrsweep.analysis.report import stack_groups
from lrsweep.errors import UserError

FITS = "fits.json"
BEST = "best_lr.csv"


@dataclass
class SavedReport:
    path: Path
    record: dict  # fits.json as written: metric, targets, groups[keys, best, fits, critical, ...]; ASCII keys

    @property
    def groups(self) -> list[dict]:
        """Each group's key values ({} for a report with one group)."""
        return [g.get("keys") or {} for g in self.record["groups"]]

    def table(self, name: str) -> pd.DataFrame:
        """best | fits | critical | bnoise of every group stacked, group columns first (as
        Report.table). bnoise: the B_noise comparison per target, critical's columns noise.TABLE
        (target, B_noise, B_peak, B_simple, each with _lo/_hi; B_peak_at, B_simple_runs)."""
        tables = []
        for g in self.record["groups"]:
            t = pd.DataFrame(g.get("critical" if name == "bnoise" else name) or [])
            tables.append((g.get("keys") or {}, t[[c for c in noise.TABLE if c in t]] if name == "bnoise" else t))
        return stack_groups(tables)

    def best_csv(self) -> pd.DataFrame:
        """best_lr.csv as pandas parses it (an empty edge reads as NaN)."""
        return pd.read_csv(self.path / BEST)

    def figure(self, plot: str, **keys) -> Path:
        """The PNG of `plot` for the group with these key values (plot-N.png when there are
        groups). Values compare as numbers where both parse as numbers: 0 matches 0.0."""
        if len(self.groups) == 1:
            return self.path / f"{plot}.png"
        for i, have in enumerate(self.groups):
            if all(_same(have.get(k), v) for k, v in keys.items()):
                return self.path / f"{plot}-{i + 1}.png"
        return self.path / f"{plot}-?.png"


def _same(a, b) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def read_report(path: str | Path) -> SavedReport:
    """The report folder `path` (runs/<name>/report)."""
    p = Path(path)
    try:
        return SavedReport(p, json.loads((p / FITS).read_text()))
    except (OSError, ValueError) as e:
        raise UserError(f"{p / FITS}: unreadable ({type(e).__name__}: {str(e)[:80]}); run lrsweep summarize first") from None
