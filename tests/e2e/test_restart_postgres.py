"""PostgreSQL stops under a running ``cryptodesk serve`` and comes back on its port:
the process stays up and says the database is down, ingest keeps publishing into
the bus (nothing is acked while writes fail), and once the server is back the
stored trades and candles are exactly those of an uninterrupted run.

The server is a dedicated one (the shared session server serves other tests).
Both runs replay one fixed simulated timeline, as in ``test_effectively_once``.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from cryptodesk.domain.market import Candle, Trade
from tests.e2e.conftest import Server, base_env, run_cli, start_server, wait_for
from tests.e2e.test_effectively_once import SETTINGS as TIMELINE
from tests.e2e.test_effectively_once import (
    count_candles,
    create_database,
    key,
    read,
    same_candle,
    same_timeline,
)
from tests.servers import (
    RESUMERS,
    Servers,
    own_server,
    stop_postgres,
)

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
WAIT_S = 120
# While the database is down, ingest must publish at least this many more trades:
# far below what the embedded bus buffers before it makes publishers wait.
PUBLISHED_WHILE_DOWN = 2_000
# The same timeline, a quarter as fast: compute keeps up even on a loaded
# machine, so the embedded bus has room left (MEMORY_BUS_MAX_LAG) when the
# database stops and ingest can show it goes on.
SETTINGS = {**TIMELINE, "CRYPTODESK_SIM_SPEED": "150"}


@pytest.fixture(scope="module")
def postgres() -> Iterator[Servers]:
    """A PostgreSQL of this test's own, which it may stop and resume."""
    yield from own_server("postgres", "pg-restart", postgres_durable=True)


def durable_database(servers: Servers) -> str:
    """A new database whose commits are flushed before they are acknowledged.

    The test server trades durability for speed (``synchronous_commit=off``),
    under which an immediate stop may forget acknowledged commits; production
    servers do not, and neither may this test's.
    """
    url = create_database(servers)
    name = url.rsplit("/", 1)[1]

    async def alter() -> None:
        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{servers.postgres_port}/")
        try:
            await conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = on')
        finally:
            await conn.close()

    asyncio.run(alter())
    return url


def prepared_database(servers: Servers, data: Path) -> str:
    """A durable database with the schema, migrated as an operator does."""
    url = durable_database(servers)
    env = {**base_env(data), **SETTINGS, "CRYPTODESK_DATABASE_URL": url}
    migrated = run_cli("db", "upgrade", env=env)
    assert migrated.returncode == 0, migrated.stderr
    return url


@pytest.fixture(scope="module")
def uninterrupted(
    postgres: Servers, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[Trade], list[Candle]]:
    """The reference: the same timeline stored by a run nothing disturbed."""
    data = tmp_path_factory.mktemp("uninterrupted")
    url = prepared_database(postgres, data)
    server = start_server(data, data / "serve.log", **SETTINGS, CRYPTODESK_DATABASE_URL=url)
    try:
        wait_for(lambda: count_candles(url) > 60, timeout=WAIT_S)
        assert server.stop(signal.SIGTERM) == 0, server.logs()[-3000:]
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
    return read(url)


def metric(server: Server, name: str, labels: str) -> float:
    """One sample of ``/metrics``, e.g. ``metric(s, "x_total", 'topic="trades"')``."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def readiness(server: Server) -> tuple[int, dict[str, dict[str, object]]]:
    response = httpx.get(f"{server.url}/readyz", timeout=10)
    return response.status_code, {c["name"]: c for c in response.json()["components"]}


def ingested(server: Server) -> float:
    return metric(server, "cryptodesk_events_ingested_total", 'topic="trades"')


def stored(server: Server) -> float:
    return metric(server, "cryptodesk_trades_stored_total", 'exchange="sim"')


def outage(server: Server, postgres: Servers, url: str, mode: str) -> list[Candle]:
    """Stop PostgreSQL under ``server``, check it copes, resume; the candles before."""
    wait_for(lambda: count_candles(url) > 24, timeout=WAIT_S)
    before = read(url)[1]
    stop_postgres(postgres, mode=mode)

    code, components = readiness(server)
    assert code == 503
    assert components["database"]["status"] == "down"
    assert components["database"]["error"]
    # Ingest goes on into the bus while no write succeeds, so nothing is acked.
    kept = stored(server)
    published = ingested(server)
    wait_for(lambda: ingested(server) > published + PUBLISHED_WHILE_DOWN, timeout=WAIT_S)
    assert server.proc.poll() is None
    code, components = readiness(server)
    assert code == 503
    assert components["compute"]["status"] == "down"  # its writes are failing
    assert components["compute"]["error"]
    assert stored(server) == kept

    RESUMERS["postgres"](postgres)
    wait_for(lambda: readiness(server)[0] == 200, timeout=WAIT_S)
    resumed = ingested(server)
    wait_for(lambda: stored(server) > resumed, timeout=WAIT_S)  # the backlog is stored
    target = len(before) + 24
    wait_for(lambda: count_candles(url) > target, timeout=WAIT_S)
    return before


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restart_loses_and_duplicates_nothing(
    server_factory: Callable[..., Server],
    postgres: Servers,
    uninterrupted: tuple[list[Trade], list[Candle]],
    tmp_path: Path,
    mode: str,
) -> None:
    data = tmp_path / "outage"
    url = prepared_database(postgres, data)
    server = server_factory(data, **SETTINGS, CRYPTODESK_DATABASE_URL=url)
    before = outage(server, postgres, url, mode)
    assert server.stop(signal.SIGTERM) == 0, server.logs()[-3000:]
    trades_b, candles_b = read(url)
    after = {key(c): c for c in candles_b}
    for c in before:  # nothing stored before the outage was lost or changed
        assert same_candle(after[key(c)], c), c

    same_timeline(uninterrupted, (trades_b, candles_b), min_settled=40)
