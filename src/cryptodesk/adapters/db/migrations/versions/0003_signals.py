"""Signals, the signal runner's progress per series, and the stored rule set.

Revision ID: 0003
Revises: 0002
Create Date: 2025-02-10

A frozen snapshot of ``models.signals``, ``models.signal_progress`` and
``models.signal_rules``. Small tables, not partitioned; as in 0001, text key
columns use the "C" collation on PostgreSQL so listings sort by code point
as on SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text(length: int, pg: bool) -> sa.String:
    return sa.String(length, collation="C") if pg else sa.String(length)


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "signals",
        sa.Column("exchange", _text(32, pg), nullable=False),
        sa.Column("symbol", _text(64, pg), nullable=False),
        sa.Column("interval", _text(8, pg), nullable=False),
        sa.Column("open_time", sa.BigInteger(), nullable=False),
        sa.Column("rule_id", _text(64, pg), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("close", sa.Double(), nullable=False),
        sa.Column("indicator_values", sa.Text(), nullable=False),
        sa.Column("detected_at", sa.BigInteger(), nullable=False),
        sa.Column("published_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint(
            "exchange", "symbol", "interval", "open_time", "rule_id", name=op.f("pk_signals")
        ),
        sqlite_with_rowid=False,
    )
    op.create_index(op.f("ix_signals_open_time"), "signals", ["open_time"])
    op.create_table(
        "signal_progress",
        sa.Column("exchange", _text(32, pg), nullable=False),
        sa.Column("symbol", _text(64, pg), nullable=False),
        sa.Column("interval", _text(8, pg), nullable=False),
        sa.Column("open_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("exchange", "symbol", "interval", name=op.f("pk_signal_progress")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "signal_rules",
        sa.Column("scope", sa.String(32), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("rules", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("scope", name=op.f("pk_signal_rules")),
    )


def downgrade() -> None:
    op.drop_table("signal_rules")
    op.drop_table("signal_progress")
    op.drop_index(op.f("ix_signals_open_time"), table_name="signals")
    op.drop_table("signals")
