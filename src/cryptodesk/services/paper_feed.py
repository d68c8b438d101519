"""Order books from the bus -> the order service's paper venues -> resting paper fills.

The ``orderbooks`` topic carries full L2 snapshots keyed ``exchange:symbol``
(``services/book_service.py``); each book of a paper exchange goes to
``OrderService.on_book`` in the order it arrived, which fills the resting paper
orders it crosses, one logged command per tenant (``trading/paper.py``,
``services/order_service.py``). A book delivered again fills nothing (a paper
venue only takes a newer book), so at-least-once delivery is enough.

Orders are placed in other processes (the API) too: every ``refresh_seconds``
the service loads every tenant with an order log and catches each up, so an
order placed elsewhere is filled by books arriving at most that long after it.
The group starts at the end of the topic (``start="latest"``): a paper order is
filled by books that came after it, never by a retained backlog.

``cached_books`` reads the latest book of a market from the cache (where
``BookService`` keeps it): what a new paper order takes from.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import structlog

from cryptodesk.adapters.bus.base import Bus
from cryptodesk.adapters.cache.base import Cache
from cryptodesk.domain import codec
from cryptodesk.domain.market import OrderBook
from cryptodesk.observability.metrics import Metrics
from cryptodesk.services import cache_keys
from cryptodesk.services.consume import consume, decoded_books
from cryptodesk.services.order_service import BookReader, OrderService

log = structlog.get_logger(__name__)


class PaperFeed:
    """Feeds ``service``'s paper venues their exchanges' books from the bus."""

    def __init__(
        self,
        bus: Bus,
        service: OrderService,
        *,
        group: str = "paper",
        refresh_seconds: float = 2.0,
        metrics: Metrics | None = None,
    ) -> None:
        self._bus = bus
        self.service = service
        self._group = group
        self.refresh_seconds = refresh_seconds
        self._metrics = metrics
        self.books = 0  # books of a paper exchange handed on
        self.filled = 0  # resting orders they filled

    async def run(self, stop: asyncio.Event) -> None:
        """Consume ``orderbooks`` until ``stop`` is set and nothing more arrives, refreshing
        the service's tenants meanwhile."""
        refresher = asyncio.create_task(self._refresh(stop))
        try:
            await consume(self._bus, "orderbooks", group=self._group, stop=stop,
                          handle=self.process, metrics=self._metrics)  # fmt: skip
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher

    async def process(self, values: Sequence[bytes]) -> int:
        """Hand the encoded books in ``values`` on in order; the orders they filled."""
        filled = 0
        for book in decoded_books(values):
            if book.exchange not in self.service.paper:
                continue
            self.books += 1
            filled += await self.service.on_book(book)
        self.filled += filled
        return filled

    async def _refresh(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.service.refresh()
            except Exception as exc:  # the database is down: the next round retries
                log.warning("paper feed could not refresh tenants", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.refresh_seconds)


def cached_books(cache: Cache) -> BookReader:
    """The latest book of ``(exchange, symbol)`` from ``cache`` (None: none yet, or the
    cache is down: the order then has no book to take from)."""

    async def read(exchange: str, symbol: str) -> OrderBook | None:
        try:
            raw = await cache.get(cache_keys.book(exchange, symbol))
        except Exception as exc:
            log.warning("order book not read from the cache", exchange=exchange,
                        symbol=symbol, error=repr(exc))  # fmt: skip
            return None
        return None if raw is None else codec.decode_book(raw)

    return read
