"""The arbitrage watch on the memory bus: books in, deduplicated alerts out."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from decimal import Decimal as D
from typing import Any

import msgspec
import pytest

from cryptodesk.adapters.bus.memory import MemoryBus
from cryptodesk.domain import codec
from cryptodesk.domain.market import OrderBook, stream_key
from cryptodesk.services.arbitrage_watch import ArbitrageWatch

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z
FEES = {"binance": D("0"), "kraken": D("0.002")}  # coinbase pays the default 0.001


def book(exchange: str, bid: float, ask: float, ts: int, *, symbol: str = "BTC/USDT",
         seq: int = 0) -> OrderBook:  # fmt: skip
    return OrderBook(exchange, symbol, ts, ((bid, 1.0), (bid - 1, 2.0)),
                     ((ask, 1.0), (ask + 1, 2.0)), seq)  # fmt: skip


class Env:
    def __init__(self) -> None:
        self.bus = MemoryBus()
        self.now = T0
        self.alerts = self.bus.consumer("alerts", group="test-reader")
        self.watch = ArbitrageWatch(
            self.bus, exchanges=["binance", "kraken", "coinbase"], symbols=["BTC/USDT"],
            threshold=D("0.002"), fees=FEES, default_fee=D("0.001"), max_age_ms=10_000,
            material_change=D("0.0005"), clock=lambda: self.now,
        )  # fmt: skip

    async def run(self, batches: Sequence[Sequence[OrderBook]]) -> list[dict[str, Any]]:
        """Run the watch over each batch in turn (one run per batch, so a batch
        is seen whole before the next); the alerts it published."""
        for batch in batches:
            stop = asyncio.Event()
            task = asyncio.create_task(self.watch.run(stop))
            await asyncio.sleep(0)  # its consumer joins (the group goes on where it was)
            items = [(stream_key(b.exchange, b.symbol), codec.encode_book(b)) for b in batch]
            await self.bus.publish_many("orderbooks", items)
            stop.set()
            await task
        return await self.read_alerts()

    async def read_alerts(self) -> list[dict[str, Any]]:
        found = []
        while messages := await self.alerts.fetch(100, timeout=0.05):
            assert all(m.key == "BTC/USDT" for m in messages)
            found += [msgspec.json.decode(m.value) for m in messages]
            await self.alerts.ack(messages)
        return found


@pytest.fixture
def env() -> Env:
    return Env()


OPENED = {
    "type": "arbitrage", "event": "opened", "symbol": "BTC/USDT",
    "buy_exchange": "binance", "sell_exchange": "kraken", "ask": "100.0", "bid": "101.0",
    "buy_fee": "0", "sell_fee": "0.002", "net_spread": "0.00798", "gross_spread": "0.01",
    "quoted_at": "2024-05-01T00:00:00.000Z", "time": "2024-05-01T00:00:01.000Z",
    "reason": "net spread above the threshold",
}  # fmt: skip


async def test_an_opportunity_is_announced_once(env: Env) -> None:
    env.now = T0 + 1000
    first = [book("binance", 99.5, 100.0, T0), book("kraken", 101.0, 101.5, T0)]
    # The same prices again (newer books), and a third exchange that changes nothing.
    again = [book("binance", 99.5, 100.0, T0 + 500), book("coinbase", 100.2, 100.4, T0 + 500)]
    assert await env.run([first, again]) == [OPENED]
    assert set(env.watch.open) == {"BTC/USDT"}


async def test_material_changes_and_the_close_are_announced(env: Env) -> None:
    env.now = T0 + 1000
    opened = [book("binance", 99.5, 100.0, T0), book("kraken", 101.0, 101.5, T0)]
    small = [book("kraken", 101.04, 101.5, T0 + 100)]  # +0.04 %: noise
    moved = [book("kraken", 101.2, 101.5, T0 + 200)]  # +0.2 %: changed
    closed = [book("kraken", 100.2, 101.5, T0 + 400)]  # -0.0004 %: closed
    alerts = await env.run([opened, small, moved, closed])
    assert [(a["event"], a["net_spread"], a["bid"]) for a in alerts] == [
        ("opened", "0.00798", "101.0"),
        ("changed", "0.009976", "101.2"),  # 101.2 * 0.998 / 100 - 1
        ("closed", "-0.000004", "100.2"),  # 100.2 * 0.998 / 100 - 1
    ]
    assert [a["reason"] for a in alerts[1:]] == [
        "net spread moved", "net spread fell below the threshold",
    ]  # fmt: skip
    assert env.watch.open == {}


async def test_a_spread_hovering_at_the_threshold_does_not_flap(env: Env) -> None:
    env.now = T0 + 1000
    alerts = await env.run([
        [book("binance", 99.5, 100.0, T0), book("kraken", 100.42, 101.5, T0)],  # 0.21916 %
        [book("kraken", 100.38, 101.5, T0 + 100)],  # 0.17924 %: below, within the band
        [book("kraken", 100.43, 101.5, T0 + 200)],  # 0.22914 %: above again, no news
        [book("kraken", 100.3, 101.5, T0 + 300)],  # 0.0994 %: below the band
    ])  # fmt: skip
    assert [(a["event"], a["net_spread"]) for a in alerts] == [
        ("opened", "0.0021916"), ("closed", "0.000994"),
    ]  # fmt: skip


async def test_another_best_pair_is_a_change(env: Env) -> None:
    env.now = T0 + 1000
    opened = [book("binance", 99.5, 100.0, T0), book("kraken", 101.0, 101.5, T0)]
    cheaper = [book("coinbase", 98.0, 99.0, T0 + 100)]  # buy on coinbase now
    alerts = await env.run([opened, cheaper])
    assert [(a["event"], a["buy_exchange"], a["sell_exchange"]) for a in alerts] == [
        ("opened", "binance", "kraken"), ("changed", "coinbase", "kraken"),
    ]  # fmt: skip
    # 101 * 0.998 / (99 * 1.001) - 1
    assert D(alerts[1]["net_spread"]) == D("100.798") / D("99.099") - 1


async def test_stale_books_close_the_opportunity(env: Env) -> None:
    env.now = T0 + 1000
    await env.run([[book("binance", 99.5, 100.0, T0), book("kraken", 101.0, 101.5, T0 + 5000)]])
    env.now = T0 + 10_000  # binance's book is exactly 10 s old: still fresh
    assert await env.watch.process([]) == []
    env.now = T0 + 10_001
    [closed] = await env.watch.process([])
    assert (closed["event"], closed["reason"]) == ("closed", "fewer than two fresh quotes")
    assert closed["net_spread"] == "0.00798"  # what was announced
    assert (await env.read_alerts())[-1] == closed


async def test_other_markets_and_older_books_are_ignored(env: Env) -> None:
    env.now = T0 + 1000
    books = [
        book("binance", 99.5, 100.0, T0, seq=2),
        book("binance", 90.0, 91.0, T0, seq=1),  # older sequence at the same time
        book("kraken", 101.0, 101.5, T0),
        book("bitfinex", 120.0, 121.0, T0),  # not configured
        book("kraken", 150.0, 151.0, T0, symbol="ETH/USDT"),  # not configured
    ]
    assert await env.run([books]) == [OPENED]


async def test_undecodable_books_are_skipped(env: Env) -> None:
    env.now = T0 + 1000
    await env.bus.publish("orderbooks", "binance:BTC/USDT", b"{not json")
    assert await env.watch.process([b"{}"]) == []
    assert await env.run([[book("binance", 99.5, 100.0, T0), book("kraken", 101, 101.5, T0)]]) == [
        OPENED
    ]
