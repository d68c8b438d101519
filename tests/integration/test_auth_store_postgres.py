"""The user store on PostgreSQL: first users of one new tenant created at once."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from cryptodesk.adapters.db import migrate
from cryptodesk.adapters.db.auth_store import SqlAuthStore, UserRow
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.models import tenants, users


async def test_concurrent_first_users_of_a_new_tenant_all_succeed(postgres_url: str) -> None:
    # Two engines stand for two API processes bootstrapping the same tenant at once;
    # a select-then-insert of the tenant row fails here with a unique violation.
    await asyncio.to_thread(migrate.upgrade, postgres_url)
    engines = [create_engine(postgres_url), create_engine(postgres_url)]
    try:
        stores = [SqlAuthStore(e) for e in engines]
        rows = [
            UserRow(
                id=f"race-u{i}",
                tenant_id="race-tenant",
                email=f"u{i}@race.example",
                password_hash="x",
                role="viewer",
                created_at=1,
                tokens_after=0,
            )
            for i in range(12)
        ]
        await asyncio.gather(*(stores[i % 2].create_user(row) for i, row in enumerate(rows)))
        async with engines[0].connect() as conn:
            tenant_rows = await conn.scalar(
                select(func.count()).select_from(tenants).where(tenants.c.id == "race-tenant")
            )
            user_rows = await conn.scalar(
                select(func.count()).select_from(users).where(users.c.tenant_id == "race-tenant")
            )
        assert (tenant_rows, user_rows) == (1, 12)
    finally:
        for engine in engines:
            await engine.dispose()
