"""Order books from the bus -> the paper venue of one exchange -> its fills.

The ``orderbooks`` topic carries full L2 snapshots keyed ``exchange:symbol``
(``services/book_service.py``); each of the configured exchange's books goes to
``PaperVenue.on_book`` in the order it arrived, which fills the resting paper
orders it crosses (``trading/paper.py``). The fills of a batch are handed to
``on_fills`` (the order service's publisher, say) before the batch is
acknowledged, retried until it succeeds, so a fill is never lost; the venue
never fills an order twice, so a book delivered again fills nothing.

The group starts at the end of the topic (``start="latest"``): a paper order is
filled by books that came after it, never by a retained backlog. Run one member
of the group per venue: the venue lives in this process's memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog

from cryptodesk.adapters.bus.base import Bus
from cryptodesk.domain.orders import Fill
from cryptodesk.observability.metrics import Metrics
from cryptodesk.services.consume import consume, decoded_books
from cryptodesk.services.retry import retry_forever
from cryptodesk.trading.paper import PaperVenue

log = structlog.get_logger(__name__)
FillsHandler = Callable[[list[Fill]], Awaitable[None]]


class PaperFeed:
    """Feeds ``venue`` (``paper:EXCHANGE``) the exchange's books from the bus."""

    def __init__(
        self,
        bus: Bus,
        venue: PaperVenue,
        on_fills: FillsHandler,
        *,
        group: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._bus = bus
        self.venue = venue
        self._on_fills = on_fills
        self._group = group or f"paper-{venue.exchange}"
        self._metrics = metrics
        self.books = 0  # books of the exchange applied
        self.filled = 0  # fills handed on

    async def run(self, stop: asyncio.Event) -> None:
        """Consume ``orderbooks`` until ``stop`` is set and nothing more arrives."""
        await consume(self._bus, "orderbooks", group=self._group, stop=stop,
                      handle=self.process, metrics=self._metrics)  # fmt: skip

    async def process(self, values: Sequence[bytes]) -> list[Fill]:
        """Apply the encoded books in ``values`` in order and hand on their fills."""
        fills: list[Fill] = []
        for book in decoded_books(values):
            if book.exchange != self.venue.exchange:
                continue
            self.books += 1
            fills += self.venue.on_book(book)
        if fills:
            await retry_forever(lambda: self._on_fills(fills), what="hand on paper fills")
            self.filled += len(fills)
        return fills
