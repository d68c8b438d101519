"""Trend strength: ADX (Average Directional Movement Index), as TA-Lib computes it.

Wilder's definitions, with TA-Lib's seeding:

- one-candle directional movement: up = high - previous high, down = previous
  low - low; -DM1 = down when down > 0 and up < down, else +DM1 = up when
  up > 0 and up > down, else neither (equal moves cancel);
- true range: the largest of high - low, |high - previous close|,
  |low - previous close|;
- -DM, +DM and TR are Wilder-smoothed: the first value is the plain sum of the
  first ``period - 1`` one-candle values (the first candle has none), then
  ``S = S - S / period + today``;
- -DI = 100 * -DM / TR, +DI likewise; DX = 100 * |-DI - +DI| / (-DI + +DI),
  undefined when TR is 0 or the DIs sum to less than 1e-14;
- the first ADX is the sum of the first ``period`` DX divided by ``period``
  (undefined DX count as 0), then ``ADX = (ADX * (period - 1) + DX) / period``,
  holding its value where DX is undefined.

So the first ADX is at index ``2 * period - 1`` (TA-Lib's lookback); NaN before.

The streaming class repeats TA-Lib's operations exactly. The vectorised function
runs each Wilder recursion blockwise (``_kernels.first_order``), which rounds
differently from TA-Lib's ``S - S / period``: its values agree with TA-Lib's
and the streaming class's to about 1e-14 relative (the recursions are
contractions, so rounding does not build up), except where ADX itself is only
rounding residue (+DM and -DM equal up to rounding: ADX near 1e-14 instead of 0).
"""

from __future__ import annotations

import numpy as np

from cryptodesk.analytics.indicators._kernels import first_order, period_param, series
from cryptodesk.analytics.indicators.base import FloatArray, IndicatorDef, Param

NAN = float("nan")
CHUNK = 32_768
# TA-Lib's TA_IS_ZERO band for the sum of the two DIs (percentages, so absolute).
DI_ZERO = 1e-14


def _movement(high: FloatArray, low: FloatArray) -> FloatArray:
    """For every candle after the first, -DM1 - +DM1 and -DM1 + +DM1 as the two
    rows of one array (at most one of -DM1 and +DM1 is non-zero)."""
    up = high[1:] - high[:-1]
    down = low[:-1] - low[1:]
    out = np.empty((2, len(up)))
    signed, total = out
    np.maximum(up, down, out=total)
    np.maximum(total, 0.0, out=total)
    np.multiply(total, up != down, out=total)  # equal moves cancel: neither counts
    np.subtract(down, up, out=signed)
    np.copysign(total, signed, out=signed)
    return out


def _true_range(high: FloatArray, low: FloatArray, close: FloatArray) -> FloatArray:
    """TR1 of every candle after the first: max(high, previous close) - min(low,
    previous close), the largest of TA-Lib's three ranges, rounded alike
    (rounding is monotonic) when high >= low."""
    true_range = np.maximum(high[1:], close[:-1])
    true_range -= np.minimum(low[1:], close[:-1])
    return true_range


def adx(high: FloatArray, low: FloatArray, close: FloatArray, period: int) -> FloatArray:
    """ADX over ``period`` candles, TA-Lib's ADX (see the module docstring).

    The DIs' common factor 100 / TR cancels in DX, so only -DM - +DM and -DM +
    +DM are smoothed. TR decides only whether DX is defined (TR != 0 and the
    DIs summing to at least 1e-14); for valid candles smoothed TR never exceeds
    ``period`` times the widest high - low span since (or its earlier bound,
    decayed), so the test is settled from that bound, and TR is smoothed only
    when a stretch of vanishing movement leaves it open.
    """
    period = period_param("adx", "period", period, 2)
    high, low, close = series("adx", high=high, low=low, close=close)
    size = len(close)
    out = np.full(size, np.nan)
    first_adx = 2 * period - 1
    if size <= first_adx:
        return out
    keep = (period - 1) / period
    seed = np.add.accumulate(_movement(high[:period], low[:period]), axis=1)[:, -1].tolist()
    seed_range = float(
        np.add.accumulate(_true_range(high[:period], low[:period], close[:period]))[-1]
    )
    range_bound, range_at, smoothed_range = seed_range, period, seed_range
    dx_sum, last = 0.0, NAN
    for begin in range(period, size, CHUNK):
        end = min(size, begin + CHUNK)
        movement = _movement(high[begin - 1 : end], low[begin - 1 : end])
        signed, total = smoothed = np.empty_like(movement)
        for row, start in enumerate(seed):
            first_order(movement[row], keep, 1.0, start, out=smoothed[row])
        seed = [float(signed[-1]), float(total[-1])]
        span = period * (float(high[begin - 1 : end].max()) - float(low[begin - 1 : end].min()))
        defined = total > max(range_bound, span) * (1.0 + 1e-9) * (DI_ZERO / 100.0)
        range_bound = keep ** (end - begin) * range_bound + span
        if not defined.all():
            rows = slice(range_at - 1, end)
            ranges = first_order(
                _true_range(high[rows], low[rows], close[rows]), keep, 1.0, smoothed_range
            )
            range_at, smoothed_range = end, float(ranges[-1])
            ranges = ranges[len(ranges) - (end - begin) :]
            defined = (ranges != 0.0) & (total * 100.0 >= ranges * DI_ZERO)
        with np.errstate(divide="ignore", invalid="ignore"):
            dx = np.abs(signed, out=signed)
            dx /= total  # DX / 100
        split = min(end, first_adx + 1) - begin  # candles up to the first ADX
        if split > 0:
            dx_sum = float(np.add.accumulate(np.r_[dx_sum, dx[:split][defined[:split]]])[-1])
            if begin + split - 1 == first_adx:
                last = out[first_adx] = dx_sum * 100.0 / period
        split = max(split, 0)
        if split == end - begin:
            continue
        later = defined[split:]
        if later.all():
            first_order(dx[split:], keep, 100.0 / period, last, out=out[begin + split : end])
        else:
            values = first_order(dx[split:][later], keep, 100.0 / period, last)
            # Hold the last ADX where DX is undefined: index each candle's latest value.
            out[begin + split : end] = np.r_[last, values][np.cumsum(later)]
        last = float(out[end - 1])
    return out


class AverageDirectionalIndex:
    """Streaming ``adx``: TA-Lib's recursions, operation for operation, O(1)."""

    __slots__ = (
        "_adx", "_count", "_dx_sum", "_minus_dm", "_period", "_plus_dm",
        "_prev_close", "_prev_high", "_prev_low", "_true_range",
    )  # fmt: skip

    def __init__(self, period: int) -> None:
        self._period = period_param("adx", "period", period, 2)
        self._count = 0
        self._minus_dm = self._plus_dm = self._true_range = self._dx_sum = 0.0
        self._adx = self._prev_high = self._prev_low = self._prev_close = NAN

    def update(self, high: float, low: float, close: float) -> float:
        count = self._count
        self._count = count + 1
        up = high - self._prev_high
        down = self._prev_low - low
        previous_close = self._prev_close
        self._prev_high, self._prev_low, self._prev_close = high, low, close
        if count == 0:
            return NAN
        true_range = high - low
        gap = abs(high - previous_close)
        if gap > true_range:
            true_range = gap
        gap = abs(low - previous_close)
        if gap > true_range:
            true_range = gap
        period = self._period
        minus_dm, plus_dm = self._minus_dm, self._plus_dm
        if count < period:  # the seed: plain sums of the first period - 1 values
            if down > 0.0 and up < down:
                self._minus_dm = minus_dm + down
            elif up > 0.0 and up > down:
                self._plus_dm = plus_dm + up
            self._true_range += true_range
            return NAN
        minus_dm -= minus_dm / period
        plus_dm -= plus_dm / period
        if down > 0.0 and up < down:
            minus_dm += down
        elif up > 0.0 and up > down:
            plus_dm += up
        smoothed_range = self._true_range
        smoothed_range = smoothed_range - smoothed_range / period + true_range
        self._minus_dm, self._plus_dm, self._true_range = minus_dm, plus_dm, smoothed_range
        dx = NAN
        if smoothed_range != 0.0:
            minus_di = 100.0 * (minus_dm / smoothed_range)
            plus_di = 100.0 * (plus_dm / smoothed_range)
            di_sum = minus_di + plus_di
            if not -DI_ZERO < di_sum < DI_ZERO:
                dx = 100.0 * (abs(minus_di - plus_di) / di_sum)
        if count < 2 * period - 1:
            if dx == dx:
                self._dx_sum += dx
            return NAN
        if count == 2 * period - 1:
            if dx == dx:
                self._dx_sum += dx
            self._adx = self._dx_sum / period
        elif dx == dx:
            self._adx = (self._adx * (period - 1) + dx) / period
        return self._adx


DEFS: tuple[IndicatorDef, ...] = (
    IndicatorDef(
        "adx",
        (Param("period", int, 2),),  # TA-Lib's range
        ("adx",),
        ("high", "low", "close"),
        adx,
        AverageDirectionalIndex,
    ),
)
