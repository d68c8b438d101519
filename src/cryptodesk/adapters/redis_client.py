"""One way to build a redis-py asyncio client, and to ride out a Redis outage.

The client: binary values (no decoding), keepalive, socket timeouts, and
commands retried on connection errors and timeouts with exponential backoff
and full jitter (50 ms base, 1 s cap), so a blip or a failover is ridden out
inside one command and a dead Redis surfaces as an exception, never a hang.

A restart or an outage outlasts those few retries. Loops that must not lose
their work to it (bus publishers, consumers and acks; pub/sub readers) keep
trying with ``Reconnect``: the same backoff, without a limit, reset by the
first success, and logged once per attempt so an operator sees what waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import structlog
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cryptodesk.domain.backoff import backoff_delays

__all__ = ["UNAVAILABLE", "Reconnect", "redis_client", "until_available"]

log = structlog.get_logger(__name__)
T = TypeVar("T")

# Errors meaning "Redis is not there right now", worth retrying later: refused or
# broken connections, timeouts, a server still loading its data (BusyLoadingError
# is a ConnectionError) and a replica refusing writes during a failover.
UNAVAILABLE: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, ReadOnlyError)
# First wait and longest wait between two attempts of a loop at an unreachable Redis.
RECONNECT_INITIAL_SECONDS = 0.05
RECONNECT_CAP_SECONDS = 5.0


def redis_client(
    url: str,
    *,
    socket_timeout: float,
    connect_timeout: float,
    retries: int,
    health_check_interval: int = 0,
) -> Redis:
    return Redis.from_url(
        url,
        decode_responses=False,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        socket_keepalive=True,
        retry=Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=health_check_interval,
    )


class Reconnect:
    """When a loop that lost Redis may try again: exponential backoff, full jitter, no limit.

    ``failed`` counts an attempt and returns how long to wait; ``succeeded``
    resets the schedule. ``due_in`` lets a caller that cannot wait now (a fetch
    whose timeout ends first) come back later without trying early.
    """

    def __init__(
        self,
        what: str,
        *,
        initial: float = RECONNECT_INITIAL_SECONDS,
        cap: float = RECONNECT_CAP_SECONDS,
    ) -> None:
        self.what = what
        self.failures = 0
        self._initial = initial
        self._cap = cap
        self._delays: Iterator[float] | None = None
        self._next_attempt = 0.0  # event-loop time

    def failed(self, error: BaseException) -> float:
        if self._delays is None:
            self._delays = backoff_delays(self._initial, self._cap)
        self.failures += 1
        delay = next(self._delays)
        self._next_attempt = asyncio.get_running_loop().time() + delay
        log.warning(
            "redis unreachable, retrying",
            what=self.what,
            attempt=self.failures,
            error=str(error) or type(error).__name__,
            retry_in=round(delay, 3),
        )
        return delay

    def succeeded(self) -> None:
        if self.failures:
            log.info("redis reachable again", what=self.what, attempts=self.failures)
        self.failures = 0
        self._delays = None
        self._next_attempt = 0.0

    def due_in(self) -> float:
        """Seconds until the next attempt is due; <= 0 when it may be made now."""
        return self._next_attempt - asyncio.get_running_loop().time()


async def until_available(
    call: Callable[[], Awaitable[T]], reconnect: Reconnect, *, stopped: Callable[[], bool]
) -> T:
    """``call()`` again after each UNAVAILABLE error, with ``reconnect``'s backoff.

    Once ``stopped()`` is true a failure is raised instead of retried, so a
    closed adapter does not wait forever for a Redis that may never return.
    """
    while True:
        try:
            result = await call()
        except UNAVAILABLE as exc:
            if stopped():
                raise
            await asyncio.sleep(reconnect.failed(exc))
            continue
        reconnect.succeeded()
        return result
