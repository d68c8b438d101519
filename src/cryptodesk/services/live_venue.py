"""The live venue ``live:<exchange>``: our orders placed on a real exchange, kept
in step with it by client order id, and reconciled after a restart.

Our order id is the client order id sent with the order, so an order is known
before the exchange has answered: an order whose create call never came back
stays ``new`` until ``reconcile`` finds it on the exchange (or finds it never
arrived, and marks it rejected). The exchange is the truth for status and
filled quantity; a final order never reopens.

Fills are keyed by (symbol, exchange trade id) - binance numbers trades per
symbol - so a fill learnt from an order response, from ``my_trades``, from the
websocket or from a second reconcile is kept once. ``LiveState`` is plain data
(``dump``/``load``) for the caller to persist between runs.

``watch`` applies the exchange's order updates as they arrive (its websocket,
``OrderStream``). State only moves on: an update behind what we know (a late or
repeated event) is ignored, so a final order never reopens and ``filled`` never
shrinks. Updates of orders that are not ours are ignored and counted. After
every subscribe (the first, and each after a drop) it reconciles, so what
happened while nobody listened is read from REST.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Final, Protocol

import structlog

from cryptodesk.adapters.exchanges.ccxt_order_stream import OrderStreamLost, OwnTrade
from cryptodesk.adapters.exchanges.ccxt_orders import ExchangeOrder
from cryptodesk.domain.orders import Fill, OrderRequest
from cryptodesk.trading.errors import OrderRejected
from cryptodesk.trading.order_state import Order, fill_dict, order_dict

log = structlog.get_logger(__name__)
_DECIMALS = ("price", "stop_price", "quantity", "filled", "average_price", "fees")
# How far an order has got: an update may only move it further.
_PROGRESS: Final[dict[str, int]] = {"new": 0, "accepted": 1, "partially_filled": 2}
_FINAL = 3
CLOCK_MARGIN_MS: Final = 60_000  # how far behind ours an exchange's clock may be


class OrderGateway(Protocol):
    """What the venue needs of the exchange (``CcxtOrders``)."""

    venue: str

    async def create(self, request: OrderRequest, *, client_order_id: str) -> ExchangeOrder: ...
    async def cancel(self, symbol: str, order_id: str) -> ExchangeOrder: ...
    async def fetch(self, symbol: str, order_id: str | None = None, *,
                    client_order_id: str | None = None) -> ExchangeOrder: ...  # fmt: skip
    async def open_orders(self, symbol: str | None = None) -> list[ExchangeOrder]: ...
    async def my_trades(self, symbol: str, since: int | None) -> list[Fill]: ...


class OrderStream(Protocol):
    """The exchange's pushed order updates (``CcxtOrderStream``); a drop raises
    ``OrderStreamLost`` from the pending read."""

    async def subscribe(self) -> None: ...
    async def orders(self) -> list[ExchangeOrder]: ...
    async def trades(self) -> list[OwnTrade]: ...


@dataclass
class StreamStats:
    """What ``watch`` has seen (counters, for metrics and tests)."""

    orders: int = 0  # order updates received
    trades: int = 0  # own trades received
    stale: int = 0  # updates behind what was known, ignored
    duplicate_trades: int = 0  # trades already known
    foreign: int = 0  # updates of orders that are not ours, ignored
    subscribes: int = 0  # (re)subscriptions
    reconciles: int = 0  # reconciles done after one
    drops: int = 0  # times the stream was lost
    reconcile_failures: int = 0


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
        self.stream_stats = StreamStats()
        self._placing: set[str] = set()  # creates under way: reconcile leaves them be

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
        self._placing.add(order_id)
        try:
            placed = await self.gateway.create(request, client_order_id=order_id)
        except OrderRejected:
            del self.state.orders[order_id]
            raise
        finally:
            self._placing.discard(order_id)
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
        for oid in list(self.state.orders):
            order = self.state.orders[oid]  # as it is now: the stream may have moved it
            if order.is_open and oid not in self._placing:
                try:
                    remote = await self.gateway.fetch(order.symbol, client_order_id=oid)
                except OrderRejected as exc:
                    if exc.rule != "unknown_order" or self.state.orders[oid].status != "new":
                        raise
                    self._reject(oid, "never reached the exchange")
                    continue
                self._apply(oid, remote)
        by_exchange_id = {eid: oid for oid, eid in self.state.exchange_ids.items()}
        for symbol in symbols:
            since = max((f.ts for f in self.state.fills.values() if f.symbol == symbol),
                        default=min(o.created_ts for o in self.state.orders.values()
                                    if o.symbol == symbol))  # fmt: skip
            # Ask from a little earlier: the exchange's clock may run behind ours (a fill
            # met twice is kept once).
            for fill in await self.gateway.my_trades(symbol, since - CLOCK_MARGIN_MS):
                order_id = by_exchange_id.get(fill.order_id)
                if order_id is not None and self._add_fill(order_id, fill):
                    added.append(self.state.fills[(fill.symbol, fill.trade_id)])
        changed = tuple(oid for oid, o in self.state.orders.items() if before.get(oid) != o)
        return Reconciliation(changed, tuple(added), tuple(foreign))

    # -- the exchange's order stream ----------------------------------------------------
    def apply_order_update(self, remote: ExchangeOrder) -> bool:
        """One pushed order state; whether it changed ours (not if the order is not
        ours, or the update is behind or the same)."""
        self.stream_stats.orders += 1
        order_id = self._ours(remote.client_order_id, remote.id)
        if order_id is None:
            self.stream_stats.foreign += 1
            return False
        return self._apply(order_id, remote)

    def apply_trade(self, trade: OwnTrade) -> bool:
        """One pushed own trade; whether it was new to us (not if it is not ours or
        already known)."""
        self.stream_stats.trades += 1
        order_id = self._ours(trade.client_order_id, trade.fill.order_id)
        if order_id is None:
            self.stream_stats.foreign += 1
            return False
        self.state.exchange_ids.setdefault(order_id, trade.fill.order_id)
        if not self._add_fill(order_id, trade.fill):
            self.stream_stats.duplicate_trades += 1
            return False
        return True

    async def watch(self, stream: OrderStream, stop: asyncio.Event, *,
                    retry_delay: float = 0.5, retry_cap: float = 30.0) -> None:  # fmt: skip
        """Apply the stream's updates until ``stop`` is set. A drop (or a failed
        reconcile) waits ``retry_delay``, doubling to ``retry_cap``, and subscribes
        again; a refusal (``OrderRejected``, e.g. credentials) ends the watch."""
        stopped = asyncio.ensure_future(stop.wait())
        delay = retry_delay
        try:
            while not stop.is_set():
                subscribes = self.stream_stats.subscribes
                session = asyncio.ensure_future(self._session(stream))
                await asyncio.wait({session, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not session.done():
                    session.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await session
                    return
                error = session.exception()
                if not isinstance(error, OrderStreamLost | _ReconcileFailed):
                    session.result()  # re-raises (a session never ends by itself)
                    return
                if self.stream_stats.subscribes > subscribes and isinstance(error, OrderStreamLost):
                    delay = retry_delay  # it was up: the backoff starts afresh
                self.stream_stats.drops += 1
                log.warning("order stream lost, subscribing again", venue=self.venue,
                            error=str(error), retry_in=delay)  # fmt: skip
                await asyncio.wait({stopped}, timeout=delay)
                delay = min(delay * 2, retry_cap)
        finally:
            stopped.cancel()

    async def _session(self, stream: OrderStream) -> None:
        """Subscribe, start reading, then reconcile: what happened before the
        subscription is on REST, what happens after reaches the readers."""
        await stream.subscribe()
        self.stream_stats.subscribes += 1
        readers = [asyncio.ensure_future(self._read_orders(stream)),
                   asyncio.ensure_future(self._read_trades(stream))]  # fmt: skip
        try:
            await asyncio.sleep(0)  # both readers wait on the stream before REST is read
            try:
                await self.reconcile()
            except OrderRejected:
                raise
            except Exception as exc:  # the exchange's REST is down: subscribe and try again
                self.stream_stats.reconcile_failures += 1
                raise _ReconcileFailed(repr(exc)) from exc
            self.stream_stats.reconciles += 1
            done, _ = await asyncio.wait(readers, return_when=asyncio.FIRST_EXCEPTION)
            for reader in done:
                reader.result()
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

    async def _read_orders(self, stream: OrderStream) -> None:
        while True:  # nothing awaits between two reads: no update waits for the next
            for remote in await stream.orders():
                self.apply_order_update(remote)

    async def _read_trades(self, stream: OrderStream) -> None:
        while True:
            for trade in await stream.trades():
                self.apply_trade(trade)

    # -- state ------------------------------------------------------------------------
    def _ours(self, client_order_id: str | None, exchange_id: str) -> str | None:
        """Our id of an exchange order: by its client order id, else its exchange id."""
        if client_order_id is not None and client_order_id in self.state.orders:
            return client_order_id
        return next((oid for oid, eid in self.state.exchange_ids.items() if eid == exchange_id),
                    None)  # fmt: skip

    def _known(self, order_id: str) -> Order:
        order = self.state.orders.get(order_id)
        if order is None:
            raise OrderRejected("unknown_order", f"no order {order_id}", field="order_id")
        return order

    def _apply(self, order_id: str, remote: ExchangeOrder) -> bool:
        """The exchange's view of the order onto ours, if it is further on than ours
        (a late or repeated update never reopens a final order or shrinks a fill);
        whether anything changed."""
        changed = self.state.exchange_ids.get(order_id) != remote.id
        self.state.exchange_ids[order_id] = remote.id
        order = self.state.orders[order_id]
        ours = (order.filled, _PROGRESS.get(order.status, _FINAL))
        theirs = (remote.filled, _PROGRESS.get(remote.status, _FINAL))
        if order.is_open and theirs > ours:
            self.state.orders[order_id] = replace(
                order, status=remote.status, filled=remote.filled,
                average_price=remote.average_price, updated_ts=max(order.updated_ts, remote.ts),
            )  # fmt: skip
            changed = True
        elif theirs < ours or (not order.is_open and remote.status != order.status):
            self.stream_stats.stale += 1
            log.info("stale order update ignored", venue=self.venue, order_id=order_id,
                     status=order.status, update_status=remote.status)  # fmt: skip
        for fill in remote.fills:
            changed = self._add_fill(order_id, fill) or changed
        return changed

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


class _ReconcileFailed(Exception):
    """A reconcile after subscribing failed on the way (network): subscribe again."""


def _decimals(row: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {k: Decimal(v) if k in names and v is not None else v for k, v in row.items()}
