"""RedisStreamsBus: the shared Bus contract on a real Redis, plus what Redis Streams add."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from cryptodesk.adapters.bus.base import Bus, Message
from cryptodesk.adapters.bus.redis_streams import (
    BusClosedError,
    RedisStreamsBus,
    decode_position,
    encode_position,
)
from tests.contracts.bus_contract import MARKETS, BusContract, numbered

MakeBus = Callable[..., RedisStreamsBus]


def unique_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}:"


class TestRedisStreamsBus(BusContract):
    # The contract's redelivery test restarts a consumer under the same name, which
    # reads its own pending entries at once; XAUTOCLAIM is not needed there. The
    # production default claim_idle_ms stays, because a tiny one would let the two
    # live consumers of the split test steal each other's unacked batches.
    @pytest_asyncio.fixture
    async def bus(self, redis_url: str) -> AsyncIterator[Bus]:
        bus = RedisStreamsBus.from_url(redis_url, stream_prefix=unique_prefix())
        await bus.start()
        yield bus
        await bus.close()


@pytest_asyncio.fixture
async def make_bus(redis_url: str) -> AsyncIterator[MakeBus]:
    """Buses sharing one fresh stream prefix, so a test can run several processes' worth."""
    prefix = unique_prefix()
    made: list[RedisStreamsBus] = []

    def make(**options: int) -> RedisStreamsBus:
        made.append(RedisStreamsBus.from_url(redis_url, stream_prefix=prefix, **options))
        return made[-1]

    yield make
    for bus in made:
        await bus.close()


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def values(messages: list[Message]) -> list[bytes]:
    return [m.value for m in messages]


async def pending(redis: Redis, bus: RedisStreamsBus, topic: str, group: str) -> int:
    summary = await redis.xpending(bus.stream(topic), group)
    return int(summary["pending"])


async def test_a_dead_consumers_pending_entries_are_reclaimed_by_another(
    make_bus: MakeBus, redis: Redis
) -> None:
    bus = make_bus(claim_idle_ms=0)
    await bus.publish_many("trades", numbered(6, MARKETS[:1]))
    dead = bus.consumer("trades", group="g", name="worker-1")
    got = await dead.fetch(10, timeout=0)
    await dead.ack(got[:2])
    await dead.close()  # a crash: the process never comes back under this name

    survivor = bus.consumer("trades", group="g", name="worker-2")
    reclaimed = await survivor.fetch(10, timeout=0)
    assert values(reclaimed) == [b"2", b"3", b"4", b"5"]
    owners = await redis.xpending_range(bus.stream("trades"), "g", "-", "+", 10)
    assert {o["consumer"] for o in owners} == {b"worker-2"}
    await survivor.ack(reclaimed)
    assert await pending(redis, bus, "trades", "g") == 0
    assert await survivor.fetch(10, timeout=0) == []


async def test_a_consumer_never_reclaims_what_it_holds_unacked(make_bus: MakeBus) -> None:
    bus = make_bus(claim_idle_ms=0)  # every pending entry is "idle", its own included
    await bus.publish_many("trades", numbered(6, MARKETS[:1]))
    consumer = bus.consumer("trades", group="g")
    first = await consumer.fetch(3, timeout=0)
    rest = await consumer.fetch(10, timeout=0)
    assert values(first + rest) == [str(i).encode() for i in range(6)]
    assert await consumer.fetch(10, timeout=0) == []


async def test_entries_of_a_live_consumer_are_not_reclaimed_before_claim_idle(
    make_bus: MakeBus,
) -> None:
    bus = make_bus(claim_idle_ms=60_000)
    await bus.publish_many("trades", numbered(4, MARKETS[:1]))
    busy = bus.consumer("trades", group="g", name="worker-1")
    assert len(await busy.fetch(10, timeout=0)) == 4
    other = bus.consumer("trades", group="g", name="worker-2")
    assert await other.fetch(10, timeout=0) == []
    await busy.close()


async def test_acked_entries_leave_the_pending_list(make_bus: MakeBus, redis: Redis) -> None:
    bus = make_bus()
    await bus.publish_many("candles", numbered(10, MARKETS))
    consumer = bus.consumer("candles", group="sink")
    got = await consumer.fetch(100, timeout=0)
    assert len(got) == 10
    assert await pending(redis, bus, "candles", "sink") == 10
    await consumer.ack(got[:4])
    assert await pending(redis, bus, "candles", "sink") == 6
    await consumer.ack(got[4:])
    assert await pending(redis, bus, "candles", "sink") == 0
    await consumer.close()


async def test_a_restarted_consumer_gets_its_pending_entries_before_new_ones(
    make_bus: MakeBus,
) -> None:
    bus = make_bus()
    await bus.publish_many("trades", numbered(3, MARKETS[:1]))
    first = bus.consumer("trades", group="g", name="worker-1")
    assert len(await first.fetch(10, timeout=0)) == 3
    await first.close()
    await bus.publish_many("trades", [(MARKETS[0], b"3"), (MARKETS[0], b"4")])
    again = make_bus().consumer("trades", group="g", name="worker-1")  # a new process
    assert values(await again.fetch(10, timeout=0)) == [b"0", b"1", b"2", b"3", b"4"]


async def test_streams_are_trimmed_to_about_maxlen(make_bus: MakeBus, redis: Redis) -> None:
    bus = make_bus(maxlen=100)
    for start in range(0, 3000, 500):
        await bus.publish_many(
            "trades", [(MARKETS[0], str(i).encode()) for i in range(start, start + 500)]
        )
    length = await redis.xlen(bus.stream("trades"))
    # "~" trims whole radix-tree nodes (100 entries each by default): never below maxlen.
    assert 100 <= length <= 300
    late = bus.consumer("trades", group="late")
    got = await late.fetch(1000, timeout=0)
    assert len(got) == length
    assert values(got)[-1] == b"2999"
    assert [int(v) for v in values(got)] == list(range(3000 - length, 3000))


@given(ms=st.integers(0, 2**43 - 1), seq=st.integers(0, 2**20 - 1))
def test_position_encoding_round_trips(ms: int, seq: int) -> None:
    position = encode_position(f"{ms}-{seq}")
    assert decode_position(position) == f"{ms}-{seq}"
    assert encode_position(f"{ms}-{seq}".encode()) == position
    assert 0 <= position < 2**63


@given(a=st.tuples(st.integers(0, 2**43), st.integers(0, 2**20 - 1)),
       b=st.tuples(st.integers(0, 2**43), st.integers(0, 2**20 - 1)))  # fmt: skip
def test_position_order_is_stream_id_order(a: tuple[int, int], b: tuple[int, int]) -> None:
    pa, pb = encode_position(f"{a[0]}-{a[1]}"), encode_position(f"{b[0]}-{b[1]}")
    assert (pa < pb) == (a < b)


def test_a_sequence_too_large_to_encode_is_refused() -> None:
    with pytest.raises(ValueError, match="sequence"):
        encode_position(f"1-{2**20}")


async def test_positions_are_the_stream_ids_in_order(make_bus: MakeBus, redis: Redis) -> None:
    bus = make_bus()
    await bus.publish_many("trades", numbered(500, MARKETS))
    entries = await redis.xrange(bus.stream("trades")) or []
    ids = [entry_id.decode() for entry_id, _ in entries if isinstance(entry_id, bytes)]
    assert len(ids) == 500
    got = await bus.consumer("trades", group="g").fetch(1000, timeout=0)
    assert [decode_position(m.position) for m in got] == ids
    positions = [m.position for m in got]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)


async def test_malformed_entries_are_acked_and_skipped(make_bus: MakeBus, redis: Redis) -> None:
    bus = make_bus()
    stream = bus.stream("trades")
    await bus.publish("trades", MARKETS[0], b"before")
    await redis.xadd(stream, {"key": MARKETS[0]})  # no value
    await redis.xadd(stream, {"value": b"x"})  # no key
    await redis.xadd(stream, {"key": b"\xff\xfe", "value": b"x"})  # key is not UTF-8
    await bus.publish("trades", MARKETS[0], b"after")
    consumer = bus.consumer("trades", group="g")
    got = await consumer.fetch(10, timeout=1.0)
    assert values(got) == [b"before", b"after"]
    assert await pending(redis, bus, "trades", "g") == 2  # only the good ones wait for ack
    await consumer.ack(got)
    assert await pending(redis, bus, "trades", "g") == 0


async def test_a_batch_of_only_malformed_entries_does_not_end_the_wait(
    make_bus: MakeBus, redis: Redis
) -> None:
    bus = make_bus()
    consumer = bus.consumer("trades", group="g")
    assert await consumer.fetch(1, timeout=0) == []  # the group exists, reading from "0"
    await redis.xadd(bus.stream("trades"), {"junk": b"1"})
    await bus.publish("trades", MARKETS[0], b"good")
    assert values(await consumer.fetch(10, timeout=5.0)) == [b"good"]


async def test_pending_entries_deleted_from_the_stream_are_dropped(
    make_bus: MakeBus, redis: Redis
) -> None:
    bus = make_bus()
    await bus.publish_many("trades", numbered(3, MARKETS[:1]))
    first = bus.consumer("trades", group="g")
    got = await first.fetch(10, timeout=0)
    await first.close()
    await redis.xdel(bus.stream("trades"), decode_position(got[1].position))  # as trimming would
    again = bus.consumer("trades", group="g")
    assert values(await again.fetch(10, timeout=0)) == [b"0", b"2"]
    await again.ack(got)
    assert await pending(redis, bus, "trades", "g") == 0


async def test_a_deleted_stream_gets_its_group_back(make_bus: MakeBus, redis: Redis) -> None:
    bus = make_bus()
    consumer = bus.consumer("trades", group="g")
    assert await consumer.fetch(10, timeout=0) == []
    await redis.delete(bus.stream("trades"))  # an operator reset the topic
    await bus.publish("trades", MARKETS[0], b"fresh")
    assert values(await consumer.fetch(10, timeout=1.0)) == [b"fresh"]


async def test_close_ends_a_waiting_fetch_without_acking(make_bus: MakeBus, redis: Redis) -> None:
    bus = make_bus()
    consumer = bus.consumer("trades", group="g")
    waiting = asyncio.create_task(consumer.fetch(10, timeout=60))
    await asyncio.sleep(0.05)
    await consumer.close()
    assert await asyncio.wait_for(waiting, 5) == []
    assert await consumer.fetch(10, timeout=0) == []

    other = bus.consumer("trades", group="g2")
    waiting = asyncio.create_task(other.fetch(10, timeout=60))
    await asyncio.sleep(0.05)
    await bus.close()
    assert await asyncio.wait_for(waiting, 5) == []
    await bus.close()  # idempotent
    with pytest.raises(BusClosedError):
        await bus.publish("trades", "k", b"v")
    with pytest.raises(BusClosedError):
        await bus.publish_many("trades", [("k", b"v")])
    with pytest.raises(BusClosedError):
        bus.consumer("trades", group="g3")
    with pytest.raises(BusClosedError):
        await bus.ping()
    with pytest.raises(BusClosedError):
        await bus.start()
    assert await other.fetch(10, timeout=0) == []


async def test_a_cancelled_fetch_is_still_cancelled(make_bus: MakeBus) -> None:
    consumer = make_bus().consumer("trades", group="g")
    waiting = asyncio.create_task(consumer.fetch(10, timeout=60))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_bad_arguments_are_rejected(make_bus: MakeBus, redis_url: str) -> None:
    with pytest.raises(ValueError, match="maxlen"):
        RedisStreamsBus.from_url(redis_url, maxlen=0)
    with pytest.raises(ValueError, match="claim_idle_ms"):
        RedisStreamsBus.from_url(redis_url, claim_idle_ms=-1)
    with pytest.raises(ValueError, match="decode"):
        RedisStreamsBus(Redis.from_url(redis_url, decode_responses=True))
    with pytest.raises(ValueError, match="max_messages"):
        await make_bus().consumer("trades", group="g").fetch(0)


@pytest.mark.parametrize("options", [{"protocol": 2}, {"protocol": 3}, {"legacy_responses": False}])
async def test_every_reply_shape_of_the_client_works(
    redis_url: str, options: dict[str, object]
) -> None:
    client = Redis.from_url(redis_url, **options)  # type: ignore[arg-type]
    bus = RedisStreamsBus(client, stream_prefix=unique_prefix(), claim_idle_ms=0)
    await bus.publish_many("trades", numbered(4, MARKETS[:1]))
    dead = bus.consumer("trades", group="g", name="dead")
    assert values(await dead.fetch(2, timeout=0)) == [b"0", b"1"]
    alive = bus.consumer("trades", group="g", name="alive")
    got = await alive.fetch(10, timeout=1.0)
    assert values(got) == [b"0", b"1", b"2", b"3"]
    await alive.ack(got)
    await bus.close()
