"""What the Kafka bus and its consumers share: positions, error triage, stopping
aiokafka clients that may hang while the broker is away."""

from __future__ import annotations

import asyncio
import logging

# aiokafka ships no type information (no py.typed), so its names are Any here.
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from aiokafka.errors import (  # type: ignore[import-untyped]
    GroupIdNotFound,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    KafkaUnavailableError,
    NonEmptyGroup,
    UnknownError,
    for_code,
)
from aiokafka.protocol.admin import DeleteGroupsRequest  # type: ignore[import-untyped]

from cryptodesk.adapters.bus.memory import BusClosedError

log = logging.getLogger(__name__)

OFFSET_BITS = 40
_OFFSET_LIMIT = 1 << OFFSET_BITS
# 2**23 partitions keep every position inside a signed 64-bit integer (a BIGINT).
_PARTITION_LIMIT = 1 << (63 - OFFSET_BITS)
# An idle consumer asks the cluster whether it is still there at most this often.
PROBE_SECONDS = 1.0


class BrokerUnavailable(ConnectionError):
    """The cluster did not answer, or the bus is waiting for it; says why."""


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


def transient(exc: BaseException) -> bool:
    """An error a later attempt can succeed after: the broker is away or busy."""
    if isinstance(exc, BusClosedError):
        return False
    # UNKNOWN_SERVER_ERROR too: a broker that just came back may fail a produce
    # once (tansu 0.6 does, racing a re-created topic); dropping is worse than waiting.
    if isinstance(exc, KafkaConnectionError | KafkaTimeoutError | KafkaUnavailableError):
        return True
    if isinstance(exc, UnknownError):
        return True
    if isinstance(exc, KafkaError):
        return bool(exc.retriable)
    return isinstance(exc, OSError | TimeoutError)


def describe(exc: BaseException) -> str:
    """``Type: message`` (aiokafka's errors already start with their type)."""
    text, name = str(exc), type(exc).__name__
    return (text if text.startswith(name) else f"{name}: {text}" if text else name)[:300]


async def delete_group(admin: AIOKafkaAdminClient, group: str) -> None:
    """DeleteGroups for ``group`` at its coordinator; an unknown group is no error,
    one that still has members is left and logged.

    aiokafka's admin client has no method for it, hence its private ``_send_request``;
    tests/integration/test_kafka_bus.py covers it against the installed version.
    """
    coordinator = await admin.find_coordinator(group)
    response = await admin._send_request(DeleteGroupsRequest([group]), coordinator)
    for name, code in response.results:
        if code == NonEmptyGroup.errno:
            log.warning("kafka group %s still has members; not deleted", name)
        elif code not in (0, GroupIdNotFound.errno):
            raise for_code(code)(f"deleting group {name}")


_stopping: set[asyncio.Task[None]] = set()  # stops that outlived their wait


async def abandon_producer(producer: AIOKafkaProducer, timeout: float) -> None:
    """Stop ``producer`` without delivering what it still holds: its sender stops
    first, then every batch left fails with ``BrokerUnavailable``.

    aiokafka has no public way to drop queued records, hence its private
    ``_sender`` and ``_message_accumulator``; tests/integration/test_kafka_bus.py
    covers this against the installed version.
    """
    try:
        task = producer._sender.sender_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=timeout)
        accumulator = producer._message_accumulator
        queued = [batch for batches in accumulator._batches.values() for batch in batches]
        # A batch sent once and queued again still carries its first send's
        # done-callback, which takes it out of the in-flight set: put it back there.
        accumulator._pending_batches.update(b for b in queued if b.retry_count)
        batches = [*queued, *accumulator._pending_batches]
        accumulator.fail_all(BrokerUnavailable("the broker was lost; sending again"))
        for batch in batches:  # the records' own futures report it
            for future in (batch.future, batch._drain_waiter):
                if future.done() and not future.cancelled():
                    future.exception()
    except AttributeError as exc:  # another aiokafka: stop it the ordinary way
        log.warning("cannot drop a kafka producer's queued records: %s", exc)
    await stop_client(producer, timeout)


async def stop_client(client: AIOKafkaConsumer | AIOKafkaProducer, timeout: float) -> None:
    """Stop an aiokafka client, waiting at most ``timeout`` seconds.

    The stop runs in a task of its own: with the broker gone, aiokafka 0.14's
    fetcher re-raises the cancellation of its own pending fetch into whoever
    awaits ``stop()``, which would look like that caller being cancelled.
    """
    task = asyncio.ensure_future(client.stop())
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        _stopping.add(task)
        task.add_done_callback(_stopping.discard)
        log.warning("kafka client still stopping after %.1fs; left to finish", timeout)
    elif not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("kafka client did not stop cleanly: %s", describe(exc))
