"""The Bus contract: every bus (memory, Redis Streams, Kafka) passes these same tests.

Use it by subclassing and supplying a started bus::

    class TestKafkaBus(BusContract):
        quiet_timeout = 1.0  # a real broker needs longer to prove "nothing more"

        @pytest_asyncio.fixture
        async def bus(self, kafka_url): ...  # start, yield, close

Real brokers are shared between tests, so every test uses fresh topic and group
names. Only what every engine can promise is asserted: order per key (not
across keys, which Kafka partitions do not keep), delivery at least once with
acked prefixes never redelivered, and ``position`` being unique in a topic.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from cryptodesk.adapters.bus.base import Bus, Consumer, Message

MARKETS = ["sim:BTC/USDT", "sim:ETH/USDT", "sim:SOL/USDT", "sim:XRP/USDT"]


def numbered(count: int, keys: list[str]) -> list[tuple[str, bytes]]:
    """``count`` events spread round-robin over ``keys``; the value is the send index."""
    return [(keys[i % len(keys)], str(i).encode()) for i in range(count)]


def by_key(messages: list[Message]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for m in messages:
        out.setdefault(m.key, []).append(m.value)
    return out


class BusContract:
    # How long a fetch waits to show that nothing (more) arrives.
    quiet_timeout: float = 0.2
    # The most a fetch that expects data may wait; it returns as soon as data is there.
    fetch_timeout: float = 5.0

    def unique_topic(self) -> str:
        return f"contract-{uuid.uuid4().hex[:12]}"

    def unique_group(self) -> str:
        return f"group-{uuid.uuid4().hex[:12]}"

    async def drain(self, consumer: Consumer, count: int) -> list[Message]:
        """Fetch until ``count`` messages arrived (or a fetch came back empty).

        It never asks for more than it still expects, so no extra message ends
        up fetched and unacked, which would change what a later consumer sees.
        """
        got: list[Message] = []
        while len(got) < count:
            batch = await consumer.fetch(count - len(got), timeout=self.fetch_timeout)
            if not batch:
                break
            got.extend(batch)
        return got

    async def test_ping(self, bus: Bus) -> None:
        await bus.ping()

    async def test_fetch_on_an_empty_topic_times_out_with_nothing(self, bus: Bus) -> None:
        consumer = bus.consumer(self.unique_topic(), group=self.unique_group())
        assert await consumer.fetch(10, timeout=self.quiet_timeout) == []
        await consumer.close()

    async def test_fetch_waits_for_a_later_publish(self, bus: Bus) -> None:
        topic = self.unique_topic()
        consumer = bus.consumer(topic, group=self.unique_group())
        waiting = asyncio.create_task(consumer.fetch(10, timeout=self.fetch_timeout))
        await asyncio.sleep(0.05)  # let the fetch start waiting before anything exists
        await bus.publish(topic, MARKETS[0], b"late")
        got = await waiting
        assert [(m.topic, m.key, m.value) for m in got] == [(topic, MARKETS[0], b"late")]
        await consumer.close()

    async def test_messages_of_one_key_keep_their_order(self, bus: Bus) -> None:
        topic = self.unique_topic()
        sent = numbered(400, MARKETS)
        for key, value in sent[:100]:
            await bus.publish(topic, key, value)
        await bus.publish_many(topic, sent[100:])
        consumer = bus.consumer(topic, group=self.unique_group())
        got = await self.drain(consumer, len(sent))
        assert {m.topic for m in got} == {topic}
        assert by_key(got) == {key: [v for k, v in sent if k == key] for key in MARKETS}
        await consumer.close()

    async def test_publish_many_keeps_batch_order_and_positions_are_unique(self, bus: Bus) -> None:
        topic = self.unique_topic()
        sent = numbered(1000, MARKETS[:1])
        await bus.publish_many(topic, sent)
        await bus.publish_many(topic, [])  # an empty batch is allowed and adds nothing
        consumer = bus.consumer(topic, group=self.unique_group())
        got = await self.drain(consumer, len(sent))
        assert [(m.key, m.value) for m in got] == sent
        assert len({m.position for m in got}) == len(got)
        assert await consumer.fetch(10, timeout=self.quiet_timeout) == []
        await consumer.close()

    async def test_binary_values_and_unicode_keys_round_trip(self, bus: Bus) -> None:
        topic = self.unique_topic()
        sent = [
            ("empty", b""),
            ("nul", b"\x00"),
            ("all-bytes", bytes(range(256))),
            ("not-utf8", b"\xff\xfe\x80"),
            ("large", bytes(range(256)) * 400),
            ("kraken:ÉTH/€", "€ £ ¥".encode()),
        ]
        await bus.publish_many(topic, sent)
        consumer = bus.consumer(topic, group=self.unique_group())
        got = await self.drain(consumer, len(sent))
        assert sorted((m.key, m.value) for m in got) == sorted(sent)
        assert all(type(m.value) is bytes for m in got)
        await consumer.close()

    async def test_fetch_respects_max_messages(self, bus: Bus) -> None:
        topic = self.unique_topic()
        sent = numbered(10, MARKETS[:1])
        await bus.publish_many(topic, sent)
        consumer = bus.consumer(topic, group=self.unique_group())
        one = await consumer.fetch(1, timeout=self.fetch_timeout)
        assert len(one) == 1
        got = list(one)
        for _ in range(20):  # bounded: 9 more messages in batches of at most 3
            batch = await consumer.fetch(3, timeout=self.fetch_timeout)
            assert len(batch) <= 3
            got.extend(batch)
            if not batch or len(got) >= len(sent):
                break
        assert [(m.key, m.value) for m in got] == sent
        await consumer.close()

    async def test_unacked_messages_go_to_the_next_consumer_of_the_group(self, bus: Bus) -> None:
        topic, group = self.unique_topic(), self.unique_group()
        sent = numbered(20, MARKETS[:1])
        await bus.publish_many(topic, sent)
        first = bus.consumer(topic, group=group, name="c1")
        got = await self.drain(first, 20)
        assert len(got) == 20
        await first.ack(got[:8])  # a crash after the sink wrote only the first 8
        await first.close()

        second = bus.consumer(topic, group=group, name="c1")
        again = await self.drain(second, 12)
        assert [(m.key, m.value) for m in again] == sent[8:]
        await second.ack(again)
        assert await second.fetch(10, timeout=self.quiet_timeout) == []
        await second.close()

    async def test_acked_messages_are_not_redelivered(self, bus: Bus) -> None:
        topic, group = self.unique_topic(), self.unique_group()
        await bus.publish_many(topic, numbered(10, MARKETS))
        first = bus.consumer(topic, group=group)
        got = await self.drain(first, 10)
        assert len(got) == 10
        await first.ack(got)
        await first.close()

        second = bus.consumer(topic, group=group)
        assert await second.fetch(10, timeout=self.quiet_timeout) == []
        await bus.publish_many(topic, [(MARKETS[0], b"new-1"), (MARKETS[0], b"new-2")])
        fresh = await self.drain(second, 2)
        assert [m.value for m in fresh] == [b"new-1", b"new-2"]
        await second.close()

    async def test_groups_are_independent_and_each_sees_everything(self, bus: Bus) -> None:
        topic = self.unique_topic()
        alerts = bus.consumer(topic, group=self.unique_group())
        sinks = bus.consumer(topic, group=self.unique_group())
        sent = numbered(50, MARKETS)
        await bus.publish_many(topic, sent)
        expected = {key: [v for k, v in sent if k == key] for key in MARKETS}
        for consumer in (alerts, sinks):
            got = await self.drain(consumer, len(sent))
            assert by_key(got) == expected
            await consumer.ack(got)  # one group's acks must not hide messages from the other
        for consumer in (alerts, sinks):
            assert await consumer.fetch(10, timeout=self.quiet_timeout) == []
            await consumer.close()

    async def test_a_new_group_starts_at_the_oldest_message(self, bus: Bus) -> None:
        topic = self.unique_topic()
        sent = numbered(30, MARKETS[:2])
        await bus.publish_many(topic, sent)  # before any consumer exists
        late = bus.consumer(topic, group=self.unique_group())
        got = await self.drain(late, len(sent))
        assert by_key(got) == {key: [v for k, v in sent if k == key] for key in MARKETS[:2]}
        await late.close()

    async def test_a_new_group_can_start_at_the_end_and_then_keeps_its_place(
        self, bus: Bus
    ) -> None:
        topic, group = self.unique_topic(), self.unique_group()
        # Published before the group exists, one by one: tansu 0.6 (the Kafka of
        # the tests) reports the end of a partition as the first offset of its last
        # record batch plus one, so "latest" after a batch of several would start
        # inside it; Kafka reports the true end.
        for key, value in numbered(12, MARKETS):
            await bus.publish(topic, key, value)
        live = bus.consumer(topic, group=group, start="latest")
        assert await live.fetch(10, timeout=self.quiet_timeout) == []
        await bus.publish_many(topic, [(MARKETS[0], b"after-1"), (MARKETS[1], b"after-2")])
        got = await self.drain(live, 2)
        assert by_key(got) == {MARKETS[0]: [b"after-1"], MARKETS[1]: [b"after-2"]}
        await live.ack(got)
        await live.close()
        # A later consumer goes on where the group is, "latest" or not: what came
        # while none ran is delivered, on the keys the group never got before too.
        away = [(key, f"away {key}".encode()) for key in MARKETS]
        await bus.publish_many(topic, away)
        again = bus.consumer(topic, group=group, start="latest")
        assert sorted((m.key, m.value) for m in await self.drain(again, 4)) == sorted(away)
        assert await again.fetch(10, timeout=self.quiet_timeout) == []
        await again.close()

    async def test_start_is_earliest_or_latest(self, bus: Bus) -> None:
        with pytest.raises(ValueError, match="start must be 'earliest' or 'latest'"):
            bus.consumer(self.unique_topic(), group=self.unique_group(), start="newest")  # type: ignore[arg-type]

    async def test_a_deleted_group_starts_afresh(self, bus: Bus) -> None:
        topic, group = self.unique_topic(), self.unique_group()
        # A group behind keeps the messages retained (the memory bus trims what
        # every group it knows has acked).
        behind = bus.consumer(topic, group=self.unique_group())
        sent = numbered(5, MARKETS[:1])
        await bus.publish_many(topic, sent)
        first = bus.consumer(topic, group=group)
        got = await self.drain(first, len(sent))
        await first.ack(got)
        await first.close()
        await bus.delete_group(topic, group)
        await bus.delete_group(topic, group)  # a group already gone is no error
        await bus.delete_group(topic, self.unique_group())  # nor one that never was
        await bus.delete_group(self.unique_topic(), group)  # nor a topic never used
        again = bus.consumer(topic, group=group)
        assert [(m.key, m.value) for m in await self.drain(again, len(sent))] == sent
        await again.close()
        await behind.close()

    async def test_two_consumers_of_one_group_split_without_loss_or_duplication(
        self, bus: Bus
    ) -> None:
        topic, group = self.unique_topic(), self.unique_group()
        keys = [f"sim:C{i}/USDT" for i in range(16)]
        sent = numbered(400, keys)
        consumers = {
            "c1": bus.consumer(topic, group=group, name="c1"),
            "c2": bus.consumer(topic, group=group, name="c2"),
        }
        await bus.publish_many(topic, sent)
        received: dict[str, list[Message]] = {"c1": [], "c2": []}
        idle_limit = max(1, round(self.fetch_timeout / self.quiet_timeout))

        async def work(name: str) -> None:
            idle = 0
            while sum(map(len, received.values())) < len(sent) and idle < idle_limit:
                batch = await consumers[name].fetch(50, timeout=self.quiet_timeout)
                idle = 0 if batch else idle + 1
                received[name].extend(batch)
                await consumers[name].ack(batch)

        await asyncio.gather(work("c1"), work("c2"))
        everything = received["c1"] + received["c2"]
        assert sorted(int(m.value) for m in everything) == list(range(len(sent)))
        for messages in received.values():
            for values in by_key(messages).values():
                indexes = [int(v) for v in values]
                assert indexes == sorted(indexes)
        for consumer in consumers.values():
            await consumer.close()
