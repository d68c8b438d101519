"""/api/v1/graphql over the real services: the ledger on SQLite, prices from the cache,
signals from the signal store; callers are bearer tokens mapped to principals."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Header, Request, Response
from graphql import get_introspection_query

from cryptodesk.adapters.cache.memory import MemoryCache
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.signal_store import SqlSignalStore
from cryptodesk.adapters.db.snapshot_store import SqlSnapshotStore
from cryptodesk.adapters.db.sql_store import SqlMarketStore
from cryptodesk.adapters.files.ledger_csv import parse_ledger
from cryptodesk.api.app import create_app
from cryptodesk.api.graphql import graphql_router
from cryptodesk.api.problems import problem
from cryptodesk.api.routes.ledger import _encode_cursor
from cryptodesk.config import load_settings
from cryptodesk.domain import codec
from cryptodesk.domain.auth import AuthenticationError, Principal
from cryptodesk.domain.market import Ticker
from cryptodesk.domain.signals import Signal
from cryptodesk.portfolio import valuation
from cryptodesk.portfolio.ledger import LedgerEntry
from cryptodesk.portfolio_wiring import Portfolio, build_portfolio
from cryptodesk.services import cache_keys
from cryptodesk.services.ledger_service import LedgerService
from cryptodesk.services.portfolio_valuation import ClosePrices, LivePrices, PortfolioValuation
from cryptodesk.services.signal_queries import SignalPage, SignalQueries
from cryptodesk.services.signal_rules import RuleBook
from tests.unit._fakes import MINUTE, T0, Harness
from tests.unit._ledger_api import CSV, HEADER, migrated_template

URL = "/api/v1/graphql"
T_PRICE = 1_714_564_800_000  # 2024-05-01T12:00:00Z
BETA_CSV = HEADER + "x1,2024-01-05T00:00:00Z,buy,kraken,ETH,2,USD,4000,,,,,,beta buy\n"
TOKENS = {
    "acme-viewer": Principal("acme", "u1", "v@acme.test", "viewer"),
    "beta-admin": Principal("beta", "u2", "a@beta.test", "admin"),
    # A trader's API key scoped to the portfolio only.
    "acme-key": Principal("acme", "u3", "t@acme.test", "trader", kind="api_key", key_id="k1",
                          scopes=frozenset({"portfolio:read"})),
}  # fmt: skip


async def bearer(authorization: Annotated[str | None, Header()] = None) -> Principal:
    """The app's authentication dependency, as the API wires it: a token or a 401."""
    if authorization is None or not authorization.startswith("Bearer "):
        raise AuthenticationError("missing bearer token")
    found = TOKENS.get(authorization.removeprefix("Bearer "))
    if found is None:
        raise AuthenticationError("the token is unknown or expired")
    return found


async def unauthorized(request: Request, exc: Exception) -> Response:
    headers = {"WWW-Authenticate": "Bearer"}
    return problem(request.url.path, "unauthorized", 401, str(exc), headers=headers)


@dataclass
class Env:
    portfolio: Portfolio
    signals: SignalQueries
    store: SqlSignalStore
    cache: MemoryCache
    harness: Harness

    def make_app(self, *, ledger: LedgerService | None = None,
                 valuation: PortfolioValuation | None = None,
                 signals: SignalQueries | None = None, **limits: int) -> FastAPI:  # fmt: skip
        router = graphql_router(
            ledger or self.portfolio.ledger, valuation or self.portfolio.valuation,
            signals or self.signals, bearer, **limits,
        )  # fmt: skip
        h = self.harness
        app = create_app(h.queries, h.metrics, h.health, routers=[router])
        app.add_exception_handler(AuthenticationError, unauthorized)
        return app

    def client(self, app: FastAPI | None = None) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app or self.make_app(), raise_app_exceptions=False)
        return httpx.AsyncClient(transport=transport, base_url="http://t")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_template(tmp_path_factory.mktemp("graphql"))


@pytest.fixture
async def env(tmp_path: Path, template: Path) -> AsyncIterator[Env]:
    db = tmp_path / "g.db"
    shutil.copyfile(template, db)
    url = f"sqlite+aiosqlite:///{db}"
    settings = load_settings(data_dir=tmp_path, database_url=url, exchanges=["sim"])
    market = SqlMarketStore(create_engine(settings.database_url))
    cache = MemoryCache()
    portfolio = build_portfolio(settings, market.engine, cache, market)
    await portfolio.ledger.import_entries("acme", parse_ledger(CSV))
    await portfolio.ledger.import_entries("beta", parse_ledger(BETA_CSV))
    ticker = Ticker("sim", "BTC/USDT", T_PRICE, 60000.0)
    await cache.set(cache_keys.ticker("sim", "BTC/USDT"), codec.encode_ticker(ticker))
    store = SqlSignalStore(market.engine)
    h = Harness()
    signals = SignalQueries(
        h.queries, h.store, store, RuleBook(store, []),
        exchanges=["sim", "kraken"], symbols=["BTC/USDT", "ETH/USDT"], intervals=["1m", "1h"],
    )  # fmt: skip
    yield Env(portfolio, signals, store, cache, h)
    await store.close()
    await portfolio.close()
    await market.close()


async def post(
    client: httpx.AsyncClient, query: str, token: str | None = "acme-viewer", **headers: str
) -> httpx.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return await client.post(URL, json={"query": query}, headers=headers)


async def gql(
    client: httpx.AsyncClient, query: str, token: str = "acme-viewer", **variables: Any
) -> Any:
    """The answer of ``query`` (HTTP 200: GraphQL's own errors are in the body)."""
    body = {"query": query, "variables": variables}
    r = await client.post(URL, json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return r.json()


def only_error(body: dict[str, Any]) -> dict[str, Any]:
    assert len(body["errors"]) == 1, body
    error: dict[str, Any] = body["errors"][0]
    return error


POSITION = "account asset amount costBasis price marketValue unrealized realized income allocation"
ENTRY = """id seq hash timestamp timestampMs kind subkind account asset amount counterAsset
counterAmount feeAsset feeAmount feeValue toAccount value lotIds { id amount } note reverses
externalId tags"""


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def rest_position(p: dict[str, Any]) -> dict[str, Any]:
    return {"account": None} | {camel(k): v for k, v in p.items()}


# ---- portfolio and positions ---------------------------------------------------------


async def test_portfolio_and_positions_are_the_tenants_valuation_as_rest_has_it(env: Env) -> None:
    query = f"""{{
      portfolio {{ currency method
        total {{ costBasis marketValue unrealized realized income complete }}
        positions {{ {POSITION} }} assets {{ {POSITION} }}
        missingPrices {{ account asset amount }}
        quotes {{ asset price source asOf asOfMs ageMs }} warnings }}
      kraken: positions(account: "kraken") {{ {POSITION} }}
    }}"""
    async with env.client() as c:
        body = await gql(c, query)
    # What GET /api/v1/portfolio serves for the same tenant.
    rest = valuation.to_dict((await env.portfolio.valuation.value("acme")).valuation)
    assert "errors" not in body
    p = body["data"]["portfolio"]
    assert (p["currency"], p["method"]) == ("USD", "fifo")
    # Per wallet (FIFO): kraken keeps 0.1499 of b2 after the transfer's fee and the
    # sale; cold holds the whole b1 lot (cost 20010 with its fee) and the staked ETH.
    assert body["data"]["kraken"] == [
        {"account": "kraken", "asset": "BTC", "amount": "0.1499",
         "costBasis": "6595.60000000", "price": "60000.0", "marketValue": "8994.00000",
         "unrealized": "2398.40000000", "realized": "2095.60000000", "income": "0",
         "allocation": "23.07"},  # 8994 of the priced 38994
    ]  # fmt: skip
    assert [(x["account"], x["asset"], x["amount"], x["marketValue"]) for x in p["positions"]] == [
        ("cold", "BTC", "0.5", "30000.00"),
        ("cold", "ETH", "0.01", None),
        ("kraken", "BTC", "0.1499", "8994.00000"),
    ]
    # Cost 6595.6 + 20010 + 30 (the staked ETH at its value); the priced part is
    # worth 8994 + 30000, unrealized 2398.4 + 9990.
    assert p["total"] == {
        "costBasis": "26635.60000000", "marketValue": "38994.00000",
        "unrealized": "12388.40000000", "realized": "2095.60000000", "income": "30",
        "complete": False,
    }  # fmt: skip
    assert p["missingPrices"] == [{"account": "cold", "asset": "ETH", "amount": "0.01"}]
    age = p["quotes"][0]["ageMs"]  # now - T_PRICE, by the wall clock
    assert type(age) is int
    assert p["quotes"] == [
        {"asset": "BTC", "price": "60000.0", "source": "ticker:sim:BTC/USDT",
         "asOf": "2024-05-01T12:00:00.000Z", "asOfMs": T_PRICE, "ageMs": age},  # a Long
        {"asset": "ETH", "price": None, "source": None, "asOf": None, "asOfMs": None,
         "ageMs": None},
    ]  # fmt: skip
    # Field for field the REST answer.
    assert p["positions"] == [rest_position(x) for x in rest["positions"]]
    assert p["assets"] == [rest_position(x) for x in rest["assets"]]
    assert p["total"] == {camel(k): v for k, v in rest["total"].items()}
    assert p["warnings"] == rest["warnings"]


async def test_the_valuation_runs_once_per_request_however_many_fields_ask(env: Env) -> None:
    reads: list[str] = []

    async def entries(tenant: str) -> list[LedgerEntry]:
        reads.append(tenant)
        return await env.portfolio.ledger.entries(tenant)

    live = LivePrices(env.cache, exchanges=["sim"], currency="USD")
    closes = ClosePrices(env.harness.store, exchanges=["sim"], currency="USD")
    snapshots = SqlSnapshotStore(env.portfolio.ledger.store.engine)
    counted = PortfolioValuation(entries, live, closes, snapshots, currency="USD", method="fifo")
    app = env.make_app(valuation=counted)
    query = (
        '{ a: portfolio { currency } b: portfolio { method } positions(asset: "ETH") { account } }'
    )
    async with env.client(app) as c:
        body = await gql(c, query, "beta-admin")
    assert body["data"] == {"a": {"currency": "USD"}, "b": {"method": "fifo"},
                            "positions": [{"account": "kraken"}]}  # fmt: skip
    assert reads == ["beta"]


# ---- transactions and tenants ----------------------------------------------------------


async def test_a_tenant_reads_only_its_own_transactions_paged_like_rest(env: Env) -> None:
    first_page = f"{{ transactions(limit: 2) {{ items {{ {ENTRY} }} nextCursor }} }}"
    async with env.client() as c:
        body = await gql(c, first_page)
        page = body["data"]["transactions"]
        ids = [e["id"] for e in page["items"]]
        q = "query($c: String) { transactions(limit: 2, cursor: $c) { items { id } nextCursor } }"
        while page["nextCursor"] is not None:
            page = (await gql(c, q, c=page["nextCursor"]))["data"]["transactions"]
            ids += [e["id"] for e in page["items"]]
        # A cursor of GET /api/v1/ledger (after seq 3, no filters) continues here.
        after_rest = await gql(c, q, c=_encode_cursor(3, [None, None, None]))
        # Tenant beta never sees acme's entries, whatever header it sends.
        beta = await post(c, "{ transactions { items { id account note } } }", "beta-admin",
                          **{"X-Tenant": "acme"})  # fmt: skip
        cold = await gql(c, '{ transactions(account: "cold") { items { id } } }', "beta-admin")
        acme_cold = await gql(c, '{ transactions(account: "cold") { items { id } } }')
        beta_positions = await gql(c, f"{{ positions {{ {POSITION} }} }}", "beta-admin")
    assert ids == ["b1", "b2", "t1", "s1", "i1"]
    assert after_rest["data"]["transactions"] == {
        "items": [{"id": "s1"}, {"id": "i1"}], "nextCursor": None
    }  # fmt: skip
    b1 = body["data"]["transactions"]["items"][0]
    assert len(b1.pop("hash")) == 64
    assert b1 == {
        "id": "b1", "seq": 1, "timestamp": "2024-01-02T00:00:00.000Z",
        "timestampMs": 1_704_153_600_000, "kind": "buy", "subkind": None, "account": "kraken",
        "asset": "BTC", "amount": "0.5", "counterAsset": "USD", "counterAmount": "20000",
        "feeAsset": "USD", "feeAmount": "10", "feeValue": None, "toAccount": None,
        "value": None, "lotIds": [], "note": "first buy", "reverses": None, "externalId": None,
        "tags": [],
    }  # fmt: skip
    assert beta.json() == {
        "data": {"transactions": {"items": [{"id": "x1", "account": "kraken", "note": "beta buy"}]}}
    }
    assert cold["data"] == {"transactions": None}
    assert only_error(cold)["extensions"] == {"code": "NOT_FOUND", "field": "account"}
    assert only_error(cold)["message"] == "no account 'cold'"
    assert [e["id"] for e in acme_cold["data"]["transactions"]["items"]] == ["t1", "i1"]
    assert beta_positions["data"]["positions"] == [
        {"account": "kraken", "asset": "ETH", "amount": "2", "costBasis": "4000", "price": None,
         "marketValue": None, "unrealized": None, "realized": "0", "income": "0",
         "allocation": None},
    ]  # fmt: skip


# ---- signals ---------------------------------------------------------------------------


def sig(rule: str, i: int, symbol: str = "BTC/USDT") -> Signal:
    return Signal(rule, "golden_cross", "sim", symbol, "1m", T0 + i * MINUTE, 100.25,
                  {"sma_3": 100.5, "sma_5": float("nan")}, T0 + i * MINUTE + 61_000)  # fmt: skip


async def test_signals_are_market_data_every_permitted_tenant_reads(env: Env) -> None:
    after = None
    for i in range(3):
        assert await env.store.commit(("sim", "BTC/USDT", "1m"), T0 + i * MINUTE, after=after,
                                      fired=[sig("a", i), sig("b", i)])  # fmt: skip
        after = T0 + i * MINUTE
    query = """{ signals(symbol: "BTC/USDT", rule: "b", limit: 2) { nextCursor items {
      rule kind exchange symbol interval openTime openTimeMs close values { name value }
      detectedAt } } }"""
    async with env.client() as c:
        acme = await gql(c, query)
        beta = await gql(c, query, "beta-admin")
        cursor = acme["data"]["signals"]["nextCursor"]
        q = """query($c: String) { signals(rule: "b", symbol: "BTC/USDT", limit: 2, cursor: $c)
          { items { openTimeMs } nextCursor } }"""
        older = await gql(c, q, c=cursor)
    assert acme == beta
    assert acme["data"]["signals"]["items"] == [
        {"rule": "b", "kind": "golden_cross", "exchange": "sim", "symbol": "BTC/USDT",
         "interval": "1m", "openTime": f"2024-05-01T00:0{i}:00.000Z", "openTimeMs": T0 + i * MINUTE,
         "close": "100.25", "values": [{"name": "sma_3", "value": 100.5},
                                        {"name": "sma_5", "value": None}],
         "detectedAt": f"2024-05-01T00:0{i + 1}:01.000Z"}
        for i in (1, 2)
    ]  # fmt: skip
    assert older["data"]["signals"] == {"items": [{"openTimeMs": T0}], "nextCursor": None}


# ---- who may ask what --------------------------------------------------------------------


async def test_requests_no_graphql_runs_for_are_answered_as_problems(env: Env) -> None:
    auth = {"Authorization": "Bearer acme-viewer"}
    async with env.client() as c:
        missing = await post(c, "{ portfolio { currency } }", None)
        unknown = await post(c, "{ portfolio { currency } }", "stolen")
        get = await c.get(URL, params={"query": "{ portfolio { currency } }"}, headers=auth)
        not_json = await c.post(
            URL, content=b"{", headers=auth | {"Content-Type": "application/json"}
        )
    for r, detail in ((missing, "missing bearer token"),
                      (unknown, "the token is unknown or expired")):  # fmt: skip
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json() == {
            "type": "https://cryptodesk.dev/problems/unauthorized", "title": "Unauthorized",
            "status": 401, "detail": detail, "instance": URL,
        }  # fmt: skip
    assert get.status_code == 405  # POST only: no GET queries, no IDE page
    assert get.headers["content-type"] == "application/problem+json"
    assert not_json.headers["content-type"] == "application/problem+json"
    assert not_json.json() == {
        "type": "https://cryptodesk.dev/problems/invalid-parameter", "title": "Invalid parameter",
        "status": 400, "detail": "Unable to parse request body as JSON", "instance": URL,
        "errors": [{"name": "body", "reason": "Unable to parse request body as JSON"}],
    }  # fmt: skip


async def test_a_missing_permission_nulls_that_field_only_and_names_it(env: Env) -> None:
    query = "{ portfolio { currency } transactions { items { id } } signals { items { rule } } }"
    async with env.client() as c:
        body = await gql(c, query, "acme-key")  # the key's scopes: portfolio:read only
    assert body["data"] == {"portfolio": {"currency": "USD"}, "transactions": None, "signals": None}
    assert sorted(body["errors"], key=lambda e: e["path"]) == [
        {"message": "this needs the permission 'signals:read'", "path": ["signals"],
         "locations": [{"line": 1, "column": 56}],
         "extensions": {"code": "FORBIDDEN", "permission": "signals:read"}},
        {"message": "this needs the permission 'ledger:read'", "path": ["transactions"],
         "locations": [{"line": 1, "column": 26}],
         "extensions": {"code": "FORBIDDEN", "permission": "ledger:read"}},
    ]  # fmt: skip


# ---- limits ------------------------------------------------------------------------------


async def test_depth_token_and_alias_limits_refuse_a_document_before_it_runs(env: Env) -> None:
    deepest = "{ transactions { items { lotIds { id } } } }"  # 4 levels: as deep as it gets
    aliases = " ".join(f"a{i}: portfolio {{ currency }}" for i in range(16))
    async with env.client(env.make_app(max_depth=2)) as c:
        refused = await gql(c, deepest)
    async with env.client(env.make_app(max_depth=3)) as c:
        allowed = await gql(c, deepest)
    async with env.client() as c:
        default = await gql(c, deepest)
        too_many = await gql(c, f"{{ {aliases} }}")
        fifteen = await gql(c, f"{{ {aliases.rsplit(' a15:', 1)[0]} }}")
        too_long = await gql(c, "{ portfolio { " + "currency " * 1000 + "} }")
    assert refused == {
        "data": None,
        "errors": [{"message": "'anonymous' exceeds maximum operation depth of 2",
                    "locations": [{"line": 1, "column": 35}]}],
    }  # fmt: skip
    assert allowed == default
    assert [e["lotIds"] for e in default["data"]["transactions"]["items"]] == [[]] * 5
    assert too_many == {"data": None, "errors": [{"message": "16 aliases found. Allowed: 15"}]}
    assert fifteen["data"] == {f"a{i}": {"currency": "USD"} for i in range(15)}
    message = "Syntax Error: Document contains more than 1000 tokens. Parsing aborted."
    assert (too_long["data"], too_long["errors"][0]["message"]) == (None, message)


async def test_every_list_is_capped_at_500(env: Env) -> None:
    async with env.client() as c:
        over = await gql(c, "{ positions(first: 501) { asset } }")
        zero = await gql(c, "{ transactions(limit: 0) { items { id } } }")
        nested = await gql(c, "{ portfolio { currency positions(first: 501) { asset } } }")
        signals = await gql(c, "{ signals(limit: 1000) { items { rule } } }")
        two = await gql(c, "{ portfolio { positions(first: 2) { account asset } } }")
        most = await gql(c, "{ positions(first: 500) { asset } }")
    assert over["data"] == {"positions": None}
    assert only_error(over)["message"] == "first must be 1..500, got 501"
    assert only_error(over)["extensions"] == {"code": "BAD_USER_INPUT", "field": "first"}
    assert only_error(zero)["message"] == "limit must be 1..500, got 0"
    assert only_error(nested)["path"] == ["portfolio", "positions"]
    assert nested["data"] == {"portfolio": None}
    assert only_error(signals)["extensions"] == {"code": "BAD_USER_INPUT", "field": "limit"}
    assert two["data"]["portfolio"]["positions"] == [
        {"account": "cold", "asset": "BTC"}, {"account": "cold", "asset": "ETH"}
    ]  # fmt: skip
    assert most["data"]["positions"] == [{"asset": "BTC"}, {"asset": "ETH"}, {"asset": "BTC"}]


async def test_introspection_is_served_within_bounds(env: Env) -> None:
    nested = "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }"
    async with env.client() as c:
        full = await gql(c, get_introspection_query(descriptions=True))
        deep = await gql(c, nested)
    types = {t["name"]: t for t in full["data"]["__schema"]["types"]}
    assert full["data"]["__schema"]["queryType"] == {"name": "Query", "kind": "OBJECT"}
    names = [f["name"] for f in types["Query"]["fields"]]
    assert names == ["portfolio", "positions", "transactions", "signals"]
    assert types["Long"]["kind"] == "SCALAR"
    assert deep == {
        "data": None,
        "errors": [{"message": "Maximum introspection depth exceeded",
                    "locations": [{"line": 1, "column": 3}]}],
    }  # fmt: skip


# ---- errors ------------------------------------------------------------------------------


class BrokenSignals(SignalQueries):
    """A signal read failing with a message that must stay on the server."""

    async def signals(self, **kwargs: Any) -> SignalPage:
        raise RuntimeError("connection to 10.0.0.7 refused for user=reader password=hunter2")


async def test_unexpected_failures_are_masked_and_known_ones_say_what_to_fix(
    env: Env, tmp_path: Path
) -> None:
    h = env.harness
    broken = BrokenSignals(h.queries, h.store, env.store, RuleBook(env.store, []),
                           exchanges=["sim"], symbols=["BTC/USDT"], intervals=["1m"])  # fmt: skip
    bare = tmp_path / "no-tables.db"  # a database nobody migrated
    unmigrated = LedgerService(create_engine(f"sqlite+aiosqlite:///{bare}"), None)
    app = env.make_app(signals=broken, ledger=unmigrated)
    async with env.client(app) as c:
        internal = await gql(c, "{ signals { items { rule } } }")
        storage = await gql(c, "{ transactions { items { id } } }")
        portfolio = await gql(c, "{ portfolio { currency } }")  # the other services still answer
    async with env.client() as c:
        bad_time = await gql(c, '{ transactions(start: "yesterday") { items { id } } }')
        bad_cursor = await gql(c, '{ transactions(cursor: "garbage") { items { id } } }')
        unknown = await gql(c, '{ signals(symbol: "DOGE/USDT") { items { rule } } }')
    await unmigrated.close()
    assert only_error(internal) == {
        "message": "Unexpected error.", "path": ["signals"],
        "locations": [{"line": 1, "column": 3}], "extensions": {"code": "INTERNAL_SERVER_ERROR"},
    }  # fmt: skip
    assert "hunter2" not in str(internal)
    assert only_error(storage) | {"locations": None} == {
        "message": "the database cannot be used right now; see the server log",
        "path": ["transactions"], "locations": None, "extensions": {"code": "SERVICE_UNAVAILABLE"},
    }  # fmt: skip
    assert str(bare) not in str(storage)
    assert portfolio == {"data": {"portfolio": {"currency": "USD"}}}
    assert only_error(bad_time)["extensions"] == {"code": "BAD_USER_INPUT", "field": "start"}
    assert only_error(bad_cursor) | {"locations": None} == {
        "message": "cursor is not one this server issued", "path": ["transactions"],
        "locations": None, "extensions": {"code": "BAD_USER_INPUT", "field": "cursor"},
    }  # fmt: skip
    assert only_error(unknown)["extensions"] == {"code": "NOT_FOUND", "field": "symbol"}
