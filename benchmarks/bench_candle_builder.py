"""CandleBuilder throughput on realistic trade streams.

Input is what the ingest service passes: lists of domain ``Trade`` objects in
batches of 2000, timestamps rising by 0-60 ms per trade (a few trades per
100 ms), prices on a random walk. Only the builder calls are timed; building
the Trade objects happens once, before the clock starts.

    python -m benchmarks.bench_candle_builder
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cache

import numpy as np

from cryptodesk.analytics.candles import CandleBuilder
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.market import Trade

T0 = 1_700_000_000_000
BATCH = 2000
N_TRADES = 400_000
SIX = ("1m", "5m", "15m", "1h", "4h", "1d")
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")

Result = dict[str, float | str]


@cache
def _columns(n: int, n_symbols: int, seed: int = 1) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    ts = T0 + np.cumsum(rng.integers(0, 61, n))
    sym = rng.integers(0, n_symbols, n)
    price = 30_000.0 * np.exp(np.cumsum(rng.normal(0.0, 2e-4, n)))
    amount = np.round(rng.exponential(0.05, n), 6) + 1e-6
    return ts, sym, price, amount


@cache
def _trade_batches(n: int, n_symbols: int) -> list[list[Trade]]:
    ts, sym, price, amount = _columns(n, n_symbols)
    trades = [
        Trade("bench", SYMBOLS[s], str(i), t, p, a, "buy" if i % 2 else "sell")
        for i, (t, s, p, a) in enumerate(
            zip(ts.tolist(), sym.tolist(), price.tolist(), amount.tolist(), strict=True)
        )
    ]
    return [trades[i : i + BATCH] for i in range(0, n, BATCH)]


def _run_trades(n_symbols: int, intervals: tuple[str, ...], batch: int = BATCH) -> Result:
    batches = _trade_batches(N_TRADES, n_symbols)
    if batch != BATCH:
        flat = [t for b in batches for t in b][: N_TRADES // 10]
        batches = [flat[i : i + batch] for i in range(0, len(flat), batch)]
    n = sum(len(b) for b in batches)
    builder = CandleBuilder("bench", [Interval.parse(i) for i in intervals])
    candles = 0
    start = time.perf_counter()
    for b in batches:
        candles += len(builder.add_trades(b).finalized)
    elapsed = time.perf_counter() - start
    return {
        "value": n / elapsed,
        "unit": "trades/s",
        "trades": float(n),
        "batch": float(batch),
        "finalized": float(candles),
    }


def _run_arrays(intervals: tuple[str, ...]) -> Result:
    ts, _, price, amount = _columns(N_TRADES, 1)
    chunks = [
        (ts[i : i + BATCH], price[i : i + BATCH], amount[i : i + BATCH])
        for i in range(0, N_TRADES, BATCH)
    ]
    builder = CandleBuilder("bench", [Interval.parse(i) for i in intervals])
    candles = 0
    start = time.perf_counter()
    for t, p, a in chunks:
        candles += len(builder.add_arrays(SYMBOLS[0], t, p, a).finalized)
    elapsed = time.perf_counter() - start
    return {
        "value": N_TRADES / elapsed,
        "unit": "trades/s",
        "trades": float(N_TRADES),
        "batch": float(BATCH),
        "finalized": float(candles),
    }


def cases() -> dict[str, Callable[[], Result]]:
    return {
        "1_symbol_1_interval": lambda: _run_trades(1, ("1m",)),
        "3_symbols_6_intervals": lambda: _run_trades(3, SIX),
        "3_symbols_6_intervals_batch_10": lambda: _run_trades(3, SIX, batch=10),
        "3_symbols_6_intervals_batch_200": lambda: _run_trades(3, SIX, batch=200),
        "add_arrays_1_symbol_1_interval": lambda: _run_arrays(("1m",)),
        "add_arrays_1_symbol_6_intervals": lambda: _run_arrays(SIX),
    }


if __name__ == "__main__":
    for name, fn in cases().items():
        fn()  # warm-up
        runs = sorted(fn()["value"] for _ in range(3))
        print(f"{name:36s} median {runs[1]:>14,.0f} trades/s  (min {runs[0]:,.0f})")
