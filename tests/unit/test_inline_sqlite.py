"""Inline SQLite writers wait for the file's write lock without stalling the event loop.

The lock may be held by an aiosqlite transaction of the same process, which can
only commit when the loop runs: a writer that blocked the loop's thread on the
lock would hold up both for the whole busy timeout and then fail.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptodesk.adapters.db import migrate
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.inline_sqlite import InlineSqlite
from cryptodesk.adapters.db.ledger_store import SqlLedgerStore
from cryptodesk.adapters.db.signal_store import SqlSignalStore
from cryptodesk.adapters.db.sql_store import SqlMarketStore
from cryptodesk.portfolio.accounts import Account
from tests.contracts import signal_store_contract as signals
from tests.contracts.store_contract import T0, candle, trade

Write = Callable[[AsyncEngine], Awaitable[object]]


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'lock.db'}"
    await asyncio.to_thread(migrate.upgrade, url)
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE scratch (x INTEGER)"))
    yield engine
    await engine.dispose()


async def _trades(engine: AsyncEngine) -> object:
    store = SqlMarketStore(engine)
    try:
        return await store.insert_trades([trade("1", T0), trade("2", T0 + 1)])
    finally:
        await store.close()


async def _candles(engine: AsyncEngine) -> object:
    store = SqlMarketStore(engine)
    try:
        await store.upsert_candles([candle(T0)])
        return await store.count_candles()
    finally:
        await store.close()


async def _signals(engine: AsyncEngine) -> object:
    store = SqlSignalStore(engine)
    try:
        await store.commit(signals.BTC, signals.T0, after=None, fired=[])
        return await store.progress(signals.BTC)
    finally:
        await store.close()


async def _account(engine: AsyncEngine) -> object:
    store = SqlLedgerStore(engine)
    try:
        return await store.insert_account(
            "acme", Account("main", "manual", None, None, None, "", False, T0), None
        )
    finally:
        await store.close()


WRITES: dict[str, tuple[Write, object]] = {
    "trades": (_trades, [trade("1", T0), trade("2", T0 + 1)]),
    "candles": (_candles, 1),
    "signals": (_signals, signals.T0),
    "ledger": (_account, True),
}


@pytest.mark.parametrize("name", sorted(WRITES))
async def test_a_write_waits_for_this_processs_own_aiosqlite_transaction(
    engine: AsyncEngine, name: str
) -> None:
    write, expected = WRITES[name]
    steps: list[str] = []
    locked = asyncio.Event()

    async def holder() -> None:
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO scratch VALUES (1)"))  # takes the write lock
            locked.set()
            for _ in range(5):  # the transaction spans loop turns and real time
                await asyncio.sleep(0.01)
            steps.append("holder commits")
        steps.append("holder committed")

    held = asyncio.create_task(holder())
    await locked.wait()
    result = await write(engine)
    steps.append("write done")
    await held
    assert result == expected
    assert steps == ["holder commits", "holder committed", "write done"]


async def test_the_loop_runs_while_the_lock_is_awaited_and_a_timeout_says_locked(
    tmp_path: Path,
) -> None:
    path = tmp_path / "held.db"
    other = sqlite3.connect(path, isolation_level=None)  # another process, in effect
    other.execute("PRAGMA journal_mode=WAL")  # as every cryptodesk connection sets it
    other.execute("CREATE TABLE t (x INTEGER)")
    other.execute("BEGIN IMMEDIATE")
    inline = InlineSqlite(path, lock_timeout=0.2)
    turns = 0

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await inline.begin()
        assert turns > 1  # the loop was never held while the lock was awaited
        assert not inline.in_transaction
        other.execute("COMMIT")
        async with inline.transaction() as con:  # free now: taken at once
            con.execute("INSERT INTO t VALUES (7)")
        assert other.execute("SELECT x FROM t").fetchall() == [(7,)]
    finally:
        ticking.cancel()
        inline.close()
        other.close()


async def test_a_failed_body_rolls_back_and_a_nested_transaction_is_a_bug(tmp_path: Path) -> None:
    path = tmp_path / "nested.db"
    inline = InlineSqlite(path)
    try:
        inline.connection().execute("CREATE TABLE t (x INTEGER)")

        async def failing_body() -> None:
            async with inline.transaction() as con:
                con.execute("INSERT INTO t VALUES (1)")
                raise ZeroDivisionError

        with pytest.raises(ZeroDivisionError):
            await failing_body()
        assert not inline.in_transaction
        async with inline.transaction() as con:
            with pytest.raises(RuntimeError, match="nested"):
                await inline.begin()
            con.execute("INSERT INTO t VALUES (2)")
        assert inline.connection().execute("SELECT x FROM t").fetchall() == [(2,)]
        with pytest.raises(ValueError, match="lock_timeout"):
            InlineSqlite(path, lock_timeout=-1)
    finally:
        inline.close()
