"""Orders of every tenant on the internal paper venue, acknowledged only once durable.

Each tenant has one ``OrderManager`` (``trading/oms.py``), built on first use by
replaying that tenant's stored order log. Commands of one tenant run one at a
time under its lock: first the manager catches up with records another process
may have appended, then the command runs on the manager with an in-memory log,
and the records it produced are written to the database before the call returns.
That write is the acknowledgement: if it fails the manager is dropped (the next
call rebuilds it from the database) and the error propagates, so an order the
caller was told about is always in the database and a restart replays it. A
write refused because another process took the same seq is retried once on a
manager rebuilt from the database.

A rejected order is not an error: ``submit`` returns it with status
``rejected`` and its rule. Order changes and fills (``take_updates``) go to
``on_updates(tenant, updates)`` after the write, for the bus and the WebSocket
``orders`` channel. Order ids are per tenant (``O`` + sequence).

Paper venues (``paper``: exchange names) trade against the exchanges' live books:
a paper order's command first hands the manager the latest book of its market
(``books``, read from the cache), and ``on_book`` (the paper feed's books from
the bus) fills resting paper orders, one logged command per tenant that has open
paper orders in that market; they charge their exchange's rates where ``venue_fees``
(by exchange id) names them. ``refresh`` catches every tenant up with the log
(and loads those this process has not seen), so a process feeding books learns
of orders placed in others.

Live venues (``live:EXCHANGE``, given ``live``) are ``services/live_orders.py``'s:
their commands are delegated there and write their own records to the same log
(``lock``, ``current``, ``store``, ``publish``), which a rebuild replays into the
tenant's ``LiveBlotter``; the queries include their orders, fills and positions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import structlog

from cryptodesk.adapters.db.order_log_store import OrderLogConflict
from cryptodesk.adapters.ratelimit.base import RateLimiter, Tier
from cryptodesk.domain.market import OrderBook
from cryptodesk.domain.orders import OrderRequest
from cryptodesk.domain.symbol import Symbol
from cryptodesk.domain.timeutil import now_ms
from cryptodesk.services.order_queries import (
    OrderNotFound as OrderNotFound,  # raised by the queries, re-exported
)
from cryptodesk.services.order_queries import (
    OrderQueries,
    PendingLog,
    TenantState,
    known,
    note,
    owner,
)
from cryptodesk.trading.balances import Balances
from cryptodesk.trading.errors import OrderRejected
from cryptodesk.trading.instruments import TICK_SIZE, Fees, Instrument
from cryptodesk.trading.matching import SelfTrade
from cryptodesk.trading.oms import OrderManager
from cryptodesk.trading.order_log import Record
from cryptodesk.trading.order_state import Order, order_dict
from cryptodesk.trading.pretrade import PreTradeRisk, RiskLimits, rate_limited

if TYPE_CHECKING:
    from cryptodesk.services.live_orders import LiveOrders

log = structlog.get_logger(__name__)
T = TypeVar("T")

Updates = list[dict[str, Any]]
UpdateHook = Callable[[str, Updates], Awaitable[None]]
Instruments = Mapping[str, Instrument] | Callable[[str], Mapping[str, Instrument]]
BookReader = Callable[[str, str], Awaitable[OrderBook | None]]


class OrderLogStore(Protocol):
    """Where each tenant's order log is kept (``adapters.db.order_log_store.SqlOrderLog``)."""

    async def append(self, tenant: str, records: Sequence[Record]) -> None: ...

    async def records(self, tenant: str, *, after: int = 0) -> list[Record]: ...

    async def tenants(self) -> list[str]: ...


class HaltReader(Protocol):
    """The circuit breakers' states (``services.circuit_breakers.BreakerStates``)."""

    async def is_halted(self, exchange: str, symbol: str) -> bool: ...


def halted_by(breakers: HaltReader, exchanges: Sequence[str]) -> Callable[[str], Awaitable[bool]]:
    """``halted`` for ``OrderService``: a symbol is halted while its breaker on any of
    ``exchanges`` is (the internal venue trades at those markets' prices)."""

    async def halted(symbol: str) -> bool:
        for exchange in exchanges:
            if await breakers.is_halted(exchange, symbol):
                return True
        return False

    return halted


class OrderLogMismatch(RuntimeError):
    """The stored order log cannot be replayed under the settings (an operator's error)."""


@dataclass(frozen=True, slots=True)
class Placed:
    """What ``submit`` did: the order, and False when ``client_order_id`` named an
    order placed before (returned unchanged, nothing new happened)."""

    order: Order
    new: bool


def default_instruments(
    symbols: Sequence[str],
    markets: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    precision_mode: int = TICK_SIZE,
    grids: Mapping[str, Mapping[str, Decimal]] | None = None,
) -> dict[str, Instrument]:
    """The internal venue's instruments: from ccxt ``markets`` where given, else a
    default grid (tick 0.01, lot 0.00001, min notional 1, fees 0.1 %) with what
    ``grids`` sets for the symbol (``Instrument`` fields by name)."""
    out: dict[str, Instrument] = {}
    for name in symbols:
        market = (markets or {}).get(name)
        if market is not None:
            out[name] = Instrument.from_ccxt_market(market, precision_mode=precision_mode)
            continue
        symbol = Symbol.parse(name)
        fields = {**_DEFAULT_GRID, **(grids or {}).get(name, {})}
        out[name] = Instrument(name, symbol.base, symbol.quote, **fields)
    return out


_DEFAULT_GRID: dict[str, Decimal] = {
    "tick_size": Decimal("0.01"), "lot_size": Decimal("0.00001"), "min_notional": Decimal(1),
}  # fmt: skip


class OrderService(OrderQueries):
    """Orders, fills, positions and paper balances per tenant, over ``store``."""

    def __init__(
        self,
        store: OrderLogStore,
        instruments: Instruments,
        *,
        limits: RiskLimits | Mapping[str, RiskLimits] | None = None,
        halted: Callable[[str], Awaitable[bool]] | None = None,
        clock: Callable[[], int] = now_ms,
        on_updates: UpdateHook | None = None,
        paper: Sequence[str] = (),
        books: BookReader | None = None,
        paper_max_age_ms: int = 10_000,
        venue_fees: Mapping[str, Fees] | None = None,
        self_trade: SelfTrade = "cancel_incoming",
        rate_limiter: RateLimiter | None = None,
        live: LiveOrders | None = None,
    ) -> None:
        self._store = store
        self.live = live
        self.paper = tuple(paper)
        self._books = books
        self._paper_max_age_ms = paper_max_age_ms
        self._venue_fees = dict(venue_fees or {})
        self._self_trade: SelfTrade = self_trade
        self._instruments = instruments
        self._limits = RiskLimits() if limits is None else limits
        self._rate_limiter = rate_limiter
        self._halted = halted
        self._clock = clock
        self.on_updates = on_updates
        self._tenants: dict[str, TenantState] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._halted_now: dict[str, bool] = {}

    # ---- commands -------------------------------------------------------------------

    async def submit(self, tenant: str, request: OrderRequest) -> Placed:
        """Place ``request``; the order (maybe ``rejected``) once it is durable."""
        refused = await self._shared_rate(tenant, request)
        if refused is not None:
            return refused
        halted = False if self._halted is None else await self._halted(request.symbol)
        book = None
        exchange = request.venue.removeprefix("paper:")
        if exchange in self.paper and self._books is not None:
            book = await self._books(exchange, request.symbol)
        if self.live is not None and request.venue.startswith("live:"):
            self._halted_now[request.symbol] = halted
            return await self.live.submit(self, tenant, request)

        def place(m: OrderManager, log: PendingLog) -> Placed:
            self._halted_now[request.symbol] = halted
            if book is not None:
                m.on_book(book)  # logged first if it fills resting orders
            order = m.submit(request)
            return Placed(order, new=bool(log.pending) or order.status == "rejected")

        return await self._command(tenant, place)

    async def cancel(self, tenant: str, order_id: str) -> Order:
        """Cancel an open order; an order already final comes back unchanged."""
        if self.live is not None and self.live.owns(order_id):
            return await self.live.cancel(self, tenant, order_id)
        return await self._command(tenant, lambda m, _: m.cancel(owner(m, order_id), order_id))

    async def amend(
        self,
        tenant: str,
        order_id: str,
        *,
        price: Decimal | None = None,
        quantity: Decimal | None = None,
    ) -> Order:
        """Change a resting order's price and/or quantity (``OrderRejected`` if refused)."""
        if self.live is not None and self.live.owns(order_id):
            return await self.live.amend(self, tenant, order_id)

        def amend(m: OrderManager, _: PendingLog) -> Order:
            return m.amend(owner(m, order_id), order_id, price=price, quantity=quantity)

        return await self._command(tenant, amend)

    async def deposit(self, tenant: str, account: str, asset: str, amount: Decimal) -> None:
        """Credit paper money to ``account`` (logged like every command)."""
        await self._command(tenant, lambda m, _: m.deposit(account, asset, amount))

    async def kill(self, tenant: str, account: str | None = None) -> list[Order]:
        """Stop new orders of ``account`` (None: the whole tenant); the orders cancelled
        (live ones on their exchanges too)."""
        cancelled = await self._command(tenant, lambda m, _: m.kill(account))
        if self.live is not None:
            cancelled += await self.live.kill(self, tenant, account)
        return cancelled

    async def revive(self, tenant: str, account: str | None = None) -> None:
        await self._command(tenant, lambda m, _: m.revive(account))

    async def on_book(self, book: OrderBook) -> int:
        """Hand ``book`` to every loaded tenant's paper venue of its exchange; the resting
        orders it fills (logged per tenant). A tenant without open paper orders in that
        market only keeps the book (nothing to log)."""
        venue = f"paper:{book.exchange}"
        if book.exchange not in self.paper:
            return 0
        filled = 0
        for tenant, state in list(self._tenants.items()):
            if not state.manager.paper[venue].open_orders(symbol=book.symbol):
                state.manager.paper[venue].set_book(book)
                continue
            try:
                filled += await self._command(tenant, lambda m, _: m.on_book(book))
            except Exception as exc:  # dropped: the next refresh reloads it, a later book fills
                log.warning("paper fills not stored", tenant=tenant, error=repr(exc))
        return filled

    async def refresh(self) -> int:
        """Load every tenant with an order log and catch each up; how many are loaded."""
        for tenant in await self._store.tenants():
            await self._query(tenant, lambda _: None)
        return len(self._tenants)

    def forget(self, tenant: str) -> None:
        """Drop the tenant's manager: the next call rebuilds it from the database."""
        self._tenants.pop(tenant, None)

    async def close(self) -> None:
        if self.live is not None:
            await self.live.close()

    def live_open_venues(self, tenant: str) -> list[tuple[str, str]]:
        """The loaded tenant's (venue, account) pairs with an order open on an exchange."""
        state = self._tenants.get(tenant)
        return [] if state is None or state.live is None else state.live.open_venues()

    def live_pending(self) -> list[str]:
        """Loaded tenants whose live venues may still change (an order open on an
        exchange, or a fill not in the ledger yet)."""
        return [t for t, state in self._tenants.items()
                if state.live is not None and state.live.needs_settling()]  # fmt: skip

    async def refuse(self, tenant: str, request: OrderRequest, error: OrderRejected) -> Placed:
        """A refused order, as the order manager reports one: published, never kept."""
        order = Order.rejected(request, error, self._clock())
        await self.publish(tenant, [{"event": "order", **order_dict(order)}])
        return Placed(order, new=True)

    # ---- for the live venues (services/live_orders.py) ------------------------------

    def lock(self, tenant: str) -> asyncio.Lock:
        """The tenant's lock: hold it around ``current``, ``store`` and ``publish``."""
        return self._lock(tenant)

    async def current(self, tenant: str) -> TenantState:
        return await self._current(tenant)

    async def store(self, tenant: str, state: TenantState, records: Sequence[Record]) -> None:
        """Write ``records`` (numbered here; already applied to ``state.live``) as one
        command. A failure drops the tenant (rebuilt on next use) and raises."""
        numbered = [{"seq": state.seq + n, **record} for n, record in enumerate(records, 1)]
        try:
            await self._store.append(tenant, numbered)
        except BaseException:
            self.forget(tenant)
            raise
        for record in numbered:
            state.manager.apply(record)  # only moves its seq on
            note(state, record)

    async def publish(self, tenant: str, updates: Updates) -> None:
        await self._publish(tenant, updates)

    # ---- the mechanics --------------------------------------------------------------

    def _symbol_limits(self, symbol: str) -> RiskLimits:
        limits = self._limits
        return limits if isinstance(limits, RiskLimits) else limits.get(symbol, RiskLimits())

    async def _shared_rate(self, tenant: str, request: OrderRequest) -> Placed | None:
        """With a ``rate_limiter``, the account's ``submit_rate`` is one bucket for every
        process (the limiter's, in Redis) instead of one per process: a token is taken
        before the order reaches its venue, and an empty bucket refuses it (``rate_limit``).
        A repeated client order id is answered first and takes no token."""
        limits = self._symbol_limits(request.symbol)
        rate = limits.submit_rate
        if self._rate_limiter is None or rate is None:
            return None
        if request.client_order_id is not None:
            async with self._lock(tenant):
                state = await self._current(tenant)
            found = known(state, request)
            if found is not None:
                return Placed(found, new=False)
        tier = Tier("orders", float(rate), limits.submit_bucket())
        decision = await self._rate_limiter.hit(f"{tenant}:{request.account}", tier)
        if decision.allowed:
            return None
        return await self.refuse(tenant, request, rate_limited(request.account, rate))

    def _lock(self, tenant: str) -> asyncio.Lock:
        lock = self._locks.get(tenant)
        if lock is None:
            lock = self._locks[tenant] = asyncio.Lock()
        return lock

    async def _current(self, tenant: str) -> TenantState:
        """The tenant's manager, built or caught up with the stored log (hold the lock)."""
        state = self._tenants.get(tenant)
        if state is None:
            history = await self._store.records(tenant)
            if self.live is not None:
                await self.live.ready()
            return self._build(tenant, history)
        newer = await self._store.records(tenant, after=state.seq)
        if newer:  # another process appended: apply its records as decided there
            try:
                for record in newer:
                    state.manager.apply(record)
                    _learn(state, record)
            except Exception:
                self.forget(tenant)
                raise
            state.manager.take_updates()  # that process published them
        return state

    def _build(self, tenant: str, history: list[Record]) -> TenantState:
        log = PendingLog(history)
        instruments = self._instruments
        chosen = instruments(tenant) if callable(instruments) else instruments

        def risk() -> PreTradeRisk:
            halted = self._halted_now.get
            return PreTradeRisk(self._limits, Balances(), clock=self._clock,
                                halted=lambda symbol: halted(symbol, False))  # fmt: skip

        try:
            manager = OrderManager.replay(chosen, risk, log, clock=self._clock, paper=self.paper,
                                          paper_max_age_ms=self._paper_max_age_ms,
                                          venue_fees=self._venue_fees,
                                          self_trade=self._self_trade)  # fmt: skip
        except OrderRejected as error:  # a stored order off the instruments' grid now
            raise OrderLogMismatch(
                f"tenant {tenant}'s order log does not fit the instruments configured now "
                f"(a tick or lot size changed to one that does not divide the old): {error}"
            ) from None
        state = TenantState(
            manager, log, 0, live=None if self.live is None else self.live.blotter(tenant)
        )
        for record in history:
            _learn(state, record)
        log.history = []  # replayed; only new records matter from here on
        self._tenants[tenant] = state
        if self.live is not None and state.live is not None:
            self.live.loaded(self, tenant, state.live)
        return state

    async def _query(self, tenant: str, read: Callable[[TenantState], T]) -> T:
        async with self._lock(tenant):
            return read(await self._current(tenant))

    async def _command(self, tenant: str, run: Callable[[OrderManager, PendingLog], T]) -> T:
        async with self._lock(tenant):
            for attempt in (1, 2):
                state = await self._current(tenant)
                state.log.pending.clear()
                try:
                    result = run(state.manager, state.log)
                except Exception:
                    if state.log.pending:  # half applied and never stored: rebuild
                        self.forget(tenant)
                    raise
                records, state.log.pending = state.log.pending, []
                try:
                    await self._store.append(tenant, records)
                except Exception as exc:
                    self.forget(tenant)  # applied in memory only: never acknowledged
                    if attempt == 1 and isinstance(exc, OrderLogConflict):
                        log.info("order log moved on elsewhere; deciding again", tenant=tenant)
                        continue
                    raise
                for record in records:
                    note(state, record)
                await self._publish(tenant, state.manager.take_updates())
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def _publish(self, tenant: str, updates: Updates) -> None:
        if not updates or self.on_updates is None:
            return
        try:
            await self.on_updates(tenant, updates)
        except Exception as exc:  # the command is durable: publishing is best effort
            log.warning("order updates not published", tenant=tenant, error=repr(exc))


def _learn(state: TenantState, record: Record) -> None:
    """``_note`` a record read from the store, replaying it into the live blotter."""
    note(state, record)
    if state.live is not None:
        state.live.apply(record)
