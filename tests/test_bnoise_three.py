"""Document 003's protocol and its large-B limit (issue #12 part 2): the S–E-anchored law rows,
the saturating surge law, and B_noise three ways (S–E fit, surge-law peak, B_simple at the
target) on numbers generated from known laws; report.md, fits.json (ASCII keys, int batch
sizes), the terminal and the figure."""
import json
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from typer.testing import CliRunner

from lrsweep.analysis import laws_anchored, laws_saturating, noise
from lrsweep.analysis.fits import TIE_DECADES, fit_laws, law_value
from lrsweep.analysis.laws_anchored import Anchor
from lrsweep.analysis.report import build_report
from lrsweep.analysis.saved import read_report
from lrsweep.cli import app
from lrsweep.output import figures, report_md
from lrsweep.output.files import write_report
from lrsweep.output.markdown import with_ci
from lrsweep.plots.bnoise import plot_bnoise

import se_curves
from conftest import make_config
from sweepdirs import write_sweep_dir

matplotlib.use("Agg")

B = np.array([4, 8, 16, 32, 64, 128, 256, 512, 1024], float)
WIDE = 2.0 ** np.arange(2, 15)  # 4 … 16384: far enough above B_sat to see the plateau


def noisy(lr, sd=0.02, seed=0):
    return lr * np.exp(np.random.default_rng(seed).normal(0, sd, len(lr)))


def row(df, law):
    return df[df["law"] == law].iloc[0]


# --- the anchored rows: document 003's E[eps_max] with B_noise from the S–E fit ---------------

def test_the_se_anchored_surge_predicts_the_peak_and_a_wrong_anchor_fails_the_test():
    lr = law_value("surge", {"eps_max": 1e-3, "B_noise": 64.0}, B)
    right, _ = fit_laws(B, lr, anchor=Anchor(0.5, 64.0, 55.0, 75.0, np.full(200, 64.0)))
    s = row(right, "surge_se")
    assert s["kind"] == "anchored" and math.isnan(s["rank"]) and s["k"] == 1
    assert s["eps_max"] == pytest.approx(1e-3, rel=1e-9) and s["se_log10"] < 1e-9  # the peak, predicted
    assert s["ci"]["B_noise"] == [55.0, 75.0] and s["ci"]["eps_max"][0] <= s["eps_max"] <= s["ci"]["eps_max"][1]
    assert "S–E fit at train loss 0.5" in s["note"] and "not ranked" in s["note"]
    assert right.iloc[0]["law"] == "surge"  # a prediction never takes the fitted laws' ranks
    wrong, _ = fit_laws(B, lr, anchor=Anchor(0.5, 16.0))  # the optima peak 4x further out
    w = row(wrong, "surge_se")
    assert w["B_noise"] == 16.0 and w["se_log10"] > 0.1 > 100 * row(wrong, "surge")["se_log10"]
    # eps_max is the document's plain mean of eps_opt/2·(√(B_noise/B) + √(B/B_noise)), not a fit
    want = np.mean(lr * 0.5 * (np.sqrt(16 / B) + np.sqrt(B / 16)))
    assert w["eps_max"] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("alpha, law", [(1.0, "linear_se"), (0.5, "sqrt_se")])
def test_the_sgd_forms_anchored_at_the_true_b_noise_are_exact(alpha, law):
    lr = law_value("power", {"eps_max": 0.5, "B_noise": 64.0, "alpha": alpha}, B)
    df, _ = fit_laws(B, noisy(lr, 0.0), anchor=Anchor(1.0, 64.0))
    r = row(df, law)
    assert r["eps_max"] == pytest.approx(0.5, rel=1e-9) and r["alpha"] == alpha and r["se_log10"] < 1e-9
    other = row(df, "sqrt_se" if law == "linear_se" else "linear_se")
    assert other["se_log10"] > 0.05  # the other exponent does not fit
    assert law_value(law, r["params"], 100.0) == pytest.approx(0.5 / (1 + 64 / 100) ** alpha)


def test_eps_max_interval_carries_the_b_noise_replicates():
    lr = noisy(law_value("surge", {"eps_max": 1e-3, "B_noise": 64.0}, B), 0.05)
    narrow = laws_anchored.eps_max_interval("surge_se", B, lr, Anchor(0.5, 64.0, replicates=np.full(200, 64.0)))
    wide = laws_anchored.eps_max_interval("surge_se", B, lr, Anchor(0.5, 64.0, replicates=np.geomspace(16, 256, 200)))
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_no_se_b_noise_means_no_anchored_rows_and_says_why():
    df, warnings = fit_laws(B, law_value("surge", {"eps_max": 1e-3, "B_noise": 64.0}, B), anchor=Anchor(0.5, math.nan))
    assert not df["kind"].eq("anchored").any()
    assert "surge_se, linear_se, sqrt_se not fitted: no S–E B_noise at train loss 0.5" in warnings


# --- the saturating surge law: Theorem 4's non-zero limit ------------------------------------

def test_the_saturating_law_has_the_limits_it_claims():
    p = {"eps_inf": 1e-3, "B_noise": 64.0, "B_sat": 1e6}
    small = np.array([4.0, 16.0, 64.0, 256.0])  # B << B_sat: the surge law, eps_max = eps_inf/2·√(B_sat/B_noise)
    surge = law_value("surge", {"eps_max": 0.5e-3 * math.sqrt(1e6 / 64), "B_noise": 64.0}, small)
    assert law_value("saturating", p, small) == pytest.approx(surge, rel=2e-4)
    assert law_value("saturating", p, 1e12) == pytest.approx(1e-3, rel=1e-5)  # B >> B_sat: eps_inf
    lin = law_value("saturating", {**p, "B_sat": 1e-9}, small)  # B_sat -> 0: the linear law
    assert lin == pytest.approx(law_value("linear", {"eps_max": 1e-3, "B_noise": 64.0}, small), rel=1e-9)
    peak = laws_saturating.peak(64.0, 2048.0)
    grid = np.geomspace(8, 8192, 20001)
    assert grid[np.argmax(law_value("saturating", {**p, "B_sat": 2048.0}, grid))] == pytest.approx(peak, rel=1e-3)
    assert laws_saturating.peak(64.0, 100.0) == math.inf  # B_sat <= 2 B_noise: rises monotonically


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_data_from_a_saturating_law_prefer_it(seed):
    lr = noisy(law_value("saturating", {"eps_inf": 1e-3, "B_noise": 64.0, "B_sat": 2048.0}, WIDE), seed=seed)
    df, _ = fit_laws(WIDE, lr)
    sat, surge = row(df, "saturating"), row(df, "surge")
    assert df.iloc[0]["law"] == "saturating" and sat["rank"] == 1 and surge["rank"] > 1
    assert surge["se_log10"] - sat["se_log10"] > 5 * TIE_DECADES  # not a tie: the plateau is plain
    p = sat["params"]
    assert p["eps_inf"] == pytest.approx(1e-3, rel=0.05) and p["B_noise"] == pytest.approx(64, rel=0.1)
    assert p["B_sat"] == pytest.approx(2048, rel=0.2)
    assert sat["ci"]["B_sat"][0] < p["B_sat"] < sat["ci"]["B_sat"][1]
    assert "saturation supported" in sat["note"] and sat["formula"] == "eps_inf * sqrt(B*(B + B_sat)) / (B + B_noise)"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_data_from_the_plain_surge_do_not_prefer_it(seed):
    lr = noisy(law_value("surge", {"eps_max": 1e-3, "B_noise": 64.0}, WIDE), seed=seed)
    df, _ = fit_laws(WIDE, lr)
    sat = row(df, "saturating")
    assert df.iloc[0]["law"] == "surge" and math.isnan(sat["rank"]) and "not ranked" in sat["note"]
    # B_sat runs off to the surge limit (its search bound), beyond the data, or the F test finds nothing
    assert any(why in sat["note"] for why in ("B_sat at the search bound", "above the measured batch sizes",
                                              "the F test finds no saturation"))


def test_exact_surge_data_send_b_sat_to_its_bound():
    exact, _ = fit_laws(WIDE, law_value("surge", {"eps_max": 1e-3, "B_noise": 64.0}, WIDE))
    sat = row(exact, "saturating")
    assert sat["at_bound"] == "B_sat" and math.isnan(sat["rank"]) and "the surge law is this law's large-B_sat limit" in sat["note"]


# --- B_noise three ways on a sweep folder of known B_noise (S–E), surge peak and B_simple -----

B_SE, B_PEAK, K = 40.0, 64.0, 30.0  # b_simple = K/loss at the fastest LR: 2K at loss 0.5, K at 1.0
SIZES = (4, 8, 16, 32, 64, 256)
LRS = tuple(float(x) for x in np.geomspace(3e-3, 0.3, 7))  # the optima, 0.014 to 0.03, all bracketed


def three_way_sweep(root, name="three"):
    """final_val_acc a parabola in log LR peaking on the surge law (B_noise = B_PEAK); the LR
    nearest that optimum reaches the train loss 0.5 first, at S = 20(1 + B_SE/B) (se_curves'
    curves, k grid steps away 1.5^k times slower); b_simple = K·f/loss from step 3 on (NaN before),
    f = 0.9 or 1.1 alternately by batch size (median 1), and 3x that at every other LR, which a
    wrong choice of runs would show."""
    raw = make_config(name=name, sweep={"batch_size": list(SIZES), "lr": list(LRS)},
                      **{"train.target_train_loss": se_curves.TARGET, "train.target_smoothing": 0.0,
                         "train.steps": 100, "train.eval_every": 100})
    log_lrs = np.log10(LRS)

    def run(cfg):
        b, lr = cfg.train.batch_size, cfg.effective_lr
        opt = float(law_value("surge", {"eps_max": 0.03, "B_noise": B_PEAK}, b))
        k = abs(int(np.argmin(np.abs(log_lrs - math.log10(lr)))) - int(np.argmin(np.abs(log_lrs - math.log10(opt)))))
        S_fast = float(se_curves.steps_to_target(b, 20.0, B_SE))
        steps = np.arange(1, int(math.ceil(2.5 * S_fast)) + 1)  # the slower LRs need not get there
        loss = se_curves.loss_curve(S_fast * 1.5 ** k, steps)
        f = (0.9 if SIZES.index(b) % 2 else 1.1) * (3 if k else 1)
        metrics = {"step": steps, "examples": steps * b, "lr": lr, "batch_size": b, "train_loss": loss,
                   "train_acc": 0.5, "grad_norm": 1.0, "data_time": 0.0, "compute_time": 0.0, "elapsed": 0.0,
                   "b_simple": np.where(steps >= 3, K * f / loss, np.nan)}
        acc = 0.95 - 0.05 * math.log10(lr / opt) ** 2
        return metrics, {"final_val_acc": acc, "best_val_acc": acc, "final_train_loss": float(loss[-1]),
                         "final_val_loss": 1 - acc}

    return write_sweep_dir(root, name, raw, run)


def expected_b_simple(target: float) -> list[float]:
    """Each batch size's b_simple at the fastest LR where its (unsmoothed: target_smoothing 0)
    loss first reaches `target`, from the formulas three_way_sweep writes."""
    out = []
    for i, b in enumerate(SIZES):
        S = float(se_curves.steps_to_target(b, 20.0, B_SE))
        loss = se_curves.loss_curve(S, np.arange(1, int(math.ceil(2.5 * S)) + 1))
        out.append(K * (0.9 if i % 2 else 1.1) / loss[np.nonzero(loss <= target)[0][0]])
    return out


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    root = tmp_path_factory.mktemp("three")
    d = three_way_sweep(root)
    return d, build_report(d, targets=[1.0, 0.5])


def test_the_three_estimates_are_recovered_with_their_intervals(three):
    _, rep = three
    g = rep.groups[0]
    b = g.bnoise.set_index("target")
    assert list(b.columns) == [c for c in noise.TABLE if c != "target"]
    for t in (1.0, 0.5):
        r = b.loc[t]
        assert r["B_noise"] == pytest.approx(B_SE, rel=0.02) and r["B_noise_lo"] <= r["B_noise"] <= r["B_noise_hi"]
        assert r["B_peak"] == pytest.approx(B_PEAK, rel=0.01) and math.isnan(r["B_peak_at"])  # final_val_acc: every row
        # the fastest LR's runs only (the others log 3x more), at the first step whose loss is <= t
        want = expected_b_simple(t)
        assert r["B_simple_runs"] == len(SIZES) and r["B_simple"] == pytest.approx(np.median(want), rel=1e-9)
        assert min(want) <= r["B_simple_lo"] < r["B_simple"] < r["B_simple_hi"] <= max(want)
        assert r["B_simple"] == pytest.approx(K / t, rel=0.05)  # b_simple = K·f/loss, at a loss just below t
        assert g.se[t]["B_simple"].to_numpy() == pytest.approx(want, rel=1e-9)
    surge_se = row(g.fits, "surge_se")  # anchored at the first target's S–E B_noise: 40, not the optima's 64
    assert surge_se["B_noise"] == pytest.approx(B_SE, rel=0.02) and surge_se["se_log10"] > row(g.fits, "surge")["se_log10"]


def test_the_surge_peak_belongs_to_the_target_the_optima_were_judged_at():
    crit = pd.DataFrame({"target": [1.0, 0.5], "B_noise": [30.0, 40.0], "B_noise_lo": [25.0, 35.0], "B_noise_hi": [35.0, 45.0]})
    fits = pd.DataFrame([{"law": "surge", "kind": "fit", "at_bound": "", "B_noise": 64.0, "B_noise_lo": 50.0, "B_noise_hi": 80.0}])
    out, _ = noise.compare(crit, {}, pd.DataFrame(), fits, judged_at=1.0)
    assert out["B_peak"].tolist()[0] == 64.0 and math.isnan(out["B_peak"].tolist()[1])
    assert out["B_peak_at"].tolist()[0] == 1.0 and out["B_simple_runs"].tolist() == [0, 0]
    at_bound, _ = noise.compare(crit, {}, pd.DataFrame(), fits.assign(at_bound="B_noise"), judged_at=None)
    assert at_bound["B_peak"].isna().all()  # a surge law whose B_noise sits at its bound places no peak


def test_b_simple_at_reads_the_last_value_up_to_the_smoothed_crossing():
    m = pd.DataFrame({"step": np.arange(1, 9), "train_loss": [2.0, 1.5, 1.2, 1.0, 0.8, 0.6, 0.4, 0.3],
                      "b_simple": [np.nan, np.nan, -5.0, 10.0, 12.0, np.nan, 99.0, 99.0]})
    smooth = m["train_loss"].to_numpy()
    assert noise.b_simple_at(m, smooth, 0.65) == 12.0  # crossing at step 6: the value carried from step 5
    assert noise.b_simple_at(m, smooth, 0.4) == 99.0
    assert math.isnan(noise.b_simple_at(m, smooth, 1.3))  # only a negative (no) estimate before step 3
    assert math.isnan(noise.b_simple_at(m, smooth, 0.1))  # never reached
    assert math.isnan(noise.b_simple_at(m.drop(columns="b_simple"), smooth, 0.65))  # not logged


def test_report_json_terminal_and_figure_show_the_comparison(three, tmp_path):
    d, rep = three
    write_report(rep, tmp_path / "rep", with_plots=False)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "### B_noise three ways" in md
    assert "](bnoise.png)" in report_md.render(rep, {0: {"bnoise": "bnoise.png"}})  # the figure follows its table
    r = rep.groups[0].bnoise.iloc[1]
    for col in ("B_noise", "B_peak", "B_simple"):
        assert with_ci(r[col], r[f"{col}_lo"], r[f"{col}_hi"]) in md
    assert "surge_se" in md and "saturating" in md
    record = json.loads((tmp_path / "rep" / "fits.json").read_text())

    def keys(x, path=""):
        if isinstance(x, dict):
            for k, v in x.items():
                assert k.isascii(), f"non-ASCII key {k!r} at {path}"
                if k in ("batch_size", "B0"):
                    assert isinstance(v, int), f"{path}/{k} = {v!r}"
                keys(v, f"{path}/{k}")
        elif isinstance(x, list):
            for v in x:
                keys(v, path)

    keys(record)
    g = record["groups"][0]
    assert {"B_peak", "B_simple", "B_simple_lo", "B_simple_runs"} <= set(g["critical"][0])
    assert all(f["formula"].isascii() for f in g["fits"]) and {f["law"] for f in g["fits"]} >= {"saturating", "surge_se"}
    assert any(f["params"].get("B0") == 4 for f in g["fits"])
    saved = read_report(tmp_path / "rep").table("bnoise")
    assert saved["B_simple"].tolist() == pytest.approx(rep.table("bnoise")["B_simple"].tolist())
    out = CliRunner().invoke(app, ["summarize", str(d), "--target", "1.0", "--target", "0.5", "--no-plots",
                                   "--out", str(tmp_path / "cli")])
    assert out.exit_code == 0, out.output
    table = out.output.split("B_noise three ways")[1].split("wrote")[0]
    assert with_ci(r["B_simple"], r["B_simple_lo"], r["B_simple_hi"]) in table and "surge peak" in table
    assert max(len(line) for line in table.splitlines()) <= 80


def test_plot_bnoise_returns_axes(three):
    _, rep = three
    ax = plot_bnoise(rep.groups[0].bnoise)
    assert isinstance(ax, Axes) and ax.get_yscale() == "log" and ax.get_xlim()[0] > ax.get_xlim()[1]
    labels = ax.get_legend_handles_labels()[1]
    assert sorted(labels) == ["B_simple at the target", "S–E fit", "surge-law peak (every target)"]
    assert isinstance(plot_bnoise(rep.groups[0].bnoise.iloc[:0]), Axes)  # nothing to draw: still axes
    one = rep.groups[0].bnoise.assign(B_peak=[np.nan, B_PEAK], B_peak_at=[np.nan, 0.5])  # optima judged at 0.5
    assert "surge-law peak" in plot_bnoise(one).get_legend_handles_labels()[1]
    assert "bnoise" in figures.PLOTS
