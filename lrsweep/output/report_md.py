"""report.md: the report of one `lrsweep summarize`, readable on its own; every number in it
is also in best_lr.csv / fits.json."""
from __future__ import annotations

import numpy as np
import pandas as pd

from lrsweep.analysis import bootstrap, critical, noise
from lrsweep.analysis.report import Group, Report
from lrsweep.output import markdown

CAPTIONS = {
    "heatmap": "The metric in every cell (log LR across, batch size down); black frame: best LR per batch size; hatched: no value (div = diverged or stalled, fail = failed, — = target never reached); dotted: not run yet.",
    "metric_vs_lr": "The metric against LR, one line per batch size; star = each batch size's best LR; ±1 std bars only where a cell has 2+ seeds; cells without a value in the strip underneath.",
    "optimal_lr": "Optimal LR against batch size, log-log: the interpolated optimum (dot, 90% interval over seeds), the grid best (open square), the flat range (grey bar), marks for unreliable, not-bracketed and budget-limited optima, and every fitted law with its residual standard error se; solid = best ranked.",
    "loss_vs_step": "Train loss of each batch size's best run against optimizer steps: faint = per step, solid = the smoothed loss targets are judged on.",
    "loss_vs_examples": "The same runs against examples seen: large batches need fewer steps but more examples.",
    "oscillation": "Per-step loss oscillation against batch size (small batches wobble more); cells where a run did not learn are left out.",
    "grad_norm": "Mean gradient norm against batch size (it shrinks as B grows); cells where a run did not learn are left out.",
    "critical_batch": "Steps S against examples E to reach each target, with the fitted hyperbola (S/S_min − 1)(E/E_min − 1) = 1, a band for B_noise's 90% interval and a cross at (E_min, S_min).",
    "bnoise": "B_noise three ways against the train-loss target (high loss left: training goes left to right), each with its 90% interval: the S–E fit, B_simple where the runs reach the target, and the peak of the fitted surge law.",
}


def render(report: Report, images: dict[int, dict[str, str]]) -> str:
    """report.md's text. `images`: group index -> figure name -> file name (none: no figures)."""
    r = report
    n = r.runs["status"].value_counts()
    missing = sum(int(g.cells["missing"].sum()) for g in r.groups)
    L = [f"# lrsweep report: {', '.join(r.sweeps)}", "",
         f"Best LR judged by **{r.metric}** ({'higher' if r.higher else 'lower'} is better), seeds averaged; "
         f"diverged and failed runs count as the worst value. Runs: {n.get('complete', 0)} complete, "
         f"{n.get('diverged', 0)} diverged, {n.get('stalled', 0)} stalled, {n.get('failed', 0)} failed, {missing} not run yet.", ""]
    if r.warnings:
        L += ["Warnings:", ""] + [f"- {w}" for w in r.warnings] + [""]
    for i, g in enumerate(r.groups):
        L += _group(r, g, images.get(i, {}))
    return "\n".join(L)


def _group(r: Report, g: Group, img: dict[str, str]) -> list[str]:
    L = [f"## {g.label}", ""] if g.label else []
    L += ["### Best LR per batch size", "", markdown.table(_best_table(r, g.best)), "",
          "*optimum*: parabola in log LR through the best grid LR and its neighbours; it stays "
          "between them. It is *bracketed* when the best grid LR has a neighbour on each side, and "
          "only bracketed optima are fitted; next to a neighbour that did not learn (diverged, "
          "failed, or stayed at chance) the grid best is kept, not interpolated across the cliff, "
          "and the note says it is unreliable. *90% CI*: bootstrap over seeds (from 2 seeds; "
          f"{bootstrap.RESAMPLES} resamples): where the optimum would fall if the sweep were rerun with "
          "other seeds. ± is the std over seeds (from 2 seeds). "
          "*linear/sqrt rule*: the LR those rules give when anchored at the smallest batch size "
          "with a bracketed optimum; compare with the measured optimum.", ""]
    L += _img(img, "heatmap") + _img(img, "metric_vs_lr")
    L += ["### Scaling-law fits (optimal LR vs batch size)", ""]
    if g.fits.empty:
        L += [f"No fit: {len(g.measured_sizes)} batch size(s) with a bracketed optimum; a rule needs 2, "
              "a law 3 (4 for power).", ""]
    else:
        f = g.fits
        L += [markdown.table(pd.DataFrame({
                  "rank": f["rank"], "law": f["law"], "formula": f["formula"],
                  "parameters [90% CI]": [markdown.params(p, ci=c) for p, c in zip(f["params"], f["ci"])],
                  "rms error (decades)": f["rms_log10"], "residual std (decades)": f["se_log10"], "note": f["note"]})), "",
              f"Fitted to the {len(g.measured_sizes)} bracketed optima. Residuals are in log10(LR) (0.1 decade ≈ 26%). "
              "Ranked by residual standard error sqrt(RSS/(n − k)), which charges each law for its k "
              f"parameters; errors within {g.tie:.2g} decades (the interpolation error of an optimum on this "
              "grid) are a tie: tied laws share a rank, the one with fewer parameters first. A law with a "
              "parameter at its search bound is not ranked. [90% CI]: residual bootstrap "
              f"({bootstrap.RESAMPLES} refits to the fitted curve plus resampled residuals): how far a "
              "parameter could move if the optima scattered about the law as these do.", ""]
        L += _law_notes(f)
    L += _img(img, "optimal_lr")
    if not g.critical.empty:
        c = g.critical
        L += ["### Critical batch size", "",
              markdown.table(pd.DataFrame({"train-loss target": c["target"], "batch sizes": c["n"], **{
                  f"{name} [{bootstrap.LEVEL:.0%} CI]": [markdown.with_ci(*v) for v in zip(c[k], c[f"{k}_lo"], c[f"{k}_hi"])]
                  for k, name in (("B_noise", "B_noise ≈ B_crit"), ("S_min", "S_min (steps)"), ("E_min", "E_min (examples)"))},
                  "R²": c["r2"], "note": c["note"]})), "",
              "S and E: steps and examples at which the train loss first reaches the target, read without "
              "lag from a two-sided local fit of the logged loss (not the trainer's causal EMA, which lags "
              "by several steps), at the LR that gets there fastest for each batch size; fitted as "
              f"1/S = −B_noise/E + 1/S_min. [CI]: bootstrap ({critical.N_BOOT} replicates) over each run's loss noise "
              "(its residuals about the fit, resampled) and over seeds, the fastest LR and the line "
              "chosen again each time; it does not cover a loss curve the fit cannot follow.", ""]
        L += _img(img, "critical_batch")
        L += _bnoise(r, g) + _img(img, "bnoise")
    for name in ("loss_vs_step", "loss_vs_examples", "oscillation", "grad_norm"):
        L += _img(img, name)
    partial = g.cells[(g.cells[["diverged", "stalled", "failed", "missing"]].sum(axis=1) > 0)]
    if len(partial):
        L += ["### Cells with diverged, failed or missing runs", "",
              markdown.table(partial[["batch_size", "lr", "expected", "complete", "diverged", "stalled", "failed", "missing"]]), ""]
    if g.warnings:
        L += ["Notes:", ""] + [f"- {w}" for w in g.warnings] + [""]
    return L


def _law_notes(f: pd.DataFrame) -> list[str]:
    """What the saturating and the anchored rows are, when the table has them."""
    out = []
    if (f["law"] == "saturating").any():
        out.append("*saturating*: the surge law up to B_sat and Theorem 4 of Li et al. 2024 beyond it (for B far above "
                   "B_sat the Adam optimum tends to the constant eps_inf; the surge law is its B_sat → ∞ limit, the "
                   "linear law its B_sat → 0 limit). It is ranked only when the optima show saturation: B_sat inside the "
                   "measured batch sizes and the F test against the surge law at p < 0.05 (its note gives p); a "
                   "small p says the optima level off at large B rather than keep falling.")
    anchored = f.loc[f["kind"] == "anchored", "law"]
    if len(anchored):
        out.append(f"*{', '.join(anchored)}*: the surge paper's own estimate (Li et al. 2024): B_noise from the S–E fit below (not "
                   "fitted to the optima), eps_max = the mean of eps_opt·½(√(B_noise/B) + √(B/B_noise)) (SGD forms: "
                   "eps_opt·(1 + B_noise/B)^α, α = 1 and 0.5). Their peak is a prediction the optima test: compare "
                   "their residual std with the same law fitted freely. Not ranked.")
    return [" ".join(out), ""] if out else []


def _bnoise(r: Report, g: Group) -> list[str]:
    """The three B_noise estimates per target, side by side (analysis/noise.py)."""
    b = g.bnoise
    if b.empty or not noise.has_estimates(b):
        return []
    ci = f"[{bootstrap.LEVEL:.0%} CI]"
    at = b["B_peak_at"].dropna()
    judged = (f"the optima were judged by the loss drop after train loss {at.iloc[0]:g}, so the peak belongs to "
              "that target only" if len(at) else
              f"the optima were judged by {r.metric}, a property of the whole run, not of one target: the same "
              "peak is shown for every target")
    if not b["B_peak"].notna().any():
        judged = ("none here: the surge law was not fitted, or its B_noise sits at its search bound (the optima "
                  "do not peak within the measured batch sizes)")
    runs = b["B_simple_runs"].fillna(0).astype(int)
    return ["### B_noise three ways", "", markdown.table(pd.DataFrame({
                "train-loss target": b["target"],
                f"S–E fit {ci}": [markdown.with_ci(*v) for v in zip(b["B_noise"], b["B_noise_lo"], b["B_noise_hi"])],
                f"surge-law peak {ci}": [markdown.with_ci(*v) for v in zip(b["B_peak"], b["B_peak_lo"], b["B_peak_hi"])],
                f"B_simple at the target {ci}": [markdown.with_ci(*v) for v in zip(b["B_simple"], b["B_simple_lo"], b["B_simple_hi"])],
                "runs (B_simple)": runs})), "",
            "Document 003 says these agree (B_peak = B_noise ≈ B_crit) and grow as the loss falls. *S–E fit*: the "
            "B_noise of the table above. *Surge-law peak*: the B_noise of the fitted surge law, where its optimal "
            f"LR peaks; {judged}. *B_simple at the target*: the gradient noise scale tr(Σ)/|G|² the trainer logs "
            "with `train.noise_scale` (metrics.csv's `b_simple`, itself an EMA over the last measurements), read "
            "where the smoothed train loss (`train.target_smoothing`) first reaches the target, in the runs the "
            "S–E fit uses (each batch size's fastest LR, all seeds); the median over those runs, its interval a "
            f"bootstrap over them ({bootstrap.RESAMPLES} resamples, from 2 runs). B_simple ignores the Hessian "
            "(B_noise = tr(HΣ)/GᵀHG), so a constant factor between it and the others is expected; the trend with "
            "the target is the comparison." + ("" if runs.sum() else
                                               " No run logged `b_simple`: set `train.noise_scale` to measure it."), ""]


def _best_table(r: Report, b: pd.DataFrame) -> pd.DataFrame:
    """The best-LR table as people read it: mean ± std (n) in one column (± only from 2 seeds),
    the optimum's interval over seeds and the flat range as spans."""
    return pd.DataFrame({
        "B": b["batch_size"], "best LR (grid)": b["best_lr"], "optimum (interp.)": b["lr_opt"],
        **({"90% CI": [f"{lo:.3g} – {hi:.3g}" if np.isfinite(lo) else "" for lo, hi in zip(b["lr_opt_lo"], b["lr_opt_hi"])]}
           if b["lr_opt_lo"].notna().any() else {}),
        r.metric: [markdown.MISSING if not np.isfinite(m) else f"{m:.4g} ± {s:.2g} (n={k})" if k >= 2 and np.isfinite(s)
                   else f"{m:.4g} (n={k})" for m, s, k in zip(b[r.metric], b["std"], b["n_seeds"])],
        f"within {r.tolerance:g} of best": [f"{lo:.3g} – {hi:.3g}" if np.isfinite(lo) else markdown.MISSING
                                            for lo, hi in zip(b["flat_lo"], b["flat_hi"])],
        # no rule without 2 bracketed optima: then no column of — (the fits section says why)
        **({"linear rule": b["linear_rule"], "sqrt rule": b["sqrt_rule"]} if b["linear_rule"].notna().any() else {}),
        "note": b["note"].where(b["note"] != "", ""),
    })


def _img(images: dict, name: str) -> list[str]:
    return [f"![{name}]({images[name]})", "", f"*{CAPTIONS[name]}*", ""] if name in images else []
