"""O11 (document 003): the surge of Adam's optimal LR with the batch size, put to a test.

Protocol. Two optimizers: sign-like Adam (betas 0, 0: the setting the theory is derived for) and
Adam's defaults (0.9, 0.999). Batch sizes 4 ... 4096, a decade or more on each side of the
noise scale measured on this model (B_simple ~1e2 at initialisation, 25-75 at the targets at the
fastest LRs, the S-E B_noise ~1e2; train.noise_scale logs B_simple here too). Every run stops `stop_after_target` steps after its
smoothed train loss first reaches the lowest target and is evaluated there and at the stop.
Four judgings pick the best LR per (optimizer, B): document 003's (the smoothed train loss's
drop in the 10 steps after each of three targets, i.e. three stages of training) and a denoised
one (the drop of the validation loss, one fixed set of images, between the two evaluations).

LR grid in two passes, both into one sweep folder (one experiment: the passes differ only in
their axes, so summarize reads them as one grid):
1. coarse: configs/o11.small.yaml, seed 0, LRs every 0.2 decade over each optimizer's range;
2. refined (written here, runs/_reproduce/o11-refined.yaml): around each (optimizer, B)'s coarse
   optimum under every judging, the LRs of the 0.1-decade lattice within HALF decades (EDGE_HALF
   past an optimum at the coarse grid's edge), each with SEEDS. A zip of (betas, B, the coarse
   pass's per-B axes, LR) lists exactly those cells; the coarse runs at the
   same cells (seed 0) are the same runs (same config, same id) and are not trained again.
The coarse optima are computed from the coarse cells only, so a rerun writes the same refined
file whatever the refined runs say.

Verdict per (optimizer, judging), from the 90% bootstrap intervals over seeds of the optima
(summarize's lr_opt_lo/hi): 'surge reproduced' when the optimum peaks inside the B grid with a
resolved rise before and a resolved fall after (intervals apart); 'not reproduced' when the fall
the surge law predicts between the batch size nearest B_noise (the S-E fit at that target) and
the largest B lies below the whole interval of the measured change; otherwise 'inconclusive'.
"""
from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from lrsweep.analysis import critical
from lrsweep.analysis.cells import add_loss_drop, best_lr_table
from lrsweep.analysis.runs import load_runs
from lrsweep.config.grid import load_sweep

if __package__ in (None, ""):  # run as a script (main below): docs/ on the path, for `repro`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from repro.common import REPO, check, figure, g, img, md, paths, results, saved, unresolved, verdict

NAME = "o11-small"
CONFIG = REPO / "configs" / "o11.small.yaml"
TARGETS = (0.6, 0.45, 0.3)  # train-loss stages; the config stops AFTER steps after the lowest
AFTER = 10  # document 003's steps after the target (Fashion-MNIST CNN)
LATTICE = 0.1  # decades between refined LRs
HALF = 0.15  # refined LRs within this many decades of a coarse optimum: 3-4 lattice points
EDGE_HALF = 0.4  # ... and this many beyond a coarse optimum at the grid's edge (that side only)
SEEDS = (0, 1, 2)
OPTIMIZERS = {(0.0, 0.0): "sign-like Adam (β = 0, 0)", (0.9, 0.999): "Adam (0.9, 0.999)"}


@dataclass(frozen=True)
class Judging:
    key: str
    metric: str
    target: float
    label: str

    @property
    def report(self) -> str:
        return f"report-{self.key}"


def judgings(targets=TARGETS, after: int = AFTER) -> list[Judging]:
    """Document 003's judging at each target, and the denoised one at the lowest (the run's own
    target: the two evaluations are there and at the stop)."""
    low = min(targets)
    return [Judging(f"drop-{t:g}", "loss_drop_after_target", t, f"train-loss drop, {after} steps after loss {t:g} (document 003)")
            for t in targets] + [Judging(f"val-{low:g}", "val_loss_drop_after_target", low,
                                         f"val-loss drop, target {low:g} → stop (denoised)")]


JUDGINGS = judgings()


def refined_file(name: str = NAME) -> Path:
    return paths.runs / "_reproduce" / f"{name.removesuffix('-small')}-refined.yaml"


def summarize_calls() -> list[list[str]]:
    """`lrsweep summarize` per judging, each into its own report folder of the sweep; figures
    only for the denoised one (the page copies its heatmap; drawing the rest would double the time)."""
    return [[f"runs/{NAME}", "--metric", j.metric, "--target", f"{j.target:g}", "--after-steps", str(AFTER),
             "--out", f"runs/{NAME}/{j.report}", *(["--no-plots"] if j.metric == "loss_drop_after_target" else [])]
            for j in JUDGINGS]


# --------------------------------------------------------------------------- the refined pass

def betas_of(v) -> tuple:
    return tuple(float(x) for x in v)


def lattice_index(lr: float) -> int:
    return int(round(math.log10(lr) / LATTICE))


def coarse_runs(config: Path = CONFIG):
    """The finished runs of the coarse grid `config` only (its cells at seed 0), as lrsweep's Runs."""
    sweep = load_sweep(config)
    runs = load_runs(paths.runs / sweep.name)
    cells = {(betas_of(r.config.optimizer.betas), r.config.train.batch_size, lattice_index(r.config.optimizer.lr))
             for r in sweep.runs}
    df = runs.df
    betas = df["optimizer.betas"] if "optimizer.betas" in df else [sweep.runs[0].config.optimizer.betas] * len(df)
    keep = [(betas_of(b), int(B), lattice_index(lr)) in cells and s == 0
            for b, B, lr, s in zip(betas, df["batch_size"], df["lr"], df["seed"])]
    return dataclasses.replace(runs, df=df[keep].reset_index(drop=True))


def coarse_optima(runs, js: list[Judging] = JUDGINGS, after: int = AFTER) -> pd.DataFrame:
    """Per judging, optimizer and B: the coarse grid's optimum (summarize's best_lr_table, on the
    coarse cells alone) and the LR window the refined pass covers around it."""
    curves, _ = critical.curve_table(runs.df, sorted({j.target for j in js}), after)
    rows = []
    for j in js:
        scored = add_loss_drop(runs, curves, j.target) if j.metric == "loss_drop_after_target" else runs
        for _, b in best_lr_table(scored, j.metric).iterrows():
            center = b.lr_opt if np.isfinite(b.lr_opt) else b.best_lr
            edge = b.edge if isinstance(b.edge, str) else ""
            ok = np.isfinite(center)
            rows.append({"judging": j.key, "optimizer.betas": betas_of(b["optimizer.betas"]) if "optimizer.betas" in b else None,
                         "batch_size": int(b.batch_size), "coarse best LR": b.best_lr, "coarse optimum": b.lr_opt, "edge": edge,
                         "center": center, "below": (EDGE_HALF if edge == "low" else HALF) if ok else math.nan,
                         "above": (EDGE_HALF if edge == "high" else HALF) if ok else math.nan})
    return pd.DataFrame(rows)


def refined_cells(optima: pd.DataFrame, coarse_lrs: dict[int, float]) -> pd.DataFrame:
    """(betas, B, lattice index, LR) of every refined cell: the union over judgings of the
    lattice points within each window. `coarse_lrs`: lattice index -> the coarse grid's own LR
    value there, so a shared cell is the same run."""
    out = set()
    for _, o in optima.dropna(subset=["center"]).iterrows():
        c = math.log10(o.center) / LATTICE
        for k in range(math.ceil(c - o.below / LATTICE - 1e-9), math.floor(c + o.above / LATTICE + 1e-9) + 1):
            out.add((o["optimizer.betas"], int(o.batch_size), k))
    rows = [{"optimizer.betas": b, "batch_size": B, "k": k, "lr": coarse_lrs.get(k, float(f"{10 ** (k * LATTICE):.12g}"))}
            for b, B, k in sorted(out)]
    return pd.DataFrame(rows, columns=["optimizer.betas", "batch_size", "k", "lr"])


def per_batch_axes(raw: dict) -> dict[int, dict]:
    """B -> the other axes zipped with batch_size in the coarse sweep (its step cap and stall
    check), which the refined cells of that B keep; {} when batch_size is an axis of its own."""
    zips = (raw.get("sweep") or {}).get("zip") or []
    for z in zips if isinstance(zips, list) else [zips]:
        if "batch_size" in z:
            return {int(b): {k: v[i] for k, v in z.items() if k != "batch_size"} for i, b in enumerate(z["batch_size"])}
    return {}


def write_refined(config: Path = CONFIG, targets=TARGETS, runs=None) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    """The refined sweep file of coarse grid `config` from its finished coarse runs under
    paths.runs: (its path, the coarse optima, the cells). The judgings' targets: `targets` (the
    lowest is the config's own train.target_train_loss, where the run stops)."""
    raw = yaml.safe_load(Path(config).read_text())
    sweep = load_sweep(config)
    after = sweep.runs[0].config.train.stop_after_target
    runs = coarse_runs(config) if runs is None else runs
    optima = coarse_optima(runs, judgings(targets, after), after)
    coarse_lrs = {lattice_index(lr): float(lr) for lr in runs.df["lr"]}
    cells = refined_cells(optima, coarse_lrs)
    if cells["optimizer.betas"].isna().all():  # one optimizer: the base config's betas stay
        cells["optimizer.betas"] = [betas_of(sweep.runs[0].config.optimizer.betas)] * len(cells)
    per_b = per_batch_axes(raw)
    sizes = [int(b) for b in cells["batch_size"]]
    extra = next(iter(per_b.values())) if per_b else {}
    raw["sweep"] = {"zip": {"optimizer.betas": [list(b) for b in cells["optimizer.betas"]], "batch_size": sizes,
                            **{k: [per_b[b][k] for b in sizes] for k in extra},
                            "lr": [float(x) for x in cells["lr"]]},
                    "seed": list(SEEDS)}
    f = refined_file(sweep.name)
    f.parent.mkdir(parents=True, exist_ok=True)
    head = (f"# Written by docs/repro/o11.py from the coarse runs of {Path(config).name} (judged at train loss "
            f"{', '.join(f'{t:g}' for t in targets)}):\n"
            f"# per (optimizer, B) the {LATTICE}-decade LRs within {HALF} decades of each judging's coarse optimum\n"
            f"# ({EDGE_HALF} at the grid's edge), each with seeds {list(SEEDS)}. Train it into the same folder:\n"
            f"#   lrsweep run {f} --out {paths.runs}\n")
    f.write_text(head + yaml.safe_dump(raw, sort_keys=False, default_flow_style=None, width=120))
    return f, optima, cells


# --------------------------------------------------------------------------- the verdict

def surge_law_ratio(B: float, b_noise: float) -> float:
    """ε_opt(B) / ε_max of document 003's eq. 2."""
    return 2.0 / (math.sqrt(b_noise / B) + math.sqrt(B / b_noise))


def judge_surge(best: pd.DataFrame, b_noise: float = math.nan) -> dict:
    """The surge verdict for one (optimizer, judging): best has per B `batch_size`, `lr_opt`,
    `lr_opt_lo`, `lr_opt_hi` (90% intervals over seeds) and `bracketed`. Returns word (surge
    reproduced | not reproduced | inconclusive), the peak B, rise/fall (resolved), and the
    predicted and measured change from the B nearest b_noise to the largest B (decades)."""
    d = best[best["bracketed"].astype(bool) & np.isfinite(best["lr_opt"])].sort_values("batch_size")
    d = d[np.isfinite(d["lr_opt_lo"]) & np.isfinite(d["lr_opt_hi"])].reset_index(drop=True)
    out = {"word": "inconclusive", "n": len(d), "peak_B": math.nan, "rise": False, "fall": False,
           "predicted": math.nan, "measured_lo": math.nan, "measured_hi": math.nan, "why": ""}
    if len(d) < 3:
        out["why"] = f"{len(d)} batch sizes with a bracketed optimum and an interval (3 needed)"
        return out
    p = int(d["lr_opt"].idxmax())
    out["peak_B"] = float(d.batch_size[p])
    out["rise"] = bool((d.lr_opt_hi[:p] < d.lr_opt_lo[p]).any())
    out["fall"] = bool((d.lr_opt_hi[p + 1:] < d.lr_opt_lo[p]).any())
    if np.isfinite(b_noise) and b_noise > 0:
        near = int(np.argmin(np.abs(np.log(d.batch_size / b_noise))))
        last = len(d) - 1
        if near < last:
            out["predicted"] = math.log10(surge_law_ratio(d.batch_size[last], b_noise) / surge_law_ratio(d.batch_size[near], b_noise))
            out["measured_lo"] = math.log10(d.lr_opt_lo[last] / d.lr_opt_hi[near])
            out["measured_hi"] = math.log10(d.lr_opt_hi[last] / d.lr_opt_lo[near])
            out["near_B"], out["last_B"] = float(d.batch_size[near]), float(d.batch_size[last])
    if out["rise"] and out["fall"]:
        out["word"] = "surge reproduced"
        out["why"] = f"peak at B={g(out['peak_B'])} with a resolved rise before it and a resolved fall after it"
    elif np.isfinite(out["predicted"]) and out["predicted"] < out["measured_lo"]:
        out["word"] = "not reproduced"
        out["why"] = (f"from B={g(out['near_B'])} (nearest B_noise {g(b_noise)}) to B={g(out['last_B'])} the surge law predicts "
                      f"{g(out['predicted'], 2)} decades; measured {g(out['measured_lo'], 2)} to {g(out['measured_hi'], 2)}")
    else:
        out["why"] = (f"peak at B={g(out['peak_B'])}; rise {'resolved' if out['rise'] else 'not resolved'}, "
                      f"fall {'resolved' if out['fall'] else 'not resolved'}"
                      + (f"; predicted change B={g(out['near_B'])} → {g(out['last_B'])}: {g(out['predicted'], 2)} decades, "
                         f"measured {g(out['measured_lo'], 2)} to {g(out['measured_hi'], 2)}" if np.isfinite(out["predicted"]) else
                         "; no B_noise to compare with"))
    return out


def grows(values: list[tuple[float, float, float, float]]) -> str:
    """Does a quantity grow as the target loss falls? values: (target, estimate, lo, hi) in
    falling-loss order. 'grows' when the last interval lies above the first, 'falls' when below."""
    v = [x for x in values if np.isfinite(x[1])]
    if len(v) < 2 or not all(np.isfinite(x[2]) and np.isfinite(x[3]) for x in (v[0], v[-1])):
        return "not determined"
    if v[-1][2] > v[0][3]:
        return "grows"
    if v[-1][3] < v[0][2]:
        return "falls"
    return "not resolved"


# --------------------------------------------------------------------------- the page block

def _of(df: pd.DataFrame, betas: tuple) -> pd.DataFrame:
    col = df["optimizer.betas"].map(lambda v: betas_of(v if not isinstance(v, str) else v.strip("()[]").split(",")))
    return df[col == betas]


def num(x) -> float:
    """A table value as a float, NaN for None or text (fits.json writes a missing number as null)."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _interval(lo, hi) -> str:
    lo, hi = num(lo), num(hi)
    return f"{g(lo)}–{g(hi)}" if np.isfinite(lo) and np.isfinite(hi) else "—"


def o11_block() -> str:
    reports = {j.key: saved(NAME, j.report) for j in JUDGINGS}
    parts, verdicts, curves = [], [], {}
    for betas, label in OPTIMIZERS.items():
        rows, bn_rows = {}, []
        for j in JUDGINGS:
            rep = reports[j.key]
            best = _of(rep.best_csv(), betas).sort_values("batch_size")
            bn = _of(rep.table("bnoise"), betas)
            bn = bn[np.isclose(bn.target, j.target)] if len(bn) else bn
            b_noise = num(bn.B_noise.iloc[0]) if len(bn) else math.nan
            v = judge_surge(best, b_noise)
            verdicts.append((label, j, v))
            curves[(betas, j.key)] = best
            for _, b in best.iterrows():
                row = rows.setdefault(int(b.batch_size), {"B": int(b.batch_size)})
                mark = "" if b.bracketed else f" ({b.edge or 'not bracketed'})"
                row[j.key] = f"{g(b.lr_opt)} [{_interval(b.lr_opt_lo, b.lr_opt_hi)}]{mark}" if np.isfinite(b.lr_opt) else "—"
            if len(bn):
                x = bn.iloc[0]
                bn_rows.append({"judging": j.key, "target": g(j.target),
                                "B_noise (S–E fit)": f"{g(x.B_noise)} [{_interval(x.B_noise_lo, x.B_noise_hi)}]",
                                "B_peak (surge law)": f"{g(x.get('B_peak'))} [{_interval(x.get('B_peak_lo', math.nan), x.get('B_peak_hi', math.nan))}]",
                                "B_simple (median)": f"{g(x.get('B_simple'))} [{_interval(x.get('B_simple_lo', math.nan), x.get('B_simple_hi', math.nan))}]",
                                "peak of the optima": g(v["peak_B"]), "verdict": v["word"]})
        parts += [f"**{label}**: optimal LR per B (interpolated, [90% interval over {len(SEEDS)} seeds]) under each judging:",
                  md(pd.DataFrame([rows[b] for b in sorted(rows)])),
                  "B_noise three ways at each judging's target (summarize's comparison), and the peak of the measured optima:",
                  md(pd.DataFrame(bn_rows))]
    checks = []
    for label, j, v in verdicts:
        text = f"{label}, {j.label}: {v['why']}"
        checks.append(check(True, text) if v["word"] == "surge reproduced" else
                      check(False, text) if v["word"] == "not reproduced" else unresolved(text))
    moves = []
    for betas, label in OPTIMIZERS.items():
        peaks, se = [], []
        for j in JUDGINGS[:len(TARGETS)]:
            bn = _of(reports[j.key].table("bnoise"), betas)
            if len(bn):
                x = bn.iloc[0]
                peaks.append((j.target, *(num(x.get(k)) for k in ("B_peak", "B_peak_lo", "B_peak_hi"))))
                se.append((j.target, *(num(x.get(k)) for k in ("B_noise", "B_noise_lo", "B_noise_hi"))))
        moves.append(f"- {label}: as the target falls {' → '.join(g(t) for t, *_ in peaks)}, the surge law's peak "
                     f"{grows(peaks)} ({', '.join(f'{g(p)} [{_interval(lo, hi)}]' for _, p, lo, hi in peaks)}); "
                     f"the S–E B_noise {grows(se)} ({', '.join(f'{g(p)} [{_interval(lo, hi)}]' for _, p, lo, hi in se)})")
    words = {v["word"] for *_, v in verdicts}
    word = next(iter(words)) if len(words) == 1 else \
        "mixed: " + ", ".join(f"{sum(v['word'] == w for *_, v in verdicts)} {w}" for w in sorted(words))

    def draw(*axes):
        for ax, (betas, label) in zip(axes, OPTIMIZERS.items()):
            for j in JUDGINGS:
                b = curves[(betas, j.key)]
                b = b[b.bracketed.astype(bool) & np.isfinite(b.lr_opt)]
                lo = (b.lr_opt - b.lr_opt_lo).where(np.isfinite(b.lr_opt_lo), 0)
                hi = (b.lr_opt_hi - b.lr_opt).where(np.isfinite(b.lr_opt_hi), 0)
                ax.errorbar(b.batch_size, b.lr_opt, yerr=[lo, hi], fmt="o-", ms=4, capsize=3, label=j.key)
            ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="optimal LR (90% interval over seeds)", title=label)
            ax.legend(fontsize=8)
    runs = results(NAME)
    counts = (f"The folder holds {len(runs)} runs ({int((runs.status == 'complete').sum())} complete, "
              f"{int((runs.status == 'stalled').sum())} stalled, {int((runs.status == 'diverged').sum())} diverged): "
              f"{int((runs.seed == 0).sum())} at seed 0 (the coarse grid and the refined LRs), "
              f"{int((runs.seed != 0).sum())} at seeds {', '.join(str(x) for x in SEEDS if x)}.")
    return "\n\n".join([counts, *parts, "\n".join(checks), "\n".join(moves),
                        verdict(word, f"{len(SEEDS)} seeds near each optimum (1 elsewhere); a 90% bootstrap interval from "
                                      f"{len(SEEDS)} seeds has few distinct resamples, so it is coarse; the LR lattice near "
                                      f"the optima is {LATTICE} decade."),
                        figure("o11-surge.png", "O11: optimal LR against B per judging, both optimizers", draw),
                        img(reports[JUDGINGS[-1].key].figure("heatmap", **{"optimizer.betas": [0.0, 0.0]}),
                            "o11-heatmap-sign.png", "O11: denoised loss drop, B x LR, sign-like Adam")])


def main() -> None:
    """`python docs/repro/o11.py CONFIG`: the refined pass of a coarse O11 grid already trained
    (e.g. configs/o11-fashion-mnist.full.yaml on a GPU); prints the command that trains it."""
    import argparse

    ap = argparse.ArgumentParser(description="Write the refined LR pass of a trained coarse O11 grid (docs/repro/o11.py).")
    ap.add_argument("config", type=Path, help="the coarse sweep file (its runs are under --runs/<name>)")
    ap.add_argument("--runs", type=Path, default=Path("runs"), help="the runs folder (default: runs)")
    ap.add_argument("--target", type=float, action="append",
                    help="train-loss targets to judge at (repeatable; default: the config's target_train_loss)")
    a = ap.parse_args()
    paths.runs = a.runs.resolve()
    targets = a.target or [load_sweep(a.config).runs[0].config.train.target_train_loss]
    f, optima, cells = write_refined(a.config, targets)
    print(f"{len(optima)} coarse optima -> {len(cells)} refined cells x {len(SEEDS)} seeds: wrote {f}\n"
          f"next: lrsweep run {f} --out {a.runs}")


if __name__ == "__main__":
    main()
