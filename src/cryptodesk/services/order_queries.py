"""The order service's per-tenant state and its reads (``OrderService`` inherits
``OrderQueries``; ``services/order_service.py`` has the commands and the mechanics).

Every read catches the tenant up with the stored order log first (``_query``,
under the tenant's lock), so it sees what other processes stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from cryptodesk.domain.orders import Fill, OrderRequest, OrderStatus
from cryptodesk.trading.instruments import Instrument
from cryptodesk.trading.oms import OrderManager
from cryptodesk.trading.order_log import Record
from cryptodesk.trading.order_state import Order
from cryptodesk.trading.positions import Position

if TYPE_CHECKING:
    from cryptodesk.services.live_blotter import LiveBlotter

T = TypeVar("T")


class OrderNotFound(LookupError):
    """No order of that id in the tenant (another tenant's id is not found either)."""

    def __init__(self, order_id: str) -> None:
        super().__init__(f"no order {order_id!r}")
        self.order_id = order_id


class PendingLog:
    """The manager's ``OrderLog``: the stored history to replay, then the records of
    the command running now, until the service has written them."""

    def __init__(self, history: list[Record]) -> None:
        self.history = history
        self.pending: list[Record] = []

    def append(self, record: Record) -> None:
        self.pending.append(dict(record))

    def records(self) -> list[Record]:
        return self.history


@dataclass(slots=True)
class TenantState:
    manager: OrderManager
    log: PendingLog
    seq: int  # of the newest record applied (stored)
    accounts: dict[str, None] = field(default_factory=dict)  # in order of first record
    live: LiveBlotter | None = None


class OrderQueries:
    """The reads of the order service (see the module docstring)."""

    _tenants: dict[str, TenantState]

    async def _query(self, tenant: str, read: Callable[[TenantState], T]) -> T:
        raise NotImplementedError  # the service's: catch up under the lock, then read

    async def order(self, tenant: str, order_id: str) -> Order:
        def look(t: TenantState) -> Order:
            live = None if t.live is None else t.live.order(order_id)
            return live or find(t.manager, order_id)

        return await self._query(tenant, look)

    async def orders(
        self,
        tenant: str,
        *,
        account: str | None = None,
        symbol: str | None = None,
        status: OrderStatus | None = None,
    ) -> list[Order]:
        """The tenant's orders (rejections are not kept), by order id."""

        def pick(t: TenantState) -> list[Order]:
            names = [account] if account is not None else list(t.accounts)
            found = [o for a in names for o in t.manager.orders(a, status=status)]
            found = [o for o in found if symbol is None or o.symbol == symbol]
            live = [] if t.live is None else t.live.orders(account, symbol, status)
            return sorted(found, key=lambda o: o.order_id) + live  # live ones (L...) last

        return await self._query(tenant, pick)

    async def fills(
        self, tenant: str, *, account: str | None = None, symbol: str | None = None
    ) -> list[Fill]:
        """The tenant's fills, by trade id then order id (a trade between two of the
        tenant's accounts is two fills); then live fills, by order id."""

        def pick(t: TenantState) -> list[Fill]:
            names = [account] if account is not None else list(t.accounts)
            found = [f for a in names for f in t.manager.fills(a)]
            found = [f for f in found if symbol is None or f.symbol == symbol]
            live = [] if t.live is None else t.live.fills(account, symbol)
            return sorted(found, key=lambda f: (f.trade_id, f.order_id)) + live

        return await self._query(tenant, pick)

    async def positions(
        self, tenant: str, *, account: str | None = None
    ) -> list[tuple[Position, Decimal | None]]:
        """Copies of the positions of each traded (account, symbol), with the venue's
        last trade price of the symbol as the mark (None: no trade yet)."""

        def pick(t: TenantState) -> list[tuple[Position, Decimal | None]]:
            names = [account] if account is not None else list(t.accounts)
            out = []
            for name in names:
                for p in t.manager.positions(name):
                    copy = Position(p.account, p.symbol, p.quantity, p.cost, p.realized,
                                    p.fees, dict(p.other_fees))  # fmt: skip
                    out.append((copy, last_price(t.manager, p.symbol)))
            if t.live is not None:
                out = t.live.with_positions(out, t.manager.fills, account)
            return sorted(out, key=lambda pair: (pair[0].account, pair[0].symbol))

        return await self._query(tenant, pick)

    async def balance(self, tenant: str, account: str, asset: str) -> tuple[Decimal, Decimal]:
        """(available, reserved) of ``asset`` in the paper ``account``."""

        def read(t: TenantState) -> tuple[Decimal, Decimal]:
            balances = t.manager.risk.balances
            return balances.available(account, asset), balances.reserved(account, asset)

        return await self._query(tenant, read)

    async def book(self, tenant: str, symbol: str, depth: int = 10) -> dict[str, Any]:
        """The tenant's book of ``symbol``: aggregated levels (decimal strings), last price."""

        def read(t: TenantState) -> dict[str, Any]:
            instrument = t.manager.instruments.get(symbol)
            if instrument is None:
                return {"symbol": symbol, "bids": [], "asks": [], "last_price": None}
            bids, asks = t.manager.book(symbol).l2(depth)
            last = last_price(t.manager, symbol)
            return {"symbol": symbol, "bids": levels(instrument, bids),
                    "asks": levels(instrument, asks),
                    "last_price": None if last is None else str(last)}  # fmt: skip

        return await self._query(tenant, read)

    def book_now(self, tenant: str, symbol: str, depth: int = 10) -> dict[str, Any]:
        """``book`` plus the engine's ``sequence`` (of its last event), read from memory
        without the lock: for the ``on_updates`` hook (it runs under the lock) or right
        after an awaited query caught up. A tenant not loaded here has an empty book."""
        state = self._tenants.get(tenant)
        instrument = None if state is None else state.manager.instruments.get(symbol)
        if state is None or instrument is None:
            return {"symbol": symbol, "sequence": 0, "bids": [], "asks": [], "last_price": None}
        engine = state.manager.book(symbol)
        bids, asks = engine.l2(depth)
        last = last_price(state.manager, symbol)
        return {"symbol": symbol, "sequence": engine.seq, "bids": levels(instrument, bids),
                "asks": levels(instrument, asks),
                "last_price": None if last is None else str(last)}  # fmt: skip


def known(state: TenantState, request: OrderRequest) -> Order | None:
    """The order ``request.client_order_id`` named before, on any venue."""
    if request.client_order_id is None:
        return None
    account, client_id = request.account, request.client_order_id
    found = None if state.live is None else state.live.known(account, client_id)
    return found or state.manager.known_client_id(account, client_id)


def note(state: TenantState, record: Record) -> None:
    state.seq = max(state.seq, int(record["seq"]))
    account = record.get("account")
    if record["type"] in ("submit", "deposit") and account is not None:
        state.accounts.setdefault(account, None)


def find(manager: OrderManager, order_id: str) -> Order:
    order = manager.order(order_id)
    if order is None:
        raise OrderNotFound(order_id)
    return order


def owner(manager: OrderManager, order_id: str) -> str:
    return find(manager, order_id).account


def levels(instrument: Instrument, levels: list[tuple[int, int]]) -> list[list[str]]:
    return [[str(instrument.price(p)), str(instrument.quantity(q))] for p, q in levels]


def last_price(manager: OrderManager, symbol: str) -> Decimal | None:
    instrument = manager.instruments.get(symbol)
    ticks = manager.book(symbol).last_price
    return None if instrument is None or ticks is None else instrument.price(ticks)
