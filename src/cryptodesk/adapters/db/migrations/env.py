"""Alembic environment for the market-data store.

``cryptodesk.adapters.db.migrate`` hands in an open connection through
``config.attributes["connection"]`` (the normal path). Run by the ``alembic``
command instead (``alembic -c src/cryptodesk/adapters/db/alembic.ini -x url=...``),
it opens its own async engine on a private event loop.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection

from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.models import metadata


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    url = url or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no database URL: pass -x url=sqlite+aiosqlite:///path/to.db")
    return url


async def _migrate_with_own_engine(url: str) -> None:
    engine = create_engine(url, poolclass=pool.NullPool, statement_timeout_ms=0)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_migrate)
            await conn.commit()
    finally:
        await engine.dispose()


def run() -> None:
    if context.is_offline_mode():
        context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
    else:
        asyncio.run(_migrate_with_own_engine(_url()))


run()
