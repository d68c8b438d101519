"""The production engines, measured in one run against real servers on loopback:
events/s through each bus (produce -> consume -> ack) and candle upserts/s on
SQLite vs PostgreSQL. Servers are started the way the test suite starts them."""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from tests.servers import Servers, start, stop

from cryptodesk.adapters.bus.base import Bus
from cryptodesk.domain import codec
from cryptodesk.domain.market import Candle

N_EVENTS = 20_000
N_CANDLES = 20_000
_servers: Servers | None = None


def servers() -> Servers:
    global _servers  # started once per benchmark run, stopped at exit
    if _servers is None:
        import atexit

        _servers = start(["postgres", "redis", "kafka"])
        atexit.register(stop, _servers)
    return _servers


def _payloads() -> list[tuple[str, bytes]]:
    candle = Candle("sim", "BTC/USDT", "1m", 1_714_521_600_000, 1, 2, 0.5, 1.5, 10, 15, 3, True)
    raw = codec.encode_candle(candle)
    return [(f"sim:S{i % 20}/USDT", raw) for i in range(N_EVENTS)]


async def _through(bus: Bus) -> float:
    await bus.start()
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    consumer = bus.consumer(topic, group="bench", name="bench-1")
    await consumer.fetch(1, timeout=0.5)  # join the group before timing
    items = _payloads()
    began = time.perf_counter()
    for i in range(0, len(items), 1000):
        await bus.publish_many(topic, items[i : i + 1000])
    got = 0
    while got < len(items):
        batch = await consumer.fetch(2000, timeout=5.0)
        if not batch:
            raise RuntimeError(f"bus stalled after {got} of {len(items)} events")
        await consumer.ack(batch)
        got += len(batch)
    elapsed = time.perf_counter() - began
    await consumer.close()
    await bus.close()
    return len(items) / elapsed


def bus_memory() -> dict[str, Any]:
    from cryptodesk.adapters.bus.memory import MemoryBus

    return {"value": asyncio.run(_through(MemoryBus())), "unit": "events/s", "events": N_EVENTS}


def bus_redis_streams() -> dict[str, Any]:
    from cryptodesk.adapters.bus.redis_streams import RedisStreamsBus

    url = servers().redis_url
    rate = asyncio.run(_through(RedisStreamsBus.from_url(url, stream_prefix="bench:")))
    return {"value": rate, "unit": "events/s", "events": N_EVENTS}


def bus_kafka() -> dict[str, Any]:
    from cryptodesk.adapters.bus.kafka import KafkaBus

    bus = KafkaBus.from_url(
        servers().kafka_url, topic_prefix="bench.", partitions=6,
        session_timeout_ms=1000, heartbeat_interval_ms=200, rebalance_timeout_ms=1000,
    )  # fmt: skip
    return {"value": asyncio.run(_through(bus)), "unit": "events/s", "events": N_EVENTS}


async def _upserts(url: str) -> float:
    from cryptodesk.adapters.db import migrate
    from cryptodesk.adapters.db.engine import create_engine
    from cryptodesk.adapters.db.sql_store import SqlMarketStore

    await asyncio.to_thread(migrate.upgrade, url)
    store = SqlMarketStore(create_engine(url))
    t0 = 1_714_521_600_000
    candles = [
        Candle("sim", "BTC/USDT", "1m", t0 + i * 60_000, 1, 2, 0.5, 1.5, 10, 15, 3, True)
        for i in range(N_CANDLES)
    ]
    began = time.perf_counter()
    for i in range(0, len(candles), 500):
        await store.upsert_candles(candles[i : i + 500])
    elapsed = time.perf_counter() - began
    await store.close()
    return len(candles) / elapsed


def candle_upserts_sqlite() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        rate = asyncio.run(_upserts(f"sqlite+aiosqlite:///{tmp}/b.db"))
    return {"value": rate, "unit": "candles/s", "batch": 500}


def candle_upserts_postgres() -> dict[str, Any]:
    import asyncpg

    s = servers()
    name = f"b_{uuid.uuid4().hex[:10]}"

    async def run() -> float:
        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{s.postgres_port}/postgres")
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()
        return await _upserts(f"postgresql+asyncpg://postgres@127.0.0.1:{s.postgres_port}/{name}")

    return {"value": asyncio.run(run()), "unit": "candles/s", "batch": 500}


def cases() -> dict[str, Callable[[], dict[str, Any]]]:
    return {
        "bus_memory": bus_memory,
        "bus_redis_streams": bus_redis_streams,
        "bus_kafka": bus_kafka,
        "candle_upserts_sqlite": candle_upserts_sqlite,
        "candle_upserts_postgres": candle_upserts_postgres,
    }


if __name__ == "__main__":
    for name, fn in cases().items():
        print(name, fn())
