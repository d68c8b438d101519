"""The job-lock interface: one holder per name, with a lease that must be renewed.

Three implementations: in-process (the embedded single-process default),
Redis (``SET NX PX`` leases, for deployments with a shared cache) and
PostgreSQL advisory locks (shared database, no Redis). A holder that dies
loses the lock by itself: the Redis lease expires, the PostgreSQL session
ends, the process that held the in-process lock is gone.
"""

from __future__ import annotations

from typing import Protocol


class JobLock(Protocol):
    async def acquire(self, name: str, *, ttl: float) -> str | None:
        """Take ``name`` for ``ttl`` seconds; a token to extend/release it, or None if held."""
        ...

    async def extend(self, name: str, token: str, *, ttl: float) -> bool:
        """Renew the lease for another ``ttl`` seconds; False when it was lost."""
        ...

    async def release(self, name: str, token: str) -> bool:
        """Give ``name`` up if ``token`` still holds it; False when it did not."""
        ...

    async def close(self) -> None: ...
