"""Live orders kept in step with their exchanges between commands.

A resting live order fills on the exchange while nobody sends a command; its
fills and its end must still reach the order log, the ledger and the tenant's
WebSocket ``orders`` channel. The watch runs in the compute role, one per
deployment (a second one would only repeat the same reads):

- **Poll**: every ``poll_seconds`` it loads every tenant with an order log
  (``OrderService.refresh``; a tenant loaded for the first time is reconciled as
  it loads) and reconciles each tenant whose live venues may still change, an
  order open on an exchange or a fill not yet in the ledger
  (``LiveOrders.reconcile``: the exchange's open orders, each order we think
  open, our trades since the last known fill, each fill once; every change
  logged as a ``live_update`` and published).
- **Push** (given ``streams``): for each (tenant, venue, account) with an order
  open, the account's order stream (ccxt.pro ``watch_orders``,
  ``adapters/exchanges/ccxt_order_stream.py``) is followed; an update of one of
  the tenant's orders (client order id ``L`` + the tenant's tag) wakes the watch,
  which reconciles that tenant at once. The push only says when: what changed
  is read over REST under the tenant's lock, so the log has one writer and the
  same records as a poll would write. After every (re)subscribe the tenant is
  reconciled too (what happened while nobody listened); a dropped stream is
  dialled again after ``retry_delay`` seconds, doubling to ``retry_cap``; a
  refused key ends that stream (the poll still runs). A stream is closed once
  its venue has no open order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog

from cryptodesk.services.live_blotter import tenant_tag
from cryptodesk.services.order_service import OrderService
from cryptodesk.trading.errors import OrderRejected

log = structlog.get_logger(__name__)
Listener = tuple[str, str, str]  # (tenant, venue, account)


class OrderStream(Protocol):
    """An account's pushed order updates (``CcxtOrderStream``)."""

    async def subscribe(self) -> None: ...

    async def orders(self) -> list[Any]: ...  # each with ``client_order_id``

    async def close(self) -> None: ...


# (exchange, credentials, ledger account name) -> the account's order stream
StreamFactory = Callable[[str, Any, str], Awaitable[OrderStream]]


class LiveWatch:
    """Polls ``service``'s live venues and follows their order streams (see the module
    docstring)."""

    def __init__(
        self,
        service: OrderService,
        *,
        poll_seconds: float = 5.0,
        streams: StreamFactory | None = None,
        retry_delay: float = 0.5,
        retry_cap: float = 30.0,
    ) -> None:
        if service.live is None:
            raise ValueError("the order service runs no live venues")
        self.service = service
        self.poll_seconds = poll_seconds
        self._streams = streams
        self._retry = (retry_delay, retry_cap)
        self._listeners: dict[Listener, asyncio.Task[None]] = {}
        self._nudged: dict[str, None] = {}
        self._wake = asyncio.Event()
        self.polls = 0
        self.reconciled = 0  # tenant reconciles run
        self.subscribes = 0  # order streams (re)subscribed
        self.pushes = 0  # pushed updates of our orders that woke the watch

    @property
    def listening(self) -> list[Listener]:
        return sorted(self._listeners)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll (and follow the streams) until ``stop`` is set; then close the streams
        and the service's exchange sessions."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        try:
            while not stop.is_set():
                if loop.time() >= due:
                    await self.poll()
                    due = loop.time() + self.poll_seconds
                else:
                    nudged, self._nudged = list(self._nudged), {}
                    await self._reconcile(nudged)
                self._follow()
                if self._nudged:
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_either(stop, self._wake), max(0.0, due - loop.time()))
        finally:
            for task in self._listeners.values():
                task.cancel()
            await asyncio.gather(*self._listeners.values(), return_exceptions=True)
            self._listeners.clear()
            await self.service.close()

    async def poll(self) -> int:
        """One round; how many tenants were reconciled. A failure (database, exchange)
        is logged and the next round tries again."""
        self.polls += 1
        try:
            await self.service.refresh()
        except Exception as exc:
            log.warning("live watch could not load tenants", error=repr(exc))
            return 0
        return await self._reconcile(self.service.live_pending())

    async def _reconcile(self, tenants: list[str]) -> int:
        live = self.service.live
        assert live is not None
        done = 0
        for tenant in tenants:
            try:
                await live.reconcile(self.service, tenant)
            except Exception as exc:
                log.warning("live orders not reconciled", tenant=tenant, error=repr(exc))
                continue
            done += 1
        self.reconciled += done
        return done

    def _follow(self) -> None:
        """Listen to the stream of every venue with an open order, and no other."""
        if self._streams is None:
            return
        wanted = {(tenant, venue, account) for tenant in self.service.live_pending()
                  for venue, account in self.service.live_open_venues(tenant)}  # fmt: skip
        for key in [k for k in self._listeners if k not in wanted]:
            self._listeners.pop(key).cancel()
        for key in wanted - self._listeners.keys():
            self._listeners[key] = asyncio.create_task(self._listen(*key))

    def _nudge(self, tenant: str) -> None:
        self._nudged[tenant] = None
        self._wake.set()

    async def _listen(self, tenant: str, venue: str, account: str) -> None:
        assert self._streams is not None
        assert self.service.live is not None
        exchange, ours = venue.removeprefix("live:"), f"L{tenant_tag(tenant)}"
        delay, cap = self._retry
        stream: OrderStream | None = None
        try:
            credentials = await self.service.live.credentials(tenant, exchange, account)
            stream = await self._streams(exchange, credentials, account)
            while True:
                try:
                    await stream.subscribe()
                    self.subscribes += 1
                    self._nudge(tenant)  # what happened while nobody listened
                    delay = self._retry[0]
                    while True:
                        updates = await stream.orders()
                        if any((u.client_order_id or "").startswith(ours) for u in updates):
                            self.pushes += 1
                            self._nudge(tenant)
                except OrderRejected as exc:
                    log.warning("order stream refused; polling only", tenant=tenant,
                                venue=venue, account=account, error=str(exc))  # fmt: skip
                    return
                except Exception as exc:  # dropped: dial again
                    log.warning("order stream lost, subscribing again", tenant=tenant,
                                venue=venue, error=repr(exc), retry_in=delay)  # fmt: skip
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, cap)
        except OrderRejected as exc:  # the account lost its keys meanwhile
            log.warning("no order stream for live venue", tenant=tenant, venue=venue,
                        account=account, error=str(exc))  # fmt: skip
        finally:
            if stream is not None:
                await stream.close()


async def _either(*events: asyncio.Event) -> None:
    """Return once any of ``events`` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
