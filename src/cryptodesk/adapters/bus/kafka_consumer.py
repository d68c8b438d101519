"""A Kafka consumer-group member that commits only acknowledged offsets and
rejoins after losing the broker (see ``cryptodesk.adapters.bus.kafka``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

# aiokafka ships no type information (no py.typed), so its names are Any here.
from aiokafka import (  # type: ignore[import-untyped]
    AIOKafkaConsumer,
    ConsumerRebalanceListener,
    TopicPartition,
)
from aiokafka.errors import (  # type: ignore[import-untyped]
    CommitFailedError,
    ConsumerStoppedError,
    IllegalStateError,
    KafkaError,
)

from cryptodesk.adapters.bus.base import Message, Start
from cryptodesk.adapters.bus.kafka_client import (
    PROBE_SECONDS,
    decode_position,
    describe,
    encode_position,
    stop_client,
    transient,
)
from cryptodesk.adapters.bus.memory import BusClosedError
from cryptodesk.domain.backoff import backoff_delays

if TYPE_CHECKING:
    from cryptodesk.adapters.bus.kafka import KafkaBus

log = logging.getLogger(__name__)


class _Acks:
    """What one partition delivered and what of it is acked.

    Kafka stores one committed offset per partition, so acking out of order can
    only commit the contiguous acked prefix: the commit is the oldest offset still
    unacked (or one past the newest acked when nothing is pending).
    """

    __slots__ = ("acked", "pending", "top", "waiting")

    def __init__(self) -> None:
        self.pending: deque[int] = deque()  # delivered offsets, ascending
        self.waiting: dict[int, Message] = {}  # the same offsets -> what was delivered
        self.acked: set[int] = set()  # acked but not yet at the head of pending
        self.top = -1  # highest offset ever delivered

    def delivered(self, messages: list[tuple[int, Message]]) -> None:
        """``(offset, message)`` pairs of one fetch, offsets ascending."""
        if messages[0][0] <= self.top:
            # A rebalance or an offset reset moved this partition back: what was
            # pending is being delivered again, so start over from here.
            self.pending.clear()
            self.waiting.clear()
            self.acked.clear()
        self.pending.extend(offset for offset, _ in messages)
        self.waiting.update(messages)
        self.top = messages[-1][0]

    def ack(self, offset: int, message: Message) -> int | None:
        """Record ``offset``; the offset to commit if the acked prefix grew.

        Only the very message delivered at ``offset`` since the last reset counts.
        One fetched before a rebalance or before the broker was lost is ignored (it
        is delivered again): a broker that came back empty numbers its offsets from
        zero again, so the same offset may now be another message.
        """
        pending, acked = self.pending, self.acked
        if self.waiting.get(offset) is not message:
            return None
        acked.add(offset)
        moved = False
        while pending and pending[0] in acked:
            done = pending.popleft()
            acked.discard(done)
            del self.waiting[done]
            moved = True
        if not moved:
            return None
        return pending[0] if pending else self.top + 1


class _OnRebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """A rebalance re-reads each assigned partition from its committed offset, so
    acks of messages delivered before it must not be committed afterwards.

    With ``pin`` (the member of a ``start="latest"`` consumer), an assigned
    partition without a committed offset gets its current end committed: Kafka
    applies ``auto_offset_reset`` to every member that finds no offset, so without
    it a partition moved to another member before anything was acked (or a
    restarted member) would skip to the end again, past messages the group never
    saw. ``pinned`` is set once the first assignment went through this.
    """

    def __init__(self, acks: dict[int, _Acks], pin: AIOKafkaConsumer | None) -> None:
        self._acks = acks
        self._pin = pin
        self.pinned = asyncio.Event()

    async def on_partitions_revoked(self, revoked: object) -> None:
        self._acks.clear()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._acks.clear()
        try:
            if self._pin is not None:
                kafka, offsets = self._pin, {}
                for tp in assigned:
                    if await kafka.committed(tp) is None:
                        offsets[tp] = await kafka.position(tp)  # the end: nothing fetched yet
                if offsets:
                    await kafka.commit(offsets)
        except (KafkaError, TimeoutError) as exc:  # the next assignment tries again
            log.warning("kafka start offsets not committed: %s", describe(exc))
        finally:
            self.pinned.set()


class KafkaConsumer:
    """A member of a consumer group on one topic; joins the group on first fetch,
    and again after losing the broker (see the module docstring)."""

    def __init__(
        self, bus: KafkaBus, topic: str, group: str, name: str, start: Start = "earliest"
    ) -> None:
        self._bus = bus
        self.topic = topic
        self.group = group
        self.name = name
        self.start = start
        self._kafka: AIOKafkaConsumer | None = None
        self._starting = asyncio.Lock()
        self._acks: dict[int, _Acks] = {}
        self._closed = False
        self._woken = asyncio.Event()  # set by close: a fetch waiting to rejoin returns
        self._delays: Iterator[float] | None = None  # set while rejoining
        self._rejoin_at = 0.0
        self._probed_at = 0.0
        self._epoch = -1  # the bus's broker epoch this member joined in

    async def _joined(self, wait: float) -> AIOKafkaConsumer | None:
        """The group member; joins when due. None while the broker is away (after
        waiting up to ``wait`` seconds for the next attempt) or once closed."""
        loop = asyncio.get_running_loop()
        if self._kafka is None and (pause := self._rejoin_at - loop.time()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), min(pause, wait))
            if self._rejoin_at > loop.time():
                return None
        async with self._starting:
            if self._kafka is not None or self._closed:
                return self._kafka
            bus = self._bus
            kafka: AIOKafkaConsumer | None = None
            epoch = bus.epoch
            try:
                full = await bus.ensure_topic(self.topic, verify=self._delays is not None)
                kafka = AIOKafkaConsumer(**bus.consumer_options(self.group, self.name, self.start))
                self._acks.clear()
                listener = _OnRebalance(self._acks, kafka if self.start == "latest" else None)
                kafka.subscribe([full], listener=listener)
                await kafka.start()
                if self.start == "latest":  # the first fetch returns after the end is fixed
                    async with asyncio.timeout(bus.ping_timeout):
                        await listener.pinned.wait()
            except Exception as exc:
                if kafka is not None:
                    await stop_client(kafka, bus.ping_timeout)
                if not transient(exc):
                    raise
                self._retry_later(f"joining the group failed: {describe(exc)}")
                return None
            if self._closed:  # closed while joining
                await stop_client(kafka, bus.ping_timeout)
                return None
            if self._delays is not None:
                log.info("kafka consumer %s of %s rejoined its group", self.group, self.topic)
            self._delays = None
            self._epoch = epoch
            self._kafka = kafka
            return kafka

    def _retry_later(self, reason: str) -> None:
        if self._delays is None:
            self._delays = backoff_delays(self._bus.retry_initial, self._bus.retry_cap)
        delay = next(self._delays)
        self._rejoin_at = asyncio.get_running_loop().time() + delay
        log.warning(
            "kafka consumer %s of %s: %s; joining again in %.2fs",
            self.group, self.topic, reason, delay,
        )  # fmt: skip

    async def _leave(self, reason: str) -> None:
        """Drop the member (the broker is gone or lost our topic); rejoin later."""
        async with self._starting:
            kafka, self._kafka = self._kafka, None
        self._acks.clear()
        if self._closed:
            return
        self._retry_later(reason)
        if kafka is not None:
            await stop_client(kafka, self._bus.ping_timeout)

    async def fetch(self, max_messages: int = 1000, timeout: float = 1.0) -> list[Message]:
        """Up to ``max_messages``; the first call also joins the group (not counted
        in ``timeout``, which is how long to wait for messages). While the broker
        is away this waits up to ``timeout`` and returns nothing."""
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        if self._closed or self._bus.closed:
            return []
        kafka = await self._joined(timeout)
        if kafka is None:
            return []
        if self._epoch != self._bus.epoch:
            await self._leave("the broker was unreachable since this member joined")
            return []
        try:
            batches = await kafka.getmany(
                timeout_ms=max(0, round(timeout * 1000)), max_records=max_messages
            )
        except ConsumerStoppedError:
            return []  # close() (ours or the bus's) while this fetch waited
        except KafkaError as exc:
            await self._leave(f"fetch failed: {describe(exc)}")
            return []
        out: list[Message] = []
        prefix_len = len(self._bus.topic_prefix)
        for tp, records in batches.items():
            if not records:
                continue
            acks = self._acks.get(tp.partition)
            if acks is None:
                acks = self._acks[tp.partition] = _Acks()
            topic = tp.topic[prefix_len:]
            fetched = [
                (
                    r.offset,
                    Message(
                        topic,
                        r.key.decode() if r.key is not None else "",
                        r.value if r.value is not None else b"",
                        encode_position(tp.partition, r.offset),
                    ),
                )
                for r in records
            ]
            acks.delivered(fetched)
            out.extend(m for _, m in fetched)
        if not out:
            await self._check_broker()
        return out

    async def _check_broker(self) -> None:
        """aiokafka retries a lost broker quietly forever; an idle member asks."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._probed_at < PROBE_SECONDS or self._closed:
            return
        self._probed_at = loop.time()
        full = self._bus.topic_prefix + self.topic
        try:
            gone = full not in await self._bus.cluster_topics(max_age=PROBE_SECONDS)
            # A shared probe may predate the topic: only a fresh one may say it is gone.
            gone = gone and full not in await self._bus.cluster_topics()
        except BusClosedError:
            return
        except Exception as exc:
            await self._leave(f"broker unreachable: {describe(exc)}")
            return
        if gone:
            await self._leave(f"topic {full} is gone from the cluster")

    async def ack(self, messages: Sequence[Message]) -> None:
        """Commit the acked prefix of each partition the messages came from.

        After ``close`` acks are ignored (the group no longer knows this member).
        A commit refused because the group rebalanced meanwhile, or lost with the
        broker, is logged and dropped: either way those messages are delivered
        again (at least once).
        """
        kafka = self._kafka
        if not messages or kafka is None or self._closed:
            return
        if self._epoch != self._bus.epoch:
            # The broker may have come back without our group: its positions and
            # these offsets mean nothing there. Rejoin; the messages come again.
            await self._leave("the broker was unreachable since this member joined")
            return
        commits: dict[int, int] = {}
        for m in messages:
            if m.topic != self.topic:
                continue
            partition, offset = decode_position(m.position)
            acks = self._acks.get(partition)
            if acks is not None and (commit := acks.ack(offset, m)) is not None:
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
            # aiokafka waits for a coordinator without end; a lost broker must not
            # hold the caller's loop hostage.
            async with asyncio.timeout(self._bus.ping_timeout):
                await kafka.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("kafka commit for %s/%s dropped: %s", self.group, self.topic, exc)
        except (KafkaError, TimeoutError) as exc:
            await self._leave(f"commit failed: {describe(exc)}")

    async def close(self) -> None:
        """Leave the group without committing: unacked messages go to the next consumer."""
        if self._closed:
            return
        self._closed = True
        self._woken.set()
        self._bus.forget(self)
        async with self._starting:
            kafka, self._kafka = self._kafka, None
        if kafka is not None:
            await stop_client(kafka, self._bus.ping_timeout)
