"""Roles in separate processes sharing PostgreSQL, Redis and Kafka: two API workers,
one ingest, one compute; both API workers serve the same candles, and count an
account's order submit rate in one bucket (in Redis)."""

from __future__ import annotations

import signal
import uuid

import httpx
import pytest

from tests.e2e.conftest import (
    FAST_KAFKA_GROUPS,
    base_env,
    free_port,
    login,
    run_cli,
    start_process,
    wait_for,
)
from tests.e2e.test_effectively_once import create_database

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def test_two_api_workers_one_ingest_one_compute(tmp_path, postgres_server, redis_server,
                                                 kafka_server):  # fmt: skip
    db = create_database(postgres_server)
    prefix = f"roles-{uuid.uuid4().hex[:8]}"
    settings = {
        "CRYPTODESK_DATABASE_URL": db,
        "CRYPTODESK_CACHE_URL": redis_server.redis_url,
        "CRYPTODESK_CACHE_KEY_PREFIX": f"{prefix}:",
        "CRYPTODESK_BUS_URL": kafka_server.kafka_url,
        "CRYPTODESK_BUS_TOPIC_PREFIX": f"{prefix}.",
        **FAST_KAFKA_GROUPS,
        "CRYPTODESK_SIM_SPEED": "300",
        "CRYPTODESK_INTERVALS": "1m,5m",
        # Two orders per account, then one every 100 s: the third is refused wherever it goes.
        "CRYPTODESK_ORDER_LIMITS__SUBMIT_RATE": "0.01",
        "CRYPTODESK_ORDER_LIMITS__SUBMIT_BURST": "2",
    }
    env = base_env(tmp_path / "data", **settings)
    assert run_cli("db", "upgrade", env=env).returncode == 0
    procs = [
        start_process(tmp_path / f"{role}.log", {**env, "CRYPTODESK_PORT": "0"}, "--roles", role)
        for role in ("compute", "ingest")
    ]
    urls = []
    for n in range(2):
        port = free_port()
        procs.append(
            start_process(
                tmp_path / f"api{n}.log", {**env, "CRYPTODESK_PORT": str(port)}, "--roles", "api"
            )
        )
        urls.append(f"http://127.0.0.1:{port}")
    try:
        params = {"exchange": "sim", "symbol": "BTC/USDT", "interval": "1m"}

        def candles(url: str) -> list[dict]:
            try:
                r = httpx.get(f"{url}/api/v1/candles", params=params, timeout=5)
            except httpx.HTTPError:
                return []
            return r.json()["candles"] if r.status_code == 200 else []

        wait_for(lambda: len(candles(urls[0])) >= 5, timeout=90)
        # Same finalized candles from both workers (compare a settled page).
        first, second = candles(urls[0]), candles(urls[1])
        common = min(len(first), len(second))
        assert common >= 5
        assert first[: common - 1] == second[: common - 1]
        tickers = httpx.get(f"{urls[1]}/api/v1/tickers", timeout=5).json()["tickers"]
        assert {t["symbol"] for t in tickers} == {"BTC/USDT", "ETH/USDT", "SOL/USDT"}
        ready = httpx.get(f"{urls[0]}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        made = run_cli("user", "create", "--tenant", "acme", "--email", "t@acme.test", "--role",
                       "trader", "--password", "e2e-password-long-enough", env=env)  # fmt: skip
        assert made.returncode == 0, made.stderr
        clients = [httpx.Client(base_url=url, timeout=30) for url in urls]
        for c in clients:
            c.headers.update(login(c, "t@acme.test", "e2e-password-long-enough"))
        cash = {"account": "alice", "asset": "USDT", "amount": "100000"}
        assert clients[0].post("/api/v1/paper/deposits", json=cash).status_code == 201

        def place(c: httpx.Client, price: str) -> httpx.Response:
            order = {"account": "alice", "symbol": "BTC/USDT", "side": "buy", "type": "limit",
                     "quantity": "0.01", "price": price}  # fmt: skip
            return c.post("/api/v1/orders", json=order)

        assert [place(clients[0], "50000").status_code, place(clients[1], "50001").status_code,
                place(clients[1], "50002").status_code] == [201, 201, 422]  # fmt: skip
        assert place(clients[0], "50003").json()["rule"] == "rate_limit"
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=30) for proc in procs]
    assert codes == [0, 0, 0, 0]
