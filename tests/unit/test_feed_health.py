"""An exchange feed in /readyz: up with the age of its newest event, down with the
reason when it fails or falls silent, restarted with backoff while the rest runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from cryptodesk.adapters.bus.memory import MemoryBus
from cryptodesk.adapters.cache.memory import MemoryCache
from cryptodesk.api.app import AppSwitch, create_health_app
from cryptodesk.domain.market import Market, OrderBook, Trade
from cryptodesk.observability.health import HealthRegistry
from cryptodesk.observability.metrics import Metrics
from cryptodesk.services.feed_status import FEED, FeedStatus
from cryptodesk.services.ingest import FeedDown, MarketIngest

T0 = 1_714_521_600_000


class FlakySource:
    """Fails ``failures`` times in load_markets, then streams ``trades`` trades and idles."""

    exchange = "flaky"

    def __init__(self, failures: int, trades: int = 3) -> None:
        self.failures = failures
        self.trades = trades
        self.attempts = 0
        self.attempted = asyncio.Event()
        self.idle = asyncio.Event()
        self.closed = asyncio.Event()

    async def load_markets(self) -> list[Market]:
        self.attempts += 1
        self.attempted.set()
        if self.attempts <= self.failures:
            raise ConnectionError(f"refused #{self.attempts}")
        return [Market("flaky", "BTC/USDT", "BTC", "USDT", 0.01, 0.0001)]

    async def watch_trades(self, symbol: str) -> AsyncIterator[list[Trade]]:
        for i in range(self.trades):
            yield [Trade("flaky", symbol, str(i), T0 + i, 10.0, 1.0, "buy")]
        self.idle.set()
        await self.closed.wait()  # a live feed: quiet, not finished, until closed

    async def watch_order_book(self, symbol: str) -> AsyncIterator[OrderBook]:
        if False:  # pragma: no cover - an async generator that yields nothing
            yield OrderBook("flaky", symbol, T0, (), (), 0)

    async def close(self) -> None:
        self.closed.set()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_feed_is_down_until_its_first_event_then_reports_its_age():
    clock = Clock()
    source = FlakySource(failures=0)
    metrics = Metrics()
    ingest = MarketIngest(
        source, MemoryBus(), MemoryCache(), metrics, symbols=["BTC/USDT"],
        stale_after=30, clock=clock,
    )  # fmt: skip
    with pytest.raises(FeedDown, match="no event received yet"):
        await ingest.check()
    task = asyncio.create_task(ingest.run_forever())
    await asyncio.wait_for(source.idle.wait(), 5)
    clock.now += 2.5
    assert await ingest.check() == pytest.approx(2500)
    clock.now += 30
    with pytest.raises(FeedDown, match=r"stale: no event for 32s \(limit 30s\)"):
        await ingest.check()
    await ingest.close()
    await asyncio.wait_for(task, 5)


async def test_failing_feed_is_restarted_with_backoff_and_reported_down_meanwhile():
    source = FlakySource(failures=2)
    metrics = Metrics()
    health = HealthRegistry(metrics)
    ingest = MarketIngest(
        source, MemoryBus(), MemoryCache(), metrics, symbols=["BTC/USDT"],
        restart_initial=0.05, restart_cap=0.1,
    )  # fmt: skip
    health.register("feed:flaky", ingest.check, required=False)
    health.register("database", _ok)
    task = asyncio.create_task(ingest.run_forever())
    await asyncio.wait_for(source.attempted.wait(), 5)
    down = (await health.check_all())["feed:flaky"]
    assert not down.ok
    assert not down.required
    assert str(down.detail).startswith("FeedDown: failing: ConnectionError: refused #")
    assert str(down.detail).endswith("; no event yet")
    await asyncio.wait_for(source.idle.wait(), 5)
    up = (await health.check_all())["feed:flaky"]
    assert up.ok, up.detail
    assert source.attempts == 3
    failures = metrics.registry.get_sample_value(
        "cryptodesk_feed_failures_total", {"exchange": "flaky"}
    )
    assert failures == 2
    await ingest.close()
    await asyncio.wait_for(task, 5)  # close ends the restart loop


async def test_close_during_backoff_ends_the_feed_promptly():
    source = FlakySource(failures=100)
    ingest = MarketIngest(
        source, MemoryBus(), MemoryCache(), Metrics(), symbols=["BTC/USDT"],
        restart_initial=60, restart_cap=60,
    )  # fmt: skip
    task = asyncio.create_task(ingest.run_forever())
    await asyncio.wait_for(source.attempted.wait(), 5)
    await ingest.close()
    await asyncio.wait_for(task, 2)
    assert source.attempts == 1


async def _ok() -> None:
    return None


async def test_starting_app_answers_probes_and_503_problem_elsewhere():
    metrics = Metrics()
    health = HealthRegistry(metrics)
    health.set_status("startup", False, "connecting to the database, cache and bus")
    health.set_status("database", False, "waiting: CRYPTODESK_DATABASE_URL: cannot reach x")
    switch = AppSwitch(create_health_app(health, metrics))
    transport = httpx.ASGITransport(app=switch)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        errors = {c["name"]: c["error"] for c in ready.json()["components"]}
        assert errors["database"].startswith("waiting: CRYPTODESK_DATABASE_URL")
        api = await client.get("/api/v1/candles")
        assert api.status_code == 503
        assert api.headers["content-type"] == "application/problem+json"
        assert api.headers["retry-after"] == "5"
        assert api.json()["type"].endswith("/service-unavailable")
        health.forget("startup")
        health.forget("database")
        assert (await client.get("/readyz")).status_code == 200
        # Once ready the runtime swaps in the real app.
        switch.app = create_health_app(HealthRegistry(metrics), metrics, version="9")
        assert (await client.get("/readyz")).json()["components"] == []


async def test_a_check_may_report_its_own_latency():
    health = HealthRegistry(Metrics())

    async def feed() -> float:
        return 1234.5

    health.register("feed:x", feed)
    assert (await health.check_all())["feed:x"].latency_ms == 1234.5


class GatedSource(FlakySource):
    """Fails once, then waits for ``gate`` before it connects again."""

    def __init__(self) -> None:
        super().__init__(failures=1, trades=YIELDED)
        self.gate = asyncio.Event()

    async def load_markets(self) -> list[Market]:
        if self.attempts >= 1:
            await self.gate.wait()
        return await super().load_markets()


YIELDED = 3


class CountingStatus(FeedStatus):
    def __init__(self) -> None:
        super().__init__(clock=lambda: T0)
        self.successes = 0

    def succeeded(self, exchange: str, channel: str) -> None:
        self.successes += 1
        super().succeeded(exchange, channel)


async def test_ingest_reports_failures_and_recovery_to_the_feed_status():
    status = CountingStatus()
    clock = Clock()
    source = GatedSource()
    ingest = MarketIngest(
        source, MemoryBus(), MemoryCache(), Metrics(), symbols=["BTC/USDT"],
        restart_initial=0.01, restart_cap=0.01, clock=clock, status=status,
    )  # fmt: skip
    task = asyncio.create_task(ingest.run_forever())
    # The failure is recorded before the feed next suspends, i.e. before this resumes.
    await asyncio.wait_for(source.attempted.wait(), 5)
    (state,) = status.channels("flaky")
    assert (state.channel, state.failing, state.error) == (
        FEED,
        True,
        "ConnectionError: refused #1",
    )
    assert status.failing("flaky", "orderbook")
    with pytest.raises(FeedDown, match=r"^failing: ConnectionError: refused #1; no event yet$"):
        await ingest.check()
    source.gate.set()
    await asyncio.wait_for(source.idle.wait(), 5)
    # Recovered on the first event; the other two, within a second, are not reported.
    assert status.successes == 1
    (state,) = status.channels("flaky")
    assert (state.failing, state.last_success_ms) == (False, T0)
    assert not status.failing("flaky", "orderbook")
    assert ingest.published_trades == YIELDED
    await ingest.close()
    await asyncio.wait_for(task, 5)


class DroppingSource(FlakySource):
    """Streams its trades, then the connection drops; reconnecting fails."""

    def __init__(self) -> None:
        super().__init__(failures=0)
        self.dropped = asyncio.Event()

    async def load_markets(self) -> list[Market]:
        if self.dropped.is_set():
            raise ConnectionError("refused")
        return await super().load_markets()

    async def watch_trades(self, symbol: str) -> AsyncIterator[list[Trade]]:
        yield [Trade("flaky", symbol, "1", T0, 10.0, 1.0, "buy")]
        self.dropped.set()
        raise ConnectionError("connection reset")


class NotifyingStatus(FeedStatus):
    def __init__(self) -> None:
        super().__init__(clock=lambda: T0)
        self.failure = asyncio.Event()

    def failed(self, exchange: str, channel: str, error: str) -> None:
        super().failed(exchange, channel, error)
        self.failure.set()


async def test_a_failing_feed_says_how_old_its_newest_event_is():
    clock = Clock()
    source = DroppingSource()
    status = NotifyingStatus()
    ingest = MarketIngest(
        source, MemoryBus(), MemoryCache(), Metrics(), symbols=["BTC/USDT"],
        restart_initial=60, restart_cap=60, clock=clock, status=status,
    )  # fmt: skip
    task = asyncio.create_task(ingest.run_forever())
    await asyncio.wait_for(status.failure.wait(), 5)
    assert status.channels("flaky")[0].error == "ConnectionError: connection reset"
    clock.now += 75
    with pytest.raises(FeedDown) as exc:
        await ingest.check()
    # The cause inside the per-symbol task group, not the group itself.
    assert str(exc.value) == "failing: ConnectionError: connection reset; last event 75s ago"
    await ingest.close()
    await asyncio.wait_for(task, 5)


async def test_symbols_the_exchange_does_not_list_are_reported_and_the_rest_streams():
    source = FlakySource(failures=0)
    bus = MemoryBus()
    ingest = MarketIngest(
        source, bus, MemoryCache(), Metrics(), symbols=["DOGE/EUR", "BTC/USDT", "XRP/JPY"],
        restart_initial=60, restart_cap=60,
    )  # fmt: skip
    task = asyncio.create_task(ingest.run_forever())
    await asyncio.wait_for(source.idle.wait(), 5)
    assert ingest.published_trades == 3  # BTC/USDT streams
    with pytest.raises(FeedDown, match=r"^flaky does not list DOGE/EUR, XRP/JPY; those are not"):
        await ingest.check()
    await ingest.close()
    await asyncio.wait_for(task, 5)


async def test_a_feed_whose_symbols_are_all_unlisted_is_failing():
    source = FlakySource(failures=0)
    ingest = MarketIngest(
        source, MemoryBus(), MemoryCache(), Metrics(), symbols=["DOGE/EUR"],
        restart_initial=60, restart_cap=60,
    )  # fmt: skip
    task = asyncio.create_task(ingest.run_forever())
    await asyncio.wait_for(source.attempted.wait(), 5)
    for _ in range(50):
        await asyncio.sleep(0.01)
        with pytest.raises(FeedDown) as down:
            await ingest.check()
        if "lists none" in str(down.value):
            break
    assert str(down.value) == "failing: FeedDown: flaky lists none of DOGE/EUR; no event yet"
    await ingest.close()
    await asyncio.wait_for(task, 5)
