"""Token-bucket rate limits of API requests: in-process, or shared through Redis.

The Redis limiter (``adapters.ratelimit.redis``) is imported only when the
cache is Redis, so an embedded process never loads the Redis client.
"""

from __future__ import annotations

from cryptodesk.adapters.ratelimit.base import Decision, RateLimiter, Tier
from cryptodesk.adapters.ratelimit.memory import MemoryRateLimiter

__all__ = ["Decision", "MemoryRateLimiter", "RateLimiter", "Tier", "open_rate_limiter"]


def open_rate_limiter(cache_url: str, *, key_prefix: str = "cryptodesk:") -> RateLimiter:
    """Shared through the cache's Redis when the cache is Redis, else in-process."""
    if cache_url.startswith(("redis://", "rediss://")):
        from cryptodesk.adapters.ratelimit.redis import RedisRateLimiter

        return RedisRateLimiter.from_url(cache_url, key_prefix=key_prefix)
    return MemoryRateLimiter()
