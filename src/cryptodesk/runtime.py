"""The composition root: Settings -> adapters -> services -> roles.

Only this module knows which adapter is plugged in. ``serve`` runs the chosen
roles in one process: ``ingest`` (sources -> bus), ``compute`` (bus -> candles
-> db + cache), ``api`` (HTTP). SIGINT/SIGTERM stop the sources first, let the
consumers drain what is already on the bus, then stop the API and close the
adapters, so nothing in flight is lost on a clean stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import signal
import socket
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import structlog
import uvicorn
from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptodesk import __version__
from cryptodesk.adapters.bus.base import Bus
from cryptodesk.adapters.cache.base import Cache
from cryptodesk.adapters.db import migrate
from cryptodesk.adapters.db.engine import StorageError, create_engine
from cryptodesk.adapters.db.jobs_store import JobRunStore
from cryptodesk.adapters.db.partitions import ensure_partitions
from cryptodesk.adapters.db.signal_store import SqlSignalStore
from cryptodesk.adapters.db.sql_store import SqlMarketStore
from cryptodesk.adapters.exchanges.base import MarketDataSource, UnknownExchangeError
from cryptodesk.api.app import AppSwitch, create_app, create_health_app
from cryptodesk.api.graphql import graphql_router
from cryptodesk.api.routes.backtests import backtests_router
from cryptodesk.api.routes.ledger import ledger_router
from cryptodesk.api.routes.signals import signals_router
from cryptodesk.api.security import AUTHENTICATED
from cryptodesk.api_wiring import api_security, bootstrap_admin, http_options, websocket
from cryptodesk.config import Settings, mask_url
from cryptodesk.domain.backoff import backoff_delays
from cryptodesk.domain.interval import Interval
from cryptodesk.observability.health import HealthRegistry
from cryptodesk.observability.metrics import Metrics
from cryptodesk.portfolio_wiring import build_portfolio, portfolio_job_ids, sheets_writer
from cryptodesk.risk_wiring import risk_api_router, start_risk_compute
from cryptodesk.services.backtests import BacktestJobs
from cryptodesk.services.book_service import BookService
from cryptodesk.services.candle_service import CandleService
from cryptodesk.services.feed_status import FeedStatus
from cryptodesk.services.ingest import FeedDown, MarketIngest
from cryptodesk.services.jobs import list_jobs, prefetched_exchanges
from cryptodesk.services.locked_jobs import LockedJobRunner
from cryptodesk.services.market_queries import MarketQueries
from cryptodesk.services.prefetch import PrefetchScheduler
from cryptodesk.services.reference_prices import CachedPrice
from cryptodesk.services.scheduled_jobs import ScheduledJobs
from cryptodesk.services.scheduler import MaintenanceScheduler
from cryptodesk.services.signal_queries import SignalQueries
from cryptodesk.services.signal_rules import RuleBook
from cryptodesk.services.signal_service import SignalService
from cryptodesk.services.sources import ExchangeFetcher, make_fetcher
from cryptodesk.trading_wiring import (
    internal_book_reader,
    order_service,
    orders_api_router,
    start_trading_compute,
)
from cryptodesk.wiring import (
    StartupError,
    make_bus,
    make_cache,
    make_job_lock,
    make_reference_prices,
    make_source,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")
ROLES = ("api", "ingest", "compute", "scheduler")
STARTUP_PING_SECONDS = 10.0
# WAIT_FOR_DEPENDENCIES: retries start this far apart and back off to the cap.
WAIT_INITIAL_SECONDS = 0.5
WAIT_CAP_SECONDS = 30.0
STARTING = "startup"
GC_THRESHOLDS = (10_000, 20, 50)  # CPython 3.11 defaults to (700, 10, 10)
# Tasks that stop once the sources stopped and what they published is handled.
CONSUMER_TASKS = ("compute", "signals", "books", "scheduler", "prefetch", "prices", "ws")
EVENT_LOOPS = ("auto", "uvloop", "asyncio")


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for a long-running, allocation-heavy process.

    Start-up leaves a few hundred thousand long-lived objects (FastAPI, SQLAlchemy,
    numpy, pydantic models) that every full collection would walk again; freezing
    them moves them out of the collector's sight, and fewer young collections cut
    the rest. Measured on the embedded pipeline: 39,000 -> 58,000 trades/s.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def event_loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop ``serve`` runs on: uvloop for ``uvloop``, and for ``auto`` when it
    is installed (uvicorn[standard] brings it); the standard library's (None) for
    ``asyncio``. uvloop serves the API's small reads about a quarter faster.
    """
    choice = name.strip().lower()
    if choice not in EVENT_LOOPS:
        raise StartupError(f"unknown event loop {name!r}; choose from {', '.join(EVENT_LOOPS)}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise StartupError("event loop uvloop is not installed") from None
        return None
    return uvloop.new_event_loop


def parse_roles(text: str) -> frozenset[str]:
    if text.strip() == "all":
        return frozenset(ROLES)
    roles = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = roles - set(ROLES)
    if unknown or not roles:
        raise StartupError(
            f"unknown role(s) {', '.join(sorted(unknown)) or '(none)'}; "
            f"choose from all, {', '.join(ROLES)}"
        )
    return roles


async def reachable(setting: str, url: str, ping: Callable[[], Awaitable[object]]) -> None:
    """Ping a dependency at start-up, or fail with one line naming the setting."""
    try:
        async with asyncio.timeout(STARTUP_PING_SECONDS):
            await ping()
    except Exception as exc:
        cause = str(exc) or type(exc).__name__
        raise StartupError(f"{setting}: cannot reach {mask_url(url)}: {cause}") from None


class _Closeable(Protocol):
    async def close(self) -> None: ...


C = TypeVar("C", bound=_Closeable)


async def _opened(adapter: C, setting: str, url: str, method: str) -> C:
    """``adapter`` after its ``method`` (ping or start) worked; closed if it did not."""
    try:
        await reachable(setting, url, getattr(adapter, method))
    except StartupError:
        with contextlib.suppress(Exception):
            await adapter.close()
        raise
    return adapter


def check_data_dir(settings: Settings) -> None:
    """Create DATA_DIR and prove it is writable, or fail with one clear line."""
    path = Path(settings.data_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-probe"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise StartupError(
            f"CRYPTODESK_DATA_DIR {str(path)!r} is not a writable directory: {exc.strerror or exc}"
        ) from None


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(f"port {port} on {host} is already in use") from None
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def engine_for(url: str, settings: Settings) -> AsyncEngine:
    return create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        connect_timeout=settings.db_connect_timeout,
        statement_timeout_ms=settings.db_statement_timeout_ms,
    )


async def open_store(
    settings: Settings, *, migrate_first: bool, url: str | None = None
) -> SqlMarketStore:
    """The store at ``url`` (default DATABASE_URL), reachable, or a one-line StartupError."""
    setting = "CRYPTODESK_DATABASE_READ_URL" if url else "CRYPTODESK_DATABASE_URL"
    url = url or settings.database_url
    store: SqlMarketStore | None = None
    try:
        if migrate_first:
            await asyncio.to_thread(migrate.upgrade, url)
        store = SqlMarketStore(engine_for(url, settings))
        await store.ping()
    except StorageError as exc:
        if store is not None:
            with contextlib.suppress(Exception):
                await store.close()
        # An embedded database is named by its file; a server by the setting.
        named = str(exc) if url.startswith("sqlite") else f"{setting}: {exc}"
        raise StartupError(named) from None
    return store


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the runtime owns shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass
class Runtime:
    settings: Settings
    roles: frozenset[str]
    metrics: Metrics = field(default_factory=Metrics)
    stop_sources: asyncio.Event = field(default_factory=asyncio.Event)
    stop_consumers: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self, sock: socket.socket | None) -> int:
        """Run until a signal or a fatal error; return the process exit code."""
        s = self.settings
        health = HealthRegistry(self.metrics)
        health.set_status(STARTING, False, "connecting to the database, cache and bus")
        if s.is_embedded_db:
            check_data_dir(s)
        tasks: dict[str, asyncio.Task[None]] = {}
        closing: list[Callable[[], Awaitable[None]]] = []
        ingests: list[MarketIngest] = []
        server: _Server | None = None
        exit_code = 0
        gate = AppSwitch(create_health_app(health, self.metrics, version=__version__))

        def start_http() -> _Server | None:
            if sock is None:
                return None
            config = uvicorn.Config(
                gate, log_config=None, access_log=False, lifespan="off",
                timeout_graceful_shutdown=5,
                # Per-message deflate costs tens of KB per WebSocket client.
                ws_per_message_deflate=False, ws_max_size=1 << 20, ws="websockets-sansio",
            )  # fmt: skip
            http = _Server(config)
            tasks["api"] = asyncio.create_task(http.serve(sockets=[sock]))
            host, port = sock.getsockname()[:2]
            log.info("serving", url=f"http://{host}:{port}", docs=f"http://{host}:{port}/docs")
            return http

        if s.wait_for_dependencies:
            # HTTP first: while dependencies are being reached, probes get /readyz
            # saying which one is missing and why, not a refused connection.
            server = start_http()
        try:
            deps = await self._connect(health, closing)
            if deps is None:  # stopped while waiting for a dependency
                return 0
            store, cache, bus = deps
            health.register("database", store.ping)
            health.register("cache", cache.ping, required=False)  # reads fall back to the db
            health.register("bus", bus.ping)
            intervals = [Interval.parse(i) for i in s.intervals]
            # What this process's feeds and prefetch jobs report; the reads mark
            # what they serve stale from it.
            upstream = FeedStatus()
            # Sources first: a bad exchange setting or replay file stops the start
            # before anything runs.
            sources: list[MarketDataSource] = []
            if "ingest" in self.roles:
                for exchange in s.exchanges:
                    last = await store.last_trade_ts(exchange)
                    try:
                        source = make_source(
                            exchange, s, last_ts=last, metrics_registry=self.metrics.registry
                        )
                    except UnknownExchangeError as exc:
                        _feed_not_started(health, exchange, exc)
                        continue
                    sources.append(source)
            tune_gc()
            if "compute" in self.roles:
                candles = CandleService(
                    bus, store, cache, self.metrics, health,
                    exchanges=s.exchanges, symbols=s.symbols, intervals=intervals,
                    grace_ms=s.candle_grace_ms, batch_size=s.ingest_batch_size,
                    recent_candles=s.cache_recent_candles,
                )  # fmt: skip
                await candles.recover()
                # After the candle recovery (it stores candles it never publishes),
                # before any candle is consumed: the runner catches up from the store.
                signal_store = SqlSignalStore(store.engine)
                closing.insert(0, signal_store.close)
                signal_runner = SignalService(
                    bus, cache, store, signal_store, RuleBook(signal_store, s.signal_rules),
                    self.metrics, health,
                    exchanges=s.exchanges, symbols=s.symbols, intervals=intervals,
                    refresh_seconds=s.signal_rules_refresh_seconds,
                )  # fmt: skip
                await signal_runner.recover()
                tasks["compute"] = asyncio.create_task(candles.run(self.stop_consumers))
                tasks["signals"] = asyncio.create_task(signal_runner.run(self.stop_consumers))
                books = BookService(bus, cache, self.metrics)
                tasks["books"] = asyncio.create_task(books.run(self.stop_consumers))
                await start_risk_compute(s, bus, cache, store, self.metrics,
                                         self.stop_consumers, tasks)  # fmt: skip
                start_trading_compute(s, store.engine, cache, bus, self.stop_consumers, tasks)
            if "scheduler" in self.roles:
                engine = store.engine
                jobs = {"partitions": lambda: ensure_partitions(engine)}
                scheduler = MaintenanceScheduler(jobs, health)
                tasks["scheduler"] = asyncio.create_task(scheduler.run(self.stop_consumers))
                prices = make_reference_prices(s, cache, metrics_registry=self.metrics.registry)
                if prices is not None:
                    closing.insert(0, prices.close)
                    refresh = MaintenanceScheduler(
                        {"prices:coingecko": prices.refresh}, health,
                        interval=s.coingecko_refresh_seconds, retry_initial=1.0,
                        retry_cap=s.coingecko_refresh_seconds,
                        component="prices:coingecko", required=False,
                    )  # fmt: skip
                    tasks["prices"] = asyncio.create_task(refresh.run(self.stop_consumers))
                prefetch = self._prefetch(store, cache, health, intervals, upstream)
                if prefetch is not None:
                    closing.insert(0, prefetch.close)
                    tasks["prefetch"] = asyncio.create_task(prefetch.run(self.stop_consumers))
                portfolio = build_portfolio(s, engine, cache, store)
                closing.insert(0, portfolio.close)
                if portfolio_jobs := portfolio.jobs(sheets_writer(s)):
                    runner = LockedJobRunner(
                        JobRunStore(engine), make_job_lock(s, engine),
                        lock_ttl=s.prefetch_lock_ttl_seconds,
                    )  # fmt: skip
                    scheduled = ScheduledJobs(portfolio_jobs, runner)
                    tasks["portfolio-jobs"] = asyncio.create_task(
                        scheduled.run(self.stop_consumers)
                    )
            for source in sources:
                ingest = MarketIngest(
                    source, bus, cache, self.metrics,
                    symbols=s.symbols, stale_after=s.feed_stale_seconds, status=upstream,
                )  # fmt: skip
                ingests.append(ingest)
                # A failing feed restarts itself; the others and the API go on.
                health.register(f"feed:{source.exchange}", ingest.check, required=False)
                tasks[f"ingest:{source.exchange}"] = asyncio.create_task(ingest.run_forever())
            # Every role answers HTTP (/healthz, /readyz, /metrics for probes and
            # scraping, and the read API); only "api" processes go behind the balancer.
            if sock is not None:
                reads = store
                if s.database_read_url:  # analytics reads go to the replica
                    reads = await open_store(s, migrate_first=False, url=s.database_read_url)
                    closing.insert(0, reads.close)
                queries = MarketQueries(
                    cache, reads, self.metrics,
                    exchanges=s.exchanges, symbols=s.symbols, intervals=s.intervals,
                    cache_recent_candles=s.cache_recent_candles,
                    status=upstream, stale_after=s.feed_stale_seconds,
                )  # fmt: skip
                backtest_jobs = BacktestJobs(reads)
                closing.insert(0, backtest_jobs.close)
                job_runs = JobRunStore(reads.engine)
                # Listings read the replica; the rule set is read and written on the primary.
                rule_store = SqlSignalStore(store.engine)
                signal_reads = SqlSignalStore(reads.engine)
                closing.insert(0, rule_store.close)
                signal_queries = SignalQueries(
                    queries, reads, signal_reads, RuleBook(rule_store, s.signal_rules),
                    exchanges=s.exchanges, symbols=s.symbols, intervals=s.intervals,
                )  # fmt: skip
                # The ledger is written on the primary; past closes read the replica.
                api_portfolio = build_portfolio(s, store.engine, cache, reads)
                closing.insert(0, api_portfolio.close)
                security = api_security(s, store.engine)
                closing.insert(0, security.close)
                await bootstrap_admin(security.auth.service, s.bootstrap_admin_email)
                # One order service for the REST routes and the WebSocket book snapshots.
                api_orders = order_service(s, store.engine, cache, bus,
                                           rate_limiter=security.limiter)  # fmt: skip
                closing.insert(0, api_orders.close)  # its exchange sessions
                ws_routes: list[APIRouter] = []
                if "api" in self.roles:  # WebSocket clients go behind the balancer too
                    ws_router, ws_feed = websocket(
                        s, bus, queries, signal_queries, api_portfolio, security.auth,
                        internal_books=internal_book_reader(api_orders),
                    )  # fmt: skip
                    ws_routes.append(ws_router)
                    tasks["ws"] = asyncio.create_task(ws_feed.run(self.stop_consumers))
                gate.app = create_app(
                    queries, self.metrics, health, version=__version__,
                    jobs=lambda: list_jobs(job_runs, s.exchanges, portfolio_job_ids(s)),
                    reference_prices=_reference_prices_router(s, cache),
                    routers=[
                        backtests_router(backtest_jobs), signals_router(signal_queries),
                        ledger_router(api_portfolio.ledger), api_portfolio.router(),
                        risk_api_router(s, api_portfolio.valuation, reads, cache),
                        orders_api_router(s, store.engine, cache, bus, service=api_orders),
                        graphql_router(api_portfolio.ledger, api_portfolio.valuation,
                                       signal_queries, AUTHENTICATED),
                        *ws_routes,
                    ],
                    auth=security.auth, rate_limiter=security.limiter, rate_tiers=security.tiers,
                    trusted_proxies=s.trusted_proxies, http=http_options(s),
                )  # fmt: skip
                if server is None:
                    server = start_http()
            health.forget(STARTING)
            log.info("started", roles=sorted(self.roles))
            exit_code = await self._wait(tasks)
        finally:
            await self._shutdown(tasks, ingests, server)
            for close in closing:
                await close()
        return exit_code

    def _prefetch(
        self,
        store: SqlMarketStore,
        cache: Cache,
        health: HealthRegistry,
        intervals: Sequence[Interval],
        upstream: FeedStatus,
    ) -> PrefetchScheduler | None:
        """The prefetch jobs of every configured exchange with REST history (none
        for sim and replay); None when there is none."""
        s = self.settings
        fetchers: list[ExchangeFetcher] = []
        for exchange in prefetched_exchanges(s.exchanges):
            try:
                fetchers.append(make_fetcher(exchange, s, metrics_registry=self.metrics.registry))
            except UnknownExchangeError as exc:
                if "ingest" not in self.roles:  # ingest reported it already
                    _feed_not_started(health, exchange, exc)
        if not fetchers:
            return None
        for fetcher in fetchers:
            health.register(
                f"prefetch:{fetcher.exchange}", upstream.prefetch_check(fetcher.exchange),
                required=False,
            )  # fmt: skip
        return PrefetchScheduler(
            fetchers, store, cache, JobRunStore(store.engine), make_job_lock(s, store.engine),
            symbols=s.symbols, intervals=intervals,
            candles_every=s.prefetch_candles_seconds, tickers_every=s.prefetch_tickers_seconds,
            markets_every=s.prefetch_markets_seconds, jitter_fraction=s.prefetch_jitter,
            lookback_candles=s.prefetch_lookback_candles, lock_ttl=s.prefetch_lock_ttl_seconds,
            status=upstream,
        )  # fmt: skip

    async def _connect(
        self, health: HealthRegistry, closing: list[Callable[[], Awaitable[None]]]
    ) -> tuple[SqlMarketStore, Cache, Bus] | None:
        """Database, cache and bus, each reachable; None when stopped while waiting.

        Each one opened is put first in ``closing``, so they close in reverse.
        """
        s = self.settings

        async def database() -> SqlMarketStore:
            return await open_store(s, migrate_first=s.is_embedded_db)

        async def cache() -> Cache:
            return await _opened(make_cache(s), "CRYPTODESK_CACHE_URL", s.cache_url, "ping")

        async def bus() -> Bus:
            return await _opened(make_bus(s), "CRYPTODESK_BUS_URL", s.bus_url, "start")

        store = await self._dependency(health, "database", database)
        if store is None:
            return None
        closing.insert(0, store.close)
        the_cache = await self._dependency(health, "cache", cache)
        if the_cache is None:
            return None
        closing.insert(0, the_cache.close)
        the_bus = await self._dependency(health, "bus", bus)
        if the_bus is None:
            return None
        closing.insert(0, the_bus.close)
        return store, the_cache, the_bus

    async def _dependency(
        self, health: HealthRegistry, name: str, connect: Callable[[], Awaitable[T]]
    ) -> T | None:
        """``connect()``; with WAIT_FOR_DEPENDENCIES, retried with backoff until it
        works (None if a stop is requested first), else its StartupError."""
        delays = backoff_delays(WAIT_INITIAL_SECONDS, WAIT_CAP_SECONDS)
        while True:
            try:
                value = await connect()
            except StartupError as exc:
                if not self.settings.wait_for_dependencies:
                    raise
                delay = next(delays)
                health.set_status(name, False, f"waiting: {exc}")
                log.warning(
                    "dependency unreachable, retrying",
                    dependency=name, error=str(exc), retry_in=round(delay, 2),
                )  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop_sources.wait(), delay)
                if self.stop_sources.is_set():
                    return None
                continue
            health.forget(name)
            return value

    async def _wait(self, tasks: dict[str, asyncio.Task[None]]) -> int:
        stopper = asyncio.create_task(self.stop_sources.wait())
        done, _ = await asyncio.wait(
            [stopper, *tasks.values()], return_when=asyncio.FIRST_COMPLETED
        )
        stopper.cancel()
        for name, task in tasks.items():
            if task in done and not task.cancelled() and task.exception() is not None:
                log.error("component failed", component=name, error=repr(task.exception()))
                return 1
        return 0

    async def _shutdown(
        self,
        tasks: dict[str, asyncio.Task[None]],
        ingests: Sequence[MarketIngest],
        server: _Server | None,
    ) -> None:
        if not tasks:  # failed before anything ran: the caller prints one line
            return
        timeout = self.settings.shutdown_timeout
        log.info("shutting down")
        for ingest in ingests:
            await ingest.close()
        await _settle([t for n, t in tasks.items() if n.startswith("ingest:")], timeout)
        self.stop_consumers.set()
        await _settle([t for n, t in tasks.items() if n in CONSUMER_TASKS], timeout)
        if server is not None:
            server.should_exit = True
            await _settle([tasks["api"]], timeout)
        log.info("stopped", published_trades=sum(i.published_trades for i in ingests))

    def request_stop(self) -> None:
        self.stop_sources.set()


def _reference_prices_router(s: Settings, cache: Cache) -> APIRouter | None:
    """Cached CoinGecko prices; stale once three refreshes in a row were missed."""
    if not s.coingecko_assets:
        return None
    from cryptodesk.api.routes.prices import reference_prices_router
    from cryptodesk.services.reference_prices import parse_asset_map, read_latest

    async def read(asset: str) -> CachedPrice | None:
        return await read_latest(
            cache, asset, vs_currency=s.coingecko_vs_currency, source="coingecko"
        )

    return reference_prices_router(
        read, list(parse_asset_map(s.coingecko_assets)),
        stale_after_ms=int(3 * s.coingecko_refresh_seconds * 1000),
    )  # fmt: skip


def _feed_not_started(health: HealthRegistry, exchange: str, exc: Exception) -> None:
    """A feed that cannot exist (an exchange id nobody knows): said once in the log
    and always in /readyz, while the other feeds and the API run on."""
    reason = str(exc)
    log.error("feed not started", exchange=exchange, error=reason)

    async def check() -> None:
        raise FeedDown(reason)

    health.register(f"feed:{exchange}", check, required=False)


async def _settle(tasks: list[asyncio.Task[None]], timeout: float) -> None:
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        log.warning("component did not stop in time, cancelling", task=task.get_name())
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def serve(settings: Settings, roles: frozenset[str]) -> int:
    """Entry point of ``cryptodesk serve``; raises StartupError for user mistakes."""
    sock = bind_socket(settings.host, settings.port)
    runtime = Runtime(settings, roles)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, runtime.request_stop)
    try:
        return await runtime.serve(sock)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if sock is not None:
            sock.close()
