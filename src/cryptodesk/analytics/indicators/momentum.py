"""Momentum of the close: RSI and MACD, as TA-Lib computes them.

The streaming classes repeat TA-Lib's floating-point steps (RSI to the bit;
MACD's EMAs up to TA-Lib's fused multiply-add, a unit in the last place now
and then). The vectorised functions run the same recursions blockwise
(``_kernels.first_order``) and agree with both to a few units in the last
place (MACD, a difference of two EMAs, to a few units of the price's last
place).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cryptodesk.analytics.indicators import _kernels
from cryptodesk.analytics.indicators._kernels import (
    first_order,
    ordered_sum,
    period_param,
    series,
    smooth,
    spans,
)
from cryptodesk.analytics.indicators.base import FloatArray, IndicatorDef, IndicatorError, Param

NAN = math.nan

# ---- RSI ---------------------------------------------------------------------------


def rsi(close: FloatArray, period: int) -> FloatArray:
    """Relative Strength Index, TA-Lib's RSI (Wilder's smoothing).

    Gains and losses are the positive and negative close-to-close changes. Their
    averages start as the plain means of the first ``period`` changes, then
    follow Wilder: ``avg = (avg * (period - 1) + change) / period`` (TA-Lib
    multiplies by ``1 / period``). RSI = ``100 * gain / (gain + loss)``, 0 when
    both averages are 0. TA-Lib's lookback is ``period`` (the first value needs
    ``period`` changes, so ``period + 1`` closes).

    Wilder's smoothing is linear, so ``gain + loss`` is smoothed here as one
    series, the absolute changes: two recursions and one division per value
    (with only gains the two are equal, so RSI is exactly 100 as in TA-Lib).
    """
    period = period_param("rsi", "period", period, 2)
    (close,) = series("rsi", close=close)
    size = len(close)
    out = np.empty(size)
    out[: min(period, size)] = NAN
    if size <= period:
        return out
    inverse = 1.0 / period
    first = close[1 : period + 1] - close[:period]
    up = np.maximum(first, 0.0)
    gain = ordered_sum(up) * inverse
    loss = ordered_sum(up - first) * inverse  # TA-Lib: up - change, i.e. -change or 0
    total = loss + gain
    out[period] = gain / total * 100.0 if total > 0.0 else 0.0
    a = (period - 1) * inverse
    length = min(_kernels.SPAN, size - period - 1)
    moves, ups, gains, totals = np.empty((4, length))
    for start, stop in spans(size - period - 1):
        at, count = period + start, stop - start
        move, up, gain_avg, total_avg = moves[:count], ups[:count], gains[:count], totals[:count]
        np.subtract(close[at + 1 : at + 1 + count], close[at : at + count], out=move)
        np.maximum(move, 0.0, out=up)
        np.abs(move, out=move)
        gain = smooth(up, a, inverse, gain, gain_avg)
        total = smooth(move, a, inverse, total, total_avg)
        values = out[at + 1 : at + 1 + count]
        with np.errstate(invalid="ignore"):
            np.divide(gain_avg, total_avg, out=values)
        np.fmax(values, 0.0, out=values)  # 0 / 0, no move at all yet: TA-Lib says 0
        values *= 100.0
    return out


class RelativeStrengthIndex:
    """Streaming ``rsi``: TA-Lib's steps in TA-Lib's order, so each value is
    TA-Lib's to the bit. O(1)."""

    __slots__ = ("_gain", "_inverse", "_loss", "_period", "_previous", "_scale", "_seen")

    def __init__(self, period: int) -> None:
        self._period = period_param("rsi", "period", period, 2)
        self._inverse = 1.0 / period
        self._scale = float(period - 1)
        self._seen = 0  # closes seen, while warming up
        self._previous = self._gain = self._loss = 0.0

    def update(self, close: float) -> float:
        change = close - self._previous
        self._previous = close
        up = change if change > 0.0 else 0.0
        if self._seen > self._period:
            gain = (self._gain * self._scale + up) * self._inverse
            loss = ((up - change) + self._loss * self._scale) * self._inverse
        else:
            self._seen += 1
            if self._seen == 1:
                return NAN
            gain = self._gain + up
            loss = self._loss + (up - change)
            if self._seen <= self._period:
                self._gain, self._loss = gain, loss
                return NAN
            gain *= self._inverse
            loss *= self._inverse
        self._gain, self._loss = gain, loss
        total = loss + gain
        return gain / total * 100.0 if total > 0.0 else 0.0


# ---- MACD --------------------------------------------------------------------------


def _check_macd(fast: int, slow: int, signal: int) -> tuple[int, int, int]:
    fast = period_param("macd", "fast", fast, 2)
    slow = period_param("macd", "slow", slow, 2)
    signal = period_param("macd", "signal", signal, 1)
    problem = _macd_problem((fast, slow))
    if problem:
        raise IndicatorError(f"macd {problem}", field="fast")
    return fast, slow, signal


def _macd_problem(params: Sequence[float]) -> str | None:
    return "fast must be shorter than slow" if params[0] >= params[1] else None


def macd(
    close: FloatArray, fast: int, slow: int, signal: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """MACD line, signal line and histogram, TA-Lib's MACD.

    line = EMA(fast) - EMA(slow) of the close; signal = EMA(signal) of the line;
    histogram = line - signal (EMAs as in ``ema``: SMA seed, then
    ``k = 2 / (period + 1)``). TA-Lib aligns the two EMAs: both start at close
    ``slow - 1``, the slow one seeded with the mean of the first ``slow`` closes
    and the fast one with the mean of the ``fast`` closes ending there (not run
    from close 0). The signal is seeded with the mean of the first ``signal``
    line values. All three outputs start together at TA-Lib's lookback
    ``slow + signal - 2``. ``fast`` must be shorter than ``slow`` (TA-Lib
    silently swaps them).
    """
    fast, slow, signal = _check_macd(fast, slow, signal)
    (close,) = series("macd", close=close)
    size = len(close)
    start = slow + signal - 2
    line_out, signal_out, hist_out = (np.empty(size) for _ in range(3))
    if size <= start:
        for output in (line_out, signal_out, hist_out):
            output.fill(NAN)
        return line_out, signal_out, hist_out
    # The line from close slow - 1 on (the signal's seed needs the first values).
    k_fast, k_slow = 2.0 / (fast + 1), 2.0 / (slow + 1)
    fast_ema = ordered_sum(close[slow - fast : slow]) / fast
    slow_ema = ordered_sum(close[:slow]) / slow
    line_out[slow - 1] = fast_ema - slow_ema
    fasts = np.empty(min(_kernels.SPAN, size - slow))
    for begin, end in spans(size - slow):
        prices, fast_span = close[slow + begin : slow + end], fasts[: end - begin]
        line = line_out[slow + begin : slow + end]
        fast_ema = smooth(prices, 1.0 - k_fast, k_fast, fast_ema, fast_span)
        slow_ema = smooth(prices, 1.0 - k_slow, k_slow, slow_ema, line)
        np.subtract(fast_span, line, out=line)
    k = 2.0 / (signal + 1)
    signal_out[start] = seed = ordered_sum(line_out[slow - 1 : start + 1]) / signal
    first_order(line_out[start + 1 :], 1.0 - k, k, seed, out=signal_out[start + 1 :])
    np.subtract(line_out[start:], signal_out[start:], out=hist_out[start:])
    for output in (line_out, signal_out, hist_out):
        output[:start] = NAN
    return line_out, signal_out, hist_out


class MACD:
    """Streaming ``macd``: the same seeds and alignment, then each EMA steps as
    TA-Lib writes it, ``(value - ema) * k + ema`` (TA-Lib fuses the multiply-add,
    so a value can differ from TA-Lib's in the last bit). O(1)."""

    __slots__ = (
        "_fast", "_fast_k", "_fast_sum", "_fast_value", "_line_seen", "_line_sum", "_seen",
        "_signal", "_signal_k", "_signal_value", "_slow", "_slow_k", "_slow_sum", "_slow_value",
    )  # fmt: skip

    def __init__(self, fast: int, slow: int, signal: int) -> None:
        self._fast, self._slow, self._signal = _check_macd(fast, slow, signal)
        self._fast_k, self._slow_k = 2.0 / (fast + 1), 2.0 / (slow + 1)
        self._signal_k = 2.0 / (signal + 1)
        self._seen = self._line_seen = 0
        self._fast_sum = self._slow_sum = self._line_sum = 0.0
        self._fast_value = self._slow_value = 0.0
        self._signal_value = NAN

    def update(self, close: float) -> tuple[float, float, float]:
        signal = self._signal_value
        if signal != signal:  # NaN: not seeded yet
            return self._warm_up(close)
        fast = self._fast_value
        fast += (close - fast) * self._fast_k
        slow = self._slow_value
        slow += (close - slow) * self._slow_k
        self._fast_value, self._slow_value = fast, slow
        line = fast - slow
        signal = (line - signal) * self._signal_k + signal
        self._signal_value = signal
        return line, signal, line - signal

    def _warm_up(self, close: float) -> tuple[float, float, float]:
        self._seen += 1
        self._slow_sum += close
        if self._seen > self._slow - self._fast:
            self._fast_sum += close
        if self._seen < self._slow:
            return NAN, NAN, NAN
        if self._seen == self._slow:
            fast, slow = self._fast_sum / self._fast, self._slow_sum / self._slow
        else:
            fast = (close - self._fast_value) * self._fast_k + self._fast_value
            slow = (close - self._slow_value) * self._slow_k + self._slow_value
        self._fast_value, self._slow_value = fast, slow
        line = fast - slow
        self._line_seen += 1
        self._line_sum += line
        if self._line_seen < self._signal:
            return NAN, NAN, NAN
        self._signal_value = signal = self._line_sum / self._signal
        return line, signal, line - signal


DEFS: tuple[IndicatorDef, ...] = (
    IndicatorDef(
        "rsi", (Param("period", int, 2),), ("rsi",), ("close",), rsi, RelativeStrengthIndex
    ),
    IndicatorDef(
        "macd",
        (Param("fast", int, 2), Param("slow", int, 2), Param("signal", int, 1)),
        ("line", "signal", "hist"),
        ("close",),
        macd,
        MACD,
        check=_macd_problem,
    ),
)
