"""The exchange guard with its bucket shared through a real Redis, and in front of
a real ccxt exchange talking to a local fake of binance's REST API.

Sleeps go through a fake clock that returns at once and records each wait;
the shared bucket runs on Redis's clock, so the slots it hands out are checked
exactly, not by timing.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from typing import Any

import ccxt.async_support as ccxt
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from cryptodesk.adapters.exchanges.breaker import BreakerState, CircuitOpenError
from cryptodesk.adapters.exchanges.guard import ExchangeGuard, UpstreamHTTPError
from tests.fakes.http import FakeServer

SERVER_TIME = 1_714_521_600_000  # 2024-05-01T00:00:00Z


class RecordingClock:
    """Every sleep returns at once and is recorded; time moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_700_000_000.0 + self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex[:12]}:"


@pytest_asyncio.fixture
async def pair(redis_url: str, prefix: str) -> AsyncIterator[list[ExchangeGuard]]:
    """Two guards of one exchange, as two processes would build them."""
    options = {"redis_url": redis_url, "key_prefix": prefix, "rate_limit_ms": 10_000}
    guards = [ExchangeGuard("kraken", clock=RecordingClock(), **options) for _ in range(2)]
    yield guards
    for guard in guards:
        await guard.close()


async def test_two_guards_share_one_bucket_and_its_rate(pair: list[ExchangeGuard]) -> None:
    a, b = pair
    costs = [1.0, 2.0, 0.5, 1.0, 3.0, 1.0]
    slots = []
    for i, cost in enumerate(costs):  # alternate: A, B, A, B, ...
        slots.append(await (a if i % 2 == 0 else b).limiter.acquire(cost))
    # 10 s per unit, the bucket starting empty: each slot is the previous
    # caller's cost later, whichever process took it.
    gaps = [later.at_ms - earlier.at_ms for earlier, later in itertools.pairwise(slots)]
    assert gaps == pytest.approx([c * 10_000 for c in costs[:-1]], abs=0.01)
    assert slots[0].waited == 0
    assert slots[-1].waited == pytest.approx(sum(costs[:-1]) * 10, abs=1.0)


async def test_concurrent_callers_of_two_guards_get_distinct_slots_in_order(
    pair: list[ExchangeGuard],
) -> None:
    a, b = pair
    admissions = await asyncio.gather(*(g.limiter.acquire(1) for g in [a, b] * 5))
    slots = sorted(x.at_ms for x in admissions)
    gaps = [later - earlier for earlier, later in itertools.pairwise(slots)]
    assert gaps == pytest.approx([10_000] * 9, abs=0.01)
    # Each guard's own callers went in the order they arrived.
    for offset in (0, 1):
        own = [x.at_ms for x in admissions[offset::2]]
        assert own == sorted(own)


async def test_a_retry_after_seen_by_one_guard_pauses_the_other(
    pair: list[ExchangeGuard], redis_url: str, prefix: str
) -> None:
    a, b = pair
    answers: list[Exception | str] = [UpstreamHTTPError(429, {"Retry-After": "60"}), "ok"]

    async def factory() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert await a.call(factory, cost=0, endpoint="Time") == "ok"
    assert 55 < await b.limiter.paused_for() <= 60
    waited = (await b.limiter.acquire(1)).waited
    assert 55 < waited <= 60
    assert isinstance(b.clock, RecordingClock)
    assert b.clock.sleeps == [waited]
    raw = Redis.from_url(redis_url)
    try:
        # Kept while paused and until it would be full again (60 s pause, then
        # 2 units of 10 s), plus a minute; then Redis forgets it.
        assert 60_000 < await raw.pttl(f"{prefix}exchange:kraken:limiter") <= 140_000
    finally:
        await raw.aclose()


async def test_a_cancelled_last_waiter_gives_its_shared_slot_back(
    pair: list[ExchangeGuard],
) -> None:
    a, b = pair
    first = await a.limiter.acquire(1)
    blocked = asyncio.Event()

    async def never(seconds: float) -> None:
        blocked.set()
        await asyncio.Event().wait()

    a.clock.sleep = never  # type: ignore[method-assign]  # holds the next waiter
    waiter = asyncio.create_task(a.limiter.acquire(1))
    async with asyncio.timeout(10):  # fails rather than hangs if it is not held
        await blocked.wait()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    taken = await b.limiter.acquire(1)
    assert taken.at_ms - first.at_ms == pytest.approx(10_000, abs=0.01)


# -- a real ccxt exchange against a fake binance ------------------------------------


def point_at(exchange: Any, base_url: str) -> None:
    """Send every REST URL of ``exchange`` to ``base_url``, keeping each path."""

    def rewrite(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: rewrite(inner) for key, inner in value.items()}
        if isinstance(value, str) and value.startswith("http"):
            path = value.split("://", 1)[1].partition("/")[2]
            return f"{base_url}/{path}"
        return value

    exchange.urls["api"] = rewrite(exchange.urls["api"])


@pytest_asyncio.fixture
async def binance() -> AsyncIterator[tuple[FakeServer, Any]]:
    server = FakeServer()
    # GET /api/v3/time as binance documents it: {"serverTime": <epoch ms>}.
    server.json_route("GET", "/api/v3/time", lambda request: {"serverTime": SERVER_TIME})
    await server.start()
    exchange = ccxt.binance({"timeout": 5000})
    point_at(exchange, server.base_url)
    exchange.options["fetchMarkets"] = {"types": ["spot"]}
    exchange.options["fetchCurrencies"] = False
    try:
        yield server, exchange
    finally:
        await exchange.close()
        await server.stop()


@pytest.mark.parametrize("shared", [False, True], ids=["in-process", "redis"])
async def test_ccxt_binance_429_retry_after_then_breaker(
    binance: tuple[FakeServer, Any], shared: bool, request: pytest.FixtureRequest, prefix: str
) -> None:
    server, exchange = binance
    redis_url = request.getfixturevalue("redis_url") if shared else None
    clock, registry = RecordingClock(), CollectorRegistry()
    guard = ExchangeGuard.for_exchange(
        exchange, redis_url=redis_url, key_prefix=prefix, metrics_registry=registry,
        clock=clock, failure_threshold=3, max_attempts=3, cool_down=30.0,
    )  # fmt: skip
    try:
        # binance answers 429 with Retry-After, then 200: the guard waits as told.
        server.fail_next(
            "/api/v3/time", 429,
            {"code": -1003, "msg": "Too many requests; current limit is 6000 request weight "
             "per 1 MINUTE."},
            headers={"Retry-After": "7"},
        )  # fmt: skip
        assert await guard.call(exchange.fetch_time, cost=0, endpoint="time") == SERVER_TIME
        assert [path for _, path, _ in server.requests] == ["/api/v3/time"] * 2
        # The retry waited out the pause (on Redis's clock, a hair less than 7 s
        # had passed by then); ccxt's own weight for /time is 0.2 of 50 ms.
        assert max(clock.sleeps) == pytest.approx(7.0, abs=0.5)
        assert sample(registry, "cryptodesk_exchange_rejections_total", status="429") == 1

        # Repeated 5xx: three failures open the breaker; calls are then refused
        # without reaching the exchange.
        server.fail_next("/api/v3/time", 503, {"msg": "Service Unavailable"}, times=3)
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await guard.call(exchange.fetch_time, cost=0, endpoint="time")
        assert len(server.requests) == 5
        assert guard.breaker.state is BreakerState.OPEN
        with pytest.raises(CircuitOpenError, match="binance: circuit breaker open"):
            await guard.call(exchange.fetch_time, cost=0, endpoint="time")
        with pytest.raises(CircuitOpenError):
            await exchange.fetch_time()  # a direct ccxt call is refused by its throttle
        assert len(server.requests) == 5
        assert sample(registry, "cryptodesk_exchange_breaker_state") == 2

        # After the cool-down one half-open probe goes through and closes it.
        clock.now += 30
        assert await guard.call(exchange.fetch_time, cost=0, endpoint="time") == SERVER_TIME
        assert guard.breaker.state is BreakerState.CLOSED
        assert sample(registry, "cryptodesk_exchange_breaker_state") == 0
        for old, new in [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]:
            assert sample(registry, "cryptodesk_exchange_breaker_transitions_total",
                          from_state=old, to_state=new) == 1  # fmt: skip
        assert sample(registry, "cryptodesk_exchange_limiter_wait_seconds_count") >= 6
    finally:
        await guard.close()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"exchange": "binance", **labels}) or 0.0
