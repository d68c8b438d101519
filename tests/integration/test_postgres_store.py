"""SqlMarketStore and its migrations on a real PostgreSQL (asyncpg).

The unchanged store contract, the migration checks the SQLite suite makes, and
what only PostgreSQL has: monthly partitions (ahead and on demand), text keys in
code-point order, server-side timeouts from ``create_engine``, and surviving
lost connections (a restarted server, a COMMIT whose answer never came).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptodesk.adapters.db import migrate, partitions
from cryptodesk.adapters.db.engine import StorageError, create_engine
from cryptodesk.adapters.db.in_doubt import CommitStillRunning, InDoubtCommits
from cryptodesk.adapters.db.partitions import ensure_partitions, month_start
from cryptodesk.adapters.db.sql_store import SqlMarketStore
from tests.contracts.store_contract import T0, StoreContract, all_trades, candle, trade
from tests.servers import Servers, own_server

# T0 is 2023-11-14: the migration partitions only the current and next month,
# so the contract's rows land in DEFAULT unless a test creates their partition.
NOV_2023 = month_start(2023, 11)
DEC_2023 = month_start(2023, 12)


def dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def migrated(url: str, **kwargs: object) -> SqlMarketStore:
    await asyncio.to_thread(migrate.upgrade, url)
    return SqlMarketStore(create_engine(url), **kwargs)  # type: ignore[arg-type]


async def fetch(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn(url))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def partitions_of(url: str, table: str) -> dict[str, str]:
    rows = await fetch(
        url,
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass",
        table,
    )
    return {r[0]: r[1] for r in rows}


async def rows_in(url: str, table: str) -> int:
    return int((await fetch(url, f"SELECT count(*) FROM ONLY {table}"))[0][0])


class TestPostgresStore(StoreContract):
    @pytest.fixture
    async def store(self, postgres_url: str) -> AsyncIterator[SqlMarketStore]:
        store = await migrated(postgres_url)
        yield store
        await store.close()


class TestPostgresStoreSmallChunksPartitioned(StoreContract):
    """Tiny statements, and T0's month partitioned (rows leave DEFAULT)."""

    @pytest.fixture
    async def store(self, postgres_url: str) -> AsyncIterator[SqlMarketStore]:
        store = await migrated(postgres_url, chunk_rows=3)
        await ensure_partitions(store.engine, around_ms=T0 - 30 * 86_400_000)
        yield store
        await store.close()


# ---- migrations -----------------------------------------------------------------------


async def test_upgrade_is_idempotent_and_reversible(postgres_url: str) -> None:
    assert await asyncio.to_thread(migrate.current, postgres_url) is None
    await asyncio.to_thread(migrate.upgrade, postgres_url)
    assert await asyncio.to_thread(migrate.current, postgres_url) == migrate.head()
    store = SqlMarketStore(create_engine(postgres_url))
    try:
        await store.insert_trades([trade("1")])
        await asyncio.to_thread(migrate.upgrade, postgres_url)  # again: a no-op
        assert await store.count_trades() == 1
    finally:
        await store.close()
    await asyncio.to_thread(migrate.downgrade, postgres_url, "base")
    assert await asyncio.to_thread(migrate.current, postgres_url) is None
    left = await fetch(postgres_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    assert [r[0] for r in left] == ["alembic_version"]  # partitions went with their parents
    await asyncio.to_thread(migrate.upgrade, postgres_url)
    assert await asyncio.to_thread(migrate.current, postgres_url) == migrate.head()


async def test_tables_are_partitioned_by_month(postgres_url: str) -> None:
    await asyncio.to_thread(migrate.upgrade, postgres_url)
    for table, column in (("trades", "ts"), ("candles", "open_time")):
        (strategy,) = await fetch(
            postgres_url,
            "SELECT pg_get_partkeydef($1::regclass)",
            table,
        )
        assert strategy[0] == f"RANGE ({column})"
        parts = await partitions_of(postgres_url, table)
        assert parts[f"{table}_default"] == "DEFAULT"
        assert len(parts) == 3  # DEFAULT, this month, next month
    (pk,) = await fetch(
        postgres_url,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'pk_trades'",
    )
    assert pk[0] == "PRIMARY KEY (exchange, symbol, ts, trade_id)"


async def test_unknown_revision_is_a_storage_error(postgres_url: str) -> None:
    with pytest.raises(StorageError, match="cannot upgrade to nope"):
        await asyncio.to_thread(migrate.upgrade, postgres_url, "nope")


# ---- partitions -----------------------------------------------------------------------


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[SqlMarketStore]:
    store = await migrated(postgres_url)
    yield store
    await store.close()


async def test_ensure_partitions_is_idempotent(store: SqlMarketStore, postgres_url: str) -> None:
    created = await ensure_partitions(store.engine, months_ahead=2, around_ms=NOV_2023 + 5)
    assert created == [
        f"{table}_p{month}"
        for month in ("2023_11", "2023_12", "2024_01")
        for table in ("trades", "candles")
    ]
    assert await ensure_partitions(store.engine, months_ahead=2, around_ms=NOV_2023 + 5) == []
    parts = await partitions_of(postgres_url, "trades")
    assert (
        parts["trades_p2023_12"] == f"FOR VALUES FROM ('{DEC_2023}') TO ('{month_start(2024, 1)}')"
    )


async def test_ensure_partitions_moves_rows_out_of_default(postgres_url: str) -> None:
    store = await migrated(postgres_url, create_partitions=False)
    try:
        await _moves_rows_out_of_default(store, postgres_url)
    finally:
        await store.close()


async def _moves_rows_out_of_default(store: SqlMarketStore, postgres_url: str) -> None:
    before = [trade(str(i), NOV_2023 + i * 3_600_000) for i in range(24 * 30)]
    dec = [trade("dec", DEC_2023)]
    await store.insert_trades(before + dec)
    await store.upsert_candles([candle(NOV_2023), candle(DEC_2023 - 60_000), candle(DEC_2023)])
    assert await rows_in(postgres_url, "trades_default") == 721
    assert await ensure_partitions(store.engine, months_ahead=0, around_ms=NOV_2023) == [
        "trades_p2023_11",
        "candles_p2023_11",
    ]
    assert await rows_in(postgres_url, "trades_p2023_11") == 720
    assert await rows_in(postgres_url, "trades_default") == 1  # December stays put
    assert await rows_in(postgres_url, "candles_p2023_11") == 2
    assert await rows_in(postgres_url, "candles_default") == 1
    # Nothing lost or duplicated, and the moved rows still deduplicate.
    assert await all_trades(store, "sim") == before + dec
    assert await store.insert_trades([*before[:10], trade("new", NOV_2023 + 1)]) == [
        trade("new", NOV_2023 + 1)
    ]
    assert await store.count_candles() == 3


async def test_ensure_partitions_skips_unpartitioned_tables(postgres_url: str) -> None:
    # A database migrated before partitioning existed keeps plain tables.
    conn = await asyncpg.connect(dsn(postgres_url))
    try:
        await conn.execute("CREATE TABLE trades (ts bigint)")
        await conn.execute("CREATE TABLE candles (open_time bigint)")
    finally:
        await conn.close()
    engine = create_engine(postgres_url)
    try:
        assert await ensure_partitions(engine) == []
    finally:
        await engine.dispose()


async def test_ensure_partitions_validates_and_skips_sqlite(tmp_path: object) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/x.db")
    try:
        assert await ensure_partitions(engine) == []
        with pytest.raises(ValueError, match="months_ahead"):
            await ensure_partitions(engine, months_ahead=-1)
    finally:
        await engine.dispose()


MAR_2019 = month_start(2019, 3)
APR_2019 = month_start(2019, 4)


async def where_rows_are(url: str, table: str, column: str) -> dict[int, str]:
    """Partition-key value -> the partition that physically holds the row."""
    rows = await fetch(url, f"SELECT {column}, tableoid::regclass::text FROM {table}")
    return {r[0]: r[1] for r in rows}


async def test_partitions_are_created_on_demand_once_per_month(
    store: SqlMarketStore, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int | None] = []

    async def counted(engine: AsyncEngine, **kwargs: int) -> list[str]:
        calls.append(kwargs.get("around_ms"))
        return await ensure_partitions(engine, **kwargs)

    monkeypatch.setattr(partitions, "ensure_partitions", counted)
    march = [trade(str(i), MAR_2019 + i * 60_000) for i in range(100)]
    assert await store.insert_trades(march) == march
    await store.upsert_candles([candle(MAR_2019), candle(MAR_2019 + 60_000)])
    assert len(calls) == 1  # the candles' month was prepared with the trades'
    parts = await partitions_of(postgres_url, "trades")
    assert parts["trades_p2019_03"] == f"FOR VALUES FROM ('{MAR_2019}') TO ('{APR_2019}')"
    assert "candles_p2019_03" in await partitions_of(postgres_url, "candles")
    assert set((await where_rows_are(postgres_url, "trades", "ts")).values()) == {"trades_p2019_03"}
    assert set((await where_rows_are(postgres_url, "candles", "open_time")).values()) == {
        "candles_p2019_03"
    }

    more = [trade(f"m{i}", MAR_2019 + 3_600_000 + i) for i in range(10)]
    assert await store.insert_trades(more) == more
    await store.upsert_candles([candle(MAR_2019 + 120_000)])
    assert len(calls) == 1  # a known month costs no query

    # A batch across a month boundary prepares the month it had not seen.
    edge = [trade("end", APR_2019 - 1), trade("start", APR_2019)]
    assert await store.insert_trades(edge) == edge
    assert len(calls) == 2
    placed = await where_rows_are(postgres_url, "trades", "ts")
    assert placed[APR_2019 - 1] == "trades_p2019_03"
    assert placed[APR_2019] == "trades_p2019_04"
    assert await rows_in(postgres_url, "trades_default") == 0
    assert await rows_in(postgres_url, "candles_default") == 0


async def test_on_demand_partition_moves_rows_already_in_default(postgres_url: str) -> None:
    # Rows written by a store that did not prepare the month (an older version)
    # move out of DEFAULT when another store first writes that month.
    old = await migrated(postgres_url, create_partitions=False)
    try:
        await old.insert_trades([trade("old", MAR_2019 + 1)])
    finally:
        await old.close()
    assert await rows_in(postgres_url, "trades_default") == 1
    new = SqlMarketStore(create_engine(postgres_url))
    try:
        assert await new.insert_trades([trade("old", MAR_2019 + 1), trade("new", MAR_2019)]) == [
            trade("new", MAR_2019)
        ]
    finally:
        await new.close()
    assert await rows_in(postgres_url, "trades_default") == 0
    assert await rows_in(postgres_url, "trades_p2019_03") == 2


async def test_failed_partition_creation_does_not_fail_the_insert(
    store: SqlMarketStore, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0

    async def refused(engine: AsyncEngine, **kwargs: int) -> list[str]:
        nonlocal calls
        calls += 1
        raise RuntimeError("permission denied for schema public")

    monkeypatch.setattr(partitions, "ensure_partitions", refused)
    assert await store.insert_trades([trade("1", MAR_2019)]) == [trade("1", MAR_2019)]
    assert await store.insert_trades([trade("2", MAR_2019)]) == [trade("2", MAR_2019)]
    assert calls == 1  # not retried on every insert
    assert await rows_in(postgres_url, "trades_default") == 2


# ---- lost connections -----------------------------------------------------------------


async def terminate_sessions(url: str) -> int:
    """End every server session on ``url``'s database, as a server restart would."""
    rows = await fetch(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    return sum(1 for r in rows if r[0])


async def test_dead_pooled_connections_are_replaced_without_an_error(
    store: SqlMarketStore, postgres_url: str
) -> None:
    await store.insert_trades([trade("1")])
    steps = [
        ("ping", store.ping()),
        ("get_trades", store.get_trades("sim", "BTC/USDT")),
        ("insert_trades", store.insert_trades([trade("2")])),
        ("upsert_candles", store.upsert_candles([candle(T0)])),
        ("iter_trades", all_trades(store, "sim")),
    ]
    for name, step in steps:
        assert await terminate_sessions(postgres_url) >= 1, name  # the pool held one
        await step
    assert await all_trades(store, "sim") == [trade("1"), trade("2")]
    assert await store.count_candles() == 1


async def test_unanswered_commits_are_settled_by_the_server(postgres_url: str) -> None:
    await asyncio.to_thread(migrate.upgrade, postgres_url)
    engine = create_engine(postgres_url)
    admin = await asyncpg.connect(dsn(postgres_url))
    try:
        committed = await admin.fetchval("SELECT txid_current()")  # autocommit: committed
        rolled_back = admin.transaction()
        await rolled_back.start()
        aborted = await admin.fetchval("SELECT txid_current()")
        await rolled_back.rollback()
        running_tx = admin.transaction()
        await running_tx.start()
        running = await admin.fetchval("SELECT txid_current()")
        doubt = InDoubtCommits()
        doubt.remember(committed, [("sim", "X", "c")])
        doubt.remember(aborted, [("sim", "X", "a")])
        doubt.remember(running, [("sim", "X", "r")])
        with pytest.raises(CommitStillRunning):
            await doubt.resolve(engine)
        await running_tx.commit()
        await doubt.resolve(engine)
        offered = [("sim", "X", k) for k in "carz"]
        assert doubt.owed(offered) == {("sim", "X", "c"), ("sim", "X", "r")}
        assert doubt.owed(offered) == set()  # owed once
        assert not doubt.pending
    finally:
        await admin.close()
        await engine.dispose()


@pytest.fixture
def own_postgres() -> Iterator[Servers]:
    """A server of this test's own: its configuration may change."""
    yield from own_server("postgres", "pg-own")


async def test_trades_of_a_commit_whose_answer_was_lost_are_still_reported_new(
    own_postgres: Servers,
) -> None:
    """The connection dies after the server committed but before the client heard.

    A synchronous standby that does not exist makes COMMIT wait after the commit
    is durable; ending the session then is what a crash at that instant does.
    Without settling, the retry would find only duplicates and report none new,
    and those trades would never reach a candle.
    """
    url = own_postgres.postgres_url
    await asyncio.to_thread(migrate.upgrade, url)
    settings = {"synchronous_commit": "on", "application_name": "in-doubt"}
    store = SqlMarketStore(create_engine(url, connect_args={"server_settings": settings}))
    admin = await asyncpg.connect(dsn(url))
    try:
        await store.insert_trades([trade("warm")])  # partition and pool ready
        await admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
        await admin.execute("SELECT pg_reload_conf()")
        batch = [trade(str(i), T0 + i) for i in range(20)]
        insert = asyncio.create_task(store.insert_trades(batch))
        waiting = None
        for _ in range(500):
            waiting = await admin.fetchval(
                "SELECT pid FROM pg_stat_activity"
                " WHERE application_name = 'in-doubt' AND wait_event = 'SyncRep'"
            )
            if waiting is not None:
                break
            await asyncio.sleep(0.02)
        assert waiting is not None, "COMMIT never waited for the standby"
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", waiting)
        # The store retried on a new connection and learned the commit happened.
        assert await asyncio.wait_for(insert, 10) == batch
        await admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
        await admin.execute("SELECT pg_reload_conf()")
        assert await store.insert_trades(batch) == []
        assert await store.count_trades() == 21
    finally:
        await admin.close()
        await store.close()


# ---- PostgreSQL specifics -------------------------------------------------------------


@pytest.fixture
async def icu_url(postgres_url: str) -> AsyncIterator[str]:
    """A sibling database whose default collation is ICU en-US, like many servers'."""
    base, _, name = postgres_url.rpartition("/")
    icu = f"{name}_icu"
    admin = await asyncpg.connect(dsn(f"{base}/postgres"))
    try:
        await admin.execute(
            f'CREATE DATABASE "{icu}" TEMPLATE template0'
            " LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'"
        )
    except asyncpg.PostgresError as exc:  # pragma: no cover - server built without ICU
        await admin.close()
        pytest.skip(f"no ICU collation on this server: {exc}")
    try:
        yield f"{base}/{icu}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{icu}" WITH (FORCE)')
        await admin.close()


async def test_trade_ids_sort_by_code_point(icu_url: str) -> None:
    # The database's collation puts "a" before "B" and ignores "-"; the keyset
    # pagination of iter_trades needs the order Python (and SQLite) use.
    ids = ["B", "a", "-z", "_1", "Z9", "aa", "a-b", "ab", "ä", "10", "9"]
    (check,) = await fetch(icu_url, "SELECT array_agg(x ORDER BY x) FROM unnest($1::text[]) x", ids)
    assert check[0] != sorted(ids)  # the test would prove nothing on a C database
    store = await migrated(icu_url)
    try:
        await store.insert_trades([trade(i, T0, symbol=s) for i in ids for s in ("b/X", "B/X")])
        batches = [b async for b in store.iter_trades("sim", start=0, batch_size=3)]
        got = [(t.id, t.symbol) for b in batches for t in b]
        assert got == sorted((i, s) for i in ids for s in ("b/X", "B/X"))
    finally:
        await store.close()


async def test_floats_round_trip_bit_for_bit(store: SqlMarketStore) -> None:
    # Text round trips (extra_float_digits, numeric casts) would lose the last bits.
    values = [0.1 + 0.2, 1e-308, 5e-324, 1.7976931348623157e308, 123456.789012345678, 1 / 3]
    trades = [trade(str(i), T0 + i, price=v, amount=v) for i, v in enumerate(values)]
    await store.insert_trades(trades)
    back = await store.get_trades("sim", "BTC/USDT")
    assert [(t.price.hex(), t.amount.hex()) for t in back] == [(v.hex(), v.hex()) for v in values]
    await store.upsert_candles([candle(T0, close=1 / 3)])
    (c,) = await store.get_candles("sim", "BTC/USDT", "1m")
    assert c.close.hex() == (1 / 3).hex()


async def test_statement_timeout_is_applied(postgres_url: str) -> None:
    await asyncio.to_thread(migrate.upgrade, postgres_url)
    engine = create_engine(postgres_url, statement_timeout_ms=50, pool_size=2)
    try:
        async with engine.connect() as conn:
            shown = await conn.exec_driver_sql("SHOW statement_timeout")
            assert shown.scalar() == "50ms"
        with pytest.raises(DBAPIError, match="statement timeout"):
            async with engine.connect() as conn:
                await conn.exec_driver_sql("SELECT pg_sleep(5)")
        await SqlMarketStore(engine).ping()  # the pool is still usable afterwards
    finally:
        await engine.dispose()


def test_engine_options_are_validated() -> None:
    with pytest.raises(ValueError, match="pool_size"):
        create_engine("postgresql+asyncpg://u@127.0.0.1/db", pool_size=0)
    with pytest.raises(ValueError, match="statement_timeout_ms"):
        create_engine("postgresql+asyncpg://u@127.0.0.1/db", statement_timeout_ms=-1)


async def test_engine_reports_pool_settings() -> None:
    engine: AsyncEngine = create_engine(
        "postgresql+asyncpg://u@127.0.0.1/db", pool_size=3, max_overflow=4, pool_timeout=2.5
    )
    try:
        pool = engine.sync_engine.pool
        assert pool.size() == 3  # type: ignore[attr-defined]
        assert pool._max_overflow == 4  # type: ignore[attr-defined]
        assert pool._timeout == 2.5  # type: ignore[attr-defined]
    finally:
        await engine.dispose()
