"""The saturating surge law: document 003's surge (Theorem 3) and its large-batch limit (Theorem 4)
in one curve, fitted like the other laws (fits.py) in log space.

    eps(B) = eps_inf * sqrt(B * (B + B_sat)) / (B + B_noise)

Where it comes from. Theorem 2 gives the best LR of a sign-like (Adam-style) update as
eps = sum_i xi_i mu_i / (sum_i (1 - xi_i^2) H_ii + sum_ij xi_i xi_j H_ij), with
xi_i(B) ~ (mu_i/sigma_i) / sqrt(pi/(2B) + (mu_i/sigma_i)^2) (mu_i, sigma_i: mean and std of a
sample's gradient in coordinate i). Give every coordinate the same signal-to-noise ratio
|mu_i|/sigma_i: then xi_i = sign(mu_i) / sqrt(1 + B_sat/B), with B_sat = pi sigma_i^2 / (2 mu_i^2)
the batch size that separates Theorem 3 (B << B_sat) from Theorem 4 (B >> B_sat), and the formula
above follows, with eps_inf = sum_i |mu_i| / sum_ij sign(mu_i) sign(mu_j) H_ij (exactly Theorem
4's limit) and B_noise = B_sat * sum_i H_ii / sum_ij sign(mu_i) sign(mu_j) H_ij.

Its limits, which is why it is a fair rival of the surge law:
- B << B_sat: the surge law eps_max / (0.5*(sqrt(B_noise/B) + sqrt(B/B_noise))) with
  eps_max = eps_inf/2 * sqrt(B_sat/B_noise) (Theorem 3);
- B >> B_sat: the constant eps_inf > 0 (Theorem 4: "the optimal LR converges to a non-zero
  value"), where the surge law falls as 1/sqrt(B);
- B_sat -> 0: the linear law eps_inf / (1 + B_noise/B).
It peaks only when B_sat > 2 B_noise, at B_peak = B_noise B_sat / (B_sat - 2 B_noise) (about
B_noise when B_sat >> B_noise); otherwise it rises to eps_inf, which the document expects late in
training ("the stable value is more likely to exceed the local maximum").

Fitting: for (B_noise, B_sat) the best log eps_inf is a mean, so the surface is profiled on a
grid of both, then refined by damped Gauss-Newton, vectorized over rows so that the residual
bootstrap's thousand refits take a fraction of a second.
"""
from __future__ import annotations

import math

import numpy as np

from lrsweep.analysis import bootstrap

NAMES = ("eps_inf", "B_noise", "B_sat")
GRID = 40  # grid points per log batch-size axis (1600 pairs) before the Gauss-Newton refinement
ITERATIONS = 50
CHUNK = 250  # rows profiled at once: CHUNK x GRID^2 floats in memory


def value(B, eps_inf, B_noise, B_sat) -> np.ndarray:
    B = np.asarray(B, float)
    return eps_inf * np.sqrt(B * (B + B_sat)) / (B + B_noise)


def peak(B_noise: float, B_sat: float) -> float:
    """The batch size where the law peaks; inf when it rises monotonically to eps_inf."""
    return B_noise * B_sat / (B_sat - 2 * B_noise) if B_sat > 2 * B_noise else math.inf


def surge_eps_max(params: dict) -> float:
    """eps_max of the surge law this one reduces to for B << B_sat: eps_inf/2 * sqrt(B_sat/B_noise)."""
    return 0.5 * params["eps_inf"] * math.sqrt(params["B_sat"] / params["B_noise"])


def _shape(B: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """log eps - log eps_inf at log B_noise = u, log B_sat = v (arrays of one shape) -> [..., n]."""
    bn, bs = np.exp(u)[..., None], np.exp(v)[..., None]
    return 0.5 * np.log(B * (B + bs)) - np.log(B + bn)


def _grads(B: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d shape / d u and d shape / d v, [..., n]."""
    bn, bs = np.exp(u)[..., None], np.exp(v)[..., None]
    return -bn / (B + bn), 0.5 * bs / (B + bs)


def _center(x: np.ndarray) -> np.ndarray:
    return x - x.mean(-1, keepdims=True)


def profile_fit(B: np.ndarray, Y: np.ndarray, lo: tuple[float, float], hi: tuple[float, float]) -> dict[str, np.ndarray]:
    """Least squares of each row of Y (log LRs at batch sizes B) with log B_noise in [lo[0], hi[0]]
    and log B_sat in [lo[1], hi[1]]: the best grid pair, then Gauss-Newton on the centred
    residuals (log eps_inf profiled out), each row damped on its own (a flat valley, such as
    B_sat running off to the surge limit, makes the step ill-conditioned)."""
    Y = np.atleast_2d(np.asarray(Y, float))
    U, V = (g.ravel() for g in np.meshgrid(np.linspace(lo[0], hi[0], GRID), np.linspace(lo[1], hi[1], GRID)))
    Fc = _center(_shape(B, U, V))
    Yc = _center(Y)
    sff = (Fc ** 2).sum(1)
    best = np.concatenate([np.argmin(sff[None, :] - 2 * Yc[i:i + CHUNK] @ Fc.T, axis=1)
                           for i in range(0, len(Y), CHUNK)])
    u, v = U[best], V[best]
    lam = np.full(len(Y), 1e-3)

    def rss(u, v):
        return ((Yc - _center(_shape(B, u, v))) ** 2).sum(1)

    cur = rss(u, v)
    for _ in range(ITERATIONS):
        r = Yc - _center(_shape(B, u, v))
        du, dv = (_center(g) for g in _grads(B, u, v))
        a, b, c = (du * du).sum(1), (du * dv).sum(1), (dv * dv).sum(1)
        gu, gv = (du * r).sum(1), (dv * r).sum(1)
        a_, c_ = a * (1 + lam) + 1e-12, c * (1 + lam) + 1e-12
        det = a_ * c_ - b * b
        su = np.where(det > 0, (c_ * gu - b * gv) / np.where(det > 0, det, 1), 0.0)
        sv = np.where(det > 0, (a_ * gv - b * gu) / np.where(det > 0, det, 1), 0.0)
        nu, nv = np.clip(u + np.clip(su, -2, 2), lo[0], hi[0]), np.clip(v + np.clip(sv, -2, 2), lo[1], hi[1])
        new = rss(nu, nv)
        better = new < cur
        u, v, cur = np.where(better, nu, u), np.where(better, nv, v), np.where(better, new, cur)
        lam = np.where(better, lam / 3, lam * 4)
    log_eps = (Y - _shape(B, u, v)).mean(1)
    return {"eps_inf": np.exp(log_eps), "B_noise": np.exp(u), "B_sat": np.exp(v)}


def fit(B: np.ndarray, lr: np.ndarray, lo: tuple[float, float], hi: tuple[float, float],
        tol: float) -> tuple[dict, list[str]]:
    """The least-squares parameters (profile_fit, polished by scipy), and the names of those
    within `tol` of their search range's bound (log B_noise and log B_sat in [lo, hi])."""
    from scipy.optimize import least_squares  # imported here: the CLI starts without scipy

    y = np.log(lr)
    start = profile_fit(B, y, lo, hi)
    p0 = np.array([math.log(start[n][0]) for n in NAMES])
    lb, ub = [-np.inf, lo[0], lo[1]], [np.inf, hi[0], hi[1]]

    def resid(p):
        return np.log(value(B, *np.exp(p))) - y

    p = p0
    try:
        r = least_squares(resid, np.clip(p0, lb, ub), bounds=(lb, ub), method="trf")
        if np.sum(r.fun ** 2) <= np.sum(resid(p0) ** 2):
            p = r.x
    except ValueError:  # a non-finite residual on the way: keep the profile's answer
        pass
    params = dict(zip(NAMES, (float(x) for x in np.exp(p))))
    at = [n for n, x, a, b in zip(NAMES[1:], p[1:], lo, hi) if min(x - a, b - x) <= tol * (b - a)]
    return params, at


def intervals(B: np.ndarray, lr: np.ndarray, params: dict, lo, hi) -> dict[str, list[float]]:
    """Residual-bootstrap intervals of the parameters, as fits.law_intervals does for the others:
    the fitted curve plus resampled residuals (scaled for the 3 parameters spent), refitted; each
    bound is the estimate plus a percentile of the refits' shifts from the profile fit of the data."""
    y, yhat = np.log(lr), np.log(value(B, *(params[n] for n in NAMES)))
    n = len(B)
    res = (y - yhat) * math.sqrt(n / (n - len(NAMES)))
    Y = yhat + res[bootstrap.generator().integers(0, n, size=(bootstrap.RESAMPLES, n))]
    base, boot = profile_fit(B, y, lo, hi), profile_fit(B, Y, lo, hi)
    out = {}
    derived = {"eps_max": (surge_eps_max(params), lambda p: 0.5 * p["eps_inf"] * np.sqrt(p["B_sat"] / p["B_noise"]))}
    for name, (estimate, of) in {**{n: (params[n], lambda p, n=n: p[n]) for n in NAMES}, **derived}.items():
        a, b = bootstrap.interval(np.log10(of(boot)) - np.log10(of(base)[0]))
        out[name] = [estimate * 10 ** a, estimate * 10 ** b]
    return out


def judge(sat: dict, surge: dict | None, B: np.ndarray, level: float = 0.05) -> None:
    """Whether the optima show saturation, in the saturating row's note and `rankable` (a row of
    fits.fit_laws). It is ranked only when B_sat lies inside the measured batch sizes (below
    them the optima are in its linear-law limit, above them in its surge-law limit: the simpler
    law says as much) and the F test against the surge law gives p < `level`: by the residual
    error alone a third parameter often wins on noise."""
    if sat["at_bound"]:
        return  # not ranked already, and the note says which limit
    p = f_test(*[sum(x ** 2 for x in r["residuals_log10"]) for r in (surge, sat)], sat["n"]) if surge else math.nan
    b_sat, why = sat["params"]["B_sat"], ""
    if b_sat < B.min():
        why = f"B_sat = {b_sat:.3g} is below the measured batch sizes: the optima are in this law's linear-law limit"
    elif b_sat > B.max():
        why = f"B_sat = {b_sat:.3g} is above the measured batch sizes: the optima are in this law's surge-law limit"
    elif not p < level:
        why = "the F test finds no saturation beyond the surge law"
    top = peak(sat["params"]["B_noise"], b_sat)
    parts = [sat["note"], f"F test vs the surge law: p = {p:.2g}" + ("" if why else " (saturation supported)")
             if np.isfinite(p) else "",
             (f"peaks at B = {top:.3g}" if np.isfinite(top) else "no peak: rises to eps_inf") if not why else "",
             f"{why}: not ranked" if why else ""]
    sat["note"] = "; ".join(x for x in parts if x)
    sat["rankable"] = not why


def f_test(rss_surge: float, rss_sat: float, n: int) -> float:
    """p-value of the extra-sum-of-squares F test of the saturating law against the surge law
    (its B_sat -> inf limit, one parameter fewer): small when saturation explains the optima
    better than an extra parameter would by chance. Approximate, since the surge law is a limit
    of this one rather than a special value of it. nan without a residual degree of freedom."""
    from scipy.stats import f as f_dist

    dof = n - len(NAMES)
    if dof < 1 or not np.isfinite(rss_surge) or not np.isfinite(rss_sat):
        return math.nan
    if rss_sat <= 1e-30:
        return 0.0 if rss_surge > 1e-30 else 1.0
    F = max(rss_surge - rss_sat, 0.0) / (rss_sat / dof)
    return float(f_dist.sf(F, 1, dof))
