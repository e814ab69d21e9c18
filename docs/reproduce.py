"""Re-run the source documents' experiments (configs/o*.small.yaml) and regenerate the tables and
figures of docs/reproductions.md.

    python docs/reproduce.py                 # run, range-test, summarize, rewrite the page (make reproduce)
    python docs/reproduce.py --only o1,o8    # some observations only
    python docs/reproduce.py --no-run        # only re-read finished runs and rewrite the page
    python docs/reproduce.py --no-run --runs /tmp/copy/runs   # ... from another runs folder
    python docs/reproduce.py --no-run --no-summarize          # ... from the reports already written

Everything goes through the `lrsweep` command (run, range-test, summarize) into runs/ (git-
ignored; finished runs are skipped, so a second call only redoes the reports). The page keeps
its hand-written text; this script replaces what lies between `<!-- auto:KEY -->` and
`<!-- /auto:KEY -->` markers: per observation the measured tables, the figures (copied from the
summarize reports into docs/img/repro/, or drawn here from the run files where the comparison is
between groups), automatic checks of the claim and a measured verdict with its uncertainty.
The blocks live in docs/repro/ (one module per group of observations). Run from the repository root.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # docs/repro/

from lrsweep.analysis.runs import read_table  # noqa: E402,F401 (for blocks written here)
from lrsweep.output.markdown import params  # noqa: E402,F401
from repro import o11  # noqa: E402
from repro.batch import o5_block, o6_block, o8_block  # noqa: E402
from repro.common import (IMG, ONE_B, PAGE, REPO, acc_cell, best_per_group, bnoise, by_group_lr, check,  # noqa: E402,F401
                          figure, g, img, md, paths, results, saved, suggestions, unresolved, verdict)
from repro.early import o1_block, o2_block, o3_block, o4_block  # noqa: E402
from repro.o12 import o12_block  # noqa: E402
from repro.schedules import o9_block, o10_block  # noqa: E402

# the helpers under their former names, for blocks written in this file
_bnoise, _by_group_lr, _best_per_group = bnoise, by_group_lr, best_per_group
RUNS = paths.runs  # main() moves it with --runs
LRSWEEP = [sys.executable, "-m", "lrsweep"]


def timings_file() -> Path:
    return paths.runs / "_reproduce" / "timings.json"


# --------------------------------------------------------------------------- running lrsweep

def load_timings() -> dict:
    try:
        return json.loads(timings_file().read_text())
    except (OSError, ValueError):
        return {}


def at_runs(arg: str) -> str:
    """An argument naming runs/... as the runs folder in use (--runs)."""
    if arg == "runs":
        return str(paths.runs)
    return str(paths.runs / arg[len("runs/"):]) if arg.startswith("runs/") else arg


def lrsweep(key: str, args: list[str], timings: dict, log: bool = True, record: bool = True) -> str:
    """Run one lrsweep command from the repository root; keep its wall time under `key` (a rerun
    that trains nothing keeps the time of the run that did the work; `record=False` keeps none:
    --no-run re-reads runs whose times were recorded when they were made)."""
    args = [at_runs(a) for a in args]
    t0 = time.perf_counter()
    p = subprocess.run(LRSWEEP + args, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    out = p.stdout + p.stderr
    logf = paths.runs / "_reproduce" / ("" if record else "reread") / f"{key}.log"  # a re-read keeps the first logs
    logf.parent.mkdir(parents=True, exist_ok=True)
    logf.write_text(f"$ lrsweep {' '.join(args)}\n{out}")
    if p.returncode != 0:
        raise SystemExit(f"lrsweep {' '.join(args)} failed (exit {p.returncode}); see {logf}\n{out[-2000:]}")
    idle = args[0] == "run" and "this time: nothing new" in out
    if record and not (idle and key in timings):
        shown = [a.replace(str(paths.runs), "runs") for a in args]
        timings[key] = {"command": "lrsweep " + " ".join(shown), "wall_s": round(wall, 1),
                        "when": time.strftime("%Y-%m-%d %H:%M")}
    if log:
        print(f"  {wall:6.1f}s  lrsweep {' '.join(args)}" + ("  (nothing new)" if idle else ""), flush=True)
    return out


def o11_refine(timings: dict) -> None:
    """O11's second pass: the refined LR grid around the coarse optima, into the same folder."""
    f, _, cells = o11.write_refined()
    print(f"  wrote {f} ({len(cells)} cells x {len(o11.SEEDS)} seeds)", flush=True)
    lrsweep("o11 refined run", ["run", str(f), "--out", "runs"], timings)


# --------------------------------------------------------------------------- O7 (a batch size that grows)

O7_ARMS = {("multistep", False): "(a) LR decay", ("constant", True): "(b) growing B", ("constant", False): "(c) control"}


def o7_block() -> str:
    """O7's first half: LR decay against the same decay as B growth, at equal examples seen."""
    import math

    import numpy as np

    from repro.common import binomial_se, mean_std, val_images

    r = results("o7-small")
    grows = r["train.batch_schedule"].map(lambda v: isinstance(v, str))  # the axis' JSON text; None: unset
    r = r.assign(arm=[O7_ARMS[(s, b)] for s, b in zip(r["schedule.name"], grows)]).sort_values(["arm", "seed"])
    ev = {x.run_id: read_table(x.path, "evals") for _, x in r.iterrows()}
    final_B = {x.run_id: int(read_table(x.path).batch_size.iloc[-1]) for _, x in r.iterrows()}
    by = {a: r[r.arm == a] for a in O7_ARMS.values()}
    ok = {a: d[d.status == "complete"] for a, d in by.items()}
    rows = [{"arm": a, "runs": f"{len(ok[a])}/{len(d)} complete",
             "steps": "/".join(str(int(s)) for s in sorted(d.steps.unique())),
             "B at the end": "/".join(str(b) for b in sorted({final_B[i] for i in d.run_id})),
             "examples seen": "/".join(str(int(e)) for e in sorted(d.examples.unique())),
             "final val loss": mean_std(ok[a].final_val_loss), "final val acc": mean_std(ok[a].final_val_acc),
             "wall time (s)": f"{d.time_s.mean():.0f}", "compute (s)": f"{d.compute_time_s.mean():.0f}"}
            for a, d in by.items()]
    A, Bg, C = (ok[a].set_index("seed") for a in O7_ARMS.values())
    seeds = sorted(set(A.index) & set(Bg.index) & set(C.index))
    n = len(seeds)
    # The arms share each seed's initial weights and batch order, and train alike until the first
    # milestone: differences are paired by seed (their spread is what the verdict weighs).
    d_ab = (A.final_val_loss - Bg.final_val_loss).loc[seeds]
    d_c = (C.final_val_loss - (A.final_val_loss + Bg.final_val_loss) / 2).loc[seeds]
    se = lambda d: d.std() / math.sqrt(len(d)) if len(d) > 1 else math.nan  # noqa: E731
    mean_ab, se_ab, gap, se_gap = d_ab.mean(), se(d_ab), d_c.mean(), se(d_c)
    acc_ab = (A.final_val_acc - Bg.final_val_acc).loc[seeds]
    acc_se = math.sqrt(2) * binomial_se(Bg.final_val_acc.mean(), val_images(r))

    # The curves, at (b)'s evaluations after its first milestone ((a) interpolated there).
    b0 = by["(b) growing B"].iloc[0]
    changes = [(c["step"], c["examples"], c["batch_size"])
               for c in json.loads((Path(b0.path) / "result.json").read_text())["batch_schedule"]["changes"]]
    first = changes[0][1]

    def curve(arm, grid):  # [seeds, points]: val loss at the examples `grid`
        return np.array([np.interp(grid, ev[x.run_id].examples, ev[x.run_id].val_loss)
                         for _, x in by[arm].iterrows() if x.status == "complete"])
    grid = ev[b0.run_id].examples
    grid = grid[grid > first].to_numpy()
    ca, cb, cc = (curve(a, grid) for a in O7_ARMS.values())
    curve_ab = float(np.mean(np.abs(ca.mean(0) - cb.mean(0))))
    curve_gap = float(np.mean(cc.mean(0) - (ca.mean(0) + cb.mean(0)) / 2))
    curve_sd = float(np.mean([ca.std(0, ddof=1).mean(), cb.std(0, ddof=1).mean()])) if n > 1 else math.nan

    steps_a, steps_b = int(A.steps.max()), int(Bg.steps.max())
    close = abs(mean_ab) <= 2 * se_ab or abs(mean_ab) < 0.2 * abs(gap)
    effect = gap > 2 * se_gap
    checks = [
        check(effect, f"the decay matters here: the control (c) ends {g(gap, 3)} ± {g(se_gap, 2)} above the mean of "
                      f"(a) and (b) in val loss (paired by seed, ± 1 SE, {n} seeds)"),
        check(close, f"(a) − (b), final val loss: {g(mean_ab, 3)} ± {g(se_ab, 2)} (paired, ± 1 SE), "
                   f"{g(abs(mean_ab) / gap * 100, 2) if gap > 0 else '—'}% of the gap to the control; final val acc "
                   f"(a) − (b): {g(acc_ab.mean(), 3)} (2 × the binomial SE of one difference on {val_images(r)} images: "
                   f"{g(2 * acc_se, 2)})"),
        check(curve_ab < 0.5 * curve_gap, f"curves after the first milestone, at (b)'s {len(grid)} evaluations: "
                                         f"mean |(a) − (b)| = {g(curve_ab, 3)}, seed std of an arm {g(curve_sd, 3)}, "
                                         f"control above them by {g(curve_gap, 3)}"),
        check(steps_b < steps_a, f"(b) takes {steps_b} steps against {steps_a} for the same {int(A.examples.max())} "
                                 f"examples ({g(steps_a / steps_b, 3)}× fewer)"),
    ]
    if effect and close and steps_b < steps_a:
        word = "reproduced"
    elif effect and steps_b < steps_a:
        word = "partly reproduced"
    elif not effect:
        word = "inconclusive"
    else:
        word = "not reproduced"
    text = (f"At equal examples seen, growing B ×5 at the milestones ends at val loss {g(Bg.final_val_loss.mean(), 3)}, "
            f"decaying the LR ÷5 there at {g(A.final_val_loss.mean(), 3)}: a difference of {g(mean_ab, 2)} ± {g(se_ab, 2)} "
            f"(paired by seed, {n} seeds), against {g(gap, 2)} ± {g(se_gap, 2)} by which both beat the constant-LR, "
            f"constant-B control; (b) needs {g(steps_a / steps_b, 3)}× fewer steps.")

    colors = {"(a) LR decay": "C0", "(b) growing B": "C1", "(c) control": "C2"}

    def draw(ax1, ax2):
        for a in reversed(list(by)):  # the control first: the arms coincide until the first milestone
            d = by[a]
            for k, (_, x) in enumerate(d[d.status == "complete"].iterrows()):
                e = ev[x.run_id]
                ax1.plot(e.examples / 1000, e.val_loss, color=colors[a], lw=1, alpha=0.8, label=a if k == 0 else None)
                ax2.plot(e.step, e.val_loss, color=colors[a], lw=1, alpha=0.8, label=a if k == 0 else None)
        for ax in (ax1, ax2):
            ax.set_yscale("log")
            ax.set_ylabel("validation loss (2000 test images; one line per seed)")
        for _, e, _ in changes:  # the milestones: LR / 5 in (a), B x 5 in (b)
            ax1.axvline(e / 1000, color="0.7", lw=0.8, ls=":")
        ax1.set(xlabel="examples seen (thousands; dotted: the milestones)", title="o7-small: MNIST MLP, SGD m=0.9, LR 0.1, B 100")
        ax2.set(xlabel="optimizer step (log)", title="the same runs against steps")
        ax2.set_xscale("log")
        handles, labels = ax1.get_legend_handles_labels()
        ax1.legend(handles[::-1], labels[::-1], fontsize=8)
    return "\n\n".join([md(pd.DataFrame(rows)), "\n".join(checks), verdict(word, text),
                        figure("o7-batch_vs_decay.png", "O7: validation loss against examples seen and steps, per arm", draw)])


# --------------------------------------------------------------------------- the observations
# Each entry: configs to run, then (optionally) a further stage, range tests, summarize calls,
# and a function writing the page block.

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
    "o7": dict(configs=["o7"], range=[], summarize=[], block=o7_block),  # nothing to fit: one B, one LR per arm
    "o8": dict(configs=["o8"], range=[], summarize=[["runs/o8-small", "--metric", "time_to_target"]], block=o8_block),
    "o9": dict(configs=["o9"], range=[], summarize=[["runs/o9-small", "--metric", "final_val_loss"]], block=o9_block),
    "o10": dict(configs=["o10"], range=[], summarize=[["runs/o10-small"]], block=o10_block),
    "o11": dict(configs=["o11"], then=o11_refine, range=[], summarize=o11.summarize_calls(), block=o11.o11_block),
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
    global RUNS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated observations, e.g. o1,o8")
    ap.add_argument("--no-run", action="store_true", help="do not train or range-test; only summarize and rewrite the page")
    ap.add_argument("--no-summarize", action="store_true",
                    help="with --no-run: do not summarize either; rebuild the page from the report folders already written")
    ap.add_argument("--runs", type=Path, default=paths.runs, help="the runs folder (default: runs/ of the repository)")
    a = ap.parse_args()
    keys = [k.strip() for k in a.only.split(",")] if a.only else list(OBS)
    bad = [k for k in keys if k not in OBS]
    if bad:
        raise SystemExit(f"--only: unknown {bad}; expected some of {', '.join(OBS)}")
    if not a.runs.is_dir() and a.no_run:
        raise SystemExit(f"--runs: {a.runs} is not a folder")
    paths.runs = RUNS = a.runs.resolve()
    timings = load_timings()
    blocks: dict[str, str] = {}
    failed: list[str] = []
    for k in keys:
        spec = OBS[k]
        print(f"{k}:", flush=True)
        if not a.no_run:
            for c in spec["configs"]:
                lrsweep(f"{c} run", ["run", f"configs/{c}.small.yaml", "--out", "runs"], timings)
            if spec.get("then"):
                spec["then"](timings)
            for sub, args in spec["range"]:
                if not (paths.runs / sub / "range_test.json").exists():
                    lrsweep(f"{k} range-test {sub.split('/')[-1]}", ["range-test", *args, "--out", f"runs/{sub}"], timings)
        try:
            for i, args in enumerate(spec["summarize"] if not (a.no_run and a.no_summarize) else []):
                lrsweep(f"{k} summarize{'' if i == 0 else f' {i + 1}'}", ["summarize", *args], timings, record=not a.no_run)
            blocks[k] = spec["block"]()
        except (Exception, SystemExit):  # a broken table must not stop the other observations
            import traceback
            traceback.print_exc()
            failed.append(k)
        if not a.no_run:
            timings_file().parent.mkdir(parents=True, exist_ok=True)
            timings_file().write_text(json.dumps(timings, indent=2))
    page = PAGE.read_text()  # read now, not at the start: the hand-written text may have moved meanwhile
    if timings:  # a runs folder without recorded times (a re-read of a copy) leaves the page's table
        blocks["timings"] = timing_block(timings)
    for k, body in blocks.items():
        page = fill(page, k, body)
    PAGE.write_text(page)
    print(f"wrote {PAGE.relative_to(REPO)} and {IMG.relative_to(REPO)}/")
    if failed:
        raise SystemExit(f"could not write the blocks of {', '.join(failed)} (tracebacks above)")


if __name__ == "__main__":
    main()
