"""The /api/v1 routes, /metrics and the OpenAPI document, driven over ASGI."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from cryptodesk.api.app import UNMATCHED_ROUTE, create_app
from cryptodesk.api.schemas import decimal_str
from cryptodesk.domain import codec
from cryptodesk.domain.market import Market, OrderBook, Ticker
from cryptodesk.services import cache_keys
from cryptodesk.services.feed_status import FeedStatus
from cryptodesk.services.market_queries import MarketQueries
from tests.unit._fakes import T0, Harness, make_candle, seed_series

SERIES = [make_candle(i) for i in range(2500)]
STALE_AFTER = 60.0


@dataclass
class Clocked(Harness):
    """``Harness`` with a settable epoch-ms clock, an upstream status record and
    a 60 s stale limit, so ages in answers are exact."""

    now: int = T0
    status: FeedStatus = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.status = FeedStatus(clock=lambda: self.now)
        self.queries = MarketQueries(
            self.cache, self.store, self.metrics,
            exchanges=["sim", "kraken"], symbols=["BTC/USDT", "ETH/USDT"],
            intervals=["1m", "1h"], cache_recent_candles=self.recent,
            status=self.status, stale_after=STALE_AFTER, clock=lambda: self.now,
        )  # fmt: skip
        self.app = create_app(
            self.queries, self.metrics, self.health, version="9.9.9", readiness_timeout=0.05,
            auth=self.logins.auth,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1e-08, "0.00000001"),
        (67012.35, "67012.35"),
        (65000.0, "65000"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1e22, "10000000000000000000000"),
        (1.5e-10, "0.00000000015"),
        (0.0, "0"),
        (-0.0, "0"),
        (-2.5, "-2.5"),
    ],
)
def test_decimal_strings_round_trip_without_exponent(value, text):
    assert decimal_str(value) == text
    assert float(text) == value


def test_decimal_str_rejects_non_finite():
    with pytest.raises(ValueError, match="finite"):
        decimal_str(float("nan"))


async def test_markets_payload():
    h = Clocked()
    btc = Market("sim", "BTC/USDT", "BTC", "USDT", 0.01, 1e-05, 1e-05, 5.0)
    await h.cache.set(cache_keys.markets("sim"), codec.encode_markets([btc]))
    async with h.client() as client:
        r = await client.get("/api/v1/markets", params={"exchange": "sim"})
    assert r.status_code == 200
    assert r.json() == {
        "markets": [
            {
                "exchange": "sim", "symbol": "BTC/USDT", "base": "BTC", "quote": "USDT",
                "price_increment": "0.01", "amount_increment": "0.00001",
                "min_amount": "0.00001", "min_notional": "5", "active": True,
                "stale": False, "age_seconds": None,
            }
        ]
    }  # fmt: skip
    # Markets carry no exchange time: no age header.
    assert "cryptodesk-data-age" not in r.headers
    assert r.headers["cryptodesk-data-stale"] == "false"


async def test_tickers_payload_and_filters():
    h = Clocked(now=T0 + 2_500)
    btc = Ticker("sim", "BTC/USDT", T0 + 1234, 125.0, 124.5, 125.5, 100.0, 126.0, 99.0, 3.5, 350.0)
    eth = Ticker("kraken", "ETH/USDT", T0, 3000.0)
    for t in (btc, eth):
        await h.cache.set(cache_keys.ticker(t.exchange, t.symbol), codec.encode_ticker(t))
    async with h.client() as client:
        r = await client.get("/api/v1/tickers")
        everything = r.json()
        only_btc = (await client.get("/api/v1/tickers", params={"symbol": "BTC-USDT"})).json()
    assert [t["symbol"] for t in everything["tickers"]] == ["BTC/USDT", "ETH/USDT"]
    assert [t["age_seconds"] for t in everything["tickers"]] == [1.266, 2.5]
    assert (r.headers["cryptodesk-data-age"], r.headers["cryptodesk-data-stale"]) == ("2", "false")
    assert only_btc == {
        "tickers": [
            {
                "exchange": "sim", "symbol": "BTC/USDT", "time": "2024-05-01T00:00:01.234Z",
                "last": "125", "bid": "124.5", "ask": "125.5", "open_24h": "100",
                "high_24h": "126", "low_24h": "99", "volume_24h": "3.5",
                "quote_volume_24h": "350", "change_24h": "0.25",
                "stale": False, "age_seconds": 1.266,
            }
        ]
    }  # fmt: skip
    assert everything["tickers"][1]["bid"] is None


async def test_candles_payload():
    # 30 s after the newer candle closed.
    h = Clocked(now=T0 + 150_000)
    await seed_series(h.cache, h.store, SERIES[:2], recent=1000)
    async with h.client() as client:
        r = await client.get(
            "/api/v1/candles", params={"exchange": "sim", "symbol": "BTC/USDT", "interval": "1m"}
        )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {
        "exchange": "sim",
        "symbol": "BTC/USDT",
        "interval": "1m",
        "candles": [
            {
                "open_time": "2024-05-01T00:00:00.000Z", "open_time_ms": T0,
                "open": "100", "high": "101.5", "low": "99.5", "close": "100.75",
                "volume": "2", "quote_volume": "200", "trades": 0, "closed": True,
            },
            {
                "open_time": "2024-05-01T00:01:00.000Z", "open_time_ms": T0 + 60_000,
                "open": "100.25", "high": "101.75", "low": "99.75", "close": "101",
                "volume": "3", "quote_volume": "300.75", "trades": 1, "closed": True,
            },
        ],
        "next_cursor": None,
        "stale": False,
        "age_seconds": 30.0,
    }  # fmt: skip
    assert (r.headers["cryptodesk-data-age"], r.headers["cryptodesk-data-stale"]) == ("30", "false")


async def test_candles_accept_iso_and_epoch_ms_and_normalise_names():
    h = Harness()
    await seed_series(h.cache, h.store, SERIES[:10], recent=1000)
    async with h.client() as client:
        iso = await client.get(
            "/api/v1/candles",
            params={
                "exchange": "SIM", "symbol": "btc-usdt", "interval": "1m",
                "start": "2024-05-01T00:02:00Z", "end": str(T0 + 5 * 60_000),
            },
        )  # fmt: skip
    body = iso.json()
    assert (body["exchange"], body["symbol"]) == ("sim", "BTC/USDT")
    assert [c["open_time_ms"] for c in body["candles"]] == [T0 + i * 60_000 for i in (2, 3, 4)]


async def get_pages(client, **params: object) -> list[dict]:
    pages: list[dict] = []
    cursor = None
    base = {"exchange": "sim", "symbol": "BTC/USDT", "interval": "1m", **params}
    while True:
        query = base if cursor is None else {**base, "cursor": cursor}
        r = await client.get("/api/v1/candles", params=query)
        assert r.status_code == 200, r.text
        pages.append(r.json())
        cursor = pages[-1]["next_cursor"]
        if cursor is None:
            return pages


async def test_pagination_backwards_and_forwards_visits_each_candle_once():
    h = Harness()
    await seed_series(h.cache, h.store, SERIES, recent=1000)
    expected = [c.open_time for c in SERIES]
    async with h.client() as client:
        back = await get_pages(client, limit=1000)
        fwd = await get_pages(client, limit=400, start="2024-05-01T00:00:00Z")
    assert [len(p["candles"]) for p in back] == [1000, 1000, 500]
    assert [c["open_time_ms"] for p in reversed(back) for c in p["candles"]] == expected
    assert len(fwd) == 7
    assert [c["open_time_ms"] for p in fwd for c in p["candles"]] == expected


async def test_include_open_appends_the_candle_in_progress():
    h = Harness()
    await seed_series(h.cache, h.store, SERIES[:5], recent=1000)
    current = make_candle(5, closed=False)
    await h.cache.set(cache_keys.open_candle("sim", "BTC/USDT", "1m"), codec.encode_candle(current))
    params = {"exchange": "sim", "symbol": "BTC/USDT", "interval": "1m", "limit": 2}
    async with h.client() as client:
        plain = (await client.get("/api/v1/candles", params=params)).json()["candles"]
        with_open = (
            await client.get("/api/v1/candles", params={**params, "include_open": "true"})
        ).json()["candles"]
    assert [c["closed"] for c in plain] == [True, True]
    assert with_open[:2] == plain
    assert with_open[2]["closed"] is False
    assert with_open[2]["open_time_ms"] == current.open_time


async def test_orderbook_payload_and_depth():
    h = Clocked(now=T0 + 61_000)
    book = OrderBook(
        "sim", "ETH/USDT", T0, ((3001.5, 1.2), (3001.4, 0.5), (3001.0, 9.0)),
        ((3001.6, 0.8), (3001.7, 2.0)), 42,
    )  # fmt: skip
    await h.cache.set(cache_keys.book("sim", "ETH/USDT"), codec.encode_book(book))
    async with h.client() as client:
        r = await client.get(
            "/api/v1/orderbook", params={"exchange": "sim", "symbol": "ETH/USDT", "depth": 2}
        )
    assert r.json() == {
        "exchange": "sim",
        "symbol": "ETH/USDT",
        "time": "2024-05-01T00:00:00.000Z",
        "sequence": 42,
        "bids": [["3001.5", "1.2"], ["3001.4", "0.5"]],
        "asks": [["3001.6", "0.8"], ["3001.7", "2"]],
        "stale": True,  # older than the 60 s limit
        "age_seconds": 61.0,
    }
    assert (r.headers["cryptodesk-data-age"], r.headers["cryptodesk-data-stale"]) == ("61", "true")


async def test_orderbook_before_the_first_snapshot_is_no_data():
    h = Harness()
    async with h.client() as client:
        r = await client.get("/api/v1/orderbook", params={"exchange": "sim", "symbol": "ETH/USDT"})
    assert r.status_code == 404
    assert r.json()["type"] == "https://cryptodesk.dev/problems/no-data"


async def test_metrics_label_requests_by_route_template():
    h = Harness()
    async with h.client() as client:
        await client.get(
            "/api/v1/candles", params={"exchange": "sim", "symbol": "BTC/USDT", "interval": "1m"}
        )
        await client.get("/wp-admin/setup.php")
        await client.post("/api/v1/candles")
        r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert (
        'cryptodesk_http_request_duration_seconds_count{method="GET",route="/api/v1/candles",'
        'status="200"} 1.0'
    ) in text
    assert f'route="{UNMATCHED_ROUTE}",status="404"' in text
    assert 'method="POST",route="/api/v1/candles",status="405"' in text
    assert "wp-admin" not in text


async def test_docs_pages_are_labelled_by_their_path():
    h = Harness()
    async with h.client() as client:
        assert (await client.get("/docs")).status_code == 200
        text = (await client.get("/metrics")).text
    assert 'method="GET",route="/docs",status="200"' in text


async def test_openapi_document_is_complete():
    h = Harness()
    async with h.client() as client:
        doc = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
    assert docs.status_code == 200
    assert doc["info"]["version"] == "9.9.9"
    assert set(doc["paths"]) >= {
        "/healthz", "/readyz", "/metrics",
        "/api/v1/markets", "/api/v1/tickers", "/api/v1/candles", "/api/v1/orderbook",
    }  # fmt: skip
    candles = doc["paths"]["/api/v1/candles"]["get"]
    assert "422" not in candles["responses"]
    assert candles["responses"]["400"]["content"] == {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
    }
    params = {p["name"]: p for p in candles["parameters"]}
    assert set(params) == {
        "exchange", "symbol", "interval", "start", "end", "limit", "cursor", "include_open",
    }  # fmt: skip
    assert params["limit"]["schema"]["maximum"] == 1000
    schemas = doc["components"]["schemas"]
    assert schemas["CandleOut"]["properties"]["close"]["examples"] == ["67012.35"]
    assert "HTTPValidationError" not in schemas
    for path in ("/api/v1/markets", "/api/v1/tickers", "/api/v1/candles", "/api/v1/orderbook"):
        ok = doc["paths"][path]["get"]["responses"]["200"]
        assert set(ok["headers"]) == {"cryptodesk-data-age", "cryptodesk-data-stale"}, path
        assert "$ref" in ok["content"]["application/json"]["schema"], path
        assert "cryptodesk-data-stale" in doc["paths"][path]["get"]["description"], path
    for model in ("MarketOut", "TickerOut", "CandlesResponse", "OrderBookOut"):
        assert {"stale", "age_seconds"} <= set(schemas[model]["required"]), model


def test_volumes_are_shown_without_float_noise():
    from cryptodesk.api.schemas import volume_str

    noisy = 0.1 + 0.2  # 0.30000000000000004
    assert volume_str(noisy) == "0.3"
    assert volume_str(2.190990000000001) == "2.19099"
    assert volume_str(0.00000001) == "0.00000001"
    assert volume_str(146826.4034176) == "146826.4034176"


async def test_answers_of_the_middlewares_are_counted_under_their_route() -> None:
    h = Harness()
    async with h.anonymous() as client:
        r = await client.post("/api/v1/auth/login", content=b"x" * 1_100_000)
        assert r.status_code == 413
        text = (await client.get("/metrics")).text
    assert 'route="/api/v1/auth/login",status="413"' in text
