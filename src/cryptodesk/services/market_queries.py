"""Read side of market data for the API: cache first, then the database.

Nothing here ever calls an exchange: a request is answered from what ingest,
compute and prefetch already wrote, and each answer says how fresh it is
(``feed_status``): while an upstream fails the last known good value is
served, marked stale, with its age. Errors are ``QueryError`` subclasses that
name the offending parameter and carry a stable ``code`` the API turns into a
problem type.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import msgspec
import structlog

from cryptodesk.adapters.cache.base import Cache
from cryptodesk.adapters.db.base import MarketStore
from cryptodesk.domain import codec
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.market import Candle, Market, OrderBook, Ticker
from cryptodesk.domain.symbol import Symbol
from cryptodesk.domain.timeutil import MAX_TS_MS, now_ms
from cryptodesk.observability.metrics import Metrics
from cryptodesk.services import cache_keys
from cryptodesk.services.feed_status import DataKind, FeedStatus, Freshness, Served, judge

log = structlog.get_logger(__name__)

MAX_CANDLE_LIMIT = 1000
MAX_BOOK_DEPTH = 100
_CURSOR_VERSION = 1


class QueryError(DomainError):
    """A request the service cannot answer; ``code`` is a stable machine id."""

    def __init__(self, message: str, *, field: str | None, code: str) -> None:
        super().__init__(message, field=field)
        self.code = code


class NotFound(QueryError):
    """The named thing (exchange, symbol, data) does not exist here."""


class InvalidParameter(QueryError):
    """A parameter is malformed or out of range."""


class Unavailable(QueryError):
    """A backend the answer depends on is down; retrying later may succeed."""


@dataclass(frozen=True, slots=True)
class CandlePage:
    """Candles oldest first; ``next_cursor`` fetches the following page, or None.

    ``freshness`` is the series': the age of its newest finalized candle.
    """

    candles: list[Candle]
    next_cursor: str | None
    freshness: Freshness = field(default_factory=Freshness)


@dataclass(frozen=True, slots=True)
class _Cursor:
    forward: bool
    boundary: int  # forward: inclusive lower bound; backward: exclusive upper bound
    exchange: str
    symbol: str
    interval: str
    start: int | None
    end: int | None


@dataclass(frozen=True, slots=True)
class _Window:
    forward: bool
    lower: int | None
    upper: int | None


class MarketQueries:
    """Markets, tickers, candles and order books for configured series only.

    ``status`` holds the upstream reports of this process and ``stale_after``
    (seconds) is the age past which a value is stale; ``clock`` is epoch ms.
    """

    def __init__(
        self,
        cache: Cache,
        store: MarketStore,
        metrics: Metrics,
        *,
        exchanges: Sequence[str],
        symbols: Sequence[str],
        intervals: Sequence[str],
        cache_recent_candles: int,
        status: FeedStatus | None = None,
        stale_after: float = 60.0,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._cache = cache
        self._store = store
        self._metrics = metrics
        self._exchanges = list(exchanges)
        self._symbols = list(symbols)
        self._intervals = list(intervals)
        self._recent = cache_recent_candles
        self._status = status if status is not None else FeedStatus()
        self._stale_ms = stale_after * 1000
        self._clock = clock
        # True while the cache is failing: reads come from the database and the
        # API marks its answers degraded.
        self.cache_degraded = False

    # ---- validation -----------------------------------------------------------------

    def exchange(self, text: str) -> str:
        """The configured exchange id ``text`` names, or NotFound."""
        name = text.strip().lower()
        if name not in self._exchanges:
            raise NotFound(
                f"unknown exchange {text!r}; this server serves: {', '.join(self._exchanges)}",
                field="exchange",
                code="unknown-exchange",
            )
        return name

    def symbol(self, text: str) -> str:
        """Normalise ``btc-usdt`` to ``BTC/USDT``; malformed is 400, unconfigured 404."""
        try:
            name = str(Symbol.parse(text))
        except DomainError as exc:
            raise InvalidParameter(str(exc), field="symbol", code="invalid-parameter") from None
        if name not in self._symbols:
            raise NotFound(
                f"unknown symbol {text!r}; this server serves: {', '.join(self._symbols)}",
                field="symbol",
                code="unknown-symbol",
            )
        return name

    def interval(self, text: str) -> str:
        name = text.strip()
        if name not in self._intervals:
            raise InvalidParameter(
                f"unknown interval {text!r}; this server builds: {', '.join(self._intervals)}",
                field="interval",
                code="unknown-interval",
            )
        return name

    # ---- cache-only reads -----------------------------------------------------------

    def _fresh(
        self, exchange: str, kind: DataKind, as_of: int | None, now: int, slack_ms: int = 0
    ) -> Freshness:
        failing = self._status.failing(exchange, kind)
        return judge(as_of, now, limit_ms=self._stale_ms + slack_ms, failing=failing)

    async def markets(self, exchange: str | None = None) -> list[Served[Market]]:
        """Configured markets as the exchange describes them (precision, limits).

        Markets carry no exchange time: only a failing upstream makes them stale.
        """
        exchanges = [self.exchange(exchange)] if exchange is not None else self._exchanges
        raws = await self._cache_read([cache_keys.markets(e) for e in exchanges], "markets")
        order = {s: i for i, s in enumerate(self._symbols)}
        now = self._clock()
        out: list[Served[Market]] = []
        for ex, raw in zip(exchanges, raws, strict=True):
            if raw is not None:
                fresh = self._fresh(ex, "markets", None, now)
                found = [m for m in codec.decode_markets(raw) if m.symbol in order]
                out.extend(Served(m, fresh) for m in sorted(found, key=lambda m: order[m.symbol]))
        return out

    async def tickers(
        self, exchange: str | None = None, symbol: str | None = None
    ) -> list[Served[Ticker]]:
        """Latest tickers, aged from their last trade; markets not traded yet are absent."""
        exchanges = [self.exchange(exchange)] if exchange is not None else self._exchanges
        symbols = [self.symbol(symbol)] if symbol is not None else self._symbols
        keys = [cache_keys.ticker(e, s) for e in exchanges for s in symbols]
        raws = await self._cache_read(keys, "tickers")
        now = self._clock()
        tickers = [codec.decode_ticker(raw) for raw in raws if raw is not None]
        return [Served(t, self._fresh(t.exchange, "tickers", t.ts, now)) for t in tickers]

    async def orderbook(self, exchange: str, symbol: str, depth: int) -> Served[OrderBook] | None:
        """The latest L2 snapshot cut to ``depth`` levels a side; None before the first."""
        ex, sym = self.exchange(exchange), self.symbol(symbol)
        if not 1 <= depth <= MAX_BOOK_DEPTH:
            raise InvalidParameter(
                f"depth must be 1..{MAX_BOOK_DEPTH}, got {depth}",
                field="depth",
                code="invalid-parameter",
            )
        (raw,) = await self._cache_read([cache_keys.book(ex, sym)], "orderbook")
        if raw is None:
            return None
        book = codec.decode_book(raw).top(depth)
        return Served(book, self._fresh(ex, "orderbook", book.ts, self._clock()))

    async def _cache_read(self, keys: list[str], kind: str) -> list[bytes | None]:
        try:
            raws = await self._cache.get_many(keys)
        except Exception as exc:
            log.warning("cache read failed", kind=kind, error=repr(exc))
            self.cache_degraded = True
            raise Unavailable(
                "the cache is unavailable; retry shortly", field=None, code="service-unavailable"
            ) from None
        self.cache_degraded = False
        hits = sum(raw is not None for raw in raws)
        if hits:
            self._metrics.cache_hits.labels(kind).inc(hits)
        if len(raws) - hits:
            self._metrics.cache_misses.labels(kind).inc(len(raws) - hits)
        return raws

    # ---- candles --------------------------------------------------------------------

    async def candles(
        self,
        exchange: str,
        symbol: str,
        interval: str,
        *,
        start: int | None = None,
        end: int | None = None,
        limit: int = 500,
        cursor: str | None = None,
        include_open: bool = False,
    ) -> CandlePage:
        """One page of finalized candles, always ascending by open time.

        - With ``start``: the first ``limit`` candles with ``start <= open_time``
          (``< end`` when given); ``next_cursor`` continues forward and is None
          once no later stored candle exists.
        - Without ``start``: the newest ``limit`` candles with ``open_time < end``
          (or the newest overall); ``next_cursor`` moves back to the page just
          before and is None once no older stored candle exists.
        - ``cursor`` continues the query that produced it. It is opaque
          (url-safe base64 of JSON holding direction, boundary and the query);
          it must come with the same exchange, symbol and interval, and with
          the same ``start``/``end`` or none. Anything else is InvalidParameter
          on ``cursor``. ``limit`` may change between pages.
        - ``include_open`` appends the candle in progress (``closed`` false) when
          the page is the newest one: the first page without ``end``, or the last
          forward page. The page then holds up to ``limit + 1`` candles.

        The newest ``cache_recent_candles`` finalized candles of each series live
        in the cache; a page they fully cover (including knowing whether a next
        page exists) is served from there, any other from the store. Both give
        the same page.
        """
        ex, sym, iv = self.exchange(exchange), self.symbol(symbol), self.interval(interval)
        if not 1 <= limit <= MAX_CANDLE_LIMIT:
            raise InvalidParameter(
                f"limit must be 1..{MAX_CANDLE_LIMIT}, got {limit}",
                field="limit",
                code="invalid-parameter",
            )
        if start is not None and end is not None and start >= end:
            raise InvalidParameter(
                "end must be later than start", field="end", code="invalid-parameter"
            )
        if cursor is not None:
            cur = _decode_cursor(cursor)
            _check_cursor(cur, ex, sym, iv, start, end)
            start, end = cur.start, cur.end
            window = _Window(
                cur.forward,
                cur.boundary if cur.forward else None,
                end if cur.forward else cur.boundary,
            )
        else:
            window = _Window(start is not None, start, end)

        page, more = await self._page(ex, sym, iv, window, limit)
        next_cursor: str | None = None
        if more:
            boundary = page[-1].open_time + 1 if window.forward else page[0].open_time
            next_cursor = _encode_cursor(_Cursor(window.forward, boundary, ex, sym, iv, start, end))
        newest = (not more) if window.forward else window.upper is None
        freshness = await self._series_freshness(
            ex, sym, iv, page, reaches_now=newest and window.upper is None
        )
        if include_open and newest:
            current = await self._open_candle(ex, sym, iv)
            if current is not None and _accepts(window, page, current):
                page.append(current)
        return CandlePage(page, next_cursor, freshness)

    async def _series_freshness(
        self, ex: str, sym: str, iv: str, page: list[Candle], *, reaches_now: bool
    ) -> Freshness:
        """Aged from the close of the series' newest finalized candle, whatever the page.

        A page of past candles is final and cannot go out of date; what can is
        the series. Its newest candle is the page's last when the page reaches
        the present, else the cached tail's last, else the store's. A healthy
        series is up to one interval behind, so that is allowed on top of the
        stale limit.
        """
        newest = page[-1] if reaches_now and page else await self._newest_candle(ex, sym, iv)
        length = Interval.parse(iv).ms
        as_of = None if newest is None else newest.open_time + length
        return self._fresh(ex, "candles", as_of, self._clock(), slack_ms=length)

    async def _newest_candle(self, ex: str, sym: str, iv: str) -> Candle | None:
        if self._recent > 0:
            try:
                raws = await self._cache.list_range(cache_keys.recent_candles(ex, sym, iv), -1, -1)
                if raws:
                    return codec.decode_candle(raws[-1])
            except Exception as exc:  # the store knows it too
                log.warning("cached candles unreadable", series=f"{ex}:{sym}:{iv}",
                            error=repr(exc))  # fmt: skip
        return await self._store.last_candle(ex, sym, iv)

    async def _page(
        self, ex: str, sym: str, iv: str, w: _Window, limit: int
    ) -> tuple[list[Candle], bool]:
        cached = await self._from_cache(ex, sym, iv, w, limit)
        if cached is not None:
            self._metrics.cache_hits.labels("candles").inc()
            return cached
        self._metrics.cache_misses.labels("candles").inc()
        if w.forward:
            rows = await self._store.get_candles(
                ex, sym, iv, start=w.lower, end=w.upper, limit=limit + 1
            )
            return rows[:limit], len(rows) > limit
        rows = await self._store.get_candles(
            ex, sym, iv, end=w.upper, limit=limit + 1, newest_first=True
        )
        page = rows[:limit]
        page.reverse()
        return page, len(rows) > limit

    async def _from_cache(
        self, ex: str, sym: str, iv: str, w: _Window, limit: int
    ) -> tuple[list[Candle], bool] | None:
        """The page from the cached tail of the series, or None when it cannot tell.

        The cached list is the store's newest finalized candles, so it answers
        any page that starts at or after its oldest item, and a backward page
        when it holds one more candle than asked for (proof that an older page
        exists) before the upper bound. A list that is not strictly ascending
        is not trusted. (A list that missed candles while Redis was down is
        started over by the cache itself, so it has no holes.)
        """
        if self._recent <= 0:
            return None
        try:
            raws = await self._cache.list_range(cache_keys.recent_candles(ex, sym, iv))
            tail = [codec.decode_candle(raw) for raw in raws]
        except Exception as exc:  # a broken cache must not break reads: use the store
            log.warning("cached candles unreadable", series=f"{ex}:{sym}:{iv}", error=repr(exc))
            self.cache_degraded = True
            return None
        self.cache_degraded = False
        if not tail:
            return None
        if any(a.open_time >= b.open_time for a, b in pairwise(tail)):
            # A push retried after its reply was lost can repeat candles; such a
            # tail cannot answer "the next N", the store can.
            log.warning("cached candles out of order, reading the store",
                        series=f"{ex}:{sym}:{iv}")  # fmt: skip
            return None
        if w.forward:
            if w.lower is None or w.lower < tail[0].open_time:
                return None
            rows = [c for c in tail if c.open_time >= w.lower and _below(c, w.upper)][: limit + 1]
            return rows[:limit], len(rows) > limit
        rows = [c for c in tail if _below(c, w.upper)]
        if len(rows) <= limit:
            return None
        return rows[-limit:], True

    async def _open_candle(self, ex: str, sym: str, iv: str) -> Candle | None:
        try:
            raw = await self._cache.get(cache_keys.open_candle(ex, sym, iv))
            return None if raw is None else codec.decode_candle(raw)
        except Exception as exc:  # the open candle is a bonus; the page stands without it
            log.warning("open candle unreadable", series=f"{ex}:{sym}:{iv}", error=repr(exc))
            return None


def _below(c: Candle, upper: int | None) -> bool:
    return upper is None or c.open_time < upper


def _accepts(w: _Window, page: list[Candle], current: Candle) -> bool:
    """The open candle belongs after the page: in the window and newer than its last."""
    if current.closed or not _below(current, w.upper):
        return False
    if w.lower is not None and current.open_time < w.lower:
        return False
    return not page or current.open_time > page[-1].open_time


# ---- cursors --------------------------------------------------------------------------


def _encode_cursor(c: _Cursor) -> str:
    body = {
        "v": _CURSOR_VERSION,
        "d": "f" if c.forward else "b",
        "b": c.boundary,
        "q": [c.exchange, c.symbol, c.interval, c.start, c.end],
    }
    return base64.urlsafe_b64encode(msgspec.json.encode(body)).rstrip(b"=").decode("ascii")


def _bad_cursor(reason: str) -> InvalidParameter:
    return InvalidParameter(reason, field="cursor", code="invalid-cursor")


def _is_ts(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_TS_MS


def _decode_cursor(text: str) -> _Cursor:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        body = msgspec.json.decode(raw)
    except (binascii.Error, ValueError):
        raise _bad_cursor("cursor is not one this server issued") from None
    if not isinstance(body, dict) or body.get("v") != _CURSOR_VERSION:
        raise _bad_cursor("cursor is not one this server issued")
    direction: Any = body.get("d")
    boundary: Any = body.get("b")
    query: Any = body.get("q")
    if (
        direction not in ("f", "b")
        or not _is_ts(boundary)
        or not isinstance(query, list)
        or len(query) != 5
        or not all(isinstance(x, str) for x in query[:3])
        or not all(x is None or _is_ts(x) for x in query[3:])
    ):
        raise _bad_cursor("cursor is not one this server issued")
    exchange, symbol, interval, start, end = query
    return _Cursor(direction == "f", boundary, exchange, symbol, interval, start, end)


def _check_cursor(
    c: _Cursor, ex: str, sym: str, iv: str, start: int | None, end: int | None
) -> None:
    if (c.exchange, c.symbol, c.interval) != (ex, sym, iv):
        raise _bad_cursor(
            f"cursor belongs to {c.exchange} {c.symbol} {c.interval}, not {ex} {sym} {iv}"
        )
    if (start is not None and start != c.start) or (end is not None and end != c.end):
        raise _bad_cursor("cursor belongs to a query with other start/end; drop them or match")
    if c.forward and c.start is None:
        raise _bad_cursor("cursor is not one this server issued")
