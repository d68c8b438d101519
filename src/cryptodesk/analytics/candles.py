"""Trades -> OHLCV candles for every configured interval, driven by event time.

One ``CandleBuilder`` serves one exchange, because the watermark (the newest
trade time seen, or a heartbeat given to ``advance``) is that exchange's clock:
a quiet symbol still gets its candles closed when other symbols keep trading.
A bucket ``[open, open + interval)`` closes once the watermark reaches
``open + interval + grace_ms``; the grace lets trades that arrive slightly out
of order still land in their candle. Anything older is *late*: reported back to
the caller, never applied to a closed candle, never silently dropped.

Each interval is built straight from trades, not from smaller candles, and
judges lateness on its own. A trade too late for its 1m candle may still be in
time for the 1h candle, and is then counted there (and reported once as late).
This is what makes restart work: each series is seeded with its own last stored
candle and takes replayed trades from there on.

Volumes are plain float sums (no rounding); their last bits depend on the order
of addition, so batching the same trades differently can change a volume by an
ulp or so while prices, times and trade counts stay identical.

Large batches go through numpy (sort, bucket ids, ``reduceat``); only the merge
of each per-bucket aggregate into the open state is Python, once per bucket.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.market import Candle, Trade

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

# Up to this many trades per call the per-trade loop beats numpy's per-call
# overhead (measured crossover ~64 for 1 and for 6 intervals).
_SCALAR_MAX = 64
# Flat candles one series may emit per call; a longer gap (a watermark jumping
# years ahead, a clock bug) is emitted over later calls, so no call is unbounded.
MAX_FLAT_PER_CALL = 100_000


@dataclass(frozen=True, slots=True)
class BuildResult:
    finalized: list[Candle]  # closed=True, each series in ascending open_time
    late: list[Trade]  # trades whose candle(s) were already finalized


@dataclass(slots=True)
class _Bucket:
    """Running OHLCV of one open candle; first/last ts decide open/close."""

    first_ts: int
    open: float
    high: float
    low: float
    last_ts: int
    close: float
    volume: float
    quote: float
    trades: int

    def merge(self, other: _Bucket) -> None:
        # Strict < keeps the earlier arrival on a ts tie; >= lets the later one close.
        if other.first_ts < self.first_ts:
            self.first_ts, self.open = other.first_ts, other.open
        if other.last_ts >= self.last_ts:
            self.last_ts, self.close = other.last_ts, other.close
        if other.high > self.high:
            self.high = other.high
        if other.low < self.low:
            self.low = other.low
        self.volume += other.volume
        self.quote += other.quote
        self.trades += other.trades


class _Series:
    """One (symbol, interval): open buckets plus where finalization stands."""

    __slots__ = ("buckets", "interval", "last_close", "ms", "next_open", "offset")

    def __init__(self, interval: Interval) -> None:
        self.interval = interval
        self.ms = interval.ms
        self.offset = interval.offset_ms
        # Every bucket before next_open is finalized (None: nothing finalized yet).
        self.next_open: int | None = None
        self.last_close: float | None = None
        self.buckets: dict[int, _Bucket] = {}

    def add(self, open_time: int, agg: _Bucket) -> None:
        current = self.buckets.get(open_time)
        if current is None:
            self.buckets[open_time] = agg
        else:
            current.merge(agg)


class CandleBuilder:
    """Builds finalized and in-progress candles of one exchange from its trades.

    State is bounded: a finalized bucket leaves memory at once; what remains is
    the open buckets (at most a few per series within the grace period). A
    series emits at most ``max_flat_per_call`` flat candles per call; the rest of
    a longer gap follows on later calls (``advance`` with the same watermark
    continues it), and trades for those held-back buckets are already late.
    """

    def __init__(
        self,
        exchange: str,
        intervals: Sequence[Interval],
        *,
        grace_ms: int = 2000,
        max_flat_per_call: int = MAX_FLAT_PER_CALL,
    ) -> None:
        if not exchange:
            raise DomainError("exchange must not be empty", field="exchange")
        if not intervals:
            raise DomainError("at least one interval is required", field="interval")
        if len({i.name for i in intervals}) != len(intervals):
            raise DomainError("duplicate interval", field="interval")
        if grace_ms < 0:
            raise DomainError(f"grace_ms must be >= 0, got {grace_ms}", field="grace_ms")
        if max_flat_per_call < 1:
            raise DomainError("max_flat_per_call must be >= 1", field="max_flat_per_call")
        self.exchange = exchange
        self.intervals = tuple(intervals)
        self.grace_ms = grace_ms
        self._max_flat = max_flat_per_call
        self._series: dict[str, list[_Series]] = {}
        self._wm: int | None = None

    @property
    def watermark(self) -> int | None:
        return self._wm

    # ---- input ----------------------------------------------------------------------

    def seed(self, symbol: str, interval: Interval, last: Candle) -> None:
        """Resume a series after a restart from its last stored finalized candle.

        Buckets up to ``last.open_time`` count as finalized (trades for them come
        back late); a gap after it is filled flat at ``last.close``.
        """
        if last.symbol != symbol or last.interval != interval.name:
            raise DomainError(
                f"seed candle is {last.symbol} {last.interval}, not {symbol} {interval}",
                field="seed",
            )
        if last.exchange != self.exchange:
            raise DomainError(f"seed candle is from {last.exchange!r}", field="exchange")
        if interval.bucket(last.open_time) != last.open_time:
            raise DomainError(f"seed open_time {last.open_time} is not aligned", field="seed")
        series = self._series_of(symbol, interval)
        nxt = last.open_time + interval.ms
        if series.next_open is None or nxt > series.next_open:
            series.next_open = nxt
            series.last_close = last.close
            for b in [b for b in series.buckets if b < nxt]:
                del series.buckets[b]

    def add_trades(self, trades: Sequence[Trade]) -> BuildResult:
        """Add a batch (any symbols, any order), then advance to its newest ts."""
        n = len(trades)
        if n == 0:
            return BuildResult(self.advance(self._wm) if self._wm is not None else [], [])
        foreign = {t.exchange for t in trades} - {self.exchange}
        if foreign:
            raise DomainError(
                f"trades of {sorted(foreign)} given to the {self.exchange!r} builder",
                field="exchange",
            )
        if n <= _SCALAR_MAX:
            late_idx = self._add_scalar(trades)
            newest = max(t.ts for t in trades)
        else:
            ts = np.fromiter([t.ts for t in trades], np.int64, n)
            price = np.fromiter([t.price for t in trades], np.float64, n)
            amount = np.fromiter([t.amount for t in trades], np.float64, n)
            symbols = [t.symbol for t in trades]
            late_idx = []
            for symbol, rows in _group_rows(symbols):
                if rows is None:
                    late_idx.extend(self._add_sorted(symbol, ts, price, amount).tolist())
                else:
                    pos = self._add_sorted(symbol, ts[rows], price[rows], amount[rows])
                    late_idx.extend(rows[pos].tolist())
            newest = int(ts.max())
        late_idx.sort()
        late = [trades[i] for i in late_idx]
        return BuildResult(self.advance(newest), late)

    def add_arrays(
        self, symbol: str, ts: npt.ArrayLike, price: npt.ArrayLike, amount: npt.ArrayLike
    ) -> BuildResult:
        """The same as ``add_trades`` for one symbol's columns (arrival order).

        Late rows come back as ``Trade`` objects rebuilt from the row: their
        ``id`` is ``"row:<index>"`` into the given arrays and ``side`` is "buy",
        since neither is known here.
        """
        ts_a = np.asarray(ts, dtype=np.int64)
        price_a = np.asarray(price, dtype=np.float64)
        amount_a = np.asarray(amount, dtype=np.float64)
        if not (ts_a.ndim == 1 and ts_a.shape == price_a.shape == amount_a.shape):
            raise DomainError("ts, price and amount must be 1-d arrays of one length", field="ts")
        base, sep, quote = symbol.partition("/")
        if not (base and sep and quote) or "/" in quote:
            raise DomainError(f"symbol {symbol!r} is not of the form BASE/QUOTE", field="symbol")
        if len(ts_a) == 0:
            return BuildResult(self.advance(self._wm) if self._wm is not None else [], [])
        if ts_a.min() < 0:
            raise DomainError("ts must be epoch ms >= 0", field="ts")
        for name, col in (("price", price_a), ("amount", amount_a)):
            if not (np.isfinite(col).all() and (col > 0).all()):
                raise DomainError(f"{name} must be positive finite numbers", field=name)
        pos = self._add_sorted(symbol, ts_a, price_a, amount_a)
        pos.sort()
        cols = (pos, ts_a[pos], price_a[pos], amount_a[pos])
        rows = zip(*(c.tolist() for c in cols), strict=True)
        late = [Trade(self.exchange, symbol, f"row:{i}", t, p, a, "buy") for i, t, p, a in rows]
        return BuildResult(self.advance(int(ts_a.max())), late)

    # ---- output ---------------------------------------------------------------------

    def advance(self, watermark_ms: int) -> list[Candle]:
        """Move the watermark forward (never back) and return what it finalizes.

        Also continues emitting flat candles a series held back because of the
        per-call cap, so calling it with an unchanged watermark is useful too.
        """
        if self._wm is None or watermark_ms > self._wm:
            self._wm = watermark_ms
        edge = self._wm - self.grace_ms
        cutoffs = [iv.bucket(edge) for iv in self.intervals]
        out: list[Candle] = []
        for symbol, series_list in self._series.items():
            for s, cutoff in zip(series_list, cutoffs, strict=True):
                if s.next_open is not None and s.next_open >= cutoff:
                    continue
                self._finalize(symbol, s, cutoff, out)
        return out

    def open_candles(self) -> list[Candle]:
        """In-progress candles (closed=False): only buckets that have trades."""
        return [
            self._candle(symbol, s.interval, open_time, s.buckets[open_time], closed=False)
            for symbol, series_list in self._series.items()
            for s in series_list
            for open_time in sorted(s.buckets)
        ]

    def open_candle(self, symbol: str, interval: Interval) -> Candle | None:
        """The newest in-progress candle of a series, or None."""
        for s in self._series.get(symbol, ()):
            if s.interval == interval and s.buckets:
                newest = max(s.buckets)
                return self._candle(symbol, interval, newest, s.buckets[newest], closed=False)
        return None

    # ---- internals ------------------------------------------------------------------

    def _series_of(self, symbol: str, interval: Interval) -> _Series:
        for s in self._series_for(symbol):
            if s.interval == interval:
                return s
        raise DomainError(f"interval {interval} is not configured", field="interval")

    def _series_for(self, symbol: str) -> list[_Series]:
        series = self._series.get(symbol)
        if series is None:
            series = self._series[symbol] = [_Series(iv) for iv in self.intervals]
        return series

    def _late_bound(self, s: _Series) -> int | None:
        """Smallest bucket open time that still accepts trades (None: any)."""
        bound = s.next_open
        if self._wm is not None:
            cutoff = s.interval.bucket(self._wm - self.grace_ms)
            if bound is None or cutoff > bound:
                bound = cutoff
        return bound

    def _add_scalar(self, trades: Sequence[Trade]) -> list[int]:
        late: list[int] = []
        bounds: dict[str, list[int | None]] = {}
        for i, t in enumerate(trades):
            series_list = self._series_for(t.symbol)
            sb = bounds.get(t.symbol)
            if sb is None:  # judged against the watermark before this batch
                sb = bounds[t.symbol] = [self._late_bound(s) for s in series_list]
            ts, price, amount = int(t.ts), float(t.price), float(t.amount)
            is_late = False
            for s, bound in zip(series_list, sb, strict=True):
                bucket = ts - (ts - s.offset) % s.ms
                if bound is not None and bucket < bound:
                    is_late = True
                else:
                    agg = _Bucket(ts, price, price, price, ts, price, amount, price * amount, 1)
                    s.add(bucket, agg)
            if is_late:
                late.append(i)
        return late

    def _add_sorted(self, symbol: str, ts: I64, price: F64, amount: F64) -> npt.NDArray[np.intp]:
        """Aggregate one symbol's trades into its open buckets; return late row indices."""
        n = len(ts)
        order: npt.NDArray[np.intp] | None = None
        if n > 1 and not bool((ts[1:] >= ts[:-1]).all()):
            # Stable, so equal timestamps keep arrival order (open/close tie rule).
            order = np.argsort(ts, kind="stable")
            ts, price, amount = ts[order], price[order], amount[order]
        quote = price * amount
        n_late = 0
        for s in self._series_for(symbol):
            buckets = ts - (ts - s.offset) % s.ms
            bound = self._late_bound(s)
            k = 0 if bound is None else int(np.searchsorted(buckets, bound, side="left"))
            n_late = max(n_late, k)  # sorted by ts, so late rows are a prefix
            if k == n:
                continue
            b, t, p = buckets[k:], ts[k:], price[k:]
            if b[0] == b[-1]:
                starts: npt.NDArray[np.intp] = np.zeros(1, dtype=np.intp)
            else:
                starts = np.concatenate(([0], np.flatnonzero(b[1:] != b[:-1]) + 1))
            ends = np.append(starts[1:], len(b)) - 1
            opens = b[starts].tolist()
            aggs = map(
                _Bucket,
                t[starts].tolist(),
                p[starts].tolist(),
                np.maximum.reduceat(p, starts).tolist(),
                np.minimum.reduceat(p, starts).tolist(),
                t[ends].tolist(),
                p[ends].tolist(),
                np.add.reduceat(amount[k:], starts).tolist(),
                np.add.reduceat(quote[k:], starts).tolist(),
                (ends - starts + 1).tolist(),
            )
            for open_time, agg in zip(opens, aggs, strict=True):
                s.add(open_time, agg)
        if order is None:
            return np.arange(n_late, dtype=np.intp)
        return order[:n_late]

    def _finalize(self, symbol: str, s: _Series, cutoff: int, out: list[Candle]) -> None:
        """Emit buckets before ``cutoff`` in order, flat-filling gaps (capped per call)."""
        pending = sorted(b for b in s.buckets if b < cutoff)
        if s.next_open is None:
            if not pending:
                return  # the series has not started: no candles before its first trade
            pos = pending[0]
        else:
            pos = s.next_open
        budget = self._max_flat
        ms = s.ms
        for open_time in pending:
            gap = (open_time - pos) // ms
            if gap > budget:
                self._flat(symbol, s, pos, budget, out)
                s.next_open = pos + budget * ms
                return
            self._flat(symbol, s, pos, gap, out)
            budget -= gap
            agg = s.buckets.pop(open_time)
            out.append(self._candle(symbol, s.interval, open_time, agg, closed=True))
            s.last_close = agg.close
            pos = open_time + ms
        count = min((cutoff - pos) // ms, budget)
        self._flat(symbol, s, pos, count, out)
        s.next_open = pos + count * ms

    def _flat(self, symbol: str, s: _Series, start: int, count: int, out: list[Candle]) -> None:
        if count <= 0:
            return
        close = s.last_close
        assert close is not None  # a started series always has a previous close
        name = s.interval.name
        out.extend(
            Candle(
                self.exchange,
                symbol,
                name,
                start + j * s.ms,
                close,
                close,
                close,
                close,
                0.0,
                0.0,
                0,
                closed=True,
            )
            for j in range(count)
        )

    def _candle(
        self, symbol: str, interval: Interval, open_time: int, b: _Bucket, *, closed: bool
    ) -> Candle:
        return Candle(
            self.exchange,
            symbol,
            interval.name,
            open_time,
            b.open,
            b.high,
            b.low,
            b.close,
            b.volume,
            b.quote,
            b.trades,
            closed=closed,
        )


def _group_rows(symbols: list[str]) -> list[tuple[str, npt.NDArray[np.intp] | None]]:
    """Split a batch by symbol, keeping arrival order inside each group.

    ``None`` rows means the whole batch is one symbol (the common case, no copy).
    """
    first = symbols[0]
    if symbols.count(first) == len(symbols):
        return [(first, None)]
    names = list(dict.fromkeys(symbols))
    codes_of = {sym: i for i, sym in enumerate(names)}
    codes = np.fromiter(map(codes_of.__getitem__, symbols), np.int64, len(symbols))
    order = np.argsort(codes, kind="stable")
    cuts = np.flatnonzero(np.diff(codes[order])) + 1
    return [(names[int(codes[part[0]])], part) for part in np.split(order, cuts)]
