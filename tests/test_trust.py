"""Answers that say how far to trust them: laws fitted only to bracketed optima, parameters at a
bound unranked, ties within the interpolation error, no interpolation through a cliff, no best LR
without a run that reached the target, "trained" meaning learned, spread only from 2 seeds and
bootstrap intervals. Sweeps are written from formulas (storage.write_run), not trained."""
import json
import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lrsweep import storage
from lrsweep.analysis.cells import best_lr_table
from lrsweep.analysis.fits import fit_laws, law_value
from lrsweep.analysis.metrics import learned
from lrsweep.analysis.optimum import find_optimum, interpolation_error
from lrsweep.analysis.report import build_report, predict
from lrsweep.analysis.runs import load_runs
from lrsweep.cli import app
from lrsweep.config.grid import build_sweep
from lrsweep.output.files import write_report

from conftest import make_config
from sweepdirs import record
from test_report import fake_sweep

B = np.array([4, 8, 16, 32, 64, 128, 256, 512, 1024], float)
GRID = [1e-3, 10 ** -2.5, 1e-2, 10 ** -1.5, 0.1, 10 ** -0.5]


def sweep_of(root, outcome, lrs, sizes, seeds=(0,), classes=4, name="s"):
    """A sweep folder whose result.json fields are outcome(B, lr, seed) (status defaults to
    complete), on the synthetic dataset with `classes` classes (chance 1/classes)."""
    raw = make_config(name=name, sweep={"batch_size": [int(x) for x in sizes], "lr": [float(x) for x in lrs], "seed": list(seeds)},
                      **{"dataset.synthetic.classes": classes, "train.steps": 4, "train.eval_every": 4})
    spec = build_sweep(raw)
    d = root / name
    d.mkdir(parents=True)
    storage.write_sweep_file(d, spec.raw)
    for r in spec.runs:
        cfg = r.config
        Bs, lr, seed = cfg.train.batch_size, cfg.effective_lr, cfg.train.seed
        steps = np.arange(1, 5)
        metrics = {"step": steps, "examples": steps * Bs, "lr": lr, "batch_size": Bs, "train_loss": 1.0 / steps,
                   "train_acc": 0.5, "grad_norm": 1.0, "data_time": 0.0, "compute_time": 0.0, "elapsed": 0.0}
        result = record(r, **outcome(Bs, lr, seed))
        storage.write_run(d, r.run_id, cfg.model_dump(mode="json"), metrics, {"step": [4]}, result)
    return d


def summarize_cli(d, *args):
    r = CliRunner().invoke(app, ["summarize", str(d), "--no-plots", *map(str, args)])
    assert r.exit_code == 0, r.output
    return r.output


# ---------------------------------------------------------------- 5. fits of points that say nothing

def test_a_one_lr_sweep_fits_no_law_and_says_why(tmp_path):
    d = fake_sweep(tmp_path, lrs=[1e-2])
    rep = build_report(d, curves=False)
    (g,) = rep.groups
    assert g.fits.empty and not g.best["bracketed"].any()
    assert g.best["note"].str.contains("one LR only").all()
    (w,) = [x for x in g.warnings if "not fitted" in x]
    assert w.startswith("linear, sqrt, power, surge, saturating not fitted: 0 batch size(s) with a bracketed optimum")
    write_report(rep, tmp_path / "rep", with_plots=False)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "No fit: 0 batch size(s) with a bracketed optimum" in md
    rows = [line for line in md.splitlines() if line.startswith("| 4 |") or line.startswith("| 1024 |")]
    assert len(rows) == 2 and all("—" not in line and "one LR only" in line for line in rows)
    with pytest.raises(Exception, match="no scaling law could be fitted"):
        predict(rep, [100])


def test_a_law_with_a_parameter_at_its_bound_is_flagged_and_not_ranked():
    lr = law_value("surge", {"eps_max": 1e-2, "B_noise": 64.0}, B)  # the power law wants α > 4 here
    df, _ = fit_laws(B, lr)
    power = df[df["law"] == "power"].iloc[0]
    assert power["alpha"] == pytest.approx(4, rel=1e-3) and power["at_bound"] == "alpha"
    assert math.isnan(power["rank"]) and "alpha at its bound 4" in power["note"] and "not ranked" in power["note"]
    ranked = df["rank"].notna().to_numpy()
    assert ranked[:ranked.sum()].all()  # ranked laws first, the flagged one after them
    assert df.iloc[0]["law"] == "surge" and df.iloc[0]["rank"] == 1


def test_laws_within_the_interpolation_error_tie_and_fewer_parameters_come_first():
    lr = law_value("power", {"eps_max": 0.5, "B_noise": 64.0, "alpha": 0.97}, B)
    df, _ = fit_laws(B, lr, tie=interpolation_error(10 ** 0.5))
    lin, power = (df[df["law"] == x].iloc[0] for x in ("linear", "power"))
    assert power["se_log10"] < lin["se_log10"] < interpolation_error(10 ** 0.5)  # power is exact, linear 0.004 off
    assert list(df["law"][:2]) == ["linear", "power"] and lin["rank"] == power["rank"] == 1
    assert "tied with power" in lin["note"] and "tied with linear" in power["note"]
    apart, _ = fit_laws(B, lr, tie=interpolation_error(2.0))  # a finer grid tells them apart
    assert list(apart["law"][:2]) == ["power", "linear"] and list(apart["rank"][:2]) == [1, 2]


def test_the_interpolation_error_is_a_fraction_of_the_grid_step():
    assert interpolation_error(10 ** 0.5) == pytest.approx(0.0104, abs=1e-4)  # the issue measured ~0.01
    assert interpolation_error(2.0) < interpolation_error(10 ** 0.5) < interpolation_error(10.0)


# ---------------------------------------------------------------- 6. no parabola through a cliff

def test_a_cliff_keeps_the_grid_best_between_its_neighbours_and_marks_it():
    acc = [0.5, 0.8, 0.98, 0.986, 0.086, 0.086]  # 10 classes: 0.086 is chance
    opt = find_optimum(GRID, acc, higher=True, failures=["", "", "", "", "stayed at chance", "stayed at chance"])
    assert opt.lr_grid == pytest.approx(10 ** -1.5) and opt.lr_opt == opt.lr_grid
    assert GRID[2] <= opt.lr_opt <= GRID[4] and opt.bracketed and not opt.interpolated
    assert "LR 0.1 next to it stayed at chance" in opt.note and "unreliable" in opt.note


def test_a_cliff_through_the_report_is_fitted_at_its_grid_best(tmp_path):
    def outcome(Bs, lr, seed):
        cliff = lr > 0.05 * math.sqrt(Bs / 16)  # the LR where training stops learning grows with B
        return {"final_val_acc": 0.086 if cliff else 0.99 - 0.1 * math.log10(0.03 / lr) ** 2}
    d = sweep_of(tmp_path, outcome, GRID, (16, 64), classes=10)
    best = build_report(d, curves=False).groups[0].best.set_index("batch_size")
    b16 = best.loc[16]  # 0.0316 next to 0.1 at chance: the parabola used to put the vertex at 0.018
    assert b16["lr_opt"] == pytest.approx(10 ** -1.5) and b16["bracketed"] and not b16["interpolated"]
    assert "LR 0.1 next to it stayed at chance" in b16["note"]
    b64 = best.loc[64]  # 0.1 learned at B = 64: a real bracket, interpolated between the neighbours
    assert b64["bracketed"] and GRID[2] <= b64["lr_opt"] <= GRID[4]


def test_the_interpolated_optimum_never_leaves_the_bracket():
    rng = np.random.default_rng(0)
    for _ in range(200):
        v = rng.uniform(0, 1, len(GRID))
        opt = find_optimum(GRID, v, higher=True)
        i = GRID.index(opt.lr_grid)
        assert GRID[max(i - 1, 0)] <= opt.lr_opt <= GRID[min(i + 1, len(GRID) - 1)]


# ---------------------------------------------------------------- 7. no answer without a run that reached the target

def test_steps_to_target_without_a_run_reaching_it_has_no_best_lr_and_a_true_note(tmp_path):
    def outcome(Bs, lr, seed):
        if lr > 0.2:
            return {"status": "diverged", "final_val_acc": math.nan}
        reached = Bs <= 64 and lr >= 3e-3
        steps = round(50 * (1 + math.log10(lr / 0.03) ** 2) + Bs / 8)  # fewest at 0.0316
        return {"final_val_acc": 0.9, "steps_to_target": steps if reached else None}
    d = sweep_of(tmp_path, outcome, GRID, (32, 64, 128, 256))
    rep = build_report(d, metric="steps_to_target", curves=False)
    best = rep.groups[0].best.set_index("batch_size")
    for Bs in (128, 256):
        assert math.isnan(best.loc[Bs, "best_lr"]) and math.isnan(best.loc[Bs, "lr_opt"])
        assert best.loc[Bs, "note"] == "no run reached the target (5 complete, 1 diverged)"
    assert best.loc[32, "best_lr"] == pytest.approx(10 ** -1.5)
    out = summarize_cli(d, "--metric", "steps_to_target", "--out", tmp_path / "rep")
    assert "no run reached the target (5 complete, 1 diverged)" in out and "every LR diverged" not in out
    csv = pd.read_csv(tmp_path / "rep" / "best_lr.csv").set_index("batch_size")
    assert csv.loc[256, "note"] == "no run reached the target (5 complete, 1 diverged)" and np.isnan(csv.loc[256, "best_lr"])
    assert "no run reached the target (5 complete, 1 diverged)" in (tmp_path / "rep" / "report.md").read_text()
    assert best_lr_table(load_runs(d), "steps_to_target").set_index("batch_size").loc[128, "note"].startswith("no run reached")


def test_trained_means_learned():
    runs = pd.DataFrame({"status": ["complete", "complete", "complete", "diverged", "complete", "complete"],
                         "final_val_acc": [0.9, 0.11, 0.13, np.nan, np.nan, np.nan],
                         "chance_acc": [0.1, 0.1, 0.1, 0.1, np.nan, np.nan],
                         "final_train_loss": [0.1, 2.3, 2.0, np.nan, 2.5, 1.0], "initial_loss": [2.3] * 6})
    assert learned(runs).tolist() == [True, False, True, False, False, True]


def test_predict_does_not_count_runs_at_chance_as_trained(tmp_path):
    def outcome(Bs, lr, seed):  # above 0.6 decades over the optimum: complete, but at chance (4 classes)
        dist = math.log10(lr / law_value("surge", {"eps_max": 1e-2, "B_noise": 64.0}, Bs))
        return {"final_val_acc": 0.2 if dist > 0.6 else 0.95 - 0.05 * dist ** 2}
    d = sweep_of(tmp_path, outcome, np.geomspace(1e-4, 1.0, 13), (4, 16, 64, 256, 1024))
    rep = build_report(d, curves=False)
    (p,) = predict(rep, [64], law="linear_rule").to_dict(orient="records")
    assert 0.0215 < p["lr"] < 1.0  # every LR up to 1 completed, but none above 0.0215 learned
    assert "above the largest LR at which a run learned (0.0215)" in p["warning"]


# ---------------------------------------------------------------- 8. seeds and uncertainty

def test_one_seed_shows_no_spread(tmp_path):
    d = fake_sweep(tmp_path, lrs=np.geomspace(1e-4, 1.0, 9), sizes=(16, 64, 256))
    rep = build_report(d, curves=False)
    (g,) = rep.groups
    assert g.best["std"].isna().all() and g.cells["std"].isna().all()
    assert g.best["lr_opt_lo"].isna().all()  # no interval over one seed
    write_report(rep, tmp_path / "rep", with_plots=False)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "± 0 " not in md and "(n=1)" in md
    assert "±" not in summarize_cli(d)


def shifted_seeds(root):
    """4 seeds whose optimum scatters by ~0.1 decade around a surge law."""
    shift = np.random.default_rng(1).normal(0, 0.1, size=(len(B), 4))

    def outcome(Bs, lr, seed):
        opt = law_value("surge", {"eps_max": 1e-2, "B_noise": 64.0}, Bs) * 10 ** shift[list(B).index(Bs), seed]
        return {"final_val_acc": 0.95 - 0.05 * math.log10(lr / opt) ** 2}
    return sweep_of(root, outcome, np.geomspace(1e-4, 1.0, 13), B.astype(int), seeds=(0, 1, 2, 3))


def test_several_seeds_give_intervals_that_contain_the_value_and_are_deterministic(tmp_path):
    d = shifted_seeds(tmp_path)
    rep = build_report(d, curves=False)
    (g,) = rep.groups
    b = g.best
    assert (b["std"] > 0).all() and b["bracketed"].all()
    assert ((b["lr_opt_lo"] <= b["lr_opt"]) & (b["lr_opt"] <= b["lr_opt_hi"])).all()
    assert (b["lr_opt_hi"] > b["lr_opt_lo"]).any()
    fits = g.fits[g.fits["kind"] == "fit"]
    assert ((fits["B_noise_lo"] <= fits["B_noise"]) & (fits["B_noise"] <= fits["B_noise_hi"])).all()
    assert ((fits["eps_max_lo"] <= fits["eps_max"]) & (fits["eps_max"] <= fits["eps_max_hi"])).all()
    surge = fits[fits["law"] == "surge"].iloc[0]
    assert surge["rank"] == 1 and surge["B_noise_lo"] < 64 < surge["B_noise_hi"]
    again = build_report(d, curves=False).groups[0]
    pd.testing.assert_frame_equal(again.best, g.best)
    pd.testing.assert_frame_equal(again.fits.drop(columns=["params", "ci", "residuals_log10"]),
                                  g.fits.drop(columns=["params", "ci", "residuals_log10"]))
    out = summarize_cli(d, "--out", tmp_path / "rep")
    assert "90% CI" in out and "B_noise 90% CI" in out
    saved = json.loads((tmp_path / "rep" / "fits.json").read_text())["groups"][0]
    assert saved["fits"][0]["ci"]["B_noise"] == pytest.approx([surge["B_noise_lo"], surge["B_noise_hi"]])
    assert "lr_opt_lo" in pd.read_csv(tmp_path / "rep" / "best_lr.csv")
    assert "parameters [90% CI]" in (tmp_path / "rep" / "report.md").read_text()


def test_law_intervals_shrink_to_the_point_on_exact_data_and_cover_the_truth_on_noisy_data():
    exact, _ = fit_laws(B, law_value("linear", {"eps_max": 0.5, "B_noise": 64.0}, B))
    lin = exact[exact["law"] == "linear"].iloc[0]
    assert lin["B_noise_lo"] == pytest.approx(64, rel=1e-3) and lin["B_noise_hi"] == pytest.approx(64, rel=1e-3)
    noisy = law_value("surge", {"eps_max": 1e-3, "B_noise": 64.0}, B) * np.exp(np.random.default_rng(0).normal(0, 0.05, len(B)))
    df, _ = fit_laws(B, noisy)
    s = df[df["law"] == "surge"].iloc[0]
    assert s["B_noise_lo"] < 64 < s["B_noise_hi"] and s["B_noise_lo"] < s["B_noise"] < s["B_noise_hi"]
    assert s["ci"]["eps_max"][0] < 1e-3 < s["ci"]["eps_max"][1]
    assert fit_laws(B, noisy)[0]["B_noise_lo"].equals(df["B_noise_lo"])
