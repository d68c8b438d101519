"""An in-memory exchange for backfill and prefetch tests: candles by time range,
tickers and markets, with listing dates, gaps, failures and a gate to hold a call."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from cryptodesk.domain.interval import Interval
from cryptodesk.domain.market import Candle, Market, Ticker

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
HOUR = 3_600_000


def exchange_candle(exchange: str, symbol: str, interval: str, open_time: int) -> Candle:
    """The exchange's (deterministic) candle at ``open_time``."""
    step = open_time // Interval.parse(interval).ms
    base = 100.0 + step % 97 + (0.5 if symbol.startswith("ETH") else 0.0)
    return Candle(
        exchange, symbol, interval, open_time,
        base, base + 2.0, base - 1.0, base + 1.0,
        10.0 + step % 7, (10.0 + step % 7) * base, 5 + step % 11,
    )  # fmt: skip


class FetchFailed(Exception):
    pass


@dataclass
class Call:
    kind: str
    symbol: str | None = None
    interval: str | None = None
    since: int | None = None
    until: int | None = None
    limit: int | None = None


@dataclass
class FakeFetcher:
    """Answers like binance: candles opening in ``since..until`` (inclusive), oldest
    first, at most ``limit``, the current (open) candle included."""

    exchange: str = "fakex"
    symbols: Sequence[str] = ("BTC/USDT", "ETH/USDT")
    listed_from: int = T0 - 1000 * HOUR
    now: int = T0 + 3000 * HOUR
    ohlcv_limit: int = 1000
    timeframes: frozenset[str] | None = frozenset({"1m", "5m", "1h", "1d"})
    missing: Collection[int] = ()  # open times the exchange has no candle for
    ignore_since: bool = False  # kraken: always the newest ``limit`` candles
    fail_on_calls: Collection[int] = ()  # 1-based numbers of fetch_ohlcv calls that fail
    gate: asyncio.Event | None = None  # every call waits for it when set
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    calls: list[Call] = field(default_factory=list)
    closed: bool = False
    ticker_last: float = 100.0

    def ohlcv_calls(self) -> list[Call]:
        return [c for c in self.calls if c.kind == "ohlcv"]

    async def _enter(self) -> None:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()

    async def fetch_ohlcv(
        self, symbol: str, interval: str, *, since: int, until: int, limit: int
    ) -> list[Candle]:
        self.calls.append(Call("ohlcv", symbol, interval, since, until, limit))
        await self._enter()
        if len(self.ohlcv_calls()) in self.fail_on_calls:
            raise FetchFailed(f"HTTP 502 on call {len(self.ohlcv_calls())}")
        iv = Interval.parse(interval)
        current = iv.bucket(self.now)
        first = iv.bucket(self.listed_from)
        if self.ignore_since:
            lo, hi = max(first, current - (limit - 1) * iv.ms), current
        else:
            lo, hi = max(first, iv.bucket(since)), min(until, current)
            lo = lo if lo >= since else lo + iv.ms
        out: list[Candle] = []
        t = lo
        while t <= hi and len(out) < limit:
            if t not in self.missing:
                c = exchange_candle(self.exchange, symbol, interval, t)
                out.append(c if t < current else dataclasses.replace(c, closed=False))
            t += iv.ms
        return out

    async def load_markets(self) -> list[Market]:
        self.calls.append(Call("markets"))
        await self._enter()
        return [
            Market(self.exchange, s, *s.split("/"), price_increment=0.01, amount_increment=0.001)
            for s in self.symbols
        ]

    async def fetch_tickers(self, symbols: Sequence[str]) -> list[Ticker]:
        self.calls.append(Call("tickers"))
        await self._enter()
        unknown = set(symbols) - set(self.symbols)
        if unknown:
            raise FetchFailed(f"unknown symbols {sorted(unknown)}")
        return [Ticker(self.exchange, s, self.now, self.ticker_last) for s in symbols]

    async def close(self) -> None:
        self.closed = True
