"""Fixtures shared by every test directory.

Real servers (session-wide, one set per xdist worker): a server that cannot start
skips its tests on a developer's machine and fails the run under CI=true, where a
missing server is an error, never a skip.
"""

import os
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

from tests.servers import Servers, own_server


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    """No CRYPTODESK_* variable from the developer's shell, and an empty working directory
    (so no stray cryptodesk.toml is read)."""
    for key in list(os.environ):
        if key.startswith("CRYPTODESK_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Servers]:
    yield from own_server("postgres", "postgres")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Servers]:
    yield from own_server("redis", "redis")


@pytest.fixture(scope="session")
def kafka_server() -> Iterator[Servers]:
    yield from own_server("kafka", "kafka")


@pytest.fixture(scope="session")
def redis_url(redis_server: Servers) -> str:
    return redis_server.redis_url


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_server: Servers) -> str:
    """``host:port`` of the Kafka-protocol broker."""
    return f"127.0.0.1:{kafka_server.kafka_port}"


@pytest.fixture
async def postgres_url(postgres_server: Servers) -> object:
    """A fresh, empty database per test: ``postgresql+asyncpg://...``."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    dsn = f"postgresql://postgres@127.0.0.1:{postgres_server.postgres_port}/postgres"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield f"postgresql+asyncpg://postgres@127.0.0.1:{postgres_server.postgres_port}/{name}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
