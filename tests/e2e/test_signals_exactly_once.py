"""kill -9 right after a golden cross, restart: the cross is stored once and published once.

The replay exchange plays a crafted hourly candle file through ``cryptodesk serve``:
closes fall, then rise steadily, so SMA 3 crosses above SMA 5 exactly once and never
back. A rule ``ma_cross`` fast=3 slow=5 runs on it. The process is killed with
SIGKILL as soon as the database says the signal was published, mid-file (candles
fetched but not acked, trades not yet in candles), started again, and left to
finish the file. Then the database holds exactly one golden cross, the
``signals`` topic carried exactly one, and the API serves exactly one, at the
candle computed here independently. (Kills inside the publishing steps
themselves are injected in tests/unit/test_signal_service.py.)

Embedded (memory bus and cache, SQLite) and Redis (Streams bus and cache, SQLite):
with Redis the published events survive the kill and are read back from the
stream; in memory the bus dies with the process, so "published" is the process
logging each signal right after the bus took it.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis

from cryptodesk.domain.signals import decode_signal
from tests.e2e.conftest import Server, wait_for
from tests.servers import Servers

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
T0 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
H = 3_600_000
# 12 falling closes, then 60 rising ones: one golden cross, no death cross, and
# the cross early enough (hour 14 of 71) that the kill lands mid-file even when a
# loaded machine is seconds late with it.
CLOSES = [120.0 - 2 * i for i in range(12)] + [98.0 + 1.5 * i for i in range(60)]
# The replay keeps the file's last candle open (no later trade closes it).
FINALIZED = len(CLOSES) - 1
RULES = [{"id": "golden", "type": "ma_cross", "fast": 3, "slow": 5}]
WAIT_S = 120


def golden_cross() -> tuple[int, dict[str, float]]:
    """The one candle where SMA 3 goes from <= SMA 5 to above it, and the values."""
    found = []
    for i in range(5, FINALIZED):
        prev = (sum(CLOSES[i - 3 : i]) / 3, sum(CLOSES[i - 5 : i]) / 5)
        now = (sum(CLOSES[i - 2 : i + 1]) / 3, sum(CLOSES[i - 4 : i + 1]) / 5)
        if prev[0] <= prev[1] and now[0] > now[1]:
            found.append((i, {"sma_3": now[0], "sma_5": now[1]}))
        assert not (prev[0] >= prev[1] and now[0] < now[1]), "no death cross in the file"
    [one] = found
    return one


def write_candles(path: Path) -> None:
    lines = ["timestamp,open,high,low,close,volume"]
    previous = CLOSES[0]
    for i, close in enumerate(CLOSES):
        high, low = max(previous, close) + 0.5, min(previous, close) - 0.5
        lines.append(f"{T0 + i * H},{previous},{high},{low},{close},10")
        previous = close
    path.write_text("\n".join(lines) + "\n")


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    try:
        con = sqlite3.connect(db)
    except sqlite3.Error:
        return []
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:  # not migrated yet
        return []
    finally:
        con.close()


def stored_signals(db: Path) -> list[tuple[Any, ...]]:
    return rows(db, "select rule_id, kind, open_time, indicator_values from signals")


def published_rows(db: Path) -> list[tuple[Any, ...]]:
    return rows(db, "select open_time from signals where published_at is not null")


def progress(db: Path) -> int | None:
    found = rows(db, "select open_time from signal_progress")
    return found[0][0] if found else None


Backend = Callable[[], tuple[dict[str, str], Callable[[Server], list[dict[str, Any]]]]]


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """-> (settings, read what was published on ``signals``)."""
    if request.param == "memory":

        def logged(server: Server) -> list[dict[str, Any]]:
            lines = server.logs().splitlines()
            events = [json.loads(line) for line in lines if line.startswith("{")]
            return [e for e in events if e.get("event") == "signal"]

        return lambda: ({}, logged)
    servers: Servers = request.getfixturevalue("redis_server")

    def on_redis() -> tuple[dict[str, str], Callable[[Server], list[dict[str, Any]]]]:
        prefix = f"sig-{uuid.uuid4().hex[:8]}:"

        def streamed(server: Server) -> list[dict[str, Any]]:
            client = redis.Redis.from_url(servers.redis_url)
            try:
                entries = client.xrange(f"{prefix}signals")
            finally:
                client.close()
            out = []
            for _, fields in entries:
                s = decode_signal(fields[b"value"])
                assert fields[b"key"].decode() == f"{s.exchange}:{s.symbol}"
                out.append({"rule": s.rule, "kind": s.kind, "open_time": s.open_time,
                            "values": dict(s.values)})  # fmt: skip
            return out

        env = {
            "CRYPTODESK_BUS_URL": servers.redis_url,
            "CRYPTODESK_CACHE_URL": servers.redis_url,
            "CRYPTODESK_BUS_TOPIC_PREFIX": prefix,
            "CRYPTODESK_CACHE_KEY_PREFIX": prefix,
            "CRYPTODESK_BUS_CLAIM_IDLE_MS": "1000",
        }
        return env, streamed

    return on_redis


def test_a_golden_cross_survives_kill9_exactly_once(server_factory, backend, tmp_path):
    index, values = golden_cross()
    cross_time = T0 + index * H
    candles = tmp_path / "btc_1h.csv"
    write_candles(candles)
    data = tmp_path / "data"
    db = data / "cryptodesk.db"
    env, published = backend()
    settings = {
        "CRYPTODESK_EXCHANGES": f"replay:{candles}",
        "CRYPTODESK_SYMBOLS": "BTC/USD",
        "CRYPTODESK_INTERVALS": "1h",
        # An hour of candles every 0.25 s: the file takes about 18 s to play.
        "CRYPTODESK_REPLAY_SPEED": "14400",
        "CRYPTODESK_SIGNAL_RULES": json.dumps(RULES),
        **env,
    }

    first = server_factory(data, **settings)
    wait_for(lambda: published_rows(db), timeout=WAIT_S)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    killed_at = progress(db)
    assert killed_at is not None
    assert killed_at < T0 + (FINALIZED - 1) * H  # mid-file

    second = server_factory(data, **settings)
    last = T0 + (FINALIZED - 1) * H
    wait_for(lambda: progress(db) == last, timeout=WAIT_S)
    headers = second.auth("viewer")
    with second.client() as client:
        api = client.get("/api/v1/signals", params={"kind": "golden_cross"}, headers=headers).json()
    assert second.stop(signal.SIGTERM) == 0

    [(rule, kind, open_time, stored_values)] = stored_signals(db)
    assert (rule, kind, open_time) == ("golden", "golden_cross", cross_time)
    assert msgspec.json.decode(stored_values) == values
    assert [(s["rule"], s["open_time_ms"], s["values"]) for s in api["signals"]] == [
        ("golden", cross_time, values)
    ]
    [event] = published(second)
    assert (event["rule"], event["kind"], event["open_time"]) == ("golden", "golden_cross",
                                                                  cross_time)  # fmt: skip
    if "values" in event:
        assert event["values"] == values
