"""CcxtSource on real ccxt.pro coinbase (Advanced Trade), talking to a local
fake in Coinbase's wire format.

The fake (tests/fakes/coinbase.py) answers the public REST endpoints and the
market-data websocket as Coinbase documents them; every expected value below
is derived from what the fake sent, so a wrong field mapping, a lost or doubled
trade or a stale book fails the test. No API key is configured: every call ccxt
makes for market data is public.
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
from cryptodesk.domain.market import Candle, Market, OrderBook, Side, Ticker, Trade
from tests.fakes.coinbase import SNAPSHOT_TRADES, T0, FakeCoinbase, MarketTrade, Sides
from tests.integration.ccxt_streams import Collector, until

H = 3_600_000
NOW = T0 + 3 * H + 5  # our clock: the 4th hourly candle from T0 is still open
BTC = "BTC-USD"
PRODUCTS = "/api/v3/brokerage/market/products"
TICKER = f"{PRODUCTS}/{BTC}/ticker"
BOOK = "/api/v3/brokerage/market/product_book"


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeCoinbase]:
    server = FakeCoinbase()
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
    fake: FakeCoinbase, registry: CollectorRegistry
) -> AsyncIterator[Callable[..., CcxtSource]]:
    made: list[CcxtSource] = []

    def make(symbols: tuple[str, ...] = ("BTC/USD",), **options: Any) -> CcxtSource:
        source = CcxtSource(
            "coinbase", symbols,
            api_overrides={"http": fake.server.base_url, "ws": fake.server.ws_url},
            config={"timeout": 5000, "enableRateLimit": False}, metrics_registry=registry,
            clock=lambda: NOW, reconnect_initial=0.01, reconnect_cap=0.05, poll_interval=0.01,
            **options,
        )  # fmt: skip
        made.append(source)
        return source

    yield make
    for source in made:
        await source.close()


def expected_trade(raw: MarketTrade) -> Trade:
    side: Side = "buy" if raw.side == "BUY" else "sell"
    return Trade("coinbase", "BTC/USD", str(raw.id), raw.ms, float(raw.price),
                 float(raw.size), side)  # fmt: skip


def expected_book(fake: FakeCoinbase, ts: int) -> OrderBook:
    """The fake's true book; ccxt gives Coinbase books no sequence number."""
    bids, asks = fake.books[BTC].top(20)
    return OrderBook("coinbase", "BTC/USD", ts, tuple((float(p), float(q)) for p, q in bids),
                     tuple((float(p), float(q)) for p, q in asks))  # fmt: skip


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"exchange": "coinbase", **labels}) or 0.0


def counted(registry: CollectorRegistry, endpoint: str, times: int) -> bool:
    return sample(registry, "cryptodesk_exchange_bad_payloads_total", endpoint=endpoint) == times


async def push_trades(fake: FakeCoinbase, n: int, *, base: str, record_only: bool = False) -> None:
    for i in range(n):
        fake.now += 7
        args = (BTC, f"{base}.{i % 100:02d}", f"0.{i + 1:03d}", "SELL" if i % 2 else "BUY")
        if record_only:
            fake.record_trade(*args)
        else:
            await fake.push_trade(*args)


# -- markets, REST ------------------------------------------------------------------------


async def test_markets_keep_precision_and_limits(
    fake: FakeCoinbase, make: Callable[..., CcxtSource]
) -> None:
    source = make()
    markets = {m.symbol: m for m in await source.load_markets()}
    assert markets == {
        "BTC/USD": Market("coinbase", "BTC/USD", "BTC", "USD", 0.01, 1e-8, 1e-8, 1.0),
        "ETH/USD": Market("coinbase", "ETH/USD", "ETH", "USD", 0.01, 1e-8, 1e-8, 2.0),
        # the price step is price_increment (0.01), not quote_increment (0.000001)
        "SOL/USD": Market("coinbase", "SOL/USD", "SOL", "USD", 0.01, 0.001, 0.001, 1.0),
        "LUNA/USD": Market("coinbase", "LUNA/USD", "LUNA", "USD", 0.01, 1e-8, 1e-8, 1.0,
                           active=False),  # trading_disabled
    }  # fmt: skip
    await source.load_markets()  # loaded once
    public = ["/v2/currencies", "/v2/currencies/crypto", "/v2/exchange-rates", PRODUCTS, PRODUCTS]
    assert sorted(p for _, p, _ in fake.server.requests) == sorted(public)
    # spot, then futures (this venue lists none); never a private endpoint
    assert fake.rest_calls(PRODUCTS) == [{}, {"product_type": "FUTURE"}]
    await source.load_markets(reload=True)
    assert len(fake.rest_calls(PRODUCTS)) == 4


async def test_candles_and_tickers_over_rest(
    fake: FakeCoinbase, make: Callable[..., CcxtSource]
) -> None:
    rows = [
        {"start": str((T0 + i * H) // 1000), "low": f"{63900 + i}.50", "high": f"{64100 + i}.00",
         "open": f"{64000 + i}.10", "close": f"{64050 + i}.25", "volume": f"{12 + i}.12345678"}
        for i in range(5)
    ]  # fmt: skip
    fake.add_candles(BTC, "ONE_HOUR", rows)
    source = make()
    candles = await source.fetch_ohlcv("BTC/USD", "1h", since=T0 + H, until=T0 + 3 * H, limit=500)
    assert candles == [
        Candle("coinbase", "BTC/USD", "1h", int(r["start"]) * 1000, float(r["open"]),
               float(r["high"]), float(r["low"]), float(r["close"]), float(r["volume"]),
               closed=int(r["start"]) * 1000 + H <= NOW)
        for r in rows[1:4]
    ]  # fmt: skip
    assert [c.closed for c in candles] == [True, True, False]
    start = (T0 + H) // 1000  # ccxt asks for its 300-candle maximum from ``since``
    candle_path = f"{PRODUCTS}/{BTC}/candles"
    assert fake.rest_calls(candle_path) == [
        {"start": str(start), "end": str(start + 300 * 3600), "granularity": "ONE_HOUR"}
    ]

    stats = {"price_percentage_change_24h": "28", "volume_24h": "1234.56700000",
             "approximate_quote_24h_volume": "79012345.67"}  # fmt: skip
    for pid, last in ((BTC, "64000.00"), ("ETH-USD", "3400.00")):
        fake.set_stats(pid, price=last, **stats)
    tickers = await source.fetch_tickers(["BTC/USD", "ETH/USD"])
    # The listing has no time (our clock stands in) and no bid/ask; ccxt derives
    # the open from the 24 h change: last / 1.28.
    assert tickers == [
        Ticker("coinbase", "BTC/USD", NOW, 64000.0, None, None, 50000.0, None, None,
               1234.567, 79012345.67),
        Ticker("coinbase", "ETH/USD", NOW, 3400.0, None, None, 2656.25, None, None,
               1234.567, 79012345.67),
    ]  # fmt: skip
    with pytest.raises(UnknownSymbolError, match="coinbase does not list DOGE/EUR"):
        await source.fetch_tickers(["BTC/USD", "DOGE/EUR"])


async def test_recent_trades_and_book_snapshot_over_rest(
    fake: FakeCoinbase, make: Callable[..., CcxtSource]
) -> None:
    source = make(websocket=False)
    await push_trades(fake, 3, base="64000", record_only=True)
    bids = [(f"{64000 - i}.00", f"{i + 1}.5") for i in range(25)]
    fake.set_book(BTC, bids, [(f"{64001 + i}.00", f"0.{i + 1:02d}") for i in range(25)])
    trades = Collector(source.watch_trades("BTC/USD"))
    books = Collector(source.watch_order_book("BTC/USD"))
    await trades.wait_for(lambda got: len(got) >= 3)
    await books.wait_for(lambda got: len(got) >= 1)
    # The pricebook's own time, 20 levels a side as asked.
    assert books.items[0] == expected_book(fake, fake.now)
    await push_trades(fake, 2, base="64100", record_only=True)
    await trades.wait_for(lambda got: len(got) >= 5)
    await trades.stop()
    await books.stop()
    assert trades.items == [expected_trade(t) for t in fake.trades[BTC]]
    assert {t.side for t in trades.items} == {"buy", "sell"}
    assert len(books.items[0].bids) == 20
    assert fake.rest_calls(TICKER)[0] == {"limit": "1000"}  # the newest page, no time filter
    assert fake.rest_calls(BOOK)[0] == {"product_id": BTC, "limit": "20"}
    assert fake.server.ws_connects == 0


# -- websocket trades ------------------------------------------------------------------


async def test_websocket_trades_are_exact(
    fake: FakeCoinbase, make: Callable[..., CcxtSource]
) -> None:
    await push_trades(fake, 3, base="63900", record_only=True)  # sent in the snapshot
    trades = Collector(make().watch_trades("BTC/USD"))
    await fake.wait_subscribed("market_trades", BTC)
    await push_trades(fake, 5, base="64000")
    await trades.wait_for(lambda got: len(got) >= 8)
    await trades.stop()
    assert trades.items == [expected_trade(t) for t in fake.trades[BTC]]
    assert {t.side for t in trades.items} == {"buy", "sell"}


@pytest.mark.parametrize("gap", [4, SNAPSHOT_TRADES + 10], ids=["in-snapshot", "past-snapshot"])
async def test_dropped_websocket_reconnects_and_backfills_the_gap(
    fake: FakeCoinbase, make: Callable[..., CcxtSource], registry: CollectorRegistry, gap: int
) -> None:
    """The snapshot a resubscription brings holds the newest 50 trades; REST
    serves the rest of the gap. Both overlap; every trade is handed out once."""
    trades = Collector(make().watch_trades("BTC/USD"))
    await fake.wait_subscribed("market_trades", BTC)
    await push_trades(fake, 3, base="64000")
    await trades.wait_for(lambda got: len(got) >= 3)

    await fake.drop_websockets()
    await push_trades(fake, gap, base="64100", record_only=True)  # nobody listens
    await fake.wait_subscribed("market_trades", BTC, times=2)  # reconnected and resubscribed
    await push_trades(fake, 2, base="64200")
    await trades.wait_for(lambda got: len(got) >= 5 + gap)
    await push_trades(fake, 1, base="64300")  # the stream goes on
    await trades.wait_for(lambda got: len(got) >= 6 + gap)
    await trades.stop()

    assert trades.items == [expected_trade(t) for t in fake.trades[BTC]]
    assert len(fake.rest_calls(TICKER)) == 1
    assert sample(registry, "cryptodesk_exchange_ws_reconnects_total", stream="trades") >= 1
    recovered = max(0, gap - SNAPSHOT_TRADES)  # older than the snapshot's oldest trade
    assert sample(registry, "cryptodesk_exchange_trades_backfilled_total") == recovered


async def test_malformed_payloads_are_counted_and_skipped(
    fake: FakeCoinbase, make: Callable[..., CcxtSource], registry: CollectorRegistry
) -> None:
    trades = Collector(make().watch_trades("BTC/USD"))
    await fake.wait_subscribed("market_trades", BTC)
    good = {"trade_id": "1", "product_id": BTC, "price": "1.5", "size": "2", "side": "BUY",
            "time": "2024-06-01T00:00:00.000000Z"}  # fmt: skip

    def message(*trades: dict[str, Any]) -> str:
        return json.dumps({"channel": "market_trades", "client_id": "", "sequence_num": 90,
                           "timestamp": "2024-06-01T00:00:00Z",
                           "events": [{"type": "update", "trades": list(trades)}]})  # fmt: skip

    for text in [
        "{not json",  # ccxt cannot decode it
        message(),  # no trade: ccxt's handler raises on it
        message({**good, "trade_id": "2", "price": "abc"}),  # ccxt's trade parser raises
        message({**good, "trade_id": "3", "price": "-5.0"}),  # parsed, but no valid trade
        message({**good, "trade_id": "4", "time": None}),
        message({**good, "trade_id": "5", "side": None}),
    ]:
        await fake.send_raw("market_trades", BTC, text)
    await push_trades(fake, 2, base="64000")
    await trades.wait_for(lambda got: len(got) >= 2)
    await trades.stop()
    assert trades.items == [expected_trade(t) for t in fake.trades[BTC]]
    assert counted(registry, "ws", 1)
    assert counted(registry, "ws:market_trades", 2)
    assert counted(registry, "watch_trades", 3)


# -- websocket order books -------------------------------------------------------------


async def test_book_from_the_snapshot_then_kept_from_updates(
    fake: FakeCoinbase, make: Callable[..., CcxtSource]
) -> None:
    bids = [(f"{64000 - i}.00", f"{i + 1}.5") for i in range(25)]
    fake.set_book(BTC, bids, [(f"{64001 + i}.00", f"{i + 2}.25") for i in range(25)])
    books = Collector(make().watch_order_book("BTC/USD"))
    await books.wait_for(lambda got: len(got) >= 1)
    assert books.items == [expected_book(fake, fake.now)]  # the message's time
    assert len(books.items[0].bids) == len(books.items[0].asks) == 20
    for bid_levels, ask_levels in [
        ([("64000.00", "9.0"), ("63999.00", "0")], []),  # a size changed, a level removed
        ([("64000.50", "3.0")], [("64001.00", "0"), ("64000.75", "0.5")]),
        ([], [("64002.00", "0"), ("64003.00", "0")]),  # deeper levels move up
    ]:
        fake.now += 100
        await fake.push_l2(BTC, bid_levels, ask_levels)
        await books.wait_for(lambda got: got[-1].ts == fake.now)
        assert books.items[-1] == expected_book(fake, fake.now)
    await books.stop()
    assert len(books.items) == 4


async def test_a_lost_update_that_crosses_the_book_is_rebuilt_from_a_snapshot(
    fake: FakeCoinbase, make: Callable[..., CcxtSource], registry: CollectorRegistry
) -> None:
    """ccxt does not check Coinbase's ``sequence_num``: a lost update stays in
    the book unseen. Here it removed the best ask, so the next bids cross the
    stale one; a book that stays crossed is dropped, the socket reconnects and
    the new subscription's snapshot replaces it."""
    fake.set_book(BTC, [("100.00", "1")], [("101.00", "1"), ("102.00", "1")])
    books = Collector(make().watch_order_book("BTC/USD"))
    await books.wait_for(lambda got: len(got) >= 1)
    for n in range(3):  # sequence_num skips one before the first of these
        fake.now += 10
        lost: Sides | None = ([], [("101.00", "0")]) if n == 0 else None
        await fake.push_l2(BTC, [("101.50", f"{n + 1}")], lost=lost)
        await until(partial(counted, registry, "watch_order_book", n + 1))
    await fake.wait_subscribed("level2", BTC, times=2)
    fake.now += 5
    await fake.push_l2(BTC, [], [("102.50", "4")])
    await books.wait_for(lambda got: got[-1].ts == fake.now)
    await books.stop()
    assert books.items[-1] == expected_book(fake, fake.now)
    assert (books.items[-1].bids[0], books.items[-1].asks[0]) == ((101.5, 3.0), (102.0, 1.0))
    assert all(101.0 not in dict(book.asks) for book in books.items[1:])
    assert sample(registry, "cryptodesk_exchange_book_resyncs_total", symbol="BTC/USD") == 1


async def test_book_survives_a_dropped_websocket(
    fake: FakeCoinbase, make: Callable[..., CcxtSource], registry: CollectorRegistry
) -> None:
    fake.set_book(BTC, [("100.00", "1")], [("101.00", "1")])
    books = Collector(make().watch_order_book("BTC/USD"))
    await books.wait_for(lambda got: len(got) >= 1)
    await fake.drop_websockets()
    await fake.push_l2(BTC, [("99.00", "4")])  # missed: nobody listens
    await fake.wait_subscribed("level2", BTC, times=2)
    fake.now += 5
    await fake.push_l2(BTC, [], [("101.00", "2")])
    await books.wait_for(lambda got: got[-1].ts == fake.now)
    await books.stop()
    assert books.items[-1] == expected_book(fake, fake.now)
    assert books.items[-1].bids == ((100.0, 1.0), (99.0, 4.0))  # from the new snapshot
    assert sample(registry, "cryptodesk_exchange_ws_reconnects_total", stream="orderbook") >= 1


# -- bad input, close ------------------------------------------------------------------


async def test_unlisted_symbols_are_named(make: Callable[..., CcxtSource]) -> None:
    with pytest.raises(UnknownSymbolError, match=r"^coinbase does not list DOGE/EUR, XRP/BTC$"):
        await make(("BTC/USD", "DOGE/EUR", "XRP/BTC")).load_markets()
    source = make()
    with pytest.raises(UnknownSymbolError, match=r"^coinbase does not list DOGE/EUR$"):
        await anext(aiter(source.watch_trades("DOGE/EUR")))
    with pytest.raises(UnknownSymbolError, match=r"^coinbase does not list DOGE/EUR$"):
        await anext(aiter(source.watch_order_book("DOGE/EUR")))
    with pytest.raises(UnknownSymbolError, match="DOGE/EUR"):
        await source.fetch_ohlcv("DOGE/EUR", "1h", since=T0)


async def test_close_ends_every_stream(fake: FakeCoinbase, make: Callable[..., CcxtSource]) -> None:
    source = make()
    fake.set_book(BTC, [("100.00", "1")], [("101.00", "1")])
    streams = [source.watch_trades("BTC/USD"), source.watch_order_book("BTC/USD")]
    readers = [asyncio.create_task(anext(aiter(s), None)) for s in streams]
    await fake.wait_subscribed("market_trades", BTC)
    await fake.wait_subscribed("level2", BTC)
    await source.close()
    async with asyncio.timeout(10):
        results = await asyncio.gather(*readers)
    assert results[0] is None  # the trade stream ended, nothing was sent
