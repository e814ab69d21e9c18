"""Tables on stdout: a rich table on a terminal, or csv/json/markdown for scripts.

A terminal table is laid out to the console's width (an 80-column terminal, or COLUMNS for a
log) without cutting a value: columns of words wrap at spaces, numbers never do; a frame too
wide even so is cut into one table per group (`split`), and as a last resort its cells fold.
`wide` lays it out as wide as its columns want instead (the --wide flags: every column).
"""
from __future__ import annotations

import sys

from typing import Annotated

import pandas as pd
import typer
from rich.cells import cell_len
from rich.segment import Segments
from rich.table import Table

from lrsweep.analysis.fits import law_label
from lrsweep.cli.root import console
from lrsweep.output import markdown

DIGITS = 4  # significant figures of a number in the CLI's tables (report.md has 3)
NOTE_WIDTH = 80  # footnotes are prose: short lines read best, whatever the terminal's width

WideOpt = Annotated[bool, typer.Option("--wide", help="Every column of the tables, however wide (default: those an 80-column terminal has room for).")]


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


def _widths(headers: list[str], cells: list[list[str]], room: int) -> list | None:
    """Content widths that fit `room` characters without cutting a value: [None, ...] (rich's
    own layout) when the natural widths fit; else each column at least its longest word (all
    of its longest value when no value has a space: a number), the rest of the room shared in
    proportion to what each wants more; None when not even that fits."""
    natural = [max([cell_len(h), *map(cell_len, c)]) for h, c in zip(headers, cells)]
    if sum(natural) <= room:
        return [None] * len(natural)
    least = []
    for h, c, nat in zip(headers, cells, natural):
        words = [w for v in [h, *c] for w in v.split()] or [""]
        atomic = not any(" " in v for v in c)
        least.append(max([*map(cell_len, words), *(map(cell_len, c) if atomic else ())]))
    slack = room - sum(least)
    if slack < 0:
        return None
    want = [n - m for n, m in zip(natural, least)]
    extra = [slack * w // max(1, sum(want)) for w in want]
    return [m + e for m, e in zip(least, extra)]


def _table(text: pd.DataFrame, title: str, widths: list | None, numeric: list[bool]) -> Table:
    """`text` (every cell a string already) as a rich table at `widths` (None: fold every cell)."""
    table = Table(title=title or None)
    for c, w, right in zip(text.columns, widths or [None] * len(numeric), numeric):
        table.add_column(str(c), justify="right" if right else "left", width=w,
                         overflow="fold" if widths is None else "ellipsis")
    for row in text.itertuples(index=False):
        table.add_row(*row)
    return table


def _room(n_columns: int) -> int:
    """Characters left for cell contents: the heavy-head box draws n+1 bars and pads each cell by 1 each side."""
    return console.width - 3 * n_columns - 1


def _print_wide(table: Table) -> None:
    """`table` at its natural width, wider than the console if it must be (print would crop it)."""
    options = console.options.update_width(10 ** 4)
    width = max(console.width, console.measure(table, options=options).maximum)
    for line in console.render_lines(table, options.update_width(width), pad=False, new_lines=True):
        console.print(Segments(line), crop=False)


def _print_table(df: pd.DataFrame, title: str, wide: bool, split: list[str]) -> None:
    text = df.map(fmt)
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    headers = list(map(str, text.columns))
    if wide:  # every column at its natural width: wider than the terminal is what was asked for
        _print_wide(_table(text, title, [None] * len(headers), numeric))
        return
    widths = _widths(headers, [list(text[c]) for c in text.columns], _room(len(headers)))
    keys = [k for k in split if k in text]
    if keys and widths != [None] * len(headers) and len(text[keys].drop_duplicates()) > 1:
        # too wide with its group columns: one table per group, the group named in its title
        for values, part in text.groupby(keys, sort=False, dropna=False):
            values = values if isinstance(values, tuple) else (values,)
            label = ", ".join(f"{k}={v}" for k, v in zip(keys, values))
            _print_table(df.loc[part.index].drop(columns=keys), f"{title} — {label}" if title else label, False, [])
        return
    console.print(_table(text, title, widths, numeric))


def print_frame(df: pd.DataFrame, title: str = "", fmt_out: str = "table", notes: str | None = None,
                wide: bool = False, split: list[str] | tuple = ()) -> None:
    """Print a DataFrame as a rich table, or csv/json/markdown for scripts. `notes`: a column of
    prose that a terminal table shows as numbered footnotes under it (an 80-column terminal has
    no room for sentences in a cell). `wide`: every column at its full width, however wide the
    table gets. `split`: group columns by which a table too wide for the terminal is printed as
    one table per group."""
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
        _print_table(df, title, wide, list(split))
        for line in lines:
            console.print(line, markup=False, highlight=False, width=min(console.width, NOTE_WIDTH))


def print_json(df: pd.DataFrame) -> None:
    sys.stdout.write(df.to_json(orient="records", indent=2) + "\n")


def with_params_text(df: pd.DataFrame) -> pd.DataFrame:
    """A fits or predictions table with its `params` dicts as one readable line each."""
    return df.assign(params=[markdown.params(p) for p in df["params"]])


def span(lo, hi) -> str:
    """An interval as `lo–hi` (3 figures); "" when there is none (one seed, or not bracketed)."""
    return f"{markdown.cell(lo)}–{markdown.cell(hi)}" if pd.notna(lo) and pd.notna(hi) else ""


def _flat(lo, hi) -> str:
    """A flat range: one LR when it is a single grid point, — when there is none."""
    if pd.isna(lo) or pd.isna(hi):
        return markdown.MISSING
    return fmt(lo) if lo == hi else f"{fmt(lo)}–{fmt(hi)}"


def best_title(metric: str, tolerance: float) -> str:
    return f"best LR per batch size by {metric} (optimum: interpolated; flat range: within {tolerance * 100:g}% of the best)"


def compact_best(table: pd.DataFrame, metric: str, wide: bool = False) -> pd.DataFrame:
    """The best-LR table for the terminal. By default the columns an 80-column terminal has room
    for: the key columns (those before best_lr), best LR (and the LR the user wrote, where
    lr_scaling changed it), the interpolated optimum, mean ± std of the metric (std from 2
    seeds only), the flat range (LRs within the tolerance of the best, when the table has it)
    and the note that explains every — (print it as footnotes). `wide` adds the optimum's
    interval over seeds, the counts (seeds, LRs, diverged, failed), the edge and the suggested
    extension of the grid, and the anchored rules' LRs."""
    out = table[list(table.columns[:table.columns.get_loc("best_lr")])].rename(columns={"batch_size": "B"})
    out["best LR"] = table["best_lr"]
    if (table["nominal_lr"].fillna(0) != table["best_lr"].fillna(0)).any():  # lr_scaling: what the user wrote
        out["nominal LR"] = table["nominal_lr"]
    out["optimum"] = table["lr_opt"]
    if wide and table["lr_opt_lo"].notna().any():
        out["90% CI"] = [span(lo, hi) for lo, hi in zip(table["lr_opt_lo"], table["lr_opt_hi"])]
    out[metric] = [fmt(m) + (f" ± {s:.2g}" if n > 1 and pd.notna(s) else "")
                   for m, s, n in zip(table[metric], table["std"], table["n_seeds"])]
    if "flat_lo" in table:
        out["flat range"] = [_flat(lo, hi) for lo, hi in zip(table["flat_lo"], table["flat_hi"])]
    if wide:
        out["seeds"], out["LRs"] = table["n_seeds"], table["n_lrs"]
        for status in ("diverged", "stalled", "failed"):
            if f"n_{status}" in table:
                out[status] = table[f"n_{status}"]
        out["edge"] = table["edge"].fillna("")
        out["suggest"] = [span(lo, hi) for lo, hi in zip(table["suggest_lo"], table["suggest_hi"])]
        for rule in ("linear_rule", "sqrt_rule"):
            if rule in table and table[rule].notna().any():
                out[law_label(rule)] = table[rule]
    out["note"] = table["note"].fillna("")
    return out


def compact_fits(fits: pd.DataFrame, keys: list[str], wide: bool = False) -> pd.DataFrame:
    """The fitted laws for the terminal: rank, law, parameters, B_noise's interval, residual std
    and the note (ties, parameters at a bound). `wide`: every parameter with its interval, the
    formula, points and parameters (n, k) and the rms residual; all of it is in fits.json and report.md."""
    out = fits[[k for k in keys if k in fits]].copy()
    out["rank"] = fits["rank"]
    out["law"] = [law_label(x) for x in fits["law"]]
    if wide:
        out["formula"] = fits["formula"]
        out["params (90% CI)"] = [markdown.params(p, ci=ci if isinstance(ci, dict) else None)
                                  for p, ci in zip(fits["params"], fits["ci"] if "ci" in fits else [None] * len(fits))]
        out["n"], out["k"], out["rms"] = fits["n"], fits["k"], fits["rms_log10"]
    else:
        out["params"] = [markdown.params(p) for p in fits["params"]]
        out["B_noise 90% CI"] = [span(lo, hi) for lo, hi in zip(fits["B_noise_lo"], fits["B_noise_hi"])]
    out["se"] = fits["se_log10"]
    out["note"] = fits["note"].fillna("")
    return out


def compact_critical(crit: pd.DataFrame, keys: list[str], wide: bool = False) -> pd.DataFrame:
    """The critical batch size per target for the terminal: B_noise and S_min each with its 90%
    interval in one column, R² and the note (print it as footnotes); `wide` adds E_min
    (= B_noise·S_min)."""
    out = crit[[k for k in keys if k in crit]].copy()
    out["target"], out["n"] = crit["target"], crit["n"]
    for k in ("B_noise", "S_min") + (("E_min",) if wide and "E_min" in crit else ()):
        out[f"{k} (90% CI)"] = [markdown.with_ci(*v) for v in zip(crit[k], crit[f"{k}_lo"], crit[f"{k}_hi"])]
    out["R²"] = crit["r2"]
    if "note" in crit:
        out["note"] = crit["note"].fillna("")
    return out
