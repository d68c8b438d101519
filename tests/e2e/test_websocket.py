"""``/api/v1/ws`` end to end: 200 clients on the simulated market, a slow one, the example.

The server is a process of its own built from the production pieces, configured
by the same ``CRYPTODESK_*`` settings: the simulator -> ``MarketIngest`` -> the
embedded bus -> ``CandleService``/``BookService`` -> SQLite + cache ->
``WsFeed``/``WsHub`` -> ``ws_router`` in ``create_app`` -> uvicorn. (``runtime.py``
does not build the hub yet; ``python -m tests.e2e.test_websocket PORT`` runs
``_compose``.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import re
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.e2e.conftest import base_env, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "ws_client.py"
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
CLIENTS = 200
QUEUE_SIZE = 256
CANDLES_AFTER_EVICTION = 2  # each client keeps streaming this long after the slow one is out
TICKERS = [f"ticker:sim:{s}" for s in SYMBOLS]
CANDLES = [f"candles:sim:{s}:1m" for s in SYMBOLS]
MINUTE = 60_000
LINE = re.compile(r"(snapshot|delta) (\S+) seq=(\d+)(?: skipped=(\d+))? (.+)")


async def _compose(port: int) -> None:
    import uvicorn
    from fastapi import APIRouter

    from cryptodesk.adapters.db import migrate
    from cryptodesk.adapters.db.engine import create_engine
    from cryptodesk.adapters.db.sql_store import SqlMarketStore
    from cryptodesk.api.app import create_app
    from cryptodesk.api.routes.ws import WsRenderer, ws_router
    from cryptodesk.config import Settings
    from cryptodesk.domain.auth import AuthenticationError, Principal
    from cryptodesk.domain.interval import Interval
    from cryptodesk.observability.health import HealthRegistry
    from cryptodesk.observability.metrics import Metrics
    from cryptodesk.services.book_service import BookService
    from cryptodesk.services.candle_service import CandleService
    from cryptodesk.services.ingest import MarketIngest
    from cryptodesk.services.market_queries import MarketQueries
    from cryptodesk.services.ws_feed import WsFeed
    from cryptodesk.services.ws_hub import WsHub
    from cryptodesk.wiring import make_bus, make_cache, make_source

    async def authenticate(token: str) -> Principal:
        raise AuthenticationError("no tokens in this test")

    s = Settings()
    s.data_dir.mkdir(parents=True)
    await asyncio.to_thread(migrate.upgrade, s.database_url)
    store = SqlMarketStore(create_engine(s.database_url))
    cache, bus, metrics = make_cache(s), make_bus(s), Metrics()
    health = HealthRegistry(metrics)
    candles = CandleService(
        bus, store, cache, metrics, health, exchanges=s.exchanges, symbols=s.symbols,
        intervals=[Interval.parse(i) for i in s.intervals], grace_ms=s.candle_grace_ms,
        batch_size=s.ingest_batch_size, recent_candles=s.cache_recent_candles,
    )  # fmt: skip
    await candles.recover()
    queries = MarketQueries(
        cache, store, metrics, exchanges=s.exchanges, symbols=s.symbols,
        intervals=s.intervals, cache_recent_candles=s.cache_recent_candles,
    )  # fmt: skip
    hub = WsHub(bus, queries, WsRenderer(), queue_size=QUEUE_SIZE, heartbeat_seconds=1.0)
    stats = APIRouter()
    stats.add_api_route("/test/ws-stats", lambda: dataclasses.asdict(hub.stats))
    app = create_app(queries, metrics, health, routers=[ws_router(hub, authenticate), stats])
    stop = asyncio.Event()
    source = make_source("sim", s, last_ts=await store.last_trade_ts("sim"))
    ingest = MarketIngest(source, bus, cache, metrics, symbols=s.symbols)
    running = [
        asyncio.create_task(candles.run(stop)),
        asyncio.create_task(BookService(bus, cache, metrics).run(stop)),
        asyncio.create_task(WsFeed(hub).run(stop)),
        asyncio.create_task(ingest.run_forever()),
    ]
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", ws_per_message_deflate=False
    )
    sock = socket.create_server(("127.0.0.1", port))
    await uvicorn.Server(config).serve(sockets=[sock])
    del running  # SIGTERM ends the server, and the process with it


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp_path = tmp_path_factory.mktemp("ws")
    port = free_port()
    env = base_env(tmp_path / "data", CRYPTODESK_SIM_SPEED="60", CRYPTODESK_INTERVALS="1m")
    log = tmp_path / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.test_websocket", str(port)],
        cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _healthy(port):
            assert proc.poll() is None, f"server exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"server not healthy:\n{log.read_text()}"
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


async def subscribe(ws: ClientConnection, channels: list[str]) -> None:
    await ws.send(json.dumps({"type": "subscribe", "channels": channels}))


async def watch(url: str, evicted: asyncio.Event) -> dict[str, list[dict[str, Any]]]:
    """Every snapshot and delta of the tickers and 1m candles, until each candle channel
    had CANDLES_AFTER_EVICTION deltas after the slow client was closed."""
    frames: dict[str, list[dict[str, Any]]] = defaultdict(list)
    after: Counter[str] = Counter()
    async with connect(url) as ws:
        await subscribe(ws, TICKERS + CANDLES)
        while any(after[c] < CANDLES_AFTER_EVICTION for c in CANDLES):
            msg = json.loads(await ws.recv())
            if msg["type"] == "ping":
                await ws.send('{"type": "pong"}')
            elif msg["type"] in ("snapshot", "delta"):
                frames[msg["channel"]].append(msg)
                after[msg["channel"]] += evicted.is_set() and msg["type"] == "delta"
            else:
                assert msg["type"] in ("welcome", "subscribed"), msg
    return frames


async def slow_client(url: str, evicted: asyncio.Event) -> tuple[int, int | None, str]:
    """Subscribes to every trade and book, then reads nothing until it was closed for
    it; then it reads what is left: how many frames, the close code and reason."""
    host, port = url.split("/")[2].split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window fills fast
    sock.connect((host, int(port)))
    async with connect(url, sock=sock, max_queue=1, ping_interval=None) as ws:
        await subscribe(ws, [f"{k}:sim:{s}" for k in ("trades", "book") for s in SYMBOLS])
        await evicted.wait()
        frames = 0
        try:
            while True:
                await ws.recv()
                frames += 1
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
    return frames, None if rcvd is None else rcvd.code, "" if rcvd is None else rcvd.reason


async def test_every_client_gets_every_update_in_order_and_a_slow_one_is_closed(server: str):
    url = f"ws://{server}/api/v1/ws"
    evicted = asyncio.Event()
    async with asyncio.timeout(120):  # a guard against hanging, not a speed requirement
        slow = asyncio.create_task(slow_client(url, evicted))
        watchers = [asyncio.create_task(watch(url, evicted)) for _ in range(CLIENTS)]
        async with httpx.AsyncClient(base_url=f"http://{server}") as http:
            while (stats := (await http.get("/test/ws-stats")).json())["closed_too_slow"] == 0:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            evicted.set()
            frames, code, reason = await slow
            records = await asyncio.gather(*watchers)
            after = (await http.get("/test/ws-stats")).json()
    assert (code, reason) == (4008, "too slow: the outbound queue overflowed")
    assert frames > 0
    assert stats["clients"] == CLIENTS + 1
    assert (after["closed_too_slow"], after["closed_idle"]) == (1, 0)
    seen: dict[tuple[str, int], Any] = {}
    for record in records:
        assert sorted(record) == sorted(TICKERS + CANDLES)
        for channel, msgs in record.items():
            check_sequence(channel, msgs)
            for m in msgs[1:]:  # one rendering per update: every client got the same data
                assert seen.setdefault((channel, m["seq"]), m["data"]) == m["data"]


def check_sequence(channel: str, msgs: list[dict[str, Any]]) -> None:
    """A snapshot, then deltas numbered one by one; a coalesced delta says what it skipped."""
    assert msgs[0]["type"] == "snapshot"
    assert all(m["type"] == "delta" for m in msgs[1:])
    for prev, m in itertools.pairwise(msgs):
        assert m["seq"] == prev["seq"] + 1 + m.get("skipped", 0), (channel, prev, m)
    if channel.startswith("candles:"):
        assert not any("skipped" in m for m in msgs)  # events are never coalesced
        times = [c["open_time_ms"] for m in msgs for c in m["data"]]
        assert all(b - a == MINUTE for a, b in itertools.pairwise(times)), (channel, times)
        assert all(c["closed"] for m in msgs for c in m["data"])
        assert len(msgs) - 1 >= CANDLES_AFTER_EVICTION
    else:
        times = [m["data"]["time"] for m in msgs if m["data"] is not None]
        assert times == sorted(times)
        assert len(msgs) > 1


def test_the_documented_example_prints_a_channel(server: str):
    doc = (ROOT / "docs" / "websocket.md").read_text()
    assert f"```python\n{EXAMPLE.read_text()}```" in doc  # the docs show this very file
    url = f"ws://{server}/api/v1/ws"
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), url, "ticker:sim:BTC/USDT", "--count", "3"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [LINE.fullmatch(line) for line in done.stdout.splitlines()]
    assert len(lines) == 4, done.stdout
    assert all(lines), done.stdout
    parsed = [(m[1], m[2], int(m[3]), int(m[4] or 0), json.loads(m[5])) for m in lines if m]
    assert [p[:2] for p in parsed] == [("snapshot", "ticker:sim:BTC/USDT")] + [
        ("delta", "ticker:sim:BTC/USDT")
    ] * 3
    for prev, p in itertools.pairwise(parsed):
        assert p[2] == prev[2] + 1 + p[3]
    assert [p[4]["symbol"] for p in parsed[1:]] == ["BTC/USDT"] * 3


if __name__ == "__main__":
    asyncio.run(_compose(int(sys.argv[1])))
