"""The whole embedded pipeline: sim trades -> memory bus -> compute -> SQLite rows.

Each run is a fresh subprocess (fresh database, honest peak RSS): the simulator
runs as fast as it can until it has published N trades; we time until every one
of them is a row in SQLite and all candles are finalized and written.
"""

from __future__ import annotations

import asyncio
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

N_TRADES = 300_000
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
INTERVALS = ["1m", "5m", "15m", "1h", "4h", "1d"]


async def _pipeline(db_path: Path, n_trades: int) -> dict[str, Any]:
    from cryptodesk.adapters.bus.memory import MemoryBus
    from cryptodesk.adapters.cache.memory import MemoryCache
    from cryptodesk.adapters.db import migrate
    from cryptodesk.adapters.db.engine import create_engine
    from cryptodesk.adapters.db.sql_store import SqlMarketStore
    from cryptodesk.adapters.exchanges.simulator import SimulatedExchange
    from cryptodesk.domain.interval import Interval
    from cryptodesk.observability.health import HealthRegistry
    from cryptodesk.observability.metrics import Metrics
    from cryptodesk.runtime import tune_gc
    from cryptodesk.services.candle_service import CandleService
    from cryptodesk.services.ingest import MarketIngest
    from cryptodesk.wiring import MEMORY_BUS_MAX_LAG, MEMORY_BUS_RETENTION

    url = f"sqlite+aiosqlite:///{db_path}"
    migrate.upgrade(url)
    store = SqlMarketStore(create_engine(url))
    bus = MemoryBus(max_retained=MEMORY_BUS_RETENTION, max_lag=MEMORY_BUS_MAX_LAG)
    cache, metrics = MemoryCache(), Metrics()
    await bus.start()
    source = SimulatedExchange(
        SYMBOLS, seed=1, speed=math.inf, start_ms=1_700_000_000_000, book_interval_ms=1000
    )
    ingest = MarketIngest(source, bus, cache, metrics, symbols=SYMBOLS)
    compute = CandleService(
        bus, store, cache, metrics, HealthRegistry(metrics),
        exchanges=["sim"], symbols=SYMBOLS, intervals=[Interval.parse(i) for i in INTERVALS],
        grace_ms=2000, batch_size=2000, recent_candles=1000,
    )  # fmt: skip
    tune_gc()  # as cryptodesk serve does
    stop = asyncio.Event()
    started = time.perf_counter()
    compute_task = asyncio.create_task(compute.run(stop))
    ingest_task = asyncio.create_task(ingest.run())
    while ingest.published_trades < n_trades:  # noqa: ASYNC110 - polling a counter
        await asyncio.sleep(0.01)
    await ingest.close()
    await ingest_task
    stop.set()
    await compute_task
    elapsed = time.perf_counter() - started
    stored = await store.count_trades("sim")
    candles = await store.count_candles("sim")
    await store.close()
    await bus.close()
    return {"published": ingest.published_trades, "stored": stored, "candles": candles,
            "seconds": elapsed}  # fmt: skip


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not getrusage: Linux carries ru_maxrss over
    from the parent across fork + exec, so a child of a big runner would inherit its peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def _child(db_path: str, n_trades: int) -> None:
    result = asyncio.run(_pipeline(Path(db_path), n_trades))
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


def sim_to_sqlite() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_pipeline", "--child", f"{tmp}/b.db",
             str(N_TRADES)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if r["stored"] != r["published"]:
        raise AssertionError(f"pipeline lost trades: {r}")
    return {
        "value": r["stored"] / r["seconds"],
        "unit": "trades/s",
        "trades": r["stored"],
        "candles": r["candles"],
        "peak_rss_mb": round(r["peak_rss_mb"], 1),
    }


def cases() -> dict[str, Callable[[], dict[str, Any]]]:
    return {"sim_to_sqlite": sim_to_sqlite}


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]))
    else:
        print(sim_to_sqlite())
