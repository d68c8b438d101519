"""Order books from the bus -> latest snapshot per market in the cache.

Books are state, not history: only the newest snapshot of each market in a
batch is written, and nothing goes to the database.
"""

from __future__ import annotations

import asyncio

import structlog

from cryptodesk.adapters.bus.base import Bus
from cryptodesk.adapters.cache.base import Cache
from cryptodesk.domain import codec
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.market import OrderBook
from cryptodesk.observability.metrics import Metrics
from cryptodesk.services import cache_keys
from cryptodesk.services.dead_letter import DeadLetters
from cryptodesk.services.retry import retry_forever

log = structlog.get_logger(__name__)


class BookService:
    def __init__(self, bus: Bus, cache: Cache, metrics: Metrics, *, group: str = "books") -> None:
        self._bus = bus
        self._cache = cache
        self._metrics = metrics
        self._group = group

    async def run(self, stop: asyncio.Event) -> None:
        consumer = self._bus.consumer("orderbooks", group=self._group, name=f"{self._group}-1")
        dead = DeadLetters(self._bus, self._metrics)
        try:
            while True:
                messages = await consumer.fetch(1000, timeout=0.2)
                if not messages:
                    if stop.is_set():
                        break
                    continue
                latest: dict[str, OrderBook] = {}
                for m in messages:
                    try:
                        book = codec.decode_book(m.value)
                    except (DomainError, ValueError, KeyError, TypeError) as exc:
                        dead.add(m, f"undecodable book: {exc}")
                        continue
                    key = cache_keys.book(book.exchange, book.symbol)
                    prev = latest.get(key)
                    if prev is None or book.sequence >= prev.sequence:
                        latest[key] = book
                await retry_forever(dead.flush, what="publish dead letters")
                try:
                    await self._cache.set_many({k: codec.encode_book(b) for k, b in latest.items()})
                except Exception as exc:  # the cache is best effort; the next book replaces it
                    log.warning("cache update failed", error=str(exc))
                self._metrics.events_consumed.labels("orderbooks", self._group).inc(len(messages))
                await consumer.ack(messages)
        finally:
            await consumer.close()
