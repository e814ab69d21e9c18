"""Tables on stdout: a rich table on a terminal, or csv/json/markdown for scripts."""
from __future__ import annotations

import sys

import pandas as pd
from rich.table import Table

from lrsweep.cli.root import console
from lrsweep.output import markdown

DIGITS = 4  # significant figures of a number in the CLI's tables (report.md has 3)


def fmt(v) -> str:
    return markdown.cell(v, DIGITS)


def print_frame(df: pd.DataFrame, title: str = "", fmt_out: str = "table") -> None:
    """Print a DataFrame as a rich table, or csv/json/markdown for scripts."""
    if fmt_out == "csv":
        sys.stdout.write(df.to_csv(index=False))
    elif fmt_out == "json":
        print_json(df)
    elif fmt_out == "markdown":
        sys.stdout.write(markdown.table(df, DIGITS) + "\n")
    else:
        table = Table(title=title or None)
        for c in df.columns:
            table.add_column(str(c), justify="right" if pd.api.types.is_numeric_dtype(df[c]) else "left")
        for row in df.itertuples(index=False):
            table.add_row(*[fmt(v) for v in row])
        console.print(table)


def print_json(df: pd.DataFrame) -> None:
    sys.stdout.write(df.to_json(orient="records", indent=2) + "\n")


def with_params_text(df: pd.DataFrame) -> pd.DataFrame:
    """A fits or predictions table with its `params` dicts as one readable line each."""
    return df.assign(params=[markdown.params(p) for p in df["params"]])


def compact_best(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The best-LR table narrowed for an 80-column terminal: mean ± std in one column."""
    keys = [c for c in table.columns if c not in ("best_lr", "nominal_lr", metric, "std", "n_seeds", "n_lrs",
                                                   "n_diverged", "n_failed", "at_edge")]
    out = table[keys].copy()
    out["best LR"] = table["best_lr"]
    if (table["nominal_lr"] != table["best_lr"]).any():  # lr_scaling: show what the user wrote too
        out["nominal LR"] = table["nominal_lr"]
    out[metric] = [fmt(m) + (f" ± {s:.2g}" if n > 1 else "") for m, s, n in zip(table[metric], table["std"], table["n_seeds"])]
    out["seeds"] = table["n_seeds"]
    out["diverged"] = table["n_diverged"]
    out["edge of grid"] = table["at_edge"]
    return out
