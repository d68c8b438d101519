"""The circuit breaker service on the memory bus and cache: candles in, alerts out,
states in the cache for any reader, restarts that remember a halt."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cryptodesk.adapters.bus.memory import MemoryBus
from cryptodesk.adapters.cache.memory import MemoryCache
from cryptodesk.adapters.db import migrate
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.sql_store import SqlMarketStore
from cryptodesk.analytics.vol_breaker import BreakerSettings
from cryptodesk.domain import codec
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.market import Candle, stream_key
from cryptodesk.services.circuit_breakers import BreakerStates, CircuitBreakerService, cache_key

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z
M = 60_000
SETTINGS = BreakerSettings(short_window=3, long_window=4, multiple=2.0, cooldown_ms=5 * M)
CALM = [0.01, -0.01] * 4
SQRT_4_3 = math.sqrt(4 / 3)


def closes(returns: Sequence[float], first: float = 100.0) -> list[float]:
    out = [first]
    for r in returns:
        out.append(out[-1] * math.exp(r))
    return out


def candles(
    values: Sequence[float], *, start: int = 0, symbol: str = "BTC/USDT",
    exchange: str = "sim", interval: str = "1m", closed: bool = True,
) -> list[Candle]:  # fmt: skip
    """Candle k opens at T0 + k minutes (and closes a minute later)."""
    return [
        Candle(exchange, symbol, interval, T0 + (start + i) * M, c, c, c, c, 1.0, c, 1, closed)
        for i, c in enumerate(values)
    ]


class Env:
    def __init__(self) -> None:
        self.bus = MemoryBus()
        self.cache = MemoryCache()
        self.alerts = self.bus.consumer("alerts", group="test-reader")
        self.reader = BreakerStates(self.cache, exchanges=["sim", "binance"],
                                    symbols=["BTC/USDT", "ETH/USDT"])  # fmt: skip

    def service(self, store: SqlMarketStore | None = None) -> CircuitBreakerService:
        return CircuitBreakerService(
            self.bus, self.cache, SETTINGS, exchanges=["sim", "binance"],
            symbols=["BTC/USDT", "ETH/USDT"], interval=Interval.parse("1m"), store=store,
        )  # fmt: skip

    async def run(
        self, service: CircuitBreakerService, batches: Sequence[Sequence[Candle]]
    ) -> None:
        """Start the service, publish each batch, let it drain and stop."""
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        await asyncio.sleep(0)  # its consumer joins (at the end of the topic)
        for batch in batches:
            items = [(stream_key(c.exchange, c.symbol), codec.encode_candle(c)) for c in batch]
            await self.bus.publish_many("candles", items)
        stop.set()
        await task

    async def read_alerts(self) -> list[tuple[str, dict[str, Any]]]:
        found = []
        while messages := await self.alerts.fetch(100, timeout=0.05):
            found += [(m.key, msgspec.json.decode(m.value)) for m in messages]
            await self.alerts.ack(messages)
        return found


@pytest.fixture
def env() -> Env:
    return Env()


def halt_alert() -> dict[str, Any]:
    # Candle 9 closes at 00:10: short (+1, -1, +5)% against (+1, -1, +1, -1)%.
    return {
        "type": "circuit_breaker", "exchange": "sim", "symbol": "BTC/USDT", "state": "halted",
        "since": "2024-05-01T00:10:00.000Z",
        "short_volatility": pytest.approx(0.01 * math.sqrt(84 / 9), rel=1e-9),
        "long_volatility": pytest.approx(0.01 * SQRT_4_3, rel=1e-9),
        "ratio": pytest.approx(math.sqrt(7), rel=1e-9),
        "reason": "short-window volatility 0.0305505 is 2.646x the long-window 0.011547, "
        "above the 2x limit",
    }  # fmt: skip


async def test_a_violent_move_is_one_alert_and_a_cached_halt(env: Env) -> None:
    service = env.service()
    series = candles(closes([*CALM, 0.05]))
    noise = [
        *candles([100.0, 200.0, 50.0], symbol="SOL/USDT"),  # not configured
        *candles([100.0, 200.0, 50.0], interval="5m"),  # another interval
        *candles([100.0, 300.0], start=20, closed=False),  # in progress
    ]
    await env.run(service, [series[:5], noise, series[5:]])
    assert await env.read_alerts() == [("sim:BTC/USDT", halt_alert())]
    assert service.published == 1
    assert await env.reader.is_halted("sim", "BTC/USDT")
    assert not await env.reader.is_halted("binance", "BTC/USDT")  # never seen
    [state] = await env.reader.states()
    assert (state.exchange, state.symbol, state.state) == ("sim", "BTC/USDT", "halted")
    assert state.since_ms == T0 + 10 * M
    assert state.ratio == pytest.approx(math.sqrt(7), rel=1e-9)
    assert set(service.breakers) == {("sim", "BTC/USDT")}


async def test_active_again_after_the_cool_down_and_a_redelivery_is_no_news(env: Env) -> None:
    all_closes = closes([*CALM, 0.05, -0.01, 0.01, -0.01, 0.01, -0.01, 0.01])
    series = candles(all_closes)
    await env.run(env.service(), [series, series[8:12]])  # candles 8..11 come twice
    alerts = await env.read_alerts()
    assert [(a["state"], a["since"]) for _, a in alerts] == [
        ("halted", "2024-05-01T00:10:00.000Z"),
        ("active", "2024-05-01T00:15:00.000Z"),  # the cool-down of 5 minutes
    ]
    assert alerts[1][1]["reason"].startswith("cool-down of 300 s over and ")
    assert alerts[1][1]["short_volatility"] == pytest.approx(0.01 * SQRT_4_3, rel=1e-9)
    assert not await env.reader.is_halted("sim", "BTC/USDT")
    [state] = await env.reader.states()
    assert (state.state, state.since_ms) == ("active", T0 + 15 * M)


async def test_a_restart_remembers_the_halt_from_the_cache(env: Env) -> None:
    all_closes = closes([*CALM, 0.05, -0.01, 0.01, -0.01, 0.01, -0.01, 0.01])
    series = candles(all_closes)
    await env.run(env.service(), [series[:10]])  # halted at 00:10, checked at 00:15
    cached = msgspec.json.decode(await env.cache.get(cache_key("sim", "BTC/USDT")) or b"")
    assert (cached["state"], cached["since"], cached["cooldown_until"]) == (
        "halted", T0 + 10 * M, T0 + 15 * M,
    )  # fmt: skip

    second = env.service()  # a new process: no windows, the cache's state
    await second.recover()
    breaker = second.breakers[("sim", "BTC/USDT")]
    assert (breaker.state.state, breaker.cooldown_until) == ("halted", T0 + 15 * M)
    # Without history it cannot judge at 00:15: the halt holds and the check moves on.
    await env.run(second, [series[10:]])
    assert [a["state"] for _, a in await env.read_alerts()] == ["halted"]
    assert await env.reader.is_halted("sim", "BTC/USDT")
    assert breaker.cooldown_until == T0 + 20 * M


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlMarketStore]:
    url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    await asyncio.to_thread(migrate.upgrade, url)
    s = SqlMarketStore(create_engine(url))
    yield s
    await s.close()


async def test_a_restart_with_a_store_resumes_the_windows(env: Env, store: SqlMarketStore) -> None:
    all_closes = closes([*CALM, 0.05, -0.01, 0.01, -0.01, 0.01, -0.01, 0.01])
    series = candles(all_closes)
    await store.upsert_candles(series[:9])  # calm history, stored by the candle service
    service = env.service(store)
    await service.recover()
    breaker = service.breakers[("sim", "BTC/USDT")]
    assert breaker.state.ratio == pytest.approx(1.0, rel=1e-9)  # judged from the store
    assert breaker.last_ts == T0 + 9 * M
    # Overlapping candles are ignored; the violent one halts at once.
    await env.run(service, [series[5:]])
    alerts = await env.read_alerts()
    assert [a for _, a in alerts] == [halt_alert(), {**alerts[1][1], "state": "active"}]
    assert alerts[1][1]["since"] == "2024-05-01T00:15:00.000Z"


async def test_a_lost_cache_is_whole_again_one_candle_later(env: Env) -> None:
    series = candles(closes([*CALM, 0.05, 0.0]))
    service = env.service()
    await env.run(service, [series[:10]])
    await env.cache.delete(cache_key("sim", "BTC/USDT"))
    assert await env.reader.states() == []
    assert not await env.reader.is_halted("sim", "BTC/USDT")  # unknown is not halted
    await env.run(service, [series[10:]])
    assert await env.reader.is_halted("sim", "BTC/USDT")
    await env.cache.set(cache_key("binance", "ETH/USDT"), b"not json")
    [state] = await env.reader.states()  # the unreadable one is left out
    assert state.symbol == "BTC/USDT"
