"""In-process job locks: enough when one process runs every role."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable


class MemoryJobLock:
    """Leases in a dict; share one instance between the schedulers it must serialise."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._held: dict[str, tuple[str, float]] = {}
        self._clock = clock

    def _holder(self, name: str) -> str | None:
        held = self._held.get(name)
        if held is None:
            return None
        token, expires = held
        if expires <= self._clock():
            del self._held[name]
            return None
        return token

    async def acquire(self, name: str, *, ttl: float) -> str | None:
        _check_ttl(ttl)
        if self._holder(name) is not None:
            return None
        token = uuid.uuid4().hex
        self._held[name] = (token, self._clock() + ttl)
        return token

    async def extend(self, name: str, token: str, *, ttl: float) -> bool:
        _check_ttl(ttl)
        if self._holder(name) != token:
            return False
        self._held[name] = (token, self._clock() + ttl)
        return True

    async def release(self, name: str, token: str) -> bool:
        if self._holder(name) != token:
            return False
        del self._held[name]
        return True

    async def close(self) -> None:
        self._held.clear()


def _check_ttl(ttl: float) -> None:
    if not ttl > 0:
        raise ValueError("ttl must be positive seconds")
