"""Scaling laws of the optimal LR vs batch size (science.md §2), fitted in log space, and ranked.

Laws (ε = optimal LR, B = batch size):
    linear   ε_max / (1 + B_noise/B)                 SGD, McCandlish et al. (α = 1)
    sqrt     ε_max / (1 + B_noise/B)^0.5             the older "Adam ≈ sqrt" fit (α = 0.5)
    power    ε_max / (1 + B_noise/B)^α               α free
    surge    ε_max / (½(√(B_noise/B) + √(B/B_noise)))  Adam-style, peaks at B = B_noise (doc 003)
Rules (no free parameter, anchored at the smallest measured B, to show the departure from them):
    linear_rule  ε(B0)·B/B0          sqrt_rule  ε(B0)·√(B/B0)

Residuals are log(ε_measured) − log(ε_law): LRs span decades, and a factor-of-2 miss matters
as much at 1e-4 as at 1. Ranking is by the residual standard error sqrt(RSS/(n − k)), which
charges each law for its parameters (an anchored rule spends one point on its anchor); a law
with as many parameters as points fits exactly and proves nothing, so it is not ranked.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd

# B_noise is searched within this factor beyond the measured batch sizes; hitting the bound
# means the data only fix a ratio (e.g. pure linear scaling fixes ε_max/B_noise, not each).
BNOISE_SPAN = 1000.0
# predict() warns beyond this factor outside the measured batch sizes.
EXTRAPOLATION_WARN = 2.0


def _linear(B, eps, bn, alpha=1.0):
    return eps / (1.0 + bn / B) ** alpha


def _surge(B, eps, bn):
    return eps / (0.5 * (np.sqrt(bn / B) + np.sqrt(B / bn)))


# name -> (function of (B, ε_max, B_noise[, α]), parameter names, start α)
LAWS: dict[str, tuple[Callable, tuple[str, ...]]] = {
    "linear": (lambda B, e, n: _linear(B, e, n, 1.0), ("eps_max", "B_noise")),
    "sqrt": (lambda B, e, n: _linear(B, e, n, 0.5), ("eps_max", "B_noise")),
    "power": (_linear, ("eps_max", "B_noise", "alpha")),
    "surge": (_surge, ("eps_max", "B_noise")),
}
RULES = {"linear_rule": 1.0, "sqrt_rule": 0.5}
FORMULAS = {
    "linear": "ε_max / (1 + B_noise/B)", "sqrt": "ε_max / (1 + B_noise/B)^0.5",
    "power": "ε_max / (1 + B_noise/B)^α", "surge": "ε_max / (½(√(B_noise/B) + √(B/B_noise)))",
    "linear_rule": "ε(B0)·B/B0", "sqrt_rule": "ε(B0)·(B/B0)^0.5",
}


def law_value(law: str, params: dict, B) -> np.ndarray:
    """The LR a fitted law (a row of fit_laws) gives at batch size(s) B."""
    B = np.asarray(B, float)
    if law in RULES:
        return params["lr0"] * (B / params["B0"]) ** RULES[law]
    fn, names = LAWS[law]
    return fn(B, *[params[n] for n in names])


def _fit_one(law: str, B: np.ndarray, lr: np.ndarray) -> tuple[dict, bool]:
    """Least squares in log space from several starts (the surface has flat valleys)."""
    # imported here: the CLI reads LAWS for its --law choices at start-up, and scipy takes ~0.3 s
    from scipy.optimize import least_squares

    fn, names = LAWS[law]
    y = np.log(lr)
    lo_bn, hi_bn = np.log(B.min() / BNOISE_SPAN), np.log(B.max() * BNOISE_SPAN)
    lo = [np.log(lr.min()) - 20, lo_bn] + ([0.05] if law == "power" else [])
    hi = [np.log(lr.max()) + 20, hi_bn] + ([4.0] if law == "power" else [])

    def resid(p):
        return np.log(fn(B, np.exp(p[0]), np.exp(p[1]), *p[2:])) - y

    best = None
    for bn0 in np.geomspace(B.min() / 10, B.max() * 10, 7):
        p0 = [y.max() + 1.0, np.log(bn0)] + ([1.0] if law == "power" else [])
        try:
            r = least_squares(resid, p0, bounds=(lo, hi), method="trf")
        except ValueError:  # a start outside the bounds or a non-finite residual
            continue
        if best is None or r.cost < best.cost:
            best = r
    p = best.x
    params = {"eps_max": float(np.exp(p[0])), "B_noise": float(np.exp(p[1]))}
    if law == "power":
        params["alpha"] = float(p[2])
    at_bound = bool(np.isclose(p[1], lo_bn, atol=1e-3) or np.isclose(p[1], hi_bn, atol=1e-3))
    return params, at_bound


def fit_laws(batch_sizes, lrs) -> tuple[pd.DataFrame, list[str]]:
    """Fit every law and rule to (B, optimal LR) points; one row per law, best first.

    Columns: law, kind (fit|rule), formula, params (dict), eps_max, B_noise, alpha, n, k,
    rms_log10 (RMS residual in decades), se_log10 (residual standard error, the ranking key),
    rank (1 = best; NaN when not rankable), note.
    """
    B, lr = np.asarray(batch_sizes, float), np.asarray(lrs, float)
    keep = np.isfinite(B) & np.isfinite(lr) & (B > 0) & (lr > 0)
    B, lr = B[keep], lr[keep]
    order = np.argsort(B)
    B, lr = B[order], lr[order]
    warnings: list[str] = []
    rows, skipped = [], []
    n = len(B)
    for law, (_, names) in LAWS.items():
        k = len(names)
        if n < k:
            skipped.append(law)
            continue
        params, at_bound = _fit_one(law, B, lr)
        note = ("B_noise at the search bound: the data fix only ε_max/B_noise^α, not each"
                if at_bound else "")
        rows.append(_row(law, "fit", params, B, lr, k, note))
    if skipped:
        warnings.append(f"{', '.join(skipped)} not fitted: {n} batch size(s) with an optimum inside the "
                        f"LR grid, need 2 (3 for power)")
    if n >= 1:
        for law in RULES:
            rows.append(_row(law, "rule", {"lr0": float(lr[0]), "B0": float(B[0])}, B, lr, 1, ""))
    df = pd.DataFrame(rows)
    if df.empty:
        return df, warnings
    # Errors equal to 1e-4 decades (0.02%) are a tie, won by the law with fewer parameters:
    # on exact data the free power law matches the linear one and must not outrank it.
    df["_key"] = df["se_log10"].round(4)
    df = df.sort_values(["_key", "k"], na_position="last").drop(columns="_key").reset_index(drop=True)
    ranked = df["se_log10"].notna()
    df.loc[ranked, "rank"] = np.arange(1, ranked.sum() + 1)
    return df, warnings


def _row(law, kind, params, B, lr, k, note) -> dict:
    res = np.log10(lr) - np.log10(law_value(law, params, B))
    n = len(B)
    rss = float(np.sum(res ** 2))
    se = math.sqrt(rss / (n - k)) if n > k else math.nan
    if n <= k and not note:
        note = f"{n} points for {k} parameters: exact fit, not ranked"
    return {"law": law, "kind": kind, "formula": FORMULAS[law], "params": params,
            "eps_max": params.get("eps_max", math.nan), "B_noise": params.get("B_noise", math.nan),
            "alpha": params.get("alpha", {"linear": 1.0, "sqrt": 0.5}.get(law, math.nan)),
            "n": n, "k": k, "rms_log10": math.sqrt(rss / n), "se_log10": se, "rank": math.nan,
            "note": note, "residuals_log10": [float(r) for r in res]}


def predict(fits: pd.DataFrame, batch_size: float, measured: list[float], law: str | None = None) -> dict:
    """The optimal LR at `batch_size` from the best-ranked law (or the named one).

    Returns {batch_size, lr, law, formula, params, extrapolation, warning}; extrapolation is the
    factor outside the measured batch sizes (1 inside them).
    """
    if fits.empty:
        raise ValueError("no fitted law")
    if law is not None:
        sel = fits[fits["law"] == law]
        if sel.empty:
            raise ValueError(f"law {law!r} was not fitted (have {', '.join(fits['law'])})")
        row = sel.iloc[0]
    else:
        ranked = fits[fits["rank"].notna()]
        row = (ranked if not ranked.empty else fits).iloc[0]
    lo, hi = min(measured), max(measured)
    factor = float(max(lo / batch_size, batch_size / hi, 1.0))
    warning = ""
    if factor > EXTRAPOLATION_WARN:
        warning = (f"B={batch_size:g} is {factor:.3g}x outside the measured batch sizes "
                   f"[{lo:g}, {hi:g}]: the law is extrapolated; measure near it before trusting")
    lr = float(law_value(row["law"], row["params"], batch_size))
    return {"batch_size": batch_size, "lr": lr, "law": row["law"], "formula": row["formula"],
            "params": dict(row["params"]), "extrapolation": factor, "warning": warning}
