"""KafkaBus against a real Kafka-protocol broker (tansu): the Bus contract, plus
what only Kafka promises (partition counts, key -> partition, committed offsets)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from cryptodesk.adapters.bus.base import Bus, Message
from cryptodesk.adapters.bus.kafka import KafkaBus, decode_position, encode_position
from cryptodesk.adapters.bus.memory import BusClosedError
from tests.contracts.bus_contract import MARKETS, BusContract, numbered

# tansu 0.6 answers aiokafka's InitProducerId (v0) with an error, so the tests run
# the producer without idempotence; group timings short enough that a group forms
# in about a second on one local broker (production keeps the defaults).
TEST_OPTIONS: dict[str, object] = {
    "session_timeout_ms": 1_000,
    "heartbeat_interval_ms": 200,
    "rebalance_timeout_ms": 1_000,
}


def make_bus(kafka_bootstrap: str, **options: object) -> KafkaBus:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    return KafkaBus.from_url(
        f"kafka://{kafka_bootstrap}?idempotent=false",
        topic_prefix=prefix,
        **{**TEST_OPTIONS, **options},
    )


class TestKafkaBus(BusContract):
    # A fetch that proves "nothing more" must outlast a fetch round trip to the broker.
    quiet_timeout = 1.0
    fetch_timeout = 10.0

    @pytest_asyncio.fixture
    async def bus(self, kafka_bootstrap: str) -> AsyncIterator[Bus]:
        bus = make_bus(kafka_bootstrap)
        await bus.start()
        yield bus
        await bus.close()


@pytest_asyncio.fixture
async def kbus(kafka_bootstrap: str) -> AsyncIterator[KafkaBus]:
    bus = make_bus(kafka_bootstrap, partitions=4)
    await bus.start()
    yield bus
    await bus.close()


async def partitions_of(bootstrap: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for p in described["partitions"])


async def test_topics_are_created_with_the_configured_partitions(
    kbus: KafkaBus, kafka_bootstrap: str
) -> None:
    await kbus.publish("trades", MARKETS[0], b"x")
    full = kbus.topic_prefix + "trades"
    assert await partitions_of(kafka_bootstrap, full) == [0, 1, 2, 3]
    await kbus.ensure_topic("trades")  # a second creation is harmless
    assert await partitions_of(kafka_bootstrap, full) == [0, 1, 2, 3]


async def test_a_consumer_creates_its_topic_with_the_configured_partitions(
    kbus: KafkaBus, kafka_bootstrap: str
) -> None:
    consumer = kbus.consumer("candles", group="g")
    assert await consumer.fetch(1, timeout=0.2) == []
    assert await partitions_of(kafka_bootstrap, kbus.topic_prefix + "candles") == [0, 1, 2, 3]
    await consumer.close()


async def test_one_key_always_lands_on_one_partition(kbus: KafkaBus) -> None:
    keys = [f"sim:C{i}/USDT" for i in range(12)]
    await kbus.publish_many("trades", numbered(240, keys))
    await kbus.publish_many("trades", numbered(120, keys))
    consumer = kbus.consumer("trades", group="g")
    got: list[Message] = []
    while len(got) < 360 and (batch := await consumer.fetch(360 - len(got), timeout=10)):
        got.extend(batch)
    assert len(got) == 360
    partitions: dict[str, set[int]] = {}
    for m in got:
        partitions.setdefault(m.key, set()).add(decode_position(m.position)[0])
    assert all(len(p) == 1 for p in partitions.values())
    assert len(set().union(*partitions.values())) > 1, "12 keys spread over 4 partitions"
    await consumer.close()


async def test_records_from_another_producer_use_the_same_key_partitioning(
    kbus: KafkaBus, kafka_bootstrap: str
) -> None:
    """Kafka's default (murmur2) partitioner: any client puts a key where we do."""
    await kbus.publish_many("trades", [(k, b"bus") for k in MARKETS])
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for k in MARKETS:
            await producer.send_and_wait(kbus.topic_prefix + "trades", b"other", key=k.encode())
    finally:
        await producer.stop()
    consumer = kbus.consumer("trades", group="g")
    got = await consumer.fetch(8, timeout=10)
    while len(got) < 8 and (batch := await consumer.fetch(8 - len(got), timeout=10)):
        got.extend(batch)
    where: dict[str, set[int]] = {}
    for m in got:
        where.setdefault(m.key, set()).add(decode_position(m.position)[0])
    assert len(got) == 8
    assert all(len(p) == 1 for p in where.values())
    await consumer.close()


async def test_committed_offsets_survive_a_restart(kbus: KafkaBus) -> None:
    """Kafka commits one offset per partition: each partition's acked prefix."""
    keys = [f"sim:C{i}/USDT" for i in range(8)]
    await kbus.publish_many("trades", numbered(80, keys))
    first = kbus.consumer("trades", group="g")
    got: list[Message] = []
    while len(got) < 80 and (batch := await first.fetch(80 - len(got), timeout=10)):
        got.extend(batch)
    assert len(got) == 80
    per_partition: dict[int, list[Message]] = {}
    for m in sorted(got, key=lambda m: m.position):
        per_partition.setdefault(decode_position(m.position)[0], []).append(m)
    acked: list[Message] = []
    for messages in per_partition.values():
        half = len(messages) // 2
        await first.ack(messages[:half])  # the prefix is committed
        await first.ack(messages[half + 1 :])  # above a gap: cannot be committed
        acked.extend(messages[:half])
    await first.close()  # leaving does not commit

    second = kbus.consumer("trades", group="g")
    again: list[Message] = []
    while batch := await second.fetch(100, timeout=2):
        again.extend(batch)
    acked_values = {m.value for m in acked}
    assert sorted(m.value for m in again) == sorted(
        m.value for m in got if m.value not in acked_values
    )
    await second.close()


async def test_positions_encode_partition_and_offset(kbus: KafkaBus) -> None:
    assert decode_position(encode_position(5, 123_456)) == (5, 123_456)
    assert encode_position(1, 0) == 2**40
    assert decode_position(encode_position(2**23 - 1, 2**40 - 1)) == (2**23 - 1, 2**40 - 1)
    assert encode_position(2**23 - 1, 2**40 - 1) < 2**63
    for bad in ((-1, 0), (0, -1), (0, 2**40), (2**23, 0)):
        with pytest.raises(ValueError, match="out of range"):
            encode_position(*bad)
    await kbus.publish_many("trades", [(MARKETS[0], b"a"), (MARKETS[0], b"b")])
    consumer = kbus.consumer("trades", group="g")
    got = await consumer.fetch(2, timeout=10)
    if len(got) < 2:
        got += await consumer.fetch(2 - len(got), timeout=10)
    (p1, o1), (p2, o2) = (decode_position(m.position) for m in got)
    assert p1 == p2
    assert (o1, o2) == (0, 1)
    await consumer.close()


async def test_bad_urls_and_arguments_are_rejected(kafka_bootstrap: str) -> None:
    for url in ("redis://localhost:6379", "kafka://", "kafka://,"):
        with pytest.raises(ValueError, match="url"):
            KafkaBus.from_url(url)
    with pytest.raises(ValueError, match="partitions"):
        KafkaBus.from_url("kafka://h:9092", partitions=0)
    with pytest.raises(ValueError, match="compression"):
        KafkaBus.from_url("kafka://h:9092", compression="brotli")
    bus = KafkaBus.from_url("kafka://h1:9092, h2:9093")
    assert bus.bootstrap_servers == ["h1:9092", "h2:9093"]
    assert bus.idempotent
    assert not KafkaBus.from_url("kafka://h:1?idempotent=FALSE").idempotent
    assert KafkaBus.from_url("kafka://h:1?idempotent=false", idempotent=True).idempotent
    for url in ("kafka://h:1?idempotent=no", "kafka://h:1?acks=1"):
        with pytest.raises(ValueError, match="option"):
            KafkaBus.from_url(url)
    live = make_bus(kafka_bootstrap)
    with pytest.raises(ValueError, match="max_messages"):
        await live.consumer("t", group="g").fetch(0)
    await live.close()


async def test_close_stops_everything(kafka_bootstrap: str) -> None:
    bus = make_bus(kafka_bootstrap)
    await bus.publish("t", "k", b"v")
    consumer = bus.consumer("t", group="g")
    assert [m.value for m in await consumer.fetch(1, timeout=10)] == [b"v"]
    await bus.close()
    await bus.close()  # idempotent
    assert await consumer.fetch(1, timeout=0.1) == []
    with pytest.raises(BusClosedError):
        await bus.publish("t", "k", b"v")
    with pytest.raises(BusClosedError):
        bus.consumer("t", group="g")
    with pytest.raises(BusClosedError):
        await bus.ping()


async def test_close_wakes_a_waiting_fetch(kafka_bootstrap: str) -> None:
    bus = make_bus(kafka_bootstrap)
    consumer, other = bus.consumer("t", group="g"), bus.consumer("t", group="g2")
    assert await consumer.fetch(1, timeout=0.1) == []  # joined, nothing there
    assert await other.fetch(1, timeout=0.1) == []
    waiting = asyncio.create_task(consumer.fetch(10, timeout=60))
    await asyncio.sleep(0.1)
    await consumer.close()
    assert await asyncio.wait_for(waiting, 10) == []
    waiting = asyncio.create_task(other.fetch(10, timeout=60))
    await asyncio.sleep(0.1)
    await bus.close()
    assert await asyncio.wait_for(waiting, 10) == []


async def test_ping_fails_when_nothing_listens() -> None:
    bus = KafkaBus.from_url("kafka://127.0.0.1:9?idempotent=false", ping_timeout=2.0)
    with pytest.raises(Exception):  # noqa: B017, PT011 - connection error or timeout
        await bus.ping()
    await bus.close()
