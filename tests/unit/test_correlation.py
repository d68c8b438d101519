"""Correlation: worked examples, agreement with numpy and pandas (rolling and
EWMA with ``adjust=True``) on real Bitstamp daily closes, the diversification
warning, bad input."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cryptodesk.analytics.correlation import (
    CorrelationWarning,
    average_pairwise_correlation,
    correlation_matrix,
    correlation_warning,
    ewma_correlation,
    rolling_average_correlation,
    rolling_correlation,
)
from cryptodesk.analytics.risk import InsufficientData, RiskInputError
from tests.shared_data import SHARED_DATA


@pytest.fixture(scope="module")
def returns() -> pd.DataFrame:
    """Daily returns of BTC, ETH and LTC over the days all three trade."""
    frame = pd.read_csv(SHARED_DATA / "bitstamp_btc_eth_ltc_usd_1d.csv", index_col=0)
    frame.index = pd.to_datetime(frame.index)
    closes = frame[["BTC:close", "ETH:close", "LTC:close"]].dropna()
    rets = closes.pct_change().iloc[1:]
    assert len(rets) > 700
    return rets


# -- worked examples -----------------------------------------------------------------


def test_pearson_matrix_by_hand() -> None:
    # x = [1,2,3,4] -> d = [-1.5,-.5,.5,1.5]; y = [1,3,2,4] -> d = [-1.5,.5,-.5,1.5]
    # cov sum = 2.25 - .25 - .25 + 2.25 = 4; both variance sums 5 -> 0.8
    # z = -x -> -1 with x, -0.8 with y
    m = np.array([[1, 1, -1], [2, 3, -2], [3, 2, -3], [4, 4, -4]], dtype=float) / 100
    expected = [[1.0, 0.8, -1.0], [0.8, 1.0, -0.8], [-1.0, -0.8, 1.0]]
    np.testing.assert_allclose(correlation_matrix(m), expected, rtol=0, atol=1e-15)


def test_rolling_correlation_by_hand() -> None:
    # windows of 3: ([1,2,3],[1,3,2]): d = [-1,0,1],[-1,1,0] -> 1 / sqrt(2 * 2) = 0.5
    #               ([2,3,4],[3,2,4]): d = [-1,0,1],[0,-1,1] -> 1 / 2 = 0.5
    got = rolling_correlation([1, 2, 3, 4], [1, 3, 2, 4], window=3)
    assert np.isnan(got[:2]).all()
    np.testing.assert_allclose(got[2:], [0.5, 0.5], rtol=0, atol=1e-15)
    # A flat window has no correlation.
    flat = rolling_correlation([1, 1, 1, 2], [1, 2, 3, 4], window=3)
    assert np.isnan(flat[:3]).all()
    assert flat[3] == pytest.approx(math.sqrt(3) / 2, abs=1e-15)
    # Shorter than one window: all NaN.
    assert np.isnan(rolling_correlation([1, 2], [2, 1], window=3)).all()


def test_rolling_average_correlation_averages_the_pairs_of_each_window() -> None:
    # x and y move together, z against x: per 3-day window the three pairs are
    # corr(x,y) = 1, corr(x,z) = -1, corr(y,z) = -1, so the average is -1/3.
    x = np.array([0.01, 0.03, 0.02, 0.05, 0.01])
    m = np.column_stack([x, 2 * x, -x])
    got = rolling_average_correlation(m, window=3)
    assert np.isnan(got[:2]).all()
    assert got[2:] == pytest.approx([-1 / 3] * 3, abs=1e-12)
    # A pair flat in a window is left out of that window's average.
    flat = np.column_stack([x, 2 * x, [0.0, 0.0, 0.0, 0.0, 0.01]])
    got = rolling_average_correlation(flat, window=3)
    assert got[2:4] == pytest.approx([1.0, 1.0], abs=1e-12)  # only (x, y) counts
    assert got[4] == pytest.approx(
        np.mean([1.0, *(np.corrcoef(x[2:], flat[2:, 2])[0, 1] for _ in range(2))]), abs=1e-12
    )
    with pytest.raises(InsufficientData):
        rolling_average_correlation(m[:, :1], window=3)


def test_ewma_correlation_by_hand() -> None:
    # half-life 1 -> lambda 0.5; weights of days 0,1,2: 0.25, 0.5, 1 -> 1/7, 2/7, 4/7
    # x = [0,0,1]: mean 4/7, d = [-4,-4,3]/7; y = [0,1,1]: mean 6/7, d = [-6,1,1]/7
    # cov = (24 - 8 + 12) / 343, var x = (16 + 32 + 36) / 343, var y = (36 + 2 + 4) / 343
    # corr = 28 / sqrt(84 * 42) = sqrt(2) / 3
    got = ewma_correlation([[0.0, 0.0], [0.0, 1.0], [1.0, 1.0]], half_life=1.0)
    np.testing.assert_allclose(
        got, [[1.0, math.sqrt(2) / 3], [math.sqrt(2) / 3, 1.0]], rtol=0, atol=1e-15
    )


def test_average_pairwise_correlation_and_warning() -> None:
    c = [[1.0, 0.2, 0.4], [0.2, 1.0, 0.6], [0.4, 0.6, 1.0]]
    # (0.2 + 0.4 + 0.6) / 3
    assert average_pairwise_correlation(c) == pytest.approx(0.4, abs=1e-15)
    assert correlation_warning(c, threshold=0.5) is None
    warning = correlation_warning(c, threshold=0.4)
    assert warning == CorrelationWarning(
        average=pytest.approx(0.4, abs=1e-15),  # type: ignore[arg-type]
        threshold=0.4,
        message=(
            "average pairwise correlation of 3 assets is 0.40, at or above 0.40: "
            "the portfolio is poorly diversified"
        ),
    )


# -- agreement with numpy and pandas on real data ------------------------------------


def test_matrix_agrees_with_numpy_and_pandas(returns: pd.DataFrame) -> None:
    got = correlation_matrix(returns.to_numpy())
    np.testing.assert_allclose(got, np.corrcoef(returns.to_numpy(), rowvar=False), atol=1e-12)
    np.testing.assert_allclose(got, returns.corr().to_numpy(), atol=1e-12)
    assert 0.4 < average_pairwise_correlation(got) < 0.9  # crypto moves together


@pytest.mark.parametrize("window", [2, 30, 90])
def test_rolling_agrees_with_pandas(returns: pd.DataFrame, window: int) -> None:
    btc, eth = returns["BTC:close"], returns["ETH:close"]
    expected = btc.rolling(window).corr(eth).to_numpy()
    got = rolling_correlation(btc.to_numpy(), eth.to_numpy(), window=window)
    assert np.isnan(got[: window - 1]).all()
    np.testing.assert_allclose(got[window - 1 :], expected[window - 1 :], rtol=0, atol=1e-9)


@pytest.mark.parametrize("half_life", [1.0, 10.0, 60.0])
def test_ewma_agrees_with_pandas_adjust_true(returns: pd.DataFrame, half_life: float) -> None:
    expected = returns.ewm(halflife=half_life, adjust=True).corr().loc[returns.index[-1]]
    got = ewma_correlation(returns.to_numpy(), half_life=half_life)
    np.testing.assert_allclose(got, expected.to_numpy(), rtol=0, atol=1e-10)


def test_ewma_with_a_long_half_life_approaches_the_plain_matrix(returns: pd.DataFrame) -> None:
    m = returns.to_numpy()
    np.testing.assert_allclose(
        ewma_correlation(m, half_life=1e9), correlation_matrix(m), rtol=0, atol=1e-6
    )


# -- properties ----------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(3, 40), st.integers(2, 5)),
        elements=st.floats(-0.2, 0.2, allow_subnormal=False),
    )
)
def test_matrices_are_symmetric_with_unit_diagonal(m: np.ndarray) -> None:
    if np.any(np.ptp(m, axis=0) < 1e-6):
        return
    for c in (correlation_matrix(m), ewma_correlation(m, half_life=5.0)):
        np.testing.assert_allclose(c, c.T, atol=1e-15)
        assert np.all(np.diag(c) == 1.0)
        assert np.all(np.abs(c) <= 1.0)
        assert -1.0 <= average_pairwise_correlation(c) <= 1.0


# -- bad input and too little data ---------------------------------------------------


def test_bad_input_raises_risk_input_error() -> None:
    with pytest.raises(RiskInputError, match="T x N"):
        correlation_matrix([0.1, 0.2, 0.3])
    with pytest.raises(RiskInputError, match="NaN"):
        correlation_matrix([[0.1, float("nan")], [0.2, 0.3]])
    with pytest.raises(RiskInputError, match="lengths differ: 3 and 2"):
        rolling_correlation([1, 2, 3], [1, 2], window=2)
    with pytest.raises(RiskInputError, match="window must be"):
        rolling_correlation([1, 2, 3], [1, 2, 3], window=1)
    with pytest.raises(RiskInputError, match="half_life must be positive"):
        ewma_correlation([[0.1, 0.2], [0.2, 0.1]], half_life=0.0)
    with pytest.raises(RiskInputError, match="must be square"):
        average_pairwise_correlation([[1.0, 0.5]])
    with pytest.raises(RiskInputError, match=r"threshold must be within \[-1, 1\]"):
        correlation_warning([[1.0, 0.5], [0.5, 1.0]], threshold=1.5)


def test_too_little_data_raises_insufficient_data() -> None:
    with pytest.raises(InsufficientData, match="at least 2 days, got 1"):
        correlation_matrix([[0.1, 0.2]])
    with pytest.raises(InsufficientData, match="asset column 1 has constant returns"):
        correlation_matrix([[0.1, 0.1], [0.2, 0.1], [0.3, 0.1]])
    with pytest.raises(InsufficientData, match="at least 2 assets"):
        average_pairwise_correlation([[1.0]])
