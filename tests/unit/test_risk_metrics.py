"""Risk metrics of one series: worked examples for every convention of
docs/risk.md, agreement with empyrical (annualization 365) and quantstats on
the real Bitstamp daily closes of ../shared/data, properties, bad input."""

import math
import warnings

import empyrical
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptodesk.analytics.risk import (
    DAYS_PER_YEAR,
    METRIC_KEYS,
    InsufficientData,
    RiskInputError,
    annual_return,
    annual_volatility,
    beta,
    calmar,
    drawdown_series,
    excess_kurtosis,
    max_drawdown,
    series_metrics,
    sharpe,
    simple_returns,
    skewness,
    sortino,
)
from tests.shared_data import SHARED_DATA

SQRT365 = 19.1049731745428  # sqrt(365)
R4 = [0.01, -0.01, 0.02, 0.0]  # mean 0.005; deviations .005 -.015 .015 -.005
STD4 = 0.012909944487358056  # sqrt((25 + 225 + 225 + 25)e-6 / 3) = sqrt(500e-6 / 3)


@pytest.fixture(scope="module")
def closes() -> pd.DataFrame:
    frame = pd.read_csv(SHARED_DATA / "bitstamp_btc_eth_ltc_usd_1d.csv", index_col=0)
    frame.index = pd.to_datetime(frame.index)
    return frame[["BTC:close", "ETH:close", "LTC:close"]]


@pytest.fixture(scope="module")
def btc(closes: pd.DataFrame) -> np.ndarray:
    return simple_returns(closes["BTC:close"].to_numpy())


# -- worked examples -----------------------------------------------------------------


def test_simple_returns_of_a_series_and_of_a_matrix() -> None:
    # 110/100 - 1 = 0.1; 99/110 - 1 = -0.1; 108.9/99 - 1 = 0.1
    assert simple_returns([100, 110, 99, 108.9]) == pytest.approx([0.1, -0.1, 0.1], abs=1e-15)
    # columns: 110/100 - 1, 121/110 - 1 | 40/50 - 1, 50/40 - 1
    got = simple_returns([[100, 50], [110, 40], [121, 50]])
    assert got.shape == (2, 2)
    assert got.ravel() == pytest.approx([0.1, -0.2, 0.1, 0.25], abs=1e-15)


def test_annual_return_is_the_cagr_over_365_days() -> None:
    # Two 10% years: (1.1 * 1.1) ** (1 / 2) - 1 = 0.1
    assert annual_return([0.1, 0.1], periods_per_year=1) == pytest.approx(0.1, abs=1e-15)
    # 365 days of +0.1%: 1.001 ** 365 - 1
    assert annual_return([0.001] * 365) == pytest.approx(0.44025131342952, abs=1e-13)
    # 1.1 * 0.9 * 1.1 = 1.089 over 3 periods of a 3-period year
    assert annual_return([0.1, -0.1, 0.1], periods_per_year=3) == pytest.approx(0.089, abs=1e-15)
    # A total loss stays a total loss: 0 ** x - 1
    assert annual_return([0.5, -1.0]) == -1.0


def test_annual_volatility_uses_ddof_1_and_sqrt_365() -> None:
    # 0.0129099... * sqrt(365)
    assert annual_volatility(R4) == pytest.approx(STD4 * SQRT365, rel=1e-14)
    assert annual_volatility(R4) == pytest.approx(0.24664414311581, abs=1e-13)


def test_sharpe_with_and_without_a_risk_free_rate() -> None:
    # 0.005 / 0.0129099 * sqrt(365) = 0.3872983 * 19.104973
    assert sharpe(R4) == pytest.approx(7.39932429347437, abs=1e-12)
    # rf 3.65% a year = 0.0001 a day: 0.0049 / 0.0129099 * sqrt(365); the shift leaves std alone
    assert sharpe(R4, risk_free=0.0365) == pytest.approx(7.25133780760488, abs=1e-12)


def test_sortino_averages_the_downside_over_all_days() -> None:
    # downside: min(r, 0) = [0, -0.01, 0, 0] -> sqrt(1e-4 / 4) = 0.005, times sqrt(365);
    # numerator 0.005 * 365, so the ratio is 365 / sqrt(365) = sqrt(365)
    assert sortino(R4) == pytest.approx(SQRT365, rel=1e-14)
    # rf 3.65% (0.0001 a day): excess = [.0099, -.0101, .0199, -.0001],
    # downside sqrt((.0101^2 + .0001^2) / 4) = 0.00505024752, mean excess 0.0049
    expected = 0.0049 * 365 / (math.sqrt((0.0101**2 + 0.0001**2) / 4) * SQRT365)
    assert sortino(R4, risk_free=0.0365) == pytest.approx(expected, rel=1e-13)
    assert expected == pytest.approx(18.53659, abs=1e-5)


def test_drawdowns_start_from_a_wealth_of_one() -> None:
    # wealth 1.1, 0.88, 1.1, 0.55, 0.605 under a peak of 1.1
    dd = drawdown_series([0.1, -0.2, 0.25, -0.5, 0.1])
    assert dd == pytest.approx([0.0, -0.2, 0.0, -0.5, -0.45], abs=1e-15)
    assert max_drawdown([0.1, -0.2, 0.25, -0.5, 0.1]) == pytest.approx(-0.5, abs=1e-15)
    # A first-day loss is a drawdown from the initial 1: 0.9, then 0.9 * 1.05 = 0.945
    assert drawdown_series([-0.1, 0.05]) == pytest.approx([-0.1, -0.055], abs=1e-15)
    assert max_drawdown([0.01, 0.02]) == 0.0


def test_calmar_is_annual_return_over_the_drawdown_size() -> None:
    # (0.9 * 1.2) ** (2 / 2) - 1 = 0.08 over |-0.1|
    assert calmar([-0.1, 0.2], periods_per_year=2) == pytest.approx(0.8, abs=1e-14)
    # 1.1 * 0.8 * 1.25 * 0.5 * 1.1 = 0.605 -> -0.395 over 0.5
    assert calmar([0.1, -0.2, 0.25, -0.5, 0.1], periods_per_year=5) == pytest.approx(
        -0.79, abs=1e-14
    )
    with pytest.raises(InsufficientData, match="no drawdown"):
        calmar([0.01, 0.02])


def test_skewness_and_excess_kurtosis_are_bias_corrected() -> None:
    # [0, 0, .03]: d = -.01 -.01 .02, m2 = 2e-4, m3 = 2e-6, g1 = 2e-6 / 2e-4^1.5 = 0.7071068,
    # G1 = g1 * sqrt(3 * 2) / 1 = sqrt(3)
    assert skewness([0.0, 0.0, 0.03]) == pytest.approx(math.sqrt(3), rel=1e-13)
    # [0, 0, 0, .04]: d = -.01 x3 .03, m2 = 3e-4, m3 = 6e-6, m4 = 21e-8
    # g1 = 6e-6 / 3e-4^1.5 = 1.1547005, G1 = g1 * sqrt(12) / 2 = 2
    assert skewness([0.0, 0.0, 0.0, 0.04]) == pytest.approx(2.0, rel=1e-13)
    # g2 = 21e-8 / 9e-8 - 3 = -2/3, G2 = (5 * -2/3 + 6) * 3 / (2 * 1) = 4
    assert excess_kurtosis([0.0, 0.0, 0.0, 0.04]) == pytest.approx(4.0, rel=1e-13)
    sample = [0.03, -0.01, 0.02, -0.05, 0.0, 0.04]
    assert skewness(sample) == pytest.approx(pd.Series(sample).skew(), rel=1e-12)
    assert excess_kurtosis(sample) == pytest.approx(pd.Series(sample).kurt(), rel=1e-12)


def test_beta_over_common_observations() -> None:
    # dr = [.02, 0, -.02], db = [0, .01, -.01]: cov 2e-4 / var 2e-4 (the n - 1 cancel)
    assert beta([0.03, 0.01, -0.01], [0.01, 0.02, 0.0]) == pytest.approx(1.0, abs=1e-14)
    # returns twice the benchmark; the first day exists only for the benchmark
    r = [np.nan, 0.02, -0.02, 0.04]
    b = [0.05, 0.01, -0.01, 0.02]
    assert beta(r, b) == pytest.approx(2.0, abs=1e-14)


# -- the report ----------------------------------------------------------------------


def test_series_metrics_on_a_short_series_says_why_values_are_missing() -> None:
    report = series_metrics(R4, confidence=0.95)
    assert set(report.values) == set(METRIC_KEYS)
    assert report.values["sharpe"] == pytest.approx(7.39932429347437, abs=1e-12)
    assert report.values["max_drawdown"] == pytest.approx(-0.01, abs=1e-15)
    assert report.values["kurtosis"] is not None  # 4 returns are enough
    missing = {k for k, v in report.values.items() if v is None}
    assert missing == {"var_historical", "cvar_historical"}
    assert report.reasons == {
        "var_historical": "historical VaR at 0.95 needs at least 20 1-day returns, got 4",
        "cvar_historical": "historical VaR at 0.95 needs at least 20 1-day returns, got 4",
    }


def test_series_metrics_of_a_flat_series_gives_no_misleading_ratio() -> None:
    report = series_metrics([0.0, 0.0, 0.0], benchmark=[0.01, -0.01, 0.02])
    assert set(report.values) == {*METRIC_KEYS, "beta"}
    assert report.values["annual_return"] == 0.0
    assert report.values["annual_volatility"] == 0.0
    assert report.values["max_drawdown"] == 0.0
    assert report.values["beta"] == 0.0
    assert set(report.reasons) == {
        "sharpe",
        "sortino",
        "calmar",
        "skew",
        "kurtosis",
        "var_historical",
        "var_cornish_fisher",
        "cvar_historical",
    }
    assert report.reasons["sharpe"] == "Sharpe ratio is undefined: returns have zero volatility"
    assert report.reasons["kurtosis"] == "excess kurtosis needs at least 4 returns, got 3"
    assert all(report.values[k] is None for k in report.reasons)


def test_series_metrics_on_real_data_matches_the_single_functions(btc: np.ndarray) -> None:
    report = series_metrics(btc, confidence=0.99, horizon=5, risk_free=0.02, benchmark=btc)
    assert report.reasons == {}
    assert report.values["sharpe"] == sharpe(btc, risk_free=0.02)
    assert report.values["calmar"] == calmar(btc)
    assert report.values["beta"] == pytest.approx(1.0, abs=1e-12)


# -- agreement with empyrical and quantstats on real data ----------------------------


def test_agrees_with_empyrical_on_bitstamp_btc(btc: np.ndarray) -> None:
    ann = DAYS_PER_YEAR
    assert annual_return(btc) == pytest.approx(
        empyrical.annual_return(btc, annualization=ann), abs=1e-9
    )
    assert annual_volatility(btc) == pytest.approx(
        empyrical.annual_volatility(btc, annualization=ann), abs=1e-9
    )
    assert sharpe(btc) == pytest.approx(empyrical.sharpe_ratio(btc, annualization=ann), abs=1e-9)
    # empyrical takes the risk-free rate per period
    assert sharpe(btc, risk_free=0.05) == pytest.approx(
        empyrical.sharpe_ratio(btc, risk_free=0.05 / ann, annualization=ann), abs=1e-9
    )
    assert sortino(btc) == pytest.approx(empyrical.sortino_ratio(btc, annualization=ann), abs=1e-9)
    assert max_drawdown(btc) == pytest.approx(empyrical.max_drawdown(btc), abs=1e-9)
    assert calmar(btc) == pytest.approx(empyrical.calmar_ratio(btc, annualization=ann), abs=1e-9)
    assert max_drawdown(btc) == pytest.approx(-0.8343, abs=1e-4)  # the 2018 bear market


def test_beta_agrees_with_empyrical_on_common_days(closes: pd.DataFrame) -> None:
    rets = closes.pct_change(fill_method=None).iloc[1:]
    btc_r = rets["BTC:close"].to_numpy()
    for column in ("ETH:close", "LTC:close"):
        asset = rets[column].to_numpy()  # NaN before the listing
        assert np.isnan(asset).sum() > 900
        expected = empyrical.beta(asset, btc_r)
        assert beta(asset, btc_r) == pytest.approx(expected, abs=1e-9)
        assert 0.5 < beta(asset, btc_r) < 1.5


def test_agrees_with_quantstats_where_conventions_match(
    closes: pd.DataFrame, btc: np.ndarray
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import quantstats as qs

        series = pd.Series(btc, index=closes.index[1:])
        assert skewness(btc) == pytest.approx(qs.stats.skew(series), abs=1e-9)
        assert excess_kurtosis(btc) == pytest.approx(qs.stats.kurtosis(series), abs=1e-9)
        assert sharpe(btc) == pytest.approx(qs.stats.sharpe(series, periods=365), abs=1e-9)
        assert annual_volatility(btc) == pytest.approx(
            qs.stats.volatility(series, periods=365), abs=1e-9
        )


# -- properties ----------------------------------------------------------------------

returns_lists = st.lists(
    st.floats(min_value=-0.99, max_value=2.0, allow_nan=False, allow_subnormal=False),
    min_size=1,
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(returns_lists)
def test_drawdown_lies_between_minus_one_and_zero(returns: list[float]) -> None:
    dd = drawdown_series(returns)
    assert dd.shape == (len(returns),)
    assert np.all(dd <= 0.0)
    assert np.all(dd >= -1.0)
    assert max_drawdown(returns) == pytest.approx(float(dd.min()), abs=0.0)


@settings(max_examples=100, deadline=None)
@given(returns_lists.filter(lambda r: len(r) >= 2 and np.std(r) > 1e-6))
def test_sharpe_matches_empyrical_on_random_series(returns: list[float]) -> None:
    arr = np.asarray(returns)
    assert sharpe(arr) == pytest.approx(empyrical.sharpe_ratio(arr, annualization=365), rel=1e-9)


# -- bad input and too little data ---------------------------------------------------


@pytest.mark.parametrize(
    ("prices", "message"),
    [
        ([100.0, 0.0, 101.0], "prices must be positive"),
        ([100.0, -5.0], "prices must be positive"),
        ([100.0, float("nan"), 101.0], "NaN or infinite"),
        ([100.0, float("inf")], "NaN or infinite"),
        ([[[1.0]]], "1-D or 2-D"),
    ],
)
def test_bad_prices(prices: list[float], message: str) -> None:
    with pytest.raises(RiskInputError, match=message):
        simple_returns(prices)


def test_bad_returns_and_parameters() -> None:
    with pytest.raises(RiskInputError, match="NaN"):
        sharpe([0.01, float("nan"), 0.02])
    with pytest.raises(RiskInputError, match="below -100%"):
        annual_return([0.1, -1.5])
    with pytest.raises(RiskInputError, match="one-dimensional"):
        annual_volatility([[0.1, 0.2]])
    with pytest.raises(RiskInputError, match="lengths differ: 3 and 2"):
        beta([0.1, 0.2, 0.3], [0.1, 0.2])
    with pytest.raises(RiskInputError, match="lengths differ"):
        series_metrics([0.1, 0.2, 0.3], benchmark=[0.1])
    with pytest.raises(RiskInputError, match="confidence must be inside"):
        series_metrics(R4, confidence=1.0)
    with pytest.raises(RiskInputError, match="horizon must be"):
        series_metrics(R4, horizon=0)
    with pytest.raises(RiskInputError, match="risk_free must be finite"):
        sharpe(R4, risk_free=float("nan"))


def test_too_little_data_raises_insufficient_data() -> None:
    cases = [
        (lambda: simple_returns([100.0]), "at least 2 prices, got 1"),
        (lambda: annual_return([]), "annual return needs at least 1 returns, got 0"),
        (lambda: annual_volatility([0.1]), "at least 2 returns, got 1"),
        (lambda: sharpe([0.1]), "Sharpe ratio needs at least 2 returns, got 1"),
        (lambda: sharpe([0.01, 0.01]), "zero volatility"),
        (lambda: sortino([0.01, 0.02]), "no return below the risk-free rate"),
        (lambda: max_drawdown([]), "at least 1 returns, got 0"),
        (lambda: skewness([0.1, 0.2]), "skewness needs at least 3 returns, got 2"),
        (lambda: excess_kurtosis([0.1, 0.2, 0.3]), "at least 4 returns, got 3"),
        (lambda: skewness([0.1, 0.1, 0.1]), "zero volatility"),
        (lambda: sharpe([0.1, 0.1, 0.1]), "zero volatility"),
        (lambda: beta([0.1, np.nan], [0.1, 0.2]), "at least 2 common observations, got 1"),
        (lambda: beta([0.1, 0.2], [0.1, 0.1]), "benchmark has zero volatility"),
    ]
    for call, reason in cases:
        with pytest.raises(InsufficientData, match=reason) as caught:
            call()
        assert reason in caught.value.reason
