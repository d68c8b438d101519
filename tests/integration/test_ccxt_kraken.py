"""CcxtSource on real ccxt.pro kraken, talking to a local fake in Kraken's wire format.

The fake (tests/fakes/kraken.py) answers REST and the public websocket v2 as
Kraken documents them; every expected value below is derived from what the
fake sent, so a wrong field mapping, a lost or doubled trade, a book that
drifts from the exchange's or a checksum left unchecked fails the test.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from cryptodesk.adapters.exchanges.ccxt_quirks import kraken_book_check
from cryptodesk.adapters.exchanges.ccxt_source import CcxtSource, UnknownSymbolError
from cryptodesk.domain.market import Candle, Market, OrderBook, Ticker, Trade
from tests.fakes.kraken import T0, Book, FakeKraken, book_checksum, dumps, rfc3339
from tests.integration.ccxt_streams import Collector, until

H = 3_600_000
NOW = T0 + 3 * H + 5  # our clock: the 4th hourly candle from T0 is still open
BTC = "XXBTZUSD"
BOOK = ("book", "BTC/USD")


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeKraken]:
    server = FakeKraken()
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
    fake: FakeKraken, registry: CollectorRegistry
) -> AsyncIterator[Callable[..., CcxtSource]]:
    made: list[CcxtSource] = []

    def make(symbols: tuple[str, ...] = ("BTC/USD",), **options: Any) -> CcxtSource:
        source = CcxtSource(
            "kraken", symbols,
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


def expected_trade(raw: dict[str, Any]) -> Trade:
    """What a kraken trade (REST row or websocket entry) must become."""
    return Trade("kraken", "BTC/USD", str(raw["trade_id"]), raw["time_us"] // 1000,
                 float(raw["price"]), float(raw["qty"]), raw["side"])  # fmt: skip


def top10(fake: FakeKraken) -> tuple[tuple[tuple[float, float], ...], ...]:
    bids, asks = fake.books[BTC].top(10)
    return tuple((float(p), float(q)) for p, q in bids), tuple(
        (float(p), float(q)) for p, q in asks
    )


def expected_book(fake: FakeKraken, ts: int) -> OrderBook:
    """The top ten levels: ccxt subscribes at Kraken's default depth. Kraken
    numbers no book updates, so the sequence is 0."""
    bids, asks = top10(fake)
    return OrderBook("kraken", "BTC/USD", ts, bids, asks, 0)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"exchange": "kraken", **labels}) or 0.0


def bad_payloads(registry: CollectorRegistry) -> dict[str, float]:
    return {
        s.labels["endpoint"]: s.value
        for metric in registry.collect()
        for s in metric.samples
        if s.name == "cryptodesk_exchange_bad_payloads_total"
    }


async def push_trades(fake: FakeKraken, n: int, *, base: str, record_only: bool = False) -> None:
    for i in range(n):
        fake.now += 7
        args = (BTC, f"{base}.{i}", f"0.{i + 1:03d}")
        side = "sell" if i % 2 == 0 else "buy"
        if record_only:
            fake.record_trade(*args, side=side, ord_type="limit")
        else:
            await fake.push_trade(*args, side=side)


def ladder(n: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``n`` bids below 64000.5 and ``n`` asks above it, one dollar apart."""
    bids = [(f"{64000 - i}.0", f"{i + 1}.5") for i in range(n)]
    asks = [(f"{64001 + i}.0", f"0.{i + 1:02d}") for i in range(n)]
    return bids, asks


# -- checksum, markets, REST --------------------------------------------------------------


def test_checksums_agree_with_krakens_documented_example() -> None:
    """The example book of https://docs.kraken.com/api/docs/guides/spot-ws-book-v1
    (same formatting in v2) has checksum 974947235: the fake computes it from
    decimals, the source's check from the floats ccxt parses."""
    asks = [(Decimal("0.05005") + Decimal("0.00005") * i, Decimal("0.00000500")) for i in range(10)]
    bid_prices = ["0.05000", "0.04995", "0.04990", "0.04980", "0.04975", "0.04970", "0.04965",
                  "0.04960", "0.04955", "0.04950"]  # fmt: skip
    bids = [(Decimal(p), Decimal("0.00000500")) for p in bid_prices]
    assert book_checksum(bids, asks) == 974947235

    def check(checksum: int) -> bool:
        entry = {"symbol": "BTC/USD", "checksum": checksum,
                 "bids": [{"price": float(p), "qty": float(q)} for p, q in bids],
                 "asks": [{"price": float(p), "qty": float(q)} for p, q in asks]}  # fmt: skip
        exchange = SimpleNamespace(
            markets={"BTC/USD": {"info": {"pair_decimals": 5, "lot_decimals": 8}}},
            orderbooks={}, spawn=lambda *args: None,
        )  # fmt: skip
        client = SimpleNamespace(subscriptions={}, reject=lambda *args: None)
        message = {"channel": "book", "type": "snapshot", "data": [entry]}
        return kraken_book_check(exchange, client, message)

    assert check(974947235)
    assert not check(974947236)


async def test_markets_keep_precision_and_limits_and_load_once(
    fake: FakeKraken, make: Callable[..., CcxtSource]
) -> None:
    source = make()
    markets = {m.symbol: m for m in await source.load_markets()}
    # pair_decimals and lot_decimals are the increments, ordermin and costmin the
    # minimums; XXBT/ZUSD become BTC/USD through the asset list.
    assert markets == {
        "BTC/USD": Market("kraken", "BTC/USD", "BTC", "USD", 0.1, 1e-8, 0.00005, 0.5),
        "ETH/USD": Market("kraken", "ETH/USD", "ETH", "USD", 0.01, 1e-8, 0.002, 0.5),
        "ETH/BTC": Market("kraken", "ETH/BTC", "ETH", "BTC", 0.00001, 1e-8, 0.002, 0.00002),
        "SOL/USD": Market("kraken", "SOL/USD", "SOL", "USD", 0.01, 1e-8, 0.02, 0.5),
        # status cancel_only: listed, not trading
        "ADA/USD": Market("kraken", "ADA/USD", "ADA", "USD", 0.000001, 1e-8, 5.0, 0.5,
                          active=False),
    }  # fmt: skip
    await source.load_markets()
    await source.load_markets(reload=True)
    paths = [p for _, p, _ in fake.server.requests]
    assert paths == ["/0/public/Assets", "/0/public/AssetPairs"] * 2


async def test_candles_and_tickers_over_rest(
    fake: FakeKraken, make: Callable[..., CcxtSource]
) -> None:
    rows: list[list[Any]] = [
        [T0 // 1000 + i * 3600, f"{64000 + i}.1", f"{64100 + i}.0", f"{63900 + i}.5",
         f"{64050 + i}.2", f"{64010 + i}.0", f"{12 + i}.12345678", 1000 + i]
        for i in range(5)
    ]  # fmt: skip
    fake.add_candles(BTC, 60, rows)
    source = make()
    candles = await source.fetch_ohlcv("BTC/USD", "1h", since=T0 + H, until=T0 + 3 * H, limit=500)
    # Seconds to milliseconds; the volume is the 7th field (the 6th is the vwap).
    assert candles == [
        Candle("kraken", "BTC/USD", "1h", r[0] * 1000, float(r[1]), float(r[2]), float(r[3]),
               float(r[4]), float(r[6]), closed=r[0] * 1000 + H <= NOW)
        for r in rows[1:4]
    ]  # fmt: skip
    assert [c.closed for c in candles] == [True, True, False]
    # Kraken's ``since`` is exclusive: ccxt asks from one interval earlier.
    assert fake.rest_calls("OHLC") == [{"pair": BTC, "interval": "60", "since": str(T0 // 1000)}]

    for pid, last in ((BTC, "64010.5"), ("XETHZUSD", "3400.25")):
        fake.set_ticker(
            pid, a=["64010.60000", "1", "1.000"], b=["64010.50000", "2", "2.000"],
            c=[last, "0.01000000"], v=["100.50000000", "1234.56700000"],
            p=["64001.00000", "64000.00000"], t=[800, 5000], l=["63000.0", "62000.0"],
            h=["65000.0", "66000.0"], o="63500.0",
        )  # fmt: skip
    tickers = await source.fetch_tickers(["BTC/USD", "ETH/USD"])
    # 24 h values are the second of each pair; the quote volume is volume x vwap.
    quote_volume = 1234.567 * 64000.0
    assert tickers == [
        Ticker("kraken", "BTC/USD", NOW, 64010.5, 64010.5, 64010.6, 63500.0, 66000.0,
               62000.0, 1234.567, quote_volume),
        Ticker("kraken", "ETH/USD", NOW, 3400.25, 64010.5, 64010.6, 63500.0, 66000.0,
               62000.0, 1234.567, quote_volume),
    ]  # fmt: skip
    assert fake.rest_calls("Ticker") == [{"pair": f"{BTC},XETHZUSD"}]


async def test_recent_trades_and_book_snapshot_over_rest(
    fake: FakeKraken, make: Callable[..., CcxtSource]
) -> None:
    source = make(websocket=False)
    await push_trades(fake, 3, base="64000", record_only=True)
    fake.set_book(BTC, *ladder(25))
    trades = Collector(source.watch_trades("BTC/USD"))
    books = Collector(source.watch_order_book("BTC/USD"))
    await trades.wait_for(lambda got: len(got) >= 3)
    await push_trades(fake, 2, base="64100", record_only=True)
    await trades.wait_for(lambda got: len(got) >= 5)
    await books.wait_for(lambda got: len(got) >= 1)
    await trades.stop()
    await books.stop()
    assert trades.items == [expected_trade(t) for t in fake.trades[BTC]]
    assert {t.side for t in trades.items} == {"buy", "sell"}
    calls = fake.rest_calls("Trades")
    assert calls[0] == {"pair": BTC, "count": "1000"}  # the newest page first
    assert calls[-1] == {"pair": BTC, "since": str(fake.now // 1000), "count": "1000"}
    # The REST snapshot has no time (our clock stands in), 20 levels of 25.
    bids, asks = fake.books[BTC].top(20)
    assert books.items[0] == OrderBook(
        "kraken", "BTC/USD", NOW, tuple((float(p), float(q)) for p, q in bids),
        tuple((float(p), float(q)) for p, q in asks), 0,
    )  # fmt: skip
    assert fake.rest_calls("Depth")[0] == {"pair": BTC, "count": "20"}
    assert fake.server.ws_connects == 0


# -- websocket trades ------------------------------------------------------------------


async def test_websocket_trades_are_exact_and_match_rest(
    fake: FakeKraken, make: Callable[..., CcxtSource], registry: CollectorRegistry
) -> None:
    ws = Collector(make().watch_trades("BTC/USD"))
    await fake.wait_subscribed("trade")
    await push_trades(fake, 3, base="64000")
    await fake.send_heartbeat()
    fake.now += 7  # two trades in one message, as Kraken batches them
    batch = [fake.record_trade(BTC, "64001.5", "0.25", side="buy"),
             fake.record_trade(BTC, "64001.4", "1.125", side="sell", ord_type="limit")]  # fmt: skip
    await fake.send_trades(BTC, batch)
    await ws.wait_for(lambda got: len(got) >= 5)
    await ws.stop()
    assert ws.items == [expected_trade(t) for t in fake.trades[BTC]]

    # REST serves the same trades under the same ids: a backfill after a
    # reconnect deduplicates against what the websocket already delivered.
    rest = Collector(make(websocket=False).watch_trades("BTC/USD"))
    await rest.wait_for(lambda got: len(got) >= 5)
    await rest.stop()
    assert rest.items == ws.items
    assert bad_payloads(registry) == {}


async def test_dropped_websocket_reconnects_and_backfills_the_gap(
    fake: FakeKraken, make: Callable[..., CcxtSource], registry: CollectorRegistry
) -> None:
    trades = Collector(make().watch_trades("BTC/USD"))
    await fake.wait_subscribed("trade")
    await push_trades(fake, 3, base="64000")
    await trades.wait_for(lambda got: len(got) >= 3)
    last_seen = trades.items[-1].ts

    await fake.drop_websockets()
    await push_trades(fake, 4, base="64100", record_only=True)  # REST only: nobody listens
    await fake.wait_subscribed("trade", times=2)  # reconnected and resubscribed
    await push_trades(fake, 2, base="64200")
    await trades.wait_for(lambda got: len(got) >= 9)
    await push_trades(fake, 1, base="64300")  # the stream goes on
    await trades.wait_for(lambda got: len(got) >= 10)
    await trades.stop()

    # Every trade exactly once, in exchange order: REST re-served the three
    # already delivered (and the live ones), each dropped by its id.
    assert trades.items == [expected_trade(t) for t in fake.trades[BTC]]
    assert fake.rest_calls("Trades") == [
        {"pair": BTC, "since": str(last_seen // 1000), "count": "1000"}
    ]
    assert sample(registry, "cryptodesk_exchange_ws_reconnects_total", stream="trades") >= 1
    assert sample(registry, "cryptodesk_exchange_trades_backfilled_total") == 4
    assert sample(registry, "cryptodesk_exchange_trades_unrecovered_total") == 0


async def test_malformed_payloads_are_counted_and_skipped(
    fake: FakeKraken, make: Callable[..., CcxtSource], registry: CollectorRegistry
) -> None:
    trades = Collector(make().watch_trades("BTC/USD"))
    await fake.wait_subscribed("trade")
    good = {"symbol": "BTC/USD", "side": "buy", "price": 1.5, "qty": 2.0, "ord_type": "market",
            "trade_id": 1, "timestamp": "2024-06-01T00:00:00.007250Z"}  # fmt: skip

    def update(**changes: Any) -> str:
        return json.dumps({"channel": "trade", "type": "update", "data": [{**good, **changes}]})

    for payload in [
        "{not json",  # ccxt cannot decode it
        "[1, 2, 3]",  # no channel: ccxt ignores it
        update(trade_id=2, price="abc"),  # ccxt's trade parser raises on it
        update(trade_id=3, symbol="DOGE/EUR"),  # a pair ccxt does not know
        json.dumps({"channel": "trade", "type": "update", "data": "oops"}),
        update(trade_id=4, price=-5.0),  # parsed, but no valid trade
        update(trade_id=5, timestamp=None),
    ]:
        await fake.send_raw(payload)
    await push_trades(fake, 2, base="64000")
    await trades.wait_for(lambda got: len(got) >= 2)
    await trades.stop()
    assert trades.items == [expected_trade(t) for t in fake.trades[BTC]]
    assert bad_payloads(registry) == {"ws": 1, "ws:trade": 3, "watch_trades": 2}


# -- websocket order books -------------------------------------------------------------


async def test_book_kept_from_snapshot_and_updates(
    fake: FakeKraken, make: Callable[..., CcxtSource], registry: CollectorRegistry
) -> None:
    fake.set_book(BTC, *ladder(15))
    books = Collector(make().watch_order_book("BTC/USD"))
    await books.wait_for(lambda got: len(got) >= 1)
    # The snapshot has no time: our clock stands in.
    assert books.items[0] == expected_book(fake, NOW)
    assert len(books.items[0].bids) == 10

    steps: list[tuple[list[tuple[str, str]], list[tuple[str, str]]]] = [
        # a quantity changes; an ask inside the depth goes, the 11th comes into scope
        ([("64000.0", "3.25")], [("64003.0", "0")]),
        # a new best bid pushes the 10th out: Kraken sends no delete for it
        ([("64000.5", "0.75")], []),
        # the pushed-out bid comes back when one inside the depth goes
        ([("63995.0", "0")], [("64001.0", "0.5")]),
    ]
    for bids, asks in steps:
        fake.now += 100
        assert await fake.push_book(BTC, bids, asks) == 1
        await books.wait_for(lambda got: got[-1].ts == fake.now)
        assert books.items[-1] == expected_book(fake, fake.now)
    assert books.items[-1].bids[-1] == (63991.0, 10.5)  # back from beyond the depth
    # A change beyond the subscribed depth is not published.
    assert await fake.push_book(BTC, [("63986.0", "7.0")], []) == 0
    await books.stop()
    assert sample(registry, "cryptodesk_exchange_book_resyncs_total", symbol="BTC/USD") == 0
    assert bad_payloads(registry) == {}


async def test_checksum_mismatch_rebuilds_the_book_from_a_snapshot(
    fake: FakeKraken, make: Callable[..., CcxtSource], registry: CollectorRegistry
) -> None:
    fake.set_book(BTC, *ladder(12))
    books = Collector(make().watch_order_book("BTC/USD"))
    await books.wait_for(lambda got: len(got) >= 1)
    true_books = [top10(fake)]

    # An update never arrives (63999 leaves the book); the next one's checksum
    # then disagrees with the book ccxt would make from it.
    fake.now += 100
    await fake.push_book(BTC, [("64000.0", "2.0")], [], lost=([("63999.0", "0")], []))
    true_books.append(top10(fake))
    await fake.wait_subscribed("book", times=2)  # unsubscribed, then subscribed afresh
    await books.wait_for(lambda got: got[-1] == expected_book(fake, NOW))
    assert fake.unsubscribe_counts == {BOOK: 1}
    assert sample(registry, "cryptodesk_exchange_book_resyncs_total", symbol="BTC/USD") == 1

    # A checksum that is simply wrong is treated the same.
    fake.now += 100
    await fake.push_book(BTC, [], [("64001.0", "0.5")], checksum=123456789)
    true_books.append(top10(fake))
    await fake.wait_subscribed("book", times=3)
    await books.wait_for(lambda got: got[-1].asks[0] == (64001.0, 0.5))
    assert books.items[-1] == expected_book(fake, NOW)

    fake.now += 100  # and updates apply again
    await fake.push_book(BTC, [("64000.0", "4.0")], [])
    true_books.append(top10(fake))
    await books.wait_for(lambda got: got[-1].ts == fake.now)
    await books.stop()
    assert books.items[-1] == expected_book(fake, fake.now)
    # No book handed out was ever one the exchange did not have.
    assert all((b.bids, b.asks) in true_books for b in books.items)
    assert sample(registry, "cryptodesk_exchange_book_resyncs_total", symbol="BTC/USD") == 2
    assert fake.unsubscribe_counts == {BOOK: 2}
    assert fake.refused == []  # never subscribed twice on one connection
    assert bad_payloads(registry) == {}


async def test_book_survives_a_dropped_websocket(
    fake: FakeKraken, make: Callable[..., CcxtSource], registry: CollectorRegistry
) -> None:
    fake.set_book(BTC, *ladder(3))
    books = Collector(make().watch_order_book("BTC/USD"))
    await books.wait_for(lambda got: len(got) >= 1)
    await fake.drop_websockets()
    assert await fake.push_book(BTC, [("63999.5", "4")], []) == 0  # missed: nobody listens
    await fake.wait_subscribed("book", times=2)
    await books.wait_for(lambda got: (63999.5, 4.0) in got[-1].bids)  # from the new snapshot
    fake.now += 5
    await fake.push_book(BTC, [], [("64001.0", "2")])
    await books.wait_for(lambda got: got[-1].ts == fake.now)
    await books.stop()
    assert books.items[-1] == expected_book(fake, fake.now)
    assert sample(registry, "cryptodesk_exchange_ws_reconnects_total", stream="orderbook") >= 1
    assert sample(registry, "cryptodesk_exchange_book_resyncs_total", symbol="BTC/USD") == 0


async def test_a_book_that_stays_crossed_is_rebuilt_on_a_new_connection(
    fake: FakeKraken, make: Callable[..., CcxtSource], registry: CollectorRegistry
) -> None:
    fake.set_book(BTC, *ladder(3))
    books = Collector(make().watch_order_book("BTC/USD"))
    await books.wait_for(lambda got: len(got) >= 1)
    held = Book(fake.pairs[BTC])  # the book ccxt holds
    held.apply(*ladder(3))
    for n in range(3):  # bids above the best ask, checksummed as sent: only our checks object
        held.apply([(f"6400{2 + n}.0", "1")], [])
        entry = {"symbol": "BTC/USD", "asks": [], "checksum": held.checksum(),
                 "bids": [{"price": Decimal(f"6400{2 + n}.0"), "qty": Decimal("1.00000000")}],
                 "timestamp": rfc3339(fake.now * 1000)}  # fmt: skip
        await fake.send_raw(dumps({"channel": "book", "type": "update", "data": [entry]}))
        await until(lambda n=n: bad_payloads(registry) == {"watch_order_book": n + 1})
    # ccxt cannot unsubscribe a kraken book: the source starts a new connection.
    await fake.wait_subscribed("book", times=2)
    assert fake.server.ws_connects == 2
    fake.now += 5
    await fake.push_book(BTC, [("63999.5", "2")], [])
    await books.wait_for(lambda got: got[-1].ts == fake.now)
    await books.stop()
    assert books.items[-1] == expected_book(fake, fake.now)
    assert sample(registry, "cryptodesk_exchange_book_resyncs_total", symbol="BTC/USD") == 1


# -- bad input --------------------------------------------------------------------------


async def test_unlisted_symbols_are_named(make: Callable[..., CcxtSource]) -> None:
    # XBT/USD is Kraken's own name for the pair, not a unified symbol.
    with pytest.raises(UnknownSymbolError, match=r"^kraken does not list DOGE/EUR, XBT/USD$"):
        await make(("BTC/USD", "DOGE/EUR", "XBT/USD")).load_markets()
    source = make()
    with pytest.raises(UnknownSymbolError, match=r"^kraken does not list DOGE/EUR$"):
        await anext(aiter(source.watch_trades("DOGE/EUR")))
    with pytest.raises(UnknownSymbolError, match=r"^kraken does not list DOGE/EUR$"):
        await anext(aiter(source.watch_order_book("DOGE/EUR")))
    with pytest.raises(UnknownSymbolError, match="DOGE/EUR"):
        await source.fetch_ohlcv("DOGE/EUR", "1h", since=T0)
