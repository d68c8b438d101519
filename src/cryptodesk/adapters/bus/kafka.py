"""The bus on Kafka (aiokafka): a topic per event kind, a partition per key hash.

* Topic ``trades`` is the Kafka topic ``{topic_prefix}trades``, created on first
  use with the configured partitions and replication factor. It is created
  explicitly because a broker's auto-creation would pick its own partition count.
* The message key is the Kafka record key, so every ``exchange:symbol`` lives on
  one partition and keeps its order. The producer uses ``acks="all"`` and, by
  default, idempotence (no duplicates when a send is retried). aiokafka keeps at
  most one batch in flight per partition, so per-key order holds with retries
  even when idempotence is off.
* A consumer is an ``AIOKafkaConsumer`` in the group, with auto-commit off:
  offsets are committed only by ``ack``, i.e. after the sink wrote. ``close``
  leaves the group without committing, so whatever was fetched and not acked is
  delivered again to the group's next consumer of that partition.
* ``Message.position`` is ``partition * 2**40 + offset`` (see ``encode_position``):
  unique in a topic, and ``ack`` decodes it back to (partition, offset).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from urllib.parse import parse_qs, urlsplit

# aiokafka ships no type information (no py.typed), so its names are Any here.
from aiokafka import (  # type: ignore[import-untyped]
    AIOKafkaConsumer,
    AIOKafkaProducer,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.errors import (  # type: ignore[import-untyped]
    CommitFailedError,
    ConsumerStoppedError,
    IllegalStateError,
    KafkaError,
    TopicAlreadyExistsError,
    for_code,
)

from cryptodesk.adapters.bus.base import Message
from cryptodesk.adapters.bus.memory import BusClosedError

log = logging.getLogger(__name__)

OFFSET_BITS = 40
_OFFSET_LIMIT = 1 << OFFSET_BITS
# 2**23 partitions keep every position inside a signed 64-bit integer (a BIGINT).
_PARTITION_LIMIT = 1 << (63 - OFFSET_BITS)
_TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno


def encode_position(partition: int, offset: int) -> int:
    """``partition * 2**40 + offset``: room for 10**12 offsets per partition."""
    if not 0 <= partition < _PARTITION_LIMIT or not 0 <= offset < _OFFSET_LIMIT:
        raise ValueError(f"partition {partition} / offset {offset} out of range")
    return (partition << OFFSET_BITS) | offset


def decode_position(position: int) -> tuple[int, int]:
    """The ``(partition, offset)`` that ``encode_position`` packed."""
    if position < 0:
        raise ValueError(f"position {position} is negative")
    return position >> OFFSET_BITS, position & (_OFFSET_LIMIT - 1)


class _Acks:
    """What one partition delivered and what of it is acked.

    Kafka stores one committed offset per partition, so acking out of order can
    only commit the contiguous acked prefix: the commit is the oldest offset still
    unacked (or one past the newest acked when nothing is pending).
    """

    __slots__ = ("acked", "pending", "top")

    def __init__(self) -> None:
        self.pending: deque[int] = deque()  # delivered offsets, ascending
        self.acked: set[int] = set()  # acked but not yet at the head of pending
        self.top = -1  # highest offset ever delivered

    def delivered(self, first: int, last: int, offsets: list[int]) -> None:
        if first <= self.top:
            # A rebalance reset this partition to its committed offset: what was
            # pending is being delivered again, so start over from here.
            self.pending.clear()
            self.acked.clear()
        self.pending.extend(offsets)
        self.top = last

    def ack(self, offset: int) -> int | None:
        """Record ``offset``; the offset to commit if the acked prefix grew."""
        pending, acked = self.pending, self.acked
        if not pending or offset < pending[0]:
            return None  # already committed, or from before a reset
        acked.add(offset)
        moved = False
        while pending and pending[0] in acked:
            acked.discard(pending.popleft())
            moved = True
        if not moved:
            return None
        return pending[0] if pending else self.top + 1


class KafkaConsumer:
    """A member of a consumer group on one topic; joins the group on first fetch."""

    def __init__(self, bus: KafkaBus, topic: str, group: str, name: str) -> None:
        self._bus = bus
        self.topic = topic
        self.group = group
        self.name = name
        self._kafka: AIOKafkaConsumer | None = None
        self._starting = asyncio.Lock()
        self._acks: dict[int, _Acks] = {}
        self._closed = False

    async def _started(self) -> AIOKafkaConsumer | None:
        async with self._starting:
            if self._kafka is None and not self._closed:
                bus = self._bus
                full = await bus.ensure_topic(self.topic)
                kafka = AIOKafkaConsumer(full, **bus.consumer_options(self.group, self.name))
                await kafka.start()
                if self._closed:  # closed while joining
                    await kafka.stop()
                    return None
                self._kafka = kafka
            return self._kafka

    async def fetch(self, max_messages: int = 1000, timeout: float = 1.0) -> list[Message]:
        """Up to ``max_messages``; the first call also joins the group (not counted
        in ``timeout``, which is how long to wait for messages)."""
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        if self._closed or self._bus.closed:
            return []
        kafka = await self._started()
        if kafka is None:
            return []
        try:
            batches = await kafka.getmany(
                timeout_ms=max(0, round(timeout * 1000)), max_records=max_messages
            )
        except ConsumerStoppedError:
            return []  # close() (ours or the bus's) while this fetch waited
        out: list[Message] = []
        prefix_len = len(self._bus.topic_prefix)
        for tp, records in batches.items():
            if not records:
                continue
            acks = self._acks.get(tp.partition)
            if acks is None:
                acks = self._acks[tp.partition] = _Acks()
            offsets = [r.offset for r in records]
            acks.delivered(offsets[0], offsets[-1], offsets)
            topic = tp.topic[prefix_len:]
            for r in records:
                key = r.key.decode() if r.key is not None else ""
                value = r.value if r.value is not None else b""
                out.append(Message(topic, key, value, encode_position(tp.partition, r.offset)))
        return out

    async def ack(self, messages: Sequence[Message]) -> None:
        """Commit the acked prefix of each partition the messages came from.

        After ``close`` acks are ignored (the group no longer knows this member),
        and a commit refused because the group rebalanced meanwhile is logged and
        dropped: either way those messages are delivered again (at least once).
        """
        kafka = self._kafka
        if not messages or kafka is None or self._closed:
            return
        commits: dict[int, int] = {}
        for m in messages:
            if m.topic != self.topic:
                continue
            partition, offset = decode_position(m.position)
            acks = self._acks.get(partition)
            if acks is not None and (commit := acks.ack(offset)) is not None:
                commits[partition] = commit
        if not commits:
            return
        full = self._bus.topic_prefix + self.topic
        offsets = {TopicPartition(full, p): o for p, o in commits.items()}
        assigned = kafka.assignment()
        offsets = {tp: o for tp, o in offsets.items() if tp in assigned}
        if not offsets:
            return
        try:
            await kafka.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("kafka commit for %s/%s dropped: %s", self.group, self.topic, exc)

    async def close(self) -> None:
        """Leave the group without committing: unacked messages go to the next consumer."""
        if self._closed:
            return
        self._closed = True
        self._bus.forget(self)
        async with self._starting:
            kafka, self._kafka = self._kafka, None
        if kafka is not None:
            await kafka.stop()


class KafkaBus:
    """The ``Bus`` protocol on a Kafka cluster; see the module docstring.

    The group timings default to production values (aiokafka's session and
    heartbeat, a 60 s rebalance window); tests against a single local broker
    pass shorter ones so a group forms in about a second. ``idempotent=False``
    is for brokers without idempotent producers (tansu 0.6 rejects aiokafka's
    InitProducerId v0); order per key still holds, a retried send may duplicate.
    """

    def __init__(
        self,
        bootstrap_servers: Sequence[str],
        *,
        topic_prefix: str = "cryptodesk.",
        partitions: int = 6,
        replication: int = 1,
        compression: str | None = None,
        client_id: str = "cryptodesk",
        idempotent: bool = True,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        rebalance_timeout_ms: int = 60_000,
        ping_timeout: float = 5.0,
    ) -> None:
        if not bootstrap_servers:
            raise ValueError("bootstrap_servers must name at least one host:port")
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        if replication < 1:
            raise ValueError("replication must be at least 1")
        if compression not in (None, "gzip", "snappy", "lz4", "zstd"):
            raise ValueError(f"compression {compression!r} is not gzip|snappy|lz4|zstd")
        if not heartbeat_interval_ms < session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be below session_timeout_ms")
        self.bootstrap_servers = list(bootstrap_servers)
        self.topic_prefix = topic_prefix
        self.partitions = partitions
        self.replication = replication
        self._compression = compression
        self._client_id = client_id
        self._idempotent = idempotent
        self._group_timings = {
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": heartbeat_interval_ms,
            "rebalance_timeout_ms": rebalance_timeout_ms,
        }
        self._ping_timeout = ping_timeout
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._starting = asyncio.Lock()
        self._topics: set[str] = set()
        self._topic_lock = asyncio.Lock()
        self._consumers: set[KafkaConsumer] = set()
        self._closed = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        topic_prefix: str = "cryptodesk.",
        partitions: int = 6,
        replication: int = 1,
        compression: str | None = None,
        client_id: str = "cryptodesk",
        **options: object,
    ) -> KafkaBus:
        """``kafka://host1:9092,host2:9092[?idempotent=false]``.

        ``options`` go to the constructor; the one query option exists because a
        deployment configures the bus by URL alone, and some brokers need it.
        """
        parts = urlsplit(url)
        if parts.scheme != "kafka":
            raise ValueError(f"bus url {url!r} is not kafka://host:port[,host:port]")
        hosts = [h.strip() for h in parts.netloc.split(",") if h.strip()]
        if not hosts:
            raise ValueError(f"bus url {url!r} names no broker")
        for name, values in parse_qs(parts.query, keep_blank_values=True).items():
            if name != "idempotent" or values[-1].lower() not in ("true", "false"):
                raise ValueError(
                    f"bus url option {name}={values[-1]!r} is not idempotent=true|false"
                )
            options.setdefault("idempotent", values[-1].lower() == "true")
        return cls(
            hosts,
            topic_prefix=topic_prefix,
            partitions=partitions,
            replication=replication,
            compression=compression,
            client_id=client_id,
            **options,  # type: ignore[arg-type]
        )

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def idempotent(self) -> bool:
        return self._idempotent

    async def start(self) -> None:
        """Connect the admin client and the producer (publishing also starts them)."""
        await self._started()

    async def _started(self) -> tuple[AIOKafkaAdminClient, AIOKafkaProducer]:
        async with self._starting:
            if self._closed:
                raise BusClosedError("the bus is closed")
            if self._admin is None:
                admin = AIOKafkaAdminClient(
                    bootstrap_servers=self.bootstrap_servers, client_id=self._client_id
                )
                await admin.start()
                self._admin = admin
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap_servers,
                    client_id=self._client_id,
                    acks="all",
                    enable_idempotence=self._idempotent,
                    compression_type=self._compression,
                    linger_ms=5,
                )
                try:
                    await producer.start()
                except BaseException as exc:
                    await producer.stop()
                    if self._idempotent and isinstance(exc, KafkaError):
                        exc.add_note(
                            "the broker may not support idempotent producers (tansu 0.6 "
                            "does not): use idempotent=False or kafka://...?idempotent=false"
                        )
                    raise
                self._producer = producer
            return self._admin, self._producer

    async def close(self) -> None:
        """Stop every consumer (no commit), the producer (flushing) and the admin client."""
        if self._closed:
            return
        self._closed = True
        for consumer in list(self._consumers):
            await consumer.close()
        async with self._starting:
            producer, self._producer = self._producer, None
            admin, self._admin = self._admin, None
        if producer is not None:
            await producer.stop()
        if admin is not None:
            await admin.close()

    async def ensure_topic(self, topic: str) -> str:
        """Create ``{prefix}{topic}`` if this bus has not yet; return the Kafka name."""
        full = self.topic_prefix + topic
        if full in self._topics:
            return full
        admin, _ = await self._started()
        async with self._topic_lock:
            if full not in self._topics:
                new = NewTopic(full, self.partitions, self.replication)
                try:
                    response = await admin.create_topics([new])
                except TopicAlreadyExistsError:
                    pass
                else:
                    for name, code, message in _topic_errors(response):
                        if code not in (0, _TOPIC_ALREADY_EXISTS):
                            raise for_code(code)(f"creating topic {name}: {message}")
                self._topics.add(full)
        return full

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        await self.publish_many(topic, ((key, value),))

    async def publish_many(self, topic: str, items: Sequence[tuple[str, bytes]]) -> None:
        """Queue every record, then wait for all acknowledgements."""
        _, producer = await self._started()
        if not items:
            return
        full = await self.ensure_topic(topic)
        send = producer.send
        futures = [await send(full, value, key=key.encode()) for key, value in items]
        await asyncio.gather(*futures)

    def consumer(self, topic: str, *, group: str, name: str = "c1") -> KafkaConsumer:
        if self._closed:
            raise BusClosedError("the bus is closed")
        consumer = KafkaConsumer(self, topic, group, name)
        self._consumers.add(consumer)
        return consumer

    def forget(self, consumer: KafkaConsumer) -> None:
        self._consumers.discard(consumer)

    def consumer_options(self, group: str, name: str) -> dict[str, object]:
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": name,
            "group_id": group,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            **self._group_timings,
        }

    async def ping(self) -> None:
        """Raise unless the cluster answers a metadata request within ``ping_timeout``."""
        async with asyncio.timeout(self._ping_timeout):
            admin, _ = await self._started()
            await admin.list_topics()


def _topic_errors(response: object) -> list[tuple[str, int, str | None]]:
    """``(topic, error_code, message)`` from any CreateTopics response version."""
    out: list[tuple[str, int, str | None]] = []
    for entry in getattr(response, "topic_errors", ()):
        name, code, *rest = entry
        out.append((name, code, rest[0] if rest else None))
    return out
