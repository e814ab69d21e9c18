"""crossing.py's lag-free trend is a smoother: it never leaves the range of the losses in its
window, so a spike cannot make a run "reach" a loss it never came near."""
from __future__ import annotations


import numpy as np

from lrsweep.analysis.crossing import _range_extreme, local_trend, reach_step


def test_range_extreme_matches_brute_force():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(3, 60))
    lo = rng.integers(0, 50, 40)
    hi = lo + rng.integers(1, 10, 40)
    for fn, ref in ((np.minimum, np.min), (np.maximum, np.max)):
        got = _range_extreme(v, lo, hi, fn)
        assert np.allclose(got, [[ref(row[a:b]) for a, b in zip(lo, hi)] for row in v])


def test_a_spike_does_not_make_a_flat_run_reach_a_low_target():
    """The quickstart's B = 128, LR 1.0 run (lowest loss 2.12, a step loss of 26.9 at step 19):
    the parabola next to the spike dipped to 0.46, and S for a target of 1.0 read 9.4."""
    losses = [2.32, 2.29, 2.32, 2.30, 2.27, 2.27, 2.19, 2.19, 2.81, 2.33, 2.32, 2.15, 2.31, 2.27, 2.25, 2.12,
              5.05, 12.19, 26.94, 7.40, 2.93, 2.83, 2.73, 2.78, 2.43, 6.89, 2.90, 3.35, 3.16, 3.17]
    steps = np.arange(1, len(losses) + 1)
    trend = local_trend(steps, losses)
    assert trend.min() >= min(losses) - 1e-12 and trend.max() <= max(losses) + 1e-12
    assert np.isnan(reach_step(steps, losses, 1.0))
    assert np.isnan(reach_step(steps, losses, 2.0))


def test_a_smooth_curve_still_crosses_where_it_does():
    steps = np.arange(1, 401)
    loss = 2.3 * np.exp(-steps / 60) + 0.1
    s = reach_step(steps, loss, 0.5)
    exact = -60 * np.log(0.4 / 2.3)
    assert abs(s - exact) < 0.5
