"""The order routes over the real order service on a migrated SQLite file."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from cryptodesk.adapters.cache.memory import MemoryCache
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.order_log_store import SqlOrderLog
from cryptodesk.analytics.vol_breaker import BreakerState
from cryptodesk.api.app import create_app
from cryptodesk.api.routes import orders as routes
from cryptodesk.api.routes.orders import orders_router
from cryptodesk.domain import codec
from cryptodesk.domain.auth import Role
from cryptodesk.domain.market import OrderBook
from cryptodesk.services import cache_keys
from cryptodesk.services.circuit_breakers import BreakerStates, cache_key, encode_state
from cryptodesk.services.order_service import OrderService, default_instruments, halted_by
from cryptodesk.services.paper_feed import cached_books
from tests.unit._auth import Logins, auth_service
from tests.unit._fakes import Harness
from tests.unit._ledger_api import migrated_template, problem
from tests.unit.test_openapi_examples import _invalid
from tests.unit.test_order_service import NOW, FlakyLog

ORDERS = "/api/v1/orders"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_template(tmp_path_factory.mktemp("orders-api"))


class Env:
    def __init__(self, db: Path, store: SqlOrderLog, logins: Logins) -> None:
        self.store, self.logins, self.cache, self.log = (
            store,
            logins,
            MemoryCache(),
            FlakyLog(store),
        )
        self.app = self.build()

    def build(self) -> FastAPI:
        breakers = BreakerStates(self.cache, exchanges=["sim"], symbols=["BTC/USDT"])
        service = OrderService(self.log, default_instruments(["BTC/USDT"]), clock=lambda: NOW,
                               halted=halted_by(breakers, ["sim"]), paper=["sim"],
                               books=cached_books(self.cache))  # fmt: skip
        h = Harness()
        return create_app(h.queries, h.metrics, h.health, routers=[orders_router(service)],
                          auth=self.logins.auth)  # fmt: skip

    def client(self, tenant: str = "acme", role: Role = "trader") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        return httpx.AsyncClient(transport=transport, base_url="http://t",
                                 auth=self.logins.bearer(tenant, role))  # fmt: skip


@pytest.fixture
async def env(tmp_path: Path, template: Path) -> AsyncIterator[Env]:
    db = tmp_path / "orders.db"
    shutil.copyfile(template, db)
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    yield Env(db, SqlOrderLog(engine), Logins(auth_service(engine)))
    await engine.dispose()


def order(account: str, side: str, quantity: str, price: str, **kw: Any) -> dict[str, Any]:
    return {"account": account, "symbol": "BTC/USDT", "side": side, "type": "limit",
            "quantity": quantity, "price": price, **kw}  # fmt: skip


async def funded(c: httpx.AsyncClient) -> None:
    for body in ({"account": "alice", "asset": "USDT", "amount": "100000"},
                 {"account": "bob", "asset": "BTC", "amount": "2"}):  # fmt: skip
        r = await c.post("/api/v1/paper/deposits", json=body)
        assert r.status_code == 201, r.text


async def test_place_fill_amend_cancel_and_read_back(env: Env) -> None:
    async with env.client() as c:
        cash = {"account": "alice", "asset": "USDT", "amount": "100000"}
        r = await c.post("/api/v1/paper/deposits", json=cash)
        assert r.json() == {"account": "alice", "asset": "USDT", "amount": "100000",
                            "available": "100000", "reserved": "0"}  # fmt: skip
        await c.post(
            "/api/v1/paper/deposits", json={"account": "bob", "asset": "BTC", "amount": "2"}
        )
        ask = await c.post(ORDERS, json=order("bob", "sell", "0.5", "60000"))
        assert (ask.status_code, ask.headers["location"]) == (201, f"{ORDERS}/O0000000001")
        bid = await c.post(ORDERS, json=order("alice", "buy", "0.2", "60010"))
        assert bid.status_code == 201, bid.text
        body = bid.json()
        assert {k: body[k] for k in ("order_id", "status", "filled", "average_price", "fees",
                                     "created_at")} == {
            "order_id": "O0000000002", "status": "filled", "filled": "0.20000",
            "average_price": "60000.00", "fees": "12.0000000000",
            "created_at": "2024-05-01T12:00:00.000Z",
        }  # fmt: skip
        amended = await c.patch(f"{ORDERS}/O0000000001", json={"price": "60100", "quantity": "0.4"})
        assert (amended.status_code, amended.json()["price"], amended.json()["quantity"]) == (
            200, "60100", "0.4")  # fmt: skip
        cancelled = await c.delete(f"{ORDERS}/O0000000001")
        assert (cancelled.json()["status"], cancelled.json()["close_reason"]) == (
            "cancelled",
            "client",
        )
        one = await c.get(f"{ORDERS}/O0000000002")
        assert one.json() == body
        fills = (await c.get("/api/v1/fills", params={"account": "alice"})).json()
        assert [(f["trade_id"], f["side"], f["price"], f["quantity"], f["liquidity"])
                for f in fills["fills"]] == [
            ("T0000000001", "buy", "60000.00", "0.20000", "taker")]  # fmt: skip
        assert fills["next_cursor"] is None
        positions = (await c.get("/api/v1/positions")).json()["positions"]
        assert [(p["account"], p["quantity"], p["mark"], p["unrealized"]) for p in positions] == [
            ("alice", "0.20000", "60000.00", "0E-7"),
            ("bob", "-0.20000", "60000.00", "0E-7")]  # fmt: skip
        filled = await c.get(ORDERS, params={"status": "filled"})
        assert [o["order_id"] for o in filled.json()["orders"]] == ["O0000000002"]


async def test_rejections_name_their_rule_and_bad_bodies_are_422(env: Env) -> None:
    async with env.client() as c:
        await funded(c)
        tick = await c.post(ORDERS, json=order("alice", "buy", "0.1", "60000.005"))
        assert problem(tick, 422, "order-rejected")["rule"] == "tick_size"
        broke = await c.post(ORDERS, json=order("alice", "buy", "2", "60000"))
        body = problem(broke, 422, "order-rejected")
        assert (body["rule"], body["status"]) == ("insufficient_balance", 422)
        halt = BreakerState("sim", "BTC/USDT", "halted", NOW, 0.02, 0.004, 5.0, "volatile")
        await env.cache.set(cache_key("sim", "BTC/USDT"), encode_state(halt, None))
        halted = await c.post(ORDERS, json=order("alice", "buy", "0.1", "60000"))
        assert problem(halted, 422, "order-rejected")["rule"] == "halted"
        unknown_field = await c.post(ORDERS, json={**order("alice", "buy", "1", "1"), "x": 1})
        assert problem(unknown_field, 422, "invalid-body")["errors"][0]["name"] == "x"
        bad_amend = await c.patch(f"{ORDERS}/O0000000001", json={"price": "1"})
        assert problem(bad_amend, 404, "unknown-order")["errors"][0]["name"] == "order_id"
    assert len(await env.store.records("acme")) == 2  # only the deposits were stored


async def test_kill_switch_is_for_managers_and_stops_the_account(env: Env) -> None:
    async with env.client() as trader, env.client(role="manager") as manager:
        await funded(trader)
        await trader.post(ORDERS, json=order("alice", "buy", "0.1", "59000"))
        denied = await trader.post("/api/v1/kill-switch", json={"account": "alice", "active": True})
        assert (
            problem(denied, 403, "forbidden")["detail"] == "this needs the permission 'orders:kill'"
        )
        killed = await manager.post(
            "/api/v1/kill-switch", json={"account": "alice", "active": True}
        )
        assert killed.status_code == 200, killed.text
        assert [(o["order_id"], o["close_reason"]) for o in killed.json()["cancelled"]] == [
            ("O0000000001", "kill_switch")]  # fmt: skip
        refused = await trader.post(ORDERS, json=order("alice", "buy", "0.1", "59000"))
        assert problem(refused, 422, "order-rejected")["rule"] == "kill_switch"
        await manager.post("/api/v1/kill-switch", json={"account": "alice", "active": False})
        assert (
            await trader.post(ORDERS, json=order("alice", "buy", "0.1", "59000"))
        ).status_code == 201


async def test_client_order_id_is_idempotent_and_pages_follow_the_cursor(env: Env) -> None:
    async with env.client() as c:
        await funded(c)
        first = await c.post(
            ORDERS, json=order("alice", "buy", "0.1", "59000", client_order_id="a")
        )
        again = await c.post(
            ORDERS, json=order("alice", "buy", "0.1", "59000", client_order_id="a")
        )
        assert (first.status_code, again.status_code, again.json()) == (201, 200, first.json())
        for price in ("58000", "57000", "56000", "55000"):
            await c.post(ORDERS, json=order("alice", "buy", "0.01", price))
        seen, cursor = [], None
        while True:
            params = {"account": "alice", "limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await c.get(ORDERS, params=params)).json()
            seen.append([o["order_id"] for o in page["orders"]])
            if (cursor := page["next_cursor"]) is None:
                break
        assert seen == [["O0000000001", "O0000000002"], ["O0000000003", "O0000000004"],
                        ["O0000000005"]]  # fmt: skip
        mismatch = await c.get(ORDERS, params={"account": "bob", "cursor": cursor or "x"})
        assert problem(mismatch, 400, "invalid-cursor")
    async with env.client("beta") as other:
        for method in ("GET", "DELETE"):
            r = await other.request(method, f"{ORDERS}/O0000000001")
            problem(r, 404, "unknown-order")
        assert (await other.get(ORDERS)).json() == {"orders": [], "next_cursor": None}


async def test_a_failing_database_is_503_and_a_restart_replays_every_acknowledged_order(
    env: Env,
) -> None:
    async with env.client() as c:
        await funded(c)
        placed = (await c.post(ORDERS, json=order("bob", "sell", "0.5", "60000"))).json()
        env.log.failing = True
        down = await c.post(ORDERS, json=order("alice", "buy", "0.2", "60000"))
        assert problem(down, 503, "service-unavailable")["detail"] == (
            "the order database cannot be used right now; nothing was changed")  # fmt: skip
        env.log.failing = False
        listed = (await c.get(ORDERS)).json()["orders"]
        assert listed == [placed]
        await c.post(ORDERS, json=order("alice", "buy", "0.2", "60000"))
        before = [
            (await c.get(url)).json() for url in (ORDERS, "/api/v1/fills", "/api/v1/positions")
        ]
    env.app = env.build()  # a restarted process over the same database
    async with env.client() as c:
        after = [
            (await c.get(url)).json() for url in (ORDERS, "/api/v1/fills", "/api/v1/positions")
        ]
    assert after == before
    assert [o["status"] for o in after[0]["orders"]] == ["partially_filled", "filled"]


async def test_the_documented_examples_fit_their_schemas_and_the_api(env: Env) -> None:
    checked, errors = _invalid(env.app.openapi())
    assert checked >= 12
    assert errors == []
    async with env.client(role="admin") as c:
        r = await c.post("/api/v1/paper/deposits", json=routes.DEPOSIT_IN)
        assert (r.status_code, r.json()) == (201, routes.DEPOSIT)
        r = await c.post(ORDERS, json=routes.ORDER_IN)
        assert r.status_code == 201, r.text
        assert set(r.json()) == set(routes.ORDER)


async def test_paper_orders_take_from_the_live_book_and_say_their_venue(env: Env) -> None:
    paper = {"venue": "paper:sim"}
    async with env.client() as c:
        await funded(c)
        market = {**order("alice", "buy", "0.3", "1"), "type": "market", "price": None, **paper}
        no_book = await c.post(ORDERS, json=market)
        assert problem(no_book, 422, "order-rejected")["rule"] == "no_book"
        book = OrderBook("sim", "BTC/USDT", NOW, ((59_990.0, 1.0),),
                         ((60_000.0, 0.1), (60_010.0, 1.0)), 1)  # fmt: skip
        await env.cache.set(cache_keys.book("sim", "BTC/USDT"), codec.encode_book(book))
        taken = await c.post(ORDERS, json=market)
        assert taken.status_code == 201, taken.text
        body = taken.json()
        assert {k: body[k] for k in ("order_id", "venue", "status", "filled", "fees")} == {
            "order_id": "O0000000001", "venue": "paper:sim", "status": "filled",
            "filled": "0.3", "fees": "18.00200",  # 0.1 % of 6000 + 12002
        }  # fmt: skip
        fills = (await c.get("/api/v1/fills")).json()["fills"]
        assert [(f["price"], f["quantity"], f["venue"]) for f in fills] == [
            ("60000.0", "0.1", "paper:sim"), ("60010.0", "0.2", "paper:sim"),
        ]  # fmt: skip
        resting = await c.post(ORDERS, json={**order("bob", "sell", "0.5", "60100"), **paper})
        assert (resting.status_code, resting.json()["status"]) == (201, "accepted")
        amend = await c.patch(f"{ORDERS}/O0000000002", json={"price": "60200"})
        assert problem(amend, 422, "order-rejected")["rule"] == "not_amendable"
        live = await c.post(ORDERS, json={**order("bob", "sell", "0.5", "60100"),
                                          "venue": "live:sim"})  # fmt: skip
        assert live.status_code == 422
        other = await c.post(ORDERS, json={**order("bob", "sell", "0.5", "60100"),
                                           "venue": "paper:kraken"})  # fmt: skip
        assert problem(other, 422, "order-rejected")["rule"] == "unknown_venue"
