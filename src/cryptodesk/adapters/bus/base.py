"""The event bus: durable topics, keyed messages, consumer groups, explicit acks.

Delivery is at-least-once. A consumer in a group receives each message of a
topic once while it lives; messages it fetched but did not ``ack`` are
delivered again to the next consumer of the same group (after a crash or a
restart). Messages with the same key keep their order. Every implementation
(memory, Redis Streams, Kafka) passes ``tests/contracts/bus_contract.py``.

A bus rides out losing its server: a publish waits and sends again until the
server takes the events (it may then hold some twice), a fetch returns nothing
while the consumer reconnects, and ``ping`` says the bus is down meanwhile.
Only errors no retry can fix are raised, and ``BusClosedError`` once closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

TOPICS = ("trades", "orderbooks", "candles", "signals", "alerts")

# Where a consumer group without a committed position begins: at the oldest
# retained message (every sink: nothing is missed), or at the end of the topic
# (a live relay, such as the WebSocket feed: old news is not news).
Start = Literal["earliest", "latest"]


@dataclass(frozen=True, slots=True)
class Message:
    """One event; ``position`` is opaque to callers and identifies it for ``ack``."""

    topic: str
    key: str
    value: bytes
    position: int


class Consumer(Protocol):
    """A member of a consumer group reading one topic."""

    async def fetch(self, max_messages: int = 1000, timeout: float = 1.0) -> list[Message]:
        """Wait up to ``timeout`` seconds for messages; return at most ``max_messages``."""
        ...

    async def ack(self, messages: Sequence[Message]) -> None:
        """Mark messages processed; call only after the sink has written them.

        Pass the objects ``fetch`` returned. Messages fetched before the consumer
        reconnected or its group rebalanced may be ignored: they come again.
        """
        ...

    async def close(self) -> None: ...


class Bus(Protocol):
    """Publish keyed events to topics and read them through consumer groups."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, topic: str, key: str, value: bytes) -> None: ...

    async def publish_many(self, topic: str, items: Sequence[tuple[str, bytes]]) -> None:
        """Publish ``(key, value)`` pairs in order, as one batch where the engine allows;
        returns once the server has them all (waiting while it is unreachable)."""
        ...

    def consumer(
        self, topic: str, *, group: str, name: str = "c1", start: Start = "earliest"
    ) -> Consumer:
        """A consumer of ``topic`` in ``group``.

        ``start`` matters only to a group that has no position in the topic yet:
        ``"earliest"`` begins at the oldest retained message; ``"latest"`` skips
        what was published before the consumer was made and delivers everything
        published after its first ``fetch`` returned (what comes in between
        depends on the engine). The group then keeps its position, so a later
        consumer of it goes on from there either way.
        """
        ...

    async def delete_group(self, topic: str, group: str) -> None:
        """Forget ``group``'s position in ``topic``, once all its consumers are closed.

        For groups that live as long as one process (a relay named after it), so
        the server does not keep every past process's group. An unknown group is
        no error. On Kafka a group spans topics: the whole group goes.
        """
        ...

    async def ping(self) -> None:
        """Raise, saying why, while the bus is unreachable or cannot take publishes
        (used by /readyz)."""
        ...
