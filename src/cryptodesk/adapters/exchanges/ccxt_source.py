"""Live market data from any ccxt exchange: ccxt.pro websockets where the
exchange has them, REST polling where it does not, normalised to our types.

What this adds to ccxt, and why:
- Reconnects. When a socket drops, ccxt.pro rejects the pending ``watch_*``
  with a NetworkError and dials again on the next call. We wait a backoff with
  full jitter first, so many feeds do not return in lockstep.
- Trade gaps. Trades made while the socket was down never arrive on it. On the
  first live batch after a reconnect we fetch them over REST, from the newest
  trade we handed out, and merge them in, deduplicated by trade id (the last
  ``dedupe_window`` ids per symbol). Exchanges that number trades consecutively
  (binance) also say exactly how many REST could not serve.
- Book resyncs. ccxt.pro keeps each local book from deltas and checks their
  sequence; for binance's diff stream it checks each event's ``U`` against the
  book's last ``u`` (``pu`` on futures), and on a gap drops the book and its
  subscription and raises ChecksumError (a checksum mismatch on exchanges that
  send checksums raises the same). It rebuilds only if the caller watches
  again: the next call resubscribes, buffers deltas, fetches a REST snapshot
  and replays the buffer onto it. We watch again at once and count the
  resync; a book that keeps failing our own checks (crossed or out of order,
  three times in a row) is unsubscribed and rebuilt the same way.
- Bad payloads. An exception inside ccxt's message handler stops its receive
  loop for good (the callback never reschedules itself), so every message is
  handled under a guard that logs, counts and skips it. A ccxt structure that
  cannot become a domain value is counted and skipped too.
- Rate limits. An optional guard (``guard.ExchangeGuard``) becomes ccxt's
  throttle, so every request ccxt makes, ours and its own snapshot fetches,
  pays its endpoint's weight; our REST calls also run inside ``guard.call``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import aiohttp
import ccxt.async_support as ccxt_async  # type: ignore[import-untyped]
import ccxt.pro as ccxt_pro  # type: ignore[import-untyped]
import structlog
from prometheus_client import CollectorRegistry

from cryptodesk.adapters.exchanges.breaker import CircuitOpenError
from cryptodesk.adapters.exchanges.ccxt_mapping import (
    SIGNIFICANT_DIGITS,
    PayloadError,
    map_market,
    map_ohlcv,
    map_order_book,
    map_ticker,
    map_trade,
)
from cryptodesk.adapters.exchanges.ccxt_metrics import CcxtMetrics
from cryptodesk.adapters.exchanges.ccxt_quirks import OPTIONS, TRADE_REST, TradeRest, rebase
from cryptodesk.adapters.exchanges.ccxt_trades import TradeTape, by_time, by_time_then_id
from cryptodesk.adapters.exchanges.limiter import RateLimitedError
from cryptodesk.domain.backoff import backoff_delays
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.market import Candle, Market, OrderBook, Ticker, Trade
from cryptodesk.domain.timeutil import now_ms

__all__ = ["CcxtMetrics", "CcxtSource", "UnknownExchangeError", "UnknownSymbolError"]

T = TypeVar("T")
log = structlog.get_logger(__name__)

# A dropped connection, an exchange that is down or rate limiting us, or our own
# breaker or limiter refusing: wait and try again.
_TRANSIENT = (ccxt_async.NetworkError, CircuitOpenError, RateLimitedError, aiohttp.ClientError,
              OSError, TimeoutError)  # fmt: skip
# What ccxt raises, or our mapping, when a response is not what the exchange documents.
_MALFORMED = (PayloadError, ccxt_async.BadResponse, KeyError, TypeError, IndexError,
              AttributeError, ValueError)  # fmt: skip
_LABEL = re.compile(r"^[A-Za-z0-9_@.:\-]{1,40}$")
_INVALID_BOOKS_BEFORE_REBUILD = 3


class UnknownExchangeError(ValueError):
    """No ccxt exchange has this id; the message names it."""


class UnknownSymbolError(ValueError):
    """The exchange does not list this symbol; the message names both."""


@runtime_checkable
class CallGuard(Protocol):
    """What the source needs of a rate limiter / circuit breaker (guard.ExchangeGuard)."""

    async def throttle(self, cost: float | None = ...) -> None: ...

    async def call(
        self, factory: Callable[[], Awaitable[T]], *, cost: float = ..., endpoint: str
    ) -> T: ...


class CcxtSource:
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
        # Trades of one millisecond keep the exchange's order: by id where ids count up.
        self._trade_key = by_time_then_id if self._trade_rest.by_id else by_time
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
                                exchange=self._id, error=_brief(exc))  # fmt: skip
            assert self._markets is not None
            return self._markets

    async def _reload_markets(self) -> None:
        ex = self._exchange
        raw = await self._rest("load_markets", lambda: ex.load_markets(True))
        prices = await self._reference_prices()
        markets: dict[str, Market] = {}
        for entry in raw.values():
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
            log.warning("no prices to size price steps by", exchange=self._id, error=_brief(exc))
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

    # -- trades -----------------------------------------------------------------------
    async def watch_trades(self, symbol: str) -> AsyncIterator[list[Trade]]:
        """New trades of ``symbol`` in exchange order, each exactly once (per window)."""
        await self._require(symbol)
        tape = self._tapes.setdefault(symbol, TradeTape(self._window))
        if not self._has_ws("watchTrades"):
            async for batch in self._poll_trades(symbol, tape):
                yield batch
            return
        # A watch restarted by its caller may have missed trades as well.
        gap = tape.last_ts is not None
        delays: Iterator[float] | None = None
        while True:
            self._refresh_markets_if_due()
            try:
                raw = await self._exchange.watch_trades(symbol)
            except asyncio.CancelledError:
                if self._closed_under_us():
                    return
                raise
            except Exception as exc:
                if self._stopping(exc):
                    return
                delays = await self._reconnect(exc, "trades", symbol, delays)
                gap = True
                continue
            delays = None
            trades = self._map_trades(raw, "watch_trades")
            missed: set[str] = set()
            if gap and trades:
                rest = await self._missed_trades(symbol, tape, trades)
                first = self._trade_key(trades[0])
                missed = {t.id for t in rest if self._trade_key(t) < first}
                trades = sorted(rest + trades, key=self._trade_key)  # stable: REST first
                gap = False
            fresh = tape.admit(trades)
            if missed:
                recovered = sum(1 for t in fresh if t.id in missed)
                self._metrics.trades_backfilled.labels(self._id).inc(recovered)
                log.info("trades backfilled after reconnect", exchange=self._id,
                         symbol=symbol, trades=recovered)  # fmt: skip
            if fresh:
                yield fresh

    async def _missed_trades(self, symbol: str, tape: TradeTape, live: list[Trade]) -> list[Trade]:
        """Trades from the newest handed out up to the first live one, over REST.

        A REST failure propagates with the tape untouched: the caller's next
        watch backfills the same gap again. A malformed answer is skipped.
        """
        try:
            return await self._trades_after(symbol, tape, until_ts=live[0].ts, known=live)
        except _MALFORMED as exc:
            self._bad_payload("fetch_trades", exc)
            return []

    async def _trades_after(
        self, symbol: str, tape: TradeTape, *, until_ts: int | None, known: Sequence[Trade] = ()
    ) -> list[Trade]:
        rest = self._trade_rest
        since = tape.last_ts
        found: list[Trade] = []
        for _ in range(self._backfill_pages):
            page = await self._fetch_trade_page(symbol, since, rest.params)
            found.extend(page)
            newest = max((t.ts for t in page), default=None)
            if not rest.since or newest is None or until_ts is None or newest >= until_ts:
                break
            since = newest if since is None or newest > since else since + 1
        else:
            log.warning("trade backfill stopped at its page limit", exchange=self._id,
                        symbol=symbol, pages=self._backfill_pages)  # fmt: skip
        if rest.by_id is not None:
            found += await self._trades_by_id(symbol, tape, [*found, *known], rest.by_id)
        return found

    async def _trades_by_id(
        self, symbol: str, tape: TradeTape, seen: Sequence[Trade], params: dict[str, Any]
    ) -> list[Trade]:
        """The trades between the newest handed out and the oldest newer one seen,
        on an exchange whose trade ids count up by one."""
        try:
            last = int(tape.last_id or "")
            after = [int(t.id) for t in seen if int(t.id) > last]
        except ValueError:
            return []
        if not after or min(after) == last + 1:
            return []
        start, stop = last + 1, min(after)
        found: list[Trade] = []
        if self._exchange.apiKey:
            cursor = start
            for _ in range(self._backfill_pages):
                page = await self._fetch_trade_page(symbol, None, {**params, "fromId": cursor})
                page = [t for t in page if start <= int(t.id) < stop]
                found += page
                if not page or (cursor := max(int(t.id) for t in page) + 1) >= stop:
                    break
        missing = (stop - start) - len({t.id for t in found})
        if missing > 0:
            self._metrics.trades_unrecovered.labels(self._id).inc(missing)
            hint = "" if self._exchange.apiKey else "older trades need an API key"
            log.warning("trades missed and not served by REST", exchange=self._id,
                        symbol=symbol, missing=missing, first_id=start, hint=hint)  # fmt: skip
        return found

    async def _fetch_trade_page(
        self, symbol: str, since: int | None, params: dict[str, Any]
    ) -> list[Trade]:
        ex, page = self._exchange, self._trade_page
        since = since if self._trade_rest.since else None
        raw = await self._rest(
            "fetch_trades", lambda: ex.fetch_trades(symbol, since, page, dict(params))
        )
        return sorted(self._map_trades(raw, "fetch_trades"), key=self._trade_key)

    async def _poll_trades(self, symbol: str, tape: TradeTape) -> AsyncIterator[list[Trade]]:
        delays = None
        while True:
            self._refresh_markets_if_due()
            try:
                page = await self._trades_after(symbol, tape, until_ts=None)
            except Exception as exc:
                if self._stopping(exc):
                    return
                delays = await self._poll_failed(exc, "fetch_trades", delays)
                continue
            delays = None
            fresh = tape.admit(sorted(page, key=self._trade_key))
            if fresh:
                yield fresh
            if len(page) < self._trade_page or not self._trade_rest.since:
                await asyncio.sleep(self._poll_s)

    def _map_trades(self, raw: Iterable[Any], endpoint: str) -> list[Trade]:
        trades: list[Trade] = []
        exchange = self._id
        for entry in raw:
            try:
                trades.append(map_trade(entry, exchange))
            except PayloadError as exc:
                self._bad_payload(endpoint, exc)
        return trades

    # -- order books ------------------------------------------------------------------
    async def watch_order_book(self, symbol: str) -> AsyncIterator[OrderBook]:
        """The best ``book_depth`` levels of ``symbol`` after every change."""
        await self._require(symbol)
        if not self._has_ws("watchOrderBook"):
            async for book in self._poll_order_book(symbol):
                yield book
            return
        delays: Iterator[float] | None = None
        resynced = False  # a second resync before any good book waits a backoff
        invalid = 0  # books in a row that failed our checks
        while True:
            self._refresh_markets_if_due()
            try:
                raw = await self._exchange.watch_order_book(symbol)
            except asyncio.CancelledError:
                if self._closed_under_us():
                    return
                raise
            except ccxt_async.InvalidNonce as exc:  # includes ChecksumError
                delays = await self._resync(symbol, exc, delays, wait=resynced)
                resynced = True
                continue
            except Exception as exc:
                if self._stopping(exc):
                    return
                delays = await self._reconnect(exc, "orderbook", symbol, delays)
                continue
            try:
                book = map_order_book(
                    raw, self._id, symbol, depth=self._depth, now_ms=self._clock()
                )
            except PayloadError as exc:
                self._bad_payload("watch_order_book", exc)
                invalid += 1
                # Some feeds cross for one update while bid and ask move
                # separately; a book that stays crossed or unordered is corrupt.
                if invalid >= _INVALID_BOOKS_BEFORE_REBUILD:
                    invalid = 0
                    await self._drop_book(symbol)
                    delays = await self._resync(symbol, exc, delays, wait=resynced)
                    resynced = True
                continue
            delays, resynced, invalid = None, False, 0
            yield book

    async def _drop_book(self, symbol: str) -> None:
        """Make the next watch subscribe afresh and start from a new snapshot."""
        ex = self._exchange
        if ex.has.get("unWatchOrderBook"):
            try:
                await asyncio.wait_for(ex.un_watch_order_book(symbol), 10.0)
                ex.orderbooks.pop(symbol, None)
                return
            except Exception as exc:
                log.warning("order book unsubscribe failed", exchange=self._id,
                            symbol=symbol, error=_brief(exc))  # fmt: skip
        # Without an unsubscribe, only new connections start clean; the other
        # streams on them reconnect (and backfill) on their own.
        ex.orderbooks.pop(symbol, None)
        await ex.close_ws_clients()

    async def _resync(
        self, symbol: str, exc: Exception, delays: Iterator[float] | None, *, wait: bool
    ) -> Iterator[float] | None:
        self._metrics.book_resyncs.labels(self._id, symbol).inc()
        log.warning("order book out of sync, rebuilding from a snapshot",
                    exchange=self._id, symbol=symbol, error=_brief(exc))  # fmt: skip
        if wait:
            delays = delays or self._delays()
            await asyncio.sleep(next(delays))
        return delays

    async def _poll_order_book(self, symbol: str) -> AsyncIterator[OrderBook]:
        ex, depth = self._exchange, self._depth
        delays = None
        while True:
            self._refresh_markets_if_due()
            try:
                raw = await self._rest(
                    "fetch_order_book", lambda: ex.fetch_order_book(symbol, depth)
                )
                book = map_order_book(raw, self._id, symbol, depth=depth, now_ms=self._clock())
            except Exception as exc:
                if self._stopping(exc):
                    return
                delays = await self._poll_failed(exc, "fetch_order_book", delays)
                continue
            delays = None
            yield book
            await asyncio.sleep(self._poll_s)

    # -- candles ----------------------------------------------------------------------
    async def watch_ohlcv(self, symbol: str, interval: str) -> AsyncIterator[list[Candle]]:
        """Updated candles of ``symbol`` (the open one again on every change)."""
        await self._require(symbol)
        ms = Interval.parse(interval).ms
        if not self._has_ws("watchOHLCV"):
            since: int | None = None
            delays = None
            while True:
                try:
                    candles = await self.fetch_ohlcv(symbol, interval, since=since)
                except Exception as exc:
                    if self._stopping(exc):
                        return
                    delays = await self._poll_failed(exc, "fetch_ohlcv", delays)
                    continue
                delays = None
                if candles:
                    since = candles[-1].open_time
                    yield candles
                await asyncio.sleep(self._poll_s)
        delays = None
        while True:
            self._refresh_markets_if_due()
            try:
                rows = await self._exchange.watch_ohlcv(symbol, interval)
            except asyncio.CancelledError:
                if self._closed_under_us():
                    return
                raise
            except Exception as exc:
                if self._stopping(exc):
                    return
                delays = await self._reconnect(exc, "ohlcv", symbol, delays)
                continue
            delays = None
            candles = self._map_candles(rows, symbol, interval, ms, "watch_ohlcv")
            if candles:
                yield candles

    async def fetch_ohlcv(
        self,
        symbol: str,
        interval: str,
        *,
        since: int | None = None,
        until: int | None = None,
        limit: int | None = None,
    ) -> list[Candle]:
        """Candles opening in ``since..until`` (inclusive), oldest first; the
        newest may still be open (``closed`` False)."""
        ms = Interval.parse(interval).ms
        await self._require(symbol)
        ex = self._exchange
        # ``until`` is applied here: not every exchange's ccxt method accepts it.
        rows = await self._rest(
            "fetch_ohlcv", lambda: ex.fetch_ohlcv(symbol, interval, since, limit)
        )
        wanted = [row for row in rows if _in_range(row, since, until)]
        return self._map_candles(wanted, symbol, interval, ms, "fetch_ohlcv")

    def _map_candles(
        self, rows: Iterable[Any], symbol: str, interval: str, ms: int, endpoint: str
    ) -> list[Candle]:
        now = self._clock()
        candles: list[Candle] = []
        for row in rows:
            try:
                closed = int(row[0]) + ms <= now
                candles.append(map_ohlcv(row, self._id, symbol, interval, closed=closed))
            except (PayloadError, TypeError, ValueError, IndexError) as exc:
                self._bad_payload(endpoint, exc)
        return candles

    # -- tickers ----------------------------------------------------------------------
    async def fetch_tickers(self, symbols: Sequence[str]) -> list[Ticker]:
        """Latest tickers of ``symbols``; malformed ones are counted and left out."""
        ex, wanted = self._exchange, list(symbols)
        for symbol in wanted:
            await self._require(symbol)
        if ex.has.get("fetchTickers"):
            raw = await self._rest("fetch_tickers", lambda: ex.fetch_tickers(wanted))
            entries = [raw[s] for s in wanted if s in raw]
        else:
            entries = []
            for symbol in wanted:
                entries.append(await self._rest("fetch_ticker", _bind(ex.fetch_ticker, symbol)))
        tickers: list[Ticker] = []
        for entry in entries:
            try:
                tickers.append(map_ticker(entry, self._id, now_ms=self._clock()))
            except PayloadError as exc:
                self._bad_payload("fetch_tickers", exc)
        return tickers

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
        if not isinstance(exc, _TRANSIENT):
            raise exc
        delays = delays or self._delays()
        delay = next(delays)
        self._metrics.reconnects.labels(self._id, stream).inc()
        log.warning("websocket stream lost, reconnecting", exchange=self._id, stream=stream,
                    symbol=symbol, error=_brief(exc), retry_in=round(delay, 3))  # fmt: skip
        await asyncio.sleep(delay)
        return delays

    async def _poll_failed(
        self, exc: Exception, endpoint: str, delays: Iterator[float] | None
    ) -> Iterator[float] | None:
        if isinstance(exc, _MALFORMED) and not isinstance(exc, UnknownSymbolError):
            self._bad_payload(endpoint, exc)
            await asyncio.sleep(self._poll_s)
            return delays
        if not isinstance(exc, _TRANSIENT):
            raise exc
        delays = delays or self._delays()
        delay = next(delays)
        log.warning("exchange poll failed, retrying", exchange=self._id, endpoint=endpoint,
                    error=_brief(exc), retry_in=round(delay, 3))  # fmt: skip
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
                    endpoint=endpoint, error=_brief(exc), also_skipped=skipped)  # fmt: skip

    def _guard_ws_payloads(self) -> None:
        """Handle every websocket message so that no exception leaves ccxt's handler."""
        ex = self._exchange
        handle, make_client = ex.handle_message, ex.client

        def handle_message(client: Any, message: Any) -> None:
            try:
                handle(client, message)
            except Exception as exc:
                self._bad_payload(_ws_endpoint(message), exc)

        def client(url: str) -> Any:
            made = make_client(url)
            if not getattr(made, "_cryptodesk_guarded", False):
                decode = made.handle_text_or_binary_message

                def handle_text(data: Any) -> None:
                    try:
                        decode(data)
                    except Exception as exc:  # not JSON
                        self._bad_payload("ws", exc)

                made.handle_text_or_binary_message = handle_text
                made._cryptodesk_guarded = True
            return made

        ex.handle_message = handle_message
        ex.client = client


def _bind(method: Callable[[str], Awaitable[T]], symbol: str) -> Callable[[], Awaitable[T]]:
    return lambda: method(symbol)


def _in_range(row: Any, since: int | None, until: int | None) -> bool:
    try:
        ts = int(row[0])
    except (TypeError, ValueError, IndexError):
        return True  # let the mapping count it
    return (since is None or ts >= since) and (until is None or ts <= until)


def _ws_endpoint(message: Any) -> str:
    """``ws:<event>`` from the usual event fields, or ``ws``."""
    if isinstance(message, dict):
        for key in ("e", "event", "channel", "type", "topic", "ch", "stream"):
            value = message.get(key)
            if isinstance(value, str) and _LABEL.match(value):
                return f"ws:{value}"
    return "ws"


def _brief(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}"[:300]
