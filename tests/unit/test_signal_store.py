"""``SqlSignalStore`` on SQLite: the contract, written inline and through aiosqlite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptodesk.adapters.db import migrate
from cryptodesk.adapters.db.engine import StorageError, create_engine
from cryptodesk.adapters.db.signal_store import SqlSignalStore
from tests.contracts.signal_store_contract import BTC, T0, SignalStoreContract, sig


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    await asyncio.to_thread(migrate.upgrade, url)
    engine = create_engine(url)
    yield engine
    await engine.dispose()


class TestSqliteSignalStore(SignalStoreContract):
    @pytest.fixture
    async def signals(self, engine: AsyncEngine) -> AsyncIterator[SqlSignalStore]:
        store = SqlSignalStore(engine)
        yield store
        await store.close()


class TestSqliteSignalStoreThroughDriverThread(SignalStoreContract):
    """Writes through aiosqlite, as on PostgreSQL."""

    @pytest.fixture
    async def signals(self, engine: AsyncEngine) -> AsyncIterator[SqlSignalStore]:
        store = SqlSignalStore(engine, inline_sqlite=False)
        yield store
        await store.close()


@pytest.mark.parametrize("inline", [True, False])
async def test_a_failed_write_is_a_storage_error_and_leaves_nothing(
    engine: AsyncEngine, inline: bool
) -> None:
    store = SqlSignalStore(engine, inline_sqlite=inline)
    try:
        await store.commit(BTC, T0, after=None, fired=[])
        bad = sig("a", T0 + 1)
        object.__setattr__(bad, "kind", None)  # NOT NULL: the database refuses it
        with pytest.raises(StorageError):
            await store.commit(BTC, T0 + 1, after=T0, fired=[sig("b", T0 + 1), bad])
        assert await store.progress(BTC) == T0  # rolled back with the signals
        assert await store.count() == 0
    finally:
        await store.close()
