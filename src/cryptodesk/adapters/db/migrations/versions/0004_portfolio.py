"""Portfolio: accounts, reported balances, the hash-chained ledger and its heads.

Revision ID: 0004
Revises: 0003
Create Date: 2025-03-01

A frozen snapshot of ``models.accounts``, ``models.account_balances``,
``models.ledger_entries`` and ``models.ledger_heads``. Small to medium tables,
not partitioned; as in 0001, text key columns use the "C" collation on
PostgreSQL so listings sort by code point as on SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text(length: int, pg: bool) -> sa.String:
    return sa.String(length, collation="C") if pg else sa.String(length)


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "accounts",
        sa.Column("tenant_id", _text(64, pg), nullable=False),
        sa.Column("name", _text(64, pg), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("exchange", sa.String(32), nullable=True),
        sa.Column("chain", sa.String(32), nullable=True),
        sa.Column("address", sa.String(256), nullable=True),
        sa.Column("credentials", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "name", name=op.f("pk_accounts")),
        sa.CheckConstraint(
            "kind IN ('exchange', 'wallet', 'manual')", name=op.f("ck_accounts_kind")
        ),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "account_balances",
        sa.Column("tenant_id", _text(64, pg), nullable=False),
        sa.Column("account", _text(64, pg), nullable=False),
        sa.Column("asset", _text(32, pg), nullable=False),
        sa.Column("amount", sa.Text(), nullable=False),
        sa.Column("as_of", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "account", "asset", name=op.f("pk_account_balances")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "account"],
            ["accounts.tenant_id", "accounts.name"],
            name=op.f("fk_account_balances_tenant_id_account_accounts"),
        ),
        sa.CheckConstraint(
            "source IN ('manual', 'exchange', 'provider')",
            name=op.f("ck_account_balances_source"),
        ),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "ledger_entries",
        sa.Column("tenant_id", _text(64, pg), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("entry_id", _text(128, pg), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("account", _text(64, pg), nullable=False),
        sa.Column("asset", _text(32, pg), nullable=False),
        sa.Column("amount", sa.Text(), nullable=False),
        sa.Column("counter_asset", _text(32, pg), nullable=True),
        sa.Column("counter_amount", sa.Text(), nullable=True),
        sa.Column("fee_asset", _text(32, pg), nullable=True),
        sa.Column("fee_amount", sa.Text(), nullable=True),
        sa.Column("to_account", _text(64, pg), nullable=True),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("lot_ids", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("subkind", sa.String(32), nullable=True),
        sa.Column("fee_value", sa.Text(), nullable=True),
        sa.Column("reverses", _text(128, pg), nullable=True),
        sa.Column("external_id", _text(128, pg), nullable=True),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "seq", name=op.f("pk_ledger_entries")),
        sa.UniqueConstraint(
            "tenant_id", "entry_id", name=op.f("uq_ledger_entries_tenant_id_entry_id")
        ),
        sa.UniqueConstraint(
            "tenant_id",
            "account",
            "external_id",
            name=op.f("uq_ledger_entries_tenant_id_account_external_id"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "account"],
            ["accounts.tenant_id", "accounts.name"],
            name=op.f("fk_ledger_entries_tenant_id_account_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "to_account"],
            ["accounts.tenant_id", "accounts.name"],
            name=op.f("fk_ledger_entries_tenant_id_to_account_accounts"),
        ),
    )
    op.create_index(op.f("ix_ledger_entries_tenant_id_ts"), "ledger_entries", ["tenant_id", "ts"])
    op.create_index(
        op.f("ix_ledger_entries_tenant_id_reverses"), "ledger_entries", ["tenant_id", "reverses"]
    )
    op.create_table(
        "ledger_heads",
        sa.Column("tenant_id", _text(64, pg), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_ledger_heads")),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("ledger_heads")
    op.drop_index(op.f("ix_ledger_entries_tenant_id_reverses"), table_name="ledger_entries")
    op.drop_index(op.f("ix_ledger_entries_tenant_id_ts"), table_name="ledger_entries")
    op.drop_table("ledger_entries")
    op.drop_table("account_balances")
    op.drop_table("accounts")
