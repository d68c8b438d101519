"""Paper orders end to end over a real SQLite order log: placed by one process's order
service against the cached book, filled as maker by another process's paper feed from
the bus, and rebuilt exactly by replay."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from cryptodesk.adapters.bus.memory import MemoryBus
from cryptodesk.adapters.cache.memory import MemoryCache
from cryptodesk.adapters.db.engine import StorageError, create_engine
from cryptodesk.adapters.db.order_log_store import SqlOrderLog
from cryptodesk.domain import codec
from cryptodesk.domain.market import OrderBook, stream_key
from cryptodesk.domain.orders import OrderRequest
from cryptodesk.services import cache_keys
from cryptodesk.services.order_service import OrderService, default_instruments
from cryptodesk.services.paper_feed import PaperFeed, cached_books
from cryptodesk.trading.order_log import Record
from tests.unit._ledger_api import migrated_template

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z
PAPER = "paper:binance"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_template(tmp_path_factory.mktemp("paper"))


def book(exchange: str, bid: float, ask: float, ts: int) -> OrderBook:
    return OrderBook(exchange, "BTC/USDT", ts, ((bid, 1.0),), ((ask, 1.0),), ts)


def item(b: OrderBook) -> tuple[str, bytes]:
    return stream_key(b.exchange, b.symbol), codec.encode_book(b)


class Store:
    """The real order log, whose writes fail while ``failing`` is set."""

    def __init__(self, store: SqlOrderLog) -> None:
        self.store, self.failing = store, False

    async def append(self, tenant: str, records: Sequence[Record]) -> None:
        if self.failing:
            raise StorageError("database error on test.db: disk I/O error")
        await self.store.append(tenant, records)

    async def records(self, tenant: str, *, after: int = 0) -> list[Record]:
        return await self.store.records(tenant, after=after)

    async def tenants(self) -> list[str]:
        return await self.store.tenants()


class Env:
    """Two order services on one database: ``api`` places orders against the cached
    books, ``feed``'s service is driven by the paper feed."""

    def __init__(self, store: SqlOrderLog) -> None:
        self.store = Store(store)
        self.cache, self.bus = MemoryCache(), MemoryBus()
        self.now = T0 + 1_000
        self.published: list[dict[str, Any]] = []
        self.api = self.service(books=True)
        self.feed = PaperFeed(self.bus, self.service(books=False), refresh_seconds=0.01)

    def service(self, *, books: bool) -> OrderService:
        async def publish(tenant: str, updates: list[dict[str, Any]]) -> None:
            self.published += updates

        return OrderService(self.store, default_instruments(["BTC/USDT"]), clock=lambda: self.now,
                            on_updates=publish, paper=["binance"],
                            books=cached_books(self.cache) if books else None)  # fmt: skip

    async def cached(self, b: OrderBook) -> None:
        await self.cache.set(cache_keys.book(b.exchange, b.symbol), codec.encode_book(b))

    async def run(self, items: list[tuple[str, bytes]]) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(self.feed.run(stop))
        await asyncio.sleep(0)  # the consumer joins at the end of the topic
        await self.bus.publish_many("orderbooks", items)
        stop.set()
        await task


@pytest.fixture
async def env(tmp_path: Path, template: Path) -> AsyncIterator[Env]:
    db = tmp_path / "orders.db"
    shutil.copyfile(template, db)
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    yield Env(SqlOrderLog(engine))
    await engine.dispose()


def paper(side: Any, quantity: str, price: str | None = None) -> OrderRequest:
    kind: Any = "market" if price is None else "limit"
    return OrderRequest("alice", "BTC/USDT", side, kind, D(quantity),
                        price=None if price is None else D(price), venue=PAPER)  # fmt: skip


async def test_orders_take_from_the_cached_book_and_rest_until_the_feed_fills_them(
    env: Env,
) -> None:
    await env.cached(book("binance", 99.0, 100.0, T0))
    await env.api.deposit("acme", "alice", "USDT", D(1000))
    taken = (await env.api.submit("acme", paper("buy", "0.2"))).order
    assert (taken.status, taken.average_price, taken.fees) == ("filled", D("100.0"), D("0.0200"))
    resting = (await env.api.submit("acme", paper("buy", "0.5", "99.5"))).order
    assert (resting.order_id, resting.status) == ("O0000000002", "accepted")
    # The order service only learns of orders placed elsewhere when it refreshes.
    assert await env.feed.service.on_book(book("binance", 98.5, 99.5, T0 + 5)) == 0
    assert await env.feed.service.refresh() == 1
    env.published.clear()
    await env.run([
        item(book("kraken", 98.0, 99.0, T0 + 20)),  # not a paper exchange
        ("binance:BTC/USDT", b"not a book"),
        item(book("binance", 99.0, 99.6, T0 + 30)),  # not through 99.5 yet
        item(book("binance", 98.5, 99.5, T0 + 40)),  # at the price: fills
    ])  # fmt: skip
    assert (env.feed.books, env.feed.filled) == (2, 1)
    assert [(u["event"], u.get("status"), u.get("liquidity")) for u in env.published] == [
        ("fill", None, "maker"), ("order", "filled", None),
    ]  # fmt: skip
    fills = await env.api.fills("acme")
    assert [(f.trade_id, f.order_id, f.price, f.quantity, f.fee, f.liquidity, f.venue)
            for f in fills] == [
        ("T0000000001", "O0000000001", D("100.0"), D("0.2"), D("0.0200"), "taker", PAPER),
        ("T0000000002", "O0000000002", D("99.5"), D("0.5"), D("0.04975"), "maker", PAPER),
    ]  # fmt: skip
    available, reserved = await env.api.balance("acme", "alice", "USDT")
    assert (available, reserved) == (D(1000) - D("20.02") - D("49.79975"), D(0))
    # The same book again fills nothing; a fresh service replays the same state, no books.
    assert await env.feed.process([item(book("binance", 98.5, 99.5, T0 + 40))[1]]) == 0
    replayed = env.service(books=False)
    assert await replayed.fills("acme") == fills
    assert await replayed.orders("acme") == await env.api.orders("acme")


async def test_a_tenant_without_open_paper_orders_only_keeps_the_book(env: Env) -> None:
    await env.api.deposit("acme", "alice", "USDT", D(1000))
    assert await env.feed.service.refresh() == 1
    assert await env.feed.service.on_book(book("binance", 99.0, 100.0, T0)) == 0
    assert len(await env.store.records("acme")) == 1  # the deposit only
    assert await env.feed.service.orders("acme") == []


async def test_a_failed_fill_write_is_filled_by_a_later_book(env: Env) -> None:
    await env.cached(book("binance", 99.0, 100.0, T0))
    await env.api.deposit("acme", "alice", "USDT", D(1000))
    await env.api.submit("acme", paper("buy", "0.5", "99.5"))
    service = env.feed.service
    await service.refresh()
    env.store.failing = True
    assert await service.on_book(book("binance", 98.5, 99.5, T0 + 10)) == 0  # not stored
    env.store.failing = False
    assert await service.on_book(book("binance", 98.5, 99.5, T0 + 20)) == 0  # tenant dropped
    await service.refresh()
    assert await service.on_book(book("binance", 98.5, 99.5, T0 + 30)) == 1
    (order,) = await env.api.orders("acme")
    assert (order.status, order.updated_ts) == ("filled", T0 + 1_000)
    assert [f.ts for f in await env.api.fills("acme")] == [T0 + 1_000]


async def test_no_cached_book_rejects_a_market_order_and_rests_a_limit_order(env: Env) -> None:
    await env.api.deposit("acme", "alice", "USDT", D(1000))
    rejected = (await env.api.submit("acme", paper("buy", "0.1"))).order
    assert (rejected.status, rejected.reject_rule) == ("rejected", "no_book")
    assert (await env.api.submit("acme", paper("buy", "0.1", "99"))).order.status == "accepted"
    unknown = (await env.api.submit("acme", OrderRequest("alice", "BTC/USDT", "buy", "limit",
               D("0.1"), price=D(99), venue="paper:kraken"))).order  # fmt: skip
    assert unknown.reject_rule == "unknown_venue"
