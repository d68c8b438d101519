"""The job_runs table: migration 0002 on SQLite and the JobRunStore over it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine as create_sync_engine

from cryptodesk.adapters.db import migrate
from cryptodesk.adapters.db.engine import StorageError, create_engine
from cryptodesk.adapters.db.jobs_store import JobRunStore
from cryptodesk.adapters.db.models import metadata
from cryptodesk.domain.jobs import JobRun, JobStatus
from cryptodesk.services.jobs import configured_job_ids, list_jobs, split_job_id
from cryptodesk.services.market_queries import Unavailable


def url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


def test_migration_up_down_up_on_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    migrate.upgrade(url(db))
    assert migrate.current(url(db)) == migrate.head()
    assert {"trades", "candles", "job_runs"} <= tables(db)
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO trades VALUES ('sim', 'BTC/USDT', '1', 1700000000000, 1, 1, 'buy')"
        )
    migrate.downgrade(url(db), "0001")
    assert migrate.current(url(db)) == "0001"
    assert "job_runs" not in tables(db)
    with sqlite3.connect(db) as conn:  # the market data was left alone
        assert conn.execute("SELECT count(*) FROM trades").fetchone() == (1,)
    migrate.upgrade(url(db))
    assert "job_runs" in tables(db)


def test_migration_matches_the_table_definition(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    migrate.upgrade(url(db))
    engine = create_sync_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, metadata) == []
    finally:
        engine.dispose()


@pytest.fixture
async def runs(tmp_path: Path) -> AsyncIterator[JobRunStore]:
    await asyncio.to_thread(migrate.upgrade, url(tmp_path / "j.db"))
    engine = create_engine(url(tmp_path / "j.db"))
    yield JobRunStore(engine, keep=3)
    await engine.dispose()


def run(job: str, t: int, outcome: str = "ok", error: str | None = None) -> JobRun:
    return JobRun(job, "host:1", t, t + 5, outcome, error, t + 100)  # type: ignore[arg-type]


async def test_statuses_show_the_newest_run_and_the_last_success(runs: JobRunStore) -> None:
    await runs.record(run("tickers:binance", 1000))
    await runs.record(run("tickers:binance", 2000, "failed", "HTTP 502"))
    await runs.record(run("candles:binance", 1500, "skipped"))
    found = await runs.statuses(["markets:binance", "tickers:binance"])
    assert found == [
        JobStatus("candles:binance", 1500, 1505, "skipped", None, 1600, None, "host:1"),
        JobStatus("markets:binance"),
        JobStatus("tickers:binance", 2000, 2005, "failed", "HTTP 502", 2100, 1005, "host:1"),
    ]


async def test_each_job_keeps_only_its_newest_runs(runs: JobRunStore) -> None:
    for t in range(10):
        await runs.record(run("tickers:x", t))
    await runs.record(run("markets:x", 99))
    assert [r.started_at for r in await runs.runs("tickers:x")] == [9, 8, 7]
    assert [r.started_at for r in await runs.runs("markets:x")] == [99]


async def test_long_errors_are_cut(runs: JobRunStore) -> None:
    await runs.record(run("tickers:x", 1, "failed", "x" * 5000))
    (stored,) = await runs.runs("tickers:x")
    assert stored.error == "x" * 1000


def test_a_run_needs_a_known_outcome_and_a_job_id() -> None:
    with pytest.raises(ValueError, match="outcome"):
        JobRun("a:b", "o", 1, 2, "maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="job id"):
        JobRun("", "o", 1, 2, "ok")


async def test_list_jobs_names_configured_jobs_and_maps_outages(
    runs: JobRunStore, tmp_path: Path
) -> None:
    assert configured_job_ids(["sim", "binance"]) == [
        "candles:binance",
        "tickers:binance",
        "markets:binance",
    ]
    assert split_job_id("candles:binance") == ("candles", "binance")
    with pytest.raises(ValueError, match="unknown job"):
        split_job_id("nope:binance")
    found = await list_jobs(runs, ["sim", "kraken"])
    assert [s.job_id for s in found] == ["candles:kraken", "markets:kraken", "tickers:kraken"]
    assert all(s.outcome is None for s in found)

    # A database without the table (never migrated) is a 503, not a crash.
    engine = create_engine(url(tmp_path / "empty.db"))
    try:
        with pytest.raises(StorageError):
            await JobRunStore(engine).statuses()
        with pytest.raises(Unavailable, match="database is unavailable"):
            await list_jobs(JobRunStore(engine), ["kraken"])
    finally:
        await engine.dispose()
