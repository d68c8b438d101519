"""Job locks on Redis: a lease is ``SET key token NX PX ttl``.

Extending and releasing compare the token inside a Lua script, so a holder
whose lease already expired (a long GC pause, a network split) can never
renew or delete the lease another process has taken since.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from redis.asyncio import Redis

from cryptodesk.adapters.redis_client import redis_client

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


def _ms(ttl: float) -> int:
    if not ttl > 0:
        raise ValueError("ttl must be positive seconds")
    return max(1, math.ceil(ttl * 1000))


class RedisJobLock:
    """Leases under ``key_prefix + "lock:" + name``; ``close()`` closes the client."""

    def __init__(self, client: Redis, *, key_prefix: str = "cryptodesk:") -> None:
        self._client = client
        self._prefix = f"{key_prefix}lock:"
        self._release: Any = client.register_script(_RELEASE)
        self._extend: Any = client.register_script(_EXTEND)

    @classmethod
    def from_url(
        cls, url: str, *, key_prefix: str = "cryptodesk:", socket_timeout: float = 2.0
    ) -> RedisJobLock:
        client = redis_client(
            url, socket_timeout=socket_timeout, connect_timeout=socket_timeout, retries=2
        )
        return cls(client, key_prefix=key_prefix)

    async def acquire(self, name: str, *, ttl: float) -> str | None:
        token = uuid.uuid4().hex
        taken = await self._client.set(self._prefix + name, token.encode(), nx=True, px=_ms(ttl))
        return token if taken else None

    async def extend(self, name: str, token: str, *, ttl: float) -> bool:
        done = await self._extend(keys=[self._prefix + name], args=[token.encode(), _ms(ttl)])
        return bool(done)

    async def release(self, name: str, token: str) -> bool:
        done = await self._release(keys=[self._prefix + name], args=[token.encode()])
        return bool(done)

    async def close(self) -> None:
        await self._client.aclose()
