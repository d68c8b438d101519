"""CRYPTODESK_WAIT_FOR_DEPENDENCIES: serve answers at once, /readyz names what it waits
for and why, and the process starts by itself once the database is back."""

from __future__ import annotations

import asyncio
import re
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.sql_store import SqlMarketStore
from tests.e2e.conftest import base_env, free_port, run_cli, start_process, wait_for
from tests.servers import RESUMERS, STARTERS, Servers, stop, stop_postgres

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


@pytest.fixture
def postgres_down() -> Iterator[Servers]:
    """A dedicated, migrated PostgreSQL cluster, stopped: the test resumes it."""
    servers = Servers(root=tempfile.mkdtemp(prefix="cryptodesk-wait-"))
    Path(servers.root).chmod(0o755)
    try:
        STARTERS["postgres"](servers)
        yield servers
    finally:
        stop(servers)


def _stored_candles(url: str) -> int:
    async def count() -> int:
        store = SqlMarketStore(create_engine(url))
        try:
            return len(await store.get_candles("sim", "BTC/USDT", "1m", limit=1000))
        finally:
            await store.close()

    return asyncio.run(count())


def test_serve_waits_for_the_database_then_starts(postgres_down, tmp_path):
    url = postgres_down.postgres_url
    env = base_env(tmp_path / "data", CRYPTODESK_DATABASE_URL=url)
    migrated = run_cli("db", "upgrade", env=env)
    assert migrated.returncode == 0, migrated.stderr
    stop_postgres(postgres_down, mode="fast")

    # Off (the default): one line naming the setting, exit 2.
    refused = run_cli("serve", env=env)
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert "CRYPTODESK_DATABASE_URL" in line

    port = free_port()
    proc = start_process(
        tmp_path / "serve.log",
        {
            **env,
            "CRYPTODESK_PORT": str(port),
            "CRYPTODESK_WAIT_FOR_DEPENDENCIES": "true",
            "CRYPTODESK_SIM_SPEED": "120",
        },
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def waiting() -> dict[str, dict[str, object]] | None:
            try:
                r = httpx.get(f"{base}/readyz", timeout=2)
            except httpx.HTTPError:
                return None
            return {c["name"]: c for c in r.json()["components"]} if r.status_code == 503 else None

        components = wait_for(waiting, timeout=30)
        db = components["database"]
        assert db["status"] == "down"
        assert str(db["error"]).startswith("waiting: CRYPTODESK_DATABASE_URL: ")
        # The loop's own words for a refused connection: asyncio's or uvloop's.
        assert re.search(r"Connect call failed|Connection refused", str(db["error"])), db
        assert components["startup"]["status"] == "down"
        early = httpx.get(f"{base}/api/v1/candles", timeout=2)
        assert early.status_code == 503
        assert early.headers["content-type"] == "application/problem+json"
        assert proc.poll() is None  # still waiting, not exited

        RESUMERS["postgres"](postgres_down)

        def ready() -> bool:
            r = httpx.get(f"{base}/readyz", timeout=2)
            return r.status_code == 200

        wait_for(ready, timeout=60)
        names = {c["name"] for c in httpx.get(f"{base}/readyz", timeout=2).json()["components"]}
        assert "startup" not in names
        assert {"database", "cache", "bus", "feed:sim"} <= names
        wait_for(lambda: _stored_candles(url) > 0, timeout=60)
        candles = httpx.get(
            f"{base}/api/v1/candles",
            params={"exchange": "sim", "symbol": "BTC/USDT", "interval": "1m"},
            timeout=5,
        )
        assert candles.status_code == 200, candles.text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
