"""Import candle files into the store, and read series back out for export.

An import is all-or-nothing: the whole file is read and validated first (a bad
row fails it with its line number before anything is written), then every new
or changed candle goes to the store in one ``upsert_candles`` call, which is one
transaction on both SQLite and PostgreSQL. It is idempotent: candles already
stored with the same values are counted as unchanged and not written again, so
a second import of the same file writes nothing. Where a stored candle differs
(a live-built one, an earlier import), the file wins and the candle counts as
updated.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from cryptodesk.adapters.db.base import MarketStore
from cryptodesk.adapters.files.parsing import DataFileError
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.market import Candle
from cryptodesk.domain.symbol import Symbol

EXPORT_PAGE = 10_000  # candles per store read while exporting or comparing
_EXCHANGE_ID = re.compile(r"^[a-z][a-z0-9_]{1,31}$")  # as CRYPTODESK_EXCHANGES accepts


@dataclass(frozen=True, slots=True)
class Series:
    """One candle series, its parts checked and normalised (``btc-usd`` -> ``BTC/USD``)."""

    exchange: str
    symbol: str
    interval: Interval

    @classmethod
    def parse(cls, exchange: str, symbol: str, interval: str) -> Series:
        if not _EXCHANGE_ID.match(exchange):
            raise DomainError(
                f"{exchange!r} is not an exchange id (lower case, like binance)", field="exchange"
            )
        return cls(exchange, str(Symbol.parse(symbol)), Interval.parse(interval))


@dataclass(frozen=True, slots=True)
class ImportResult:
    path: str
    format: str
    candles: int  # in the file
    new: int
    updated: int
    unchanged: int
    first_open: int
    last_open: int

    @property
    def written(self) -> int:
        return self.new + self.updated


async def import_candles(store: MarketStore, path: str | Path, series: Series) -> ImportResult:
    """Validate the whole file, then write what is new or changed in one store call.

    Raises ``DataFileError`` (naming the line) for a bad or empty file; nothing
    is written then.
    """
    # The file readers (and pyarrow, ~25 MB) load on first use, never in the API process.
    from cryptodesk.adapters.files.candle_files import read_candles

    parsed = await asyncio.to_thread(
        read_candles,
        path,
        exchange=series.exchange,
        symbol=series.symbol,
        interval=series.interval,
    )
    candles = parsed.candles
    if not candles:
        raise DataFileError(path, None, f"the file holds no {series.symbol} candles")
    first, last = candles[0].open_time, candles[-1].open_time
    stored: dict[int, Candle] = {}
    async for page in stored_candles(store, series, start=first, end=last + 1):
        stored.update((c.open_time, c) for c in page)
    changed = [c for c in candles if stored.get(c.open_time) != c]
    new = sum(1 for c in changed if c.open_time not in stored)
    if changed:
        await store.upsert_candles(changed)
    return ImportResult(
        parsed.path,
        parsed.format,
        len(candles),
        new=new,
        updated=len(changed) - new,
        unchanged=len(candles) - len(changed),
        first_open=first,
        last_open=last,
    )


async def stored_candles(
    store: MarketStore,
    series: Series,
    *,
    start: int | None = None,
    end: int | None = None,
    page_size: int = EXPORT_PAGE,
) -> AsyncIterator[list[Candle]]:
    """The stored series with ``start <= open_time < end``, oldest first, page by page."""
    cursor = start
    while True:
        page = await store.get_candles(
            series.exchange,
            series.symbol,
            series.interval.name,
            start=cursor,
            end=end,
            limit=page_size,
        )
        if page:
            yield page
        if len(page) < page_size:
            return
        cursor = page[-1].open_time + 1
