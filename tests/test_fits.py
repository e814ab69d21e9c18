"""Scaling-law fits: optimal LRs drawn from a known law must be fitted back."""
import math

import numpy as np
import pytest

from lrsweep.analysis.fits import fit_laws, law_value, predict

B = np.array([4, 8, 16, 32, 64, 128, 256, 512, 1024], float)


def noisy(lr, sd=0.02, seed=0):
    return lr * np.exp(np.random.default_rng(seed).normal(0, sd, len(lr)))


def row(df, law):
    return df[df["law"] == law].iloc[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surge_law_with_bnoise_64_is_recovered_within_5_percent(seed):
    lr = noisy(law_value("surge", {"eps_max": 1e-3, "B_noise": 64.0}, B), seed=seed)
    df, warnings = fit_laws(B, lr)
    assert warnings == []
    best = df.iloc[0]
    assert best["law"] == "surge" and best["rank"] == 1
    assert best["B_noise"] == pytest.approx(64, rel=0.05)
    assert best["eps_max"] == pytest.approx(1e-3, rel=0.05)
    assert best["rms_log10"] < 0.02  # 2% noise is ~0.009 decades


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_law_with_bnoise_64_is_recovered_within_5_percent(seed):
    lr = noisy(law_value("linear", {"eps_max": 0.5, "B_noise": 64.0}, B), seed=seed)
    df, _ = fit_laws(B, lr)
    lin = row(df, "linear")
    assert lin["B_noise"] == pytest.approx(64, rel=0.05) and lin["eps_max"] == pytest.approx(0.5, rel=0.05)
    assert lin["rank"] == 1 or (df.iloc[0]["law"] == "power" and abs(df.iloc[0]["alpha"] - 1) < 0.05)
    assert row(df, "surge")["se_log10"] > 5 * lin["se_log10"]  # the wrong law is clearly worse


def test_free_power_recovers_alpha():
    lr = law_value("power", {"eps_max": 0.01, "B_noise": 100.0, "alpha": 0.5}, B)
    p = row(fit_laws(B, lr)[0], "power")
    assert p["alpha"] == pytest.approx(0.5, abs=0.01) and p["B_noise"] == pytest.approx(100, rel=0.02)


def test_pure_linear_scaling_ranks_the_anchored_rule_and_flags_the_bound():
    lr = 0.1 * B / B[0]  # no saturation inside the range: B_noise is not identifiable
    df, _ = fit_laws(B, lr)
    assert df.iloc[0]["law"] == "linear_rule" and df.iloc[0]["se_log10"] == pytest.approx(0, abs=1e-12)
    assert "search bound" in row(df, "linear")["note"]
    # the anchored sqrt rule departs by sqrt(B/B0) at the largest B
    assert row(df, "sqrt_rule")["residuals_log10"][-1] == pytest.approx(0.5 * math.log10(B[-1] / B[0]))


def test_too_few_points_skip_laws_and_exact_fits_are_not_made():
    # A law needs one point more than its parameters: two points fit any 2-parameter law exactly
    # and say nothing about it (these laws used to be fitted and shown unranked).
    df, warnings = fit_laws([16, 64], [0.01, 0.03])
    assert warnings == ["linear, sqrt, power, surge, saturating not fitted: 2 batch size(s) with a bracketed optimum, "
                        "need 3 (4 for power, saturating)"]
    assert set(df["law"]) == {"linear_rule", "sqrt_rule"}
    assert df[df["kind"] == "fit"]["rank"].isna().all()
    assert df[df["kind"] == "rule"]["rank"].notna().all()
    three, warnings = fit_laws([16, 64, 256], [0.01, 0.03, 0.05])
    assert warnings == ["power, saturating not fitted: 3 batch size(s) with a bracketed optimum, need 4"]
    assert set(three["law"]) == {"linear", "sqrt", "surge", "linear_rule", "sqrt_rule"}
    empty, warnings = fit_laws([], [])
    assert empty.empty and warnings[0].startswith("linear, sqrt, power, surge, saturating not fitted: 0 batch size(s)")
    assert warnings[0].endswith("no rule either (they need 2)")


def test_non_finite_points_are_ignored():
    lr = law_value("surge", {"eps_max": 1e-3, "B_noise": 64.0}, B)
    df, _ = fit_laws(np.append(B, 2048), np.append(lr, math.nan))
    assert row(df, "surge")["n"] == len(B) and row(df, "surge")["B_noise"] == pytest.approx(64, rel=1e-3)


def test_predict_uses_the_best_law_and_warns_far_outside():
    lr = law_value("surge", {"eps_max": 1e-3, "B_noise": 64.0}, B)
    df, _ = fit_laws(B, lr)
    inside = predict(df, 100, list(B))
    assert inside["law"] == "surge" and inside["warning"] == "" and inside["extrapolation"] == 1
    assert inside["lr"] == pytest.approx(law_value("surge", {"eps_max": 1e-3, "B_noise": 64.0}, 100), rel=1e-3)
    far = predict(df, 65536, list(B))
    assert far["extrapolation"] == 64 and "64x outside" in far["warning"]
    named = predict(df, 100, list(B), law="sqrt_rule")
    assert named["law"] == "sqrt_rule" and named["lr"] == pytest.approx(lr[0] * math.sqrt(100 / 4))
    with pytest.raises(ValueError, match="not fitted"):
        predict(df[df["law"] != "power"], 100, list(B), law="power")
