"""The live venue on real ccxt binance against the fake's trading endpoints:
place, fetch, cancel, rejections as rules, and reconciliation after a restart.

Every figure follows from the fake's book and fee (0.1% of what is received).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import ccxt.async_support as ccxt_async  # type: ignore[import-untyped]
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from cryptodesk.adapters.exchanges.ccxt_orders import CcxtOrders
from cryptodesk.adapters.exchanges.guard import ExchangeGuard
from cryptodesk.domain.orders import Fill, OrderRequest
from cryptodesk.portfolio.accounts import ExchangeCredentials
from cryptodesk.services.live_venue import LiveState, LiveVenue
from cryptodesk.trading.errors import OrderRejected
from tests.fakes.binance import T0, FakeBinance
from tests.fakes.binance_account import FakeBinanceAccount
from tests.fakes.binance_orders import FakeBinanceOrders

D = Decimal
# The example key pair of Binance's request-security documentation.
KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
ORDER = "/api/v3/order"
VENUE = "live:binance"


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeBinanceOrders]:
    exchange = FakeBinance()
    account = FakeBinanceAccount(exchange, api_key=KEY, secret=SECRET)
    account.set_balance("USDT", "10000")
    account.set_balance("BTC", "1")
    exchange.set_book("BTCUSDT", [("66990.00", "0.5")],
                      [("67000.00", "0.01"), ("67010.00", "1")], last_update_id=1)  # fmt: skip
    orders = FakeBinanceOrders(account)  # routes are mounted before the server starts
    await exchange.start()
    try:
        yield orders
    finally:
        await exchange.stop()


Make = Callable[..., CcxtOrders]


@pytest_asyncio.fixture
async def make(fake: FakeBinanceOrders) -> AsyncIterator[Make]:
    made: list[CcxtOrders] = []

    def build(**options: Any) -> CcxtOrders:
        creds = ExchangeCredentials(api_key=KEY, secret=SECRET)
        client = CcxtOrders("binance", creds, account="main", http_url=fake.exchange.base_url,
                            **options)  # fmt: skip
        made.append(client)
        return client

    yield build
    for client in made:
        await client.close()


def venue(client: CcxtOrders, state: LiveState | None = None) -> LiveVenue:
    return LiveVenue(client, account="main", state=state, clock=lambda: T0)


def limit(side: str, qty: str, price: str, **kw: Any) -> OrderRequest:
    return OrderRequest("main", "BTC/USDT", side, "limit", D(qty), D(price), **kw)  # type: ignore[arg-type]


def fill(trade_id: str, order_id: str, side: str, price: str, qty: str, fee: str, asset: str,
         liquidity: str, ts: int) -> Fill:  # fmt: skip
    return Fill(trade_id, order_id, "main", "BTC/USDT", side, D(price), D(qty), D(fee), asset,  # type: ignore[arg-type]
                liquidity, ts, venue=VENUE)  # type: ignore[arg-type]  # fmt: skip


async def test_market_order_walks_the_book_and_keeps_its_fills(
    fake: FakeBinanceOrders, make: Make
) -> None:
    live = venue(make())
    order = await live.submit(OrderRequest("main", "BTC/USDT", "buy", "market", D("0.02")))
    assert (order.order_id, order.status, order.filled) == ("cd0000000001", "filled", D("0.02"))
    assert order.average_price == D("67005")  # (67000 x 0.01 + 67010 x 0.01) / 0.02
    exchange_id = live.exchange_id("cd0000000001")
    assert exchange_id == "4000001"
    cid = "cd0000000001"
    assert live.fills() == [
        fill("28457", cid, "buy", "67000.00000000", "0.01", "0.00001", "BTC", "taker", T0),
        fill("28458", cid, "buy", "67010.00000000", "0.01", "0.00001", "BTC", "taker", T0),
    ]
    sent = fake.account.calls(ORDER)
    assert sent == [{}]  # the parameters travel in the signed body, not the query
    placed = fake.orders[4_000_001]
    assert (placed["clientOrderId"], placed["type"], placed["status"]) == (
        "cd0000000001", "MARKET", "FILLED")  # fmt: skip
    assert fake.account.balances["BTC"][0] == D("1.01998")  # 1 + 0.02 - 0.00002 fee
    assert fake.account.balances["USDT"][0] == D("8659.9")  # 10000 - 670 - 670.1


async def test_limit_order_rests_then_fetch_and_cancel(fake: FakeBinanceOrders, make: Make) -> None:
    client = make()
    live = venue(client)
    order = await live.submit(limit("sell", "0.5", "70000", client_order_id="mine-1"))
    assert (order.order_id, order.client_order_id, order.status) == ("mine-1", "mine-1", "accepted")
    assert fake.account.balances["BTC"] == [D("0.5"), D("0.5")]  # locked while it rests
    fake.fill(4_000_001, "0.2", time=T0 + 5)
    refreshed = await live.refresh("mine-1")
    assert (refreshed.status, refreshed.filled, refreshed.average_price) == (
        "partially_filled", D("0.2"), D("70000"))  # fmt: skip
    cancelled = await live.cancel("mine-1")
    assert (cancelled.status, cancelled.filled, cancelled.remaining) == (
        "cancelled", D("0.2"), D("0.3"))  # fmt: skip
    assert fake.orders[4_000_001]["status"] == "CANCELED"
    assert fake.account.balances["BTC"] == [D("0.8"), D("0")]
    fetched = await client.fetch("BTC/USDT", "4000001")
    assert (fetched.client_order_id, fetched.status, fetched.quantity) == (
        "mine-1", "cancelled", D("0.5"))  # fmt: skip
    with pytest.raises(OrderRejected) as closed:
        await live.cancel("mine-1")
    assert closed.value.rule == "order_closed"
    with pytest.raises(OrderRejected) as unknown:
        await client.cancel("BTC/USDT", "4000001")
    assert (unknown.value.rule, unknown.value.field) == ("unknown_order", "order_id")
    with pytest.raises(OrderRejected) as missing:
        await client.fetch("BTC/USDT", "123")
    assert missing.value.rule == "unknown_order"


async def test_restart_reconciles_fills_once(fake: FakeBinanceOrders, make: Make) -> None:
    first = venue(make())
    await first.submit(limit("buy", "0.1", "60000"))
    await first.submit(limit("sell", "0.1", "80000"))
    saved = json.dumps(first.state.dump())
    # While we are down: the buy fills in two trades, the sell is cancelled by hand,
    # and someone places an order of their own on the account.
    fake.fill(4_000_001, "0.04", time=T0 + 1_000)
    fake.fill(4_000_001, time=T0 + 2_000)
    other = await make().create(limit("sell", "0.1", "90000"), client_order_id="manual")
    fake.orders[4_000_002]["status"] = "CANCELED"

    second = venue(make(), LiveState.load(json.loads(saved)))
    result = await second.reconcile()
    assert result.orders == ("cd0000000001", "cd0000000002")
    assert result.foreign_orders == (other.id,)
    buy_fills = [
        fill("28457", "cd0000000001", "buy", "60000.00000000", "0.04", "0.00004", "BTC", "maker",
             T0 + 1_000),
        fill("28458", "cd0000000001", "buy", "60000.00000000", "0.06", "0.00006", "BTC", "maker",
             T0 + 2_000),
    ]  # fmt: skip
    assert list(result.fills) == buy_fills
    buy, sell = second.order("cd0000000001"), second.order("cd0000000002")
    assert buy is not None
    assert sell is not None
    assert (buy.status, buy.filled, buy.average_price) == ("filled", D("0.1"), D("60000"))
    assert (sell.status, sell.filled) == ("cancelled", D("0"))

    again = await second.reconcile()
    assert (again.orders, again.fills) == ((), ())
    assert second.fills() == buy_fills
    # The second reconcile asked for trades from the last fill it knew, less the margin
    # for an exchange clock behind ours; the fill it met again is kept once.
    assert fake.account.calls("/api/v3/myTrades")[-1]["startTime"] == str(T0 + 2_000 - 60_000)


@pytest.mark.parametrize(
    ("request_", "rule"),
    [
        (limit("buy", "1", "60000"), "insufficient_balance"),  # 60000 USDT > 10000
        (limit("sell", "2", "60000"), "insufficient_balance"),
        (limit("buy", "0.0001", "100"), "min_notional"),  # 0.01 USDT < 5
        (OrderRequest("main", "DOGE/USDT", "buy", "market", D("10")), "unknown_symbol"),
        (OrderRequest("main", "BTC/USDT", "buy", "stop_market", D("1"), stop_price=D("1")),
         "order_type"),
    ],
)  # fmt: skip
async def test_exchange_rejections_map_to_rules(
    fake: FakeBinanceOrders, make: Make, request_: OrderRequest, rule: str
) -> None:
    live = venue(make())
    with pytest.raises(OrderRejected) as refused:
        await live.submit(request_)
    assert refused.value.rule == rule
    assert live.orders() == []
    assert fake.orders == {}


async def test_duplicate_client_order_id_is_refused(fake: FakeBinanceOrders, make: Make) -> None:
    client = make()
    await client.create(limit("sell", "0.1", "80000"), client_order_id="dup")
    with pytest.raises(OrderRejected) as refused:
        await client.create(limit("sell", "0.1", "81000"), client_order_id="dup")
    assert (refused.value.rule, refused.value.field) == (
        "duplicate_client_order_id", "client_order_id")  # fmt: skip
    assert len(fake.orders) == 1


async def test_a_retried_create_looks_the_order_up_first(
    fake: FakeBinanceOrders, make: Make
) -> None:
    registry = CollectorRegistry()
    client = make(guard=lambda ex: ExchangeGuard.for_exchange(
        ex, metrics_registry=registry, backoff_initial=0.001, backoff_cap=0.002))  # fmt: skip
    fake.exchange.server.fail_next(ORDER, 503, {"code": -1001, "msg": "Internal error."})
    order = await venue(client).submit(limit("sell", "0.1", "80000"))
    assert order.status == "accepted"
    methods = [m for m, path, _ in fake.exchange.server.requests if path == ORDER]
    assert methods == ["POST", "GET", "POST"]  # failed, not there, placed once
    assert list(fake.orders) == [4_000_001]


async def test_an_order_that_never_arrived_is_rejected_by_reconcile(
    fake: FakeBinanceOrders, make: Make
) -> None:
    live = venue(make())
    fake.exchange.server.fail_next(ORDER, 503, {"code": -1001, "msg": "Internal error."})
    with pytest.raises(ccxt_async.OperationFailed, match="Internal error"):
        await live.submit(limit("sell", "0.1", "80000"))
    assert [(o.order_id, o.status) for o in live.orders()] == [("cd0000000001", "new")]
    result = await live.reconcile()
    assert result.orders == ("cd0000000001",)
    order = live.order("cd0000000001")
    assert order is not None
    assert (order.status, order.reject_rule) == ("rejected", "unknown_order")


async def test_a_trade_stamped_before_the_order_by_a_slow_exchange_clock_is_found(
    fake: FakeBinanceOrders, make: Make
) -> None:
    # Our clock says the order was made at T0; the exchange's clock is 30 s behind.
    first = venue(make())
    await first.submit(limit("buy", "0.1", "60000"))
    fake.fill(4_000_001, time=T0 - 30_000)
    result = await venue(make(), first.state).reconcile()
    assert [(f.trade_id, f.quantity, f.ts) for f in result.fills] == [
        ("28457", D("0.1"), T0 - 30_000)]  # fmt: skip
