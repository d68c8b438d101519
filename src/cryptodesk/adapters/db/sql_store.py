"""``MarketStore`` over SQLAlchemy: SQLite embedded, PostgreSQL in production.

The trade insert is the hot path of ingest (tens of thousands of rows a
second), so it runs multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING``
statements through the driver directly: SQLAlchemy compiles each statement
shape once per store (the dialect decides the ``ON CONFLICT`` and placeholder
syntax) and the per-row cost is only building a parameter tuple. RETURNING
reports exactly the rows the database accepted, which is what makes a
redelivered trade invisible to the candle builder.

Duplicates are rare (they come only from redelivery after a crash), so a batch
is first inserted without RETURNING: when the row count says every trade was
new, the per-row result handling is skipped (about a third of the insert's cost).
Otherwise the batch is rolled back to a savepoint and redone with RETURNING.

On a SQLite file, trade inserts run on a plain ``sqlite3`` connection in the
calling thread instead of aiosqlite's worker thread. The embedded pipeline is
CPU-bound in one process, and a worker thread has to win the GIL back from the
event loop for every statement: measured on 2 cores with the simulator
running, 43,000 rows/s through a thread against 227,000 rows/s inline. The
price is that a 2,000-row batch holds the event loop for about 8 ms. The
write lock is never waited for on the loop's thread (``InlineSqlite``): the
transaction holding it may be this process's own aiosqlite one.
PostgreSQL (asyncpg) stays fully asynchronous; there the trades key also
contains ``ts`` (the tables are partitioned by time), which still deduplicates
because a redelivered trade keeps its timestamp (docs/database.md).

A database that restarts leaves every pooled connection dead. Each operation
runs once more when it failed only because its pooled connection was one of
those (SQLAlchemy then discards the whole pool), so the first request after a
restart succeeds instead of failing; checking every connection before use
(``pool_pre_ping``) would cost three round trips per query, measured as
doubling the time of a small ``get_candles``. On PostgreSQL, a trade insert
whose COMMIT got no answer is settled by ``in_doubt.InDoubtCommits``, and the
month partition of rows about to be inserted is created on demand
(``partitions.PartitionsOnDemand``).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Sequence
from itertools import chain
from operator import attrgetter
from typing import Any, TypeAlias, TypeVar

import structlog
from sqlalchemy import Row, Select, Table, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cryptodesk.adapters.db.engine import (
    StorageError,
    dialect_insert,
    sqlite_path,
    storage_error,
)
from cryptodesk.adapters.db.in_doubt import InDoubtCommits
from cryptodesk.adapters.db.inline_sqlite import InlineSqlite
from cryptodesk.adapters.db.models import candles as candles_table
from cryptodesk.adapters.db.models import trades as trades_table
from cryptodesk.adapters.db.partitions import PartitionsOnDemand
from cryptodesk.domain.market import Candle, Trade

log = structlog.get_logger(__name__)
T = TypeVar("T")

# Rows per INSERT statement: 512 rows x 7 columns stays far below SQLite's
# historic 32,766-variable limit and PostgreSQL's 65,535 bind parameters.
TRADE_CHUNK_ROWS = 512

_TRADE_COLUMNS = ("exchange", "symbol", "trade_id", "ts", "price", "amount", "side")
_trade_values = attrgetter("exchange", "symbol", "id", "ts", "price", "amount", "side")
_TRADE_SELECT = (
    trades_table.c.exchange,
    trades_table.c.symbol,
    trades_table.c.trade_id,
    trades_table.c.ts,
    trades_table.c.price,
    trades_table.c.amount,
    trades_table.c.side,
)
_CANDLE_KEY = ("exchange", "symbol", "interval", "open_time")
_CANDLE_VALUES = ("open", "high", "low", "close", "volume", "quote_volume", "trades")
_CANDLE_SELECT = tuple(candles_table.c[name] for name in _CANDLE_KEY + _CANDLE_VALUES)
_DIALECTS = ("sqlite", "postgresql")

TradeKey = tuple[str, str, str]
AnyRow: TypeAlias = Row[*tuple[Any, ...]]


def _chunk_sizes(total: int, chunk: int) -> Iterator[int]:
    """Full chunks, then the rest as powers of two (each size is compiled once)."""
    full, rest = divmod(total, chunk)
    yield from [chunk] * full
    bit = 1 << max(rest.bit_length() - 1, 0)
    while rest:
        if rest & bit:
            yield bit
            rest -= bit
        bit >>= 1


def _trade(row: AnyRow) -> Trade:
    return Trade(*row)


def _candle(row: AnyRow) -> Candle:
    # Only finalized candles are ever stored, so whatever comes back is closed.
    exchange, symbol, interval, open_time, open_, high, low, close, volume, quote, n = row
    return Candle(
        exchange,
        symbol,
        interval,
        open_time,
        open_,
        high,
        low,
        close,
        volume,
        quote,
        n,
        closed=True,
    )


class SqlMarketStore:
    """The market-data store on one AsyncEngine; see ``MarketStore`` for the contract."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        chunk_rows: int = TRADE_CHUNK_ROWS,
        inline_sqlite: bool = True,
        create_partitions: bool = True,
    ) -> None:
        """``create_partitions=False`` leaves rows of unprepared months in DEFAULT."""
        dialect = engine.dialect.name
        if dialect not in _DIALECTS:
            raise StorageError(f"unsupported database {dialect!r}: use SQLite or PostgreSQL")
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be >= 1")
        self._engine = engine
        self._chunk_rows = chunk_rows
        self._trade_sql: dict[tuple[int, bool], str] = {}
        sqlite_file = (
            sqlite_path(engine.url.render_as_string(hide_password=False))
            if dialect == "sqlite" and inline_sqlite
            else None
        )
        self._inline = InlineSqlite(sqlite_file) if sqlite_file is not None else None
        self._candle_sql: tuple[str, list[str]] | None = None
        postgres = dialect == "postgresql"
        self._doubt = InDoubtCommits() if postgres else None
        self._partitions = PartitionsOnDemand(engine) if postgres and create_partitions else None

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    def _insert(self, table: Table) -> sqlite.Insert | postgresql.Insert:
        return dialect_insert(self._engine, table)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
            raise storage_error(exc, self._engine.url) from exc

    async def _reconnecting(self, operation: Callable[[], Awaitable[T]]) -> T:
        """``operation()``, once more if a dead pooled connection failed it."""
        try:
            return await operation()
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            log.info("database connection was dead; retrying on a new one", error=str(exc.orig))
        return await operation()

    async def _commit(self, conn: AsyncConnection, inserted: Collection[TradeKey]) -> None:
        if self._doubt is None or not inserted:  # nothing inserted: nothing can be owed
            await conn.commit()
        else:
            await self._doubt.commit(conn, inserted)

    def _insert_trades_sql(self, rows: int, *, returning: bool = True) -> str:
        """Driver-level SQL for a ``rows``-row insert, compiled by the engine's dialect."""
        sql = self._trade_sql.get((rows, returning))
        if sql is None:
            blank = dict.fromkeys(_TRADE_COLUMNS)
            insert = self._insert(trades_table).values([blank] * rows).on_conflict_do_nothing()
            stmt = (
                insert.returning(
                    trades_table.c.exchange, trades_table.c.symbol, trades_table.c.trade_id
                )
                if returning
                else insert
            )
            compiled = stmt.compile(dialect=self._engine.dialect)
            # Parameters are passed positionally in row-major order; make sure the
            # compiled statement agrees before trusting it with data.
            expected = [f"{col}_m{i}" for i in range(rows) for col in _TRADE_COLUMNS]
            if list(compiled.positiontup or ()) != expected:
                raise StorageError(f"{self._engine.dialect.name}: unexpected insert layout")
            sql = self._trade_sql[(rows, returning)] = str(compiled)
        return sql

    # ---- writes ---------------------------------------------------------------------

    async def insert_trades(self, trades: Sequence[Trade]) -> list[Trade]:
        """Insert the trades not stored yet and return those, in input order.

        A trade repeated within ``trades`` counts once (its first occurrence).
        """
        unique: dict[TradeKey, Trade] = {}
        for t in trades:
            unique.setdefault((t.exchange, t.symbol, t.id), t)
        if not unique:
            return []
        pending = list(unique.values())
        with self._errors():
            if self._inline is not None:
                new_keys = await self._insert_inline(self._inline, pending)
                if new_keys is None:
                    return pending
                return [t for key, t in unique.items() if key in new_keys]
            if self._partitions is not None:
                await self._partitions.prepare([t.ts for t in pending])
            accepted = await self._reconnecting(lambda: self._insert_driver(pending, unique.keys()))
        if accepted is None:
            return pending
        if self._doubt is not None:
            accepted |= self._doubt.owed(unique)
        if len(accepted) == len(pending):
            return pending
        return [t for key, t in unique.items() if key in accepted]

    async def _insert_driver(
        self, pending: list[Trade], keys: Collection[TradeKey]
    ) -> set[tuple[Any, ...]] | None:
        """Insert through the async driver; None when every trade was new, else the
        keys of those that were."""
        if self._doubt is not None:
            await self._doubt.resolve(self._engine)
        if await self._insert_all_new(pending, keys):
            return None
        accepted: set[tuple[Any, ...]] = set()
        async with self._engine.connect() as conn:
            await conn.begin()
            for chunk in self._chunks(pending):
                params = tuple(chain.from_iterable(map(_trade_values, chunk)))
                result = await conn.exec_driver_sql(self._insert_trades_sql(len(chunk)), params)
                accepted.update(map(tuple, result))
            await self._commit(conn, accepted)
        return accepted

    async def _insert_inline(
        self, inline: InlineSqlite, pending: list[Trade]
    ) -> set[tuple[Any, ...]] | None:
        """Insert on the inline SQLite connection; None when every trade was new,
        else the keys of those that were."""
        async with inline.transaction() as con:
            # Optimistic first (no RETURNING); on a duplicate, again with RETURNING
            # inside the same transaction, so the write lock is taken only once.
            con.execute("SAVEPOINT optimistic")
            inserted = 0
            for chunk in self._chunks(pending):
                params = tuple(chain.from_iterable(map(_trade_values, chunk)))
                sql = self._insert_trades_sql(len(chunk), returning=False)
                inserted += con.execute(sql, params).rowcount
            if inserted == len(pending):
                return None
            con.execute("ROLLBACK TO optimistic")
            accepted: set[tuple[Any, ...]] = set()
            for chunk in self._chunks(pending):
                params = tuple(chain.from_iterable(map(_trade_values, chunk)))
                accepted.update(con.execute(self._insert_trades_sql(len(chunk)), params))
            return accepted

    def _chunks(self, trades: list[Trade]) -> Iterator[list[Trade]]:
        start = 0
        for size in _chunk_sizes(len(trades), self._chunk_rows):
            yield trades[start : start + size]
            start += size

    async def _insert_all_new(self, pending: list[Trade], keys: Collection[TradeKey]) -> bool:
        """Insert without RETURNING; commit and say True only if no row was a duplicate."""
        async with self._engine.connect() as conn:
            trans = await conn.begin()
            inserted = 0
            for chunk in self._chunks(pending):
                params = tuple(chain.from_iterable(map(_trade_values, chunk)))
                sql = self._insert_trades_sql(len(chunk), returning=False)
                result = await conn.exec_driver_sql(sql, params)
                inserted += result.rowcount
            if inserted == len(pending):
                await self._commit(conn, keys)
                return True
            await trans.rollback()
            return False

    async def upsert_candles(self, candles: Sequence[Candle]) -> None:
        """Insert or replace candles by natural key; the last of duplicates wins."""
        latest: dict[tuple[str, str, str, int], Candle] = {}
        for c in candles:
            latest[(c.exchange, c.symbol, c.interval, c.open_time)] = c
        if not latest:
            return
        rows = [
            {name: getattr(c, name) for name in _CANDLE_KEY + _CANDLE_VALUES}
            for c in latest.values()
        ]
        stmt = self._insert(candles_table)
        # PostgreSQL rejects an upsert touching one row twice; the dedupe above
        # prevents that, and makes SQLite behave the same.
        upsert = stmt.on_conflict_do_update(
            index_elements=[candles_table.c[name] for name in _CANDLE_KEY],
            set_={name: stmt.excluded[name] for name in _CANDLE_VALUES},
        )
        with self._errors():
            if self._inline is not None:
                await self._upsert_inline(self._inline, upsert, rows)
                return
            if self._partitions is not None:
                await self._partitions.prepare([c.open_time for c in latest.values()])
            await self._reconnecting(lambda: self._upsert_driver(upsert, rows))

    async def _upsert_driver(self, stmt: Any, rows: list[dict[str, Any]]) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(stmt, rows)

    async def _upsert_inline(
        self, inline: InlineSqlite, stmt: Any, rows: list[dict[str, Any]]
    ) -> None:
        if self._candle_sql is None:
            compiled = stmt.compile(dialect=self._engine.dialect)
            self._candle_sql = (str(compiled), list(compiled.positiontup or ()))
        sql, names = self._candle_sql
        async with inline.transaction() as con:
            con.executemany(sql, [tuple(row[n] for n in names) for row in rows])

    # ---- reads ----------------------------------------------------------------------

    async def _all(self, stmt: Select[*tuple[Any, ...]]) -> Sequence[AnyRow]:
        with self._errors():
            return await self._reconnecting(lambda: self._fetch_all(stmt))

    async def _fetch_all(self, stmt: Select[*tuple[Any, ...]]) -> Sequence[AnyRow]:
        async with self._engine.connect() as conn:
            return (await conn.execute(stmt)).all()

    async def get_candles(
        self,
        exchange: str,
        symbol: str,
        interval: str,
        *,
        start: int | None = None,
        end: int | None = None,
        limit: int = 500,
        newest_first: bool = False,
    ) -> list[Candle]:
        """Candles with ``start <= open_time < end``; ``limit`` counts from the ordered end."""
        if limit <= 0:
            return []
        stmt = select(*_CANDLE_SELECT).where(
            candles_table.c.exchange == exchange,
            candles_table.c.symbol == symbol,
            candles_table.c.interval == interval,
        )
        if start is not None:
            stmt = stmt.where(candles_table.c.open_time >= start)
        if end is not None:
            stmt = stmt.where(candles_table.c.open_time < end)
        order = (
            candles_table.c.open_time.desc() if newest_first else candles_table.c.open_time.asc()
        )
        return [_candle(r) for r in await self._all(stmt.order_by(order).limit(limit))]

    async def get_trades(
        self,
        exchange: str,
        symbol: str,
        *,
        start: int | None = None,
        end: int | None = None,
        limit: int = 1000,
    ) -> list[Trade]:
        """Trades with ``start <= ts < end``, oldest first (ties by trade id)."""
        if limit <= 0:
            return []
        stmt = select(*_TRADE_SELECT).where(
            trades_table.c.exchange == exchange, trades_table.c.symbol == symbol
        )
        if start is not None:
            stmt = stmt.where(trades_table.c.ts >= start)
        if end is not None:
            stmt = stmt.where(trades_table.c.ts < end)
        stmt = stmt.order_by(trades_table.c.ts, trades_table.c.trade_id).limit(limit)
        return [_trade(r) for r in await self._all(stmt)]

    async def iter_trades(
        self, exchange: str, *, start: int, batch_size: int = 10_000
    ) -> AsyncIterator[list[Trade]]:
        """All trades of ``exchange`` with ``ts >= start`` in (ts, id) order, in batches.

        Keyset pagination on (ts, trade_id, symbol) -- the symbol breaks ties
        between markets that reuse trade ids -- so each batch is an index range
        scan however deep the replay, and no connection is held between batches.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        base = (
            select(*_TRADE_SELECT)
            .where(trades_table.c.exchange == exchange, trades_table.c.ts >= start)
            .order_by(trades_table.c.ts, trades_table.c.trade_id, trades_table.c.symbol)
            .limit(batch_size)
        )
        stmt = base
        while True:
            rows = await self._all(stmt)
            if not rows:
                return
            yield [_trade(r) for r in rows]
            if len(rows) < batch_size:
                return
            last = rows[-1]
            after = tuple_(
                trades_table.c.ts, trades_table.c.trade_id, trades_table.c.symbol
            ) > tuple_(last.ts, last.trade_id, last.symbol)
            stmt = base.where(after)

    async def last_trade_ts(self, exchange: str) -> int | None:
        rows = await self._all(
            select(func.max(trades_table.c.ts)).where(trades_table.c.exchange == exchange)
        )
        value = rows[0][0]
        return None if value is None else int(value)

    async def last_candle(self, exchange: str, symbol: str, interval: str) -> Candle | None:
        found = await self.get_candles(exchange, symbol, interval, limit=1, newest_first=True)
        return found[0] if found else None

    async def count_trades(self, exchange: str | None = None) -> int:
        stmt = select(func.count()).select_from(trades_table)
        if exchange is not None:
            stmt = stmt.where(trades_table.c.exchange == exchange)
        return int((await self._all(stmt))[0][0])

    async def count_candles(self, exchange: str | None = None) -> int:
        stmt = select(func.count()).select_from(candles_table)
        if exchange is not None:
            stmt = stmt.where(candles_table.c.exchange == exchange)
        return int((await self._all(stmt))[0][0])

    async def ping(self) -> None:
        """Fail with StorageError unless the database answers and has our tables."""
        with self._errors():
            await self._reconnecting(self._probe)

    async def _probe(self) -> None:
        async with self._engine.connect() as conn:
            for table in (trades_table, candles_table):
                await conn.execute(select(table.c.exchange).limit(1))

    async def close(self) -> None:
        if self._inline is not None:
            self._inline.close()
        await self._engine.dispose()
