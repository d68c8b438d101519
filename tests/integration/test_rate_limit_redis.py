"""RedisRateLimiter: the shared contract on a real Redis, plus what only Redis promises:
workers share one count, idle buckets expire, and an outage is ridden out in-process.

The outage test stops and starts a redis-server of its own (the session one is
shared and never stopped).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
import structlog
from redis.asyncio import Redis

from cryptodesk.adapters.ratelimit import RateLimiter, Tier, open_rate_limiter
from cryptodesk.adapters.ratelimit.memory import MemoryRateLimiter
from cryptodesk.adapters.ratelimit.redis import RedisRateLimiter
from tests.contracts.rate_limit_contract import RateLimitContract
from tests.servers import RESUMERS, STOPPERS, Servers, own_server


def unique_prefix() -> str:
    return f"test:{uuid.uuid4().hex[:12]}:"


class TestRedisRateLimiter(RateLimitContract):
    @pytest_asyncio.fixture
    async def limiter(self, redis_url: str) -> AsyncIterator[RateLimiter]:
        limiter = RedisRateLimiter.from_url(redis_url, key_prefix=unique_prefix())
        yield limiter
        assert limiter.shared  # every decision came from Redis, none from the fallback
        await limiter.close()

    async def advance(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@pytest_asyncio.fixture
async def raw(redis_url: str) -> AsyncIterator[Redis]:
    """A plain client, to look at what the limiter stored."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def pair(redis_url: str) -> AsyncIterator[list[RedisRateLimiter]]:
    """Two limiters of one deployment, as two API workers would build them."""
    prefix = unique_prefix()
    limiters = [RedisRateLimiter.from_url(redis_url, key_prefix=prefix) for _ in range(2)]
    yield limiters
    for limiter in limiters:
        await limiter.close()


async def test_two_workers_draw_on_one_bucket(pair: list[RedisRateLimiter]) -> None:
    a, b = pair
    tier = Tier("ip", rate=0.5, burst=4)
    decisions = [await (a if i % 2 == 0 else b).hit("203.0.113.9", tier) for i in range(5)]
    assert [(d.allowed, d.remaining) for d in decisions] == [
        (True, 3),
        (True, 2),
        (True, 1),
        (True, 0),
        (False, 0),
    ]
    assert decisions[-1].retry_after_seconds == 2
    assert not (await a.hit("203.0.113.9", tier)).allowed
    assert (await b.hit("198.51.100.7", tier)).allowed


async def test_concurrent_hits_never_overdraw(pair: list[RedisRateLimiter]) -> None:
    tier = Tier("user", rate=0.01, burst=10)
    decisions = await asyncio.gather(*(pair[i % 2].hit("user:u1", tier) for i in range(40)))
    assert sum(d.allowed for d in decisions) == 10
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(10))


async def test_a_bucket_expires_when_it_would_be_full(redis_url: str, raw: Redis) -> None:
    prefix = unique_prefix()
    limiter = RedisRateLimiter.from_url(redis_url, key_prefix=prefix)
    try:
        tier = Tier("login", rate=0.1, burst=5)  # 10 s per token
        await limiter.hit("203.0.113.9|ana@acme.test", tier, 2)
        key = f"{prefix}ratelimit:login:203.0.113.9|ana@acme.test"
        assert 19_000 < await raw.pttl(key) <= 20_000
        await limiter.hit("203.0.113.9|ana@acme.test", tier, 0)  # a peek keeps the expiry
        assert 19_000 < await raw.pttl(key) <= 20_000
        denied = await limiter.hit("203.0.113.9|ana@acme.test", tier, 4)
        assert not denied.allowed
        assert 19_000 < await raw.pttl(key) <= 20_000
        long_key = "x" * 500
        await limiter.hit(long_key, tier)
        assert limiter.key(long_key, tier).startswith(f"{prefix}ratelimit:login:sha256:")
        assert 9_000 < await raw.pttl(limiter.key(long_key, tier)) <= 10_000
        assert await raw.exists(f"{prefix}ratelimit:login:{long_key}") == 0
    finally:
        await limiter.close()


def test_the_cache_url_decides_where_buckets_live(redis_url: str) -> None:
    assert isinstance(open_rate_limiter("memory://"), MemoryRateLimiter)
    assert isinstance(open_rate_limiter(redis_url), RedisRateLimiter)


# -- an outage ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def own() -> Iterator[Servers]:
    yield from own_server("redis", "ratelimit")


async def test_an_outage_falls_back_in_process_then_shares_again(own: Servers) -> None:
    prefix = unique_prefix()
    limiter = RedisRateLimiter.from_url(own.redis_url, key_prefix=prefix)
    raw = Redis.from_url(own.redis_url)
    tier = Tier("ip", rate=0.01, burst=3)
    try:
        assert (await limiter.hit("a", tier)).remaining == 2  # in Redis
        await asyncio.to_thread(STOPPERS["redis"], own)
        with structlog.testing.capture_logs() as logs:
            # In-process the bucket starts full: the outage costs some leniency.
            during = [await limiter.hit("a", tier) for _ in range(4)]
            assert [(d.allowed, d.remaining) for d in during] == [
                (True, 2),
                (True, 1),
                (True, 0),
                (False, 0),
            ]
            assert not limiter.shared
            await asyncio.to_thread(RESUMERS["redis"], own)
            # Nothing signals the next attempt: hit until Redis answers (bounded).
            async with asyncio.timeout(30):
                while not limiter.shared:
                    await limiter.hit("b", tier)
                    await asyncio.sleep(0.02)
        # The new server kept nothing (no persistence): a fresh shared bucket.
        assert (await limiter.hit("a", tier)).remaining == 2
        assert await raw.exists(limiter.key("a", tier)) == 1
        events = [(e["log_level"], e["event"]) for e in logs]
        assert events == [
            ("warning", "redis unreachable: rate limits are counted in-process until it returns"),
            ("info", "redis reachable again: rate limits are shared"),
        ]
    finally:
        await raw.aclose()
        await limiter.close()
