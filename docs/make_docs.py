"""Run the README's quickstart as a user would, and regenerate the README's example output,
the numbers its walk-through quotes, and its figures.

    python docs/make_docs.py            # make docs: train what is not trained yet, then rewrite
    python docs/make_docs.py --no-run   # train nothing: rerun the reports, rewrite from runs/
    python docs/make_docs.py --fresh    # delete runs/quickstart first and train it again

Every command is RUN (what `make run` runs) or one of README_COMMANDS, run from the repository
root through the `lrsweep` command exactly as README.md writes it (tests/test_readme.py checks
that each command block of the README is run here or by a test). Finished runs in
runs/quickstart are kept (git-ignored), so a second call only redoes the reports, and the range
test once lrsweep's code or the config has changed since it ran; after a change that alters the
numbers (training code, torch), use --fresh. The README keeps its hand-written text; this script
replaces what lies between `<!-- auto:KEY -->` and `<!-- /auto:KEY -->` (BLOCKS), copies the
figures into docs/img/, and says which versions and which machine made them.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from lrsweep.analysis.runs import load_runs
from lrsweep.analysis.saved import read_report
from lrsweep.config.grid import load_sweep
from lrsweep.output.markdown import cell as g

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
IMG = REPO / "docs" / "img"
LOGS = REPO / "runs" / "_docs"  # each command's output and wall time, kept for a rerun that trains nothing

CONFIG = "configs/quickstart.yaml"
SWEEP = "runs/quickstart"
RUN = f"lrsweep run {CONFIG}"  # what `make run` runs
SUMMARIZE = f"lrsweep summarize {SWEEP} --target 1.0 --target 0.5 --target 0.2"
PREDICT = f"lrsweep predict {SWEEP} --batch-size 512 --batch-size 4096"
RANGE_TEST = (f"lrsweep range-test {CONFIG} --batch-size 16 --batch-size 64 --batch-size 256 "
              f"--min-lr 1e-4 --emit-sweep {SWEEP}/range_test/next.yaml")
PLAN_NEXT = f"lrsweep plan {SWEEP}/range_test/next.yaml"
# The README's commands this script runs, as the README writes them (whitespace aside); it also
# runs RUN, which the README shows as `make run` (tests/test_readme.py checks that they agree).
README_COMMANDS = (SUMMARIZE, PREDICT, RANGE_TEST, PLAN_NEXT)

# Figures of the quickstart's reports, copied into docs/img/ under these names (the README links them).
FIGURES = {"optimal_lr": "summarize_optimal_lr.png", "heatmap": "summarize_heatmap.png",
           "critical_batch": "summarize_critical_batch.png"}
RANGE_FIGURE = "range_test.png"


# --------------------------------------------------------------------------- running the commands

@dataclass
class Output:
    command: str
    text: str  # stdout and stderr, interleaved as a terminal shows them
    wall_s: float
    load_before: float  # 1-minute load average
    load_after: float
    when: str
    trained: bool = True  # False: `lrsweep run` found every run finished, so wall_s is not a training time


def lrsweep(command: str) -> Output:
    """Run one README command (`lrsweep ...`) from the repository root; stop on a failure."""
    args = shlex.split(command)
    assert args[0] == "lrsweep", command
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # stderr and stdout in the order they were written
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "lrsweep", *args[1:]], cwd=REPO, env=env, text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = Output(command, p.stdout, round(time.perf_counter() - t0, 1), round(load, 2),
                 round(os.getloadavg()[0], 2), time.strftime("%Y-%m-%d %H:%M"))
    if p.returncode != 0:
        raise SystemExit(f"{command} failed (exit {p.returncode}):\n{p.stdout[-3000:]}")
    print(f"  {out.wall_s:6.1f}s  {command}", flush=True)
    return out


def saved(key: str) -> Output | None:
    try:
        return Output(**json.loads((LOGS / f"{key}.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def save(key: str, out: Output) -> Output:
    LOGS.mkdir(parents=True, exist_ok=True)
    (LOGS / f"{key}.json").write_text(json.dumps(asdict(out), indent=1))
    return out


def newest_source() -> float:
    """The last change to lrsweep's code or the quickstart config (a range test older than it is redone)."""
    files = [*(REPO / "lrsweep").rglob("*.py"), REPO / CONFIG]
    return max(f.stat().st_mtime for f in files)


def run_all(train: bool) -> dict[str, Output]:
    outs: dict[str, Output] = {}
    if train:
        out = lrsweep(RUN)
        out.trained = "this time: nothing new" not in out.text
        # The README shows the run that trained: its progress lines and wall time.
        before = saved("run")
        outs["run"] = save("run", out) if out.trained or before is None or not before.trained else \
            _keep_header(before, out)
        rt, log = saved("range-test"), LOGS / "range-test.json"
        fresh = rt is not None and rt.command == RANGE_TEST and log.stat().st_mtime > newest_source() \
            and (REPO / SWEEP / "range_test" / "range_test.json").is_file()
        outs["range-test"] = rt if fresh else save("range-test", lrsweep(RANGE_TEST))
    else:
        for key in ("run", "range-test"):
            if (o := saved(key)) is None:
                raise SystemExit(f"--no-run: no saved output of {key} in {LOGS}; run without --no-run first")
            outs[key] = o
    outs["summarize"] = save("summarize", lrsweep(SUMMARIZE))
    outs["predict"] = save("predict", lrsweep(PREDICT))
    outs["plan-next"] = save("plan-next", lrsweep(PLAN_NEXT))
    return outs


def _keep_header(trained: Output, now: Output) -> Output:
    """The run that trained, with the table printed now (the same runs; today's formatting)."""
    def split(text: str) -> tuple[list[str], list[str]]:  # (up to the counts line, after it)
        lines = text.splitlines()
        i = next((i for i, line in enumerate(lines) if " runs in " in line), -1)
        return lines[:i + 1], lines[i + 1:]
    return Output(trained.command, "\n".join(split(trained.text)[0] + split(now.text)[1]), trained.wall_s,
                  trained.load_before, trained.load_after, trained.when)


# --------------------------------------------------------------------------- README blocks

def fence(text: str, keep_progress: int = 2, max_rows: int | None = None) -> str:
    """Terminal output as a text block: trailing spaces cut, a long progress listing shortened
    (the first `keep_progress` runs and the last), a long table cut after `max_rows` rows."""
    lines = [line.rstrip() for line in text.rstrip().splitlines()]
    prog = [i for i, line in enumerate(lines) if re.match(r"\[\d+/\d+\]", line)]
    if len(prog) > keep_progress + 1:  # a progress line may wrap: it runs to the next one
        cut = prog[keep_progress:-1]
        lines = lines[:cut[0]] + [f"... ({len(cut)} more runs)"] + lines[prog[-1]:]
    rows = [i for i, line in enumerate(lines) if line.startswith("│")]
    if max_rows is not None and len(rows) > max_rows + 1:
        cut = rows[max_rows:-1]
        lines = lines[:cut[0]] + [f"... ({len(cut)} more rows)"] + lines[cut[-1] + 1:]
    return "```text\n" + "\n".join(lines) + "\n```"


def factor(a: float, b: float) -> float:
    return max(a / b, b / a)


def listing(values, fmt=g) -> str:
    return ", ".join(fmt(v) for v in values)


def load(outs: dict[str, Output]) -> dict:
    """What the blocks quote: the runs, the report summarize wrote, the range test's file."""
    report = read_report(REPO / SWEEP / "report")
    runs = load_runs(REPO / SWEEP).df
    cfg = load_sweep(REPO / CONFIG).runs[0].config
    rt = json.loads((REPO / SWEEP / "range_test" / "range_test.json").read_text())
    return dict(best=report.best_csv().sort_values("batch_size"), fits=report.table("fits"),
                critical=report.table("critical"), runs=runs, cfg=cfg, rt=rt, report=report, outs=outs)


def made_with(d: dict) -> str:
    import torch
    import torchvision

    import lrsweep
    run = d["outs"]["run"]
    torches = sorted(set(d["runs"]["torch_version"].dropna())) if "torch_version" in d["runs"] else []
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    trained_by = ", ".join(torches) or torch.__version__
    other = f" (the runs were trained with torch {trained_by})" if torches and torches != [torch.__version__] else ""
    def timed(o: Output) -> str:
        load = max(o.load_before, o.load_after)
        return f"{o.wall_s:.0f} s of wall time " + (
            "on an idle machine" if load < 0.5 else
            f"with other jobs running (1-minute load average {g(o.load_before, 2)} at the start, "
            f"{g(o.load_after, 2)} at the end)")
    took = (f"There `{RUN}` took {timed(run)}" if run.trained else
            "Its runs were trained before `make docs` ran, so their time is not known here")
    return (f"The outputs, numbers and figures of this README's quickstart come from one `make docs` "
            f"({run.when[:10]}): lrsweep {lrsweep.__version__}, torch {torch.__version__}{other}, torchvision "
            f"{torchvision.__version__}, Python {platform.python_version()}, on {os.cpu_count()} cores of "
            f"{cpu}. {took}, and the range test below {timed(d['outs']['range-test'])}. Other versions and machines give "
            f"slightly different numbers (float rounding changes which LR wins a close cell); run `make docs` "
            f"to regenerate them.")


def setup(d: dict) -> str:
    c, r = d["cfg"], d["runs"]
    B, lrs = sorted(r.batch_size.unique()), sorted(r.lr.unique())
    counts = r.status.value_counts()
    status = ", ".join(f"{int(counts[s])} {s}" for s in ("complete", "diverged", "stalled", "failed") if s in counts)
    names = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop"}
    opt = names.get(c.optimizer.name, c.optimizer.name) + (
        f" momentum {g(c.optimizer.momentum)}" if c.optimizer.name == "sgd" else "")
    budget = f"{g(c.train.epochs)} epochs" if c.train.epochs else f"{c.train.steps} steps"
    return (f"(`{RUN}`: {c.model.name} on {c.dataset.name}, {opt}, {budget}, {len(B)} batch sizes × "
            f"{len(lrs)} LRs, one seed; {status})")


def best_notes(d: dict) -> str:
    b, r = d["best"], d["runs"]
    flat = b[b.flat_n > 1]
    parts = [("Flat ranges wider than one grid step: " + "; ".join(
        f"B = {int(x.batch_size)}, {g(x.flat_lo)} – {g(x.flat_hi)}" for x in flat.itertuples()) + ".")
        if len(flat) else "No batch size has a flat range wider than one grid step."]
    noted = b[b.note.fillna("") != ""]
    if len(noted):
        parts.append(f"B = {listing(noted.batch_size.astype(int), str)} carry a note (under the table): "
                     f"read it before trusting those optima.")
    fitted = b[b.bracketed.astype(bool)]
    if len(fitted) >= 2:
        top = fitted.iloc[-1]
        parts.append(f"Anchored at B = {int(fitted.iloc[0].batch_size)}, the linear and square-root rules "
                     f"would give {g(top.linear_rule)} and {g(top.sqrt_rule)} at B = {int(top.batch_size)}, "
                     f"against a measured {g(top.lr_opt)} (`report.md` has the rules' column for every B).")
    big = int(b.batch_size.max())
    steps = int(r[r.batch_size == big].total_steps.max())
    parts.append(f"B = {big} gets only {steps} steps in {g(d['cfg'].train.epochs)} epochs, so its accuracy "
                 f"({g(b.iloc[-1][d['report'].record['metric']])}) reflects the budget as much as the LR: read "
                 f"the largest batch sizes of a fixed-epoch sweep with that in mind.")
    return " ".join(parts)


def fit_notes(d: dict) -> str:
    f = d["fits"]
    ranked = f[f["rank"].notna()].sort_values(["rank", "se_log10"])
    if ranked.empty:
        return "No law was fitted (too few bracketed optima)."
    first = ranked[ranked["rank"] == ranked["rank"].min()]
    name = lambda row: row.get("label") if isinstance(row.get("label"), str) else row["law"]  # noqa: E731
    top = " and ".join(f"the {name(x)}" for _, x in first.iterrows())
    head = ranked.head(4)
    spread = head.se_log10.max() - head.se_log10.min()
    out = [f"Ranked first: {top}" + (" (tied)" if len(first) > 1 else "") + f", from {int(ranked.iloc[0].n)} "
           f"bracketed optima. The first {len(head)} are within {g(spread, 2)} decades of each other "
           f"(a factor {g(10 ** spread, 2)}): the data say how the optimum grows over these batch sizes, "
           f"not which law is right."]
    lin = f[f.law == "linear_rule"]
    if len(lin):
        rms = float(lin.iloc[0].rms_log10)
        out.append(f"Plain linear scaling from the smallest batch size misses by {g(rms, 2)} decades RMS "
                   f"(a factor {g(10 ** rms, 2)}).")
    return " ".join(out)


def critical_notes(d: dict) -> str:
    c = d["critical"].sort_values("target", ascending=False)
    ok = c[pd.to_numeric(c.B_noise, errors="coerce").map(math.isfinite)]
    missing = c[~c.index.isin(ok.index)]
    parts = []
    if len(ok):
        parts.append("B_noise " + "; ".join(f"{g(x.B_noise)} at train loss {g(x.target)} (R² {g(x.r2, 2)})"
                                            for x in ok.itertuples()) + ".")
    if len(missing):
        which = " and ".join(g(x) for x in missing.target)
        parts.append(f"At train loss{'es' * (len(missing) > 1)} {which}, B_noise is not determined: the steps S did not "
                     f"fall with the batch size as the hyperbola needs (the table's note says so).")
    if len(ok) >= 2:
        v = list(ok.B_noise)
        trend = ("grows" if all(a < b for a, b in zip(v, v[1:])) else
                 "falls" if all(a > b for a, b in zip(v, v[1:])) else "goes up and down")
        n = sorted({int(x) for x in ok.n})
        parts.append(f"Here B_noise {trend} as the target gets lower (Li et al. 2024 expect it to grow); "
                     f"{'–'.join(map(str, n[::max(1, len(n) - 1)]))} batch sizes per target make these rough numbers.")
    else:
        parts.append("With one target or none determined, whether B_noise grows as the loss falls (Li et al. "
                     "2024) cannot be read from this sweep; more batch sizes, or a longer budget, would tell.")
    return " ".join(parts)


def range_notes(d: dict) -> str:
    best = d["best"].set_index("batch_size")
    rows = [r for r in d["rt"]["results"] if r["batch_size"] in best.index]
    if not rows:
        return ""
    Bs = [r["batch_size"] for r in rows]
    grid = [float(best.loc[b, "best_lr"]) for b in Bs]
    sug = {n: [(r["suggestions"].get(n) or {}).get("lr") for r in rows] for n in ("valley", "minimum/10", "clr-upper")}
    out = [f"How it compares with the quickstart grid (`{RUN}`, best by final validation accuracy): the grid's "
           f"best LR is {listing(grid)} at B = {listing(Bs, str)}."]
    for n in ("valley", "minimum/10"):
        if all(s for s in sug[n]):
            out.append(f"The `{n}` suggestions ({listing(sug[n])}) are within a factor "
                       f"{g(max(factor(s, x) for s, x in zip(sug[n], grid)), 2)} of them.")
    if all(sug["clr-upper"]):
        ratio = [s / x for s, x in zip(sug["clr-upper"], grid)]
        out.append(f"`clr-upper` ({g(min(sug['clr-upper']))}–{g(max(sug['clr-upper']))}) is {g(min(ratio), 2)}–"
                   f"{g(max(ratio), 2)}× the grid's best: with `--smooth {g(d['rt']['smooth'])}` the smoothed curve lags "
                   f"the raw loss by tens of steps, which pushes its minimum to larger LRs.")
    stopped = [r["batch_size"] for r in rows if r.get("stopped")]
    if len(stopped) < len(rows):
        out.append(f"At B = {listing([b for b in Bs if b not in stopped], str)} the loss never rose above "
                   f"{g(d['rt']['diverge'])}× its best, so the test ran to the largest LR (\"stopped at lr\" is —): "
                   f"a network can collapse to a constant prediction (loss ≈ ln 10) instead of exploding.")
    return " ".join(out)


BLOCKS = {
    "made-with": made_with,
    "quickstart-run": lambda d: fence(d["outs"]["run"].text),
    "quickstart-setup": setup,
    "summarize-output": lambda d: fence(d["outs"]["summarize"].text),
    "summarize-best": best_notes,
    "summarize-fits": fit_notes,
    "summarize-critical": critical_notes,
    "predict-output": lambda d: fence(d["outs"]["predict"].text),
    "range-test-output": lambda d: fence(d["outs"]["range-test"].text),
    "range-test-compare": range_notes,
    "plan-next-output": lambda d: fence(d["outs"]["plan-next"].text, max_rows=3),
}


def fill(page: str, key: str, body: str) -> str:
    pat = re.compile(rf"(<!-- auto:{re.escape(key)} -->).*?(<!-- /auto:{re.escape(key)} -->)", re.S)
    if not pat.search(page):
        raise SystemExit(f"README.md has no <!-- auto:{key} --> ... <!-- /auto:{key} --> block")
    return pat.sub(lambda m: m.group(1) + "\n" + body.strip() + "\n" + m.group(2), page)


def copy_figures(d: dict) -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    for plot, name in FIGURES.items():
        src = d["report"].figure(plot)
        if not src.is_file():
            raise SystemExit(f"{src.relative_to(REPO)}: missing; did summarize draw it?")
        shutil.copyfile(src, IMG / name)
    shutil.copyfile(REPO / SWEEP / "range_test" / "range_test.png", IMG / RANGE_FIGURE)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-run", action="store_true", help="train nothing; rerun the reports and rewrite the README")
    ap.add_argument("--fresh", action="store_true", help=f"delete {SWEEP} and the saved outputs first, then train")
    a = ap.parse_args(argv)
    if a.fresh and a.no_run:
        raise SystemExit("--fresh and --no-run: choose one")
    if a.fresh:
        shutil.rmtree(REPO / SWEEP, ignore_errors=True)
        shutil.rmtree(LOGS, ignore_errors=True)
    outs = run_all(train=not a.no_run)
    d = load(outs)
    page = README.read_text()
    for key, block in BLOCKS.items():
        page = fill(page, key, block(d))
    copy_figures(d)
    README.write_text(page)
    print(f"wrote {README.relative_to(REPO)} ({len(BLOCKS)} blocks) and {len(FIGURES) + 1} figures in "
          f"{IMG.relative_to(REPO)}/")


if __name__ == "__main__":
    main()
