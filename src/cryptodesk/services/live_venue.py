"""The live venue ``live:<exchange>``: our orders placed on a real exchange, kept
in step with it by client order id, and reconciled after a restart.

Our order id is the client order id sent with the order, so an order is known
before the exchange has answered: an order whose create call never came back
stays ``new`` until ``reconcile`` finds it on the exchange (or finds it never
arrived, and marks it rejected). The exchange is the truth for status and
filled quantity; a final order never reopens.

Fills are keyed by (symbol, exchange trade id) - binance numbers trades per
symbol - so a fill learnt from an order response, from ``my_trades`` or from a
second reconcile is kept once. ``LiveState`` is plain data (``dump``/``load``)
for the caller to persist between runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Protocol

from cryptodesk.adapters.exchanges.ccxt_orders import ExchangeOrder
from cryptodesk.domain.orders import Fill, OrderRequest
from cryptodesk.trading.errors import OrderRejected
from cryptodesk.trading.order_state import Order, fill_dict, order_dict

_DECIMALS = ("price", "stop_price", "quantity", "filled", "average_price", "fees")


class OrderGateway(Protocol):
    """What the venue needs of the exchange (``CcxtOrders``)."""

    venue: str

    async def create(self, request: OrderRequest, *, client_order_id: str) -> ExchangeOrder: ...
    async def cancel(self, symbol: str, order_id: str) -> ExchangeOrder: ...
    async def fetch(self, symbol: str, order_id: str | None = None, *,
                    client_order_id: str | None = None) -> ExchangeOrder: ...  # fmt: skip
    async def open_orders(self, symbol: str | None = None) -> list[ExchangeOrder]: ...
    async def my_trades(self, symbol: str, since: int | None) -> list[Fill]: ...


@dataclass
class LiveState:
    """Our orders on the venue, the exchange's id for each, and the fills seen."""

    orders: dict[str, Order] = field(default_factory=dict)  # by our id (= client order id)
    exchange_ids: dict[str, str] = field(default_factory=dict)  # our id -> exchange id
    fills: dict[tuple[str, str], Fill] = field(default_factory=dict)  # (symbol, trade id)
    seq: int = 0

    def dump(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "orders": [order_dict(o) for o in self.orders.values()],
            "exchange_ids": dict(self.exchange_ids),
            "fills": [fill_dict(f) for f in self.fills.values()],
        }

    @classmethod
    def load(cls, data: dict[str, Any]) -> LiveState:
        orders = [Order(**_decimals(row, _DECIMALS)) for row in data["orders"]]
        fills = [Fill(**_decimals(row, ("price", "quantity", "fee"))) for row in data["fills"]]
        return cls(
            orders={o.order_id: o for o in orders}, exchange_ids=dict(data["exchange_ids"]),
            fills={(f.symbol, f.trade_id): f for f in fills}, seq=int(data["seq"]),
        )  # fmt: skip


@dataclass(frozen=True)
class Reconciliation:
    """What one ``reconcile`` changed: orders whose state moved, fills it added, and
    open orders on the exchange that are not ours (left alone)."""

    orders: tuple[str, ...]
    fills: tuple[Fill, ...]
    foreign_orders: tuple[str, ...]


class LiveVenue:
    """One account's orders on one exchange. ``prefix`` starts every client order
    id we make (unique per account, so two processes never collide)."""

    def __init__(
        self,
        gateway: OrderGateway,
        *,
        account: str,
        state: LiveState | None = None,
        prefix: str = "cd",
        clock: Callable[[], int],
    ) -> None:
        self.gateway = gateway
        self.account = account
        self.state = state or LiveState()
        self._prefix = prefix
        self._clock = clock

    @property
    def venue(self) -> str:
        return self.gateway.venue

    def order(self, order_id: str) -> Order | None:
        return self.state.orders.get(order_id)

    def orders(self) -> list[Order]:
        return sorted(self.state.orders.values(), key=lambda o: (o.created_ts, o.order_id))

    def fills(self) -> list[Fill]:
        return sorted(self.state.fills.values(), key=lambda f: (f.ts, f.symbol, f.trade_id))

    def exchange_id(self, order_id: str) -> str | None:
        return self.state.exchange_ids.get(order_id)

    # -- commands ---------------------------------------------------------------------
    async def submit(self, request: OrderRequest) -> Order:
        """Place the order; an exchange refusal raises ``OrderRejected`` and keeps
        nothing. A network failure leaves the order ``new`` for ``reconcile``."""
        self.state.seq += 1
        order_id = request.client_order_id or f"{self._prefix}{self.state.seq:010d}"
        if order_id in self.state.orders:
            raise OrderRejected("duplicate_client_order_id", f"order {order_id} exists",
                                field="client_order_id")  # fmt: skip
        order = Order.from_request(replace(request, account=self.account), order_id=order_id,
                                   status="new", ts=self._clock())  # fmt: skip
        self.state.orders[order_id] = replace(
            order, client_order_id=request.client_order_id, venue=self.venue
        )
        try:
            placed = await self.gateway.create(request, client_order_id=order_id)
        except OrderRejected:
            del self.state.orders[order_id]
            raise
        self._apply(order_id, placed)
        return self.state.orders[order_id]

    async def cancel(self, order_id: str) -> Order:
        order = self._known(order_id)
        exchange_id = self.state.exchange_ids.get(order_id)
        if not order.is_open or exchange_id is None:
            raise OrderRejected("order_closed", f"order {order_id} is {order.status}",
                                field="order_id")  # fmt: skip
        self._apply(order_id, await self.gateway.cancel(order.symbol, exchange_id))
        return self.state.orders[order_id]

    async def refresh(self, order_id: str) -> Order:
        """The order as the exchange has it now (fills come from ``reconcile``)."""
        order = self._known(order_id)
        self._apply(order_id, await self.gateway.fetch(order.symbol, client_order_id=order_id))
        return self.state.orders[order_id]

    async def reconcile(self) -> Reconciliation:
        """Bring our state in line with the exchange after a restart: open orders,
        then every order we think open, then own trades since the last known fill."""
        before = dict(self.state.orders)
        added: list[Fill] = []
        foreign: list[str] = []
        symbols = sorted({o.symbol for o in self.state.orders.values()})
        mine = set(self.state.orders)  # our ids are the client order ids
        for symbol in symbols:
            for remote in await self.gateway.open_orders(symbol):
                if remote.client_order_id in mine:
                    self._apply(remote.client_order_id, remote)
                else:
                    foreign.append(remote.id)
        for order in list(self.state.orders.values()):
            if order.is_open:
                try:
                    remote = await self.gateway.fetch(order.symbol, client_order_id=order.order_id)
                except OrderRejected as exc:
                    if exc.rule != "unknown_order" or order.status != "new":
                        raise
                    self._reject(order.order_id, "never reached the exchange")
                    continue
                self._apply(order.order_id, remote)
        by_exchange_id = {eid: oid for oid, eid in self.state.exchange_ids.items()}
        for symbol in symbols:
            since = max((f.ts for f in self.state.fills.values() if f.symbol == symbol),
                        default=min(o.created_ts for o in self.state.orders.values()
                                    if o.symbol == symbol))  # fmt: skip
            for fill in await self.gateway.my_trades(symbol, since):
                order_id = by_exchange_id.get(fill.order_id)
                if order_id is not None and self._add_fill(order_id, fill):
                    added.append(self.state.fills[(fill.symbol, fill.trade_id)])
        changed = tuple(oid for oid, o in self.state.orders.items() if before.get(oid) != o)
        return Reconciliation(changed, tuple(added), tuple(foreign))

    # -- state ------------------------------------------------------------------------
    def _known(self, order_id: str) -> Order:
        order = self.state.orders.get(order_id)
        if order is None:
            raise OrderRejected("unknown_order", f"no order {order_id}", field="order_id")
        return order

    def _apply(self, order_id: str, remote: ExchangeOrder) -> None:
        """The exchange's view of the order onto ours (never reopening a final one)."""
        self.state.exchange_ids[order_id] = remote.id
        order = self.state.orders[order_id]
        if order.is_open and (remote.status != order.status or remote.filled != order.filled):
            self.state.orders[order_id] = replace(
                order, status=remote.status, filled=remote.filled,
                average_price=remote.average_price, updated_ts=max(order.updated_ts, remote.ts),
            )  # fmt: skip
        for fill in remote.fills:
            self._add_fill(order_id, fill)

    def _add_fill(self, order_id: str, fill: Fill) -> bool:
        key = (fill.symbol, fill.trade_id)
        if key in self.state.fills:
            return False
        self.state.fills[key] = replace(fill, order_id=order_id, account=self.account)
        order = self.state.orders[order_id]
        if fill.fee_asset == order.symbol.partition("/")[2]:  # fees are kept in the quote asset
            self.state.orders[order_id] = replace(order, fees=order.fees + fill.fee)
        return True

    def _reject(self, order_id: str, reason: str) -> None:
        order = self.state.orders[order_id]
        self.state.orders[order_id] = replace(order, status="rejected", reject_rule="unknown_order",
                                              reject_reason=reason)  # fmt: skip


def _decimals(row: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {k: Decimal(v) if k in names and v is not None else v for k, v in row.items()}
