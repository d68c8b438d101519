"""The Cache contract: every cache (memory, Redis) passes these same tests.

Use it by subclassing and supplying a ready cache::

    class TestRedisCache(CacheContract):
        @pytest_asyncio.fixture
        async def cache(self, redis_url): ...  # connect, yield, close

A real server is shared between tests, so every key and channel a test uses
starts with its own ``unique_prefix()``. TTL tests sleep for real, briefly.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from cryptodesk.adapters.cache.base import Cache

DIGITS = [str(i).encode() for i in range(10)]


class CacheContract:
    # A TTL short enough to wait out in a test, and a wait that is surely past it.
    short_ttl: float = 0.2
    past_short_ttl: float = 0.4
    # The most a subscriber waits for a message that was published.
    receive_timeout: float = 5.0
    # How long a subscriber waits to show that nothing arrives.
    quiet_timeout: float = 0.2

    def unique_prefix(self) -> str:
        return f"contract:{uuid.uuid4().hex[:12]}:"

    async def test_ping(self, cache: Cache) -> None:
        await cache.ping()

    async def test_set_get_overwrite_and_delete(self, cache: Cache) -> None:
        key = self.unique_prefix() + "ticker:sim:BTC/USDT"
        assert await cache.get(key) is None
        await cache.set(key, b"v1")
        assert await cache.get(key) == b"v1"
        await cache.set(key, b"v2")
        assert await cache.get(key) == b"v2"
        await cache.delete(key)
        assert await cache.get(key) is None
        await cache.delete(key)  # deleting a missing key is fine

    async def test_binary_values_round_trip(self, cache: Cache) -> None:
        p = self.unique_prefix()
        values = {
            p + "empty": b"",
            p + "nul": b"\x00",
            p + "bytes": bytes(range(256)),
            p + "not-utf8": b"\xff\xfe\x80",
            p + "ÉTH/€": "€".encode(),
        }
        await cache.set_many(values)
        assert await cache.get_many(list(values)) == list(values.values())
        await cache.push_capped(p + "list", list(values.values()), maxlen=10)
        assert await cache.list_range(p + "list") == list(values.values())

    async def test_get_many_keeps_order_and_reports_missing(self, cache: Cache) -> None:
        p = self.unique_prefix()
        await cache.set_many({p + "a": b"A", p + "c": b"C"})
        assert await cache.get_many([p + "c", p + "missing", p + "a", p + "c"]) == [
            b"C",
            None,
            b"A",
            b"C",
        ]
        assert await cache.get_many([]) == []

    async def test_values_expire_after_their_ttl(self, cache: Cache) -> None:
        p = self.unique_prefix()
        await cache.set(p + "short", b"1", ttl=self.short_ttl)
        await cache.set_many({p + "batch-1": b"2", p + "batch-2": b"3"}, ttl=self.short_ttl)
        await cache.set(p + "long", b"4", ttl=60)
        await cache.set(p + "forever", b"5")
        await cache.set(p + "renewed", b"6", ttl=self.short_ttl)
        await cache.set(p + "renewed", b"7")  # a plain set clears the earlier ttl
        assert await cache.get(p + "short") == b"1"
        await asyncio.sleep(self.past_short_ttl)
        keys = ["short", "batch-1", "batch-2", "long", "forever", "renewed"]
        assert await cache.get_many([p + k for k in keys]) == [None, None, None, b"4", b"5", b"7"]

    async def test_ttl_must_be_positive(self, cache: Cache) -> None:
        key = self.unique_prefix() + "k"
        for bad in (0, -1.0):
            with pytest.raises(ValueError, match="ttl"):
                await cache.set(key, b"x", ttl=bad)
            with pytest.raises(ValueError, match="ttl"):
                await cache.set_many({key: b"x"}, ttl=bad)
        assert await cache.get(key) is None

    async def test_push_capped_keeps_the_last_maxlen_items(self, cache: Cache) -> None:
        key = self.unique_prefix() + "BTC/USDT:1m:ma3"
        await cache.push_capped(key, [b"1", b"2"], maxlen=3)
        assert await cache.list_range(key) == [b"1", b"2"]
        await cache.push_capped(key, [b"3"], maxlen=3)
        assert await cache.list_range(key) == [b"1", b"2", b"3"]
        await cache.push_capped(key, [b"4"], maxlen=3)
        assert await cache.list_range(key) == [b"2", b"3", b"4"]
        await cache.push_capped(key, [b"5", b"6", b"7", b"8"], maxlen=3)
        assert await cache.list_range(key) == [b"6", b"7", b"8"]
        await cache.push_capped(key, [b"9"], maxlen=2)  # a smaller cap trims further
        assert await cache.list_range(key) == [b"8", b"9"]
        await cache.delete(key)
        assert await cache.list_range(key) == []

    async def test_push_capped_rejects_a_cap_below_one(self, cache: Cache) -> None:
        key = self.unique_prefix() + "k"
        with pytest.raises(ValueError, match="maxlen"):
            await cache.push_capped(key, [b"1"], maxlen=0)
        assert await cache.list_range(key) == []

    @pytest.mark.parametrize(
        ("start", "end", "expected"),
        [
            (0, -1, DIGITS),
            (0, 0, DIGITS[:1]),
            (2, 4, DIGITS[2:5]),
            (-3, -1, DIGITS[7:]),
            (-1, -1, DIGITS[9:]),
            (5, 100, DIGITS[5:]),
            (-100, 2, DIGITS[:3]),
            (-11, -10, DIGITS[:1]),
            (-100, -50, []),
            (8, 3, []),
            (3, -8, []),
            (10, 20, []),
            (0, -11, []),
        ],
    )
    async def test_list_range_follows_lrange(
        self, cache: Cache, start: int, end: int, expected: list[bytes]
    ) -> None:
        key = self.unique_prefix() + "digits"
        await cache.push_capped(key, DIGITS, maxlen=100)
        assert await cache.list_range(key, start, end) == expected
        assert await cache.list_range(self.unique_prefix() + "missing", start, end) == []

    async def test_publish_reaches_every_current_subscriber(self, cache: Cache) -> None:
        channel = self.unique_prefix() + "alerts"
        first, second = await cache.subscribe(channel), await cache.subscribe(channel)
        assert await cache.publish(channel, b"m1") == 2
        assert await cache.publish(channel, b"m2") == 2
        for sub in (first, second):
            assert await sub.get(timeout=self.receive_timeout) == b"m1"
            assert await sub.get(timeout=self.receive_timeout) == b"m2"
        await first.close()
        await second.close()

    async def test_a_closed_subscription_receives_nothing(self, cache: Cache) -> None:
        channel = self.unique_prefix() + "alerts"
        kept, gone = await cache.subscribe(channel), await cache.subscribe(channel)
        await gone.close()
        assert await cache.publish(channel, b"after-close") == 1
        assert await kept.get(timeout=self.receive_timeout) == b"after-close"
        assert await gone.get(timeout=self.quiet_timeout) is None
        await kept.close()
        assert await cache.publish(channel, b"nobody") == 0

    async def test_a_subscription_sees_only_later_messages(self, cache: Cache) -> None:
        channel = self.unique_prefix() + "ticks"
        assert await cache.publish(channel, b"before") == 0
        sub = await cache.subscribe(channel)
        await cache.publish(channel, b"after")
        assert await sub.get(timeout=self.receive_timeout) == b"after"
        assert await sub.get(timeout=self.quiet_timeout) is None
        await sub.close()

    async def test_channels_are_separate(self, cache: Cache) -> None:
        p = self.unique_prefix()
        btc, eth = await cache.subscribe(p + "BTC"), await cache.subscribe(p + "ETH")
        await cache.publish(p + "ETH", b"eth")
        assert await eth.get(timeout=self.receive_timeout) == b"eth"
        assert await btc.get(timeout=self.quiet_timeout) is None
        await btc.close()
        await eth.close()

    async def test_async_iteration_yields_messages_in_order(self, cache: Cache) -> None:
        channel = self.unique_prefix() + "book"
        sub = await cache.subscribe(channel)
        sent = [str(i).encode() for i in range(20)]
        for message in sent:
            await cache.publish(channel, message)
        received: list[bytes] = []

        async def read() -> None:
            async for message in sub:
                received.append(message)
                if len(received) == len(sent):
                    break

        await asyncio.wait_for(read(), self.receive_timeout)
        assert received == sent
        await sub.close()
