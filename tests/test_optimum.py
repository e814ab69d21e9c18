"""Sub-grid optimum (parabola in log LR), edge-of-grid rule, flat range."""
import math

import numpy as np
import pytest

from lrsweep.analysis.optimum import find_optimum, flat_range, grid_ratio

GRID = np.geomspace(1e-3, 1.0, 7)  # factor sqrt(10) apart


def parabola(lrs, lr_opt, top=0.95, curv=0.2):
    return top - curv * (np.log10(lrs) - math.log10(lr_opt)) ** 2


@pytest.mark.parametrize("lr_opt", [0.0123, 0.037, 0.2])
def test_parabola_recovers_an_off_grid_optimum(lr_opt):
    opt = find_optimum(GRID, parabola(GRID, lr_opt), higher=True)
    assert opt.interpolated and opt.edge == ""
    assert opt.lr_opt == pytest.approx(lr_opt, rel=1e-9)
    assert opt.value_opt == pytest.approx(0.95)
    assert opt.lr_grid == GRID[np.argmin(np.abs(np.log(GRID / lr_opt)))]


def test_loss_like_metric_is_fitted_in_log_and_order_does_not_matter():
    loss = np.exp(3 * (np.log10(GRID) - math.log10(0.05)) ** 2) * 0.1  # lower is better, spans decades
    shuffle = np.array([3, 0, 6, 1, 5, 2, 4])
    opt = find_optimum(GRID[shuffle], loss[shuffle], higher=False, log_metric=True)
    assert opt.lr_opt == pytest.approx(0.05, rel=1e-9) and opt.value_opt == pytest.approx(0.1)


@pytest.mark.parametrize("lr_opt, edge", [(1e-4, "low"), (5.0, "high")])
def test_best_at_the_edge_is_flagged_with_a_range_to_add(lr_opt, edge):
    opt = find_optimum(GRID, parabola(GRID, lr_opt), higher=True)
    assert opt.edge == edge and not opt.interpolated
    r = grid_ratio(GRID) ** 3
    if edge == "low":
        assert opt.lr_opt == GRID[0]
        assert (opt.suggest_lo, opt.suggest_hi) == pytest.approx((GRID[0] / r, GRID[0]))
        assert "smallest" in opt.note
    else:
        assert opt.lr_opt == GRID[-1]
        assert (opt.suggest_lo, opt.suggest_hi) == pytest.approx((GRID[-1], GRID[-1] * r))
        assert "largest" in opt.note
    assert f"{opt.suggest_lo:.3g}" in opt.note


def test_diverged_neighbour_keeps_the_grid_best_and_says_which():
    v = parabola(GRID, 0.3)
    v[-1] = -math.inf  # LR 1 diverged: scored worst
    opt = find_optimum(GRID, v, higher=True)
    assert not opt.interpolated and opt.lr_opt == pytest.approx(GRID[-2]) and opt.edge == ""
    assert "LR 1 next to it diverged" in opt.note


def test_everything_diverged_or_single_lr():
    opt = find_optimum(GRID, np.full(7, math.inf), higher=False)
    assert math.isnan(opt.lr_opt) and "every LR" in opt.note
    one = find_optimum([0.1], [0.9], higher=True)
    assert one.lr_opt == 0.1 and one.edge == "" and not one.interpolated


def test_vertex_stays_within_half_a_grid_step_of_the_best():
    half = math.sqrt(grid_ratio(GRID))
    for left in (0.5, 0.89, 0.9):  # ever more lopsided: a cliff right of the best
        v = np.array([0.1, 0.3, left, 0.9, 0.0, 0.0, 0.0])
        opt = find_optimum(GRID, v, higher=True)
        assert GRID[3] / half * (1 - 1e-12) <= opt.lr_opt <= GRID[3]  # towards the better side
    assert opt.lr_opt == pytest.approx(GRID[3] / half)  # a tie with the left neighbour: halfway


def test_flat_range_is_relative_and_contiguous():
    acc = np.array([0.50, 0.945, 0.955, 0.96, 0.951, 0.2, 0.95])  # last one is cut off by the dip
    lo, hi, n = flat_range(GRID, acc, higher=True, tolerance=0.01)  # >= 0.9504
    assert (lo, hi, n) == (GRID[2], GRID[4], 3)
    loss = np.array([1.0, 0.21, 0.2, 0.3, math.inf, 0.2, 0.2])
    lo, hi, n = flat_range(GRID, loss, higher=False, tolerance=0.05)  # <= 0.21
    assert (lo, hi, n) == (GRID[1], GRID[2], 2)
    assert math.isnan(flat_range(GRID, np.full(7, -math.inf), True, 0.01)[0])
