"""MemoryBus throughput: the embedded pipeline's backbone must never be its bottleneck.

Each case builds its own bus and messages outside the timed part, then times a
full cycle (publish, fetch, ack) the way the services drive it: batches of
1000, acks after each batch.

    python -m benchmarks.bench_bus
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from cryptodesk.adapters.bus.memory import MemoryBus

KEYS = [f"sim:{base}/USDT" for base in ("BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "BNB", "LTC")]
BATCH = 1000


def _events(count: int) -> list[tuple[str, bytes]]:
    # ~60 bytes, the size of an encoded trade.
    return [
        (KEYS[i % len(KEYS)], b'{"p":"64123.5","q":"0.0125","t":1700000000000,"id":%d}' % i)
        for i in range(count)
    ]


async def _cycle(bus: MemoryBus, events: list[tuple[str, bytes]], consumers: int) -> float:
    group = [bus.consumer("trades", group="candles", name=f"c{i}") for i in range(consumers)]
    started = time.perf_counter()
    for i in range(0, len(events), BATCH):
        await bus.publish_many("trades", events[i : i + BATCH])
    done = 0
    while done < len(events):
        for consumer in group:
            batch = await consumer.fetch(BATCH, timeout=0)
            await consumer.ack(batch)
            done += len(batch)
    elapsed = time.perf_counter() - started
    for consumer in group:
        await consumer.close()
    return elapsed


def _publish_fetch_ack(count: int, consumers: int = 1) -> Callable[[], dict[str, float | str]]:
    def run() -> dict[str, float | str]:
        events = _events(count)
        bus = MemoryBus()
        elapsed = asyncio.run(_cycle(bus, events, consumers))
        return {
            "value": count / elapsed,
            "unit": "msg/s",
            "seconds": elapsed,
            "retained_after": float(bus.retained("trades")),
        }

    return run


def _publish_one_by_one(count: int) -> Callable[[], dict[str, float | str]]:
    async def go(bus: MemoryBus, events: list[tuple[str, bytes]]) -> float:
        started = time.perf_counter()
        for key, value in events:
            await bus.publish("trades", key, value)
        return time.perf_counter() - started

    def run() -> dict[str, float | str]:
        events = _events(count)
        elapsed = asyncio.run(go(MemoryBus(), events))
        return {"value": count / elapsed, "unit": "msg/s", "seconds": elapsed}

    return run


def _fetch_wakeup(rounds: int) -> Callable[[], dict[str, float | str]]:
    """Latency of a consumer blocked in fetch being woken by a publish."""

    async def go() -> float:
        bus = MemoryBus()
        consumer = bus.consumer("trades", group="g")
        total = 0.0
        for i in range(rounds):
            waiting = asyncio.create_task(consumer.fetch(10, timeout=5))
            await asyncio.sleep(0)  # the fetch is now parked on the topic's event
            started = time.perf_counter()
            await bus.publish("trades", KEYS[0], b"%d" % i)
            await consumer.ack(await waiting)
            total += time.perf_counter() - started
        return total / rounds

    def run() -> dict[str, float | str]:
        return {"value": asyncio.run(go()) * 1e6, "unit": "us"}

    return run


def cases() -> dict[str, Callable[[], dict[str, float | str]]]:
    return {
        "publish_fetch_ack_1m": _publish_fetch_ack(1_000_000),
        "publish_fetch_ack_1m_2_consumers": _publish_fetch_ack(1_000_000, consumers=2),
        "publish_single_100k": _publish_one_by_one(100_000),
        "fetch_wakeup_latency": _fetch_wakeup(2000),
    }


if __name__ == "__main__":
    for name, case in cases().items():
        result = case()
        extra = ", ".join(f"{k}={v:.3g}" for k, v in result.items() if k not in ("value", "unit"))
        print(f"bus/{name}: {float(result['value']):,.0f} {result['unit']}  {extra}")
