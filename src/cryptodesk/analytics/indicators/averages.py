"""Moving averages of the close: SMA, EMA and WMA, as TA-Lib computes them.

TA-Lib's lookback (the index of the first value, NaN before it) is
``period - 1`` for all three. The streaming classes repeat TA-Lib's own
floating-point steps (SMA and WMA to the bit; EMA up to TA-Lib's fused
multiply-add, a unit in the last place now and then). The vectorised functions
run the same recursions blockwise (``_kernels``; short WMAs sum each window
directly) and agree with both to a few units in the last place.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from cryptodesk.analytics.indicators._kernels import (
    BLOCK,
    block_product,
    first_order,
    ordered_sum,
    period_param,
    rolling_sums,
    series,
)
from cryptodesk.analytics.indicators.base import FloatArray, IndicatorDef, Param

NAN = math.nan

# ---- SMA ---------------------------------------------------------------------------


def sma(close: FloatArray, period: int) -> FloatArray:
    """Simple moving average of ``period`` closes, TA-Lib's SMA.

    Lookback ``period - 1``. TA-Lib keeps a running total (add the newest close,
    divide by ``period``, subtract the oldest); the first window is added left
    to right.
    """
    period = period_param("sma", "period", period, 1)
    (close,) = series("sma", close=close)
    out = np.empty(len(close))
    out[: period - 1] = NAN
    if len(close) >= period:
        rolling_sums(close, period, divisor=period, out=out[period - 1 :])
    return out


class SimpleMovingAverage:
    """Streaming ``sma``: TA-Lib's running total, step for step, so each value is
    TA-Lib's to the bit. O(1): one add, one subtract, a queue of ``period``."""

    __slots__ = ("_period", "_total", "_warm", "_window")

    def __init__(self, period: int) -> None:
        self._period = period_param("sma", "period", period, 1)
        self._warm = period - 1  # closes still to collect before the first value
        self._window: deque[float] = deque()
        self._total = 0.0

    def update(self, close: float) -> float:
        window = self._window
        window.append(close)
        total = self._total + close
        if self._warm:
            self._warm -= 1
            self._total = total
            return NAN
        self._total = total - window.popleft()
        return total / self._period


# ---- EMA ---------------------------------------------------------------------------


def ema(close: FloatArray, period: int) -> FloatArray:
    """Exponential moving average, TA-Lib's EMA (default, not Metastock, seeding).

    ``k = 2 / (period + 1)``. The first value, at TA-Lib's lookback ``period - 1``,
    is the SMA of the first ``period`` closes (added left to right); after it
    ``ema = ema + k * (close - ema)``.
    """
    period = period_param("ema", "period", period, 1)
    (close,) = series("ema", close=close)
    out = np.empty(len(close))
    out[: period - 1] = NAN
    if len(close) >= period:
        out[period - 1] = seed = ordered_sum(close[:period]) / period
        k = 2.0 / (period + 1)
        first_order(close[period:], 1.0 - k, k, seed, out=out[period:])
    return out


class ExponentialMovingAverage:
    """Streaming ``ema``: SMA seed, then ``(close - ema) * k + ema`` as TA-Lib
    writes it (TA-Lib fuses the multiply-add, so a value can differ from TA-Lib's
    in the last bit). O(1)."""

    __slots__ = ("_k", "_period", "_seen", "_total", "_value")

    def __init__(self, period: int) -> None:
        self._period = period_param("ema", "period", period, 1)
        self._k = 2.0 / (period + 1)
        self._seen = 0
        self._total = 0.0
        self._value = NAN

    def update(self, close: float) -> float:
        value = self._value
        if value == value:  # seeded (NaN until then)
            value = (close - value) * self._k + value
            self._value = value
            return value
        self._seen += 1
        self._total += close
        if self._seen < self._period:
            return NAN
        if self._period == 1:  # k = 1: the close itself (never seeded, never stepped)
            return close
        self._value = value = self._total / self._period
        return value


# ---- WMA ---------------------------------------------------------------------------


DIRECT_WMA_PERIODS = 48  # up to here the weighted sums are taken directly


def _wma_direct(close: FloatArray, weights: FloatArray, out: FloatArray) -> None:
    """``out[j]`` = ``close[j : j + period] @ weights``, taken directly: a block
    of ``BLOCK`` outputs draws on ``ceil((period + BLOCK - 1) / BLOCK)`` blocks of
    closes, one matrix product each. No rounding carries from one value to the
    next; the cost grows with the period, hence ``DIRECT_WMA_PERIODS``."""
    period, size = len(weights), len(out)
    terms = -(-(period + BLOCK - 1) // BLOCK)
    rows = max(0, min(size // BLOCK, len(close) // BLOCK - terms + 1))
    if rows:
        # Close q of block m + c feeds output r of block m with weight index 16c + q - r.
        index = BLOCK * np.arange(terms)[:, None, None] + np.arange(BLOCK)[:, None]
        index = index - np.arange(BLOCK)
        padded = np.concatenate(([0.0], weights, [0.0]))
        parts = padded[np.clip(index + 1, 0, period + 1)]
        block_product(
            out[: rows * BLOCK].reshape(rows, BLOCK),
            *(
                (close[BLOCK * c : BLOCK * (c + rows)].reshape(rows, BLOCK), parts[c])
                for c in range(terms)
            ),
        )
    rest = sliding_window_view(close, period)[rows * BLOCK : size]
    out[rows * BLOCK :] = (rest * weights).sum(axis=1)


def _carried(step: FloatArray, first: FloatArray, group: int) -> FloatArray:
    """Running totals restarted every ``group`` blocks: element ``m`` is
    ``first[m // group]`` plus the ``step`` of the earlier blocks of its group."""
    rows = len(step)
    padded = np.zeros(len(first) * group)
    padded[:rows] = step
    steps = padded.reshape(-1, group)
    totals = np.empty_like(steps)
    totals[:, 0] = first
    np.cumsum(steps[:, :-1], axis=1, out=totals[:, 1:])
    totals[:, 1:] += first[:, None]
    return totals.ravel()[:rows]


def _wma_recursive(close: FloatArray, weights: FloatArray, out: FloatArray) -> None:
    """``out[j]`` = ``close[j : j + period] @ weights`` (``weights`` = 1..period
    scaled by ``scale``), through TA-Lib's recursion.

    With ``S`` the window sum and ``N`` the weighted sum (both scaled), each step
    is ``N += period * new - S`` then ``S += new - oldest``. Over a block of
    ``BLOCK`` steps both unroll into fixed weights on the block's new and oldest
    closes (two matrix products) plus what the block carries in; the carries
    chain from block to block and restart every ``group`` blocks from sums taken
    directly, which bounds the rounding a running sum of sums gathers (TA-Lib
    re-adds its window every ``8 * period`` steps for the same reason).
    """
    period = len(weights)
    scale = float(weights[0])
    out[0] = n_before = float((close[:period] * weights).sum())
    s_before = float(close[:period].sum()) * scale
    values = out[1:]
    size = len(values)
    rows = size // BLOCK
    if rows:
        lag = np.arange(BLOCK)[None, :] - np.arange(BLOCK)[:, None]
        weights_new = np.where(lag >= 0, period - lag, 0) * scale
        weights_old = np.where(lag > 0, lag, 0) * scale
        fresh = close[period : period + rows * BLOCK].reshape(rows, BLOCK)
        oldest = close[: rows * BLOCK].reshape(rows, BLOCK)
        # Each block's own last N and rise in S (nothing carried in) ...
        ones = np.full((BLOCK, 1), scale)
        ends = np.empty((rows, 2))
        block_product(
            ends,
            (fresh, np.hstack((weights_new[:, -1:], ones))),
            (oldest, np.hstack((weights_old[:, -1:], -ones))),
        )
        rise = ends[:, 1]
        # ... S and N carried into each block, restarting from direct sums ...
        group = max(4, -(-period // 2))  # blocks between restarts: 16 * group >= 8 * period
        windows = sliding_window_view(close, period)[np.arange(0, rows, group) * BLOCK]
        s_rows = _carried(rise, windows.sum(axis=1) * scale, group)
        n_rows = _carried(ends[:, 0] - BLOCK * s_rows, (windows * weights).sum(axis=1), group)
        # ... and every value: its block's own part plus what the block carries in.
        carried = np.stack((n_rows, s_rows), axis=1)
        steps = np.stack((np.ones(BLOCK), -np.arange(1.0, BLOCK + 1.0)))
        block = values[: rows * BLOCK].reshape(rows, BLOCK)
        block_product(block, (fresh, weights_new), (oldest, weights_old), (carried, steps))
        s_before = float(s_rows[-1] + rise[-1])
        n_before = float(block[-1, -1])
    fresh_tail = close[period + rows * BLOCK :].tolist()
    oldest_tail = close[rows * BLOCK : size].tolist()
    step = period * scale
    for t, (new, old) in enumerate(zip(fresh_tail, oldest_tail, strict=True), rows * BLOCK):
        n_before += new * step - s_before
        s_before += (new - old) * scale
        values[t] = n_before


def wma(close: FloatArray, period: int) -> FloatArray:
    """Linearly weighted moving average, TA-Lib's WMA: weights 1..``period``,
    the newest close heaviest, divided by ``period * (period + 1) / 2``.
    Lookback ``period - 1``.

    Periods up to ``DIRECT_WMA_PERIODS`` take each weighted sum directly;
    longer ones run TA-Lib's recursion blockwise (``_wma_recursive``).
    """
    period = period_param("wma", "period", period, 1)
    (close,) = series("wma", close=close)
    out = np.empty(len(close))
    out[: period - 1] = NAN
    if len(close) < period:
        return out
    weights = np.arange(1.0, period + 1.0) / (period * (period + 1) / 2)
    if period <= DIRECT_WMA_PERIODS:
        _wma_direct(close, weights, out[period - 1 :])
    else:
        _wma_recursive(close, weights, out[period - 1 :])
    return out


class WeightedMovingAverage:
    """Streaming ``wma``: TA-Lib's two running sums, step for step, so each value
    is TA-Lib's to the bit: the plain sum of the window and the weighted sum,
    which gains ``period * close`` and loses the plain sum each step. Like
    TA-Lib it re-adds the window from scratch every ``8 * period`` values to
    shed rounding: O(1) amortised."""

    __slots__ = (
        "_countdown", "_divider", "_period", "_plain", "_trailing", "_warm", "_weighted",
        "_window",
    )  # fmt: skip

    def __init__(self, period: int) -> None:
        self._period = period_param("wma", "period", period, 1)
        self._divider = period * (period + 1) / 2
        self._warm = period - 1
        self._window: deque[float] = deque()
        self._plain = self._weighted = self._trailing = 0.0
        self._countdown = 8 * period

    def update(self, close: float) -> float:
        window = self._window
        window.append(close)
        if self._warm:
            self._warm -= 1
            self._plain += close
            self._weighted += close * len(window)
            return NAN
        if self._period == 1:
            window.clear()
            return close
        self._countdown -= 1
        if self._countdown:
            plain = self._plain + close - self._trailing
            weighted = close * self._period + self._weighted
        else:
            self._countdown = 8 * self._period
            plain = weighted = 0.0
            for weight, value in enumerate(window, 1):
                plain += value
                weighted += value * weight
        self._plain = plain
        self._weighted = weighted - plain
        self._trailing = window.popleft()
        return weighted / self._divider


DEFS: tuple[IndicatorDef, ...] = (
    IndicatorDef("sma", (Param("period", int, 1),), ("sma",), ("close",), sma, SimpleMovingAverage),
    IndicatorDef(
        "ema", (Param("period", int, 1),), ("ema",), ("close",), ema, ExponentialMovingAverage
    ),
    IndicatorDef(
        "wma", (Param("period", int, 1),), ("wma",), ("close",), wma, WeightedMovingAverage
    ),
)
