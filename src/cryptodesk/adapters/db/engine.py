"""Build the AsyncEngine for a database URL and turn driver failures into one clear line.

SQLite is the embedded default, so its engine does what an operator would
otherwise have to: create the data directory and set the PRAGMAs that make a
single-file database fit for a busy ingest loop (WAL lets the API read while
ingest writes). PostgreSQL gets a pooled engine whose connections carry a
statement timeout, so one runaway query cannot pin a pooled connection.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# WAL: readers never block the writer. synchronous=NORMAL: with WAL a power cut
# can lose the last commits but never corrupts the file; the bus redelivers.
# busy_timeout: a second process (CLI, another role) waits instead of failing.
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=5000",
    "PRAGMA foreign_keys=ON",
)


class StorageError(Exception):
    """The database cannot be used; the message is one line an operator can act on."""


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for other databases and ``:memory:``."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def ensure_data_dir(url: str) -> None:
    """Create the SQLite file's directory, or raise StorageError saying why not."""
    path = sqlite_path(url)
    if path is None:
        return
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise StorageError(f"cannot create data directory {parent}: a file is in the way") from None
    except NotADirectoryError:
        raise StorageError(
            f"cannot create data directory {parent}: part of the path is a file"
        ) from None
    except OSError as exc:
        raise StorageError(
            f"cannot create data directory {parent}: {exc.strerror or exc}"
        ) from None
    if path.is_dir():
        raise StorageError(f"database path {path} is a directory, not a file")


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def create_engine(
    url: str,
    *,
    echo: bool = False,
    pool_size: int = 10,
    max_overflow: int = 10,
    pool_timeout: float = 10.0,
    statement_timeout_ms: int = 30_000,
    connect_timeout: float = 10.0,
    **kwargs: Any,
) -> AsyncEngine:
    """An AsyncEngine for ``url`` (``sqlite+aiosqlite://`` or ``postgresql+asyncpg://``).

    The pool and timeout options apply to PostgreSQL, where one process shares
    a server with many others: a query that runs longer than
    ``statement_timeout_ms`` (0 = no limit) is cancelled by the server instead
    of holding a connection forever, and a server that does not answer within
    ``connect_timeout`` seconds fails the request rather than hanging it.
    SQLite ignores them (one file, its own ``busy_timeout``). A ``poolclass``
    in ``kwargs`` (migrations use ``NullPool``) turns the pool sizes off.

    Nothing connects yet; the first query (``SqlMarketStore.ping``) does, and a
    failure there is a StorageError too.
    """
    if pool_size < 1 or max_overflow < 0:
        raise ValueError("pool_size must be >= 1 and max_overflow >= 0")
    if pool_timeout <= 0 or connect_timeout <= 0:
        raise ValueError("pool_timeout and connect_timeout must be > 0")
    if statement_timeout_ms < 0:
        raise ValueError("statement_timeout_ms must be >= 0 (0 = no limit)")
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StorageError(f"invalid database URL {url!r}") from None
    ensure_data_dir(url)
    if parsed.get_backend_name() == "postgresql":
        kwargs = _postgres_options(
            kwargs,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            statement_timeout_ms=statement_timeout_ms,
            connect_timeout=connect_timeout,
        )
    try:
        engine = create_async_engine(parsed, echo=echo, **kwargs)
    except (ArgumentError, ImportError, TypeError) as exc:
        raise StorageError(f"cannot use database URL {parsed!r}: {exc}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _set_sqlite_pragmas)
    return engine


def _postgres_options(
    kwargs: dict[str, Any],
    *,
    pool_size: int,
    max_overflow: int,
    pool_timeout: float,
    statement_timeout_ms: int,
    connect_timeout: float,
) -> dict[str, Any]:
    """Engine keywords for asyncpg: pool sizes, connect timeout, server settings."""
    out = dict(kwargs)
    if "poolclass" not in out:
        out.setdefault("pool_size", pool_size)
        out.setdefault("max_overflow", max_overflow)
        out.setdefault("pool_timeout", pool_timeout)
    connect_args = dict(out.get("connect_args", {}))
    connect_args.setdefault("timeout", connect_timeout)
    server_settings = dict(connect_args.get("server_settings", {}))
    server_settings.setdefault("statement_timeout", str(statement_timeout_ms))
    connect_args["server_settings"] = server_settings
    out["connect_args"] = connect_args
    return out


def storage_error(exc: BaseException, url: str | URL) -> StorageError:
    """Translate a driver or SQLAlchemy failure into one line naming the database."""
    where = _describe(url)
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    lines = str(orig).strip().splitlines()
    text = lines[0] if lines else type(orig).__name__
    lowered = text.lower()
    if isinstance(orig, sqlite3.Error) or "sqlite" in type(orig).__module__:
        if "not a database" in lowered or "malformed" in lowered:
            return StorageError(f"{where} is not a usable SQLite database (corrupt?): {text}")
        if "unable to open" in lowered:
            return StorageError(f"cannot open {where}: directory missing or not writable")
        if "readonly" in lowered or "read-only" in lowered:
            return StorageError(f"{where} is read-only: {text}")
        if "locked" in lowered or "busy" in lowered:
            return StorageError(f"{where} stayed locked by another process: {text}")
    if "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered):
        return StorageError(f"{where} has no cryptodesk tables: run `cryptodesk db upgrade`")
    return StorageError(f"database error on {where}: {text}")


def _describe(url: str | URL) -> str:
    """Name the database for an operator without ever showing a password."""
    if not isinstance(url, str):
        url = url.render_as_string(hide_password=True)
    path = sqlite_path(url)
    if path is not None:
        return f"database file {path}"
    try:
        return f"database {make_url(url).render_as_string(hide_password=True)}"
    except ArgumentError:
        return "database"


def dialect_insert(engine: AsyncEngine, table: Table) -> sqlite.Insert | postgresql.Insert:
    """The dialect's INSERT for ``engine``, which is where ``ON CONFLICT`` lives."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
