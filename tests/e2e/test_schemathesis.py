"""Schemathesis over the OpenAPI document: no 5xx, and every answer is one the
document describes (status code, media type, body schema).

The app is built as ``runtime`` builds it (every router, GraphQL and the
reference prices included, auth with rate limits) over a migrated SQLite file,
and served by uvicorn on loopback, so the document schemathesis reads is the
one a client fetches. One tenant's admin drives every operation over a small
seeded ledger and market data; an anonymous pass then checks that nothing a
caller without credentials sends makes the server fail.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cryptodesk.adapters.cache.memory import MemoryCache
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.signal_store import SqlSignalStore
from cryptodesk.adapters.db.sql_store import SqlMarketStore
from cryptodesk.adapters.ratelimit.memory import MemoryRateLimiter
from cryptodesk.api.app import create_app
from cryptodesk.api.graphql import graphql_router
from cryptodesk.api.ratelimit import login_charge, parse_tiers, principal_charge
from cryptodesk.api.routes.backtests import backtests_router
from cryptodesk.api.routes.ledger import ledger_router
from cryptodesk.api.routes.prices import reference_prices_router
from cryptodesk.api.routes.signals import signals_router
from cryptodesk.api.security import AUTHENTICATED
from cryptodesk.api_wiring import http_options
from cryptodesk.config import load_settings
from cryptodesk.domain import codec
from cryptodesk.domain.market import Market, OrderBook, Ticker
from cryptodesk.portfolio_wiring import build_portfolio
from cryptodesk.services import cache_keys
from cryptodesk.services.backtests import BacktestJobs
from cryptodesk.services.reference_prices import CachedPrice, ReferencePrice
from cryptodesk.services.signal_queries import RuleBook, SignalQueries
from tests.e2e.conftest import LoopThread, free_port
from tests.unit._auth import PASSWORD, Logins, auth_service
from tests.unit._fakes import T0, Harness, make_candle, seed_series
from tests.unit._ledger_api import CSV, import_csv, migrated_template

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

TENANT = "acme"
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    content_type_conformance,
    status_code_conformance,
]
# Per operation and pass: up to 15 cases from the documented examples, 15 that
# fit the document and 15 that do not. About 45 operations: the two passes take
# about two and a half minutes on two cores under coverage.
EXAMPLES = 15
# Generous limits: the pass exercises the API, not its rate limits (a 429 is
# still a documented answer wherever a limit applies).
TIERS = "ip=100000/s:100000,user=100000/s:100000,key=100000/s:100000,login=100000/s:100000"
# Ends every session of its caller, so it runs as a user of its own whose token
# is issued afresh for each call (the admin's token stays valid for the rest).
# /auth/logout runs as the admin: it revokes the refresh token in its body, and
# no generated body holds the admin's.
REVOKE_ALL = "/api/v1/auth/revoke-all"
REVOKER = "revoker@acme.test"
CREDENTIALS = ("authorization", "x-api-key")


@dataclass
class Served:
    url: str
    token: str  # the admin's of TENANT

    def fresh_token(self, email: str) -> str:
        """An access token from logging in over HTTP (the first one of a new session)."""
        r = httpx.post(f"{self.url}/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])


async def _reference_price(asset: str) -> CachedPrice | None:
    if asset != "BTC":
        return None
    price = ReferencePrice(asset, "bitcoin", "usd", Decimal("64000.5"), T0, T0 + 500, "coingecko")
    return CachedPrice(price, age_ms=1500)


async def _seed_market(h: Harness) -> None:
    candles = [make_candle(i) for i in range(60)]
    await seed_series(h.cache, h.store, candles, recent=1000)
    hourly = [make_candle(i, interval="1h", step=3_600_000) for i in range(60)]
    await seed_series(h.cache, h.store, hourly, recent=1000)
    ticker = Ticker("sim", "BTC/USDT", T0 + 1234, 125.0, 124.5, 125.5, 100.0, 126.0, 99.0, 3.5)
    await h.cache.set(cache_keys.ticker("sim", "BTC/USDT"), codec.encode_ticker(ticker))
    book = OrderBook("sim", "BTC/USDT", T0, ((125.0, 1.0), (124.0, 2.0)), ((126.0, 1.5),), 7)
    await h.cache.set(cache_keys.book("sim", "BTC/USDT"), codec.encode_book(book))
    market = Market("sim", "BTC/USDT", "BTC", "USDT", 0.01, 1e-05, 1e-05, 5.0)
    await h.cache.set(cache_keys.markets("sim"), codec.encode_markets([market]))


async def _serve(tmp_path: Path, template: Path, stack: AsyncExitStack) -> tuple[str, Logins]:
    db = tmp_path / "schemathesis.db"
    shutil.copyfile(template, db)
    settings_ = load_settings(
        data_dir=tmp_path, database_url=f"sqlite+aiosqlite:///{db}", exchanges=["sim"]
    )
    store = SqlMarketStore(create_engine(settings_.database_url))
    stack.push_async_callback(store.close)
    portfolio = build_portfolio(settings_, store.engine, MemoryCache(), store)
    stack.push_async_callback(portfolio.close)
    h = Harness()
    await _seed_market(h)
    signal_store = SqlSignalStore(store.engine)
    stack.push_async_callback(signal_store.close)
    signal_queries = SignalQueries(
        h.queries, h.store, signal_store, RuleBook(signal_store, []),
        exchanges=["sim", "kraken"], symbols=["BTC/USDT", "ETH/USDT"], intervals=["1m", "1h"],
    )  # fmt: skip
    jobs = BacktestJobs(h.store)
    stack.push_async_callback(jobs.close)
    limiter, tiers = MemoryRateLimiter(), parse_tiers(TIERS)
    logins = Logins(auth_service(store.engine))
    logins.auth.charge = principal_charge(limiter, tiers)
    logins.auth.login_charge = login_charge(limiter, tiers)
    app = create_app(
        h.queries, h.metrics, h.health, auth=logins.auth, jobs=_no_jobs,
        reference_prices=reference_prices_router(
            _reference_price, ["BTC", "ETH"], stale_after_ms=60_000
        ),
        routers=[
            backtests_router(jobs), signals_router(signal_queries),
            ledger_router(portfolio.ledger), portfolio.router(),
            graphql_router(portfolio.ledger, portfolio.valuation, signal_queries, AUTHENTICATED),
        ],
        rate_limiter=limiter, rate_tiers=tiers, http=http_options(settings_),
    )  # fmt: skip
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://t", auth=logins.bearer(TENANT)
    ) as client:
        imported = await import_csv(client, CSV)
        assert imported.status_code == 200, imported.text
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())

    async def stop() -> None:
        server.should_exit = True
        await serving

    stack.push_async_callback(stop)
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.01)
    return f"http://127.0.0.1:{port}", logins


async def _no_jobs() -> list[Any]:
    return []


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp_path = tmp_path_factory.mktemp("schemathesis")
    template = migrated_template(tmp_path_factory.mktemp("schemathesis-template"))
    with LoopThread() as loop:
        stack = AsyncExitStack()
        try:
            url, logins = loop.run(_serve(tmp_path, template, stack))
            token = loop.run(logins.token(TENANT, "admin"))
            # The user whose sessions revoke-all ends.
            loop.run(logins.service.create_user(TENANT, REVOKER, PASSWORD, "admin"))
            yield Served(url, token)
        finally:
            loop.run(stack.aclose())


@pytest.fixture(scope="module")
def api_schema(served: Served) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{served.url}/openapi.json")


def _fuzz(
    api_schema: schemathesis.BaseSchema, call: Callable[[schemathesis.Case], None]
) -> list[str]:
    """``call`` on each operation's documented examples (the seeded market, so
    reads answer with data), then on EXAMPLES generated cases that fit the
    document and EXAMPLES that do not; what failed, one entry per operation and
    kind of case, with the request that failed.

    A loop rather than ``schemathesis.pytest.from_fixture(...).parametrize()``:
    that sets ``Node._nodeid``, which pytest 9 no longer has. The strategies are
    the ones it would draw from.
    """
    failures: list[str] = []
    operations = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()  # a document schemathesis cannot read fails here
        operations += 1
        kinds: list[tuple[str, st.SearchStrategy[schemathesis.Case]]] = [
            (str(mode), operation.as_strategy(generation_mode=mode)) for mode in GenerationMode
        ]
        documented = operation.get_strategies_from_examples()
        if documented:
            kinds.insert(0, ("examples", st.one_of(documented)))
        for kind, strategy in kinds:

            @given(strategy)
            @settings(
                max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate],
            )  # fmt: skip
            def each(case: schemathesis.Case) -> None:
                call(case)

            try:
                each()
            except (Exception, FailureGroup) as exc:  # every operation runs; all are listed
                failures.append(f"{operation.label} ({kind}): {exc}")
    assert operations == len(_operations(api_schema))
    return failures


def _operations(api_schema: schemathesis.BaseSchema) -> list[tuple[str, str]]:
    paths: dict[str, dict[str, Any]] = api_schema.raw_schema["paths"]
    return [(m, p) for p, item in paths.items() for m in item if m in HTTP_METHODS]


HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def test_an_admin_gets_only_documented_answers(
    api_schema: schemathesis.BaseSchema, served: Served
) -> None:
    def call(case: schemathesis.Case) -> None:
        admin = served.fresh_token(REVOKER) if case.operation.path == REVOKE_ALL else served.token
        # The credentials the generator writes (junk tokens and keys) would make most
        # answers a 401: the admin's token stands in for them.
        case.headers = {
            k: v for k, v in (case.headers or {}).items() if k.lower() not in CREDENTIALS
        }
        case.call_and_validate(headers={"Authorization": f"Bearer {admin}"}, checks=CHECKS)

    failures = _fuzz(api_schema, call)
    assert failures == [], "\n\n".join(failures)


def test_an_anonymous_caller_never_makes_the_server_fail(
    api_schema: schemathesis.BaseSchema,
) -> None:
    def call(case: schemathesis.Case) -> None:  # no credentials, or the generator's junk ones
        case.call_and_validate(checks=[not_a_server_error])

    failures = _fuzz(api_schema, call)
    assert failures == [], "\n\n".join(failures)


def test_the_document_covers_every_router(api_schema: schemathesis.BaseSchema) -> None:
    paths = set(api_schema.raw_schema["paths"])
    for path in (
        "/api/v1/reference-prices",
        "/api/v1/graphql",
        "/api/v1/ledger/import",
        REVOKE_ALL,
    ):
        assert path in paths
    assert len(_operations(api_schema)) >= 40


def test_each_operation_answers_a_valid_request_as_documented(
    api_schema: schemathesis.BaseSchema, served: Served
) -> None:
    """What random input rarely reaches: the successful answer of every write,
    and of the reads that need a real id, date or account."""
    admin = {"Authorization": f"Bearer {served.token}"}
    seen: set[tuple[str, str]] = set()

    def send(method: str, path: str, status: int, **kwargs: Any) -> Any:
        operation = api_schema[path][method]
        seen.add((method.lower(), path))
        response = operation.Case(headers=admin, **kwargs).call_and_validate(checks=CHECKS)
        assert response.status_code == status, (method, path, response.text)
        return response.json() if "json" in response.headers.get("content-type", [""])[0] else None

    login = {"email": REVOKER, "password": PASSWORD}
    refresh = send("POST", "/api/v1/auth/login", 200, body=login)["refresh_token"]
    refresh = send("POST", "/api/v1/auth/refresh", 200, body={"refresh_token": refresh})
    send("POST", "/api/v1/auth/logout", 204, body={"refresh_token": refresh["refresh_token"]})
    send("GET", "/api/v1/auth/me", 200)
    key = send("POST", "/api/v1/api-keys", 201, body={"name": "reader", "scopes": ["ledger:read"]})
    send("GET", "/api/v1/api-keys", 200)
    send("DELETE", "/api/v1/api-keys/{key_id}", 204, path_parameters={"key_id": key["id"]})
    viewer = {"email": "viewer@acme.test", "password": PASSWORD, "role": "viewer"}
    user = send("POST", "/api/v1/users", 201, body=viewer)
    send("GET", "/api/v1/users", 200)
    send("PATCH", "/api/v1/users/{user_id}", 200, path_parameters={"user_id": user["id"]},
         body={"role": "trader"})  # fmt: skip
    send("POST", REVOKE_ALL, 200, body={"user_id": user["id"]})
    send("GET", "/api/v1/admin/audit", 200, query={"limit": 2})
    send("GET", "/api/v1/admin/jobs", 200)
    for path in ("/healthz", "/readyz", "/metrics"):
        send("GET", path, 200)
    market = {"exchange": "sim", "symbol": "BTC/USDT"}
    send("GET", "/api/v1/markets", 200)
    send("GET", "/api/v1/tickers", 200)
    send("GET", "/api/v1/candles", 200, query={**market, "interval": "1m", "limit": 5})
    send("GET", "/api/v1/orderbook", 200, query=market)
    send("GET", "/api/v1/reference-prices", 200)
    send("GET", "/api/v1/indicators", 200, query={**market, "interval": "1m", "names": "rsi:14"})
    rules = send("GET", "/api/v1/signal-rules", 200)
    rule = {"id": "btc-rsi", "type": "rsi_levels", "period": 14, "upper": 80, "lower": 30}
    send("PUT", "/api/v1/signal-rules", 200, body={"rules": [*rules["rules"], rule]})
    send("GET", "/api/v1/signals", 200, query={**market, "interval": "1m"})
    run = {**market, "interval": "1h", "strategy": "ma_cross"}
    backtest = send("POST", "/api/v1/backtests", 202, body=run)
    send("GET", "/api/v1/backtests/{backtest_id}", 200,
         path_parameters={"backtest_id": backtest["id"]})  # fmt: skip
    send("POST", "/api/v1/accounts", 201, body={"kind": "manual", "name": "desk"})
    send("GET", "/api/v1/accounts", 200)
    desk = {"path_parameters": {"name": "desk"}}
    send("PUT", "/api/v1/accounts/{name}/balances", 200, body={"balances": {"BTC": "1"}}, **desk)
    send("GET", "/api/v1/accounts/{name}/balances", 200, **desk)
    send("GET", "/api/v1/accounts/{name}", 200, **desk)
    send("POST", "/api/v1/accounts/{name}/sync", 400, **desk)  # a manual account has no exchange
    entry = {"id": "e1", "timestamp": "2024-05-01T10:00:00Z", "kind": "buy", "account": "desk",
             "asset": "BTC", "amount": "0.5", "counter_asset": "USD",
             "counter_amount": "30000"}  # fmt: skip
    send("POST", "/api/v1/ledger", 201, body=entry)
    send("POST", "/api/v1/ledger", 200, body=entry)  # the same entry again: nothing appended
    send("POST", "/api/v1/ledger/{entry_id}/reverse", 201, path_parameters={"entry_id": "e1"},
         body={})  # fmt: skip
    send("POST", "/api/v1/ledger/import", 200, body=CSV, media_type="text/csv")
    send("GET", "/api/v1/ledger", 200, query={"account": "kraken", "limit": 2})
    send("GET", "/api/v1/ledger/verify", 200)
    send("GET", "/api/v1/portfolio", 200)
    send("GET", "/api/v1/portfolio/positions", 200)
    send("GET", "/api/v1/portfolio/performance", 200,
         query={"start": "2024-01-01", "end": "2024-05-01"})  # fmt: skip
    send("GET", "/api/v1/portfolio/reconciliation", 200, query={"tolerance": "0.01"})
    for format in ("json", "csv", "pdf", "xlsx"):
        send("GET", "/api/v1/reports/tax", 200, query={"format": format, "year": 2024})
    send("GET", "/api/v1/reports/pnl", 200, query={"date": "2024-04-01"})
    send("POST", "/api/v1/graphql", 200, body={"query": "{ portfolio { currency } }"})
    assert seen == set(_operations(api_schema))


@pytest.mark.parametrize("body", [b"null", b"3", b'"{ portfolio { currency } }"', b"\xff\xfe{"])
def test_a_graphql_body_that_is_no_json_object_is_a_400_naming_it(
    served: Served, body: bytes
) -> None:
    headers = {"Authorization": f"Bearer {served.token}", "Content-Type": "application/json"}
    r = httpx.post(f"{served.url}/api/v1/graphql", content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    detail = (
        "Unable to parse request body as JSON"
        if body.startswith(b"\xff")
        else "the body must be a JSON object with a `query`"
    )
    assert r.json() == {
        "type": "https://cryptodesk.dev/problems/invalid-parameter", "title": "Invalid parameter",
        "status": 400, "detail": detail, "instance": "/api/v1/graphql",
        "errors": [{"name": "body", "reason": detail}],
    }  # fmt: skip
