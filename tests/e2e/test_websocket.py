"""``/api/v1/ws`` end to end: 200 clients on the simulated market, a slow one, the example.

The server is ``cryptodesk serve`` as a user runs it (every role, the embedded bus,
the simulator at 60 simulated seconds per second, so a 1m candle closes every second),
configured by ``CRYPTODESK_*`` settings. The test sees what clients and an operator
see: frames, close codes and the server's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import socket
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.e2e.conftest import Server, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "ws_client.py"
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
CLIENTS = 200
QUEUE_SIZE = 256
CANDLES_AFTER_EVICTION = 2  # each client keeps streaming this long after the slow one is out
SERVE = {
    "CRYPTODESK_SIM_SPEED": "60",
    "CRYPTODESK_INTERVALS": "1m",
    "CRYPTODESK_WEBSOCKET_QUEUE_SIZE": str(QUEUE_SIZE),
    "CRYPTODESK_WEBSOCKET_HEARTBEAT_SECONDS": "1",
}
TOO_SLOW, IDLE = "websocket client too slow, closed", "websocket client idle, closed"
TICKERS = [f"ticker:sim:{s}" for s in SYMBOLS]
CANDLES = [f"candles:sim:{s}:1m" for s in SYMBOLS]
MINUTE = 60_000
LINE = re.compile(r"(snapshot|delta) (\S+) seq=(\d+)(?: skipped=(\d+))? (.+)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One ``cryptodesk serve`` for the module (``server_factory`` without its
    per-test start-up, which is mostly importing the application)."""
    tmp_path = tmp_path_factory.mktemp("ws")
    started = start_server(tmp_path / "data", tmp_path / "serve.log", **SERVE)
    try:
        yield started
    finally:
        try:
            started.stop()
        except subprocess.TimeoutExpired:
            started.proc.kill()
            started.proc.wait()


def ws_url(server: Server) -> str:
    return server.url.replace("http://", "ws://", 1) + "/api/v1/ws"


def log_events(server: Server) -> list[str]:
    """The ``event`` of each JSON line the server logged so far."""
    events = []
    for line in server.logs().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                events.append(str(record.get("event")))
    return events


async def subscribe(ws: ClientConnection, channels: list[str]) -> None:
    await ws.send(json.dumps({"type": "subscribe", "channels": channels}))


async def watch(
    url: str, evicted: asyncio.Event, snapshots_in: Callable[[], None]
) -> dict[str, list[dict[str, Any]]]:
    """Every snapshot and delta of the tickers and 1m candles, until each candle channel
    had CANDLES_AFTER_EVICTION deltas after the slow client was closed; calls
    ``snapshots_in`` once every channel's snapshot arrived."""
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
                if msg["type"] == "snapshot" and len(frames) == len(TICKERS + CANDLES):
                    snapshots_in()
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


async def test_every_client_gets_every_update_in_order_and_a_slow_one_is_closed(
    server: Server,
) -> None:
    url = ws_url(server)
    evicted, all_in = asyncio.Event(), asyncio.Event()
    ready: list[None] = []

    def snapshots_in() -> None:
        ready.append(None)
        if len(ready) == CLIENTS:
            all_in.set()

    async with asyncio.timeout(120):  # a guard against hanging, not a speed requirement
        watchers = [asyncio.create_task(watch(url, evicted, snapshots_in)) for _ in range(CLIENTS)]
        await all_in.wait()  # so every one of them is connected while the slow one falls behind
        slow = asyncio.create_task(slow_client(url, evicted))
        while TOO_SLOW not in log_events(server):
            assert not slow.done(), slow
            await asyncio.sleep(0.05)
        evicted.set()
        frames, code, reason = await slow
        records = await asyncio.gather(*watchers)
    assert (code, reason) == (4008, "too slow: the outbound queue overflowed")
    assert frames > 0
    events = log_events(server)
    assert (events.count(TOO_SLOW), events.count(IDLE)) == (1, 0)
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


def test_the_documented_example_prints_a_channel(server: Server) -> None:
    doc = (ROOT / "docs" / "websocket.md").read_text()
    assert f"```python\n{EXAMPLE.read_text()}```" in doc  # the docs show this very file
    url = ws_url(server)
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


async def test_orders_placed_over_rest_reach_the_tenants_orders_channel(server: Server) -> None:
    """Two accounts of one tenant trade on the internal venue; a subscriber of the
    tenant's ``orders`` channel sees both orders filled and both fills."""
    import httpx

    headers = await asyncio.to_thread(server.auth, "trader", "desk")
    token = headers["Authorization"].removeprefix("Bearer ")
    async with connect(f"{ws_url(server)}?token={token}") as ws:
        await subscribe(ws, ["orders"])
        while (await recv_json(ws))["type"] != "subscribed":
            pass
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as c:
            for account, asset, amount in (("alice", "USDT", "100000"), ("bob", "BTC", "1")):
                deposit = {"account": account, "asset": asset, "amount": amount}
                r = await c.post("/api/v1/paper/deposits", json=deposit)
                assert r.status_code == 201, r.text
            for account, side in (("bob", "sell"), ("alice", "buy")):
                r = await c.post("/api/v1/orders", json={
                    "account": account, "symbol": "BTC/USDT", "side": side, "type": "limit",
                    "quantity": "0.5", "price": "60000"})  # fmt: skip
                assert r.status_code == 201, r.text
            assert r.json()["status"] == "filled"
            positions = (await c.get("/api/v1/positions")).json()["positions"]
        held = {p["account"]: Decimal(p["quantity"]) for p in positions}
        assert held == {"alice": Decimal("0.5"), "bob": Decimal("-0.5")}
        seen: dict[str, set[str]] = defaultdict(set)
        fills = 0
        while not (seen["O0000000001"] >= {"filled"} and seen["O0000000002"] >= {"filled"}
                   and fills == 2):  # fmt: skip
            msg = await asyncio.wait_for(recv_json(ws), timeout=30)
            if msg["type"] not in ("snapshot", "delta") or msg.get("channel") != "orders":
                continue
            for item in msg["data"]:  # an event channel: new items, oldest first
                if item["event"] == "fill":
                    fills += 1
                else:
                    seen[item["order_id"]].add(item["status"])


async def recv_json(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(await ws.recv())  # type: ignore[no-any-return]


async def test_a_tenants_internal_book_reaches_only_that_tenant(server: Server) -> None:
    """Two accounts of one tenant trade over REST; a subscriber of the tenant's
    ``book:internal:BTC/USDT`` sees the book after each order, numbered by the matching
    engine's sequence; a user of another tenant sees its own book, empty."""
    import httpx

    book_channel = "book:internal:BTC/USDT"

    def book(sequence: int, bids: list[list[str]], asks: list[list[str]], last: str | None) -> Any:
        return {"symbol": "BTC/USDT", "sequence": sequence, "bids": bids, "asks": asks,
                "last_price": last}  # fmt: skip

    async def next_frame(ws: ClientConnection) -> dict[str, Any]:
        while (msg := await asyncio.wait_for(recv_json(ws), 30))["type"] in ("welcome", "ping"):
            pass
        return msg

    headers = await asyncio.to_thread(server.auth, "trader", "bookdesk")
    rival = await asyncio.to_thread(server.auth, "viewer", "bookrival")
    token = headers["Authorization"].removeprefix("Bearer ")
    async with connect(f"{ws_url(server)}?token={token}") as ws:
        await subscribe(ws, ["book:internal:btc-usdt"])
        assert await next_frame(ws) == {"type": "subscribed", "id": None,
                                        "channels": [book_channel]}  # fmt: skip
        assert await next_frame(ws) == {"type": "snapshot", "channel": book_channel, "seq": 0,
                                        "data": book(0, [], [], None)}  # fmt: skip
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as c:
            for account, asset, amount in (("alice", "USDT", "100000"), ("bob", "BTC", "1")):
                deposit = {"account": account, "asset": asset, "amount": amount}
                r = await c.post("/api/v1/paper/deposits", json=deposit)
                assert r.status_code == 201, r.text
            steps = [
                ("bob", "sell", "0.5", "60000", book(2, [], [["60000.00", "0.50000"]], None)),
                ("alice", "buy", "0.2", "60000",
                 book(4, [], [["60000.00", "0.30000"]], "60000.00")),
                ("alice", "buy", "0.1", "59000",
                 book(6, [["59000.00", "0.10000"]], [["60000.00", "0.30000"]], "60000.00")),
            ]  # fmt: skip
            for seq, (account, side, quantity, price, expected) in enumerate(steps, 1):
                r = await c.post("/api/v1/orders", json={
                    "account": account, "symbol": "BTC/USDT", "side": side, "type": "limit",
                    "quantity": quantity, "price": price})  # fmt: skip
                assert r.status_code == 201, r.text
                assert await next_frame(ws) == {"type": "delta", "channel": book_channel,
                                                "seq": seq, "data": expected}  # fmt: skip
        # Subscribed afresh, the channel's snapshot is read from the order service.
        await ws.send(json.dumps({"type": "unsubscribe", "channels": [book_channel]}))
        assert (await next_frame(ws))["type"] == "unsubscribed"
        await subscribe(ws, [book_channel])
        assert (await next_frame(ws))["type"] == "subscribed"
        assert await next_frame(ws) == {"type": "snapshot", "channel": book_channel, "seq": 0,
                                        "data": steps[-1][-1]}  # fmt: skip
    rival_token = rival["Authorization"].removeprefix("Bearer ")
    async with connect(f"{ws_url(server)}?token={rival_token}") as ws:
        await subscribe(ws, [book_channel])
        assert (await next_frame(ws))["type"] == "subscribed"
        assert await next_frame(ws) == {"type": "snapshot", "channel": book_channel, "seq": 0,
                                        "data": book(0, [], [], None)}  # fmt: skip
        await ws.send(json.dumps({"type": "ping", "id": "after"}))
        assert (await next_frame(ws))["type"] == "pong"  # and no delta of the other tenant
