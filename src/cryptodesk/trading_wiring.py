"""The order services built from Settings: the internal venue's order service and its
``/api/v1`` routes (orders, fills, positions, kill switch, paper deposits)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptodesk.adapters.bus.base import Bus
from cryptodesk.adapters.cache.base import Cache
from cryptodesk.config import Settings


def orders_api_router(s: Settings, engine: AsyncEngine, cache: Cache, bus: Bus) -> APIRouter:
    """Orders on the internal venue; the log is written on the primary ``engine``. Order
    changes and fills reach the tenant's WebSocket ``orders`` subscribers in every API
    process through the bus."""
    from cryptodesk.adapters.db.order_log_store import SqlOrderLog
    from cryptodesk.api.routes.orders import orders_router
    from cryptodesk.services.circuit_breakers import BreakerStates
    from cryptodesk.services.order_service import OrderService, default_instruments, halted_by
    from cryptodesk.services.ws_feed import publish_tenant_event

    async def publish(tenant: str, updates: Sequence[dict[str, Any]]) -> None:
        for update in updates:
            await publish_tenant_event(bus, tenant, "orders", update)

    breakers = BreakerStates(cache, exchanges=s.exchanges, symbols=s.symbols)
    service = OrderService(
        SqlOrderLog(engine), default_instruments(s.symbols),
        halted=halted_by(breakers, s.exchanges), on_updates=publish,
    )  # fmt: skip
    return orders_router(service)
