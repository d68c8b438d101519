"""Signals, the signal runner's progress per series, and the stored rule set.

``commit`` is what makes signal evaluation exactly-once on an at-least-once
bus: it moves a series' progress from the candle the caller evaluated last
to the one it evaluated now *and* stores that candle's signals, in one
transaction, and only if the stored progress still is the caller's
(compare-and-set). A redelivered candle, or one a second worker already
evaluated, changes nothing. Signals are stored unpublished; the runner
publishes them and then ``mark_published`` (a transactional outbox), so a
crash between the two publishes them after the restart instead of never.

On a SQLite file, writes run on a plain ``sqlite3`` connection in the calling
thread (``InlineSqlite``), as ``SqlMarketStore`` does for trades: one short
transaction without awaits inside, so it holds the file's write lock only while
it runs.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, delete, func, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.dml import UpdateBase

from cryptodesk.adapters.db.engine import sqlite_path, storage_error
from cryptodesk.adapters.db.inline_sqlite import InlineSqlite
from cryptodesk.adapters.db.models import signal_progress, signal_rules, signals
from cryptodesk.domain.signals import Signal, decode_values, encode_values

SCOPE = "default"
Series = tuple[str, str, str]
# Listing order: a total order over every series, time first.
ListKey = tuple[int, str, str, str, str]  # open_time, exchange, symbol, interval, rule

_SELECT = (
    signals.c.rule_id,
    signals.c.kind,
    signals.c.exchange,
    signals.c.symbol,
    signals.c.interval,
    signals.c.open_time,
    signals.c.close,
    signals.c.indicator_values,
    signals.c.detected_at,
)
_ORDER = (
    signals.c.open_time,
    signals.c.exchange,
    signals.c.symbol,
    signals.c.interval,
    signals.c.rule_id,
)


def _signal(row: Any) -> Signal:
    rule, kind, exchange, symbol, interval, open_time, close, values, detected = row
    return Signal(
        rule, kind, exchange, symbol, interval, open_time, close, decode_values(values), detected
    )


def list_key(s: Signal) -> ListKey:
    return (s.open_time, s.exchange, s.symbol, s.interval, s.rule)


@dataclass(frozen=True, slots=True)
class StoredRules:
    revision: int
    rules: str  # JSON text
    updated_at: int


@dataclass(frozen=True, slots=True)
class SignalFilter:
    """Listing filters; None matches anything. ``start <= open_time < end``."""

    exchange: str | None = None
    symbol: str | None = None
    interval: str | None = None
    rule: str | None = None
    kind: str | None = None
    start: int | None = None
    end: int | None = None


class SqlSignalStore:
    """The signal tables on the market store's engine."""

    def __init__(self, engine: AsyncEngine, *, inline_sqlite: bool = True) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        sqlite_file = (
            sqlite_path(engine.url.render_as_string(hide_password=False))
            if engine.dialect.name == "sqlite" and inline_sqlite
            else None
        )
        self._inline = InlineSqlite(sqlite_file) if sqlite_file is not None else None

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
            raise storage_error(exc, self._engine.url) from exc

    def _insert(self, table: Any) -> Any:
        return postgresql.insert(table) if self._postgres else sqlite.insert(table)

    # ---- writes ---------------------------------------------------------------------

    async def commit(
        self, series: Series, open_time: int, *, after: int | None, fired: Sequence[Signal]
    ) -> bool:
        """Move ``series`` from progress ``after`` (None: never evaluated) to
        ``open_time`` and store ``fired``, atomically; False, writing nothing,
        when the stored progress is not ``after``.

        A signal already stored under its natural key is kept as it is.
        """
        exchange, symbol, interval = series
        where = (
            signal_progress.c.exchange == exchange,
            signal_progress.c.symbol == symbol,
            signal_progress.c.interval == interval,
        )
        cas: UpdateBase
        if after is None:
            cas = (
                self._insert(signal_progress)
                .values(exchange=exchange, symbol=symbol, interval=interval, open_time=open_time)
                .on_conflict_do_nothing()
            )
        else:
            cas = (
                update(signal_progress)
                .where(*where, signal_progress.c.open_time == after)
                .values(open_time=open_time)
            )
        rows = [
            {
                "exchange": s.exchange, "symbol": s.symbol, "interval": s.interval,
                "open_time": s.open_time, "rule_id": s.rule, "kind": s.kind, "close": s.close,
                "indicator_values": encode_values(s.values), "detected_at": s.detected_at,
                "published_at": None,
            }
            for s in fired
        ]  # fmt: skip
        statements: list[UpdateBase] = []
        if rows:
            statements.append(self._insert(signals).values(rows).on_conflict_do_nothing())
        return await self._write(cas, statements)

    async def forget_progress(self, series: Series) -> None:
        """Drop ``series``' progress (its rules are gone): rules added later start
        from the then newest candle instead of evaluating everything since."""
        exchange, symbol, interval = series
        stmt = delete(signal_progress).where(
            signal_progress.c.exchange == exchange,
            signal_progress.c.symbol == symbol,
            signal_progress.c.interval == interval,
        )
        await self._write(None, [stmt])

    async def mark_published(self, fired: Sequence[Signal], at: int) -> None:
        if not fired:
            return
        statements = [
            update(signals)
            .where(
                signals.c.exchange == s.exchange,
                signals.c.symbol == s.symbol,
                signals.c.interval == s.interval,
                signals.c.open_time == s.open_time,
                signals.c.rule_id == s.rule,
                signals.c.published_at.is_(None),
            )
            .values(published_at=at)
            for s in fired
        ]
        await self._write(None, statements)

    async def replace_rules(self, rules: str, at: int) -> int:
        """Store ``rules`` (JSON text) as the rule set; returns its new revision."""
        values = {"scope": SCOPE, "revision": 1, "rules": rules, "updated_at": at}
        stmt = self._insert(signal_rules).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[signal_rules.c.scope],
            set_={
                "revision": signal_rules.c.revision + 1,
                "rules": stmt.excluded.rules,
                "updated_at": stmt.excluded.updated_at,
            },
        )
        await self._write(None, [stmt])
        stored = await self.rules()
        assert stored is not None
        return stored.revision

    async def _write(self, cas: UpdateBase | None, statements: Sequence[UpdateBase]) -> bool:
        """Run ``cas`` then ``statements`` in one transaction; if ``cas`` changed no
        row, roll back and return False."""
        with self._errors():
            if self._inline is not None:
                return await self._write_inline(self._inline, cas, statements)
            async with self._engine.connect() as conn:
                return await self._write_async(conn, cas, statements)

    async def _write_async(
        self, conn: AsyncConnection, cas: UpdateBase | None, statements: Sequence[UpdateBase]
    ) -> bool:
        trans = await conn.begin()
        if cas is not None and (await conn.execute(cas)).rowcount != 1:
            await trans.rollback()
            return False
        for stmt in statements:
            await conn.execute(stmt)
        await trans.commit()
        return True

    async def _write_inline(
        self, inline: InlineSqlite, cas: UpdateBase | None, statements: Sequence[UpdateBase]
    ) -> bool:
        async with inline.transaction() as con:
            if cas is not None and self._run_inline(con, cas) != 1:
                con.execute("ROLLBACK")
                return False
            for stmt in statements:
                self._run_inline(con, stmt)
            return True

    def _run_inline(self, con: sqlite3.Connection, stmt: UpdateBase) -> int:
        compiled = stmt.compile(dialect=self._engine.dialect)
        params = compiled.params
        args = tuple(params[name] for name in compiled.positiontup or ())
        return con.execute(str(compiled), args).rowcount

    # ---- reads ----------------------------------------------------------------------

    async def _all(self, stmt: Select[Any]) -> Sequence[Any]:
        with self._errors():
            async with self._engine.connect() as conn:
                rows: Sequence[Any] = (await conn.execute(stmt)).all()
                return rows

    async def progress(self, series: Series) -> int | None:
        """The open time of the newest candle evaluated in ``series``, or None."""
        exchange, symbol, interval = series
        rows = await self._all(
            select(signal_progress.c.open_time).where(
                signal_progress.c.exchange == exchange,
                signal_progress.c.symbol == symbol,
                signal_progress.c.interval == interval,
            )
        )
        return int(rows[0][0]) if rows else None

    async def unpublished(self, series: Series) -> list[Signal]:
        """Stored signals of ``series`` not yet marked published, oldest first."""
        exchange, symbol, interval = series
        stmt = (
            select(*_SELECT)
            .where(
                signals.c.exchange == exchange,
                signals.c.symbol == symbol,
                signals.c.interval == interval,
                signals.c.published_at.is_(None),
            )
            .order_by(signals.c.open_time, signals.c.rule_id)
        )
        return [_signal(r) for r in await self._all(stmt)]

    async def signals(
        self,
        where: SignalFilter,
        *,
        limit: int,
        after: ListKey | None = None,
        before: ListKey | None = None,
        newest_first: bool = False,
    ) -> list[Signal]:
        """Signals matching ``where``, ordered by ``list_key`` (descending when
        ``newest_first``), strictly after ``after`` / before ``before``."""
        stmt = select(*_SELECT)
        for column, value in (
            (signals.c.exchange, where.exchange),
            (signals.c.symbol, where.symbol),
            (signals.c.interval, where.interval),
            (signals.c.rule_id, where.rule),
            (signals.c.kind, where.kind),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if where.start is not None:
            stmt = stmt.where(signals.c.open_time >= where.start)
        if where.end is not None:
            stmt = stmt.where(signals.c.open_time < where.end)
        if after is not None:
            stmt = stmt.where(_beyond(after, later=True))
        if before is not None:
            stmt = stmt.where(_beyond(before, later=False))
        order = [c.desc() for c in _ORDER] if newest_first else list(_ORDER)
        return [_signal(r) for r in await self._all(stmt.order_by(*order).limit(limit))]

    async def count(self) -> int:
        return int((await self._all(select(func.count()).select_from(signals)))[0][0])

    async def rules(self) -> StoredRules | None:
        rows = await self._all(
            select(signal_rules.c.revision, signal_rules.c.rules, signal_rules.c.updated_at).where(
                signal_rules.c.scope == SCOPE
            )
        )
        return StoredRules(int(rows[0][0]), rows[0][1], int(rows[0][2])) if rows else None

    async def rules_revision(self) -> int | None:
        rows = await self._all(select(signal_rules.c.revision).where(signal_rules.c.scope == SCOPE))
        return int(rows[0][0]) if rows else None

    async def close(self) -> None:
        """Close the inline connection; the engine belongs to the market store."""
        if self._inline is not None:
            self._inline.close()


def _beyond(key: ListKey, *, later: bool) -> Any:
    """Rows strictly after (or before) ``key`` in listing order.

    Spelled out rather than as a row-value comparison so the open_time index
    bounds the scan on both databases.
    """
    t, exchange, symbol, interval, rule = key
    rest = tuple_(signals.c.exchange, signals.c.symbol, signals.c.interval, signals.c.rule_id)
    tail = (exchange, symbol, interval, rule)
    if later:
        return or_(signals.c.open_time > t, and_(signals.c.open_time == t, rest > tuple_(*tail)))
    return or_(signals.c.open_time < t, and_(signals.c.open_time == t, rest < tuple_(*tail)))
