"""Ingest: read one market-data source and publish its events on the bus.

Trades go to topic ``trades`` and books to ``orderbooks``, keyed
``exchange:symbol`` so each symbol stays ordered. A source that offers a
combined ordered stream (``watch_all``: the simulator and replay files) is read
through it, so symbols never drift apart in event time; other sources are read
with one ``watch_trades`` and one ``watch_order_book`` task per symbol.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

import structlog

from cryptodesk.adapters.bus.base import Bus
from cryptodesk.adapters.cache.base import Cache
from cryptodesk.adapters.exchanges.base import MarketDataSource
from cryptodesk.domain import codec
from cryptodesk.domain.market import OrderBook, Trade, stream_key
from cryptodesk.observability.metrics import Metrics
from cryptodesk.services import cache_keys

log = structlog.get_logger(__name__)
YIELD_EVERY = 500  # events published between forced yields to the event loop


@runtime_checkable
class CombinedSource(Protocol):
    def watch_all(self) -> AsyncIterator[tuple[list[Trade], list[OrderBook]]]: ...


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
    ) -> None:
        self._source = source
        self._bus = bus
        self._cache = cache
        self._metrics = metrics
        self._symbols = list(symbols)
        self.published_trades = 0

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
        async with asyncio.TaskGroup() as tg:
            for symbol in self._symbols:
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
        self.published_trades += len(items)
        self._metrics.events_ingested.labels("trades").inc(len(items))

    async def _publish_books(self, books: list[OrderBook]) -> None:
        if not books:
            return
        items = [(stream_key(b.exchange, b.symbol), codec.encode_book(b)) for b in books]
        await self._bus.publish_many("orderbooks", items)
        self._metrics.events_ingested.labels("orderbooks").inc(len(items))

    async def close(self) -> None:
        await self._source.close()
