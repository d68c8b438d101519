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
  delivered again to the group's next consumer of that partition. With
  ``start="latest"`` a partition without a committed offset begins at its end,
  and that end is committed as soon as the partition is assigned, so the group
  keeps its starting point (see ``kafka_consumer``). ``delete_group`` deletes
  the whole Kafka group (DeleteGroups): a group id spans topics.
* ``Message.position`` is ``partition * 2**40 + offset`` (see ``encode_position``),
  and ``ack`` decodes it back to (partition, offset).

Losing the broker (a restart, a network cut, a whole cluster lost) is ridden out;
errors a retry can fix never reach the caller:

* Every metadata probe (``ping``, idle consumers, stalled publishes) that finds no
  broker answering starts a new *epoch*. Clients made in an older epoch are
  replaced before their next use: the producer is abandoned with whatever it
  still holds (see ``_abandoned``), consumers leave the group and join again.
  The new ones create the bus's topics first when the cluster lacks them.
* ``publish_many`` returns only once the broker acknowledged every record. Failed
  records are sent again, from the first unacknowledged one on, after a capped
  exponential backoff with full jitter. A retried send may duplicate records;
  the sinks are idempotent.
* A cluster that came back empty has no committed offsets, so a rejoined member
  reads from the oldest message; and it numbers offsets from zero again, so an
  ``ack`` counts only the very messages this member delivered since its last
  join or rebalance (older ones are delivered again instead).
* ``ping`` fails while no broker answers a metadata request, and while a publish
  is waiting for the broker; the error says which and why.

A broker that lost its data also lost what it had acknowledged and no consumer
had acknowledged yet: that is the broker's durability, which the bus cannot
restore. A broker that creates topics on a client's metadata request may create
ours with its own partition count before the bus does; the bus logs the mismatch
(``auto.create.topics.enable=false`` avoids it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Iterator, Sequence
from urllib.parse import parse_qs, urlsplit

# aiokafka ships no type information (no py.typed), so its names are Any here.
from aiokafka import (  # type: ignore[import-untyped]
    AIOKafkaProducer,
)
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.errors import (  # type: ignore[import-untyped]
    KafkaError,
    TopicAlreadyExistsError,
    for_code,
)

from cryptodesk.adapters.bus.base import Start
from cryptodesk.adapters.bus.kafka_client import (
    PROBE_SECONDS,
    BrokerUnavailable,
    abandon_producer,
    decode_position,
    delete_group,
    describe,
    encode_position,
    stop_client,
    transient,
)
from cryptodesk.adapters.bus.kafka_consumer import KafkaConsumer
from cryptodesk.adapters.bus.memory import BusClosedError
from cryptodesk.domain.backoff import backoff_delays

__all__ = [
    "BrokerUnavailable",
    "KafkaBus",
    "KafkaConsumer",
    "decode_position",
    "encode_position",
    "transient",
]

log = logging.getLogger(__name__)
_TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno


class KafkaBus:
    """The ``Bus`` protocol on a Kafka cluster; see the module docstring.

    The group timings default to production values (aiokafka's session and
    heartbeat, a 60 s rebalance window); tests against a single local broker
    pass shorter ones so a group forms in about a second. ``idempotent=False``
    is for brokers without idempotent producers (tansu 0.6 answers InitProducerId
    v3 and later only; aiokafka 0.14 sends v0); order per key still holds, a
    retried send may duplicate.
    ``retry_initial`` and ``retry_cap`` (seconds) bound the backoff of retried
    publishes and of consumers rejoining after losing the broker.
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
        retry_initial: float = 0.1,
        retry_cap: float = 5.0,
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
        if not 0 < retry_initial <= retry_cap:
            raise ValueError("retry_initial must be above 0 and at most retry_cap")
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
        self.ping_timeout = ping_timeout
        self.retry_initial = retry_initial
        self.retry_cap = retry_cap
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._starting = asyncio.Lock()
        self._topics: set[str] = set()
        self._topic_lock = asyncio.Lock()
        self._consumers: set[KafkaConsumer] = set()
        self._clients_epoch = 0  # the epoch the admin client and producer were made in
        self._probe_lock = asyncio.Lock()
        self._probe: tuple[float, dict[str, int] | None, str] = (float("-inf"), None, "")
        self._stalled: dict[int, str] = {}  # publishes waiting for the broker -> why
        self._tokens = itertools.count()
        # Counts the probes that found no broker answering (see the module docstring).
        self.epoch = 0
        self._closing = asyncio.Event()
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
            if self._clients_epoch != self.epoch:
                await self._retire_clients()
            self._clients_epoch = self.epoch
            if self._admin is None:
                admin = AIOKafkaAdminClient(
                    bootstrap_servers=self.bootstrap_servers, client_id=self._client_id
                )
                try:
                    await admin.start()
                except BaseException:
                    await admin.close()
                    raise
                self._admin = admin
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap_servers,
                    client_id=self._client_id,
                    acks="all",
                    enable_idempotence=self._idempotent,
                    compression_type=self._compression,
                    # publish_many awaits its acknowledgements, so a linger would only
                    # delay each call; records queued while a request is in flight are
                    # batched anyway (bulk throughput is the same, small publishes are
                    # several times faster).
                    linger_ms=0,
                )
                try:
                    await producer.start()
                except BaseException as exc:
                    await producer.stop()
                    if self._idempotent and isinstance(exc, KafkaError) and not transient(exc):
                        exc.add_note(
                            "the broker may not support idempotent producers (tansu 0.6 "
                            "does not): use idempotent=False or kafka://...?idempotent=false"
                        )
                    raise
                self._producer = producer
            return self._admin, self._producer

    async def _retire_clients(self) -> None:
        """Drop the clients made before the broker was last found unreachable
        (call holding ``_starting``); the next use connects new ones.

        The producer is abandoned, not flushed: aiokafka would deliver the batches
        it still holds to the broker that comes back, before the bus re-creates its
        topics there, and a broker may lose them (tansu 0.6 acknowledges a produce
        to a topic it does not have, and loses records produced while it creates
        one). Failing them makes every ``publish_many`` waiting on them send again,
        after its topic exists.
        """
        producer, self._producer = self._producer, None
        admin, self._admin = self._admin, None
        if producer is not None:
            await abandon_producer(producer, self.ping_timeout)
        if admin is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.ping_timeout):
                    await admin.close()

    async def close(self) -> None:
        """Stop every consumer (no commit), the producer (flushing, for at most
        ``ping_timeout`` when the broker is gone) and the admin client."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        for consumer in list(self._consumers):
            await consumer.close()
        async with self._starting:
            producer, self._producer = self._producer, None
            admin, self._admin = self._admin, None
        if producer is not None:
            await stop_client(producer, self.ping_timeout)
        if admin is not None:
            await admin.close()

    async def ensure_topic(self, topic: str, *, verify: bool = False) -> str:
        """Create ``{prefix}{topic}`` unless the bus knows the cluster has it (with
        ``verify``, ask the cluster again: it may have lost it); the Kafka name.

        Raises ``BrokerUnavailable`` at once while the cluster does not answer
        (aiokafka's admin would wait its 40 s request timeout for it).
        """
        full = self.topic_prefix + topic
        if full in self._topics and not verify:
            return full
        async with self._topic_lock:
            if full in self._topics and not verify:
                return full
            topics = await self.cluster_topics(max_age=0.0 if verify else PROBE_SECONDS)
            found = topics.get(full)
            if found is None:
                admin, _ = await self._started()
                try:
                    async with asyncio.timeout(self.ping_timeout):
                        await self._create_topic(admin, full)
                except BaseException:
                    await self._drop_admin(admin)
                    raise
                topics[full] = self.partitions  # the cached probe knows it now
            elif found != self.partitions:
                log.warning(
                    "kafka topic %s has %d partitions, %d configured (made elsewhere, "
                    "or auto-created by the broker)", full, found, self.partitions,
                )  # fmt: skip
            self._topics.add(full)
        return full

    async def _create_topic(self, admin: AIOKafkaAdminClient, full: str) -> None:
        new = NewTopic(full, self.partitions, self.replication)
        try:
            response = await admin.create_topics([new])
        except TopicAlreadyExistsError:
            return  # made meanwhile, by another process
        for name, code, message in _topic_errors(response):
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise for_code(code)(f"creating topic {name}: {message}")

    async def _drop_admin(self, admin: AIOKafkaAdminClient) -> None:
        """Forget a failing admin client; the next use connects a new one."""
        async with self._starting:
            if id(self._admin) != id(admin):  # already replaced
                return
            self._admin = None
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.ping_timeout):
                await admin.close()

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        await self.publish_many(topic, ((key, value),))

    async def publish_many(self, topic: str, items: Sequence[tuple[str, bytes]]) -> None:
        """Return once the broker acknowledged every record, in order.

        While the broker is away this waits; a failed send is sent again from the
        first unacknowledged record on, after a backoff. Raises ``BusClosedError``
        when the bus closes meanwhile, and errors no retry can fix (a record too
        large, a topic the broker refuses) at once.
        """
        if self._closed:
            raise BusClosedError("the bus is closed")
        if not items:
            return
        rest = list(items)
        delays: Iterator[float] | None = None
        token = next(self._tokens)
        try:
            while True:
                try:
                    _, producer = await self._started()
                    full = await self.ensure_topic(topic, verify=delays is not None)
                    sent, error = await self._send(producer, full, rest, token)
                except Exception as exc:
                    if not transient(exc):
                        raise
                    sent, error = 0, exc
                if error is None:
                    return
                rest = rest[sent:]
                delays = delays or backoff_delays(self.retry_initial, self.retry_cap)
                delay = next(delays)
                self._stalled[token] = f"publish to {topic} failed: {describe(error)}"
                log.warning(
                    "kafka publish to %s failed, sending %d records again in %.2fs: %s",
                    topic, len(rest), delay, describe(error),
                )  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), delay)
                if self._closed:
                    raise BusClosedError("the bus closed before the broker took the records")
        finally:
            self._stalled.pop(token, None)

    async def _send(
        self, producer: AIOKafkaProducer, full: str, items: list[tuple[str, bytes]], token: int
    ) -> tuple[int, BaseException | None]:
        """Queue ``items``; wait for their acknowledgements, probing the broker while
        none come. Returns how many leading records were acknowledged, and the error
        that stopped the rest (None when all were)."""
        futures: list[asyncio.Future[object]] = []
        error: BaseException | None = None
        try:
            for key, value in items:
                futures.append(await producer.send(full, value, key=key.encode()))
        except Exception as exc:
            if not transient(exc):
                if futures:  # let the queued ones finish; their outcome is moot now
                    await asyncio.wait(futures)
                raise
            error = exc
        waiting: set[asyncio.Future[object]] = set(futures)
        delays = backoff_delays(self.retry_initial, self.retry_cap)
        while waiting and not self._closed:
            _, waiting = await asyncio.wait(waiting, timeout=max(PROBE_SECONDS, next(delays)))
            if waiting:
                await self._while_stalled(full, len(waiting), token)
                if self._clients_epoch != self.epoch:  # the broker was lost meanwhile
                    async with self._starting:
                        if self._clients_epoch != self.epoch:
                            await self._retire_clients()  # fails what is waiting
        if waiting:  # closed: the producer's stop flushes or fails them
            raise BusClosedError("the bus closed before the broker took the records")
        failures = [(i, bad) for i, f in enumerate(futures) if (bad := f.exception())]
        for _, failed in failures:
            if not transient(failed):
                raise failed
        return failures[0] if failures else (len(futures), error)

    async def _while_stalled(self, full: str, waiting: int, token: int) -> None:
        """Records are unacknowledged for a while: say why. A topic gone from the
        cluster means it lost its state unnoticed: a new epoch, so the records are
        sent again once the topic exists again."""
        try:
            topics = await self.cluster_topics(max_age=PROBE_SECONDS)
        except BusClosedError:
            return
        except Exception as exc:
            reason = f"broker unreachable: {describe(exc)}"
        else:
            if full in topics:
                self._stalled.pop(token, None)
                return
            reason = f"topic {full} is gone from the cluster"
            self.epoch += 1
        self._stalled[token] = f"publish to {full} waiting: {reason}"
        log.warning("kafka publish to %s: %d records waiting, %s", full, waiting, reason)

    def consumer(
        self, topic: str, *, group: str, name: str = "c1", start: Start = "earliest"
    ) -> KafkaConsumer:
        if self._closed:
            raise BusClosedError("the bus is closed")
        if start not in ("earliest", "latest"):
            raise ValueError(f"start must be 'earliest' or 'latest', not {start!r}")
        consumer = KafkaConsumer(self, topic, group, name, start)
        self._consumers.add(consumer)
        return consumer

    async def delete_group(self, topic: str, group: str) -> None:
        """Delete the Kafka group ``group`` (all its topics); waits out a lost
        broker until the bus closes (then ``BusClosedError``)."""
        delays = backoff_delays(self.retry_initial, self.retry_cap)
        while True:
            try:
                admin, _ = await self._started()
                async with asyncio.timeout(self.ping_timeout):
                    await delete_group(admin, group)
                return
            except Exception as exc:
                if not transient(exc):
                    raise
                log.warning("kafka delete of group %s failed: %s", group, describe(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), next(delays))
            if self._closed:
                raise BusClosedError("the bus closed before the group was deleted")

    def forget(self, consumer: KafkaConsumer) -> None:
        self._consumers.discard(consumer)

    def consumer_options(self, group: str, name: str, start: Start) -> dict[str, object]:
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": name,
            "group_id": group,
            "enable_auto_commit": False,
            # A group without committed offsets (new, or on a cluster that lost
            # them) reads from the oldest message unless told to start at the end:
            # by default nothing published is skipped.
            "auto_offset_reset": start,
            **self._group_timings,
        }

    async def cluster_topics(self, *, max_age: float = 0.0) -> dict[str, int]:
        """Topic name -> partition count as the cluster reports them, from a metadata
        probe at most ``max_age`` seconds old (concurrent callers share one probe).
        Raises ``BrokerUnavailable`` when no known broker answered within
        ``ping_timeout``."""
        if self._closed:
            raise BusClosedError("the bus is closed")
        loop = asyncio.get_running_loop()
        async with self._probe_lock:
            at, topics, error = self._probe
            if loop.time() - at > max_age:
                try:
                    async with asyncio.timeout(self.ping_timeout):
                        _, producer = await self._started()
                        # Every known broker is asked in turn until one answers; the
                        # second round reconnects what the first found closed.
                        try:
                            cluster = await producer.client.fetch_all_metadata()
                        except KafkaError:
                            cluster = await producer.client.fetch_all_metadata()
                    topics = {
                        t: len(cluster.partitions_for_topic(t) or ()) for t in cluster.topics()
                    }
                    error = ""
                except BusClosedError:
                    raise
                except Exception as exc:
                    topics, error = None, describe(exc)
                self._probe = (loop.time(), topics, error)
                # A cluster that was away may come back without our topics: each is
                # created again before its next use (tansu 0.6 also fails produces
                # while it races a client's auto-creation of the same topic).
                if topics is None:
                    self._topics.clear()
                    self.epoch += 1
                else:
                    self._topics &= topics.keys()
        if topics is None:
            raise BrokerUnavailable(error)
        return topics

    async def ping(self) -> None:
        """Raise while the cluster does not answer a metadata request within
        ``ping_timeout``, or while a publish is waiting for the broker."""
        await self.cluster_topics()
        if self._stalled:
            raise BrokerUnavailable(next(iter(self._stalled.values())))


def _topic_errors(response: object) -> list[tuple[str, int, str | None]]:
    """``(topic, error_code, message)`` from any CreateTopics response version."""
    out: list[tuple[str, int, str | None]] = []
    for entry in getattr(response, "topic_errors", ()):
        name, code, *rest = entry
        out.append((name, code, rest[0] if rest else None))
    return out
