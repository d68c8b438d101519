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
from dataclasses import dataclass
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


def check_transition(order: Order, status: OrderStatus) -> None:
    """Refuse a status change the machine does not allow (a bug, never a client error)."""
    if status not in NEXT_STATUSES.get(order.status, frozenset()):
        raise ValueError(f"order {order.order_id} cannot go from {order.status} to {status}")


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
    view: Order


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
