"""The ledger on PostgreSQL: the same contract as on SQLite, concurrent appends
from separate processes' worth of engines, and the migration."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from sqlalchemy import text

from cryptodesk.adapters.db import migrate
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.ledger_store import SqlLedgerStore
from cryptodesk.adapters.secrets import SecretBox
from cryptodesk.services.ledger_service import ImportResult, LedgerService
from tests.contracts.ledger_store_contract import KEY, NOW, LedgerStoreContract, buy, chain_of


class TestPostgresLedger(LedgerStoreContract):
    @pytest.fixture
    async def ledger(self, postgres_url: str) -> AsyncIterator[LedgerService]:
        await asyncio.to_thread(migrate.upgrade, postgres_url)
        engine = create_engine(postgres_url)
        yield LedgerService(SqlLedgerStore(engine), SecretBox(KEY), clock=lambda: NOW)
        await engine.dispose()

    @pytest.fixture
    async def sql(self, postgres_url: str) -> AsyncIterator[Callable[[str], Awaitable[None]]]:
        engine = create_engine(postgres_url)

        async def run(statement: str) -> None:
            async with engine.begin() as conn:
                await conn.execute(text(statement))

        yield run
        await engine.dispose()


async def test_concurrent_imports_queue_on_the_head_row(postgres_url: str) -> None:
    # Two engines stand for two processes; each also runs imports side by side.
    await asyncio.to_thread(migrate.upgrade, postgres_url)
    engines = [create_engine(postgres_url), create_engine(postgres_url)]
    try:
        services = [LedgerService(e, None) for e in engines]
        batches = [[buy(f"{w}-{i}", account=f"acct{w}") for i in range(500)] for w in range(6)]
        results = await asyncio.gather(
            *(services[w % 2].import_entries("acme", batch) for w, batch in enumerate(batches)),
            services[0].import_entries("beta", chain_of(200)),
        )
        assert [r.added for r in results] == [500] * 6 + [200]
        report = await services[1].verify("acme")
        assert (report.ok, report.entries) == (True, 3000)
        stored = await services[0].stored_entries("acme")
        assert [s.seq for s in stored] == list(range(1, 3001))
        # Each import is one run of consecutive seqs: none interleaved with another.
        owners = [s.entry.id.split("-")[0] for s in stored]
        runs = [o for i, o in enumerate(owners) if i == 0 or owners[i - 1] != o]
        assert sorted(runs) == ["e0", "e1", "e2", "e3", "e4", "e5"]
        assert (await services[0].verify("beta")).entries == 200
    finally:
        for engine in engines:
            await engine.dispose()


async def test_the_same_import_racing_itself_lands_once(postgres_url: str) -> None:
    await asyncio.to_thread(migrate.upgrade, postgres_url)
    engines = [create_engine(postgres_url) for _ in range(3)]
    try:
        entries = chain_of(1_000)
        results = await asyncio.gather(
            *(LedgerService(e, None).import_entries("acme", entries) for e in engines)
        )
        assert sorted(results, key=lambda r: r.added) == [
            ImportResult(0, 1_000), ImportResult(0, 1_000), ImportResult(1_000, 0),
        ]  # fmt: skip
        report = await LedgerService(engines[0], None).verify("acme")
        assert (report.ok, report.entries) == (True, 1_000)
    finally:
        for engine in engines:
            await engine.dispose()


async def test_text_keys_sort_by_code_point(postgres_url: str) -> None:
    await asyncio.to_thread(migrate.upgrade, postgres_url)
    engine = create_engine(postgres_url)
    try:
        svc = LedgerService(engine, None)
        await svc.import_entries("acme", [buy(a, account=a) for a in ("b", "B", "a", "_")])
        assert [a.name for a in await svc.accounts("acme")] == ["B", "_", "a", "b"]
    finally:
        await engine.dispose()


async def test_portfolio_tables_migrate_down_and_up(postgres_url: str) -> None:
    await asyncio.to_thread(migrate.upgrade, postgres_url)
    await asyncio.to_thread(migrate.downgrade, postgres_url, "0003")
    assert await asyncio.to_thread(migrate.current, postgres_url) == "0003"
    await asyncio.to_thread(migrate.upgrade, postgres_url)
    assert await asyncio.to_thread(migrate.current, postgres_url) == migrate.head()
