"""Bus -> WebSocket hub: what every API process relays to its own clients.

Each API process reads the topics in a consumer group of its own
(``ws-<instance>``), so every process sees every event (a broadcast, not a
work queue). The groups start at the end of each topic (``start="latest"``):
what was on the bus before the process started is old news, and snapshots
come from the cache. They end with the process: a clean stop deletes them, so
the bus does not keep a position for every process that ever ran. Work is
done only for channels someone subscribes to.

- ``trades`` -> ``trades:EX:SYM`` (batches of trades) and the ticker trigger;
- ``orderbooks`` -> ``book:EX:SYM`` (the newest book of a batch, cut to depth);
- ``candles`` -> ``candles:EX:SYM:IV`` (finalized candles; a redelivered or
  older one is dropped by open time);
- ``signals`` -> ``signals``; ``tenant-events`` -> ``portfolio``/``orders``/``alerts``
  and ``book:internal:SYM`` (a book not newer, by its engine ``sequence``, than the
  one sent already is dropped: another process may publish its older book later).

Tickers are computed by compute into the cache, not published: trades on the
bus make this feed re-read the cached tickers (after a short settle, so one
read covers a burst), again while a cached ticker is older than the newest
trade seen, and every ``ticker_poll_seconds`` anyway (a ticker prefetched
over REST has no trades). A changed ticker is one update.

The latest-state tenant channels are also re-read every ``tenant_poll_seconds``
(the portfolio moves with prices; an internal book moves with orders placed by a
process that publishes nothing, such as the command line).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import msgspec
import structlog

from cryptodesk.adapters.bus.base import Bus, Message
from cryptodesk.domain import codec
from cryptodesk.domain.market import OrderBook
from cryptodesk.domain.signals import decode_signal
from cryptodesk.services.ws_channels import (
    INTERNAL_BOOK,
    LATEST_STATE,
    TENANT_CHANNELS,
    book_sequence,
    internal_book_channel,
    is_internal_book,
)
from cryptodesk.services.ws_hub import Channel, WsHub, to_json

log = structlog.get_logger(__name__)
T = TypeVar("T")
TICKER_CATCH_UP_SECONDS = 2.0  # stop re-reading a cached ticker that never reaches a trade
GROUP_DELETE_SECONDS = 5.0  # at shutdown: a bus that is away keeps the groups instead
TENANT_TOPIC = "tenant-events"
_encode = msgspec.json.Encoder().encode


class TenantEvent(msgspec.Struct):
    """The bus form of a tenant channel's event (topic ``tenant-events``, key tenant)."""

    t: str  # tenant
    c: str  # channel
    d: msgspec.Raw  # JSON data, relayed as is


async def publish_tenant_event(bus: Bus, tenant: str, channel: str, data: object) -> None:
    """Send ``data`` to every API process's subscribers of ``channel`` of ``tenant``;
    callable from any process (an alert rule runner, an order service)."""
    if channel not in TENANT_CHANNELS and not is_internal_book(channel):
        raise ValueError(f"{channel!r} is not a tenant channel: {', '.join(TENANT_CHANNELS)} "
                         "or book:internal:SYMBOL")  # fmt: skip
    raw = msgspec.Raw(_encode(data))
    await bus.publish(TENANT_TOPIC, tenant, _encode(TenantEvent(tenant, channel, raw)))


async def publish_internal_book(bus: Bus, tenant: str, book: Mapping[str, Any]) -> None:
    """The tenant's internal venue book (``OrderService.book_now``: symbol, sequence,
    levels, last price) to its ``book:internal:SYMBOL`` subscribers in every API process."""
    await publish_tenant_event(bus, tenant, internal_book_channel(book["symbol"]), book)


class WsFeed:
    """Feeds ``hub`` from its bus; ``run`` until stopped, then closes every client."""

    def __init__(
        self,
        hub: WsHub,
        *,
        instance: str | None = None,
        ticker_poll_seconds: float = 1.0,
        ticker_settle_seconds: float = 0.05,
        tenant_poll_seconds: float = 5.0,
        batch_size: int = 1000,
    ) -> None:
        self.hub = hub
        self.group = f"ws-{instance or uuid.uuid4().hex[:12]}"
        self.ticker_poll_seconds = ticker_poll_seconds
        self.ticker_settle_seconds = ticker_settle_seconds
        self.tenant_poll_seconds = tenant_poll_seconds
        self.batch_size = batch_size
        self._tickers_due: dict[str, tuple[int, float]] = {}  # key -> (newest trade ts, since)
        self._ticker_wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set; then every client is closed (1001)."""
        feeds: list[tuple[str, Callable[[list[Message]], None]]] = [
            ("trades", self._on_trades), ("orderbooks", self._on_books),
            ("candles", self._on_candles), ("signals", self._on_signals),
            (TENANT_TOPIC, self._on_tenant_events),
        ]  # fmt: skip
        try:
            async with asyncio.TaskGroup() as tg:
                for topic, handle in feeds:
                    tg.create_task(self._consume(topic, handle, stop))
                tg.create_task(self._tickers(stop))
                tg.create_task(self._stopping(stop))
                tg.create_task(_every(self.hub.heartbeat_seconds, self._heartbeat, stop))
                if self.hub.internal_books is not None or any(
                    k in LATEST_STATE for k in self.hub.tenant_sources
                ):
                    tg.create_task(_every(self.tenant_poll_seconds, self._poll_tenants, stop))
        finally:
            self.hub.close_all()
        await self._delete_groups([topic for topic, _ in feeds])

    async def _delete_groups(self, topics: list[str]) -> None:
        """Every consumer is closed now; nothing will resume these groups."""
        try:
            async with asyncio.timeout(GROUP_DELETE_SECONDS):
                for topic in topics:
                    await self.hub.bus.delete_group(topic, self.group)
        except Exception as exc:  # the bus is away or closed: the groups stay behind
            log.warning("websocket feed's bus groups not deleted", group=self.group,
                        error=repr(exc))  # fmt: skip

    async def _stopping(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.hub.close_all()
        self._ticker_wake.set()

    async def _consume(
        self, topic: str, handle: Callable[[list[Message]], None], stop: asyncio.Event
    ) -> None:
        bus = self.hub.bus
        consumer = bus.consumer(topic, group=self.group, name=self.group, start="latest")
        try:
            while not stop.is_set():
                messages = await consumer.fetch(self.batch_size, timeout=0.2)
                if messages:
                    try:
                        handle(messages)
                    except Exception:  # a bad event must not stop the feed
                        log.exception("websocket relay failed", topic=topic)
                    await consumer.ack(messages)
        finally:
            await consumer.close()

    def _on_trades(self, messages: list[Message]) -> None:
        channels, render = self.hub.channels, self.hub.renderer
        batches: dict[str, list[str]] = {}
        for m in messages:
            trades = channels.get(f"trades:{m.key}")
            ticker = f"ticker:{m.key}"
            if trades is None and ticker not in channels:
                continue
            t = _decoded(m, codec.decode_trade)
            if t is None:
                continue
            if ticker in channels:
                self._ticker_due(ticker, t.ts)
            if trades is not None:
                batches.setdefault(trades.spec.key, []).append(to_json(render.trade(t)))
        for key, items in batches.items():
            if (ch := channels.get(key)) is not None:
                self.hub.add_items(ch, items)

    def _on_books(self, messages: list[Message]) -> None:
        channels = self.hub.channels
        newest: dict[str, OrderBook] = {}
        for m in messages:
            if f"book:{m.key}" in channels and (book := _decoded(m, codec.decode_book)):
                prev = newest.get(m.key)
                if prev is None or (book.ts, book.sequence) >= (prev.ts, prev.sequence):
                    newest[m.key] = book
        for key, book in newest.items():
            ch = channels.get(f"book:{key}")
            if ch is not None and (ch.mark is None or (book.ts, book.sequence) > ch.mark):
                ch.mark = (book.ts, book.sequence)
                top = book.top(self.hub.book_depth)
                self.hub.update(ch, to_json(self.hub.renderer.book(top)))

    def _on_candles(self, messages: list[Message]) -> None:
        for m in messages:
            c = _decoded(m, codec.decode_candle)
            if c is None or not c.closed:
                continue
            ch = self.hub.channels.get(f"candles:{c.exchange}:{c.symbol}:{c.interval}")
            if ch is None:
                continue
            if ch.ready is not None:  # its snapshot is being read: merged into it
                ch.arrived.append(c)
            elif ch.mark is None or c.open_time > ch.mark:  # a redelivery is no news
                ch.mark = c.open_time
                self.hub.add_items(ch, [to_json(self.hub.renderer.candle(c))])

    def _on_signals(self, messages: list[Message]) -> None:
        ch = self.hub.channels.get("signals")
        if ch is not None:
            found = [s for m in messages if (s := _decoded(m, decode_signal)) is not None]
            if found:
                self.hub.add_items(ch, [to_json(self.hub.renderer.signal(s)) for s in found])

    def _on_tenant_events(self, messages: list[Message]) -> None:
        decode = msgspec.json.Decoder(TenantEvent).decode
        for m in messages:
            event = _decoded(m, decode)
            ch = None if event is None else self.hub.channels.get(f"{event.c}@{event.t}")
            if event is None or ch is None:
                continue
            if ch.spec.kind == INTERNAL_BOOK and not _newer_book(ch, book_sequence(event.d)):
                continue
            data = bytes(event.d).decode()
            if ch.coalesce:
                self.hub.update(ch, data)
            else:
                self.hub.add_items(ch, [data])

    # ---- tickers, heartbeats, tenant polls ----------------------------------------------

    def _ticker_due(self, key: str, ts: int) -> None:
        old = self._tickers_due.get(key)
        if old is None:
            self._tickers_due[key] = (ts, asyncio.get_running_loop().time())
        elif ts > old[0]:
            self._tickers_due[key] = (ts, old[1])
        self._ticker_wake.set()

    async def _tickers(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        channels = self.hub.channels
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ticker_wake.wait(), self.ticker_poll_seconds)
            self._ticker_wake.clear()
            if stop.is_set():
                return
            if not any(k.startswith("ticker:") for k in channels):
                self._tickers_due.clear()
                continue
            await asyncio.sleep(self.ticker_settle_seconds)  # let compute's batch land
            try:
                found = await self.hub.queries.tickers()
            except Exception as exc:
                log.warning("tickers unreadable", error=repr(exc))
                continue
            for served in found:
                t = served.value
                key = f"ticker:{t.exchange}:{t.symbol}"
                ch = channels.get(key)
                if ch is not None and ch.ready is None and t != ch.mark:
                    ch.mark = t
                    self.hub.update(ch, to_json(self.hub.renderer.ticker(t)))
                due = self._tickers_due.get(key)
                if due is not None and (
                    t.ts >= due[0] or loop.time() - due[1] > TICKER_CATCH_UP_SECONDS
                ):
                    del self._tickers_due[key]
            if self._tickers_due:  # compute has not written the newest trades yet
                self._ticker_wake.set()

    async def _heartbeat(self) -> None:
        self.hub.heartbeat()

    async def _poll_tenants(self) -> None:
        """Re-read each subscribed latest-state tenant channel; a changed answer is an update."""
        hub = self.hub
        for ch in [c for c in hub.channels.values() if c.spec.tenant and c.coalesce]:
            if ch.spec.kind == INTERNAL_BOOK:
                await self._poll_internal_book(ch)
                continue
            source = hub.tenant_sources.get(ch.spec.kind)
            if source is None or ch.ready is not None:
                continue
            try:
                data = to_json(await source(ch.spec.tenant))
            except Exception as exc:
                log.warning("tenant channel unreadable", channel=ch.spec.key, error=repr(exc))
                continue
            if data != ch.latest and hub.channels.get(ch.spec.key) is ch:
                hub.update(ch, data)

    async def _poll_internal_book(self, ch: Channel) -> None:
        hub, spec = self.hub, ch.spec
        if hub.internal_books is None or ch.ready is not None:
            return
        try:
            book = await hub.internal_books(spec.tenant, spec.symbol, hub.book_depth)
        except Exception as exc:
            log.warning("tenant channel unreadable", channel=spec.key, error=repr(exc))
            return
        if hub.channels.get(spec.key) is ch and _newer_book(ch, book["sequence"]):
            hub.update(ch, to_json(book))


def _newer_book(ch: Channel, sequence: int | None) -> bool:
    """Whether an internal book of ``sequence`` is news to ``ch`` (then it is its mark)."""
    if sequence is None or (ch.mark is not None and sequence <= ch.mark):
        return False
    ch.mark = sequence
    return True


def _decoded(message: Message, decode: Callable[[bytes], T]) -> T | None:
    try:
        return decode(message.value)
    except (ValueError, KeyError, TypeError, msgspec.DecodeError) as exc:
        log.warning("undecodable event skipped", topic=message.topic, key=message.key,
                    error=repr(exc))  # fmt: skip
        return None


async def _every(seconds: float, step: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        if not stop.is_set():
            await step()
