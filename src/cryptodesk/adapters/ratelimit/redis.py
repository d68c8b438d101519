"""The rate limiter on Redis, so every API worker draws on the same buckets.

One string per bucket (``<prefix>ratelimit:<tier>:<key>``) holds the time it
is full again, in microseconds of Redis's own clock (``TIME``), so the
workers' clocks never matter. An atomic Lua script reads, decides and writes
it, and gives it an expiry at that time: an idle bucket vanishes exactly when
it would be full. Microseconds since the epoch stay below 2**53, so a double
holds them exactly; numbers go back as ``%.17g`` strings because Redis would
truncate a Lua number reply to an integer.

If Redis is unreachable (or refuses the script: out of memory, a read-only
replica during a failover) the limiter goes on with its in-process buckets
rather than fail requests (or let every request through), warns once per
outage, tries Redis again with capped exponential backoff, and logs when it
is back. Each worker then limits on its own until Redis returns.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from cryptodesk.adapters.ratelimit.base import Decision, Tier, check_cost, decide
from cryptodesk.adapters.ratelimit.memory import MemoryRateLimiter
from cryptodesk.adapters.redis_client import (
    RECONNECT_CAP_SECONDS,
    RECONNECT_INITIAL_SECONDS,
    redis_client,
)
from cryptodesk.domain.backoff import backoff_delays

log = structlog.get_logger(__name__)

# KEYS[1] = bucket; ARGV = rate (tokens per second), burst, cost.
# Returns {1 if allowed else 0, tokens left as a string}.
_LUA = """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local full_at = tonumber(redis.call('GET', KEYS[1])) or now
if full_at < now then full_at = now end
local tokens = burst - (full_at - now) * rate / 1000000
if tokens + 1e-9 < cost then return {0, string.format('%.17g', tokens)} end
tokens = tokens - cost
full_at = full_at + cost * 1000000 / rate
local ttl_ms = math.ceil((full_at - now) / 1000)
if ttl_ms > 0 then
  redis.call('SET', KEYS[1], string.format('%.17g', full_at), 'PX', ttl_ms)
else
  redis.call('DEL', KEYS[1])
end
return {1, string.format('%.17g', tokens)}
"""
# Keys are client addresses, user ids and e-mail addresses; a longer one
# (anything a client can make up) is stored as its digest.
_MAX_KEY_CHARS = 200


class _Outage:
    """When to try Redis again after it failed, and logging once per outage."""

    def __init__(self) -> None:
        self.failures = 0
        self._delays: Iterator[float] | None = None
        self._next_attempt = 0.0

    def due_in(self) -> float:
        return self._next_attempt - asyncio.get_running_loop().time()

    def failed(self, error: BaseException) -> None:
        if self._delays is None:
            self._delays = backoff_delays(RECONNECT_INITIAL_SECONDS, RECONNECT_CAP_SECONDS)
            log.warning(
                "redis unreachable: rate limits are counted in-process until it returns",
                error=str(error) or type(error).__name__,
            )
        self.failures += 1
        self._next_attempt = asyncio.get_running_loop().time() + next(self._delays)

    def succeeded(self) -> None:
        if self._delays is not None:
            log.info("redis reachable again: rate limits are shared", attempts=self.failures)
        self.failures = 0
        self._delays = None
        self._next_attempt = 0.0


class RedisRateLimiter:
    """Buckets under ``key_prefix + "ratelimit:"``; ``close()`` closes the client."""

    def __init__(
        self,
        client: Redis,
        *,
        key_prefix: str = "cryptodesk:",
        fallback: MemoryRateLimiter | None = None,
    ) -> None:
        self._client = client
        self._prefix = f"{key_prefix}ratelimit:"
        self._script: Any = client.register_script(_LUA)
        self.fallback = fallback if fallback is not None else MemoryRateLimiter()
        self._outage = _Outage()

    @classmethod
    def from_url(
        cls, url: str, *, key_prefix: str = "cryptodesk:", socket_timeout: float = 0.5
    ) -> RedisRateLimiter:
        """Short timeouts and one retry: a request never waits long on the limiter."""
        client = redis_client(
            url, socket_timeout=socket_timeout, connect_timeout=socket_timeout, retries=1
        )
        return cls(client, key_prefix=key_prefix)

    @property
    def shared(self) -> bool:
        """False while Redis is unreachable and the in-process buckets count."""
        return self._outage.failures == 0

    @property
    def failed_attempts(self) -> int:
        """Attempts at Redis that failed since it was last reachable."""
        return self._outage.failures

    def key(self, key: str, tier: Tier) -> str:
        """The Redis key of a bucket."""
        if len(key) > _MAX_KEY_CHARS:
            key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
        return f"{self._prefix}{tier.name}:{key}"

    async def hit(self, key: str, tier: Tier, cost: float = 1) -> Decision:
        check_cost(tier, cost)
        if self._outage.due_in() > 0:
            return self.fallback.take(key, tier, cost)
        try:
            allowed, tokens = await self._script(
                keys=[self.key(key, tier)], args=[repr(tier.rate), tier.burst, repr(cost)]
            )
        except RedisError as exc:  # unreachable, but also out of memory or read-only
            self._outage.failed(exc)
            return self.fallback.take(key, tier, cost)
        self._outage.succeeded()
        return decide(tier, cost, float(tokens), allowed=int(allowed) == 1)

    async def close(self) -> None:
        await self._client.aclose()
        await self.fallback.close()
