"""The consume loop the compute services share: fetch a batch, handle it, count it,
acknowledge it; stop once asked and nothing more arrives."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence

import structlog

from cryptodesk.adapters.bus.base import Bus, Start
from cryptodesk.domain import codec
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.market import OrderBook
from cryptodesk.observability.metrics import Metrics

log = structlog.get_logger(__name__)


async def consume(
    bus: Bus,
    topic: str,
    *,
    group: str,
    stop: asyncio.Event,
    handle: Callable[[Sequence[bytes]], Awaitable[object]],
    metrics: Metrics | None = None,
    batch: int = 1000,
    start: Start = "latest",
    on_idle: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Feed ``topic``'s messages to ``handle`` (their values, in order) as group ``group``
    until ``stop`` is set and a fetch comes back empty. A batch is acknowledged only
    after ``handle`` returned, so a crash re-delivers it (at-least-once). ``on_idle``
    runs after a fetch that found nothing (time-driven work: ageing out state)."""
    consumer = bus.consumer(topic, group=group, name=f"{group}-1", start=start)
    try:
        while True:
            messages = await consumer.fetch(batch, timeout=0.2)
            if not messages:
                if stop.is_set():
                    break
                if on_idle is not None:
                    await on_idle()
                continue
            await handle([m.value for m in messages])
            if metrics is not None:
                metrics.events_consumed.labels(topic, group).inc(len(messages))
            await consumer.ack(messages)
    finally:
        await consumer.close()


def decoded_books(values: Sequence[bytes]) -> Iterator[OrderBook]:
    """The order books in ``values``; one that does not decode is logged and skipped
    (a consumer that only reads books must not stall on a bad message)."""
    for value in values:
        try:
            yield codec.decode_book(value)
        except (DomainError, ValueError, KeyError, TypeError) as exc:
            log.warning("undecodable order book skipped", error=repr(exc))
