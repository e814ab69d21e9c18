"""The one formatter of numbers and tables for people: report.md, `--format markdown` and the
terminal tables of the CLI, and docs/reproduce.py's page all go through here, so a number
reads the same everywhere (a missing or infinite value is "—", never "nan" or "inf")."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

MISSING = "—"


def cell(value, digits: int = 3) -> str:
    """One value: floats to `digits` significant figures; None, NaN and ±inf as —."""
    if value is None:
        return MISSING
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}g}" if math.isfinite(value) else MISSING
    return str(value)


def table(df: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub markdown table of `df` (no index), every value through `cell`."""
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(cell(v, digits) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def params(values: dict, digits: int = 3, ci: dict | None = None) -> str:
    """A fitted law's parameters on one line: `eps_max=0.01, B_noise=64`; with `ci` ({name:
    [lo, hi]}) each followed by its interval: `B_noise=64 [52–79]`."""
    return ", ".join(f"{k}={with_ci(v, *((ci or {}).get(k) or (None, None)), digits)}" for k, v in values.items())


def with_ci(value, lo, hi, digits: int = 3) -> str:
    """An estimate followed by its interval, `40 [37–43]`; the estimate alone without one."""
    try:
        have = bool(np.isfinite(np.array([lo, hi], float)).all())
    except (TypeError, ValueError):  # None (a JSON null)
        have = False
    return f"{cell(value, digits)} [{cell(lo, digits)}–{cell(hi, digits)}]" if have else cell(value, digits)
