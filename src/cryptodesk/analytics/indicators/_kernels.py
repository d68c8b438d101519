"""Numeric building blocks shared by the indicator families.

- ``first_order(u, a, b, y0)``: the recursion ``y[i] = a*y[i-1] + b*u[i]`` behind
  every EMA, Wilder smoothing and running sum, fast over long arrays; for input
  made span by span, ``Recursion`` (feed spans, then finish) or ``smooth`` (one
  span at a time, finished at once);
- ``rolling_sums(values, period)``: the sum (or mean) of each full window;
- ``run_sums(values, run)``: cumulative sums restarting every ``run`` values
  (``run_sums_blockwise`` the fast way);
- ``true_range(high, low, close, out, scratch)``: Wilder's true range;
- ``block_product``: blocks of values times small weight matrices, through BLAS;
- ``spans(size)``: cache-sized pieces to walk long arrays in;
- ``ordered_sum(values)``: a left-to-right sum, the order TA-Lib seeds its averages in;
- ``period_param`` / ``number_param`` / ``series``: argument checks raising
  ``IndicatorError`` that names the parameter.

Speed. A recursion stepped in Python or by ``scipy.signal.lfilter`` costs
several nanoseconds per value, too slow next to TA-Lib. ``first_order`` cuts the
input into blocks of ``BLOCK`` values: within a block each output is a short
weighted sum of the block's inputs (a matrix product over all blocks), the
block ends chain through a recursion ``BLOCK`` times shorter, and a rank-1
update adds each block's carried-in value. Its results agree with the
step-by-step recursion to a few units in the last place, not to the bit (the
additions are associated differently). Long arrays are walked in ``spans`` of
``SPAN`` values so that intermediate arrays stay small and in cache: on the
machines we measured, touching a fresh 8 MB temporary costs as much as a pass
over it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

# scipy is imported on first use: its linalg and signal packages weigh ~80 MB,
# which every API process would carry without ever computing an indicator.
from cryptodesk.analytics.indicators.base import FloatArray, IndicatorError

BLOCK = 16
ONE_THREAD = 262_144  # OpenBLAS runs an m*n*k <= 65536 * 4 matrix product on one thread
SPAN = 32_768  # values per span: 256 kB per float64 array, several of them fit in L2
MAX_PERIOD = 100_000  # TA-Lib's upper bound for every period


def spans(size: int, length: int = 0) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` pieces of ``range(size)``, ``length`` (default ``SPAN``,
    rounded down to whole blocks) long but the last."""
    length = max(BLOCK, (length or SPAN) // BLOCK * BLOCK)
    for start in range(0, size, length):
        yield start, min(start + length, size)


def ordered_sum(values: FloatArray) -> float:
    """``values[0] + values[1] + ...`` strictly left to right, as TA-Lib seeds its
    averages (``np.sum`` adds pairwise, Python 3.12's ``sum`` compensates)."""
    if len(values) == 0:
        return 0.0
    return float(np.add.accumulate(values)[-1])


def block_product(
    out: FloatArray, *terms: tuple[FloatArray, FloatArray], beta: float = 0.0
) -> None:
    """``out = beta * out + sum(rows @ weights for rows, weights in terms)`` in
    place, for C-ordered ``(m, k)`` rows, ``(k, j)`` weights and ``(m, j)`` out.

    SciPy's BLAS works on the transposed (Fortran-ordered) views, so nothing is
    copied, a few rows per call: few enough (``m * k * j <= ONE_THREAD``) that
    OpenBLAS stays on one thread. Its worker threads cost more to wake and to
    share two cores with than they save here (one call over a million values
    took 2 ms at best and 24 ms typically; cut up, 2 ms typically). NumPy's
    ``matmul`` is avoided for the same reason: it runs NumPy's own BLAS, whose
    threads then fight SciPy's.
    """
    step = max(1, ONE_THREAD // max(weights.size for _, weights in terms))
    from scipy.linalg import blas  # type: ignore[import-untyped]

    for start in range(0, len(out), step):
        stop = start + step
        target = out[start:stop].T
        factor = beta
        for rows, weights in terms:
            result = blas.dgemm(
                1.0, weights.T, rows[start:stop].T, beta=factor, c=target, overwrite_c=True
            )
            if result is not target:  # BLAS had to copy
                target[...] = result
            factor = 1.0


@functools.lru_cache(maxsize=256)
def _block_factors(a: float, b: float) -> tuple[FloatArray, FloatArray, float]:
    """The within-block weights ``b * a**(r - q)`` (input q to output r), the powers
    ``a**1 .. a**BLOCK`` that scale a carried-in value (as a row), and ``a**BLOCK``."""
    powers = np.power(a, np.arange(BLOCK + 1, dtype=np.float64))
    lag = np.arange(BLOCK)[None, :] - np.arange(BLOCK)[:, None]
    weights = np.where(lag >= 0, b * powers[np.maximum(lag, 0)], 0.0)
    return weights, powers[None, 1:].copy(), float(powers[BLOCK])


def smooth(u: FloatArray, a: float, b: float, y: float, out: FloatArray) -> float:
    """``out[i] = a * out[i-1] + b * u[i]`` over one span, with ``out[-1] = y``;
    ``u`` and ``out`` C-contiguous, equally long, not overlapping. Returns the last
    value (the next span's ``y``). See ``first_order``."""
    rows = len(u) // BLOCK
    main = rows * BLOCK
    if rows:
        weights, powers, carry = _block_factors(a, b)
        block = out[:main].reshape(rows, BLOCK)
        # Each block from its own inputs, then the block ends chained, then each
        # block's carried-in value added.
        block_product(block, (u[:main].reshape(rows, BLOCK), weights))
        from scipy.signal import lfilter  # type: ignore[import-untyped]

        ends = lfilter([1.0], [1.0, -carry], block[:, -1], zi=[carry * y])[0]
        starts = np.empty((rows, 1))
        starts[0] = y
        starts[1:, 0] = ends[:-1]
        block_product(block, (starts, powers), beta=1.0)
        y = float(ends[-1])
    for i, value in enumerate(u[main:].tolist(), start=main):
        y = a * y + b * value
        out[i] = y
    return y


class Recursion:
    """``y[i] = a * y[i-1] + b * u[i]`` into ``out``, with ``y[-1] = y0``, for ``u``
    fed span by span (``feed``, every span but the last a multiple of ``BLOCK``),
    then ``finish``: each span's blocks are solved as they come, while the span is
    in cache; the block ends chain in one go at the end, and one pass adds each
    block's carried-in value. See ``first_order``."""

    __slots__ = ("_a", "_b", "_ends", "_filled", "_out", "_tail", "_y0")

    def __init__(self, a: float, b: float, y0: float, out: FloatArray) -> None:
        self._a, self._b, self._y0, self._out = float(a), float(b), float(y0), out
        self._ends = np.empty(len(out) // BLOCK)
        self._filled = 0
        self._tail: list[float] = []

    def feed(self, u: FloatArray) -> None:
        if self._tail:
            raise ValueError("only the last span may end in a partial block")
        start = self._filled
        rows = len(u) // BLOCK
        if rows:
            weights = _block_factors(self._a, self._b)[0]
            block = self._out[start : start + rows * BLOCK].reshape(rows, BLOCK)
            block_product(block, (u[: rows * BLOCK].reshape(rows, BLOCK), weights))
            self._ends[start // BLOCK : start // BLOCK + rows] = block[:, -1]
        self._tail = u[rows * BLOCK :].tolist()
        self._filled = start + len(u)

    def finish(self) -> FloatArray:
        _, powers, carry = _block_factors(self._a, self._b)
        y, out, rows = self._y0, self._out, len(self._ends)
        if rows:
            from scipy.signal import lfilter

            ends = lfilter([1.0], [1.0, -carry], self._ends, zi=[carry * y])[0]
            starts = np.empty((rows, 1))
            starts[0] = y
            starts[1:, 0] = ends[:-1]
            block_product(out[: rows * BLOCK].reshape(rows, BLOCK), (starts, powers), beta=1.0)
            y = float(ends[-1])
        a, b = self._a, self._b
        for i, value in enumerate(self._tail, start=rows * BLOCK):
            y = a * y + b * value
            out[i] = y
        return out


def first_order(
    u: FloatArray, a: float, b: float, y0: float, *, out: FloatArray | None = None
) -> FloatArray:
    """``y[i] = a * y[i-1] + b * u[i]`` for every ``i``, with ``y[-1] = y0``.

    An EMA is ``a = 1 - k, b = k``; Wilder's smoothing ``a = (n - 1) / n``; a
    running sum ``a = b = 1``. ``out`` (C-contiguous, as long as ``u``; it may be
    ``u`` itself) receives the result when given. Within a few units in the last
    place of the step-by-step recursion (see the module docstring).
    """
    u = np.ascontiguousarray(u, dtype=np.float64)
    if out is None:
        out = np.empty(len(u))
    elif not out.flags.c_contiguous or len(out) != len(u):
        raise ValueError("out must be C-contiguous and as long as u")
    if np.may_share_memory(u, out):
        u = u.copy()
    recursion = Recursion(a, b, y0, out)
    for start, stop in spans(len(u)):
        recursion.feed(u[start:stop])
    return recursion.finish()


def run_sums(values: FloatArray, run: int) -> None:
    """Cumulative sums in place, left to right, restarting every ``run`` values."""
    whole = len(values) // run * run
    if whole:
        runs = values[:whole].reshape(-1, run)
        np.cumsum(runs, axis=1, out=runs)
    np.cumsum(values[whole:], out=values[whole:])


def run_sums_blockwise(values: FloatArray, run: int, out: FloatArray) -> None:
    """``out`` = cumulative sums of ``values`` restarting every ``run`` values, a
    multiple of ``BLOCK``: blockwise like ``first_order`` (the block ends chain by
    a short cumulative sum within each run), a few units in the last place from
    ``run_sums``. ``values`` and ``out`` C-contiguous, not overlapping."""
    whole = len(values) // run * run
    if whole:
        weights, powers, _ = _block_factors(1.0, 1.0)
        block = out[:whole].reshape(-1, BLOCK)
        block_product(block, (values[:whole].reshape(-1, BLOCK), weights))
        ends = block[:, -1].reshape(-1, run // BLOCK)
        starts = np.zeros(ends.shape)
        if ends.shape[1] < ends.shape[0]:  # short runs: a column at a time beats cumsum
            for column in range(1, ends.shape[1]):
                np.add(starts[:, column - 1], ends[:, column - 1], out=starts[:, column])
        else:
            np.cumsum(ends[:, :-1], axis=1, out=starts[:, 1:])
        block_product(block, (starts.reshape(-1, 1), powers), beta=1.0)
    np.cumsum(values[whole:], out=out[whole:])


def rolling_sums(
    values: FloatArray, period: int, *, divisor: float = 1.0, out: FloatArray | None = None
) -> FloatArray:
    """The sum of each full window of ``period`` values, divided by ``divisor``:
    element ``j`` covers ``values[j : j + period]``. The first window is added left
    to right and divided; each next one adds (newest - oldest) / divisor, a
    running sum as TA-Lib keeps it. ``out`` (C-contiguous) receives the result."""
    size = len(values) - period + 1
    if out is None:
        out = np.empty(max(size, 0))
    if size <= 0:
        return out
    if period == 1:
        np.divide(values, divisor, out=out)
        return out
    out[0] = ordered_sum(values[:period]) / divisor
    steps = np.empty(min(SPAN, size - 1))
    recursion = Recursion(1.0, 1.0 / divisor, out[0], out[1:])
    for start, stop in spans(size - 1):
        step = steps[: stop - start]
        np.subtract(values[period + start : period + stop], values[start:stop], out=step)
        recursion.feed(step)
    recursion.finish()
    return out


def true_range(
    high: FloatArray, low: FloatArray, close: FloatArray, out: FloatArray, scratch: FloatArray
) -> None:
    """Wilder's true range of candles ``1 .. len(out)`` (``out[j]`` is candle
    ``j + 1``'s): the larger of its high and the previous close minus the smaller
    of its low and the previous close. ``scratch`` is as long as ``out``.

    That equals TA-Lib's ``max(high - low, |high - prev close|, |low - prev
    close|)`` to the bit whenever ``low <= high`` (the difference taken is the
    same one), with two comparisons fewer.
    """
    size = len(out)
    previous = close[:size]
    np.maximum(high[1 : size + 1], previous, out=out)
    np.minimum(low[1 : size + 1], previous, out=scratch)
    out -= scratch


def _name(indicator: str, param: str) -> str:
    return f"{indicator} {param}"


def period_param(
    indicator: str, param: str, value: Any, minimum: int, maximum: int = MAX_PERIOD
) -> int:
    """``value`` as an int period in ``minimum..maximum``, else IndicatorError."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise IndicatorError(
            f"{_name(indicator, param)} must be an integer, got {value!r}", field=param
        )
    if not minimum <= value <= maximum:
        raise IndicatorError(
            f"{_name(indicator, param)} {value} is out of range {minimum}..{maximum}", field=param
        )
    return int(value)


def number_param(indicator: str, param: str, value: Any, minimum: float, maximum: float) -> float:
    """``value`` as a finite float in ``minimum..maximum``, else IndicatorError."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise IndicatorError(
            f"{_name(indicator, param)} must be a number, got {value!r}", field=param
        )
    number = float(value)
    if not (math.isfinite(number) and minimum <= number <= maximum):
        raise IndicatorError(
            f"{_name(indicator, param)} {value} is out of range {minimum:g}..{maximum:g}",
            field=param,
        )
    return number


def series(indicator: str, **arrays: Any) -> tuple[FloatArray, ...]:
    """Each input as a contiguous 1-D float64 array, all of one length."""
    converted = []
    for name, values in arrays.items():
        array = np.ascontiguousarray(values, dtype=np.float64)
        if array.ndim != 1:
            raise IndicatorError(f"{indicator} {name} must be one-dimensional", field=name)
        converted.append(array)
    lengths = {len(array) for array in converted}
    if len(lengths) > 1:
        sizes = ", ".join(f"{name}={len(a)}" for name, a in zip(arrays, converted, strict=True))
        raise IndicatorError(f"{indicator} inputs differ in length: {sizes}", field="inputs")
    return tuple(converted)
