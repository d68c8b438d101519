"""One ccxt exchange as cryptodesk uses it: the client, its markets, the guard
every request goes through, and the reconnect and bad-payload policy that the
streams in ``ccxt_source`` share (see that module for what each adds to ccxt)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import aiohttp
import ccxt.async_support as ccxt_async  # type: ignore[import-untyped]
import ccxt.pro as ccxt_pro  # type: ignore[import-untyped]
import structlog
from prometheus_client import CollectorRegistry

from cryptodesk.adapters.exchanges.base import UnknownExchangeError, UnknownSymbolError
from cryptodesk.adapters.exchanges.breaker import CircuitOpenError
from cryptodesk.adapters.exchanges.ccxt_mapping import (
    SIGNIFICANT_DIGITS,
    PayloadError,
    map_market,
)
from cryptodesk.adapters.exchanges.ccxt_metrics import CcxtMetrics
from cryptodesk.adapters.exchanges.ccxt_quirks import (
    BOOK_CHECKS,
    OPTIONS,
    TRADE_ID_KEYS,
    TRADE_REST,
    TradeRest,
    rebase,
)
from cryptodesk.adapters.exchanges.ccxt_trades import TradeTape, by_time, by_time_then_id
from cryptodesk.adapters.exchanges.limiter import RateLimitedError
from cryptodesk.domain.backoff import backoff_delays
from cryptodesk.domain.market import Market
from cryptodesk.domain.timeutil import now_ms

T = TypeVar("T")
log = structlog.get_logger(__name__)

# A dropped connection, an exchange that is down or rate limiting us, or our own
# breaker or limiter refusing: wait and try again.
TRANSIENT = (ccxt_async.NetworkError, CircuitOpenError, RateLimitedError, aiohttp.ClientError,
              OSError, TimeoutError)  # fmt: skip
# What ccxt raises, or our mapping, when a response is not what the exchange documents.
MALFORMED = (PayloadError, ccxt_async.BadResponse, KeyError, TypeError, IndexError,
              AttributeError, ValueError)  # fmt: skip
_LABEL = re.compile(r"^[A-Za-z0-9_@.:\-]{1,40}$")
INVALID_BOOKS_BEFORE_REBUILD = 3


@runtime_checkable
class CallGuard(Protocol):
    """What the source needs of a rate limiter / circuit breaker (guard.ExchangeGuard)."""

    async def throttle(self, cost: float | None = ...) -> None: ...

    async def call(
        self, factory: Callable[[], Awaitable[T]], *, cost: float = ..., endpoint: str
    ) -> T: ...


class CcxtExchange:
    """``MarketDataSource`` over one ccxt exchange; also the REST side for
    backfill and prefetch (``fetch_ohlcv``, ``fetch_tickers``).

    ``symbols``: what the caller will watch; ``load_markets`` fails naming any
    the exchange does not list. ``api_overrides``: ``{"http": base, "ws": base}``
    replaces scheme and host of every ccxt API URL (tests point it at fakes).
    ``config``: ccxt settings (``apiKey``, ``secret``, ``options``...).
    ``guard``: a limiter/breaker, or a factory taking the ccxt exchange and
    returning one; None leaves ccxt's own limiter in place. ``websocket=False``
    polls REST every ``poll_interval`` seconds even where websockets exist.
    """

    def __init__(
        self,
        exchange_id: str,
        symbols: Sequence[str] = (),
        *,
        api_overrides: dict[str, str] | None = None,
        config: dict[str, Any] | None = None,
        metrics_registry: CollectorRegistry | None = None,
        guard: CallGuard | Callable[[Any], CallGuard] | None = None,
        market_refresh_seconds: float = 86_400.0,
        book_depth: int = 20,
        websocket: bool = True,
        poll_interval: float = 2.0,
        reconnect_initial: float = 0.5,
        reconnect_cap: float = 30.0,
        dedupe_window: int = 10_000,
        backfill_pages: int = 20,
        trade_page: int = 1000,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        if exchange_id in ccxt_pro.exchanges:
            cls = getattr(ccxt_pro, exchange_id)
        elif exchange_id in ccxt_async.exchanges:
            cls = getattr(ccxt_async, exchange_id)  # REST only: every stream is polled
        else:
            raise UnknownExchangeError(
                f"unknown exchange {exchange_id!r}: ccxt has no exchange with that id "
                "(e.g. binance, coinbase, kraken, bitfinex, htx)"
            )
        settings = {"enableRateLimit": True, **(config or {})}
        settings["options"] = {**OPTIONS.get(exchange_id, {}), **(settings.get("options") or {})}
        self._exchange: Any = cls(settings)
        if api_overrides:
            self._exchange.urls["api"] = rebase(self._exchange.urls["api"], api_overrides)
        self._id = exchange_id
        self._symbols = list(symbols)
        self._metrics = CcxtMetrics.of(metrics_registry or CollectorRegistry())
        self._owns_guard = guard is not None and not isinstance(guard, CallGuard)
        self._guard = self._install_guard(guard)
        self._refresh_s = market_refresh_seconds
        self._depth = book_depth
        self._websocket = websocket and exchange_id in ccxt_pro.exchanges
        self._poll_s = poll_interval
        self._backoff = (reconnect_initial, reconnect_cap)
        self._window = dedupe_window
        self._backfill_pages = backfill_pages
        self._trade_page = trade_page
        self._trade_rest = TRADE_REST.get(exchange_id, TradeRest())
        self._trade_id_keys = TRADE_ID_KEYS.get(exchange_id, ())
        # Trades of one millisecond keep the exchange's order: by id where ids count up.
        rising = self._trade_rest.by_id is not None or self._trade_rest.ids_rise
        self._trade_key = by_time_then_id if rising else by_time
        self._clock = clock
        self._markets: dict[str, Market] | None = None
        self._markets_due = 0.0
        self._markets_lock = asyncio.Lock()
        self._refresh: asyncio.Task[None] | None = None
        self._tapes: dict[str, TradeTape] = {}
        self._logged: dict[str, tuple[float, int]] = {}
        self._closed = False
        self._guard_ws_payloads()

    @property
    def exchange(self) -> str:
        return self._id

    @property
    def client(self) -> Any:
        """The ccxt exchange instance underneath."""
        return self._exchange

    # -- markets ----------------------------------------------------------------------
    async def load_markets(self, *, reload: bool = False) -> list[Market]:
        """Markets with their precision and limits: loaded once, then again every
        ``market_refresh_seconds`` (or now with ``reload``)."""
        markets = await self._current_markets(reload=reload)
        missing = [s for s in self._symbols if s not in markets]
        if missing:
            raise UnknownSymbolError(f"{self._id} does not list {', '.join(missing)}")
        return list(markets.values())

    async def _current_markets(self, *, reload: bool = False) -> dict[str, Market]:
        async with self._markets_lock:
            if reload or self._markets is None or time.monotonic() >= self._markets_due:
                try:
                    await self._reload_markets()
                except Exception as exc:
                    if self._markets is None or reload:
                        raise
                    # Yesterday's markets are still good; try again in a minute.
                    self._markets_due = time.monotonic() + 60.0
                    log.warning("market refresh failed, keeping the loaded markets",
                                exchange=self._id, error=brief(exc))  # fmt: skip
            assert self._markets is not None
            return self._markets

    async def _reload_markets(self) -> None:
        ex = self._exchange
        raw = await self._rest("load_markets", lambda: ex.load_markets(True))
        prices = await self._reference_prices()
        markets: dict[str, Market] = {}
        for entry in raw.values():
            if entry.get("spot") is False:  # bitfinex lists perpetuals with its pairs
                continue
            try:
                market = map_market(
                    entry, self._id, precision_mode=ex.precisionMode,
                    reference_price=prices.get(entry.get("symbol")),
                )  # fmt: skip
            except PayloadError as exc:
                self._bad_payload("load_markets", exc)
                continue
            markets[market.symbol] = market
        self._markets = markets
        self._markets_due = time.monotonic() + self._refresh_s

    async def _reference_prices(self) -> dict[str, float]:
        """Last prices, where precision is in significant digits (bitfinex): the
        price step depends on the price. Without them the step is taken at 1.0."""
        ex = self._exchange
        if ex.precisionMode != SIGNIFICANT_DIGITS or not ex.has.get("fetchTickers"):
            return {}
        try:
            tickers = await self._rest("fetch_tickers", lambda: ex.fetch_tickers())
        except Exception as exc:
            log.warning("no prices to size price steps by", exchange=self._id, error=brief(exc))
            return {}
        return {
            symbol: float(t["last"])
            for symbol, t in tickers.items()
            if isinstance(t, dict) and isinstance(t.get("last"), int | float) and t["last"] > 0
        }

    def _refresh_markets_if_due(self) -> None:
        """Called from the streams: a due refresh runs beside them, never blocking one."""
        if time.monotonic() < self._markets_due or (self._refresh and not self._refresh.done()):
            return

        async def refresh() -> None:
            with contextlib.suppress(Exception):  # logged in _current_markets
                await self._current_markets()

        self._refresh = asyncio.create_task(refresh())

    async def _require(self, symbol: str) -> None:
        if symbol not in await self._current_markets():
            raise UnknownSymbolError(f"{self._id} does not list {symbol}")

    def _has_ws(self, method: str) -> bool:
        return self._websocket and bool(self._exchange.has.get(method))

    # -- plumbing ---------------------------------------------------------------------
    async def close(self) -> None:
        self._closed = True
        if self._refresh is not None:
            self._refresh.cancel()
        await self._exchange.close()
        if self._owns_guard and self._guard is not None:
            closing = getattr(self._guard, "close", None)
            if closing is not None:
                await closing()

    async def _rest(self, endpoint: str, factory: Callable[[], Awaitable[T]]) -> T:
        if self._guard is None:
            return await factory()
        # cost 0: ccxt's throttle, which is the guard's, charges each request its
        # endpoint's own weight.
        return await self._guard.call(factory, cost=0.0, endpoint=endpoint)

    def _install_guard(
        self, guard: CallGuard | Callable[[Any], CallGuard] | None
    ) -> CallGuard | None:
        if guard is None:
            return None
        if not isinstance(guard, CallGuard):
            return guard(self._exchange)  # a factory installs the guard it makes
        install = getattr(guard, "install", None)
        if callable(install):
            install(self._exchange)
        else:
            self._exchange.enableRateLimit = True
            self._exchange.throttle = guard.throttle
        return guard

    def _closed_under_us(self) -> bool:
        """ccxt cancels pending watches on ``close``; the caller's own task was not."""
        task = asyncio.current_task()
        return self._closed and task is not None and not task.cancelling()

    def _stopping(self, exc: Exception) -> bool:
        """The failure is ``close`` tearing the connections down: end the stream."""
        return self._closed or isinstance(exc, ccxt_async.ExchangeClosedByUser)

    def _delays(self) -> Iterator[float]:
        return backoff_delays(*self._backoff)

    async def _reconnect(
        self, exc: Exception, stream: str, symbol: str, delays: Iterator[float] | None
    ) -> Iterator[float]:
        """Wait before watching again after a dropped connection; raise anything else."""
        if not isinstance(exc, TRANSIENT):
            raise exc
        delays = delays or self._delays()
        delay = next(delays)
        self._metrics.reconnects.labels(self._id, stream).inc()
        log.warning("websocket stream lost, reconnecting", exchange=self._id, stream=stream,
                    symbol=symbol, error=brief(exc), retry_in=round(delay, 3))  # fmt: skip
        await asyncio.sleep(delay)
        return delays

    async def _poll_failed(
        self, exc: Exception, endpoint: str, delays: Iterator[float] | None
    ) -> Iterator[float] | None:
        if isinstance(exc, MALFORMED) and not isinstance(exc, UnknownSymbolError):
            self._bad_payload(endpoint, exc)
            await asyncio.sleep(self._poll_s)
            return delays
        if not isinstance(exc, TRANSIENT):
            raise exc
        delays = delays or self._delays()
        delay = next(delays)
        log.warning("exchange poll failed, retrying", exchange=self._id, endpoint=endpoint,
                    error=brief(exc), retry_in=round(delay, 3))  # fmt: skip
        await asyncio.sleep(delay)
        return delays

    def _bad_payload(self, endpoint: str, exc: BaseException) -> None:
        self._metrics.bad_payloads.labels(self._id, endpoint).inc()
        # At most one line a second per endpoint: a broken feed must not flood the log.
        now = time.monotonic()
        last, skipped = self._logged.get(endpoint, (0.0, 0))
        if now - last < 1.0:
            self._logged[endpoint] = (last, skipped + 1)
            return
        self._logged[endpoint] = (now, 0)
        log.warning("malformed exchange payload skipped", exchange=self._id,
                    endpoint=endpoint, error=brief(exc), also_skipped=skipped)  # fmt: skip

    def _guard_ws_payloads(self) -> None:
        """Handle every websocket message so that no exception leaves ccxt's handler."""
        ex = self._exchange
        handle, make_client = ex.handle_message, ex.client
        check = BOOK_CHECKS.get(self._id)

        def handle_message(client: Any, message: Any) -> None:
            try:
                if check is None or check(ex, client, message):
                    handle(client, message)
            except Exception as exc:
                self._bad_payload(_ws_endpoint(message), exc)

        def client(url: str) -> Any:
            made = make_client(url)
            if not getattr(made, "_cryptodesk_guarded", False):
                receive = made.handle_message

                def handle_frame(frame: Any) -> None:
                    try:
                        receive(frame)
                    except Exception as exc:  # not gzip (htx) or not JSON
                        self._bad_payload("ws", exc)

                made.handle_message = handle_frame
                made._cryptodesk_guarded = True
            return made

        ex.handle_message = handle_message
        ex.client = client


def _ws_endpoint(message: Any) -> str:
    """``ws:<event>`` from the usual event fields, or ``ws``."""
    if isinstance(message, dict):
        for key in ("e", "event", "channel", "type", "topic", "ch", "stream"):
            value = message.get(key)
            if isinstance(value, str) and _LABEL.match(value):
                return f"ws:{value}"
    return "ws"


def brief(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}"[:300]
