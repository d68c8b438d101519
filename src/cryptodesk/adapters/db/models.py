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
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
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

# Portfolio (``ledger_store``): accounts, reported balances and the hash-chained
# ledger, all per tenant. Amounts are decimal text exactly as entered, so a
# stored entry re-encodes to the bytes its hash was computed over.
TENANT_LEN = 64
ACCOUNT_LEN = 64  # portfolio.ledger.MAX_ACCOUNT_LENGTH
ASSET_LEN = 32  # portfolio.ledger.MAX_ASSET_LENGTH
ENTRY_ID_LEN = 128  # portfolio.ledger.MAX_ID_LENGTH
HASH_LEN = 64  # sha256, hex

accounts = Table(
    "accounts",
    metadata,
    Column("tenant_id", String(TENANT_LEN), nullable=False),
    Column("name", String(ACCOUNT_LEN), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("exchange", String(EXCHANGE_LEN), nullable=True),  # ccxt id
    Column("chain", String(32), nullable=True),
    Column("address", String(256), nullable=True),
    Column("credentials", Text, nullable=True),  # Fernet token, never plaintext
    Column("note", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant_id", "name"),
    CheckConstraint("kind IN ('exchange', 'wallet', 'manual')", name="kind"),
    sqlite_with_rowid=False,
)

# The latest balance an account reported per asset (entered by hand or synced).
account_balances = Table(
    "account_balances",
    metadata,
    Column("tenant_id", String(TENANT_LEN), nullable=False),
    Column("account", String(ACCOUNT_LEN), nullable=False),
    Column("asset", String(ASSET_LEN), nullable=False),
    Column("amount", Text, nullable=False),
    Column("as_of", BigInteger, nullable=False),  # epoch ms the balance was true
    Column("source", String(16), nullable=False),
    PrimaryKeyConstraint("tenant_id", "account", "asset"),
    ForeignKeyConstraint(["tenant_id", "account"], ["accounts.tenant_id", "accounts.name"]),
    CheckConstraint("source IN ('manual', 'exchange', 'provider')", name="source"),
    sqlite_with_rowid=False,
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("tenant_id", String(TENANT_LEN), nullable=False),
    Column("seq", BigInteger, nullable=False),  # 1..n in append order
    Column("entry_id", String(ENTRY_ID_LEN), nullable=False),
    Column("ts", BigInteger, nullable=False),  # epoch ms, UTC
    Column("kind", String(16), nullable=False),
    Column("account", String(ACCOUNT_LEN), nullable=False),
    Column("asset", String(ASSET_LEN), nullable=False),
    Column("amount", Text, nullable=False),
    Column("counter_asset", String(ASSET_LEN), nullable=True),
    Column("counter_amount", Text, nullable=True),
    Column("fee_asset", String(ASSET_LEN), nullable=True),
    Column("fee_amount", Text, nullable=True),
    Column("to_account", String(ACCOUNT_LEN), nullable=True),
    Column("value", Text, nullable=True),
    Column("lot_ids", Text, nullable=False),  # JSON [[entry id, amount], ...]
    Column("note", Text, nullable=False),
    Column("subkind", String(32), nullable=True),
    Column("fee_value", Text, nullable=True),
    Column("reverses", String(ENTRY_ID_LEN), nullable=True),
    Column("external_id", String(ENTRY_ID_LEN), nullable=True),
    Column("tags", Text, nullable=False),  # JSON [tag, ...]
    Column("prev_hash", String(HASH_LEN), nullable=False),
    Column("hash", String(HASH_LEN), nullable=False),
    PrimaryKeyConstraint("tenant_id", "seq"),
    UniqueConstraint("tenant_id", "entry_id"),
    # NULLs are distinct on both databases: unique only where the exchange gave an id.
    UniqueConstraint("tenant_id", "account", "external_id"),
    ForeignKeyConstraint(["tenant_id", "account"], ["accounts.tenant_id", "accounts.name"]),
    ForeignKeyConstraint(["tenant_id", "to_account"], ["accounts.tenant_id", "accounts.name"]),
    Index(None, "tenant_id", "ts"),
    Index(None, "tenant_id", "reverses"),
)

# Where each tenant's chain ends; updated in the transaction that appends, and
# locked by it, so concurrent appends queue instead of forking the chain, and
# deleting the newest entries shows as a truncation.
ledger_heads = Table(
    "ledger_heads",
    metadata,
    Column("tenant_id", String(TENANT_LEN), nullable=False),
    Column("seq", BigInteger, nullable=False),  # 0: nothing appended yet
    Column("hash", String(HASH_LEN), nullable=False),
    PrimaryKeyConstraint("tenant_id"),
    sqlite_with_rowid=False,
)

# Daily portfolio snapshots (``snapshot_store``): each (account, asset) position of a
# tenant as valued at the close of a UTC day. Money is decimal text, as in the ledger;
# a price that was missing leaves price, market_value and unrealized NULL.
portfolio_snapshots = Table(
    "portfolio_snapshots",
    metadata,
    Column("tenant_id", String(TENANT_LEN), nullable=False),
    Column("day", String(10), nullable=False),  # YYYY-MM-DD, UTC
    Column("account", String(ACCOUNT_LEN), nullable=False),
    Column("asset", String(ASSET_LEN), nullable=False),
    Column("amount", Text, nullable=False),
    Column("cost_basis", Text, nullable=False),
    Column("price", Text, nullable=True),
    Column("market_value", Text, nullable=True),
    Column("realized", Text, nullable=False),  # cumulative to the day's close
    Column("unrealized", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),  # epoch ms the row was written
    # A tenant's days in order: the performance read is one range of this key.
    PrimaryKeyConstraint("tenant_id", "day", "account", "asset"),
    sqlite_with_rowid=False,
)

# Users, tenants, credentials and the security audit log (``auth_store``).
USER_ID_LEN = 32  # hex uuid
EMAIL_LEN = 254  # RFC 5321 path limit

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(TENANT_LEN), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("id"),
    sqlite_with_rowid=False,
)

users = Table(
    "users",
    metadata,
    Column("id", String(USER_ID_LEN), nullable=False),
    Column("tenant_id", String(TENANT_LEN), nullable=False),
    Column("email", String(EMAIL_LEN), nullable=False),  # lower-cased; one account per e-mail
    Column("password_hash", Text, nullable=False),  # argon2id, PHC string
    Column("role", String(16), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # Access tokens issued before this (epoch ms) are refused: "revoke all".
    Column("tokens_after", BigInteger, nullable=False),
    Column("disabled_at", BigInteger, nullable=True),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("email"),
    ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
    CheckConstraint("role IN ('viewer', 'trader', 'manager', 'admin')", name="role"),
    Index(None, "tenant_id"),
)

# Refresh tokens: only a hash is stored; each is used once and replaced by the
# next of its family, and a second use of a used one revokes the whole family.
refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", String(USER_ID_LEN), nullable=False),
    Column("tenant_id", String(TENANT_LEN), nullable=False),
    Column("user_id", String(USER_ID_LEN), nullable=False),
    Column("family_id", String(USER_ID_LEN), nullable=False),
    Column("token_hash", String(HASH_LEN), nullable=False),  # sha256 hex of the secret part
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("used_at", BigInteger, nullable=True),
    Column("revoked_at", BigInteger, nullable=True),
    PrimaryKeyConstraint("id"),
    ForeignKeyConstraint(["user_id"], ["users.id"]),
    Index(None, "user_id"),
    Index(None, "family_id"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(USER_ID_LEN), nullable=False),
    Column("tenant_id", String(TENANT_LEN), nullable=False),
    Column("user_id", String(USER_ID_LEN), nullable=False),
    Column("name", String(64), nullable=False),
    Column("prefix", String(32), nullable=False),  # shown to identify the key
    Column("key_hash", String(HASH_LEN), nullable=False),  # sha256 hex of the secret part
    Column("scopes", Text, nullable=False),  # JSON list of permissions
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=True),
    Column("last_used_at", BigInteger, nullable=True),
    Column("revoked_at", BigInteger, nullable=True),
    PrimaryKeyConstraint("id"),
    ForeignKeyConstraint(["user_id"], ["users.id"]),
    Index(None, "tenant_id"),
)

# Security events, one sha256 chain over the whole table (as the ledger's).
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, nullable=False),  # 1..n in append order
    Column("tenant_id", String(TENANT_LEN), nullable=True),  # NULL: no tenant known
    Column("ts", BigInteger, nullable=False),
    Column("event", String(32), nullable=False),
    Column("actor", String(EMAIL_LEN), nullable=True),
    Column("subject", String(EMAIL_LEN), nullable=True),
    Column("ip", String(64), nullable=True),
    Column("detail", Text, nullable=False),  # JSON object
    Column("prev_hash", String(HASH_LEN), nullable=False),
    Column("hash", String(HASH_LEN), nullable=False),
    PrimaryKeyConstraint("seq"),
    Index(None, "tenant_id", "seq"),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, nullable=False),  # always 1
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(HASH_LEN), nullable=False),
    PrimaryKeyConstraint("id"),
)

# Each tenant's order log (``order_log_store``): every command the order manager
# accepted, in order, as its JSON record. The log is the trading state's source of
# truth: replaying it rebuilds books, orders, fills, positions and paper balances.
order_log = Table(
    "order_log",
    metadata,
    Column("tenant_id", String(TENANT_LEN), nullable=False),
    Column("seq", BigInteger, nullable=False),  # 1..n per tenant, no gaps
    Column("ts", BigInteger, nullable=False),  # epoch ms, the manager's clock
    Column("record", Text, nullable=False),  # JSON object (trading/order_log.py)
    PrimaryKeyConstraint("tenant_id", "seq"),
    sqlite_with_rowid=False,
)
