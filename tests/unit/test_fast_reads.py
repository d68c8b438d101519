"""The fast market reads against the same API without them: identical answers.

Two apps share one cache, one clock and one upstream record; each has its own
rate limiter (on a frozen clock) and metrics. Every request goes to both and
the status, the headers (name, value and order) and the body must be equal.
Whether the fast layer answered shows in the ASGI scope: FastAPI's router
records the route it ran in ``scope["route"]``, the fast layer never does
(nor does the rate limiter's 429, which the router never sees).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.types import Message

from cryptodesk.adapters.ratelimit.memory import MemoryRateLimiter
from cryptodesk.api.app import HttpOptions, create_app
from cryptodesk.api.ratelimit import parse_tiers
from cryptodesk.api.security import Auth
from cryptodesk.domain import codec
from cryptodesk.domain.market import Market, OrderBook, Ticker
from cryptodesk.observability.health import HealthRegistry
from cryptodesk.observability.metrics import Metrics
from cryptodesk.services import cache_keys
from cryptodesk.services.feed_status import FeedStatus
from cryptodesk.services.market_queries import MarketQueries
from tests.unit._auth import fresh_logins
from tests.unit._fakes import T0, BrokenCache, DictCache, ListStore

Headers = list[tuple[bytes, bytes]]
BTC = Ticker("sim", "BTC/USDT", T0 + 1234, 125.0, 124.5, 125.5, 100.0, 126.0, 99.0, 3.5, 350.0)
ETH = Ticker("kraken", "ETH/USDT", T0, 3000.0)
BOOK = OrderBook(
    "sim", "BTC/USDT", T0 + 500,
    tuple((125.0 - i / 10, 1.0 + i) for i in range(30)),
    tuple((125.5 + i / 10, 0.5 + i) for i in range(30)),
    sequence=42,
)  # fmt: skip
MARKET = Market("sim", "BTC/USDT", "BTC", "USDT", 0.01, 1e-05, 1e-05, 5.0)
DURATION = "cryptodesk_http_request_duration_seconds_count"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Headers
    body: bytes
    fast: bool  # answered without FastAPI's router


class Desk:
    """One cache and clock, served by an app with the fast reads and one without."""

    def __init__(
        self,
        *,
        cache: DictCache | None = None,
        tiers: str = "ip=1000/s:1000",
        http: HttpOptions | None = None,
        public: bool = True,
    ) -> None:
        self.now = T0 + 2_500
        self.cache = cache if cache is not None else DictCache()
        self.status = FeedStatus(clock=lambda: self.now)
        self.queries = MarketQueries(
            self.cache, ListStore(), Metrics(),
            exchanges=["sim", "kraken"], symbols=["BTC/USDT", "ETH/USDT"], intervals=["1m"],
            cache_recent_candles=0, status=self.status, stale_after=60.0, clock=lambda: self.now,
        )  # fmt: skip
        self.logins = fresh_logins()
        self.auth = Auth(self.logins.service, public_market_data=public)
        self.fast_metrics, self.slow_metrics = Metrics(), Metrics()
        options = http if http is not None else HttpOptions()
        self.fast = self._app(self.fast_metrics, tiers, options, fast_reads=True)
        self.slow = self._app(self.slow_metrics, tiers, options, fast_reads=False)

    def _app(self, metrics: Metrics, tiers: str, http: HttpOptions, *, fast_reads: bool) -> Any:
        limiter = MemoryRateLimiter(clock=lambda: 1000.0)
        return create_app(
            self.queries, metrics, HealthRegistry(metrics), auth=self.auth,
            rate_limiter=limiter, rate_tiers=parse_tiers(tiers), http=http,
            fast_reads=fast_reads,
        )  # fmt: skip

    async def seed(self) -> None:
        for t in (BTC, ETH):
            await self.cache.set(cache_keys.ticker(t.exchange, t.symbol), codec.encode_ticker(t))
        await self.cache.set(cache_keys.book("sim", "BTC/USDT"), codec.encode_book(BOOK))
        await self.cache.set(cache_keys.markets("sim"), codec.encode_markets([MARKET]))

    async def both(
        self, path: str, query: str = "", headers: Sequence[tuple[bytes, bytes]] = (),
        method: str = "GET",
    ) -> Answer:  # fmt: skip
        """The fast app's answer, after checking the other one gave the same."""
        fast = await call(self.fast, path, query, headers, method)
        slow = await call(self.slow, path, query, headers, method)
        assert (fast.status, fast.headers, fast.body) == (slow.status, slow.headers, slow.body)
        return fast

    def durations(self, metrics: Metrics, route: str, status: int) -> float | None:
        labels = {"method": "GET", "route": route, "status": str(status)}
        return metrics.registry.get_sample_value(DURATION, labels)


async def call(
    app: Any, path: str, query: str, headers: Sequence[tuple[bytes, bytes]], method: str
) -> Answer:
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
        "root_path": "", "query_string": query.encode(), "headers": [(b"host", b"desk"), *headers],
        "client": ("203.0.113.7", 50123), "server": ("desk", 80),
    }  # fmt: skip
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return Answer(sent[0]["status"], list(sent[0]["headers"]), body, "route" not in scope)


TICKERS, MARKETS, BOOKS = "/api/v1/tickers", "/api/v1/markets", "/api/v1/orderbook"
ANSWERED = [
    (TICKERS, ""),
    (TICKERS, "exchange=sim"),
    (TICKERS, "exchange=sim&symbol=BTC/USDT"),
    (TICKERS, "exchange=SIM&symbol=btc-usdt"),
    (TICKERS, "symbol=BTC%2FUSDT&unknown=1"),
    (TICKERS, "exchange=nope&exchange=kraken"),  # the last of a repeated name counts
    (TICKERS, "exchange=kraken&symbol=BTC/USDT"),  # nothing cached: an empty list
    (MARKETS, ""),
    (MARKETS, "exchange=sim"),
    (MARKETS, "exchange=kraken"),
    (BOOKS, "exchange=sim&symbol=BTC/USDT"),
    (BOOKS, "exchange=sim&symbol=BTC/USDT&depth=1"),
    (BOOKS, "exchange=sim&symbol=BTC/USDT&depth=100"),
    (BOOKS, "exchange=kraken&symbol=ETH/USDT"),  # no book yet: 404 no-data
]
REFERRED = [
    (TICKERS, "exchange=nope", 404),
    (TICKERS, "exchange=", 404),
    (TICKERS, "symbol=DOGE/USDT", 404),
    (TICKERS, "symbol=not-a-symbol!", 400),
    (TICKERS, "exchange=" + "s" * 65, 400),
    (TICKERS, "exchange=kraken&exchange=nope", 404),
    (MARKETS, "exchange=nope", 404),
    (BOOKS, "", 400),
    (BOOKS, "exchange=sim", 400),
    (BOOKS, "exchange=sim&symbol=BTC/USDT&depth=0", 400),
    (BOOKS, "exchange=sim&symbol=BTC/USDT&depth=101", 400),
    (BOOKS, "exchange=sim&symbol=BTC/USDT&depth=abc", 400),
    (BOOKS, "exchange=nope&symbol=BTC/USDT", 404),
    # A form the route's int parsing takes and this layer leaves to it.
    (BOOKS, "exchange=sim&symbol=BTC/USDT&depth=020", 200),
]


@pytest.mark.parametrize(("path", "query"), ANSWERED)
async def test_answers_are_identical_and_fast(path, query):
    desk = Desk()
    await desk.seed()
    answer = await desk.both(path, query)
    assert answer.fast
    assert answer.status in (200, 404)


@pytest.mark.parametrize(("path", "query", "status"), REFERRED)
async def test_refused_queries_go_to_the_route(path, query, status):
    desk = Desk()
    await desk.seed()
    answer = await desk.both(path, query)
    assert (answer.status, answer.fast) == (status, False)


async def test_the_body_and_age_headers_follow_the_clock():
    desk = Desk()
    await desk.seed()
    for ms in (0, 1, 7, 999, 1000, 12_345, 59_999, 61_000, 86_400_000 + 7):
        desk.now = BTC.ts + ms
        answer = await desk.both(TICKERS, "symbol=BTC/USDT")
        assert answer.fast
        age = (str(ms / 1000) if ms else "0.0").encode()
        assert answer.body.endswith(b'"stale":%s,"age_seconds":%s}]}' % (
            b"true" if ms > 60_000 else b"false", age))  # fmt: skip
        assert (b"cryptodesk-data-age", str(ms // 1000).encode()) in answer.headers
    both = await desk.both(TICKERS)
    assert both.body.count(b'"exchange"') == 2


async def test_a_failing_upstream_marks_answers_stale():
    desk = Desk()
    await desk.seed()
    await desk.both(TICKERS)
    desk.status.failed("sim", "feed", "connection reset")
    for path, query in [(TICKERS, ""), (MARKETS, ""), (BOOKS, "exchange=sim&symbol=BTC/USDT")]:
        answer = await desk.both(path, query)
        assert (b"cryptodesk-data-stale", b"true") in answer.headers
        assert b'"stale":true' in answer.body


async def test_if_none_match_gives_the_same_304():
    desk = Desk()
    await desk.seed()
    first = await desk.both(TICKERS, "exchange=sim")
    etag = dict(first.headers)[b"etag"]
    for condition in (etag, b"W/" + etag, b'"other", ' + etag, b"*"):
        answer = await desk.both(TICKERS, "exchange=sim", [(b"if-none-match", condition)])
        assert (answer.status, answer.body, answer.fast) == (304, b"", True)
        assert (b"etag", etag) in answer.headers
    other = await desk.both(TICKERS, "exchange=sim", [(b"if-none-match", b'"other"')])
    assert (other.status, other.body) == (200, first.body)


@pytest.mark.parametrize(
    "headers",
    [
        [(b"x-api-key", b"cdk_not-a-key")],
        [(b"authorization", b"Bearer not-a-token")],
        [(b"authorization", b"Basic dXNlcjpwdw==")],
        [(b"content-length", b"2")],
    ],
)
async def test_credentials_or_a_body_bypass_the_fast_reads(headers):
    desk = Desk()
    await desk.seed()
    answer = await desk.both(TICKERS, "exchange=sim", headers)
    assert not answer.fast


async def test_a_logged_in_caller_gets_the_route_and_a_private_answer():
    desk = Desk()
    await desk.seed()
    token = await desk.logins.token("default", "viewer")
    answer = await desk.both(TICKERS, "", [(b"authorization", f"Bearer {token}".encode())])
    assert (answer.status, answer.fast) == (200, False)
    assert (b"cache-control", b"no-store") in answer.headers
    assert b"etag" not in dict(answer.headers)


@pytest.mark.parametrize("method", ["HEAD", "POST"])
async def test_other_methods_go_to_the_app(method):
    desk = Desk()
    await desk.seed()
    answer = await desk.both(TICKERS, "exchange=sim", method=method)
    assert not answer.fast


async def test_the_layer_follows_the_public_market_data_switch():
    desk = Desk(public=False)
    await desk.seed()
    answer = await desk.both(TICKERS, "exchange=sim")
    assert (answer.status, answer.fast) == (401, False)
    desk.auth.public_market_data = True
    answer = await desk.both(TICKERS, "exchange=sim")
    assert (answer.status, answer.fast) == (200, True)


async def test_the_rate_limit_charges_once_and_answers_the_same_429():
    desk = Desk(tiers="ip=1/m:2")
    await desk.seed()
    first = await desk.both(TICKERS)
    refused_query = await desk.both(TICKERS, "exchange=nope")  # the route charges it
    limited = await desk.both(TICKERS)
    assert [a.status for a in (first, refused_query, limited)] == [200, 404, 429]
    assert (first.fast, refused_query.fast, limited.fast) == (True, False, True)
    assert dict(first.headers)[b"ratelimit-remaining"] == b"1"
    assert dict(limited.headers)[b"retry-after"] == b"60"


async def test_a_cache_outage_is_the_same_503_marked_degraded():
    desk = Desk(cache=BrokenCache())
    answer = await desk.both(TICKERS, "exchange=sim")
    assert (answer.status, answer.fast) == (503, True)
    assert (b"cryptodesk-degraded", b"cache") in answer.headers


async def test_an_unreadable_cached_value_is_the_same_500():
    desk = Desk()
    await desk.cache.set(cache_keys.ticker("sim", "BTC/USDT"), b"not json")
    answer = await desk.both(TICKERS, "exchange=sim")
    assert (answer.status, answer.fast) == (500, True)
    assert b"internal-error" in answer.body


async def test_hsts_and_cors_apply_to_fast_answers():
    options = HttpOptions(hsts_seconds=31_536_000, cors_origins="https://desk.example.com")
    desk = Desk(http=options)
    await desk.seed()
    origin = [(b"origin", b"https://desk.example.com")]
    answer = await desk.both(TICKERS, "exchange=sim", origin)
    assert answer.fast
    assert (b"strict-transport-security", b"max-age=31536000") in answer.headers
    assert (b"access-control-allow-origin", b"https://desk.example.com") in answer.headers


async def test_fast_answers_are_timed_under_the_route_template():
    desk = Desk(tiers="ip=1/m:1")
    await desk.seed()
    await desk.both(TICKERS, "exchange=sim")
    await desk.both(TICKERS, "exchange=sim")  # 429
    await desk.both(BOOKS, "exchange=sim&symbol=BTC/USDT")  # 429
    assert desk.durations(desk.fast_metrics, TICKERS, 200) == 1.0
    assert desk.durations(desk.slow_metrics, TICKERS, 200) == 1.0
    # A 429 names the route it was meant for.
    assert desk.durations(desk.fast_metrics, TICKERS, 429) == 1.0
    assert desk.durations(desk.fast_metrics, BOOKS, 429) == 1.0
