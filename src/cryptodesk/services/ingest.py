"""Ingest: read one market-data source and publish its events on the bus.

Trades go to topic ``trades`` and books to ``orderbooks``, keyed
``exchange:symbol`` so each symbol stays ordered. A source that offers a
combined ordered stream (``watch_all``: the simulator and replay files) is read
through it, so symbols never drift apart in event time; other sources are read
with one ``watch_trades`` and one ``watch_order_book`` task per symbol.

A feed that fails is restarted after a backoff with full jitter, forever,
while the rest of the process keeps running; ``check`` tells ``/readyz`` the
feed's state: down as ``failing`` with the last error, down as ``stale`` when
no event arrived for ``stale_after`` seconds, else up with the age of its
newest event. Each failure and (at most once a second) each delivery is also
reported to the shared ``FeedStatus``, which marks served data stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol, runtime_checkable

import structlog

from cryptodesk.adapters.bus.base import Bus
from cryptodesk.adapters.cache.base import Cache
from cryptodesk.adapters.exchanges.base import MarketDataSource
from cryptodesk.domain import codec
from cryptodesk.domain.backoff import backoff_delays
from cryptodesk.domain.market import OrderBook, Trade, stream_key
from cryptodesk.observability.metrics import Metrics
from cryptodesk.services import cache_keys
from cryptodesk.services.feed_status import FEED, FeedStatus

log = structlog.get_logger(__name__)
YIELD_EVERY = 500  # events published between forced yields to the event loop
REPORT_EVERY = 1.0  # seconds between success reports to FeedStatus while healthy


@runtime_checkable
class CombinedSource(Protocol):
    def watch_all(self) -> AsyncIterator[tuple[list[Trade], list[OrderBook]]]: ...


class FeedDown(Exception):
    """The feed is failing or silent; the message says why."""


def _describe(exc: BaseException) -> str:
    """``Type: message``; a task group's failure by its first cause, not by the group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"[:300]


class MarketIngest:
    """Publishes one source's trades and books until stopped."""

    def __init__(
        self,
        source: MarketDataSource,
        bus: Bus,
        cache: Cache,
        metrics: Metrics,
        *,
        symbols: Sequence[str],
        stale_after: float = 60.0,
        restart_initial: float = 1.0,
        restart_cap: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        status: FeedStatus | None = None,
    ) -> None:
        self._source = source
        self._bus = bus
        self._cache = cache
        self._metrics = metrics
        self._symbols = list(symbols)
        self._stale_after = stale_after
        self._restart = (restart_initial, restart_cap)
        self._clock = clock
        self._last_event: float | None = None
        self._failure: str | None = None
        self._status = status
        self._reported_at = -math.inf
        self._closed = asyncio.Event()
        self._unlisted: list[str] = []
        self.published_trades = 0

    @property
    def exchange(self) -> str:
        return self._source.exchange

    async def check(self) -> float:
        """Milliseconds since the newest event; raises FeedDown when failing or silent."""
        if self._failure is not None:
            last = (
                "no event yet"
                if self._last_event is None
                else f"last event {self._clock() - self._last_event:.0f}s ago"
            )
            raise FeedDown(f"failing: {self._failure}; {last}")
        if self._unlisted:  # the rest streams; the configuration needs fixing
            raise FeedDown(
                f"{self.exchange} does not list {', '.join(self._unlisted)}; those are not "
                "streamed (fix CRYPTODESK_SYMBOLS)"
            )
        if self._last_event is None:
            raise FeedDown("no event received yet")
        age = self._clock() - self._last_event
        if age > self._stale_after:
            raise FeedDown(f"stale: no event for {age:.0f}s (limit {self._stale_after:g}s)")
        return age * 1000

    async def run_forever(self) -> None:
        """``run``, restarted with backoff after each failure, until ``close``."""
        delays = backoff_delays(*self._restart)
        while not self._closed.is_set():
            try:
                await self.run()
                return  # the source ended (a finite replay) or was closed
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closed.is_set():
                    return
                self._failure = _describe(exc)
                self._metrics.feed_failures.labels(self.exchange).inc()
                if self._status is not None:
                    self._status.failed(self.exchange, FEED, self._failure)
                delay = next(delays)
                log.warning(
                    "feed failed, restarting",
                    exchange=self.exchange,
                    error=self._failure,
                    retry_in=round(delay, 3),
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closed.wait(), delay)

    def _seen(self) -> None:
        now = self._clock()
        if self._status is not None and (
            self._failure is not None or now - self._reported_at >= REPORT_EVERY
        ):
            # Throttled: events arrive thousands of times a second, and a
            # recovery is reported at once.
            self._status.succeeded(self.exchange, FEED)
            self._reported_at = now
        self._last_event = now
        self._failure = None

    async def run(self) -> None:
        markets = await self._source.load_markets()
        await self._cache.set(
            cache_keys.markets(self._source.exchange), codec.encode_markets(markets)
        )
        log.info("ingest started", exchange=self._source.exchange, symbols=self._symbols)
        if isinstance(self._source, CombinedSource):
            since_yield = 0
            async for trades, books in self._source.watch_all():
                await self._publish_trades(trades)
                await self._publish_books(books)
                since_yield += len(trades) + 1
                if since_yield >= YIELD_EVERY:
                    # A source catching up hands over queued batches without ever
                    # suspending; let database round trips and requests run too.
                    since_yield = 0
                    await asyncio.sleep(0)
            return
        listed = {m.symbol for m in markets}
        symbols = [s for s in self._symbols if s in listed]
        self._unlisted = [s for s in self._symbols if s not in listed]
        if self._unlisted:
            log.error("symbols not listed, not streamed", exchange=self.exchange,
                      symbols=self._unlisted)  # fmt: skip
        if not symbols:
            raise FeedDown(f"{self.exchange} lists none of {', '.join(self._symbols)}")
        async with asyncio.TaskGroup() as tg:
            for symbol in symbols:
                tg.create_task(self._pump_trades(symbol))
                tg.create_task(self._pump_books(symbol))

    async def _pump_trades(self, symbol: str) -> None:
        async for trades in self._source.watch_trades(symbol):
            await self._publish_trades(trades)

    async def _pump_books(self, symbol: str) -> None:
        async for book in self._source.watch_order_book(symbol):
            await self._publish_books([book])

    async def _publish_trades(self, trades: list[Trade]) -> None:
        if not trades:
            return
        items = [(stream_key(t.exchange, t.symbol), codec.encode_trade(t)) for t in trades]
        await self._bus.publish_many("trades", items)
        self._seen()
        self.published_trades += len(items)
        self._metrics.events_ingested.labels("trades").inc(len(items))

    async def _publish_books(self, books: list[OrderBook]) -> None:
        if not books:
            return
        items = [(stream_key(b.exchange, b.symbol), codec.encode_book(b)) for b in books]
        await self._bus.publish_many("orderbooks", items)
        self._seen()
        self._metrics.events_ingested.labels("orderbooks").inc(len(items))

    async def close(self) -> None:
        self._closed.set()
        await self._source.close()
