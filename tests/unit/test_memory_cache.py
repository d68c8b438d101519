"""MemoryCache: the shared Cache contract, plus what only the in-process twin promises."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from cryptodesk.adapters.cache.base import Cache
from cryptodesk.adapters.cache.memory import CacheClosedError, CacheTypeError, MemoryCache
from tests.contracts.cache_contract import CacheContract


class TestMemoryCache(CacheContract):
    @pytest_asyncio.fixture
    async def cache(self) -> AsyncIterator[Cache]:
        cache = MemoryCache()
        yield cache
        await cache.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest_asyncio.fixture
async def cache(clock: FakeClock) -> AsyncIterator[MemoryCache]:
    cache = MemoryCache(clock=clock, subscriber_queue=3)
    yield cache
    await cache.close()


async def test_ttl_runs_on_the_injected_clock(cache: MemoryCache, clock: FakeClock) -> None:
    await cache.set("k", b"v", ttl=10)
    clock.now += 9.999
    assert await cache.get("k") == b"v"
    clock.now += 0.001  # the deadline itself is already expired, as in Redis
    assert await cache.get("k") is None
    assert len(cache) == 0  # reading an expired key removes it


async def test_expired_lists_read_as_empty_and_restart_without_ttl(
    cache: MemoryCache, clock: FakeClock
) -> None:
    await cache.set("k", b"v", ttl=1)
    clock.now += 2
    await cache.push_capped("k", [b"1"], maxlen=5)  # the expired value is simply gone
    clock.now += 100
    assert await cache.list_range("k") == [b"1"]


async def test_expired_keys_are_swept_without_being_read(
    cache: MemoryCache, clock: FakeClock
) -> None:
    await cache.set_many({f"old:{i}": b"x" for i in range(3000)}, ttl=1)
    clock.now += 2
    for i in range(3000):  # writes keep coming; nobody reads the old keys again
        await cache.set(f"new:{i}", b"y", ttl=60)
    assert len(cache) < 4000
    assert await cache.get("new:2999") == b"y"
    clock.now += 120
    assert cache.sweep() > 0
    assert len(cache) == 0


async def test_a_slow_subscriber_loses_its_oldest_messages(cache: MemoryCache) -> None:
    slow = await cache.subscribe("ch")
    for i in range(5):
        assert await cache.publish("ch", str(i).encode()) == 1
    assert slow.dropped == 2
    assert [await slow.get(timeout=0) for _ in range(4)] == [b"2", b"3", b"4", None]


async def test_close_ends_a_waiting_get_and_iteration(cache: MemoryCache) -> None:
    sub = await cache.subscribe("ch")
    waiting = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    await sub.close()
    assert await asyncio.wait_for(waiting, 5) is None
    assert [m async for m in sub] == []
    await sub.close()  # idempotent


async def test_closing_the_cache_ends_subscriptions_and_refuses_calls(cache: MemoryCache) -> None:
    sub = await cache.subscribe("ch")
    await cache.publish("ch", b"pending")
    await cache.set("k", b"v")
    await cache.close()
    await cache.close()
    assert await sub.get() is None
    for call in (
        cache.get("k"),
        cache.get_many(["k"]),
        cache.set("k", b"v"),
        cache.delete("k"),
        cache.push_capped("l", [b"v"], maxlen=1),
        cache.list_range("l"),
        cache.publish("ch", b"m"),
        cache.subscribe("ch"),
        cache.ping(),
    ):
        with pytest.raises(CacheClosedError):
            await call


async def test_one_keyspace_like_redis(cache: MemoryCache) -> None:
    await cache.push_capped("l", [b"1"], maxlen=3)
    with pytest.raises(CacheTypeError):
        await cache.get("l")
    await cache.set("v", b"x")
    with pytest.raises(CacheTypeError):
        await cache.push_capped("v", [b"1"], maxlen=3)
    with pytest.raises(CacheTypeError):
        await cache.list_range("v")
    await cache.set("l", b"now a value")  # SET replaces a key of any kind
    assert await cache.get("l") == b"now a value"


async def test_an_empty_push_creates_nothing(cache: MemoryCache) -> None:
    await cache.push_capped("l", [], maxlen=3)
    assert len(cache) == 0


async def test_only_bytes_are_stored(cache: MemoryCache) -> None:
    with pytest.raises(TypeError, match="bytes"):
        await cache.set("k", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes"):
        await cache.publish("ch", "text")  # type: ignore[arg-type]
    assert await cache.get("k") is None


def test_subscriber_queue_must_hold_something() -> None:
    with pytest.raises(ValueError, match="subscriber_queue"):
        MemoryCache(subscriber_queue=0)
