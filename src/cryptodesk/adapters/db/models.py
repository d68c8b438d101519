"""Tables of the store (SQLAlchemy Core): market data, runs of scheduled jobs, signals.

The market-data tables are keyed by their natural keys, so an at-least-once redelivery is
absorbed by ``ON CONFLICT`` instead of application bookkeeping. Migrations are
hand-written snapshots of these definitions; ``tests/unit/test_migrations.py``
compares them so the two cannot drift.

On SQLite both tables are ``WITHOUT ROWID``: the primary key is the table's own
B-tree, so a candle range read is one clustered scan and a trade insert
maintains one fewer B-tree than a rowid table plus a unique index would.

These definitions are the SQLite schema. On PostgreSQL the migration builds
the same columns as monthly range-partitioned tables, which changes the trades
key to (exchange, symbol, ts, trade_id) and gives text keys the "C" collation;
docs/database.md says why.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from cryptodesk.domain.jobs import JOB_ID_LEN

# Deterministic constraint names: Alembic can only alter or drop what it can name,
# and PostgreSQL and SQLite would otherwise invent different names.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# Lengths are generous upper bounds (SQLite ignores them; PostgreSQL enforces them):
# ccxt exchange ids are short, symbols like "1000SHIB/USDT:USDT" are longer,
# and some venues use UUID or 64-hex trade ids.
EXCHANGE_LEN = 32
SYMBOL_LEN = 64
TRADE_ID_LEN = 128
INTERVAL_LEN = 8

trades = Table(
    "trades",
    metadata,
    Column("exchange", String(EXCHANGE_LEN), nullable=False),
    Column("symbol", String(SYMBOL_LEN), nullable=False),
    Column("trade_id", String(TRADE_ID_LEN), nullable=False),
    Column("ts", BigInteger, nullable=False),  # epoch ms, UTC
    Column("price", Double, nullable=False),
    Column("amount", Double, nullable=False),
    Column("side", String(4), nullable=False),
    PrimaryKeyConstraint("exchange", "symbol", "trade_id"),
    CheckConstraint("side IN ('buy', 'sell')", name="side"),
    # Recovery replays one exchange from a time in (ts, trade_id) order; the key
    # columns make that order total, so keyset pagination never skips a trade.
    Index(None, "exchange", "ts", "trade_id", "symbol"),
    # One market's trades over a time range (API, backfill checks).
    Index(None, "exchange", "symbol", "ts", "trade_id"),
    sqlite_with_rowid=False,
)

candles = Table(
    "candles",
    metadata,
    Column("exchange", String(EXCHANGE_LEN), nullable=False),
    Column("symbol", String(SYMBOL_LEN), nullable=False),
    Column("interval", String(INTERVAL_LEN), nullable=False),
    Column("open_time", BigInteger, nullable=False),  # epoch ms, start of the bucket
    Column("open", Double, nullable=False),
    Column("high", Double, nullable=False),
    Column("low", Double, nullable=False),
    Column("close", Double, nullable=False),
    Column("volume", Double, nullable=False),  # base currency
    Column("quote_volume", Double, nullable=False),  # quote currency
    Column("trades", Integer, nullable=False),
    # The key is also the read path: one series, a range of open_time, either order.
    PrimaryKeyConstraint("exchange", "symbol", "interval", "open_time"),
    sqlite_with_rowid=False,
)

# Runs of scheduled jobs (``jobs_store``): small and never partitioned.
OWNER_LEN = 128
# On SQLite the id must be exactly INTEGER to alias the rowid (autoincrement).
_ID = BigInteger().with_variant(Integer(), "sqlite")

job_runs = Table(
    "job_runs",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("job_id", String(JOB_ID_LEN), nullable=False),
    Column("owner", String(OWNER_LEN), nullable=False),  # host:pid of the scheduler
    Column("started_at", BigInteger, nullable=False),  # epoch ms
    Column("finished_at", BigInteger, nullable=False),
    Column("outcome", String(8), nullable=False),
    Column("error", Text, nullable=True),
    Column("next_run_at", BigInteger, nullable=True),  # as the scheduler saw it after the run
    CheckConstraint("outcome IN ('ok', 'failed', 'skipped')", name="outcome"),
    # A job's newest runs: the listing and the pruning both read this way.
    Index(None, "job_id", "id"),
)

# Signal rules (``signal_store``): what fired, how far each series was evaluated,
# and the rule set the API stores. Small tables, never partitioned.
RULE_ID_LEN = 64
SIGNAL_KIND_LEN = 32

signals = Table(
    "signals",
    metadata,
    Column("exchange", String(EXCHANGE_LEN), nullable=False),
    Column("symbol", String(SYMBOL_LEN), nullable=False),
    Column("interval", String(INTERVAL_LEN), nullable=False),
    Column("open_time", BigInteger, nullable=False),  # the candle's, epoch ms
    Column("rule_id", String(RULE_ID_LEN), nullable=False),
    Column("kind", String(SIGNAL_KIND_LEN), nullable=False),
    Column("close", Double, nullable=False),
    Column("indicator_values", Text, nullable=False),  # JSON object, column -> number
    Column("detected_at", BigInteger, nullable=False),  # epoch ms the rule ran
    Column("published_at", BigInteger, nullable=True),  # NULL until on the bus (outbox)
    # The natural key, series first: one series' signals over time is one range.
    PrimaryKeyConstraint("exchange", "symbol", "interval", "open_time", "rule_id"),
    # Listings across series walk time.
    Index(None, "open_time"),
    sqlite_with_rowid=False,
)

signal_progress = Table(
    "signal_progress",
    metadata,
    Column("exchange", String(EXCHANGE_LEN), nullable=False),
    Column("symbol", String(SYMBOL_LEN), nullable=False),
    Column("interval", String(INTERVAL_LEN), nullable=False),
    Column("open_time", BigInteger, nullable=False),  # the newest candle evaluated
    PrimaryKeyConstraint("exchange", "symbol", "interval"),
    sqlite_with_rowid=False,
)

signal_rules = Table(
    "signal_rules",
    metadata,
    Column("scope", String(32), nullable=False),  # "default": one rule set for now
    Column("revision", BigInteger, nullable=False),  # +1 on every replacement
    Column("rules", Text, nullable=False),  # JSON list, as PUT /api/v1/signal-rules takes it
    Column("updated_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("scope"),
)
