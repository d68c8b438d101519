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
  three times in a row) is unsubscribed and rebuilt the same way. Checksums
  ccxt leaves unchecked (kraken's) are checked by ``ccxt_quirks.BOOK_CHECKS``
  before ccxt applies the message, and fail the watch the same way; so are
  gaps ccxt finds but cannot recover from (bitfinex keeps the channel open,
  htx raises out of its handler), and the channel is closed to start afresh.
- Bad payloads. An exception inside ccxt's message handler stops its receive
  loop for good (the callback never reschedules itself), so every frame (its
  unzipping too, on htx) and every message is handled under a guard that
  logs, counts and skips it. A ccxt structure that cannot become a domain
  value is counted and skipped too.
- Rate limits. An optional guard (``guard.ExchangeGuard``) becomes ccxt's
  throttle, so every request ccxt makes, ours and its own snapshot fetches,
  pays its endpoint's weight; our REST calls also run inside ``guard.call``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import ccxt.async_support as ccxt_async  # type: ignore[import-untyped]
import structlog

from cryptodesk.adapters.exchanges.base import UnknownExchangeError, UnknownSymbolError
from cryptodesk.adapters.exchanges.ccxt_exchange import (
    INVALID_BOOKS_BEFORE_REBUILD,
    MALFORMED,
    CcxtExchange,
    brief,
)
from cryptodesk.adapters.exchanges.ccxt_mapping import (
    PayloadError,
    map_ohlcv,
    map_order_book,
    map_ticker,
    map_trade,
)
from cryptodesk.adapters.exchanges.ccxt_metrics import CcxtMetrics
from cryptodesk.adapters.exchanges.ccxt_quirks import (
    book_limit,
    natural_trade_id,
)
from cryptodesk.adapters.exchanges.ccxt_trades import TradeTape
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.market import Candle, OrderBook, Ticker, Trade

__all__ = ["CcxtMetrics", "CcxtSource", "UnknownExchangeError", "UnknownSymbolError"]

__all__ = ["CcxtMetrics", "CcxtSource", "UnknownExchangeError", "UnknownSymbolError"]

T = TypeVar("T")
log = structlog.get_logger(__name__)


class CcxtSource(CcxtExchange):
    """``MarketDataSource`` over one ccxt exchange; also the REST side for
    backfill and prefetch (``fetch_ohlcv``, ``fetch_tickers``). The constructor
    is ``CcxtExchange``'s.
    """

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
        except MALFORMED as exc:
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
        exchange, id_keys = self._id, self._trade_id_keys
        for entry in raw:
            try:
                if id_keys:
                    entry = natural_trade_id(entry, id_keys)
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
                if invalid >= INVALID_BOOKS_BEFORE_REBUILD:
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
                            symbol=symbol, error=brief(exc))  # fmt: skip
        # Without an unsubscribe, only new connections start clean; the other
        # streams on them reconnect (and backfill) on their own.
        ex.orderbooks.pop(symbol, None)
        await ex.close_ws_clients()

    async def _resync(
        self, symbol: str, exc: Exception, delays: Iterator[float] | None, *, wait: bool
    ) -> Iterator[float] | None:
        self._metrics.book_resyncs.labels(self._id, symbol).inc()
        log.warning("order book out of sync, rebuilding from a snapshot",
                    exchange=self._id, symbol=symbol, error=brief(exc))  # fmt: skip
        if wait:
            delays = delays or self._delays()
            await asyncio.sleep(next(delays))
        return delays

    async def _poll_order_book(self, symbol: str) -> AsyncIterator[OrderBook]:
        ex, depth = self._exchange, self._depth
        limit = book_limit(self._id, depth)
        delays = None
        while True:
            self._refresh_markets_if_due()
            try:
                raw = await self._rest(
                    "fetch_order_book", lambda: ex.fetch_order_book(symbol, limit)
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


def _bind(method: Callable[[str], Awaitable[T]], symbol: str) -> Callable[[], Awaitable[T]]:
    return lambda: method(symbol)


def _in_range(row: Any, since: int | None, until: int | None) -> bool:
    try:
        ts = int(row[0])
    except (TypeError, ValueError, IndexError):
        return True  # let the mapping count it
    return (since is None or ts >= since) and (until is None or ts <= until)
