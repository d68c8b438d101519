"""The WebSocket hub: channels, sequence numbers, per-client bounded queues.

Transport-free: ``api/routes/ws.py`` moves frames between a socket and a
``WsClient``; the protocol is docs/websocket.md.

- A channel counts its updates (``seq``). A subscriber first gets a snapshot
  stamped with the channel's current seq, then every later update in order.
  The snapshot is the channel's state in memory, so nothing can slip between.
- Each update is serialised once per channel; every subscriber queues the same
  text. Latest-state channels (ticker, book, portfolio, book:internal) coalesce:
  an update for a client that has one of that channel still queued replaces it,
  and the frame says how many seq numbers it ``skipped``. Event channels (trades,
  candles, signals, orders, alerts) never coalesce.
- Channel names and their validation are ``services/ws_channels.py``.
- A client whose queue reaches ``queue_size`` is closed (``CLOSE_TOO_SLOW``);
  pushing never waits, so one slow client delays nobody.
- ``services/ws_feed.py`` feeds the channels from the bus, tenant events too.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import msgspec
import structlog

from cryptodesk.adapters.bus.base import Bus
from cryptodesk.domain.market import Candle, OrderBook, Ticker, Trade
from cryptodesk.domain.signals import Signal
from cryptodesk.domain.timeutil import now_ms
from cryptodesk.services.market_queries import MarketQueries
from cryptodesk.services.ws_channels import INTERNAL_BOOK, InternalBooks, parse_channel
from cryptodesk.services.ws_channels import LATEST_STATE as LATEST_STATE
from cryptodesk.services.ws_channels import TENANT_CHANNELS as TENANT_CHANNELS
from cryptodesk.services.ws_channels import ChannelError as ChannelError
from cryptodesk.services.ws_channels import ChannelSpec as ChannelSpec

log = structlog.get_logger(__name__)

CLOSE_GOING_AWAY: Final = 1001
CLOSE_UNAUTHORIZED: Final = 4001
CLOSE_IDLE: Final = 4002
CLOSE_TOO_SLOW: Final = 4008
_encode = msgspec.json.Encoder().encode


def to_json(value: object) -> str:
    return _encode(value).decode()


class Renderer(Protocol):
    """Domain values to the JSON-ready objects clients receive (the API's wire form)."""

    def ticker(self, t: Ticker) -> object: ...
    def book(self, b: OrderBook) -> object: ...
    def trade(self, t: Trade) -> object: ...
    def candle(self, c: Candle) -> object: ...
    def signal(self, s: Signal) -> object: ...


class Channel:
    """One channel's sequence, subscribers and state.

    ``latest`` is the data of the newest update (latest-state channels),
    ``items`` the newest items (event channels), ``mark`` what the newest update
    was, so repeats and old news are dropped. While ``ready`` is set the first
    snapshot is being read; candles finalized meanwhile wait in ``arrived``.
    """

    __slots__ = ("arrived", "items", "latest", "mark", "prefix", "ready", "seq", "snapshot",
                 "spec", "subs")  # fmt: skip

    def __init__(self, spec: ChannelSpec, recent: int) -> None:
        self.spec = spec
        self.seq = 0
        self.subs: set[WsClient] = set()
        self.latest: str | None = None
        self.items: deque[str] = deque(maxlen=recent)
        self.mark: Any = None
        self.ready: asyncio.Event | None = asyncio.Event()
        self.arrived: list[Candle] = []
        self.snapshot: tuple[int, str] | None = None
        self.prefix = f'{{"type":"delta","channel":{to_json(spec.name)},"seq":'

    @property
    def coalesce(self) -> bool:
        return self.spec.kind in LATEST_STATE

    def seeded(self) -> None:
        if self.ready is not None:
            self.ready.set()
            self.ready = None
            self.arrived = []

    def prepend(self, seed: Sequence[str]) -> None:
        """Seed items go before what arrived while the seed was read."""
        arrived = list(self.items)
        self.items.clear()
        self.items.extend([*seed, *arrived])

    def snapshot_text(self) -> str:
        """Rendered once per seq, however many clients subscribe meanwhile."""
        if self.snapshot is None or self.snapshot[0] != self.seq:
            data = (self.latest or "null") if self.coalesce else f"[{','.join(self.items)}]"
            name = to_json(self.spec.name)
            text = f'{{"type":"snapshot","channel":{name},"seq":{self.seq},"data":{data}}}'
            self.snapshot = (self.seq, text)
        return self.snapshot[1]


class _Update:
    """One update of one channel, shared by every subscriber's queue."""

    __slots__ = ("channel", "data", "seq", "text")

    def __init__(self, channel: Channel, seq: int, data: str) -> None:
        self.channel = channel
        self.seq = seq
        self.data = data
        self.text = f'{channel.prefix}{seq},"data":{data}}}'

    def skipping(self, skipped: int) -> str:
        return f'{self.channel.prefix}{self.seq},"skipped":{skipped},"data":{self.data}}}'


@dataclass
class HubStats:
    clients: int = 0
    channels: int = 0
    updates: int = 0
    closed_too_slow: int = 0
    closed_idle: int = 0


class WsClient:
    """One connection's queue of frames and its subscriptions (channel key -> spec).

    There is one per connection, so it stays small: slots, and a list for the queue
    (it is mostly empty or holds a frame or two; an empty deque costs 768 bytes).
    """

    __slots__ = ("_limit", "_stats", "_waiter", "close_code", "close_reason", "drain",
                 "last_seen", "on_close", "on_ready", "pending", "queue",
                 "subscriptions")  # fmt: skip

    def __init__(self, limit: int, now: float, stats: HubStats) -> None:
        self._limit = limit
        self._stats = stats
        self.queue: list[str | _Update] = []
        self.pending: dict[str, list[_Update]] = {}  # coalescing: key -> [queued, newest]
        self.subscriptions: dict[str, ChannelSpec] = {}
        self.close_code: int | None = None
        self.close_reason = ""
        self.drain = False
        self.last_seen = now
        # Called when the hub closes the client: the transport abandons a send that
        # waits on a socket the peer stopped reading.
        self.on_close: Callable[[], None] | None = None
        # Called when a frame is queued: the transport starts sending (instead of a
        # task per connection waiting on ``next``).
        self.on_ready: Callable[[], None] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def send(self, item: str | _Update) -> None:
        """Queue a frame; a full queue closes the client instead (never waits)."""
        if self.close_code is not None:
            return
        if len(self.queue) >= self._limit:
            self._stats.closed_too_slow += 1
            log.warning("websocket client too slow, closed", code=CLOSE_TOO_SLOW,
                        queue_size=self._limit, subscriptions=len(self.subscriptions))  # fmt: skip
            self.close(CLOSE_TOO_SLOW, "too slow: the outbound queue overflowed")
            return
        self.queue.append(item)
        self._wake()
        if self.on_ready is not None:
            self.on_ready()

    def send_latest(self, update: _Update) -> None:
        entry = self.pending.get(update.channel.spec.key)
        if entry is not None and self.close_code is None:
            entry[1] = update  # the queued one goes out as this, skipping the seqs between
            return
        self.pending[update.channel.spec.key] = [update, update]
        self.send(update)

    def close(self, code: int, reason: str, *, drain: bool = False) -> None:
        """Stop the client with ``code``; ``drain`` first sends what is queued."""
        if self.close_code is None:
            self.close_code, self.close_reason, self.drain = code, reason, drain
            if not drain:
                self.queue.clear()
            self._wake()
            if self.on_close is not None:
                self.on_close()

    def pop(self) -> str | None:
        """The next frame to send now; None when none is queued or the client is
        closed (without ``drain``)."""
        queue = self.queue
        while queue and (self.close_code is None or self.drain):
            item = queue.pop(0)  # at most queue_size long: the shift is cheap
            if isinstance(item, str):
                return item
            if not item.channel.coalesce:
                return item.text
            entry = self.pending.get(item.channel.spec.key)
            if entry is None or entry[0] is not item:
                continue  # queued before an unsubscribe: its subscription is gone
            del self.pending[item.channel.spec.key]
            newest = entry[1]
            return item.text if newest is item else newest.skipping(newest.seq - item.seq)
        return None

    async def next(self) -> str | None:
        """The next frame to send, waiting for one; None once the client is closed."""
        while True:
            if (frame := self.pop()) is not None:
                return frame
            if self.close_code is not None:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


TenantSource = Callable[[str], Awaitable[Any]]


class WsHub:
    """The channels and clients of one API process; ``services.ws_feed`` feeds it.

    Snapshots: tickers, books and candles from ``queries`` (the cache first),
    signals from ``recent_signals``, tenant channels from ``tenant_sources``
    (portfolio: a valuation; orders and alerts: a list of recent items), the
    tenants' internal venue books from ``internal_books``.
    """

    def __init__(
        self,
        bus: Bus,
        queries: MarketQueries,
        renderer: Renderer,
        *,
        queue_size: int = 1024,
        heartbeat_seconds: float = 15.0,
        idle_timeout: float = 45.0,
        book_depth: int = 20,
        snapshot_candles: int = 100,
        recent_items: int = 50,
        recent_signals: Callable[[], Awaitable[Sequence[Signal]]] | None = None,
        tenant_sources: Mapping[str, TenantSource] | None = None,
        internal_books: InternalBooks | None = None,
    ) -> None:
        self.bus = bus
        self.queries = queries
        self.renderer = renderer
        self.queue_size = queue_size
        self.heartbeat_seconds = heartbeat_seconds  # the feed pings this often
        self.idle_timeout = idle_timeout
        self.book_depth = book_depth
        self.snapshot_candles = snapshot_candles
        self.recent_items = recent_items
        self.recent_signals = recent_signals
        self.tenant_sources: Mapping[str, TenantSource] = tenant_sources or {}
        self.internal_books = internal_books
        self.channels: dict[str, Channel] = {}  # by ChannelSpec.key
        self.clients: set[WsClient] = set()
        self.stats = HubStats()

    # ---- clients and subscriptions ----------------------------------------------------

    def connect(self) -> WsClient:
        client = WsClient(self.queue_size, asyncio.get_running_loop().time(), self.stats)
        self.clients.add(client)
        self.stats.clients = len(self.clients)
        return client

    def disconnect(self, client: WsClient) -> None:
        for spec in list(client.subscriptions.values()):
            self.unsubscribe(client, spec)
        self.clients.discard(client)
        self.stats.clients = len(self.clients)

    def channel(self, text: str, tenant: str | None = None) -> ChannelSpec:
        """The channel ``text`` names, validated and in canonical form, or ChannelError."""
        return parse_channel(text, tenant, self.queries)

    async def subscribe(self, client: WsClient, spec: ChannelSpec) -> None:
        """Add ``client`` to the channel and queue its snapshot (again when already
        subscribed: that is how a client resynchronises)."""
        while (ch := self.channels.get(spec.key)) is None or ch.ready is not None:
            if ch is not None and (reading := ch.ready) is not None:
                await reading.wait()  # another subscriber is reading the snapshot
                continue
            recent = self.snapshot_candles if spec.kind == "candles" else self.recent_items
            ch = self.channels[spec.key] = Channel(spec, recent)
            self.stats.channels = len(self.channels)
            try:
                await self._seed(ch)
            except asyncio.CancelledError:
                self._drop_if_unused(ch)
                raise
            except Exception as exc:  # served empty; the next update fills it
                log.warning("channel snapshot unavailable", channel=spec.key, error=repr(exc))
            finally:
                ch.seeded()
        if client.close_code is not None:
            return
        ch.subs.add(client)
        # The channel's spec, not the one parsed from this client's message: every
        # subscriber shares its strings.
        client.subscriptions[ch.spec.key] = ch.spec
        client.pending.pop(spec.key, None)  # a coalesced update queued before is stale now
        client.send(ch.snapshot_text())

    def unsubscribe(self, client: WsClient, spec: ChannelSpec) -> None:
        client.subscriptions.pop(spec.key, None)
        client.pending.pop(spec.key, None)
        ch = self.channels.get(spec.key)
        if ch is not None:
            ch.subs.discard(client)
            self._drop_if_unused(ch)

    def _drop_if_unused(self, ch: Channel) -> None:
        # A channel lives while subscribed: a later subscriber seeds it afresh.
        if not ch.subs and self.channels.get(ch.spec.key) is ch:
            del self.channels[ch.spec.key]
            self.stats.channels = len(self.channels)

    def close_all(self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutting down") -> None:
        for client in list(self.clients):
            client.close(code, reason)

    def heartbeat(self) -> None:
        """A ping to every client; one that sent nothing for ``idle_timeout`` is closed."""
        now = asyncio.get_running_loop().time()
        ping = to_json({"type": "ping", "ts": now_ms()})
        for client in list(self.clients):
            if now - client.last_seen > self.idle_timeout:
                self.stats.closed_idle += 1
                log.info("websocket client idle, closed", code=CLOSE_IDLE)
                client.close(CLOSE_IDLE, f"idle: nothing received for {self.idle_timeout:g} s")
            else:
                client.send(ping)

    async def publish_tenant(self, tenant: str, channel: str, data: object) -> None:
        """``data`` to the tenant's subscribers of ``channel`` in every API process."""
        from cryptodesk.services.ws_feed import publish_tenant_event  # the bus side

        await publish_tenant_event(self.bus, tenant, channel, data)

    # ---- updates ----------------------------------------------------------------------

    def update(self, ch: Channel, data: str) -> None:
        """One update of ``ch`` (``data`` is JSON text), queued for every subscriber."""
        ch.seq += 1
        self.stats.updates += 1
        update = _Update(ch, ch.seq, data)
        if ch.coalesce:
            ch.latest = data
            for client in ch.subs:
                client.send_latest(update)
        else:
            for client in ch.subs:
                client.send(update)

    def add_items(self, ch: Channel, items: Sequence[str]) -> None:
        """New items of an event channel: one update whose data is their array."""
        ch.items.extend(items)
        self.update(ch, f"[{','.join(items)}]")

    async def _seed(self, ch: Channel) -> None:
        """The channel's first state, read while updates may already arrive: what
        they brought is kept (it is newer), and candles are merged by open time."""
        spec, render = ch.spec, self.renderer
        if spec.kind == "ticker":
            found = await self.queries.tickers(spec.exchange, spec.symbol)
            if found and ch.mark is None:
                ch.mark = found[0].value
                ch.latest = to_json(render.ticker(found[0].value))
        elif spec.kind == "book":
            book = await self.queries.orderbook(spec.exchange, spec.symbol, self.book_depth)
            if book is not None and ch.mark is None:
                ch.mark = (book.value.ts, book.value.sequence)
                ch.latest = to_json(render.book(book.value))
        elif spec.kind == "candles":
            page = await self.queries.candles(
                spec.exchange, spec.symbol, spec.interval, limit=self.snapshot_candles
            )
            by_time = {c.open_time: c for c in [*page.candles, *ch.arrived]}
            candles = [by_time[t] for t in sorted(by_time)][-self.snapshot_candles :]
            ch.items.clear()
            ch.items.extend(to_json(render.candle(c)) for c in candles)
            ch.mark = candles[-1].open_time if candles else None
        elif spec.kind == "signals" and self.recent_signals is not None:
            ch.prepend([to_json(render.signal(s)) for s in await self.recent_signals()])
        elif spec.kind == INTERNAL_BOOK and self.internal_books is not None:
            own = await self.internal_books(spec.tenant, spec.symbol, self.book_depth)
            if ch.mark is None or own["sequence"] > ch.mark:  # else a newer one arrived
                ch.mark, ch.latest = own["sequence"], to_json(own)
        elif spec.tenant and (source := self.tenant_sources.get(spec.kind)) is not None:
            data = await source(spec.tenant)
            if ch.coalesce:
                ch.latest = ch.latest or to_json(data)
            else:
                ch.prepend([to_json(x) for x in data])
