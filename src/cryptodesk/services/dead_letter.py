"""Dead letters: a bus message that cannot be decoded is set aside, never retried.

It goes to the topic ``deadletter`` with the reason and its original topic, key
and bytes, is counted in ``cryptodesk_dead_letters_total``, and the consumer
moves on, so one bad message never blocks a partition or a stream.
"""

from __future__ import annotations

import base64

import msgspec
import structlog

from cryptodesk.adapters.bus.base import Bus, Message
from cryptodesk.observability.metrics import Metrics

TOPIC = "deadletter"
log = structlog.get_logger(__name__)


class DeadLetters:
    def __init__(self, bus: Bus, metrics: Metrics) -> None:
        self._bus = bus
        self._metrics = metrics
        self.pending: list[tuple[str, bytes]] = []

    def add(self, message: Message, reason: str) -> None:
        """Record ``message`` as undecodable; ``flush`` publishes the batch."""
        log.error("message moved to dead letters", topic=message.topic, key=message.key,
                  reason=reason)  # fmt: skip
        self._metrics.dead_letters.labels(message.topic).inc()
        body = {
            "topic": message.topic,
            "key": message.key,
            "reason": reason,
            "value_b64": base64.b64encode(message.value).decode("ascii"),
        }
        self.pending.append((message.key, msgspec.json.encode(body)))

    async def flush(self) -> None:
        if self.pending:
            # Cleared only once published: a failed publish is retried whole.
            await self._bus.publish_many(TOPIC, self.pending)
            self.pending = []
