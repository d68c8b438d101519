"""How fast the simulated exchange generates market data on one core.

Target (issue): at least 300,000 trades/s generated. Cases:
- ``model_trades_only``: the pure model, default BTC/ETH/SOL rates, one book
  per hour (so the figure is trade generation itself).
- ``model_with_books``: the same with the default one 20-level book per
  symbol per simulated second; books cost ~10 us each to build and validate.
- ``exchange_watch_all``: the async ``SimulatedExchange`` at ``speed=inf``,
  read through ``watch_all`` as the ingest service reads it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from cryptodesk.adapters.exchanges.sim_model import SimModel
from cryptodesk.adapters.exchanges.simulator import SimulatedExchange

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
T0 = 1_700_000_000_000
SIM_MS = 3_600_000  # one simulated hour: ~65,000 trades at the default rates


def _model(book_interval_ms: int) -> dict[str, float | str]:
    model = SimModel(SYMBOLS, seed=1, start_ms=T0, book_interval_ms=book_interval_ms)
    trades = books = 0
    began = time.perf_counter()
    while model.now_ms < T0 + SIM_MS:
        step_trades, step_books = model.step_combined()
        trades += len(step_trades)
        books += len(step_books)
    elapsed = time.perf_counter() - began
    return {
        "value": trades / elapsed,
        "unit": "trades/s",
        "books_per_s": books / elapsed,
        "sim_x_realtime": SIM_MS / 1000 / elapsed,
    }


def _exchange() -> dict[str, float | str]:
    async def run() -> tuple[int, float]:
        ex = SimulatedExchange(SYMBOLS, seed=1, speed=math.inf, start_ms=T0)
        trades = 0
        began = time.perf_counter()
        stream = ex.watch_all()
        async for step_trades, _ in stream:
            trades += len(step_trades)
            if step_trades and step_trades[-1].ts >= T0 + SIM_MS:
                break
        elapsed = time.perf_counter() - began
        await stream.aclose()  # type: ignore[attr-defined]
        await ex.close()
        return trades, elapsed

    trades, elapsed = asyncio.run(run())
    return {
        "value": trades / elapsed,
        "unit": "trades/s",
        "sim_x_realtime": SIM_MS / 1000 / elapsed,
    }


def cases() -> dict[str, Callable[[], dict[str, float | str]]]:
    return {
        "model_trades_only": lambda: _model(3_600_000),
        "model_with_books": lambda: _model(1000),
        "exchange_watch_all": _exchange,
    }


if __name__ == "__main__":
    for name, fn in cases().items():
        fn()  # warm-up
        result = fn()
        extra = ", ".join(f"{k}={v:,.0f}" for k, v in result.items() if k not in ("value", "unit"))
        print(f"simulator/{name}: {result['value']:,.0f} {result['unit']} ({extra})")
