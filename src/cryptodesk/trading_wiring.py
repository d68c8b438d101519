"""The order services built from Settings: the order service (internal, paper and live
venues), its ``/api/v1`` routes (orders, fills, positions, kill switch, paper
deposits) and the books the WebSocket ``book:internal:SYMBOL`` channels serve."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptodesk.adapters.bus.base import Bus
from cryptodesk.adapters.cache.base import Cache
from cryptodesk.config import Settings

if TYPE_CHECKING:
    from cryptodesk.adapters.ratelimit.base import RateLimiter
    from cryptodesk.services.live_orders import Gateway, LiveOrders
    from cryptodesk.services.live_watch import OrderStream, StreamFactory
    from cryptodesk.services.order_service import OrderService, UpdateHook
    from cryptodesk.services.ws_channels import InternalBooks


def order_service(
    s: Settings, engine: AsyncEngine, cache: Cache, bus: Bus | None, *, live: bool = True,
    rate_limiter: RateLimiter | None = None,
) -> OrderService:  # fmt: skip
    """The tenants' orders; the log is written on the primary ``engine``. Order
    changes and fills reach the tenant's WebSocket ``orders`` subscribers in every API
    process through the bus, and so do the books they changed (``book:internal:SYM``);
    with ``bus`` None they are not published (as from the command line). ``live``: with
    the live venues (``live_orders``). ``rate_limiter`` (the API's): with a Redis cache,
    the accounts' submit rates are counted there, once for every API process."""
    from cryptodesk.adapters.db.order_log_store import SqlOrderLog
    from cryptodesk.services.circuit_breakers import BreakerStates
    from cryptodesk.services.order_service import OrderService, default_instruments, halted_by
    from cryptodesk.services.paper_feed import cached_books

    breakers = BreakerStates(cache, exchanges=s.exchanges, symbols=s.symbols)
    instruments = default_instruments(s.symbols, grids=s.instrument_grids())
    service = OrderService(SqlOrderLog(engine), instruments,
                           halted=halted_by(breakers, s.exchanges),
                           paper=s.paper_venue_exchanges(), books=cached_books(cache),
                           paper_max_age_ms=s.paper_book_max_age_ms,
                           venue_fees=s.fee_schedule(), limits=s.risk_limits(),
                           self_trade=s.self_trade_prevention,
                           rate_limiter=rate_limiter if _shared(s) else None,
                           live=live_orders(s, engine, cache) if live else None)  # fmt: skip
    if bus is not None:
        service.on_updates = _publisher(bus, service, s.websocket_book_depth)
    return service


def _shared(s: Settings) -> bool:
    """Whether the API's rate limiter is shared by every process (a Redis cache)."""
    return s.cache_url.startswith(("redis://", "rediss://"))


def live_orders(s: Settings, engine: AsyncEngine, cache: Cache) -> LiveOrders:
    """Orders on the tenants' ledger exchange accounts (``live:EXCHANGE``): ccxt at the
    exchange's configured host, every call through the exchange's guard; the account
    sync's clients give their fills' ledger entries. ccxt is imported in a worker
    thread on the first live order: loading it takes seconds, which must not stall
    the event loop."""
    from cryptodesk.portfolio_wiring import account_clients, ledger_service
    from cryptodesk.services.live_orders import LiveOrders
    from cryptodesk.services.paper_feed import cached_books

    async def gateway(exchange: str, credentials: Any, account: str) -> Gateway:
        orders = await asyncio.to_thread(
            importlib.import_module, "cryptodesk.adapters.exchanges.ccxt_orders"
        )
        from cryptodesk.adapters.exchanges.guard import ExchangeGuard

        config = s.exchange_config.get(exchange)
        http_url = config.http_url if config is not None and config.http_url else None

        def guard(ex: Any) -> ExchangeGuard:
            return ExchangeGuard.for_exchange(
                ex, failure_threshold=s.exchange_breaker_failures,
                cool_down=s.exchange_breaker_cooldown_seconds,
                max_wait=s.exchange_max_wait_seconds,
            )  # fmt: skip

        made: Gateway = orders.CcxtOrders(exchange, credentials, account=account,
                                          http_url=http_url, guard=guard)  # fmt: skip
        return made

    books = cached_books(cache)
    return LiveOrders(ledger_service(s, engine), gateway, account_clients(s), books=books,
                      book_max_age_ms=s.paper_book_max_age_ms)  # fmt: skip


def _publisher(bus: Bus, service: OrderService, depth: int) -> UpdateHook:
    """Order changes and fills to the tenant's WebSocket ``orders`` channel, then the
    ``depth`` levels of each internal venue book they touched to ``book:internal:SYM``,
    via the bus. The service calls it holding the tenant's lock, after the command's
    records are durable: the books are read from memory (``book_now``), at once, so they
    are the state this command left."""
    from cryptodesk.services.ws_feed import publish_internal_book, publish_tenant_event

    async def publish(tenant: str, updates: Sequence[dict[str, Any]]) -> None:
        books = [service.book_now(tenant, symbol, depth) for symbol in _touched(updates)]
        for update in updates:
            await publish_tenant_event(bus, tenant, "orders", update)
        for book in books:
            await publish_internal_book(bus, tenant, book)

    return publish


def _touched(updates: Sequence[Mapping[str, Any]]) -> list[str]:
    """The symbols whose internal venue book the updates' orders and fills changed, in
    order of first mention; a rejected order (no order id) never reached a book."""
    symbols: dict[str, None] = {}
    for update in updates:
        if update.get("venue", "internal") == "internal" and update.get("order_id"):
            symbols.setdefault(update["symbol"], None)
    return list(symbols)


def internal_book_reader(service: OrderService) -> InternalBooks:
    """The WebSocket hub's snapshot of a tenant's internal book: ``book`` catches the
    tenant up with the stored log (under its lock), then ``book_now`` adds the engine's
    sequence; nothing runs between the two (no await), so they describe one state."""

    async def read(tenant: str, symbol: str, depth: int) -> Mapping[str, Any]:
        await service.book(tenant, symbol, depth)
        return service.book_now(tenant, symbol, depth)

    return read


def orders_api_router(
    s: Settings, engine: AsyncEngine, cache: Cache, bus: Bus, *,
    service: OrderService | None = None,
) -> APIRouter:  # fmt: skip
    """``/api/v1`` orders, fills, positions, kill switch and paper deposits, over
    ``service`` (None: a new one)."""
    from cryptodesk.api.routes.orders import orders_router

    return orders_router(service or order_service(s, engine, cache, bus))


def start_trading_compute(
    s: Settings, engine: AsyncEngine, cache: Cache, bus: Bus, stop: asyncio.Event,
    tasks: dict[str, asyncio.Task[None]],
) -> None:  # fmt: skip
    """The compute role's trading, over one order service: the configured strategies'
    signals traded (if any), resting paper orders filled from the live books (if a
    paper venue is offered), and live orders kept in step with their exchanges."""
    from cryptodesk.services.live_watch import LiveWatch
    from cryptodesk.services.paper_feed import PaperFeed
    from cryptodesk.services.signal_trader import SignalTrader

    service = order_service(s, engine, cache, bus)
    if s.trading_strategies:
        trader = SignalTrader(bus, service, s.trading_strategies)
        tasks["signal-trader"] = asyncio.create_task(trader.run(stop))
    if s.paper_venue_exchanges():
        tasks["paper-feed"] = asyncio.create_task(PaperFeed(bus, service).run(stop))
    watch = LiveWatch(service, poll_seconds=s.live_poll_seconds, streams=_order_streams(s))
    tasks["live-watch"] = asyncio.create_task(watch.run(stop))


def _order_streams(s: Settings) -> StreamFactory:
    """An exchange account's pushed order updates (ccxt.pro), at the exchange's
    configured hosts; ccxt is imported in a worker thread (seconds of work)."""

    async def make(exchange: str, credentials: Any, account: str) -> OrderStream:
        module = await asyncio.to_thread(
            importlib.import_module, "cryptodesk.adapters.exchanges.ccxt_order_stream"
        )
        config = s.exchange_config.get(exchange)
        stream: OrderStream = module.CcxtOrderStream(
            exchange, credentials, account=account,
            http_url=config.http_url if config is not None and config.http_url else None,
            ws_url=config.ws_url if config is not None and config.ws_url else None,
        )  # fmt: skip
        return stream

    return make
