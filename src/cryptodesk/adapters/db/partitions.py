"""Monthly partitions of the market-data tables on PostgreSQL (a no-op on SQLite).

The migration creates ``trades`` and ``candles`` partitioned by range of their
epoch-ms time column, plus a DEFAULT partition that catches any row whose
month has no partition yet, so an insert is never rejected. Rows in DEFAULT
are correct but lose the benefits of partitioning (pruning, cheap retention by
``DROP TABLE``), so the scheduler calls :func:`ensure_partitions` to keep
partitions ready ahead of the clock, and the store calls it (through
:class:`PartitionsOnDemand`) before it first inserts rows of a month it has not
seen yet, such as a backfill of old history.

PostgreSQL refuses to create a partition while DEFAULT holds rows of its
range. When that happens the range's rows are moved: in one transaction,
holding an exclusive lock on the parent so no insert can slip in between,
they are deleted from DEFAULT into a temporary table, the partition is
created, and the rows are inserted back through the parent (which routes them
to the new partition). Readers wait for the lock, never see the rows missing,
and a failure rolls everything back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = structlog.get_logger(__name__)

# An insert waits for an on-demand partition, and every other writer of the
# table queues behind the lock request: give up early (rows go to DEFAULT).
ON_DEMAND_LOCK_TIMEOUT_MS = 2_000

# Parent table -> its partition-key column (epoch ms).
PARTITIONED = {"trades": "ts", "candles": "open_time"}


def month_start(year: int, month: int) -> int:
    """Epoch ms of the first instant of ``year-month`` (UTC); months may overflow."""
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)


def partition_name(table: str, year: int, month: int) -> str:
    return f"{table}_p{year:04d}_{month:02d}"


def months_from(around_ms: int, count: int) -> list[tuple[int, int]]:
    """``count`` consecutive (year, month) pairs starting with the month of ``around_ms``."""
    at = datetime.fromtimestamp(around_ms / 1000, tz=UTC)
    out = []
    for k in range(count):
        index = at.year * 12 + at.month - 1 + k
        out.append((index // 12, index % 12 + 1))
    return out


async def ensure_partitions(
    engine: AsyncEngine,
    *,
    months_ahead: int = 2,
    around_ms: int | None = None,
    lock_timeout_ms: int = 10_000,
) -> list[str]:
    """Create the monthly partitions of ``around_ms``'s month (default: now) and
    the ``months_ahead`` months after it, for trades and candles.

    Idempotent: returns the names of the partitions it created (empty when all
    existed, always on SQLite, and for a table that is not partitioned). Rows
    already in DEFAULT for a new partition's range are moved into it.
    ``lock_timeout_ms`` bounds the wait for the parent's lock, so maintenance
    behind a long read fails (and is retried at the next run) instead of
    queueing every insert behind it.
    """
    if months_ahead < 0:
        raise ValueError("months_ahead must be >= 0")
    if engine.dialect.name != "postgresql":
        return []
    async with engine.connect() as conn:
        parents = await conn.execute(
            text("SELECT relname FROM pg_class WHERE relkind = 'p' AND relname = ANY(:names)"),
            {"names": list(PARTITIONED)},
        )
        partitioned = set(parents.scalars())
    if around_ms is None:
        around_ms = int(datetime.now(UTC).timestamp() * 1000)
    created: list[str] = []
    for year, month in months_from(around_ms, months_ahead + 1):
        for table, column in PARTITIONED.items():
            if table not in partitioned:  # created by an older, unpartitioned 0001
                continue
            name = partition_name(table, year, month)
            async with engine.begin() as conn:
                if await _exists(conn, name):
                    continue
                await conn.execute(text(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}"))
                await conn.execute(text("SET LOCAL statement_timeout = 0"))
                lo, hi = month_start(year, month), month_start(year, month + 1)
                await _create(conn, table, column, name, lo, hi)
            created.append(name)
    return created


async def _exists(conn: AsyncConnection, name: str) -> bool:
    found = await conn.execute(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": name})
    return bool(found.scalar())


async def _create(
    conn: AsyncConnection, table: str, column: str, name: str, lo: int, hi: int
) -> None:
    # The lock first: with no concurrent insert, "DEFAULT has no rows in range"
    # stays true until the partition exists.
    await conn.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
    if await _exists(conn, name):  # another worker won the race while we waited
        return
    default = f"{table}_default"
    in_range = f"{column} >= {lo} AND {column} < {hi}"
    has_rows = await conn.execute(text(f"SELECT EXISTS (SELECT 1 FROM {default} WHERE {in_range})"))
    partition = (
        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} FOR VALUES FROM ({lo}) TO ({hi})"
    )
    if not has_rows.scalar():
        await conn.execute(text(partition))
        return
    moved = f"_moving_{name}"
    await conn.execute(text(f"CREATE TEMP TABLE {moved} (LIKE {table}) ON COMMIT DROP"))
    await conn.execute(
        text(
            f"WITH gone AS (DELETE FROM {default} WHERE {in_range} RETURNING *) "
            f"INSERT INTO {moved} SELECT * FROM gone"
        )
    )
    await conn.execute(text(partition))
    await conn.execute(text(f"INSERT INTO {table} SELECT * FROM {moved}"))


def month_index(ms: int) -> int:
    """``year * 12 + month - 1`` of the UTC month holding epoch ms ``ms``."""
    at = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return at.year * 12 + at.month - 1


class PartitionsOnDemand:
    """Creates the monthly partition of rows the store is about to insert.

    The scheduler keeps partitions ready ahead of the clock, but a backfill of
    old history, a replay, or a scheduler that has not run yet writes months
    it did not prepare; their rows would pile up in DEFAULT. Before an insert,
    the store hands the rows' times here: months already known to exist cost a
    set lookup; an unknown month is ensured once per process (idempotent and
    safe against other processes doing the same, see :func:`ensure_partitions`).

    A failure to create one is not the insert's failure: the rows go to
    DEFAULT, where they are stored correctly, and the month is tried again
    after ``retry_after`` seconds (the scheduler moves them out later).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        retry_after: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._enabled = engine.dialect.name == "postgresql"
        self._known: set[int] = set()
        self._retry_at: dict[int, float] = {}
        self._retry_after = retry_after
        self._clock = clock

    async def prepare(self, times: Sequence[int]) -> None:
        """Make sure the partitions for every epoch-ms time in ``times`` exist."""
        if not self._enabled or not times:
            return
        first, last = month_index(min(times)), month_index(max(times))
        if first == last:
            if first in self._known:
                return
            months = {first}
        else:  # rare: a batch across a month boundary, or scattered history
            months = {month_index(ms) for ms in times}
        for index in sorted(months - self._known):
            await self._ensure(index)

    async def _ensure(self, index: int) -> None:
        if self._clock() < self._retry_at.get(index, 0.0):
            return
        year, month = divmod(index, 12)
        try:
            await ensure_partitions(
                self._engine,
                months_ahead=0,
                around_ms=month_start(year, month + 1),
                lock_timeout_ms=ON_DEMAND_LOCK_TIMEOUT_MS,
            )
        except Exception as exc:
            self._retry_at[index] = self._clock() + self._retry_after
            log.warning(
                "cannot create partition on demand; rows go to DEFAULT",
                month=f"{year:04d}-{month + 1:02d}",
                error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            return
        self._retry_at.pop(index, None)
        self._known.add(index)
