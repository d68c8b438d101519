"""Allocation optimisers against closed forms, optimality conditions and a worked HRP example."""

from __future__ import annotations

import numpy as np
import pytest

from cryptodesk.analytics.allocation import (
    hrp_weights,
    min_variance_weights,
    risk_parity_weights,
)
from cryptodesk.analytics.risk import RiskInputError

# Uncorrelated assets with volatilities 1 %, 2 %, 4 %: variances 1, 4, 16 (x 1e-4).
DIAGONAL = np.diag([1.0, 4.0, 16.0]) * 1e-4
OPTIMISERS = (min_variance_weights, risk_parity_weights, hrp_weights)


def random_covariance(seed: int, n: int = 10) -> np.ndarray:
    rng = np.random.default_rng(seed)
    factors = rng.normal(0, 0.02, size=(400, 3)) @ rng.normal(0, 1, size=(3, n))
    returns = factors + rng.normal(0, 0.01, size=(400, n)) * rng.uniform(0.5, 3.0, n)
    return np.cov(returns, rowvar=False, ddof=1)


def test_min_variance_on_uncorrelated_assets_is_inverse_variance() -> None:
    # w ∝ 1/sigma^2 = (1, 1/4, 1/16) -> (16, 4, 1) / 21
    assert min_variance_weights(DIAGONAL) == pytest.approx(np.array([16, 4, 1]) / 21, abs=1e-12)


def test_risk_parity_on_uncorrelated_assets_is_inverse_volatility() -> None:
    # w ∝ 1/sigma = (1, 1/2, 1/4) -> (4, 2, 1) / 7
    assert risk_parity_weights(DIAGONAL) == pytest.approx(np.array([4, 2, 1]) / 7, abs=1e-12)


def test_hrp_on_uncorrelated_assets_is_inverse_variance() -> None:
    # Every split gives the left half S_left / (S_left + S_right) where S is the sum
    # of inverse variances, so the product over the splits is 1/sigma_i^2 / S_all.
    cov = np.diag([1.0, 4.0, 16.0, 2.0, 8.0]) * 1e-4
    inverse = 1 / np.diag(cov)
    assert hrp_weights(cov) == pytest.approx(inverse / inverse.sum(), abs=1e-12)


def test_min_variance_two_correlated_assets_closed_form() -> None:
    # sigma1 = 0.1, sigma2 = 0.2, rho = 0.25: cov12 = 0.25 * 0.1 * 0.2 = 0.005
    # w1 = (s2^2 - cov12) / (s1^2 + s2^2 - 2 cov12) = (0.04 - 0.005) / (0.05 - 0.01) = 0.875
    cov = [[0.01, 0.005], [0.005, 0.04]]
    assert min_variance_weights(cov) == pytest.approx([0.875, 0.125], abs=1e-12)


def test_min_variance_respects_long_only() -> None:
    # rho = 0.8: cov12 = 0.016; unconstrained w1 = (0.04 - 0.016) / (0.05 - 0.032) = 4/3,
    # a short in asset 2; long-only the optimum is all in asset 1.
    cov = [[0.01, 0.016], [0.016, 0.04]]
    assert min_variance_weights(cov) == pytest.approx([1.0, 0.0], abs=1e-12)


def test_min_variance_meets_the_optimality_conditions() -> None:
    cov = random_covariance(1)
    w = min_variance_weights(cov)
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    assert (w >= 0).all()
    # KKT for min w'Sw, sum w = 1, w >= 0: (S w)_i = w'Sw where w_i > 0, >= elsewhere.
    gradient = cov @ w
    variance = w @ cov @ w
    held = w > 1e-9
    assert 0 < held.sum() < len(w)  # the example exercises both sides of the bound
    assert gradient[held] == pytest.approx(np.full(held.sum(), variance), rel=1e-10)
    assert (gradient[~held] >= variance * (1 - 1e-10)).all()


def test_risk_parity_two_assets_is_inverse_volatility_whatever_the_correlation() -> None:
    # w1 s1 (w1 s1 + rho w2 s2) = w2 s2 (w2 s2 + rho w1 s1) holds iff w1 s1 = w2 s2:
    # s = (0.1, 0.3) -> w = (0.75, 0.25) for rho = 0.6.
    cov = [[0.01, 0.6 * 0.1 * 0.3], [0.6 * 0.1 * 0.3, 0.09]]
    assert risk_parity_weights(cov) == pytest.approx([0.75, 0.25], abs=1e-12)


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_risk_parity_contributions_are_equal_on_a_random_covariance(seed: int) -> None:
    cov = random_covariance(seed)
    w = risk_parity_weights(cov)
    assert w.sum() == pytest.approx(1.0, abs=1e-14)
    assert (w > 0).all()
    contributions = w * (cov @ w)
    shares = contributions / contributions.sum()
    assert shares == pytest.approx(np.full(10, 0.1), abs=1e-10)


def test_hrp_worked_example_with_quasi_diagonal_order() -> None:
    # Assets in input order A, C, B, D. A (vol 0.1) and B (vol 0.2) correlate 0.5,
    # C and D (vol 0.2 each) correlate 0.5, nothing else correlates.
    # Distances sqrt((1 - rho)/2): A-B = C-D = 0.5, cross pairs sqrt(0.5) = 0.707, so
    # single linkage joins {A, B} and {C, D} first and quasi-diagonalisation puts
    # each pair side by side: order [A, B, C, D] (positions 0, 2, 1, 3).
    # Bisection {A, B} | {C, D}:
    #   {A, B}: inverse-variance (100, 25) -> (0.8, 0.2); cov AB = 0.5 * 0.1 * 0.2 = 0.01
    #           var = 0.64 * 0.01 + 0.04 * 0.04 + 2 * 0.8 * 0.2 * 0.01 = 0.0112
    #   {C, D}: (0.5, 0.5); cov CD = 0.02; var = 0.25 * 0.04 * 2 + 2 * 0.25 * 0.02 = 0.03
    #   alpha{A, B} = 1 - 0.0112 / 0.0412 = 0.03 / 0.0412; {C, D} gets 0.0112 / 0.0412
    # Then A | B: 1 - 0.01 / 0.05 = 0.8 to A, 0.2 to B; C | D: 0.5 each.
    #   A = 0.8 * 0.03 / 0.0412 = 0.024 / 0.0412 = 60/103, B = 0.006 / 0.0412 = 15/103,
    #   C = D = 0.5 * 0.0112 / 0.0412 = 14/103.
    vol = np.array([0.1, 0.2, 0.2, 0.2])  # A, C, B, D
    corr = np.eye(4)
    corr[0, 2] = corr[2, 0] = 0.5  # A-B
    corr[1, 3] = corr[3, 1] = 0.5  # C-D
    cov = corr * np.outer(vol, vol)
    assert hrp_weights(cov) == pytest.approx(np.array([60, 14, 15, 14]) / 103, abs=1e-12)
    # Halving the input order instead ({A, C} | {B, D}) would give
    # A = 0.8 * 0.03 / (0.008 + 0.03) = 12/19, not 60/103.


@pytest.mark.parametrize("optimiser", OPTIMISERS)
def test_weights_are_long_only_sum_to_one_and_deterministic(optimiser) -> None:
    cov = random_covariance(9, n=8)
    first = optimiser(cov)
    assert first.shape == (8,)
    assert first.sum() == pytest.approx(1.0, abs=1e-12)
    assert (first >= 0).all()
    assert np.array_equal(first, optimiser(cov))
    # The unit of the covariance (daily or annualised) does not change the weights.
    assert optimiser(cov * 365) == pytest.approx(first, abs=1e-9)


@pytest.mark.parametrize("optimiser", OPTIMISERS)
def test_a_single_asset_gets_everything(optimiser) -> None:
    assert optimiser([[0.04]]).tolist() == [1.0]


@pytest.mark.parametrize("optimiser", OPTIMISERS)
@pytest.mark.parametrize(
    ("cov", "message"),
    [
        ([[0.01, 0.0, 0.0], [0.0, 0.01, 0.0]], "square"),
        ([0.01, 0.02], "square"),
        ([[0.01, 0.002], [0.001, 0.01]], "not symmetric"),
        ([[0.01, 0.02], [0.02, 0.01]], "not positive semi-definite"),
        ([[0.01, 0.01], [0.01, 0.01]], "singular"),
        ([[0.01, np.nan], [np.nan, 0.01]], "NaN"),
    ],
)
def test_bad_covariances_are_rejected(optimiser, cov, message: str) -> None:
    with pytest.raises(RiskInputError, match=message):
        optimiser(cov)


def test_a_sample_covariance_from_too_few_days_is_singular() -> None:
    rng = np.random.default_rng(0)
    cov = np.cov(rng.normal(0, 0.02, size=(5, 8)), rowvar=False)  # rank 4 < 8
    with pytest.raises(RiskInputError, match="singular"):
        min_variance_weights(cov)
