"""Portfolio risk: returns, Euler component VaR, concentration, betas, stress tests.

The worked example uses two assets over four days:

    A = [0.03, -0.01, 0.02, 0.00]   mean 0.01, deviations [0.02, -0.02, 0.01, -0.01]
    B = [0.00, 0.02, -0.02, 0.00]   mean 0,    deviations [0, 0.02, -0.02, 0]

    var A  = (4e-4 + 4e-4 + 1e-4 + 1e-4) / 3 = 0.001 / 3
    var B  = (4e-4 + 4e-4) / 3              = 0.0008 / 3
    cov AB = (0 - 4e-4 - 2e-4 + 0) / 3      = -0.0002

With w = (0.6, 0.4):

    Sigma w = (0.6 * 0.001/3 - 0.4 * 0.0002, -0.6 * 0.0002 + 0.4 * 0.0008/3)
            = (0.00012, -0.04/3000)
    w' Sigma w = 0.6 * 0.00012 - 0.4 * 0.04/3000 = 0.000072 - 0.016/3000 = 1/15000
    mu_p = 0.6 * 0.01 + 0.4 * 0 = 0.006
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cryptodesk.analytics.portfolio_risk import (
    betas,
    component_var,
    concentration,
    portfolio_returns,
    stress_test,
)
from cryptodesk.analytics.risk import InsufficientData, RiskInputError
from cryptodesk.analytics.var import var_parametric

R = np.array([[0.03, 0.00], [-0.01, 0.02], [0.02, -0.02], [0.00, 0.00]])
W = np.array([0.6, 0.4])
Z95 = -1.6448536269514722  # Phi^-1(0.05)
SIGMA_P = math.sqrt(1 / 15000)


def parametric_var(returns: np.ndarray, confidence: float, horizon: int) -> float:
    """The project's parametric VaR of one series, written out independently."""
    from scipy.stats import norm

    z = norm.ppf(1 - confidence)
    return float(-(horizon * returns.mean() + z * returns.std(ddof=1) * math.sqrt(horizon)))


def test_portfolio_returns_are_daily_rebalanced_constant_weights() -> None:
    # Day 1: 0.6 * 0.03 + 0.4 * 0 = 0.018; day 2: -0.006 + 0.008 = 0.002;
    # day 3: 0.012 - 0.008 = 0.004; day 4: 0.
    assert portfolio_returns(R, W) == pytest.approx([0.018, 0.002, 0.004, 0.0], abs=1e-15)


def test_portfolio_returns_rejects_bad_shapes() -> None:
    with pytest.raises(RiskInputError, match="shape"):
        portfolio_returns(R, [1.0])
    with pytest.raises(RiskInputError, match="2-D"):
        portfolio_returns([0.1, 0.2], [1.0])
    with pytest.raises(InsufficientData, match="2 days"):
        portfolio_returns([[0.1, 0.2]], W)
    with pytest.raises(RiskInputError, match="NaN"):
        portfolio_returns([[0.1, math.nan], [0.0, 0.0]], W)


def test_component_var_worked_example() -> None:
    result = component_var(R, W, confidence=0.95)
    # marginal_i = -mu_i - z * (Sigma w)_i / sigma_p
    marginal = [-0.01 - Z95 * 0.00012 / SIGMA_P, -0.0 - Z95 * (-0.04 / 3000) / SIGMA_P]
    assert result.marginal == pytest.approx(marginal, rel=1e-12)
    # 0.00012 / 0.0081649658 = 0.0146969385; * 1.6448536 = 0.0241743125; - 0.01
    # (4e-5/3) / 0.0081649658 = 0.0016329932; * 1.6448536 = 0.0026860347
    assert result.marginal == pytest.approx([0.0141743125, -0.0026860347], abs=1e-10)
    assert result.component == pytest.approx([0.6 * marginal[0], 0.4 * marginal[1]], rel=1e-12)
    # VaR = -(0.006 + z * sqrt(1/15000)) = -0.006 + 1.6448536 * 0.0081649658 = 0.0074301736
    assert result.total == pytest.approx(-0.006 - Z95 * SIGMA_P, rel=1e-12)
    assert result.total == pytest.approx(0.0074301736, abs=1e-10)
    assert result.component.sum() == result.total


def test_component_var_total_is_the_parametric_var_of_the_portfolio() -> None:
    rng = np.random.default_rng(11)
    returns = rng.normal(0.001, 0.03, size=(250, 6)) @ rng.uniform(0.2, 1.0, size=(6, 6))
    weights = rng.dirichlet(np.ones(6))
    for confidence, horizon in ((0.95, 1), (0.99, 10)):
        result = component_var(returns, weights, confidence=confidence, horizon=horizon)
        expected = parametric_var(returns @ weights, confidence, horizon)
        assert result.total == pytest.approx(expected, rel=1e-12)
        portfolio = portfolio_returns(returns, weights)
        assert result.total == pytest.approx(
            var_parametric(portfolio, confidence=confidence, horizon=horizon), rel=1e-12
        )
        assert result.component.sum() == result.total
        assert result.component == pytest.approx(weights * result.marginal, rel=1e-15)


def test_marginal_var_is_the_derivative_of_var_in_the_weights() -> None:
    rng = np.random.default_rng(3)
    returns = rng.normal(0.0005, 0.02, size=(120, 5)) @ rng.uniform(0.1, 1.0, size=(5, 5))
    weights = np.array([0.3, -0.1, 0.4, 0.25, 0.15])  # a short leg is allowed here
    result = component_var(returns, weights, confidence=0.99, horizon=5)
    step = 1e-6
    for i in range(5):
        up, down = weights.copy(), weights.copy()
        up[i] += step
        down[i] -= step
        slope = (
            parametric_var(returns @ up, 0.99, 5) - parametric_var(returns @ down, 0.99, 5)
        ) / (2 * step)
        assert result.marginal[i] == pytest.approx(slope, rel=1e-6, abs=1e-9)


def test_component_var_rejects_bad_options_and_flat_portfolios() -> None:
    with pytest.raises(RiskInputError, match="confidence"):
        component_var(R, W, confidence=1.0)
    with pytest.raises(RiskInputError, match="horizon"):
        component_var(R, W, horizon=0)
    with pytest.raises(RiskInputError, match="variance is zero"):
        component_var(R, [0.0, 0.0])


def test_concentration_sorts_by_absolute_weight_and_keeps_signs() -> None:
    weights = {"BTC": 0.5, "ETH": 0.3, "SOL": -0.1, "ADA": 0.1, "DOT": 0.2}
    result = concentration(weights, top=4)
    # |0.1| ties between ADA and SOL: by name.
    assert result.largest == (("BTC", 0.5), ("ETH", 0.3), ("DOT", 0.2), ("ADA", 0.1))
    # HHI = 0.25 + 0.09 + 0.01 + 0.01 + 0.04 = 0.40; 1 / 0.40 = 2.5
    assert result.herfindahl == pytest.approx(0.40, abs=1e-15)
    assert result.effective_assets == pytest.approx(2.5, abs=1e-12)


def test_concentration_of_equal_weights_counts_the_assets() -> None:
    result = concentration({f"A{i}": 0.125 for i in range(8)})
    assert result.herfindahl == 0.125  # 8 * 0.125^2
    assert result.effective_assets == 8.0
    assert len(result.largest) == 5
    assert result.largest[0] == ("A0", 0.125)


def test_concentration_rejects_empty_and_bad_top() -> None:
    with pytest.raises(RiskInputError, match="all zero"):
        concentration({})
    with pytest.raises(RiskInputError, match="top"):
        concentration({"BTC": 1.0}, top=0)


def test_betas_against_the_benchmark() -> None:
    b = np.array([0.01, -0.01, 0.02, -0.02])  # mean 0, var = 0.001 / 3
    assets = np.column_stack(
        [
            2 * b,  # beta 2
            [0.01, 0.01, -0.01, -0.01],  # cov = (1 - 1 - 2 + 2)e-4 / 3 = 0: beta 0
            [0.02, 0.0, 0.0, 0.0],  # cov = 0.01 * 0.02 / 3 = 0.0002/3: beta 0.2
        ]
    )
    assert betas(assets, b) == pytest.approx([2.0, 0.0, 0.2], abs=1e-12)


def test_betas_match_numpy_covariance() -> None:
    rng = np.random.default_rng(5)
    bench = rng.normal(0, 0.03, 300)
    assets = np.outer(bench, [0.5, 1.0, 1.5]) + rng.normal(0, 0.01, (300, 3))
    expected = [np.cov(assets[:, i], bench, ddof=1)[0, 1] / bench.var(ddof=1) for i in range(3)]
    assert betas(assets, bench) == pytest.approx(expected, rel=1e-12)


def test_betas_reject_flat_benchmark_and_wrong_length() -> None:
    with pytest.raises(RiskInputError, match="zero variance"):
        betas(R, [0.01, 0.01, 0.01, 0.01])
    with pytest.raises(RiskInputError, match="shape"):
        betas(R, [0.01, 0.02])


WEIGHTS = {"BTC": 0.5, "ETH": 0.3, "SOL": 0.15, "USDT": 0.05}
BETAS = {"ETH": 1.2, "SOL": 1.8, "USDT": 0.0}


def test_stress_test_propagates_a_btc_shock_through_betas() -> None:
    result = stress_test(WEIGHTS, BETAS, btc_shock=-0.2, name="btc -20%")
    # ETH 1.2 * -0.2 = -0.24, SOL 1.8 * -0.2 = -0.36, USDT 0
    assert result.asset_shocks == pytest.approx(
        {"BTC": -0.2, "ETH": -0.24, "SOL": -0.36, "USDT": 0.0}, abs=1e-15
    )
    # 0.5 * -0.2 + 0.3 * -0.24 + 0.15 * -0.36 = -0.1 - 0.072 - 0.054 = -0.226
    assert result.portfolio_return == pytest.approx(-0.226, abs=1e-15)
    assert result.name == "btc -20%"


def test_stress_test_user_shocks_override_the_propagated_ones() -> None:
    result = stress_test(WEIGHTS, BETAS, btc_shock=-0.2, asset_shocks={"SOL": -0.5})
    # -0.1 - 0.072 + 0.15 * -0.5 = -0.247
    assert result.asset_shocks["SOL"] == -0.5
    assert result.asset_shocks["ETH"] == pytest.approx(-0.24, abs=1e-15)
    assert result.portfolio_return == pytest.approx(-0.247, abs=1e-15)
    assert result.name == "custom"


def test_stress_test_without_btc_shock_moves_only_the_named_assets() -> None:
    result = stress_test(WEIGHTS, {}, asset_shocks={"ETH": -0.5, "SOL": 0.1})
    assert result.asset_shocks == {"BTC": 0.0, "ETH": -0.5, "SOL": 0.1, "USDT": 0.0}
    # 0.3 * -0.5 + 0.15 * 0.1 = -0.15 + 0.015 = -0.135
    assert result.portfolio_return == pytest.approx(-0.135, abs=1e-15)


def test_stress_test_floors_a_propagated_loss_at_the_whole_position() -> None:
    result = stress_test(WEIGHTS, BETAS, btc_shock=-0.6)
    # SOL: 1.8 * -0.6 = -1.08, floored at -1; ETH: -0.72
    assert result.asset_shocks["SOL"] == -1.0
    assert result.asset_shocks["ETH"] == pytest.approx(-0.72, abs=1e-15)
    # 0.5 * -0.6 + 0.3 * -0.72 + 0.15 * -1 = -0.3 - 0.216 - 0.15 = -0.666
    assert result.portfolio_return == pytest.approx(-0.666, abs=1e-15)


def test_stress_test_rejects_unknown_assets_and_missing_betas() -> None:
    with pytest.raises(RiskInputError, match="not in the portfolio: DOGE"):
        stress_test(WEIGHTS, BETAS, asset_shocks={"DOGE": -0.5})
    with pytest.raises(RiskInputError, match="no beta for SOL"):
        stress_test(WEIGHTS, {"ETH": 1.2}, btc_shock=-0.1)
    with pytest.raises(RiskInputError, match=">= -1"):
        stress_test(WEIGHTS, BETAS, asset_shocks={"ETH": -1.5})
    with pytest.raises(RiskInputError, match="btc_shock"):
        stress_test(WEIGHTS, BETAS, btc_shock=math.nan)
