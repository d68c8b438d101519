"""``/api/v1/ws`` over a real socket (uvicorn in-process, the ``websockets`` client):
authentication, permissions, errors, close codes."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from cryptodesk.adapters.bus.memory import MemoryBus
from cryptodesk.api.routes.signals import SignalOut
from cryptodesk.api.routes.ws import WsRenderer, ws_router
from cryptodesk.api.schemas import CandleOut, OrderBookOut, TickerOut
from cryptodesk.domain.auth import AuthenticationError, Principal
from cryptodesk.domain.market import OrderBook, Ticker
from cryptodesk.domain.signals import Signal
from cryptodesk.observability.metrics import Metrics
from cryptodesk.services.feed_status import Freshness
from cryptodesk.services.market_queries import MarketQueries
from cryptodesk.services.ws_hub import WsHub
from tests.unit._fakes import T0, DictCache, ListStore, make_candle

VIEWER = Principal("acme", "u1", "viewer@acme.test", "viewer")
# An API key that may read the portfolio only.
NARROW = Principal("acme", "u2", "key@acme.test", "viewer", kind="api_key", key_id="k1",
                   scopes=frozenset({"portfolio:read"}))  # fmt: skip


async def authenticate(token: str) -> Principal:
    if token == "viewer":
        return VIEWER
    if token == "narrow":
        return NARROW
    if token == "store-down":
        raise ConnectionError("auth store unreachable")
    raise AuthenticationError("the token has expired")


Serve = Callable[..., AbstractAsyncContextManager[tuple[str, WsHub]]]


@pytest.fixture
def serve() -> Serve:
    @asynccontextmanager
    async def served(**options: Any) -> AsyncIterator[tuple[str, WsHub]]:
        queries = MarketQueries(
            DictCache(), ListStore(), Metrics(), exchanges=["sim"], symbols=["BTC/USDT"],
            intervals=["1m"], cache_recent_candles=10,
        )  # fmt: skip
        hub = WsHub(MemoryBus(), queries, WsRenderer(), heartbeat_seconds=5.0)
        app = FastAPI()
        app.include_router(ws_router(hub, authenticate, **options))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        config = uvicorn.Config(app, log_config=None, lifespan="off", ws_per_message_deflate=False)
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
            await asyncio.sleep(0.01)
        try:
            yield f"ws://127.0.0.1:{sock.getsockname()[1]}/api/v1/ws", hub
        finally:
            server.should_exit = True
            await task
            sock.close()

    return served


async def recv(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), 10))  # type: ignore[no-any-return]


async def closed(ws: ClientConnection) -> tuple[list[dict[str, Any]], int, str]:
    """What arrives until the server closes: the messages, the close code and reason."""
    got = []
    while True:
        try:
            got.append(await recv(ws))
        except ConnectionClosed as exc:
            frame = exc.rcvd  # None: the connection dropped without a close frame
            return (
                got,
                (1006 if frame is None else frame.code),
                ("" if frame is None else frame.reason),
            )


async def send(ws: ClientConnection, **body: Any) -> None:
    await ws.send(json.dumps(body))


async def test_public_market_data_then_a_token_for_the_tenant_channels(serve: Serve):
    async with serve() as (url, _), connect(url) as ws:
        assert await recv(ws) == {
            "type": "welcome", "protocol": 1, "authenticated": False, "tenant": None,
            "public_market_data": True, "heartbeat_seconds": 5.0, "idle_timeout_seconds": 45.0,
            "queue_size": 1024,
        }  # fmt: skip
        await send(
            ws,
            type="subscribe",
            id=1,
            channels=["ticker:sim:btc-usdt", "portfolio", "signals", "ticker:sim:btc-usdt"],
        )
        assert [await recv(ws) for _ in range(4)] == [
            {"type": "error", "id": 1, "code": "unauthorized", "channel": "portfolio",
             "message": "'portfolio' is a tenant channel: send a token"},
            {"type": "error", "id": 1, "code": "unauthorized", "channel": "signals",
             "message": "signals needs a token: send an auth message"},
            {"type": "subscribed", "id": 1, "channels": ["ticker:sim:BTC/USDT"]},
            {"type": "snapshot", "channel": "ticker:sim:BTC/USDT", "seq": 0, "data": None},
        ]  # fmt: skip
        await send(ws, type="auth", token="viewer", id="a")
        assert await recv(ws) == {"type": "authenticated", "id": "a", "tenant": "acme",
                                  "role": "viewer"}  # fmt: skip
        await send(ws, type="auth", token="viewer")
        assert (await recv(ws))["code"] == "already-authenticated"
        await send(ws, type="subscribe", channels=["portfolio", "signals"])
        assert [await recv(ws) for _ in range(3)] == [
            {"type": "subscribed", "id": None, "channels": ["portfolio", "signals"]},
            {"type": "snapshot", "channel": "portfolio", "seq": 0, "data": None},
            {"type": "snapshot", "channel": "signals", "seq": 0, "data": []},
        ]
        await send(ws, type="unsubscribe", channels=["portfolio"], id=2)
        assert await recv(ws) == {"type": "unsubscribed", "id": 2, "channels": ["portfolio"]}
        await send(ws, type="ping", id=3)
        pong = await recv(ws)
        assert (pong["type"], pong["id"], type(pong["ts"])) == ("pong", 3, int)


async def test_a_bad_token_in_the_url_is_refused_with_4001(serve: Serve):
    async with serve() as (url, hub):
        async with connect(f"{url}?token=stale") as ws:
            got, code, reason = await closed(ws)
            assert got == [{"type": "error", "id": None, "code": "unauthorized",
                        "message": "the token has expired"}]  # fmt: skip
        assert (code, reason) == (4001, "unauthorized")
        async with asyncio.timeout(10):
            while hub.stats.clients:  # noqa: ASYNC110 - the handler ends, forgets the client
                await asyncio.sleep(0.01)


async def test_without_public_market_data_the_first_message_must_authenticate(serve: Serve):
    async with serve(public_market_data=False, auth_timeout=0.5) as (url, _):
        async with connect(url) as ws:
            assert (await recv(ws))["authenticated"] is False
            await send(ws, type="subscribe", channels=["ticker:sim:BTC/USDT"])
            got, code, _ = await closed(ws)
            assert (got[0]["code"], got[0]["message"], code) == (
                "unauthorized", 'send {"type": "auth", "token": ...} first', 4001)  # fmt: skip
        async with connect(url) as ws:
            await recv(ws)
            await ws.send("{")
            got, code, _ = await closed(ws)
            assert ([g["code"] for g in got], code) == (["bad-message", "unauthorized"], 4001)
        async with connect(url) as ws:
            await recv(ws)
            got, code, _ = await closed(ws)  # said nothing within auth_timeout
            assert (got[0]["message"], code) == ("no auth message within 0.5 s", 4001)
        async with connect(url) as ws:
            await recv(ws)
            await send(ws, type="auth", token="narrow")
            assert (await recv(ws))["tenant"] == "acme"
            await send(ws, type="subscribe", channels=["ticker:sim:BTC/USDT", "portfolio"])
            assert [await recv(ws) for _ in range(3)] == [
                {"type": "error", "id": None, "code": "forbidden", "channel": "ticker:sim:BTC/USDT",
                 "message": "ticker:sim:BTC/USDT needs the permission 'market:read'"},
                {"type": "subscribed", "id": None, "channels": ["portfolio"]},
                {"type": "snapshot", "channel": "portfolio", "seq": 0, "data": None},
            ]  # fmt: skip


async def test_an_unreachable_credential_store_closes_with_1013(serve: Serve):
    async with serve() as (url, _), connect(url) as ws:
        await recv(ws)
        await send(ws, type="auth", token="store-down")
        got, code, reason = await closed(ws)
    assert [g["code"] for g in got] == ["unavailable"]
    assert (code, reason) == (1013, "authentication unavailable")


async def test_malformed_messages_are_answered_with_errors(serve: Serve):
    async with serve(max_subscriptions=2) as (url, _), connect(url) as ws:
        await recv(ws)
        await ws.send(b"\x00binary")
        await ws.send("not json")
        await ws.send("[1, 2]")
        await send(ws, type="bogus", id="x")
        await send(ws, type="subscribe", channels="ticker:sim:BTC/USDT")
        await send(ws, type="auth", token=5)
        await send(ws, type="subscribe", channels=["book:sim:BTC/USDT", "book:SIM:btc-usdt",
                   "trades:sim:BTC/USDT", "candles:sim:BTC/USDT:1m"])  # fmt: skip
        answers = [await recv(ws) for _ in range(10)]
    assert [(a["type"], a.get("code"), a.get("id")) for a in answers] == [
        ("error", "bad-message", None), ("error", "bad-message", None),
        ("error", "bad-message", None), ("error", "unknown-type", "x"),
        ("error", "bad-message", None), ("error", "bad-message", None),
        ("error", "too-many-subscriptions", None), ("subscribed", None, None),
        ("snapshot", None, None), ("snapshot", None, None),
    ]  # fmt: skip
    assert answers[7]["channels"] == ["book:sim:BTC/USDT", "trades:sim:BTC/USDT"]
    assert answers[0]["message"] == "binary messages are not accepted: send JSON text"
    assert answers[6]["channel"] == "candles:sim:BTC/USDT:1m"


async def test_idle_and_shutdown_close_codes(serve: Serve):
    async with serve() as (url, hub), connect(url) as idle, connect(url) as alive:
        await recv(idle)
        await recv(alive)
        for client in hub.clients:
            client.last_seen -= 46
        await send(alive, type="ping", id=1)  # anything received counts as alive
        assert (await recv(alive))["type"] == "pong"
        hub.heartbeat()
        assert await closed(idle) == ([], 4002, "idle: nothing received for 45 s")
        assert (await recv(alive))["type"] == "ping"
        hub.close_all()
        assert await closed(alive) == ([], 1001, "server shutting down")


def test_live_values_have_the_rest_api_fields_without_freshness():
    render, fresh = WsRenderer(), Freshness(False, 0)
    omit = {"stale", "age_seconds"}
    t = Ticker("sim", "BTC/USDT", T0, 67012.35, None, 67012.4, 66000.0, 67500.0, 65800.5,
               2.190990000000001, 82000000.12)  # fmt: skip
    assert render.ticker(t) == TickerOut.of(t, fresh).model_dump(exclude=omit)
    b = OrderBook("sim", "ETH/USDT", T0, ((3001.5, 1.2),), ((3001.6, 1e-08),), 7)
    assert render.book(b) == OrderBookOut.of(b, fresh).model_dump(exclude=omit) | {
        "bids": [["3001.5", "1.2"]], "asks": [["3001.6", "0.00000001"]]}  # fmt: skip
    c = make_candle(3)
    assert render.candle(c) == CandleOut.of(c).model_dump()
    s = Signal("r", "death_cross", "sim", "BTC/USDT", "1h", T0, 1.5, {"a": float("nan")}, T0 + 9)
    assert render.signal(s) == SignalOut.of(s).model_dump()
