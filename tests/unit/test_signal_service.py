"""The signal service on the real embedded adapters: exactly once through
redeliveries, crashes at every step, lost caches, gaps and a second worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from cryptodesk.adapters.bus.memory import MemoryBus
from cryptodesk.adapters.cache.memory import MemoryCache
from cryptodesk.adapters.db import migrate
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.signal_store import SignalFilter, SqlSignalStore
from cryptodesk.adapters.db.sql_store import SqlMarketStore
from cryptodesk.domain import codec
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.market import Candle, stream_key
from cryptodesk.domain.signals import Signal, decode_signal
from cryptodesk.observability.health import HealthRegistry
from cryptodesk.observability.metrics import Metrics
from cryptodesk.services import cache_keys
from cryptodesk.services.signal_rules import MaCrossRule, RuleBook, SignalRuleConfig
from cryptodesk.services.signal_service import SignalService
from cryptodesk.services.signal_windows import decode_point

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z
H = 3_600_000
NOW = 1_714_600_000_000
BTC = ("sim", "BTC/USDT", "1h")
# Falls, rises through the averages, falls again: golden cross on candle 8,
# death cross on candle 15 for SMA 3 / SMA 5.
CLOSES = [10.0, 9, 8, 7, 6, 5, 6, 7, 8, 9, 10, 11, 12, 11, 10, 9, 8, 7]
EXPECTED = [("g", "golden_cross", T0 + 8 * H), ("g", "death_cross", T0 + 15 * H)]
GOLDEN = MaCrossRule(id="g", type="ma_cross", fast=3, slow=5)


class Crash(BaseException):
    """A kill -9 stand-in: nothing retries it and nothing after it runs."""


def candle(i: int, close: float, symbol: str = "BTC/USDT") -> Candle:
    return Candle("sim", symbol, "1h", T0 + i * H, close, close, close, close, 1.0, close, 1, True)


SERIES = [candle(i, c) for i, c in enumerate(CLOSES)]


class Env:
    """One deployment: a database, a bus and a cache that outlive service instances."""

    def __init__(self, store: SqlMarketStore, rules: Sequence[SignalRuleConfig]) -> None:
        self.store = store
        self.signals = SqlSignalStore(store.engine)
        self.book = RuleBook(self.signals, rules)
        self.bus = MemoryBus()
        self.cache = MemoryCache()
        self.metrics = Metrics()
        self.health = HealthRegistry(self.metrics)
        self._readers = 0

    def service(self, **overrides: Any) -> SignalService:
        parts: dict[str, Any] = {
            "bus": self.bus, "cache": self.cache, "store": self.store,
            "signals": self.signals, "rules": self.book,
        }  # fmt: skip
        parts.update(overrides)
        return SignalService(
            parts["bus"], parts["cache"], parts["store"], parts["signals"], parts["rules"],
            self.metrics, self.health, exchanges=["sim"], symbols=["BTC/USDT", "ETH/USDT"],
            intervals=[Interval.parse("1h")], refresh_seconds=0.0, clock=lambda: NOW,
        )  # fmt: skip

    async def close_candles(self, candles: Sequence[Candle], *, publish: bool = True) -> None:
        """What the candle service does: store, then publish."""
        await self.store.upsert_candles(candles)
        if publish:
            items = [(stream_key(c.exchange, c.symbol), codec.encode_candle(c)) for c in candles]
            await self.bus.publish_many("candles", items)

    async def start(self, **overrides: Any) -> SignalService:
        """A service (re)started: recovered, not consuming yet."""
        service = self.service(**overrides)
        await service.recover()
        return service

    async def drain(self, service: SignalService) -> SignalService:
        """Consume every candle on the bus, then stop."""
        stop = asyncio.Event()
        stop.set()
        await service.run(stop)
        return service

    async def published(self) -> list[Signal]:
        """Everything ever published on ``signals``, read by a new group."""
        self._readers += 1
        consumer = self.bus.consumer("signals", group=f"reader-{self._readers}")
        out: list[Signal] = []
        while batch := await consumer.fetch(1000, timeout=0.01):
            for m in batch:
                s = decode_signal(m.value)
                assert m.key == stream_key(s.exchange, s.symbol)
                out.append(s)
        await consumer.close()
        return out

    async def stored(self) -> list[Signal]:
        return await self.signals.signals(SignalFilter(), limit=1000)


def summary(signals: Sequence[Signal]) -> list[tuple[str, str, int]]:
    return [(s.rule, s.kind, s.open_time) for s in signals]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlMarketStore]:
    url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    await asyncio.to_thread(migrate.upgrade, url)
    s = SqlMarketStore(create_engine(url))
    yield s
    await s.close()


@pytest.fixture
def env(store: SqlMarketStore) -> Env:
    return Env(store, [GOLDEN])


async def test_crosses_are_stored_published_and_cached_once(env: Env) -> None:
    service = await env.start()
    await env.close_candles(SERIES)
    await env.drain(service)
    stored = await env.stored()
    assert summary(stored) == EXPECTED
    assert stored[0].values == {"sma_3": 7.0, "sma_5": 6.4}
    assert (stored[0].close, stored[0].detected_at) == (8.0, NOW)
    assert await env.published() == stored
    assert service.published == 2
    assert await env.signals.unpublished(BTC) == []
    latest = await env.cache.get(cache_keys.latest_signal("g", *BTC))
    assert latest is not None
    assert decode_signal(latest) == stored[1]
    for n in (3, 5):
        raw = await env.cache.list_range(cache_keys.close_window("sim", "BTC/USDT", "1h", n))
        assert [decode_point(r) for r in raw] == [
            (T0 + i * H, CLOSES[i]) for i in range(len(CLOSES) - n, len(CLOSES))
        ]
    assert await env.signals.progress(BTC) == T0 + 17 * H


async def test_redelivered_candles_change_nothing(env: Env) -> None:
    service = await env.start()
    await env.close_candles(SERIES)
    await env.drain(service)
    await env.close_candles(SERIES)  # the whole series again on the bus
    await env.drain(service)
    await env.drain(await env.start())  # and after a restart
    assert summary(await env.stored()) == EXPECTED
    assert summary(await env.published()) == EXPECTED


class Counting:
    """The market store, counting window rebuilds (newest-first reads of several
    candles; a one-candle read only checks that a short window is the whole series)."""

    def __init__(self, store: SqlMarketStore) -> None:
        self._store = store
        self.window_reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def get_candles(self, *args: Any, **kwargs: Any) -> list[Candle]:
        if kwargs.get("newest_first") and kwargs.get("limit") != 1:
            self.window_reads += 1
        return await self._store.get_candles(*args, **kwargs)


@pytest.mark.parametrize("cut", [1, 5, 8, 9, 12, 15, 16])
async def test_a_restart_resumes_from_the_cached_windows(env: Env, cut: int) -> None:
    first = await env.start()
    await env.close_candles(SERIES[:cut])
    await env.drain(first)
    counting = Counting(env.store)
    second = await env.start(store=counting)
    await env.close_candles(SERIES[cut:])
    await env.drain(second)
    assert counting.window_reads == 0
    assert summary(await env.stored()) == EXPECTED
    assert summary(await env.published()) == EXPECTED


@pytest.mark.parametrize("cut", [5, 8, 9, 15])
async def test_a_restart_with_the_cache_lost_rebuilds_from_the_store(env: Env, cut: int) -> None:
    first = await env.start()
    await env.close_candles(SERIES[:cut])
    await env.drain(first)
    env.cache = MemoryCache()  # the cache lost everything
    second = await env.start()
    await env.close_candles(SERIES[cut:])
    await env.drain(second)
    assert summary(await env.stored()) == EXPECTED
    # Without the record of what was published, nothing is published twice
    # either: the outbox knew.
    assert summary(await env.published()) == EXPECTED
    raw = await env.cache.list_range(cache_keys.close_window("sim", "BTC/USDT", "1h", 5))
    assert [decode_point(r)[1] for r in raw] == CLOSES[-5:]


@pytest.mark.parametrize("damage", ["hole", "repeat", "other-end", "garbage"])
async def test_an_untrustworthy_window_is_rebuilt(env: Env, damage: str) -> None:
    first = await env.start()
    await env.close_candles(SERIES[:7])
    await env.drain(first)
    key = cache_keys.close_window("sim", "BTC/USDT", "1h", 5)
    points = await env.cache.list_range(key)
    await env.cache.delete(key)
    if damage == "hole":
        points = points[:2] + points[3:]
    elif damage == "repeat":
        points = points[1:] + points[-1:]
    elif damage == "other-end":
        points = points[:-1]
    else:
        points = [*points[:-1], b"not json"]
    await env.cache.push_capped(key, points, maxlen=5)
    counting = Counting(env.store)
    second = await env.start(store=counting)
    await env.close_candles(SERIES[7:])
    await env.drain(second)
    assert counting.window_reads >= 1
    assert summary(await env.stored()) == EXPECTED


class CrashingBus:
    """The memory bus, crashing the process on the first publish to ``signals``."""

    def __init__(self, bus: MemoryBus) -> None:
        self._bus = bus
        self.crashed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)

    async def publish_many(self, topic: str, items: Any) -> None:
        if topic == "signals" and not self.crashed:
            self.crashed = True
            raise Crash
        await self._bus.publish_many(topic, items)


async def test_a_crash_before_publishing_publishes_after_the_restart(env: Env) -> None:
    first = await env.start(bus=CrashingBus(env.bus))
    await env.close_candles(SERIES)
    with pytest.raises(Crash):
        await env.drain(first)
    assert summary(await env.signals.unpublished(BTC)) == EXPECTED[:1]
    assert await env.published() == []
    await env.drain(await env.start())
    assert summary(await env.published()) == EXPECTED
    assert summary(await env.stored()) == EXPECTED
    assert await env.signals.unpublished(BTC) == []


class CrashingSignals(SqlSignalStore):
    """Crashes right after the bus took the signals, before they are marked."""

    async def mark_published(self, fired: Sequence[Signal], at: int) -> None:
        raise Crash


async def test_a_crash_after_publishing_does_not_publish_again(env: Env) -> None:
    crashing = CrashingSignals(env.store.engine)
    first = await env.start(signals=crashing, rules=RuleBook(crashing, [GOLDEN]))
    await env.close_candles(SERIES)
    with pytest.raises(Crash):
        await env.drain(first)
    assert summary(await env.published()) == EXPECTED[:1]
    assert summary(await env.signals.unpublished(BTC)) == EXPECTED[:1]
    await env.drain(await env.start())
    assert summary(await env.published()) == EXPECTED  # the golden cross once
    assert await env.signals.unpublished(BTC) == []


async def test_candles_that_never_reached_the_bus_are_read_from_the_store(env: Env) -> None:
    service = await env.start()
    await env.close_candles(SERIES[:3])
    await env.drain(service)
    # The candle service stored these but crashed before publishing them...
    await env.close_candles(SERIES[3:10], publish=False)
    # ...and after its restart published the next ones.
    await env.close_candles(SERIES[10:12])
    await env.drain(service)
    assert summary(await env.stored()) == EXPECTED[:1]
    # Stored-only candles after the progress are caught up at start-up too.
    await env.close_candles(SERIES[12:], publish=False)
    await env.start()
    assert summary(await env.stored()) == EXPECTED
    assert summary(await env.published()) == EXPECTED


async def test_a_first_start_takes_stored_candles_as_history(env: Env) -> None:
    await env.close_candles(SERIES[:10], publish=False)  # the golden cross is in the past
    service = await env.start()
    assert await env.signals.progress(BTC) == T0 + 9 * H
    assert await env.stored() == []
    await env.close_candles(SERIES[10:])
    await env.drain(service)
    assert summary(await env.stored()) == EXPECTED[1:]


async def test_two_workers_on_one_series_store_each_signal_once(env: Env) -> None:
    a = await env.start()
    await env.close_candles(SERIES[:8])
    await env.drain(a)
    b = await env.start()  # both now stand at candle 7
    await env.close_candles(SERIES[8:9], publish=False)
    message = [_message(SERIES[8])]
    await a.process(message)
    await b.process(message)  # loses the compare-and-set, resumes, evaluates nothing
    assert summary(await env.stored()) == EXPECTED[:1]
    assert summary(await env.published()) == EXPECTED[:1]
    await env.close_candles(SERIES[9:], publish=False)
    await b.process([_message(SERIES[-1])])  # b carries on from where a left it
    assert summary(await env.published()) == EXPECTED


def _message(c: Candle) -> Any:
    from cryptodesk.adapters.bus.base import Message

    return Message("candles", stream_key(c.exchange, c.symbol), codec.encode_candle(c), 0)


async def test_rules_put_while_running_apply_from_the_next_candle(env: Env) -> None:
    service = await env.start()
    await env.close_candles(SERIES[:6])
    await env.drain(service)
    fast = MaCrossRule(id="f", type="ma_cross", fast=2, slow=3, symbols=["BTC/USDT"])
    await env.book.replace([fast], at=NOW)
    await env.close_candles(SERIES[6:])
    await env.drain(service)  # the running service polls the revision
    # SMA 2 / SMA 3 cross on candles 7 and 14; "g" is gone.
    assert summary(await env.stored()) == [
        ("f", "golden_cross", T0 + 7 * H), ("f", "death_cross", T0 + 14 * H)
    ]  # fmt: skip


async def test_rules_removed_and_put_back_do_not_replay_the_gap(env: Env) -> None:
    service = await env.start()
    await env.close_candles(SERIES[:4])
    await env.drain(service)
    await env.book.replace([], at=NOW)
    await env.drain(service)  # reloads: no rules, the progress is forgotten
    assert await env.signals.progress(BTC) is None
    await env.close_candles(SERIES[4:11])  # the golden cross passes unwatched
    await env.drain(service)
    await env.book.replace([GOLDEN], at=NOW)
    await env.drain(service)  # back: what is stored now is history
    assert await env.signals.progress(BTC) == T0 + 10 * H
    await env.close_candles(SERIES[11:])
    await env.drain(service)
    assert summary(await env.stored()) == EXPECTED[1:]


async def test_only_the_series_a_rule_names(store: SqlMarketStore) -> None:
    eth_only = MaCrossRule(id="e", type="ma_cross", fast=3, slow=5, symbols=["ETH/USDT"])
    env = Env(store, [eth_only])
    eth = [candle(i, c, "ETH/USDT") for i, c in enumerate(CLOSES)]
    service = await env.start()
    await env.close_candles(SERIES + eth)
    await env.drain(service)
    assert [(s.symbol, s.kind) for s in await env.stored()] == [
        ("ETH/USDT", "golden_cross"), ("ETH/USDT", "death_cross")
    ]  # fmt: skip
    assert await env.signals.progress(BTC) is None


async def test_an_undecodable_candle_goes_to_dead_letters(env: Env) -> None:
    service = await env.start()
    await env.bus.publish("candles", "sim:BTC/USDT", b"{not json")
    await env.close_candles(SERIES)
    await env.drain(service)
    assert summary(await env.stored()) == EXPECTED
    dead = env.bus.consumer("deadletter", group="check")
    [letter] = await dead.fetch(10, timeout=0.01)
    assert b"undecodable candle" in letter.value
