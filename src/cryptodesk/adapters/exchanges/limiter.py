"""The weighted rate limiter of every exchange guard (see guard.py).

The limiter is ccxt's leaky bucket (ccxt/async_support/base/throttler.py):
tokens refill at ``1 / rateLimit`` per millisecond up to ``capacity`` (ccxt's
default 1), the bucket starts empty, a caller goes when the bucket is not in
debt (tokens >= 0) and then takes its endpoint's ``cost``, so one expensive
call may overdraw and the next caller waits the debt off. One difference:
ccxt refills only while someone waits, so after an idle spell its next caller
still waits; here idle time refills the bucket (never above ``capacity``).
ccxt's optional rolling-window limiter (off by default for every exchange we
support) is not reproduced: its leaky-bucket weights are what the guard uses.

Callers reserve their slot when they arrive, so they go strictly in arrival
order (FIFO) without polling; a cancelled caller gives its slot back when
nobody has queued behind it, otherwise the slot stays unused (a lower rate,
never a higher one). With Redis configured the same bucket lives in one hash
per exchange, updated by an atomic Lua script on Redis's clock, so every
process of a deployment shares the exchange's budget and its pauses. If Redis
is unreachable the guard falls back to its in-process bucket rather than stop
trading data.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, replace
from typing import Any, Protocol

import structlog

from cryptodesk.adapters.redis_client import UNAVAILABLE, Reconnect, redis_client

log = structlog.get_logger(__name__)


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def time(self) -> float: ...
    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class RateLimitedError(Exception):
    """The limiter would make this caller wait longer than it is willing to
    (typically a long Retry-After or a 418 ban): fail now, try again later."""

    def __init__(self, name: str, *, retry_in: float, max_wait: float) -> None:
        self.name = name
        self.retry_in = retry_in
        super().__init__(
            f"{name}: rate limited; the next call is allowed in {retry_in:.1f}s, "
            f"longer than the {max_wait:.0f}s a caller waits"
        )


# -- the bucket -------------------------------------------------------------------


@dataclass(frozen=True)
class Reservation:
    """A slot in the bucket's queue: go in ``wait_ms``, at bucket time ``at_ms``.

    ``epoch`` changes with every pause (slots taken before it are void);
    ``seq`` identifies the newest reservation, the only one that can be refunded.
    """

    wait_ms: float
    at_ms: float
    epoch: int
    seq: int
    shared: bool = False


@dataclass(frozen=True)
class Admission:
    waited: float  # seconds this caller slept in the limiter
    at_ms: float  # bucket time of its slot (Redis server time when shared)


class TokenBucket:
    """The in-process bucket; ``_LUA`` below is the same algorithm for Redis.

    Times are milliseconds on any monotonic clock. State is the token count at
    bucket time ``at``, which runs ahead of ``now`` while slots are reserved.
    """

    def __init__(self, *, rate_limit_ms: float, capacity: float = 1.0) -> None:
        self.rate = rate_limit_ms
        self.capacity = capacity
        self.tokens = 0.0
        self.at: float | None = None
        self.paused_until = 0.0
        self.epoch = 0
        self.seq = 0

    def reserve(self, now: float, cost: float) -> Reservation:
        at = now if self.at is None else self.at
        t = max(now, at, self.paused_until)
        tokens = self.capacity if self.rate <= 0 else min(
            self.capacity, self.tokens + (t - at) / self.rate
        )  # fmt: skip
        if tokens < 0:  # in debt: wait until it is repaid
            t -= tokens * self.rate
            tokens = 0.0
        self.tokens, self.at = tokens - cost, t
        self.seq += 1
        return Reservation(t - now, t, self.epoch, self.seq)

    def confirm(self, now: float, held: Reservation, cost: float) -> Reservation:
        """After waiting for ``held``: go now, or queue again if a pause voided it."""
        if held.epoch == self.epoch:
            return replace(held, wait_ms=0.0)
        return self.reserve(now, cost)

    def refund(self, held: Reservation, cost: float) -> None:
        if held.seq == self.seq:  # nobody queued behind it: the slot is free again
            self.tokens += cost

    def pause(self, now: float, ms: float) -> float:
        """Nobody goes before ``now + ms``; then the bucket restarts empty."""
        until = now + ms
        if until > self.paused_until:
            self.paused_until, self.at, self.tokens = until, until, 0.0
            self.epoch += 1
            self.seq += 1
        return max(0.0, self.paused_until - now)

    def paused_for(self, now: float) -> float:
        return max(0.0, self.paused_until - now)


# KEYS[1] = bucket hash; ARGV = mode, cost, rate (ms per unit), capacity, arg.
# Numbers are kept as %.17g strings: Lua would otherwise round them to 14 digits.
_LUA = """
local key, mode = KEYS[1], ARGV[1]
local cost, rate = tonumber(ARGV[2]), tonumber(ARGV[3])
local cap, arg = tonumber(ARGV[4]), tonumber(ARGV[5])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local s = redis.call('HMGET', key, 'tokens', 'at', 'paused_until', 'epoch', 'seq')
local tokens, at = tonumber(s[1]) or 0, tonumber(s[2]) or now
local paused, epoch, seq = tonumber(s[3]) or 0, tonumber(s[4]) or 0, tonumber(s[5]) or 0
local function fmt(x) return string.format('%.17g', x) end
local function save()
  redis.call('HSET', key, 'tokens', fmt(tokens), 'at', fmt(at), 'paused_until', fmt(paused),
             'epoch', epoch, 'seq', seq)
  local full = at + math.max(0, cap - tokens) * rate
  redis.call('PEXPIRE', key, math.ceil(math.max(full, paused, now) - now) + 60000)
end
if mode == 'confirm' and epoch == arg then return {'0', '', epoch, -1} end
if mode == 'refund' then
  if seq == arg then tokens = tokens + cost; save() end
  return {'0', '', epoch, seq}
end
if mode == 'pause' then
  if now + arg > paused then
    paused = now + arg; at = paused; tokens = 0; epoch = epoch + 1; seq = seq + 1; save()
  end
  return {fmt(math.max(0, paused - now)), '', epoch, seq}
end
if mode == 'peek' then return {fmt(math.max(0, paused - now)), '', epoch, seq} end
local t = math.max(now, at, paused)
if rate > 0 then tokens = math.min(cap, tokens + (t - at) / rate) else tokens = cap end
if tokens < 0 then t = t - tokens * rate; tokens = 0 end
tokens = tokens - cost; at = t; seq = seq + 1
save()
return {fmt(t - now), fmt(t), epoch, seq}
"""


class Limiter:
    """The bucket behind an async FIFO wait; shared through Redis when given a URL."""

    def __init__(
        self,
        name: str,
        *,
        rate_limit_ms: float,
        capacity: float,
        clock: Clock,
        max_wait: float,
        redis_url: str | None = None,
        key_prefix: str = "cryptodesk:",
    ) -> None:
        self.name = name
        self.max_wait = max_wait
        self._clock = clock
        self._local = TokenBucket(rate_limit_ms=rate_limit_ms, capacity=capacity)
        self._redis = (
            redis_client(redis_url, socket_timeout=2.0, connect_timeout=2.0, retries=1)
            if redis_url
            else None
        )
        self._script = self._redis.register_script(_LUA) if self._redis is not None else None
        self.key = f"{key_prefix}exchange:{name}:limiter"
        self._reconnect = Reconnect(f"{name} rate limiter (in-process meanwhile)")
        self._reserving = asyncio.Lock()

    async def acquire(self, cost: float) -> Admission:
        """Wait for a slot of ``cost`` (FIFO; cancelling gives the slot back)."""
        held = await self._reserve(cost)
        waited = 0.0
        try:
            while held.wait_ms > 0:
                if held.wait_ms > self.max_wait * 1000:
                    raise RateLimitedError(
                        self.name, retry_in=held.wait_ms / 1000, max_wait=self.max_wait
                    )
                await self._clock.sleep(held.wait_ms / 1000)
                waited += held.wait_ms / 1000
                held = await self._confirm(held, cost)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._refund(held, cost)
            raise
        return Admission(waited, held.at_ms)

    async def pause(self, seconds: float) -> float:
        """Hold every caller for ``seconds``; returns the pause now in force."""
        ms = max(0.0, seconds) * 1000
        reply = await self._shared("pause", 0.0, ms)
        if reply is None:
            return self._local.pause(self._now(), ms) / 1000
        return reply.wait_ms / 1000

    async def paused_for(self) -> float:
        reply = await self._shared("peek", 0.0, 0.0)
        if reply is None:
            return self._local.paused_for(self._now()) / 1000
        return reply.wait_ms / 1000

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    def _now(self) -> float:
        return self._clock.monotonic() * 1000

    async def _reserve(self, cost: float) -> Reservation:
        # Concurrent commands travel on different pooled connections and could
        # reach Redis out of order: one reservation in flight keeps arrival order.
        async with self._reserving:
            reply = await self._shared("reserve", cost, 0.0)
        return reply if reply is not None else self._local.reserve(self._now(), cost)

    async def _confirm(self, held: Reservation, cost: float) -> Reservation:
        if held.shared:
            async with self._reserving:  # it may queue again: keep arrival order
                reply = await self._shared("confirm", cost, float(held.epoch))
            if reply is not None:
                return replace(held, wait_ms=0.0) if reply.seq == -1 else reply
            return self._local.reserve(self._now(), cost)
        return self._local.confirm(self._now(), held, cost)

    async def _refund(self, held: Reservation, cost: float) -> None:
        if not held.shared:
            self._local.refund(held, cost)
        else:
            await self._shared("refund", cost, float(held.seq))

    async def _shared(self, mode: str, cost: float, arg: float) -> Reservation | None:
        """Run the Lua bucket; None when there is no Redis or it is unreachable.

        After a failure the in-process bucket serves until the backoff says to
        try Redis again, so a dead Redis costs no connect timeout per request.
        """
        if self._script is None or self._reconnect.due_in() > 0:
            return None
        bucket = self._local
        try:
            reply: list[Any] = await self._script(
                keys=[self.key], args=[mode, cost, bucket.rate, bucket.capacity, arg]
            )
        except UNAVAILABLE as exc:
            self._reconnect.failed(exc)
            return None
        self._reconnect.succeeded()
        wait, at, epoch, seq = reply
        return Reservation(float(wait), float(at or 0), int(epoch), int(seq), shared=True)


def limiter_redis_url(cache_url: str) -> str | None:
    """The Redis to share limiter buckets through: the cache's, when it is Redis."""
    return cache_url if cache_url.startswith(("redis://", "rediss://")) else None
