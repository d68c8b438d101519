"""The market-data store: trades and candles with idempotent writes.

Natural keys: trades ``(exchange, symbol, id)``; candles
``(exchange, symbol, interval, open_time)``. Replaying the same events leaves
the store unchanged. Implementations: SQLite (embedded) and PostgreSQL, both
through SQLAlchemy, passing ``tests/contracts/store_contract.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from cryptodesk.domain.market import Candle, Trade


class MarketStore(Protocol):
    async def insert_trades(self, trades: Sequence[Trade]) -> list[Trade]:
        """Insert trades not stored yet; return exactly those that were new.

        The caller feeds only the returned trades to the candle builder, so a
        redelivered trade is never counted twice.
        """
        ...

    async def upsert_candles(self, candles: Sequence[Candle]) -> None:
        """Insert or replace candles by natural key."""
        ...

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
        """Candles with ``start <= open_time < end``, ordered by open time."""
        ...

    async def get_trades(
        self,
        exchange: str,
        symbol: str,
        *,
        start: int | None = None,
        end: int | None = None,
        limit: int = 1000,
    ) -> list[Trade]:
        """Trades with ``start <= ts < end``, oldest first."""
        ...

    def iter_trades(
        self, exchange: str, *, start: int, batch_size: int = 10_000
    ) -> AsyncIterator[list[Trade]]:
        """All trades of ``exchange`` with ``ts >= start`` in (ts, id) order, in batches."""
        ...

    async def last_trade_ts(self, exchange: str) -> int | None: ...

    async def last_candle(self, exchange: str, symbol: str, interval: str) -> Candle | None: ...

    async def count_trades(self, exchange: str | None = None) -> int: ...

    async def count_candles(self, exchange: str | None = None) -> int: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
