"""Scaling laws of the optimal LR vs batch size (science.md §2), fitted in log space, and ranked.

Laws (eps = optimal LR, B = batch size; the parameter names are those of fits.json and the tables):
    linear      eps_max / (1 + B_noise/B)                      SGD, McCandlish et al. (alpha = 1)
    sqrt        eps_max / (1 + B_noise/B)^0.5                  the older "Adam ~ sqrt" fit (alpha = 0.5)
    power       eps_max / (1 + B_noise/B)^alpha                alpha free
    surge       eps_max / (0.5*(sqrt(B_noise/B) + sqrt(B/B_noise)))   Adam-style, peaks at B = B_noise (doc 003)
    saturating  eps_inf * sqrt(B*(B + B_sat)) / (B + B_noise)  the surge up to B_sat, then the constant
                                                               eps_inf of doc 003's Theorem 4 (laws_saturating.py)
Rules (no free parameter, anchored at the smallest measured B, to show the departure from them):
    linear_rule  eps(B0)*B/B0          sqrt_rule  eps(B0)*sqrt(B/B0)
Document 003's own estimate (laws_anchored.py; only with a critical-batch-size fit): surge_se,
linear_se, sqrt_se take B_noise from the S-E fit and eps_max as the document's mean. Their peak
is a prediction, not a fit, so they are shown beside the fitted laws and not ranked.

Residuals are log(eps_measured) - log(eps_law): LRs span decades, and a factor-of-2 miss matters
as much at 1e-4 as at 1. Ranking is by the residual standard error sqrt(RSS/(n - k)), which
charges each law for its parameters (an anchored rule spends one point on its anchor); a law
with as many parameters as points fits exactly and proves nothing, so it is not ranked.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd

from lrsweep.analysis import bootstrap, laws_anchored, laws_saturating
from lrsweep.analysis.laws_anchored import ANCHORED, Anchor
from lrsweep.analysis.optimum import interpolation_error

# B_noise is searched within this factor beyond the measured batch sizes; hitting the bound
# means the data only fix a ratio (e.g. pure linear scaling fixes ε_max/B_noise, not each).
BNOISE_SPAN = 1000.0
# predict() warns beyond this factor outside the measured batch sizes.
EXTRAPOLATION_WARN = 2.0
# Ties when no grid is known: the interpolation error on a half-decade grid (≈ 0.010 decades).
TIE_DECADES = interpolation_error(10 ** 0.5)


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
    "saturating": (laws_saturating.value, laws_saturating.NAMES),
}
RULES = {"linear_rule": 1.0, "sqrt_rule": 0.5}
# Plain ASCII, in the parameters' own names: the formula reads like the params next to it.
FORMULAS = {
    "linear": "eps_max / (1 + B_noise/B)", "sqrt": "eps_max / (1 + B_noise/B)^0.5",
    "power": "eps_max / (1 + B_noise/B)^alpha", "surge": "eps_max / (0.5*(sqrt(B_noise/B) + sqrt(B/B_noise)))",
    "saturating": "eps_inf * sqrt(B*(B + B_sat)) / (B + B_noise)",
    "linear_rule": "lr0*B/B0", "sqrt_rule": "lr0*(B/B0)^0.5",
    "surge_se": "eps_max / (0.5*(sqrt(B_noise/B) + sqrt(B/B_noise))), B_noise from S-E",
    "linear_se": "eps_max / (1 + B_noise/B), B_noise from S-E", "sqrt_se": "eps_max / (1 + B_noise/B)^0.5, B_noise from S-E",
}

# What readers see (plot legends, terminal, report): one name per law, the same everywhere.
LABELS = {
    "linear": "linear law (α = 1)", "sqrt": "square-root law (α = 0.5)", "power": "power law (α free)",
    "surge": "surge law (Adam)", "saturating": "saturating surge law",
    "linear_rule": "linear rule", "sqrt_rule": "square-root rule",
    "surge_se": "surge law, S–E B_noise", "linear_se": "linear law, S–E B_noise",
    "sqrt_se": "square-root law, S–E B_noise",
}


def law_label(law: str) -> str:
    return LABELS.get(law, law.replace("_", " "))


def law_value(law: str, params: dict, B) -> np.ndarray:
    """The LR a fitted law (a row of fit_laws) gives at batch size(s) B."""
    B = np.asarray(B, float)
    if law in RULES:
        return params["lr0"] * (B / params["B0"]) ** RULES[law]
    fn, names = LAWS[ANCHORED[law][0] if law in ANCHORED else law]
    return fn(B, *[params[n] for n in names])


# α of each law; None: free, within ALPHA_BOUNDS.
ALPHA = {"linear": 1.0, "sqrt": 0.5, "power": None, "surge": 1.0}
FIXED_ALPHA = {"linear": 1.0, "sqrt": 0.5, "linear_se": 1.0, "sqrt_se": 0.5}  # the alpha column of the SGD forms
ALPHA_BOUNDS = (0.05, 4.0)
# A parameter within this fraction of its search range from a bound sits at the bound: the data
# would have it further out, so its value is the bound's, not the data's.
BOUND_TOL = 1e-3
PROFILE_POINTS = 600  # B_noise values tried across its search range before refining


def _bounds(law: str, B: np.ndarray, lr: np.ndarray) -> tuple[list[float], list[float]]:
    """Search bounds of (log ε_max, log B_noise[, α])."""
    lo = [np.log(lr.min()) - 20, np.log(B.min() / BNOISE_SPAN)] + [ALPHA_BOUNDS[0]] * (law == "power")
    hi = [np.log(lr.max()) + 20, np.log(B.max() * BNOISE_SPAN)] + [ALPHA_BOUNDS[1]] * (law == "power")
    return lo, hi


def _feature(law: str, B: np.ndarray, log_bn: np.ndarray) -> np.ndarray:
    """f with log ε = log ε_max − α·f(B; B_noise), one row per B_noise value."""
    bn = np.exp(np.asarray(log_bn, float))[:, None]
    return np.log(0.5 * (np.sqrt(bn / B) + np.sqrt(B / bn))) if law == "surge" else np.log1p(bn / B)


def profile_fit(law: str, B: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]:
    """Least squares of each row of Y (log LRs at batch sizes B) by profiling: B_noise on a grid
    across its search range (the surface has flat valleys, so a global look is safer than local
    starts), refined by a parabola through the best grid point and its neighbours; ε_max and α in
    closed form. Vectorized over rows: the residual bootstrap refits a thousand rows at once."""
    Y = np.atleast_2d(Y)
    lo, hi = _bounds(law, B, np.exp(Y[0]))
    grid = np.linspace(lo[1], hi[1], PROFILE_POINTS)
    F = _feature(law, B, grid)
    Yc, Fc = Y - Y.mean(1, keepdims=True), F - F.mean(1, keepdims=True)
    syy, syf, sff = (Yc ** 2).sum(1)[:, None], Yc @ Fc.T, (Fc ** 2).sum(1)[None, :]
    alpha = (np.clip(-syf / np.maximum(sff, 1e-300), *ALPHA_BOUNDS) if ALPHA[law] is None
             else np.full(syf.shape, ALPHA[law]))
    rss = syy + 2 * alpha * syf + alpha ** 2 * sff
    j = np.clip(np.argmin(rss, axis=1), 1, PROFILE_POINTS - 2)
    r = np.arange(len(Y))
    r0, r1, r2 = rss[r, j - 1], rss[r, j], rss[r, j + 1]
    curv = r0 - 2 * r1 + r2
    step = np.where(curv > 0, 0.5 * (r0 - r2) / np.where(curv > 0, curv, 1.0), 0.0)
    log_bn = np.where(rss.argmin(1) == j, grid[j] + np.clip(step, -1, 1) * (grid[1] - grid[0]), grid[rss.argmin(1)])
    f = _feature(law, B, log_bn)
    fc = f - f.mean(1, keepdims=True)
    a = (np.clip(-(Yc * fc).sum(1) / np.maximum((fc ** 2).sum(1), 1e-300), *ALPHA_BOUNDS)
         if ALPHA[law] is None else np.full(len(Y), ALPHA[law]))
    log_eps = Y.mean(1) + a * f.mean(1)
    return {"eps_max": np.exp(log_eps), "B_noise": np.exp(log_bn), "alpha": a}


def _fit_one(law: str, B: np.ndarray, lr: np.ndarray) -> tuple[dict, list[str]]:
    """Least squares in log space: profile_fit's global answer, polished by scipy. Returns the
    parameters and the names of those at a bound of their search range."""
    # imported here: the CLI reads LAWS for its --law choices at start-up, and scipy takes ~0.3 s
    from scipy.optimize import least_squares

    fn = LAWS[law][0]
    y = np.log(lr)
    lo, hi = _bounds(law, B, lr)
    start = profile_fit(law, B, y)
    p0 = np.clip([np.log(start["eps_max"][0]), np.log(start["B_noise"][0])] + [start["alpha"][0]] * (law == "power"),
                 lo, hi)

    def resid(p):
        return np.log(fn(B, np.exp(p[0]), np.exp(p[1]), *p[2:])) - y

    p = p0
    try:
        r = least_squares(resid, p0, bounds=(lo, hi), method="trf")
        if np.sum(r.fun ** 2) <= np.sum(resid(p0) ** 2):
            p = r.x
    except ValueError:  # a non-finite residual on the way: keep the profile's answer
        pass
    params = {"eps_max": float(np.exp(p[0])), "B_noise": float(np.exp(p[1]))}
    if law == "power":
        params["alpha"] = float(p[2])
    at = [n for n, v, a, b in zip(["eps_max", "B_noise", "alpha"], p, lo, hi) if min(v - a, b - v) <= BOUND_TOL * (b - a)]
    return params, at


def law_intervals(law: str, B: np.ndarray, lr: np.ndarray, params: dict) -> dict[str, list[float]]:
    """Bootstrap intervals of a fitted law's parameters, by resampling its residuals: the fitted
    curve plus residuals drawn with replacement (scaled by sqrt(n/(n − k)) for the parameters
    spent), refitted. What the interval says: how far the parameters could move if the optima
    scattered about the law as these do. Points on the law exactly give a zero-width interval.
    Each bound is the estimate plus a percentile of the refits' shifts from the profile fit of the
    data itself, so the polish of the estimate does not push it outside its own interval."""
    names = LAWS[law][1]
    y, yhat = np.log(lr), np.log(law_value(law, params, B))
    n, k = len(B), len(names)
    res = (y - yhat) * math.sqrt(n / (n - k))
    Y = yhat + res[bootstrap.generator().integers(0, n, size=(bootstrap.RESAMPLES, n))]
    base, boot = profile_fit(law, B, y), profile_fit(law, B, Y)
    out = {}
    for name in names:
        log = name != "alpha"
        shift = (np.log10(boot[name]) - math.log10(base[name][0])) if log else boot[name] - base[name][0]
        lo, hi = bootstrap.interval(shift)
        out[name] = ([params[name] * 10 ** lo, params[name] * 10 ** hi] if log else [params[name] + lo, params[name] + hi])
    return out


def _needs(skipped: list[str]) -> str:
    """How many points the skipped laws need: 3, or 4 for those with 3 parameters."""
    more = [law for law in skipped if len(LAWS[law][1]) > 2]
    return f"need {len(LAWS[more[0]][1]) + 1}" if more == skipped else (
        f"need 3 (4 for {', '.join(more)})" if more else "need 3")


def _fit(law: str, B: np.ndarray, lr: np.ndarray) -> tuple[dict, list[str], dict]:
    """One law's parameters, those at a search bound, and their intervals."""
    if law != "saturating":
        params, at = _fit_one(law, B, lr)
        return params, at, law_intervals(law, B, lr, params)
    lo, hi = _bounds("surge", B, lr)
    box = ((lo[1], lo[1]), (hi[1], hi[1]))  # B_noise and B_sat over the same span of batch sizes
    params, at = laws_saturating.fit(B, lr, *box, BOUND_TOL)
    return params, at, laws_saturating.intervals(B, lr, params, *box)


def _bound_note(law: str, name: str, params: dict) -> str:
    if name == "B_sat":
        return ("B_sat at the search bound: no saturation within the measured batch sizes (the surge law is "
                "this law's large-B_sat limit)" if params["B_sat"] > params["B_noise"] else
                "B_sat at the search bound: the data want the linear law (this law's B_sat -> 0 limit)")
    if name == "B_noise":
        return "B_noise at the search bound: the data fix only " + (
            "a ratio of the parameters, not each" if law == "saturating" else "eps_max/B_noise^alpha, not each")
    return f"{name} at its bound {params[name]:.3g}"


def fit_laws(batch_sizes, lrs, tie: float = TIE_DECADES, anchor: Anchor | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Fit every law and rule to (B, optimal LR) points; one row per law, best first.

    Give only bracketed optima (a grid neighbour on each side): an optimum at the grid's edge, or the
    only LR tried, is a bound, not a measurement. A law is fitted from k + 1 points (k parameters
    and one to test it), a rule from 2. A law with a parameter at its search bound is not ranked.
    Laws whose residual standard errors differ by less than `tie` decades (the interpolation
    error of the optima, optimum.interpolation_error) are tied: they share a rank, the one with
    fewer parameters listed first. The saturating law is ranked only when the optima show
    saturation (laws_saturating.judge: B_sat inside the measured batch sizes, and the F test
    against the surge law significant). `anchor`: the S-E fit's B_noise at a target, for document
    003's own estimate (laws_anchored: surge_se, linear_se, sqrt_se, kind "anchored", not ranked).

    Columns: law, label (law_label), kind (fit|rule|anchored), formula, params (dict), eps_max,
    B_noise, rankable, alpha, n, k, rms_log10 (RMS residual in decades), se_log10 (residual
    standard error, the ranking key), rank (1 = best; NaN when not ranked), at_bound (parameter
    names), ci ({name: [lo, hi]}, 90%) with eps_max_lo/hi, B_noise_lo/hi, alpha_lo/hi, note.
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
        if n < k + 1:
            skipped.append(law)
            continue
        params, at, ci = _fit(law, B, lr)
        note = "; ".join(_bound_note(law, a, params) for a in at)
        rows.append(_row(law, "fit", params, B, lr, k, note + ": not ranked" * bool(note), at, ci))
    if skipped:
        warnings.append(f"{', '.join(skipped)} not fitted: {n} batch size(s) with a bracketed optimum, "
                        f"{_needs(skipped)}" + ("; no rule either (they need 2)" if n < 2 else ""))
    found = {r["law"]: r for r in rows}
    if "saturating" in found:  # ranked only when the optima show saturation
        laws_saturating.judge(found["saturating"], found.get("surge"), B)
    if n >= 2:
        for law in RULES:
            rows.append(_row(law, "rule", {"lr0": float(lr[0]), "B0": _size(B[0])}, B, lr, 1, "", [], {}))
    if anchor is not None and n >= 2:
        if anchor.usable:
            fitted = {r["law"]: r for r in rows}
            for law, params, ci in laws_anchored.rows(B, lr, anchor):
                base = fitted.get(ANCHORED[law][0])
                note = (f"B_noise from the S–E fit at train loss {anchor.target:g}, not fitted to the optima: a "
                        "prediction, not ranked" + (f"; the fitted {law_label(base['law'])}: residual std {base['se_log10']:.2g}"
                                                    if base is not None else ""))
                rows.append(_row(law, "anchored", params, B, lr, 1, note, [], ci))
        else:
            warnings.append(f"surge_se, linear_se, sqrt_se not fitted: no S–E B_noise at train loss {anchor.target:g}")
    df = pd.DataFrame(rows)
    return (_rank(df, tie) if not df.empty else df), warnings


def _size(B: float) -> int | float:
    """A batch size as JSON should carry it: an int when it is one."""
    return int(B) if float(B).is_integer() else float(B)


def _rank(df: pd.DataFrame, tie: float) -> pd.DataFrame:
    """Ranked laws first: by residual error, those within `tie` of a better one sharing its rank
    and listed by their number of parameters; then the unranked ones."""
    ok = df["se_log10"].notna() & (df["at_bound"].str.len() == 0) & df["rankable"]
    ranked = df[ok].sort_values(["se_log10", "k"]).reset_index(drop=True)
    order, rank, i = [], [], 0
    while i < len(ranked):
        lead = ranked.loc[i, "se_log10"]
        j = i
        while j < len(ranked) and ranked.loc[j, "se_log10"] - lead < tie:
            j += 1
        tied = ranked.iloc[i:j].sort_values(["k", "se_log10"], kind="stable")
        if len(tied) > 1:
            for t in tied.index:
                others = ", ".join(x for x in tied["law"] if x != ranked.loc[t, "law"])
                ranked.loc[t, "note"] = "; ".join(filter(None, [ranked.loc[t, "note"], (
                    f"tied with {others} (within {tie:.2g} decades)")]))
        order += list(tied.index)
        rank += [i + 1] * len(tied)
        i = j
    ranked = ranked.loc[order].assign(rank=[float(r) for r in rank])
    rest = df[~ok].sort_values(["se_log10", "k"], na_position="last")
    return pd.concat([ranked, rest], ignore_index=True)


def _row(law, kind, params, B, lr, k, note, at_bound, ci) -> dict:
    res = np.log10(lr) - np.log10(law_value(law, params, B))
    n = len(B)
    rss = float(np.sum(res ** 2))
    se = math.sqrt(rss / (n - k)) if n > k else math.nan
    nan = [math.nan, math.nan]
    return {"law": law, "label": law_label(law), "kind": kind, "formula": FORMULAS[law], "params": params,
            # the saturating law's eps_max: that of the surge law it reduces to below B_sat (Theorem 3)
            "eps_max": params.get("eps_max", laws_saturating.surge_eps_max(params) if law == "saturating" else math.nan),
            "B_noise": params.get("B_noise", math.nan), "rankable": kind != "anchored",
            "alpha": params.get("alpha", FIXED_ALPHA.get(law, math.nan)),
            "n": n, "k": k, "rms_log10": math.sqrt(rss / n), "se_log10": se, "rank": math.nan,
            "at_bound": ", ".join(at_bound), "ci": ci,
            **{f"{p}_{end}": ci.get(p, nan)[i] for p in ("eps_max", "B_noise", "alpha") for i, end in ((0, "lo"), (1, "hi"))},
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
