"""Backfill and prefetch through the real fetcher (CcxtSource, guarded) against the fake Binance.

The fake speaks Binance's documented wire format (``/api/v3/klines`` rows of
open time, OHLCV strings, close time...; ``startTime``/``endTime`` inclusive on
open time; at most 1000 rows), so these tests cover the whole path a user's
``cryptodesk backfill`` takes: factory, ccxt, guard, mapping, paging, store.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cryptodesk.adapters.cache.memory import MemoryCache
from cryptodesk.adapters.db import migrate
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.jobs_store import JobRunStore
from cryptodesk.adapters.db.sql_store import SqlMarketStore
from cryptodesk.adapters.locks.memory import MemoryJobLock
from cryptodesk.cli import app
from cryptodesk.config import Settings
from cryptodesk.domain import codec
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.timeutil import now_ms
from cryptodesk.services import cache_keys, sources
from cryptodesk.services.backfill import backfill
from cryptodesk.services.prefetch import PrefetchScheduler
from tests.fakes.binance import FakeBinance

HOUR = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01
NOW = T0 + 2600 * HOUR + 17 * 60_000  # the 2600th hour is still open
H1 = Interval.parse("1h")
pytestmark = pytest.mark.usefixtures("clean_env")


def kline(open_time: int) -> list[Any]:
    """One 1h kline as Binance sends it: prices and volumes are strings."""
    h = (open_time - T0) // HOUR
    o = 42000 + (h * 37) % 900
    return [
        open_time, f"{o}.10000000", f"{o + 55}.00000000", f"{o - 40}.50000000",
        f"{o + 12}.25000000", f"{10 + h % 13}.12345000", open_time + HOUR - 1,
        f"{(10 + h % 13) * o}.50000000", 100 + h % 50, "5.00000000", "210000.00000000", "0",
    ]  # fmt: skip


@pytest.fixture
async def binance() -> AsyncIterator[FakeBinance]:
    fake = FakeBinance(now=NOW)
    # Listed 100 hours before 2024, up to and including the hour still open.
    fake.add_klines("BTCUSDT", "1h", [kline(T0 + h * HOUR) for h in range(-100, 2601)])
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlMarketStore]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'b.db'}"
    await asyncio.to_thread(migrate.upgrade, url)
    s = SqlMarketStore(create_engine(url))
    yield s
    await s.close()


def fetcher_for(fake: FakeBinance) -> sources.ExchangeFetcher:
    return sources.make_fetcher("binance", Settings(), api_overrides={"http": fake.base_url})


def windows(fake: FakeBinance) -> list[tuple[str, str]]:
    return [(q["startTime"], q["limit"]) for q in fake.rest_calls("/api/v3/klines")]


async def test_backfill_pages_klines_through_the_guarded_ccxt_source(
    binance: FakeBinance, store: SqlMarketStore
) -> None:
    fetcher = fetcher_for(binance)
    assert fetcher.ohlcv_limit == 1000
    # One transient upstream failure: the guard retries it; the backfill never sees it.
    binance.server.fail_next("/api/v3/klines", 503, {"code": -1001, "msg": "Internal error"})
    try:
        result = await backfill(
            fetcher, store, symbol="BTC/USDT", interval=H1, since=T0, limit=fetcher.ohlcv_limit,
            clock=lambda: NOW,
        )  # fmt: skip
        again = await backfill(
            fetcher, store, symbol="BTC/USDT", interval=H1, since=T0, limit=fetcher.ohlcv_limit,
            clock=lambda: NOW,
        )  # fmt: skip
    finally:
        await fetcher.close()
    assert windows(binance) == [
        (str(T0), "1000"),  # answered 503
        (str(T0), "1000"),
        (str(T0 + 1000 * HOUR), "1000"),
        (str(T0 + 2000 * HOUR), "1000"),
    ]
    assert (result.fetched, result.pages) == (2600, 3)
    assert (again.fetched, again.pages) == (0, 0)  # nothing new has closed: no request
    stored = await store.get_candles("binance", "BTC/USDT", "1h", limit=10_000)
    assert [c.open_time for c in stored] == list(range(T0, T0 + 2600 * HOUR, HOUR))
    row = kline(T0 + 1234 * HOUR)
    c = stored[1234]
    assert (c.open, c.high, c.low, c.close, c.volume) == tuple(float(v) for v in row[1:6])
    assert c.closed


async def test_prefetch_jobs_against_binance(binance: FakeBinance, store: SqlMarketStore) -> None:
    binance.set_ticker(
        "BTCUSDT", priceChange="12.5", priceChangePercent="0.03", weightedAvgPrice="42010.1",
        prevClosePrice="42000.00", lastPrice="42012.25", lastQty="0.1", bidPrice="42012.24",
        bidQty="1.5", askPrice="42012.26", askQty="2.0", openPrice="41999.75",
        highPrice="42100.00", lowPrice="41900.00", volume="1234.5", quoteVolume="51800000.0",
        openTime=NOW - 86_400_000, closeTime=NOW, firstId=1, lastId=1000, count=1000,
    )  # fmt: skip
    cache = MemoryCache()
    runs = JobRunStore(store.engine)
    fetcher = fetcher_for(binance)
    jobs = PrefetchScheduler(
        [fetcher], store, cache, runs, MemoryJobLock(),
        symbols=["BTC/USDT"], intervals=[H1], lookback_candles=48, clock=lambda: NOW,
    )  # fmt: skip
    try:
        assert await jobs.run_job("markets:binance") == "ok"
        assert await jobs.run_job("tickers:binance") == "ok"
        assert await jobs.run_job("candles:binance") == "ok"
    finally:
        await jobs.close()
    raw_markets = await cache.get(cache_keys.markets("binance"))
    assert raw_markets is not None
    assert "BTC/USDT" in {m.symbol for m in codec.decode_markets(raw_markets)}
    raw_ticker = await cache.get(cache_keys.ticker("binance", "BTC/USDT"))
    assert raw_ticker is not None
    ticker = codec.decode_ticker(raw_ticker)
    assert (ticker.last, ticker.bid, ticker.ask) == (42012.25, 42012.24, 42012.26)
    stored = await store.get_candles("binance", "BTC/USDT", "1h", limit=1000)
    assert [c.open_time for c in stored] == list(range(T0 + 2552 * HOUR, T0 + 2600 * HOUR, HOUR))
    assert {s.job_id: s.outcome for s in await runs.statuses()} == {
        "candles:binance": "ok",
        "markets:binance": "ok",
        "tickers:binance": "ok",
    }


async def test_cli_backfill_from_the_fake_exchange(
    binance: FakeBinance, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = sources.make_fetcher
    monkeypatch.setattr(
        sources, "make_fetcher",
        functools.partial(real, api_overrides={"http": binance.base_url}),
    )  # fmt: skip
    args = ["backfill", "--exchange", "binance", "--symbol", "btc-usdt", "--interval", "1h",
            "--since", "2024-01-01", "--until", "2024-02-11T16:00"]  # fmt: skip
    # The CLI runs its own event loop; in a thread, this one keeps serving the fake.
    result = await asyncio.to_thread(CliRunner().invoke, app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "backfilled 1000 BTC/USDT 1h candles of binance "
        "(2024-01-01T00:00:00.000Z .. 2024-02-11T16:00:00.000Z) in 1 requests"
    )
    unknown = await asyncio.to_thread(CliRunner().invoke, app, [*args[:4], "DOGE/USDT", *args[5:]])
    assert unknown.exit_code == 2
    assert unknown.stderr.strip() == "cryptodesk: error: binance does not list DOGE/USDT"
    with sqlite3.connect(tmp_path / ".cryptodesk" / "cryptodesk.db") as conn:
        assert conn.execute("SELECT count(*) FROM candles").fetchone() == (1000,)
    assert now_ms() > NOW  # the fake's hours are all in the past, so all closed
