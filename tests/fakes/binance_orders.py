"""The trading (SIGNED, TRADE) side of the fake Binance: new, query, cancel and
open orders, mounted on a ``FakeBinanceAccount`` (whose ``/api/v3/myTrades``
serves the fills, and whose balances the orders lock and move).

Endpoints (https://developers.binance.com/docs/binance-spot-api-docs/rest-api/trading-endpoints
and https://developers.binance.com/docs/binance-spot-api-docs/rest-api/account-endpoints):
- ``POST /api/v3/order`` "New order": parameters in the form body, signed
  like a query (request security: the HMAC of query string + body). A
  ``newClientOrderId`` is echoed as ``clientOrderId``; the ``FULL`` response
  carries ``fills`` (``price``, ``qty``, ``commission``, ``commissionAsset``,
  ``tradeId``). A MARKET order takes the book (``FakeBinance.books``), level
  by level, and what the book cannot fill expires (status ``EXPIRED``); a
  LIMIT order rests (status ``NEW``) until the test fills it (``fill``).
- ``GET /api/v3/order`` "Query order", ``DELETE /api/v3/order`` "Cancel
  order" (its ``clientOrderId`` is a new id for the cancel; the order's own is
  ``origClientOrderId``), both by ``orderId`` or ``origClientOrderId``;
  ``GET /api/v3/openOrders`` "Current open orders", ``symbol`` optional.

Errors (https://developers.binance.com/docs/binance-spot-api-docs/errors),
HTTP 400: -1121 "Invalid symbol.", -1013 "Filter failure: LOT_SIZE" /
"Filter failure: NOTIONAL", -2010 "Account has insufficient balance for
requested action." / "Duplicate order sent." (a client order id of an open
order), -2011 "Unknown order sent." (cancel), -2013 "Order does not exist."
Commission is ``fee_rate`` of what the account receives, in that asset
(base for a buy, quote for a sell), as Binance charges without BNB.

Every change of an order (new, each trade, cancel, expiry) is told to the
``listeners`` as it happens, in order: the user data stream
(``binance_user_stream.py``) turns each into an ``executionReport``.
"""

from __future__ import annotations

import hmac
from decimal import ROUND_DOWN, Decimal
from typing import Any, Protocol

from aiohttp import web

from tests.fakes.binance_account import FakeBinanceAccount, Route, sign

_ZERO = Decimal(0)
_Q8 = Decimal("1E-8")
PARAMS = web.RequestKey("binance_params", dict)  # the checked parameters of a signed request


def _error(status: int, code: int, msg: str) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status)


def _fmt(value: Decimal) -> str:
    return f"{value:.8f}"


class ExecutionListener(Protocol):
    """Told of each execution: the order as it is now, Binance's execution type
    (NEW, TRADE, CANCELED, EXPIRED), the trade (``myTrades`` format) for a TRADE,
    and for a CANCELED the cancel request's own client order id."""

    def __call__(self, order: dict[str, Any], execution: str, *,
                 trade: dict[str, Any] | None = None, client_id: str | None = None,
                 ) -> None: ...  # fmt: skip


class FakeBinanceOrders:
    def __init__(self, account: FakeBinanceAccount, *, fee_rate: str = "0.001") -> None:
        self.account = account
        self.exchange = account.exchange
        self.fee_rate = Decimal(fee_rate)
        self.orders: dict[int, dict[str, Any]] = {}  # orderId -> Binance's order fields
        self._next_order_id = 4_000_000
        self._next_cancel = 0
        self.listeners: list[ExecutionListener] = []
        s = self.exchange.server
        s.route("POST", "/api/v3/order", self._signed(self._new_order))
        s.route("GET", "/api/v3/order", self._signed(self._query_order))
        s.route("DELETE", "/api/v3/order", self._signed(self._cancel_order))
        s.route("GET", "/api/v3/openOrders", self._signed(self._open_orders))

    # -- state the tests drive --------------------------------------------------------
    def by_client_id(self, client_order_id: str) -> dict[str, Any]:
        return next(o for o in self.orders.values() if o["clientOrderId"] == client_order_id)

    def fill(self, order_id: int, qty: str | None = None, *, time: int) -> dict[str, Any]:
        """A resting limit order trades ``qty`` (default: all that is left) at its
        price, as maker; returns the trade ``/api/v3/myTrades`` now serves."""
        order = self.orders[order_id]
        left = Decimal(order["origQty"]) - Decimal(order["executedQty"])
        amount = Decimal(qty) if qty is not None else left
        if order["status"] not in ("NEW", "PARTIALLY_FILLED") or not _ZERO < amount <= left:
            raise ValueError(f"order {order_id} cannot fill {amount}")
        price = Decimal(order["price"])
        self._unlock(order, amount)
        trade = self._trade(order, price, amount, maker=True, time=time)
        order["updateTime"] = time
        return trade

    # -- security ---------------------------------------------------------------------
    def _signed(self, handler: Route) -> Route:
        """The key header and the HMAC of query string + body (signature last)."""
        account = self.account

        async def checked(request: web.Request) -> web.StreamResponse:
            if request.headers.get("X-MBX-APIKEY") != account.api_key:
                return _error(401, -2015, "Invalid API-key, IP, or permissions for action.")
            query, body = request.raw_path.partition("?")[2], await request.text()
            total = query + body
            payload, _, signature = total.rpartition("&signature=")
            if not signature or not hmac.compare_digest(
                sign(account.secret, payload), signature.lower()
            ):
                return _error(400, -1022, "Signature for this request is not valid.")
            params = dict(request.query) if query else dict(await request.post())
            if "timestamp" not in params:
                return _error(400, -1102, "Mandatory parameter 'timestamp' was not sent, "
                                          "was empty/null, or malformed.")  # fmt: skip
            request[PARAMS] = {k: str(v) for k, v in params.items()}
            return await handler(request)

        return checked

    # -- endpoints --------------------------------------------------------------------
    async def _new_order(self, request: web.Request) -> web.StreamResponse:
        p: dict[str, str] = request[PARAMS]
        sid = p.get("symbol", "")
        listing = self.exchange.listings.get(sid)
        if listing is None:
            return _error(400, -1121, "Invalid symbol.")
        kind, side = p.get("type", ""), p.get("side", "")
        qty = Decimal(p.get("quantity", "0"))
        step = Decimal(listing.step_size)
        if qty < Decimal(listing.min_qty) or qty % step != 0:
            return _error(400, -1013, "Filter failure: LOT_SIZE")
        client_id = p.get("newClientOrderId") or f"web_{self._next_order_id}"
        if any(o["clientOrderId"] == client_id and o["status"] in ("NEW", "PARTIALLY_FILLED")
               for o in self.orders.values()):  # fmt: skip
            return _error(400, -2010, "Duplicate order sent.")
        book = self.exchange.books[sid]
        levels = sorted(book.asks.items()) if side == "BUY" else sorted(book.bids.items(),
                                                                          reverse=True)  # fmt: skip
        price = Decimal(p["price"]) if kind == "LIMIT" else levels[0][0] if levels else _ZERO
        if price * qty < Decimal(listing.min_notional):
            return _error(400, -1013, "Filter failure: NOTIONAL")
        need_asset = listing.quote if side == "BUY" else listing.base
        need = qty * price if side == "BUY" else qty
        if kind == "MARKET" and side == "BUY":
            need = _walk_cost(levels, qty)
        if self.account.balances.get(need_asset, [_ZERO, _ZERO])[0] < need:
            return _error(400, -2010, "Account has insufficient balance for requested action.")
        self._next_order_id += 1
        now = self.exchange.now
        order = {
            "symbol": sid, "orderId": self._next_order_id, "orderListId": -1,
            "clientOrderId": client_id, "price": _fmt(price if kind == "LIMIT" else _ZERO),
            "origQty": _fmt(qty), "executedQty": _fmt(_ZERO),
            "cummulativeQuoteQty": _fmt(_ZERO), "status": "NEW",
            "timeInForce": p.get("timeInForce", "GTC"), "type": kind, "side": side,
            "stopPrice": _fmt(_ZERO), "icebergQty": _fmt(_ZERO), "time": now,
            "updateTime": now, "isWorking": True, "workingTime": now,
            "origQuoteOrderQty": _fmt(_ZERO), "selfTradePreventionMode": "NONE",
        }  # fmt: skip
        self.orders[order["orderId"]] = order
        self._tell(order, "NEW")
        fills: list[dict[str, Any]] = []
        if kind == "MARKET":
            left = qty
            for level_price, level_qty in levels:
                take = min(left, Decimal(level_qty))
                trade = self._trade(order, level_price, take, maker=False, time=now)
                fills.append({"price": trade["price"], "qty": trade["qty"],
                              "commission": trade["commission"],
                              "commissionAsset": trade["commissionAsset"],
                              "tradeId": trade["id"]})  # fmt: skip
                taken = [(str(level_price), _fmt(Decimal(level_qty) - take))]
                book.apply([], taken) if side == "BUY" else book.apply(taken, [])
                left -= take
                if left == 0:
                    break
            if left > 0:
                order["status"] = "EXPIRED"
                self._tell(order, "EXPIRED")
        else:
            self._lock(need_asset, need)
        query_only = ("time", "updateTime", "isWorking", "stopPrice", "icebergQty")
        full = {k: v for k, v in order.items() if k not in query_only}
        return web.json_response({**full, "transactTime": now, "fills": fills})

    def _find(self, p: dict[str, str]) -> dict[str, Any] | None:
        if "orderId" in p:
            order = self.orders.get(int(p["orderId"]))
        else:
            wanted = p.get("origClientOrderId")
            order = next((o for o in self.orders.values() if o["clientOrderId"] == wanted), None)
        return order if order is not None and order["symbol"] == p.get("symbol") else None

    async def _query_order(self, request: web.Request) -> web.StreamResponse:
        order = self._find(request[PARAMS])
        if order is None:
            return _error(400, -2013, "Order does not exist.")
        return web.json_response(order)

    async def _cancel_order(self, request: web.Request) -> web.StreamResponse:
        order = self._find(request[PARAMS])
        if order is None or order["status"] not in ("NEW", "PARTIALLY_FILLED"):
            return _error(400, -2011, "Unknown order sent.")
        left = Decimal(order["origQty"]) - Decimal(order["executedQty"])
        self._unlock(order, left)
        order["status"], order["updateTime"], order["isWorking"] = (
            "CANCELED",
            self.exchange.now,
            False,
        )
        self._next_cancel += 1
        keys = ("symbol", "orderId", "orderListId", "price", "origQty", "executedQty",
                "cummulativeQuoteQty", "status", "timeInForce", "type", "side",
                "selfTradePreventionMode")  # fmt: skip
        body = {k: order[k] for k in keys}
        body.update(origClientOrderId=order["clientOrderId"], transactTime=self.exchange.now,
                    clientOrderId=f"cancel{self._next_cancel:06d}")  # fmt: skip
        self._tell(order, "CANCELED", client_id=body["clientOrderId"])
        return web.json_response(body)

    async def _open_orders(self, request: web.Request) -> web.StreamResponse:
        sid = request[PARAMS].get("symbol")
        if sid is not None and sid not in self.exchange.listings:
            return _error(400, -1121, "Invalid symbol.")
        return web.json_response([
            o for o in self.orders.values()
            if o["status"] in ("NEW", "PARTIALLY_FILLED") and sid in (None, o["symbol"])
        ])  # fmt: skip

    # -- matching and balances --------------------------------------------------------
    def _trade(self, order: dict[str, Any], price: Decimal, qty: Decimal, *, maker: bool,
               time: int) -> dict[str, Any]:  # fmt: skip
        listing = self.exchange.listings[order["symbol"]]
        buy = order["side"] == "BUY"
        received = qty if buy else price * qty
        commission = (received * self.fee_rate).quantize(_Q8, ROUND_DOWN)
        trade = self.account.add_trade(
            order["symbol"], side="buy" if buy else "sell", price=_fmt(price), qty=_fmt(qty),
            commission=_fmt(commission), commission_asset=listing.base if buy else listing.quote,
            time=time, maker=maker,
        )  # fmt: skip
        trade["orderId"] = order["orderId"]
        executed = Decimal(order["executedQty"]) + qty
        order["executedQty"] = _fmt(executed)
        quote = Decimal(order["cummulativeQuoteQty"]) + Decimal(trade["quoteQty"])
        order["cummulativeQuoteQty"] = _fmt(quote)
        order["status"] = "FILLED" if executed == Decimal(order["origQty"]) else "PARTIALLY_FILLED"
        self._tell(order, "TRADE", trade=trade)
        return trade

    def _tell(self, order: dict[str, Any], execution: str, *,
              trade: dict[str, Any] | None = None, client_id: str | None = None,
              ) -> None:  # fmt: skip
        for listener in self.listeners:
            listener(order, execution, trade=trade, client_id=client_id)

    def _lock(self, asset: str, amount: Decimal) -> None:
        balance = self.account.balances.setdefault(asset, [_ZERO, _ZERO])
        balance[0] -= amount
        balance[1] += amount

    def _unlock(self, order: dict[str, Any], qty: Decimal) -> None:
        """Give back what ``qty`` of a resting limit order held."""
        listing = self.exchange.listings[order["symbol"]]
        buy = order["side"] == "BUY"
        amount = qty * Decimal(order["price"]) if buy else qty
        self._lock(listing.quote if buy else listing.base, -amount)


def _walk_cost(levels: list[tuple[Decimal, str]], qty: Decimal) -> Decimal:
    """What buying ``qty`` from ask levels (best first) costs, as far as they reach."""
    cost, left = _ZERO, qty
    for price, level_qty in levels:
        take = min(left, Decimal(level_qty))
        cost += price * take
        left -= take
        if left == 0:
            break
    return cost
