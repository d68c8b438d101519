"""``/api/v1`` market data: markets, tickers, candles, order books.

Handlers only translate: query strings to service arguments and domain
values to response models. Validation of what the server serves lives in
``MarketQueries`` so the CLI and WebSocket hub get the same answers.

Every answer is read from the cache or the database, never from an exchange:
while an upstream fails it is the last known good value, marked ``stale``
with its age in the body and in the ``cryptodesk-data-age``/``cryptodesk-data-stale`` headers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from cryptodesk.api.problems import NoData
from cryptodesk.api.schemas import (
    CandleOut,
    CandlesResponse,
    MarketOut,
    MarketsResponse,
    OrderBookOut,
    Problem,
    TickerOut,
    TickersResponse,
    age_seconds,
)
from cryptodesk.api.security import requires
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.timeutil import parse_time
from cryptodesk.services.feed_status import Freshness
from cryptodesk.services.market_queries import MAX_BOOK_DEPTH, MAX_CANDLE_LIMIT, MarketQueries

_DESCRIPTIONS = {
    400: "A query parameter is invalid (`errors` names it).",
    401: "Credentials missing, malformed, expired, tampered with or revoked.",
    403: "The role or the API key's scopes lack the permission (`x-permission`).",
    409: "The name or e-mail is taken already.",
    422: "A body field is missing, unknown or of the wrong type (`errors` names it).",
    429: "Too many requests: see `Retry-After`.",
    404: "Unknown exchange or symbol, or no data yet.",
    503: "A backend is down; retry later.",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error bodies (moved to problem+json by ``app.openapi``)."""
    return {
        status: {"model": Problem, "description": _DESCRIPTIONS.get(status, "Error")}
        for status in statuses
    }


AGE_HEADER = "cryptodesk-data-age"
STALE_HEADER = "cryptodesk-data-stale"
FRESHNESS_TEXT = (
    "Served from the cache or the database, never from the exchange: while the "
    "exchange's upstream fails this is the last known good data, with `stale: true`. "
    f"Headers: `{AGE_HEADER}` is the age in whole seconds of the oldest value served "
    f"(absent when no value carries a time), `{STALE_HEADER}` is `true` when any value "
    "served is stale, else `false`."
)
_SERVED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Successful Response",
        "headers": {
            AGE_HEADER: {
                "description": "Whole seconds since the exchange time of the oldest value "
                "served; absent when none carries a time.",
                "schema": {"type": "integer", "minimum": 0},
            },
            STALE_HEADER: {
                "description": "`true` when any value served is stale.",
                "schema": {"type": "string", "enum": ["true", "false"]},
            },
        },
    }
}


def served_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The 200 entry with the freshness headers, then the error bodies."""
    return {**_SERVED, **problem_responses(*statuses)}


def freshness_headers(served: Iterable[Freshness]) -> dict[str, str]:
    """The freshness headers for the values in one answer, in the order they are sent."""
    items = list(served)
    ages = [f.age_ms for f in items if f.age_ms is not None]
    headers = {AGE_HEADER: str(max(ages) // 1000)} if ages else {}
    headers[STALE_HEADER] = "true" if any(f.stale for f in items) else "false"
    return headers


def mark_freshness(response: Response, served: Iterable[Freshness]) -> None:
    """Set the freshness headers for the values in one answer."""
    response.headers.update(freshness_headers(served))


def no_book(exchange: str, symbol: str) -> NoData:
    """The 404 of a configured market whose order book has not arrived yet."""
    return NoData(f"no order book received yet for {symbol} on {exchange}")


Exchange = Annotated[str, Query(description="Exchange id.", examples=["sim"], max_length=64)]
Symbol = Annotated[
    str, Query(description="BASE/QUOTE (BTC-USDT works too).", examples=["BTC/USDT"], max_length=64)
]
OptionalExchange = Annotated[
    str | None, Query(description="Only this exchange.", examples=["sim"], max_length=64)
]
OptionalSymbol = Annotated[
    str | None, Query(description="Only this symbol.", examples=["BTC/USDT"], max_length=64)
]


def _time(text: str | None, field: str) -> int | None:
    """Epoch ms from ISO 8601 or epoch ms; any parse failure is a 400 on ``field``."""
    if text is None:
        return None
    try:
        return parse_time(text, field=field)
    except DomainError:
        raise
    except (ValueError, OverflowError):  # e.g. "²" passes isdigit() but not int()
        raise DomainError(
            f"{field} {text!r} is neither epoch milliseconds nor ISO 8601", field=field
        ) from None


def market_router(queries: MarketQueries) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["market data"])

    @router.get(
        "/markets",
        dependencies=[requires("market:read")],
        response_model=MarketsResponse,
        responses=served_responses(400, 404, 503),
        summary="Markets served, with the exchange's precision and limits",
        description=FRESHNESS_TEXT,
    )
    async def markets(response: Response, exchange: OptionalExchange = None) -> MarketsResponse:
        found = await queries.markets(exchange)
        mark_freshness(response, (m.freshness for m in found))
        return MarketsResponse(markets=[MarketOut.of(m.value, m.freshness) for m in found])

    @router.get(
        "/tickers",
        dependencies=[requires("market:read")],
        response_model=TickersResponse,
        responses=served_responses(400, 404, 503),
        summary="Last price, best bid/ask and rolling 24 h statistics",
        description=FRESHNESS_TEXT,
    )
    async def tickers(
        response: Response, exchange: OptionalExchange = None, symbol: OptionalSymbol = None
    ) -> TickersResponse:
        found = await queries.tickers(exchange, symbol)
        mark_freshness(response, (t.freshness for t in found))
        return TickersResponse(tickers=[TickerOut.of(t.value, t.freshness) for t in found])

    @router.get(
        "/candles",
        dependencies=[requires("market:read")],
        response_model=CandlesResponse,
        responses=served_responses(400, 404, 503),
        summary="OHLCV candles, oldest first, cursor-paginated",
        description=(
            "Without `start`: the newest `limit` candles (before `end` if given); "
            "`next_cursor` walks back in time. With `start`: the first `limit` "
            "candles from `start`; `next_cursor` walks forward. Pass `cursor` with "
            "the same exchange, symbol and interval for the next page; `next_cursor` "
            "is null at the end. `include_open=true` appends the candle in progress "
            "(`closed: false`) to the newest page. `stale` and `age_seconds` describe "
            "the series (its newest finalized candle), not the page. " + FRESHNESS_TEXT
        ),
    )
    async def candles(
        response: Response,
        exchange: Exchange,
        symbol: Symbol,
        interval: Annotated[str, Query(examples=["1m"], max_length=16)],
        start: Annotated[
            str | None,
            Query(
                description="ISO 8601 or epoch ms, inclusive.",
                examples=["2024-05-01T00:00Z"],
                max_length=64,
            ),
        ] = None,
        end: Annotated[
            str | None,
            Query(
                description="ISO 8601 or epoch ms, exclusive.",
                examples=["1714608000000"],
                max_length=64,
            ),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_CANDLE_LIMIT)] = 500,
        cursor: Annotated[
            str | None, Query(description="`next_cursor` of a previous page.", max_length=1024)
        ] = None,
        include_open: Annotated[bool, Query(description="Append the candle in progress.")] = False,
    ) -> CandlesResponse:
        page = await queries.candles(
            exchange,
            symbol,
            interval,
            start=_time(start, "start"),
            end=_time(end, "end"),
            limit=limit,
            cursor=cursor,
            include_open=include_open,
        )
        mark_freshness(response, [page.freshness])
        return CandlesResponse(
            exchange=queries.exchange(exchange),
            symbol=queries.symbol(symbol),
            interval=queries.interval(interval),
            candles=[CandleOut.of(c) for c in page.candles],
            next_cursor=page.next_cursor,
            stale=page.freshness.stale,
            age_seconds=age_seconds(page.freshness),
        )

    @router.get(
        "/orderbook",
        dependencies=[requires("market:read")],
        response_model=OrderBookOut,
        responses=served_responses(400, 404, 503),
        summary="Latest L2 order book snapshot",
        description=FRESHNESS_TEXT,
    )
    async def orderbook(
        response: Response,
        exchange: Exchange,
        symbol: Symbol,
        depth: Annotated[int, Query(ge=1, le=MAX_BOOK_DEPTH, description="Levels per side.")] = 20,
    ) -> OrderBookOut:
        book = await queries.orderbook(exchange, symbol, depth)
        if book is None:
            raise no_book(exchange, symbol)
        mark_freshness(response, [book.freshness])
        return OrderBookOut.of(book.value, book.freshness)

    return router
