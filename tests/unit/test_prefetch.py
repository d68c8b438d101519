"""Scheduled prefetch: each job's work, the per-job lock, run records, APScheduler wiring."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cryptodesk.adapters.cache.memory import MemoryCache
from cryptodesk.adapters.db import migrate
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.sql_store import SqlMarketStore
from cryptodesk.adapters.locks.memory import MemoryJobLock
from cryptodesk.domain import codec
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.jobs import JobRun
from cryptodesk.services import cache_keys
from cryptodesk.services.prefetch import PrefetchScheduler
from tests.unit._fetchers import HOUR, T0, FakeFetcher

H1 = Interval.parse("1h")


@dataclass
class Recorder:
    runs: list[JobRun] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def record(self, run: JobRun) -> None:
        self.runs.append(run)
        self.changed.set()

    async def wait_for(self, job: str, count: int) -> None:
        async with asyncio.timeout(20):
            while sum(r.job_id == job for r in self.runs) < count:
                self.changed.clear()
                await self.changed.wait()


@dataclass
class CountingLock(MemoryJobLock):
    extended: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    extended_event: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        MemoryJobLock.__init__(self)

    async def extend(self, name: str, token: str, *, ttl: float) -> bool:
        self.extended.append(name)
        self.extended_event.set()
        return await super().extend(name, token, ttl=ttl)

    async def release(self, name: str, token: str) -> bool:
        self.released.append(name)
        return await super().release(name, token)


class DownLock(MemoryJobLock):
    async def acquire(self, name: str, *, ttl: float) -> str | None:
        raise ConnectionError("redis is down")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlMarketStore]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'p.db'}"
    await asyncio.to_thread(migrate.upgrade, url)
    s = SqlMarketStore(create_engine(url))
    yield s
    await s.close()


def scheduler(
    fetcher: FakeFetcher,
    store: SqlMarketStore,
    cache: MemoryCache,
    recorder: Recorder,
    lock: MemoryJobLock | None = None,
    **kwargs: object,
) -> PrefetchScheduler:
    options: dict[str, object] = {
        "symbols": ["BTC/USDT", "ETH/USDT", "DOGE/USDT"],
        "intervals": [H1, Interval.parse("4h")],
        "lookback_candles": 50,
        "clock": lambda: fetcher.now,
        "owner": "test:1",
    }
    options.update(kwargs)
    return PrefetchScheduler(
        [fetcher],
        store,
        cache,
        recorder,
        lock or MemoryJobLock(),
        **options,  # type: ignore[arg-type]
    )


async def test_markets_job_caches_the_markets(store: SqlMarketStore) -> None:
    cache, recorder, fetcher = MemoryCache(), Recorder(), FakeFetcher()
    assert await scheduler(fetcher, store, cache, recorder).run_job("markets:fakex") == "ok"
    raw = await cache.get(cache_keys.markets("fakex"))
    assert raw is not None
    assert [m.symbol for m in codec.decode_markets(raw)] == ["BTC/USDT", "ETH/USDT"]
    (run,) = recorder.runs
    assert (run.job_id, run.outcome, run.owner, run.error) == (
        "markets:fakex",
        "ok",
        "test:1",
        None,
    )
    assert run.started_at == run.finished_at == fetcher.now
    assert run.next_run_at is None  # not scheduled: run by hand


async def test_tickers_job_caches_the_listed_symbols(store: SqlMarketStore) -> None:
    cache, recorder, fetcher = MemoryCache(), Recorder(), FakeFetcher(ticker_last=123.5)
    assert await scheduler(fetcher, store, cache, recorder).run_job("tickers:fakex") == "ok"
    # Markets were loaded first, so DOGE/USDT (not listed) was never asked for.
    assert [c.kind for c in fetcher.calls] == ["markets", "tickers"]
    raws = await cache.get_many([cache_keys.ticker("fakex", s) for s in ("BTC/USDT", "ETH/USDT")])
    assert [codec.decode_ticker(r).last for r in raws if r is not None] == [123.5, 123.5]
    assert await cache.get(cache_keys.ticker("fakex", "DOGE/USDT")) is None


async def test_candles_job_continues_every_series_from_its_newest_candle(
    store: SqlMarketStore,
) -> None:
    cache, recorder, fetcher = MemoryCache(), Recorder(), FakeFetcher(now=T0 + HOUR // 2)
    jobs = scheduler(fetcher, store, cache, recorder)
    assert await jobs.run_job("candles:fakex") == "ok"
    for symbol in ("BTC/USDT", "ETH/USDT"):
        stored = await store.get_candles("fakex", symbol, "1h", limit=1000)
        # A new series starts lookback_candles back; the open candle is left out.
        assert [c.open_time for c in stored] == list(range(T0 - 50 * HOUR, T0, HOUR))
    # 4h is not served by this exchange: never asked for.
    assert {c.interval for c in fetcher.ohlcv_calls()} == {"1h"}

    fetcher.now += 3 * HOUR
    fetcher.calls.clear()
    assert await jobs.run_job("candles:fakex") == "ok"
    assert [(c.symbol, c.since) for c in fetcher.ohlcv_calls()] == [
        ("BTC/USDT", T0),
        ("ETH/USDT", T0),
    ]
    stored = await store.get_candles("fakex", "BTC/USDT", "1h", limit=1000)
    assert stored[-1].open_time == T0 + 2 * HOUR
    assert len(stored) == 53


async def test_one_failing_series_fails_the_run_but_not_the_others(
    store: SqlMarketStore,
) -> None:
    cache, recorder = MemoryCache(), Recorder()
    fetcher = FakeFetcher(now=T0, fail_on_calls={1})
    assert await scheduler(fetcher, store, cache, recorder).run_job("candles:fakex") == "failed"
    (run,) = recorder.runs
    assert run.error is not None
    assert "1 series failed: BTC/USDT 1h: FetchFailed: HTTP 502" in run.error
    assert await store.get_candles("fakex", "BTC/USDT", "1h") == []
    assert len(await store.get_candles("fakex", "ETH/USDT", "1h")) == 50


async def test_a_job_held_by_another_scheduler_is_skipped(store: SqlMarketStore) -> None:
    cache, recorder, lock = MemoryCache(), Recorder(), MemoryJobLock()
    gated = FakeFetcher(gate=asyncio.Event())
    first = scheduler(gated, store, cache, recorder, lock, owner="a:1")
    second = scheduler(FakeFetcher(), store, cache, recorder, lock, owner="b:2")
    running = asyncio.create_task(first.run_job("markets:fakex"))
    await gated.entered.wait()
    assert await second.run_job("markets:fakex") == "skipped"
    # Other jobs are not held back by it.
    assert await second.run_job("tickers:fakex") == "ok"
    assert gated.gate is not None
    gated.gate.set()
    assert await running == "ok"
    assert [(r.job_id, r.owner, r.outcome) for r in recorder.runs] == [
        ("markets:fakex", "b:2", "skipped"),
        ("tickers:fakex", "b:2", "ok"),
        ("markets:fakex", "a:1", "ok"),
    ]
    # Released: the next run of either scheduler takes it.
    assert await second.run_job("markets:fakex") == "ok"


async def test_the_lock_is_renewed_while_running_and_released_after_a_failure(
    store: SqlMarketStore,
) -> None:
    cache, recorder, lock = MemoryCache(), Recorder(), CountingLock()
    fetcher = FakeFetcher(gate=asyncio.Event(), fail_on_calls={1}, now=T0)
    jobs = scheduler(fetcher, store, cache, recorder, lock, lock_ttl=0.03)
    running = asyncio.create_task(jobs.run_job("candles:fakex"))
    async with asyncio.timeout(10):
        await lock.extended_event.wait()
    assert fetcher.gate is not None
    fetcher.gate.set()
    assert await running == "failed"
    assert set(lock.extended) == {"candles:fakex"}
    assert lock.released == ["candles:fakex"]
    assert await lock.acquire("candles:fakex", ttl=1) is not None


async def test_an_unreachable_lock_fails_the_run_without_running_it(
    store: SqlMarketStore,
) -> None:
    cache, recorder, fetcher = MemoryCache(), Recorder(), FakeFetcher()
    jobs = scheduler(fetcher, store, cache, recorder, DownLock())
    assert await jobs.run_job("markets:fakex") == "failed"
    assert fetcher.calls == []
    assert recorder.runs[0].error == "cannot take the lock: redis is down"


async def test_unknown_jobs_and_bad_options_are_refused(store: SqlMarketStore) -> None:
    cache, recorder, fetcher = MemoryCache(), Recorder(), FakeFetcher()
    jobs = scheduler(fetcher, store, cache, recorder)
    with pytest.raises(ValueError, match="unknown job"):
        await jobs.run_job("candles:kraken")
    with pytest.raises(ValueError, match="tickers_every"):
        scheduler(fetcher, store, cache, recorder, tickers_every=0)


async def test_scheduled_jobs_coalesce_never_overlap_and_record_the_next_run(
    store: SqlMarketStore,
) -> None:
    cache, recorder, fetcher = MemoryCache(), Recorder(), FakeFetcher(now=T0)
    jobs = scheduler(
        fetcher, store, cache, recorder,
        tickers_every=0.05, markets_every=3600, candles_every=3300, jitter_fraction=0.1,
    )  # fmt: skip
    assert [(s.job_id, s.every, s.jitter) for s in jobs.specs] == [
        ("candles:fakex", 3300, 60),  # jitter is capped at a minute
        ("tickers:fakex", 0.05, pytest.approx(0.005)),
        ("markets:fakex", 3600, 60),
    ]
    scheduled_at = int(time.time() * 1000)
    jobs.start()
    try:
        assert jobs.scheduler is not None
        for job in jobs.scheduler.get_jobs():
            assert job.coalesce is True
            assert job.max_instances == 1
            assert job.misfire_grace_time >= 1
        await recorder.wait_for("tickers:fakex", 3)
        await recorder.wait_for("candles:fakex", 1)
        await recorder.wait_for("markets:fakex", 1)
    finally:
        await jobs.stop()
    by_job = {r.job_id: r for r in recorder.runs}
    assert {r.outcome for r in recorder.runs} == {"ok"}
    for run in by_job.values():
        assert run.next_run_at is not None
    # The next run is one interval after the first, give or take the jitter.
    markets = by_job["markets:fakex"]
    assert markets.next_run_at is not None
    assert 3_540_000 <= markets.next_run_at - scheduled_at <= 3_661_000
    assert await cache.get(cache_keys.ticker("fakex", "BTC/USDT")) is not None


async def test_stop_lets_a_running_job_finish(store: SqlMarketStore) -> None:
    cache, recorder = MemoryCache(), Recorder()
    fetcher = FakeFetcher(now=T0, gate=asyncio.Event())
    jobs = scheduler(fetcher, store, cache, recorder)
    stop = asyncio.Event()
    running = asyncio.create_task(jobs.run(stop))
    async with asyncio.timeout(10):
        await fetcher.entered.wait()
    stop.set()
    for _ in range(20):
        await asyncio.sleep(0)
    assert not running.done()  # waiting for the job in progress
    assert fetcher.gate is not None
    fetcher.gate.set()
    async with asyncio.timeout(10):
        await running
    assert recorder.runs
    assert {r.outcome for r in recorder.runs} == {"ok"}
