"""In-process cache: the embedded default, and the twin the Redis cache is held to.

Like Redis it has one keyspace: a key holds either a value (``set``) or a list
(``push_capped``), and reading it as the other kind raises ``CacheTypeError``
(Redis's WRONGTYPE). TTLs run on a monotonic clock, so a wall-clock jump
never expires or revives anything; the clock is injectable for tests.

Publish/subscribe is fire-and-forget, as in Redis: a subscription sees only
what is published after it was made. Each subscription has a bounded queue
(``subscriber_queue`` messages); when a slow reader lets it fill, the oldest
pending message is dropped (counted in ``Subscription.dropped``), so one slow
reader can neither block publishers nor grow memory without bound. Readers
that must see everything read the bus, not the cache.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

from cryptodesk.adapters.cache.inbox import Inbox

DEFAULT_SUBSCRIBER_QUEUE = 10_000
# Expired keys are dropped when read; a full sweep also runs once the TTL writes
# since the last sweep reach the number of TTL keys that sweep left, so a sweep
# costs O(1) per write amortised and unread expired keys stay a bounded fraction.
_SWEEP_MIN_WRITES = 1024


class CacheClosedError(RuntimeError):
    """The cache was closed."""


class CacheTypeError(TypeError):
    """A value key was used as a list or the other way round (Redis WRONGTYPE)."""


class MemorySubscription:
    """Messages published on ``channel`` after this subscription was made."""

    def __init__(self, owner: MemoryCache, channel: str, maxlen: int) -> None:
        self.channel = channel
        self._owner = owner
        self._inbox = Inbox(maxlen)

    @property
    def dropped(self) -> int:
        """Messages lost because this reader fell behind."""
        return self._inbox.dropped

    def _deliver(self, message: bytes) -> None:
        self._inbox.put(message)

    async def get(self, timeout: float | None = None) -> bytes | None:
        """The next message; None after ``timeout`` seconds or once closed."""
        return await self._inbox.get(timeout)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """Yield messages until the subscription (or the cache) is closed."""
        while (message := await self.get()) is not None:
            yield message

    async def close(self) -> None:
        """Unsubscribe; pending messages are discarded and readers get None."""
        if self._inbox.ended:
            return
        self._inbox.end(discard=True)
        self._owner._unsubscribe(self)


class MemoryCache:
    """The ``Cache`` protocol in one process; see the module docstring."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        subscriber_queue: int = DEFAULT_SUBSCRIBER_QUEUE,
    ) -> None:
        if subscriber_queue < 1:
            raise ValueError("subscriber_queue must be at least 1")
        self._clock = clock
        self._subscriber_queue = subscriber_queue
        self._data: dict[str, bytes | list[bytes]] = {}
        self._expires: dict[str, float] = {}  # key -> clock() deadline
        self._ttl_writes = 0
        self._sweep_after = _SWEEP_MIN_WRITES
        self._channels: dict[str, set[MemorySubscription]] = {}
        self._closed = False

    # ---- keys -----------------------------------------------------------------
    def _live(self, key: str) -> bytes | list[bytes] | None:
        if self._closed:
            raise CacheClosedError("the cache is closed")
        value = self._data.get(key)
        if value is not None and key in self._expires and self._expires[key] <= self._clock():
            del self._data[key], self._expires[key]
            return None
        return value

    async def get(self, key: str) -> bytes | None:
        value = self._live(key)
        if isinstance(value, list):
            raise CacheTypeError(f"{key!r} holds a list")
        return value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [await self.get(key) for key in keys]

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store ``value``; without ``ttl`` any earlier expiry is cleared (as Redis SET)."""
        await self.set_many({key: value}, ttl=ttl)

    async def set_many(self, items: Mapping[str, bytes], *, ttl: float | None = None) -> None:
        if self._closed:
            raise CacheClosedError("the cache is closed")
        if ttl is not None and ttl <= 0:
            raise ValueError("ttl must be positive seconds")
        for key, value in items.items():
            if not isinstance(value, bytes):
                raise TypeError(f"cache values are bytes, got {type(value).__name__} for {key!r}")
        self._data.update(items)
        if ttl is None:
            for key in items:
                self._expires.pop(key, None)
            return
        deadline = self._clock() + ttl
        self._expires.update(dict.fromkeys(items, deadline))
        self._ttl_writes += len(items)
        if self._ttl_writes >= self._sweep_after:
            self.sweep()

    def sweep(self) -> int:
        """Drop every expired key now; returns how many were dropped."""
        now = self._clock()
        expired = [key for key, deadline in self._expires.items() if deadline <= now]
        for key in expired:
            del self._data[key], self._expires[key]
        self._ttl_writes = 0
        self._sweep_after = max(_SWEEP_MIN_WRITES, len(self._expires))
        return len(expired)

    async def delete(self, key: str) -> None:
        if self._closed:
            raise CacheClosedError("the cache is closed")
        self._data.pop(key, None)
        self._expires.pop(key, None)

    def __len__(self) -> int:
        """Keys held, including expired ones not yet swept (for tests and metrics)."""
        return len(self._data)

    # ---- capped lists -----------------------------------------------------------
    async def push_capped(self, key: str, values: Sequence[bytes], *, maxlen: int) -> None:
        """RPUSH then LTRIM to the last ``maxlen``; an empty push changes nothing."""
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        current = self._live(key)
        if not values:
            return
        if isinstance(current, bytes):
            raise CacheTypeError(f"{key!r} holds a value, not a list")
        if current is None:
            current = self._data[key] = []
        current.extend(values)
        if len(current) > maxlen:
            del current[: len(current) - maxlen]

    async def list_range(self, key: str, start: int = 0, end: int = -1) -> list[bytes]:
        """Items ``start..end`` inclusive with Redis LRANGE's index rules."""
        current = self._live(key)
        if current is None:
            return []
        if isinstance(current, bytes):
            raise CacheTypeError(f"{key!r} holds a value, not a list")
        n = len(current)
        # LRANGE clamps instead of failing: negative indexes count from the end,
        # a start before the head becomes 0 and an end past the tail the last item.
        start = max(start + n if start < 0 else start, 0)
        end = min(end + n if end < 0 else end, n - 1)
        return current[start : end + 1] if start <= end else []

    # ---- publish / subscribe --------------------------------------------------------
    async def publish(self, channel: str, message: bytes) -> int:
        if self._closed:
            raise CacheClosedError("the cache is closed")
        if not isinstance(message, bytes):
            raise TypeError(f"messages are bytes, got {type(message).__name__}")
        subscribers = self._channels.get(channel, ())
        for subscription in subscribers:
            subscription._deliver(message)
        return len(subscribers)

    async def subscribe(self, channel: str) -> MemorySubscription:
        if self._closed:
            raise CacheClosedError("the cache is closed")
        subscription = MemorySubscription(self, channel, self._subscriber_queue)
        self._channels.setdefault(channel, set()).add(subscription)
        return subscription

    def _unsubscribe(self, subscription: MemorySubscription) -> None:
        subscribers = self._channels.get(subscription.channel)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._channels[subscription.channel]

    # ---- lifecycle --------------------------------------------------------------
    async def ping(self) -> None:
        if self._closed:
            raise CacheClosedError("the cache is closed")

    async def close(self) -> None:
        """Drop everything and end every subscription; later calls raise."""
        if self._closed:
            return
        self._closed = True
        for subscribers in list(self._channels.values()):
            for subscription in list(subscribers):
                await subscription.close()
        self._data.clear()
        self._expires.clear()
