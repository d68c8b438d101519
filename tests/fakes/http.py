"""A local HTTP + WebSocket server to build fake exchanges and APIs on (aiohttp).

A fake registers REST routes and one WebSocket handler that speak a real
service's documented format; tests point the real client library (ccxt,
httpx...) at ``base_url`` / ``ws_url``. Tests can also inject failures
(``fail_next``: e.g. a 429 with Retry-After), see every request (``requests``)
and cut every open WebSocket abruptly (``drop_websockets``) to exercise
reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Called with (server, websocket, parsed message) for each client message.
WsHandler = Callable[["FakeServer", web.WebSocketResponse, Any], Awaitable[None]]


@dataclass
class Injected:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class FakeServer:
    def __init__(self) -> None:
        self.app = web.Application(middlewares=[self._middleware])
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path, query)
        self.websockets: set[web.WebSocketResponse] = set()
        self.ws_connects = 0
        self._failures: dict[str, list[Injected]] = {}
        self._ws_handler: WsHandler | None = None
        self._ws_changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- wiring -----------------------------------------------------------------
    def route(self, method: str, path: str, handler: Handler) -> None:
        self.app.router.add_route(method, path, handler)

    def json_route(self, method: str, path: str, body: Callable[[web.Request], Any]) -> None:
        """A route answering ``body(request)`` as JSON."""

        async def handler(request: web.Request) -> web.StreamResponse:
            return web.json_response(body(request))

        self.route(method, path, handler)

    def websocket(self, path: str, on_message: WsHandler) -> None:
        self._ws_handler = on_message
        self.app.router.add_get(path, self._ws)

    def fail_next(
        self, path: str, status: int, body: Any = None, headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:  # fmt: skip
        """The next ``times`` requests to ``path`` answer ``status`` instead."""
        self._failures.setdefault(path, []).extend(
            Injected(status, body, headers or {}) for _ in range(times)
        )

    # -- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        sockets = site._server.sockets if site._server is not None else []  # type: ignore[union-attr]
        self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        await self.drop_websockets()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    # -- websockets -------------------------------------------------------------
    async def send_all(self, message: Any) -> int:
        """Send ``message`` (JSON-encoded unless bytes/str) to every open WebSocket."""
        data = message if isinstance(message, str | bytes) else json.dumps(message)
        sent = 0
        for ws in list(self.websockets):
            if ws.closed:
                continue
            if isinstance(data, bytes):
                await ws.send_bytes(data)
            else:
                await ws.send_str(data)
            sent += 1
        return sent

    async def drop_websockets(self) -> None:
        """Cut every open WebSocket without a clean close handshake from the client side."""
        for ws in list(self.websockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1011, message=b"dropped by test")
        self.websockets.clear()

    async def wait_for_websockets(self, count: int = 1, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len([w for w in self.websockets if not w.closed]) < count:
                self._ws_changed.clear()
                await self._ws_changed.wait()

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        self.websockets.add(ws)
        self.ws_connects += 1
        self._ws_changed.set()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT and self._ws_handler is not None:
                    await self._ws_handler(self, ws, json.loads(msg.data))
        finally:
            self.websockets.discard(ws)
        return ws

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append((request.method, request.path, dict(request.query)))
        queued = self._failures.get(request.path)
        if queued:
            failure = queued.pop(0)
            return web.json_response(failure.body, status=failure.status, headers=failure.headers)
        return await handler(request)
