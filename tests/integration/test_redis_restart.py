"""The Redis bus and cache across a real Redis restart that outlasts the client's retries.

A redis-server of this module's own (the session one is shared and never stopped),
durable on disk as a production Redis is. Each test leaves it running.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
import redis.exceptions
import structlog
from redis.asyncio import Redis

from cryptodesk.adapters.bus.redis_streams import BusClosedError, RedisStreamsBus
from cryptodesk.adapters.cache.redis import RedisCache
from tests.servers import RESUMERS, STOPPERS, Servers, own_server

# Reconnect attempts of one loop before Redis comes back: each comes after the
# client's own retries failed, so the outage outlasted them several times.
ATTEMPTS = 3


@pytest.fixture(scope="module")
def durable() -> Iterator[Servers]:
    yield from own_server("redis", "redis-restart", redis_durable=True)


@pytest.fixture
def redis_down(durable: Servers) -> Iterator[Servers]:
    """The durable Redis, started again after the test whatever happened."""
    yield durable
    if not _answers(durable):
        RESUMERS["redis"](durable)


def _answers(servers: Servers) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", servers.redis_port)) == 0


@pytest_asyncio.fixture
async def bus(durable: Servers) -> AsyncIterator[RedisStreamsBus]:
    bus = RedisStreamsBus.from_url(durable.redis_url, stream_prefix=f"r-{uuid.uuid4().hex[:8]}:")
    await bus.start()
    yield bus
    await bus.close()


@pytest_asyncio.fixture
async def cache(durable: Servers) -> AsyncIterator[RedisCache]:
    cache = RedisCache.from_url(durable.redis_url, key_prefix=f"r-{uuid.uuid4().hex[:8]}:")
    yield cache
    await cache.close()


async def outage(logs: list[dict[str, Any]], what: str) -> None:
    """Until a loop whose name starts with ``what`` logged ATTEMPTS reconnect attempts."""

    def logged() -> bool:
        return any(
            e["event"] == "redis unreachable, retrying"
            and e["what"].startswith(what)
            and e["attempt"] >= ATTEMPTS
            for e in logs
        )

    # Nothing signals a log line: poll it (bounded).
    async with asyncio.timeout(60):
        while not logged():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def resume(servers: Servers) -> None:
    await asyncio.to_thread(RESUMERS["redis"], servers)


async def halt(servers: Servers) -> None:
    await asyncio.to_thread(STOPPERS["redis"], servers)


# ---- bus ----------------------------------------------------------------------------------


async def test_publish_waits_for_redis_and_nothing_is_lost_or_repeated(
    bus: RedisStreamsBus, redis_down: Servers
) -> None:
    consumer = bus.consumer("trades", group="g")
    await bus.publish_many("trades", [("k", b"before")])
    before = await consumer.fetch(10, timeout=1)
    assert [m.value for m in before] == [b"before"]

    await halt(redis_down)
    with structlog.testing.capture_logs() as logs:
        publishing = asyncio.create_task(bus.publish_many("trades", [("k", b"a"), ("k", b"b")]))
        # The ack of what was fetched before the outage waits too.
        acking = asyncio.create_task(consumer.ack(before))
        # A fetch while Redis is down is empty after its timeout, never an error.
        assert await consumer.fetch(10, timeout=0.3) == []
        await outage(logs, "bus publish")
        await outage(logs, "bus ack")
        assert not publishing.done()
        assert not acking.done()
        await resume(redis_down)
        await asyncio.wait_for(asyncio.gather(publishing, acking), 30)
    got = []
    async with asyncio.timeout(30):
        while len(got) < 2:
            got += await consumer.fetch(10, timeout=1)
    assert [m.value for m in got] == [b"a", b"b"]
    await consumer.ack(got)
    assert await consumer.fetch(10, timeout=0.2) == []
    assert any(e["event"] == "redis reachable again" for e in logs)


async def test_a_waiting_consumer_keeps_retrying_and_reads_what_came_meanwhile(
    bus: RedisStreamsBus, redis_down: Servers, durable: Servers
) -> None:
    consumer = bus.consumer("trades", group="g")
    assert await consumer.fetch(10, timeout=0) == []  # the group exists
    with structlog.testing.capture_logs() as logs:
        fetching = asyncio.create_task(consumer.fetch(10, timeout=60))
        await asyncio.sleep(0.1)  # blocked in XREADGROUP when Redis goes
        await halt(redis_down)
        await outage(logs, "bus consumer")
        assert not fetching.done()
        await resume(redis_down)
        other = RedisStreamsBus.from_url(durable.redis_url, stream_prefix=bus.prefix)
        await other.publish("trades", "k", b"after")
        await other.close()
        got = await asyncio.wait_for(fetching, 30)
    assert [m.value for m in got] == [b"after"]


async def test_entries_delivered_with_a_lost_reply_come_back_after_reconnecting(
    bus: RedisStreamsBus, redis_down: Servers, durable: Servers
) -> None:
    # claim_idle_ms is 30 s: only reading our own pending list again brings them back now.
    consumer = bus.consumer("trades", group="g", name="worker-1")
    assert await consumer.fetch(10, timeout=0) == []
    await bus.publish_many("trades", [("k", b"0"), ("k", b"1")])
    raw = Redis.from_url(durable.redis_url)
    # Redis delivered these to worker-1, but the reply never reached it.
    await raw.xreadgroup("g", "worker-1", {bus.stream("trades"): ">"}, count=10)
    await raw.aclose()
    await halt(redis_down)
    assert await consumer.fetch(10, timeout=0.2) == []
    await resume(redis_down)
    got = []
    async with asyncio.timeout(30):
        while len(got) < 2:
            got += await consumer.fetch(10, timeout=1)
    assert [m.value for m in got] == [b"0", b"1"]


async def test_closing_ends_a_fetch_or_publish_waiting_for_redis(
    durable: Servers, redis_down: Servers
) -> None:
    bus = RedisStreamsBus.from_url(durable.redis_url, stream_prefix=f"r-{uuid.uuid4().hex[:8]}:")
    consumer = bus.consumer("trades", group="g")
    assert await consumer.fetch(10, timeout=0) == []
    await halt(redis_down)
    with structlog.testing.capture_logs() as logs:
        fetching = asyncio.create_task(consumer.fetch(10, timeout=120))
        publishing = asyncio.create_task(bus.publish("trades", "k", b"v"))
        await outage(logs, "bus consumer")
        await outage(logs, "bus publish")
        await bus.close()
        assert await asyncio.wait_for(fetching, 10) == []
        with pytest.raises(BusClosedError):
            await asyncio.wait_for(publishing, 30)


# ---- cache --------------------------------------------------------------------------------


async def test_cache_commands_fail_while_down_and_work_again_after(
    cache: RedisCache, redis_down: Servers
) -> None:
    await cache.set("k", b"v")
    await halt(redis_down)
    with pytest.raises(redis.exceptions.ConnectionError):
        await cache.get("k")
    with pytest.raises(redis.exceptions.ConnectionError):
        await cache.ping()
    await resume(redis_down)
    assert await cache.get("k") == b"v"  # durable: the value survived the restart
    await cache.ping()


async def test_a_capped_list_that_missed_a_push_starts_over(
    cache: RedisCache, redis_down: Servers
) -> None:
    await cache.push_capped("closes", [b"1", b"2"], maxlen=10)
    await halt(redis_down)
    with pytest.raises(redis.exceptions.ConnectionError):
        await cache.push_capped("closes", [b"3"], maxlen=10)
    await resume(redis_down)
    await cache.push_capped("closes", [b"4"], maxlen=10)
    # Not [1, 2, 4]: a list with a hole would answer "the newest N" wrongly.
    assert await cache.list_range("closes") == [b"4"]
    await cache.push_capped("closes", [b"5"], maxlen=10)
    assert await cache.list_range("closes") == [b"4", b"5"]


async def test_a_subscription_survives_a_restart(cache: RedisCache, redis_down: Servers) -> None:
    sub = await cache.subscribe("alerts")
    with structlog.testing.capture_logs() as logs:
        await halt(redis_down)
        await outage(logs, "cache subscription")
        await resume(redis_down)
        # Published while it is not back yet is lost (pub/sub); publish until it is.
        async with asyncio.timeout(30):
            while await cache.publish("alerts", b"back") == 0:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert await sub.get(timeout=5) == b"back"
    await sub.close()
