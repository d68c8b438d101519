"""Trades and candles, keyed by their natural keys.

Revision ID: 0001
Revises:
Create Date: 2024-11-22

A frozen snapshot of ``models.py`` at this revision: migrations never import
the models, so editing a model later cannot rewrite history.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "trades",
        sa.Column("exchange", sa.String(32), nullable=False),
        sa.Column("symbol", sa.String(64), nullable=False),
        sa.Column("trade_id", sa.String(128), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("price", sa.Double(), nullable=False),
        sa.Column("amount", sa.Double(), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.PrimaryKeyConstraint("exchange", "symbol", "trade_id", name=op.f("pk_trades")),
        sa.CheckConstraint("side IN ('buy', 'sell')", name=op.f("ck_trades_side")),
        sqlite_with_rowid=False,
    )
    op.create_index(
        op.f("ix_trades_exchange_ts_trade_id_symbol"),
        "trades",
        ["exchange", "ts", "trade_id", "symbol"],
    )
    op.create_index(
        op.f("ix_trades_exchange_symbol_ts_trade_id"),
        "trades",
        ["exchange", "symbol", "ts", "trade_id"],
    )
    op.create_table(
        "candles",
        sa.Column("exchange", sa.String(32), nullable=False),
        sa.Column("symbol", sa.String(64), nullable=False),
        sa.Column("interval", sa.String(8), nullable=False),
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
    )


def downgrade() -> None:
    op.drop_table("candles")
    op.drop_index(op.f("ix_trades_exchange_symbol_ts_trade_id"), table_name="trades")
    op.drop_index(op.f("ix_trades_exchange_ts_trade_id_symbol"), table_name="trades")
    op.drop_table("trades")
