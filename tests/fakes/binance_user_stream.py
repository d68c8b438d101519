"""The user data stream of the fake Binance: every execution of the account's
orders (``FakeBinanceOrders``) as an ``executionReport`` event, on the spot
WebSocket API, the way ccxt.pro's ``watch_orders`` / ``watch_my_trades`` read it.

Subscription (https://developers.binance.com/docs/binance-spot-api-docs/websocket-api/user-data-stream-requests):
a client connects to ``/ws-api/v3`` and sends ``{"id": ..., "method":
"userDataStream.subscribe.signature", "params": {"apiKey", "timestamp",
"recvWindow"?, "signature"}}``. The signature is the hex HMAC SHA256, keyed with
the secret, of every other parameter sorted by name as ``name=value`` joined by
``&`` (https://developers.binance.com/docs/binance-spot-api-docs/websocket-api/request-security);
the timestamp must fall within ``recvWindow`` (default 5000 ms). The answer is
``{"id": ..., "status": 200, "result": {"subscriptionId": 0}}`` (ids count per
connection); failures are ``{"id": ..., "status": 400|401, "error": {"code",
"msg"}}`` with Binance's codes (-1022 bad signature, -2015 unknown key, -1021
outside recvWindow). ``userDataStream.unsubscribe`` ends a subscription.
Binance's older way, a ``listenKey`` from ``POST /api/v3/userDataStream`` read
on ``/ws/<listenKey>``, is deprecated and ccxt no longer opens it for spot.

Events (https://developers.binance.com/docs/binance-spot-api-docs/websocket-api/general-api-information
"Event format", payload https://developers.binance.com/docs/binance-spot-api-docs/user-data-stream
"Order Update"): ``{"subscriptionId": 0, "event": {"e": "executionReport", ...}}``
with ``E`` event time, ``s`` symbol, ``c`` client order id (a cancel's own new
one, the order's in ``C``), ``S`` side, ``o`` type, ``f`` time in force, ``q``
quantity, ``p`` price, ``x`` execution type (NEW, TRADE, CANCELED, EXPIRED),
``X`` order status, ``r`` reject reason, ``i`` order id, ``l``/``L`` last
executed quantity/price, ``z`` cumulative filled, ``n``/``N`` commission and its
asset, ``T`` transaction time, ``t`` trade id (-1 if none), ``w`` on the book,
``m`` maker, ``O`` creation time, ``Z`` cumulative quote, ``Y`` last quote.

An event reaches the subscriptions live when it happens, and never later: one
made while nobody is subscribed is lost (``lost``), as on Binance. Controls for
tests: ``hold`` (new subscriptions wait for ``release`` before they are answered
and start), ``push`` (send any event again: a duplicate or a late one),
``wait_subscribed``; the exchange's ``drop_websockets`` cuts these sockets too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from decimal import Decimal
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.binance_account import sign
from tests.fakes.binance_orders import FakeBinanceOrders

PATH = "/ws-api/v3"
_ZERO = "0.00000000"


class FakeBinanceUserStream:
    def __init__(self, orders: FakeBinanceOrders) -> None:
        self.orders = orders
        self.account = orders.account
        self.exchange = orders.exchange
        self.events: list[dict[str, Any]] = []  # every executionReport made, in order
        self.lost: list[dict[str, Any]] = []  # those made while nobody was subscribed
        self.subscriptions = 0  # subscriptions started, in all
        self._live: dict[web.WebSocketResponse, tuple[int, asyncio.Queue[str]]] = {}
        self._next_id: dict[web.WebSocketResponse, int] = {}
        self._held: list[tuple[web.WebSocketResponse, asyncio.Queue[str], Any]] | None = None
        self._changed = asyncio.Condition()
        self._execution = 0
        orders.listeners.append(self._on_execution)
        self.exchange.server.app.router.add_get(PATH, self._connect)

    # -- controls ---------------------------------------------------------------------
    def push(self, event: dict[str, Any]) -> int:
        """Send ``event`` to every live subscription now; how many it reached."""
        sent = 0
        for ws, (sid, outbox) in list(self._live.items()):
            if ws.closed:
                del self._live[ws]
                continue
            outbox.put_nowait(json.dumps({"subscriptionId": sid, "event": event}))
            sent += 1
        return sent

    def hold(self) -> None:
        """New subscription requests wait, unanswered, until ``release``."""
        self._held = []

    def release(self) -> None:
        held, self._held = self._held or [], None
        for ws, outbox, rid in held:
            if not ws.closed:
                self._start(ws, outbox, rid)

    async def wait_subscribed(self, times: int = 1, timeout: float = 10.0) -> None:
        """Until ``times`` subscriptions have started in all and one is live."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(
                lambda: self.subscriptions >= times
                and any(not ws.closed for ws in self._live)
            )  # fmt: skip

    # -- events -----------------------------------------------------------------------
    def _on_execution(self, order: dict[str, Any], execution: str, *,
                      trade: dict[str, Any] | None = None, client_id: str | None = None,
                      ) -> None:  # fmt: skip
        self._execution += 1
        event = execution_report(
            order, execution, trade=trade, client_id=client_id, event_time=self.exchange.now,
            execution_id=self._execution,
        )  # fmt: skip
        self.events.append(event)
        if self.push(event) == 0:
            self.lost.append(event)

    # -- websocket --------------------------------------------------------------------
    async def _connect(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        server = self.exchange.server
        server.websockets.add(ws)  # so that ``drop_websockets`` cuts it too
        server.ws_connects += 1
        outbox: asyncio.Queue[str] = asyncio.Queue()  # answers and events, in order
        writer = asyncio.create_task(_write(ws, outbox))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._request(ws, outbox, json.loads(msg.data))
        finally:
            self._live.pop(ws, None)
            server.websockets.discard(ws)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        return ws

    def _request(self, ws: web.WebSocketResponse, outbox: asyncio.Queue[str],
                 msg: dict[str, Any]) -> None:  # fmt: skip
        rid, method, params = msg.get("id"), msg.get("method"), msg.get("params") or {}
        if method == "userDataStream.subscribe.signature":
            refused = self._check_signature(params)
            if refused is not None:
                outbox.put_nowait(_error(rid, *refused))
            elif self._held is not None:
                self._held.append((ws, outbox, rid))
            else:
                self._start(ws, outbox, rid)
        elif method == "userDataStream.unsubscribe":
            self._live.pop(ws, None)
            outbox.put_nowait(json.dumps({"id": rid, "status": 200, "result": {}}))
        else:
            outbox.put_nowait(_error(rid, 400, -1020, "This operation is not supported."))

    def _check_signature(self, params: dict[str, Any]) -> tuple[int, int, str] | None:
        if params.get("apiKey") != self.account.api_key:
            return 401, -2015, "Invalid API-key, IP, or permissions for action."
        payload = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "signature")
        signature = str(params.get("signature", "")).lower()
        if not hmac.compare_digest(sign(self.account.secret, payload), signature):
            return 400, -1022, "Signature for this request is not valid."
        now, stamp = self.account.clock(), int(params.get("timestamp", 0))
        if not (stamp < now + 1000 and now - stamp <= int(params.get("recvWindow", 5000))):
            return 400, -1021, "Timestamp for this request is outside of the recvWindow."
        return None

    def _start(self, ws: web.WebSocketResponse, outbox: asyncio.Queue[str], rid: Any) -> None:
        sid = self._next_id.get(ws, 0)
        self._next_id[ws] = sid + 1
        self._live[ws] = (sid, outbox)
        self.subscriptions += 1
        outbox.put_nowait(json.dumps({"id": rid, "status": 200,
                                      "result": {"subscriptionId": sid}}))  # fmt: skip
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()


def execution_report(
    order: dict[str, Any], execution: str, *, trade: dict[str, Any] | None,
    client_id: str | None, event_time: int, execution_id: int,
) -> dict[str, Any]:  # fmt: skip
    """The ``executionReport`` of one execution of ``order`` (the REST order fields)."""
    open_ = order["status"] in ("NEW", "PARTIALLY_FILLED")
    last_qty = trade["qty"] if trade else _ZERO
    last_price = trade["price"] if trade else _ZERO
    last_quote = f"{Decimal(trade['quoteQty']):.8f}" if trade else _ZERO
    return {
        "e": "executionReport", "E": event_time, "s": order["symbol"],
        "c": client_id or order["clientOrderId"], "S": order["side"], "o": order["type"],
        "f": order["timeInForce"], "q": order["origQty"], "p": order["price"],
        "P": _ZERO, "F": _ZERO, "g": -1,
        "C": order["clientOrderId"] if client_id else "", "x": execution,
        "X": order["status"], "r": "NONE", "i": order["orderId"], "l": last_qty,
        "z": order["executedQty"], "L": last_price,
        "n": trade["commission"] if trade else "0",
        "N": trade["commissionAsset"] if trade else None,
        "T": trade["time"] if trade else order["updateTime"], "t": trade["id"] if trade else -1,
        "I": execution_id, "w": open_ and order["type"] == "LIMIT",
        "m": bool(trade and trade["isMaker"]), "M": False, "O": order["time"],
        "Z": order["cummulativeQuoteQty"], "Y": last_quote, "Q": _ZERO,
        "W": order["workingTime"], "V": order["selfTradePreventionMode"],
    }  # fmt: skip


def _error(rid: Any, status: int, code: int, msg: str) -> str:
    return json.dumps({"id": rid, "status": status, "error": {"code": code, "msg": msg}})


async def _write(ws: web.WebSocketResponse, outbox: asyncio.Queue[str]) -> None:
    while True:
        text = await outbox.get()
        try:
            await ws.send_str(text)
        except ConnectionError:  # closing under us: like a message lost in a drop
            return
