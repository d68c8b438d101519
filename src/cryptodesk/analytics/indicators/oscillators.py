"""Bounded oscillators: Stochastic (%K, %D), CCI and MFI, as TA-Lib computes them.

Each vectorised function repeats TA-Lib's floating-point operations in TA-Lib's
order, so its results are TA-Lib's bit for bit, and each streaming class repeats
them candle by candle, so streaming and vectorised results are identical.
Running window sums are kept as TA-Lib keeps them (add the newest value, report,
subtract the oldest); one ``cumsum`` over those additions and subtractions
interleaved reproduces that sequence exactly. Flatness tests are TA-Lib's
scale-aware ones: a difference counts as zero when ``|d| <= 1e-14 * scale``,
the scale being the magnitude of the prices compared. Warm-up positions are NaN
up to TA-Lib's lookback (the index of its first value). "TA-Lib" is the library
the ``ta-lib`` 0.8 Python package bundles: older releases tested flatness
against a fixed 1e-8 and reported an MFI of 0 whenever the flows totalled below 1.

The vectorised functions work through the series in cache-sized chunks, so
their temporaries stay small and only the outputs span the whole series.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterator
from functools import partial, reduce
from itertools import pairwise
from operator import add
from typing import Any

import numpy as np
import numpy.typing as npt

from cryptodesk.analytics.indicators._kernels import period_param, series
from cryptodesk.analytics.indicators.base import FloatArray, IndicatorDef, Param

NAN = float("nan")
# TA-Lib's TA_EPSILON: the relative width of its "is this flat" tests.
EPSILON = 1e-14
CHUNK = 32_768
_HLC = ("high", "low", "close")

# Python 3.12 made sum() of floats compensated; TA-Lib adds left to right.
_ordered_sum = sum if sys.version_info < (3, 12) else partial(reduce, add)


def window_sums(
    values: npt.NDArray[Any], period: int, restarts: frozenset[int] = frozenset()
) -> Iterator[tuple[int, npt.NDArray[Any]]]:
    """Sums of every full window of ``period`` values along the last axis, kept
    as TA-Lib keeps its running sums: add the newest, subtract the oldest.

    Yields ``(first, sums)``: ``sums[..., i]`` is the window ending at ``first +
    i + period - 1``; the array is reused, so copy what you keep. A window
    ending at an index in ``restarts`` sums to exactly 0, and the running sum
    goes on from there (TA-Lib drops rounding residue that way).
    """
    size = values.shape[-1]
    total = np.cumsum(values[..., :period], axis=-1)[..., -1:]
    if period - 1 in restarts:
        total[...] = 0.0
    yield 0, total
    cuts = sorted({*range(period, size, CHUNK), *(k + 1 for k in restarts if k >= period), size})
    scratch = np.empty((*values.shape[:-1], 2 * CHUNK + 1), dtype=values.dtype)
    for begin, end in pairwise(cuts):
        steps = scratch[..., : 2 * (end - begin) + 1]
        steps[..., 0] = total[..., 0]
        np.negative(values[..., begin - period : end - period], out=steps[..., 1::2])
        steps[..., 2::2] = values[..., begin:end]
        np.cumsum(steps, axis=-1, out=steps)
        if end - 1 in restarts:
            steps[..., -1] = 0.0
        total = steps[..., -1:]
        yield begin - period + 1, steps[..., 2::2]


def rolling_extreme(values: FloatArray, period: int, pick: np.ufunc) -> FloatArray:
    """``pick`` (np.maximum / np.minimum) of each full window, element ``j``
    ending at ``values[j + period - 1]``, by doubling windows: log2(period) passes."""
    out, width = values, 1
    while 2 * width <= period:
        out = pick(out[width:], out[:-width])
        width *= 2
    if width < period:
        out = pick(out[period - width :], out[: len(out) - (period - width)])
    return out


# ---- Stochastic --------------------------------------------------------------------


def stoch(
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    fastk_period: int,
    slowk_period: int,
    slowd_period: int,
) -> tuple[FloatArray, FloatArray]:
    """Slow stochastic (%K, %D), TA-Lib's STOCH with SMA smoothing (matype 0).

    Fast %K = (close - lowest low) / (highest high - lowest low) * 100 over
    ``fastk_period`` candles, 0 when that range is flat (within 1e-14 of the
    prices); slow %K is the SMA of fast %K over ``slowk_period``, %D the SMA of
    slow %K over ``slowd_period``. Both outputs start together at TA-Lib's
    lookback ``fastk + slowk + slowd - 3``.
    """
    fastk_period = period_param("stoch", "fastk", fastk_period, 1)
    slowk_period = period_param("stoch", "slowk", slowk_period, 1)
    slowd_period = period_param("stoch", "slowd", slowd_period, 1)
    high, low, close = series("stoch", high=high, low=low, close=close)
    size = len(close)
    start = fastk_period + slowk_period + slowd_period - 3
    if size <= start:
        return np.full(size, np.nan), np.full(size, np.nan)
    k, d = np.empty(size), np.empty(size)
    fast = d[fastk_period - 1 :]  # d's buffer holds fast %K until %D replaces it
    for begin in range(0, len(fast), CHUNK):
        end = min(len(fast), begin + CHUNK)
        highest = rolling_extreme(high[begin : end + fastk_period - 1], fastk_period, np.maximum)
        lowest = rolling_extreme(low[begin : end + fastk_period - 1], fastk_period, np.minimum)
        span = highest - lowest
        limit = np.abs(highest)
        limit += np.abs(lowest)
        limit *= EPSILON
        flat = np.abs(span) <= limit
        part = fast[begin:end]
        np.subtract(close[begin + fastk_period - 1 : end + fastk_period - 1], lowest, out=part)
        np.divide(part, span, out=part, where=~flat)
        part[flat] = 0.0
        part *= 100.0
    slow_k = k[start - slowd_period + 1 :]
    for first, sums in window_sums(fast, slowk_period):
        np.divide(sums, slowk_period, out=slow_k[first : first + len(sums)])
    for first, sums in window_sums(slow_k, slowd_period):
        np.divide(sums, slowd_period, out=d[start + first : start + first + len(sums)])
    k[:start] = d[:start] = np.nan
    return k, d


class Stochastic:
    """Streaming ``stoch``: the highest high and lowest low come from monotonic
    deques (each candle enters and leaves once: O(1) amortised), the two SMAs
    from running sums over queues of the last values."""

    __slots__ = (
        "_at", "_d_sum", "_d_values", "_fastk", "_high_at", "_highs",
        "_k_sum", "_k_values", "_low_at", "_lows", "_slowd", "_slowk",
    )  # fmt: skip

    def __init__(self, fastk_period: int, slowk_period: int, slowd_period: int) -> None:
        self._fastk = period_param("stoch", "fastk", fastk_period, 1)
        self._slowk = period_param("stoch", "slowk", slowk_period, 1)
        self._slowd = period_param("stoch", "slowd", slowd_period, 1)
        self._highs, self._lows = deque[float](), deque[float]()
        self._high_at, self._low_at = deque[int](), deque[int]()  # their candles
        self._k_values, self._d_values = deque[float](), deque[float]()
        self._at, self._k_sum, self._d_sum = 0, 0.0, 0.0

    def update(self, high: float, low: float, close: float) -> tuple[float, float]:
        at = self._at
        self._at = at + 1
        highs, high_at = self._highs, self._high_at
        while highs and highs[-1] <= high:
            highs.pop()
            high_at.pop()
        highs.append(high)
        high_at.append(at)
        if high_at[0] <= at - self._fastk:
            highs.popleft()
            high_at.popleft()
        lows, low_at = self._lows, self._low_at
        while lows and lows[-1] >= low:
            lows.pop()
            low_at.pop()
        lows.append(low)
        low_at.append(at)
        if low_at[0] <= at - self._fastk:
            lows.popleft()
            low_at.popleft()
        if at < self._fastk - 1:
            return NAN, NAN
        highest, lowest = highs[0], lows[0]
        span = highest - lowest
        flat = abs(span) <= (abs(highest) + abs(lowest)) * EPSILON
        fast = 0.0 if flat else (close - lowest) / span * 100.0
        k_values = self._k_values
        k_values.append(fast)
        k_sum = self._k_sum + fast
        if len(k_values) < self._slowk:
            self._k_sum = k_sum
            return NAN, NAN
        slow_k = k_sum / self._slowk
        self._k_sum = k_sum - k_values.popleft()
        d_values = self._d_values
        d_values.append(slow_k)
        d_sum = self._d_sum + slow_k
        if len(d_values) < self._slowd:
            self._d_sum = d_sum
            return NAN, NAN
        self._d_sum = d_sum - d_values.popleft()
        return slow_k, d_sum / self._slowd


# ---- CCI ---------------------------------------------------------------------------


def cci(high: FloatArray, low: FloatArray, close: FloatArray, period: int) -> FloatArray:
    """Commodity Channel Index, TA-Lib's CCI.

    Typical price (high + low + close) / 3; CCI = (typical - mean) / (0.015 *
    mean deviation) over ``period`` candles, 0 when the window is flat (the
    candle's deviation or the mean deviation within 1e-14 of the mean). NaN for
    the first ``period - 1`` candles.

    TA-Lib keeps the window in a ring (candle ``i`` in slot ``i % period``) and
    adds slots 0..period-1, for the mean and for the mean deviation alike. To
    add in that order, the series is cut into blocks of ``period`` candles and
    laid out transposed, one row per slot: for candle ``q * period + c`` slots
    0..c hold block ``q`` and the later slots block ``q - 1``. The mean
    deviation is O(period) per candle by definition (every deviation changes
    with the mean); so it is in TA-Lib.
    """
    period = period_param("cci", "period", period, 2)
    high, low, close = series("cci", high=high, low=low, close=close)
    size = len(close)
    if size < period:
        return np.full(size, np.nan)
    typical = np.zeros(size + 2 * period)  # a zero block before, padding after
    np.add(high, low, out=typical[period : period + size])
    typical[period : period + size] += close
    typical /= 3.0
    out = np.empty(size)
    blocks_per_chunk = max(1, CHUNK // period)
    blocks = -(-size // period)
    for first in range(0, blocks, blocks_per_chunk):
        last = min(blocks, first + blocks_per_chunk)
        begin, end = first * period, last * period
        current = typical[period + begin : period + end].reshape(-1, period).T.copy()
        earlier = typical[begin:end].reshape(-1, period).T.copy()
        mean = np.cumsum(current, axis=0)
        for j in range(1, period):
            mean[:j] += earlier[j]
        mean /= period
        deviation = np.zeros_like(mean)
        step = np.empty_like(mean)
        for j in range(period):
            np.subtract(earlier[j], mean[:j], out=step[:j])
            np.subtract(current[j], mean[j:], out=step[j:])
            np.abs(step, out=step)
            deviation += step
        deviation /= period
        off_mean = current - mean
        limit = np.abs(mean)
        limit *= EPSILON
        live = np.abs(off_mean) > limit
        live &= np.abs(deviation) > limit
        deviation *= 0.015
        result = np.zeros_like(mean)
        np.divide(off_mean, deviation, out=result, where=live)
        out[begin : min(end, size)] = result.T.ravel()[: min(end, size) - begin]
    out[: period - 1] = np.nan
    return out


class CommodityChannelIndex:
    """Streaming ``cci``: the ring buffer TA-Lib keeps, added in slot order;
    O(period) per candle for the mean deviation, as in TA-Lib."""

    __slots__ = ("_at", "_filled", "_period", "_ring")

    def __init__(self, period: int) -> None:
        self._period = period = period_param("cci", "period", period, 2)
        self._ring = [0.0] * period
        self._at = self._filled = 0

    def update(self, high: float, low: float, close: float) -> float:
        typical = (high + low + close) / 3.0
        ring, at, period = self._ring, self._at, self._period
        ring[at] = typical
        self._at = 0 if at + 1 == period else at + 1
        if self._filled < period - 1:
            self._filled += 1
            return NAN
        mean = _ordered_sum(ring) / period
        deviation = _ordered_sum([abs(x - mean) for x in ring]) / period
        off_mean = typical - mean
        limit = abs(mean) * EPSILON
        if abs(off_mean) <= limit or abs(deviation) <= limit:
            return 0.0
        return off_mean / (0.015 * deviation)


# ---- MFI ---------------------------------------------------------------------------


def mfi(
    high: FloatArray, low: FloatArray, close: FloatArray, volume: FloatArray, period: int
) -> FloatArray:
    """Money Flow Index, TA-Lib's MFI.

    Typical price (high + low + close) / 3.0; money flow = typical * volume,
    positive when the typical price rose from the previous candle, negative when
    it fell, neither when it is equal (within 1e-14 of the two prices). MFI =
    100 * positive / (positive + negative) over the last ``period`` flows, 0 when
    that total is not positive. As in TA-Lib, once ``period`` flows in a row are
    zero both running sums restart from exactly 0 (dropping rounding residue).
    NaN for the first ``period`` candles (the first candle has no flow).
    """
    period = period_param("mfi", "period", period, 2)
    high, low, close, volume = series("mfi", high=high, low=low, close=close, volume=volume)
    size = len(close)
    if size <= period:
        return np.full(size, np.nan)
    # Positive flows as the real parts, negative as the imaginary: one cumsum
    # adds both, part by part, exactly as two would.
    flows = np.empty(size - 1, dtype=np.complex128)
    parts = flows.view(np.float64)
    quiet = np.zeros(size + 1, dtype=bool)  # flow k is quiet[k + 1]: no flow
    for begin in range(0, size - 1, CHUNK):
        end = min(size - 1, begin + CHUNK)
        typical = high[begin : end + 1] + low[begin : end + 1]
        typical += close[begin : end + 1]
        typical /= 3.0
        move = typical[1:] - typical[:-1]
        flow = typical[1:] * volume[begin + 1 : end + 1]
        if not typical.min() > 0.0:  # prices are positive, so this rarely runs
            np.abs(typical, out=typical)
        limit = typical[1:] + typical[:-1]
        limit *= EPSILON
        moved = np.abs(move) > limit  # no flow where the typical price is flat
        falling = move < 0.0
        falling &= moved
        np.multiply(flow, falling, out=parts[2 * begin + 1 : 2 * end : 2])
        moved ^= falling  # now: rose
        np.multiply(flow, moved, out=parts[2 * begin : 2 * end : 2])
        moved |= falling
        quiet_part = quiet[begin + 1 : end + 1]
        np.equal(flow, 0.0, out=quiet_part)
        quiet_part |= ~moved
    # TA-Lib restarts both sums from 0 at the period-th zero flow in a row.
    edges = np.flatnonzero(quiet[1:] != quiet[:-1])
    runs = edges.reshape(-1, 2)
    restarts = frozenset((runs[runs[:, 1] - runs[:, 0] >= period, 0] + period - 1).tolist())
    out = np.empty(size)
    out[:period] = np.nan
    for first, sums in window_sums(flows, period, restarts):
        positive = sums.real
        total = positive + sums.imag
        result = out[period + first : period + first + len(total)]
        np.maximum(positive, 0.0, out=result)  # np.clip is several times slower
        np.minimum(result, total, out=result)
        with np.errstate(divide="ignore", invalid="ignore"):
            result /= total
        result *= 100.0
        if not total.min() > 0.0:
            result[total <= 0.0] = 0.0
    return out


class MoneyFlowIndex:
    """Streaming ``mfi``: rings of the last ``period`` positive and negative
    flows and their running sums, O(1) per candle."""

    __slots__ = (
        "_at", "_flows", "_neg_sum", "_negative", "_period", "_pos_sum",
        "_positive", "_previous", "_quiet",
    )  # fmt: skip

    def __init__(self, period: int) -> None:
        self._period = period = period_param("mfi", "period", period, 2)
        self._positive = [0.0] * period
        self._negative = [0.0] * period
        self._pos_sum = self._neg_sum = 0.0
        self._at = self._flows = self._quiet = 0
        self._previous = NAN

    def update(self, high: float, low: float, close: float, volume: float) -> float:
        typical = (high + low + close) / 3.0
        previous = self._previous
        self._previous = typical
        if previous != previous:  # the first candle: no flow yet
            return NAN
        period, at = self._period, self._at
        positive, negative = self._positive, self._negative
        pos_sum, neg_sum = self._pos_sum, self._neg_sum
        if self._flows == period:
            pos_sum -= positive[at]
            neg_sum -= negative[at]
        else:
            self._flows += 1
        move = typical - previous
        flow = typical * volume
        if abs(move) <= (abs(typical) + abs(previous)) * EPSILON:
            flow = 0.0
        if move < 0.0:
            positive[at], negative[at] = 0.0, flow
            neg_sum += flow
        else:
            positive[at], negative[at] = flow, 0.0
            pos_sum += flow
        if flow == 0.0:
            self._quiet += 1
            if self._quiet >= period:
                pos_sum = neg_sum = 0.0
        else:
            self._quiet = 0
        self._pos_sum, self._neg_sum = pos_sum, neg_sum
        self._at = 0 if at + 1 == period else at + 1
        if self._flows < period:
            return NAN
        total = pos_sum + neg_sum
        if total <= 0.0:
            return 0.0
        share = total if pos_sum > total else max(pos_sum, 0.0)
        return 100.0 * (share / total)


# Parameter ranges are TA-Lib's.
_STOCH = (Param("fastk", int, 1), Param("slowk", int, 1), Param("slowd", int, 1))
_PERIOD = (Param("period", int, 2),)

DEFS: tuple[IndicatorDef, ...] = (
    IndicatorDef("stoch", _STOCH, ("k", "d"), _HLC, stoch, Stochastic),
    IndicatorDef("cci", _PERIOD, ("cci",), _HLC, cci, CommodityChannelIndex),
    IndicatorDef("mfi", _PERIOD, ("mfi",), (*_HLC, "volume"), mfi, MoneyFlowIndex),
)
