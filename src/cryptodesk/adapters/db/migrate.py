"""Apply and inspect Alembic migrations from code (CLI ``db upgrade``, embedded start-up).

The functions are synchronous so the CLI can call them directly and the runtime
through ``asyncio.to_thread``. Each opens its own async engine on a private
event loop; called from a thread that already runs a loop, that private loop
lives in a helper thread, so the functions work wherever they are called from.
The migration scripts ship inside the package, so an installed wheel can
migrate without a checkout.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from cryptodesk.adapters.db.engine import StorageError, create_engine, sqlite_path, storage_error

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

T = TypeVar("T")


def alembic_config() -> Config:
    """An Alembic Config pointing at the packaged migrations (no ini file)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head() -> str:
    """The newest revision the packaged migrations define."""
    found = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if found is None:  # pragma: no cover - the package always ships a revision
        raise StorageError("no migrations are packaged")
    return found


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision``; a no-op when already there."""

    def run(conn: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)

    _run(url, run, action=f"upgrade to {revision}")


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision`` (``base`` drops everything)."""

    def run(conn: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)

    _run(url, run, action=f"downgrade to {revision}")


def current(url: str) -> str | None:
    """The database's revision, or None when it was never migrated.

    A SQLite file that does not exist yet is reported as None without creating it.
    """
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return None

    def run(conn: Connection) -> str | None:
        return MigrationContext.configure(conn).get_current_revision()

    return _run(url, run, action="read the revision")


def _run(url: str, fn: Callable[[Connection], T], *, action: str) -> T:
    async def body() -> T:
        # No statement timeout: DDL on a large table may rightly take minutes.
        engine = create_engine(url, poolclass=pool.NullPool, statement_timeout_ms=0)
        try:
            async with engine.begin() as conn:
                return await conn.run_sync(fn)
        except CommandError as exc:
            raise StorageError(f"cannot {action}: {exc}") from exc
        except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
            raise storage_error(exc, url) from exc
        finally:
            await engine.dispose()

    return _run_on_private_loop(body)


def _run_on_private_loop(factory: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await factory()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    # This thread already runs a loop (a caller forgot to_thread): block it rather
    # than fail, running ours on a helper thread.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="migrate") as executor:
        return executor.submit(asyncio.run, main()).result()
