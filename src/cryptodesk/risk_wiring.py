"""The risk services built from Settings: circuit breakers and the arbitrage watch
(compute role), and the ``/api/v1/risk`` routes (API role)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fastapi import APIRouter

from cryptodesk.adapters.bus.base import Bus
from cryptodesk.adapters.cache.base import Cache
from cryptodesk.adapters.db.base import MarketStore
from cryptodesk.config import Settings
from cryptodesk.observability.metrics import Metrics

if TYPE_CHECKING:
    from cryptodesk.services.portfolio_valuation import PortfolioValuation


async def start_risk_compute(
    s: Settings,
    bus: Bus,
    cache: Cache,
    store: MarketStore,
    metrics: Metrics,
    stop: asyncio.Event,
    tasks: dict[str, asyncio.Task[None]],
) -> None:
    """Start the enabled risk consumers into ``tasks``; they drain once ``stop`` is set."""
    from cryptodesk.services.arbitrage_watch import ArbitrageWatch
    from cryptodesk.services.circuit_breakers import CircuitBreakerService

    if s.circuit_breaker_enabled:
        breakers = CircuitBreakerService(
            bus, cache, s.breaker_settings(), exchanges=s.exchanges, symbols=s.symbols,
            interval=s.breaker_interval, store=store, metrics=metrics,
        )  # fmt: skip
        await breakers.recover()
        tasks["circuit-breakers"] = asyncio.create_task(breakers.run(stop))
    # One member only: the bus spreads exchange:symbol keys over a group's members,
    # and a spread needs every exchange's book of the symbol.
    if s.arbitrage_enabled and len(s.exchanges) > 1:
        watch = ArbitrageWatch(
            bus, exchanges=s.exchanges, symbols=s.symbols, threshold=s.arbitrage_threshold,
            fees=s.arbitrage_fees(), default_fee=s.arbitrage_default_taker_fee,
            max_age_ms=int(s.arbitrage_max_age_seconds * 1000), metrics=metrics,
        )  # fmt: skip
        tasks["arbitrage"] = asyncio.create_task(watch.run(stop))


def risk_api_router(
    s: Settings, valuation: PortfolioValuation, store: MarketStore, cache: Cache
) -> APIRouter:
    """``/api/v1/risk``: the tenant's risk over stored closes, and the breakers' states."""
    from cryptodesk.api.routes.risk import risk_router
    from cryptodesk.services.circuit_breakers import BreakerStates
    from cryptodesk.services.risk_service import RiskService

    service = RiskService(valuation, store, exchanges=s.exchanges, currency=s.report_currency)
    return risk_router(service, BreakerStates(cache, exchanges=s.exchanges, symbols=s.symbols))
