"""Orders on one exchange account through ccxt: create, cancel, fetch, open
orders and own trades, as ``ExchangeOrder`` and ``Fill`` in exact decimals.

Amounts are taken from the exchange's own text in ``info`` where it is known
(``RAW_ORDER``, ``RAW_FILL``), else from ccxt's number. Fills carry the venue
``live:<exchange>`` and the exchange's trade id. Every request goes through
the exchange's guard (rate limit, retries, circuit breaker) when one is given.

A create that fails on the way (a timeout: did it land?) is retried by the
guard; each retry first looks the order up by its client order id, so an order
is never placed twice. Refusals become ``OrderRejected`` with a stable rule.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any, Final, TypeVar

import ccxt.async_support as ccxt_async  # type: ignore[import-untyped]

from cryptodesk.adapters.exchanges.ccxt_account import AccountCredentials, PrivateCcxt, exact
from cryptodesk.adapters.exchanges.ccxt_exchange import CallGuard, brief
from cryptodesk.domain.orders import Fill, OrderRequest, OrderStatus, Side
from cryptodesk.trading.errors import OrderRejected

T = TypeVar("T")
_ZERO = Decimal(0)
# Exact text of (quantity, filled, limit price, filled cost) in an order's ``info``.
RAW_ORDER: dict[str, tuple[str, str, str, str]] = {
    "binance": ("origQty", "executedQty", "price", "cummulativeQuoteQty"),
}
# Exact text of (price, quantity, fee) in a trade's ``info`` (own trades and order fills).
RAW_FILL: dict[str, tuple[str, str, str]] = {"binance": ("price", "qty", "commission")}
# The order's own client id in a cancel response (binance gives the cancel a new one).
ORIGINAL_CLIENT_ID: dict[str, str] = {"binance": "origClientOrderId"}
TRADE_PAGE: Final = 1000
# binance: open orders of every symbol in one request (weight 80) is allowed when asked for.
ORDER_OPTIONS: dict[str, dict[str, Any]] = {
    "binance": {"warnOnFetchOpenOrdersWithoutSymbol": False},
}
_TIME_IN_FORCE = {"gtc": "GTC", "ioc": "IOC", "fok": "FOK"}
# Binance "Filter failure: <FILTER>" messages, by our rule names.
_FILTER_RULES = {"LOT_SIZE": "lot_size", "NOTIONAL": "min_notional",
                 "MIN_NOTIONAL": "min_notional", "PRICE_FILTER": "tick_size"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ExchangeOrder:
    """One order as the exchange reports it. ``fills`` are the trades the response
    carried (a market order's, on binance); others come from ``my_trades``."""

    id: str
    client_order_id: str | None
    symbol: str
    side: Side
    type: str
    status: OrderStatus
    quantity: Decimal
    filled: Decimal
    price: Decimal | None
    average_price: Decimal | None
    ts: int
    fills: tuple[Fill, ...] = ()

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled


def order_status(ccxt_status: str | None, filled: Decimal) -> OrderStatus:
    """ccxt's unified status as ours: ``open`` is accepted until something fills."""
    if ccxt_status in ("open", "canceling", None):
        return "partially_filled" if filled > _ZERO else "accepted"
    statuses: dict[str, OrderStatus] = {"closed": "filled", "canceled": "cancelled",
                                        "expired": "expired", "rejected": "rejected"}  # fmt: skip
    if ccxt_status not in statuses:
        raise ValueError(f"unknown ccxt order status {ccxt_status!r}")
    return statuses[ccxt_status]


def rejection(exc: Exception) -> OrderRejected | None:
    """The rule an exchange's refusal breaks; None for what is not a refusal (network)."""
    text = brief(exc)
    if isinstance(exc, ccxt_async.InsufficientFunds):
        return OrderRejected("insufficient_balance", text)
    if isinstance(exc, ccxt_async.OrderNotFound):
        return OrderRejected("unknown_order", text, field="order_id")
    if isinstance(exc, ccxt_async.BadSymbol):
        return OrderRejected("unknown_symbol", text, field="symbol")
    if isinstance(exc, ccxt_async.AuthenticationError | ccxt_async.PermissionDenied):
        return OrderRejected("credentials", text)
    if isinstance(exc, ccxt_async.InvalidOrder | ccxt_async.BadRequest):
        for name, rule in _FILTER_RULES.items():
            if f"Filter failure: {name}" in str(exc):
                return OrderRejected(rule, text)
        if "Duplicate order" in str(exc) or isinstance(exc, ccxt_async.DuplicateOrderId):
            return OrderRejected("duplicate_client_order_id", text, field="client_order_id")
        return OrderRejected("invalid_order", text)
    if isinstance(exc, ccxt_async.ExchangeError):  # not OperationFailed: outcome unknown
        return OrderRejected("exchange_rejected", text)
    return None


class CcxtOrders(PrivateCcxt):
    """Trading on one exchange account. ``account`` names our account the fills
    belong to; ``http_url`` replaces scheme and host of every API URL (tests point
    it at fakes); ``guard`` as in ``CcxtAccountClient``."""

    def __init__(
        self,
        exchange_id: str,
        credentials: AccountCredentials,
        *,
        account: str,
        http_url: str | None = None,
        config: dict[str, Any] | None = None,
        guard: CallGuard | Callable[[Any], CallGuard] | None = None,
    ) -> None:
        super().__init__(exchange_id, credentials, http_url=http_url, config=config, guard=guard,
                         options=ORDER_OPTIONS.get(exchange_id))  # fmt: skip
        self.venue = f"live:{exchange_id}"
        self.account = account
        self._markets_loaded = False

    async def __aenter__(self) -> CcxtOrders:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- requests ---------------------------------------------------------------------
    async def _call(self, endpoint: str, factory: Callable[[], Awaitable[T]]) -> T:
        try:
            if not self._markets_loaded:
                ex = self._exchange
                await self._guarded("load_markets", lambda: ex.load_markets())
                self._markets_loaded = True
            return await self._guarded(endpoint, factory)
        except ccxt_async.BaseError as exc:
            rejected = rejection(exc)
            if rejected is None:
                raise
            raise rejected from None

    async def _guarded(self, endpoint: str, factory: Callable[[], Awaitable[T]]) -> T:
        if self._guard is None:
            return await factory()
        # cost 0: ccxt's throttle, which is the guard's, charges each request its weight.
        return await self._guard.call(factory, cost=0.0, endpoint=endpoint)

    async def create(self, request: OrderRequest, *, client_order_id: str) -> ExchangeOrder:
        """Place ``request`` under ``client_order_id`` (the key to find it again)."""
        if request.type not in ("limit", "market"):
            raise OrderRejected("order_type", f"{self.venue} takes limit and market orders, "
                                f"not {request.type}", field="type")  # fmt: skip
        params: dict[str, Any] = {"clientOrderId": client_order_id}
        price: float | None = None
        if request.type == "limit":
            if request.price is None:
                raise OrderRejected("missing_price", "a limit order needs a price", field="price")
            price = float(request.price)
            params["timeInForce"] = _TIME_IN_FORCE[request.time_in_force]
            if request.post_only:
                params["postOnly"] = True
        ex, attempts = self._exchange, 0

        async def place() -> Any:
            nonlocal attempts
            attempts += 1
            if attempts > 1:  # the last attempt may have landed before it failed
                try:
                    return await ex.fetch_order(None, request.symbol,
                                                {"clientOrderId": client_order_id})  # fmt: skip
                except ccxt_async.OrderNotFound:
                    pass
            return await ex.create_order(request.symbol, request.type, request.side,
                                         float(request.quantity), price, dict(params))  # fmt: skip

        return self._order(await self._call("create_order", place))

    async def cancel(self, symbol: str, order_id: str) -> ExchangeOrder:
        ex = self._exchange
        return self._order(
            await self._call("cancel_order", lambda: ex.cancel_order(order_id, symbol))
        )

    async def fetch(self, symbol: str, order_id: str | None = None, *,
                    client_order_id: str | None = None) -> ExchangeOrder:  # fmt: skip
        """One order by the exchange's id, or by our client order id."""
        ex = self._exchange
        params = {} if client_order_id is None else {"clientOrderId": client_order_id}
        raw = await self._call("fetch_order", lambda: ex.fetch_order(order_id, symbol, params))
        return self._order(raw)

    async def open_orders(self, symbol: str | None = None) -> list[ExchangeOrder]:
        ex = self._exchange
        raw = await self._call("fetch_open_orders", lambda: ex.fetch_open_orders(symbol))
        return [self._order(o) for o in raw]

    async def my_trades(self, symbol: str, since: int | None) -> list[Fill]:
        """Own trades in ``symbol`` from ``since`` (ms) on, oldest first, each once."""
        ex, fills = self._exchange, {}
        while True:
            page = await self._call(
                "fetch_my_trades", partial(ex.fetch_my_trades, symbol, since, TRADE_PAGE)
            )
            for trade in page:
                fill = self._fill(trade, order_id=str(trade.get("order")), ts=None)
                fills[fill.trade_id] = fill
            newest = max((int(t["timestamp"]) for t in page), default=None)
            # A full page may end mid-millisecond: ask again from its last millisecond.
            if len(page) < TRADE_PAGE or newest is None or (since is not None and newest <= since):
                return sorted(fills.values(), key=lambda f: (f.ts, f.trade_id))
            since = newest

    # -- mapping ----------------------------------------------------------------------
    def _order(self, raw: dict[str, Any]) -> ExchangeOrder:
        return map_order(raw, exchange_id=self.exchange_id, venue=self.venue, account=self.account)

    def _fill(self, trade: dict[str, Any], *, order_id: str, ts: int | None) -> Fill:
        return map_fill(trade, exchange_id=self.exchange_id, venue=self.venue,
                        account=self.account, order_id=order_id, ts=ts)  # fmt: skip


def map_order(
    raw: dict[str, Any], *, exchange_id: str, venue: str, account: str,
    order_keys: dict[str, tuple[str, str, str, str]] = RAW_ORDER,
    fill_keys: dict[str, tuple[str, str, str]] = RAW_FILL,
) -> ExchangeOrder:  # fmt: skip
    """A ccxt order as ours. ``order_keys`` / ``fill_keys`` name the exchange's exact
    text in ``info`` (REST by default; the websocket's events name it differently)."""
    info = raw.get("info") or {}
    keys = order_keys.get(exchange_id, ("", "", "", ""))
    what = f"{exchange_id} order {raw.get('id')}"
    quantity = exact(info.get(keys[0]), raw.get("amount"), what=f"{what} amount") or _ZERO
    filled = exact(info.get(keys[1]), raw.get("filled"), what=f"{what} filled") or _ZERO
    price = exact(info.get(keys[2]), raw.get("price"), what=f"{what} price")
    cost = exact(info.get(keys[3]), raw.get("cost"), what=f"{what} cost")
    average = exact(None, raw.get("average"), what=f"{what} average")
    if cost is not None and filled > _ZERO:
        average = cost / filled
    original = info.get(ORIGINAL_CLIENT_ID.get(exchange_id, ""))
    ts = int(raw.get("timestamp") or raw.get("lastUpdateTimestamp") or 0)
    order_id = str(raw["id"])
    return ExchangeOrder(
        id=order_id, client_order_id=original or raw.get("clientOrderId"),
        symbol=raw["symbol"], side=raw["side"], type=str(raw.get("type")),
        status=order_status(raw.get("status"), filled), quantity=quantity, filled=filled,
        price=price if price else None, average_price=average if filled else None, ts=ts,
        fills=tuple(map_fill({**t, "symbol": t.get("symbol") or raw["symbol"],
                                   "side": t.get("side") or raw["side"]},
                             exchange_id=exchange_id, venue=venue, account=account,
                             order_id=order_id, ts=ts, keys=fill_keys)
                    for t in raw.get("trades") or ()),
    )  # fmt: skip


def map_fill(
    trade: dict[str, Any], *, exchange_id: str, venue: str, account: str, order_id: str,
    ts: int | None, keys: dict[str, tuple[str, str, str]] = RAW_FILL,
) -> Fill:  # fmt: skip
    """A ccxt trade of ours as a ``Fill`` of ``order_id`` (the exchange's order id)."""
    info = trade.get("info") or {}
    price_key, qty_key, fee_key = keys.get(exchange_id, ("", "", ""))
    what = f"{exchange_id} trade {trade.get('id')}"
    fee = trade.get("fee") or {}
    fee_amount = exact(info.get(fee_key), fee.get("cost"), what=f"{what} fee")
    return Fill(
        trade_id=str(trade["id"]), order_id=order_id, account=account,
        symbol=trade.get("symbol") or "", side=trade.get("side") or "buy",
        price=exact(info.get(price_key), trade.get("price"), what=f"{what} price") or _ZERO,
        quantity=exact(info.get(qty_key), trade.get("amount"), what=f"{what} amount") or _ZERO,
        fee=fee_amount or _ZERO, fee_asset=str(fee.get("currency") or ""),
        liquidity="maker" if trade.get("takerOrMaker") == "maker" else "taker",
        ts=int(trade.get("timestamp") or ts or 0), venue=venue,
    )  # fmt: skip
