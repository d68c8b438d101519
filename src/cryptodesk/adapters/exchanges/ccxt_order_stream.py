"""The account's order updates as the exchange pushes them, through ccxt.pro:
``watch_orders`` for each order's state, ``watch_my_trades`` for each trade.

Both come from one feed (binance spot: ``executionReport`` events of the user
data stream, which ccxt.pro subscribes on the WebSocket API with a signed
``userDataStream.subscribe.signature``). ccxt keeps the latest state of each
order, with the trades it saw for it; a trade of an order it never saw new (one
placed before we listened) reaches only ``watch_my_trades``, so both are read.
Updates map to ``ExchangeOrder`` and ``Fill`` by the same code as the REST
path, from the event's own decimal text (``RAW_WS_ORDER``, ``RAW_WS_FILL``).

A dropped socket, or a stream the exchange ended, fails the pending read with
``OrderStreamLost``; ``subscribe`` dials again. Updates that came while nobody
listened are gone: the caller reconciles over REST after every subscribe. A
refused key raises ``OrderRejected("credentials")``. A message ccxt cannot
handle is logged and skipped: an exception inside ccxt's handler would stop its
receive loop for good.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import ccxt.async_support as ccxt_async  # type: ignore[import-untyped]
import structlog

from cryptodesk.adapters.exchanges.ccxt_account import AccountCredentials, PrivateCcxt
from cryptodesk.adapters.exchanges.ccxt_exchange import brief
from cryptodesk.adapters.exchanges.ccxt_orders import (
    ORDER_OPTIONS,
    ExchangeOrder,
    map_fill,
    map_order,
)
from cryptodesk.domain.orders import Fill
from cryptodesk.trading.errors import OrderRejected

T = TypeVar("T")
log = structlog.get_logger(__name__)
# Exact text in a websocket order event of (quantity, filled, limit price, filled cost).
RAW_WS_ORDER: dict[str, tuple[str, str, str, str]] = {"binance": ("q", "z", "p", "Z")}
# Exact text in a websocket trade event of (price, quantity, fee).
RAW_WS_FILL: dict[str, tuple[str, str, str]] = {"binance": ("L", "l", "n")}
# The order's client id in a trade event (ccxt's trade structure has none).
WS_TRADE_CLIENT_ID: dict[str, str] = {"binance": "c"}
# What ``authenticate`` needs to open the account's order stream (binance: spot).
STREAM_AUTH: dict[str, dict[str, Any]] = {"binance": {"type": "spot"}}


class OrderStreamLost(Exception):
    """The stream dropped (or the exchange ended it): subscribe again, then reconcile."""


@dataclass(frozen=True, slots=True)
class OwnTrade:
    """One trade of the account as the stream tells it: the fill (``order_id`` is the
    exchange's order id) and the order's client order id, where the event has it."""

    client_order_id: str | None
    fill: Fill


class CcxtOrderStream(PrivateCcxt):
    """One account's order updates. ``http_url`` / ``ws_url`` replace scheme and
    host of every REST / websocket URL (tests point them at fakes)."""

    def __init__(
        self,
        exchange_id: str,
        credentials: AccountCredentials,
        *,
        account: str,
        http_url: str | None = None,
        ws_url: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(exchange_id, credentials, http_url=http_url, ws_url=ws_url,
                         config=config, guard=None, options=ORDER_OPTIONS.get(exchange_id),
                         pro=True)  # fmt: skip
        self.venue = f"live:{exchange_id}"
        self.account = account
        self.bad_payloads = 0
        self._guard_messages()

    async def __aenter__(self) -> CcxtOrderStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def subscribe(self) -> None:
        """Open the stream (again, after a drop). On binance it returns once the
        exchange has confirmed the subscription: from then on no update is missed."""
        ex = self._exchange

        async def open_() -> None:
            if not ex.markets:
                await ex.load_markets()
            authenticate = getattr(ex, "authenticate", None)
            if authenticate is not None:
                await authenticate(dict(STREAM_AUTH.get(self.exchange_id, {})))

        await self._read(open_)

    async def orders(self) -> list[ExchangeOrder]:
        """The next orders whose state changed (waits for one), each at its latest."""
        ex = self._exchange
        raw = await self._read(lambda: ex.watch_orders())
        mapped = []
        for order in raw:
            try:
                mapped.append(map_order(order, exchange_id=self.exchange_id, venue=self.venue,
                                        account=self.account, order_keys=RAW_WS_ORDER,
                                        fill_keys=RAW_WS_FILL))  # fmt: skip
            except (KeyError, TypeError, ValueError) as exc:
                self._bad_payload("order", exc)
        return mapped

    async def trades(self) -> list[OwnTrade]:
        """The next own trades (waits for one)."""
        ex = self._exchange
        raw = await self._read(lambda: ex.watch_my_trades())
        client_key = WS_TRADE_CLIENT_ID.get(self.exchange_id, "")
        mapped = []
        for trade in raw:
            try:
                fill = map_fill(trade, exchange_id=self.exchange_id, venue=self.venue,
                                account=self.account, order_id=str(trade["order"]), ts=None,
                                keys=RAW_WS_FILL)  # fmt: skip
            except (KeyError, TypeError, ValueError) as exc:
                self._bad_payload("trade", exc)
                continue
            client_id = (trade.get("info") or {}).get(client_key)
            mapped.append(OwnTrade(str(client_id) if client_id else None, fill))
        return mapped

    async def _read(self, factory: Callable[[], Awaitable[T]]) -> T:
        try:
            return await factory()
        except Exception as exc:
            error = _ccxt_error(exc)
            if error is None:
                raise
        what = f"{self.venue} order stream: {brief(error)}"
        if isinstance(error, ccxt_async.AuthenticationError):
            raise OrderRejected("credentials", what) from None
        if isinstance(error, ccxt_async.NotSupported):
            raise OrderRejected("unsupported", what) from None
        # A drop, a timeout, a stream the exchange ended: subscribing again may help.
        raise OrderStreamLost(what) from error

    def _bad_payload(self, what: str, exc: BaseException) -> None:
        self.bad_payloads += 1
        log.warning("order stream payload skipped", venue=self.venue, what=what,
                    error=brief(exc))  # fmt: skip

    def _guard_messages(self) -> None:
        """Handle every websocket message so that no exception leaves ccxt's handler."""
        ex = self._exchange
        handle = ex.handle_message

        def handle_message(client: Any, message: Any) -> None:
            try:
                handle(client, message)
            except Exception as exc:
                self._bad_payload("message", exc)

        ex.handle_message = handle_message


def _ccxt_error(exc: BaseException) -> BaseException | None:
    """The ccxt error behind ``exc``. ccxt 4.5's binance answers a refused
    subscription with a KeyError from its own clean-up, raised while handling the
    exchange's error: that error is the one that says what happened."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ccxt_async.BaseError):
            found: BaseException = seen
            return found
        seen = seen.__context__
    return None
