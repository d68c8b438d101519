"""One way to build a redis-py asyncio client, shared by the Redis cache and bus.

Binary values (no decoding), keepalive, socket timeouts, and commands retried
on connection errors and timeouts with exponential backoff and full jitter
(50 ms base, 1 s cap), so a Redis restart is ridden out and a dead Redis
surfaces as an exception, never a hang.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


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
