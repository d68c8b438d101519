"""``/api/v1/graphql``: portfolio, positions, transactions and signals over GraphQL.

The same services as the REST routes answer, with the same rules:

- **Who**: the app's principal dependency authenticates every request before
  any GraphQL runs, so missing or bad credentials are the REST API's 401
  problem+json, never a GraphQL answer.
- **What**: each root field needs one permission (``portfolio:read`` for
  ``portfolio`` and ``positions``, ``ledger:read`` for ``transactions``,
  ``signals:read`` for ``signals``). Without it that field is ``null`` with
  an error whose ``extensions.code`` is ``FORBIDDEN`` and whose
  ``extensions.permission`` names it; the other fields still answer.
- **Whose**: the tenant is the principal's, for every query; no argument or
  header can name another. Signals are market data, shared by all tenants.
- **How much**: the depth, token and alias limits reject a document before it
  runs; every list takes ``first`` or ``limit`` (at most 500).
- **Errors**: a bad argument (``BAD_USER_INPUT``, with ``field``), an unknown
  account (``NOT_FOUND``) and a backend that is down (``SERVICE_UNAVAILABLE``)
  say so; any other failure is "Unexpected error." (``INTERNAL_SERVER_ERROR``)
  with its traceback in the log only.

There are no mutations and no subscriptions: writes stay on the REST routes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import Any, Final

import strawberry
import structlog
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import PlainTextResponse
from fastapi.routing import APIRoute
from graphql import GraphQLError
from strawberry.extensions import (
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
)
from strawberry.fastapi import BaseContext, GraphQLRouter
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from cryptodesk.adapters.db.engine import StorageError
from cryptodesk.api import ledger_examples as ex
from cryptodesk.api.graphql_types import (
    DEFAULT_FIRST,
    LONG,
    Long,
    Portfolio,
    Position,
    Signal,
    SignalPage,
    Transaction,
    TransactionPage,
    cap,
    described,
)
from cryptodesk.api.problems import problem
from cryptodesk.api.routes.ledger import _decode_cursor, _encode_cursor
from cryptodesk.api.routes.market import _time
from cryptodesk.domain.auth import Permission, PermissionDenied, Principal
from cryptodesk.domain.errors import DomainError
from cryptodesk.services.ledger_service import LedgerNotFound, LedgerService
from cryptodesk.services.market_queries import NotFound, Unavailable
from cryptodesk.services.portfolio_valuation import PortfolioValuation, PortfolioView
from cryptodesk.services.signal_queries import SignalQueries

log = structlog.get_logger(__name__)

PATH: Final = "/api/v1/graphql"
MASKED: Final = "Unexpected error."
STORAGE_DOWN: Final = "the database cannot be used right now; see the server log"
# Most arguments are names, times and cursors: the REST routes' length limits.
_NAME_LENGTH: Final = 64
_CURSOR_LENGTH: Final = 1024


class GraphQLContext(BaseContext):
    """One request's caller and the services its resolvers read."""

    def __init__(
        self,
        principal: Principal,
        ledger: LedgerService,
        valuation: PortfolioValuation,
        signals: SignalQueries,
    ) -> None:
        super().__init__()
        self.principal = principal
        self.ledger = ledger
        self.valuation = valuation
        self.signals = signals
        self._view: asyncio.Future[PortfolioView] | None = None

    def tenant_for(self, permission: Permission) -> str:
        """The caller's tenant once it holds ``permission``; else ``PermissionDenied``."""
        if not self.principal.can(permission):
            raise PermissionDenied(permission)
        return self.principal.tenant

    async def view(self) -> PortfolioView:
        """The tenant's valuation, computed once per request however many fields
        (or aliases) ask for it: the cost basis runs over the whole ledger."""
        if self._view is None:
            self._view = asyncio.ensure_future(self.valuation.value(self.principal.tenant))
        return await self._view


Info = strawberry.Info[GraphQLContext, None]


def _bounded(text: str | None, field: str, limit: int = _NAME_LENGTH) -> str | None:
    if text is not None and len(text) > limit:
        raise DomainError(f"{field} is longer than {limit} characters", field=field)
    return text


@strawberry.type(description="What the caller's tenant holds and did, and the signals fired. "
                 "Each field needs one permission; see docs/graphql.md.")  # fmt: skip
class Query:
    @described("The valuation at the latest cached prices. Needs portfolio:read.")
    async def portfolio(self, info: Info) -> Portfolio | None:
        info.context.tenant_for("portfolio:read")
        return Portfolio.of(await info.context.view())

    @described(
        "Positions per (account, asset), sorted; account and "
        "asset keep only theirs. Needs portfolio:read."
    )
    async def positions(
        self,
        info: Info,
        account: str | None = None,
        asset: str | None = None,
        first: int = DEFAULT_FIRST,
    ) -> list[Position] | None:
        info.context.tenant_for("portfolio:read")
        n = cap(first)
        _bounded(account, "account")
        _bounded(asset, "asset")
        rows = [
            p for p in (await info.context.view()).valuation.positions
            if (account is None or p.account == account) and (asset is None or p.asset == asset)
        ]  # fmt: skip
        return [Position.of(p) for p in rows[:n]]

    @described(
        "Ledger entries in chain order, cursor-paginated as GET "
        "/api/v1/ledger (its cursors work here too). start (inclusive) and end "
        "(exclusive): ISO 8601 or epoch ms. Needs ledger:read."
    )
    async def transactions(
        self,
        info: Info,
        start: str | None = None,
        end: str | None = None,
        account: str | None = None,
        limit: int = DEFAULT_FIRST,
        cursor: str | None = None,
    ) -> TransactionPage | None:
        ctx = info.context
        tenant = ctx.tenant_for("ledger:read")
        n = cap(limit, "limit")
        first = _time(_bounded(start, "start"), "start")
        last = _time(_bounded(end, "end"), "end")
        query: list[Any] = [first, last, _bounded(account, "account")]
        after = None
        if cursor is not None:
            after = _decode_cursor(_bounded(cursor, "cursor", _CURSOR_LENGTH) or "", query)
        if account is not None and await ctx.ledger.account(tenant, account) is None:
            raise LedgerNotFound(f"no account {account!r}", field="account")
        found = await ctx.ledger.stored_entries(
            tenant, start=first, end=last, account=account, after_seq=after, limit=n + 1
        )
        page = found[:n]
        more = len(found) > n
        return TransactionPage(
            items=[Transaction.of(s) for s in page],
            next_cursor=_encode_cursor(page[-1].seq, query) if more else None,
        )

    @described(
        "Signals fired on closed candles, oldest first, paged as GET "
        "/api/v1/signals: without start the newest limit (cursor walks back), "
        "with start the first limit from it. Needs signals:read."
    )
    async def signals(
        self,
        info: Info,
        exchange: str | None = None,
        symbol: str | None = None,
        interval: str | None = None,
        rule: str | None = None,
        kind: str | None = None,
        start: str | None = None,
        end: str | None = None,
        limit: int = DEFAULT_FIRST,
        cursor: str | None = None,
    ) -> SignalPage | None:
        ctx = info.context
        ctx.tenant_for("signals:read")  # market data: the same for every tenant
        names = {"exchange": exchange, "symbol": symbol, "interval": interval, "rule": rule,
                 "kind": kind}  # fmt: skip
        for field, text in names.items():
            _bounded(text, field)
        page = await ctx.signals.signals(
            exchange=exchange, symbol=symbol, interval=interval, rule=rule, kind=kind,
            start=_time(_bounded(start, "start"), "start"), end=_time(_bounded(end, "end"), "end"),
            limit=cap(limit, "limit"), cursor=_bounded(cursor, "cursor", _CURSOR_LENGTH),
        )  # fmt: skip
        return SignalPage(items=[Signal.of(s) for s in page.signals], next_cursor=page.next_cursor)


# ---- errors --------------------------------------------------------------------------


def _public(exc: BaseException) -> tuple[str, dict[str, Any]]:
    """What the caller reads of a resolver's failure: message and extensions."""
    if isinstance(exc, PermissionDenied):
        return str(exc), {"code": "FORBIDDEN", "permission": exc.permission}
    if isinstance(exc, StorageError):  # its message names the database: log only
        return STORAGE_DOWN, {"code": "SERVICE_UNAVAILABLE"}
    if isinstance(exc, Unavailable):
        return str(exc), {"code": "SERVICE_UNAVAILABLE"}
    if isinstance(exc, DomainError):
        code = "NOT_FOUND" if isinstance(exc, NotFound | LedgerNotFound) else "BAD_USER_INPUT"
        extensions: dict[str, Any] = {"code": code}
        if exc.field is not None:
            extensions["field"] = exc.field
        return str(exc), extensions
    return MASKED, {"code": "INTERNAL_SERVER_ERROR"}


def _from_resolver(error: GraphQLError) -> bool:
    """A resolver raised it (not the parser, the validation or the limits)."""
    return error.original_error is not None and not isinstance(error.original_error, GraphQLError)


class PublicErrors(MaskErrors):
    """Strawberry's error masking, keeping (with a code) the causes a caller may read."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=_from_resolver, error_message=MASKED)

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        assert error.original_error is not None  # only resolver errors are masked
        message, extensions = _public(error.original_error)
        return GraphQLError(
            message, nodes=error.nodes, source=error.source, positions=error.positions,
            path=error.path, extensions=extensions,
        )  # fmt: skip


class _Schema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Log what went wrong on the server; the caller's own mistakes are its answer."""
        for error in errors:
            exc = error.original_error
            if not _from_resolver(error) or isinstance(exc, DomainError | PermissionDenied):
                continue
            if isinstance(exc, StorageError):
                log.warning("graphql storage failed", path=error.path, error=str(exc))
            else:
                log.error("graphql resolver failed", path=error.path, exc_info=exc)


def graphql_schema(
    *, max_depth: int = 8, max_tokens: int = 1000, max_aliases: int = 15
) -> strawberry.Schema:
    """The schema with its limits; extensions are built per request (they hold state)."""
    return _Schema(
        query=Query,
        config=StrawberryConfig(scalar_map={Long: LONG}),
        extensions=[
            # Introspection is not counted here: graphql-core's own validation
            # (MaxIntrospectionDepthRule, among its specified rules) bounds it.
            partial(QueryDepthLimiter, max_depth=max_depth),
            partial(MaxTokensLimiter, max_token_count=max_tokens),
            partial(MaxAliasesLimiter, max_alias_count=max_aliases),
            PublicErrors,
        ],
    )


def graphql_router(
    ledger: LedgerService,
    valuation: PortfolioValuation,
    signals: SignalQueries,
    principal: Callable[..., Awaitable[Principal]],
    *,
    max_depth: int = 8,
    max_tokens: int = 1000,
    max_aliases: int = 15,
) -> APIRouter:
    """``POST /api/v1/graphql`` over the services; ``principal`` is the app's
    authentication dependency (it raises ``AuthenticationError`` for a 401).

    ``max_depth``: nesting of fields (introspection fields are not counted);
    ``max_tokens``: lexical tokens of the document (bounds introspection too);
    ``max_aliases``: aliased fields, each of which would run its resolver again.
    """
    schema = graphql_schema(max_depth=max_depth, max_tokens=max_tokens, max_aliases=max_aliases)

    # A default, not Annotated: annotations are strings that FastAPI resolves in the
    # module's namespace, where ``principal`` (a local) is not.
    async def context(
        request: Request,
        caller: Principal = Depends(principal),  # noqa: B008
    ) -> GraphQLContext:
        await _json_body_is_a_request(request)
        return GraphQLContext(caller, ledger, valuation, signals)

    router: GraphQLRouter[GraphQLContext, None] = GraphQLRouter(
        schema, path=PATH, graphql_ide=None, allow_queries_via_get=False,
        context_getter=context, tags=["graphql"], route_class=_GraphQLRoute,
    )  # fmt: skip
    # POST only: no IDE page or GET queries (a GET is a 405 problem), and no
    # WebSocket endpoint, since there are no subscriptions.
    router.routes[:] = [
        r for r in router.routes if isinstance(r, APIRoute) and "POST" in (r.methods or ())
    ]
    for route in router.routes:
        assert isinstance(route, APIRoute)
        route.summary = "GraphQL queries: portfolio, positions, transactions, signals"
        route.description = "See docs/graphql.md; the schema is served by introspection."
        route.openapi_extra = _REQUEST_BODY
    return router


_REQUEST_BODY: Final = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["query"],
                    "properties": {
                        "query": {"type": "string"},
                        "variables": {"type": "object"},
                        "operationName": {"type": "string"},
                    },
                },
                "example": ex.GRAPHQL_QUERY,
            }
        },
    },
    "responses": {"200": {"content": {"application/json": {"example": ex.GRAPHQL_DATA}}}},
}


async def _json_body_is_a_request(request: Request) -> None:
    """A body that is not JSON, or JSON but no object (``null``, a number, a
    string): a 400 naming ``body``. Strawberry fails (500) on both."""
    if "application/json" not in request.headers.get("content-type", "").lower():
        return  # strawberry refuses other media types itself
    try:
        data = json.loads(await request.body())
    except ValueError:  # bytes that are not UTF-8 would fail strawberry too
        raise DomainError("Unable to parse request body as JSON", field="body") from None
    if not isinstance(data, dict | list):  # a list is a batch, which strawberry refuses
        raise DomainError("the body must be a JSON object with a `query`", field="body")


class _GraphQLRoute(APIRoute):
    """Strawberry answers a request it cannot read (not JSON, no query) in plain
    text; the API answers every error in problem+json."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            response = await handler(request)
            if response.status_code < 400 or not isinstance(response, PlainTextResponse):
                return response
            reason = bytes(response.body).decode("utf-8", "replace")
            status = response.status_code
            code = {404: "not-found", 405: "method-not-allowed"}.get(status, "invalid-parameter")
            errors = [{"name": "body", "reason": reason}]
            return problem(request.url.path, code, status, reason, errors=errors)

        return run
