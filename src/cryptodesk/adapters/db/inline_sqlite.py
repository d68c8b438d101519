"""Write transactions on a plain ``sqlite3`` connection, run on the event loop's thread.

The busiest SQLite writers (trades, candles, signals, ledger entries) skip the
aiosqlite worker thread: a short synchronous transaction costs less than the
hand-over, and no second thread fights the loop for the GIL. What the loop's
thread must never do is *wait* for the file's write lock: the connection that
holds it may be an aiosqlite transaction of this very process, which can only
reach its COMMIT when the loop runs again. A blocking ``busy_timeout`` there
stalls the whole process for the full timeout, every time the two meet.

So this connection has ``busy_timeout=0``: ``BEGIN IMMEDIATE`` either takes
the lock at once or fails at once, and a failure is retried after an
``asyncio.sleep`` (1 ms, doubling to 50 ms) until ``lock_timeout`` seconds have
passed, the same patience the pooled connections get from their busy_timeout.
Once the lock is held, WAL mode lets the statements and the COMMIT run without
waiting on anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

from cryptodesk.adapters.db.engine import SQLITE_PRAGMAS

LOCK_TIMEOUT_S = 5.0
_FIRST_WAIT_S = 0.001
_LONGEST_WAIT_S = 0.05


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc).lower()


class InlineSqlite:
    """One lazily opened connection to ``path`` and its write transactions."""

    def __init__(self, path: Path, *, lock_timeout: float = LOCK_TIMEOUT_S) -> None:
        if lock_timeout < 0:
            raise ValueError("lock_timeout must be >= 0")
        self._path = path
        self._lock_timeout = lock_timeout
        self._con: sqlite3.Connection | None = None

    def connection(self) -> sqlite3.Connection:
        if self._con is None:
            con = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            for pragma in SQLITE_PRAGMAS:
                con.execute(pragma)
            con.execute("PRAGMA busy_timeout=0")  # never wait on the loop's thread
            self._con = con
        return self._con

    @property
    def in_transaction(self) -> bool:
        return self._con is not None and self._con.in_transaction

    async def begin(self) -> sqlite3.Connection:
        """The connection inside a fresh ``BEGIN IMMEDIATE``, the write lock held.

        Raises ``sqlite3.OperationalError`` (database is locked) when the lock
        stayed taken for ``lock_timeout`` seconds.
        """
        con = self.connection()
        deadline = time.monotonic() + self._lock_timeout
        wait = _FIRST_WAIT_S
        while True:
            if con.in_transaction:  # another task's transaction awaited something real
                raise RuntimeError("nested inline SQLite write transaction")
            try:
                con.execute("BEGIN IMMEDIATE")
                return con
            except sqlite3.OperationalError as exc:
                left = deadline - time.monotonic()
                if not _is_busy(exc) or left <= 0:
                    raise
            await asyncio.sleep(min(wait, left))
            wait = min(wait * 2, _LONGEST_WAIT_S)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` .. ``COMMIT``; rolled back if the body raises."""
        con = await self.begin()
        try:
            yield con
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        if con.in_transaction:
            con.execute("COMMIT")

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
