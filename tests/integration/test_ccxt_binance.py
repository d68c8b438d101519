"""CcxtSource on real ccxt.pro binance, talking to a local fake in binance's wire format.

The fake (tests/fakes/binance.py) answers REST and the market-data websocket
as Binance documents them; every expected value below is derived from what
the fake sent, so a wrong field mapping, a lost or doubled trade or a stale
book fails the test.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from cryptodesk.adapters.exchanges.ccxt_source import CcxtSource, UnknownSymbolError
from cryptodesk.adapters.exchanges.guard import ExchangeGuard
from cryptodesk.domain.market import Candle, Market, OrderBook, Side, Ticker, Trade
from tests.fakes.binance import T0, FakeBinance
from tests.integration.ccxt_streams import Collector, until

H = 3_600_000
NOW = T0 + 3 * H + 5  # our clock: the 4th hourly candle from T0 is still open
TRADES = "btcusdt@trade"
DEPTH = "btcusdt@depth@100ms"


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeBinance]:
    server = FakeBinance()
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
    fake: FakeBinance, registry: CollectorRegistry
) -> AsyncIterator[Callable[..., CcxtSource]]:
    made: list[CcxtSource] = []

    def make(symbols: tuple[str, ...] = ("BTC/USDT",), **options: Any) -> CcxtSource:
        config = {"timeout": 5000, "enableRateLimit": False, **options.pop("config", {})}
        source = CcxtSource(
            "binance", symbols,
            api_overrides={"http": fake.base_url, "ws": fake.ws_url},
            config=config, metrics_registry=registry, clock=lambda: NOW,
            reconnect_initial=0.01, reconnect_cap=0.05, poll_interval=0.01,
            **options,
        )  # fmt: skip
        made.append(source)
        return source

    yield make
    for source in made:
        await source.close()


def expected_trade(raw: dict[str, Any]) -> Trade:
    """What a binance REST/websocket trade must become: the taker sold when the buyer made."""
    side: Side = "sell" if raw["isBuyerMaker"] else "buy"
    return Trade("binance", "BTC/USDT", str(raw["id"]), raw["time"], float(raw["price"]),
                 float(raw["qty"]), side)  # fmt: skip


def expected_book(fake: FakeBinance, ts: int) -> OrderBook:
    book = fake.books["BTCUSDT"]
    bids, asks = book.top(20)
    return OrderBook(
        "binance", "BTC/USDT", ts,
        tuple((float(p), float(q)) for p, q in bids),
        tuple((float(p), float(q)) for p, q in asks),
        book.last_update_id,
    )  # fmt: skip


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"exchange": "binance", **labels}) or 0.0


def counted(registry: CollectorRegistry, endpoint: str, times: int) -> bool:
    return sample(registry, "cryptodesk_exchange_bad_payloads_total", endpoint=endpoint) == times


async def push_trades(fake: FakeBinance, n: int, *, base: str, record_only: bool = False) -> None:
    for i in range(n):
        fake.now += 7
        args = ("BTCUSDT", f"{base}.{i:02d}", f"0.{i + 1:03d}")
        if record_only:
            fake.record_trade(*args, buyer_maker=i % 2 == 0)
        else:
            await fake.push_trade(*args, buyer_maker=i % 2 == 0)


# -- markets, REST ------------------------------------------------------------------------


async def test_markets_keep_precision_and_limits_and_load_once(
    fake: FakeBinance, make: Callable[..., CcxtSource]
) -> None:
    source = make()
    markets = {m.symbol: m for m in await source.load_markets()}
    assert markets == {
        "BTC/USDT": Market("binance", "BTC/USDT", "BTC", "USDT", 0.01, 0.00001, 0.00001, 5.0),
        "ETH/USDT": Market("binance", "ETH/USDT", "ETH", "USDT", 0.01, 0.0001, 0.0001, 5.0),
        "SOL/USDT": Market("binance", "SOL/USDT", "SOL", "USDT", 0.01, 0.001, 0.001, 5.0),
        # status BREAK: listed, not trading
        "LUNA/USDT": Market("binance", "LUNA/USDT", "LUNA", "USDT", 0.01, 0.00001, 0.00001,
                            5.0, active=False),
    }  # fmt: skip
    await source.load_markets()
    assert len(fake.rest_calls("/api/v3/exchangeInfo")) == 1  # spot only, once
    await source.load_markets(reload=True)
    assert len(fake.rest_calls("/api/v3/exchangeInfo")) == 2
    assert [p for _, p, _ in fake.server.requests] == ["/api/v3/exchangeInfo"] * 2


async def test_markets_refresh_on_schedule(
    fake: FakeBinance, make: Callable[..., CcxtSource]
) -> None:
    source = make(market_refresh_seconds=0.0)  # every call is due
    await source.load_markets()
    await source.load_markets()
    assert len(fake.rest_calls("/api/v3/exchangeInfo")) == 2
    # A failed refresh keeps the markets already loaded.
    fake.server.fail_next("/api/v3/exchangeInfo", 500, {"code": -1000, "msg": "Unknown error"})
    assert len(await source.load_markets()) == 4


async def test_candles_and_tickers_over_rest(
    fake: FakeBinance, make: Callable[..., CcxtSource]
) -> None:
    rows: list[list[Any]] = [
        [T0 + i * H, f"{64000 + i}.10", f"{64100 + i}.00", f"{63900 + i}.50", f"{64050 + i}.25",
         f"{12 + i}.12345000", T0 + (i + 1) * H - 1, "770000.50", 1000 + i, "6.0", "385000.0",
         "0"]
        for i in range(5)
    ]  # fmt: skip
    fake.add_klines("BTCUSDT", "1h", rows)
    source = make()
    candles = await source.fetch_ohlcv("BTC/USDT", "1h", since=T0 + H, until=T0 + 3 * H, limit=500)
    assert candles == [
        Candle("binance", "BTC/USDT", "1h", r[0], float(r[1]), float(r[2]), float(r[3]),
               float(r[4]), float(r[5]), closed=r[0] + H <= NOW)
        for r in rows[1:4]
    ]  # fmt: skip
    assert [c.closed for c in candles] == [True, True, False]
    assert fake.rest_calls("/api/v3/klines") == [
        {"symbol": "BTCUSDT", "interval": "1h", "startTime": str(T0 + H), "limit": "500"}
    ]

    for sid, last in (("BTCUSDT", "64010.50"), ("ETHUSDT", "3400.25")):
        fake.set_ticker(
            sid, priceChange="10.50", priceChangePercent="0.016", weightedAvgPrice="64000.1",
            prevClosePrice="64000.00", lastPrice=last, lastQty="0.010", bidPrice="3400.00",
            bidQty="1.5", askPrice="64010.60", askQty="2.5", openPrice="3300.00",
            highPrice="64500.00", lowPrice="3200.00", volume="1234.56700000",
            quoteVolume="79012345.67", openTime=T0 - 86_400_000, closeTime=T0 - 1,
            firstId=1, lastId=1000, count=1000,
        )  # fmt: skip
    tickers = await source.fetch_tickers(["BTC/USDT", "ETH/USDT"])
    assert tickers == [
        Ticker("binance", "BTC/USDT", T0 - 1, 64010.5, 3400.0, 64010.6, 3300.0, 64500.0,
               3200.0, 1234.567, 79012345.67),
        Ticker("binance", "ETH/USDT", T0 - 1, 3400.25, 3400.0, 64010.6, 3300.0, 64500.0,
               3200.0, 1234.567, 79012345.67),
    ]  # fmt: skip
    with pytest.raises(UnknownSymbolError, match="binance does not list DOGE/EUR"):
        await source.fetch_tickers(["BTC/USDT", "DOGE/EUR"])


# -- websocket trades ------------------------------------------------------------------


async def test_websocket_trades_are_exact(
    fake: FakeBinance, make: Callable[..., CcxtSource]
) -> None:
    trades = Collector(make().watch_trades("BTC/USDT"))
    await fake.wait_subscribed(TRADES)
    await push_trades(fake, 5, base="64000")
    await trades.wait_for(lambda got: len(got) >= 5)
    await trades.stop()
    assert trades.items == [expected_trade(t) for t in fake.trades["BTCUSDT"]]
    assert {t.side for t in trades.items} == {"buy", "sell"}


async def test_dropped_websocket_reconnects_and_backfills_the_gap(
    fake: FakeBinance, make: Callable[..., CcxtSource], registry: CollectorRegistry
) -> None:
    trades = Collector(make().watch_trades("BTC/USDT"))
    await fake.wait_subscribed(TRADES)
    await push_trades(fake, 3, base="64000")
    await trades.wait_for(lambda got: len(got) >= 3)

    await fake.drop_websockets()
    await push_trades(fake, 4, base="64100", record_only=True)  # REST only: nobody listens
    await fake.wait_subscribed(TRADES, times=2)  # reconnected and resubscribed
    await push_trades(fake, 2, base="64200")
    await trades.wait_for(lambda got: len(got) >= 9)
    await push_trades(fake, 1, base="64300")  # the stream goes on
    await trades.wait_for(lambda got: len(got) >= 10)
    await trades.stop()

    # Every trade exactly once, in exchange order.
    assert trades.items == [expected_trade(t) for t in fake.trades["BTCUSDT"]]
    assert len(fake.rest_calls("/api/v3/trades")) == 1
    assert not fake.rest_calls("/api/v3/aggTrades")  # aggregate ids would not match
    assert sample(registry, "cryptodesk_exchange_ws_reconnects_total", stream="trades") >= 1
    assert sample(registry, "cryptodesk_exchange_trades_backfilled_total") == 4
    assert sample(registry, "cryptodesk_exchange_trades_unrecovered_total") == 0


@pytest.mark.parametrize("api_key", [True, False], ids=["paged-by-id", "no-api-key"])
async def test_gap_longer_than_one_rest_page(
    fake: FakeBinance,
    make: Callable[..., CcxtSource],
    registry: CollectorRegistry,
    api_key: bool,
) -> None:
    """/api/v3/trades serves only the newest page; binance numbers trades one by
    one, so the rest are paged from /historicalTrades by id (which needs a key),
    or counted as lost without one. All in one millisecond: order is by id."""
    config = {"apiKey": "key", "secret": "secret"} if api_key else {}
    trades = Collector(make(config=config, trade_page=3).watch_trades("BTC/USDT"))
    await fake.wait_subscribed(TRADES)
    await fake.push_trade("BTCUSDT", "64000.00", "0.1", buyer_maker=True)
    await trades.wait_for(lambda got: len(got) >= 1)
    await fake.drop_websockets()
    for i in range(8):  # 8 trades in the gap, 3 per page
        fake.record_trade("BTCUSDT", f"64001.{i}", "0.2", buyer_maker=False)
    await fake.wait_subscribed(TRADES, times=2)
    await fake.push_trade("BTCUSDT", "64002.00", "0.3", buyer_maker=True)
    everything = [expected_trade(t) for t in fake.trades["BTCUSDT"]]
    if api_key:
        await trades.wait_for(lambda got: len(got) >= 10)
        await trades.stop()
        assert trades.items == everything
        assert fake.rest_calls("/api/v3/historicalTrades")[0]["fromId"] == everything[1].id
        assert sample(registry, "cryptodesk_exchange_trades_unrecovered_total") == 0
    else:
        # The newest page (2 gap trades and the live one) is all REST will serve.
        await trades.wait_for(lambda got: len(got) >= 4)
        await trades.stop()
        assert trades.items == everything[:1] + everything[-3:]
        assert sample(registry, "cryptodesk_exchange_trades_unrecovered_total") == 6
        assert not fake.rest_calls("/api/v3/historicalTrades")


async def test_malformed_payloads_are_counted_and_skipped(
    fake: FakeBinance, make: Callable[..., CcxtSource], registry: CollectorRegistry
) -> None:
    trades = Collector(make().watch_trades("BTC/USDT"))
    await fake.wait_subscribed(TRADES)
    good = {"e": "trade", "E": T0, "s": "BTCUSDT", "t": 1, "p": "1.5", "q": "2", "T": T0,
            "m": True, "M": True}  # fmt: skip
    for payload in [
        "{not json",  # ccxt cannot decode it
        "[1, 2, 3]",  # ccxt's handler raises on it
        {**good, "t": 2, "p": "abc"},  # ccxt's trade parser raises on it
        {**good, "t": 3, "p": "-5.0"},  # parsed, but no valid trade
        {**good, "t": 4, "T": None},
        {"e": "trade", "s": "BTCUSDT"},
    ]:
        await fake.send(TRADES, payload if isinstance(payload, str) else json.dumps(payload))
    await push_trades(fake, 2, base="64000")
    await trades.wait_for(lambda got: len(got) >= 2)
    await trades.stop()
    assert trades.items == [expected_trade(t) for t in fake.trades["BTCUSDT"]]
    bad = "cryptodesk_exchange_bad_payloads_total"
    assert sample(registry, bad, endpoint="ws") == 2
    assert sample(registry, bad, endpoint="ws:trade") == 1
    assert sample(registry, bad, endpoint="watch_trades") == 3


# -- websocket order books -------------------------------------------------------------


async def test_book_from_snapshot_and_diffs_then_rebuilt_after_a_sequence_gap(
    fake: FakeBinance, make: Callable[..., CcxtSource], registry: CollectorRegistry
) -> None:
    levels = [(f"{64000 - i}.00", f"{i + 1}.5") for i in range(25)]
    asks = [(f"{64001 + i}.00", f"{i + 2}.25") for i in range(25)]
    fake.set_book("BTCUSDT", levels, asks, last_update_id=1000)
    books = Collector(make().watch_order_book("BTC/USDT"))
    await books.wait_for(lambda got: len(got) >= 1)
    # The snapshot (binance's REST depth has no time: our clock stands in), 20 levels.
    assert books.items[0] == expected_book(fake, NOW)
    assert len(books.items[0].bids) == 20

    fake.now += 100
    await fake.push_depth("BTCUSDT", [("64000.00", "9.0"), ("63999.00", "0")], [])
    await books.wait_for(lambda got: got[-1].sequence == 1002)
    assert books.items[-1] == expected_book(fake, fake.now)

    # Updates 1003-1004 never arrive: ccxt sees U=1005 after u=1002.
    fake.now += 100
    await fake.push_depth("BTCUSDT", [("64000.50", "3.0")], [("64001.00", "0")],
                          lost=([("63998.00", "0"), ("63990.50", "7.0")], []))  # fmt: skip
    after_gap = expected_book(fake, 0)
    await fake.wait_subscribed(DEPTH, times=2)  # resubscribed to rebuild
    await until(lambda: len(fake.rest_calls("/api/v3/depth")) == 2)  # from a new snapshot
    fake.now += 100
    await fake.push_depth("BTCUSDT", [("63990.50", "8.0")], [("64002.00", "0.75")])
    last = fake.books["BTCUSDT"].last_update_id
    await books.wait_for(lambda got: got[-1].sequence == last)
    await books.stop()
    assert books.items[-1] == expected_book(fake, fake.now)
    # No book handed out ever lacked the lost updates.
    assert after_gap.sequence == 1006
    for book in books.items:
        if book.sequence == after_gap.sequence:
            assert (book.bids, book.asks) == (after_gap.bids, after_gap.asks)
    assert sample(registry, "cryptodesk_exchange_book_resyncs_total", symbol="BTC/USDT") == 1


async def test_book_survives_a_dropped_websocket(
    fake: FakeBinance, make: Callable[..., CcxtSource], registry: CollectorRegistry
) -> None:
    fake.set_book("BTCUSDT", [("100.00", "1")], [("101.00", "1")], last_update_id=50)
    books = Collector(make().watch_order_book("BTC/USDT"))
    await books.wait_for(lambda got: len(got) >= 1)
    await fake.drop_websockets()
    await fake.push_depth("BTCUSDT", [("99.00", "4")], [])  # missed: nobody listens
    await fake.wait_subscribed(DEPTH, times=2)
    await until(lambda: len(fake.rest_calls("/api/v3/depth")) == 2)
    fake.now += 5
    await fake.push_depth("BTCUSDT", [], [("101.00", "2")])
    await books.wait_for(lambda got: got[-1].sequence == fake.books["BTCUSDT"].last_update_id)
    await books.stop()
    assert books.items[-1] == expected_book(fake, fake.now)
    assert sample(registry, "cryptodesk_exchange_ws_reconnects_total", stream="orderbook") >= 1


async def test_a_book_that_stays_crossed_is_rebuilt(
    fake: FakeBinance, make: Callable[..., CcxtSource], registry: CollectorRegistry
) -> None:
    fake.set_book("BTCUSDT", [("100.00", "1")], [("101.00", "1")], last_update_id=10)
    books = Collector(make().watch_order_book("BTC/USDT"))
    await books.wait_for(lambda got: len(got) >= 1)
    book = fake.books["BTCUSDT"]
    bad = "cryptodesk_exchange_bad_payloads_total"
    for n in range(3):  # in sequence, but bids above the best ask: corrupt
        book.last_update_id += 1
        await fake.send(DEPTH, json.dumps({
            "e": "depthUpdate", "E": fake.now, "s": "BTCUSDT", "U": book.last_update_id,
            "u": book.last_update_id, "b": [[f"10{2 + n}.00", "1"]], "a": [],
        }))  # fmt: skip
        await until(partial(counted, registry, "watch_order_book", n + 1))
    await fake.wait_subscribed(DEPTH, times=2)
    await until(lambda: len(fake.rest_calls("/api/v3/depth")) == 2)
    fake.now += 5
    await fake.push_depth("BTCUSDT", [("100.50", "2")], [])
    await books.wait_for(lambda got: got[-1].sequence == book.last_update_id)
    await books.stop()
    assert books.items[-1] == expected_book(fake, fake.now)
    assert sample(registry, bad, endpoint="watch_order_book") == 3
    assert sample(registry, "cryptodesk_exchange_book_resyncs_total", symbol="BTC/USDT") == 1


# -- candles over the websocket, REST polling ------------------------------------------------


async def test_websocket_candles(fake: FakeBinance, make: Callable[..., CcxtSource]) -> None:
    candles = Collector(make().watch_ohlcv("BTC/USDT", "1h"))
    await fake.wait_subscribed("btcusdt@kline_1h")
    rows: list[list[Any]] = [
        [T0 + 2 * H, "64000.10", "64100.00", "63900.50", "64050.25", "12.5", T0 + 3 * H - 1,
         "800000.0", 1000, "6.0", "400000.0", "0"],
        [T0 + 3 * H, "64050.25", "64060.00", "64040.00", "64055.00", "0.5", T0 + 4 * H - 1,
         "32000.0", 10, "0.2", "12800.0", "0"],
    ]  # fmt: skip
    await fake.push_kline("BTCUSDT", "1h", rows[0], closed=True)
    await candles.wait_for(lambda got: len(got) >= 1)
    await fake.push_kline("BTCUSDT", "1h", rows[1], closed=False)
    await candles.wait_for(lambda got: len(got) >= 2)
    await candles.stop()
    assert candles.items == [
        Candle("binance", "BTC/USDT", "1h", r[0], float(r[1]), float(r[2]), float(r[3]),
               float(r[4]), float(r[5]), closed=closed)
        for r, closed in zip(rows, [True, False], strict=True)
    ]  # fmt: skip


async def test_rest_polling_where_there_is_no_websocket(
    fake: FakeBinance, make: Callable[..., CcxtSource]
) -> None:
    source = make(websocket=False)
    await push_trades(fake, 3, base="64000", record_only=True)
    fake.set_book("BTCUSDT", [("100.00", "1")], [("101.00", "1")], last_update_id=77)
    trades = Collector(source.watch_trades("BTC/USDT"))
    books = Collector(source.watch_order_book("BTC/USDT"))
    await trades.wait_for(lambda got: len(got) >= 3)
    await push_trades(fake, 2, base="64100", record_only=True)
    await trades.wait_for(lambda got: len(got) >= 5)
    await books.wait_for(lambda got: len(got) >= 1)
    await until(lambda: len(fake.rest_calls("/api/v3/trades")) >= 4)  # polled again since
    await trades.stop()
    await books.stop()
    assert trades.items == [expected_trade(t) for t in fake.trades["BTCUSDT"]]
    assert books.items[0] == expected_book(fake, NOW)
    assert fake.rest_calls("/api/v3/depth")[0]["limit"] == "20"
    assert fake.server.ws_connects == 0


# -- guard, bad input ----------------------------------------------------------------------


async def test_every_request_goes_through_the_guard(
    fake: FakeBinance, make: Callable[..., CcxtSource], registry: CollectorRegistry
) -> None:
    guards: list[ExchangeGuard] = []

    def guard(exchange: Any) -> ExchangeGuard:
        guards.append(ExchangeGuard.for_exchange(exchange, metrics_registry=registry))
        return guards[0]

    source = make(guard=guard)
    fake.set_book("BTCUSDT", [("100.00", "1")], [("101.00", "1")], last_update_id=5)
    books = Collector(source.watch_order_book("BTC/USDT"))  # ccxt fetches the snapshot itself
    await books.wait_for(lambda got: len(got) >= 1)
    await books.stop()
    await source.fetch_ohlcv("BTC/USDT", "1h", since=T0)
    # A 429 with Retry-After: the guard waits as told and retries.
    fake.server.fail_next("/api/v3/klines", 429, {"code": -1003, "msg": "Too many requests."},
                          headers={"Retry-After": "0"})  # fmt: skip
    assert await source.fetch_ohlcv("BTC/USDT", "1h", since=T0) == []
    rest = [p for _, p, _ in fake.server.requests if p.startswith("/api/")]
    assert rest == ["/api/v3/exchangeInfo", "/api/v3/depth"] + ["/api/v3/klines"] * 3
    assert sample(registry, "cryptodesk_exchange_rejections_total", status="429") == 1
    # Each request paid its weight: our calls inside guard.call, ccxt's snapshot outside.
    assert sample(registry, "cryptodesk_exchange_limiter_wait_seconds_count") >= len(rest)


async def test_unlisted_symbols_are_named(make: Callable[..., CcxtSource]) -> None:
    with pytest.raises(UnknownSymbolError, match=r"^binance does not list DOGE/EUR, XRP/BTC$"):
        await make(("BTC/USDT", "DOGE/EUR", "XRP/BTC")).load_markets()
    source = make()
    with pytest.raises(UnknownSymbolError, match=r"^binance does not list DOGE/EUR$"):
        await anext(aiter(source.watch_trades("DOGE/EUR")))
    with pytest.raises(UnknownSymbolError, match=r"^binance does not list DOGE/EUR$"):
        await anext(aiter(source.watch_order_book("DOGE/EUR")))
    with pytest.raises(UnknownSymbolError, match="DOGE/EUR"):
        await source.fetch_ohlcv("DOGE/EUR", "1h", since=T0)


async def test_close_ends_every_stream(fake: FakeBinance, make: Callable[..., CcxtSource]) -> None:
    source = make()
    fake.set_book("BTCUSDT", [("100.00", "1")], [("101.00", "1")], last_update_id=5)
    streams = [source.watch_trades("BTC/USDT"), source.watch_order_book("BTC/USDT")]
    readers = [asyncio.create_task(anext(aiter(s), None)) for s in streams]
    await fake.wait_subscribed(TRADES)
    await fake.wait_subscribed(DEPTH)
    await source.close()
    async with asyncio.timeout(10):
        results = await asyncio.gather(*readers)
    assert results[0] is None  # the trade stream ended, nothing was sent
