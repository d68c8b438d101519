"""Daily portfolio snapshots: each tenant's positions at the close of each UTC day.

``save_day`` makes the stored day exactly the rows given, in one transaction:
rows are upserted on their natural key (tenant, day, account, asset) and rows
of that day no longer given are deleted, so re-running a day (after a ledger
correction, say) leaves one consistent set and never duplicates. Money is
stored as decimal text and read back as the same ``Decimal``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptodesk.adapters.db.engine import storage_error
from cryptodesk.adapters.db.models import portfolio_snapshots as snap
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.timeutil import now_ms
from cryptodesk.portfolio.valuation import Snapshot

_COLUMNS = (
    snap.c.day, snap.c.account, snap.c.asset, snap.c.amount, snap.c.cost_basis, snap.c.price,
    snap.c.market_value, snap.c.realized, snap.c.unrealized,
)  # fmt: skip


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _row(r: Any) -> Snapshot:
    day, account, asset, amount, cost, price, mv, realized, unrealized = r
    return Snapshot(
        day, account, asset, Decimal(amount), Decimal(cost), _decimal(price), _decimal(mv),
        Decimal(realized), _decimal(unrealized),
    )  # fmt: skip


def check_day(text: str, *, field: str = "day") -> str:
    """``text`` if it is a calendar date written ``YYYY-MM-DD``, else DomainError."""
    try:
        if len(text) == 10 and date.fromisoformat(text).isoformat() == text:
            return text
    except ValueError:
        pass
    raise DomainError(f"{field} {text!r} is not a date YYYY-MM-DD", field=field)


class SqlSnapshotStore:
    """``portfolio_snapshots`` on the store's engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], int] = now_ms) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._clock = clock

    def _error(self, exc: BaseException) -> Exception:
        return storage_error(exc, self._engine.url)

    async def save_day(self, tenant: str, day: str, rows: Sequence[Snapshot]) -> None:
        """Make ``tenant``'s snapshot of ``day`` exactly ``rows``."""
        check_day(day)
        keys = [(r.account, r.asset) for r in rows]
        if any(r.day != day for r in rows):
            raise ValueError(f"every row must be of day {day}")
        if len(set(keys)) != len(keys):
            raise ValueError("rows repeat an (account, asset)")
        at = self._clock()
        values = [
            {
                "tenant_id": tenant, "day": day, "account": r.account, "asset": r.asset,
                "amount": str(r.amount), "cost_basis": str(r.cost_basis),
                "price": _text(r.price), "market_value": _text(r.market_value),
                "realized": str(r.realized), "unrealized": _text(r.unrealized),
                "created_at": at,
            }
            for r in rows
        ]  # fmt: skip
        stale = delete(snap).where(snap.c.tenant_id == tenant, snap.c.day == day)
        if keys:
            stale = stale.where(tuple_(snap.c.account, snap.c.asset).not_in(keys))
        try:
            async with self._engine.begin() as conn:
                await conn.execute(stale)
                if values:
                    insert = postgresql.insert(snap) if self._postgres else sqlite.insert(snap)
                    stmt = insert.values(values)
                    stmt = stmt.on_conflict_do_update(
                        index_elements=[snap.c.tenant_id, snap.c.day, snap.c.account,
                                        snap.c.asset],
                        set_={name: stmt.excluded[name] for name in (
                            "amount", "cost_basis", "price", "market_value", "realized",
                            "unrealized", "created_at",
                        )},
                    )  # fmt: skip
                    await conn.execute(stmt)
        except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
            raise self._error(exc) from exc

    async def between(self, tenant: str, start: str, end: str) -> list[Snapshot]:
        """Rows of days ``start..end`` (both included), by day, account, asset."""
        check_day(start, field="start")
        check_day(end, field="end")
        stmt = (
            select(*_COLUMNS)
            .where(snap.c.tenant_id == tenant, snap.c.day >= start, snap.c.day <= end)
            .order_by(snap.c.day, snap.c.account, snap.c.asset)
        )
        try:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(stmt)).all()
        except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
            raise self._error(exc) from exc
        return [_row(r) for r in rows]

    async def day(self, tenant: str, day: str) -> list[Snapshot]:
        return await self.between(tenant, day, day)

    async def latest_day(self, tenant: str) -> str | None:
        """The newest day stored for ``tenant``, or None."""
        stmt = (
            select(snap.c.day)
            .where(snap.c.tenant_id == tenant)
            .order_by(snap.c.day.desc())
            .limit(1)
        )
        try:
            async with self._engine.connect() as conn:
                found = (await conn.execute(stmt)).scalar_one_or_none()
        except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
            raise self._error(exc) from exc
        return None if found is None else str(found)
