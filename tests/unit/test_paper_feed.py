"""The paper feed on the memory bus: books in, resting paper orders filled, fills handed on."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D

from cryptodesk.adapters.bus.memory import MemoryBus
from cryptodesk.domain import codec
from cryptodesk.domain.market import OrderBook, stream_key
from cryptodesk.domain.orders import Fill, OrderRequest
from cryptodesk.services.paper_feed import PaperFeed
from cryptodesk.trading.instruments import Instrument
from cryptodesk.trading.paper import PaperVenue

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z
BTC = Instrument("BTC/USDT", "BTC", "USDT", tick_size=D("0.01"), lot_size=D("0.001"),
                 taker_fee=D("0.001"), maker_fee=D("0.0005"))  # fmt: skip


def book(exchange: str, bid: float, ask: float, ts: int) -> OrderBook:
    return OrderBook(exchange, "BTC/USDT", ts, ((bid, 1.0),), ((ask, 1.0),))


def item(b: OrderBook) -> tuple[str, bytes]:
    return stream_key(b.exchange, b.symbol), codec.encode_book(b)


class Env:
    def __init__(self) -> None:
        self.bus = MemoryBus()
        self.venue = PaperVenue("binance", {"BTC/USDT": BTC})
        self.venue.deposit("alice", "USDT", D("1000"))
        self.venue.on_book(book("binance", 99.0, 100.0, T0))
        self.handed: list[list[Fill]] = []
        self.failures = 0
        self.feed = PaperFeed(self.bus, self.venue, self.on_fills)

    async def on_fills(self, fills: list[Fill]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("publisher down")
        self.handed.append(fills)

    async def run(self, items: list[tuple[str, bytes]]) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(self.feed.run(stop))
        await asyncio.sleep(0)  # the consumer joins at the end of the topic
        await self.bus.publish_many("orderbooks", items)
        stop.set()
        await task


async def test_books_after_the_start_fill_resting_orders_and_the_fills_are_handed_on() -> None:
    env = Env()
    resting = env.venue.submit(OrderRequest("alice", "BTC/USDT", "buy", "limit", D("0.5"),
                                            price=D("99.5")), ts=T0)  # fmt: skip
    assert resting.status == "accepted"
    # Published before the feed started: not seen (the group starts at the end).
    await env.bus.publish_many("orderbooks", [item(book("binance", 98.0, 99.0, T0 + 10))])
    env.failures = 1  # the first hand-over fails and is retried
    await env.run([
        item(book("kraken", 98.0, 99.0, T0 + 20)),  # another exchange's book
        ("binance:BTC/USDT", b"not a book"),
        item(book("binance", 99.0, 99.6, T0 + 30)),  # not through 99.5 yet
        item(book("binance", 98.5, 99.5, T0 + 40)),  # at the price: fills
    ])  # fmt: skip
    expected = Fill("PT0000000001", resting.order_id, "alice", "BTC/USDT", "buy", D("99.5"),
                    D("0.5"), D("0.024875"), "USDT", "maker", T0 + 40,
                    venue="paper:binance")  # fmt: skip
    assert env.handed == [[expected]]
    assert (env.feed.books, env.feed.filled) == (2, 1)
    done = env.venue.order(resting.order_id)
    assert done is not None
    assert (done.status, done.filled) == ("filled", D("0.5"))
    assert env.venue.balances.available("alice", "USDT") == D("1000") - D("49.75") - D("0.024875")
    # The same book delivered again fills nothing more.
    assert await env.feed.process([item(book("binance", 98.5, 99.5, T0 + 40))[1]]) == []
    assert env.handed == [[expected]]


async def test_a_batch_without_fills_hands_nothing_on() -> None:
    env = Env()
    await env.run([item(book("binance", 97.0, 98.0, T0 + 10))])
    assert env.handed == []
    assert env.feed.books == 1
    local = env.venue.book("BTC/USDT")
    assert local == ([(D("97.0"), D("1.0"))], [(D("98.0"), D("1.0"))])
