"""Job locks as PostgreSQL session advisory locks, for deployments without Redis.

``pg_try_advisory_lock`` belongs to the session that took it, so each held
lock keeps one connection of its own until released; if the holder dies, its
connection closes and the server releases the lock at once (no lease to wait
out, and ``ttl`` is not needed). Lock names map to the 64-bit advisory key
space through a stable hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


def advisory_key(name: str) -> int:
    """A signed 64-bit key for ``name``, the same in every process and release."""
    digest = hashlib.blake2b(f"cryptodesk:job:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresJobLock:
    """Advisory locks through ``engine``; each held lock pins one pooled connection."""

    def __init__(self, engine: AsyncEngine) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError("advisory locks need PostgreSQL")
        self._engine = engine
        self._held: dict[str, tuple[str, AsyncConnection]] = {}

    async def acquire(self, name: str, *, ttl: float) -> str | None:
        if name in self._held:  # advisory locks are re-entrant per session; ours are not
            return None
        conn = await self._engine.connect()
        try:
            taken = await conn.scalar(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": advisory_key(name)}
            )
            # The lock outlives the transaction; do not sit "idle in transaction".
            await conn.commit()
        except BaseException:
            await conn.close()
            raise
        if not taken:
            await conn.close()
            return None
        token = uuid.uuid4().hex
        self._held[name] = (token, conn)
        return token

    async def extend(self, name: str, token: str, *, ttl: float) -> bool:
        held = self._held.get(name)
        if held is None or held[0] != token:
            return False
        conn = held[1]
        try:
            await conn.execute(text("SELECT 1"))
            await conn.commit()
        except Exception:
            # The session is gone, and the lock with it.
            del self._held[name]
            await _discard(conn)
            return False
        return True

    async def release(self, name: str, token: str) -> bool:
        held = self._held.get(name)
        if held is None or held[0] != token:
            return False
        del self._held[name]
        conn = held[1]
        try:
            released = await conn.scalar(
                text("SELECT pg_advisory_unlock(:key)"), {"key": advisory_key(name)}
            )
            await conn.commit()
        except Exception:
            await _discard(conn)
            return False
        await conn.close()
        return bool(released)

    async def close(self) -> None:
        held, self._held = self._held, {}
        for _, conn in held.values():
            await _discard(conn)


async def _discard(conn: AsyncConnection) -> None:
    """Close a connection without returning its session (and any lock) to the pool."""
    with contextlib.suppress(Exception):
        await conn.invalidate()
    with contextlib.suppress(Exception):
        await conn.close()
