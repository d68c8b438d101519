"""MemoryBus: the shared Bus contract, plus what only the in-process twin promises."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptodesk.adapters.bus.base import Bus, Message
from cryptodesk.adapters.bus.memory import BusClosedError, MemoryBus
from tests.contracts.bus_contract import MARKETS, BusContract, by_key, numbered


class TestMemoryBus(BusContract):
    @pytest_asyncio.fixture
    async def bus(self) -> AsyncIterator[Bus]:
        bus = MemoryBus()
        await bus.start()
        yield bus
        await bus.close()


@pytest_asyncio.fixture
async def bus() -> AsyncIterator[MemoryBus]:
    bus = MemoryBus()
    yield bus
    await bus.close()


def values(messages: list[Message]) -> list[bytes]:
    return [m.value for m in messages]


async def test_a_dropped_consumer_hands_its_unacked_messages_on(bus: MemoryBus) -> None:
    await bus.publish_many("trades", numbered(6, MARKETS[:1]))
    crashed = bus.consumer("trades", group="g")
    got = await crashed.fetch(10, timeout=0)
    await crashed.ack(got[:2])
    del crashed, got  # a crash: no close(), the object is just gone
    gc.collect()
    restarted = bus.consumer("trades", group="g")
    assert values(await restarted.fetch(10, timeout=0)) == [b"2", b"3", b"4", b"5"]


async def test_redelivered_messages_come_before_newer_ones(bus: MemoryBus) -> None:
    await bus.publish_many("trades", numbered(3, MARKETS[:1]))
    first = bus.consumer("trades", group="g")
    assert len(await first.fetch(10, timeout=0)) == 3
    await first.close()
    await bus.publish_many("trades", [(MARKETS[0], b"3"), (MARKETS[0], b"4")])
    second = bus.consumer("trades", group="g")
    assert values(await second.fetch(10, timeout=0)) == [b"0", b"1", b"2", b"3", b"4"]


async def test_out_of_order_acks_commit_only_the_contiguous_prefix(bus: MemoryBus) -> None:
    await bus.publish_many("trades", numbered(6, MARKETS[:1]))
    first = bus.consumer("trades", group="g")
    got = await first.fetch(10, timeout=0)
    await first.ack(got[3:])  # the tail is done, the head is not
    await first.close()
    second = bus.consumer("trades", group="g")
    head = await second.fetch(10, timeout=0)
    assert values(head) == [b"0", b"1", b"2"]
    await second.ack(head)
    assert bus.retained("trades") == 0  # everything is committed now, so trimmed
    await second.close()


async def test_acks_sent_after_close_still_count(bus: MemoryBus) -> None:
    await bus.publish_many("trades", numbered(4, MARKETS[:1]))
    first = bus.consumer("trades", group="g")
    got = await first.fetch(10, timeout=0)
    await first.close()
    await first.ack(got)  # the sink finished writing during shutdown
    second = bus.consumer("trades", group="g")
    assert await second.fetch(10, timeout=0) == []


async def test_live_consumers_own_disjoint_keys_and_the_survivor_inherits(bus: MemoryBus) -> None:
    keys = [f"sim:C{i}/USDT" for i in range(16)]
    c1 = bus.consumer("trades", group="g", name="c1")
    c2 = bus.consumer("trades", group="g", name="c2")
    await bus.publish_many("trades", numbered(160, keys))
    got1 = await c1.fetch(1000, timeout=0)
    got2 = await c2.fetch(1000, timeout=0)
    keys1, keys2 = set(by_key(got1)), set(by_key(got2))
    assert keys1, "both consumers get a share of the keys"
    assert keys2, "both consumers get a share of the keys"
    assert not keys1 & keys2
    assert len(got1) + len(got2) == 160

    await c1.ack(got1)
    await c2.close()  # c2 never acked: its keys move to c1, old messages first
    await bus.publish_many("trades", numbered(32, keys))
    inherited = await c1.fetch(1000, timeout=0)
    assert sorted(values(inherited)[: len(got2)]) == sorted(values(got2))
    assert set(by_key(inherited)) == keys1 | keys2
    await c1.close()


# A script of group life: ("fetch_ack", who, n), ("crash", who, n) fetches then
# vanishes without acking, ("join", who, 0) adds a consumer; publishes interleave.
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["fetch_ack", "crash", "join", "publish"]),
        st.integers(0, 3),
        st.integers(1, 40),
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(steps=STEPS)
def test_membership_changes_never_lose_or_duplicate_acked_work(
    steps: list[tuple[str, int, int]],
) -> None:
    async def scenario() -> None:
        bus = MemoryBus()
        keys = [f"sim:C{i}/USDT" for i in range(7)]
        sent = 0
        consumers = {0: bus.consumer("t", group="g", name="c0")}
        acked: list[int] = []
        for op, who, n in steps:
            if op == "publish":
                await bus.publish_many(
                    "t", [(keys[i % 7], b"%d" % i) for i in range(sent, sent + n)]
                )
                sent += n
            elif op == "join":
                consumers.setdefault(who, bus.consumer("t", group="g", name=f"c{who}"))
            elif who in consumers:
                batch = await consumers[who].fetch(n, timeout=0)
                if op == "fetch_ack":
                    await consumers[who].ack(batch)
                    acked.extend(int(m.value) for m in batch)
                else:
                    await consumers.pop(who).close()
        for consumer in consumers.values():
            await consumer.close()
        last = bus.consumer("t", group="g", name="last")
        while batch := await last.fetch(1000, timeout=0):
            acked.extend(int(m.value) for m in batch)
            await last.ack(batch)
        assert sorted(acked) == list(range(sent))
        assert bus.retained("t") == 0

    asyncio.run(scenario())


async def test_committed_entries_are_trimmed_so_memory_stays_bounded(bus: MemoryBus) -> None:
    live = bus.consumer("trades", group="live")
    for _ in range(50):
        await bus.publish_many("trades", numbered(1000, MARKETS))
        while batch := await live.fetch(300, timeout=0):
            await live.ack(batch)
    assert bus.retained("trades") == 0
    assert bus.stored("trades") < 2 * 1024  # the dead prefix is freed in chunks


async def test_a_lagging_group_holds_messages_until_it_commits(bus: MemoryBus) -> None:
    fast, slow = bus.consumer("t", group="fast"), bus.consumer("t", group="slow")
    await bus.publish_many("t", numbered(100, MARKETS))
    await fast.ack(await fast.fetch(1000, timeout=0))
    assert bus.retained("t") == 100
    await slow.ack(await slow.fetch(40, timeout=0))
    assert bus.retained("t") == 60


async def test_retention_cap_drops_the_oldest_messages() -> None:
    bus = MemoryBus(max_retained=100)
    lagging = bus.consumer("t", group="lagging")
    await bus.publish_many("t", numbered(10, MARKETS[:1]))
    assert values(await lagging.fetch(5, timeout=0)) == [b"0", b"1", b"2", b"3", b"4"]
    for start in range(10, 5000, 10):
        await bus.publish_many(
            "t", [(MARKETS[0], str(i).encode()) for i in range(start, start + 10)]
        )
    assert bus.retained("t") == 100
    assert bus.stored("t") <= 100 + 1024 + 10
    newcomer = bus.consumer("t", group="new")
    assert values(await newcomer.fetch(2, timeout=0)) == [b"4900", b"4901"]
    # The lagging group lost what retention dropped, including what it held unacked.
    await lagging.close()
    again = bus.consumer("t", group="lagging")
    assert values(await again.fetch(1, timeout=0)) == [b"4900"]
    await bus.close()


async def test_close_wakes_a_waiting_fetch_and_stops_everything(bus: MemoryBus) -> None:
    consumer = bus.consumer("t", group="g")
    other = bus.consumer("t", group="g2")
    waiting = asyncio.create_task(consumer.fetch(10, timeout=60))
    await asyncio.sleep(0)
    await consumer.close()
    assert await asyncio.wait_for(waiting, 5) == []

    waiting = asyncio.create_task(other.fetch(10, timeout=60))
    await asyncio.sleep(0)
    await bus.close()
    assert await asyncio.wait_for(waiting, 5) == []
    await bus.close()  # idempotent
    with pytest.raises(BusClosedError):
        await bus.publish("t", "k", b"v")
    with pytest.raises(BusClosedError):
        await bus.publish_many("t", [("k", b"v")])
    with pytest.raises(BusClosedError):
        bus.consumer("t", group="g3")
    with pytest.raises(BusClosedError):
        await bus.ping()
    assert await other.fetch(10, timeout=60) == []
    await other.ack([])


async def test_fetch_after_consumer_close_returns_nothing(bus: MemoryBus) -> None:
    await bus.publish("t", "k", b"v")
    consumer = bus.consumer("t", group="g")
    await consumer.close()
    await consumer.close()
    assert await consumer.fetch(10, timeout=0) == []


async def test_bad_arguments_are_rejected(bus: MemoryBus) -> None:
    with pytest.raises(ValueError, match="max_retained"):
        MemoryBus(max_retained=0)
    with pytest.raises(ValueError, match="max_messages"):
        await bus.consumer("t", group="g").fetch(0)


async def test_max_lag_makes_publishers_wait_for_live_consumers():
    bus = MemoryBus(max_lag=10)
    consumer = bus.consumer("t", group="g")
    await bus.publish_many("t", [("k", b"x")] * 10)
    blocked = asyncio.create_task(bus.publish("t", "k", b"y"))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    assert bus.retained("t") == 10
    batch = await consumer.fetch(5, timeout=0.1)
    await consumer.ack(batch)
    await asyncio.wait_for(blocked, 1)
    assert bus.retained("t") == 6
    # A group whose consumers all left no longer holds publishers back.
    await consumer.close()
    await asyncio.wait_for(bus.publish_many("t", [("k", b"z")] * 50), 1)
    await asyncio.wait_for(bus.publish("no-groups", "k", b"1"), 1)
    await bus.close()


async def test_max_lag_publisher_released_by_close():
    bus = MemoryBus(max_lag=1)
    bus.consumer("t", group="g")
    await bus.publish("t", "k", b"1")
    blocked = asyncio.create_task(bus.publish("t", "k", b"2"))
    await asyncio.sleep(0.02)
    assert not blocked.done()
    await bus.close()
    with pytest.raises(BusClosedError):
        await asyncio.wait_for(blocked, 1)
    with pytest.raises(ValueError, match="max_lag"):
        MemoryBus(max_lag=0)


async def test_a_group_with_a_live_consumer_is_not_deleted(bus: MemoryBus) -> None:
    await bus.publish_many("trades", numbered(3, MARKETS[:1]))
    live = bus.consumer("trades", group="g")
    await live.ack((await live.fetch(10, timeout=0))[:1])
    await bus.delete_group("trades", "g")
    await live.close()
    again = bus.consumer("trades", group="g")
    assert values(await again.fetch(10, timeout=0)) == [b"1", b"2"]


async def test_deleting_a_lagging_group_lets_the_log_be_trimmed(bus: MemoryBus) -> None:
    await bus.publish_many("trades", numbered(4, MARKETS[:1]))
    await bus.consumer("trades", group="gone").close()  # never acked anything
    sink = bus.consumer("trades", group="sink")
    await sink.ack(await sink.fetch(10, timeout=0))
    assert bus.retained("trades") == 4
    await bus.delete_group("trades", "gone")
    assert bus.retained("trades") == 0
