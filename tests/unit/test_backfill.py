"""Backfill: paging, closed candles only, resume, idempotency, gaps, progress."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from cryptodesk.adapters.db import migrate
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.sql_store import SqlMarketStore
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.market import Candle
from cryptodesk.services.backfill import (
    BackfillProgress,
    BackfillResult,
    backfill,
    backfill_range,
)
from tests.unit._fetchers import HOUR, T0, FakeFetcher, FetchFailed, exchange_candle

H1 = Interval.parse("1h")
SYMBOL = "BTC/USDT"


async def open_store(path: Path) -> SqlMarketStore:
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(migrate.upgrade, url)
    return SqlMarketStore(create_engine(url))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlMarketStore]:
    s = await open_store(tmp_path / "a.db")
    yield s
    await s.close()


async def all_candles(store: SqlMarketStore, exchange: str = "fakex") -> list[Candle]:
    return await store.get_candles(exchange, SYMBOL, "1h", limit=1_000_000)


def expected(start: int, end: int) -> list[Candle]:
    return [
        dataclasses.replace(exchange_candle("fakex", SYMBOL, "1h", t), closed=True)
        for t in range(start, end, HOUR)
    ]


async def run(
    fetcher: FakeFetcher,
    store: SqlMarketStore,
    since: int,
    until: int | None = None,
    on_progress: Callable[[BackfillProgress], None] | None = None,
) -> BackfillResult:
    return await backfill(
        fetcher, store, symbol=SYMBOL, interval=H1, since=since, until=until,
        limit=fetcher.ohlcv_limit, clock=lambda: fetcher.now, on_progress=on_progress,
    )  # fmt: skip


async def test_pages_of_the_exchange_limit_cover_the_range(store: SqlMarketStore) -> None:
    fetcher = FakeFetcher()
    result = await run(fetcher, store, T0, T0 + 2500 * HOUR)
    calls = fetcher.ohlcv_calls()
    assert [(c.since, c.until, c.limit) for c in calls] == [
        (T0, T0 + 1000 * HOUR - 1, 1000),
        (T0 + 1000 * HOUR, T0 + 2000 * HOUR - 1, 1000),
        (T0 + 2000 * HOUR, T0 + 2500 * HOUR - 1, 1000),
    ]
    assert (result.fetched, result.pages, result.expected) == (2500, 3, 2500)
    assert await all_candles(store) == expected(T0, T0 + 2500 * HOUR)


async def test_only_closed_candles_are_stored(store: SqlMarketStore) -> None:
    # 10.5 hours after T0: the 10:00 candle is still open and is left out.
    fetcher = FakeFetcher(now=T0 + 10 * HOUR + HOUR // 2)
    result = await run(fetcher, store, T0)
    assert result.end == T0 + 10 * HOUR
    stored = await all_candles(store)
    assert [c.open_time for c in stored] == list(range(T0, T0 + 10 * HOUR, HOUR))
    assert all(c.closed for c in stored)
    # An --until in the future is capped at now the same way.
    assert (await run(fetcher, store, T0, T0 + 100 * HOUR)).fetched == 0


def test_range_starts_at_the_first_candle_at_or_after_since() -> None:
    assert backfill_range(H1, T0 + 1, None, now=T0 + 5 * HOUR) == (T0 + HOUR, T0 + 5 * HOUR)
    assert backfill_range(H1, T0, T0 + 90 * 60_000, now=T0 + 5 * HOUR) == (T0, T0 + 90 * 60_000)
    week = Interval.parse("1w")  # Mondays: 2024-01-01 was one
    assert backfill_range(week, T0 - 1, None, now=T0 + 30 * 24 * HOUR)[0] == T0


async def test_second_run_changes_nothing_and_fetches_nothing(store: SqlMarketStore) -> None:
    fetcher = FakeFetcher()
    await run(fetcher, store, T0, T0 + 1500 * HOUR)
    before = await all_candles(store)
    again = FakeFetcher()
    result = await run(again, store, T0, T0 + 1500 * HOUR)
    assert again.ohlcv_calls() == []
    assert (result.fetched, result.resumed_after) == (0, T0 + 1499 * HOUR)
    assert await all_candles(store) == before


async def test_a_failed_run_resumes_to_the_same_store_as_one_uninterrupted_run(
    tmp_path: Path,
) -> None:
    whole = await open_store(tmp_path / "whole.db")
    split = await open_store(tmp_path / "split.db")
    try:
        await run(FakeFetcher(), whole, T0, T0 + 2700 * HOUR)

        failing = FakeFetcher(fail_on_calls={2})
        with pytest.raises(FetchFailed):
            await run(failing, split, T0, T0 + 2700 * HOUR)
        assert len(await all_candles(split)) == 1000  # the first page stayed

        second = FakeFetcher()
        result = await run(second, split, T0, T0 + 2700 * HOUR)
        assert result.resumed_after == T0 + 999 * HOUR
        assert second.ohlcv_calls()[0].since == T0 + 1000 * HOUR
        assert len(second.ohlcv_calls()) == 2
        assert await all_candles(split) == await all_candles(whole)
        assert len(await all_candles(whole)) == 2700
    finally:
        await whole.close()
        await split.close()


async def test_resume_only_counts_candles_inside_the_range(store: SqlMarketStore) -> None:
    # Newer candles (from a later run or the live feed) do not hide an older range.
    await run(FakeFetcher(), store, T0 + 2000 * HOUR, T0 + 2010 * HOUR)
    fetcher = FakeFetcher()
    result = await run(fetcher, store, T0, T0 + 50 * HOUR)
    assert result.resumed_after is None
    assert result.fetched == 50


async def test_a_stretch_without_candles_longer_than_a_page_is_walked_past(
    store: SqlMarketStore,
) -> None:
    gap = {T0 + h * HOUR for h in range(300, 1800)}
    fetcher = FakeFetcher(missing=gap)
    result = await run(fetcher, store, T0, T0 + 2500 * HOUR)
    stored = [c.open_time for c in await all_candles(store)]
    want = [t for t in range(T0, T0 + 2500 * HOUR, HOUR) if t not in gap]
    assert stored == want
    assert result.pages == len(fetcher.ohlcv_calls()) <= 4


async def test_since_before_the_listing(store: SqlMarketStore) -> None:
    fetcher = FakeFetcher(listed_from=T0 + 500 * HOUR)
    result = await run(fetcher, store, T0 - 5000 * HOUR, T0 + 800 * HOUR)
    assert [c.open_time for c in await all_candles(store)] == list(
        range(T0 + 500 * HOUR, T0 + 800 * HOUR, HOUR)
    )
    assert result.pages == 6  # five empty windows, then the data


async def test_an_exchange_that_ignores_since_ends_the_walk(store: SqlMarketStore) -> None:
    # kraken: always its newest candles. Nothing older exists there to fetch.
    fetcher = FakeFetcher(ignore_since=True, ohlcv_limit=720, now=T0 + 3000 * HOUR)
    result = await run(fetcher, store, T0)
    stored = [c.open_time for c in await all_candles(store)]
    assert stored == list(range(T0 + 2281 * HOUR, T0 + 3000 * HOUR, HOUR))
    assert result.pages == 1


async def test_progress_reports_every_page(store: SqlMarketStore) -> None:
    seen: list[BackfillProgress] = []
    fetcher = FakeFetcher(missing={T0 + 5 * HOUR})
    await run(fetcher, store, T0, T0 + 2100 * HOUR, on_progress=seen.append)
    assert [(p.fetched, p.walked, p.pages) for p in seen] == [
        (999, 1000, 1),
        (1999, 2000, 2),
        (2099, 2100, 3),
    ]
    assert {p.expected for p in seen} == {2100}


async def test_until_not_after_since_fetches_nothing(store: SqlMarketStore) -> None:
    fetcher = FakeFetcher()
    result = await run(fetcher, store, T0 + 10 * HOUR, T0 + 10 * HOUR)
    assert (result.fetched, result.pages, fetcher.ohlcv_calls()) == (0, 0, [])


async def test_limit_must_be_positive(store: SqlMarketStore) -> None:
    with pytest.raises(ValueError, match="limit"):
        await backfill(FakeFetcher(), store, symbol=SYMBOL, interval=H1, since=T0, limit=0)
