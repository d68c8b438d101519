"""Websocket messages normalised per second for a recorded binance trade stream.

The stream is N ``<symbol>@trade`` events in Binance's documented format
(``{"e":"trade","E":..,"s":"BTCUSDT","t":..,"p":"64123.45","q":"0.01250","T":..,
"m":true,"M":true}``), generated once outside the timed part with a seeded
random walk. Each message then goes the way a live one goes, without the
network: decoded as ccxt's websocket client decodes it (orjson), handled by
ccxt.pro binance's ``handle_message`` under the source's payload guard, the new
trades taken from ccxt's cache as ``watch_trades`` takes them, mapped to
``Trade`` and deduplicated by id. One message per batch, the worst case (a
consumer that keeps up is woken for every message).

Cases:
- ``binance_trade_stream``: the whole path above.
- ``ccxt_handler_only``: decode and ccxt's handler alone, for the share ccxt takes.

    python -m benchmarks.bench_ccxt
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Callable
from typing import Any

import orjson

from cryptodesk.adapters.exchanges.ccxt_source import CcxtSource
from cryptodesk.adapters.exchanges.ccxt_trades import TradeTape

N = 50_000
SYMBOL = "BTC/USDT"
URL = "wss://stream.binance.com:9443/ws/0"  # never dialled: the handler only reads it
T0 = 1_717_200_000_000

# One /api/v3/exchangeInfo ``symbols`` entry, enough for ccxt to know the market.
BTCUSDT = {
    "symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", "baseAssetPrecision": 8,
    "quoteAsset": "USDT", "quotePrecision": 8, "quoteAssetPrecision": 8,
    "orderTypes": ["LIMIT", "MARKET"], "isSpotTradingAllowed": True,
    "isMarginTradingAllowed": False, "permissions": [], "permissionSets": [["SPOT"]],
    "filters": [
        {"filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000",
         "tickSize": "0.01000000"},
        {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000",
         "stepSize": "0.00001000"},
        {"filterType": "NOTIONAL", "minNotional": "5.00000000", "maxNotional": "9000000.00000000"},
    ],
}  # fmt: skip


@functools.cache
def recorded_stream(n: int, *, seed: int = 7) -> list[bytes]:
    """``n`` trade events as the websocket sends them: a price walk in cents,
    five-decimal quantities, a few trades per millisecond at busy times."""
    rng = random.Random(seed)
    cents, ts = 6_412_345, T0
    out = []
    for i in range(n):
        cents = max(1, cents + rng.choice((-3, -2, -1, -1, 0, 0, 0, 1, 1, 2, 3)))
        ts += rng.choice((0, 0, 1, 1, 2, 5, 13, 40))
        qty = rng.randint(1, 250_000)
        event = {
            "e": "trade", "E": ts + rng.randint(0, 3), "s": "BTCUSDT", "t": 3_600_000_000 + i,
            "p": f"{cents // 100}.{cents % 100:02d}000000", "q": f"{qty / 100_000:.8f}",
            "T": ts, "m": rng.random() < 0.5, "M": True,
        }  # fmt: skip
        out.append(orjson.dumps(event))
    return out


async def _normalise(messages: list[bytes], *, map_trades: bool) -> tuple[float, int]:
    source = CcxtSource("binance")
    exchange = source.client
    # What fetch_markets sets before parsing (no margin pairs: none are fetched).
    exchange.options.update(crossMarginPairsData=[], isolatedMarginPairsData=[])
    exchange.set_markets([exchange.parse_market(BTCUSDT)])
    client = exchange.client(URL)  # our guarded client; no connection is made
    tape = TradeTape(10_000)
    handled = 0
    loads, handle = orjson.loads, exchange.handle_message
    started = time.perf_counter()
    for text in messages:
        handle(client, loads(text))
        cache: Any = exchange.trades[SYMBOL]
        new = cache.getLimit(SYMBOL, None)
        batch = exchange.filter_by_since_limit(cache, None, new, "timestamp", True)
        if map_trades:
            handled += len(tape.admit(source._map_trades(batch, "watch_trades")))
        else:
            handled += len(batch)
    elapsed = time.perf_counter() - started
    await source.close()
    return elapsed, handled


def _case(map_trades: bool) -> Callable[[], dict[str, float | str]]:
    def run() -> dict[str, float | str]:
        messages = recorded_stream(N)
        elapsed, handled = asyncio.run(_normalise(messages, map_trades=map_trades))
        if handled != N:
            raise AssertionError(f"{handled} of {N} trades came out")
        return {"value": N / elapsed, "unit": "msg/s", "us_per_msg": elapsed / N * 1e6}

    return run


def cases() -> dict[str, Callable[[], dict[str, float | str]]]:
    return {
        "binance_trade_stream": _case(map_trades=True),
        "ccxt_handler_only": _case(map_trades=False),
    }


if __name__ == "__main__":
    for name, fn in cases().items():
        fn()  # warm-up
        result = fn()
        print(f"ccxt/{name}: {result['value']:,.0f} {result['unit']} "
              f"({float(result['us_per_msg']):.2f} us/msg)")  # fmt: skip
