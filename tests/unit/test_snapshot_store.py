"""``SqlSnapshotStore``: idempotent daily snapshots, exact decimals, per tenant.

``SnapshotStoreContract`` holds for every database; here it runs on SQLite
(migrated by Alembic as in production).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from decimal import Decimal as D
from pathlib import Path

import pytest

from cryptodesk.adapters.db import migrate
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.snapshot_store import SqlSnapshotStore, check_day
from cryptodesk.domain.errors import DomainError
from cryptodesk.portfolio.valuation import Snapshot

T0 = 1_717_200_000_000


def snap(
    day: str, account: str, asset: str, amount: str = "1.5", price: str | None = "100"
) -> Snapshot:
    p = None if price is None else D(price)
    mv = None if p is None else D(amount) * p
    return Snapshot(day, account, asset, D(amount), D("120.00000001"), p, mv, D("-3.25"),
                    None if mv is None else mv - D("120.00000001"))  # fmt: skip


class SnapshotStoreContract:
    async def test_round_trip_keeps_exact_decimals_and_nulls(self, store: SqlSnapshotStore) -> None:
        rows = [snap("2024-06-01", "bin", "BTC", "0.123456789012345678", "65432.1"),
                snap("2024-06-01", "bin", "XYZ", "3", None),
                snap("2024-06-01", "alpha", "ETH")]  # fmt: skip
        await store.save_day("acme", "2024-06-01", rows)
        got = await store.day("acme", "2024-06-01")
        assert got == sorted(rows, key=lambda r: (r.account, r.asset))
        assert got[1].market_value == D("0.123456789012345678") * D("65432.1")
        assert (got[2].price, got[2].market_value, got[2].unrealized) == (None, None, None)

    async def test_saving_a_day_again_replaces_it_whole(self, store: SqlSnapshotStore) -> None:
        await store.save_day("acme", "2024-06-01", [snap("2024-06-01", "bin", "BTC"),
                                                    snap("2024-06-01", "bin", "ETH")])  # fmt: skip
        await store.save_day("acme", "2024-06-02", [snap("2024-06-02", "bin", "BTC")])
        await store.save_day("other", "2024-06-01", [snap("2024-06-01", "bin", "BTC")])
        again = [snap("2024-06-01", "bin", "BTC", "2", "110"), snap("2024-06-01", "cold", "SOL")]
        await store.save_day("acme", "2024-06-01", again)
        await store.save_day("acme", "2024-06-01", again)  # a re-run changes nothing
        assert await store.day("acme", "2024-06-01") == again  # ETH gone, BTC updated
        assert len(await store.day("acme", "2024-06-02")) == 1
        assert len(await store.day("other", "2024-06-01")) == 1
        await store.save_day("acme", "2024-06-02", [])
        assert await store.day("acme", "2024-06-02") == []

    async def test_range_reads_by_day_then_position(self, store: SqlSnapshotStore) -> None:
        for day in ("2024-06-03", "2024-06-01", "2024-06-02"):
            await store.save_day("acme", day, [snap(day, "b", "X"), snap(day, "a", "Y")])
        rows = await store.between("acme", "2024-06-02", "2024-06-03")
        assert [(r.day, r.account) for r in rows] == [
            ("2024-06-02", "a"), ("2024-06-02", "b"), ("2024-06-03", "a"), ("2024-06-03", "b"),
        ]  # fmt: skip
        assert await store.latest_day("acme") == "2024-06-03"
        assert await store.latest_day("nobody") is None
        assert await store.between("nobody", "2024-01-01", "2024-12-31") == []

    async def test_bad_input_is_refused_before_writing(self, store: SqlSnapshotStore) -> None:
        with pytest.raises(DomainError, match="is not a date YYYY-MM-DD"):
            await store.save_day("acme", "2024-6-1", [])
        with pytest.raises(ValueError, match="every row must be of day 2024-06-01"):
            await store.save_day("acme", "2024-06-01", [snap("2024-06-02", "a", "X")])
        with pytest.raises(ValueError, match="repeat an"):
            await store.save_day("acme", "2024-06-01", [snap("2024-06-01", "a", "X")] * 2)
        with pytest.raises(DomainError, match="start '2024-02-30'"):
            await store.between("acme", "2024-02-30", "2024-03-01")
        assert await store.latest_day("acme") is None


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    migrate.upgrade(url)
    return url


class TestSqliteSnapshotStore(SnapshotStoreContract):
    @pytest.fixture
    async def store(self, db_url: str) -> AsyncIterator[SqlSnapshotStore]:
        engine = create_engine(db_url)
        yield SqlSnapshotStore(engine, clock=lambda: T0)
        await engine.dispose()


async def test_rows_carry_their_write_time(db_url: str, tmp_path: Path) -> None:
    now = [T0]
    engine = create_engine(db_url)
    try:
        store = SqlSnapshotStore(engine, clock=lambda: now[0])
        await store.save_day("acme", "2024-06-01", [snap("2024-06-01", "a", "X")])
        now[0] += 5
        await store.save_day("acme", "2024-06-01", [snap("2024-06-01", "a", "X")])
    finally:
        await engine.dispose()
    with sqlite3.connect(tmp_path / "s.db") as conn:
        assert conn.execute("SELECT created_at FROM portfolio_snapshots").fetchall() == [(T0 + 5,)]


async def test_migration_0005_goes_down_and_up(db_url: str, tmp_path: Path) -> None:
    await asyncio.to_thread(migrate.downgrade, db_url, "0004")
    with sqlite3.connect(tmp_path / "s.db") as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "portfolio_snapshots" not in names
    await asyncio.to_thread(migrate.upgrade, db_url)
    with sqlite3.connect(tmp_path / "s.db") as conn:
        (sql,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'portfolio_snapshots'"
        ).fetchone()
    assert "WITHOUT ROWID" in sql


def test_check_day() -> None:
    assert check_day("2024-02-29") == "2024-02-29"
    for bad in ("2023-02-29", "20240101", "2024-01-01T00:00", ""):
        with pytest.raises(DomainError):
            check_day(bad)
