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
from fastapi.openapi.utils import get_openapi
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cryptodesk.adapters.ratelimit.base import RateLimiter
from cryptodesk.api.http_hygiene import (
    BodyLimitMiddleware,
    ETagMiddleware,
    SecurityHeadersMiddleware,
    cors_options,
)
from cryptodesk.api.problems import (
    PROBLEM_MEDIA_TYPE,
    install_problem_handlers,
    internal_error,
    problem,
)
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
) -> FastAPI:
    """The API; ``jobs`` lists the scheduled jobs (``GET /api/v1/admin/jobs``),
    ``reference_prices`` serves cached CoinGecko prices when assets are configured,
    ``auth`` authenticates callers (without it only public routes answer)."""
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
    # Outermost last: CORS, security headers, metrics, rate limits, ETags, body limits.
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
    if cors := cors_options(http.cors_origins):
        app.add_middleware(CORSMiddleware, **cors)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


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
    problem_ref = "#/components/schemas/Problem"
    annotate_permissions(app, doc, problem_ref)
    for path in doc.get("paths", {}).values():
        for operation in path.values():
            responses = operation.get("responses", {})
            default_422 = responses.get("422", {}).get("content", {}).get("application/json", {})
            if default_422.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                if "requestBody" in operation:  # a body that does not fit its model
                    responses["422"] = _problem_response(problem_ref, "Invalid request body.")
                else:  # parameter errors are 400
                    responses.pop("422")
            for response in responses.values():
                content = response.get("content", {})
                body = content.get("application/json")
                if body is not None and body.get("schema", {}).get("$ref") == problem_ref:
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
    schemas = doc.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    app.openapi_schema = doc
    return doc


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
        for route in self._routes:
            match, _ = route.matches(scope)
            path = getattr(route, "path", None)
            if match is Match.FULL and path is not None:
                return str(path)
            if match is Match.PARTIAL and partial is None and path is not None:
                partial = str(path)
        return partial or UNMATCHED_ROUTE
