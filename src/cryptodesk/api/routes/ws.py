"""``/api/v1/ws``: live market data and tenant events over one WebSocket.

The protocol (docs/websocket.md): JSON text messages; ``auth``, ``subscribe``,
``unsubscribe``, ``ping`` and ``pong`` from the client; ``welcome``,
``authenticated``, ``subscribed``, ``unsubscribed``, ``snapshot``, ``delta``,
``ping``, ``pong`` and ``error`` from the server. Channels, sequence numbers
and queues live in ``services.ws_hub``; this module speaks the socket, checks
credentials and permissions, and renders domain values in the REST API's
wire form (decimal strings, ISO 8601 times).

Each connection runs two coroutines: this handler sends what the client's
queue holds (and so waits on a slow socket alone), a task reads and answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
import structlog
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from cryptodesk.api.schemas import CandleOut, decimal_str, optional_decimal, volume_str
from cryptodesk.domain.auth import AuthenticationError, Permission, Principal
from cryptodesk.domain.market import Candle, OrderBook, Ticker, Trade
from cryptodesk.domain.signals import Signal
from cryptodesk.domain.timeutil import now_ms, to_iso
from cryptodesk.services.ws_hub import (
    CLOSE_UNAUTHORIZED,
    ChannelError,
    ChannelSpec,
    WsClient,
    WsHub,
    to_json,
)

log = structlog.get_logger(__name__)

PROTOCOL_VERSION: Final = 1
CLOSE_NORMAL: Final = 1000
CLOSE_SERVER_ERROR: Final = 1011
CLOSE_TRY_AGAIN: Final = 1013  # the credential store did not answer
MAX_MESSAGE_CHARS: Final = 65_536
MAX_SUBSCRIPTIONS: Final = 100
# Tenant channels are scoped to the caller's tenant and need these permissions;
# alerts come from signal and price rules, so reading them is signals:read.
TENANT_PERMISSIONS: Final[dict[str, Permission]] = {
    "portfolio": "portfolio:read",
    "orders": "orders:read",
    "alerts": "signals:read",
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

    @router.websocket("/api/v1/ws")
    async def websocket_endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        client = hub.connect()
        session = _Session(
            hub, client, websocket, authenticate, public=public_market_data,
            auth_timeout=auth_timeout, max_subscriptions=max_subscriptions,
        )  # fmt: skip
        try:
            await session.run(close_timeout)
        finally:
            hub.disconnect(client)

    return router


class _Session:
    def __init__(
        self,
        hub: WsHub,
        client: WsClient,
        websocket: WebSocket,
        authenticate: Authenticate,
        *,
        public: bool,
        auth_timeout: float,
        max_subscriptions: int,
    ) -> None:
        self.hub = hub
        self.client = client
        self.websocket = websocket
        self.authenticate = authenticate
        self.public = public
        self.auth_timeout = auth_timeout
        self.max_subscriptions = max_subscriptions
        self.principal: Principal | None = None
        self.gone = False  # the client closed or dropped the connection
        self.sending = False
        self.interrupted = False
        self.sender: asyncio.Task[Any] | None = None

    async def run(self, close_timeout: float) -> None:
        client = self.client
        token = self.websocket.query_params.get("token")
        if not token or await self._auth(token, None, reply=False):
            client.send(self._welcome())
        reader = asyncio.create_task(self._read())
        client.on_close = self._interrupt
        try:
            await self._send_frames()
        finally:
            client.on_close = None
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        if not self.gone and client.close_code is not None:
            # A client too slow to read its queue may not read the close frame
            # either: give up after close_timeout rather than hold the handler.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self.websocket.close(client.close_code, client.close_reason), close_timeout
                )

    async def _send_frames(self) -> None:
        client = self.client
        self.sender = asyncio.current_task()
        try:
            while (frame := await client.next()) is not None:
                self.sending = True
                await self.websocket.send_text(frame)
                self.sending = False
        except (WebSocketDisconnect, OSError, RuntimeError):
            self.gone = True
        except asyncio.CancelledError:
            # Cancelled by _interrupt only, unless someone else cancels too.
            if not self.interrupted or self.sender is None or self.sender.uncancel() > 0:
                raise

    def _interrupt(self) -> None:
        """The hub closed the client: stop waiting on a socket it does not read."""
        if self.sending and not self.client.drain and not self.interrupted:
            self.interrupted = True
            if self.sender is not None:
                self.sender.cancel()

    def _welcome(self) -> str:
        p = self.principal
        return to_json({
            "type": "welcome", "protocol": PROTOCOL_VERSION, "authenticated": p is not None,
            "tenant": None if p is None else p.tenant,
            "public_market_data": self.public,
            "heartbeat_seconds": self.hub.heartbeat_seconds,
            "idle_timeout_seconds": self.hub.idle_timeout,
            "queue_size": self.hub.queue_size,
        })  # fmt: skip

    def _error(self, code: str, message: str, ref: object = None, **extra: Any) -> None:
        body = {"type": "error", "id": ref, "code": code, "message": message, **extra}
        self.client.send(to_json(body))

    async def _read(self) -> None:
        try:
            await self._read_messages()
        except asyncio.CancelledError:
            raise
        except WebSocketDisconnect:
            self.gone = True
            self.client.close(CLOSE_NORMAL, "client closed")
        except Exception:
            log.exception("websocket session failed")
            self.client.close(CLOSE_SERVER_ERROR, "internal error")

    async def _read_messages(self) -> None:
        loop = asyncio.get_running_loop()
        client = self.client
        auth_deadline = loop.time() + self.auth_timeout
        while client.close_code is None:
            must_auth = not self.public and self.principal is None
            try:
                async with asyncio.timeout_at(auth_deadline if must_auth else None):
                    message = await self.websocket.receive()
            except TimeoutError:
                self._refuse(f"no auth message within {self.auth_timeout:g} s", None)
                return
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", CLOSE_NORMAL))
            client.last_seen = loop.time()
            body = self._parse(message.get("text"))
            if body is None:
                if must_auth:
                    self._refuse('send {"type": "auth", "token": ...} first', None)
                continue
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
            principal = await self.authenticate(token)
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
            for key in new[max(self.max_subscriptions - len(held), 0) :]:
                limit = f"at most {self.max_subscriptions} channels per connection"
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
        elif self.public:
            return
        else:
            needed = "market:read"
        if self.principal is None:
            raise ChannelError("unauthorized", f"{spec.name} needs a token: send an auth message")
        if not self.principal.can(needed):
            raise ChannelError("forbidden", f"{spec.name} needs the permission {needed!r}")


def _ref(value: object) -> object:
    """A client's message id, echoed in the answer when it is a short string or int."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and len(value) <= 64):
        return value
    return None
