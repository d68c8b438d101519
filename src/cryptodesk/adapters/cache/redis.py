"""The ``Cache`` protocol on Redis, shared by every process of a deployment.

Semantics follow the memory twin (``cache/memory.py``): one keyspace where a
key holds a value or a list and reading it as the other kind raises
``CacheTypeError`` (Redis's WRONGTYPE); ``ValueError`` for a ttl <= 0 or a
maxlen < 1; ``TypeError`` for values that are not bytes; ``CacheClosedError``
after ``close()``. One difference is Redis's own: MGET reports a key that
holds a list as missing, so ``get_many`` returns None where the twin raises.

Every key and channel starts with ``key_prefix``, so several deployments (or
tests) can share one Redis without seeing each other.

Each subscription holds its own PubSub connection, so PUBLISH counts it as one
receiver exactly as the twin does. A reader task drains that connection into a
bounded local queue that drops its oldest message when a slow reader lets it
fill (``RedisSubscription.dropped``), as in the twin; draining promptly also
keeps Redis from disconnecting the slow client at its output-buffer limit.

Connection failures propagate as redis-py exceptions (the runtime maps them):
the cache is best effort and its callers fall back to the database. The client
retries a command on connection errors with exponential backoff and jitter; a
retried RPUSH or PUBLISH whose reply was lost may run twice, which at-least-once
readers already tolerate. Once Redis is back the next command reconnects.

A capped list that missed a push (Redis unreachable, so the push may or may not
have happened) would otherwise keep a hole in the middle once pushes succeed
again, and a reader of "the newest N items" would get a wrong answer. So its
next successful push starts the list over, in the same MULTI: the list is then
shorter, never wrong, and the writer can refill it from its source.

A subscription's reader rides out an outage of any length: it reconnects and
subscribes again with ``redis_client.Reconnect``'s backoff. What is published
meanwhile is lost, as pub/sub promises nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, cast

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError, ResponseError

from cryptodesk.adapters.cache.inbox import Inbox
from cryptodesk.adapters.cache.memory import (
    DEFAULT_SUBSCRIBER_QUEUE,
    CacheClosedError,
    CacheTypeError,
)
from cryptodesk.adapters.redis_client import UNAVAILABLE, Reconnect, redis_client

__all__ = ["CacheClosedError", "CacheTypeError", "RedisCache", "RedisSubscription"]

log = structlog.get_logger(__name__)

# A reader waits this long for a message before looping, which lets redis-py's
# health check PING an idle subscription connection and notice that it died.
_READ_POLL_SECONDS = 5.0


@contextlib.contextmanager
def _wrongtype(key: str) -> Iterator[None]:
    """Turn Redis's WRONGTYPE into the twin's ``CacheTypeError``."""
    try:
        yield
    except ResponseError as exc:
        if "WRONGTYPE" in str(exc):
            raise CacheTypeError(f"{key!r} holds another kind of value") from exc
        raise


def _ttl_ms(ttl: float | None) -> int | None:
    if ttl is None:
        return None
    if ttl <= 0:
        raise ValueError("ttl must be positive seconds")
    return max(1, math.ceil(ttl * 1000))  # never shorter than asked, never PX 0


def _check_bytes(key: str, value: object) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"cache values are bytes, got {type(value).__name__} for {key!r}")


class RedisSubscription:
    """Messages published on ``channel`` after this subscription was made."""

    def __init__(self, owner: RedisCache, pubsub: PubSub, channel: str, name: str, maxlen: int):
        self.channel = channel
        self._owner = owner
        self._pubsub = pubsub
        self._name = name  # the prefixed channel on the server
        self._inbox = Inbox(maxlen)
        self._closing = False
        self._reader = asyncio.create_task(self._read(), name=f"redis-subscription:{name}")
        self._reader.add_done_callback(self._reader_done)

    def _reader_done(self, task: asyncio.Task[None]) -> None:
        # A reader that died of something unexpected ends the subscription, so a
        # waiting get() returns None instead of hanging; close() still cleans up.
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("redis subscription reader failed", channel=self.channel, error=repr(error))
        self._inbox.end(discard=False)  # what was read stays readable

    @property
    def dropped(self) -> int:
        """Messages lost because this reader fell behind."""
        return self._inbox.dropped

    async def _read(self) -> None:
        """Move messages from the connection to the queue until unsubscribed."""
        reconnect = Reconnect(f"cache subscription {self._name}")
        while True:
            try:
                message = await self._pubsub.get_message(timeout=_READ_POLL_SECONDS)
            except (RedisError, OSError) as exc:
                if self._closing:
                    return
                # redis-py reconnects and subscribes again on the next read, for
                # as long as it takes; what was published meanwhile is lost.
                await asyncio.sleep(reconnect.failed(exc))
                continue
            reconnect.succeeded()
            if message is None:
                continue
            kind = message["type"]
            if kind == "message":
                self._inbox.put(message["data"])
            elif kind == "unsubscribe" and self._closing:
                return

    async def get(self, timeout: float | None = None) -> bytes | None:
        """The next message; None after ``timeout`` seconds or once closed."""
        return await self._inbox.get(timeout)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """Yield messages until the subscription (or the cache) is closed."""
        while (message := await self.get()) is not None:
            yield message

    async def close(self) -> None:
        """Unsubscribe; pending messages are discarded and readers get None.

        Returns once Redis confirmed the UNSUBSCRIBE (or after the client's
        socket timeout), so a PUBLISH made afterwards no longer counts this
        subscription.
        """
        if self._closing:
            return
        self._inbox.end(discard=True)
        self._owner._forget(self)
        self._closing = True
        if not self._reader.done():
            try:
                await self._pubsub.unsubscribe(self._name)
                # The reader returns when it sees the confirmation.
                await asyncio.wait([self._reader], timeout=self._owner._confirm_timeout)
            except (RedisError, OSError):
                pass  # closing the connection below unsubscribes on the server too
            finally:
                self._reader.cancel()
                await asyncio.wait([self._reader])  # never raises the reader's error
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]


class RedisCache:
    """The ``Cache`` protocol on Redis; see the module docstring."""

    def __init__(
        self,
        client: Redis,
        *,
        key_prefix: str = "cryptodesk:",
        subscriber_queue: int = DEFAULT_SUBSCRIBER_QUEUE,
        confirm_timeout: float = 5.0,
    ) -> None:
        """Wrap ``client`` (which must not decode responses); ``close()`` closes it.

        ``confirm_timeout``: how long subscribe/unsubscribe wait for Redis to confirm.
        """
        if subscriber_queue < 1:
            raise ValueError("subscriber_queue must be at least 1")
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("the Redis client must not decode responses: values are bytes")
        self._client = client
        self._prefix = key_prefix
        self._subscriber_queue = subscriber_queue
        self._confirm_timeout = confirm_timeout
        self._subscriptions: set[RedisSubscription] = set()
        # Capped lists (server names) that missed a push: the next push starts them over.
        self._torn: set[str] = set()
        self._closed = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        key_prefix: str = "cryptodesk:",
        subscriber_queue: int = DEFAULT_SUBSCRIBER_QUEUE,
        socket_timeout: float = 1.0,
        connect_timeout: float = 1.0,
        retries: int = 2,
        health_check_interval: int = 30,
    ) -> RedisCache:
        """A cache on ``redis://`` / ``rediss://`` ``url``; connects lazily.

        A command that hits a connection error or ``socket_timeout`` is retried
        ``retries`` times with exponential backoff and full jitter (50 ms base,
        1 s cap), so a Redis restart or failover is ridden out, and a dead Redis
        surfaces as an exception, never a hang. A refused connection fails in
        well under a second; a server that accepts but never answers takes
        about ``(retries + 1) ** 2 * socket_timeout`` (~9 s with the defaults),
        because redis-py retries the connect inside each retried command.
        Cache commands take well under a millisecond, so 1 s is generous.
        """
        if subscriber_queue < 1:  # before a client exists that would need closing
            raise ValueError("subscriber_queue must be at least 1")
        client = redis_client(
            url,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            retries=retries,
            health_check_interval=health_check_interval,
        )
        return cls(
            client,
            key_prefix=key_prefix,
            subscriber_queue=subscriber_queue,
            confirm_timeout=socket_timeout,
        )

    @property
    def key_prefix(self) -> str:
        """What every key and channel of this cache starts with on the server."""
        return self._prefix

    def _key(self, key: str) -> str:
        if self._closed:
            raise CacheClosedError("the cache is closed")
        return self._prefix + key

    # ---- keys -----------------------------------------------------------------
    async def get(self, key: str) -> bytes | None:
        name = self._key(key)
        with _wrongtype(key):
            value = await self._client.get(name)
        return cast("bytes | None", value)  # the client never decodes (checked in __init__)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Values in the order of ``keys``; None for a missing key (or, as MGET, a list)."""
        names = [self._key(key) for key in keys]
        if not names:
            return []
        return cast("list[bytes | None]", await self._client.mget(names))

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store ``value``; without ``ttl`` any earlier expiry is cleared (as Redis SET)."""
        name = self._key(key)
        px = _ttl_ms(ttl)
        _check_bytes(key, value)
        await self._client.set(name, value, px=px)
        self._torn.discard(name)  # SET replaced whatever list was there

    async def set_many(self, items: Mapping[str, bytes], *, ttl: float | None = None) -> None:
        """Store all of ``items`` in one MULTI, so readers never see half a batch."""
        if self._closed:
            raise CacheClosedError("the cache is closed")
        px = _ttl_ms(ttl)
        for key, value in items.items():
            _check_bytes(key, value)
        if not items:
            return
        mapping: dict[Any, bytes] = {self._prefix + key: value for key, value in items.items()}
        if px is None:
            await self._client.mset(mapping)  # MSET is atomic and clears earlier ttls
        else:
            async with self._client.pipeline(transaction=True) as pipe:
                for name, value in mapping.items():
                    pipe.set(name, value, px=px)
                await pipe.execute()
        if self._torn:
            self._torn.difference_update(mapping)

    async def delete(self, key: str) -> None:
        name = self._key(key)
        await self._client.delete(name)
        self._torn.discard(name)

    # ---- capped lists -----------------------------------------------------------
    async def push_capped(self, key: str, values: Sequence[bytes], *, maxlen: int) -> None:
        """RPUSH then LTRIM to the last ``maxlen`` in one MULTI; an empty push changes nothing.

        After a push that failed because Redis was unreachable, the next one
        first deletes the list (in the same MULTI): see the module docstring.
        """
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        name = self._key(key)
        if not values:
            return
        for value in values:
            _check_bytes(key, value)
        torn = name in self._torn
        try:
            with _wrongtype(key):
                async with self._client.pipeline(transaction=True) as pipe:
                    if torn:
                        pipe.delete(name)
                    pipe.rpush(name, *values)
                    pipe.ltrim(name, -maxlen, -1)
                    await pipe.execute()
        except UNAVAILABLE:
            self._torn.add(name)
            raise
        if torn:
            self._torn.discard(name)
            log.info("capped list started over after a missed push", key=key)

    async def list_range(self, key: str, start: int = 0, end: int = -1) -> list[bytes]:
        """Items ``start..end`` inclusive with Redis LRANGE's index rules."""
        name = self._key(key)
        with _wrongtype(key):
            items = await self._client.lrange(name, start, end)
        return cast("list[bytes]", items)

    # ---- publish / subscribe --------------------------------------------------------
    async def publish(self, channel: str, message: bytes) -> int:
        """Send to current subscribers in every process; returns how many received it."""
        name = self._key(channel)
        if not isinstance(message, bytes):
            raise TypeError(f"messages are bytes, got {type(message).__name__}")
        receivers: int = await self._client.publish(name, message)
        return receivers

    async def subscribe(self, channel: str) -> RedisSubscription:
        """Subscribe on a connection of its own; returns once Redis confirmed it."""
        name = self._key(channel)
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(name)
            async with asyncio.timeout(self._confirm_timeout):
                while True:
                    reply = await pubsub.get_message(timeout=self._confirm_timeout)
                    if reply is not None and reply["type"] == "subscribe":
                        break
        except BaseException:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            raise
        subscription = RedisSubscription(self, pubsub, channel, name, self._subscriber_queue)
        self._subscriptions.add(subscription)
        return subscription

    def _forget(self, subscription: RedisSubscription) -> None:
        self._subscriptions.discard(subscription)

    # ---- lifecycle --------------------------------------------------------------
    async def ping(self) -> None:
        """Raise the client's exception (ConnectionError, TimeoutError) if Redis is unreachable."""
        if self._closed:
            raise CacheClosedError("the cache is closed")
        await self._client.ping()

    async def close(self) -> None:
        """End every subscription and close the client; later calls raise."""
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*(sub.close() for sub in list(self._subscriptions)))
        await self._client.aclose()
