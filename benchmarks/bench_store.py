"""SqlMarketStore on SQLite: rows per second for the ingest and recovery paths.

Each case builds a fresh migrated database in a temporary directory, so runs
are independent. Batches of 2000 match ``ingest_batch_size``'s default.

    python -m benchmarks.bench_store
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from cryptodesk.adapters.db import migrate
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.sql_store import SqlMarketStore
from cryptodesk.domain.market import Candle, Trade

T0 = 1_700_000_000_000
BATCH = 2000
TRADES = 200_000
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")

Result = dict[str, float | str]


def make_trades(n: int, *, exchange: str = "sim") -> list[Trade]:
    """A plausible stream: three markets, ~20 trades per millisecond, ids per market."""
    return [
        Trade(
            exchange,
            SYMBOLS[i % 3],
            str(1_000_000 + i // 3),
            T0 + i // 20,
            30_000.0 + (i % 97) * 0.5,
            0.001 * (1 + i % 13),
            "buy" if i % 2 else "sell",
        )
        for i in range(n)
    ]


def make_candles(n: int) -> list[Candle]:
    return [
        Candle("sim", SYMBOLS[i % 3], "1m", T0 + (i // 3) * 60_000, 100, 102, 99, 101, 5, 505, 7)
        for i in range(n)
    ]


def _measure(body: Callable[[SqlMarketStore], Awaitable[tuple[int, float]]]) -> Result:
    """Run ``body`` on a fresh store; it returns (rows, seconds) for the timed part."""

    async def run(url: str) -> Result:
        store = SqlMarketStore(create_engine(url))
        try:
            rows, seconds = await body(store)
        finally:
            await store.close()
        return {"value": rows / seconds, "unit": "rows/s", "rows": float(rows)}

    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        migrate.upgrade(url)
        return asyncio.run(run(url))


async def _insert_all(store: SqlMarketStore, trades: list[Trade]) -> tuple[int, float]:
    started = time.perf_counter()
    accepted = 0
    for lo in range(0, len(trades), BATCH):
        accepted += len(await store.insert_trades(trades[lo : lo + BATCH]))
    return accepted, time.perf_counter() - started


def insert_new_trades() -> Result:
    """The ingest hot path: every trade is new and comes back from RETURNING."""
    trades = make_trades(TRADES)
    return _measure(lambda store: _insert_all(store, trades))


def insert_replayed_trades() -> Result:
    """A redelivery after a crash: every trade already stored, none returned."""
    trades = make_trades(TRADES)

    async def body(store: SqlMarketStore) -> tuple[int, float]:
        await _insert_all(store, trades)
        returned, seconds = await _insert_all(store, trades)
        assert returned == 0
        return len(trades), seconds

    return _measure(body)


def iter_trades_recovery() -> Result:
    """Start-up recovery reads one exchange's trades back in (ts, id) order."""
    trades = make_trades(TRADES)

    async def body(store: SqlMarketStore) -> tuple[int, float]:
        await _insert_all(store, trades)
        started = time.perf_counter()
        read = 0
        async for batch in store.iter_trades("sim", start=0):
            read += len(batch)
        return read, time.perf_counter() - started

    return _measure(body)


def upsert_candles() -> Result:
    """Finalized candles in batches of 500, half of them replacing stored ones."""
    candles = make_candles(40_000)

    async def body(store: SqlMarketStore) -> tuple[int, float]:
        started = time.perf_counter()
        for lo in range(0, len(candles), 500):
            await store.upsert_candles(candles[lo : lo + 500])
        for lo in range(0, len(candles), 1000):
            await store.upsert_candles(candles[lo : lo + 500])
        return len(candles) + len(candles) // 2, time.perf_counter() - started

    return _measure(body)


def cases() -> dict[str, Callable[[], Result]]:
    return {
        "insert_trades_new_batch2000": insert_new_trades,
        "insert_trades_replayed_batch2000": insert_replayed_trades,
        "iter_trades_recovery": iter_trades_recovery,
        "upsert_candles_batch500": upsert_candles,
    }


if __name__ == "__main__":
    for name, case in cases().items():
        result = case()
        print(f"{name:36s} {float(result['value']):>12,.0f} {result['unit']}")
