"""``/api/v1/ws``: live market data and tenant events over one WebSocket.

The protocol (docs/websocket.md): JSON text messages; ``auth``, ``subscribe``,
``unsubscribe``, ``ping`` and ``pong`` from the client; ``welcome``,
``authenticated``, ``subscribed``, ``unsubscribed``, ``snapshot``, ``delta``,
``ping``, ``pong`` and ``error`` from the server. Channels, sequence numbers
and queues live in ``services.ws_hub``; this module speaks the socket, checks
credentials and permissions, and renders domain values in the REST API's
wire form (decimal strings, ISO 8601 times).

Each connection's handler reads and answers; a task sends what the client's
queue holds while it holds something (and so waits on a slow socket alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl

import msgspec
import structlog
from fastapi import APIRouter
from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send

from cryptodesk.api.schemas import CandleOut, decimal_str, optional_decimal, volume_str
from cryptodesk.domain.auth import AuthenticationError, Permission, Principal
from cryptodesk.domain.market import Candle, OrderBook, Ticker, Trade
from cryptodesk.domain.signals import Signal
from cryptodesk.domain.timeutil import now_ms, to_iso
from cryptodesk.services.ws_channels import INTERNAL_BOOK, ChannelError, ChannelSpec
from cryptodesk.services.ws_hub import CLOSE_UNAUTHORIZED, WsClient, WsHub, to_json

log = structlog.get_logger(__name__)

PROTOCOL_VERSION: Final = 1
CLOSE_NORMAL: Final = 1000
CLOSE_SERVER_ERROR: Final = 1011
CLOSE_TRY_AGAIN: Final = 1013  # the credential store did not answer
MAX_MESSAGE_CHARS: Final = 65_536
MAX_SUBSCRIPTIONS: Final = 100
# Tenant channels are scoped to the caller's tenant and need these permissions;
# alerts come from signal and price rules, so reading them is signals:read; the
# internal venue's books show the tenant's resting orders, so they are orders:read.
TENANT_PERMISSIONS: Final[dict[str, Permission]] = {
    "portfolio": "portfolio:read",
    "orders": "orders:read",
    "alerts": "signals:read",
    INTERNAL_BOOK: "orders:read",
}

Authenticate = Callable[[str], Awaitable[Principal]]


class WsRenderer:
    """Domain values in the API's wire form (the REST models' fields, without the
    ``stale``/``age_seconds`` a live update does not need)."""

    def ticker(self, t: Ticker) -> object:
        return {
            "exchange": t.exchange, "symbol": t.symbol, "time": to_iso(t.ts),
            "last": decimal_str(t.last), "bid": optional_decimal(t.bid),
            "ask": optional_decimal(t.ask), "open_24h": optional_decimal(t.open_24h),
            "high_24h": optional_decimal(t.high_24h), "low_24h": optional_decimal(t.low_24h),
            "volume_24h": volume_str(t.volume_24h),
            "quote_volume_24h": volume_str(t.quote_volume_24h),
            "change_24h": optional_decimal(t.change_24h),
        }  # fmt: skip

    def book(self, b: OrderBook) -> object:
        return {
            "exchange": b.exchange, "symbol": b.symbol, "time": to_iso(b.ts),
            "sequence": b.sequence,
            "bids": [[decimal_str(p), decimal_str(a)] for p, a in b.bids],
            "asks": [[decimal_str(p), decimal_str(a)] for p, a in b.asks],
        }  # fmt: skip

    def trade(self, t: Trade) -> object:
        return {
            "id": t.id, "time": to_iso(t.ts), "price": decimal_str(t.price),
            "amount": decimal_str(t.amount), "side": t.side,
        }  # fmt: skip

    def candle(self, c: Candle) -> object:
        return CandleOut.of(c).model_dump()

    def signal(self, s: Signal) -> object:  # the fields of SignalOut (routes/signals.py)
        return {
            "rule": s.rule, "kind": s.kind, "exchange": s.exchange, "symbol": s.symbol,
            "interval": s.interval, "open_time": to_iso(s.open_time),
            "open_time_ms": s.open_time, "close": decimal_str(s.close),
            "values": {k: (v if math.isfinite(v) else None) for k, v in s.values.items()},
            "detected_at": to_iso(s.detected_at),
        }  # fmt: skip


def ws_router(
    hub: WsHub,
    authenticate: Authenticate,
    public_market_data: bool = True,
    *,
    auth_timeout: float = 10.0,
    close_timeout: float = 5.0,
    max_subscriptions: int = MAX_SUBSCRIPTIONS,
) -> APIRouter:
    """The endpoint; ``public_market_data`` lets market channels go without a token."""
    router = APIRouter()
    endpoint = _Endpoint(
        hub, authenticate, public=public_market_data, auth_timeout=auth_timeout,
        close_timeout=close_timeout, max_subscriptions=max_subscriptions,
    )  # fmt: skip
    # A plain ASGI endpoint: FastAPI's WebSocket route keeps a few KB of wrappers
    # (dependency solving, exit stacks, a WebSocket object) alive per connection.
    router.routes.append(WebSocketRoute("/api/v1/ws", endpoint, name="websocket"))
    return router


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """``/api/v1/ws`` as an ASGI app, with what every connection shares."""

    hub: WsHub
    authenticate: Authenticate
    public: bool
    auth_timeout: float
    close_timeout: float
    max_subscriptions: int

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return  # gone during the handshake
        await send({"type": "websocket.accept"})
        client = self.hub.connect()
        try:
            await _Session(self, client, receive, send).run(_token(scope))
        finally:
            self.hub.disconnect(client)


class _Session:
    """One connection. Its handler task reads; a task that sends exists only while
    the client's queue holds frames (most of the time none does), so an idle
    connection costs one task, not two."""

    __slots__ = ("client", "endpoint", "gone", "interrupted", "principal", "reader",
                 "receive", "receiving", "send", "sender")  # fmt: skip

    def __init__(self, endpoint: _Endpoint, client: WsClient, receive: Receive, send: Send):
        self.endpoint = endpoint
        self.client = client
        self.receive = receive
        self.send = send
        self.principal: Principal | None = None
        self.gone = False  # the client closed or dropped the connection
        self.receiving = False  # the reader waits for a message
        self.interrupted = False  # the hub closed the client while the reader waited
        self.reader: asyncio.Task[Any] | None = None
        self.sender: asyncio.Task[None] | None = None

    @property
    def hub(self) -> WsHub:
        return self.endpoint.hub

    async def run(self, token: str | None) -> None:
        client = self.client
        self.reader = asyncio.current_task()
        client.on_ready = self._start_sender
        client.on_close = self._interrupt
        try:
            if not token or await self._auth(token, None, reply=False):
                client.send(self._welcome())
            await self._read_messages()
        except asyncio.CancelledError:
            # Cancelled by _interrupt only, unless someone else cancels too.
            if not self.interrupted or self.reader is None or self.reader.uncancel() > 0:
                self._stop_sending()
                raise
        except Exception:
            log.exception("websocket session failed")
            client.close(CLOSE_SERVER_ERROR, "internal error")
        finally:
            client.on_ready = client.on_close = None
        await self._finish()

    async def _finish(self) -> None:
        """Send what a draining close leaves queued, then the close frame. A client
        too slow to read its queue may not read either: each step gives up after
        close_timeout rather than hold the handler."""
        client, sender, timeout = self.client, self.sender, self.endpoint.close_timeout
        if sender is not None and client.drain and not self.gone:
            await asyncio.wait({sender}, timeout=timeout)
        self._stop_sending()  # when it did not finish in time
        if not self.gone and client.close_code is not None:
            close = {"type": "websocket.close", "code": client.close_code,
                     "reason": client.close_reason}  # fmt: skip
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.send(close), timeout)

    def _start_sender(self) -> None:
        if self.sender is None and not self.gone:
            self.sender = asyncio.get_running_loop().create_task(self._send_queued())

    def _stop_sending(self) -> None:
        if self.sender is not None:
            self.sender.cancel()
            self.sender = None

    async def _send_queued(self) -> None:
        client, send = self.client, self.send
        try:
            while (frame := client.pop()) is not None:
                await send({"type": "websocket.send", "text": frame})
        except (OSError, RuntimeError):  # the peer is gone (uvicorn's ClientDisconnected)
            self.gone = True
        except Exception:
            log.exception("websocket send failed")
            client.close(CLOSE_SERVER_ERROR, "internal error")
        finally:
            self.sender = None

    def _interrupt(self) -> None:
        """The client was closed: stop waiting on a peer that will not be heard."""
        if self.receiving and not self.interrupted and self.reader is not None:
            # Closed by the hub (idle, too slow, shutting down) while reading.
            self.interrupted = True
            self.reader.cancel()
        if not self.client.drain:
            self._stop_sending()  # a send may wait on a socket the peer stopped reading

    def _welcome(self) -> str:
        p = self.principal
        return to_json({
            "type": "welcome", "protocol": PROTOCOL_VERSION, "authenticated": p is not None,
            "tenant": None if p is None else p.tenant,
            "public_market_data": self.endpoint.public,
            "heartbeat_seconds": self.hub.heartbeat_seconds,
            "idle_timeout_seconds": self.hub.idle_timeout,
            "queue_size": self.hub.queue_size,
        })  # fmt: skip

    def _error(self, code: str, message: str, ref: object = None, **extra: Any) -> None:
        body = {"type": "error", "id": ref, "code": code, "message": message, **extra}
        self.client.send(to_json(body))

    async def _read_messages(self) -> None:
        loop = asyncio.get_running_loop()
        client, endpoint = self.client, self.endpoint
        auth_deadline = loop.time() + endpoint.auth_timeout
        while client.close_code is None:
            must_auth = not endpoint.public and self.principal is None
            self.receiving = True
            try:
                if must_auth:
                    async with asyncio.timeout_at(auth_deadline):
                        message = await self.receive()
                else:
                    message = await self.receive()
            except TimeoutError:
                message = None
            finally:
                self.receiving = False
            if message is None:
                self._refuse(f"no auth message within {endpoint.auth_timeout:g} s", None)
                return
            if message["type"] == "websocket.disconnect":
                self.gone = True
                client.close(CLOSE_NORMAL, "client closed")
                return
            client.last_seen = loop.time()
            # Answered in a frame of its own, and let go: nothing of a message stays
            # referenced (for every connection) while the next one is awaited.
            await self._answer(self._parse(message.get("text")), must_auth)
            del message

    async def _answer(self, body: dict[str, Any] | None, must_auth: bool) -> None:
        client = self.client
        if body is None:
            if must_auth:
                self._refuse('send {"type": "auth", "token": ...} first', None)
            return
        kind, ref = body.get("type"), _ref(body.get("id"))
        if must_auth and kind != "auth":
            self._refuse('send {"type": "auth", "token": ...} first', ref)
        elif kind == "auth":
            token = body.get("token")
            if not isinstance(token, str) or not token:
                self._error("bad-message", "auth needs a non-empty string 'token'", ref)
            elif self.principal is not None:
                self._error("already-authenticated", "this connection is authenticated", ref)
            else:
                await self._auth(token, ref)
        elif kind in ("subscribe", "unsubscribe"):
            await self._subscription(kind, body.get("channels"), ref)
        elif kind == "ping":
            client.send(to_json({"type": "pong", "id": ref, "ts": now_ms()}))
        elif kind != "pong":
            self._error("unknown-type", f"unknown message type {str(kind)[:40]!r}", ref)

    def _parse(self, text: str | None) -> dict[str, Any] | None:
        if text is None:
            self._error("bad-message", "binary messages are not accepted: send JSON text")
        elif len(text) > MAX_MESSAGE_CHARS:
            self._error("bad-message", f"a message may be at most {MAX_MESSAGE_CHARS} characters")
        else:
            try:
                body = msgspec.json.decode(text)
            except msgspec.DecodeError:
                body = None
            if isinstance(body, dict) and isinstance(body.get("type"), str):
                return body
            self._error("bad-message", 'a message is a JSON object with a string "type"')
        return None

    async def _auth(self, token: str, ref: object, *, reply: bool = True) -> bool:
        try:
            principal = await self.endpoint.authenticate(token)
        except AuthenticationError as exc:
            self._refuse(str(exc) or "invalid token", ref)
            return False
        except Exception as exc:
            log.warning("websocket authentication failed", error=repr(exc))
            self._error("unavailable", "authentication is unavailable; retry shortly", ref)
            self.client.close(CLOSE_TRY_AGAIN, "authentication unavailable", drain=True)
            return False
        self.principal = principal
        if reply:  # a token in the URL is answered by the welcome
            self.client.send(to_json({
                "type": "authenticated", "id": ref, "tenant": principal.tenant,
                "role": principal.role,
            }))  # fmt: skip
        return True

    def _refuse(self, message: str, ref: object) -> None:
        self._error("unauthorized", message, ref)
        self.client.close(CLOSE_UNAUTHORIZED, "unauthorized", drain=True)

    async def _subscription(self, kind: str, names: object, ref: object) -> None:
        if (
            not isinstance(names, list)
            or not names
            or not all(isinstance(n, str) for n in names)
            or len(names) > MAX_SUBSCRIPTIONS
        ):
            self._error("bad-message", f"'channels' must list 1..{MAX_SUBSCRIPTIONS} names", ref)
            return
        tenant = None if self.principal is None else self.principal.tenant
        specs: dict[str, ChannelSpec] = {}  # by key: two spellings of one channel are one
        for name in names:
            try:
                spec = self.hub.channel(name, tenant)
                if kind == "subscribe":
                    self._check(spec)
            except ChannelError as exc:
                self._error(exc.code, str(exc), ref, channel=name[:200])
                continue
            specs.setdefault(spec.key, spec)
        if kind == "unsubscribe":
            for spec in specs.values():
                self.hub.unsubscribe(self.client, spec)
        else:
            held = self.client.subscriptions
            new = [key for key in specs if key not in held]
            for key in new[max(self.endpoint.max_subscriptions - len(held), 0) :]:
                limit = f"at most {self.endpoint.max_subscriptions} channels per connection"
                self._error("too-many-subscriptions", limit, ref, channel=specs.pop(key).name)
        if specs:
            reply = "subscribed" if kind == "subscribe" else "unsubscribed"
            listed = [s.name for s in specs.values()]
            self.client.send(to_json({"type": reply, "id": ref, "channels": listed}))
        if kind == "subscribe":
            for spec in specs.values():
                await self.hub.subscribe(self.client, spec)

    def _check(self, spec: ChannelSpec) -> None:
        if spec.tenant:
            needed = TENANT_PERMISSIONS[spec.kind]
        elif spec.kind == "signals":
            needed = "signals:read"
        elif self.endpoint.public:
            return
        else:
            needed = "market:read"
        if self.principal is None:
            raise ChannelError("unauthorized", f"{spec.name} needs a token: send an auth message")
        if not self.principal.can(needed):
            raise ChannelError("forbidden", f"{spec.name} needs the permission {needed!r}")


def _token(scope: Scope) -> str | None:
    """The ``token`` query parameter (the last one, as Starlette's QueryParams)."""
    query = scope.get("query_string", b"").decode("latin-1")
    values = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "token"]
    return values[-1] if values else None


def _ref(value: object) -> object:
    """A client's message id, echoed in the answer when it is a short string or int."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and len(value) <= 64):
        return value
    return None
