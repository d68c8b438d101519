"""CcxtSource on real ccxt.pro htx (spot), talking to a local fake in HTX's wire
format (tests/fakes/htx.py): gzip-compressed websocket frames, server pings,
``trade.detail`` pushes, and the MBP book synced from a ``req`` snapshot.

Every expected value is derived from what the fake sent, so a wrong field
mapping, a lost or doubled trade or a stale book fails the test.
"""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from cryptodesk.adapters.exchanges.ccxt_source import CcxtSource
from cryptodesk.domain.market import Candle, Market, OrderBook, Side, Ticker, Trade
from tests.fakes.htx import T0, FakeHtx
from tests.integration.ccxt_streams import Collector

H = 3_600_000
NOW = T0 + 3 * H + 5  # our clock: the 4th hourly candle from T0 is still open
TRADES = "market.btcusdt.trade.detail"
MBP = "market.btcusdt.mbp.150"


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeHtx]:
    server = FakeHtx()
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
    fake: FakeHtx, registry: CollectorRegistry
) -> AsyncIterator[Callable[..., CcxtSource]]:
    made: list[CcxtSource] = []

    def make(**options: Any) -> CcxtSource:
        source = CcxtSource(
            "htx", ("BTC/USDT",),
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


def expected_trades(fake: FakeHtx) -> list[Trade]:
    """Every trade the fake made, oldest first, named by its documented trade id."""
    out = []
    for group in fake.trades["btcusdt"]:
        for t in group["data"]:
            side: Side = t["direction"]
            out.append(Trade("htx", "BTC/USDT", str(t["trade-id"]), t["ts"], float(t["price"]),
                             float(t["amount"]), side))  # fmt: skip
    return out


def expected_book(fake: FakeHtx, ts: int, sequence: int) -> OrderBook:
    bids, asks = fake.books["btcusdt"].top(20)
    return OrderBook(
        "htx", "BTC/USDT", ts,
        tuple((float(p), float(a)) for p, a in bids),
        tuple((float(p), float(a)) for p, a in asks),
        sequence,
    )  # fmt: skip


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"exchange": "htx", **labels}) or 0.0


async def push(fake: FakeHtx, n: int, *, base: str, record_only: bool = False) -> None:
    """``n`` taker orders, the odd ones filled in two trades."""
    for i in range(n):
        fake.now += 7
        fills = [(f"{base}.{i:02d}", f"0.{i + 1:03d}", "sell" if i % 2 else "buy")]
        if i % 2:
            fills.append((f"{base}.{i:02d}", "0.5", "sell"))
        if record_only:
            fake.record_trades("btcusdt", fills)
        else:
            await fake.push_trades("btcusdt", fills)


def book_levels(fake: FakeHtx) -> None:
    fake.set_book("btcusdt", [(f"{64000 - i}.5", f"{i + 1}.25") for i in range(30)],
                  [(f"{64001 + i}.5", f"0.{i + 1:02d}") for i in range(30)], seq=1000)  # fmt: skip


# -- markets, REST ------------------------------------------------------------------------


async def test_markets_are_spot_only_with_precision_and_limits(
    fake: FakeHtx, make: Callable[..., CcxtSource]
) -> None:
    source = make()
    markets = {m.symbol: m for m in await source.load_markets()}
    assert markets == {
        "BTC/USDT": Market("htx", "BTC/USDT", "BTC", "USDT", 0.01, 0.000001, 0.0001, 5.0),
        "ETH/USDT": Market("htx", "ETH/USDT", "ETH", "USDT", 0.01, 0.0001, 0.001, 5.0),
        "TRX/USDT": Market("htx", "TRX/USDT", "TRX", "USDT", 0.000001, 0.01, 1.0, 1.0),
        # state offline: listed, not trading
        "LUNA/USDT": Market("htx", "LUNA/USDT", "LUNA", "USDT", 0.01, 0.000001, 0.0001, 5.0,
                            active=False),
    }  # fmt: skip
    # The public currency list and the spot symbols; no contract endpoints.
    assert [p for _, p, _ in fake.server.requests] == ["/v2/reference/currencies",
                                                       "/v1/common/symbols"]  # fmt: skip


async def test_candles_and_tickers_over_rest(
    fake: FakeHtx, make: Callable[..., CcxtSource]
) -> None:
    rows = [
        {"id": (T0 + i * H) // 1000, "open": 64000.1 + i, "close": 64050.25 + i,
         "low": 63900.5 + i, "high": 64100.0 + i, "amount": 12.125 + i, "vol": 770000.5,
         "count": 1000 + i}
        for i in range(5)
    ]  # fmt: skip
    fake.add_klines("btcusdt", "60min", rows)
    source = make()
    candles = await source.fetch_ohlcv("BTC/USDT", "1h", since=T0 + H, until=T0 + 3 * H, limit=500)
    assert candles == [
        Candle("htx", "BTC/USDT", "1h", r["id"] * 1000, r["open"], r["high"], r["low"],
               r["close"], r["amount"], closed=r["id"] * 1000 + H <= NOW)
        for r in rows[1:4]
    ]  # fmt: skip
    assert [c.closed for c in candles] == [True, True, False]
    assert fake.rest_calls("/market/history/candles") == [
        {"symbol": "btcusdt", "period": "60min", "from": str((T0 + H) // 1000), "size": "500"}
    ]

    for sid, close in (("btcusdt", 64010.5), ("ethusdt", 3400.25)):
        fake.set_ticker(sid, open=3300.0, high=64500.0, low=3200.0, close=close, amount=1234.567,
                        vol=79012345.67, count=1000, bid=3400.0, bidSize=1.5, ask=64010.6,
                        askSize=2.5)  # fmt: skip
    fake.set_ticker("trxusdt", open=0.11, high=0.12, low=0.1, close=0.115, amount=1e6, vol=1.1e5,
                    count=10, bid=0.1149, bidSize=100, ask=0.1151, askSize=200)  # fmt: skip
    tickers = await source.fetch_tickers(["BTC/USDT", "ETH/USDT"])
    # Entries carry no time (only the response does): our clock stands in.
    assert tickers == [
        Ticker("htx", "BTC/USDT", NOW, 64010.5, 3400.0, 64010.6, 3300.0, 64500.0, 3200.0,
               1234.567, 79012345.67),
        Ticker("htx", "ETH/USDT", NOW, 3400.25, 3400.0, 64010.6, 3300.0, 64500.0, 3200.0,
               1234.567, 79012345.67),
    ]  # fmt: skip


async def test_trades_and_book_by_rest_polling(
    fake: FakeHtx, make: Callable[..., CcxtSource]
) -> None:
    source = make(websocket=False)
    await push(fake, 3, base="64000", record_only=True)
    book_levels(fake)
    trades = Collector(source.watch_trades("BTC/USDT"))
    await trades.wait_for(lambda got: len(got) >= 4)
    await push(fake, 2, base="64100", record_only=True)
    await trades.wait_for(lambda got: len(got) >= 7)
    await trades.stop()
    assert trades.items == expected_trades(fake)
    # The newest groups every time, no time filter: the tape drops what it handed out.
    calls = fake.rest_calls("/market/history/trade")
    assert len(calls) >= 2
    assert all(q == {"size": "1000", "symbol": "btcusdt"} for q in calls)

    books = Collector(source.watch_order_book("BTC/USDT"))
    await books.wait_for(lambda got: len(got) >= 1)
    await books.stop()
    assert books.items[0] == expected_book(fake, fake.now, 1000)  # tick ts, version
    assert fake.rest_calls("/market/depth")[0] == {
        "type": "step0",
        "depth": "20",
        "symbol": "btcusdt",
    }
    assert fake.server.ws_connects == 0


# -- websocket trades ------------------------------------------------------------------


async def test_websocket_trades_gzipped_with_pings_answered(
    fake: FakeHtx, make: Callable[..., CcxtSource]
) -> None:
    trades = Collector(make().watch_trades("BTC/USDT"))
    await fake.wait_subscribed(TRADES)
    await push(fake, 2, base="64000")
    await fake.ping()
    await fake.wait_pongs(1)
    await push(fake, 2, base="64100")
    await trades.wait_for(lambda got: len(got) >= 6)
    await trades.stop()
    # One message can carry several trades of one order, all in the same millisecond.
    assert trades.items == expected_trades(fake)
    assert fake.pongs == [T0 + 14]  # the ping's own number back


async def test_dropped_websocket_reconnects_and_backfills_the_gap(
    fake: FakeHtx, make: Callable[..., CcxtSource], registry: CollectorRegistry
) -> None:
    """HTX names each trade twice; REST and the websocket must agree on the name
    (the documented trade id), or every backfilled trade would come twice."""
    trades = Collector(make().watch_trades("BTC/USDT"))
    await fake.wait_subscribed(TRADES)
    await push(fake, 3, base="64000")
    await trades.wait_for(lambda got: len(got) >= 4)

    await fake.drop_websockets()
    await push(fake, 4, base="64100", record_only=True)  # 6 trades nobody hears of
    await fake.wait_subscribed(TRADES, times=2)
    await push(fake, 2, base="64200")
    await trades.wait_for(lambda got: len(got) >= 13)
    await push(fake, 1, base="64300")  # the stream goes on
    await trades.wait_for(lambda got: len(got) >= 14)
    await trades.stop()

    assert trades.items == expected_trades(fake)  # each once, in order
    assert fake.rest_calls("/market/history/trade") == [{"size": "1000", "symbol": "btcusdt"}]
    assert sample(registry, "cryptodesk_exchange_ws_reconnects_total", stream="trades") >= 1
    assert sample(registry, "cryptodesk_exchange_trades_backfilled_total") == 6


async def test_malformed_payloads_are_counted_and_skipped(
    fake: FakeHtx, make: Callable[..., CcxtSource], registry: CollectorRegistry
) -> None:
    trades = Collector(make().watch_trades("BTC/USDT"))
    await fake.wait_subscribed(TRADES)
    good = {"id": 1, "ts": T0, "tradeId": 7, "amount": 0.5, "price": 100.0, "direction": "buy"}

    def detail(*data: dict[str, Any]) -> dict[str, Any]:
        return {"ch": TRADES, "ts": T0, "tick": {"id": 1, "ts": T0, "data": list(data)}}

    for payload in [
        b"not gzip",  # a frame ccxt cannot even unpack
        gzip.compress(b"{not json"),
        detail({**good, "tradeId": 8, "price": "abc"}),  # ccxt's parser fails on it
        detail({**good, "tradeId": 9, "direction": "sideways"}),  # parsed, no valid side
        detail({**good, "tradeId": 10, "ts": None}),
    ]:
        await fake.send(TRADES, payload)
    await push(fake, 2, base="64000")
    await trades.wait_for(lambda got: len(got) >= 3)
    await trades.stop()
    assert trades.items == expected_trades(fake)
    bad = "cryptodesk_exchange_bad_payloads_total"
    assert sample(registry, bad, endpoint="ws") == 2
    assert sample(registry, bad, endpoint=f"ws:{TRADES}") == 1
    assert sample(registry, bad, endpoint="watch_trades") == 2


# -- websocket order book ---------------------------------------------------------------


async def test_mbp_book_from_a_req_snapshot_rebuilt_after_a_sequence_gap(
    fake: FakeHtx, make: Callable[..., CcxtSource], registry: CollectorRegistry
) -> None:
    book_levels(fake)
    books = Collector(make().watch_order_book("BTC/USDT"))
    await fake.wait_subscribed(MBP)
    # ccxt needs an update buffered before the snapshot it asks for (or asks again).
    fake.now += 100
    await fake.push_mbp("btcusdt", [("64000.5", "9")], [])
    await books.wait_for(lambda got: len(got) >= 1)
    assert books.items[0] == expected_book(fake, NOW, 1003)  # the snapshot has no time

    fake.now += 100
    await fake.push_mbp("btcusdt", [("63999.5", "0")], [("64001.5", "3")])
    await books.wait_for(lambda got: got[-1].sequence == 1006)
    assert books.items[-1] == expected_book(fake, fake.now, 1006)

    # Update 1009 is never sent: the next one's prevSeqNum (1009) skips it.
    fake.now += 100
    await fake.push_mbp("btcusdt", [("64000.75", "1")], [], lost=([("63998.5", "0")], []))
    await fake.wait_subscribed(MBP, times=2)  # unsubscribed and subscribed anew
    fake.now += 100
    await fake.push_mbp("btcusdt", [("63990.5", "8")], [("64002.5", "0")])
    last = fake.books["btcusdt"].seq_num
    await books.wait_for(lambda got: got[-1].sequence == last)
    await books.stop()
    assert books.items[-1] == expected_book(fake, NOW, last)  # a new snapshot, no time
    assert [b.sequence for b in books.items] == [1003, 1006, last]  # nothing from the gap
    assert sample(registry, "cryptodesk_exchange_book_resyncs_total", symbol="BTC/USDT") == 1
    assert sample(registry, "cryptodesk_exchange_bad_payloads_total", endpoint=f"ws:{MBP}") == 0
    reqs = [p for _, p, _ in fake.server.requests if p.startswith("/market")]
    assert reqs == []  # snapshots come over the websocket
