"""Prefetch across processes: job locks on Redis and PostgreSQL, job_runs on PostgreSQL.

Two schedulers with separate lock clients stand in for two processes: while
one runs a job, the other records the run as skipped.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptodesk.adapters.cache.memory import MemoryCache
from cryptodesk.adapters.db import migrate
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.jobs_store import JobRunStore
from cryptodesk.adapters.db.sql_store import SqlMarketStore
from cryptodesk.adapters.locks.base import JobLock
from cryptodesk.adapters.locks.postgres import PostgresJobLock
from cryptodesk.adapters.locks.redis import RedisJobLock
from cryptodesk.domain.interval import Interval
from cryptodesk.services.prefetch import PrefetchScheduler
from tests.unit._fetchers import T0, FakeFetcher


def make(
    fetcher: FakeFetcher, store: SqlMarketStore, runs: JobRunStore, lock: JobLock, owner: str
) -> PrefetchScheduler:
    return PrefetchScheduler(
        [fetcher], store, MemoryCache(), runs, lock, owner=owner,
        symbols=["BTC/USDT"], intervals=[Interval.parse("1h")], clock=lambda: T0,
    )  # fmt: skip


def prefix() -> str:
    return f"test:{uuid.uuid4().hex[:12]}:"


async def eventually_acquired(lock: JobLock, name: str) -> str:
    async with asyncio.timeout(10):
        while True:
            token = await lock.acquire(name, ttl=5)
            if token is not None:
                return token
            await asyncio.sleep(0.01)


# ---- Redis ------------------------------------------------------------------------


@pytest.fixture
async def redis_locks(redis_url: str) -> AsyncIterator[tuple[RedisJobLock, RedisJobLock, Redis]]:
    p = prefix()
    a = RedisJobLock.from_url(redis_url, key_prefix=p)
    b = RedisJobLock.from_url(redis_url, key_prefix=p)
    raw = Redis.from_url(redis_url)
    yield a, b, raw
    await a.close()
    await b.close()
    await raw.aclose()


async def test_redis_lock_is_exclusive_and_released_only_by_its_token(
    redis_locks: tuple[RedisJobLock, RedisJobLock, Redis],
) -> None:
    a, b, _ = redis_locks
    token = await a.acquire("tickers:x", ttl=5)
    assert token is not None
    assert await b.acquire("tickers:x", ttl=5) is None
    assert await b.release("tickers:x", "not-the-token") is False
    assert await b.extend("tickers:x", "not-the-token", ttl=5) is False
    assert await b.acquire("tickers:x", ttl=5) is None
    assert await a.release("tickers:x", token) is True
    assert await a.release("tickers:x", token) is False  # already gone
    assert await b.acquire("tickers:x", ttl=5) is not None


async def test_redis_lease_expires_and_a_stale_holder_cannot_touch_the_new_one(
    redis_locks: tuple[RedisJobLock, RedisJobLock, Redis],
) -> None:
    a, b, raw = redis_locks
    old = await a.acquire("candles:x", ttl=0.05)
    assert old is not None
    new = await eventually_acquired(b, "candles:x")  # the lease ran out
    assert await a.extend("candles:x", old, ttl=5) is False
    assert await a.release("candles:x", old) is False
    assert await b.extend("candles:x", new, ttl=30) is True
    keys = await raw.keys("test:*lock:candles:x")
    assert len(keys) == 1
    assert 5_000 < await raw.pttl(keys[0]) <= 30_000


async def test_two_schedulers_on_redis_one_runs_the_other_records_skipped(
    redis_locks: tuple[RedisJobLock, RedisJobLock, Redis], tmp_path: Path
) -> None:
    lock_a, lock_b, _ = redis_locks
    url = f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
    await asyncio.to_thread(migrate.upgrade, url)
    store = SqlMarketStore(create_engine(url))
    runs = JobRunStore(store.engine)
    gated = FakeFetcher(now=T0, gate=asyncio.Event())
    first = make(gated, store, runs, lock_a, "a:1")
    second = make(FakeFetcher(now=T0), store, runs, lock_b, "b:2")
    try:
        running = asyncio.create_task(first.run_job("candles:fakex"))
        async with asyncio.timeout(10):
            await gated.entered.wait()
        assert await second.run_job("candles:fakex") == "skipped"
        assert gated.gate is not None
        gated.gate.set()
        assert await running == "ok"
        history = await runs.runs("candles:fakex")
        assert [(r.owner, r.outcome) for r in history] == [("a:1", "ok"), ("b:2", "skipped")]
        (status,) = await runs.statuses()
        assert (status.outcome, status.owner) == ("ok", "a:1")
        # The lock went back: the other scheduler runs the next one.
        assert await second.run_job("candles:fakex") == "ok"
    finally:
        await store.close()


# ---- PostgreSQL -------------------------------------------------------------------


def pg_tables(url: str) -> set[str]:
    async def read() -> set[str]:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        finally:
            await engine.dispose()

    return asyncio.run(read())


async def test_job_runs_migration_up_and_down_on_postgres(postgres_url: str) -> None:
    await asyncio.to_thread(migrate.upgrade, postgres_url)
    assert await asyncio.to_thread(migrate.current, postgres_url) == migrate.head()
    assert "job_runs" in await asyncio.to_thread(pg_tables, postgres_url)
    await asyncio.to_thread(migrate.downgrade, postgres_url, "0001")
    tables = await asyncio.to_thread(pg_tables, postgres_url)
    assert "job_runs" not in tables
    assert {"trades", "candles"} <= tables
    await asyncio.to_thread(migrate.upgrade, postgres_url)
    assert "job_runs" in await asyncio.to_thread(pg_tables, postgres_url)


@pytest.fixture
async def pg_engine_pair(postgres_url: str) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    await asyncio.to_thread(migrate.upgrade, postgres_url)
    one, two = create_engine(postgres_url), create_engine(postgres_url)
    yield one, two
    await one.dispose()
    await two.dispose()


async def test_postgres_advisory_lock_is_exclusive_and_dies_with_its_holder(
    pg_engine_pair: tuple[AsyncEngine, AsyncEngine],
) -> None:
    one, two = pg_engine_pair
    a, b = PostgresJobLock(one), PostgresJobLock(two)
    token = await a.acquire("markets:x", ttl=5)
    assert token is not None
    assert await a.acquire("markets:x", ttl=5) is None  # not re-entrant either
    assert await b.acquire("markets:x", ttl=5) is None
    assert await a.extend("markets:x", token, ttl=5) is True
    assert await b.release("markets:x", "nope") is False
    assert await a.release("markets:x", token) is True
    again = await b.acquire("markets:x", ttl=5)
    assert again is not None
    # A holder that goes away (its session ends) frees the lock at once.
    await b.close()
    assert await a.acquire("markets:x", ttl=5) is not None
    await a.close()


async def test_two_schedulers_on_postgres_record_their_runs_there(
    pg_engine_pair: tuple[AsyncEngine, AsyncEngine], postgres_url: str
) -> None:
    one, two = pg_engine_pair
    store = SqlMarketStore(one)
    runs = JobRunStore(one, keep=50)
    gated = FakeFetcher(now=T0, gate=asyncio.Event())
    lock_a, lock_b = PostgresJobLock(one), PostgresJobLock(two)
    first = make(gated, store, runs, lock_a, "a:1")
    second = make(FakeFetcher(now=T0), store, runs, lock_b, "b:2")
    running = asyncio.create_task(first.run_job("markets:fakex"))
    async with asyncio.timeout(10):
        await gated.entered.wait()
    assert await second.run_job("markets:fakex") == "skipped"
    assert gated.gate is not None
    gated.gate.set()
    assert await running == "ok"
    assert await second.run_job("candles:fakex") == "ok"
    statuses = {s.job_id: s for s in await runs.statuses(["tickers:fakex"])}
    assert statuses["markets:fakex"].outcome == "ok"
    assert statuses["markets:fakex"].last_ok_at == T0
    assert statuses["candles:fakex"].owner == "b:2"
    assert statuses["tickers:fakex"].outcome is None
    assert len(await store.get_candles("fakex", "BTC/USDT", "1h", limit=1000)) == 500
    await lock_a.close()
    await lock_b.close()
