"""The order log of every tenant.

Revision ID: 0007
Revises: 0006
Create Date: 2025-04-01

A frozen snapshot of ``models.order_log``: one row per accepted order command,
keyed by (tenant, seq), the record as JSON text. Clustered on its key on SQLite
(``WITHOUT ROWID``); the tenant column uses the "C" collation on PostgreSQL, as
in 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "order_log",
        sa.Column(
            "tenant_id", sa.String(64, collation="C") if pg else sa.String(64), nullable=False
        ),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("record", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "seq", name=op.f("pk_order_log")),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("order_log")
