"""Security headers, body limits, ETags and CORS, driven over ASGI."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Message

from cryptodesk.api.app import create_app
from cryptodesk.api.http_hygiene import (
    BodyLimitMiddleware,
    ETagMiddleware,
    SecurityHeadersMiddleware,
    cors_options,
    entity_tag,
    if_none_match_hits,
)
from cryptodesk.domain import codec
from cryptodesk.domain.market import Ticker
from cryptodesk.observability.health import HealthRegistry
from cryptodesk.observability.metrics import Metrics
from cryptodesk.services import cache_keys
from cryptodesk.services.market_queries import MarketQueries
from tests.unit._fakes import T0, DictCache, ListStore

TICKERS = b'{"tickers":[{"symbol":"BTC/USDT","last":"125"}]}'
TAG = '"' + hashlib.blake2b(TICKERS, digest_size=16).hexdigest() + '"'
PROBLEM = "application/problem+json"
CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


def tiny_app() -> FastAPI:
    """Routes shaped like the API's: a cacheable read, a plain read, bodies."""
    app = FastAPI()

    @app.get("/api/v1/tickers")
    async def tickers() -> Response:
        return Response(TICKERS, media_type="application/json", headers={"x-age": "3"})

    @app.get("/api/v1/candles")
    async def candles(n: int = 3) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(n):
                yield b"chunk%d;" % i

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/api/v1/orderbook")
    async def orderbook(cache_control: str = "", etag: str = "", status: int = 200) -> Response:
        headers = {k: v for k, v in (("cache-control", cache_control), ("etag", etag)) if v}
        return Response(b"{}", status_code=status, headers=headers)

    @app.get("/plain")
    async def plain() -> JSONResponse:
        return JSONResponse({"ok": True}, headers={"x-frame-options": "SAMEORIGIN"})

    @app.post("/api/v1/tickers")
    @app.post("/echo")
    @app.post("/upload")
    async def echo(request: Request) -> dict[str, int]:
        return {"read": len(await request.body())}

    return app


def client_of(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def chunked(n: int, size: int = 4) -> AsyncIterator[bytes]:
    for _ in range(n):
        yield b"x" * size


# ---- security headers --------------------------------------------------------------------


async def test_every_answer_carries_the_security_headers() -> None:
    async with client_of(SecurityHeadersMiddleware(tiny_app())) as client:
        r = await client.get("/api/v1/tickers")
        missing = await client.get("/nowhere")
        plain = await client.get("/plain")
    for answer in (r, missing):
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["content-security-policy"] == CSP
        assert "strict-transport-security" not in answer.headers
        assert "cache-control" not in answer.headers
    assert missing.status_code == 404
    assert plain.headers.get_list("x-frame-options") == ["SAMEORIGIN"]  # the route's own


async def test_hsts_only_when_configured() -> None:
    async with client_of(SecurityHeadersMiddleware(tiny_app(), hsts_seconds=31_536_000)) as c:
        r = await c.get("/plain")
    assert r.headers["strict-transport-security"] == "max-age=31536000"
    with pytest.raises(ValueError, match="hsts_seconds"):
        SecurityHeadersMiddleware(tiny_app(), hsts_seconds=-1)


@pytest.mark.parametrize("credential", ["Authorization", "X-API-Key"])
async def test_answers_to_requests_with_credentials_are_no_store(credential: str) -> None:
    async with client_of(SecurityHeadersMiddleware(tiny_app())) as client:
        r = await client.get("/plain", headers={credential: "cdk_secret"})
        own = await client.get(
            "/api/v1/orderbook", params={"cache_control": "max-age=60"}, headers={credential: "x"}
        )
    assert r.headers.get_list("cache-control") == ["no-store"]
    assert own.headers.get_list("cache-control") == ["no-store"]


async def test_docs_pages_get_no_csp() -> None:
    async with client_of(SecurityHeadersMiddleware(tiny_app())) as client:
        docs = await client.get("/docs")
        redirect = await client.get("/docs/oauth2-redirect")
        redoc = await client.get("/redoc")
        schema = await client.get("/openapi.json")
    for page in (docs, redirect, redoc):
        assert page.status_code == 200
        assert "content-security-policy" not in page.headers
        assert page.headers["x-frame-options"] == "DENY"
    assert schema.headers["content-security-policy"] == CSP


# ---- body limit --------------------------------------------------------------------------


def limited(app: Any = None) -> BodyLimitMiddleware:
    return BodyLimitMiddleware(app or tiny_app(), max_bytes=10, path_limits={"/upload": 100})


def assert_413(r: httpx.Response, limit: int) -> None:
    detail = f"the request body is larger than {limit} bytes"
    assert r.status_code == 413
    assert r.headers["content-type"] == PROBLEM
    assert r.headers["connection"] == "close"
    assert r.json() == {
        "type": "https://cryptodesk.dev/problems/payload-too-large",
        "title": "Payload too large",
        "status": 413,
        "detail": detail,
        "instance": r.request.url.path,
        "errors": [{"name": "body", "reason": detail}],
    }


async def test_declared_length_over_the_limit_is_refused_before_the_app_runs() -> None:
    calls: list[str] = []
    app = tiny_app()

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        await app(scope, receive, send)

    async with client_of(limited(counting)) as client:
        at_limit = await client.post("/echo", content=b"x" * 10)
        over = await client.post("/echo", content=b"x" * 11)
        upload = await client.post("/upload", content=b"x" * 100)
        upload_over = await client.post("/upload", content=b"x" * 101)
    assert (at_limit.status_code, at_limit.json()) == (200, {"read": 10})
    assert (upload.status_code, upload.json()) == (200, {"read": 100})
    assert_413(over, 10)
    assert_413(upload_over, 100)
    assert calls == ["/echo", "/upload"]


async def test_a_chunked_body_is_refused_once_it_passes_the_limit() -> None:
    async with client_of(limited()) as client:
        fits = await client.post("/echo", content=chunked(2))
        over = await client.post("/echo", content=chunked(3))
        upload = await client.post("/upload", content=chunked(25))
        upload_over = await client.post("/upload", content=chunked(26))
    assert over.request.headers["transfer-encoding"] == "chunked"
    assert (fits.status_code, fits.json()) == (200, {"read": 8})
    assert (upload.status_code, upload.json()) == (200, {"read": 100})
    assert_413(over, 10)
    assert_413(upload_over, 100)


async def test_no_more_than_the_limit_is_read() -> None:
    """Ten 4-byte chunks against a 10-byte limit: the third is the last one read,
    one 413 goes out, and the app's answer to the disconnect is dropped."""
    pending = [{"type": "http.request", "body": b"abcd", "more_body": i < 9} for i in range(10)]
    read: list[Message] = []
    sent: list[Message] = []

    async def receive() -> Message:
        read.append(pending.pop(0))
        return read[-1]

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/echo", "raw_path": b"/echo", "root_path": "",
        "query_string": b"", "headers": [(b"transfer-encoding", b"chunked")],
        "server": ("testserver", 80), "client": ("127.0.0.1", 1),
    }  # fmt: skip
    await limited()(scope, receive, send)
    assert len(read) == 3
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 413


# ---- entity tags -------------------------------------------------------------------------


def test_entity_tags() -> None:
    assert entity_tag(TICKERS) == TAG
    assert entity_tag(TICKERS, weak=True) == "W/" + TAG
    assert entity_tag(b"") == '"' + hashlib.blake2b(b"", digest_size=16).hexdigest() + '"'
    assert if_none_match_hits("*", TAG)
    assert if_none_match_hits(TAG, TAG)
    assert if_none_match_hits(f"W/{TAG}", TAG)
    assert if_none_match_hits(TAG, f"W/{TAG}")
    assert if_none_match_hits(f'"other", W/"x,y" ,{TAG}', TAG)
    assert not if_none_match_hits('"other", W/"x"', TAG)
    assert not if_none_match_hits(TAG[:-2] + '"', TAG)
    assert not if_none_match_hits("", TAG)


@pytest.mark.parametrize("condition", [TAG, f"W/{TAG}", "*", f'"stale", {TAG}', f' W/"a",W/{TAG} '])
async def test_a_matching_if_none_match_is_a_304_without_body(condition: str) -> None:
    async with client_of(ETagMiddleware(tiny_app())) as client:
        r = await client.get("/api/v1/tickers", headers={"If-None-Match": condition})
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["etag"] == TAG
    assert r.headers["x-age"] == "3"
    assert "content-type" not in r.headers
    assert "content-length" not in r.headers


async def test_a_200_carries_the_tag_of_its_body() -> None:
    async with client_of(ETagMiddleware(tiny_app())) as client:
        r = await client.get("/api/v1/tickers")
        other = await client.get("/api/v1/tickers", headers={"If-None-Match": '"stale"'})
        head = await client.head("/api/v1/orderbook")
    assert (r.status_code, r.content, r.headers["etag"]) == (200, TICKERS, TAG)
    assert r.headers["content-length"] == str(len(TICKERS))
    assert (other.status_code, other.content, other.headers["etag"]) == (200, TICKERS, TAG)
    assert head.status_code == 405  # FastAPI routes GET only; nothing to tag


async def test_weak_tags_when_asked() -> None:
    async with client_of(ETagMiddleware(tiny_app(), weak=True)) as client:
        r = await client.get("/api/v1/tickers")
        again = await client.get("/api/v1/tickers", headers={"If-None-Match": TAG})
    assert r.headers["etag"] == "W/" + TAG
    assert (again.status_code, again.headers["etag"]) == (304, "W/" + TAG)


async def test_a_streamed_body_is_tagged_whole_or_passed_through_when_large() -> None:
    whole = b"chunk0;chunk1;chunk2;"
    async with client_of(ETagMiddleware(tiny_app(), max_bytes=len(whole))) as client:
        small = await client.get("/api/v1/candles")
        hit = await client.get("/api/v1/candles", headers={"If-None-Match": entity_tag(whole)})
        large = await client.get("/api/v1/candles", params={"n": 4}, headers={"If-None-Match": "*"})
    assert (small.status_code, small.content, small.headers["etag"]) == (
        200, whole, entity_tag(whole),
    )  # fmt: skip
    assert (hit.status_code, hit.content) == (304, b"")
    assert (large.status_code, large.content) == (200, whole + b"chunk3;")
    assert "etag" not in large.headers


@pytest.mark.parametrize(
    ("path", "params", "headers", "status"),
    [
        ("/plain", {}, {}, 200),  # not a cacheable path
        ("/api/v1/orderbook", {"cache_control": "private, no-store"}, {}, 200),
        ("/api/v1/orderbook", {"status": 404}, {}, 404),
        ("/api/v1/tickers", {}, {"Authorization": "Bearer t"}, 200),
        ("/api/v1/tickers", {}, {"x-api-key": "cdk_k"}, 200),
    ],
)
async def test_what_is_never_tagged(
    path: str, params: dict[str, Any], headers: dict[str, str], status: int
) -> None:
    async with client_of(ETagMiddleware(tiny_app())) as client:
        r = await client.get(path, params=params, headers={**headers, "If-None-Match": "*"})
        posted = await client.post("/api/v1/tickers", headers={"If-None-Match": "*"})
    assert r.status_code == status
    assert "etag" not in r.headers
    assert (posted.status_code, posted.json()) == (200, {"read": 0})
    assert "etag" not in posted.headers


async def test_a_tag_the_route_set_is_used_as_it_is() -> None:
    async with client_of(ETagMiddleware(tiny_app())) as client:
        params = {"etag": '"v7"'}
        r = await client.get("/api/v1/orderbook", params=params)
        hit = await client.get(
            "/api/v1/orderbook", params=params, headers={"If-None-Match": '"v7"'}
        )
    assert (r.status_code, r.headers.get_list("etag")) == (200, ['"v7"'])
    assert (hit.status_code, hit.content, hit.headers.get_list("etag")) == (304, b"", ['"v7"'])


# ---- CORS --------------------------------------------------------------------------------


def test_cors_options() -> None:
    assert cors_options("") == {}
    assert cors_options(" , ") == {}
    options = cors_options(
        " https://App.example.com/ ,http://localhost:3000,https://app.example.com"
    )
    assert options["allow_origins"] == ["https://app.example.com", "http://localhost:3000"]
    assert options["allow_credentials"] is False
    assert options["max_age"] == 600
    assert "X-API-Key" in options["allow_headers"]
    assert "ETag" in options["expose_headers"]
    assert cors_options("https://a.example,*")["allow_origins"] == ["*"]
    for bad in ("app.example.com", "https://a.example/path", "ftp://a.example"):
        with pytest.raises(ValueError, match="scheme://host"):
            cors_options(bad)


async def test_cors_with_the_options() -> None:
    app = CORSMiddleware(ETagMiddleware(tiny_app()), **cors_options("https://app.example.com"))
    async with client_of(app) as client:
        preflight = await client.options(
            "/api/v1/tickers",
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "x-api-key, if-none-match",
            },
        )
        simple = await client.get("/api/v1/tickers", headers={"Origin": "https://app.example.com"})
        foreign = await client.get("/api/v1/tickers", headers={"Origin": "https://evil.example"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
    assert simple.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "ETag" in simple.headers["access-control-expose-headers"].split(", ")
    assert "access-control-allow-origin" not in foreign.headers


# ---- the API -----------------------------------------------------------------------------


def hygienic_api() -> tuple[FastAPI, DictCache]:
    """The real app around the twins, a fixed clock (ages in answers are exact),
    and the middlewares added as ``create_app``'s caller adds them."""
    cache, metrics = DictCache(), Metrics()
    queries = MarketQueries(
        cache, ListStore(), metrics, exchanges=["sim"], symbols=["BTC/USDT"], intervals=["1m"],
        cache_recent_candles=1000, clock=lambda: T0 + 2_000,
    )  # fmt: skip
    app = create_app(queries, metrics, HealthRegistry(metrics), version="9.9.9")
    app.add_middleware(BodyLimitMiddleware, max_bytes=16)
    app.add_middleware(ETagMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)
    return app, cache


async def test_the_api_tags_tickers_and_answers_304() -> None:
    app, cache = hygienic_api()
    key = cache_keys.ticker("sim", "BTC/USDT")
    await cache.set(key, codec.encode_ticker(Ticker("sim", "BTC/USDT", T0, 125.0, 124.5, 125.5)))
    query = {"exchange": "sim", "symbol": "BTC/USDT"}
    async with client_of(app) as client:
        first = await client.get("/api/v1/tickers", params=query)
        tag = first.headers["etag"]
        second = await client.get("/api/v1/tickers", params=query, headers={"If-None-Match": tag})
        private = await client.get(
            "/api/v1/tickers", params=query, headers={"If-None-Match": tag, "X-API-Key": "k"}
        )
        moved = Ticker("sim", "BTC/USDT", T0, 126.0, 125.5, 126.5)
        await cache.set(key, codec.encode_ticker(moved))
        third = await client.get("/api/v1/tickers", params=query, headers={"If-None-Match": tag})
        oversized = await client.post("/api/v1/tickers", content=b"x" * 17)
        missing = await client.get("/api/v1/nowhere")
    assert first.status_code == 200
    assert tag == entity_tag(first.content)
    assert first.json()["tickers"][0]["last"] == "125"
    assert first.headers["content-security-policy"] == CSP
    assert (second.status_code, second.content, second.headers["etag"]) == (304, b"", tag)
    assert second.headers["x-content-type-options"] == "nosniff"
    assert private.headers["cache-control"] == "no-store"
    assert "etag" not in private.headers
    assert third.status_code == 200
    assert third.json()["tickers"][0]["last"] == "126"
    assert third.headers["etag"] == entity_tag(third.content) != tag
    assert_413(oversized, 16)
    assert oversized.headers["x-frame-options"] == "DENY"
    assert (missing.status_code, missing.headers["content-type"]) == (404, PROBLEM)
    assert "etag" not in missing.headers
