"""``SqlSignalStore`` on PostgreSQL: the same contract as on SQLite, and the migration."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from cryptodesk.adapters.db import migrate
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.signal_store import SqlSignalStore
from tests.contracts.signal_store_contract import BTC, T0, SignalStoreContract, sig


class TestPostgresSignalStore(SignalStoreContract):
    @pytest.fixture
    async def signals(self, postgres_url: str) -> AsyncIterator[SqlSignalStore]:
        await asyncio.to_thread(migrate.upgrade, postgres_url)
        engine = create_engine(postgres_url)
        yield SqlSignalStore(engine)
        await engine.dispose()


async def test_concurrent_commits_of_one_candle_store_it_once(postgres_url: str) -> None:
    # Two workers racing on the same candle: exactly one compare-and-set wins.
    await asyncio.to_thread(migrate.upgrade, postgres_url)
    engine = create_engine(postgres_url)
    try:
        store = SqlSignalStore(engine)
        await store.commit(BTC, T0, after=None, fired=[])
        results = await asyncio.gather(
            *(store.commit(BTC, T0 + 1, after=T0, fired=[sig(f"r{i}", T0 + 1)]) for i in range(8))
        )
        assert sorted(results) == [False] * 7 + [True]
        assert await store.count() == 1
        assert await store.progress(BTC) == T0 + 1
    finally:
        await engine.dispose()


async def test_signal_tables_migrate_down_and_up(postgres_url: str) -> None:
    await asyncio.to_thread(migrate.upgrade, postgres_url)
    await asyncio.to_thread(migrate.downgrade, postgres_url, "0002")
    assert await asyncio.to_thread(migrate.current, postgres_url) == "0002"
    await asyncio.to_thread(migrate.upgrade, postgres_url)
    assert await asyncio.to_thread(migrate.current, postgres_url) == migrate.head()
