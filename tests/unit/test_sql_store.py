"""SqlMarketStore on SQLite files: the store contract plus what only SQLite has."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cryptodesk.adapters.db import migrate, partitions
from cryptodesk.adapters.db.engine import StorageError, create_engine
from cryptodesk.adapters.db.sql_store import SqlMarketStore
from tests.contracts.store_contract import T0, StoreContract, candle, trade


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def migrated_store(path: Path, **kwargs: Any) -> SqlMarketStore:
    url = sqlite_url(path)
    await asyncio.to_thread(migrate.upgrade, url)
    return SqlMarketStore(create_engine(url), **kwargs)


class TestSqliteStore(StoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SqlMarketStore]:
        store = await migrated_store(tmp_path / "store.db")
        yield store
        await store.close()


class TestSqliteStoreSmallChunks(StoreContract):
    """The same contract with tiny statements, so every batch spans several."""

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SqlMarketStore]:
        store = await migrated_store(tmp_path / "store.db", chunk_rows=3)
        yield store
        await store.close()


class TestSqliteStoreThroughDriverThread(StoreContract):
    """Writes through aiosqlite as on PostgreSQL (no inline connection), small chunks."""

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SqlMarketStore]:
        store = await migrated_store(tmp_path / "store.db", chunk_rows=3, inline_sqlite=False)
        yield store
        await store.close()


async def test_large_batches_span_statements(tmp_path: Path) -> None:
    store = await migrated_store(tmp_path / "big.db", chunk_rows=512)
    try:
        batch = [trade(str(i), T0 + i) for i in range(2000)]
        assert await store.insert_trades(batch) == batch
        mixed = [trade(str(i), T0 + i) for i in range(1990, 3013)]
        assert await store.insert_trades(mixed) == mixed[10:]
        assert await store.count_trades() == 3013
    finally:
        await store.close()


async def test_data_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "durable.db"
    store = await migrated_store(path)
    await store.insert_trades([trade("1"), trade("2", T0 + 1)])
    await store.upsert_candles([candle(T0)])
    await store.close()
    reopened = SqlMarketStore(create_engine(sqlite_url(path)))
    try:
        assert await reopened.count_trades() == 2
        assert await reopened.last_candle("sim", "BTC/USDT", "1m") == candle(T0)
        assert await reopened.insert_trades([trade("2", T0 + 1)]) == []
    finally:
        await reopened.close()


async def test_two_engines_write_one_file(tmp_path: Path) -> None:
    # Two processes (say, ingest and a backfill CLI) share the embedded file;
    # busy_timeout makes the second writer wait instead of failing.
    path = tmp_path / "shared.db"
    one = await migrated_store(path)
    two = SqlMarketStore(create_engine(sqlite_url(path)))
    try:
        batches = [[trade(f"{w}-{i}-{j}") for j in range(200)] for w in range(2) for i in range(5)]
        writers = [one if n % 2 else two for n in range(len(batches))]
        results = await asyncio.gather(
            *(w.insert_trades(b) for w, b in zip(writers, batches, strict=True))
        )
        assert sum(len(r) for r in results) == 2000
        assert await one.count_trades() == 2000
    finally:
        await one.close()
        await two.close()


async def test_sqlite_pragmas_are_set_on_every_connection(tmp_path: Path) -> None:
    store = await migrated_store(tmp_path / "p.db")
    try:
        async with store.engine.connect() as conn:
            got = {
                name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            }
        assert got == {
            "journal_mode": "wal",
            "synchronous": 1,
            "busy_timeout": 5000,
            "foreign_keys": 1,
        }
    finally:
        await store.close()


async def test_engine_creates_the_data_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c.db"
    store = SqlMarketStore(create_engine(sqlite_url(path)))
    assert path.parent.is_dir()
    await store.close()


def test_data_dir_under_a_file_is_a_storage_error(tmp_path: Path) -> None:
    # Tests run as root, where chmod cannot make a directory unwritable; a path
    # through a regular file fails the same way for every user.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    url = sqlite_url(blocker / "data" / "cryptodesk.db")
    with pytest.raises(StorageError, match="cannot create data directory") as info:
        create_engine(url)
    assert "\n" not in str(info.value)
    assert str(blocker) in str(info.value)
    with pytest.raises(StorageError, match="cannot create data directory"):
        migrate.upgrade(url)


def test_database_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="is a directory"):
        create_engine(sqlite_url(tmp_path))


def test_invalid_url_is_a_storage_error() -> None:
    with pytest.raises(StorageError, match="invalid database URL"):
        create_engine("not a url")


@pytest.fixture
def corrupt_db(tmp_path: Path) -> Path:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not a sqlite file, just garbage bytes " * 200)
    return path


async def test_corrupt_file_fails_ping_with_one_line(corrupt_db: Path) -> None:
    store = SqlMarketStore(create_engine(sqlite_url(corrupt_db)))
    try:
        with pytest.raises(StorageError, match="not a usable SQLite database") as info:
            await store.ping()
        assert "\n" not in str(info.value)
        assert str(corrupt_db) in str(info.value)
        with pytest.raises(StorageError):
            await store.insert_trades([trade("1")])
    finally:
        await store.close()


def test_corrupt_file_fails_migrations(corrupt_db: Path) -> None:
    with pytest.raises(StorageError, match="not a usable SQLite database"):
        migrate.upgrade(sqlite_url(corrupt_db))
    with pytest.raises(StorageError, match="not a usable SQLite database"):
        migrate.current(sqlite_url(corrupt_db))


async def test_unmigrated_database_fails_ping(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    store = SqlMarketStore(create_engine(sqlite_url(path)))
    try:
        with pytest.raises(StorageError, match="cryptodesk db upgrade"):
            await store.ping()
    finally:
        await store.close()


def test_bad_options_are_rejected(tmp_path: Path) -> None:
    engine = create_engine(sqlite_url(tmp_path / "x.db"))
    with pytest.raises(ValueError, match="chunk_rows"):
        SqlMarketStore(engine, chunk_rows=0)


async def test_iter_trades_rejects_a_zero_batch(tmp_path: Path) -> None:
    store = await migrated_store(tmp_path / "z.db")
    try:
        with pytest.raises(ValueError, match="batch_size"):
            _ = [b async for b in store.iter_trades("sim", start=0, batch_size=0)]
    finally:
        await store.close()


async def test_inline_writes_fail_cleanly_and_recover(tmp_path: Path) -> None:
    """A failed inline write rolls back: the connection is usable once the cause is fixed."""
    path = tmp_path / "later.db"
    url = sqlite_url(path)
    store = SqlMarketStore(create_engine(url))
    try:
        with pytest.raises(StorageError):
            await store.insert_trades([trade("1", T0)])
        with pytest.raises(StorageError):
            await store.upsert_candles([candle(T0)])
        await asyncio.to_thread(migrate.upgrade, url)
        assert await store.insert_trades([trade("1", T0)]) == [trade("1", T0)]
        await store.upsert_candles([candle(T0)])
        assert await store.count_candles() == 1
    finally:
        await store.close()


# ---- partitions on demand (PostgreSQL only; the server-side effect is in tests/integration)


class EnsureCalls:
    """Stands in for ``ensure_partitions``: records the months asked for, may fail."""

    def __init__(self) -> None:
        self.months: list[str] = []
        self.fail = False

    async def __call__(self, engine: object, **kwargs: int) -> list[str]:
        at = datetime.fromtimestamp(kwargs["around_ms"] / 1000, tz=UTC)
        assert at.day == 1
        assert kwargs["months_ahead"] == 0
        self.months.append(f"{at.year:04d}-{at.month:02d}")
        if self.fail:
            raise RuntimeError("lock timeout")
        return []


@pytest.fixture
def ensure_calls(monkeypatch: pytest.MonkeyPatch) -> EnsureCalls:
    calls = EnsureCalls()
    monkeypatch.setattr(partitions, "ensure_partitions", calls)
    return calls


async def test_months_are_prepared_once_and_failures_retried_later(
    ensure_calls: EnsureCalls,
) -> None:
    engine = create_engine("postgresql+asyncpg://u@127.0.0.1:1/db")  # never connects
    now = [0.0]
    on_demand = partitions.PartitionsOnDemand(engine, retry_after=60, clock=lambda: now[0])
    try:
        mar, apr, jun = (partitions.month_start(2019, m) for m in (3, 4, 6))
        await on_demand.prepare([mar + 5, mar])
        await on_demand.prepare([mar + 10])
        assert ensure_calls.months == ["2019-03"]
        # Only the months present, not those between (2019-05 has no row).
        await on_demand.prepare([jun, apr - 1, apr, mar])
        assert ensure_calls.months == ["2019-03", "2019-04", "2019-06"]
        await on_demand.prepare([])

        ensure_calls.fail = True
        await on_demand.prepare([partitions.month_start(2019, 8)])  # logged, not raised
        await on_demand.prepare([partitions.month_start(2019, 8)])
        assert ensure_calls.months[-1:] == ["2019-08"]
        assert len(ensure_calls.months) == 4  # not again before retry_after
        ensure_calls.fail = False
        now[0] = 61.0
        await on_demand.prepare([partitions.month_start(2019, 8)])
        await on_demand.prepare([partitions.month_start(2019, 8)])
        assert ensure_calls.months[-2:] == ["2019-08", "2019-08"]
        assert len(ensure_calls.months) == 5
    finally:
        await engine.dispose()


async def test_sqlite_never_asks_for_partitions(tmp_path: Path, ensure_calls: EnsureCalls) -> None:
    for inline in (True, False):
        store = await migrated_store(tmp_path / f"p{inline}.db", inline_sqlite=inline)
        try:
            await store.insert_trades([trade("1", partitions.month_start(2019, 3))])
            await store.upsert_candles([candle(partitions.month_start(2019, 3))])
        finally:
            await store.close()
    assert ensure_calls.months == []


def test_month_index_is_the_utc_month() -> None:
    boundary = partitions.month_start(2024, 1)
    assert partitions.month_index(boundary - 1) == 2023 * 12 + 11
    assert partitions.month_index(boundary) == 2024 * 12
