"""The risk routes over the real services (the world of ``test_risk_service``):
answers, parameter and body checks, credentials, and the circuit breakers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from cryptodesk.analytics.vol_breaker import BreakerState
from cryptodesk.api.app import create_app
from cryptodesk.api.routes.risk import risk_router
from cryptodesk.domain.auth import Role
from cryptodesk.services.circuit_breakers import BreakerStates, cache_key, encode_state
from tests.unit._auth import Logins, auth_service
from tests.unit._fakes import Harness
from tests.unit._ledger_api import problem
from tests.unit.test_risk_service import World, expected_report, open_world, template

__all__ = ["template"]  # the fixture the one below takes
PORTFOLIO = "/api/v1/risk/portfolio"
REBALANCE = "/api/v1/risk/rebalance"


@dataclass
class Env:
    app: FastAPI
    world: World
    logins: Logins

    def client(self, tenant: str = "acme", role: Role = "viewer") -> httpx.AsyncClient:
        return self._client(self.logins.bearer(tenant, role))

    def _client(self, auth: httpx.Auth | None, **kw: Any) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        return httpx.AsyncClient(transport=transport, base_url="http://t", auth=auth, **kw)


@pytest.fixture
async def env(tmp_path: Path, template: Path) -> AsyncIterator[Env]:
    async for world in open_world(tmp_path, template):
        h = Harness()
        logins = Logins(auth_service(world.store.engine))
        breakers = BreakerStates(world.cache, exchanges=["sim"], symbols=["BTC/USDT", "ETH/USDT"])
        routers = [risk_router(world.service, breakers)]
        app = create_app(h.queries, h.metrics, h.health, routers=routers, auth=logins.auth)
        yield Env(app, world, logins)


async def test_portfolio_answers_the_report_of_the_aligned_stored_closes(env: Env) -> None:
    async with env.client() as c:
        r = await c.get(PORTFOLIO, params={"days": 30, "paths": 500})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["excluded"] == [
        {"asset": "SOL", "reason": "no live price"},
        {"asset": "DOGE", "reason": "no stored candles in the window"},
    ]
    assert body["history"]["ETH"]["forward_filled"] == 1
    assert body["notes"].pop("ETH") == {
        "prices": "1 missing close(s) forward-filled from the previous one"}  # fmt: skip
    for key in ("as_of", "currency", "excluded", "exposure", "history"):
        body.pop(key)
    assert body == expected_report()


async def test_var_and_correlation_answer_what_the_service_computes(env: Env) -> None:
    service = env.world.service
    async with env.client() as c:
        var = await c.get("/api/v1/risk/var", params={"days": 30, "confidence": 0.9,
                                                      "horizon": 2, "paths": 300})  # fmt: skip
        corr = await c.get("/api/v1/risk/correlation",
                           params={"days": 30, "method": "ewma", "half_life": 7})  # fmt: skip
        only = await c.get("/api/v1/risk/correlation", params=[("assets", "BTC"), ("days", 30)])
    assert var.status_code == 200, var.text
    assert var.json() == await service.var("acme", days=30, confidence=0.9, horizon=2, paths=300)
    assert corr.json() == await service.correlation("acme", days=30, method="ewma", half_life=7)
    assert (only.json()["matrix"], only.json()["average"]) == ({"BTC": {"BTC": 1.0}}, None)


async def test_rebalance_proposes_trades_and_places_none(env: Env) -> None:
    body = {"targets": {"BTC": 0.5, "ETH": 0.3, "USDT": 0.2}, "lot_sizes": {"BTC": "0.001"}}
    async with env.client() as c:
        r = await c.post(REBALANCE, json=body)
        again = await c.post(REBALANCE, json=body)
    assert r.status_code == 200, r.text
    [trade] = r.json()["trades"]
    assert (trade["asset"], trade["side"], Decimal(trade["quantity"])) == (
        "BTC", "sell", Decimal("0.123"))  # fmt: skip
    assert (Decimal(trade["notional"]), Decimal(trade["fee"])) == (Decimal(7380), Decimal("7.38"))
    assert Decimal(r.json()["cash_after"]) == Decimal("10372.62")
    assert r.json()["targets"] == {"BTC": 0.5, "ETH": 0.3, "USDT": 0.2}
    assert again.json() == r.json()  # nothing was traded: the same holdings again


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"targets": {"BTC": 1.0}, "leverage": 2}, "leverage"),
        ({"targets": {"BTC": "1"}}, "targets.BTC"),
        ({"targets": {"BTC": 1.0}, "optimizer": "hrp"}, "request"),
        ({}, "request"),
        ({"optimizer": "max_sharpe"}, "optimizer"),
        ({"targets": {"BTC": 1.0}, "fee_rate": "-0.1"}, "fee_rate"),
        ({"targets": {"BTC": 1.0}, "min_trade": 10}, "min_trade"),
    ],
)
async def test_a_body_that_does_not_fit_is_422_naming_the_field(
    env: Env, body: dict[str, Any], field: str
) -> None:
    async with env.client() as c:
        r = await c.post(REBALANCE, json=body)
    found = problem(r, 422, "invalid-body")
    assert field in [e["name"] for e in found["errors"]], found


async def test_a_rebalance_the_holdings_cannot_support_is_400_naming_the_field(
    env: Env,
) -> None:
    async with env.client() as c:
        sums = await c.post(REBALANCE, json={"targets": {"BTC": 0.5, "ETH": 0.4}})
        lot = await c.post(REBALANCE, json={"targets": {"BTC": 1.0}, "lot_sizes": {"BTC": "0"}})
    assert problem(sums, 400, "invalid-parameter")["errors"] == [
        {"name": "targets", "reason": "targets must sum to 1, got 0.9"}]  # fmt: skip
    assert problem(lot, 400, "invalid-parameter")["errors"][0]["name"] == "lot_sizes"


@pytest.mark.parametrize(
    ("path", "params", "name"),
    [
        (PORTFOLIO, {"confidence": 1}, "confidence"),
        (PORTFOLIO, {"confidence": 0}, "confidence"),
        (PORTFOLIO, {"horizon": 0}, "horizon"),
        ("/api/v1/risk/var", {"horizon": 366}, "horizon"),
        ("/api/v1/risk/var", {"days": 1}, "days"),
        ("/api/v1/risk/var", {"paths": 200_001}, "paths"),
        ("/api/v1/risk/correlation", {"method": "spearman"}, "method"),
        ("/api/v1/risk/correlation", {"threshold": 1.5}, "threshold"),
        ("/api/v1/risk/correlation", {"assets": "btc"}, "assets.0"),
    ],
)
async def test_a_bad_query_parameter_is_400_naming_it(
    env: Env, path: str, params: dict[str, Any], name: str
) -> None:
    async with env.client() as c:
        r = await c.get(path, params=params)
    assert [e["name"] for e in problem(r, 400, "invalid-parameter")["errors"]] == [name]


async def test_no_history_at_all_is_422_and_unknown_assets_400(env: Env) -> None:
    async with env.client("empty") as c:
        r = await c.get(PORTFOLIO)
    found = problem(r, 422, "insufficient-history")
    assert found["detail"] == "no invested asset has a live price and stored candles"
    async with env.client() as c:
        r = await c.get("/api/v1/risk/correlation", params={"assets": "DOGE"})
    assert problem(r, 400, "invalid-parameter")["errors"] == [
        {"name": "assets", "reason": "no stored candles for DOGE"}]  # fmt: skip


async def test_credentials_and_permissions(env: Env) -> None:
    async with env._client(None) as anonymous:
        r = await anonymous.get(PORTFOLIO)
        posted = await anonymous.post(REBALANCE, json={"targets": {"BTC": 1.0}})
    problem(r, 401, "unauthorized")
    problem(posted, 401, "unauthorized")
    async with env.client(role="admin") as admin:
        made = await admin.post("/api/v1/api-keys",
                                json={"name": "m", "scopes": ["market:read"]})  # fmt: skip
    assert made.status_code == 201, made.text
    async with env._client(None, headers={"X-API-Key": made.json()["key"]}) as keyed:
        denied = await keyed.get("/api/v1/risk/var")
        breakers = await keyed.get("/api/v1/risk/circuit-breakers")
    assert problem(denied, 403, "forbidden")["detail"] == "this needs the permission 'risk:read'"
    assert breakers.status_code == 200


async def test_circuit_breakers_list_each_known_market(env: Env) -> None:
    reason = "short-window volatility above the 3x limit"
    halted = BreakerState("sim", "BTC/USDT", "halted", 1_714_565_700_000, 0.0125, 0.0031,
                          0.0125 / 0.0031, reason)  # fmt: skip
    active = BreakerState("sim", "ETH/USDT", "active", 1_714_560_000_000, None, None, None,
                          "watching since the first candle")  # fmt: skip
    await env.world.cache.set(cache_key("sim", "BTC/USDT"), encode_state(halted, 1))
    await env.world.cache.set(cache_key("sim", "ETH/USDT"), encode_state(active, None))
    async with env._client(None) as anonymous:  # market data is public by default
        r = await anonymous.get("/api/v1/risk/circuit-breakers")
    assert r.status_code == 200, r.text
    assert r.json()["circuit_breakers"] == [
        {"exchange": "sim", "symbol": "BTC/USDT", "state": "halted",
         "since": "2024-05-01T12:15:00.000Z", "short_volatility": 0.0125,
         "long_volatility": 0.0031, "ratio": 0.0125 / 0.0031,
         "reason": "short-window volatility above the 3x limit"},
        {"exchange": "sim", "symbol": "ETH/USDT", "state": "active",
         "since": "2024-05-01T10:40:00.000Z", "short_volatility": None,
         "long_volatility": None, "ratio": None, "reason": "watching since the first candle"},
    ]  # fmt: skip
    env.logins.auth.public_market_data = False
    async with env._client(None) as anonymous:
        problem(await anonymous.get("/api/v1/risk/circuit-breakers"), 401, "unauthorized")


async def test_each_risk_operation_shows_examples_that_fit_its_schema(env: Env) -> None:
    from tests.unit.test_openapi_examples import _bodies, _examples, _invalid

    doc = env.app.openapi()
    risk = [(w, m) for w, _, m in _bodies(doc) if "/risk/" in w]
    assert len(risk) == 6  # five answers and the rebalance body
    assert all(_examples(doc, media) for _, media in risk)
    assert [e for e in _invalid(doc)[1] if "/risk/" in e[0]] == []
    permissions = {p: op["x-permission"] for p, item in doc["paths"].items()
                   for op in item.values() if p.startswith("/api/v1/risk")}  # fmt: skip
    assert permissions == {
        "/api/v1/risk/portfolio": "risk:read", "/api/v1/risk/var": "risk:read",
        "/api/v1/risk/correlation": "risk:read", "/api/v1/risk/rebalance": "risk:read",
        "/api/v1/risk/circuit-breakers": "market:read",
    }  # fmt: skip
