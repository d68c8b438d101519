"""The ``Bus`` protocol on Redis Streams, for deployments that run Redis but not Kafka.

One stream per topic, ``{stream_prefix}{topic}``; an entry has the fields
``key`` (UTF-8) and ``value`` (raw bytes). Publishing is XADD with
``MAXLEN ~ maxlen``: Redis trims whole nodes, so a stream holds at least
``maxlen`` entries and a little more, and a group that lags further behind than
that loses the oldest, as with Kafka retention.

A consumer group is a Redis consumer group, created on the first fetch at "0"
(a new group starts at the oldest retained entry), or at "$" (the end) for
``start="latest"``; ``delete_group`` is XGROUP DESTROY. ``fetch`` reads, in order:

1. once per consumer object, this consumer name's own pending entries
   (XREADGROUP from "0"): what a previous process with the same name fetched
   and never acked. Give consumers stable names (role + ordinal) so a restart
   resumes its own work at once;
2. entries other consumers of the group left pending for ``claim_idle_ms``
   (XAUTOCLAIM), scanned at most every ``claim_idle_ms / 2``: how the work of a
   consumer that died for good moves on. A sink must ack well within
   ``claim_idle_ms`` (default 30 s), or other consumers take its entries
   over (at-least-once, never lost; a consumer never gets back what it holds
   unacked itself). 0 reclaims at once and is for tests only: live consumers
   would take each other's batches;
3. new entries (XREADGROUP ">" with BLOCK; a timeout <= 0 reads without BLOCK,
   because BLOCK 0 means forever).

Order: one consumer sees entries in stream order, so per key too. Several
consumers of one group get batches in turn, not keys by hash like Kafka
partitions, so two consumers may process one key's entries concurrently;
where that matters run one consumer per group. Reclaimed entries are older
than what others already processed.

Redis outages: the client retries each command a few times; beyond that the
bus keeps trying with backoff and full jitter, without a limit (see
``redis_client.Reconnect``). ``publish``/``publish_many`` and ``ack`` return
only once Redis took them (or raise once the bus is closed), so a publisher
waits for Redis rather than dropping events. ``fetch`` never raises for an
unreachable Redis: it waits for the next attempt within its timeout and
returns [] when the timeout ends first, so a consumer loop just keeps
fetching; ``ping`` (``/readyz``) is what reports the outage. After a failed
read the consumer reads its own pending entries again first, because a reply
lost with the connection may have delivered entries nobody saw.

``Message.position`` encodes the stream id "ms-seq" as ``ms * 2**20 + seq``
(see ``encode_position``), so acks need no lookup table and work from any
consumer object, even after ``close()``.

An entry without both fields (written by something else, or pending while
trimming deleted it) cannot become a ``Message``: it is XACKed, logged and
skipped, so it never blocks the stream. (Decoded messages whose payload is bad
go to the ``deadletter`` topic in services/dead_letter.py; raw entries could go
there too later.)
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from cryptodesk.adapters.bus.base import Message, Start
from cryptodesk.adapters.bus.memory import BusClosedError
from cryptodesk.adapters.redis_client import (
    UNAVAILABLE,
    Reconnect,
    redis_client,
    until_available,
)

__all__ = ["BusClosedError", "RedisStreamsBus", "RedisStreamsConsumer", "decode_position",
           "encode_position"]  # fmt: skip

log = structlog.get_logger(__name__)

SEQ_BITS = 20
_SEQ_LIMIT = 1 << SEQ_BITS
_KEY, _VALUE = b"key", b"value"
# XADDs per pipeline round trip and ids per XACK: large enough to amortise the
# round trip, small enough that one reply does not hold megabytes in memory.
_PUBLISH_CHUNK = 5_000
_ACK_CHUNK = 10_000

T = TypeVar("T")
Entry = tuple[bytes, dict[bytes, bytes]]


def encode_position(stream_id: bytes | str) -> int:
    """``"ms-seq"`` as ``ms * 2**20 + seq``: unique and increasing within a stream.

    Auto ids have seq < 2**20 unless more than a million entries share one
    millisecond, which XADD outside MULTI cannot reach; ids beyond raise
    ValueError rather than collide. The result fits in 63 bits until the year 2248.
    """
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    s = int(seq)
    if s >= _SEQ_LIMIT:
        raise ValueError(f"stream id {text} has a sequence >= 2**{SEQ_BITS}")
    return (int(ms) << SEQ_BITS) | s


def decode_position(position: int) -> str:
    """The stream id that ``encode_position`` turned into ``position``."""
    return f"{position >> SEQ_BITS}-{position & (_SEQ_LIMIT - 1)}"


def _entries_of(reply: Any) -> list[Entry]:
    """The entries of a one-stream XREADGROUP reply, in any of redis-py's shapes.

    redis-py 8 answers ``[[stream, entries]]`` by default, ``{stream: [entries]}``
    with an explicit ``protocol=3`` and ``{stream: entries}`` with
    ``legacy_responses=False``; nothing to read is None, [] or {}.
    """
    if not reply:
        return []
    entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
    if entries and isinstance(entries[0], list):  # the extra list of the RESP3 shape
        entries = entries[0]
    return list(entries)


class RedisStreamsConsumer:
    """A member of a Redis consumer group on one topic; see the module docstring."""

    def __init__(
        self, bus: RedisStreamsBus, topic: str, group: str, name: str, start: Start = "earliest"
    ) -> None:
        self._bus = bus
        self.topic = topic
        self.group = group
        self.name = name
        self._stream = bus.stream(topic)
        self._start_id = "$" if start == "latest" else "0"
        self._group_ready = False
        self._backlog: str | None = "0"  # cursor in our own pending entries; None = done
        self._claim_cursor = "0-0"
        self._claim_due = 0.0  # loop time of the next XAUTOCLAIM scan
        self._closed = False
        self._reading: asyncio.Future[Any] | None = None
        # Positions this object returned and nobody acked through it yet: XAUTOCLAIM
        # (and a re-read of our own pending entries after a lost connection) also
        # match them, and we must not hand them out twice.
        self._inflight: set[int] = set()
        self._reconnect = Reconnect(f"bus consumer {self._stream} {group}/{name}")

    @property
    def _stopped(self) -> bool:
        return self._closed or self._bus.closed

    async def fetch(self, max_messages: int = 1000, timeout: float = 1.0) -> list[Message]:
        """Own pending entries first, then reclaimed ones, then new ones.

        After ``close()`` (or the bus's) it returns [] and whatever was read but
        not returned stays pending, so it is delivered again later. While Redis
        is unreachable it retries with backoff until ``timeout`` ends, then
        returns []; the next call goes on with the same backoff.
        """
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._stopped:
            wait = self._reconnect.due_in()
            if wait > 0:
                remaining = deadline - loop.time()
                await self._interruptible(asyncio.sleep(min(wait, max(0.0, remaining))))
                if wait > remaining or self._stopped:
                    return []
            try:
                out = await self._fetch(max_messages, deadline)
            except UNAVAILABLE as exc:
                if self._stopped:
                    return []
                self._reconnect.failed(exc)
                # A reply lost with the connection may have delivered entries to
                # this consumer: they are in its pending list, read them first.
                self._backlog = "0"
                continue
            self._reconnect.succeeded()
            return out
        return []

    async def _fetch(self, max_messages: int, deadline: float) -> list[Message]:
        loop = asyncio.get_running_loop()
        out: list[Message] = []
        while self._backlog is not None and len(out) < max_messages:
            entries = await self._read(self._backlog, max_messages - len(out), None)
            if not entries:
                self._backlog = None
                break
            self._backlog = entries[-1][0].decode()
            own = await self._messages(entries)
            out.extend(m for m in own if m.position not in self._inflight)
        if len(out) < max_messages and loop.time() >= self._claim_due:
            claimed = await self._messages(await self._claim(max_messages - len(out)))
            out.extend(m for m in claimed if m.position not in self._inflight)
        while len(out) < max_messages and not self._stopped:
            remaining = deadline - loop.time()
            block = None
            if not out and remaining > 0:
                block = max(1, round(min(remaining, self._bus.block_slice) * 1000))
            entries = await self._read(">", max_messages - len(out), block)
            if entries:
                out.extend(await self._messages(entries))
                if out:
                    break
            elif block is None:
                break  # a read without BLOCK found nothing new
        if self._stopped:
            return []
        self._inflight.update(m.position for m in out)
        return out

    async def ack(self, messages: Sequence[Message]) -> None:
        """XACK ``messages`` of this topic; acks after ``close()`` still count.

        Waits out a Redis outage. If the bus closes first, the rest stays
        pending and is delivered again (at-least-once).
        """
        mine = [m.position for m in messages if m.topic == self.topic]
        self._inflight.difference_update(mine)
        ids = [decode_position(p) for p in mine]
        if not ids or self._bus.closed:
            return
        client, bus = self._bus.client, self._bus
        reconnect = Reconnect(f"bus ack {self._stream} {self.group}")
        for i in range(0, len(ids), _ACK_CHUNK):
            chunk = ids[i : i + _ACK_CHUNK]

            async def send(chunk: list[str] = chunk) -> None:
                await client.xack(self._stream, self.group, *chunk)

            try:
                await until_available(send, reconnect, stopped=lambda: bus.closed)
            except UNAVAILABLE:
                return  # closed while Redis was away: redelivered later

    async def close(self) -> None:
        """Stop: a waiting fetch returns [] now; nothing is acked, so the rest is redelivered."""
        self._closed = True
        self.cancel_read()

    def cancel_read(self) -> None:
        if self._reading is not None:
            self._reading.cancel()

    async def _interruptible(self, wait: Awaitable[T]) -> T | None:
        """Await ``wait`` in a task of its own, so ``close()`` can end it without
        cancelling the caller; None when closing ended it."""
        task: asyncio.Future[T] = asyncio.ensure_future(wait)
        self._reading = task
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._stopped and (current is None or not current.cancelling()):
                return None
            raise
        finally:
            self._reading = None

    # ---- Redis calls --------------------------------------------------------------
    async def _in_group(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` with the group in place, creating it again if the stream vanished."""
        if not self._group_ready:
            await self._bus.create_group(self._stream, self.group, self._start_id)
            self._group_ready = True
        try:
            return await call()
        except ResponseError as exc:
            if not str(exc).startswith("NOGROUP"):
                raise
        await self._bus.create_group(self._stream, self.group, self._start_id)
        return await call()

    async def _read(self, after: str, count: int, block: int | None) -> list[Entry]:
        client, stream = self._bus.client, self._stream

        async def call() -> Any:
            return await client.xreadgroup(
                self.group, self.name, {stream: after}, count=count, block=block
            )

        if block is None:
            reply = await self._in_group(call)
        else:
            reply = await self._interruptible(self._in_group(call))
        return _entries_of(reply)

    async def _claim(self, count: int) -> list[Entry]:
        client, bus = self._bus.client, self._bus

        async def call() -> Any:
            return await client.xautoclaim(
                self._stream, self.group, self.name, bus.claim_idle_ms,
                start_id=self._claim_cursor, count=count,
            )  # fmt: skip

        reply = await self._in_group(call)
        cursor = reply[0].decode()
        if len(reply) > 2 and reply[2]:
            log.warning("pending bus entries were trimmed before anyone acked them",
                        stream=self._stream, group=self.group, lost=len(reply[2]))  # fmt: skip
        self._claim_cursor = cursor
        if cursor == "0-0":  # the scan went round the whole pending list
            loop = asyncio.get_running_loop()
            self._claim_due = loop.time() + bus.claim_idle_ms / 2000
        return list(reply[1])

    async def _messages(self, entries: list[Entry]) -> list[Message]:
        """Entries as Messages; undecodable ones are acked and logged so they never block."""
        out: list[Message] = []
        bad: list[bytes] = []
        topic = self.topic
        for entry_id, fields in entries:
            key, value = (
                fields.get(_KEY) if fields else None,
                fields.get(_VALUE) if fields else None,
            )
            try:
                if key is None or value is None:
                    raise ValueError("missing key or value field")
                out.append(Message(topic, key.decode(), value, encode_position(entry_id)))
            except ValueError as exc:  # UnicodeDecodeError is one too
                bad.append(entry_id)
                log.error("skipping undecodable bus entry", stream=self._stream,
                          id=entry_id.decode(), reason=str(exc))  # fmt: skip
        if bad:
            await self._bus.client.xack(self._stream, self.group, *bad)
        return out


class RedisStreamsBus:
    """Topics as Redis Streams; see the module docstring for the model.

    ``start()`` pings so a wrong URL fails at start-up. After ``close()``,
    publishing or creating consumers raises ``BusClosedError`` and existing
    consumers' ``fetch`` returns [] at once.
    """

    def __init__(
        self,
        client: Redis,
        *,
        stream_prefix: str = "cryptodesk:",
        maxlen: int = 1_000_000,
        claim_idle_ms: int = 30_000,
        block_slice: float = 2.0,
    ) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        if claim_idle_ms < 0:
            raise ValueError("claim_idle_ms must be >= 0")
        if block_slice <= 0:
            raise ValueError("block_slice must be positive")
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("the Redis client must not decode responses (values are bytes)")
        self.client = client
        self.prefix = stream_prefix
        self.maxlen = maxlen
        self.claim_idle_ms = claim_idle_ms
        # The longest single BLOCK: kept under the socket timeout, so a long
        # fetch is several short waits rather than a read the client gives up on.
        self.block_slice = block_slice
        self._closed = False
        self._consumers: weakref.WeakSet[RedisStreamsConsumer] = weakref.WeakSet()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        stream_prefix: str = "cryptodesk:",
        maxlen: int = 1_000_000,
        claim_idle_ms: int = 30_000,
        socket_timeout: float = 5.0,
        connect_timeout: float = 2.0,
        retries: int = 3,
    ) -> RedisStreamsBus:
        """A bus on ``redis://`` / ``rediss://`` ``url``; connects lazily.

        Commands hitting a connection error are retried with backoff. A retried
        XADD may add an entry twice and a retried read may leave entries pending
        for XAUTOCLAIM: both are within at-least-once.
        """
        if maxlen < 1:  # before a client exists that would need closing
            raise ValueError("maxlen must be at least 1")
        if claim_idle_ms < 0:
            raise ValueError("claim_idle_ms must be >= 0")
        client = redis_client(
            url,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            retries=retries,
        )
        return cls(
            client, stream_prefix=stream_prefix, maxlen=maxlen, claim_idle_ms=claim_idle_ms,
            block_slice=max(0.05, socket_timeout / 2),
        )  # fmt: skip

    @property
    def closed(self) -> bool:
        return self._closed

    def stream(self, topic: str) -> str:
        """The Redis key of ``topic``'s stream."""
        if self._closed:
            raise BusClosedError("the bus is closed")
        return self.prefix + topic

    async def create_group(self, stream: str, group: str, start_id: str = "0") -> None:
        try:
            await self.client.xgroup_create(stream, group, id=start_id, mkstream=True)
        except ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise

    async def delete_group(self, topic: str, group: str) -> None:
        """XGROUP DESTROY (waiting out a Redis outage until the bus closes)."""
        stream = self.stream(topic)

        async def destroy() -> None:
            try:
                await self.client.xgroup_destroy(stream, group)
            except ResponseError as exc:  # no stream, so no group either
                if "requires the key to exist" not in str(exc):
                    raise

        reconnect = Reconnect(f"bus delete group {stream} {group}")
        try:
            await until_available(destroy, reconnect, stopped=lambda: self._closed)
        except UNAVAILABLE as exc:
            raise BusClosedError("the bus closed while Redis was unreachable") from exc

    async def start(self) -> None:
        if self._closed:
            raise BusClosedError("a closed bus cannot be restarted")
        await self.client.ping()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for consumer in list(self._consumers):
            consumer.cancel_read()
        await self.client.aclose()

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        """XADD; waits out a Redis outage (see the module docstring)."""
        await self.publish_many(topic, [(key, value)])

    async def publish_many(self, topic: str, items: Sequence[tuple[str, bytes]]) -> None:
        """XADDs pipelined in order (one connection, no MULTI), in chunks.

        A chunk that fails because Redis is unreachable is sent again, whole,
        until Redis takes it: entries it had already added appear twice, which
        at-least-once consumers absorb. Raises BusClosedError if the bus is
        closed meanwhile.
        """
        stream = self.stream(topic)
        reconnect = Reconnect(f"bus publish {stream}")
        for i in range(0, len(items), _PUBLISH_CHUNK):
            chunk = items[i : i + _PUBLISH_CHUNK]

            async def send(chunk: Sequence[tuple[str, bytes]] = chunk) -> None:
                async with self.client.pipeline(transaction=False) as pipe:
                    for key, value in chunk:
                        fields: dict[Any, Any] = {_KEY: key.encode(), _VALUE: value}
                        pipe.xadd(stream, fields, maxlen=self.maxlen, approximate=True)
                    await pipe.execute()

            try:
                await until_available(send, reconnect, stopped=lambda: self._closed)
            except UNAVAILABLE as exc:
                raise BusClosedError("the bus closed while Redis was unreachable") from exc

    def consumer(
        self, topic: str, *, group: str, name: str = "c1", start: Start = "earliest"
    ) -> RedisStreamsConsumer:
        if start not in ("earliest", "latest"):
            raise ValueError(f"start must be 'earliest' or 'latest', not {start!r}")
        consumer = RedisStreamsConsumer(self, topic, group, name, start)
        self._consumers.add(consumer)
        return consumer

    async def ping(self) -> None:
        if self._closed:
            raise BusClosedError("the bus is closed")
        await self.client.ping()
