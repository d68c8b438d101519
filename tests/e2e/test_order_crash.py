"""kill -9 right after an order is acknowledged, restart: no accepted order is lost
(internal and paper venues).

The promise of docs/trading.md ("Durability"): the order log is written before the
answer, and a restart replays it. ``cryptodesk serve`` runs on the embedded SQLite
file; two paper accounts of one tenant trade over REST, the server is killed with
SIGKILL (no shutdown of any kind) the moment the last order is acknowledged, and a
new server on the same database must show every acknowledged order, fill and
position exactly, honour the client order id, and still hold the resting orders in
their place on the book.
"""

from __future__ import annotations

import signal
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Server

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
# No market data is needed: the internal venue trades only the tenant's own orders.
# The breaker is off so that a simulated price swing cannot halt BTC/USDT mid-test.
SERVE = {"CRYPTODESK_INTERVALS": "1m", "CRYPTODESK_CIRCUIT_BREAKER_ENABLED": "false"}
TENANT = "crashdesk"
SYMBOL = "BTC/USDT"
MONEY = {
    "orders": ("price", "stop_price", "quantity", "filled", "average_price", "fees"),
    "fills": ("price", "quantity", "fee"),
    "positions": ("quantity", "average_price", "realized", "fees", "mark", "unrealized"),
}


def exact(kind: str, item: dict[str, Any]) -> dict[str, Any]:
    """``item`` with its decimal strings as ``Decimal`` (so ``60000`` equals ``6E+4``)."""
    out = dict(item)
    for key in MONEY[kind]:
        if out[key] is not None:
            out[key] = Decimal(out[key])
    return out


def listing(client: httpx.Client, kind: str) -> list[dict[str, Any]]:
    """Every item of ``GET /api/v1/{kind}`` (one page holds them all), decimals exact."""
    r = client.get(f"/api/v1/{kind}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body.get("next_cursor") is None
    return [exact(kind, item) for item in body[kind]]


def place(client: httpx.Client, status: int = 201, **order: str) -> dict[str, Any]:
    """The acknowledged order of a ``POST /api/v1/orders`` (limit, GTC)."""
    r = client.post("/api/v1/orders", json={"symbol": SYMBOL, "type": "limit", **order})
    assert r.status_code == status, r.text
    return exact("orders", r.json())


def pick(items: list[dict[str, Any]], *keys: str) -> list[tuple[Any, ...]]:
    return [tuple(item[k] for k in keys) for item in items]


def test_an_acknowledged_order_survives_kill9_and_keeps_its_place(server_factory, tmp_path):
    data = tmp_path / "data"
    first: Server = server_factory(data, **SERVE)
    headers = first.auth("trader", TENANT)

    with httpx.Client(base_url=first.url, headers=headers, timeout=30) as c:
        for account, asset, amount in (("alice", "USDT", "100000"), ("bob", "BTC", "1")):
            r = c.post("/api/v1/paper/deposits",
                       json={"account": account, "asset": asset, "amount": amount})  # fmt: skip
            assert r.status_code == 201, r.text
            assert Decimal(r.json()["available"]) == Decimal(amount)
        ask = place(c, account="bob", side="sell", quantity="0.3", price="60000")
        bid = place(c, account="alice", side="buy", quantity="0.5", price="60010")
        traded = {kind: listing(c, kind) for kind in ("orders", "fills", "positions")}
        # The last acknowledgement: a bid at the same price as the remainder, behind it.
        late = place(c, account="alice", side="buy", quantity="0.1", price="60010",
                     client_order_id="alice-bid-2")  # fmt: skip
    first.proc.send_signal(signal.SIGKILL)
    assert first.proc.wait(timeout=30) == -signal.SIGKILL

    # What the acknowledgements said: a resting ask, a buy that took it (0.3 at the
    # maker's 60000) and rests with 0.2, and a second bid.
    o1, o2, o3 = ask["order_id"], bid["order_id"], late["order_id"]
    assert (o1, o2, o3) == ("O0000000001", "O0000000002", "O0000000003")
    assert (ask["status"], ask["filled"]) == ("accepted", 0)
    assert (bid["status"], bid["filled"], bid["average_price"], bid["fees"]) == (
        "partially_filled", Decimal("0.3"), Decimal(60000), Decimal(18))  # fmt: skip
    assert (late["status"], late["filled"], late["client_order_id"]) == (
        "accepted", 0, "alice-bid-2")  # fmt: skip
    before = traded["orders"] + [late]
    assert pick(before, "order_id", "status", "filled") == [
        (o1, "filled", Decimal("0.3")),
        (o2, "partially_filled", Decimal("0.3")),
        (o3, "accepted", 0),
    ]
    assert traded["orders"][1] == bid
    assert pick(traded["fills"], "trade_id", "order_id", "account", "side", "price",
                "quantity", "fee", "liquidity") == [
        ("T0000000001", o1, "bob", "sell", 60000, Decimal("0.3"), 18, "maker"),
        ("T0000000001", o2, "alice", "buy", 60000, Decimal("0.3"), 18, "taker"),
    ]  # fmt: skip
    assert pick(traded["positions"], "account", "symbol", "quantity", "average_price",
                "mark") == [
        ("alice", SYMBOL, Decimal("0.3"), 60000, 60000),
        ("bob", SYMBOL, Decimal("-0.3"), 60000, 60000),
    ]  # fmt: skip

    second: Server = server_factory(data, **SERVE)
    with httpx.Client(base_url=second.url, headers=headers, timeout=30) as c:
        # Every acknowledged order, fill and position, field for field.
        assert listing(c, "orders") == before
        assert listing(c, "fills") == traded["fills"]
        assert listing(c, "positions") == traded["positions"]

        # The client order id is remembered: the original order, nothing new placed.
        again = place(c, 200, account="alice", side="buy", quantity="0.1", price="60010",
                      client_order_id="alice-bid-2")  # fmt: skip
        assert again == late
        assert pick(listing(c, "orders"), "order_id") == [(o1,), (o2,), (o3,)]

        # The book survived in priority order: a sell through 60010 meets the older
        # remainder first, at its price, and leaves the later bid alone.
        hit = place(c, account="bob", side="sell", quantity="0.2", price="60000")
        assert (hit["order_id"], hit["status"], hit["filled"], hit["average_price"]) == (
            "O0000000004", "filled", Decimal("0.2"), Decimal(60010))  # fmt: skip
        after = {o["order_id"]: o for o in listing(c, "orders")}
        assert sorted(after) == [o1, o2, o3, "O0000000004"]
        assert (after[o2]["status"], after[o2]["filled"], after[o2]["average_price"]) == (
            "filled", Decimal("0.5"), Decimal(60004))  # fmt: skip
        assert after[o3] == late
        fills = listing(c, "fills")
        assert fills[:2] == traded["fills"]
        assert pick(fills[2:], "trade_id", "order_id", "account", "side", "price",
                    "quantity", "fee", "liquidity") == [
            ("T0000000002", o2, "alice", "buy", 60010, Decimal("0.2"), Decimal("12.002"),
             "maker"),
            ("T0000000002", "O0000000004", "bob", "sell", 60010, Decimal("0.2"),
             Decimal("12.002"), "taker"),
        ]  # fmt: skip
        assert pick(listing(c, "positions"), "account", "quantity", "average_price") == [
            ("alice", Decimal("0.5"), Decimal(60004)),
            ("bob", Decimal("-0.5"), Decimal(60004)),
        ]


def test_paper_venue_orders_survive_kill9(server_factory, tmp_path):
    data = tmp_path / "data"
    first: Server = server_factory(data, **SERVE)
    headers = first.auth("trader", TENANT)
    paper = {"account": "carol", "side": "buy", "quantity": "0.01", "venue": "paper:sim"}
    with httpx.Client(base_url=first.url, headers=headers, timeout=30) as c:
        r = c.post("/api/v1/paper/deposits",
                   json={"account": "carol", "asset": "USDT", "amount": "1000"})  # fmt: skip
        assert r.status_code == 201, r.text
        # Far below the simulated market: they rest (a GTC paper order needs no book).
        kept = place(c, **paper, price="1000", client_order_id="carol-1")
        gone = place(c, **paper, price="900")
        r = c.delete(f"/api/v1/orders/{gone['order_id']}")
        assert r.status_code == 200, r.text
        cancelled = exact("orders", r.json())
    first.proc.send_signal(signal.SIGKILL)
    assert first.proc.wait(timeout=30) == -signal.SIGKILL
    assert pick([kept, cancelled], "order_id", "venue", "status") == [
        ("O0000000001", "paper:sim", "accepted"),
        ("O0000000002", "paper:sim", "cancelled"),
    ]

    second: Server = server_factory(data, **SERVE)
    with httpx.Client(base_url=second.url, headers=headers, timeout=30) as c:
        assert listing(c, "orders") == [kept, cancelled]
        assert place(c, 200, **paper, price="1000", client_order_id="carol-1") == kept
        # The resting order still holds its funds: 0.01 x 1000 x 1.001 of the 1000 USDT.
        r = c.post("/api/v1/paper/deposits",
                   json={"account": "carol", "asset": "USDT", "amount": "1"})  # fmt: skip
        assert r.status_code == 201, r.text
        assert (Decimal(r.json()["available"]), Decimal(r.json()["reserved"])) == (
            Decimal("990.99"), Decimal("10.01"))  # fmt: skip
