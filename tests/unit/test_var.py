"""Value at risk: worked examples of every convention in docs/risk.md,
published examples (historical simulation, Cornish-Fisher), agreement with
empyrical and quantstats on real Bitstamp closes, Monte Carlo against the
Gaussian portfolio VaR, properties, bad input."""

import math
import warnings
from statistics import NormalDist

import empyrical
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptodesk.analytics.risk import InsufficientData, RiskInputError, simple_returns
from cryptodesk.analytics.var import (
    MonteCarloVar,
    cornish_fisher_z,
    cvar_historical,
    horizon_returns,
    min_tail_observations,
    modified_var,
    var_cornish_fisher,
    var_historical,
    var_monte_carlo,
    var_parametric,
)
from tests.shared_data import SHARED_DATA

Z95 = -1.6448536269514722  # Phi^-1(0.05)
R4 = [0.01, -0.01, 0.02, 0.0]  # mean 0.005, std (ddof 1) 0.0129099445
TWENTY = [i / 100 for i in range(-10, 10)]  # -0.10, -0.09, ..., 0.09


@pytest.fixture(scope="module")
def btc() -> np.ndarray:
    frame = pd.read_csv(SHARED_DATA / "bitstamp_btc_eth_ltc_usd_1d.csv", index_col=0)
    return simple_returns(frame["BTC:close"].to_numpy())


# -- worked examples -----------------------------------------------------------------


def test_horizon_returns_compound_overlapping_windows() -> None:
    # 1.1 * 0.9 - 1 = -0.01; 0.9 * 1.2 - 1 = 0.08
    assert horizon_returns([0.1, -0.1, 0.2], 2) == pytest.approx([-0.01, 0.08], abs=1e-15)
    assert horizon_returns([0.1, -0.1, 0.2], 3) == pytest.approx([0.188], abs=1e-15)
    assert horizon_returns([0.1], 2).size == 0


def test_historical_var_interpolates_linearly() -> None:
    # 20 sorted returns; the 5% quantile sits at position 0.05 * 19 = 0.95:
    # -0.10 + 0.95 * (-0.09 - -0.10) = -0.0905
    assert var_historical(TWENTY, confidence=0.95) == pytest.approx(0.0905, abs=1e-15)
    # 10%: position 1.9 -> -0.09 + 0.9 * 0.01 = -0.081
    assert var_historical(TWENTY, confidence=0.90) == pytest.approx(0.081, abs=1e-15)


def test_historical_cvar_averages_returns_at_or_below_the_quantile() -> None:
    # Only -0.10 is <= -0.0905
    assert cvar_historical(TWENTY, confidence=0.95) == pytest.approx(0.10, abs=1e-15)
    # -0.10 and -0.09 are <= -0.081: mean 0.095
    assert cvar_historical(TWENTY, confidence=0.90) == pytest.approx(0.095, abs=1e-15)


def test_historical_var_over_a_two_day_horizon() -> None:
    # 2-day returns of [-.1, -.1, 0 x8, .1]: 0.9 * 0.9 - 1 = -0.19, -0.1, 0 x7, 0.1 (10 of them)
    r = [-0.1, -0.1] + [0.0] * 8 + [0.1]
    # 10% quantile at position 0.1 * 9 = 0.9: -0.19 + 0.9 * 0.09 = -0.109
    assert var_historical(r, confidence=0.9, horizon=2) == pytest.approx(0.109, abs=1e-15)
    # only -0.19 lies at or below -0.109
    assert cvar_historical(r, confidence=0.9, horizon=2) == pytest.approx(0.19, abs=1e-15)


def test_parametric_var_scales_mean_by_h_and_std_by_sqrt_h() -> None:
    std = 0.012909944487358056
    # -(0.005 + z * 0.0129099) = 0.0212349690 - 0.005
    assert var_parametric(R4) == pytest.approx(-(0.005 + Z95 * std), abs=1e-15)
    assert var_parametric(R4) == pytest.approx(0.016234969013773, abs=1e-14)
    # h = 4: -(4 * 0.005 + z * 0.0129099 * 2)
    assert var_parametric(R4, horizon=4) == pytest.approx(0.022469938027546, abs=1e-14)


def test_cornish_fisher_var_of_a_skewed_sample() -> None:
    # [0, 0, 0, .04]: mean .01, std .02, S = 2, K = 4 (see test_risk_metrics);
    # z^2 = 2.7055435, z^3 = -4.4502230:
    # z_cf = -1.6448536 + 1.7055435 * 2/6 + 0.4843379 * 4/24 - (-0.6761782) * 4/36
    #      = -1.6448536 + 0.5685145 + 0.0807230 + 0.0751309 = -0.9204853
    assert cornish_fisher_z(0.95, 2.0, 4.0) == pytest.approx(-0.9204852902312, abs=1e-12)
    # -(0.01 + -0.9204853 * 0.02) = 0.0084097
    assert var_cornish_fisher([0.0, 0.0, 0.0, 0.04]) == pytest.approx(0.0084097058, abs=1e-10)
    # With S = K = 0 the expansion is the normal quantile itself.
    assert cornish_fisher_z(0.95, 0.0, 0.0) == pytest.approx(Z95, abs=1e-15)
    # h = 9: -(9 * 0.01 + z_cf * 0.02 * 3)
    expected = -(9 * 0.01 - 0.9204852902312 * 0.02 * 3)
    assert var_cornish_fisher([0.0, 0.0, 0.0, 0.04], horizon=9) == pytest.approx(
        expected, abs=1e-12
    )


# -- published examples --------------------------------------------------------------

# DolphinDB reference, function valueAtRisk, historical method at confidence 0.9:
# https://docs.dolphindb.cn/en/Functions/v/valueAtRisk.html  -> "output: 0.009764216712"
DOLPHINDB_RETURNS = [
    0.0, -0.0023816107391389394, -0.0028351258634076834, 0.00789570628538656,
    0.0022056267475062397, -0.004515475812603498, 0.0031189325339843646,
    0.010774648811452205, 0.0030816164453268957, 0.02172541561228001,
    0.011106185767699728, -0.005369098699244845, -0.0096490689793588,
    0.0025152212699484314, 0.017822140037111668, -0.02837536728283525,
    0.018373545076599204, -0.0026401111537113003, 0.019524374522517898,
    -0.010800546314337627, 0.014073362622486131, -0.00398277532382243,
    0.008398647051501285, 0.0024056749358184904, 0.007093080335863512,
    -0.005332549248384733, -0.008471915938733665, -0.0038788486165083342,
    -0.01308504169086584, 0.00350496242864784, 0.009036118926745962,
    0.0013358223875250545, 0.0036426642608267563, 0.003974568474545581,
    -0.003944066366522669, -0.011969668605022311, 0.015116930499066374,
    0.006931427295653037, -0.0032650627551519267, 0.003407880132851648,
]  # fmt: skip


def test_published_historical_var_dolphindb() -> None:
    assert len(DOLPHINDB_RETURNS) == 40
    assert var_historical(DOLPHINDB_RETURNS, confidence=0.9) == pytest.approx(
        0.009764216712,
        abs=1e-12,  # published to 12 decimals
    )


def test_published_cornish_fisher_var_dowd() -> None:
    # Dowd, Measuring Market Risk (Wiley 2007), R package "Dowd" 0.12,
    # CornishFisherVaR(mu=3.2, sigma=5.6, skew=2, kurtosis=3, cl=0.9) = 4.145348
    # (https://rdrr.io/rforge/Dowd/man/CornishFisherVaR.html); its kurtosis is the
    # raw one, so the excess kurtosis is 3 - 3 = 0.
    assert modified_var(3.2, 5.6, 2.0, 0.0, confidence=0.9) == pytest.approx(4.145348, abs=5e-7)


@pytest.mark.parametrize(("s", "k"), [(0.0, 0.0), (-0.5, 3.0), (0.8, 10.0), (-2.0, 1.0)])
def test_published_cornish_fisher_coefficients_priips(s: float, k: float) -> None:
    # EU PRIIPs RTS, Commission Delegated Regulation (EU) 2017/653, Annex II point 12:
    # the 97.5% Cornish-Fisher quantile is -1.96 + 0.474 S - 0.0687 K + 0.146 S^2
    # (coefficients published to three figures; the tolerance covers that rounding).
    published = -1.96 + 0.474 * s - 0.0687 * k + 0.146 * s * s
    tolerance = 5e-5 + 3e-4 * abs(s) + 5e-5 * abs(k) + 2e-4 * s * s
    assert cornish_fisher_z(0.975, s, k) == pytest.approx(published, abs=tolerance)


# -- agreement with empyrical and quantstats on real data ----------------------------


def test_historical_var_agrees_with_empyrical(btc: np.ndarray) -> None:
    for c in (0.9, 0.95, 0.99):
        expected = -empyrical.value_at_risk(btc, cutoff=1 - c)
        assert var_historical(btc, confidence=c) == pytest.approx(expected, abs=1e-9)


def test_parametric_var_agrees_with_quantstats(btc: np.ndarray) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import quantstats as qs

        for c in (0.95, 0.99):
            expected = -qs.stats.value_at_risk(pd.Series(btc), confidence=c)
            assert var_parametric(btc, confidence=c) == pytest.approx(expected, abs=1e-9)


def test_real_btc_tail_is_fat(btc: np.ndarray) -> None:
    # Daily BTC returns have excess kurtosis, so at 99% the Cornish-Fisher VaR
    # lies above the Gaussian one, and the 10-day historical VaR above the 1-day.
    assert var_cornish_fisher(btc, confidence=0.99) > var_parametric(btc, confidence=0.99)
    assert var_historical(btc, confidence=0.99, horizon=10) > var_historical(btc, confidence=0.99)


# -- Monte Carlo ---------------------------------------------------------------------


def _gaussian_portfolio(rng: np.random.Generator, assets: int, days: int) -> np.ndarray:
    loadings = rng.normal(scale=0.01, size=(assets, assets // 2 + 1))
    cov = loadings @ loadings.T + np.diag(np.full(assets, 1e-4))
    return rng.multivariate_normal(np.full(assets, 4e-4), cov, size=days)


@pytest.mark.parametrize(("assets", "paths"), [(3, 400_000), (100, 100_000)])
def test_normal_monte_carlo_converges_to_the_gaussian_portfolio_var(
    assets: int, paths: int
) -> None:
    rng = np.random.default_rng(7)
    returns = _gaussian_portfolio(rng, assets, 1_000)
    weights = rng.dirichlet(np.ones(assets))
    mu = float(returns.mean(axis=0) @ weights)
    sigma = math.sqrt(float(weights @ np.cov(returns, rowvar=False, ddof=1) @ weights))
    expected = -(mu + Z95 * sigma)
    # Standard error of a sample quantile: sqrt(p (1 - p) / n) / density at the quantile.
    se = math.sqrt(0.05 * 0.95 / paths) / (NormalDist().pdf(Z95) / sigma)
    got = var_monte_carlo(returns, weights, paths=paths, seed=3)
    assert got.paths == paths
    assert got.method == "normal"
    assert abs(got.var - expected) < 4 * se
    # Gaussian CVaR: -(mu - sigma * phi(z) / 0.05)
    expected_cvar = -(mu - sigma * NormalDist().pdf(Z95) / 0.05)
    assert abs(got.cvar - expected_cvar) < 6 * se


def test_monte_carlo_is_seeded() -> None:
    returns = _gaussian_portfolio(np.random.default_rng(1), 4, 300)
    weights = [0.4, 0.3, 0.2, 0.1]
    for method in ("normal", "bootstrap"):
        a = var_monte_carlo(returns, weights, paths=5_000, method=method, seed=11, horizon=3)
        b = var_monte_carlo(returns, weights, paths=5_000, method=method, seed=11, horizon=3)
        c = var_monte_carlo(returns, weights, paths=5_000, method=method, seed=12, horizon=3)
        assert a == b
        assert a.var != c.var


def test_bootstrap_compounds_whole_historical_days() -> None:
    # Days +10% and -10%, two of them: 1.21 - 1 (p 1/4), 0.99 - 1 (1/2), 0.81 - 1 (1/4);
    # the 5% quantile falls among the -0.19 paths.
    got = var_monte_carlo([[0.1], [-0.1]], [1.0], horizon=2, method="bootstrap", paths=2_000)
    assert got.var == pytest.approx(0.19, abs=1e-15)
    assert got.cvar == pytest.approx(0.19, abs=1e-15)
    # Rows stay whole: the two assets always move opposite, so the 50/50 portfolio is flat.
    hedged = var_monte_carlo(
        [[0.1, -0.1], [-0.1, 0.1]], [0.5, 0.5], method="bootstrap", paths=1_000
    )
    assert hedged == MonteCarloVar(var=0.0, cvar=0.0, paths=1_000, method="bootstrap")


def test_normal_monte_carlo_with_a_singular_covariance() -> None:
    # Constant returns: zero covariance, every path returns 0.5 * 0.01 + 0.5 * 0.02.
    got = var_monte_carlo([[0.01, 0.02]] * 5, [0.5, 0.5], paths=1_000)
    assert got.var == pytest.approx(-0.015, abs=1e-15)
    assert got.cvar == pytest.approx(-0.015, abs=1e-15)
    # Two days: 2 days of 3 assets -> rank 1, still sampled.
    two = var_monte_carlo([[0.01, 0.02, 0.0], [0.03, -0.02, 0.01]], [1, 1, 1], paths=1_000)
    assert math.isfinite(two.var)


# -- properties ----------------------------------------------------------------------

tails = st.lists(
    st.floats(min_value=-0.5, max_value=0.5, allow_nan=False, allow_subnormal=False),
    min_size=100,
    max_size=300,
)
levels = st.floats(min_value=0.5, max_value=0.99)


@settings(max_examples=100, deadline=None)
@given(tails, levels, levels, st.integers(1, 3))
def test_var_grows_with_confidence_and_cvar_is_at_least_var(
    returns: list[float], c1: float, c2: float, horizon: int
) -> None:
    low, high = sorted((c1, c2))
    if len(returns) - horizon + 1 < min_tail_observations(high):
        return
    assert var_historical(returns, confidence=low, horizon=horizon) <= var_historical(
        returns, confidence=high, horizon=horizon
    )
    assert var_parametric(returns, confidence=low) <= var_parametric(returns, confidence=high)
    for c in (low, high):
        v = var_historical(returns, confidence=c, horizon=horizon)
        assert cvar_historical(returns, confidence=c, horizon=horizon) >= v


# -- bad input and too little data ---------------------------------------------------


def test_bad_input_raises_risk_input_error() -> None:
    with pytest.raises(RiskInputError, match=r"confidence must be inside \(0, 1\), got 1.5"):
        var_historical(TWENTY, confidence=1.5)
    with pytest.raises(RiskInputError, match="confidence"):
        var_parametric(R4, confidence=0.0)
    with pytest.raises(RiskInputError, match="horizon must be a whole number"):
        cvar_historical(TWENTY, horizon=0)
    with pytest.raises(RiskInputError, match="horizon"):
        var_cornish_fisher(R4, horizon=1.5)  # type: ignore[arg-type]
    with pytest.raises(RiskInputError, match="NaN"):
        var_historical([*TWENTY, float("nan")])
    with pytest.raises(RiskInputError, match="3 weights for 2 assets"):
        var_monte_carlo([[0.01, 0.02], [0.0, 0.01]], [0.3, 0.3, 0.4])
    with pytest.raises(RiskInputError, match="NaN"):
        var_monte_carlo([[0.01, float("nan")], [0.0, 0.01]], [0.5, 0.5])
    with pytest.raises(RiskInputError, match="method must be"):
        var_monte_carlo([[0.01], [0.02]], [1.0], method="student")  # type: ignore[arg-type]
    with pytest.raises(RiskInputError, match="paths must be"):
        var_monte_carlo([[0.01], [0.02]], [1.0], paths=0)


def test_too_little_data_raises_insufficient_data() -> None:
    assert (min_tail_observations(0.95), min_tail_observations(0.99)) == (20, 100)
    with pytest.raises(InsufficientData, match="needs at least 20 1-day returns, got 19"):
        var_historical(TWENTY[:19])
    with pytest.raises(InsufficientData, match="needs at least 20 5-day returns, got 16"):
        cvar_historical(TWENTY, horizon=5)
    with pytest.raises(InsufficientData, match="needs at least 100"):
        var_historical(TWENTY, confidence=0.99)
    with pytest.raises(InsufficientData, match="parametric VaR needs at least 2 returns"):
        var_parametric([0.01])
    with pytest.raises(InsufficientData, match="Cornish-Fisher VaR needs at least 4"):
        var_cornish_fisher([0.01, 0.02, 0.03])
    with pytest.raises(InsufficientData, match="zero volatility"):
        var_cornish_fisher([0.01] * 10)
    with pytest.raises(InsufficientData, match="needs at least 2 days"):
        var_monte_carlo([[0.01, 0.02]], [0.5, 0.5])
    with pytest.raises(InsufficientData, match="needs at least 20 paths"):
        var_monte_carlo([[0.01], [0.02]], [1.0], paths=10)
