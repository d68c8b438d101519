"""``LedgerService`` on a SQLite file: the contract, written inline and through
aiosqlite, plus what only SQLite shows."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptodesk.adapters.db import migrate
from cryptodesk.adapters.db.engine import StorageError, create_engine
from cryptodesk.adapters.db.ledger_store import SqlLedgerStore
from cryptodesk.adapters.secrets import SecretBox
from cryptodesk.domain.errors import DomainError
from cryptodesk.portfolio.accounts import AccountSpec
from cryptodesk.services.ledger_service import ImportResult, LedgerService
from tests.contracts.ledger_store_contract import KEY, NOW, LedgerStoreContract, buy, chain_of


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
async def engine(db: Path) -> AsyncIterator[AsyncEngine]:
    url = f"sqlite+aiosqlite:///{db}"
    await asyncio.to_thread(migrate.upgrade, url)
    engine = create_engine(url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sql(db: Path) -> Callable[[str], Awaitable[None]]:
    async def run(statement: str) -> None:
        with sqlite3.connect(db) as con:
            con.execute(statement)

    return run


def service(engine: AsyncEngine, *, inline: bool) -> LedgerService:
    store = SqlLedgerStore(engine, inline_sqlite=inline)
    return LedgerService(store, SecretBox(KEY), clock=lambda: NOW)


class TestSqliteLedger(LedgerStoreContract):
    @pytest.fixture
    async def ledger(self, engine: AsyncEngine) -> AsyncIterator[LedgerService]:
        svc = service(engine, inline=True)
        yield svc
        await svc.close()


class TestSqliteLedgerThroughDriverThread(LedgerStoreContract):
    """Writes through aiosqlite, as on PostgreSQL."""

    @pytest.fixture
    async def ledger(self, engine: AsyncEngine) -> AsyncIterator[LedgerService]:
        svc = service(engine, inline=False)
        yield svc
        await svc.close()


async def test_service_takes_an_engine(engine: AsyncEngine) -> None:
    svc = LedgerService(engine, None)
    try:
        assert await svc.append("acme", buy(1)) == ImportResult(1, 0)
        assert [e.id for e in await svc.entries("acme")] == ["e1"]
    finally:
        await svc.close()


@pytest.mark.parametrize("inline", [True, False])
async def test_a_failed_write_leaves_nothing(engine: AsyncEngine, inline: bool, db: Path) -> None:
    svc = service(engine, inline=inline)
    try:
        await svc.import_entries("acme", chain_of(2))
        with sqlite3.connect(db) as con:  # the database itself refuses the third row
            con.execute(
                "CREATE TRIGGER no_e4 BEFORE INSERT ON ledger_entries WHEN NEW.entry_id = 'e4' "
                "BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        with pytest.raises(StorageError, match="refused"):
            await svc.import_entries("acme", [buy(3), buy(4, account="new"), buy(5)])
        assert [e.id for e in await svc.entries("acme")] == ["e1", "e2"]
        assert [a.name for a in await svc.accounts("acme")] == ["binance"]
        report = await svc.verify("acme")
        assert (report.ok, report.entries) == (True, 2)
        assert await svc.import_entries("acme", [buy(3)]) == ImportResult(1, 0)
    finally:
        await svc.close()


async def test_two_writers_on_one_file_do_not_fork_the_chain(engine: AsyncEngine) -> None:
    # Two stores (as two processes would have) appending at once through aiosqlite.
    a, b = service(engine, inline=False), service(engine, inline=False)
    try:
        first = [buy(f"a{i}", account="x") for i in range(300)]
        second = [buy(f"b{i}", account="y") for i in range(300)]
        results = await asyncio.gather(
            *(a.import_entries("acme", first[i::3]) for i in range(3)),
            *(b.import_entries("acme", second[i::3]) for i in range(3)),
        )
        assert sum(r.added for r in results) == 600
        report = await a.verify("acme")
        assert (report.ok, report.entries) == (True, 600)
        seqs = [s.seq for s in await a.stored_entries("acme")]
        assert seqs == list(range(1, 601))
    finally:
        await a.close()
        await b.close()


async def test_invalid_stored_rows_are_a_storage_error(engine: AsyncEngine, db: Path) -> None:
    svc = service(engine, inline=True)
    try:
        await svc.import_entries("acme", chain_of(2))
        with sqlite3.connect(db) as con:
            con.execute("UPDATE ledger_entries SET amount = '-1' WHERE entry_id = 'e2'")
        with pytest.raises(StorageError, match="seq 2 of tenant 'acme' is not a valid entry"):
            await svc.entries("acme")
        report = await svc.verify("acme")
        assert report.first_broken is not None
        assert (report.first_broken.entry_id, report.first_broken.reason) == ("e2", "edited")
    finally:
        await svc.close()


async def test_bad_arguments(engine: AsyncEngine) -> None:
    svc = service(engine, inline=True)
    try:
        for tenant in ("", "Acme", "a b", "x" * 64):
            with pytest.raises(DomainError, match="not a tenant id"):
                await svc.accounts(tenant)
        with pytest.raises(DomainError, match="not a ccxt exchange id"):
            AccountSpec("b", "exchange", exchange="Binance!")
        with pytest.raises(DomainError, match="chain is required"):
            AccountSpec("w", "wallet", address="bc1")
        with pytest.raises(DomainError, match="has no exchange"):
            AccountSpec("m", "manual", exchange="binance")
        with pytest.raises(DomainError, match="external_id"):
            await svc.append("acme", buy(1, external_id=" padded"))
        await svc.append("acme", buy("x" * 127))
        with pytest.raises(DomainError, match="reversal's id is too long"):
            await svc.reverse("acme", "e" + "x" * 127)
        assert [e.id for e in await svc.entries("acme")] == ["e" + "x" * 127]
    finally:
        await svc.close()
