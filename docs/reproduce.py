"""Re-run the source documents' experiments (configs/o*.small.yaml) and regenerate the tables and
figures of docs/reproductions.md.

    python docs/reproduce.py                 # run, range-test, summarize, rewrite the page (make reproduce)
    python docs/reproduce.py --only o1,o8    # some observations only
    python docs/reproduce.py --no-run        # only re-read finished runs and rewrite the page

Everything goes through the `lrsweep` command (run, range-test, summarize) into runs/ (git-
ignored; finished runs are skipped, so a second call only redoes the reports). The page keeps
its hand-written text; this script replaces what lies between `<!-- auto:KEY -->` and
`<!-- /auto:KEY -->` markers: per observation the measured tables, the figures (copied from the
summarize reports into docs/img/repro/, or drawn here from the run files where the comparison is
between groups), and automatic checks of the claim. Run from the repository root.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lrsweep import storage
from lrsweep.analysis.runs import load_runs, read_table
from lrsweep.analysis.saved import SavedReport, read_report
# g and md: the one number/table formatter of lrsweep (report.md and --format markdown use it too),
# short-named because the page blocks below call them in every line
from lrsweep.output.markdown import cell as g, params, table as md

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "reproductions.md"
IMG = REPO / "docs" / "img" / "repro"
RUNS = REPO / "runs"
TIMINGS = RUNS / "_reproduce" / "timings.json"
LRSWEEP = [sys.executable, "-m", "lrsweep"]


# --------------------------------------------------------------------------- running lrsweep

def load_timings() -> dict:
    try:
        return json.loads(TIMINGS.read_text())
    except (OSError, ValueError):
        return {}


def lrsweep(key: str, args: list[str], timings: dict, log: bool = True) -> str:
    """Run one lrsweep command from the repository root; keep its wall time under `key` (a rerun
    that trains nothing keeps the time of the run that did the work)."""
    t0 = time.perf_counter()
    p = subprocess.run(LRSWEEP + args, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    out = p.stdout + p.stderr
    logf = RUNS / "_reproduce" / f"{key}.log"
    logf.parent.mkdir(parents=True, exist_ok=True)
    logf.write_text(f"$ lrsweep {' '.join(args)}\n{out}")
    if p.returncode != 0:
        raise SystemExit(f"lrsweep {' '.join(args)} failed (exit {p.returncode}); see {logf}\n{out[-2000:]}")
    idle = args[0] == "run" and "this time: nothing new" in out
    if not (idle and key in timings):
        timings[key] = {"command": "lrsweep " + " ".join(args), "wall_s": round(wall, 1),
                        "when": time.strftime("%Y-%m-%d %H:%M")}
    if log:
        print(f"  {wall:6.1f}s  lrsweep {' '.join(args)}" + ("  (nothing new)" if idle else ""), flush=True)
    return out


# --------------------------------------------------------------------------- reading results
# Run folders and report folders are read by lrsweep's own readers (analysis.runs, analysis.saved).

def results(name: str) -> pd.DataFrame:
    """One row per finished run of runs/<name>: every scalar of result.json, its axes and folder."""
    return load_runs(RUNS / name).df


def saved(name: str) -> SavedReport:
    """The report folder summarize wrote for runs/<name> (fits.json, best_lr.csv, the PNGs)."""
    return read_report(RUNS / name / "report")


def suggestions(name: str, sub: str = "range_test", names=("valley", "steepest", "minimum/10", "clr-upper")) -> pd.DataFrame:
    rt = json.loads((RUNS / name / sub / "range_test.json").read_text())
    return pd.DataFrame([{"batch_size": r["batch_size"], **{n: (r["suggestions"].get(n) or {}).get("lr") for n in names}}
                         for r in rt["results"]])


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


def img(src: Path, dst_name: str, alt: str) -> str:
    """Copy a PNG lrsweep wrote into docs/img/repro/ and return its markdown."""
    IMG.mkdir(parents=True, exist_ok=True)
    if not src.exists():
        return f"*(figure missing: {src.relative_to(REPO)})*"
    shutil.copyfile(src, IMG / dst_name)
    return f"![{alt}](img/repro/{dst_name})"


def figure(name: str, alt: str, draw) -> str:
    """A comparison between groups, drawn here from the run files (matplotlib, headless)."""
    from matplotlib.figure import Figure
    IMG.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(10, 4.2))
    axes = fig.subplots(1, 2)
    draw(*axes)
    fig.tight_layout()
    fig.savefig(IMG / name, dpi=100)
    return f"![{alt}](img/repro/{name})\n\n*Drawn by `docs/reproduce.py` from the runs' metrics.csv / evals.csv (a comparison across groups, which the per-group summarize plots do not show).*"


# --------------------------------------------------------------------------- the observations
# Each entry: configs to run, range tests, summarize calls, and a function writing the page block.

def o1_block() -> str:
    r = results("o1-small")
    B = sorted(r.batch_size.unique())
    rows = []
    for lr, d in r.groupby("lr"):
        cell = {int(x.batch_size): ("diverged" if x.status == "diverged" else g(x.final_train_loss, 3)) for _, x in d.iterrows()}
        rows.append({"LR": g(lr), **{f"B={b} final train loss": cell.get(int(b), "—") for b in B}})
    best = saved("o1-small").best_csv()
    sug = suggestions("o1-small")
    cmp_rows = []
    for b in B:
        bb = best[best.batch_size == b].iloc[0]
        s = sug[sug.batch_size == b].iloc[0]
        cmp_rows.append({"B": b, "grid best LR": g(bb.best_lr), "interpolated optimum": g(bb.lr_opt),
                         "range test: valley": g(s["valley"]), "steepest": g(s["steepest"]),
                         "minimum/10": g(s["minimum/10"]), "clr-upper": g(s["clr-upper"])})
    checks = []
    for b in B:
        col = r[r.batch_size == b].sort_values("lr")
        ok = col[col.status == "complete"]
        i_min = ok.final_train_loss.idxmin()
        lr_min = ok.loc[i_min, "lr"]
        falls = ok.final_train_loss.iloc[0] > 2 * ok.loc[i_min, "final_train_loss"]
        rises = (col[col.lr > lr_min].status == "diverged").any() or (ok[ok.lr > lr_min].final_train_loss > ok.loc[i_min, "final_train_loss"]).all()
        checks.append(check(falls and rises and lr_min not in (col.lr.min(), col.lr.max()),
                            f"B={b}: the loss falls from LR {g(col.lr.min())} ({g(ok.final_train_loss.iloc[0])}) to a minimum "
                            f"at LR {g(lr_min)} ({g(ok.loc[i_min, 'final_train_loss'])}), then rises; "
                            f"{int((col.status == 'diverged').sum())} of {len(col)} LRs diverged "
                            f"(from LR {g(col[col.status == 'diverged'].lr.min())}), recorded as data"))
    crit = saved("o1-small").table("critical")
    return "\n\n".join([
        md(pd.DataFrame(rows)),
        "Grid optimum against the range test on the same setup (100 steps, LR ramped 1e-4 → 10):",
        md(pd.DataFrame(cmp_rows)),
        _bnoise(crit, "O1"),
        "\n".join(checks),
        img(saved("o1-small").figure("metric_vs_lr"), "o1-loss_vs_lr.png", "O1: final train loss against LR, B = 32 and 256"),
        img(RUNS / "o1-small" / "range_test" / "range_test.png", "o1-range_test.png", "O1: LR range test, B = 32 and 256"),
    ])


ONE_B = "Fitted B_noise: — (one batch size, 64: the S/E fit needs two or more; see O5, O8, O11)."


def _bnoise(crit: pd.DataFrame, label: str) -> str:
    if crit.empty:
        return "Fitted B_noise: — (no train-loss target reached by 2+ batch sizes)."
    parts = []
    for _, c in crit.iterrows():
        keys = ", ".join(f"{k}={c[k]}" for k in crit.columns if k not in ("target", "n", "B_noise", "S_min", "E_min", "r2", "note")
                         and not k.endswith(("_lo", "_hi")))
        ci = f" [90% CI {g(c.B_noise_lo)}–{g(c.B_noise_hi)}]" if pd.notna(c.get("B_noise_lo")) and pd.notna(c.get("B_noise_hi")) else ""
        parts.append(f"{keys + ': ' if keys else ''}target {g(c.target)}: B_noise = {g(c.B_noise)}{ci} "
                     f"(S_min {g(c.S_min)} steps, E_min {g(c.E_min)} examples, {int(c.n)} batch sizes"
                     + (f", R² {g(c.r2, 2)}" if c.get("r2") is not None and not pd.isna(c.get("r2")) else "")
                     + (f"; {c.note}" if isinstance(c.get("note"), str) and c.note else "") + ")")
    return "Fitted B_noise (summarize, from steps S and examples E to the train-loss target at each B's fastest LR): " + \
           "; ".join(parts) + "."


def _by_group_lr(r: pd.DataFrame, group: str, metric="final_val_acc") -> pd.DataFrame:
    rows = []
    for gv, d in r.groupby(group, sort=False):
        row = {group.split(".")[-1]: str(gv)}
        for lr, dd in d.groupby("lr"):
            row[f"LR {g(lr)}"] = acc_cell(dd, metric)
        rows.append(row)
    return pd.DataFrame(rows)


def _best_per_group(r: pd.DataFrame, group: str, metric="final_val_acc", higher=True) -> pd.DataFrame:
    rows = []
    for gv, d in r.groupby(group, sort=False):
        agg = d.assign(score=np.where(d.status == "complete", d[metric], -np.inf if higher else np.inf)) \
               .groupby("lr").score.agg(["mean", "std"])
        lr = agg["mean"].idxmax() if higher else agg["mean"].idxmin()
        rows.append({"group": str(gv), "best LR": lr, "mean": agg.loc[lr, "mean"], "std": agg.loc[lr, "std"]})
    return pd.DataFrame(rows).sort_values("mean", ascending=not higher, ignore_index=True)


def o2_block() -> str:
    r = results("o2-small")
    order = ["fixed", "step", "multistep", "exp", "inv", "poly", "sigmoid"]
    r["policy"] = pd.Categorical(r["schedule.name"], order)
    r = r.sort_values(["policy", "lr"])
    tab = _by_group_lr(r, "policy")
    best = _best_per_group(r, "policy")
    best.insert(0, "rank", range(1, len(best) + 1))
    best = best.rename(columns={"group": "policy", "mean": "final val acc (mean of 2 seeds)", "std": "seed std"})
    rank = {p: i for i, p in enumerate(best.policy, 1)}
    top = {"step", "multistep"}
    bottom = {"inv", "fixed"}
    n = len(rank)
    checks = [
        check(max(rank[p] for p in top) <= 2, f"step/multistep best: ranks {rank['step']}, {rank['multistep']} of {n}"),
        check(all(rank[p] <= 4 for p in ("exp", "poly")), f"exp/poly close behind: ranks {rank['exp']}, {rank['poly']}"),
        check(min(rank[p] for p in bottom) >= n - 1, f"inv/fixed worst: ranks {rank['inv']}, {rank['fixed']}"),
        f"- spread of the best per-policy accuracies: {g(best.iloc[0, 3] - best.iloc[-1, 3], 2)} "
        f"(seed std up to {g(best['seed std'].max(), 2)})",
    ]

    def draw(ax1, ax2):
        for p in order:
            d = r[(r.policy == p) & (r.lr == 0.1) & (r.seed == 0)]
            if not d.empty:
                m = read_table(d.iloc[0].path)
                ax1.plot(m.step, m.lr, label=p)
            ok = r[(r.policy == p) & (r.status == "complete")]
            acc = ok.groupby("lr").final_val_acc.mean()
            ax2.plot(acc.index, acc.values, "o-", label=p)
        ax1.set(xlabel="step", ylabel="LR (base 0.1)", title="the seven Caffe policies, T = 600 steps")
        ax1.set_yscale("log")
        ax2.set_xscale("log")
        ax2.set_xticks(sorted(r.lr.unique()), [f"{v:g}" for v in sorted(r.lr.unique())])
        ax2.minorticks_off()
        ax2.set(xlabel="base LR (log)", ylabel="final val acc (mean of 2 seeds; missing = diverged)",
                title="o2-small: MNIST MLP, SGD m=0.9, B=64")
        ax2.legend(fontsize=8)
    return "\n\n".join([md(tab), md(best), "\n".join(checks), ONE_B,
                        figure("o2-policies.png", "O2: the seven policies' LR and final accuracy", draw)])


def o3_block() -> str:
    r = results("o3-small")
    r["schedule"] = [f"{n}" + (f" (lower = upper × {f:.3g})" if n == "cyclic" else "")
                     for n, f in zip(r["schedule.name"], r["schedule.min_lr_factor"])]
    tab = _by_group_lr(r, "schedule")
    best = _best_per_group(r, "schedule").rename(columns={"group": "schedule", "mean": "final val acc", "std": "seed std"})
    s = suggestions("o3-small", names=("clr-upper", "clr-lower/3", "clr-lower/4", "valley"))
    s = s.rename(columns={"batch_size": "B"})
    const = best[best.schedule == "constant"].iloc[0]
    others = best[best.schedule != "constant"]
    gain = others["final val acc"].max() - const["final val acc"]
    noise = max(best["seed std"].max(), 1e-9)
    checks = [check(gain > 0, f"best cyclic/SGDR beats the best constant LR by {g(gain, 2)} accuracy "
                              f"({'above' if gain > noise else 'within'} the seed std {g(noise, 2)})"),
              (f"- range test (--val) bounds at B=64: upper {g(s['clr-upper'].iloc[0])}, "
                          f"lower/3 {g(s['clr-lower/3'].iloc[0])}, lower/4 {g(s['clr-lower/4'].iloc[0])}; "
                          f"the grid's best cyclic upper bound: {g(others[others.schedule.str.startswith('cyclic')]['best LR'].iloc[0])}")]
    return "\n\n".join([md(tab), md(best), "Range-test suggestions (same setup, `--val`: accuracy after every step):", md(s),
                        "\n".join(checks), ONE_B,
                        img(RUNS / "o3-small" / "range_test" / "range_test.png", "o3-range_test.png", "O3: range test with validation accuracy")])


def o4_block() -> str:
    r = results("o4-small")
    tab = r.pivot_table(index="lr", columns="optimizer.name", values="final_val_acc", aggfunc="mean")
    rows = []
    for lr in tab.index:
        rows.append({"LR": g(lr), **{o: acc_cell(r[(r.lr == lr) & (r["optimizer.name"] == o)]) for o in ("sgd", "adam")}})
    best = _best_per_group(r, "optimizer.name").rename(columns={"group": "optimizer", "mean": "final val acc", "std": "seed std"})
    sgd, adam = (best[best.optimizer == o].iloc[0] for o in ("sgd", "adam"))
    a_def = r[(r["optimizer.name"] == "adam") & (np.isclose(r.lr, 1e-3))].final_val_acc.mean()
    s_sgd = suggestions("o4-small")
    s_adam = suggestions("o4-small", "range_test_adam")
    rt = pd.DataFrame([{"optimizer": "sgd", "grid best LR": g(sgd["best LR"]), **{k: g(v) for k, v in s_sgd.iloc[0].items() if k != "batch_size"}},
                       {"optimizer": "adam", "grid best LR": g(adam["best LR"]), **{k: g(v) for k, v in s_adam.iloc[0].items() if k != "batch_size"}}])
    noise = max(sgd["seed std"], adam["seed std"])
    checks = [check(sgd["final val acc"] > adam["final val acc"] + noise,
                    f"tuned SGD {g(sgd['final val acc'], 4)} (LR {g(sgd['best LR'])}) vs tuned Adam {g(adam['final val acc'], 4)} "
                    f"(LR {g(adam['best LR'])}): difference {g(sgd['final val acc'] - adam['final val acc'], 2)}, seed std up to {g(noise, 2)}"),
              check(adam["final val acc"] - a_def <= 0.01,
                    f"Adam at its default LR 1e-3: {g(a_def, 4)}, {g(adam['final val acc'] - a_def, 2)} below tuned Adam "
                    f"(SGD at the same LR 1e-3: {g(r[(r['optimizer.name'] == 'sgd') & np.isclose(r.lr, 1e-3)].final_val_acc.mean(), 4)})"),
              f"- LRs that trained (no divergence): SGD {g(r[(r['optimizer.name'] == 'sgd') & (r.status == 'complete')].lr.min())}–"
              f"{g(r[(r['optimizer.name'] == 'sgd') & (r.status == 'complete')].lr.max())}, Adam "
              f"{g(r[(r['optimizer.name'] == 'adam') & (r.status == 'complete')].lr.min())}–{g(r[(r['optimizer.name'] == 'adam') & (r.status == 'complete')].lr.max())}"]
    return "\n\n".join([md(pd.DataFrame(rows)), md(best), "Range test on the same setup (B = 64, 100 steps):", md(rt), "\n".join(checks), ONE_B,
                        img(saved("o4-small").figure("metric_vs_lr", **{"optimizer.name": "adam"}), "o4-adam.png", "O4: Adam, final val acc against LR"),
                        img(saved("o4-small").figure("metric_vs_lr", **{"optimizer.name": "sgd"}), "o4-sgd.png", "O4: SGD, final val acc against LR")])


def o5_block() -> str:
    arms = {"equal epochs (2)": "o5-small", "equal updates (400)": "o5-longer-small"}
    rows, per_epoch = [], []
    bests = {}
    for arm, name in arms.items():
        r = results(name)
        for b, d in r.groupby("batch_size"):
            ok = d[d.status == "complete"]
            i = ok.final_val_acc.idxmax()
            bests[(arm, b)] = ok.loc[i, "final_val_acc"]
            rows.append({"arm": arm, "B": b, "updates": int(ok.loc[i, "steps"]), "epochs": g(ok.loc[i, "epochs"], 3),
                         "best LR": g(ok.loc[i, "lr"]), "final val acc": g(ok.loc[i, "final_val_acc"], 4),
                         "final train loss": g(ok.loc[i, "final_train_loss"], 3)})
            if name == "o5-small":
                per_epoch.append({"B": b, "s per epoch (mean over LRs)": g((ok.time_s / ok.epochs).mean(), 3),
                                  "compute s per epoch": g((ok.compute_time_s / ok.epochs).mean(), 3),
                                  "data s per epoch": g((ok.data_time_s / ok.epochs).mean(), 2)})
    Bs = sorted({b for _, b in bests})
    a1 = [bests[("equal epochs (2)", b)] for b in Bs]
    a2 = [bests[("equal updates (400)", b)] for b in Bs]
    gap1 = max(a1) - a1[-1]
    gap2 = max(a2) - a2[-1]
    # O7's second half: at a fixed LR, which B is best (Smith & Le: it grows with the LR)
    r = results("o5-small")
    o7 = []
    for lr, d in r.groupby("lr"):
        ok = d[d.status == "complete"]
        if len(ok):
            o7.append({"LR": g(lr), "best B at this LR (equal epochs)": int(ok.loc[ok.final_val_acc.idxmax(), "batch_size"]),
                       "its val acc": g(ok.final_val_acc.max(), 4)})
    o7 = pd.DataFrame(o7)
    grows = list(o7["best B at this LR (equal epochs)"]) == sorted(o7["best B at this LR (equal epochs)"])
    t = [float(x["s per epoch (mean over LRs)"]) for x in per_epoch]
    checks = [check(t[-1] < t[0], f"an epoch takes {g(t[0])} s at B={Bs[0]} and {g(t[-1])} s at B={Bs[-1]} (faster per epoch at large B)"),
              check(gap1 > 0.005, f"equal epochs: B={Bs[-1]} ends {g(gap1, 2)} below the best B ({g(max(a1), 4)} at B={Bs[int(np.argmax(a1))]})"),
              check(gap2 < gap1, f"equal updates (train longer): the gap at B={Bs[-1]} is {g(gap2, 2)} "
                                 f"({'smaller' if gap2 < gap1 else 'not smaller'} than {g(gap1, 2)})"),
              check(grows, "O7 (second half): the best B at a fixed LR grows with the LR: " +
                    ", ".join(f"LR {a}: B={b}" for a, b in zip(o7['LR'], o7['best B at this LR (equal epochs)'])))]
    crit = saved("o5-small").table("critical")
    sug = suggestions("o5-small")
    best = saved("o5-small").best_csv()
    cmp = []
    for _, s in sug.iterrows():
        for arm_key, arm in (("o5-small", "equal epochs"), ("o5-longer-small", "equal updates")):
            bb = best[(best.batch_size == s.batch_size) & ((best["sweep"] == arm_key) if "sweep" in best else True)]
            if not len(bb):
                continue
            bb = bb.iloc[0]
            cmp.append({"B": int(s.batch_size), "arm": arm, "grid best LR": g(bb.best_lr), "interpolated": g(bb.lr_opt),
                        "range test valley": g(s["valley"]), "minimum/10": g(s["minimum/10"])})
    return "\n\n".join([md(pd.DataFrame(rows)), md(pd.DataFrame(per_epoch)),
                        "Grid optimum against the range test (100 steps per B) on the same setup:", md(pd.DataFrame(cmp)),
                        _bnoise(crit, "O5"), md(o7), "\n".join(checks),
                        img(saved("o5-small").figure("heatmap", sweep="o5-small"), "o5-heatmap-epochs.png", "O5: val acc, B x LR, equal epochs"),
                        img(saved("o5-small").figure("heatmap", sweep="o5-longer-small"), "o5-heatmap-updates.png", "O5: val acc, B x LR, equal updates"),
                        img(saved("o5-small").figure("critical_batch", sweep="o5-small"), "o5-critical.png", "O5: steps vs examples to train loss 0.3")])


def o6_block() -> str:
    r = results("o6-small")
    r["arm"] = [f"{rule}" + (" + warmup" if w else "") for rule, w in zip(r["lr_scaling.rule"], r["schedule.warmup_epochs"])]
    rows = []
    for b, d in r.groupby("batch_size"):
        row = {"B": b}
        for arm in ("none", "sqrt", "linear", "linear + warmup"):
            x = d[d.arm == arm].iloc[0]
            row[arm] = (f"{x.final_val_acc:.4f}" if x.status == "complete" else "diverged") + f" (LR {g(x.lr)})"
        rows.append(row)
    big = r[r.batch_size == r.batch_size.max()].set_index("arm")
    score = big.final_val_acc.where(big.status == "complete", -1)
    winner = score.idxmax()
    mean = r.assign(s=r.final_val_acc.where(r.status == "complete", 0)).groupby("arm").s.mean()
    checks = [check(winner == "linear + warmup", f"at B={r.batch_size.max()}: best arm '{winner}' ({g(score.max(), 4)}); "
                    + ", ".join(f"{a} {('div' if s < 0 else g(s, 4))}" for a, s in score.items())),
              check(all(_outcome(r, b, "linear + warmup") >= _outcome(r, b, "linear") for b in sorted(r.batch_size.unique())),
                    "warmup never hurts linear scaling, per B (linear + warmup vs linear): " + ", ".join(
                        f"B={b}: {_fmt_outcome(r, b, 'linear + warmup')} vs {_fmt_outcome(r, b, 'linear')}" for b in sorted(r.batch_size.unique()))),
              f"- mean val acc over B (diverged = 0): " + ", ".join(f"{a} {g(v, 4)}" for a, v in mean.items())]
    return "\n\n".join([md(pd.DataFrame(rows)), "\n".join(checks), _bnoise(saved("o6-small").table("critical"), "O6"),
                        img(saved("o6-small").figure("loss_vs_examples", **{"lr_scaling.rule": "linear", "schedule.warmup_epochs": 0}), "o6-linear.png",
                            "O6: linear scaling without warmup, train loss against examples per B")])


def _outcome(r: pd.DataFrame, b, arm: str) -> float:
    x = r[(r.batch_size == b) & (r.arm == arm)].iloc[0]
    return x.final_val_acc if x.status == "complete" else -1.0


def _fmt_outcome(r: pd.DataFrame, b, arm: str) -> str:
    v = _outcome(r, b, arm)
    return "div" if v < 0 else f"{v:.4f}"


def o8_block() -> str:
    r = results("o8-small").sort_values("batch_size")
    rows = []
    for _, x in r.iterrows():
        et = pd.DataFrame((storage.read_result(Path(x.path)) or {}).get("epoch_times") or [])
        full = et[et.epoch >= 1] if len(et) else et
        data = full.data_s.sum() / max(len(full), 1) if len(full) else math.nan
        comp = full.compute_s.sum() / max(len(full), 1) if len(full) else math.nan
        rows.append({"B": int(x.batch_size), "status": x.status, "steps": int(x.steps),
                     "time to 97% (s)": g(x.time_to_val_acc, 3), "examples to 97%": g(x.examples_to_val_acc, 3),
                     "final val acc": g(x.final_val_acc, 4), "best val acc": g(x.best_val_acc, 4),
                     "train time (s)": g(x.time_s, 3),
                     "data s/epoch": g(data, 2), "compute s/epoch": g(comp, 3),
                     "data share": (f"{100 * data / (data + comp):.1f}%" if data + comp > 0 else "—")})
    tab = pd.DataFrame(rows)
    hit = r[r.time_to_val_acc.notna()]
    fastest = int(hit.loc[hit.time_to_val_acc.idxmin(), "batch_size"]) if len(hit) else None
    osc = []
    for _, x in r.iterrows():
        m = read_table(x.path)
        if len(m) > 50:
            l = m.train_loss.to_numpy()
            osc.append((int(x.batch_size), float(np.mean(np.abs(np.diff(l[: min(len(l), 1000)]))))))
    oscd = dict(osc)
    b1 = r[r.batch_size == 1].iloc[0]
    shares = [float(x["data share"].rstrip("%")) for x in rows if x["data share"] != "—"]
    checks = [check(fastest is not None and 6 <= fastest <= 60, f"fastest to 97% in wall time: B={fastest} "
                    f"({g(hit.time_to_val_acc.min(), 3)} s); reached by B = {', '.join(str(int(b)) for b in hit.batch_size)}"),
              check(pd.isna(b1.time_to_val_acc), f"B=1 never reaches 97%: status {b1.status}"
                    + (f" ({b1.error})" if isinstance(b1.error, str) else "")),
              check(all(oscd[a] >= oscd[b] for a, b in zip(sorted(oscd), sorted(oscd)[1:])),
                    "per-step loss oscillation (mean |Δloss| over the first 1000 steps) falls with B: "
                    + ", ".join(f"B={b}: {g(v, 2)}" for b, v in sorted(oscd.items()))),
              check(shares == sorted(shares), "the data share of the epoch time grows with B: "
                    + ", ".join(f"{x['B']}: {x['data share']}" for x in rows))]
    crit = saved("o8-small").table("critical")
    return "\n\n".join([md(tab), _bnoise(crit, "O8"), "\n".join(checks),
                        img(saved("o8-small").figure("oscillation"), "o8-oscillation.png", "O8: per-step loss oscillation against B"),
                        img(saved("o8-small").figure("loss_vs_step"), "o8-loss_vs_step.png", "O8: train loss against steps per B")])


def o9_block() -> str:
    r = results("o9-small").sort_values(["schedule.name", "lr"])
    rows = []
    for _, x in r.iterrows():
        e = read_table(x.path, "evals")
        lrs = e.lr.round(12).unique()
        rows.append({"schedule": x["schedule.name"], "LR": g(x.lr), "LR reductions": len(lrs) - 1,
                     "at steps": ", ".join(str(int(e.step[e.lr.round(12) == v].iloc[0])) for v in lrs[1:]) or "—",
                     "final LR": g(x.final_lr), "final val loss": g(x.final_val_loss, 4), "best val loss": g(x.best_val_loss, 4),
                     "final val acc": g(x.final_val_acc, 4)})
    tab = pd.DataFrame(rows)
    plat = r[r["schedule.name"] == "plateau"].set_index("lr")
    const = r[r["schedule.name"] == "constant"].set_index("lr")
    checks = [check(bool((tab[tab.schedule == "plateau"]["LR reductions"] > 0).all()),
                    "the plateau schedule cut the LR by 10x after 10 evaluations without a new best validation loss"),
              check(bool((plat.final_val_loss < const.final_val_loss).all()),
                    "final val loss, plateau vs constant: " + ", ".join(
                        f"LR {g(lr)}: {g(plat.loc[lr, 'final_val_loss'], 4)} vs {g(const.loc[lr, 'final_val_loss'], 4)}" for lr in plat.index))]

    def draw(ax1, ax2):
        for name, st in (("constant", "--"), ("plateau", "-")):
            for lr in sorted(r.lr.unique()):
                x = r[(r["schedule.name"] == name) & (r.lr == lr)].iloc[0]
                e = read_table(x.path, "evals")
                ax1.plot(e.step, e.val_loss, st, label=f"{name}, LR {lr:g}")
                ax2.plot(e.step, e.lr, st, label=f"{name}, LR {lr:g}")
        ax1.set(xlabel="step", ylabel="validation loss", title="o9-small: MNIST MLP, B=64, eval every 50 steps")
        ax2.set(xlabel="step", ylabel="LR (log)", title="ReduceLROnPlateau(factor 0.1, patience 10)")
        ax2.set_yscale("log")
        ax1.legend(fontsize=8)
    return "\n\n".join([md(tab), "\n".join(checks), ONE_B, figure("o9-plateau.png", "O9: validation loss and LR, plateau vs constant", draw)])


def o10_block() -> str:
    r = results("o10-small")
    r["arm"] = [f"{n}" + (" + warmup" if w else "") for n, w in zip(r["schedule.name"], r["schedule.warmup_epochs"])]
    arms = ["constant", "constant + warmup", "step", "step + warmup", "cosine", "cosine + warmup"]
    rows, mid = [], {}
    for b, d in r.groupby("batch_size"):
        row = {"B": int(b), "LR = 0.1·B/256": g(d.lr.iloc[0])}
        for arm in arms:
            x = d[d.arm == arm]
            if len(x):
                x = x.iloc[0]
                e = read_table(x.path, "evals")
                half = e.iloc[(e.epoch - 1.5).abs().argmin()]
                mid[(b, arm)] = half.val_acc
                row[arm] = (f"{x.final_val_acc:.4f} (mid {half.val_acc:.3f})" if x.status == "complete" else "diverged")
        rows.append(row)
    tab = pd.DataFrame(rows)
    fin = r.set_index(["batch_size", "arm"]).final_val_acc
    Bs = sorted(r.batch_size.unique())
    step_mid = [mid[(b, "step + warmup")] - mid[(b, "cosine + warmup")] for b in Bs]  # step − cosine
    step_end = [fin[(b, "step + warmup")] - fin[(b, "cosine + warmup")] for b in Bs]
    decay_gain = [max(fin[(b, "step + warmup")], fin[(b, "cosine + warmup")]) - fin[(b, "constant + warmup")] for b in Bs]
    st = r.set_index(["batch_size", "arm"]).status
    big = max(Bs)
    no_warm = [a for a in ("constant", "step", "cosine")]
    # "needed": without warmup the arm diverged or ended far (> 0.1) below its warmed-up twin
    # (a run that never learned is not rescued by the smoothed divergence rule letting it finish)
    failed = lambda a: st[(big, a)] != "complete" or fin[(big, a)] < fin[(big, a + " + warmup")] - 0.1  # noqa: E731
    outcome = lambda a: st[(big, a)] if st[(big, a)] != "complete" else g(fin[(big, a)])  # noqa: E731
    checks = [check(all(failed(a) for a in no_warm) and all(st[(big, a + " + warmup")] == "complete" for a in no_warm),
                    f"at B={big} (LR {g(r[r.batch_size == big].lr.iloc[0])}) warmup is needed: without it "
                    + ", ".join(f"{a} {outcome(a)}" for a in no_warm) + "; with it "
                    + ", ".join(f"{a} {outcome(a + ' + warmup')}" for a in no_warm)),
              check(all(x > 0 for x in decay_gain), "after warmup, a decay (the better of step, cosine) beats the constant LR: "
                    + ", ".join(f"B={b}: {g(x, 2)}" for b, x in zip(Bs, decay_gain))),
              check(all(x > 0 for x in step_mid), "mid-training (1.5 of 3 epochs) step is ahead of cosine (step − cosine accuracy): "
                    + ", ".join(f"B={b}: {g(x, 2)}" for b, x in zip(Bs, step_mid))),
              check(all(abs(x) < 0.005 for x in step_end), "at the end step and cosine agree within 0.005 (step − cosine): "
                    + ", ".join(f"B={b}: {g(x, 2)}" for b, x in zip(Bs, step_end)))]

    def draw(ax1, ax2):
        b = max(Bs)
        for arm in ("step + warmup", "cosine + warmup", "constant + warmup"):
            x = r[(r.batch_size == b) & (r.arm == arm)].iloc[0]
            e, m = read_table(x.path, "evals"), read_table(x.path)
            ax1.plot(m.epoch, m.lr, label=arm)
            ax2.plot(e.epoch, e.val_acc, "o-", ms=3, label=arm)
        ax1.set(xlabel="epoch", ylabel="LR", title=f"o10-small: B={b}, LR 0.1·{b}/256, warmup 0.3 epochs")
        ax2.set(xlabel="epoch", ylabel="validation accuracy", title="MNIST MLP, SGD m=0.9, wd 1e-4")
        ax2.set_ylim(0.9, 1.0)
        ax2.legend(fontsize=8)
    return "\n\n".join([md(tab), "\n".join(checks), _bnoise(saved("o10-small").table("critical"), "O10"), figure("o10-recipe.png", "O10: step vs cosine after warmup at B = 1024", draw)])


def o11_block() -> str:
    best = saved("o11-small").best_csv()
    fast = saved("o11-small-targets").best_csv().set_index("batch_size")
    sug = suggestions("o11-small")
    rows = []
    for _, b in best.iterrows():
        s = sug[sug.batch_size == b.batch_size]
        rows.append({"B": int(b.batch_size), "best LR (largest loss drop in 10 steps after loss 0.3)": g(b.best_lr),
                     "interpolated optimum": g(b.lr_opt), "edge": b.edge if isinstance(b.edge, str) else "",
                     "fastest LR to loss 0.3": g(fast.loc[b.batch_size, "best_lr"]) if b.batch_size in fast.index else "—",
                     "range test valley": g(s["valley"].iloc[0]) if len(s) else "—",
                     "minimum/10": g(s["minimum/10"].iloc[0]) if len(s) else "—"})
    f = saved("o11-small").table("fits")
    ftab = pd.DataFrame([{"rank": g(x["rank"]), "law": x["law"],
                          "parameters": params(x.get("params") or {}),
                          "rms error (decades)": g(x.get("rms_log10"), 2), "note": x.get("note") or ""} for _, x in f.iterrows()])
    crit = saved("o11-small-targets").table("critical")
    inner = best[best.bracketed.astype(bool)] if "bracketed" in best else best[best.edge.isna() | (best.edge.astype(object) == "")]
    inner = inner.sort_values("batch_size")  # the optima the laws were fitted to
    lr = list(inner.lr_opt)
    p = int(np.argmax(lr)) if lr else 0
    peak_inside = len(lr) >= 3 and 0 < p < len(lr) - 1 and lr[0] < 0.7 * lr[p] and lr[-1] < 0.7 * lr[p]
    bn = crit.sort_values("target", ascending=False)
    grows = len(bn) >= 2 and bn.B_noise.is_monotonic_increasing and bn.B_noise.notna().all()
    top = f.sort_values("rank").iloc[0]["law"] if len(f) else "—"
    checks = [check(peak_inside, "the optimal LR rises, then falls by > 30% with B (a peak inside the B grid): "
                    + ", ".join(f"B={int(b)}: {g(v)}" for b, v in zip(inner.batch_size, lr))),
              check(top == "surge", f"best-ranked law: {top}"),
              check(grows, "B_noise grows as the target loss falls: " + ", ".join(f"loss {g(t)}: {g(v)}" for t, v in zip(bn.target, bn.B_noise)))]
    return "\n\n".join([md(pd.DataFrame(rows)), md(ftab), _bnoise(crit, "O11"), "\n".join(checks),
                        img(saved("o11-small").figure("optimal_lr"), "o11-optimal_lr.png", "O11: optimal LR against B with the fitted laws"),
                        img(saved("o11-small").figure("heatmap"), "o11-heatmap.png", "O11: loss drop after the target, B x LR"),
                        img(saved("o11-small-targets").figure("critical_batch"), "o11-critical.png", "O11: S vs E at three loss targets")])


def o12_block() -> str:
    r = results("o12-small")
    matched = {1: 0.05, 2: 0.1, 4: 0.2, 8: 0.5, 16: 1.0, 32: 1.5, 64: 2.0, 128: 4.0}
    gn = {}
    for _, x in r.iterrows():
        gn[(int(x.batch_size), float(x.lr))] = read_table(x.path).grad_norm.mean()
    val = {(int(x.batch_size), float(x.lr)): (x.final_val_loss if x.status == "complete" else math.inf) for _, x in r.iterrows()}
    vtxt = lambda k: g(val[k], 4) if math.isfinite(val[k]) else "diverged"
    rows = []
    for b, lr in matched.items():
        rows.append({"B": b, "matched LR": g(lr), "val loss, matched": vtxt((b, lr)),
                     "val loss, LR 0.05": vtxt((b, 0.05)), "val loss, LR 0.5": vtxt((b, 0.5)),
                     "mean grad norm at LR 0.5": g(gn[(b, 0.5)], 3), "at LR 0.05": g(gn[(b, 0.05)], 3)})
    sug = suggestions("o12-small").set_index("batch_size")
    for row in rows:
        b = row["B"]
        row["range test: valley"] = g(sug.loc[b, "valley"]) if b in sug.index else "—"
        row["minimum/10"] = g(sug.loc[b, "minimum/10"]) if b in sug.index else "—"
    Bs = list(matched)
    m = [val[(b, matched[b])] for b in Bs]
    f05 = [val[(b, 0.05)] for b in Bs]
    f5 = [val[(b, 0.5)] for b in Bs]
    g5 = [gn[(b, 0.5)] for b in Bs]
    spread = lambda v: max(v) - min(v)
    rho = lambda v: pd.Series(v).replace(math.inf, np.nan).corr(pd.Series(np.log(Bs)), method="spearman")
    checks = [check(rho(g5) < -0.8, f"mean gradient norm falls with B at LR 0.5 (Spearman ρ vs log B = {g(rho(g5), 2)})"),
              check(rho(f05) > 0.8, f"at fixed LR 0.05 the final val loss rises with B (ρ = {g(rho(f05), 2)}; "
                                    f"{g(f05[0], 4)} at B=1 → {g(f05[-1], 4)} at B=128)"),
              check(rho(f5) > 0.8, f"at fixed LR 0.5 (ρ = {g(rho(f5), 2)} over the runs that did not diverge; "
                                   f"B=1 {vtxt((1, 0.5))}, B=2 {g(f5[1], 4)} → B=128 {g(f5[-1], 4)})"),
              f"- mean gradient norm at LR 0.05 (ρ = {g(rho([gn[(b, 0.05)] for b in Bs]), 2)}): falls to B=32, then rises: the large-B runs "
              f"at this small LR are far from the minimum after 100 epochs, where the true gradient is larger",
              check(spread(m) < 0.5 * spread(f05), f"the matched table keeps it flat: spread {g(spread(m), 3)} vs {g(spread(f05), 3)} at LR 0.05")]
    return "\n\n".join([md(pd.DataFrame(rows)), "\n".join(checks),
                        img(saved("o12-small").figure("grad_norm"), "o12-grad_norm.png", "O12: mean gradient norm against B per LR"),
                        img(saved("o12-small").figure("metric_vs_lr"), "o12-val_loss_vs_lr.png", "O12: final val loss against LR per B")])


# name -> (run these configs, range tests, summarize calls, page block)
RT = ["range-test"]
OBS = {
    "o1": dict(configs=["o1"], range=[("o1-small/range_test", ["configs/o1.small.yaml", "--min-lr", "1e-4", "--max-lr", "10"])],
               summarize=[["runs/o1-small", "--metric", "final_train_loss"]], block=o1_block),
    "o2": dict(configs=["o2"], range=[], summarize=[["runs/o2-small"]], block=o2_block),
    "o3": dict(configs=["o3"], range=[("o3-small/range_test", ["configs/o3.small.yaml", "--val", "--min-lr", "1e-4", "--max-lr", "10",
                                                                "--suggest", "clr-upper", "--set", "dataset.val_subset=2000"])],
               summarize=[["runs/o3-small"]], block=o3_block),
    "o4": dict(configs=["o4"], range=[("o4-small/range_test", ["configs/o4.small.yaml", "--min-lr", "1e-5", "--max-lr", "10"]),
                                      ("o4-small/range_test_adam", ["configs/o4.small.yaml", "--min-lr", "1e-5", "--max-lr", "10",
                                                                    "--set", "optimizer.name=adam"])],
               summarize=[["runs/o4-small"]], block=o4_block),
    "o5": dict(configs=["o5", "o5-longer"], range=[("o5-small/range_test", ["configs/o5.small.yaml", "--min-lr", "1e-4", "--max-lr", "10"])],
               summarize=[["runs/o5-small", "runs/o5-longer-small", "--out", "runs/o5-small/report"]], block=o5_block),
    "o6": dict(configs=["o6"], range=[], summarize=[["runs/o6-small"]], block=o6_block),
    "o8": dict(configs=["o8"], range=[], summarize=[["runs/o8-small", "--metric", "time_to_target"]], block=o8_block),
    "o9": dict(configs=["o9"], range=[], summarize=[["runs/o9-small", "--metric", "final_val_loss"]], block=o9_block),
    "o10": dict(configs=["o10"], range=[], summarize=[["runs/o10-small"]], block=o10_block),
    "o11": dict(configs=["o11"], range=[("o11-small/range_test", ["configs/o11.small.yaml", "--min-lr", "1e-6", "--max-lr", "1"])],
                summarize=[["runs/o11-small", "--metric", "loss_drop_after_target", "--after-steps", "10"],
                           ["runs/o11-small", "--metric", "steps_to_target", "--target", "0.6", "--target", "0.45",
                            "--target", "0.3", "--out", "runs/o11-small-targets/report"]], block=o11_block),
    "o12": dict(configs=["o12"], range=[("o12-small/range_test", ["configs/o12.small.yaml", "--min-lr", "1e-3", "--max-lr", "100"])], summarize=[["runs/o12-small", "--metric", "final_val_loss"]], block=o12_block),
}


def fill(page: str, key: str, body: str) -> str:
    pat = re.compile(rf"(<!-- auto:{re.escape(key)} -->).*?(<!-- /auto:{re.escape(key)} -->)", re.S)
    if not pat.search(page):
        print(f"  warning: no <!-- auto:{key} --> block in {PAGE.name}; not written", file=sys.stderr)
        return page
    return pat.sub(lambda m: m.group(1) + "\n" + body.strip() + "\n" + m.group(2), page)


def timing_block(timings: dict) -> str:
    rows, total = [], 0.0
    for key in sorted(timings, key=lambda k: (int(re.match(r"o(\d+)", k).group(1)) if re.match(r"o(\d+)", k) else 99, k)):
        t = timings[key]
        total += t["wall_s"]
        rows.append({"step": key, "wall time (s)": f"{t['wall_s']:.0f}", "command": f"`{t['command']}`", "when": t["when"]})
    import os
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return "\n\n".join([md(pd.DataFrame(rows)),
                        f"Total: **{total / 60:.1f} minutes** of wall time ({os.cpu_count()} cores, {cpu}, torch {torch.__version__}, "
                        f"Python {platform.python_version()}; the machine was shared with other jobs, so timings are noisy; "
                        f"`lrsweep run` used its default of one single-threaded worker per core). Times are of the runs "
                        f"whose results are shown: a rerun that finds every run finished keeps the earlier time."])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated observations, e.g. o1,o8")
    ap.add_argument("--no-run", action="store_true", help="do not train or range-test; only summarize and rewrite the page")
    a = ap.parse_args()
    keys = [k.strip() for k in a.only.split(",")] if a.only else list(OBS)
    bad = [k for k in keys if k not in OBS]
    if bad:
        raise SystemExit(f"--only: unknown {bad}; expected some of {', '.join(OBS)}")
    timings = load_timings()
    page = PAGE.read_text()
    failed: list[str] = []
    for k in keys:
        spec = OBS[k]
        print(f"{k}:", flush=True)
        if not a.no_run:
            for c in spec["configs"]:
                lrsweep(f"{c} run", ["run", f"configs/{c}.small.yaml", "--out", "runs"], timings)
            for sub, args in spec["range"]:
                if not (RUNS / sub / "range_test.json").exists():
                    lrsweep(f"{k} range-test {sub.split('/')[-1]}", ["range-test", *args, "--out", f"runs/{sub}"], timings)
        for i, args in enumerate(spec["summarize"]):
            lrsweep(f"{k} summarize{'' if i == 0 else f' {i + 1}'}", ["summarize", *args], timings)
        try:
            page = fill(page, k, spec["block"]())
        except Exception:  # a broken table must not stop the other observations
            import traceback
            traceback.print_exc()
            failed.append(k)
        TIMINGS.parent.mkdir(parents=True, exist_ok=True)
        TIMINGS.write_text(json.dumps(timings, indent=2))
    page = fill(page, "timings", timing_block(timings))
    PAGE.write_text(page)
    print(f"wrote {PAGE.relative_to(REPO)} and {IMG.relative_to(REPO)}/")
    if failed:
        raise SystemExit(f"could not write the blocks of {', '.join(failed)} (tracebacks above)")


if __name__ == "__main__":
    main()
