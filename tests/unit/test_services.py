"""The compute, book and ingest services on the real embedded adapters."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from cryptodesk.adapters.bus.memory import MemoryBus
from cryptodesk.adapters.cache.memory import MemoryCache
from cryptodesk.adapters.db import migrate
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.sql_store import SqlMarketStore
from cryptodesk.domain import codec
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.market import Candle, Market, OrderBook, Trade, stream_key
from cryptodesk.observability.health import HealthRegistry
from cryptodesk.observability.metrics import Metrics
from cryptodesk.services import cache_keys
from cryptodesk.services.book_service import BookService
from cryptodesk.services.candle_service import CandleService
from cryptodesk.services.ingest import MarketIngest
from cryptodesk.services.retry import retry_forever

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z, a minute boundary
M1 = Interval.parse("1m")
M5 = Interval.parse("5m")


def tr(i: int, ts: int, price: float, amount: float = 1.0, symbol: str = "BTC/USDT") -> Trade:
    return Trade("sim", symbol, str(i), ts, price, amount, "buy")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlMarketStore]:
    url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    await asyncio.to_thread(migrate.upgrade, url)
    s = SqlMarketStore(create_engine(url))
    yield s
    await s.close()


class Env:
    def __init__(self, store: SqlMarketStore) -> None:
        self.store = store
        self.bus = MemoryBus()
        self.cache = MemoryCache()
        self.metrics = Metrics()
        self.health = HealthRegistry(self.metrics)

    def service(self, store: object | None = None) -> CandleService:
        return CandleService(
            self.bus, store or self.store, self.cache, self.metrics, self.health,  # type: ignore[arg-type]
            exchanges=["sim"], symbols=["BTC/USDT", "ETH/USDT"], intervals=[M1, M5],
            grace_ms=1000, batch_size=100, recent_candles=50,
        )  # fmt: skip

    async def publish(self, *trades: Trade) -> None:
        await self.bus.publish_many(
            "trades", [(stream_key(t.exchange, t.symbol), codec.encode_trade(t)) for t in trades]
        )

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


async def drain(service: CandleService) -> None:
    stop = asyncio.Event()
    stop.set()
    await asyncio.wait_for(service.run(stop), 10)


async def test_trades_become_stored_candles_cache_tickers_and_bus_events(store):
    env = Env(store)
    candles_out = env.bus.consumer("candles", group="test")
    dead_out = env.bus.consumer("deadletter", group="test")
    book = OrderBook("sim", "BTC/USDT", T0, ((99.0, 1.0),), ((101.0, 1.0),), 1)
    await env.cache.set(cache_keys.book("sim", "BTC/USDT"), codec.encode_book(book))
    await env.publish(
        tr(1, T0 + 1_000, 100.0, 2.0),
        tr(2, T0 + 30_000, 105.0),
        tr(3, T0 + 59_000, 95.0),
        tr(4, T0 + 61_500, 102.0),  # watermark: the first minute closes at T0+61s
        tr(4, T0 + 61_500, 102.0),  # a redelivered duplicate
    )
    await env.bus.publish("trades", "sim:BTC/USDT", b"not json")
    await env.publish(Trade("other", "BTC/USDT", "9", T0, 1.0, 1.0, "buy"))
    service = env.service()
    await drain(service)

    stored = await store.get_candles("sim", "BTC/USDT", "1m")
    assert stored == [Candle("sim", "BTC/USDT", "1m", T0, 100, 105, 95, 95, 4, 400, 3, True)]
    assert await store.count_trades() == 4
    assert env.sample("cryptodesk_trades_duplicate_total", exchange="sim") == 1
    assert env.sample("cryptodesk_candles_finalized_total", exchange="sim", interval="1m") == 1

    open_1m = codec.decode_candle(
        await env.cache.get(cache_keys.open_candle("sim", "BTC/USDT", "1m"))
    )
    assert (open_1m.open_time, open_1m.close, open_1m.closed) == (T0 + 60_000, 102.0, False)
    recent = await env.cache.list_range(cache_keys.recent_candles("sim", "BTC/USDT", "1m"))
    assert [codec.decode_candle(r) for r in recent] == stored
    ticker = codec.decode_ticker(await env.cache.get(cache_keys.ticker("sim", "BTC/USDT")))
    assert (ticker.last, ticker.bid, ticker.ask) == (102.0, 99.0, 101.0)
    assert (ticker.open_24h, ticker.high_24h, ticker.low_24h) == (100.0, 105.0, 95.0)
    assert ticker.volume_24h == 5.0

    events = await candles_out.fetch(10, timeout=0.1)
    assert [codec.decode_candle(m.value) for m in events] == stored
    dead = await dead_out.fetch(10, timeout=0.1)
    assert len(dead) == 1
    letter = msgspec.json.decode(dead[0].value)
    assert letter["topic"] == "trades"
    assert letter["key"] == "sim:BTC/USDT"
    assert base64.b64decode(letter["value_b64"]) == b"not json"
    assert letter["reason"].startswith("undecodable trade")
    assert env.sample("cryptodesk_dead_letters_total", topic="trades") == 1

    # A trade for the finalized minute is late: stored, counted, never in the candle.
    await env.publish(tr(5, T0 + 10_000, 500.0))
    await drain(service)
    assert env.sample("cryptodesk_late_trades_total", exchange="sim", symbol="BTC/USDT") == 1
    assert await store.count_trades() == 5
    assert await store.get_candles("sim", "BTC/USDT", "1m") == stored


class FlakyStore:
    """Fails the first writes, then delegates: the pipeline must retry, not drop."""

    def __init__(self, inner: SqlMarketStore, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def insert_trades(self, trades):  # type: ignore[no-untyped-def]
        if self.failures > 0:
            self.failures -= 1
            raise OSError("disk unavailable")
        return await self.inner.insert_trades(trades)


async def test_store_failures_are_retried_and_reported_in_health(store):
    env = Env(store)
    flaky = FlakyStore(store, failures=2)
    seen: list[bool] = []
    original = env.health.set_status

    def record(name: str, ok: bool, detail: str = "") -> None:
        seen.append(ok)
        original(name, ok, detail)

    env.health.set_status = record  # type: ignore[method-assign]
    await env.publish(tr(1, T0, 100.0), tr(2, T0 + 70_000, 101.0))
    await drain(env.service(flaky))
    assert await store.count_trades() == 2
    assert await store.count_candles() == 1
    assert False in seen
    assert seen[-1] is True


async def test_recover_rebuilds_missing_candles_and_primes_the_cache(store):
    env = Env(store)
    trades = [tr(i, T0 + i * 20_000, 100.0 + i) for i in range(1, 20)]
    await store.insert_trades(trades)
    first = Candle("sim", "BTC/USDT", "1m", T0, 101, 102, 101, 102, 2, 203, 2, True)
    await store.upsert_candles([first])  # a crash lost everything finalized after it

    service = env.service()
    await service.recover()
    rebuilt = await store.get_candles("sim", "BTC/USDT", "1m")
    assert rebuilt[0] == first
    assert [c.open_time for c in rebuilt] == [T0 + i * 60_000 for i in range(len(rebuilt))]
    # Watermark T0+380 s, grace 1 s: minutes 0..5 are final, trades 18 and 19 are open.
    assert len(rebuilt) == 6
    assert sum(c.trades for c in rebuilt) == 17
    cached = await env.cache.list_range(cache_keys.recent_candles("sim", "BTC/USDT", "1m"))
    assert [codec.decode_candle(r) for r in cached] == rebuilt
    assert await env.cache.get(cache_keys.open_candle("sim", "BTC/USDT", "1m")) is not None

    # Replaying the same stored trades again changes nothing.
    again = env.service()
    await again.recover()
    assert await store.get_candles("sim", "BTC/USDT", "1m") == rebuilt


async def test_book_service_keeps_the_newest_book_per_market():
    bus, cache, metrics = MemoryBus(), MemoryCache(), Metrics()
    books = [
        OrderBook("sim", "ETH/USDT", T0 + i, ((10.0 + i, 1.0),), ((20.0 + i, 1.0),), i)
        for i in range(3)
    ]
    await bus.publish_many(
        "orderbooks", [("sim:ETH/USDT", codec.encode_book(b)) for b in reversed(books)]
    )
    await bus.publish("orderbooks", "sim:ETH/USDT", b"{}")
    dead_out = bus.consumer("deadletter", group="test")
    stop = asyncio.Event()
    stop.set()
    await asyncio.wait_for(BookService(bus, cache, metrics).run(stop), 5)
    assert [m.key for m in await dead_out.fetch(10, timeout=0.1)] == ["sim:ETH/USDT"]
    cached = codec.decode_book(await cache.get(cache_keys.book("sim", "ETH/USDT")))
    assert cached == books[-1]


class PerSymbolSource:
    """A source without ``watch_all``: ingest must run one task per stream."""

    exchange = "fake"

    def __init__(self) -> None:
        self.closed = False

    async def load_markets(self) -> list[Market]:
        return [
            Market("fake", "BTC/USDT", "BTC", "USDT", 0.01, 0.0001),
            Market("fake", "ETH/USDT", "ETH", "USDT", 0.01, 0.0001),
        ]

    async def watch_trades(self, symbol: str) -> AsyncIterator[list[Trade]]:
        for i in range(3):
            yield [Trade("fake", symbol, f"{symbol}-{i}", T0 + i, 10.0, 1.0, "sell")]

    async def watch_order_book(self, symbol: str) -> AsyncIterator[OrderBook]:
        yield OrderBook("fake", symbol, T0, ((9.0, 1.0),), ((11.0, 1.0),), 1)

    async def close(self) -> None:
        self.closed = True


async def test_ingest_publishes_every_stream_of_a_per_symbol_source():
    bus, cache, metrics = MemoryBus(), MemoryCache(), Metrics()
    trades_c = bus.consumer("trades", group="t")
    books_c = bus.consumer("orderbooks", group="b")
    source = PerSymbolSource()
    ingest = MarketIngest(source, bus, cache, metrics, symbols=["BTC/USDT", "ETH/USDT"])
    await asyncio.wait_for(ingest.run(), 5)
    await ingest.close()
    assert source.closed
    trades = [codec.decode_trade(m.value) for m in await trades_c.fetch(100, timeout=0.1)]
    assert sorted(t.id for t in trades) == sorted(
        f"{s}-{i}" for s in ("BTC/USDT", "ETH/USDT") for i in range(3)
    )
    assert {m.key for m in await books_c.fetch(100, timeout=0.1)} == {
        "fake:BTC/USDT", "fake:ETH/USDT",
    }  # fmt: skip
    assert ingest.published_trades == 6
    markets = codec.decode_markets(await cache.get(cache_keys.markets("fake")))
    assert [m.symbol for m in markets] == ["BTC/USDT", "ETH/USDT"]


async def test_retry_forever_backs_off_until_success():
    calls = 0
    failures: list[str] = []
    recovered: list[bool] = []

    async def step() -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError(f"boom {calls}")
        return 42

    result = await retry_forever(
        step, what="test", on_failure=failures.append,
        on_success=lambda: recovered.append(True), initial=0.001, cap=0.002,
    )  # fmt: skip
    assert result == 42
    assert failures == ["test: boom 1", "test: boom 2"]
    assert recovered == [True]


async def test_retry_forever_stops_on_cancel():
    async def never() -> None:
        raise RuntimeError("down")

    task = asyncio.create_task(retry_forever(never, what="x", initial=0.01))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


class DownCache(MemoryCache):
    """A cache whose writes fail while ``down``."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def push_capped(self, key: str, values, *, maxlen: int) -> None:  # type: ignore[no-untyped-def]
        if self.down:
            raise ConnectionError("cache unreachable")
        await super().push_capped(key, values, maxlen=maxlen)


async def test_recent_candles_lost_while_the_cache_was_down_are_rewritten_from_the_store(store):
    env = Env(store)
    env.cache = DownCache()
    service = env.service()
    key = cache_keys.recent_candles("sim", "BTC/USDT", "1m")
    await env.publish(tr(1, T0, 100.0), tr(2, T0 + 61_500, 101.0))
    await drain(service)
    env.cache.down = True
    await env.publish(tr(3, T0 + 122_000, 102.0))  # closes minute 1: the push fails
    await drain(service)
    assert len(await env.cache.list_range(key)) == 1
    env.cache.down = False
    await env.publish(tr(4, T0 + 183_000, 103.0))  # closes minute 2
    await drain(service)
    stored = await store.get_candles("sim", "BTC/USDT", "1m")
    assert [c.open_time for c in stored] == [T0, T0 + 60_000, T0 + 120_000]
    cached = [codec.decode_candle(r) for r in await env.cache.list_range(key)]
    assert cached == stored  # no gap where the cache was down


class FailingBus(MemoryBus):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def publish_many(self, topic, items):  # type: ignore[no-untyped-def]
        if topic == "deadletter" and self.failures > 0:
            self.failures -= 1
            raise ConnectionError("bus unreachable")
        await super().publish_many(topic, items)


async def test_dead_letters_survive_a_failed_publish():
    from cryptodesk.adapters.bus.base import Message
    from cryptodesk.services.dead_letter import DeadLetters

    bus = FailingBus(failures=1)
    out = bus.consumer("deadletter", group="t")
    dead = DeadLetters(bus, Metrics())
    dead.add(Message("trades", "sim:BTC/USDT", b"junk", 1), "undecodable")
    with pytest.raises(ConnectionError):
        await dead.flush()
    await dead.flush()
    letters = await out.fetch(10, timeout=0.1)
    assert [m.key for m in letters] == ["sim:BTC/USDT"]
