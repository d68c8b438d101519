"""KafkaBus against a real Kafka-protocol broker (tansu): the Bus contract, plus
what only Kafka promises (partition counts, key -> partition, committed offsets)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import MessageSizeTooLargeError, UnknownError

from cryptodesk.adapters.bus.base import Bus, Consumer, Message
from cryptodesk.adapters.bus.kafka import (
    BrokerUnavailable,
    KafkaBus,
    decode_position,
    encode_position,
    transient,
)
from cryptodesk.adapters.bus.kafka_consumer import _Acks
from cryptodesk.adapters.bus.memory import BusClosedError
from tests.contracts.bus_contract import MARKETS, BusContract, numbered
from tests.servers import RESUMERS, STOPPERS, Servers, own_server

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


# ---- losing the broker ---------------------------------------------------------------------
# tansu keeps everything in memory: the broker these tests restart comes back empty
# (no topics, no committed offsets), as a whole Kafka cluster lost would.


@pytest.fixture
def own_broker() -> Iterator[Servers]:
    """A broker of this test's own, which it may kill (the session one serves others)."""
    yield from own_server("kafka", "kafka-loss")


def own_bus(servers: Servers, **options: object) -> KafkaBus:
    return make_bus(f"127.0.0.1:{servers.kafka_port}", retry_cap=0.5, **options)


async def fetch_until(consumer: Consumer, count: int, *, rounds: int = 60) -> list[Message]:
    """At least ``count`` messages; a round is one fetch of up to a second."""
    got: list[Message] = []
    for _ in range(rounds):
        if len(got) >= count:
            break
        got.extend(await consumer.fetch(100, timeout=1.0))
    return got


async def test_publish_waits_for_a_lost_broker_and_ping_says_why(own_broker: Servers) -> None:
    bus = own_bus(own_broker)
    consumer = bus.consumer("trades", group="g")
    try:
        await bus.publish_many("trades", [(k, b"before") for k in MARKETS])
        assert len(await fetch_until(consumer, len(MARKETS))) == len(MARKETS)

        STOPPERS["kafka"](own_broker)
        with pytest.raises(BrokerUnavailable, match="KafkaError"):
            await bus.ping()  # a refused connection, not a timeout
        waiting = asyncio.create_task(bus.publish_many("trades", [(k, b"down") for k in MARKETS]))
        # The consumer loop goes on: nothing fetched, nothing raised.
        assert await consumer.fetch(100, timeout=0.5) == []
        assert await consumer.fetch(100, timeout=0.5) == []
        assert not waiting.done()  # nothing can have taken the records

        RESUMERS["kafka"](own_broker)
        await asyncio.wait_for(waiting, 60)
        await bus.publish_many("trades", [(k, b"after") for k in MARKETS])
        await bus.ping()
        # The empty broker has the topic again, and the group reads it from the start.
        assert bus.topic_prefix + "trades" in await bus.cluster_topics()
        got = await fetch_until(consumer, 2 * len(MARKETS))
        assert sorted(m.value for m in got) == sorted([b"down", b"after"] * len(MARKETS))
    finally:
        await bus.close()


async def test_acks_from_before_the_loss_commit_nothing_on_the_new_broker(
    own_broker: Servers,
) -> None:
    """Offsets of the lost log committed to the new one would skip its messages."""
    bus = own_bus(own_broker, partitions=1)
    first = bus.consumer("trades", group="g")
    try:
        await bus.publish_many("trades", numbered(10, MARKETS[:1]))
        old = await fetch_until(first, 10)
        assert len(old) == 10

        STOPPERS["kafka"](own_broker)
        with pytest.raises(BrokerUnavailable):
            await bus.ping()
        RESUMERS["kafka"](own_broker)
        await bus.publish_many("trades", [(MARKETS[0], b"new%d" % i) for i in range(20)])
        assert len(await fetch_until(first, 20)) == 20
        await first.ack(old)  # offsets 0..9 of the lost log: must not be committed
        await first.close()

        second = bus.consumer("trades", group="g")
        again = await fetch_until(second, 20)
        assert sorted(m.value for m in again) == sorted(b"new%d" % i for i in range(20))
    finally:
        await bus.close()


async def test_close_ends_a_publish_waiting_for_the_broker(own_broker: Servers) -> None:
    bus = own_bus(own_broker, ping_timeout=1.0)
    await bus.publish("t", MARKETS[0], b"v")
    STOPPERS["kafka"](own_broker)
    waiting = asyncio.create_task(bus.publish("t", MARKETS[0], b"w"))
    with pytest.raises(BrokerUnavailable):
        await bus.ping()
    await bus.close()
    with pytest.raises(BusClosedError):
        await asyncio.wait_for(waiting, 30)


async def test_errors_no_retry_can_fix_are_raised_at_once(kafka_bootstrap: str) -> None:
    bus = make_bus(kafka_bootstrap)
    try:
        with pytest.raises(MessageSizeTooLargeError):
            await bus.publish("t", MARKETS[0], b"x" * 2_000_000)
        assert not transient(MessageSizeTooLargeError())
        assert transient(UnknownError())  # a broker's passing failure; see transient()
    finally:
        await bus.close()


def test_acks_count_only_the_messages_delivered_since_the_last_reset() -> None:
    def fetched(*offsets: int) -> list[tuple[int, Message]]:
        return [(o, Message("t", "k", b"%d" % o, encode_position(0, o))) for o in offsets]

    acks = _Acks()
    before = fetched(0, 1, 2)
    acks.delivered(before)
    again = fetched(0, 1)  # moved back: a rebalance, an offset reset, a new broker
    acks.delivered(again)
    assert acks.ack(2, before[2][1]) is None  # delivered before the reset only
    assert acks.ack(0, before[0][1]) is None  # same offset, but not this message
    assert acks.ack(0, again[0][1]) == 1
    assert acks.ack(1, again[1][1]) == 2
    assert acks.ack(5, fetched(5)[0][1]) is None
