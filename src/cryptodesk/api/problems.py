"""RFC 9457 problem details for every error the API returns.

Each error is ``application/problem+json`` with ``type``, ``title``,
``status``, ``detail`` and ``instance`` (the request path); parameter errors
add ``errors: [{"name": <parameter>, "reason": <text>}]``. The ``type`` URIs
are stable identifiers clients may branch on (they need not resolve):

==========================================================  ======
``https://cryptodesk.dev/problems/invalid-parameter``       400   a query parameter is malformed,
                                                                  out of range or of the wrong type
``https://cryptodesk.dev/problems/unknown-interval``        400   interval not built by this server
``https://cryptodesk.dev/problems/invalid-cursor``          400   cursor not issued by this server,
                                                                  or issued for another query
``https://cryptodesk.dev/problems/invalid-body``            422   a JSON body field is missing,
                                                                  unknown or of the wrong type
``https://cryptodesk.dev/problems/unauthorized``            401   credentials missing, malformed,
                                                                  expired, tampered or revoked
``https://cryptodesk.dev/problems/forbidden``               403   role or key scopes lack the
                                                                  permission the route needs
``https://cryptodesk.dev/problems/conflict``                409   name or e-mail taken already
``https://cryptodesk.dev/problems/unknown-exchange``        404   exchange not served here
``https://cryptodesk.dev/problems/unknown-symbol``          404   symbol not served here
``https://cryptodesk.dev/problems/no-data``                 404   known market, nothing received yet
``https://cryptodesk.dev/problems/not-found``               404   no such route
``https://cryptodesk.dev/problems/method-not-allowed``      405   route exists, method does not
``https://cryptodesk.dev/problems/payload-too-large``       413   the request body is over the size
                                                                  limit (``errors`` names ``body``)
``https://cryptodesk.dev/problems/internal-error``          500   a bug; details are in the log only
``https://cryptodesk.dev/problems/service-unavailable``     503   a backend (cache, db) is down
==========================================================  ======

Query-parameter errors are 400, never FastAPI's default 422: the request is
malformed, there is no body whose semantics could be unprocessable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from cryptodesk.domain.auth import AuthenticationError, PermissionDenied
from cryptodesk.domain.errors import DomainError
from cryptodesk.services.market_queries import NotFound, QueryError, Unavailable

log = structlog.get_logger(__name__)

PROBLEM_BASE = "https://cryptodesk.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"

TITLES: dict[str, str] = {
    "invalid-parameter": "Invalid parameter",
    "unknown-interval": "Unknown interval",
    "invalid-cursor": "Invalid cursor",
    "invalid-body": "Invalid request body",
    "unauthorized": "Unauthorized",
    "forbidden": "Forbidden",
    "unknown-exchange": "Unknown exchange",
    "unknown-symbol": "Unknown symbol",
    "no-data": "No data yet",
    "not-found": "Not found",
    "method-not-allowed": "Method not allowed",
    "payload-too-large": "Payload too large",
    "internal-error": "Internal server error",
    "service-unavailable": "Service unavailable",
}


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


class NoData(Exception):
    """A configured market with nothing cached yet (e.g. no order book received)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def problem(
    request_path: str,
    code: str,
    status: int,
    detail: str,
    *,
    errors: Sequence[Mapping[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> ProblemResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": TITLES.get(code, HTTPStatus(status).phrase),
        "status": status,
        "detail": detail,
        "instance": request_path,
    }
    if errors:
        body["errors"] = [dict(e) for e in errors]
    return ProblemResponse(body, status_code=status, headers=dict(headers or {}))


def internal_error(request_path: str) -> ProblemResponse:
    """The 500 body: deliberately generic; the traceback goes to the log."""
    return problem(
        request_path, "internal-error", 500, "an unexpected error occurred; it has been logged"
    )


def _status_of(exc: QueryError) -> int:
    if exc.code == "conflict":
        return 409
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Unavailable):
        return 503
    return 400


async def _on_query_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    code = exc.code if isinstance(exc, QueryError) else "invalid-parameter"
    status = _status_of(exc) if isinstance(exc, QueryError) else 400
    errors = [{"name": exc.field, "reason": str(exc)}] if exc.field and status < 500 else None
    return problem(request.url.path, code, status, str(exc), errors=errors)


async def _on_no_data(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NoData)
    return problem(request.url.path, "no-data", 404, exc.detail)


async def _on_validation(request: Request, exc: Exception) -> Response:
    """Query, path and header errors: 400; a JSON body that does not fit its model: 422."""
    assert isinstance(exc, RequestValidationError)
    errors = []
    in_body = False
    for err in exc.errors():
        where = err.get("loc", ())
        in_body = in_body or (bool(where) and where[0] == "body")
        loc = [str(part) for part in where if part not in ("query", "path", "body", "header")]
        errors.append({"name": ".".join(loc) or "request", "reason": str(err.get("msg", ""))})
    names = ", ".join(sorted({e["name"] for e in errors}))
    if in_body:
        return problem(
            request.url.path, "invalid-body", 422, f"invalid field: {names}", errors=errors
        )
    return problem(
        request.url.path, "invalid-parameter", 400, f"invalid parameter: {names}", errors=errors
    )


async def _on_unauthenticated(request: Request, exc: Exception) -> Response:
    return problem(request.url.path, "unauthorized", 401, str(exc),
                   headers={"WWW-Authenticate": 'Bearer realm="cryptodesk"'})  # fmt: skip


async def _on_forbidden(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PermissionDenied)
    return problem(request.url.path, "forbidden", 403, str(exc))


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = {404: "not-found", 405: "method-not-allowed"}.get(status, "invalid-parameter")
    if status >= 500:
        code = "service-unavailable" if status == 503 else "internal-error"
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
    if status == 404:
        detail = f"no route {request.url.path}"
    elif status == 405:
        detail = f"method {request.method} is not allowed on {request.url.path}"
    return problem(request.url.path, code, status, detail, headers=exc.headers)


def install_problem_handlers(app: FastAPI) -> None:
    """Map every error the framework or the services raise to problem+json."""
    app.add_exception_handler(DomainError, _on_query_error)
    app.add_exception_handler(NoData, _on_no_data)
    app.add_exception_handler(AuthenticationError, _on_unauthenticated)
    app.add_exception_handler(PermissionDenied, _on_forbidden)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
