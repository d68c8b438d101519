"""Small in-test twins of the Cache and MarketStore protocols for the API tests.

They implement only what the read path needs with the documented semantics
(LRANGE-style list ranges, ``start <= open_time < end`` candle queries), so
these tests do not wait on the real adapters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

import httpx
from fastapi import FastAPI

from cryptodesk.adapters.cache.base import Cache, Subscription
from cryptodesk.adapters.db.base import MarketStore
from cryptodesk.api.app import create_app
from cryptodesk.domain import codec
from cryptodesk.domain.auth import Role
from cryptodesk.domain.market import Candle, Trade
from cryptodesk.observability.health import HealthRegistry
from cryptodesk.observability.metrics import Metrics
from cryptodesk.services import cache_keys
from cryptodesk.services.market_queries import MarketQueries
from tests.unit._auth import fresh_logins

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z
MINUTE = 60_000


class DictCache:
    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.lists: dict[str, list[bytes]] = {}
        self.reads = 0

    async def get(self, key: str) -> bytes | None:
        self.reads += 1
        return self.values.get(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self.reads += 1
        return [self.values.get(k) for k in keys]

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        self.values[key] = value

    async def set_many(self, items: Mapping[str, bytes], *, ttl: float | None = None) -> None:
        self.values.update(items)

    async def delete(self, key: str) -> None:
        self.values.pop(key, None)
        self.lists.pop(key, None)

    async def push_capped(self, key: str, values: Sequence[bytes], *, maxlen: int) -> None:
        items = self.lists.setdefault(key, [])
        items.extend(values)
        del items[: max(0, len(items) - maxlen)]

    async def list_range(self, key: str, start: int = 0, end: int = -1) -> list[bytes]:
        self.reads += 1
        items = self.lists.get(key, [])
        n = len(items)
        lo = start + n if start < 0 else start
        hi = end + n if end < 0 else end
        return items[max(lo, 0) : hi + 1]

    async def publish(self, channel: str, message: bytes) -> int:
        return 0

    async def subscribe(self, channel: str) -> Subscription:
        raise NotImplementedError

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


class BrokenCache(DictCache):
    """A cache whose server is gone: every read raises."""

    async def get(self, key: str) -> bytes | None:
        raise ConnectionError("cache down")

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        raise ConnectionError("cache down")

    async def list_range(self, key: str, start: int = 0, end: int = -1) -> list[bytes]:
        raise ConnectionError("cache down")


class ListStore:
    def __init__(self, candles: Sequence[Candle] = ()) -> None:
        self.candles: list[Candle] = list(candles)
        self.candle_queries = 0

    async def insert_trades(self, trades: Sequence[Trade]) -> list[Trade]:
        raise NotImplementedError

    async def upsert_candles(self, candles: Sequence[Candle]) -> None:
        keep = {(c.exchange, c.symbol, c.interval, c.open_time): c for c in self.candles}
        keep.update({(c.exchange, c.symbol, c.interval, c.open_time): c for c in candles})
        self.candles = sorted(keep.values(), key=lambda c: c.open_time)

    async def get_candles(
        self,
        exchange: str,
        symbol: str,
        interval: str,
        *,
        start: int | None = None,
        end: int | None = None,
        limit: int = 500,
        newest_first: bool = False,
    ) -> list[Candle]:
        self.candle_queries += 1
        rows = sorted(
            (
                c
                for c in self.candles
                if (c.exchange, c.symbol, c.interval) == (exchange, symbol, interval)
                and (start is None or c.open_time >= start)
                and (end is None or c.open_time < end)
            ),
            key=lambda c: c.open_time,
            reverse=newest_first,
        )
        return rows[:limit]

    async def get_trades(
        self,
        exchange: str,
        symbol: str,
        *,
        start: int | None = None,
        end: int | None = None,
        limit: int = 1000,
    ) -> list[Trade]:
        return []

    async def _no_trades(self) -> AsyncIterator[list[Trade]]:
        return
        yield []

    def iter_trades(
        self, exchange: str, *, start: int, batch_size: int = 10_000
    ) -> AsyncIterator[list[Trade]]:
        return self._no_trades()

    async def last_trade_ts(self, exchange: str) -> int | None:
        return None

    async def last_candle(self, exchange: str, symbol: str, interval: str) -> Candle | None:
        rows = await self.get_candles(exchange, symbol, interval, limit=1, newest_first=True)
        return rows[0] if rows else None

    async def count_trades(self, exchange: str | None = None) -> int:
        return 0

    async def count_candles(self, exchange: str | None = None) -> int:
        return len(self.candles)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


def make_candle(
    i: int,
    *,
    exchange: str = "sim",
    symbol: str = "BTC/USDT",
    interval: str = "1m",
    closed: bool = True,
    step: int = MINUTE,
) -> Candle:
    """The i-th candle of a deterministic series with distinct, exact prices."""
    base = 100.0 + i * 0.25
    return Candle(
        exchange, symbol, interval, T0 + i * step,
        base, base + 1.5, base - 0.5, base + 0.75, 2.0 + i, (2.0 + i) * base, i % 7, closed,
    )  # fmt: skip


async def seed_series(
    cache: DictCache, store: ListStore, candles: Sequence[Candle], *, recent: int
) -> None:
    """Write finalized candles as compute does: store all, cache the newest ``recent``."""
    await store.upsert_candles(candles)
    if recent > 0 and candles:
        c = candles[0]
        key = cache_keys.recent_candles(c.exchange, c.symbol, c.interval)
        await cache.push_capped(key, [codec.encode_candle(x) for x in candles], maxlen=recent)


def _protocol_checks(cache: DictCache, store: ListStore) -> tuple[Cache, MarketStore]:
    """mypy proves the twins satisfy the protocols."""
    return cache, store


@dataclass
class Harness:
    """The app around twins: sim and kraken, BTC/USDT and ETH/USDT, 1m and 1h."""

    cache: DictCache = field(default_factory=DictCache)
    store: ListStore = field(default_factory=ListStore)
    metrics: Metrics = field(default_factory=Metrics)
    recent: int = 1000

    def __post_init__(self) -> None:
        self.health = HealthRegistry(self.metrics)
        self.queries = MarketQueries(
            self.cache, self.store, self.metrics,
            exchanges=["sim", "kraken"], symbols=["BTC/USDT", "ETH/USDT"],
            intervals=["1m", "1h"], cache_recent_candles=self.recent,
        )  # fmt: skip
        self.logins = fresh_logins()
        self.app: FastAPI = create_app(
            self.queries, self.metrics, self.health, version="9.9.9", readiness_timeout=0.05,
            auth=self.logins.auth,
        )  # fmt: skip

    def client(self, tenant: str = "default", role: Role = "admin") -> httpx.AsyncClient:
        """A client logged in as ``role`` of ``tenant``."""
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        return httpx.AsyncClient(
            transport=transport, base_url="http://testserver",
            auth=self.logins.bearer(tenant, role),
        )  # fmt: skip

    def anonymous(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")
