"""Volume indicators: OBV as TA-Lib computes it, and VWAP anchored at UTC midnight.

Both vectorised functions add in the order their streaming twins add, so the
two give identical results.
"""

from __future__ import annotations

import numpy as np

from cryptodesk.analytics.indicators._kernels import series
from cryptodesk.analytics.indicators.base import FloatArray, IndicatorDef

NAN = float("nan")
DAY_MS = 86_400_000


def obv(close: FloatArray, volume: FloatArray) -> FloatArray:
    """On-Balance Volume, TA-Lib's OBV: starts at the first candle's volume, then
    adds the volume when the close rose, subtracts it when the close fell, and
    stays when it is equal. No warm-up (TA-Lib's lookback is 0)."""
    close, volume = series("obv", close=close, volume=volume)
    size = len(close)
    out = np.empty(size)
    if size == 0:
        return out
    out[0] = volume[0]
    change = close[1:] - close[:-1]
    # The signed volume, or 0 (adds nothing) when the close is unchanged.
    np.multiply(volume[1:], change > 0.0, out=out[1:])
    out[1:] -= volume[1:] * (change < 0.0)
    return np.cumsum(out, out=out)


class OnBalanceVolume:
    """Streaming ``obv``, O(1) per candle."""

    __slots__ = ("_close", "_total")

    def __init__(self) -> None:
        self._total = NAN
        self._close = NAN

    def update(self, close: float, volume: float) -> float:
        previous = self._close
        self._close = close
        if previous != previous:  # the first candle
            self._total = volume
        elif close > previous:
            self._total += volume
        elif close < previous:
            self._total -= volume
        return self._total


def vwap(
    ts: FloatArray, high: FloatArray, low: FloatArray, close: FloatArray, volume: FloatArray
) -> FloatArray:
    """Volume-weighted average price since the start of the candle's UTC day.

    TA-Lib has no VWAP. Each candle weighs its typical price (high + low +
    close) / 3 by its volume; the sums restart whenever a candle's UTC day
    (``ts``, its open time in epoch ms, floor-divided by 86,400,000) differs
    from the previous candle's, so candles are expected in time order. While
    the day has traded no volume the price is undefined: NaN, not 0 and not a
    price carried over from the day before (which would be a different anchor).
    """
    ts, high, low, close, volume = series(
        "vwap", ts=ts, high=high, low=low, close=close, volume=volume
    )
    size = len(ts)
    out = np.empty(size)
    if size == 0:
        return out
    weighted = high + low
    weighted += close
    weighted /= 3.0
    weighted *= volume
    day = np.floor(ts).astype(np.int64) // DAY_MS  # exact, unlike a float quotient
    starts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
    lengths = np.diff(np.r_[starts, size])
    volumes = np.empty(size)
    # A running sum per day, restarting at 0: one cumsum along rows of days of
    # equal length, for each length present (one or a few for regular candles).
    for length in np.unique(lengths).tolist():
        at = starts[lengths == length]
        if len(at) == 1 or np.all(np.diff(at) == length):  # consecutive days: no gather
            rows = slice(at[0], at[0] + len(at) * length)
            np.cumsum(weighted[rows].reshape(-1, length), axis=1, out=out[rows].reshape(-1, length))
            np.cumsum(
                volume[rows].reshape(-1, length), axis=1, out=volumes[rows].reshape(-1, length)
            )
        else:
            rows = at[:, None] + np.arange(length)
            out[rows] = np.cumsum(weighted[rows], axis=1)
            volumes[rows] = np.cumsum(volume[rows], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out /= volumes
    out[~(volumes > 0.0)] = np.nan
    return out


class Vwap:
    """Streaming ``vwap``, O(1) per candle."""

    __slots__ = ("_day", "_volume", "_weighted")

    def __init__(self) -> None:
        self._day = NAN
        self._weighted = self._volume = 0.0

    def update(self, ts: float, high: float, low: float, close: float, volume: float) -> float:
        day = ts // DAY_MS
        if day != self._day:
            self._day = day
            self._weighted = self._volume = 0.0
        self._weighted += (high + low + close) / 3.0 * volume
        self._volume += volume
        if self._volume > 0.0:
            return self._weighted / self._volume
        return NAN


DEFS: tuple[IndicatorDef, ...] = (
    IndicatorDef("obv", (), ("obv",), ("close", "volume"), obv, OnBalanceVolume),
    IndicatorDef("vwap", (), ("vwap",), ("ts", "high", "low", "close", "volume"), vwap, Vwap),
)
