"""Performance metrics of a backtest: returns, risk-adjusted ratios, trade statistics.

Conventions (stated in the report too):

- Period returns are the candle-to-candle changes of the equity marked at each
  close, the first against the initial cash.
- Annualisation uses 365 days (crypto trades every day): ``periods_per_year``
  is 365 days over the candle interval; CAGR uses the calendar span of the
  series, first open to last close, so gaps in the data do not shorten it.
- Sharpe: mean over sample standard deviation (ddof 1) of the period returns,
  times sqrt(periods per year), with a zero risk-free rate. Sortino: the same
  mean over the downside deviation, sqrt(mean(min(r, 0)^2)) over all periods
  (target 0). Calmar: CAGR over the maximum drawdown.
- Maximum drawdown: the largest fall from a running peak, as a positive
  fraction of that peak (0.25 = 25%); the initial cash is the first peak.
- Win rate: winning trades (net pnl > 0) over trades; profit factor: gross
  profit over gross loss. Exposure: the share of candles that closed with a
  position open.
- A ratio whose denominator is zero (no trades, no losses, a flat curve) is
  NaN, written as null in JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from cryptodesk.domain.interval import DAY_MS

if TYPE_CHECKING:
    from cryptodesk.analytics.backtest import BacktestTrade

YEAR_MS = 365 * DAY_MS
NAN = math.nan


@dataclass(frozen=True, slots=True)
class Metrics:
    initial_cash: float
    final_equity: float
    total_return: float
    cagr: float
    sharpe: float
    sortino: float
    calmar: float
    max_drawdown: float
    win_rate: float
    profit_factor: float
    exposure: float
    trades: int
    fees: float
    years: float
    periods_per_year: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _ratio(top: float, bottom: float) -> float:
    return top / bottom if bottom > 0 and math.isfinite(top) else NAN


def _cagr(growth: float, years: float) -> float:
    if years <= 0:
        return NAN
    if growth <= 0:
        return -1.0
    try:
        return float(growth ** (1 / years) - 1)
    except OverflowError:  # a gain compounded over a few hours: meaningless, not an error
        return math.inf


def drawdown(equity: npt.NDArray[np.float64], initial_cash: float) -> npt.NDArray[np.float64]:
    """Fall from the running peak at each point, as a positive fraction of the peak."""
    peaks = np.maximum.accumulate(np.concatenate(([initial_cash], equity)))[1:]
    out: npt.NDArray[np.float64] = 1.0 - equity / peaks
    return out


def compute_metrics(
    equity: npt.NDArray[np.float64],
    initial_cash: float,
    trades: Sequence[BacktestTrade],
    *,
    exposed_bars: int,
    ts: npt.NDArray[np.int64],
    interval_ms: int,
) -> Metrics:
    """Every metric of one run; ``equity`` has one value per candle, marked at its close."""
    n = len(equity)
    periods_per_year = YEAR_MS / interval_ms
    final = float(equity[-1]) if n else initial_cash
    total_return = final / initial_cash - 1
    span_ms = int(ts[-1]) + interval_ms - int(ts[0]) if n else 0
    years = span_ms / YEAR_MS
    cagr = _cagr(final / initial_cash, years)
    curve = np.concatenate(([initial_cash], equity))
    returns = curve[1:] / curve[:-1] - 1 if n else np.array([], np.float64)
    scale = math.sqrt(periods_per_year)
    mean = float(returns.mean()) if n else NAN
    std = float(returns.std(ddof=1)) if n > 1 else NAN
    downside = math.sqrt(float(np.mean(np.minimum(returns, 0.0) ** 2))) if n else NAN
    max_dd = float(drawdown(equity, initial_cash).max()) if n else 0.0
    wins = [t.pnl for t in trades if t.pnl > 0]
    losses = [-t.pnl for t in trades if t.pnl <= 0]
    return Metrics(
        initial_cash=initial_cash,
        final_equity=final,
        total_return=total_return,
        cagr=cagr,
        sharpe=_ratio(mean, std) * scale,
        sortino=_ratio(mean, downside) * scale,
        calmar=_ratio(cagr, max_dd),
        max_drawdown=max_dd,
        win_rate=len(wins) / len(trades) if trades else NAN,
        profit_factor=_ratio(sum(wins), sum(losses)),
        exposure=exposed_bars / n if n else 0.0,
        trades=len(trades),
        fees=sum(t.fees for t in trades),
        years=years,
        periods_per_year=periods_per_year,
    )
