"""Rolling 24 h ticker statistics (open, high, low, volume) for one market.

Exchanges publish 24 h figures over a sliding window; keeping every trade of a
day in memory to do the same would be unbounded on a busy market. Trades are
folded into minute buckets instead, so the window is *bucketed to the minute*:
``snapshot(now)`` covers the bucket holding ``now`` and the 1439 before it, so
between 23 h 59 m and 24 h of trades (a trade later than ``now`` inside the
current minute is included too). Memory is at most one bucket per minute of the
window, and adding a trade is O(1) amortised (O(window) only for a trade out of
order by more than its own minute, which is rare).

Volumes are plain float sums.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.interval import DAY_MS, MINUTE_MS

TickerSnapshot = tuple[float, float, float, float, float]
"""(open_24h, high_24h, low_24h, volume_24h, quote_volume_24h)."""


@dataclass(slots=True)
class _Bucket:
    open_time: int
    first_ts: int  # the open of the window is the earliest trade's price
    open: float
    high: float
    low: float
    volume: float
    quote: float

    def add(self, ts: int, open_: float, high: float, low: float, vol: float, q: float) -> None:
        if ts < self.first_ts:  # a tie keeps the earlier arrival
            self.first_ts, self.open = ts, open_
        if high > self.high:
            self.high = high
        if low < self.low:
            self.low = low
        self.volume += vol
        self.quote += q


def _combine(acc: TickerSnapshot | None, b: _Bucket) -> TickerSnapshot:
    if acc is None:
        return (b.open, b.high, b.low, b.volume, b.quote)
    o, h, lo, v, q = acc
    return (o, max(h, b.high), min(lo, b.low), v + b.volume, q + b.quote)


class RollingTickerStats:
    """24 h statistics of one (exchange, symbol) from its trades, in minute buckets."""

    def __init__(self, window_ms: int = DAY_MS, bucket_ms: int = MINUTE_MS) -> None:
        if bucket_ms <= 0 or window_ms <= 0 or window_ms % bucket_ms:
            raise DomainError(
                f"window_ms ({window_ms}) must be a positive multiple of bucket_ms ({bucket_ms})",
                field="window_ms",
            )
        self.window_ms = window_ms
        self.bucket_ms = bucket_ms
        self._buckets: deque[_Bucket] = deque()
        # Aggregate of every bucket but the newest, for one window start; valid
        # while _version is unchanged. Makes repeated snapshots O(1).
        self._version = 0
        self._cached: tuple[int, int, TickerSnapshot | None] | None = None

    def __len__(self) -> int:
        """Buckets held: at most window_ms / bucket_ms."""
        return len(self._buckets)

    def add(self, ts: int, price: float, amount: float) -> None:
        self._add_bucket(ts - ts % self.bucket_ms, ts, price, price, price, amount, price * amount)

    def add_arrays(self, ts: npt.ArrayLike, price: npt.ArrayLike, amount: npt.ArrayLike) -> None:
        """Vectorised ``add`` of many trades (arrival order), one merge per minute."""
        ts_a = np.asarray(ts, dtype=np.int64)
        price_a = np.asarray(price, dtype=np.float64)
        amount_a = np.asarray(amount, dtype=np.float64)
        if not (ts_a.ndim == 1 and ts_a.shape == price_a.shape == amount_a.shape):
            raise DomainError("ts, price and amount must be 1-d arrays of one length", field="ts")
        if len(ts_a) == 0:
            return
        order = np.argsort(ts_a, kind="stable")  # stable: ties keep arrival order
        ts_a, price_a, amount_a = ts_a[order], price_a[order], amount_a[order]
        buckets = ts_a - ts_a % self.bucket_ms
        starts = np.concatenate(([0], np.flatnonzero(buckets[1:] != buckets[:-1]) + 1))
        rows = zip(
            buckets[starts].tolist(),
            ts_a[starts].tolist(),
            price_a[starts].tolist(),
            np.maximum.reduceat(price_a, starts).tolist(),
            np.minimum.reduceat(price_a, starts).tolist(),
            np.add.reduceat(amount_a, starts).tolist(),
            np.add.reduceat(price_a * amount_a, starts).tolist(),
            strict=True,
        )
        for row in rows:
            self._add_bucket(*row)

    def snapshot(self, now_ms: int) -> TickerSnapshot | None:
        """(open, high, low, volume, quote volume) over the window ending at ``now_ms``.

        None when no trade falls in the window. ``now_ms`` is normally the newest
        trade's time; a time before older buckets were evicted sees only what is
        still held.
        """
        buckets = self._buckets
        if not buckets:
            return None
        current = now_ms - now_ms % self.bucket_ms
        start = current - self.window_ms + self.bucket_ms
        newest = buckets[-1]
        if newest.open_time > current:  # a snapshot in the past: scan
            acc: TickerSnapshot | None = None
            for b in buckets:
                if start <= b.open_time <= current:
                    acc = _combine(acc, b)
            return acc
        cached = self._cached
        if cached is not None and cached[0] == start and cached[1] == self._version:
            rest = cached[2]
        else:
            rest = None
            for i in range(len(buckets) - 1):
                if buckets[i].open_time >= start:
                    rest = _combine(rest, buckets[i])
            self._cached = (start, self._version, rest)
        return _combine(rest, newest) if newest.open_time >= start else rest

    def _add_bucket(
        self, open_time: int, ts: int, open_: float, high: float, low: float, vol: float, q: float
    ) -> None:
        buckets = self._buckets
        if buckets and open_time == buckets[-1].open_time:
            buckets[-1].add(ts, open_, high, low, vol, q)  # the cache excludes the newest
            return
        if buckets and open_time <= buckets[-1].open_time - self.window_ms:
            return  # older than any window still to be asked for: it can never count
        self._version += 1
        if not buckets or open_time > buckets[-1].open_time:
            buckets.append(_Bucket(open_time, ts, open_, high, low, vol, q))
            # No window ending at or after this minute reaches these buckets.
            horizon = open_time - self.window_ms
            while buckets[0].open_time <= horizon:
                buckets.popleft()
            return
        i = bisect_left(buckets, open_time, key=lambda b: b.open_time)
        if buckets[i].open_time == open_time:
            buckets[i].add(ts, open_, high, low, vol, q)
        else:
            buckets.insert(i, _Bucket(open_time, ts, open_, high, low, vol, q))
