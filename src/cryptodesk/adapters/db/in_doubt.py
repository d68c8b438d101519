"""Trade inserts whose COMMIT got no answer: settled so that none is lost to the candles.

``insert_trades`` reports which trades were new, and the candle builder counts
only those. When the connection dies while COMMIT is in flight (the server
stopped or crashed, the network dropped), the client cannot know whether the
rows were stored. The caller retries the batch; had they been stored, the retry
would see only duplicates and those trades would never reach a candle.

So the transaction's id is read before COMMIT, and when COMMIT fails the id is
kept with the keys the transaction inserted. Before its next insert the store
asks the server how that transaction ended (``txid_status``, which PostgreSQL
offers for exactly this): committed, and its keys are owed to the caller, who
gets them as new the next time they are offered (the retry); aborted, and they
are forgotten (the retry inserts them itself); still running, and the insert
fails for now and is retried.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cryptodesk.adapters.db.engine import StorageError

log = structlog.get_logger(__name__)
TradeKey = tuple[str, str, str]


class CommitStillRunning(StorageError):
    """An earlier COMMIT whose answer was lost has not finished on the server yet."""


class InDoubtCommits:
    """One store's unanswered commits and the trade keys they owe its caller."""

    def __init__(self) -> None:
        self._unresolved: list[tuple[int, frozenset[TradeKey]]] = []
        self._owed: set[TradeKey] = set()

    @property
    def pending(self) -> bool:
        return bool(self._unresolved or self._owed)

    async def commit(self, conn: AsyncConnection, inserted: Iterable[TradeKey]) -> None:
        """Commit ``conn``'s transaction, which inserted ``inserted``; when COMMIT
        fails (or is cancelled) its outcome is remembered as in doubt."""
        found = await conn.exec_driver_sql("SELECT txid_current()")
        xid = int(found.scalar_one())
        try:
            await conn.commit()
        except BaseException:
            self.remember(xid, inserted)
            raise

    def remember(self, xid: int, inserted: Iterable[TradeKey]) -> None:
        self._unresolved.append((xid, frozenset(inserted)))

    async def resolve(self, engine: AsyncEngine) -> None:
        """Ask the server how every unanswered commit ended.

        Raises CommitStillRunning while one has not ended, and whatever the
        driver raises while the server is unreachable; nothing is lost either way.
        """
        if not self._unresolved:
            return
        async with engine.connect() as conn:
            while self._unresolved:
                xid, keys = self._unresolved[0]
                found = await conn.execute(text("SELECT txid_status(:xid)"), {"xid": xid})
                status = found.scalar()
                if status == "in progress":
                    raise CommitStillRunning(
                        f"transaction {xid} of an earlier trade insert is still committing"
                    )
                if status == "committed":
                    self._owed |= keys
                elif status is None:  # older than the server keeps commit status for
                    log.warning("outcome of an unanswered commit is unknown", xid=xid)
                self._unresolved.pop(0)

    def owed(self, keys: Iterable[TradeKey]) -> set[TradeKey]:
        """Those of ``keys`` stored by a commit the caller was told had failed.

        Each is returned once: the caller then counts it, as it would have had
        the commit been answered.
        """
        if not self._owed:
            return set()
        found = self._owed.intersection(keys)
        self._owed -= found
        return found
