"""Every error is RFC 9457 problem+json; bad input is never a 500."""

from __future__ import annotations

import base64

import msgspec
import pytest
import structlog
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cryptodesk.domain import codec
from cryptodesk.domain.market import Candle, OrderBook, Ticker
from cryptodesk.services import cache_keys
from tests.unit._fakes import T0, BrokenCache, Harness, ListStore, make_candle, seed_series

PROBLEM = "application/problem+json"
TYPES = "https://cryptodesk.dev/problems/"
CANDLES = {"exchange": "sim", "symbol": "BTC/USDT", "interval": "1m"}


def assert_problem(r, status: int, kind: str, *, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["type"] == TYPES + kind
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert body["instance"] == r.request.url.path
    if param is not None:
        assert param in [e["name"] for e in body["errors"]]
    return body


async def test_unknown_symbol_problem_exact():
    async with Harness().client() as client:
        r = await client.get("/api/v1/candles", params={**CANDLES, "symbol": "DOGE/USDT"})
    assert r.status_code == 404
    assert r.headers["content-type"] == PROBLEM
    detail = "unknown symbol 'DOGE/USDT'; this server serves: BTC/USDT, ETH/USDT"
    assert r.json() == {
        "type": "https://cryptodesk.dev/problems/unknown-symbol",
        "title": "Unknown symbol",
        "status": 404,
        "detail": detail,
        "instance": "/api/v1/candles",
        "errors": [{"name": "symbol", "reason": detail}],
    }


@pytest.mark.parametrize(
    ("path", "params", "status", "kind", "param"),
    [
        ("/api/v1/candles", {**CANDLES, "exchange": "binance"}, 404, "unknown-exchange",
         "exchange"),
        ("/api/v1/markets", {"exchange": "binance"}, 404, "unknown-exchange", "exchange"),
        ("/api/v1/tickers", {"symbol": "XRP/USDT"}, 404, "unknown-symbol", "symbol"),
        ("/api/v1/orderbook", {"exchange": "sim", "symbol": "XRP/BTC"}, 404, "unknown-symbol",
         "symbol"),
        ("/api/v1/candles", {**CANDLES, "symbol": "BTCUSDT"}, 400, "invalid-parameter", "symbol"),
        ("/api/v1/candles", {**CANDLES, "interval": "7m"}, 400, "unknown-interval", "interval"),
        ("/api/v1/candles", {**CANDLES, "start": "yesterday"}, 400, "invalid-parameter", "start"),
        ("/api/v1/candles", {**CANDLES, "end": "1999-01-01"}, 400, "invalid-parameter", "end"),
        ("/api/v1/candles", {**CANDLES, "end": "²"}, 400, "invalid-parameter", "end"),
        ("/api/v1/candles", {**CANDLES, "start": "2024-05-02", "end": "2024-05-01"}, 400,
         "invalid-parameter", "end"),
        ("/api/v1/candles", {**CANDLES, "cursor": "bm90IGEgY3Vyc29y"}, 400, "invalid-cursor",
         "cursor"),
        ("/api/v1/candles", {**CANDLES, "limit": "0"}, 400, "invalid-parameter", "limit"),
        ("/api/v1/candles", {**CANDLES, "limit": "1001"}, 400, "invalid-parameter", "limit"),
        ("/api/v1/candles", {**CANDLES, "limit": "ten"}, 400, "invalid-parameter", "limit"),
        ("/api/v1/candles", {**CANDLES, "include_open": "maybe"}, 400, "invalid-parameter",
         "include_open"),
        ("/api/v1/candles", {"symbol": "BTC/USDT", "interval": "1m"}, 400, "invalid-parameter",
         "exchange"),
        ("/api/v1/orderbook", {"exchange": "sim", "symbol": "BTC/USDT", "depth": "101"}, 400,
         "invalid-parameter", "depth"),
    ],
)  # fmt: skip
async def test_parameter_errors(path, params, status, kind, param):
    async with Harness().client() as client:
        r = await client.get(path, params=params)
    assert_problem(r, status, kind, param=param)


async def test_cursor_of_another_series_is_400():
    h = Harness()
    await seed_series(h.cache, h.store, [make_candle(i) for i in range(5)], recent=10)
    async with h.client() as client:
        first = (await client.get("/api/v1/candles", params={**CANDLES, "limit": 2})).json()
        r = await client.get(
            "/api/v1/candles",
            params={**CANDLES, "interval": "1h", "cursor": first["next_cursor"]},
        )
    assert_problem(r, 400, "invalid-cursor", param="cursor")


async def test_unknown_route_and_wrong_method():
    async with Harness().client() as client:
        missing = await client.get("/api/v2/candles")
        wrong = await client.delete("/api/v1/candles")
    assert_problem(missing, 404, "not-found")
    assert_problem(wrong, 405, "method-not-allowed")
    assert wrong.headers["allow"] == "GET"


class ExplodingStore(ListStore):
    async def get_candles(self, *args: object, **kwargs: object) -> list[Candle]:
        raise RuntimeError("connection to postgresql://admin:hunter2@db failed")


async def test_unexpected_exception_is_a_logged_500_without_internals():
    h = Harness(store=ExplodingStore())
    with structlog.testing.capture_logs() as logs:
        async with h.client() as client:
            r = await client.get("/api/v1/candles", params=CANDLES)
    body = assert_problem(r, 500, "internal-error")
    assert "hunter2" not in r.text
    assert "RuntimeError" not in r.text
    assert body["instance"] == "/api/v1/candles"
    (event,) = [e for e in logs if e["event"] == "unhandled error serving request"]
    assert event["log_level"] == "error"
    assert event["route"] == "/api/v1/candles"
    assert event["exc_info"] is True
    metrics = h.metrics.render().decode()
    assert 'route="/api/v1/candles",status="500"' in metrics


async def test_cache_outage_is_503_problem():
    async with Harness(cache=BrokenCache()).client() as client:
        r = await client.get("/api/v1/tickers")
    assert_problem(r, 503, "service-unavailable")
    assert r.headers["cryptodesk-degraded"] == "cache"


async def test_cache_outage_candles_come_from_the_db_marked_degraded():
    candles = [make_candle(i) for i in range(5)]
    h = Harness(cache=BrokenCache())
    await h.store.upsert_candles(candles)
    async with h.client() as client:
        r = await client.get(
            "/api/v1/candles", params={"exchange": "sim", "symbol": "BTC/USDT", "interval": "1m"}
        )
        assert r.status_code == 200
        assert len(r.json()["candles"]) == 5
        assert r.headers["cryptodesk-degraded"] == "cache"
    healthy = Harness()
    await seed_series(healthy.cache, healthy.store, candles, recent=5)
    async with healthy.client() as client:
        r = await client.get(
            "/api/v1/candles", params={"exchange": "sim", "symbol": "BTC/USDT", "interval": "1m"}
        )
    assert "cryptodesk-degraded" not in r.headers


# ---- fuzz: junk in every query parameter of every route -------------------------------


def valid_cursor() -> str:
    body = {"v": 1, "d": "b", "b": T0 + 3 * 60_000, "q": ["sim", "BTC/USDT", "1m", None, None]}
    return base64.urlsafe_b64encode(msgspec.json.encode(body)).decode().rstrip("=")


ROUTES: dict[str, dict[str, list[str]]] = {
    "/api/v1/markets": {"exchange": ["sim", "kraken"]},
    "/api/v1/tickers": {"exchange": ["sim"], "symbol": ["BTC/USDT", "eth-usdt"]},
    "/api/v1/candles": {
        "exchange": ["sim"],
        "symbol": ["BTC/USDT"],
        "interval": ["1m", "1h"],
        "start": ["2024-05-01T00:00:00Z", str(T0)],
        "end": ["2024-05-01T00:03:00+00:00", str(T0 + 120_000)],
        "limit": ["1", "2", "1000"],
        "cursor": [valid_cursor()],
        "include_open": ["true", "false", "1"],
    },
    "/api/v1/orderbook": {"exchange": ["sim"], "symbol": ["BTC/USDT"], "depth": ["1", "100"]},
    "/healthz": {},
    "/readyz": {},
    "/metrics": {},
}
TRICKY = [
    "", " ", "-1", "0", "1e309", "nan", "inf", "9" * 40, "²", "٣", "\x00", "%00", "../../etc",
    "2024-13-45", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-14:00", "true", "null",
    "BTC/", "/USDT", "BTC//USDT", "a" * 2000, "🙂", "'; drop table candles; --", "{}", "[]",
]  # fmt: skip


RARE = {"cursor", "start", "end"}


def junk() -> st.SearchStrategy[str | list[str]]:
    text = st.text(max_size=40) | st.sampled_from(TRICKY)
    return text | st.lists(text, min_size=2, max_size=3)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, dict[str, str | list[str]]]:
    """Mostly-good requests with one or two junk parameters, so junk reaches deep code."""
    path = draw(st.sampled_from(sorted(ROUTES)))
    names = sorted(ROUTES[path])
    params: dict[str, str | list[str]] = {}
    for name in names:
        # A cursor only fits the start/end it was issued for; mostly send none of them.
        odds = ["good", "omit", "omit", "omit"] if name in RARE else ["good", "good", "omit"]
        if draw(st.sampled_from(odds)) == "good":
            params[name] = draw(st.sampled_from(ROUTES[path][name]))
    if names:
        for name in draw(st.lists(st.sampled_from(names), max_size=2, unique=True)):
            params[name] = draw(junk())
    if draw(st.booleans()):
        params[draw(st.text(min_size=1, max_size=10))] = draw(junk())
    return path, params


@pytest.fixture(scope="module")
def harness() -> Harness:
    return Harness()


async def seed(h: Harness) -> None:
    await seed_series(h.cache, h.store, [make_candle(i) for i in range(6)], recent=3)
    current = make_candle(6, closed=False)
    await h.cache.set(cache_keys.open_candle("sim", "BTC/USDT", "1m"), codec.encode_candle(current))
    book = OrderBook("sim", "BTC/USDT", T0, ((99.0, 1.0), (98.0, 2.0)), ((101.0, 1.5),), 3)
    await h.cache.set(cache_keys.book("sim", "BTC/USDT"), codec.encode_book(book))
    ticker = Ticker("sim", "BTC/USDT", T0, 100.0, 99.0, 101.0, 90.0, 110.0, 80.0, 5.0, 500.0)
    await h.cache.set(cache_keys.ticker("sim", "BTC/USDT"), codec.encode_ticker(ticker))


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests())
async def test_junk_parameters_never_cause_a_server_error(harness, request):
    path, params = request
    if not harness.store.candles:
        await seed(harness)
    async with harness.client() as client:
        r = await client.get(path, params=params)
    event(f"{path} {r.status_code}")
    assert r.status_code < 500, (path, params, r.text)
    if r.status_code >= 400:
        assert r.headers["content-type"] == PROBLEM, (path, params)
        body = r.json()
        assert body["status"] == r.status_code
        assert body["type"].startswith(TYPES)
        for err in body.get("errors", []):
            assert err["name"]
            assert err["reason"]


async def test_each_tricky_value_in_each_parameter_with_the_rest_valid(harness):
    """Systematic companion of the fuzz test: every parameter meets every tricky value."""
    if not harness.store.candles:
        await seed(harness)
    failures = []
    async with harness.client() as client:
        for path, spec in ROUTES.items():
            base = {name: good[0] for name, good in spec.items() if name not in RARE}
            for name in spec:
                for value in TRICKY:
                    params = {**base, name: value}
                    r = await client.get(path, params=params)
                    ok = r.status_code < 400 or r.headers["content-type"] == PROBLEM
                    if r.status_code >= 500 or not ok:
                        failures.append((path, name, value, r.status_code))
            assert (await client.get(path, params=base)).status_code == 200, path
    assert failures == []
