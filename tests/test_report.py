"""summarize end to end: sweeps written from known laws are read back through the whole report;
partial and corrupt sweeps; every output file; the CLI (summarize, predict, error paths); and one
real small sweep trained by lrsweep."""
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from typer.testing import CliRunner

from lrsweep import storage
from lrsweep.cli import app
from lrsweep.analysis.fits import law_value
from lrsweep.config.grid import build_sweep
from lrsweep.analysis.runs import Runs, load_runs
from lrsweep.analysis.report import build_report
from lrsweep.analysis.cells import cell_counts, group_axes
from lrsweep.analysis.saved import read_report
from lrsweep.errors import UserError
from lrsweep.output.figures import PLOTS
from lrsweep.output.files import write_report

from conftest import make_config
from sweepdirs import record

runner = CliRunner()
B_SIZES = [4, 8, 16, 32, 64, 128, 256, 512, 1024]
S_MIN, B_CRIT, TARGET = 20.0, 64.0, 0.5
LAWS = {"surge": ("surge", {"eps_max": 1e-2, "B_noise": 64.0}), "linear": ("linear", {"eps_max": 0.5, "B_noise": 64.0})}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def fake_sweep(root, name="law", laws=None, lrs=None, seeds=(0,), sizes=tuple(B_SIZES)):
    """A sweep folder as lrsweep writes it, with numbers from known laws instead of training.

    final_val_acc is a parabola in log10(LR) peaking at the law's optimal LR; more than 1.2
    decades above it the run diverges. The train loss 0.5*(S/step)^0.3 first reaches TARGET at
    step S, where S = S_opt(B) = S_MIN(1 + B_CRIT/B) for the grid LR nearest the optimum and
    S_opt(B)*(1+k) for the LR k grid points away: the hyperbola with S_min = S_MIN, B_noise = B_CRIT
    (up to rounding S to whole steps).
    `laws`: optimizer name -> (law, params); several make an optimizer.name axis.
    """
    laws = laws or {"sgd": LAWS["surge"]}
    lrs = [float(x) for x in (lrs if lrs is not None else np.geomspace(1e-4, 1.0, 13))]
    sweep = {"batch_size": list(sizes), "lr": lrs, "seed": list(seeds)}
    if len(laws) > 1:
        sweep["optimizer.name"] = list(laws)
    raw = make_config(name=name, sweep=sweep, **{"train.target_train_loss": TARGET, "train.target_smoothing": 0.0,
                                                   "train.steps": 100, "train.eval_every": 100})
    spec = build_sweep(raw)
    d = root / name
    d.mkdir(parents=True)
    storage.write_sweep_file(d, spec.raw)
    log_lrs = np.log10(lrs)
    for r in spec.runs:
        cfg = r.config
        B, lr = cfg.train.batch_size, cfg.effective_lr
        law, params = laws[cfg.optimizer.name]
        lr_opt = float(law_value(law, params, B))
        dist = math.log10(lr / lr_opt)
        k = abs(int(np.argmin(np.abs(log_lrs - math.log10(lr)))) - int(np.argmin(np.abs(log_lrs - math.log10(lr_opt)))))
        S = round(S_MIN * (1 + B_CRIT / B) * (1 + k))
        diverged = dist > 1.2
        # 2.5 S_opt steps: the nearest LR reaches the target, the next one just, others never
        steps = np.arange(1, (5 if diverged else int(2.5 * S_MIN * (1 + B_CRIT / B))) + 1)
        loss = TARGET * (S / steps) ** 0.3 + 0.01 * r.config.train.seed
        if diverged:
            loss[-1] = math.inf
        metrics = {"step": steps, "examples": steps * B, "lr": lr, "batch_size": B, "train_loss": loss,
                   "train_acc": 0.5, "grad_norm": 1 / math.sqrt(B), "data_time": 0.0, "compute_time": 0.0, "elapsed": 0.0}
        acc = 0.95 - 0.05 * dist ** 2 - 0.001 * cfg.train.seed
        result = record(r, status="diverged" if diverged else "complete",
                        final_val_acc=math.nan if diverged else acc, best_val_acc=math.nan if diverged else acc,
                        final_train_loss=float(loss[-1]), final_val_loss=math.nan if diverged else 1 - acc,
                        steps_to_train_loss=S if S <= len(steps) and not diverged else None)
        storage.write_run(d, r.run_id, cfg.model_dump(mode="json"), metrics, {"step": [len(steps)]}, result)
    return d


@pytest.fixture(scope="module")
def surge_sweep(tmp_path_factory):
    return fake_sweep(tmp_path_factory.mktemp("surge"))


@pytest.mark.parametrize("law", ["surge", "linear"])
def test_known_law_is_recovered_through_the_whole_report(law, tmp_path):
    name, params = LAWS[law]
    d = fake_sweep(tmp_path, laws={"sgd": (name, params)}, lrs=np.geomspace(1e-4, 10.0, 16))
    rep = build_report(d)
    (g,) = rep.groups
    want = law_value(name, params, g.best["batch_size"].to_numpy(float))
    assert g.best["lr_opt"].to_numpy() == pytest.approx(want, rel=1e-6)  # the parabola is exact here
    assert (g.best["edge"] == "").all() and g.best["interpolated"].all()
    fit = g.fits[g.fits["law"] == name].iloc[0]
    assert fit["rank"] == 1
    assert fit["B_noise"] == pytest.approx(64, rel=0.05) and fit["eps_max"] == pytest.approx(params["eps_max"], rel=0.05)
    (crit,) = g.critical.to_dict(orient="records")
    assert crit["target"] == TARGET  # the sweep's own target by default
    assert crit["B_noise"] == pytest.approx(B_CRIT, rel=0.05) and crit["S_min"] == pytest.approx(S_MIN, rel=0.05)
    assert crit["E_min"] == pytest.approx(B_CRIT * S_MIN, rel=0.05)


def test_every_output_file_is_written_and_parses(surge_sweep, tmp_path):
    rep = build_report(surge_sweep)
    written = write_report(rep, tmp_path / "report")
    names = {p.name for p in written}
    assert names == {"best_lr.csv", "cells.csv", "fits.json", "report.md"} | {f"{p}.png" for p in PLOTS}
    best = pd.read_csv(tmp_path / "report" / "best_lr.csv")
    assert list(best["batch_size"]) == B_SIZES and best["lr_opt"].notna().all()
    cells = pd.read_csv(tmp_path / "report" / "cells.csv")
    assert len(cells) == 9 * 13 and cells["expected"].eq(1).all() and cells["missing"].eq(0).all()
    assert cells["diverged"].sum() == len(load_runs(surge_sweep).df.query("status == 'diverged'"))
    fits = json.loads((tmp_path / "report" / "fits.json").read_text())
    assert fits["metric"] == "final_val_acc" and fits["targets"] == [TARGET]
    (g,) = fits["groups"]
    assert g["fits"][0]["law"] == "surge" and g["fits"][0]["B_noise"] == pytest.approx(64, rel=0.05)
    assert g["critical"][0]["B_noise"] == pytest.approx(B_CRIT, rel=0.05) and len(g["se_points"]["0.5"]) == 9
    md = (tmp_path / "report" / "report.md").read_text()
    for p in PLOTS:
        assert f"]({p}.png)" in md
        img = imread(tmp_path / "report" / f"{p}.png")
        assert img.shape[0] > 200 and img.shape[1] > 300
    assert "| 1 | surge |" in md and "### Critical batch size" in md


def test_partial_and_corrupt_sweeps_are_summarized_with_counts_and_warnings(surge_sweep, tmp_path):
    d = tmp_path / "law"
    shutil.copytree(surge_sweep, d)
    runs = load_runs(d).df.sort_values(["batch_size", "lr"])
    mid = runs[runs["batch_size"] == 64]
    (d / mid.iloc[0]["run_id"] / "result.json").unlink()  # unfinished
    shutil.rmtree(d / mid.iloc[1]["run_id"])  # never started
    (d / mid.iloc[5]["run_id"] / "result.json").write_text("{truncated")
    bad_metrics = d / mid.iloc[6]["run_id"] / "metrics.csv"
    bad_metrics.write_text("")
    rep = build_report(d)
    assert any(str(d / mid.iloc[5]["run_id"] / "result.json") in w for w in rep.warnings)
    assert any(str(bad_metrics) in w for w in rep.warnings)
    (g,) = rep.groups
    c = g.cells[g.cells["batch_size"] == 64].sort_values("lr")
    assert list(c["missing"].iloc[[0, 1, 5]]) == [1, 1, 1] and c["missing"].sum() == 3
    assert c["expected"].sum() == 13 and g.cells["complete"].sum() == (runs["status"] == "complete").sum() - 3
    assert len(g.best) == 9 and not g.fits.empty
    written = write_report(rep, d / "report")
    md = (d / "report" / "report.md").read_text()
    assert "3 not run yet" in md and "Cells with diverged, failed or missing runs" in md
    assert len(written) == 4 + len(PLOTS)


def test_cell_counts_match_by_cell_not_run_id():
    """Run ids hash the whole config: a sweep finished by an older lrsweep must still count."""
    runs = Runs(pd.DataFrame({"run_id": ["old1", "old2", "old3"], "status": ["complete", "diverged", "complete"],
                              "batch_size": [8, 8, 16], "lr": [0.1, 1.0, 0.1]}), axes=["batch_size", "lr", "seed"])
    asked = pd.DataFrame({"run_id": ["n1", "n2", "n3", "n4", "n5"], "batch_size": [8, 8, 16, 16, 16],
                          "lr": [0.1, 1.0, 0.1, 1.0, 1.0], "seed": [0, 0, 0, 0, 1]})
    c = cell_counts(runs, asked).set_index(["batch_size", "lr"])
    assert c.loc[(8, 0.1)].tolist() == [1, 1, 0, 0, 0, 0]  # expected, complete, diverged, stalled, failed, missing
    assert c.loc[(8, 1.0)].tolist() == [1, 0, 1, 0, 0, 0]
    assert c.loc[(16, 1.0)].tolist() == [2, 0, 0, 0, 0, 2]
    alone = cell_counts(runs, pd.DataFrame())  # no sweep file: nothing counted as missing
    assert alone["missing"].sum() == 0 and alone["expected"].tolist() == [1, 1, 1]


def test_edge_of_grid_is_reported_and_not_fitted(tmp_path):
    d = fake_sweep(tmp_path, lrs=np.geomspace(1e-4, 8e-3, 9))  # surge peak 1e-2 at B=64: beyond the grid
    rep = build_report(d)
    (g,) = rep.groups
    high = g.best[g.best["edge"] == "high"]
    assert set(high["batch_size"]) == {8, 16, 32, 64, 128, 256, 512}  # only B=4 and 1024 peak inside
    assert (high["suggest_lo"] == high["best_lr"]).all() and (high["suggest_hi"] > high["best_lr"] * 5).all()
    assert any("B=64: best LR is the largest on the grid" in w for w in g.warnings)
    assert g.fits.iloc[0]["n"] == (g.best["edge"] == "").sum()


def test_groups_are_fitted_separately(tmp_path):
    d = fake_sweep(tmp_path, laws={"sgd": LAWS["linear"], "adam": LAWS["surge"]}, lrs=np.geomspace(1e-4, 10.0, 11),
                   sizes=(4, 16, 64, 256, 1024))
    rep = build_report(d, curves=False)
    assert [g.keys for g in rep.groups] == [{"optimizer.name": "adam"}, {"optimizer.name": "sgd"}]
    assert [g.fits.iloc[0]["law"] for g in rep.groups] == ["surge", "linear"]
    assert rep.groups[0].fits.iloc[0]["B_noise"] == pytest.approx(64, rel=0.05)
    best = rep.table("best")
    assert list(best.columns[:2]) == ["optimizer.name", "batch_size"] and len(best) == 10
    written = write_report(rep, tmp_path / "report")
    assert {"heatmap-1.png", "heatmap-2.png", "optimal_lr-2.png"} <= {p.name for p in written}
    saved = read_report(tmp_path / "report")  # fits.json read back: the same groups, tables, figures
    assert saved.groups == [{"optimizer.name": "adam"}, {"optimizer.name": "sgd"}]
    for name, cols in (("fits", ["optimizer.name", "law", "rank", "B_noise"]), ("best", ["optimizer.name", "batch_size", "lr_opt"])):
        pd.testing.assert_frame_equal(saved.table(name)[cols], rep.table(name)[cols], check_dtype=False)
    assert saved.figure("heatmap", **{"optimizer.name": "sgd"}) == tmp_path / "report" / "heatmap-2.png"
    assert list(saved.best_csv()["batch_size"]) == list(best["batch_size"])


def test_runs_carry_their_axes_explicitly(tmp_path):
    d = fake_sweep(tmp_path, laws={"sgd": LAWS["linear"], "adam": LAWS["surge"]}, lrs=[1e-3, 1e-2], sizes=(4, 16))
    runs = load_runs(d)
    assert runs.axes == ["batch_size", "lr", "seed", "optimizer.name"] and runs.warnings == []
    assert runs.sweep_dirs == [d] and len(runs.df) == 2 * 2 * 2 and "axes" not in runs.df.attrs
    assert group_axes(runs) == ["optimizer.name"]
    assert group_axes(Runs(runs.df)) == []  # axes are never guessed from the columns


def test_a_folder_without_fits_json_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="fits.json: unreadable"):
        read_report(tmp_path)


def test_loss_drop_metric_and_seeds(tmp_path):
    d = fake_sweep(tmp_path, seeds=(0, 1))
    rep = build_report(d, metric="loss_drop_after_target", after_steps=10)
    (g,) = rep.groups
    assert (g.best["n_seeds"] == 2).all() and (g.best["std"] > 0).all()
    # loss 0.5(S/step)^0.3 falls fastest right after the target for the smallest S: the optimum LR
    b64 = g.best[g.best["batch_size"] == 64].iloc[0]
    assert b64["best_lr"] == pytest.approx(1e-2)  # the grid LR nearest the law's optimum


def run_cli_ok(*args):
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    return r


def test_cli_summarize_and_predict(surge_sweep, tmp_path):
    out = tmp_path / "rep"
    r = run_cli_ok("summarize", surge_sweep, "--out", out, "--no-plots", "--target", 0.5, "--target", 0.6)
    assert "fitted laws" in r.output and "surge" in r.output and "critical batch size" in r.output
    assert not list(out.glob("*.png")) and (out / "report.md").is_file()
    rows = json.loads(run_cli_ok("summarize", surge_sweep, "--out", out, "--no-plots", "--format", "json").output)
    assert [row["batch_size"] for row in rows] == B_SIZES and rows[0]["edge"] == ""
    csv = run_cli_ok("summarize", surge_sweep, "--out", out, "--no-plots", "--format", "csv").output
    assert csv.startswith("batch_size,best_lr")
    r = run_cli_ok("predict", surge_sweep, "--batch-size", 100, "--batch-size", 65536)
    assert "surge" in r.output and "outside the measured batch sizes" in r.output
    pred = json.loads(run_cli_ok("predict", surge_sweep, "--batch-size", 100, "--format", "json").output)
    assert pred[0]["law"] == "surge" and pred[0]["lr"] == pytest.approx(law_value("surge", LAWS["surge"][1], 100), rel=0.02)
    pred = json.loads(run_cli_ok("predict", surge_sweep, "--batch-size", 100, "--law", "linear_rule", "--format", "json").output)
    assert pred[0]["law"] == "linear_rule"


@pytest.fixture(scope="module")
def bad_inputs(surge_sweep, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    (root / "empty").mkdir()
    nothing = root / "nothing_done" / "x"
    nothing.mkdir(parents=True)
    (nothing / "config.json").write_text("{}")
    notarget = root / "nt" / "law"
    shutil.copytree(surge_sweep, notarget, ignore=shutil.ignore_patterns("report"))
    for cfg in notarget.glob("*/config.json"):
        c = json.loads(cfg.read_text())
        c["train"]["target_train_loss"] = None
        cfg.write_text(json.dumps(c))
    return {"sweep": surge_sweep, "empty": root / "empty", "nothing_done": root / "nothing_done",
            "notarget": notarget, "twolr": fake_sweep(root / "two", lrs=[1e-3, 1e-1], sizes=(8, 64))}


@pytest.mark.parametrize("args, fragment", [
    (["summarize", "{sweep}", "--tolerance", "2"], "--tolerance: expected a fraction in [0, 1), got 2"),
    (["summarize", "{sweep}", "--target", "-1"], "--target: expected train-loss values > 0"),
    (["summarize", "{sweep}", "--metric", "acc"], "--metric: expected one of (final_val_acc"),
    (["summarize", "{sweep}", "--after-steps", "0"], "--after-steps: expected an integer >= 1"),
    (["summarize", "{empty}"], "not a sweep folder"),
    (["summarize", "{nothing_done}"], "no finished runs under"),
    (["summarize", "{notarget}", "--metric", "loss_drop_after_target"], "needs a train-loss target"),
    (["predict", "{sweep}", "--batch-size", "0"], "--batch-size: expected a number > 0, got 0"),
    (["predict", "{sweep}", "--batch-size", "64", "--law", "cubic"], "--law: expected one of (linear, sqrt, power, surge"),
    (["predict", "{twolr}", "--batch-size", "64"], "no scaling law could be fitted"),
])
def test_cli_errors_are_one_line_exit_2(args, fragment, bad_inputs):
    r = runner.invoke(app, [a.format(**bad_inputs) if a.startswith("{") else a for a in args])
    assert r.exit_code == 2, r.output
    assert fragment in r.output.replace("\n", ""), r.output
    assert "Traceback" not in r.output and r.output.strip().count("\n") <= 3


def test_real_small_sweep_to_report_with_all_plots(write_config, tmp_path):
    """A real sweep trained by lrsweep -> summarize -> every plot, and the trainer's own
    steps_to_train_loss read back from metrics.csv (S_ema), ahead of which summarize's S lies."""
    raw = make_config(sweep={"batch_size": [8, 16, 32], "lr": [0.003, 0.01, 0.03, 0.1, 0.3]},
                      **{"train.steps": 60, "train.eval_every": 30, "train.target_train_loss": 0.9})
    cfg = write_config(raw)
    run_cli_ok("run", cfg, "--out", tmp_path / "runs")
    d = tmp_path / "runs" / "tiny"
    r = run_cli_ok("summarize", d, "--metric", "final_train_loss", "--target", 0.9, "--target", 0.6)
    assert "wrote" in r.output
    for p in PLOTS:
        assert (d / "report" / f"{p}.png").stat().st_size > 10_000, p
    rep = build_report(d, metric="final_train_loss", targets=[0.9])
    runs = rep.runs.set_index("run_id")
    from lrsweep.analysis.critical import curve_table
    table, _ = curve_table(rep.runs, [0.9])
    for _, row in table.iterrows():  # S_ema: the trainer's causal-EMA read-off; S@: summarize's, without its lag
        want = runs.loc[row["run_id"], "steps_to_train_loss"]
        assert (math.isnan(row["S_ema@0.9"]) and pd.isna(want)) or row["S_ema@0.9"] == want
    lag = (table["S_ema@0.9"] - table["S@0.9"]).dropna()
    assert len(lag) and lag.median() > 2  # the EMA (smoothing 0.9) reads the same crossing several steps late
    assert len(rep.groups[0].best) == 3
