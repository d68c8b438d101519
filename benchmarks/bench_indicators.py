"""Indicators: each vectorised one against TA-Lib, and the streaming set per candle.

The data is a seeded random walk of N one-minute OHLCV candles (log-normal
steps, open = previous close, wicks beyond both, log-normal volume), built
once outside the timed part.

Cases:
- ``vectorised/<name>``: our function and TA-Lib's on the same N candles with
  the typical parameters below, timed alternately in one run (best of
  ``ROUNDS`` each, so a stray pause hits neither side alone); ``value`` is the
  time ratio ours / TA-Lib (lower is better), ``ours_ms`` / ``talib_ms`` beside
  it. ``vwap`` has no TA-Lib twin: its ``value`` is our time in ms.
- ``streaming/full_set``: all 13 indicators in one ``StreamingSet``, fed
  STREAM_N candles one at a time as the live signal runner and the backtester
  feed them; ``value`` is candles per second.

    python -m benchmarks.bench_indicators
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import talib

from cryptodesk.analytics.indicators import (
    INPUTS,
    FloatArray,
    IndicatorSpec,
    StreamingSet,
    compute,
    parse_spec,
    parse_specs,
)

N = 1_000_000
STREAM_N = 200_000
ROUNDS = 3
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
TYPICAL = (
    "sma:200,ema:20,wma:30,rsi:14,macd:12:26:9,bbands:20:2,atr:14,stoch:14:3:3,obv,"
    "adx:14,cci:20,mfi:14,vwap"
)

Arrays = dict[str, FloatArray]
# TA-Lib's call for each indicator with a spec's parameters (TA-Lib's defaults otherwise:
# SMA smoothing in STOCH, SMA middle in BBANDS).
TALIB: dict[str, Callable[..., Any]] = {
    "sma": lambda a, n: talib.SMA(a["close"], n),
    "ema": lambda a, n: talib.EMA(a["close"], n),
    "wma": lambda a, n: talib.WMA(a["close"], n),
    "rsi": lambda a, n: talib.RSI(a["close"], n),
    "macd": lambda a, f, s, g: talib.MACD(a["close"], f, s, g),
    "bbands": lambda a, n, k: talib.BBANDS(a["close"], n, k, k),
    "atr": lambda a, n: talib.ATR(a["high"], a["low"], a["close"], n),
    "stoch": lambda a, k, sk, sd: talib.STOCH(a["high"], a["low"], a["close"], k, sk, 0, sd, 0),
    "obv": lambda a: talib.OBV(a["close"], a["volume"]),
    "adx": lambda a, n: talib.ADX(a["high"], a["low"], a["close"], n),
    "cci": lambda a, n: talib.CCI(a["high"], a["low"], a["close"], n),
    "mfi": lambda a, n: talib.MFI(a["high"], a["low"], a["close"], a["volume"], n),
}


@functools.cache
def candles(n: int, *, seed: int = 11) -> Arrays:
    rng = np.random.default_rng(seed)
    close = 30_000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, n)))
    open_ = np.concatenate(([30_000.0], close[:-1]))
    high = np.maximum(open_, close) * (1.0 + np.abs(rng.normal(0.0, 0.001, n)))
    low = np.minimum(open_, close) * (1.0 - np.abs(rng.normal(0.0, 0.001, n)))
    volume = rng.lognormal(1.0, 1.0, n)
    ts = T0 + np.arange(n, dtype=np.float64) * 60_000.0
    return {"ts": ts, "open": open_, "high": high, "low": low, "close": close, "volume": volume}


def _seconds(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _vectorised(spec: IndicatorSpec) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        data = candles(N)
        ours = functools.partial(compute, [spec], data)
        reference = TALIB.get(spec.name)
        if reference is None:
            ours_s = min(_seconds(ours) for _ in range(ROUNDS))
            return {"value": ours_s * 1e3, "unit": "ms", "ours_ms": ours_s * 1e3}
        theirs = functools.partial(reference, data, *spec.params)
        ours_s = theirs_s = float("inf")
        for _ in range(ROUNDS):
            ours_s = min(ours_s, _seconds(ours))
            theirs_s = min(theirs_s, _seconds(theirs))
        return {
            "value": ours_s / theirs_s,
            "unit": "x talib",
            "ours_ms": ours_s * 1e3,
            "talib_ms": theirs_s * 1e3,
        }

    return run


def _streaming() -> dict[str, Any]:
    data = candles(STREAM_N)
    rows = list(zip(*(data[name].tolist() for name in INPUTS), strict=True))
    indicators = StreamingSet(parse_specs(TYPICAL))
    update = indicators.update
    started = time.perf_counter()
    for row in rows:
        update(*row)
    elapsed = time.perf_counter() - started
    return {
        "value": STREAM_N / elapsed,
        "unit": "candles/s",
        "us_per_candle": elapsed / STREAM_N * 1e6,
        "columns": len(indicators.columns),
    }


def cases() -> dict[str, Callable[[], dict[str, Any]]]:
    found: dict[str, Callable[[], dict[str, Any]]] = {}
    for item in TYPICAL.split(","):
        spec = parse_spec(item)
        found[f"vectorised/{spec.name}"] = _vectorised(spec)
    found["streaming/full_set"] = _streaming
    return found


if __name__ == "__main__":
    for name, fn in cases().items():
        fn()  # warm-up
        result = fn()
        extra = ", ".join(f"{k}={v:.3g}" for k, v in result.items() if k not in ("value", "unit"))
        print(f"indicators/{name}: {result['value']:,.3g} {result['unit']} ({extra})")
