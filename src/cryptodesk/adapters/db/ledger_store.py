"""Accounts, reported balances and the hash-chained ledger of every tenant.

Every method takes the tenant; no query can be written without one. Ledger
writes happen inside :meth:`SqlLedgerStore.ledger_transaction`, which first
locks the tenant's head row (``SELECT ... FOR UPDATE`` on PostgreSQL, the
database write lock on SQLite): appends of one tenant queue behind each other,
so two imports can never both link to the same predecessor and fork the chain,
and checks made inside the transaction ("is this id stored already?") still
hold when it commits.

On a SQLite file, writes run on a plain ``sqlite3`` connection in the calling
thread (``InlineSqlite``), as ``SqlMarketStore`` and ``SqlSignalStore`` do: the
transaction's body has no real await, so the write lock is held only while it
runs, and waiting for the lock never holds up the event loop.
The chain check reads on its own connection in a worker thread, inside one
read transaction, so it sees a consistent snapshot without holding the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptodesk.adapters.db.engine import SQLITE_PRAGMAS, sqlite_path, storage_error
from cryptodesk.adapters.db.inline_sqlite import InlineSqlite
from cryptodesk.adapters.db.ledger_rows import (
    ENTRY_COLUMNS,
    AsyncRunner,
    InlineRunner,
    LedgerTransaction,
    Runner,
    link_of,
    stored_entry,
)
from cryptodesk.adapters.db.models import account_balances, accounts, ledger_entries, ledger_heads
from cryptodesk.portfolio.accounts import Account, Balance
from cryptodesk.portfolio.hash_chain import ChainHead, ChainReport, ChainVerifier, StoredEntry
from cryptodesk.portfolio.ledger import LedgerEntry

_ACCOUNT_COLUMNS = (
    accounts.c.name,
    accounts.c.kind,
    accounts.c.exchange,
    accounts.c.chain,
    accounts.c.address,
    accounts.c.note,
    accounts.c.credentials.is_not(None),
    accounts.c.created_at,
)
_CHAIN_BATCH = 5_000


def _account(row: Any) -> Account:
    name, kind, exchange, chain, address, note, has_credentials, created_at = row
    return Account(name, kind, exchange, chain, address, note, bool(has_credentials), created_at)


class SqlLedgerStore:
    """The portfolio tables on the market store's engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine, *, inline_sqlite: bool = True) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._sqlite_file = (
            sqlite_path(engine.url.render_as_string(hide_password=False))
            if engine.dialect.name == "sqlite"
            else None
        )
        self._inline = (
            InlineSqlite(self._sqlite_file)
            if inline_sqlite and self._sqlite_file is not None
            else None
        )
        # SQLite through aiosqlite: this process's writers queue here, not on a lock
        # upgrade that SQLite would refuse instead of wait for.
        self._write_lock = asyncio.Lock()

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
            raise storage_error(exc, self._engine.url) from exc

    def _insert(self, table: Any) -> Any:
        return postgresql.insert(table) if self._postgres else sqlite.insert(table)

    # ---- transactions ---------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Runner]:
        """One write transaction; rolled back if the body raises."""
        with self._errors():
            if self._inline is not None:
                # The body runs without real awaits; a nested one is a bug, not a race.
                async with self._inline.transaction() as con:
                    yield InlineRunner(con, self._engine.dialect)
                return
            if self._postgres:  # the head row lock orders writers, across processes too
                async with self._engine.connect() as conn, conn.begin():
                    yield AsyncRunner(conn)
                return
            async with self._write_lock, self._engine.connect() as conn, conn.begin():
                yield AsyncRunner(conn)

    @contextlib.asynccontextmanager
    async def ledger_transaction(self, tenant: str) -> AsyncIterator[LedgerTransaction]:
        """The tenant's chain, locked until the body returns (commit) or raises (rollback).

        Fails with StorageError when the newest stored entry is not the one the
        head records: nothing is appended to a chain already broken.
        """
        async with self._transaction() as runner:
            tx = LedgerTransaction(runner, tenant, postgres=self._postgres)
            with self._errors():
                await tx.open()
            yield tx

    # ---- accounts and balances ------------------------------------------------------

    async def insert_account(self, tenant: str, account: Account, credentials: str | None) -> bool:
        """Store ``account`` (``credentials``: an encrypted token); False if the name is taken."""
        stmt = (
            self._insert(accounts)
            .values(
                tenant_id=tenant,
                name=account.name,
                kind=account.kind,
                exchange=account.exchange,
                chain=account.chain,
                address=account.address,
                credentials=credentials,
                note=account.note,
                created_at=account.created_at,
            )
            .on_conflict_do_nothing()
        )
        async with self._transaction() as runner:
            return await runner.run(stmt) == 1

    async def tenants(self) -> list[str]:
        """Every tenant with an account or a ledger entry (the scheduler's reports)."""
        stmt = select(accounts.c.tenant_id).union(select(ledger_heads.c.tenant_id))
        return sorted(r[0] for r in await self._all(stmt))  # type: ignore[arg-type]

    async def accounts(self, tenant: str) -> list[Account]:
        stmt = (
            select(*_ACCOUNT_COLUMNS)
            .where(accounts.c.tenant_id == tenant)
            .order_by(accounts.c.name)
        )
        return [_account(r) for r in await self._all(stmt)]

    async def account(self, tenant: str, name: str) -> Account | None:
        stmt = select(*_ACCOUNT_COLUMNS).where(
            accounts.c.tenant_id == tenant, accounts.c.name == name
        )
        rows = await self._all(stmt)
        return _account(rows[0]) if rows else None

    async def credentials_token(self, tenant: str, name: str) -> str | None:
        stmt = select(accounts.c.credentials).where(
            accounts.c.tenant_id == tenant, accounts.c.name == name
        )
        rows = await self._all(stmt)
        return rows[0][0] if rows else None

    async def upsert_balances(
        self,
        tenant: str,
        account: str,
        balances: Sequence[tuple[str, Decimal]],
        *,
        as_of: int,
        source: str,
        complete: bool,
    ) -> None:
        """Record ``balances`` as of ``as_of``; an older report never replaces a newer one.

        ``complete``: the report lists every asset the account holds, so the
        stored assets it leaves out are recorded as zero.
        """
        statements: list[Any] = []
        rows = [
            {
                "tenant_id": tenant, "account": account, "asset": asset,
                "amount": str(amount), "as_of": as_of, "source": source,
            }
            for asset, amount in balances
        ]  # fmt: skip
        if rows:
            stmt = self._insert(account_balances).values(rows)
            statements.append(
                stmt.on_conflict_do_update(
                    index_elements=[
                        account_balances.c.tenant_id,
                        account_balances.c.account,
                        account_balances.c.asset,
                    ],
                    set_={
                        "amount": stmt.excluded.amount,
                        "as_of": stmt.excluded.as_of,
                        "source": stmt.excluded.source,
                    },
                    where=account_balances.c.as_of <= stmt.excluded.as_of,
                )
            )
        if complete:
            statements.append(
                update(account_balances)
                .where(
                    account_balances.c.tenant_id == tenant,
                    account_balances.c.account == account,
                    account_balances.c.asset.not_in([asset for asset, _ in balances]),
                    account_balances.c.as_of <= as_of,
                )
                .values(amount="0", as_of=as_of, source=source)
            )
        async with self._transaction() as runner:
            for statement in statements:
                await runner.run(statement)

    async def balances(self, tenant: str, account: str | None = None) -> list[Balance]:
        b = account_balances.c
        stmt = select(b.account, b.asset, b.amount, b.as_of, b.source).where(b.tenant_id == tenant)
        if account is not None:
            stmt = stmt.where(b.account == account)
        rows = await self._all(stmt.order_by(b.account, b.asset))
        return [
            Balance(a, asset, Decimal(amount), as_of, src) for a, asset, amount, as_of, src in rows
        ]

    # ---- ledger reads ---------------------------------------------------------------

    async def stored_entries(
        self,
        tenant: str,
        *,
        start: int | None = None,
        end: int | None = None,
        account: str | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
    ) -> list[StoredEntry]:
        """Entries with ``start <= timestamp < end`` (of ``account``, as sender or
        receiver), in append order, after ``after_seq``, at most ``limit``."""
        e = ledger_entries.c
        stmt = select(*(e[name] for name in ENTRY_COLUMNS)).where(e.tenant_id == tenant)
        if start is not None:
            stmt = stmt.where(e.ts >= start)
        if end is not None:
            stmt = stmt.where(e.ts < end)
        if account is not None:
            stmt = stmt.where(or_(e.account == account, e.to_account == account))
        if after_seq is not None:
            stmt = stmt.where(e.seq > after_seq)
        stmt = stmt.order_by(e.seq)
        if limit is not None:
            stmt = stmt.limit(limit)
        return [stored_entry(tenant, row) for row in await self._all(stmt)]

    async def entries(self, tenant: str, **filters: Any) -> list[LedgerEntry]:
        return [s.entry for s in await self.stored_entries(tenant, **filters)]

    async def verify_chain(self, tenant: str) -> ChainReport:
        """Check the tenant's whole chain against its head, in one consistent read."""
        with self._errors():
            if self._sqlite_file is not None:
                return await asyncio.to_thread(self._verify_sqlite, tenant, self._sqlite_file)
            async with self._engine.connect() as conn:
                if self._postgres:
                    await conn.execution_options(isolation_level="REPEATABLE READ")
                async with conn.begin():
                    head_rows = (await conn.execute(_head_query(tenant))).all()
                    verifier = ChainVerifier(ChainHead(*head_rows[0]) if head_rows else None)
                    result = await conn.stream(_chain_query(tenant))
                    async for batch in result.partitions(_CHAIN_BATCH):
                        for row in batch:
                            verifier.add(link_of(row))
                    return verifier.finish()

    def _verify_sqlite(self, tenant: str, path: Any) -> ChainReport:
        con = sqlite3.connect(path, isolation_level=None)
        try:
            for pragma in SQLITE_PRAGMAS:
                con.execute(pragma)
            con.execute("BEGIN")  # one snapshot for the head and every entry (WAL)
            runner = InlineRunner(con, self._engine.dialect)
            head_rows = runner.fetch(_head_query(tenant))
            verifier = ChainVerifier(ChainHead(*head_rows[0]) if head_rows else None)
            cursor = runner.cursor(_chain_query(tenant))
            while batch := cursor.fetchmany(_CHAIN_BATCH):
                for row in batch:
                    verifier.add(link_of(row))
            con.execute("COMMIT")
            return verifier.finish()
        finally:
            con.close()

    async def _all(self, stmt: Select[Any]) -> Sequence[Any]:
        with self._errors():
            async with self._engine.connect() as conn:
                rows: Sequence[Any] = (await conn.execute(stmt)).all()
                return rows

    async def close(self) -> None:
        """Close the inline connection; the engine belongs to the caller."""
        if self._inline is not None:
            self._inline.close()


def _head_query(tenant: str) -> Select[Any]:
    return select(ledger_heads.c.seq, ledger_heads.c.hash).where(ledger_heads.c.tenant_id == tenant)


def _chain_query(tenant: str) -> Select[Any]:
    e = ledger_entries.c
    return select(*(e[name] for name in ENTRY_COLUMNS)).where(e.tenant_id == tenant).order_by(e.seq)
