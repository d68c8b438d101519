"""Each tenant's order log in the database (``models.order_log``).

One row per accepted command, keyed by (tenant, seq), the record as JSON text:
the durable form of ``trading/order_log.py``. ``append`` writes a batch in one
transaction, all or nothing. There is one writer per tenant (the order service
holds a lock per tenant), so a seq already stored means another process wrote
that tenant's log meanwhile: the batch is refused with ``OrderLogConflict`` and
nothing is written; the writer must catch up (``records(after=...)``) and decide
again. Every method takes the tenant; no query can be written without one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptodesk.adapters.db.engine import StorageError, storage_error
from cryptodesk.adapters.db.models import order_log
from cryptodesk.domain.auth import check_tenant
from cryptodesk.trading.order_log import Record

_DB_ERRORS = (SQLAlchemyError, sqlite3.Error, OSError)


class OrderLogConflict(StorageError):
    """A seq of the batch is stored already: another writer appended to the tenant's log."""


class SqlOrderLog:
    """``order_log`` on the store's engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def append(self, tenant: str, records: Sequence[Record]) -> None:
        """Store ``records`` (each with ``seq`` and ``ts``) in one transaction."""
        check_tenant(tenant)
        if not records:
            return
        rows: list[dict[str, Any]] = [
            {"tenant_id": tenant, "seq": int(r["seq"]), "ts": int(r["ts"]),
             "record": msgspec.json.encode(r).decode()}
            for r in records
        ]  # fmt: skip
        try:
            async with self._engine.begin() as conn:
                await conn.execute(order_log.insert(), rows)
        except IntegrityError as exc:
            seqs = f"{rows[0]['seq']}..{rows[-1]['seq']}"
            raise OrderLogConflict(
                f"order log of tenant {tenant} already holds a record in seq {seqs}"
            ) from exc
        except _DB_ERRORS as exc:
            raise storage_error(exc, self._engine.url) from exc

    async def records(self, tenant: str, *, after: int = 0) -> list[Record]:
        """The tenant's records with seq above ``after``, in seq order."""
        check_tenant(tenant)
        stmt = (
            select(order_log.c.record)
            .where(order_log.c.tenant_id == tenant, order_log.c.seq > after)
            .order_by(order_log.c.seq)
        )
        try:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(stmt)).scalars().all()
        except _DB_ERRORS as exc:
            raise storage_error(exc, self._engine.url) from exc
        return [msgspec.json.decode(row) for row in rows]

    async def last_seq(self, tenant: str) -> int:
        """The seq of the tenant's newest record (0: none)."""
        check_tenant(tenant)
        stmt = select(func.max(order_log.c.seq)).where(order_log.c.tenant_id == tenant)
        try:
            async with self._engine.connect() as conn:
                found = (await conn.execute(stmt)).scalar_one_or_none()
        except _DB_ERRORS as exc:
            raise storage_error(exc, self._engine.url) from exc
        return 0 if found is None else int(found)

    async def tenants(self) -> list[str]:
        """Every tenant with an order log, sorted."""
        stmt = select(order_log.c.tenant_id).distinct().order_by(order_log.c.tenant_id)
        try:
            async with self._engine.connect() as conn:
                return list((await conn.execute(stmt)).scalars().all())
        except _DB_ERRORS as exc:
            raise storage_error(exc, self._engine.url) from exc
