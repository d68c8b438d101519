"""``cryptodesk serve`` end to end: sim -> bus -> candles -> SQLite + cache -> HTTP."""

from __future__ import annotations

import itertools
import json
import re
import signal
import socket
import sqlite3

import pytest

from tests.e2e.conftest import base_env, free_port, login, run_cli, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")


def closed_candles(client, symbol: str, interval: str = "1m") -> list[dict]:
    r = client.get(
        "/api/v1/candles", params={"exchange": "sim", "symbol": symbol, "interval": interval}
    )
    assert r.status_code == 200, r.text
    return r.json()["candles"]


def test_serves_candles_tickers_books_and_metrics(server_factory, tmp_path):
    server = server_factory(CRYPTODESK_SIM_SPEED="300")
    with server.client() as client:
        for symbol in SYMBOLS:
            candles = wait_for(lambda s=symbol: closed_candles(client, s), timeout=60)
            for c in candles:
                assert c["closed"] is True
                assert float(c["low"]) <= float(c["open"]) <= float(c["high"])
                assert float(c["low"]) <= float(c["close"]) <= float(c["high"])
            times = [c["open_time_ms"] for c in candles]
            assert times == sorted(times)
            assert all(b - a == 60_000 for a, b in itertools.pairwise(times))

        with_open = client.get(
            "/api/v1/candles",
            params={
                "exchange": "sim",
                "symbol": "BTC/USDT",
                "interval": "1m",
                "include_open": "true",
            },
        ).json()["candles"]
        assert with_open[-1]["closed"] is False

        tickers = client.get("/api/v1/tickers").json()
        assert {t["symbol"] for t in tickers["tickers"]} == set(SYMBOLS)
        book = wait_for(
            lambda: client.get(
                "/api/v1/orderbook", params={"exchange": "sim", "symbol": "ETH/USDT", "depth": 5}
            )
        )
        assert book.status_code == 200
        assert len(book.json()["bids"]) == 5
        assert len(book.json()["asks"]) == 5
        markets = client.get("/api/v1/markets").json()
        assert {m["symbol"] for m in markets["markets"]} == set(SYMBOLS)

        # The portfolio of a tenant's ledger, valued at the simulator's live tickers.
        ledger = (
            "id,timestamp,kind,account,asset,amount,counter_asset,counter_amount,fee_asset,"
            "fee_amount,to_account,value,lot_ids,note\n"
            "b1,2024-01-02T00:00:00Z,buy,main,BTC,0.5,USD,20000,,,,,,\n"
            "b2,2024-01-03T00:00:00Z,buy,main,ETH,2,USD,4000,,,,,,\n"
        )
        # First run printed a one-time admin password; the admin adds a user of acme.
        found = re.search(r"one-time password (\S+) ", server.logs())
        assert found is not None, server.logs()
        admin = login(client, "admin@cryptodesk.local", found.group(1))
        made = client.post("/api/v1/users", headers=admin, json={
            "email": "pm@acme.test", "password": "a-long-password", "role": "manager"})  # fmt: skip
        assert made.status_code == 201, made.text
        assert client.post("/api/v1/ledger/import", content="x").status_code == 401
        # pm@acme.test belongs to tenant default (the admin's); acme gets its own via the CLI.
        user = ["--email", "ana@acme.test", "--role", "manager", "--password", "another-long-one"]
        created = run_cli("user", "create", "--tenant", "acme", *user, env=server.env)
        assert created.returncode == 0, created.stderr
        tenant = login(client, "ana@acme.test", "another-long-one")
        imported = client.post(
            "/api/v1/ledger/import", content=ledger,
            headers={**tenant, "content-type": "text/csv"},
        )  # fmt: skip
        assert imported.json() == {"added": 2, "skipped": 0}, imported.text
        valued = client.get("/api/v1/portfolio", headers=tenant).json()
        assert valued["total"]["complete"] is True, valued
        assert valued["quotes"]["BTC"]["source"] == "ticker:sim:BTC/USDT"
        btc = next(p for p in valued["positions"] if p["asset"] == "BTC")
        price = float(valued["quotes"]["BTC"]["price"])
        assert float(btc["market_value"]) == pytest.approx(0.5 * price)
        assert client.get("/api/v1/ledger/verify", headers=tenant).json()["ok"] is True
        tax = client.get("/api/v1/reports/tax", headers=tenant, params={"format": "csv"})
        assert tax.status_code == 200
        assert tax.text.splitlines()[0].startswith("Part,(a) Description of property")
        # Risk: the simulated market has no closed daily candle yet, so nothing can be
        # computed (422, never a made-up number); the breakers watch every market.
        risk = client.get("/api/v1/risk/portfolio", headers=tenant)
        assert risk.status_code == 422, risk.text
        assert risk.json()["type"].endswith("/insufficient-history")
        breakers = wait_for(
            lambda: client.get("/api/v1/risk/circuit-breakers").json()["circuit_breakers"]
        )
        assert {(b["exchange"], b["symbol"]) for b in breakers} <= {("sim", s) for s in SYMBOLS}
        assert {b["state"] for b in breakers} <= {"active", "halted"}

        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        components = {c["name"]: c for c in ready.json()["components"]}
        expected = {"database", "cache", "bus", "compute", "signals", "scheduler", "feed:sim"}
        assert set(components) == expected
        feed = components["feed:sim"]
        assert (feed["status"], feed["required"]) == ("up", False)
        assert 0 <= feed["latency_ms"] < 60_000  # age of the newest simulated event
        metrics = client.get("/metrics").text
        assert 'cryptodesk_events_ingested_total{topic="trades"}' in metrics
        assert "cryptodesk_candles_finalized_total" in metrics
        assert 'route="/api/v1/candles"' in metrics

        bad = client.get(
            "/api/v1/candles", params={"exchange": "sim", "symbol": "DOGE/USDT", "interval": "1m"}
        )
        assert bad.status_code == 404
        assert bad.headers["content-type"].startswith("application/problem+json")
        assert "symbol" in bad.text

    assert server.stop(signal.SIGTERM) == 0
    stopped = [json.loads(line) for line in server.logs().splitlines() if '"stopped"' in line]
    assert stopped, server.logs()
    # A clean stop flushes: everything ingest published is in the database.
    db = sqlite3.connect(tmp_path / "data" / "cryptodesk.db")
    stored = db.execute("select count(*) from trades").fetchone()[0]
    assert stored == stopped[-1]["published_trades"] > 0


def test_second_serve_on_a_used_port_exits_2(tmp_path):
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        env = base_env(tmp_path / "d", CRYPTODESK_PORT=str(port))
        result = run_cli("serve", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"cryptodesk: error: port {port} on 127.0.0.1 is already in use"]


def test_invalid_setting_exits_2_with_one_line(tmp_path):
    env = base_env(tmp_path / "d", CRYPTODESK_SIM_SPEED="fast")
    result = run_cli("serve", env=env)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "CRYPTODESK_SIM_SPEED" in result.stderr


def test_unusable_data_dir_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    env = base_env(blocker / "data", CRYPTODESK_PORT=str(free_port()))
    result = run_cli("serve", env=env)
    assert result.returncode == 2
    assert "CRYPTODESK_DATA_DIR" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_corrupt_database_is_reported(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    (data / "cryptodesk.db").write_bytes(b"this is not a sqlite database" * 100)
    env = base_env(data, CRYPTODESK_PORT=str(free_port()))
    result = run_cli("serve", env=env)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cryptodesk.db" in result.stderr


def test_default_settings_serve_candles_for_every_symbol_within_90_seconds(server_factory):
    """The README promise: real-time simulator (SIM_SPEED=1), candles within 90 s."""
    server = server_factory()
    assert "CRYPTODESK_SIM_SPEED" not in server.env
    with server.client() as client:
        for symbol in SYMBOLS:
            candles = wait_for(lambda s=symbol: closed_candles(client, s), timeout=90)
            assert candles[-1]["closed"] is True
    assert server.stop(signal.SIGINT) == 0


@pytest.mark.parametrize(
    ("setting", "url"),
    [
        ("CRYPTODESK_CACHE_URL", "redis://127.0.0.1:{port}/0"),
        ("CRYPTODESK_BUS_URL", "redis://127.0.0.1:{port}/0"),
        ("CRYPTODESK_DATABASE_URL", "postgresql+asyncpg://app:s3cret@127.0.0.1:{port}/x"),
    ],
)
def test_unreachable_server_at_start_up_exits_2_naming_the_setting(tmp_path, setting, url):
    dead = free_port()  # nothing listens there
    env = base_env(
        tmp_path / "d", CRYPTODESK_PORT=str(free_port()), **{setting: url.format(port=dead)}
    )
    result = run_cli("serve", env=env, timeout=120)
    assert result.returncode == 2, result.stderr
    # Start-up logs may precede it; the error itself is one line, and the last.
    errors = [line for line in result.stderr.splitlines() if line.startswith("cryptodesk: error")]
    assert len(errors) == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == errors[0]
    assert str(dead) in errors[0]
    assert "s3cret" not in result.stderr
    if setting != "CRYPTODESK_DATABASE_URL":
        assert setting in errors[0]
