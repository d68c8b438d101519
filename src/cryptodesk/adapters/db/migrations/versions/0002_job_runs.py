"""Runs of scheduled jobs (prefetch), one row per run.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-20

A frozen snapshot of ``jobs_store.job_runs``. Unlike the market-data tables it
is small and not partitioned; the same DDL serves SQLite and PostgreSQL (on
SQLite the id is INTEGER so it aliases the rowid and counts up by itself).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_runs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(8), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("next_run_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_runs")),
        sa.CheckConstraint(
            "outcome IN ('ok', 'failed', 'skipped')", name=op.f("ck_job_runs_outcome")
        ),
    )
    op.create_index(op.f("ix_job_runs_job_id_id"), "job_runs", ["job_id", "id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_job_runs_job_id_id"), table_name="job_runs")
    op.drop_table("job_runs")
