"""What every observation block of docs/reproduce.py shares: where the runs are, lrsweep's own
readers of run and report folders, the page's small formatters, and the uncertainty of a number
(seed spread, the binomial standard error of an accuracy) that every verdict states.

The runs folder is `paths.runs` (docs/reproduce.py --runs sets it), read at call time, so a
block written here reads whichever folder the page is being rebuilt from.
"""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lrsweep.analysis.runs import load_runs
from lrsweep.analysis.saved import SavedReport, read_report
# g and md: the one number/table formatter of lrsweep (report.md and --format markdown use it too),
# short-named because the page blocks call them in every line
from lrsweep.output.markdown import cell as g, table as md  # noqa: F401 (md: used by the blocks)

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "reproductions.md"
IMG = REPO / "docs" / "img" / "repro"


@dataclass
class Paths:
    runs: Path = REPO / "runs"  # where `lrsweep run --out` put the sweeps (reproduce.py --runs)


paths = Paths()


# --------------------------------------------------------------------------- reading results
# Run folders and report folders are read by lrsweep's own readers (analysis.runs, analysis.saved).

def results(name: str) -> pd.DataFrame:
    """One row per finished run of <runs>/<name>: every scalar of result.json, its axes and folder."""
    return load_runs(paths.runs / name).df


def saved(name: str, report: str = "report") -> SavedReport:
    """The report folder summarize wrote for <runs>/<name> (fits.json, best_lr.csv, the PNGs)."""
    return read_report(paths.runs / name / report)


def suggestions(name: str, sub: str = "range_test", names=("valley", "steepest", "minimum/10", "clr-upper")) -> pd.DataFrame:
    rt = json.loads((paths.runs / name / sub / "range_test.json").read_text())
    return pd.DataFrame([{"batch_size": r["batch_size"], **{n: (r["suggestions"].get(n) or {}).get("lr") for n in names}}
                         for r in rt["results"]])


# --------------------------------------------------------------------------- uncertainty

def binomial_se(p: float, n: int) -> float:
    """Standard error of an accuracy p measured on n images: sqrt(p (1 - p) / n). Two models
    scored on the same images differ by less noise than this suggests (their errors are
    correlated); independent sets would give sqrt(2) times it for a difference."""
    return math.sqrt(p * (1 - p) / n) if n and 0 <= p <= 1 else math.nan


def val_images(r: pd.DataFrame) -> int:
    """How many validation images the runs of a table were scored on (dataset.val_subset, else
    the test split's size), read from the first run's config.json."""
    cfg = json.loads((Path(r.iloc[0]["path"]) / "config.json").read_text())
    ds = cfg.get("dataset") or {}
    full = {"mnist": 10_000, "fashion-mnist": 10_000}.get(ds.get("name"))
    if ds.get("name") == "synthetic":
        full = (ds.get("synthetic") or {}).get("n_val")
    sub = ds.get("val_subset")
    return int(min(sub, full) if sub and full else sub or full or 0)


def pooled_seed_std(r: pd.DataFrame, keys: list[str], metric: str = "final_val_acc") -> tuple[float, int]:
    """The seed-to-seed standard deviation pooled over the cells (`keys`) of `r` whose seeds all
    completed: (std, degrees of freedom). Two seeds per cell give one degree of freedom each, so
    the pooled value is far steadier than any single cell's. Give it the cells being compared
    (each group's best LR): a cell on the edge of divergence has a spread of its own."""
    ok = r[r.status == "complete"]
    ss, dof = 0.0, 0
    for _, d in ok.groupby(keys):
        v = d[metric].dropna()
        if len(v) >= 2:
            ss += float(((v - v.mean()) ** 2).sum())
            dof += len(v) - 1
    return (math.sqrt(ss / dof) if dof else math.nan), dof


def best_cells(r: pd.DataFrame, group: str, best: pd.DataFrame) -> pd.DataFrame:
    """The runs of each group's best LR (best_per_group's table: group, best LR)."""
    pairs = set(zip(best["group"].astype(str), best["best LR"]))
    return r[[(str(gv), lr) in pairs for gv, lr in zip(r[group], r["lr"])]]


def seed_note(n_seeds: int) -> str:
    return "one seed: no seed spread measured" if n_seeds < 2 else f"{n_seeds} seeds"


# --------------------------------------------------------------------------- page helpers

def mean_std(s: pd.Series) -> str:
    v = s.dropna()
    if v.empty:
        return "div"
    return f"{v.mean():.4f}" + (f" ± {v.std():.4f}" if len(v) > 1 else "")


def acc_cell(d: pd.DataFrame, metric: str = "final_val_acc") -> str:
    """mean ± std of the completed seeds; 'div' when every seed diverged; 'k/n div' otherwise."""
    ok = d[d.status == "complete"][metric]
    n_div = int((d.status == "diverged").sum())
    txt = mean_std(ok)
    return txt if n_div == 0 or ok.empty else f"{txt} ({n_div}/{len(d)} div)"


def check(ok: bool, text: str) -> str:
    return f"- {'✅' if ok else '❌'} {text}"


def unresolved(text: str) -> str:
    """A check the numbers cannot decide (a difference inside its uncertainty): neither ✅ nor ❌."""
    return f"- ➖ {text}"


def judged(resolved: bool, ok: bool, text: str) -> str:
    """✅/❌ by `ok` when the difference it rests on is resolved (beyond its uncertainty), else ➖."""
    return check(ok, text) if resolved else unresolved(text + " — not resolved")


def verdict(word: str, text: str) -> str:
    """The block's measured verdict line: the word (reproduced, not reproduced, partly,
    inconclusive) and what it rests on, with its uncertainty."""
    return f"**Measured verdict: {word}.** {text}"


def img(src: Path, dst_name: str, alt: str) -> str:
    """Copy a PNG lrsweep wrote into docs/img/repro/ and return its markdown."""
    IMG.mkdir(parents=True, exist_ok=True)
    if not src.exists():
        where = src.relative_to(paths.runs.parent) if src.is_relative_to(paths.runs.parent) else src
        return f"*(figure missing: {where})*"
    shutil.copyfile(src, IMG / dst_name)
    return f"![{alt}](img/repro/{dst_name})"


def figure(name: str, alt: str, draw, panels: int = 2) -> str:
    """A comparison between groups, drawn here from the run files (matplotlib, headless)."""
    from matplotlib.figure import Figure
    IMG.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(5 * panels, 4.2))
    axes = fig.subplots(1, panels)
    draw(*np.atleast_1d(axes))
    fig.tight_layout()
    fig.savefig(IMG / name, dpi=100)
    return f"![{alt}](img/repro/{name})\n\n*Drawn by `docs/reproduce.py` from the runs' metrics.csv / evals.csv (a comparison across groups, which the per-group summarize plots do not show).*"


ONE_B = "Fitted B_noise: — (one batch size, 64: the S/E fit needs two or more; see O5, O8, O11)."


def bnoise(crit: pd.DataFrame, label: str = "") -> str:
    """The critical-batch table of a report in one sentence per row, with its 90% intervals."""
    if crit.empty:
        return "Fitted B_noise: — (no train-loss target reached by 2+ batch sizes)."
    from lrsweep.analysis import noise

    stats = {"target", "n", "B_noise", "S_min", "E_min", "r2", "note", *noise.COLUMNS}
    parts = []
    for _, c in crit.iterrows():
        keys = ", ".join(f"{k}={c[k]}" for k in crit.columns if k not in stats and not k.endswith(("_lo", "_hi")))
        ci = f" [90% CI {g(c.B_noise_lo)}–{g(c.B_noise_hi)}]" if pd.notna(c.get("B_noise_lo")) and pd.notna(c.get("B_noise_hi")) else ""
        parts.append(f"{keys + ': ' if keys else ''}target {g(c.target)}: B_noise = {g(c.B_noise)}{ci} "
                     f"(S_min {g(c.S_min)} steps, E_min {g(c.E_min)} examples, {int(c.n)} batch sizes"
                     + (f", R² {g(c.r2, 2)}" if c.get("r2") is not None and not pd.isna(c.get("r2")) else "")
                     + (f"; {c.note}" if isinstance(c.get("note"), str) and c.note else "") + ")")
    return "Fitted B_noise (summarize, from steps S and examples E to the train-loss target at each B's fastest LR): " + \
           "; ".join(parts) + "."


def by_group_lr(r: pd.DataFrame, group: str, metric="final_val_acc") -> pd.DataFrame:
    rows = []
    for gv, d in r.groupby(group, sort=False):
        row = {group.split(".")[-1]: str(gv)}
        for lr, dd in d.groupby("lr"):
            row[f"LR {g(lr)}"] = acc_cell(dd, metric)
        rows.append(row)
    return pd.DataFrame(rows)


def best_per_group(r: pd.DataFrame, group: str, metric="final_val_acc", higher=True) -> pd.DataFrame:
    rows = []
    for gv, d in r.groupby(group, sort=False):
        agg = d.assign(score=np.where(d.status == "complete", d[metric], -np.inf if higher else np.inf)) \
               .groupby("lr").score.agg(["mean", "std", "size"])
        lr = agg["mean"].idxmax() if higher else agg["mean"].idxmin()
        rows.append({"group": str(gv), "best LR": lr, "mean": agg.loc[lr, "mean"], "std": agg.loc[lr, "std"],
                     "n": int(agg.loc[lr, "size"])})
    return pd.DataFrame(rows).sort_values("mean", ascending=not higher, ignore_index=True)
