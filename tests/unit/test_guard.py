"""The exchange guard without servers: bucket math checked against ccxt's own
throttler, FIFO and cancellation, Retry-After, the breaker's transitions on a
fake clock, and the metrics it exports."""

from __future__ import annotations

import asyncio
import random
import types
from collections.abc import Awaitable, Callable
from typing import Any

import ccxt.async_support as ccxt
import pytest
from ccxt.async_support.base import throttler as ccxt_throttler
from prometheus_client import CollectorRegistry

from cryptodesk.adapters.exchanges.breaker import BreakerState, CircuitBreaker, CircuitOpenError
from cryptodesk.adapters.exchanges.guard import (
    ExchangeGuard,
    GuardMetrics,
    Limiter,
    RateLimitedError,
    TokenBucket,
    UpstreamHTTPError,
    limiter_redis_url,
    parse_retry_after,
)
from cryptodesk.services.retry import backoff_delays
from tests.servers import free_port

WALL = 1_700_000_000.0


class FakeClock:
    """Monotonic and wall time under the test's control.

    ``auto``: each sleep returns at once and moves time forward (one caller at a
    time). Otherwise sleepers wait until ``advance`` passes their deadline.
    """

    def __init__(self, *, auto: bool = False) -> None:
        self.now = 1000.0
        self.auto = auto
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return WALL + self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.auto:
            self.now += seconds
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, future))
        await future

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        for deadline, future in list(self._sleepers):
            if future.done() or deadline <= self.now + 1e-9:
                self._sleepers.remove((deadline, future))
                if not future.done():
                    future.set_result(None)
        await settle()


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


# -- bucket math --------------------------------------------------------------------


async def ccxt_admission_times(
    rate_limit_ms: float, costs: list[float], monkeypatch
) -> list[float]:
    """When ccxt's own Throttler lets each queued call go (ms), on a fake clock."""
    fake_ms = [0.0]

    async def fake_sleep(seconds: float) -> None:
        fake_ms[0] += seconds * 1000
        await asyncio.sleep(0)

    shim = types.SimpleNamespace(
        Future=asyncio.Future, ensure_future=asyncio.ensure_future, sleep=fake_sleep
    )
    monkeypatch.setattr(ccxt_throttler, "asyncio", shim)
    monkeypatch.setattr(ccxt_throttler, "time", lambda: fake_ms[0] / 1000)
    # The bucket ccxt builds in init_rest_rate_limiter for this rateLimit.
    throttle = ccxt_throttler.Throttler(
        {"refillRate": 1 / rate_limit_ms, "capacity": 1, "delay": 0.001, "rateLimit": rate_limit_ms}
    )
    times: list[float] = []

    async def one(cost: float) -> None:
        await throttle(cost)
        times.append(fake_ms[0])

    tasks = [asyncio.ensure_future(one(c)) for c in costs]
    await asyncio.gather(*tasks)
    return times


@pytest.mark.parametrize(
    ("rate_limit_ms", "costs"),
    [
        (50, [0.2, 0.2, 1, 5, 0.2, 1, 1, 10, 0.2]),  # binance weights
        (1000, [1, 1, 1, 2, 1]),  # kraken-like: 1 call per second
        (100, [3, 0.5, 0.5, 0.5, 4, 1]),
    ],
)
async def test_a_burst_of_calls_goes_when_ccxts_throttler_would_let_it(
    rate_limit_ms, costs, monkeypatch
):
    expected = await ccxt_admission_times(rate_limit_ms, costs, monkeypatch)
    bucket = TokenBucket(rate_limit_ms=rate_limit_ms, capacity=1)
    ours = [bucket.reserve(0.0, cost).at_ms for cost in costs]
    # ccxt checks its bucket every millisecond (its 'delay'), so it lags by < 2 ms.
    assert ours == pytest.approx(expected, abs=2.0)
    assert ours[0] == 0.0  # the bucket starts empty but not in debt, as in ccxt
    assert ours[1] == costs[0] * rate_limit_ms


def test_idle_time_refills_the_bucket_up_to_its_capacity_only():
    bucket = TokenBucket(rate_limit_ms=100, capacity=2)
    bucket.reserve(0, 1)  # tokens -1
    # An hour idle refills to capacity 2, not more: three calls go at once
    # (2 - 1 - 1 = 0 is not debt), the fourth waits one unit.
    waits = [bucket.reserve(3_600_000, 1).wait_ms for _ in range(4)]
    assert waits == [0, 0, 0, 100]


def test_one_expensive_call_overdraws_and_the_next_caller_waits_its_debt():
    bucket = TokenBucket(rate_limit_ms=50, capacity=1)
    assert bucket.reserve(0, 10).wait_ms == 0
    assert bucket.reserve(0, 0.2).wait_ms == 500
    assert bucket.reserve(100, 0).wait_ms == pytest.approx(410)  # cost 0 still queues


def test_a_zero_rate_limit_never_waits():
    bucket = TokenBucket(rate_limit_ms=0, capacity=1)
    assert [bucket.reserve(0, 5).wait_ms for _ in range(5)] == [0] * 5


def test_a_refund_frees_the_slot_only_if_nobody_queued_behind_it():
    bucket = TokenBucket(rate_limit_ms=100)
    bucket.reserve(0, 1)
    middle = bucket.reserve(0, 1)
    last = bucket.reserve(0, 1)
    assert (middle.at_ms, last.at_ms) == (100, 200)
    bucket.refund(middle, 1)  # someone is behind: the slot stays spent
    assert bucket.reserve(0, 1).at_ms == 300
    newest = bucket.reserve(0, 1)
    bucket.refund(newest, 1)
    assert bucket.reserve(0, 1).at_ms == newest.at_ms


def test_a_pause_voids_held_slots_and_restarts_the_bucket_empty_after_it():
    bucket = TokenBucket(rate_limit_ms=100, capacity=5)
    held = bucket.reserve(0, 1)
    assert bucket.pause(10, 2000) == 2000
    assert bucket.pause(20, 500) == 1990  # a shorter pause does not shorten it
    again = bucket.confirm(2010, held, 1)
    assert (again.wait_ms, again.at_ms) == (0, 2010)
    assert bucket.reserve(2010, 1).at_ms == 2110  # empty after the pause: no burst
    kept = bucket.reserve(2010, 1)
    assert bucket.confirm(kept.at_ms, kept, 1).wait_ms == 0  # no pause since: it goes


# -- limiter: FIFO, cancellation, pauses ---------------------------------------------


def limiter(clock: FakeClock, *, rate_limit_ms: float = 100, max_wait: float = 300) -> Limiter:
    return Limiter("test", rate_limit_ms=rate_limit_ms, capacity=1, clock=clock, max_wait=max_wait)


async def test_waiting_callers_go_in_arrival_order_one_slot_apart():
    clock = FakeClock()
    lim = limiter(clock)
    gone: list[tuple[int, float]] = []

    async def caller(i: int) -> None:
        await lim.acquire(1)
        gone.append((i, clock.now))

    tasks = [asyncio.create_task(caller(i)) for i in range(5)]
    await settle()
    for _ in range(5):
        await clock.advance(0.1)
    await asyncio.gather(*tasks)
    assert [i for i, _ in gone] == [0, 1, 2, 3, 4]
    assert [round(t - 1000, 3) for _, t in gone] == [0.0, 0.1, 0.2, 0.3, 0.4]


async def test_a_cancelled_waiter_leaves_and_the_others_keep_their_turn():
    clock = FakeClock()
    lim = limiter(clock)
    gone: list[int] = []

    async def caller(i: int) -> None:
        await lim.acquire(1)
        gone.append(i)

    tasks = [asyncio.create_task(caller(i)) for i in range(4)]
    await settle()
    tasks[2].cancel()
    await clock.advance(1.0)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert gone == [0, 1, 3]
    assert isinstance(results[2], asyncio.CancelledError)
    # The last waiter cancelling hands its slot to the next arrival.
    await lim.acquire(1)  # the bucket is full after the idle second: this one goes
    await lim.acquire(1)  # and this one too; the bucket is now in debt
    last = asyncio.create_task(lim.acquire(1))
    await settle()
    last.cancel()
    await settle()
    newcomer = asyncio.create_task(lim.acquire(1))
    await settle()
    assert clock.sleeps[-2:] == [pytest.approx(0.1), pytest.approx(0.1)]
    await clock.advance(0.1)
    assert (await newcomer).at_ms == pytest.approx(clock.now * 1000)


async def test_waiters_holding_slots_queue_again_after_a_pause():
    clock = FakeClock()
    lim = limiter(clock)
    gone: list[tuple[int, float]] = []

    async def caller(i: int) -> None:
        await lim.acquire(1)
        gone.append((i, round(clock.now - 1000, 3)))

    tasks = [asyncio.create_task(caller(i)) for i in range(3)]
    await settle()
    assert await lim.pause(5.0) == 5.0  # a 429 arrives while 1 and 2 wait
    for _ in range(60):
        await clock.advance(0.1)
    await asyncio.gather(*tasks)
    # 0 went before the pause; 1 and 2 go one slot apart after it, not together.
    assert gone == [(0, 0.0), (1, 5.0), (2, 5.1)]


async def test_a_wait_longer_than_max_wait_fails_at_once_and_frees_its_slot():
    clock = FakeClock(auto=True)
    lim = limiter(clock, max_wait=60)
    await lim.pause(3600)  # e.g. a 418 ban
    with pytest.raises(RateLimitedError, match=r"next call is allowed in 3600\.0s"):
        await lim.acquire(1)
    assert clock.sleeps == []
    assert await lim.paused_for() == 3600


async def test_an_unreachable_redis_falls_back_to_the_in_process_bucket():
    clock = FakeClock(auto=True)
    shared = Limiter(
        "test", rate_limit_ms=100, capacity=1, clock=clock, max_wait=60,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
    )  # fmt: skip
    try:
        assert (await shared.acquire(1)).waited == 0
        assert (await shared.acquire(1)).waited == pytest.approx(0.1)
    finally:
        await shared.close()


def test_only_a_redis_cache_url_shares_the_limiter():
    assert limiter_redis_url("redis://h:6379/0") == "redis://h:6379/0"
    assert limiter_redis_url("rediss://h/1") == "rediss://h/1"
    assert limiter_redis_url("memory://") is None


# -- Retry-After ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("Tue, 14 Nov 2023 22:13:40 GMT", 20.0),  # WALL is 22:13:20 GMT
        ("Tue, 14 Nov 2023 22:00:00 GMT", 0.0),  # already past
        ("-5", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_retry_after_in_seconds_or_as_an_http_date(value, expected):
    assert parse_retry_after(value, now=WALL) == expected


# -- breaker -------------------------------------------------------------------------


def breaker(clock: FakeClock, seen: list[tuple[BreakerState, BreakerState]]) -> CircuitBreaker:
    return CircuitBreaker(
        "kraken", failure_threshold=3, cool_down=30, clock=clock.monotonic,
        on_transition=lambda old, new: seen.append((old, new)),
    )  # fmt: skip


def test_breaker_opens_after_consecutive_failures_then_a_probe_closes_it():
    clock, seen = FakeClock(), []
    b = breaker(clock, seen)
    for _ in range(2):
        b.before_call()
        b.record_failure()
    b.before_call()
    b.record_success()  # a success resets the count
    for _ in range(3):
        assert b.state is BreakerState.CLOSED
        b.before_call()
        b.record_failure()
    assert b.state is BreakerState.OPEN
    clock.now += 10
    with pytest.raises(CircuitOpenError, match=r"kraken: circuit breaker open after 3 consecutive "
                       r"failures; calls are refused, next probe in 20\.0s"):  # fmt: skip
        b.before_call()
    clock.now += 20
    assert b.state is BreakerState.HALF_OPEN
    b.before_call()  # the probe
    with pytest.raises(CircuitOpenError):
        b.before_call()  # only one probe at a time
    b.record_success()
    assert b.state is BreakerState.CLOSED
    b.before_call()
    assert seen == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]


def test_a_failed_probe_opens_the_breaker_for_another_cool_down():
    clock, seen = FakeClock(), []
    b = breaker(clock, seen)
    for _ in range(3):
        b.before_call()
        b.record_failure()
    clock.now += 30
    b.before_call()
    b.record_failure()
    assert b.state is BreakerState.OPEN
    assert b.is_refusing()
    clock.now += 29.9
    with pytest.raises(CircuitOpenError):
        b.check()
    clock.now += 0.1
    b.before_call()
    b.release()  # a cancelled probe: the next caller probes instead
    b.before_call()
    b.record_success()
    assert [new for _, new in seen] == [
        BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.OPEN,
        BreakerState.HALF_OPEN, BreakerState.CLOSED,
    ]  # fmt: skip


def test_late_outcomes_of_calls_admitted_before_it_opened_change_nothing():
    clock, seen = FakeClock(), []
    b = breaker(clock, seen)
    for _ in range(3):
        b.before_call()
        b.record_failure()
    b.record_success()
    b.record_failure()
    assert b.state is BreakerState.OPEN
    clock.now += 30
    assert b.state is BreakerState.HALF_OPEN  # the cool-down did not restart


# -- the guard -----------------------------------------------------------------------


def guard(clock: FakeClock, registry: CollectorRegistry, **options: Any) -> ExchangeGuard:
    options = {"failure_threshold": 3, "cool_down": 30.0, "max_attempts": 3, **options}
    return ExchangeGuard(
        "binance", rate_limit_ms=50, metrics_registry=registry, clock=clock,
        rng=random.Random(7), **options,
    )  # fmt: skip


def scripted(*outcomes: Exception | str) -> tuple[Callable[[], Awaitable[str]], list[int]]:
    """A factory failing or answering in turn; counts its calls."""
    calls = [0]

    async def factory() -> str:
        outcome = outcomes[calls[0]]
        calls[0] += 1
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return factory, calls


async def test_a_429_with_retry_after_pauses_as_told_then_the_retry_succeeds():
    clock, registry = FakeClock(auto=True), CollectorRegistry()
    g = guard(clock, registry)
    factory, calls = scripted(UpstreamHTTPError(429, {"retry-after": "7"}), "pong")
    assert await g.call(factory, endpoint="ping") == "pong"
    assert calls[0] == 2
    assert clock.sleeps == [7.0]  # the retry waited in the limiter for the pause
    assert sample(registry, "cryptodesk_exchange_rejections_total", exchange="binance",
                  status="429") == 1  # fmt: skip
    assert sample(registry, "cryptodesk_exchange_limiter_wait_seconds_count",
                  exchange="binance") == 2  # fmt: skip
    assert sample(registry, "cryptodesk_exchange_limiter_wait_seconds_sum",
                  exchange="binance") == 7.0  # fmt: skip
    assert g.breaker.state is BreakerState.CLOSED


async def test_a_418_with_an_http_date_and_a_429_without_retry_after_back_off():
    clock, registry = FakeClock(auto=True), CollectorRegistry()
    g = guard(clock, registry, max_attempts=4)
    ban = UpstreamHTTPError(418, {"Retry-After": "Tue, 14 Nov 2023 22:15:00 GMT"})
    clock.now = 0.0  # wall time 22:13:20 GMT
    factory, _ = scripted(ban, ccxt.RateLimitExceeded("binance too many requests"), "ok")
    assert await g.call(factory, endpoint="klines") == "ok"
    first_backoff = next(backoff_delays(0.5, 30.0, rng=random.Random(7)))
    assert clock.sleeps == [pytest.approx(100.0), pytest.approx(first_backoff)]
    assert sample(registry, "cryptodesk_exchange_rejections_total", exchange="binance",
                  status="418") == 1  # fmt: skip
    assert sample(registry, "cryptodesk_exchange_rejections_total", exchange="binance",
                  status="rate_limited") == 1  # fmt: skip


async def test_repeated_failures_open_the_breaker_and_a_half_open_probe_closes_it():
    clock, registry = FakeClock(auto=True), CollectorRegistry()
    g = guard(clock, registry)
    down = ccxt.ExchangeNotAvailable("binance GET /api/v3/time 503 Service Unavailable")
    factory, calls = scripted(down, down, down, "up", "up")
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await g.call(factory, endpoint="time")
    assert calls[0] == 3
    assert g.breaker.state is BreakerState.OPEN
    state = {"exchange": "binance"}
    assert sample(registry, "cryptodesk_exchange_breaker_state", **state) == 2
    with pytest.raises(CircuitOpenError):
        await g.call(factory, endpoint="time")
    with pytest.raises(CircuitOpenError):
        await g.throttle(1)  # ccxt requests outside call() are refused too
    assert calls[0] == 3  # refused without calling
    assert sample(registry, "cryptodesk_exchange_rejections_total", exchange="binance",
                  status="circuit_open") == 2  # fmt: skip
    clock.now += 30
    assert await g.call(factory, endpoint="time") == "up"
    assert sample(registry, "cryptodesk_exchange_breaker_state", **state) == 0
    moves = [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    for old, new in moves:
        assert sample(registry, "cryptodesk_exchange_breaker_transitions_total",
                      exchange="binance", from_state=old, to_state=new) == 1  # fmt: skip


async def test_a_failed_probe_reopens_and_errors_of_the_request_are_not_retried():
    clock, registry = FakeClock(auto=True), CollectorRegistry()
    g = guard(clock, registry, failure_threshold=1)
    factory, calls = scripted(TimeoutError(), UpstreamHTTPError(502), ccxt.BadSymbol("x"))
    with pytest.raises(TimeoutError):
        await g.call(factory, endpoint="trades")
    clock.now += 30
    with pytest.raises(UpstreamHTTPError):
        await g.call(factory, endpoint="trades")  # the probe fails
    assert g.breaker.state is BreakerState.OPEN
    clock.now += 30
    with pytest.raises(ccxt.BadSymbol):
        await g.call(factory, endpoint="trades")
    assert calls[0] == 3  # BadSymbol was not retried, and the exchange did answer
    assert g.breaker.state is BreakerState.CLOSED
    assert sample(registry, "cryptodesk_exchange_breaker_transitions_total",
                  exchange="binance", from_state="half_open", to_state="open") == 1  # fmt: skip


async def test_a_4xx_seen_by_ccxt_is_not_retried_even_as_exchange_not_available():
    g = guard(FakeClock(auto=True), CollectorRegistry())
    factory, calls = scripted(UpstreamHTTPError(404), "never")
    with pytest.raises(UpstreamHTTPError):
        await g.call(factory, endpoint="missing")
    assert calls[0] == 1
    assert g.breaker.failures == 0


async def test_requests_inside_a_call_spend_its_prepaid_cost_before_waiting_again():
    clock, registry = FakeClock(auto=True), CollectorRegistry()
    g = guard(clock, registry)

    async def two_requests() -> None:
        await g.throttle(0.6)  # what ccxt's fetch2 does for each request
        await g.throttle(0.6)

    await g.call(two_requests, cost=1.0, endpoint="markets")
    # 1.0 prepaid + 0.2 extra: the bucket owes 1.2 units of 50 ms, nothing twice.
    assert clock.sleeps == [pytest.approx(0.05)]
    await g.throttle(None)  # ccxt may pass no cost: one unit
    assert clock.sleeps[-1] == pytest.approx(0.01)


async def test_guards_of_several_exchanges_share_one_registry():
    registry = CollectorRegistry()
    a = ExchangeGuard("kraken", rate_limit_ms=1000, metrics_registry=registry)
    b = ExchangeGuard("coinbase", rate_limit_ms=100, metrics_registry=registry)
    assert a.metrics is b.metrics is GuardMetrics.of(registry)
    assert sample(registry, "cryptodesk_exchange_breaker_state", exchange="coinbase") == 0


async def test_install_routes_a_ccxt_exchange_through_the_guard():
    exchange = ccxt.kraken({"enableRateLimit": False})
    try:
        g = ExchangeGuard.for_exchange(exchange, clock=FakeClock(auto=True))
        assert (g.exchange_id, g.limiter.key) == ("kraken", "cryptodesk:exchange:kraken:limiter")
        assert exchange.enableRateLimit is True
        assert exchange.throttle == g.throttle
    finally:
        await exchange.close()
