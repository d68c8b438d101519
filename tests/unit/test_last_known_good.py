"""Last known good: while an exchange fails, the API answers 200 from the cache with
``stale: true`` and the data's age, ``/readyz`` names the failing feed or prefetch,
and no request ever reaches the exchange."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import httpx

from cryptodesk.adapters.bus.memory import MemoryBus
from cryptodesk.adapters.locks.memory import MemoryJobLock
from cryptodesk.domain import codec
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.jobs import JobRun
from cryptodesk.domain.market import Market, OrderBook, Ticker, Trade
from cryptodesk.observability.metrics import Metrics
from cryptodesk.services import cache_keys
from cryptodesk.services.feed_status import FEED, FeedStatus, Freshness, prefetch_channel
from cryptodesk.services.ingest import MarketIngest
from cryptodesk.services.market_queries import MarketQueries
from cryptodesk.services.prefetch import PrefetchScheduler
from tests.unit._fakes import MINUTE, T0, DictCache, ListStore, make_candle, seed_series
from tests.unit._fetchers import FakeFetcher
from tests.unit.test_api_market import Clocked

Caller = asyncio.Task[object] | None


class DownSource:
    """The ``sim`` exchange's stream: fails while ``down``; once up, one trade, then
    quiet until closed. Records the task of every call."""

    exchange = "sim"

    def __init__(self) -> None:
        self.down = True
        self.callers: list[Caller] = []
        self.attempted = asyncio.Event()
        self.streamed = asyncio.Event()
        self.closed = asyncio.Event()

    async def load_markets(self) -> list[Market]:
        self.callers.append(asyncio.current_task())
        self.attempted.set()
        if self.down:
            raise ConnectionError("exchange unreachable")
        return [Market("sim", "BTC/USDT", "BTC", "USDT", 0.01, 0.0001)]

    async def watch_trades(self, symbol: str) -> AsyncIterator[list[Trade]]:
        self.callers.append(asyncio.current_task())
        yield [Trade("sim", symbol, "1", T0, 100.0, 1.0, "buy")]
        self.streamed.set()
        await self.closed.wait()

    async def watch_order_book(self, symbol: str) -> AsyncIterator[OrderBook]:
        self.callers.append(asyncio.current_task())
        await self.closed.wait()
        return
        yield

    async def close(self) -> None:
        self.closed.set()


@dataclass
class DownFetcher(FakeFetcher):
    """The ``kraken`` REST API: markets and tickers fail while ``down``."""

    down: bool = True
    callers: list[Caller] = field(default_factory=list)

    async def load_markets(self) -> list[Market]:
        self.callers.append(asyncio.current_task())
        if self.down:
            raise ConnectionError("HTTP 503 Service Unavailable")
        return await super().load_markets()

    async def fetch_tickers(self, symbols: object) -> list[Ticker]:
        self.callers.append(asyncio.current_task())
        if self.down:
            raise ConnectionError("HTTP 503 Service Unavailable")
        return await super().fetch_tickers(symbols)  # type: ignore[arg-type]


class Runs:
    async def record(self, run: JobRun) -> None:
        return None


async def put(h: Clocked, *values: Ticker | OrderBook) -> None:
    for v in values:
        if isinstance(v, Ticker):
            key, raw = cache_keys.ticker(v.exchange, v.symbol), codec.encode_ticker(v)
        else:
            key, raw = cache_keys.book(v.exchange, v.symbol), codec.encode_book(v)
        await h.cache.set(key, raw)


async def prefetch(jobs: PrefetchScheduler, name: str) -> str:
    """One run in a task of its own, as the scheduler runs it: its exchange calls are
    told apart from the requests this test's task serves."""
    return await asyncio.create_task(jobs.run_job(name))


def summary(body: dict) -> list[tuple[str, bool, float]]:
    return [(t["exchange"], t["stale"], t["age_seconds"]) for t in body["tickers"]]


async def test_upstream_down_serves_last_known_good_then_recovers_then_ages():
    h = Clocked(now=T0 + 2_000)
    # What compute and an earlier prefetch left in the cache and the store.
    await put(
        h,
        Ticker("sim", "BTC/USDT", T0, 100.0),
        Ticker("kraken", "ETH/USDT", T0 - 1_000, 3000.0),
        OrderBook("sim", "ETH/USDT", T0 - 500, ((3000.0, 1.0),), ((3001.0, 1.0),), 9),
    )
    # Three 1m candles, the newest closed at T0.
    candles = [replace(make_candle(i), open_time=T0 + (i - 3) * MINUTE) for i in range(3)]
    await seed_series(h.cache, h.store, candles, recent=h.recent)

    source, fetcher = DownSource(), DownFetcher(exchange="kraken", now=T0 + 1_500)
    ingest = MarketIngest(
        source, MemoryBus(), h.cache, h.metrics, symbols=["BTC/USDT"],
        restart_initial=0.01, restart_cap=0.02, status=h.status,
    )  # fmt: skip
    jobs = PrefetchScheduler(
        [fetcher], h.store, h.cache, Runs(), MemoryJobLock(),
        symbols=["ETH/USDT"], intervals=[Interval.parse("1m")], status=h.status,
    )  # fmt: skip
    # As runtime wires them.
    h.health.register("feed:sim", ingest.check, required=False)
    h.health.register("prefetch:kraken", h.status.prefetch_check("kraken"), required=False)
    feed = asyncio.create_task(ingest.run_forever())
    try:
        await asyncio.wait_for(source.attempted.wait(), 5)
        assert await prefetch(jobs, "tickers:kraken") == "failed"

        # ---- down: 200 with the cached values, stale, aged from exchange time
        async with h.client() as client:
            tickers = await client.get("/api/v1/tickers")
            book = await client.get(
                "/api/v1/orderbook", params={"exchange": "sim", "symbol": "ETH/USDT"}
            )
            page = await client.get(
                "/api/v1/candles",
                params={"exchange": "sim", "symbol": "BTC/USDT", "interval": "1m"},
            )
            ready = await client.get("/readyz")
        assert tickers.status_code == 200
        assert summary(tickers.json()) == [("sim", True, 2.0), ("kraken", True, 3.0)]
        assert [t["last"] for t in tickers.json()["tickers"]] == ["100", "3000"]
        assert freshness_headers(tickers) == ("3", "true")
        assert book.status_code == 200
        assert (book.json()["stale"], book.json()["age_seconds"]) == (True, 2.5)
        assert freshness_headers(book) == ("2", "true")
        assert page.status_code == 200
        assert len(page.json()["candles"]) == 3
        assert (page.json()["stale"], page.json()["age_seconds"]) == (True, 2.0)
        assert ready.status_code == 200  # feeds are optional: degraded, not unready
        assert ready.json()["status"] == "degraded"
        errors = {c["name"]: c["error"] for c in ready.json()["components"]}
        assert errors["feed:sim"].startswith(
            "FeedDown: failing: ConnectionError: exchange unreachable; no event yet"
        )
        assert errors["prefetch:kraken"] == (
            "UpstreamDown: prefetch:tickers failing for 0s: "
            "ConnectionError: HTTP 503 Service Unavailable"
        )

        # ---- recovered: the same values, no longer stale
        source.down = False
        await asyncio.wait_for(source.streamed.wait(), 5)
        fetcher.down = False
        assert await prefetch(jobs, "tickers:kraken") == "ok"
        async with h.client() as client:
            tickers = await client.get("/api/v1/tickers")
            ready = await client.get("/readyz")
        assert summary(tickers.json()) == [("sim", False, 2.0), ("kraken", False, 0.5)]
        assert freshness_headers(tickers) == ("2", "false")
        assert ready.json()["status"] == "ready", ready.text

        # ---- too old: stale by age alone
        h.now += 60_000
        async with h.client() as client:
            tickers = await client.get("/api/v1/tickers")
        assert summary(tickers.json()) == [("sim", True, 62.0), ("kraken", True, 60.5)]
        assert freshness_headers(tickers) == ("62", "true")
    finally:
        await ingest.close()
        await asyncio.wait_for(feed, 5)

    # The exchanges were called, but never from the task that served a request.
    assert source.callers
    assert fetcher.callers
    this_task = asyncio.current_task()
    assert this_task not in source.callers
    assert this_task not in fetcher.callers


async def test_no_data_yet_is_404_even_while_the_feed_fails():
    h = Clocked(now=T0)
    h.status.failed("sim", FEED, "ConnectionError: refused")
    async with h.client() as client:
        book = await client.get(
            "/api/v1/orderbook", params={"exchange": "sim", "symbol": "ETH/USDT"}
        )
        tickers = await client.get("/api/v1/tickers")
    assert book.status_code == 404
    assert tickers.json() == {"tickers": []}
    assert "cryptodesk-data-age" not in tickers.headers
    assert tickers.headers["cryptodesk-data-stale"] == "false"


async def test_markets_are_stale_while_their_upstream_fails():
    h = Clocked(now=T0)
    for ex in ("sim", "kraken"):
        m = Market(ex, "BTC/USDT", "BTC", "USDT", 0.01, 0.0001)
        await h.cache.set(cache_keys.markets(ex), codec.encode_markets([m]))
    h.status.failed("kraken", prefetch_channel("markets"), "HTTP 502")
    async with h.client() as client:
        r = await client.get("/api/v1/markets")
    assert [(m["exchange"], m["stale"], m["age_seconds"]) for m in r.json()["markets"]] == [
        ("sim", False, None),
        ("kraken", True, None),
    ]
    assert "cryptodesk-data-age" not in r.headers
    assert r.headers["cryptodesk-data-stale"] == "true"


# ---- candle series freshness in MarketQueries ------------------------------------------

SERIES = [make_candle(i) for i in range(200)]
CLOSED_AT = SERIES[-1].open_time + MINUTE  # the newest candle's close


def queries(
    now: int, *, recent: int = 1000, status: FeedStatus | None = None
) -> tuple[MarketQueries, DictCache, ListStore]:
    cache, store = DictCache(), ListStore()
    q = MarketQueries(
        cache, store, Metrics(),
        exchanges=["sim"], symbols=["BTC/USDT", "ETH/USDT"], intervals=["1m"],
        cache_recent_candles=recent, status=status, stale_after=60, clock=lambda: now,
    )  # fmt: skip
    return q, cache, store


async def test_every_page_carries_the_freshness_of_the_series():
    q, cache, store = queries(CLOSED_AT + 5_000)
    await seed_series(cache, store, SERIES, recent=1000)
    newest = await q.candles("sim", "BTC/USDT", "1m", limit=10)
    older = await q.candles("sim", "BTC/USDT", "1m", end=SERIES[50].open_time, limit=10)
    forward = await q.candles("sim", "BTC/USDT", "1m", start=SERIES[0].open_time, limit=10)
    assert newest.freshness == older.freshness == forward.freshness == Freshness(False, 5_000)
    assert store.candle_queries == 0  # all from the cache, the series' newest included
    with_open = await q.candles("sim", "BTC/USDT", "1m", limit=10, include_open=True)
    assert with_open.freshness == Freshness(False, 5_000)


async def test_without_the_cache_the_store_tells_the_newest_candle():
    q, cache, store = queries(CLOSED_AT + 5_000, recent=0)
    await seed_series(cache, store, SERIES, recent=0)
    page = await q.candles("sim", "BTC/USDT", "1m", end=SERIES[50].open_time, limit=10)
    assert page.freshness == Freshness(False, 5_000)
    assert store.candle_queries == 2  # the page, then the newest candle


async def test_a_series_is_stale_one_interval_plus_the_limit_after_its_newest_close():
    for age, stale in ((MINUTE + 60_000, False), (MINUTE + 60_001, True)):
        q, cache, store = queries(CLOSED_AT + age)
        await seed_series(cache, store, SERIES, recent=1000)
        page = await q.candles("sim", "BTC/USDT", "1m", limit=5)
        assert page.freshness == Freshness(stale, age)


async def test_an_empty_series_has_no_age_and_is_stale_only_while_upstream_fails():
    status = FeedStatus(clock=lambda: T0)
    q, *_ = queries(T0, status=status)
    assert (await q.candles("sim", "ETH/USDT", "1m")).freshness == Freshness(False, None)
    status.failed("sim", FEED, "ConnectionError: refused")
    assert (await q.candles("sim", "ETH/USDT", "1m")).freshness == Freshness(True, None)
    # A candle prefetch that works keeps the series fresh while the stream is down.
    status.succeeded("sim", prefetch_channel("candles"))
    assert (await q.candles("sim", "ETH/USDT", "1m")).freshness == Freshness(False, None)


def freshness_headers(response: httpx.Response) -> tuple[str, str]:
    return response.headers["cryptodesk-data-age"], response.headers["cryptodesk-data-stale"]
