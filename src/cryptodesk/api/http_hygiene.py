"""HTTP hygiene as pure ASGI middlewares: security headers, body limits, ETags, CORS.

Each is a plain ASGI callable (not ``BaseHTTPMiddleware``, which runs every
request through an extra task and stream): they sit on the market-data read
path, where a few microseconds per request show in the throughput.

Order from the outside in (see docs/http.md): CORS, security headers, request
metrics, rate limits, ETags, body limit. ETags decide on the request's own
credentials, not on the ``no-store`` the security headers add later, so the
two may sit either way round.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cryptodesk.api.problems import problem
from cryptodesk.api.routes.market import AGE_HEADER, STALE_HEADER

# A JSON API loads nothing, frames nothing and is framed by nobody.
API_CSP: Final = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# FastAPI's Swagger UI and ReDoc pages run an inline script and load their
# bundles from a CDN; a policy that allows that says nothing, so they get none.
DOCS_PATHS: Final = ("/docs", "/redoc")
# The market data and signal reads: the same query gives the same bytes until
# the data changes, so clients revalidate instead of downloading again.
CACHEABLE_PATHS: Final = tuple(
    f"/api/v1/{name}"
    for name in (
        "markets", "tickers", "candles", "orderbook", "reference-prices",
        "signals", "signal-rules", "indicators",
    )
)  # fmt: skip
ETAG_MAX_BYTES: Final = 1_048_576
CORS_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
CORS_REQUEST_HEADERS: Final = (
    "Authorization", "Content-Type", "If-None-Match", "X-API-Key",
)  # fmt: skip
CORS_EXPOSED_HEADERS: Final = (
    "ETag", "Location", "Retry-After", "Content-Disposition", "WWW-Authenticate",
    "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy",
    AGE_HEADER, STALE_HEADER, "cryptodesk-degraded",
)  # fmt: skip
CORS_MAX_AGE: Final = 600

_CREDENTIAL_HEADERS: Final = frozenset({b"authorization", b"x-api-key"})
_ENTITY_TAG: Final = re.compile(r'(?:W/)?"[^"]*"')
_ORIGIN: Final = re.compile(r"https?://[^/?#\s@]+")
# Representation metadata a 304 leaves out (RFC 9110 section 15.4.5).
_NOT_IN_304: Final = frozenset(
    {b"content-length", b"content-type", b"content-encoding", b"transfer-encoding"}
)


class PathPrefixes:
    """Paths at or below any of ``prefixes``: ``/a`` covers ``/a`` and ``/a/b``, not ``/ab``."""

    def __init__(self, prefixes: Collection[str]) -> None:
        bare = [p.rstrip("/") for p in prefixes]
        self._exact = frozenset(bare)
        self._below = tuple(p + "/" for p in bare)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and (path in self._exact or path.startswith(self._below))


def has_credentials(scope: Scope) -> bool:
    """The request carries ``Authorization`` or ``X-API-Key``: its answer is private."""
    # ASGI header names are lower-case.
    return any(name in _CREDENTIAL_HEADERS for name, _ in scope.get("headers", ()))


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


# ---- security headers --------------------------------------------------------------------


class SecurityHeadersMiddleware:
    """Adds ``nosniff``, ``DENY`` framing, ``no-referrer`` and a CSP to every answer.

    A header the route already set is kept. HSTS is sent only when
    ``hsts_seconds`` > 0: behind HTTPS, never on a plain-HTTP deployment. An
    answer to a request with credentials is ``Cache-Control: no-store``
    (replacing any other), so no shared or browser cache keeps private data.
    The docs pages get no CSP (``docs_paths``); everything else gets ``csp``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        hsts_seconds: int = 0,
        csp: str = API_CSP,
        docs_paths: Sequence[str] = DOCS_PATHS,
    ) -> None:
        if hsts_seconds < 0:
            raise ValueError(f"hsts_seconds must be 0 (off) or positive, not {hsts_seconds}")
        self._app = app
        self._docs_paths = PathPrefixes(docs_paths)
        common = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
        ]
        if hsts_seconds:
            common.append((b"strict-transport-security", f"max-age={hsts_seconds}".encode()))
        self._docs_headers = tuple(common)
        self._api_headers = (*common, (b"content-security-policy", csp.encode("latin-1")))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        extra = self._docs_headers if scope["path"] in self._docs_paths else self._api_headers
        private = has_credentials(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name for name, _ in headers}
                headers.extend(h for h in extra if h[0] not in present)
                if private:
                    headers = [h for h in headers if h[0] != b"cache-control"]
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self._app(scope, receive, send_with_headers)


# ---- body size ---------------------------------------------------------------------------


class BodyLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with a 413 problem+json.

    A declared ``Content-Length`` over the limit is refused before the app
    runs. A body without one (chunked) is counted as the app reads it: at the
    first chunk past the limit the 413 is sent, the app is told the client
    went away, and whatever it answers or raises after that is dropped;
    nothing more is read. ``path_limits`` gives exact paths (uploads) a limit of their own.
    The 413 closes the connection, so an unread body is never parsed as the
    next request.
    """

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, path_limits: Mapping[str, int] | None = None
    ) -> None:
        limits = dict(path_limits or {})
        if max_bytes < 0 or any(v < 0 for v in limits.values()):
            raise ValueError("body limits must be 0 or more bytes")
        self._app = app
        self._max_bytes = max_bytes
        self._path_limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        limit = self._path_limits.get(path, self._max_bytes)
        declared = _header(scope.get("headers", ()), b"content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > limit:
                await _too_large(path, limit)(scope, receive, send)
            else:  # the server never delivers more than the declared length
                await self._app(scope, receive, send)
            return

        received = 0
        refused = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not started:
                        await _too_large(path, limit)(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:  # the 413 went out; the app's answer to the disconnect is dropped
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self._app(scope, limited_receive, guarded_send)
        except Exception:
            # A route reading the stream itself gets ``ClientDisconnect``: the
            # request is answered, so that is the end of it, not an error.
            if not refused:
                raise


def _too_large(path: str, limit: int) -> ASGIApp:
    detail = f"the request body is larger than {limit} bytes"
    return problem(
        path,
        "payload-too-large",
        413,
        detail,
        errors=[{"name": "body", "reason": detail}],
        headers={"Connection": "close"},
    )


# ---- entity tags -------------------------------------------------------------------------


def entity_tag(body: bytes, *, weak: bool = False) -> str:
    """The quoted tag of ``body``: 128 bits of BLAKE2b, collisions out of reach."""
    tag = f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'
    return f"W/{tag}" if weak else tag


def if_none_match_hits(header: str, etag: str) -> bool:
    """``If-None-Match: header`` names ``etag`` (``*``, a list, weak comparison)."""
    if header.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(tag.removeprefix("W/") == opaque for tag in _ENTITY_TAG.findall(header))


class ETagMiddleware:
    """Tags 200 answers to GET/HEAD under ``paths``; answers 304 to a matching
    ``If-None-Match``.

    The tag is a hash of the body, so it changes exactly when the bytes do.
    Skipped: other methods and statuses, bodies over ``max_bytes`` (sent
    through as they come), ``Cache-Control: no-store`` answers, and requests
    with credentials (their answers are private and never stored). A tag the
    route set itself is used as it is. The 304 keeps the 200's headers but
    the representation metadata, and has no body.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        paths: Sequence[str] = CACHEABLE_PATHS,
        max_bytes: int = ETAG_MAX_BYTES,
        weak: bool = False,
    ) -> None:
        self._app = app
        self._paths = PathPrefixes(paths)
        self._max_bytes = max_bytes
        self._weak = weak

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in ("GET", "HEAD")
            or scope["path"] not in self._paths
            or has_credentials(scope)
        ):
            await self._app(scope, receive, send)
            return
        raw_condition = _header(scope.get("headers", ()), b"if-none-match")
        condition = raw_condition.decode("latin-1") if raw_condition is not None else None
        start: Message = {}
        chunks: list[bytes] = []
        size = 0
        mode = "start"  # then "buffer", "pass" (send as it comes) or "drop" (304 sent)

        async def send_not_modified(etag: bytes) -> None:
            kept = [h for h in start.get("headers", ()) if h[0] not in _NOT_IN_304]
            if _header(kept, b"etag") is None:
                kept.append((b"etag", etag))
            await send({"type": "http.response.start", "status": 304, "headers": kept})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def flush() -> None:
            await send(start)
            for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            chunks.clear()

        async def etag_send(message: Message) -> None:
            nonlocal start, size, mode
            if mode == "pass":
                await send(message)
            elif mode == "drop":
                return
            elif mode == "start":
                start = message
                own = _header(start.get("headers", ()), b"etag")
                if not _taggable(start):
                    mode = "pass"
                    await send(message)
                elif own is not None:
                    if condition is not None and if_none_match_hits(condition, own.decode()):
                        mode = "drop"
                        await send_not_modified(own)
                    else:
                        mode = "pass"
                        await send(message)
                else:
                    mode = "buffer"
            elif message["type"] != "http.response.body":  # e.g. pathsend: not ours to tag
                mode = "pass"
                await flush()
                await send(message)
            else:
                body: bytes = message.get("body", b"")
                size += len(body)
                if size > self._max_bytes:
                    mode = "pass"
                    await flush()
                    await send(message)
                    return
                if message.get("more_body", False):
                    chunks.append(body)
                    return
                whole = b"".join((*chunks, body)) if chunks else body
                if not whole and scope["method"] == "HEAD":  # no bytes to tag
                    mode = "pass"
                    await flush()
                    await send(message)
                    return
                etag = entity_tag(whole, weak=self._weak).encode("ascii")
                if condition is not None and if_none_match_hits(condition, etag.decode()):
                    mode = "drop"
                    await send_not_modified(etag)
                    return
                mode = "pass"
                await send({**start, "headers": [*start.get("headers", ()), (b"etag", etag)]})
                await send({"type": "http.response.body", "body": whole, "more_body": False})

        await self._app(scope, receive, etag_send)


def _taggable(start: Message) -> bool:
    if start.get("status") != 200:
        return False
    cache_control = _header(start.get("headers", ()), b"cache-control")
    return cache_control is None or b"no-store" not in cache_control.lower()


# ---- CORS --------------------------------------------------------------------------------


def cors_options(settings_value: str) -> dict[str, Any]:
    """Keyword arguments for Starlette's ``CORSMiddleware``; ``{}`` means CORS off.

    ``settings_value`` lists allowed origins, comma-separated
    (``https://app.example.com,http://localhost:3000``), or ``*`` for any.
    Credentials travel in headers (``Authorization``, ``X-API-Key``), never
    cookies, so credentialed CORS stays off and ``*`` is safe to allow.
    """
    origins = [o.strip().rstrip("/").lower() for o in settings_value.split(",") if o.strip()]
    if not origins:
        return {}
    bad = [o for o in origins if o != "*" and not _ORIGIN.fullmatch(o)]
    if bad:
        raise ValueError(
            f"CORS origin {bad[0]!r} is not scheme://host[:port] (e.g. https://app.example.com)"
        )
    return {
        "allow_origins": ["*"] if "*" in origins else list(dict.fromkeys(origins)),
        "allow_methods": list(CORS_METHODS),
        "allow_headers": list(CORS_REQUEST_HEADERS),
        "expose_headers": list(CORS_EXPOSED_HEADERS),
        "allow_credentials": False,
        "max_age": CORS_MAX_AGE,
    }
