"""Daily portfolio snapshots.

Revision ID: 0005
Revises: 0004
Create Date: 2025-03-08

A frozen snapshot of ``models.portfolio_snapshots``: one row per tenant, UTC
day, account and asset. Not partitioned (a row per position per day); as in
0001, text key columns use the "C" collation on PostgreSQL so days and names
sort by code point as on SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text(length: int, pg: bool) -> sa.String:
    return sa.String(length, collation="C") if pg else sa.String(length)


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "portfolio_snapshots",
        sa.Column("tenant_id", _text(64, pg), nullable=False),
        sa.Column("day", _text(10, pg), nullable=False),
        sa.Column("account", _text(64, pg), nullable=False),
        sa.Column("asset", _text(32, pg), nullable=False),
        sa.Column("amount", sa.Text(), nullable=False),
        sa.Column("cost_basis", sa.Text(), nullable=False),
        sa.Column("price", sa.Text(), nullable=True),
        sa.Column("market_value", sa.Text(), nullable=True),
        sa.Column("realized", sa.Text(), nullable=False),
        sa.Column("unrealized", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "day", "account", "asset", name=op.f("pk_portfolio_snapshots")
        ),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("portfolio_snapshots")
