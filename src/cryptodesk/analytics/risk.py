"""Risk metrics of one return series: annualised return and volatility,
Sharpe, Sortino, drawdowns, Calmar, higher moments, beta, and a report of all
of them with the value-at-risk measures of :mod:`cryptodesk.analytics.var`.

Every convention (formula, annualisation, minimum number of observations) is
written out in ``docs/risk.md``, section "Conventions". In short: simple daily
returns, 365 periods a year (crypto trades every day), an annual risk-free rate
turned into a per-period rate by dividing by the periods per year, sample
statistics with ``ddof=1``.

Bad input (non-finite values, non-positive prices, mismatched lengths) raises
:class:`RiskInputError`; a series too short for a metric raises
:class:`InsufficientData`, which :func:`series_metrics` turns into ``None`` and
a reason instead of a misleading number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from numpy.typing import ArrayLike

DAYS_PER_YEAR: Final = 365

METRIC_KEYS: Final[tuple[str, ...]] = (
    "annual_return",
    "annual_volatility",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "skew",
    "kurtosis",
    "var_historical",
    "var_parametric",
    "var_cornish_fisher",
    "cvar_historical",
)

# Minimum observations of the sample statistics (see docs/risk.md).
MIN_RETURNS_STD: Final = 2
MIN_RETURNS_SKEW: Final = 3
MIN_RETURNS_KURTOSIS: Final = 4

FloatArray = npt.NDArray[np.float64]


class RiskInputError(ValueError):
    """The input cannot be measured at all: wrong shape, non-finite values,
    non-positive prices, a parameter out of range."""


class InsufficientData(ValueError):
    """The input is valid but too short (or too flat) for the metric asked."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- input checks shared by the risk modules ---------------------------------------


def as_returns(returns: ArrayLike, *, name: str = "returns") -> FloatArray:
    """``returns`` as a finite 1-D float64 array, each return >= -100%."""
    arr = np.asarray(returns, dtype=np.float64)
    if arr.ndim != 1:
        raise RiskInputError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise RiskInputError(f"{name} contain NaN or infinite values")
    if arr.size and float(arr.min()) < -1.0:
        raise RiskInputError(f"{name} contain a return below -100%")
    return arr


def check_confidence(confidence: float) -> float:
    """``confidence`` as a float strictly inside (0, 1)."""
    c = float(confidence)
    if not (0.0 < c < 1.0):
        raise RiskInputError(f"confidence must be inside (0, 1), got {confidence!r}")
    return c


def check_horizon(horizon: int) -> int:
    """``horizon`` as a whole number of days >= 1."""
    if isinstance(horizon, bool) or int(horizon) != horizon or horizon < 1:
        raise RiskInputError(f"horizon must be a whole number of days >= 1, got {horizon!r}")
    return int(horizon)


def _check_periods(periods_per_year: float) -> float:
    p = float(periods_per_year)
    if not (math.isfinite(p) and p > 0):
        raise RiskInputError(f"periods_per_year must be positive, got {periods_per_year!r}")
    return p


def _need(arr: FloatArray, minimum: int, what: str) -> None:
    if arr.size < minimum:
        raise InsufficientData(f"{what} needs at least {minimum} returns, got {arr.size}")


# -- returns and single metrics ----------------------------------------------------


def simple_returns(prices: ArrayLike) -> FloatArray:
    """Simple returns ``p_t / p_{t-1} - 1`` of a 1-D price series or of each
    column of a 2-D ``T x N`` price matrix (one row per day)."""
    arr = np.asarray(prices, dtype=np.float64)
    if arr.ndim not in (1, 2):
        raise RiskInputError(f"prices must be 1-D or 2-D (T x N), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise RiskInputError("prices contain NaN or infinite values")
    if arr.size and float(arr.min()) <= 0.0:
        raise RiskInputError("prices must be positive")
    if arr.shape[0] < 2:
        raise InsufficientData(f"returns need at least 2 prices, got {arr.shape[0]}")
    result: FloatArray = arr[1:] / arr[:-1] - 1.0
    return result


def annual_return(returns: ArrayLike, *, periods_per_year: float = DAYS_PER_YEAR) -> float:
    """Compound annual growth rate: ``prod(1 + r) ** (periods_per_year / n) - 1``."""
    r = as_returns(returns)
    p = _check_periods(periods_per_year)
    _need(r, 1, "annual return")
    growth = float(np.prod(1.0 + r))
    return float(growth ** (p / r.size) - 1.0)


def annual_volatility(returns: ArrayLike, *, periods_per_year: float = DAYS_PER_YEAR) -> float:
    """Sample standard deviation (ddof 1) times ``sqrt(periods_per_year)``."""
    r = as_returns(returns)
    p = _check_periods(periods_per_year)
    _need(r, MIN_RETURNS_STD, "annual volatility")
    if _flat(r):
        return 0.0
    return float(np.std(r, ddof=1) * math.sqrt(p))


def _excess(r: FloatArray, risk_free: float, periods_per_year: float) -> FloatArray:
    rf = float(risk_free)
    if not math.isfinite(rf):
        raise RiskInputError(f"risk_free must be finite, got {risk_free!r}")
    # The risk-free rate is an annual simple rate; spread evenly over the year.
    result: FloatArray = r - rf / periods_per_year
    return result


def sharpe(
    returns: ArrayLike, *, risk_free: float = 0.0, periods_per_year: float = DAYS_PER_YEAR
) -> float:
    """``mean(r - rf_d) / std(r - rf_d, ddof=1) * sqrt(periods_per_year)``."""
    r = as_returns(returns)
    p = _check_periods(periods_per_year)
    _need(r, MIN_RETURNS_STD, "Sharpe ratio")
    ex = _excess(r, risk_free, p)
    sd = float(np.std(ex, ddof=1))
    if _flat(r):
        raise InsufficientData("Sharpe ratio is undefined: returns have zero volatility")
    return float(np.mean(ex) / sd * math.sqrt(p))


def sortino(
    returns: ArrayLike, *, risk_free: float = 0.0, periods_per_year: float = DAYS_PER_YEAR
) -> float:
    """``mean(r - rf_d) * P / (sqrt(mean(min(r - rf_d, 0)^2)) * sqrt(P))``: the
    downside deviation averages over every period, not only the losing ones."""
    r = as_returns(returns)
    p = _check_periods(periods_per_year)
    _need(r, MIN_RETURNS_STD, "Sortino ratio")
    ex = _excess(r, risk_free, p)
    downside = math.sqrt(float(np.mean(np.square(np.minimum(ex, 0.0))))) * math.sqrt(p)
    if downside == 0.0:
        raise InsufficientData("Sortino ratio is undefined: no return below the risk-free rate")
    return float(np.mean(ex) * p / downside)


def drawdown_series(returns: ArrayLike) -> FloatArray:
    """``wealth_t / running_peak_t - 1`` for each observation, wealth starting
    at 1 before the first return (so a first loss is already a drawdown)."""
    r = as_returns(returns)
    wealth = np.cumprod(1.0 + r)
    peak = np.maximum.accumulate(np.maximum(wealth, 1.0))
    result: FloatArray = wealth / peak - 1.0
    return result


def max_drawdown(returns: ArrayLike) -> float:
    """Deepest drawdown as a negative fraction (``-0.25`` = 25% below a peak);
    0 when the wealth never fell below a peak."""
    r = as_returns(returns)
    _need(r, 1, "maximum drawdown")
    return float(min(0.0, float(drawdown_series(r).min())))


def calmar(returns: ArrayLike, *, periods_per_year: float = DAYS_PER_YEAR) -> float:
    """Annual return over the size of the maximum drawdown."""
    r = as_returns(returns)
    mdd = max_drawdown(r)
    if mdd == 0.0:
        raise InsufficientData("Calmar ratio is undefined: no drawdown in the period")
    return annual_return(r, periods_per_year=periods_per_year) / abs(mdd)


def _flat(values: FloatArray) -> bool:
    # Compared exactly: the mean of equal floats can round, leaving a std of
    # 1e-17 that would turn a constant series into a huge ratio.
    return bool(values.size == 0 or values.max() == values.min())


def _central_moments(r: FloatArray, what: str) -> tuple[float, float, float]:
    d = r - r.mean()
    m2 = float(np.mean(d * d))
    if _flat(r):
        raise InsufficientData(f"{what} is undefined: returns have zero volatility")
    d2 = d * d
    return m2, float(np.mean(d2 * d)), float(np.mean(d2 * d2))


def skewness(returns: ArrayLike) -> float:
    """Bias-corrected sample skewness ``G1 = g1 * sqrt(n(n-1)) / (n-2)`` with
    ``g1 = m3 / m2^1.5`` (as pandas ``Series.skew`` and scipy ``bias=False``)."""
    r = as_returns(returns)
    _need(r, MIN_RETURNS_SKEW, "skewness")
    n = r.size
    m2, m3, _ = _central_moments(r, "skewness")
    g1 = m3 / m2**1.5
    return float(g1 * math.sqrt(n * (n - 1)) / (n - 2))


def excess_kurtosis(returns: ArrayLike) -> float:
    """Bias-corrected sample excess kurtosis
    ``G2 = ((n+1) g2 + 6) (n-1) / ((n-2)(n-3))`` with ``g2 = m4 / m2^2 - 3``
    (as pandas ``Series.kurt`` and scipy ``bias=False``); 0 for a normal law."""
    r = as_returns(returns)
    _need(r, MIN_RETURNS_KURTOSIS, "excess kurtosis")
    n = r.size
    m2, _, m4 = _central_moments(r, "excess kurtosis")
    g2 = m4 / (m2 * m2) - 3.0
    return float(((n + 1) * g2 + 6.0) * (n - 1) / ((n - 2) * (n - 3)))


def beta(returns: ArrayLike, benchmark: ArrayLike) -> float:
    """``cov(r, b, ddof=1) / var(b, ddof=1)`` over the common observations.

    Both series are aligned by position and must have the same length; a NaN
    in either marks a day missing from that series (an asset listed later than
    the benchmark), and only days present in both are used."""
    r = np.asarray(returns, dtype=np.float64)
    b = np.asarray(benchmark, dtype=np.float64)
    if r.ndim != 1 or b.ndim != 1:
        raise RiskInputError("returns and benchmark must be one-dimensional")
    if r.shape != b.shape:
        raise RiskInputError(
            f"returns and benchmark lengths differ: {r.size} and {b.size} observations"
        )
    if np.any(np.isinf(r)) or np.any(np.isinf(b)):
        raise RiskInputError("returns or benchmark contain infinite values")
    common = ~(np.isnan(r) | np.isnan(b))
    r, b = r[common], b[common]
    if r.size < MIN_RETURNS_STD:
        raise InsufficientData(
            f"beta needs at least {MIN_RETURNS_STD} common observations, got {r.size}"
        )
    db = b - b.mean()
    var_b = float(np.dot(db, db))
    if _flat(b):
        raise InsufficientData("beta is undefined: the benchmark has zero volatility")
    # The (n - 1) of the sample covariance and variance cancel.
    return float(np.dot(r - r.mean(), db) / var_b)


# -- the report --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricReport:
    """Every key of :data:`METRIC_KEYS` (and ``beta`` when a benchmark was
    given); a value is ``None`` exactly when ``reasons`` says why."""

    values: dict[str, float | None]
    reasons: dict[str, str]


def series_metrics(
    returns: ArrayLike,
    *,
    confidence: float = 0.95,
    horizon: int = 1,
    risk_free: float = 0.0,
    benchmark: ArrayLike | None = None,
) -> MetricReport:
    """All metrics of one daily return series; metrics the series is too short
    for are ``None`` with a reason. Bad input raises :class:`RiskInputError`."""
    # Imported here: var.py builds on this module's checks and moments.
    from cryptodesk.analytics import var as var_mod

    r = as_returns(returns)
    c = check_confidence(confidence)
    h = check_horizon(horizon)
    rf = float(risk_free)
    if not math.isfinite(rf):
        raise RiskInputError(f"risk_free must be finite, got {risk_free!r}")
    if benchmark is not None:
        bench = np.asarray(benchmark, dtype=np.float64)
        if bench.shape != r.shape:
            raise RiskInputError(
                f"returns and benchmark lengths differ: {r.size} and {bench.size} observations"
            )

    metrics: dict[str, Callable[[], float]] = {
        "annual_return": lambda: annual_return(r),
        "annual_volatility": lambda: annual_volatility(r),
        "sharpe": lambda: sharpe(r, risk_free=rf),
        "sortino": lambda: sortino(r, risk_free=rf),
        "max_drawdown": lambda: max_drawdown(r),
        "calmar": lambda: calmar(r),
        "skew": lambda: skewness(r),
        "kurtosis": lambda: excess_kurtosis(r),
        "var_historical": lambda: var_mod.var_historical(r, confidence=c, horizon=h),
        "var_parametric": lambda: var_mod.var_parametric(r, confidence=c, horizon=h),
        "var_cornish_fisher": lambda: var_mod.var_cornish_fisher(r, confidence=c, horizon=h),
        "cvar_historical": lambda: var_mod.cvar_historical(r, confidence=c, horizon=h),
    }
    if benchmark is not None:
        metrics["beta"] = lambda: beta(r, bench)

    values: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    for key, compute in metrics.items():
        try:
            values[key] = compute()
        except InsufficientData as exc:
            values[key] = None
            reasons[key] = exc.reason
    return MetricReport(values=values, reasons=reasons)
