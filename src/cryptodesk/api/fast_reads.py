"""Anonymous market reads answered without FastAPI's routing and dependency solving.

``GET /api/v1/tickers``, ``/markets`` and ``/orderbook`` without credentials,
while market data is public, are what dashboards poll many times a second;
FastAPI's route matching and parameter solving cost several times what the
answer itself does. ``FastMarketReads`` is one pure ASGI layer, just inside
CORS, that answers them itself with what the full stack would send at that
moment, byte for byte:

- the same ``MarketQueries`` call and the same response models, serialised by
  pydantic as FastAPI does; each item's JSON up to its ``age_seconds`` is kept
  per value, so a request only encodes the age, which changes every millisecond;
- what the layers it stands in for add: the freshness headers, the ETag (or a
  304 for a matching ``If-None-Match``), the ``ip`` rate limit with its
  ``RateLimit-*`` fields (or the 429), ``cryptodesk-degraded``, the security
  headers, and the request-duration histogram under the route's template.

Everything else goes on to the app unchanged: other paths and methods, requests
with credentials or a body, and queries the route would refuse (a parameter
missing, too long or malformed, an exchange or symbol not served), so their
problem+json stays the route's own. tests/unit/test_fast_reads.py compares the
two answers; docs/http.md describes the layer.
"""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl

import pydantic_core
import structlog
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cryptodesk.adapters.ratelimit.base import RateLimiter, Tier
from cryptodesk.api.http_hygiene import ETAG_MAX_BYTES, entity_tag, if_none_match_hits
from cryptodesk.api.problems import internal_error
from cryptodesk.api.ratelimit import (
    RateLimited,
    address_key,
    client_address,
    parse_trusted_proxies,
    rate_limit_headers,
    rate_limited_response,
)
from cryptodesk.api.routes.market import freshness_headers, no_book
from cryptodesk.api.schemas import MarketOut, OrderBookOut, TickerOut, age_seconds
from cryptodesk.domain.errors import DomainError
from cryptodesk.observability.metrics import Metrics
from cryptodesk.services.feed_status import Freshness, Served
from cryptodesk.services.market_queries import MAX_BOOK_DEPTH, MarketQueries

log = structlog.get_logger(__name__)

# Requests whose answer is private (credentials) or that carry a body: the app's.
_REFERRED_HEADERS: Final = frozenset({b"authorization", b"x-api-key", b"transfer-encoding"})
# What ``ETagMiddleware`` leaves out of a 304 (RFC 9110 section 15.4.5).
_NOT_IN_304: Final = frozenset({b"content-length", b"content-type"})
# As ``RequestMetricsMiddleware`` marks answers read while the cache is down.
_DEGRADED: Final = (b"cryptodesk-degraded", b"cache")
_AGE_TAIL: Final = b'"age_seconds":0.0}'
JSON: Final = b"application/json"
_PARAM_MAX: Final = 64  # the routes' max_length on exchange and symbol
_DEPTH: Final = re.compile(r"[1-9][0-9]{0,2}")
_DEFAULT_DEPTH: Final = 20
_MEMO_MAX: Final = 4096  # entries per memo before it starts over
# Whole answers are kept per served values (their ages included, so for tickers
# and books about a millisecond): small ones, a few.
_BODY_MEMO_MAX: Final = 256
_BODY_MEMO_BYTES: Final = 65_536

Args = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class _Encoded:
    headers: tuple[tuple[bytes, bytes], ...]  # as the route sends them
    body: bytes
    etag: bytes | None  # None: too large to tag


class _Referred(Exception):
    """The route, not this layer, answers this query."""


@dataclass(frozen=True, slots=True)
class MarketRead:
    """One route this layer answers: its query check, its read and its JSON shape.

    ``check`` raises (``DomainError``, ``_Referred``) for any query the route
    would refuse and must not touch the cache; ``read`` is the route's service
    call and raises what the route would raise; ``item`` is the model of one
    value, whose last field is ``age_seconds``; ``opening``/``closing`` wrap
    the items (``{"tickers":[`` ... ``]}``).
    """

    template: str
    check: Callable[[Mapping[str, str]], Args]
    read: Callable[[Args], Awaitable[list[Served[Any]]]]
    item: Callable[[Any, Freshness], BaseModel]
    opening: bytes = b""
    closing: bytes = b""


def _optional(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is not None and len(value) > _PARAM_MAX:
        raise _Referred(name)
    return value


def _required(params: Mapping[str, str], name: str) -> str:
    value = _optional(params, name)
    if value is None:
        raise _Referred(name)
    return value


def market_reads(queries: MarketQueries) -> list[MarketRead]:
    """The three market routes (routes/market.py), as this layer answers them."""

    def markets_check(params: Mapping[str, str]) -> Args:
        exchange = _optional(params, "exchange")
        if exchange is not None:
            queries.exchange(exchange)
        return (exchange,)

    async def markets_read(args: Args) -> list[Served[Any]]:
        return list(await queries.markets(*args))

    def tickers_check(params: Mapping[str, str]) -> Args:
        exchange, symbol = _optional(params, "exchange"), _optional(params, "symbol")
        if exchange is not None:
            queries.exchange(exchange)
        if symbol is not None:
            queries.symbol(symbol)
        return exchange, symbol

    async def tickers_read(args: Args) -> list[Served[Any]]:
        return list(await queries.tickers(*args))

    def book_check(params: Mapping[str, str]) -> Args:
        exchange, symbol = _required(params, "exchange"), _required(params, "symbol")
        depth = params.get("depth")
        if depth is not None and (not _DEPTH.fullmatch(depth) or int(depth) > MAX_BOOK_DEPTH):
            raise _Referred("depth")
        queries.exchange(exchange)
        queries.symbol(symbol)
        return exchange, symbol, _DEFAULT_DEPTH if depth is None else int(depth)

    async def book_read(args: Args) -> list[Served[Any]]:
        book = await queries.orderbook(*args)
        if book is None:
            raise no_book(args[0], args[1])
        return [book]

    return [
        MarketRead("/api/v1/markets", markets_check, markets_read, MarketOut.of,
                   b'{"markets":[', b"]}"),
        MarketRead("/api/v1/tickers", tickers_check, tickers_read, TickerOut.of,
                   b'{"tickers":[', b"]}"),
        MarketRead("/api/v1/orderbook", book_check, book_read, OrderBookOut.of),
    ]  # fmt: skip


Layer = Callable[[ASGIApp], ASGIApp]
Handlers = Mapping[Any, Callable[[Request, Exception], Any]]
Reply = tuple[int, list[tuple[bytes, bytes]], bytes]  # status, headers, body


def _parts(response: Response) -> Reply:
    return response.status_code, list(response.raw_headers), bytes(response.body)


def _raw(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """Headers as ASGI sends them, names in lower case (as Starlette encodes them)."""
    return [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers.items()]


class FastMarketReads:
    """Answers anonymous GETs of ``reads`` as the app would, faster; passes the rest on.

    ``handlers`` are the app's exception handlers (errors after the rate limit
    has been charged are answered with them); ``public`` says whether anonymous
    callers may read market data now; ``limiter``/``tier`` the ``ip`` rate limit
    (None: none); ``security`` wraps an app in the security-headers layer, whose
    headers are learnt once per path by asking it.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        reads: list[MarketRead],
        metrics: Metrics,
        handlers: Handlers,
        security: Layer,
        degraded: Callable[[], bool],
        public: Callable[[], bool] = lambda: True,
        limiter: RateLimiter | None = None,
        tier: Tier | None = None,
        trusted_proxies: str = "",
    ) -> None:
        self._app = app
        self._reads = {r.template: r for r in reads}
        self._metrics = metrics
        self._handlers = handlers
        self._security = security
        self._degraded = degraded
        self._public = public
        self._limit = (limiter, tier) if limiter is not None and tier is not None else None
        self._trusted = parse_trusted_proxies(trusted_proxies)
        self._queries: dict[tuple[str, bytes], Args | None] = {}
        self._heads: dict[tuple[Any, bool], bytes] = {}
        self._bodies: dict[tuple[str, tuple[Served[Any], ...]], _Encoded] = {}
        self._clients: dict[str, str] = {}
        self._security_headers: dict[str, list[tuple[bytes, bytes]]] = {}
        self._series: dict[tuple[str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self._app(scope, receive, send)
            return
        read = self._reads.get(scope["path"])
        if read is None or not self._public():
            await self._app(scope, receive, send)
            return
        condition: str | None = None
        for name, value in scope["headers"]:
            if name in _REFERRED_HEADERS or (name == b"content-length" and value != b"0"):
                await self._app(scope, receive, send)
                return
            if name == b"if-none-match" and condition is None:
                condition = value.decode("latin-1")
        args = self._args(read, scope["query_string"])
        if args is None:
            await self._app(scope, receive, send)
            return
        await self._answer(read, args, condition, scope, send)

    def _args(self, read: MarketRead, query: bytes) -> Args | None:
        """The route's arguments, or None when the route must answer (memoised:
        a check depends only on the query string and the configuration)."""
        key = (read.template, query)
        try:
            return self._queries[key]
        except KeyError:
            pass
        # As Starlette reads a query string; the last of a repeated name wins.
        params = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True))
        try:
            args: Args | None = read.check(params)
        except (DomainError, _Referred):
            args = None
        if len(self._queries) >= _MEMO_MAX:
            self._queries.clear()
        self._queries[key] = args
        return args

    async def _answer(
        self, read: MarketRead, args: Args, condition: str | None, scope: Scope, send: Send
    ) -> None:
        began = time.perf_counter()
        path = read.template
        fields: list[tuple[bytes, bytes]] = []
        if self._limit is not None:
            limiter, tier = self._limit
            decision = await limiter.hit(self._client_key(scope), tier)
            if not decision.allowed:
                refused = rate_limited_response(path, RateLimited(decision, tier))
                await self._send(send, path, _parts(refused), began)
                return
            fields = _raw(rate_limit_headers(decision, tier))
        try:
            reply = await self._ok(read, args, condition)
        except Exception as exc:
            handler = next(
                (h for cls in type(exc).__mro__ if (h := self._handlers.get(cls)) is not None), None
            )
            if handler is None:  # a bug: answered as RequestMetricsMiddleware answers one
                log.exception("unhandled error serving request", method="GET", path=path,
                              route=path)  # fmt: skip
                await self._send(send, path, _parts(internal_error(path)), began, degraded=False)
                return
            answer = handler(Request(scope), exc)
            reply = _parts(await answer if inspect.isawaitable(answer) else answer)
        reply[1].extend(fields)
        await self._send(send, path, reply, began)

    async def _ok(self, read: MarketRead, args: Args, condition: str | None) -> Reply:
        """The route's 200 as ``ETagMiddleware`` passes it on: tagged, or a 304."""
        served = tuple(await read.read(args))
        key = (read.template, served)
        known = self._bodies.get(key)
        if known is None:
            known = self._encode(read, served)
            if len(known.body) <= _BODY_MEMO_BYTES:
                if len(self._bodies) >= _BODY_MEMO_MAX:
                    self._bodies.clear()
                self._bodies[key] = known
        if known.etag is None:
            return 200, list(known.headers), known.body
        if condition is not None and if_none_match_hits(condition, known.etag.decode("ascii")):
            kept = [h for h in known.headers if h[0] not in _NOT_IN_304]
            return 304, [*kept, (b"etag", known.etag)], b""
        return 200, [*known.headers, (b"etag", known.etag)], known.body

    def _encode(self, read: MarketRead, served: tuple[Served[Any], ...]) -> _Encoded:
        parts = [read.opening]
        for i, s in enumerate(served):
            if i:
                parts.append(b",")
            parts += (self._head(read, s), pydantic_core.to_json(age_seconds(s.freshness)), b"}")
        parts.append(read.closing)
        body = b"".join(parts)
        headers = [(b"content-length", str(len(body)).encode()), (b"content-type", JSON)]
        headers += _raw(freshness_headers(s.freshness for s in served))
        etag = entity_tag(body).encode("ascii") if len(body) <= ETAG_MAX_BYTES else None
        return _Encoded(tuple(headers), body, etag)

    def _head(self, read: MarketRead, served: Served[Any]) -> bytes:
        """One item's JSON up to its age: the same bytes while the value and its
        staleness stay the same."""
        key = (served.value, served.freshness.stale)
        head = self._heads.get(key)
        if head is None:
            model = read.item(served.value, Freshness(served.freshness.stale, 0))
            encoded = model.__pydantic_serializer__.to_json(model, by_alias=True)
            if not encoded.endswith(_AGE_TAIL):
                raise RuntimeError(f"{type(model).__name__} must end with age_seconds")
            head = encoded[: -len(_AGE_TAIL)] + b'"age_seconds":'
            if len(self._heads) >= _MEMO_MAX:
                self._heads.clear()
            self._heads[key] = head
        return head

    def _client_key(self, scope: Scope) -> str:
        """The ``ip`` bucket, as ``RateLimitMiddleware`` names it (memoised per peer
        when no proxy is trusted: the key is then the peer's alone)."""
        if self._trusted:
            return address_key(client_address(scope, self._trusted))
        peer = scope.get("client")
        host = str(peer[0]) if peer else ""
        key = self._clients.get(host)
        if key is None:
            key = address_key(client_address(scope))
            if len(self._clients) >= _MEMO_MAX:
                self._clients.clear()
            self._clients[host] = key
        return key

    async def _send(
        self, send: Send, path: str, reply: Reply, began: float, *, degraded: bool = True
    ) -> None:
        status, headers, body = reply
        try:
            if degraded and self._degraded():
                headers.append(_DEGRADED)
            outer = self._security_headers.get(path)
            headers += outer if outer is not None else await self._outer_headers(path)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})
        finally:
            self._observer(path, status).observe(time.perf_counter() - began)

    def _observer(self, path: str, status: int) -> Any:
        """The request-duration series of ``path`` and ``status`` (kept: a handful)."""
        series = self._series.get((path, status))
        if series is None:
            series = self._metrics.http_request_duration.labels("GET", path, str(status))
            self._series[(path, status)] = series
        return series

    async def _outer_headers(self, path: str) -> list[tuple[bytes, bytes]]:
        """What the security-headers layer adds to an anonymous answer on ``path``."""
        started: list[Message] = []

        async def respond(scope: Scope, receive: Receive, send: Send) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})

        async def keep(message: Message) -> None:
            started.append(message)

        async def nothing() -> Message:
            return {"type": "http.disconnect"}

        probe = {"type": "http", "method": "GET", "path": path, "headers": []}
        await self._security(respond)(probe, nothing, keep)
        known = self._security_headers[path] = list(started[0]["headers"])
        return known
