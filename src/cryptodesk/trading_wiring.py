"""The order services built from Settings: the internal venue's order service and its
``/api/v1`` routes (orders, fills, positions, kill switch, paper deposits)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptodesk.adapters.bus.base import Bus
from cryptodesk.adapters.cache.base import Cache
from cryptodesk.config import Settings

if TYPE_CHECKING:
    from cryptodesk.services.order_service import OrderService, UpdateHook


def order_service(s: Settings, engine: AsyncEngine, cache: Cache, bus: Bus | None) -> OrderService:
    """The internal venue's orders; the log is written on the primary ``engine``. Order
    changes and fills reach the tenant's WebSocket ``orders`` subscribers in every API
    process through the bus (None: they are not published, as from the command line)."""
    from cryptodesk.adapters.db.order_log_store import SqlOrderLog
    from cryptodesk.services.circuit_breakers import BreakerStates
    from cryptodesk.services.order_service import OrderService, default_instruments, halted_by

    breakers = BreakerStates(cache, exchanges=s.exchanges, symbols=s.symbols)
    publish = None if bus is None else _publisher(bus)
    return OrderService(
        SqlOrderLog(engine), default_instruments(s.symbols),
        halted=halted_by(breakers, s.exchanges), on_updates=publish,
    )  # fmt: skip


def _publisher(bus: Bus) -> UpdateHook:
    """Order changes and fills to the tenant's WebSocket ``orders`` channel, via the bus."""
    from cryptodesk.services.ws_feed import publish_tenant_event

    async def publish(tenant: str, updates: Sequence[dict[str, Any]]) -> None:
        for update in updates:
            await publish_tenant_event(bus, tenant, "orders", update)

    return publish


def orders_api_router(s: Settings, engine: AsyncEngine, cache: Cache, bus: Bus) -> APIRouter:
    """``/api/v1`` orders, fills, positions, kill switch and paper deposits."""
    from cryptodesk.api.routes.orders import orders_router

    return orders_router(order_service(s, engine, cache, bus))


def start_signal_trader(
    s: Settings, engine: AsyncEngine, cache: Cache, bus: Bus, stop: asyncio.Event,
    tasks: dict[str, asyncio.Task[None]],
) -> None:  # fmt: skip
    """Trade the configured strategies' signals on paper (compute role), if any."""
    if not s.trading_strategies:
        return
    from cryptodesk.services.signal_trader import SignalTrader

    trader = SignalTrader(bus, order_service(s, engine, cache, bus), s.trading_strategies)
    tasks["signal-trader"] = asyncio.create_task(trader.run(stop))
