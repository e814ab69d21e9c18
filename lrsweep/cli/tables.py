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


def footnotes(notes: pd.Series) -> tuple[list[str], list[str]]:
    """Distinct notes numbered in order of first appearance: (the mark of each row, "n: note")."""
    numbers: dict[str, int] = {}
    marks = []
    for n in notes.fillna(""):
        if n:
            numbers.setdefault(n, len(numbers) + 1)
        marks.append(str(numbers[n]) if n else "")
    return marks, [f"{i}: {n}" for n, i in numbers.items()]


def print_frame(df: pd.DataFrame, title: str = "", fmt_out: str = "table", notes: str | None = None) -> None:
    """Print a DataFrame as a rich table, or csv/json/markdown for scripts. `notes`: a column of
    prose that a terminal table shows as numbered footnotes under it (an 80-column terminal has
    no room for sentences in a cell)."""
    lines: list[str] = []
    if notes and fmt_out == "table" and notes in df:
        marks, lines = footnotes(df[notes])
        df = df.assign(**{notes: marks})
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
        for line in lines:
            console.print(line, highlight=False)


def print_json(df: pd.DataFrame) -> None:
    sys.stdout.write(df.to_json(orient="records", indent=2) + "\n")


def with_params_text(df: pd.DataFrame) -> pd.DataFrame:
    """A fits or predictions table with its `params` dicts as one readable line each."""
    return df.assign(params=[markdown.params(p) for p in df["params"]])


def span(lo, hi) -> str:
    """An interval as `lo–hi` (3 figures); "" when there is none (one seed, or not bracketed)."""
    return f"{markdown.cell(lo)}–{markdown.cell(hi)}" if pd.notna(lo) and pd.notna(hi) else ""


def compact_best(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The best-LR table narrowed for an 80-column terminal: the key columns (those before
    best_lr), best LR, interpolated optimum with its interval over seeds (when any), mean ± std
    (std from 2 seeds only), seeds (n) and the note that explains every — (print it as footnotes)."""
    out = table[list(table.columns[:table.columns.get_loc("best_lr")])].rename(columns={"batch_size": "B"})
    out["best LR"] = table["best_lr"]
    if (table["nominal_lr"].fillna(0) != table["best_lr"].fillna(0)).any():  # lr_scaling: what the user wrote
        out["nominal LR"] = table["nominal_lr"]
    out["optimum"] = table["lr_opt"]
    if table["lr_opt_lo"].notna().any():
        out["90% CI"] = [span(lo, hi) for lo, hi in zip(table["lr_opt_lo"], table["lr_opt_hi"])]
    out[metric] = [fmt(m) + (f" ± {s:.2g}" if n > 1 and pd.notna(s) else "")
                   for m, s, n in zip(table[metric], table["std"], table["n_seeds"])]
    out["n"] = table["n_seeds"]
    out["note"] = table["note"].fillna("")
    return out


def compact_fits(fits: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The fitted laws for the terminal: rank, law, parameters, B_noise's interval, residual std
    and the note (ties, parameters at a bound); every interval is in fits.json and report.md."""
    out = fits[[k for k in keys if k in fits]].copy()
    out["rank"] = fits["rank"]
    out["law"] = fits["law"]
    out["params"] = [markdown.params(p) for p in fits["params"]]
    out["B_noise 90% CI"] = [span(lo, hi) for lo, hi in zip(fits["B_noise_lo"], fits["B_noise_hi"])]
    out["se"] = fits["se_log10"]
    out["note"] = fits["note"].fillna("")
    return out


def compact_critical(crit: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The critical batch size per target for an 80-column terminal: B_noise and S_min each with
    its 90% interval in one column; E_min (= B_noise·S_min) and the notes are in report.md."""
    out = crit[[k for k in keys if k in crit]].copy()
    out["target"], out["n"] = crit["target"], crit["n"]
    for k in ("B_noise", "S_min"):
        out[f"{k} (90% CI)"] = [markdown.with_ci(*v) for v in zip(crit[k], crit[f"{k}_lo"], crit[f"{k}_hi"])]
    out["R²"] = crit["r2"]
    return out
