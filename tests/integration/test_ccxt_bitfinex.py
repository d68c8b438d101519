"""CcxtSource on real ccxt.pro bitfinex, talking to a local fake in Bitfinex's
API v2 wire format (tests/fakes/bitfinex.py).

Every expected value is derived from what the fake sent, so a wrong field
mapping (bitfinex candles put close before high; a negative amount is a
sell), a lost or doubled trade or a stale book fails the test.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from cryptodesk.adapters.exchanges.ccxt_source import CcxtSource
from cryptodesk.domain.market import Candle, Market, OrderBook, Ticker, Trade
from tests.fakes.bitfinex import T0, FakeBitfinex
from tests.integration.ccxt_streams import Collector, until

H = 3_600_000
NOW = T0 + 3 * H + 5  # our clock: the 4th hourly candle from T0 is still open
BTC = "tBTCUSD"


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeBitfinex]:
    server = FakeBitfinex()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest_asyncio.fixture
async def make(
    fake: FakeBitfinex, registry: CollectorRegistry
) -> AsyncIterator[Callable[..., CcxtSource]]:
    made: list[CcxtSource] = []

    def make(**options: Any) -> CcxtSource:
        source = CcxtSource(
            "bitfinex", ("BTC/USD",),
            api_overrides={"http": fake.base_url, "ws": fake.ws_url},
            config={"timeout": 5000, "enableRateLimit": False}, metrics_registry=registry,
            clock=lambda: NOW, reconnect_initial=0.01, reconnect_cap=0.05, poll_interval=0.01,
            **options,
        )  # fmt: skip
        made.append(source)
        return source

    yield make
    for source in made:
        await source.close()


def expected_trade(raw: list[Any]) -> Trade:
    """``[ID, MTS, ±AMOUNT, PRICE]``: a negative amount is a sell."""
    tid, mts, amount, price = raw
    side = "sell" if amount < 0 else "buy"
    return Trade("bitfinex", "BTC/USD", str(tid), mts, float(price), abs(float(amount)), side)


def expected_book(fake: FakeBitfinex, ts: int, depth: int = 20) -> OrderBook:
    book = fake.books[BTC]
    bids = tuple((float(p), float(a)) for p, _, a in book.side(True)[:depth])
    asks = tuple((float(p), float(-a)) for p, _, a in book.side(False)[:depth])
    return OrderBook("bitfinex", "BTC/USD", ts, bids, asks, 0)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"exchange": "bitfinex", **labels}) or 0.0


def tickers(fake: FakeBitfinex) -> None:
    """BID, BID_SIZE, ASK, ASK_SIZE, DAILY_CHANGE, DAILY_CHANGE_RELATIVE (a fraction),
    LAST_PRICE, VOLUME, HIGH, LOW; funding tickers (fUSD) have more fields."""
    fake.set_ticker(BTC, [64010, 1.5, 64011, 2.5, 100.5, 0.0016, 64010.5, 1234.5, 64500, 63000])
    fake.set_ticker(
        "tBTCUST", [64020, 1.1, 64021, 2.1, -20.25, -0.0003, 64020.5, 98.5, 64600, 63100]
    )
    fake.set_ticker("tETHUSD", [3400, 10, 3400.5, 12, 5, 0.0015, 3400.25, 5000, 3500, 3300])
    fake.set_ticker("tDOGE:USD", [0.1233, 1e5, 0.1235, 2e5, 0.001, 0.008, 0.1234, 9e6, 0.13, 0.12])
    fake.set_ticker("fUSD", [0.0002, 0.0002, 30, 1e6, 0.0003, 2, 2e6, 1e-5, 0.01, 0.0002, 5e6,
                             0.0003, 0.0001, None, None, 1e7])  # fmt: skip


# -- markets, REST ------------------------------------------------------------------------


async def test_markets_are_the_spot_pairs_with_steps_from_significant_digits(
    fake: FakeBitfinex, make: Callable[..., CcxtSource]
) -> None:
    """Bitfinex prices have 5 significant digits and amounts 8: the steps depend
    on the last price (from the tickers) and the minimum order size."""
    tickers(fake)
    source = make()
    markets = {m.symbol: m for m in await source.load_markets()}
    assert markets == {
        "BTC/USD": Market("bitfinex", "BTC/USD", "BTC", "USD", 1.0, 1e-12, 0.00006),
        # UST is Bitfinex's name for USDT.
        "BTC/USDT": Market("bitfinex", "BTC/USDT", "BTC", "USDT", 1.0, 1e-12, 0.00006),
        "ETH/USD": Market("bitfinex", "ETH/USD", "ETH", "USD", 0.1, 1e-10, 0.002),
        "DOGE/USD": Market("bitfinex", "DOGE/USD", "DOGE", "USD", 0.00001, 1e-6, 22.0),
    }  # the perpetual BTCF0:USTF0 of the same answer is left out
    pairs = "pub:info:pair,pub:info:pair:futures,pub:list:pair:securities,pub:list:pair:margin"
    assert [p for _, p, _ in fake.server.requests][1:] == [f"/v2/conf/{pairs}", "/v2/tickers"]
    assert fake.rest_calls("/v2/tickers") == [{"symbols": "ALL"}]
    await source.load_markets()
    assert len(fake.rest_calls(f"/v2/conf/{pairs}")) == 1  # loaded once
    await source.load_markets(reload=True)
    assert len(fake.rest_calls(f"/v2/conf/{pairs}")) == 2


async def test_candles_and_tickers_over_rest(
    fake: FakeBitfinex, make: Callable[..., CcxtSource]
) -> None:
    # [MTS, OPEN, CLOSE, HIGH, LOW, VOLUME]
    rows: list[list[Any]] = [
        [T0 + i * H, 64000 + i, 64050.5 + i, 64100 + i, 63900.25 + i, 12.125 + i] for i in range(5)
    ]
    fake.add_candles(BTC, "1h", rows)
    source = make()
    candles = await source.fetch_ohlcv("BTC/USD", "1h", since=T0 + H, until=T0 + 3 * H, limit=500)
    assert candles == [
        Candle("bitfinex", "BTC/USD", "1h", mts, float(o), float(h), float(lo), float(c),
               float(v), closed=mts + H <= NOW)
        for mts, o, c, h, lo, v in rows[1:4]
    ]  # fmt: skip
    assert [c.closed for c in candles] == [True, True, False]
    assert fake.rest_calls(f"/v2/candles/trade:1h:{BTC}/hist") == [
        {"limit": "500", "start": str(T0 + H), "sort": "1"}
    ]

    tickers(fake)
    got = await source.fetch_tickers(["BTC/USD", "BTC/USDT"])
    assert fake.rest_calls("/v2/tickers")[-1] == {"symbols": "tBTCUSD,tBTCUST"}
    # No open in Bitfinex's ticker: ccxt takes LAST - DAILY_CHANGE; no time: our clock.
    assert got == [
        Ticker("bitfinex", "BTC/USD", NOW, 64010.5, 64010.0, 64011.0,
               float(Decimal("64010.5") - Decimal("100.5")), 64500.0, 63000.0, 1234.5, 0.0),
        Ticker("bitfinex", "BTC/USDT", NOW, 64020.5, 64020.0, 64021.0,
               float(Decimal("64020.5") - Decimal("-20.25")), 64600.0, 63100.0, 98.5, 0.0),
    ]  # fmt: skip


async def test_trades_and_book_by_rest_polling(
    fake: FakeBitfinex, make: Callable[..., CcxtSource]
) -> None:
    source = make(websocket=False)
    for i in range(3):
        fake.now += 5
        fake.record_trade(BTC, f"6400{i}.5", f"{'-' if i % 2 else ''}0.0{i + 1}")
    levels = [(f"{64000 - i}", i + 1, f"{i + 1}.5") for i in range(30)]
    fake.set_book(BTC, levels, [(f"{64001 + i}", 1, f"0.{i + 1:02d}") for i in range(30)])
    trades = Collector(source.watch_trades("BTC/USD"))
    await trades.wait_for(lambda got: len(got) >= 3)
    fake.now += 5
    fake.record_trade(BTC, "64100", "-0.5")
    await trades.wait_for(lambda got: len(got) >= 4)
    await trades.stop()
    assert trades.items == [expected_trade(t) for t in fake.trades[BTC]]
    queries = fake.rest_calls(f"/v2/trades/{BTC}/hist")
    assert queries[0] == {"limit": "1000", "sort": "-1"}  # the newest first
    # Then from the newest trade handed out, oldest first.
    assert {"start": str(fake.trades[BTC][2][1]), "limit": "1000", "sort": "1"} in queries

    before = int(time.time() * 1000)
    books = Collector(source.watch_order_book("BTC/USD"))
    await books.wait_for(lambda got: len(got) >= 1)
    await books.stop()
    book = books.items[0]
    # The REST book has no time: ccxt stamps it with its own clock.
    assert before <= book.ts <= int(time.time() * 1000)
    assert book == expected_book(fake, book.ts)
    # Price levels (P0), and 25, the smallest depth Bitfinex serves above our 20.
    assert fake.rest_calls(f"/v2/book/{BTC}/P0")[0] == {"len": "25"}
    assert fake.server.ws_connects == 0


# -- websocket trades ------------------------------------------------------------------


async def test_websocket_trades_from_snapshot_and_updates_ignoring_heartbeats(
    fake: FakeBitfinex, make: Callable[..., CcxtSource], registry: CollectorRegistry
) -> None:
    for i in range(4):  # before we subscribe: they come in the snapshot
        fake.now += 10
        fake.record_trade(BTC, f"6400{i}.5", f"{'-' if i % 2 else ''}0.0{i + 1}")
    trades = Collector(make().watch_trades("BTC/USD"))
    await fake.wait_subscribed("trades", BTC)
    await trades.wait_for(lambda got: len(got) >= 4)
    for i in range(3):
        fake.now += 10
        await fake.heartbeat()
        await fake.push_trade(BTC, f"6410{i}", f"{'-' if i % 2 else ''}1.2{i}")  # te, then tu
    await trades.wait_for(lambda got: len(got) >= 7)
    await trades.stop()
    assert trades.items == [expected_trade(t) for t in fake.trades[BTC]]
    assert {t.side for t in trades.items} == {"buy", "sell"}
    assert sample(registry, "cryptodesk_exchange_bad_payloads_total", endpoint="ws") == 0


async def test_dropped_websocket_reconnects_and_backfills_the_gap(
    fake: FakeBitfinex, make: Callable[..., CcxtSource], registry: CollectorRegistry
) -> None:
    """The resubscription's snapshot (3 trades here) holds only the newest trades
    of the gap; the older ones come over REST, and none twice."""
    fake.trade_snapshot = 3
    trades = Collector(make().watch_trades("BTC/USD"))
    await fake.wait_subscribed("trades", BTC)
    for i in range(2):
        fake.now += 10
        await fake.push_trade(BTC, f"6400{i}", f"0.{i + 1}")
    await trades.wait_for(lambda got: len(got) >= 2)

    await fake.drop_websockets()
    for i in range(5):  # nobody listens
        fake.now += 10
        fake.record_trade(BTC, f"6420{i}", f"-0.{i + 1}")
    await fake.wait_subscribed("trades", BTC, times=2)
    fake.now += 10
    await fake.push_trade(BTC, "64300", "0.7")
    await trades.wait_for(lambda got: len(got) >= 8)
    fake.now += 10
    await fake.push_trade(BTC, "64400", "-0.8")  # the stream goes on
    await trades.wait_for(lambda got: len(got) >= 9)
    await trades.stop()

    assert trades.items == [expected_trade(t) for t in fake.trades[BTC]]  # each once, in order
    last_before_drop = fake.trades[BTC][1]
    assert fake.rest_calls(f"/v2/trades/{BTC}/hist") == [
        {"start": str(last_before_drop[1]), "limit": "1000", "sort": "1"}
    ]
    assert sample(registry, "cryptodesk_exchange_ws_reconnects_total", stream="trades") >= 1
    # 5 missed: 3 came in the new snapshot, 2 only over REST.
    assert sample(registry, "cryptodesk_exchange_trades_backfilled_total") == 2


async def test_malformed_payloads_are_counted_and_skipped(
    fake: FakeBitfinex, make: Callable[..., CcxtSource], registry: CollectorRegistry
) -> None:
    trades = Collector(make().watch_trades("BTC/USD"))
    await fake.wait_subscribed("trades", BTC)
    chan = fake.chan_id("trades", BTC)
    for payload in [
        "[1, 2",  # not JSON
        [chan, "te", [1, T0, "x1", 100]],  # ccxt's parser fails on the amount
        [chan, "te", [2, None, 0.5, 100]],  # parsed, but no time
        [chan, "te", [3, T0, 0.5, -100]],  # parsed, but a negative price
    ]:
        await fake.send_raw(
            "trades", BTC, payload if isinstance(payload, str) else json.dumps(payload)
        )
    for i in range(2):
        fake.now += 10
        await fake.push_trade(BTC, f"6400{i}", "0.25")
    await trades.wait_for(lambda got: len(got) >= 2)
    await trades.stop()
    assert trades.items == [expected_trade(t) for t in fake.trades[BTC]]
    bad = "cryptodesk_exchange_bad_payloads_total"
    assert sample(registry, bad, endpoint="ws") == 2
    assert sample(registry, bad, endpoint="watch_trades") == 2


# -- websocket order book ---------------------------------------------------------------


async def test_book_with_checksums_rebuilt_after_a_mismatch(
    fake: FakeBitfinex, make: Callable[..., CcxtSource], registry: CollectorRegistry
) -> None:
    fake.set_book(BTC, [(f"{64000 - i}", i + 1, f"{i + 1}.5") for i in range(30)],
                  [(f"{64001 + i}", 1, f"0.{i + 1:02d}") for i in range(30)])  # fmt: skip
    books = Collector(make().watch_order_book("BTC/USD"))
    await books.wait_for(lambda got: len(got) >= 1)
    # A P0 snapshot of 25 levels a side; no time in it: our clock.
    assert books.items[0] == expected_book(fake, NOW)
    await until(lambda: fake.confs == [131072])  # ccxt asked for checksums

    await fake.push_book(BTC, "64000.5", 2, "2.0")  # a new best bid, checksum follows
    await fake.push_book(BTC, "64001", 0, "-1")  # the best ask leaves
    await books.wait_for(lambda got: got[-1] == expected_book(fake, NOW))
    assert sample(registry, "cryptodesk_exchange_book_resyncs_total", symbol="BTC/USD") == 0

    await fake.push_book(BTC, "63999", 3, "7", checksum=12345)  # the book no longer adds up
    await fake.wait_subscribed("book", BTC, times=2)  # the channel closed and opened anew
    await fake.push_book(BTC, "63998", 3, "8")
    await books.wait_for(lambda got: got[-1] == expected_book(fake, NOW))
    await books.stop()
    assert sample(registry, "cryptodesk_exchange_book_resyncs_total", symbol="BTC/USD") == 1
    first, second = (c for channel, _, c in fake.opened if channel == "book")
    assert fake.closed == [first]
    assert second != first
    # No book handed out was built from updates alone.
    assert all(len(book.bids) == 20 for book in books.items)
