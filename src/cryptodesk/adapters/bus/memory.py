"""In-process bus: the embedded default, and the twin the real buses are held to.

The model is a small Kafka inside one process, because that is what the
services are written against:

* a topic is an append-only log of ``(key, value)`` entries with increasing
  integer positions (created on first use, any name);
* a consumer group remembers ``committed`` (every position below it is acked)
  plus the positions acked out of order above it, so a restart resumes after
  the contiguous acked prefix and nothing unacked is skipped;
* live consumers of one group split the topic by key hash, like partitions:
  while membership is stable, one key always goes to one consumer, in order.
  When a consumer joins or leaves, keys are reassigned (a "rebalance"), and the
  messages the leaver fetched but never acked go, in position order and before
  anything newer, to the consumer that now owns their key;
* a consumer leaves by ``close()`` or by simply being dropped (garbage
  collected), which is how tests simulate a crash;
* memory is bounded: entries every known group has committed are trimmed, and
  at most ``max_retained`` messages per topic are kept (the oldest go first,
  and a group that lagged further behind than that loses them, as with Kafka
  retention). A group created later starts at the oldest retained message,
  or with ``start="latest"`` at the end of the log (when its first consumer is
  made); ``delete_group`` forgets a group whose consumers are gone;
* optional backpressure (``max_lag``): publishing waits while a group with live
  consumers is more than ``max_lag`` messages behind, so a producer faster than
  its consumers (the simulator at full speed) cannot queue without bound.
"""

from __future__ import annotations

import asyncio
import weakref
import zlib
from collections import deque
from collections.abc import Iterable, Sequence

from cryptodesk.adapters.bus.base import Message, Start

DEFAULT_MAX_RETAINED = 1_000_000
# Physical trimming copies the surviving tail of the list, so it waits until the
# dead prefix is large enough to pay for that copy (amortised O(1) per message).
_COMPACT_MIN = 1024
_OWNER_MEMO = 100_000


class BusClosedError(RuntimeError):
    """The bus was closed; nothing can be published or consumed any more."""


def _owner(key: str, members: int) -> int:
    # crc32 rather than hash(): str hashes change per process, and a stable
    # key -> consumer mapping makes runs reproducible, like Kafka's murmur2.
    return zlib.crc32(key.encode()) % members


class _Member:
    """A live consumer's share of its group's state, kept by the group.

    It is separate from the consumer object so that a dropped consumer can be
    noticed (through the weak reference) and its messages handed on.
    """

    __slots__ = ("buffer", "inflight", "ref")

    def __init__(self, consumer: MemoryConsumer) -> None:
        self.ref = weakref.ref(consumer)
        self.buffer: deque[Message] = deque()  # assigned to it, not fetched yet
        self.inflight: deque[list[Message]] = deque()  # fetched batches, maybe unacked


class _Group:
    __slots__ = ("acked", "committed", "cursor", "members", "owners", "pool")

    def __init__(self, start: int) -> None:
        self.committed = start
        self.acked: set[int] = set()  # acked positions >= committed
        self.cursor = start  # next position never handed to any member
        self.pool: list[Message] = []  # handed out, then released; ascending positions
        self.members: list[_Member] = []
        self.owners: dict[str, deque[Message]] = {}  # key -> its owner's buffer (memo)

    # ---- membership ---------------------------------------------------------------
    def join(self, member: _Member) -> None:
        self.reap()
        self._rebalance()
        self.members.append(member)

    def leave(self, member: _Member) -> None:
        if member not in self.members:
            return
        self.members.remove(member)
        released = [m for batch in member.inflight for m in batch]
        released.extend(member.buffer)
        member.inflight.clear()
        member.buffer.clear()
        self.pool.extend(self._unacked(released))
        self._rebalance()

    def reap(self) -> None:
        """Release the messages of consumers that were dropped without close()."""
        for member in [m for m in self.members if m.ref() is None]:
            self.leave(member)

    def _rebalance(self) -> None:
        # Key ownership changes with membership, so whatever was assigned but not
        # fetched goes back to the pool to be assigned again, oldest first.
        self.owners.clear()
        for member in self.members:
            self.pool.extend(member.buffer)
            member.buffer.clear()
        self.pool.sort(key=lambda m: m.position)

    def _unacked(self, messages: Iterable[Message]) -> list[Message]:
        committed, acked = self.committed, self.acked
        return [m for m in messages if m.position >= committed and m.position not in acked]

    # ---- delivery -----------------------------------------------------------------
    def take(self, member: _Member, n: int, topic: _Topic) -> list[Message]:
        self.reap()
        if self.committed < topic.base:
            self._skip_to(topic.base)
        members = self.members
        if self.pool:
            pool, self.pool = self._unacked(self.pool), []
            if len(members) == 1:
                member.buffer.extend(pool)
            else:
                for m in pool:
                    self._buffer_of(m.key).append(m)
        buffer = member.buffer
        out = [buffer.popleft() for _ in range(min(n, len(buffer)))]
        want = n - len(out)
        cursor = max(self.cursor, topic.base)
        log, name = topic.log, topic.name
        if want > 0 and cursor < topic.offset + len(log):
            i = cursor - topic.offset
            if len(members) == 1:
                # The common case (one consumer per group): one slice, no routing.
                fresh = log[i : i + want]
                out.extend([Message(name, k, v, p) for p, (k, v) in enumerate(fresh, cursor)])
                i += len(fresh)
            else:
                owners, end, offset = self.owners, len(log), topic.offset
                while i < end and len(buffer) < want:
                    k, v = log[i]
                    dest = owners.get(k)
                    if dest is None:
                        dest = self._buffer_of(k)
                    dest.append(Message(name, k, v, i + offset))
                    i += 1
                out.extend(buffer.popleft() for _ in range(len(buffer)))
            self.cursor = i + topic.offset
        if out:
            inflight = member.inflight
            inflight.append(out)
            # Batches are in ascending position, so the last one tells if all are done.
            while inflight and inflight[0][-1].position < self.committed:
                inflight.popleft()
        return out

    def _buffer_of(self, key: str) -> deque[Message]:
        if len(self.owners) >= _OWNER_MEMO:
            self.owners.clear()  # many short-lived keys: keep the memo bounded
        dest = self.owners[key] = self.members[_owner(key, len(self.members))].buffer
        return dest

    def ack(self, messages: Sequence[Message], topic: str) -> None:
        c, n = self.committed, len(messages)
        if (
            not self.acked
            and messages[0].position == c
            and messages[-1].position == c + n - 1
            and messages[0].topic == topic
            and [m.position for m in messages] == list(range(c, c + n))
        ):
            # One consumer acking what it fetched, in order: no set bookkeeping.
            self.committed = c + n
            return
        acked = self.acked
        acked.update(m.position for m in messages if m.position >= c and m.topic == topic)
        while c in acked:
            acked.remove(c)
            c += 1
        self.committed = c

    def _skip_to(self, base: int) -> None:
        """Retention dropped messages this group never committed: they are gone."""
        self.acked = {p for p in self.acked if p >= base}
        c = base
        while c in self.acked:
            self.acked.remove(c)
            c += 1
        self.committed = c
        self.cursor = max(self.cursor, base)


class _Topic:
    __slots__ = (
        "base", "changed", "groups", "log", "max_retained", "name", "offset", "progress",
        "waiting",
    )  # fmt: skip

    def __init__(self, name: str, max_retained: int) -> None:
        self.name = name
        self.max_retained = max_retained
        self.log: list[tuple[str, bytes]] = []  # log[i] is (key, value) at position offset + i
        self.offset = 0
        self.base = 0  # oldest retained position; log entries below it are dead
        self.groups: dict[str, _Group] = {}
        self.changed = asyncio.Event()
        self.progress = asyncio.Event()  # set when a group acks: lagging publishers re-check
        self.waiting = 0

    def lag(self) -> int:
        """Messages the slowest group with live consumers has not acked yet."""
        head = self.offset + len(self.log)
        live = [g.committed for g in self.groups.values() if g.members]
        return head - min(live) if live else 0

    def append(self, items: Sequence[tuple[str, bytes]]) -> None:
        # The log keeps the callers' (key, value) tuples and Messages are made at
        # fetch time: a tuple of str and bytes is untracked by the garbage
        # collector, so a million retained entries cost it nothing, while a
        # million slotted objects would make every full collection crawl them.
        self.log.extend(items)
        excess = self.offset + len(self.log) - self.base - self.max_retained
        if excess > 0:
            self.base += excess
            self.compact()
        self.notify()

    def trim_committed(self) -> None:
        if self.groups:
            floor = min(g.committed for g in self.groups.values())
            if floor > self.base:
                self.base = floor
                self.compact()

    def compact(self) -> None:
        dead = self.base - self.offset
        if dead >= _COMPACT_MIN and dead * 8 >= len(self.log):
            del self.log[:dead]
            self.offset = self.base

    def notify(self) -> None:
        """Wake every waiting fetch; each re-checks what is now available to it."""
        if self.waiting:
            self.changed.set()
            self.changed = asyncio.Event()


class MemoryConsumer:
    """A member of a consumer group on one topic of a ``MemoryBus``."""

    __slots__ = ("__weakref__", "_bus", "_closed", "_group", "_member", "_topic", "group", "name")

    def __init__(
        self, bus: MemoryBus, topic: _Topic, group: str, name: str, start: Start = "earliest"
    ) -> None:
        self._bus = bus
        self._topic = topic
        self.group = group
        self.name = name
        state = topic.groups.get(group)
        if state is None:
            at = topic.offset + len(topic.log) if start == "latest" else topic.base
            state = topic.groups[group] = _Group(at)
        self._group = state
        self._member = _Member(self)
        state.join(self._member)
        self._closed = False
        topic.notify()

    @property
    def topic(self) -> str:
        return self._topic.name

    async def fetch(self, max_messages: int = 1000, timeout: float = 1.0) -> list[Message]:
        """Messages for this consumer; after ``close()`` (or the bus's) always []."""
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        topic, group, member = self._topic, self._group, self._member
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._closed or self._bus.closed:
                return []
            out = group.take(member, max_messages, topic)
            remaining = deadline - loop.time()
            if out or remaining <= 0:
                return out
            changed = topic.changed
            topic.waiting += 1
            try:
                async with asyncio.timeout(remaining):
                    await changed.wait()
            except TimeoutError:
                deadline = 0.0  # take once more, then give up
            finally:
                topic.waiting -= 1

    async def ack(self, messages: Sequence[Message]) -> None:
        """Record ``messages`` as processed; acks after close() still count."""
        if not messages or self._bus.closed:
            return
        self._group.ack(messages, self._topic.name)
        self._topic.trim_committed()
        self._topic.progress.set()

    async def close(self) -> None:
        """Leave the group; what was fetched and not acked goes to the next consumer."""
        if self._closed:
            return
        self._closed = True
        self._group.leave(self._member)
        self._topic.notify()
        self._topic.progress.set()


class MemoryBus:
    """The ``Bus`` protocol in one process; see the module docstring for the model.

    ``start()`` is a no-op and the bus works without it; after ``close()``
    publishing or creating consumers raises ``BusClosedError`` and existing
    consumers' ``fetch`` returns [] at once.
    """

    def __init__(
        self, *, max_retained: int = DEFAULT_MAX_RETAINED, max_lag: int | None = None
    ) -> None:
        if max_retained < 1:
            raise ValueError("max_retained must be at least 1")
        if max_lag is not None and max_lag < 1:
            raise ValueError("max_lag must be at least 1")
        self._max_retained = max_retained
        self._max_lag = max_lag
        self._topics: dict[str, _Topic] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def _topic(self, name: str) -> _Topic:
        if self.closed:
            raise BusClosedError("the bus is closed")
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = _Topic(name, self._max_retained)
        return topic

    async def start(self) -> None:
        if self.closed:
            raise BusClosedError("a closed bus cannot be restarted")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for topic in self._topics.values():
            topic.notify()
            topic.progress.set()
        self._topics.clear()

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        await self.publish_many(topic, ((key, value),))

    async def publish_many(self, topic: str, items: Sequence[tuple[str, bytes]]) -> None:
        log = self._topic(topic)
        if self._max_lag is not None:
            while log.lag() >= self._max_lag and not self.closed:
                log.progress.clear()
                await log.progress.wait()
            log = self._topic(topic)
        if items:
            log.append(items)

    def consumer(
        self, topic: str, *, group: str, name: str = "c1", start: Start = "earliest"
    ) -> MemoryConsumer:
        if start not in ("earliest", "latest"):
            raise ValueError(f"start must be 'earliest' or 'latest', not {start!r}")
        return MemoryConsumer(self, self._topic(topic), group, name, start)

    async def delete_group(self, topic: str, group: str) -> None:
        """Forget ``group`` in ``topic`` (so it no longer holds back trimming);
        a group that still has live consumers is kept."""
        t = self._topics.get(topic)
        state = None if t is None else t.groups.get(group)
        if t is None or state is None:
            return
        state.reap()
        if not state.members:
            del t.groups[group]
            t.trim_committed()

    async def ping(self) -> None:
        if self.closed:
            raise BusClosedError("the bus is closed")

    def retained(self, topic: str) -> int:
        """How many messages ``topic`` keeps (for tests and metrics)."""
        t = self._topics.get(topic)
        return 0 if t is None else t.offset + len(t.log) - t.base

    def stored(self, topic: str) -> int:
        """How many entries ``topic``'s log physically holds, the dead prefix included.

        Trimming is logical at once and physical in chunks (at least 1024 entries
        and 1/8 of the log), so this exceeds ``retained`` by a bounded amount.
        """
        t = self._topics.get(topic)
        return 0 if t is None else len(t.log)
