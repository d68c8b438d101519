"""Every route declares a permission; every role gets exactly what the matrix
grants; no tenant reaches another's rows; anonymous callers read market data
only while it is public.

The app is built as ``runtime`` builds it (every router, GraphQL included)
over a migrated SQLite file, so a route added later is walked too.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from cryptodesk.adapters.bus.memory import MemoryBus
from cryptodesk.adapters.cache.memory import MemoryCache
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.signal_store import SqlSignalStore
from cryptodesk.adapters.db.sql_store import SqlMarketStore
from cryptodesk.api.app import create_app
from cryptodesk.api.graphql import graphql_router
from cryptodesk.api.routes.backtests import backtests_router
from cryptodesk.api.routes.ledger import ledger_router
from cryptodesk.api.routes.signals import signals_router
from cryptodesk.api.security import AUTHENTICATED, route_permissions
from cryptodesk.config import load_settings
from cryptodesk.domain.auth import PERMISSIONS, ROLE_PERMISSIONS, ROLES, Role
from cryptodesk.portfolio_wiring import build_portfolio
from cryptodesk.risk_wiring import risk_api_router
from cryptodesk.services.backtests import BacktestJobs
from cryptodesk.services.signal_queries import SignalQueries
from cryptodesk.services.signal_rules import RuleBook
from cryptodesk.trading_wiring import orders_api_router
from tests.unit._auth import Logins, auth_service
from tests.unit._fakes import Harness
from tests.unit._ledger_api import CSV, import_csv, migrated_template

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_template(tmp_path_factory.mktemp("rbac"))


@dataclass
class Env:
    app: FastAPI
    logins: Logins
    public_app: FastAPI | None = None

    def client(self, tenant: str, role: Role) -> httpx.AsyncClient:
        return self._client(self.app, self.logins.bearer(tenant, role))

    def anonymous(self, app: FastAPI | None = None) -> httpx.AsyncClient:
        return self._client(app or self.app, None)

    @staticmethod
    def _client(app: FastAPI, auth: httpx.Auth | None) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        return httpx.AsyncClient(transport=transport, base_url="http://t", auth=auth)


def _app(h: Harness, routers: list[Any], logins: Logins) -> FastAPI:
    return create_app(h.queries, h.metrics, h.health, routers=routers, auth=logins.auth,
                      jobs=_no_jobs)  # fmt: skip


async def _no_jobs() -> list[Any]:
    return []


@pytest.fixture
async def env(tmp_path: Path, template: Path) -> AsyncIterator[Env]:
    db = tmp_path / "rbac.db"
    shutil.copyfile(template, db)
    settings = load_settings(
        data_dir=tmp_path, database_url=f"sqlite+aiosqlite:///{db}", exchanges=["sim"]
    )
    store = SqlMarketStore(create_engine(settings.database_url))
    portfolio = build_portfolio(settings, store.engine, MemoryCache(), store)
    h = Harness()
    signal_store = SqlSignalStore(store.engine)
    signal_queries = SignalQueries(
        h.queries, h.store, signal_store, RuleBook(signal_store, []),
        exchanges=["sim", "kraken"], symbols=["BTC/USDT", "ETH/USDT"], intervals=["1m", "1h"],
    )  # fmt: skip
    jobs = BacktestJobs(h.store)
    logins = Logins(auth_service(store.engine))
    routers = [
        backtests_router(jobs), signals_router(signal_queries),
        ledger_router(portfolio.ledger), portfolio.router(),
        graphql_router(portfolio.ledger, portfolio.valuation, signal_queries, AUTHENTICATED),
        risk_api_router(settings, portfolio.valuation, store, h.cache),
        orders_api_router(settings, store.engine, h.cache, MemoryBus()),
    ]  # fmt: skip
    yield Env(_app(h, routers, logins), logins)
    await jobs.close()
    await signal_store.close()
    await portfolio.close()
    await store.close()


def _operations(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    doc = app.openapi()
    return [
        (path, method.upper(), op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
    ]


async def test_every_route_in_the_openapi_document_declares_a_known_permission(env: Env) -> None:
    operations = _operations(env.app)
    assert len(operations) >= 40
    missing = [f"{m} {p}" for p, m, op in operations if op.get("x-permission") not in PERMISSIONS]
    assert missing == []
    # ... and the document hides no route: every API route is in it, with the same permission.
    declared = route_permissions(env.app)
    assert {(p, m): op["x-permission"] for p, m, op in operations} == {
        key: value for key, value in declared.items() if key[1] != "HEAD"
    }


def _url(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "someone-elses", path)


async def test_each_role_gets_403_exactly_where_the_matrix_denies(env: Env) -> None:
    checked = 0
    for role in ROLES:
        async with env.client("acme", role) as client:
            for path, method, op in _operations(env.app):
                permission = op["x-permission"]
                if path == "/api/v1/auth/revoke-all":  # would end this client's session
                    checked += 1
                    continue
                r = await client.request(method, _url(path), json={})
                if permission in ROLE_PERMISSIONS[role] or permission in ("public", "profile:read"):
                    assert r.status_code not in (401, 403), (role, method, path, r.text)
                else:
                    assert r.status_code == 403, (role, method, path, r.text)
                    assert r.headers["content-type"] == PROBLEM
                    assert r.json()["detail"] == f"this needs the permission {permission!r}"
                checked += 1
    assert checked == 4 * len(_operations(env.app))


async def test_an_api_key_is_held_to_its_scopes(env: Env) -> None:
    async with env.client("acme", "manager") as manager:
        made = await manager.post("/api/v1/api-keys",
                                  json={"name": "reader", "scopes": ["ledger:read"]})  # fmt: skip
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    async with env.anonymous() as client:
        listed = await client.get("/api/v1/ledger", headers={"X-API-Key": key})
        csv_key = {"X-API-Key": key, "content-type": "text/csv"}
        written = await client.post("/api/v1/ledger/import", content="x", headers=csv_key)
        accounts = await client.get("/api/v1/accounts", headers={"Authorization": f"Bearer {key}"})
    assert listed.status_code == 200
    assert written.status_code == 403
    assert accounts.status_code == 403  # accounts:read is the role's, not the key's


async def test_tenant_owned_ids_of_another_tenant_are_404(env: Env) -> None:
    async with env.client("acme", "admin") as acme:
        assert (await import_csv(acme, CSV)).status_code == 200
        key = await acme.post("/api/v1/api-keys", json={"name": "k", "scopes": ["market:read"]})
        viewer = {"email": "v@acme.test", "password": "a-long-password", "role": "viewer"}
        user = await acme.post("/api/v1/users", json=viewer)
        run = {"exchange": "sim", "symbol": "BTC/USDT", "interval": "1h", "strategy": "ma_cross"}
        backtest = await acme.post("/api/v1/backtests", json=run)
    key_id, user_id = key.json()["id"], user.json()["id"]
    assert backtest.status_code == 202, backtest.text
    backtest_id = backtest.json()["id"]
    attempts = [
        ("GET", "/api/v1/accounts/kraken", None),
        ("GET", "/api/v1/accounts/kraken/balances", None),
        ("PUT", "/api/v1/accounts/kraken/balances", {"balances": {"BTC": "1"}}),
        ("POST", "/api/v1/accounts/kraken/sync", None),
        ("POST", "/api/v1/ledger/b1/reverse", {}),
        ("DELETE", f"/api/v1/api-keys/{key_id}", None),
        ("PATCH", f"/api/v1/users/{user_id}", {"role": "admin"}),
        ("POST", "/api/v1/auth/revoke-all", {"user_id": user_id}),
        ("GET", f"/api/v1/backtests/{backtest_id}", None),
    ]
    async with env.client("beta", "admin") as beta:
        for method, url, body in attempts:
            r = await beta.request(method, url, json=body)
            assert r.status_code == 404, (method, url, r.text)
            assert r.headers["content-type"] == PROBLEM
        listings = {url: (await beta.get(url)).json() for url in (
            "/api/v1/accounts", "/api/v1/ledger", "/api/v1/api-keys", "/api/v1/users")}  # fmt: skip
    assert listings["/api/v1/accounts"] == {"accounts": []}
    assert listings["/api/v1/ledger"]["entries"] == []
    assert listings["/api/v1/api-keys"] == []
    assert [u["email"] for u in listings["/api/v1/users"]] == ["admin@beta.test"]
    async with env.client("acme", "admin") as acme:  # nothing of acme's was touched
        assert (await acme.get(f"/api/v1/users/{user_id}")).status_code == 405
        users = (await acme.get("/api/v1/users")).json()
        keys = (await acme.get("/api/v1/api-keys")).json()
    assert {u["email"]: u["role"] for u in users}["v@acme.test"] == "viewer"
    assert [k["revoked_at"] for k in keys] == [None]


async def test_anonymous_callers_read_public_market_data_only(env: Env) -> None:
    async with env.anonymous() as client:
        for path, method, op in _operations(env.app):
            r = await client.request(method, _url(path), json={})
            if op["x-permission"] in ("public", "market:read"):
                assert r.status_code != 401, (method, path)
            else:
                assert r.status_code == 401, (method, path, r.text)
                assert r.headers["www-authenticate"] == 'Bearer realm="cryptodesk"'
    env.logins.auth.public_market_data = False
    async with env.anonymous() as client:
        tickers = await client.get("/api/v1/tickers")
        health = await client.get("/healthz")
    assert tickers.status_code == 401
    assert health.status_code == 200


def test_the_documented_matrix_is_the_one_enforced() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "security.md").read_text()
    documented: dict[str, list[str]] = {}
    for line in doc.splitlines():
        found = re.fullmatch(r"\| `([a-z_:]+)` \| (.+) \|", line)
        if found and found.group(1) in PERMISSIONS:
            documented[found.group(1)] = [cell.strip() for cell in found.group(2).split("|")]
    assert documented == {
        p: ["yes" if p in ROLE_PERMISSIONS[role] else "-" for role in ROLES] for p in PERMISSIONS
    }
