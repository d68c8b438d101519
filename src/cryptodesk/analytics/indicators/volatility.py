"""Volatility: Bollinger Bands and ATR, as TA-Lib computes them.

Both agree with TA-Lib to a few units in the last place (Bollinger's deviation
is summed more carefully than TA-Lib's; see ``bbands``), and each streaming
class agrees with its function to a few units in the last place: Bollinger's
middle band to the bit.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from cryptodesk.analytics.indicators import _kernels
from cryptodesk.analytics.indicators._kernels import (
    BLOCK,
    Recursion,
    number_param,
    ordered_sum,
    period_param,
    run_sums,
    run_sums_blockwise,
    series,
    spans,
    true_range,
)
from cryptodesk.analytics.indicators.base import FloatArray, IndicatorDef, Param

NAN = math.nan
MAX_DEVIATIONS = 100.0
# Windows whose deviation is below this fraction of their mean are summed directly.
NARROW = 1e-4

# ---- Bollinger Bands ---------------------------------------------------------------


def _run_length(period: int) -> int:
    """Windows per run, each starting from sums taken directly: ``8 * period``
    rounded up to whole blocks (see ``_kernels.run_sums_blockwise``)."""
    return -(-8 * period // BLOCK) * BLOCK


def bbands(close: FloatArray, period: int, k: float) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Bollinger Bands (upper, middle, lower), TA-Lib's BBANDS with an SMA middle.

    middle = SMA(``period``); upper / lower = middle +/- ``k`` standard
    deviations of the same window, the population deviation (divide by
    ``period``, not ``period - 1``); a window whose closes are all equal has
    deviation 0 exactly. Lookback ``period - 1``.

    TA-Lib takes the variance from running sums of shifted values and re-anchors
    them when cancellation threatens. Here the window's sum ``S`` and its sum of
    squared deviations ``Q`` run Welford's way, ``S += new - old`` and ``Q +=
    ((new - mean) + (old - previous mean)) * (new - old)`` (no large squares to
    cancel), in runs of ``8 * period`` windows that each start from sums taken
    directly (left to right); windows that barely move are summed directly (see
    ``_narrow_windows``). ``BollingerBands`` does the same step by step: the
    middle bands agree to the bit, the deviations to a few units in the last
    place (``Q`` runs blockwise here, see ``_kernels``).
    """
    period = period_param("bbands", "period", period, 2)
    k = number_param("bbands", "k", k, 0.0, MAX_DEVIATIONS)
    (close,) = series("bbands", close=close)
    size = len(close)
    upper, middle, lower = (np.empty(size) for _ in range(3))
    for band in (upper, middle, lower):
        band[: period - 1] = NAN
    if size < period:
        return upper, middle, lower
    count = size - period + 1
    scale = k * k / period  # k deviations = sqrt(Q * scale)
    run = _run_length(period)
    length = run * max(1, _kernels.SPAN // run)  # whole runs: each span stands alone
    steps_buffer, squares_buffer, updates_buffer = np.empty((3, min(length, count)))
    for begin, end in spans(count, length):
        width = end - begin
        closes = close[begin : end + period - 1]
        steps, squares = steps_buffer[:width], squares_buffer[:width]
        np.subtract(closes[period:], closes[: width - 1], out=steps[1:])
        starts = np.arange(0, width, run)
        windows = as_strided(
            closes, (len(starts), period), (run * closes.itemsize, closes.itemsize)
        )
        # S: the first of each run summed directly, then running (left to right).
        mean = middle[period - 1 + begin : period - 1 + end]
        mean[1:] = steps[1:]
        mean[starts] = np.add.accumulate(windows, axis=1)[:, -1]
        run_sums(mean, run)
        mean /= period
        # Q: the first of each run directly (two passes), then Welford's updates.
        updates = updates_buffer[:width]
        np.subtract(closes[period:], mean[1:], out=updates[1:])
        np.subtract(closes[: width - 1], mean[:-1], out=squares[1:])
        updates[1:] += squares[1:]
        updates[1:] *= steps[1:]
        deviations = windows - mean[starts, None]
        deviations *= deviations
        updates[starts] = np.add.accumulate(deviations, axis=1)[:, -1]
        run_sums_blockwise(updates, run, squares)
        deviation = upper[period - 1 + begin : period - 1 + end]  # k deviations
        np.multiply(squares, scale, out=deviation)
        with np.errstate(invalid="ignore"):  # below zero: only in windows redone next
            np.sqrt(deviation, out=deviation)
        _narrow_windows(closes, period, mean, squares, deviation, scale)
        np.subtract(mean, deviation, out=lower[period - 1 + begin : period - 1 + end])
        deviation += mean
    return upper, middle, lower


def _narrow_windows(
    close: FloatArray,
    period: int,
    mean: FloatArray,
    squares: FloatArray,
    deviation: FloatArray,
    scale: float,
) -> None:
    """Redo the windows whose deviation is under ``NARROW`` of their mean.

    A running ``Q`` carries rounding of the size ``eps * |mean| * |moves|`` from
    the larger moves earlier in its run, which matters only when the window
    itself barely moves; those windows are summed directly (two passes, left to
    right, around the running mean), and a window whose closes are all equal
    gets deviation 0 exactly.
    """
    factor = NARROW * NARROW * period
    largest = max(float(mean.max()), -float(mean.min()))
    if float(squares.min()) >= largest * factor * largest:  # none is narrow
        return
    limit = mean * factor
    limit *= mean
    narrow = np.flatnonzero(~(squares >= limit))
    if len(narrow) == 0:
        return
    changes = np.flatnonzero(close[1:] != close[:-1]) + 1  # closes unlike the one before
    # The window starting at s is flat when no change falls in s + 1 .. s + period - 1.
    after = np.searchsorted(changes, narrow + 1)
    flat = after == len(changes)
    flat[~flat] = changes[after[~flat]] > narrow[~flat] + period - 1
    deviation[narrow[flat]] = 0.0
    moving = narrow[~flat]
    deviations = sliding_window_view(close, period)[moving] - mean[moving, None]
    deviations *= deviations
    redone = np.add.accumulate(deviations, axis=1)[:, -1] if len(moving) else deviations[:, 0]
    deviation[moving] = np.sqrt(redone * scale)


class BollingerBands:
    """Streaming ``bbands``: the same runs, sums and Welford updates in the same
    order (the middle band is ``bbands``'s to the bit; ``bbands`` adds ``Q``
    blockwise). Each run's direct sums cost O(period) once per run of about
    ``8 * period`` candles: O(1) amortised. A window that barely moves (deviation
    under ``NARROW`` of its mean, as in a stablecoin's quiet hours) is summed
    directly too, O(period) for that candle. A count of equal closes in a row
    spots flat windows."""

    __slots__ = (
        "_countdown", "_leaving", "_mean", "_period", "_previous", "_same", "_scale", "_squares",
        "_total", "_warm", "_window",
    )  # fmt: skip

    def __init__(self, period: int, k: float) -> None:
        self._period = period_param("bbands", "period", period, 2)
        k = number_param("bbands", "k", k, 0.0, MAX_DEVIATIONS)
        self._scale = k * k / period  # k deviations = sqrt(squares * scale)
        self._warm = period - 1
        self._window: deque[float] = deque()
        self._total = self._mean = self._squares = self._leaving = 0.0
        self._previous = NAN
        self._same = 0  # closes in a row equal to the one before
        self._countdown = 1

    def update(self, close: float) -> tuple[float, float, float]:
        window = self._window
        window.append(close)
        self._same = self._same + 1 if close == self._previous else 0
        self._previous = close
        if self._warm:
            self._warm -= 1
            return NAN, NAN, NAN
        period = self._period
        self._countdown -= 1
        if self._countdown:
            old = self._leaving
            step = close - old
            self._total = total = self._total + step
            mean = total / period
            squares = self._squares + ((close - mean) + (old - self._mean)) * step
        else:
            self._countdown = _run_length(period)
            total = 0.0
            for value in window:
                total += value
            self._total = total
            mean = total / period
            squares = 0.0
            for value in window:
                squares += (value - mean) * (value - mean)
        self._squares, self._mean = squares, mean
        if squares >= mean * (NARROW * NARROW * period) * mean:
            deviation = math.sqrt(squares * self._scale)
        elif self._same >= period - 1:  # all closes equal
            deviation = 0.0
        else:  # barely moving: summed directly, see _narrow_windows
            squares = 0.0
            for value in window:
                squares += (value - mean) * (value - mean)
            deviation = math.sqrt(squares * self._scale)
        self._leaving = window.popleft()
        return mean + deviation, mean, mean - deviation


# ---- ATR ---------------------------------------------------------------------------


def atr(high: FloatArray, low: FloatArray, close: FloatArray, period: int) -> FloatArray:
    """Average True Range, TA-Lib's ATR (Wilder's smoothing).

    True range of candle ``i >= 1``: the larger of its high and the previous
    close minus the smaller of its low and the previous close (``max(high -
    low, |high - prev close|, |low - prev close|)``; needs low <= high). The
    first ATR, at TA-Lib's lookback ``period``, is the mean of the true ranges
    of candles 1..``period``; after it ``atr = a * atr + (1 - a) * tr`` with
    ``a = (period - 1) / period``, TA-Lib's coefficients. ``period`` 1 gives the
    true range itself.
    """
    period = period_param("atr", "period", period, 1)
    high, low, close = series("atr", high=high, low=low, close=close)
    size = len(close)
    out = np.empty(size)
    out[: min(period, size)] = NAN
    if size <= period:
        return out
    length = _kernels.SPAN // 2  # three inputs, two scratch arrays and the output in cache
    ranges, scratch = np.empty((2, max(period, min(length, size - period - 1))))
    true_range(high, low, close, ranges[:period], scratch[:period])
    out[period] = ordered_sum(ranges[:period]) / period
    a = (period - 1) / period
    recursion = Recursion(a, 1.0 - a, out[period], out[period + 1 :])
    for begin, end in spans(size - period - 1, length):
        first, count = period + 1 + begin, end - begin  # candles first .. first + count - 1
        edge = slice(first - 1, first + count)
        true_range(high[edge], low[edge], close[edge], ranges[:count], scratch[:count])
        recursion.feed(ranges[:count])
    recursion.finish()
    return out


class AverageTrueRange:
    """Streaming ``atr``: the same seed and ``a * atr + (1 - a) * tr`` (TA-Lib
    fuses that multiply-add, so a value can differ from TA-Lib's in the last
    bit). O(1)."""

    __slots__ = ("_a", "_b", "_period", "_previous", "_seen", "_total", "_value")

    def __init__(self, period: int) -> None:
        self._period = period_param("atr", "period", period, 1)
        self._a = (period - 1) / period
        self._b = 1.0 - self._a
        self._seen = 0
        self._total = 0.0
        self._previous = self._value = NAN

    def update(self, high: float, low: float, close: float) -> float:
        previous = self._previous
        self._previous = close
        top = high if high > previous else previous
        bottom = low if low < previous else previous
        value = self._value
        if value == value:  # seeded (NaN until then)
            value = self._a * value + self._b * (top - bottom)
            self._value = value
            return value
        self._seen += 1
        if self._seen == 1:  # no previous close yet
            return NAN
        self._total += top - bottom
        if self._seen <= self._period:
            return NAN
        self._value = value = self._total / self._period
        return value


DEFS: tuple[IndicatorDef, ...] = (
    IndicatorDef(
        "bbands",
        (Param("period", int, 2), Param("k", float, 0.0, MAX_DEVIATIONS)),
        ("upper", "middle", "lower"),
        ("close",),
        bbands,
        BollingerBands,
    ),
    IndicatorDef(
        "atr",
        (Param("period", int, 1),),
        ("atr",),
        ("high", "low", "close"),
        atr,
        AverageTrueRange,
    ),
)
