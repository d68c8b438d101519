"""Live orders kept in step with their exchanges between commands.

A resting live order fills on the exchange while nobody sends a command; its
fills and its end must still reach the order log, the ledger and the tenant's
WebSocket ``orders`` channel. Every ``poll_seconds`` the watch loads every tenant
with an order log (``OrderService.refresh``: a tenant loaded for the first time is
reconciled as it loads) and reconciles each tenant whose live venues may still
change: an order open on an exchange, or a fill not yet in the ledger
(``LiveOrders.reconcile``: the exchange's open orders, each order we think open,
and our trades since the last known fill, each fill once; every change logged as
a ``live_update`` and published). It runs in the compute role, one per
deployment; a second one would only repeat the same REST reads.

Polling rather than the exchange's websocket (``LiveVenue.watch``) keeps one
writer of each tenant's live state, under the tenant's lock; a fill is therefore
learnt up to ``poll_seconds`` late (default 5 s).
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from cryptodesk.services.order_service import OrderService

log = structlog.get_logger(__name__)


class LiveWatch:
    """Polls ``service``'s live venues (see the module docstring)."""

    def __init__(self, service: OrderService, *, poll_seconds: float = 5.0) -> None:
        if service.live is None:
            raise ValueError("the order service runs no live venues")
        self.service = service
        self.poll_seconds = poll_seconds
        self.polls = 0
        self.reconciled = 0  # tenant reconciles run

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; then close the service's exchange sessions."""
        try:
            while not stop.is_set():
                await self.poll()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_seconds)
        finally:
            await self.service.close()

    async def poll(self) -> int:
        """One round; how many tenants were reconciled. A failure (database, exchange)
        is logged and the next round tries again."""
        live = self.service.live
        assert live is not None
        self.polls += 1
        try:
            await self.service.refresh()
        except Exception as exc:
            log.warning("live watch could not load tenants", error=repr(exc))
            return 0
        done = 0
        for tenant in self.service.live_pending():
            try:
                await live.reconcile(self.service, tenant)
            except Exception as exc:
                log.warning("live orders not reconciled", tenant=tenant, error=repr(exc))
                continue
            done += 1
        self.reconciled += done
        return done
