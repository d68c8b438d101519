"""Trades and candles, keyed by their natural keys.

Revision ID: 0001
Revises:
Create Date: 2024-11-22

A frozen snapshot of ``models.py`` at this revision: migrations never import
the models, so editing a model later cannot rewrite history.

The schema is dialect-aware. SQLite gets the plain ``WITHOUT ROWID`` tables of
``models.py``. PostgreSQL gets the same columns as tables range-partitioned by
month on their epoch-ms time column (trades by ``ts``, candles by
``open_time``), a DEFAULT partition so no row is ever rejected, and the
partitions of the current and next month (``partitions.ensure_partitions``
keeps adding them). Differences on PostgreSQL, see docs/database.md:

- a partitioned table's primary key must contain the partition key, so the
  trades key is (exchange, symbol, ts, trade_id): an exchange never re-dates a
  trade, so a redelivered trade has the same ts and still hits ``ON CONFLICT``;
  with ts before trade_id the key also serves one market's time-range reads,
  which replaces SQLite's separate (exchange, symbol, ts, trade_id) index;
- text key columns use the "C" collation, so trade ids and symbols sort by
  code point as on SQLite and in Python, whatever the database's locale.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text(length: int, pg: bool) -> sa.String:
    return sa.String(length, collation="C") if pg else sa.String(length)


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "trades",
        sa.Column("exchange", _text(32, pg), nullable=False),
        sa.Column("symbol", _text(64, pg), nullable=False),
        sa.Column("trade_id", _text(128, pg), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("price", sa.Double(), nullable=False),
        sa.Column("amount", sa.Double(), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.PrimaryKeyConstraint(
            *(
                ("exchange", "symbol", "ts", "trade_id")
                if pg
                else ("exchange", "symbol", "trade_id")
            ),
            name=op.f("pk_trades"),
        ),
        sa.CheckConstraint("side IN ('buy', 'sell')", name=op.f("ck_trades_side")),
        sqlite_with_rowid=False,
        postgresql_partition_by="RANGE (ts)" if pg else None,
    )
    op.create_index(
        op.f("ix_trades_exchange_ts_trade_id_symbol"),
        "trades",
        ["exchange", "ts", "trade_id", "symbol"],
    )
    if not pg:
        op.create_index(
            op.f("ix_trades_exchange_symbol_ts_trade_id"),
            "trades",
            ["exchange", "symbol", "ts", "trade_id"],
        )
    op.create_table(
        "candles",
        sa.Column("exchange", _text(32, pg), nullable=False),
        sa.Column("symbol", _text(64, pg), nullable=False),
        sa.Column("interval", _text(8, pg), nullable=False),
        sa.Column("open_time", sa.BigInteger(), nullable=False),
        sa.Column("open", sa.Double(), nullable=False),
        sa.Column("high", sa.Double(), nullable=False),
        sa.Column("low", sa.Double(), nullable=False),
        sa.Column("close", sa.Double(), nullable=False),
        sa.Column("volume", sa.Double(), nullable=False),
        sa.Column("quote_volume", sa.Double(), nullable=False),
        sa.Column("trades", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "exchange", "symbol", "interval", "open_time", name=op.f("pk_candles")
        ),
        sqlite_with_rowid=False,
        postgresql_partition_by="RANGE (open_time)" if pg else None,
    )
    if pg:
        _create_partitions()


def _create_partitions() -> None:
    """DEFAULT plus this month and next (snapshot of ``partitions.py``'s naming)."""
    now = datetime.now(UTC)
    months = [(now.year, now.month)]
    months.append((now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1))
    for table in ("trades", "candles"):
        op.execute(f"CREATE TABLE IF NOT EXISTS {table}_default PARTITION OF {table} DEFAULT")
        for year, month in months:
            lo = int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)
            nxt = (year + 1, 1) if month == 12 else (year, month + 1)
            hi = int(datetime(*nxt, 1, tzinfo=UTC).timestamp() * 1000)
            op.execute(
                f"CREATE TABLE IF NOT EXISTS {table}_p{year:04d}_{month:02d} "
                f"PARTITION OF {table} FOR VALUES FROM ({lo}) TO ({hi})"
            )


def downgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    # Dropping a partitioned table drops its partitions and their indexes too.
    op.drop_table("candles")
    if not pg:
        op.drop_index(op.f("ix_trades_exchange_symbol_ts_trade_id"), table_name="trades")
    op.drop_index(op.f("ix_trades_exchange_ts_trade_id_symbol"), table_name="trades")
    op.drop_table("trades")
