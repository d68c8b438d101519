"""The FastAPI application: routers, problem+json errors, request metrics.

``create_app`` is pure wiring: it receives services already built by
``runtime.py`` and owns no state of its own, so tests build it around fakes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_fields_from_routes, get_openapi
from fastapi.routing import iter_route_contexts
from pydantic import TypeAdapter
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cryptodesk.adapters.ratelimit.base import RateLimiter
from cryptodesk.api.fast_reads import FastMarketReads, market_reads
from cryptodesk.api.http_hygiene import (
    CACHEABLE_PATHS,
    BodyLimitMiddleware,
    ETagMiddleware,
    PathPrefixes,
    SecurityHeadersMiddleware,
    cors_options,
)
from cryptodesk.api.problems import (
    PROBLEM_MEDIA_TYPE,
    install_problem_handlers,
    internal_error,
    problem,
)
from cryptodesk.api.ratelimit import EXEMPT_PATHS as RATE_EXEMPT_PATHS
from cryptodesk.api.ratelimit import RateLimitMiddleware, RateTiers, install_rate_limit_handler
from cryptodesk.api.routes.admin import admin_router
from cryptodesk.api.routes.auth import auth_router
from cryptodesk.api.routes.health import health_router
from cryptodesk.api.routes.market import market_router
from cryptodesk.api.security import Auth, annotate_permissions
from cryptodesk.domain.jobs import JobStatus
from cryptodesk.observability.health import HealthRegistry
from cryptodesk.observability.metrics import Metrics
from cryptodesk.services.market_queries import MarketQueries

log = structlog.get_logger(__name__)
# One label for every path no route matches, so scanners cannot grow the
# metric's cardinality without bound.
UNMATCHED_ROUTE = "<unmatched>"


@dataclass(frozen=True)
class HttpOptions:
    """CORS origins, body size limits (per path for uploads) and HSTS (docs/http.md)."""

    cors_origins: str = ""
    max_body_bytes: int = 1_048_576
    hsts_seconds: int = 0
    upload_limits: Mapping[str, int] = field(default_factory=dict)


def create_app(
    queries: MarketQueries,
    metrics: Metrics,
    health: HealthRegistry,
    *,
    title: str = "cryptodesk",
    version: str = "0.0.0",
    readiness_timeout: float = 2.0,
    jobs: Callable[[], Awaitable[list[JobStatus]]] | None = None,
    reference_prices: APIRouter | None = None,
    routers: Sequence[APIRouter] = (),
    auth: Auth | None = None,
    rate_limiter: RateLimiter | None = None,
    rate_tiers: RateTiers | None = None,
    trusted_proxies: str = "",
    http: HttpOptions = HttpOptions(),
    fast_reads: bool = True,
) -> FastAPI:
    """The API; ``jobs`` lists the scheduled jobs (``GET /api/v1/admin/jobs``),
    ``reference_prices`` serves cached CoinGecko prices when assets are configured,
    ``auth`` authenticates callers (without it only public routes answer),
    ``fast_reads`` answers anonymous market reads without FastAPI (api/fast_reads.py)."""
    app = FastAPI(
        title=title,
        version=version,
        description=(
            "Crypto market data and analytics. Prices and amounts are decimal strings, "
            "times ISO 8601 UTC; errors are RFC 9457 application/problem+json."
        ),
    )
    app.state.auth = auth
    if auth is not None:
        app.include_router(auth_router(auth.service, login_charge=auth.login_charge))
    app.include_router(health_router(health, metrics, check_timeout=readiness_timeout))
    app.include_router(market_router(queries))
    if jobs is not None:
        app.include_router(admin_router(jobs))
    if reference_prices is not None:
        app.include_router(reference_prices)
    for router in routers:  # analytics: backtests, signals
        app.include_router(router)
    install_problem_handlers(app)
    install_rate_limit_handler(app)
    # Outermost last: CORS, fast market reads, security headers, metrics, rate limits,
    # ETags, body limits.
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=http.max_body_bytes, path_limits=dict(http.upload_limits)
    )
    app.add_middleware(ETagMiddleware)
    if rate_limiter is not None and rate_tiers is not None:
        app.add_middleware(
            RateLimitMiddleware, limiter=rate_limiter, tiers=rate_tiers,
            trusted_proxies=trusted_proxies,
        )  # fmt: skip
    app.add_middleware(
        RequestMetricsMiddleware,
        metrics=metrics,
        routes=app.router.routes,
        degraded=lambda: queries.cache_degraded,
    )
    app.add_middleware(SecurityHeadersMiddleware, hsts_seconds=http.hsts_seconds)
    if fast_reads:
        app.add_middleware(
            FastMarketReads, reads=market_reads(queries), metrics=metrics,
            handlers=app.exception_handlers, degraded=lambda: queries.cache_degraded,
            public=lambda: _public_market_data(app),
            security=lambda inner: SecurityHeadersMiddleware(inner, hsts_seconds=http.hsts_seconds),
            limiter=rate_limiter, tier=rate_tiers.ip if rate_tiers is not None else None,
            trusted_proxies=trusted_proxies,
        )  # fmt: skip
    if cors := cors_options(http.cors_origins):
        app.add_middleware(CORSMiddleware, **cors)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _public_market_data(app: FastAPI) -> bool:
    """Anonymous callers may read market data (as ``security.Permit`` decides it)."""
    auth: Auth | None = getattr(app.state, "auth", None)
    return auth is None or auth.public_market_data


def create_health_app(
    health: HealthRegistry, metrics: Metrics, *, version: str = "0.0.0"
) -> FastAPI:
    """Only ``/healthz``, ``/readyz`` and ``/metrics``: what a process serves while it
    is still connecting to its dependencies."""
    app = FastAPI(title="cryptodesk (starting)", version=version, openapi_url=None)
    app.include_router(health_router(health, metrics))

    async def starting(scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        detail = "the service is starting: see /readyz for what it waits on"
        response = problem(path, "service-unavailable", 503, detail, headers={"Retry-After": "5"})
        await response(scope, receive, send)

    app.mount("/", starting)  # anything but the probes: 503 until the API is up
    return app


class AppSwitch:
    """The ASGI app the server runs; ``app`` is swapped once the process is ready.

    Serving starts before the dependencies are reachable, so probes get an
    answer (``/readyz`` saying what is missing) instead of a refused connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, corrected to what the API really answers.

    FastAPI documents a 422 for every route with parameters and labels every
    model ``application/json``; this API answers 400 problem+json instead.
    The answers the edge gives on any route are added where they can occur:
    400 for a malformed parameter or an unparsable body, 404 for an id that
    names nothing, 413 over the body limit, 422 for a body that does not fit
    its model, 429 over a rate limit, and the ETag and 304 of cacheable reads.
    """
    if app.openapi_schema is not None:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    _restore_example_nulls(app, doc)
    problem_ref = "#/components/schemas/Problem"
    annotate_permissions(app, doc, problem_ref)
    rate_limited = any(getattr(m, "cls", None) is RateLimitMiddleware for m in app.user_middleware)
    cacheable = PathPrefixes(CACHEABLE_PATHS)
    for path, item in doc.get("paths", {}).items():
        for method, operation in item.items():
            responses = operation.setdefault("responses", {})
            default_422 = responses.get("422", {}).get("content", {}).get("application/json", {})
            if default_422.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                responses.pop("422")
            for status, description in _edge_answers(
                operation, rate_limited=rate_limited and path not in RATE_EXEMPT_PATHS
            ):
                responses.setdefault(str(status), _problem_response(problem_ref, description))
            if method == "get" and path in cacheable:
                _document_etag(responses)
            for response in responses.values():
                content = response.get("content", {})
                body = content.get("application/json")
                if body is not None and body.get("schema", {}).get("$ref") == problem_ref:
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
    schemas = doc.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    _plain_tuples(schemas)
    app.openapi_schema = doc
    return doc


def _plain_tuples(node: Any) -> None:
    """A tuple of like items (an order book level: ``[price, amount]``) as a
    fixed-length array: ``items`` with pydantic's ``minItems``/``maxItems``.

    Pydantic writes every tuple as ``prefixItems``, which OpenAPI 3.0 tools and
    some 3.1 tools (schemathesis 4 among them) do not read; for like items the
    two say the same.
    """
    if isinstance(node, dict):
        prefix = node.get("prefixItems")
        if isinstance(prefix, list) and prefix and "items" not in node and _alike(prefix):
            node["items"] = node.pop("prefixItems")[0]
        for value in node.values():
            _plain_tuples(value)
    elif isinstance(node, list):
        for value in node:
            _plain_tuples(value)


def _alike(items: list[Any]) -> bool:
    return all(item == items[0] for item in items)


def _edge_answers(operation: dict[str, Any], *, rate_limited: bool) -> list[tuple[int, str]]:
    """(status, description) of the errors the framework and middlewares give
    ``operation`` whatever its route does."""
    parameters = operation.get("parameters", [])
    has_body = "requestBody" in operation
    answers = []
    if has_body or any(_can_be_malformed(p) for p in parameters):
        answers.append((400, _BAD_REQUEST))
    if any(p.get("in") == "path" for p in parameters):
        answers.append((404, "Nothing of this tenant has that id (or no route has that path)."))
    if has_body:
        answers.append((413, "The request body is larger than the limit (`errors` names `body`)."))
        answers.append((422, "A body field is missing, unknown or of the wrong type."))
    if rate_limited:
        answers.append((429, "Too many requests: see `Retry-After` (docs/rate-limits.md)."))
    return answers


def _document_etag(responses: dict[str, Any]) -> None:
    """The ETag layer's part in a cacheable read (docs/http.md): answers to requests
    without credentials carry an ``ETag``; a matching ``If-None-Match`` gets a 304."""
    responses.setdefault(
        "304", {"description": "Not modified: `If-None-Match` names the body's `ETag`."}
    )


def _can_be_malformed(parameter: dict[str, Any]) -> bool:
    """Any query or header parameter can be; a path segment only when its schema
    asks more of it than being text."""
    schema = parameter.get("schema", {})
    if parameter.get("in") != "path" or schema.get("type") != "string":
        return True
    return any(key not in ("type", "title", "description") for key in schema)


_BAD_REQUEST = (
    "A parameter is malformed, out of range or of the wrong type (`errors` names it), "
    "or the body cannot be read."
)


def _restore_example_nulls(app: FastAPI, doc: dict[str, Any]) -> None:
    """FastAPI encodes the document with ``exclude_none``, which also drops the
    null fields of every example; put each model's own examples back."""
    schemas = doc.get("components", {}).get("schemas", {})
    for route_field in get_fields_from_routes(app.routes):
        annotation = route_field.field_info.annotation
        if annotation is None:
            continue
        for mode in ("validation", "serialization"):
            full = TypeAdapter(annotation).json_schema(mode=mode)
            own = {full["title"]: full} if "title" in full else {}
            for name, schema in {**own, **full.get("$defs", {})}.items():
                for component in (name, f"{name}-Input", f"{name}-Output"):
                    if "examples" in schema and "examples" in schemas.get(component, {}):
                        schemas[component]["examples"] = schema["examples"]


def _problem_response(ref: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": ref}}}}


DEGRADED_HEADER = b"cryptodesk-degraded"


class RequestMetricsMiddleware:
    """Times each request by route template and turns stray exceptions into a 500.

    Catching here, inside Starlette's ServerErrorMiddleware, means the 500 is
    problem+json and is logged once with context, instead of the server
    logging a bare traceback after the response.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        routes: list[BaseRoute],
        degraded: Callable[[], bool] = lambda: False,
    ) -> None:
        self._app = app
        self._metrics = metrics
        self._routes = routes
        self._degraded = degraded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = int(message["status"])
                started = True
                if self._degraded():
                    # The answer came from the database because the cache is down.
                    headers = [*message.get("headers", []), (DEGRADED_HEADER, b"cache")]
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self._app(scope, receive, send_wrapper)
        except Exception:
            log.exception(
                "unhandled error serving request",
                method=scope.get("method"),
                path=scope.get("path"),
                route=self._template(scope),
            )
            if started:  # too late for a clean 500; let the server drop the connection
                raise
            status = 500
            await internal_error(str(scope.get("path", "")))(scope, receive, send)
        finally:
            self._metrics.http_request_duration.labels(
                scope.get("method", ""), self._template(scope), str(status)
            ).observe(time.perf_counter() - began)

    def _template(self, scope: Scope) -> str:
        """The matched route's path template; a wrong method still names the route.

        The router records the API route it selected in ``scope["route"]``;
        top-level routes (the docs pages) are matched here.
        """
        selected = getattr(scope.get("route"), "path", None)
        if isinstance(selected, str):
            return selected
        partial: str | None = None
        # Included routers are wrapped (FastAPI >= 0.16x); their contexts match like routes.
        for route in iter_route_contexts(self._routes):
            match, _ = route.matches(scope)
            path = getattr(route, "path_format", None)
            if match is Match.FULL and path is not None:
                return str(path)
            if match is Match.PARTIAL and partial is None and path is not None:
                partial = str(path)
        return partial or UNMATCHED_ROUTE
