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
    assert "ConnectionError: refused #1" in str(down.detail)
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
