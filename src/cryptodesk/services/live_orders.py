"""Live orders: the venues ``live:EXCHANGE`` of every tenant, on its ledger's exchange
accounts, through ``LiveVenue`` (``services/live_venue.py``) and made durable by the
tenant's order log (``services/order_service.py`` delegates here; docs/trading.md,
"Live orders").

Under the tenant's lock: pre-trade risk without the balance (the exchange refuses
what the account cannot pay), then a ``live_submit`` record stored before the
exchange is called, then a ``live_update`` with what the answer changed
(``services/live_blotter.py``). An order whose create got no answer, or whose
process died in between, is ``new`` until a reconcile settles it by client order
id: when a process loads the tenant, and before its venue's next command. New
fills go to the ledger as account sync's entries (``services/trade_booking.py``).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from cryptodesk.adapters.db.order_log_store import OrderLogConflict
from cryptodesk.domain.orders import OrderRequest
from cryptodesk.domain.timeutil import now_ms
from cryptodesk.services.live_blotter import (
    Before,
    LiveBlotter,
    VenueKey,
    before,
    changes,
    submit_record,
    tenant_tag,
)
from cryptodesk.services.live_risk import admit
from cryptodesk.services.market_queries import Unavailable
from cryptodesk.services.order_queries import known as known_order
from cryptodesk.services.order_service import OrderNotFound, Placed
from cryptodesk.services.trade_booking import (
    LiveLedger,
    TradeBooking,
    TradeClients,
    exchange_credentials,
)
from cryptodesk.trading.errors import OrderRejected
from cryptodesk.trading.order_state import Order, order_dict

if TYPE_CHECKING:
    from cryptodesk.services.live_venue import LiveVenue, OrderGateway
    from cryptodesk.services.order_queries import TenantState
    from cryptodesk.services.order_service import BookReader, OrderService

    class Gateway(OrderGateway, Protocol):
        """An exchange account's orders (``CcxtOrders``), closed when the service stops."""

        async def close(self) -> None: ...

    # (exchange id, credentials, ledger account name) -> the account's orders
    Gateways = Callable[[str, Any, str], Awaitable[Gateway]]

log = structlog.get_logger(__name__)


class LiveOrders:
    """The live venues of an ``OrderService`` (its ``live``). ``books`` reads the
    exchanges' latest books (risk's reference price; a market order needs one no
    older than ``book_max_age_ms``)."""

    def __init__(
        self,
        ledger: LiveLedger,
        gateways: Gateways,
        trade_clients: TradeClients,
        *,
        books: BookReader | None = None,
        book_max_age_ms: int = 10_000,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._ledger = ledger
        self._make_gateway = gateways
        self._booking = TradeBooking(ledger, trade_clients)
        self._books = books
        self._max_age = book_max_age_ms
        self._clock = clock
        self._gateways: dict[tuple[str, str, str], Gateway] = {}  # (tenant, exchange, account)
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready = False

    @staticmethod
    def owns(order_id: str) -> bool:
        return order_id.startswith("L")

    def blotter(self, tenant: str) -> LiveBlotter:
        """A new, empty blotter for ``tenant``, being rebuilt."""
        return LiveBlotter(tenant_tag(tenant))

    async def credentials(self, tenant: str, exchange: str, account: str) -> Any:
        """The API credentials of the tenant's ledger account on ``exchange`` (for the
        account's order stream); ``OrderRejected`` as for an order."""
        return await exchange_credentials(self._ledger, tenant, exchange, account)

    async def ready(self) -> None:
        """Load the live venue's code (and ccxt, seconds of work) in a worker thread,
        before a rebuild first needs it, so the event loop never stalls on it."""
        if not self._ready:
            await asyncio.to_thread(importlib.import_module, "cryptodesk.services.live_venue")
            self._ready = True

    # ---- commands (under the tenant's lock) -----------------------------------------

    async def submit(self, service: OrderService, tenant: str, request: OrderRequest) -> Placed:
        """Place ``request`` on its exchange (see the module docstring); a refusal, ours
        or the exchange's, is a ``rejected`` order that is not kept."""
        ts = self._clock()
        exchange = request.venue.removeprefix("live:")
        try:
            gateway = await self._gateway(tenant, exchange, request.account, check=True)
        except OrderRejected as error:
            return await service.refuse(tenant, request, error)
        book = None if self._books is None else await self._books(exchange, request.symbol)
        key = (request.venue, request.account)
        async with service.lock(tenant):
            state = await self._settled(service, tenant, key)
            for attempt in (1, 2):
                known = known_order(state, request)
                if known is not None:
                    return Placed(known, new=False)
                try:
                    admit(state.manager, _blotter(state), request, book, ts, self._max_age)
                except OrderRejected as error:
                    return await service.refuse(tenant, request, error)
                record = submit_record(ts, _blotter(state).next_order_id(), request)
                try:
                    await service.store(tenant, state, [record])
                    break
                except OrderLogConflict:
                    if attempt == 2:
                        raise
                    log.info("order log moved on elsewhere; deciding again", tenant=tenant)
                    state = await service.current(tenant)
            order_id = record["order_id"]
            _blotter(state).note_submit(record)
            venue = self._venue(gateway, state, key)
            then, refused = before(venue.state), None
            try:
                await venue.submit(replace(request, client_order_id=order_id))
            except OrderRejected as error:
                refused = error
            except Exception as exc:  # no answer: new until a reconcile finds it (or not)
                log.warning("live order outcome unknown", tenant=tenant, venue=request.venue,
                            order_id=order_id, error=repr(exc))  # fmt: skip
            except BaseException:
                service.forget(tenant)  # the log says new: a rebuild reconciles it
                raise
            state = await self._log(service, tenant, state, key, then, submitted=order_id)
            if refused is not None:
                return await service.refuse(tenant, request, refused)
            state = await self._book_fills(service, tenant, state)
            order = _blotter(state).order(order_id)
            assert order is not None, order_id
            return Placed(order, new=True)

    async def cancel(self, service: OrderService, tenant: str, order_id: str) -> Order:
        """Cancel on the exchange; an order already final comes back unchanged."""
        async with service.lock(tenant):
            key = _blotter(await service.current(tenant)).key_of(order_id)
            if key is None:
                raise OrderNotFound(order_id)
            state = await self._settled(service, tenant, key)
            order = _blotter(state).order(order_id)
            if order is not None and order.is_open:
                venue = self._venue(await self._gateway(tenant, *_where(key)), state, key)
                then = before(venue.state)
                try:
                    await _cancel(venue, order_id, "client")
                finally:
                    state = await self._log(service, tenant, state, key, then)
                state = await self._book_fills(service, tenant, state)
            found = _blotter(state).order(order_id)
            if found is None:
                raise OrderNotFound(order_id)
            return found

    async def amend(self, service: OrderService, tenant: str, order_id: str) -> Order:
        order = await service.order(tenant, order_id)  # OrderNotFound if there is none
        raise OrderRejected("not_amendable", f"order {order_id} is on {order.venue}: cancel "
                            "it and place a new one", field="order_id")  # fmt: skip

    async def kill(self, service: OrderService, tenant: str, account: str | None) -> list[Order]:
        """Cancel the open live orders of ``account`` (None: all) on their exchanges
        (the kill switch itself is the order manager's); the orders cancelled."""
        cancelled: list[str] = []
        failed: list[str] = []
        async with service.lock(tenant):
            state = await self._settled(service, tenant)
            for key in list(_blotter(state).states):
                ids = [o.order_id for o in _blotter(state).open_orders(account, key=key)]
                if not ids:
                    continue
                try:
                    venue = self._venue(await self._gateway(tenant, *_where(key)), state, key)
                except Exception as exc:  # e.g. the account lost its credentials
                    log.error("live orders not cancelled by the kill switch", tenant=tenant,
                              orders=ids, error=repr(exc))  # fmt: skip
                    failed += ids
                    continue
                then = before(venue.state)
                for order_id in ids:
                    try:
                        await _cancel(venue, order_id, "kill_switch")
                        cancelled.append(order_id)
                    except Exception as exc:
                        log.error("live order not cancelled by the kill switch", tenant=tenant,
                                  order_id=order_id, error=repr(exc))  # fmt: skip
                        failed.append(order_id)
                state = await self._log(service, tenant, state, key, then)
            state = await self._book_fills(service, tenant, state)
            orders = [_blotter(state).order(order_id) for order_id in cancelled]
        if failed:
            raise Unavailable(f"the kill switch is on, but live orders {', '.join(failed)} could "
                              "not be cancelled: try again", field=None,
                              code="service-unavailable")  # fmt: skip
        return [o for o in orders if o is not None]

    async def reconcile(self, service: OrderService, tenant: str) -> None:
        """Bring the tenant's open live orders in line with their exchanges now."""
        async with service.lock(tenant):
            _blotter(await service.current(tenant)).reconciled = False
            await self._settled(service, tenant)

    async def states(self, service: OrderService, tenant: str) -> dict[str, dict[str, Any]]:
        """Each live venue's state as plain data (``LiveState.dump``), by "venue account":
        what replaying the tenant's log rebuilds exactly."""
        async with service.lock(tenant):
            blotter = _blotter(await service.current(tenant))
            return {f"{v} {a}": state.dump() for (v, a), state in blotter.states.items()}

    def loaded(self, service: OrderService, tenant: str, blotter: LiveBlotter) -> None:
        """A process just rebuilt the tenant: reconcile its live venues (in the background,
        so a read never waits for an exchange; the next live command waits for it)."""
        if not blotter.needs_settling():
            blotter.reconciled = True
            return
        task = asyncio.get_running_loop().create_task(self._settle_later(service, tenant))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def idle(self) -> None:
        """Wait for the start-up reconciles running now."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.idle()
        for gateway in self._gateways.values():
            await gateway.close()
        self._gateways.clear()
        await self._booking.close()

    # ---- the exchange side ----------------------------------------------------------

    async def _gateway(self, tenant: str, exchange: str, account: str, *,
                       check: bool = False) -> Gateway:  # fmt: skip
        """The account's gateway (made on first use); ``check``: the ledger still has
        the account on that exchange, with credentials."""
        key = (tenant, exchange, account)
        if not check and key in self._gateways:
            return self._gateways[key]
        credentials = await exchange_credentials(self._ledger, tenant, exchange, account)
        if key not in self._gateways:
            try:
                made = await self._make_gateway(exchange, credentials, account)
            except ValueError as exc:  # ccxt does not know the exchange
                raise OrderRejected("unknown_venue", str(exc), field="venue") from None
            if key in self._gateways:  # another command made one meanwhile
                await made.close()
            else:
                self._gateways[key] = made
        return self._gateways[key]

    def _venue(self, gateway: Gateway, state: TenantState, key: VenueKey) -> LiveVenue:
        from cryptodesk.services.live_venue import LiveVenue

        return LiveVenue(gateway, account=key[1], state=_blotter(state).state(key),
                         clock=self._clock)  # fmt: skip

    async def _settled(self, service: OrderService, tenant: str,
                       key: VenueKey | None = None) -> TenantState:  # fmt: skip
        """The tenant caught up and, where needed, reconciled: every venue with open
        orders once after a rebuild, and ``key``'s venue while it has ``new`` orders
        (their create got no answer). Best effort: a failure is logged and retried at
        the next command. Then the fills waiting for the ledger are tried again."""
        state = await service.current(tenant)
        blotter = _blotter(state)
        keys = [] if blotter.reconciled else [k for k in blotter.states
                                                if blotter.open_orders(key=k)]  # fmt: skip
        if (
            key is not None
            and key not in keys
            and any(o.status == "new" for o in blotter.open_orders(key=key))
        ):
            keys.append(key)
        done = True
        for k in keys:
            try:
                state = await self._reconcile(service, tenant, state, k)
            except Exception as exc:
                log.warning("live venue not reconciled", tenant=tenant, venue=k[0], account=k[1],
                            error=repr(exc))  # fmt: skip
                state, done = await service.current(tenant), False
        if done:
            _blotter(state).reconciled = True
        return await self._book_fills(service, tenant, state)

    async def _reconcile(self, service: OrderService, tenant: str, state: TenantState,
                         key: VenueKey) -> TenantState:  # fmt: skip
        venue = self._venue(await self._gateway(tenant, *_where(key)), state, key)
        then = before(venue.state)
        try:
            result = await venue.reconcile()
        finally:  # what it learnt before any failure is the exchange's word too
            state = await self._log(service, tenant, state, key, then)
        log.info("live venue reconciled", tenant=tenant, venue=key[0], account=key[1],
                 orders=list(result.orders), fills=len(result.fills),
                 foreign_orders=list(result.foreign_orders))  # fmt: skip
        return state

    async def _settle_later(self, service: OrderService, tenant: str) -> None:
        try:
            async with service.lock(tenant):
                if not _blotter(await service.current(tenant)).reconciled:
                    await self._settled(service, tenant)
        except Exception as exc:  # the next live command tries again
            log.warning("live venues not settled after loading", tenant=tenant, error=repr(exc))

    # ---- records --------------------------------------------------------------------

    async def _log(self, service: OrderService, tenant: str, state: TenantState, key: VenueKey,
                   then: Before, *, submitted: str | None = None) -> TenantState:  # fmt: skip
        """Store what the venue's state changed since ``then`` as a ``live_update``."""
        update = changes(_blotter(state).state(key), then, submitted=submitted)
        return await self._write(service, tenant, state, key, update) if update else state

    async def _write(self, service: OrderService, tenant: str, state: TenantState, key: VenueKey,
                     update: dict[str, Any]) -> TenantState:  # fmt: skip
        """Store ``update`` (already applied in memory). If another process took the seq,
        apply it on the tenant rebuilt from the log and store it once more: it is what
        the exchange said, never decided again."""
        _blotter(state).note(key, update)
        record = {"ts": self._clock(), "type": "live_update", "venue": key[0],
                  "account": key[1], **update}  # fmt: skip
        try:
            await service.store(tenant, state, [record])
        except OrderLogConflict:
            state = await service.current(tenant)
            _blotter(state).merge(key, update)
            await service.store(tenant, state, [record])
        blotter = _blotter(state)
        changed = [blotter.order(row["order_id"]) for row in update.get("orders", ())]
        updates = [{"event": "order", **order_dict(o)} for o in changed if o is not None]
        updates += [{"event": "fill", **fill} for fill in update.get("fills", ())]
        await service.publish(tenant, updates)
        return state

    # ---- the ledger -----------------------------------------------------------------

    async def _book_fills(
        self, service: OrderService, tenant: str, state: TenantState
    ) -> TenantState:
        """Import the fills not in the ledger yet; a failure leaves them waiting."""
        blotter = _blotter(state)
        for key, booked in (await self._booking.book_waiting(tenant, blotter)).items():
            state = await self._write(service, tenant, state, key, {"booked": booked})
        return state


async def _cancel(venue: LiveVenue, order_id: str, reason: str) -> None:
    """Cancel on the exchange, saying why; an order the exchange no longer has open
    (filled meanwhile) is settled as the exchange has it."""
    try:
        await venue.cancel(order_id)
    except OrderRejected as exc:
        if exc.rule != "unknown_order":
            raise
        await venue.reconcile()
    except Exception as exc:
        raise Unavailable(f"{venue.venue} did not answer the cancel of {order_id}: {exc}",
                          field=None, code="service-unavailable") from exc  # fmt: skip
    order = venue.state.orders[order_id]
    if order.status == "cancelled" and order.close_reason is None:
        venue.state.orders[order_id] = replace(order, close_reason=reason)
    learnt = sum((f.quantity for f in venue.fills() if f.order_id == order_id), Decimal(0))
    if learnt < venue.state.orders[order_id].filled:  # a cancel answer carries no trades
        await venue.reconcile()


def _blotter(state: TenantState) -> LiveBlotter:
    assert state.live is not None, "the order service runs no live venues"
    return state.live


def _where(key: VenueKey) -> tuple[str, str]:
    """(exchange, account) of a venue key."""
    return key[0].removeprefix("live:"), key[1]
