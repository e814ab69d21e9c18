"""The figures: each plot function returns its axes on synthetic tables, and draws what a reader
needs (issue #15): readable law names and one error measure, the grid best and the flat range,
error bars only from 2 seeds, a loss range set by the smoothed curves, runs that never learned
left out, the fit's uncertainty, the range test's recommended LR and its --min-lr warning."""
import math

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection
from matplotlib.patches import Polygon

from lrsweep.analysis import fits
from lrsweep.analysis.report import build_report
from lrsweep.output import figure_data, figures
from lrsweep.plots import critical_batch, grad_norm, loss_curves, metric_vs_lr, optimal_lr, oscillation
from lrsweep.plots.base import colours, log_ticks, new_axes
from lrsweep.plots.range_test import plot_range_test
from lrsweep.rangetest import lr_ramp, ramp, suggest

from se_curves import se_sweep


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def labelled_ticks(ax, which="y") -> list[float]:
    """Major tick values inside the limits that carry a label, as drawn."""
    ax.figure.draw_without_rendering()
    axis = ax.yaxis if which == "y" else ax.xaxis
    lo, hi = sorted(ax.get_ylim() if which == "y" else ax.get_xlim())
    return [t.get_position()[1 if which == "y" else 0] for t in axis.get_ticklabels()
            if t.get_text() and lo <= t.get_position()[1 if which == "y" else 0] <= hi]


# --------------------------------------------------------------------------- optimal LR


def best_table() -> pd.DataFrame:
    """Five batch sizes: two interpolated (one with a seed interval), one kept at a cliff
    (unreliable), one at the grid's top edge, one budget-limited."""
    return pd.DataFrame({
        "batch_size": [16, 32, 64, 128, 256], "best_lr": [0.01, 0.0316, 0.0316, 0.1, 0.1],
        "lr_opt": [0.015, 0.021, 0.04, 0.1, 0.1], "lr_opt_lo": [0.012, np.nan, np.nan, np.nan, np.nan],
        "lr_opt_hi": [0.019, np.nan, np.nan, np.nan, np.nan],
        "bracketed": [True, True, True, True, False], "interpolated": [True, True, True, False, False],
        "edge": ["", "", "", "", "high"], "flat_lo": [0.01, 0.01, 0.0316, 0.1, 0.1],
        "flat_hi": [0.0316, 0.0316, 0.0316, 0.1, 0.1], "budget_limited": [False, False, False, False, True]})


def law_rows() -> list[dict]:
    """The laws as figure_data.law_curves gives them: two that draw the same curve, one not
    ranked with a parameter at its bound."""
    B = np.geomspace(8, 512, 50)
    row = lambda law, rank, se, lr, **kw: {"law": law, "name": fits.law_label(law), "rank": rank, "se": se,  # noqa: E731
                                          "kind": kw.get("kind", "fit"), "at_bound": kw.get("at_bound", False),
                                          "B": B, "lr": lr}
    return [row("sqrt_rule", 1.0, 0.160, 0.015 * np.sqrt(B / 16), kind="rule"),
            row("linear", 1.0, 0.151, 0.064 / (1 + 48 / B)),
            row("saturating", 3.0, 0.152, 0.064 / (1 + 48 / B) * (1 + 1e-5)),  # the same curve as linear
            row("linear_rule", 4.0, 0.49, 0.015 * B / 16, kind="rule"),
            row("surge", math.nan, 0.27, 0.05 * np.ones_like(B), at_bound=True)]


def test_optimal_lr_names_laws_readably_with_one_measure_and_marks_every_kind_of_point():
    ax = optimal_lr(best_table(), law_rows(), tolerance=0.01, metric="final_val_acc")
    texts = legend_texts(ax)
    joined = " ".join(texts)
    assert "square-root rule" in joined and "linear law (α = 1)" in joined
    law_texts = [t for t in texts if t.startswith(("#", "not ranked"))]
    assert len(law_texts) == 4 and not any("_" in t for t in law_texts)  # no code names (sqrt_rule)
    assert "±" not in joined and "se 0.160" in joined  # one measure, the ranking key
    same = [t for t in texts if "linear law" in t and "saturating" in t]
    assert len(same) == 1 and "same curve" in same[0]  # a law hidden under another is named with it
    drawn = [ln for ln in ax.lines if len(ln.get_xdata()) == 50]
    assert len(drawn) == 3  # sqrt rule, linear (= saturating), linear rule; the at-bound surge not drawn
    assert any("not drawn" in t and "surge law" in t for t in texts)
    grid = next(ln for ln in ax.lines if ln.get_label() == "grid best LR")
    assert list(grid.get_ydata()) == list(best_table()["best_lr"])
    flats = [c for c in ax.collections if isinstance(c, LineCollection) and len(c.get_segments()) == 2]
    assert flats, "the flat range of B=16 and 32 is drawn"
    for fragment in ("flat range: grid LRs within 1% of the best final_val_acc", "90% interval over seeds",
                     "unreliable", "largest LR on the grid", "budget-limited"):
        assert any(fragment in t for t in texts), fragment
    assert len(labelled_ticks(ax)) >= 4  # 0.01, 0.02, 0.05, 0.1 on a ~1.5-decade axis, not 0.01 and 0.1 alone


def test_optimal_lr_leaves_out_markers_for_kinds_that_are_absent():
    pts = best_table().iloc[:3].assign(lr_opt_lo=np.nan, lr_opt_hi=np.nan)
    texts = legend_texts(optimal_lr(pts, law_rows()[:1]))
    assert not any(k in " ".join(texts) for k in ("unreliable", "budget-limited", "not bracketed", "interval"))


def test_law_curves_carry_readable_names_ranks_and_se():
    fitted, _ = fits.fit_laws([16, 32, 64, 128, 256], [0.015, 0.021, 0.04, 0.05, 0.06])
    laws = figure_data.law_curves(fitted, np.array([16, 256.0]))
    assert [law["name"] for law in laws] == [fits.law_label(x) for x in fitted["law"]]
    assert [law["se"] for law in laws] == list(fitted["se_log10"])
    assert all(law["B"].min() == 8 and law["B"].max() == 512 for law in laws)


# --------------------------------------------------------------------------- metric vs LR


def cells(seeds: int) -> pd.DataFrame:
    rows = []
    for B in (16, 64):
        for lr in (0.001, 0.01, 0.1, 1.0):
            diverged = lr == 1.0
            rows.append({"batch_size": B, "lr": lr, "mean": -math.inf if diverged else 0.9 - abs(math.log10(lr) + 2) / 10,
                         "std": math.nan if diverged or seeds < 2 else 0.01, "n": seeds,
                         "n_diverged": seeds if diverged else 0, "n_failed": 0})
    return pd.DataFrame(rows)


def test_metric_vs_lr_single_seed_has_no_error_bars_and_marks_best_and_divergence_per_batch_size():
    best = pd.DataFrame({"batch_size": [16, 64], "best_lr": [0.01, 0.01]})
    ax = metric_vs_lr(cells(1), "final_val_acc", best=best)
    assert not ax.containers  # no error bars, no caps: one seed has no spread
    assert "one seed" in ax.get_ylabel()
    stars = [ln for ln in ax.lines if ln.get_marker() == "*" and len(ln.get_xdata())]
    assert sorted((float(s.get_xdata()[0]), float(s.get_ydata()[0])) for s in stars) == [(0.01, 0.9), (0.01, 0.9)]
    crosses = [ln for ln in ax.lines if ln.get_marker() == "x" and len(ln.get_xdata())]
    assert len(crosses) == 2 and {float(c.get_xdata()[0]) for c in crosses} == {1.0}
    assert len({float(c.get_ydata()[0]) for c in crosses}) == 2  # the two batch sizes on separate rows
    assert len({c.get_color() for c in crosses}) == 2  # each in its batch size's colour
    assert min(labelled_ticks(ax)) >= 0.7  # the strip under the curves gets no accuracy ticks
    assert any("diverged" in t for t in legend_texts(ax)) and "B = 16" in legend_texts(ax)


def test_metric_vs_lr_draws_std_bars_from_two_seeds():
    ax = metric_vs_lr(cells(2), "final_val_acc")
    assert ax.containers and "mean ± std" in ax.get_ylabel()


# --------------------------------------------------------------------------- loss curves, oscillation, grad norm


def test_loss_curves_range_follows_the_smoothed_loss_and_smoothed_lines_are_on_top():
    steps = np.arange(1, 201)
    curves = {}
    for B in (16, 64, 256):
        smooth = 2.3 / (1 + steps / (B / 8)) + 0.05
        raw = smooth * np.exp(0.3 * np.random.default_rng(B).standard_normal(len(steps)))
        raw[150] = 1e-4  # one easy batch
        curves[float(B)] = pd.DataFrame({"step": steps, "examples": steps * B, "train_loss": raw,
                                         "smoothed": smooth, "lr": 0.1})
    ax = loss_curves(curves, "step")
    lo, hi = ax.get_ylim()
    low_smooth = min(c["smoothed"].min() for c in curves.values())
    assert low_smooth / 3 < lo < low_smooth and hi >= 2.3  # not down to the 1e-4 outlier
    raw_lines = [ln for ln in ax.lines if ln.get_alpha() is not None and ln.get_alpha() < 0.5 and len(ln.get_xdata())]
    solid = [ln for ln in ax.lines if ln.get_label().startswith("B = ")]
    assert len(raw_lines) == 3 and len(solid) == 3
    assert min(s.get_zorder() for s in solid) > max(r.get_zorder() for r in raw_lines)
    labels = legend_texts(ax)
    assert "B = 256, lr 0.1" in labels


def luminance(c) -> float:
    r, g, b = mcolors.to_rgb(c)
    lin = [x / 12.92 if x <= 0.04045 else ((x + 0.055) / 1.055) ** 2.4 for x in (r, g, b)]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


@pytest.mark.parametrize("n", [2, 5, 8])
def test_batch_size_colours_are_distinct_and_visible_on_white(n):
    col = list(colours(range(n)).values())
    assert len(set(col)) == n
    assert max(luminance(c) for c in col) < 0.45  # viridis's light green end (B=256) was 0.64
    rgb = np.array([mcolors.to_rgb(c) for c in col])
    gaps = [np.abs(rgb[i] - rgb[j]).sum() for i in range(n) for j in range(i + 1, n)]
    assert min(gaps) > 0.25


def stats() -> pd.DataFrame:
    rows = [{"batch_size": B, "lr": lr, "oscillation": 0.1 * lr * 16 / B, "grad_norm_mean": 1 / B, "learned": True,
             "is_best": lr == 0.1} for B in (16, 64, 256) for lr in (0.01, 0.1)]
    rows.append({"batch_size": 64, "lr": 3.0, "oscillation": 40.0, "grad_norm_mean": 50.0, "learned": False,
                 "is_best": False})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("plot, column", [(oscillation, "oscillation"), (grad_norm, "grad_norm_mean")])
def test_per_batch_figures_leave_out_cells_that_never_learned(plot, column):
    ax = plot(stats())
    values = np.concatenate([np.asarray(ln.get_ydata(), float) for ln in ax.lines if len(ln.get_xdata())])
    assert stats()[column].max() not in values and values.max() < 10
    assert any("left out: 1 cell that did not learn" in t for t in legend_texts(ax))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["16", "64", "256"]
    assert len(labelled_ticks(ax)) >= 3


def test_stats_learned_needs_every_complete_run_of_the_cell_to_have_learned():
    s = pd.DataFrame({"batch_size": [16, 16, 64], "lr": [0.1, 1.0, 0.1], "oscillation": 0.1, "grad_norm_mean": 1.0,
                      "is_best": False})
    c = pd.DataFrame({"batch_size": [16, 16, 64], "lr": [0.1, 1.0, 0.1], "n": [2, 2, 2], "n_learned": [2, 1, 0],
                      "complete": [2, 2, 2]})
    assert list(figure_data.stats_learned(s, c)["learned"]) == [True, False, False]


def test_budget_limited_marks_a_best_run_that_never_reached_the_target():
    best = pd.DataFrame({"batch_size": [16, 256, 512], "best_lr": [0.01, 0.03, math.nan]})
    runs = pd.DataFrame({"batch_size": [16, 16, 256], "lr": [0.01, 0.1, 0.03], "status": "complete",
                         "steps_to_train_loss": [120, np.nan, np.nan]})
    assert list(figure_data.budget_limited(best, runs)) == [False, True, False]
    no_target = runs.assign(steps_to_train_loss=np.nan)  # nobody reached it: nothing to compare with
    assert not figure_data.budget_limited(best, no_target).any()


# --------------------------------------------------------------------------- critical batch size


def se_points() -> tuple[dict, dict]:
    B = np.array([16, 32, 64, 128, 256.0])
    S = 20 * (1 + 40 / B) * np.array([1.05, 0.96, 1.03, 0.98, 1.0])
    pts = pd.DataFrame({"batch_size": B, "S": S, "E": S * B, "S_lo": S * 0.9, "S_hi": S * 1.1})
    fit = {"target": 0.5, "B_noise": 40.0, "S_min": 20.0, "E_min": 800.0, "B_noise_lo": 30.0, "B_noise_hi": 52.0,
           "S_min_lo": 18.0, "S_min_hi": 22.0, "E_min_lo": 600.0, "E_min_hi": 1000.0}
    return {0.5: pts}, {0.5: fit}


def test_critical_batch_shows_the_fit_uncertainty_and_labels_points():
    pts, fit = se_points()
    hyp, bands = figure_data.critical_curves(fit, pts, pts[0.5]["batch_size"].to_numpy())
    ax = critical_batch(pts, fit, hyp, bands)
    assert any(isinstance(p, Polygon) for p in ax.patches)  # the band
    texts = legend_texts(ax)
    assert any("B_noise 40 [30–52]" in t for t in texts) and any("band" in t for t in texts)
    assert any("E_min, S_min" in t for t in texts)
    assert {t.get_text() for t in ax.texts} == {"B=16", "B=32", "B=64", "B=128", "B=256"}


def test_band_curves_are_the_best_fits_at_fixed_b_noise():
    """At B_noise fixed to the fitted value, the profile fit is the least-squares line itself:
    both band curves collapse onto the fitted hyperbola."""
    pts, fit = se_points()
    p = pts[0.5]
    x, y = 1 / p["E"], 1 / p["S"]
    slope = float(np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2))
    f = {**fit[0.5], "B_noise": -slope, "S_min": 1 / float(y.mean() - slope * x.mean())}
    f.update(E_min=f["B_noise"] * f["S_min"], B_noise_lo=-slope, B_noise_hi=-slope)
    hyp, bands = figure_data.critical_curves({0.5: f}, pts, p["batch_size"].to_numpy())
    for S, E in bands[0.5]:
        assert np.allclose(S, hyp[0.5][0]) and np.allclose(E, hyp[0.5][1])


# --------------------------------------------------------------------------- range test


def flat_then_drop(slope: float, noise: float = 0.0, seed: int = 0):
    """step_fn of a made-up range test: loss flat (or falling by `slope` per decade) up to LR
    1e-3, a steep descent to LR 0.3, then a blow-up."""
    rng = np.random.default_rng(seed)

    def step(lr):
        x = math.log10(lr)
        tilt = slope * (min(x, -3) + 7)
        base = 2.3 - tilt - (1.5 * min((x + 3) / 2.5, 1.0) if x > -3 else 0) + (50 * (x + 0.5) ** 2 if x > -0.5 else 0)
        return base + noise * rng.standard_normal()
    return step


def range_test(step_fn, min_lr: float):
    c = ramp(step_fn, lr_ramp(min_lr, 10.0, 100))
    return c, suggest(c)


def test_min_lr_warning_fires_when_the_valley_follows_the_start_and_not_otherwise():
    # a curve that falls gently from the first LR on: valley's descent starts wherever the ramp does
    c, low = range_test(flat_then_drop(slope=0.01), 1e-7)
    _, high = range_test(flat_then_drop(slope=0.01), 1e-4)
    assert high["valley"].lr / low["valley"].lr > 5  # the dependence is real: a rerun moves it
    assert "depends on --min-lr" in low["valley"].warning and "--min-lr" in high["valley"].warning
    assert not low["minimum/10"].warning
    # flat (noisy) until the descent: the same valley from either start, and no warning
    _, low = range_test(flat_then_drop(slope=0.0, noise=0.01), 1e-7)
    _, high = range_test(flat_then_drop(slope=0.0, noise=0.01), 1e-4)
    assert 1 / 1.5 < high["valley"].lr / low["valley"].lr < 1.5
    assert not any(s.warning for s in (*low.values(), *high.values()))
    assert suggest(c, check_min_lr=False)["valley"].warning == ""


def range_frame() -> tuple[pd.DataFrame, dict]:
    frames, marks = [], {}
    for b in (16, 64):
        c, found = range_test(flat_then_drop(slope=0.0, noise=0.02, seed=b), 1e-6)
        frames.append(c.frame().assign(batch_size=b))
        marks[b] = {n: s.lr for n, s in found.items()}
    return pd.concat(frames, ignore_index=True), marks


def test_range_test_plot_marks_the_chosen_suggestion_and_draws_raw_faint_under_smoothed():
    frame, marks = range_frame()
    ax = plot_range_test(frame, marks, chosen="valley", warnings={16: "'valley' depends on --min-lr"})
    stars = [ln for ln in ax.lines if ln.get_marker() == "*" and len(ln.get_xdata())]
    assert sorted(float(s.get_xdata()[0]) for s in stars) == sorted(m["valley"] for m in marks.values())
    others = {ln.get_marker() for ln in ax.lines if len(ln.get_xdata()) == 1 and ln.get_marker() not in ("*", "None")}
    assert {"v", "s", "^", "<", ">"} <= others  # each other suggestion its own marker
    texts = legend_texts(ax)
    assert f"B = 16: valley {marks[16]['valley']:.2g} (!)" in texts and f"B = 64: valley {marks[64]['valley']:.2g}" in texts
    assert any("depends on --min-lr" in t for t in texts) and "steepest" in texts
    raw = [ln for ln in ax.lines if ln.get_alpha() is not None and ln.get_alpha() < 0.5 and len(ln.get_xdata()) > 50]
    smooth = [ln for ln in ax.lines if ln.get_label().startswith("B = ")]
    assert len(raw) == 2 and min(s.get_zorder() for s in smooth) > max(r.get_zorder() for r in raw)
    lo, hi = ax.get_ylim()
    s = frame["smoothed_loss"]
    assert lo < s.min() and hi < s.max()  # the whole descent, not the blow-up at the end
    assert hi < 2.3 + 0.5 * (2.3 - s.min())


def test_range_test_plot_without_warnings_has_no_warning_entry():
    frame, marks = range_frame()
    texts = legend_texts(plot_range_test(frame, marks, chosen="valley"))
    assert not any("(!)" in t for t in texts)


# --------------------------------------------------------------------------- ticks, and the report's figures


def test_log_ticks_label_enough_values_on_short_log_axes():
    for lo, hi, at_least in ((0.01, 0.2, 4), (0.3, 2.0, 4), (0.5, 2.0, 5), (1e-4, 1.0, 5)):
        ax = new_axes()
        ax.plot([lo, hi], [lo, hi])
        ax.set_yscale("log")
        ax.set_ylim(lo, hi)
        log_ticks(ax, "y")
        assert len(labelled_ticks(ax)) >= at_least, (lo, hi)


def test_report_figures_draw_from_a_sweep_folder(tmp_path):
    d = se_sweep(tmp_path, S_min=20, sizes=(4, 16, 64, 256), length=1.5)
    rep = build_report(d, targets=[0.5])
    out = figures.draw(rep, rep.groups[0])
    for name in ("heatmap", "metric_vs_lr", "optimal_lr", "loss_vs_step", "grad_norm", "critical_batch"):
        assert name in out and out[name].get_title(), name
    assert any("band" in t for t in legend_texts(out["critical_batch"]))
