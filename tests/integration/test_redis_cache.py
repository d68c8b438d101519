"""RedisCache: the shared Cache contract on a real Redis, plus what only Redis promises."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis.exceptions
from redis.asyncio import Redis

from cryptodesk.adapters.cache.base import Cache
from cryptodesk.adapters.cache.memory import CacheClosedError, CacheTypeError
from cryptodesk.adapters.cache.redis import RedisCache
from tests.contracts.cache_contract import CacheContract
from tests.servers import free_port


def unique_prefix() -> str:
    return f"test:{uuid.uuid4().hex[:12]}:"


class TestRedisCache(CacheContract):
    @pytest_asyncio.fixture
    async def cache(self, redis_url: str) -> AsyncIterator[Cache]:
        cache = RedisCache.from_url(redis_url, key_prefix=unique_prefix())
        yield cache
        await cache.close()


@pytest_asyncio.fixture
async def raw(redis_url: str) -> AsyncIterator[Redis]:
    """A plain client, to look at what the cache really stored."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def cache(redis_url: str) -> AsyncIterator[RedisCache]:
    cache = RedisCache.from_url(redis_url, key_prefix=unique_prefix(), subscriber_queue=3)
    yield cache
    await cache.close()


async def test_key_prefixes_keep_two_caches_apart(redis_url: str, raw: Redis) -> None:
    left = RedisCache.from_url(redis_url, key_prefix=unique_prefix())
    right = RedisCache.from_url(redis_url, key_prefix=unique_prefix())
    try:
        await left.set("ticker", b"left")
        await right.set("ticker", b"right")
        await left.push_capped("closes", [b"1", b"2"], maxlen=5)
        assert await left.get("ticker") == b"left"
        assert await right.get("ticker") == b"right"
        assert await right.list_range("closes") == []
        await right.delete("ticker")
        assert await left.get("ticker") == b"left"

        # Channels are prefixed too: a publish reaches only its own tenant.
        left_sub, right_sub = await left.subscribe("alerts"), await right.subscribe("alerts")
        assert await right.publish("alerts", b"for-right") == 1
        assert await right_sub.get(timeout=5) == b"for-right"
        assert await left_sub.get(timeout=0.2) is None
        await left_sub.close()
        await right_sub.close()

        # The prefix is really on the server's key names.
        assert await raw.get(left.key_prefix + "ticker") == b"left"
        assert await raw.get("ticker") is None
    finally:
        await left.close()
        await right.close()


async def test_values_are_shared_between_instances(redis_url: str) -> None:
    """Two RedisCache objects stand for two processes (workers) of one deployment."""
    prefix = unique_prefix()
    writer = RedisCache.from_url(redis_url, key_prefix=prefix)
    reader = RedisCache.from_url(redis_url, key_prefix=prefix)
    try:
        await writer.set_many({"a": b"A", "b": b"B"}, ttl=60)
        await writer.push_capped("BTC/USDT:1m:ma3", [b"1", b"2", b"3", b"4"], maxlen=3)
        assert await reader.get_many(["a", "b"]) == [b"A", b"B"]
        assert await reader.list_range("BTC/USDT:1m:ma3") == [b"2", b"3", b"4"]
        # The reader resumes the window where the writer left it.
        await reader.push_capped("BTC/USDT:1m:ma3", [b"5"], maxlen=3)
        assert await writer.list_range("BTC/USDT:1m:ma3") == [b"3", b"4", b"5"]

        sub = await reader.subscribe("candles")
        assert await writer.publish("candles", b"closed") == 1
        assert await sub.get(timeout=5) == b"closed"
        await sub.close()
    finally:
        await writer.close()
        await reader.close()


async def test_capped_list_is_a_real_redis_list_of_maxlen(cache: RedisCache, raw: Redis) -> None:
    for i in range(500):
        await cache.push_capped("window", [str(i).encode()], maxlen=50)
    await cache.push_capped("window", [str(i).encode() for i in range(500, 700)], maxlen=50)
    name = cache.key_prefix + "window"
    assert await raw.type(name) == b"list"
    assert await raw.llen(name) == 50
    assert await raw.lrange(name, 0, -1) == [str(i).encode() for i in range(650, 700)]


async def test_ttl_is_set_on_the_server(cache: RedisCache, raw: Redis) -> None:
    await cache.set("one", b"1", ttl=30)
    await cache.set_many({"two": b"2"}, ttl=30)
    await cache.set_many({"three": b"3"})
    for key in ("one", "two"):
        assert 0 < await raw.pttl(cache.key_prefix + key) <= 30_000
    assert await raw.pttl(cache.key_prefix + "three") == -1  # no expiry


async def test_a_dead_server_fails_ping_within_bounded_time() -> None:
    cache = RedisCache.from_url(
        f"redis://127.0.0.1:{free_port()}/0", key_prefix=unique_prefix(), connect_timeout=0.5
    )
    try:
        # The bound only guards against a hang; the retries take well under a second.
        with pytest.raises(redis.exceptions.ConnectionError):
            await asyncio.wait_for(cache.ping(), 30)
    finally:
        await cache.close()


async def test_one_keyspace_like_redis(cache: RedisCache) -> None:
    await cache.push_capped("l", [b"1"], maxlen=3)
    with pytest.raises(CacheTypeError):
        await cache.get("l")
    await cache.set("v", b"x")
    with pytest.raises(CacheTypeError):
        await cache.push_capped("v", [b"1"], maxlen=3)
    with pytest.raises(CacheTypeError):
        await cache.list_range("v")
    assert await cache.get("v") == b"x"  # the failed push changed nothing
    await cache.push_capped("v", [], maxlen=3)  # an empty push touches nothing
    await cache.set("l", b"now a value")  # SET replaces a key of any kind
    assert await cache.get("l") == b"now a value"


async def test_only_bytes_are_stored(cache: RedisCache) -> None:
    with pytest.raises(TypeError, match="bytes"):
        await cache.set("k", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes"):
        await cache.set_many({"k": b"ok", "j": 1})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="bytes"):
        await cache.push_capped("l", [b"ok", "text"], maxlen=3)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="bytes"):
        await cache.publish("ch", "text")  # type: ignore[arg-type]
    assert await cache.get_many(["k", "j"]) == [None, None]
    assert await cache.list_range("l") == []


async def test_a_slow_subscriber_loses_its_oldest_messages(
    cache: RedisCache, redis_url: str
) -> None:
    slow = await cache.subscribe("ch")  # its queue holds 3 messages
    roomy = RedisCache.from_url(redis_url, key_prefix=cache.key_prefix)
    probe = await roomy.subscribe("ch")  # keeps everything, to know all has arrived
    for i in range(5):
        assert await cache.publish("ch", str(i).encode()) == 2
    assert [await probe.get(timeout=5) for _ in range(5)] == [str(i).encode() for i in range(5)]
    # Redis sent the messages to both connections; wait (bounded) until the slow
    # subscription's reader has taken the last one off its socket too. Nothing
    # signals that moment, so poll the counter.
    async with asyncio.timeout(5):
        while slow.dropped < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert slow.dropped == 2
    assert [await slow.get(timeout=0) for _ in range(4)] == [b"2", b"3", b"4", None]
    await slow.close()
    await roomy.close()


async def test_a_subscription_survives_a_dropped_connection(cache: RedisCache, raw: Redis) -> None:
    async def pubsub_clients() -> set[str]:
        return {client["id"] for client in await raw.client_list(_type="pubsub")}

    before = await pubsub_clients()
    sub = await cache.subscribe("ch")
    ours = await pubsub_clients() - before
    assert len(ours) == 1
    await raw.client_kill_filter(_id=ours.pop())  # as a Redis restart or a proxy would
    # The reader reconnects and resubscribes by itself; what is published while
    # it is away is lost (pub/sub is fire-and-forget), so publish until it is back.
    async with asyncio.timeout(10):
        while await cache.publish("ch", b"back") == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert await sub.get(timeout=5) == b"back"
    await sub.close()


async def test_close_ends_a_waiting_get_and_iteration(cache: RedisCache) -> None:
    sub = await cache.subscribe("ch")
    waiting = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    await sub.close()
    assert await asyncio.wait_for(waiting, 5) is None
    assert [m async for m in sub] == []
    await sub.close()  # idempotent
    assert await cache.publish("ch", b"nobody") == 0


async def test_closing_the_cache_ends_subscriptions_and_refuses_calls(
    redis_url: str, raw: Redis
) -> None:
    cache = RedisCache.from_url(redis_url, key_prefix=unique_prefix())
    sub = await cache.subscribe("ch")
    await cache.set("k", b"v")
    await cache.close()
    await cache.close()
    assert await sub.get() is None
    channel = cache.key_prefix + "ch"
    assert await raw.pubsub_numsub(channel) == [(channel.encode(), 0)]
    for call in (
        cache.get("k"),
        cache.get_many(["k"]),
        cache.set("k", b"v"),
        cache.set_many({"k": b"v"}),
        cache.delete("k"),
        cache.push_capped("l", [b"v"], maxlen=1),
        cache.list_range("l"),
        cache.publish("ch", b"m"),
        cache.subscribe("ch"),
        cache.ping(),
    ):
        with pytest.raises(CacheClosedError):
            await call


def test_subscriber_queue_must_hold_something() -> None:
    with pytest.raises(ValueError, match="subscriber_queue"):
        RedisCache.from_url("redis://127.0.0.1:1/0", subscriber_queue=0)
