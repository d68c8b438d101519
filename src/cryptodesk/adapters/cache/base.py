"""The cache: short-lived latest state, capped lists and publish/subscribe.

Values are bytes. Every implementation (memory, Redis) passes
``tests/contracts/cache_contract.py``. A cache may lose everything at any
time; nothing is stored only here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol


class Subscription(Protocol):
    """Messages published on a channel after the subscription was made."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def get(self, timeout: float | None = None) -> bytes | None:
        """The next message, or None after ``timeout`` seconds."""
        ...

    async def close(self) -> None: ...


class Cache(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store ``value``; it disappears ``ttl`` seconds later when given."""
        ...

    async def set_many(self, items: Mapping[str, bytes], *, ttl: float | None = None) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def push_capped(self, key: str, values: Sequence[bytes], *, maxlen: int) -> None:
        """Append ``values`` to the list at ``key`` and keep only its last ``maxlen`` items."""
        ...

    async def list_range(self, key: str, start: int = 0, end: int = -1) -> list[bytes]:
        """Items ``start..end`` inclusive, negative indexes from the end (as Redis LRANGE)."""
        ...

    async def publish(self, channel: str, message: bytes) -> int:
        """Send to current subscribers; returns how many received it."""
        ...

    async def subscribe(self, channel: str) -> Subscription: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
