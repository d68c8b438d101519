"""An order as the order manager reports it, and the status machine it moves through.

::

    new -> accepted -> partially_filled -> filled
    new -> rejected
    accepted | partially_filled -> cancelled | expired

A stop order is ``accepted`` while it waits for its trigger. ``close_reason``
says why an order was cancelled or expired (``client``, ``self_trade``,
``kill_switch``, ``ioc_remainder``, ``fok_not_filled``, ``post_only_would_take``,
``protection_price``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal, localcontext
from typing import Any, Final, Protocol

from cryptodesk.domain.orders import (
    FINAL_STATUSES,
    Fill,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from cryptodesk.trading.errors import OrderRejected
from cryptodesk.trading.instruments import EXACT

_ZERO = Decimal(0)
NEXT_STATUSES: Final[dict[OrderStatus, frozenset[OrderStatus]]] = {
    "new": frozenset({"accepted", "rejected"}),
    "accepted": frozenset({"partially_filled", "filled", "cancelled", "expired"}),
    "partially_filled": frozenset({"partially_filled", "filled", "cancelled", "expired"}),
}


@dataclass(frozen=True, slots=True)
class Order:
    """One order's state. ``price`` is the limit price (None for market and stop-market
    orders), ``quantity`` the total (an amend may change it), ``fees`` in the quote asset.
    A rejected order never reached a book: its ``order_id`` is empty and its
    ``reject_rule`` / ``reject_reason`` say why."""

    order_id: str
    client_order_id: str | None
    account: str
    symbol: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce
    post_only: bool
    reduce_only: bool
    price: Decimal | None
    stop_price: Decimal | None
    quantity: Decimal
    status: OrderStatus
    created_ts: int
    updated_ts: int
    filled: Decimal = _ZERO
    average_price: Decimal | None = None
    fees: Decimal = _ZERO
    reject_rule: str | None = None
    reject_reason: str | None = None
    close_reason: str | None = None
    venue: str = "internal"

    @property
    def remaining(self) -> Decimal:
        """What is not filled (resting, waiting, or gone if the order is final)."""
        with localcontext(EXACT):
            return self.quantity - self.filled

    @property
    def is_open(self) -> bool:
        return self.status not in FINAL_STATUSES

    @classmethod
    def from_request(
        cls, request: OrderRequest, *, order_id: str, status: OrderStatus, ts: int
    ) -> Order:
        return cls(
            order_id=order_id,
            client_order_id=request.client_order_id,
            account=request.account,
            symbol=request.symbol,
            side=request.side,
            type=request.type,
            time_in_force=request.time_in_force,
            post_only=request.post_only,
            reduce_only=request.reduce_only,
            price=request.price,
            stop_price=request.stop_price,
            quantity=request.quantity,
            status=status,
            created_ts=ts,
            updated_ts=ts,
            venue=request.venue,
        )

    @classmethod
    def rejected(cls, request: OrderRequest, error: OrderRejected, ts: int) -> Order:
        """A refused order (never kept): no id, and the rule and reason it broke."""
        return replace(cls.from_request(request, order_id="", status="rejected", ts=ts),
                       reject_rule=error.rule, reject_reason=error.message)  # fmt: skip


def check_transition(order: Order | OrderRecord, status: OrderStatus) -> None:
    """Refuse a status change the machine does not allow (a bug, never a client error)."""
    if status not in NEXT_STATUSES.get(order.status, _NONE):
        raise ValueError(f"order {order.order_id} cannot go from {order.status} to {status}")


_NONE: Final[frozenset[OrderStatus]] = frozenset()


class OrderRecord:
    """An order as a venue keeps it: what was asked (``request``, never changed) and where
    it stands (the other fields, changed in place by the venue alone, through ``move``).

    Readers get ``view``, the frozen ``Order``, built on the first read after a change:
    an order changes a few times per operation (accepted, partially filled, filled...)
    and is read far less often. ``update()`` is the published form of the order
    (``{"event": "order", **order_dict(view)}``) made without building the view; the
    texts of the price and quantity are kept beside them, as they rarely change.
    """

    __slots__ = (
        "_price_text",
        "_quantity_text",
        "_view",
        "average_price",
        "close_reason",
        "created_ts",
        "fees",
        "filled",
        "notional",
        "order_id",
        "price",
        "quantity",
        "reject_reason",
        "reject_rule",
        "request",
        "status",
        "updated_ts",
    )  # fmt: skip

    def __init__(self, request: OrderRequest, order_id: str, ts: int) -> None:
        self.request = request
        self.order_id = order_id
        self.created_ts = self.updated_ts = ts
        self.status: OrderStatus = "new"
        self.filled = _ZERO
        self.average_price: Decimal | None = None
        self.fees = _ZERO
        self.notional = _ZERO  # price x quantity summed over the fills
        self.reject_rule: str | None = None
        self.reject_reason: str | None = None
        self.close_reason: str | None = None
        self._view: Order | None = None
        self.reprice(request.price, request.quantity)

    @property
    def is_open(self) -> bool:
        return self.status not in FINAL_STATUSES

    @property
    def remaining(self) -> Decimal:
        return EXACT.subtract(self.quantity, self.filled)

    def add_fill(self, filled: Decimal, notional: Decimal, fee: Decimal) -> None:
        """Account a fill of ``notional`` with ``fee`` that brings the total filled to
        ``filled``; ``move`` publishes it."""
        self.notional = EXACT.add(self.notional, notional)
        self.filled = filled
        self.average_price = EXACT.divide(self.notional, filled)
        self.fees = EXACT.add(self.fees, fee)

    def reprice(self, price: Decimal | None, quantity: Decimal) -> None:
        """Set the limit price and total quantity (an amend); ``move`` publishes it."""
        self.price, self.quantity = price, quantity
        self._price_text, self._quantity_text = _text(price), str(quantity)
        self._view = None

    def move(self, ts: int, status: OrderStatus | None) -> None:
        """Record a change at ``ts`` (to ``status`` if given: checked against the machine);
        the fields changed before it are part of it."""
        if status is not None:
            check_transition(self, status)
            self.status = status
        self.updated_ts = ts
        self._view = None

    @property
    def view(self) -> Order:
        view = self._view
        if view is None:
            r = self.request
            view = self._view = Order(
                self.order_id, r.client_order_id, r.account, r.symbol, r.side, r.type,
                r.time_in_force, r.post_only, r.reduce_only, self.price, r.stop_price,
                self.quantity, self.status, self.created_ts, self.updated_ts, self.filled,
                self.average_price, self.fees, self.reject_rule, self.reject_reason,
                self.close_reason, r.venue,
            )  # fmt: skip
        return view

    def update(self) -> dict[str, Any]:
        """``{"event": "order", **order_dict(self.view)}``, spelled out (a test checks)."""
        r = self.request
        average = self.average_price
        return {
            "event": "order", "order_id": self.order_id, "client_order_id": r.client_order_id,
            "account": r.account, "symbol": r.symbol, "side": r.side, "type": r.type,
            "time_in_force": r.time_in_force, "post_only": r.post_only,
            "reduce_only": r.reduce_only, "price": self._price_text,
            "stop_price": None if r.stop_price is None else str(r.stop_price),
            "quantity": self._quantity_text, "status": self.status,
            "created_ts": self.created_ts, "updated_ts": self.updated_ts,
            "filled": str(self.filled), "average_price": None if average is None else str(average),
            "fees": str(self.fees), "reject_rule": self.reject_rule,
            "reject_reason": self.reject_reason, "close_reason": self.close_reason,
            "venue": r.venue,
        }  # fmt: skip


def order_dict(order: Order) -> dict[str, Any]:
    """The order as JSON-able values (decimals as strings). Spelled out field by field:
    an update is made for every order change, and this is twice as fast as a loop over
    ``dataclasses.fields`` (a test checks every field is here)."""
    o = order
    return {
        "order_id": o.order_id, "client_order_id": o.client_order_id, "account": o.account,
        "symbol": o.symbol, "side": o.side, "type": o.type, "time_in_force": o.time_in_force,
        "post_only": o.post_only, "reduce_only": o.reduce_only, "price": _text(o.price),
        "stop_price": _text(o.stop_price), "quantity": str(o.quantity), "status": o.status,
        "created_ts": o.created_ts, "updated_ts": o.updated_ts, "filled": str(o.filled),
        "average_price": _text(o.average_price), "fees": str(o.fees),
        "reject_rule": o.reject_rule, "reject_reason": o.reject_reason,
        "close_reason": o.close_reason, "venue": o.venue,
    }  # fmt: skip


def fill_dict(fill: Fill) -> dict[str, Any]:
    """The fill as JSON-able values (decimals as strings)."""
    f = fill
    return {
        "trade_id": f.trade_id, "order_id": f.order_id, "account": f.account,
        "symbol": f.symbol, "side": f.side, "price": str(f.price), "quantity": str(f.quantity),
        "fee": str(f.fee), "fee_asset": f.fee_asset, "liquidity": f.liquidity, "ts": f.ts,
        "venue": f.venue,
    }  # fmt: skip


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


class HasView(Protocol):
    @property
    def view(self) -> Order: ...


class OrderKeeping:
    """What every venue keeps: its orders by id and the updates it owes its publisher."""

    updates: list[dict[str, Any]]
    _orders: Mapping[str, HasView]

    def take_updates(self) -> list[dict[str, Any]]:
        """Order changes and fills since the last call, oldest first."""
        updates, self.updates = self.updates, []
        return updates

    def order(self, order_id: str) -> Order | None:
        live = self._orders.get(order_id)
        return None if live is None else live.view
