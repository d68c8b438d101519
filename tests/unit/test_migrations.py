"""Alembic migrations of the market-data store, run the way the CLI and runtime run them."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine as create_sync_engine

from cryptodesk.adapters.db import migrate
from cryptodesk.adapters.db.engine import StorageError
from cryptodesk.adapters.db.models import metadata


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "cryptodesk.db"


def url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def schema(path: Path) -> dict[str, set[str]]:
    """Tables and indexes by type, read with the stdlib driver."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
        ).fetchall()
    out: dict[str, set[str]] = {"table": set(), "index": set()}
    for kind, name in rows:
        out[kind].add(name)
    return out


def test_upgrade_creates_tables_and_indexes(db: Path) -> None:
    migrate.upgrade(url(db))
    found = schema(db)
    assert found["table"] == {
        "alembic_version", "trades", "candles", "job_runs",
        "signals", "signal_progress", "signal_rules",
        "accounts", "account_balances", "ledger_entries", "ledger_heads", "portfolio_snapshots",
        "tenants", "users", "refresh_tokens", "api_keys", "audit_log", "audit_head", "order_log",
    }  # fmt: skip
    assert found["index"] == {
        "ix_trades_exchange_ts_trade_id_symbol",
        "ix_trades_exchange_symbol_ts_trade_id",
        "ix_job_runs_job_id_id",
        "ix_signals_open_time",
        "ix_ledger_entries_tenant_id_ts",
        "ix_ledger_entries_tenant_id_reverses",
        "ix_users_tenant_id",
        "ix_refresh_tokens_user_id",
        "ix_refresh_tokens_family_id",
        "ix_api_keys_tenant_id",
        "ix_audit_log_tenant_id_seq",
    }


def test_current_reports_head(db: Path) -> None:
    assert migrate.current(url(db)) is None
    assert not db.exists()  # asking does not create the database
    migrate.upgrade(url(db))
    assert migrate.current(url(db)) == migrate.head() == "0007"


def test_upgrade_twice_is_a_no_op(db: Path) -> None:
    migrate.upgrade(url(db))
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO trades VALUES ('sim', 'BTC/USDT', '1', 1700000000000, 1.5, 2.0, 'buy')"
        )
    migrate.upgrade(url(db))
    assert migrate.current(url(db)) == migrate.head()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM trades").fetchone() == (1,)


def test_downgrade_to_base_and_up_again(db: Path) -> None:
    migrate.upgrade(url(db))
    migrate.downgrade(url(db), "base")
    assert migrate.current(url(db)) is None
    assert schema(db) == {"table": {"alembic_version"}, "index": set()}
    migrate.upgrade(url(db))
    assert migrate.current(url(db)) == migrate.head()
    assert {"trades", "candles"} <= schema(db)["table"]


def test_migration_matches_the_models(db: Path) -> None:
    # The migration is a hand-written snapshot; autogenerate finding nothing to
    # do proves it creates exactly what models.py declares.
    migrate.upgrade(url(db))
    engine = create_sync_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, metadata) == []
    finally:
        engine.dispose()


def test_tables_are_clustered_on_their_keys(db: Path) -> None:
    migrate.upgrade(url(db))
    with sqlite3.connect(db) as conn:
        for table in ("trades", "candles", "signals", "signal_progress", "order_log"):
            (sql,) = conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).fetchone()
            assert "WITHOUT ROWID" in sql


async def test_upgrade_works_beside_a_running_loop(db: Path) -> None:
    # The runtime migrates via to_thread while its loop runs; a direct call from
    # the loop's own thread must work too rather than fail on asyncio.run.
    await asyncio.to_thread(migrate.upgrade, url(db))
    migrate.downgrade(url(db), "base")
    assert migrate.current(url(db)) is None
    migrate.upgrade(url(db))
    assert migrate.current(url(db)) == migrate.head()


def test_unknown_revision_is_a_storage_error(db: Path) -> None:
    with pytest.raises(StorageError, match="cannot upgrade to nope"):
        migrate.upgrade(url(db), "nope")


def test_migrations_ship_inside_the_package() -> None:
    # hatchling packages src/cryptodesk whole, so these files reach the wheel.
    package = Path(migrate.__file__).parent
    assert package / "migrations" == migrate.MIGRATIONS
    assert (migrate.MIGRATIONS / "env.py").is_file()
    assert (migrate.MIGRATIONS / "script.py.mako").is_file()
    assert list((migrate.MIGRATIONS / "versions").glob("0001_*.py"))
