"""Candle history from an exchange into the store, page by page, resumable.

The range is walked in windows of one page (``limit`` candles): each request
asks for the candles opening inside its window, so the number of requests is
bounded by the range whatever the exchange does with an empty stretch
(binance skips ahead to the next candle it has; coinbase refuses a range of
more than 300 candles; kraken ignores ``since`` and returns its newest 720).
Each page is upserted before the next request, in time order, so the newest
stored candle is always where a run stopped: a second run starts after it,
and a run that failed half-way leaves exactly what an uninterrupted run
would have stored up to that point. Upserts make a repeated run a no-op.

Only closed candles are stored (open time + interval <= now when the run
starts); the rate limit is the fetcher's business (it is guarded per exchange).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from cryptodesk.domain.interval import Interval
from cryptodesk.domain.market import Candle
from cryptodesk.domain.timeutil import now_ms
from cryptodesk.services.sources import CandleFetcher

log = structlog.get_logger(__name__)


class CandleStore(Protocol):
    async def upsert_candles(self, candles: Sequence[Candle]) -> None: ...

    async def get_candles(
        self,
        exchange: str,
        symbol: str,
        interval: str,
        *,
        start: int | None = None,
        end: int | None = None,
        limit: int = 500,
        newest_first: bool = False,
    ) -> list[Candle]: ...


@dataclass(frozen=True, slots=True)
class BackfillProgress:
    """After each page: ``fetched`` of at most ``expected`` candles so far, and how
    many of the ``expected`` candle slots the walk has passed (``walked``), which
    keeps growing over stretches where the exchange has no candles."""

    fetched: int
    expected: int
    walked: int
    cursor: int  # open time of the next candle wanted
    pages: int


@dataclass(frozen=True, slots=True)
class BackfillResult:
    exchange: str
    symbol: str
    interval: str
    start: int  # first open time this run asked for (after resuming)
    end: int  # open times before this were wanted
    resumed_after: int | None  # newest stored candle the run continued from
    fetched: int  # candles stored by this run
    pages: int  # requests made

    @property
    def expected(self) -> int:
        return _slots(self.start, self.end, self.interval)


def _slots(start: int, end: int, interval: str) -> int:
    ms = Interval.parse(interval).ms
    return max(0, -(-(end - start) // ms))


def first_open_at_or_after(interval: Interval, ts: int) -> int:
    bucket = interval.bucket(ts)
    return bucket if bucket == ts else interval.next_bucket(bucket)


def backfill_range(
    interval: Interval, since: int, until: int | None, *, now: int
) -> tuple[int, int]:
    """``(start, end)``: open times ``start <= t < end`` wanted, closed candles only."""
    closed_before = interval.bucket(now)  # the candle opening here is still open
    end = closed_before if until is None else min(until, closed_before)
    return first_open_at_or_after(interval, since), end


async def backfill(
    fetcher: CandleFetcher,
    store: CandleStore,
    *,
    symbol: str,
    interval: Interval,
    since: int,
    until: int | None = None,
    limit: int,
    on_progress: Callable[[BackfillProgress], None] | None = None,
    clock: Callable[[], int] = now_ms,
) -> BackfillResult:
    """Store ``symbol``'s closed ``interval`` candles opening in ``[since, until)``.

    ``until`` None means up to now. Continues after the newest candle already
    stored in that range. Exceptions of the fetcher or store propagate; what
    was stored before stays, and the next run resumes from it.
    """
    if limit < 1:
        raise ValueError("limit must be >= 1")
    exchange = fetcher.exchange
    ms = interval.ms
    start, end = backfill_range(interval, since, until, now=clock())
    resumed_after: int | None = None
    if start < end:
        newest = await store.get_candles(
            exchange, symbol, interval.name, start=start, end=end, limit=1, newest_first=True
        )
        if newest:
            resumed_after = newest[0].open_time
            start = resumed_after + ms
    expected = _slots(start, end, interval.name)
    fetched = pages = 0
    cursor = start
    while cursor < end:
        window_end = min(end, cursor + limit * ms)
        page = await fetcher.fetch_ohlcv(
            symbol, interval.name, since=cursor, until=window_end - 1, limit=limit
        )
        pages += 1
        wanted = _in_range(page, exchange, symbol, interval.name, cursor, end)
        if wanted:
            await store.upsert_candles(wanted)
            fetched += len(wanted)
        # A full page may have been cut short: continue right after it. Otherwise
        # the exchange had nothing more in the window (an exchange that answered
        # beyond the window has moved the cursor further already).
        last = wanted[-1].open_time + ms if wanted else cursor
        cursor = last if len(page) >= limit and wanted else max(window_end, last)
        if on_progress is not None:
            walked = _slots(start, min(cursor, end), interval.name)
            on_progress(BackfillProgress(fetched, expected, walked, min(cursor, end), pages))
    result = BackfillResult(
        exchange, symbol, interval.name, start, end, resumed_after, fetched, pages
    )
    log.info(
        "backfill done",
        exchange=exchange, symbol=symbol, interval=interval.name,
        fetched=fetched, pages=pages, resumed_after=resumed_after,
    )  # fmt: skip
    return result


def _in_range(
    page: Sequence[Candle], exchange: str, symbol: str, interval: str, start: int, end: int
) -> list[Candle]:
    """The page's candles of this series opening in ``[start, end)``, by open time.

    They are all closed (``end`` is at most the open time of the current
    candle), whatever the fetcher could tell when it fetched them.
    """
    by_open: dict[int, Candle] = {}
    for c in page:
        if (
            start <= c.open_time < end
            and c.symbol == symbol
            and c.exchange == exchange
            and c.interval == interval
        ):
            by_open[c.open_time] = c if c.closed else dataclasses.replace(c, closed=True)
    return [by_open[t] for t in sorted(by_open)]
