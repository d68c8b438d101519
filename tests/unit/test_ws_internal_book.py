"""The WebSocket channel ``book:internal:SYMBOL``: a tenant's own book on the internal
venue, from the order service (snapshot) and its update hook through the bus (deltas),
numbered by the matching engine's sequence, and never another tenant's."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import msgspec
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import connect

from cryptodesk.adapters.bus.memory import MemoryBus
from cryptodesk.adapters.cache.memory import MemoryCache
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.api.routes.ws import WsRenderer, ws_router
from cryptodesk.config import Settings, load_settings
from cryptodesk.domain.auth import AuthenticationError, Principal
from cryptodesk.domain.orders import OrderRequest
from cryptodesk.observability.metrics import Metrics
from cryptodesk.services.market_queries import MarketQueries
from cryptodesk.services.order_service import OrderService
from cryptodesk.services.ws_channels import InternalBooks
from cryptodesk.services.ws_feed import TENANT_TOPIC, TenantEvent, WsFeed, publish_internal_book
from cryptodesk.services.ws_hub import ChannelError, WsClient, WsHub
from cryptodesk.trading_wiring import internal_book_reader, order_service
from tests.unit._fakes import DictCache, ListStore
from tests.unit._ledger_api import migrated_template

BTC = "book:internal:BTC/USDT"
EMPTY = {"symbol": "BTC/USDT", "sequence": 0, "bids": [], "asks": [], "last_price": None}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_template(tmp_path_factory.mktemp("internal-book"))


@dataclass
class Rig:
    settings: Settings
    engine: AsyncEngine
    bus: MemoryBus
    orders: OrderService  # the API process's, publishing through ``bus``
    hub: WsHub

    async def subscribe(self, client: WsClient, name: str, tenant: str | None) -> None:
        await self.hub.subscribe(client, self.hub.channel(name, tenant))


def make_hub(bus: MemoryBus, internal_books: InternalBooks | None, depth: int) -> WsHub:
    queries = MarketQueries(
        DictCache(), ListStore(), Metrics(), exchanges=["sim"],
        symbols=["BTC/USDT", "ETH/USDT"], intervals=["1m"], cache_recent_candles=10,
    )  # fmt: skip
    return WsHub(bus, queries, WsRenderer(), book_depth=depth, internal_books=internal_books)


async def started(rig: Rig, poll_seconds: float) -> tuple[asyncio.Event, asyncio.Task[None]]:
    feed = WsFeed(rig.hub, instance="t", tenant_poll_seconds=poll_seconds)
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    for _ in range(3):  # the feed's consumers join (at the end of each topic)
        await asyncio.sleep(0)
    return stop, task


@pytest.fixture
async def rig(tmp_path: Path, template: Path) -> AsyncIterator[Rig]:
    db = tmp_path / "orders.db"
    shutil.copyfile(template, db)
    settings = load_settings(data_dir=tmp_path, database_url=f"sqlite+aiosqlite:///{db}",
                             exchanges=["sim"], symbols=["BTC/USDT", "ETH/USDT"],
                             websocket_book_depth=2)  # fmt: skip
    engine = create_engine(settings.database_url)
    bus = MemoryBus()
    orders = order_service(settings, engine, MemoryCache(), bus)
    yield Rig(settings, engine, bus, orders, make_hub(bus, internal_book_reader(orders), 2))
    await engine.dispose()


def limit(account: str, side: str, quantity: str, price: str, symbol: str = "BTC/USDT") -> Any:
    return OrderRequest(account, symbol, side, "limit", D(quantity), price=D(price))  # type: ignore[arg-type]


async def fund(orders: OrderService, tenant: str) -> None:
    await orders.deposit(tenant, "alice", "USDT", D(100_000))
    await orders.deposit(tenant, "bob", "BTC", D(1))
    await orders.deposit(tenant, "bob", "ETH", D(5))


async def frame(client: WsClient) -> dict[str, Any]:
    text = await asyncio.wait_for(client.next(), 10)
    assert text is not None
    return json.loads(text)  # type: ignore[no-any-return]


def book(sequence: int, bids: list[list[str]], asks: list[list[str]], last: str | None) -> Any:
    return {"symbol": "BTC/USDT", "sequence": sequence, "bids": bids, "asks": asks,
            "last_price": last}  # fmt: skip


def delta(seq: int, data: Any) -> dict[str, Any]:
    return {"type": "delta", "channel": BTC, "seq": seq, "data": data}


async def test_channel_names_are_tenant_scoped_validated_and_canonical(rig: Rig):
    spec = rig.hub.channel("book:INTERNAL:btc-usdt", "acme")
    assert (spec.name, spec.kind, spec.exchange, spec.symbol, spec.tenant, spec.key) == (
        BTC, "internal_book", "internal", "BTC/USDT", "acme", f"{BTC}@acme")  # fmt: skip
    assert rig.hub.channel(BTC, "rival").key == f"{BTC}@rival"
    cases = {
        "book:internal:DOGE/USDT": ("unknown-symbol", "unknown symbol 'DOGE/USDT'; this "
                                    "server serves: BTC/USDT, ETH/USDT"),
        "book:internal:BTCUSDT": ("invalid-parameter", None),
        "book:internal": ("unknown-channel", None),
        "book:internal:BTC/USDT:1m": ("unknown-channel", None),
        "trades:internal:BTC/USDT": ("unknown-exchange", None),
    }  # fmt: skip
    for name, (code, message) in cases.items():
        with pytest.raises(ChannelError) as caught:
            rig.hub.channel(name, "acme")
        assert caught.value.code == code, name
        assert message is None or str(caught.value) == message
    with pytest.raises(ChannelError) as caught:
        rig.hub.channel(BTC, None)
    assert (caught.value.code, str(caught.value)) == (
        "unauthorized",
        "'book:internal:BTC/USDT' is a tenant channel: send a token",
    )


async def test_snapshot_then_a_delta_per_command_that_changed_the_book(rig: Rig):
    orders = rig.orders
    await fund(orders, "acme")
    await orders.submit("acme", limit("bob", "sell", "0.5", "60000"))  # engine events 1-2
    stop, task = await started(rig, poll_seconds=3600.0)  # the bus alone, from now on
    client = rig.hub.connect()
    await rig.subscribe(client, "book:internal:btc-usdt", "acme")
    assert await frame(client) == {
        "type": "snapshot",
        "channel": BTC,
        "seq": 0,
        "data": book(2, [], [["60000.00", "0.50000"]], None),
    }
    await orders.submit("acme", limit("alice", "buy", "0.2", "60000"))  # accepted, trade
    assert await frame(client) == delta(1, book(4, [], [["60000.00", "0.30000"]], "60000.00"))
    placed, frames = [], []
    for price in ("59000", "58000", "57000"):  # each delta read before the next command
        placed.append((await orders.submit("acme", limit("alice", "buy", "0.1", price))).order)
        frames.append(await frame(client))
    top2 = [["59000.00", "0.10000"], ["58000.00", "0.10000"]]  # depth 2: 57000 is cut
    assert frames == [
        delta(2, book(6, [["59000.00", "0.10000"]], [["60000.00", "0.30000"]], "60000.00")),
        delta(3, book(8, top2, [["60000.00", "0.30000"]], "60000.00")),
        delta(4, book(10, top2, [["60000.00", "0.30000"]], "60000.00")),
    ]
    # Commands that leave this book alone publish nothing to it: a rejection, a deposit,
    # another symbol's order. The next change is the very next delta.
    rejected = await orders.submit("acme", limit("bob", "sell", "50", "61000"))
    assert rejected.order.status == "rejected"
    await orders.deposit("acme", "carol", "USDT", D(10))
    await orders.submit("acme", limit("bob", "sell", "1", "3000", "ETH/USDT"))
    await orders.cancel("acme", placed[0].order_id)
    assert await frame(client) == delta(5, book(
        11, [["58000.00", "0.10000"], ["57000.00", "0.10000"]], [["60000.00", "0.30000"]],
        "60000.00"))  # fmt: skip
    # A client that reads nothing meanwhile gets the newest book, saying what it skipped.
    await orders.submit("acme", limit("alice", "buy", "0.1", "58000"))
    await orders.submit("acme", limit("alice", "buy", "0.3", "58500"))
    while rig.hub.channels[f"{BTC}@acme"].seq < 7:  # noqa: ASYNC110 - the feed relays both
        await asyncio.sleep(0.01)
    assert await frame(client) == {
        "type": "delta",
        "channel": BTC,
        "seq": 7,
        "skipped": 1,
        "data": book(
            15,
            [["58500.00", "0.30000"], ["58000.00", "0.20000"]],
            [["60000.00", "0.30000"]],
            "60000.00",
        ),
    }
    assert not client.queue
    stop.set()
    await task


async def test_each_command_publishes_its_order_events_then_each_book_it_touched(rig: Rig):
    audit = rig.bus.consumer(TENANT_TOPIC, group="audit")
    decode = msgspec.json.Decoder(TenantEvent).decode

    async def published() -> list[tuple[str, str, Any]]:
        """(tenant, channel, what) of each event since the last call; ``what`` is an
        order's id and status, a fill's order id, or a book."""
        out = []
        for m in await audit.fetch(100, timeout=0):
            e = decode(m.value)
            d = json.loads(bytes(e.d))
            if e.c == "orders":
                d = f"{d['event']} {d['order_id'] or '-'} {d.get('status', '')}".strip()
            out.append((e.t, e.c, d))
        await audit.ack([])
        return out

    orders = rig.orders
    await fund(orders, "acme")
    assert await published() == []  # deposits change no order and no book
    await orders.submit("acme", limit("bob", "sell", "0.5", "60000"))
    assert await published() == [
        ("acme", "orders", "order O0000000001 accepted"),
        ("acme", BTC, book(2, [], [["60000.00", "0.50000"]], None)),
    ]
    await orders.submit("acme", limit("bob", "sell", "1", "3000", "ETH/USDT"))
    eth = {"symbol": "ETH/USDT", "sequence": 2, "bids": [], "asks": [["3000.00", "1.00000"]],
           "last_price": None}  # fmt: skip
    assert await published() == [("acme", "orders", "order O0000000002 accepted"),
                                 ("acme", "book:internal:ETH/USDT", eth)]  # fmt: skip
    await orders.submit("acme", limit("bob", "sell", "50", "61000"))  # more than bob has
    assert await published() == [("acme", "orders", "order - rejected")]  # it reached no book
    await orders.submit("acme", limit("alice", "buy", "0.5", "60000"))  # takes bob's order
    assert await published() == [
        ("acme", "orders", "order O0000000003 accepted"),
        ("acme", "orders", "fill O0000000001"), ("acme", "orders", "order O0000000001 filled"),
        ("acme", "orders", "fill O0000000003"), ("acme", "orders", "order O0000000003 filled"),
        ("acme", BTC, book(4, [], [], "60000.00")),
    ]  # fmt: skip
    await orders.kill("acme", "bob")  # cancels bob's ETH order
    assert await published() == [
        ("acme", "orders", "order O0000000002 cancelled"),
        ("acme", "book:internal:ETH/USDT", {**eth, "sequence": 3, "asks": []}),
    ]
    await audit.close()


async def test_another_tenant_sees_only_its_own_book(rig: Rig):
    orders = rig.orders
    await fund(orders, "acme")
    await orders.submit("acme", limit("bob", "sell", "0.5", "60000"))
    stop, task = await started(rig, poll_seconds=3600.0)
    acme, rival = rig.hub.connect(), rig.hub.connect()
    await rig.subscribe(acme, BTC, "acme")
    await rig.subscribe(rival, BTC, "rival")
    assert (await frame(acme))["data"] == book(2, [], [["60000.00", "0.50000"]], None)
    assert await frame(rival) == {"type": "snapshot", "channel": BTC, "seq": 0, "data": EMPTY}
    await orders.submit("acme", limit("alice", "buy", "0.1", "60000"))
    assert (await frame(acme))["data"] == book(4, [], [["60000.00", "0.40000"]], "60000.00")
    await fund(orders, "rival")
    await orders.submit("rival", limit("alice", "buy", "0.3", "50000"))
    # The rival's first delta is its own order: acme's trade never reached it.
    assert await frame(rival) == delta(1, book(2, [["50000.00", "0.30000"]], [], None))
    assert not acme.queue
    assert not rival.queue
    stop.set()
    await task


async def test_an_older_book_is_dropped_and_a_newer_one_kept_over_the_snapshot(rig: Rig):
    reading, release = asyncio.Event(), asyncio.Event()

    async def slow_reader(tenant: str, symbol: str, depth: int) -> Any:
        reading.set()
        await release.wait()  # a book published meanwhile is newer than this one
        return book(3, [], [["1.00", "1.00000"]], None)

    rig.hub = make_hub(rig.bus, slow_reader, 2)
    stop, task = await started(rig, poll_seconds=3600.0)
    client = rig.hub.connect()
    subscribing = asyncio.create_task(rig.subscribe(client, BTC, "acme"))
    await reading.wait()
    await publish_internal_book(rig.bus, "acme", book(5, [], [["2.00", "1.00000"]], None))
    while rig.hub.channels[f"{BTC}@acme"].mark != 5:  # noqa: ASYNC110 - the feed relays it
        await asyncio.sleep(0.01)
    release.set()
    await subscribing
    assert await frame(client) == {
        "type": "snapshot",
        "channel": BTC,
        "seq": 1,
        "data": book(5, [], [["2.00", "1.00000"]], None),
    }
    # Another process's books may arrive late: older or repeated sequences are no news.
    for sequence in (4, 5, 7, 6):
        await publish_internal_book(rig.bus, "acme", book(sequence, [], [], None))
    assert await frame(client) == delta(2, book(7, [], [], None))
    await publish_internal_book(rig.bus, "acme", book(8, [], [], "9.00"))
    assert await frame(client) == delta(3, book(8, [], [], "9.00"))
    stop.set()
    await task


async def test_a_change_nobody_published_arrives_with_the_poll(rig: Rig):
    """An order placed by a process without a bus (the command line) is found when the
    feed re-reads the subscribed books."""
    quiet = order_service(rig.settings, rig.engine, MemoryCache(), None)
    client = rig.hub.connect()
    stop, task = await started(rig, poll_seconds=0.01)
    await rig.subscribe(client, BTC, "acme")
    assert (await frame(client))["data"] == EMPTY
    await fund(quiet, "acme")
    await quiet.submit("acme", limit("bob", "sell", "0.25", "61000.5"))
    assert await frame(client) == delta(1, book(2, [], [["61000.50", "0.25000"]], None))
    stop.set()
    await task


async def test_over_a_socket_the_channel_needs_orders_read_and_a_token(rig: Rig):
    """The route: ``orders:read`` (a viewer has it; an API key scoped to the portfolio
    does not), and the error frames of any channel."""
    callers = {
        "viewer": Principal("acme", "u1", "viewer@acme.test", "viewer"),
        "narrow": Principal("acme", "u2", "key@acme.test", "viewer", kind="api_key",
                            key_id="k1", scopes=frozenset({"portfolio:read"})),
    }  # fmt: skip

    async def authenticate(token: str) -> Principal:
        if token in callers:
            return callers[token]
        raise AuthenticationError("the token has expired")

    await fund(rig.orders, "acme")
    await rig.orders.submit("acme", limit("alice", "buy", "0.1", "59000"))
    app = FastAPI()
    app.include_router(ws_router(rig.hub, authenticate))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
        await asyncio.sleep(0.01)
    url = f"ws://127.0.0.1:{sock.getsockname()[1]}/api/v1/ws"

    async def answers(token: str | None, channels: list[str], count: int) -> list[Any]:
        async with connect(f"{url}?token={token}" if token else url) as ws:
            await ws.recv()  # welcome
            await ws.send(json.dumps({"type": "subscribe", "id": 7, "channels": channels}))
            return [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(count)]

    def error(code: str, channel: str, message: str) -> dict[str, Any]:
        return {"type": "error", "id": 7, "code": code, "channel": channel, "message": message}

    try:
        assert await answers("viewer", ["book:internal:btc-usdt", "book:internal:DOGE/USDT",
                                        "book:internal"], 4) == [
            error("unknown-symbol", "book:internal:DOGE/USDT",
                  "unknown symbol 'DOGE/USDT'; this server serves: BTC/USDT, ETH/USDT"),
            error("unknown-channel", "book:internal",
                  "unknown channel 'book:internal': use ticker|book|trades:EXCHANGE:SYMBOL, "
                  "candles:EXCHANGE:SYMBOL:INTERVAL, book:internal:SYMBOL, signals, "
                  "portfolio, orders or alerts"),
            {"type": "subscribed", "id": 7, "channels": [BTC]},
            {"type": "snapshot", "channel": BTC, "seq": 0,
             "data": book(2, [["59000.00", "0.10000"]], [], None)},
        ]  # fmt: skip
        assert await answers("narrow", [BTC], 1) == [
            error("forbidden", BTC, "book:internal:BTC/USDT needs the permission 'orders:read'")
        ]
        no_token = "'book:internal:BTC/USDT' is a tenant channel: send a token"
        assert await answers(None, [BTC], 1) == [error("unauthorized", BTC, no_token)]
    finally:
        server.should_exit = True
        await task
        sock.close()
