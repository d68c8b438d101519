"""Live orders over ``/api/v1``: the order routes on the real order service, its live
venue on real ccxt binance against the fake (``tests/unit/_live_orders.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cryptodesk.api.app import create_app
from cryptodesk.api.routes.orders import orders_router
from cryptodesk.domain.auth import Role
from tests.unit._auth import Logins, auth_service
from tests.unit._fakes import Harness
from tests.unit._ledger_api import migrated_template, problem
from tests.unit._live_orders import LIVE, Env, open_env

ORDERS = "/api/v1/orders"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_template(tmp_path_factory.mktemp("live-orders-api"))


class Api:
    def __init__(self, env: Env) -> None:
        self.env, self.logins = env, Logins(auth_service(env.engine))
        h = Harness()
        self.app = create_app(h.queries, h.metrics, h.health,
                              routers=[orders_router(env.service())],
                              auth=self.logins.auth)  # fmt: skip

    def client(self, tenant: str = "acme", role: Role = "trader") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        return httpx.AsyncClient(transport=transport, base_url="http://t",
                                 auth=self.logins.bearer(tenant, role))  # fmt: skip


@pytest.fixture
async def api(tmp_path: Path, template: Path) -> AsyncIterator[Api]:
    async for env in open_env(tmp_path, template):
        yield Api(env)


def live(side: str, quantity: str, price: str | None = None, **kw: Any) -> dict[str, Any]:
    kind = "market" if price is None else "limit"
    return {"account": "main", "symbol": "BTC/USDT", "side": side, "type": kind,
            "quantity": quantity, "price": price, "venue": LIVE, **kw}  # fmt: skip


async def pages(c: httpx.AsyncClient, path: str, key: str) -> list[dict[str, Any]]:
    """Every item of a listing, one per page."""
    out: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 1}
    while True:
        body = (await c.get(path, params=params)).json()
        out += body[key]
        if body["next_cursor"] is None:
            return out
        params = {"limit": 1, "cursor": body["next_cursor"]}


async def test_place_list_page_cancel_and_position_live_orders(api: Api) -> None:
    fake = api.env.fake
    async with api.client() as c:
        deposit = {"account": "alice", "asset": "USDT", "amount": "100000"}
        assert (await c.post("/api/v1/paper/deposits", json=deposit)).status_code == 201
        internal = {"account": "alice", "symbol": "BTC/USDT", "side": "buy", "type": "limit",
                    "quantity": "0.1", "price": "60000"}  # fmt: skip
        assert (await c.post(ORDERS, json=internal)).json()["order_id"] == "O0000000001"

        bought = await c.post(ORDERS, json=live("buy", "0.02"))
        assert (bought.status_code, bought.headers["location"]) == (
            201,
            f"{ORDERS}/L822b330000000001",
        )
        body = bought.json()
        assert {k: body[k] for k in ("order_id", "client_order_id", "account", "status", "filled",
                                     "average_price", "venue", "created_at")} == {
            "order_id": "L822b330000000001", "client_order_id": None, "account": "main",
            "status": "filled", "filled": "0.02000000", "average_price": "67005",
            "venue": LIVE, "created_at": "2024-06-01T00:00:00.000Z",
        }  # fmt: skip
        resting = await c.post(ORDERS, json=live("sell", "0.5", "70000", client_order_id="mine-1"))
        assert (resting.status_code, resting.json()["status"]) == (201, "accepted")
        again = await c.post(ORDERS, json=live("sell", "0.5", "70000", client_order_id="mine-1"))
        assert (again.status_code, again.json()) == (200, resting.json())
        assert (await c.get(f"{ORDERS}/L822b330000000002")).json() == resting.json()

        listed = (await c.get(ORDERS)).json()["orders"]
        assert [(o["order_id"], o["venue"]) for o in listed] == [
            ("O0000000001", "internal"), ("L822b330000000001", LIVE),
            ("L822b330000000002", LIVE)]  # fmt: skip
        assert await pages(c, ORDERS, "orders") == listed
        live_only = (await c.get(ORDERS, params={"account": "main", "status": "filled"})).json()
        assert [o["order_id"] for o in live_only["orders"]] == ["L822b330000000001"]

        amend = await c.patch(f"{ORDERS}/L822b330000000002", json={"price": "71000"})
        assert problem(amend, 422, "order-rejected")["rule"] == "not_amendable"
        fake.fill(4_000_002, "0.2", time=fake.exchange.now + 5)
        cancelled = (await c.delete(f"{ORDERS}/L822b330000000002")).json()
        assert (cancelled["status"], cancelled["filled"], cancelled["close_reason"]) == (
            "cancelled", "0.20000000", "client")  # fmt: skip
        assert fake.orders[4_000_002]["status"] == "CANCELED"

        fills = (await c.get("/api/v1/fills")).json()["fills"]
        assert [(f["trade_id"], f["order_id"], f["side"], f["price"], f["quantity"], f["venue"])
                for f in fills] == [
            ("28457", "L822b330000000001", "buy", "67000.00000000", "0.01000000", LIVE),
            ("28458", "L822b330000000001", "buy", "67010.00000000", "0.01000000", LIVE),
            ("28459", "L822b330000000002", "sell", "70000.00000000", "0.20000000", LIVE),
        ]  # fmt: skip
        assert await pages(c, "/api/v1/fills", "fills") == fills
        # Bought 0.01998 net of base fees for 1338.7599; sold 0.2 at 70000: the rest is short.
        positions = (await c.get("/api/v1/positions", params={"account": "main"})).json()
        assert [(p["account"], p["symbol"], p["quantity"], p["realized"], p["mark"])
                for p in positions["positions"]] == [
            ("main", "BTC/USDT", "-0.18002000", "59.8401000000000000", "70000.00000000"),
        ]  # fmt: skip
    trades = [f"binance:trade:BTCUSDT:{n}" for n in (28457, 28458, 28459)]
    assert await api.env.entry_ids() == trades


async def test_refusals_are_422_naming_their_rule(api: Api) -> None:
    async with api.client() as c:
        broke = await c.post(ORDERS, json=live("buy", "1", "60000"))  # 60000 USDT > 10000
        assert problem(broke, 422, "order-rejected")["rule"] == "insufficient_balance"
        ghost = await c.post(ORDERS, json=live("buy", "0.1", "60000", account="ghost"))
        assert problem(ghost, 422, "order-rejected")["rule"] == "unknown_venue"
        nokey = await c.post(ORDERS, json=live("buy", "0.1", "60000", account="nokey"))
        assert problem(nokey, 422, "order-rejected")["rule"] == "no_credentials"
        stop = {**live("buy", "0.1"), "type": "stop_market", "stop_price": "70000"}
        assert problem(await c.post(ORDERS, json=stop), 422, "order-rejected")["rule"] == (
            "order_type")  # fmt: skip
        bad = await c.post(ORDERS, json=live("buy", "0.1", "60000", venue="live:"))
        problem(bad, 422, "invalid-body")
        assert (await c.get(ORDERS)).json()["orders"] == []
    assert api.env.fake.orders == {}


async def test_other_tenants_see_nothing_and_the_kill_switch_cancels_on_the_exchange(
    api: Api,
) -> None:
    async with api.client() as c:
        placed = (await c.post(ORDERS, json=live("sell", "0.1", "80000"))).json()
        assert placed["order_id"] == "L822b330000000001"
    async with api.client("other", "admin") as other:
        assert (await other.get(ORDERS)).json()["orders"] == []
        assert (await other.get("/api/v1/fills")).json()["fills"] == []
        problem(await other.get(f"{ORDERS}/L822b330000000001"), 404, "unknown-order")
        problem(await other.delete(f"{ORDERS}/L822b330000000001"), 404, "unknown-order")
        killed = await other.post("/api/v1/kill-switch", json={"active": True})
        assert killed.json()["cancelled"] == []
    assert api.env.fake.orders[4_000_001]["status"] == "NEW"
    async with api.client(role="manager") as c:
        killed = await c.post("/api/v1/kill-switch", json={"account": "main", "active": True})
        assert [(o["order_id"], o["status"], o["close_reason"])
                for o in killed.json()["cancelled"]] == [
            ("L822b330000000001", "cancelled", "kill_switch")]  # fmt: skip
        assert api.env.fake.orders[4_000_001]["status"] == "CANCELED"
        refused = await c.post(ORDERS, json=live("sell", "0.1", "80000"))
        assert problem(refused, 422, "order-rejected")["rule"] == "kill_switch"
