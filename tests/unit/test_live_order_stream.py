"""The live venue kept in step by the exchange's websocket: real ccxt.pro binance
(``watch_orders`` / ``watch_my_trades``) against the fake's user data stream.

Every figure follows from the fake's fee (0.1% of what is received) and its trade
ids (28457 on, per symbol). Waits are bounded loops on conditions, never times.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio

from cryptodesk.adapters.exchanges.ccxt_order_stream import CcxtOrderStream
from cryptodesk.adapters.exchanges.ccxt_orders import CcxtOrders
from cryptodesk.domain.orders import Fill, OrderRequest
from cryptodesk.portfolio.accounts import ExchangeCredentials
from cryptodesk.services.live_venue import LiveVenue, StreamStats
from cryptodesk.trading.errors import OrderRejected
from tests.fakes.binance import T0, FakeBinance
from tests.fakes.binance_account import FakeBinanceAccount
from tests.fakes.binance_orders import FakeBinanceOrders
from tests.fakes.binance_user_stream import FakeBinanceUserStream

D = Decimal
# The example key pair of Binance's request-security documentation.
KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
VENUE = "live:binance"


@dataclass
class Desk:
    fake: FakeBinanceOrders
    user: FakeBinanceUserStream
    venue: LiveVenue
    rest: Callable[[], CcxtOrders]  # another client of the same account
    stream: Callable[..., CcxtOrderStream]
    watcher: asyncio.Task[None] | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def stats(self) -> StreamStats:
        return self.venue.stream_stats

    async def watch(self, stream: CcxtOrderStream | None = None) -> None:
        """Start watching; wait until subscribed and the first reconcile is done."""
        self.watcher = asyncio.create_task(
            self.venue.watch(stream or self.stream(), self.stop, retry_delay=0.01)
        )
        await self.user.wait_subscribed()
        await self.until(lambda: self.stats.reconciles == 1)

    async def until(self, check: Callable[[], bool]) -> None:
        for _ in range(2_000):  # ~10 s at most
            if check():
                return
            if self.watcher is not None and self.watcher.done():
                self.watcher.result()
                raise AssertionError("the watch ended")
            await asyncio.sleep(0.005)
        raise AssertionError("condition never held")

    def rest_requests(self) -> list[tuple[str, str]]:
        """REST requests made, but for the markets ccxt loads."""
        return [(method, path) for method, path, _ in self.fake.exchange.server.requests
                if path not in ("/api/v3/exchangeInfo", "/ws-api/v3")]  # fmt: skip


@pytest_asyncio.fixture
async def desk() -> AsyncIterator[Desk]:
    exchange = FakeBinance()
    account = FakeBinanceAccount(exchange, api_key=KEY, secret=SECRET)
    account.set_balance("USDT", "10000")
    account.set_balance("BTC", "1")
    orders = FakeBinanceOrders(account)
    user = FakeBinanceUserStream(orders)  # routes are mounted before the server starts
    await exchange.start()
    clients: list[CcxtOrders | CcxtOrderStream] = []

    def rest() -> CcxtOrders:
        client = CcxtOrders("binance", ExchangeCredentials(api_key=KEY, secret=SECRET),
                            account="main", http_url=exchange.base_url)  # fmt: skip
        clients.append(client)
        return client

    def stream(secret: str = SECRET) -> CcxtOrderStream:
        client = CcxtOrderStream("binance", ExchangeCredentials(api_key=KEY, secret=secret),
                                 account="main", http_url=exchange.base_url,
                                 ws_url=exchange.ws_url)  # fmt: skip
        clients.append(client)
        return client

    desk = Desk(orders, user, LiveVenue(rest(), account="main", clock=lambda: T0), rest, stream)
    try:
        yield desk
    finally:
        desk.stop.set()
        if desk.watcher is not None:
            with contextlib.suppress(Exception):
                await desk.watcher
        for client in clients:
            await client.close()
        await exchange.stop()


def limit(side: str, qty: str, price: str, client_order_id: str) -> OrderRequest:
    return OrderRequest("main", "BTC/USDT", side, "limit", D(qty), D(price),  # type: ignore[arg-type]
                        client_order_id=client_order_id)  # fmt: skip


def fill(trade_id: str, order_id: str, side: str, price: str, qty: str, fee: str, asset: str,
         ts: int) -> Fill:  # fmt: skip
    return Fill(trade_id, order_id, "main", "BTC/USDT", side, D(price), D(qty), D(fee), asset,  # type: ignore[arg-type]
                "maker", ts, venue=VENUE)  # fmt: skip


def order_state(desk: Desk, order_id: str) -> tuple[Any, ...]:
    order = desk.venue.order(order_id)
    assert order is not None
    return order.status, order.filled, order.average_price, order.fees


SELL_FILLS = [  # 0.5 BTC sold at 70000 in two trades; the fee is in USDT, received
    fill("28457", "mine", "sell", "70000", "0.2", "14", "USDT", T0 + 5),
    fill("28458", "mine", "sell", "70000", "0.3", "21", "USDT", T0 + 9),
]


async def place_and_fill(desk: Desk) -> None:
    await desk.venue.submit(limit("sell", "0.5", "70000", "mine"))
    exchange_id = int(desk.venue.exchange_id("mine") or 0)
    desk.fake.fill(exchange_id, "0.2", time=T0 + 5)
    await desk.until(lambda: order_state(desk, "mine")[:2] == ("partially_filled", D("0.2")))
    assert desk.venue.fills() == SELL_FILLS[:1]
    desk.fake.fill(exchange_id, time=T0 + 9)
    await desk.until(lambda: len(desk.venue.fills()) == 2 and order_state(desk, "mine")[0]
                     == "filled")  # fmt: skip


async def test_fills_arrive_through_the_stream_only(desk: Desk) -> None:
    await desk.watch()
    await place_and_fill(desk)
    assert order_state(desk, "mine") == ("filled", D("0.5"), D("70000"), D("35"))
    assert desk.venue.fills() == SELL_FILLS
    # Placed over REST; everything after came over the websocket: no polling.
    assert desk.rest_requests() == [("POST", "/api/v3/order")]
    assert [(e["x"], e["X"], e["l"], e["z"]) for e in desk.user.events] == [
        ("NEW", "NEW", "0.00000000", "0.00000000"),
        ("TRADE", "PARTIALLY_FILLED", "0.20000000", "0.20000000"),
        ("TRADE", "FILLED", "0.30000000", "0.50000000"),
    ]
    assert desk.user.lost == []
    assert desk.stats == StreamStats(orders=desk.stats.orders, trades=2, subscribes=1,
                                     reconciles=1)  # fmt: skip


async def test_a_late_or_repeated_event_changes_nothing(desk: Desk) -> None:
    await desk.watch()
    await desk.venue.submit(limit("sell", "0.5", "70000", "mine"))
    exchange_id = int(desk.venue.exchange_id("mine") or 0)
    desk.fake.fill(exchange_id, "0.2", time=T0 + 5)
    await desk.until(lambda: order_state(desk, "mine")[:2] == ("partially_filled", D("0.2")))
    before, seen = (desk.venue.orders(), desk.venue.fills()), desk.stats.orders

    desk.user.push(desk.user.events[0])  # the order's NEW again, late: filled must not shrink
    await desk.until(lambda: desk.stats.orders == seen + 1)
    assert (desk.venue.orders(), desk.venue.fills()) == before
    assert order_state(desk, "mine") == ("partially_filled", D("0.2"), D("70000"), D("14"))
    assert (desk.stats.stale, desk.stats.duplicate_trades) == (1, 0)

    desk.fake.fill(exchange_id, time=T0 + 9)
    await desk.until(lambda: len(desk.venue.fills()) == 2 and order_state(desk, "mine")[0]
                     == "filled")  # fmt: skip
    before, seen = (desk.venue.orders(), desk.venue.fills()), desk.stats.orders
    desk.user.push(desk.user.events[1])  # the partial fill again, after the order filled
    await desk.until(lambda: desk.stats.orders == seen + 1 and desk.stats.trades == 3)
    assert (desk.venue.orders(), desk.venue.fills()) == before
    assert order_state(desk, "mine") == ("filled", D("0.5"), D("70000"), D("35"))
    assert desk.venue.fills() == SELL_FILLS
    assert (desk.stats.stale, desk.stats.duplicate_trades) == (2, 1)


async def test_fills_missed_while_disconnected_are_reconciled_once(desk: Desk) -> None:
    await desk.watch()
    await desk.venue.submit(limit("sell", "0.5", "70000", "mine"))
    await desk.venue.submit(limit("buy", "0.1", "60000", "bid"))
    sell, buy = (int(desk.venue.exchange_id(o) or 0) for o in ("mine", "bid"))
    desk.fake.fill(sell, "0.1", time=T0 + 10)
    await desk.until(lambda: len(desk.venue.fills()) == 1)

    desk.user.hold()  # the exchange answers the next subscription only on release
    await desk.fake.exchange.drop_websockets()
    desk.fake.fill(sell, "0.15", time=T0 + 20)  # nobody listens: REST only
    desk.fake.fill(sell, time=T0 + 30)
    desk.user.release()
    assert [(e["t"], e["X"]) for e in desk.user.lost] == [
        (28458, "PARTIALLY_FILLED"), (28459, "FILLED")]  # fmt: skip

    await desk.until(lambda: desk.stats.reconciles == 2)  # subscribed again, then reconciled
    assert desk.venue.fills() == [
        fill("28457", "mine", "sell", "70000", "0.1", "7", "USDT", T0 + 10),
        fill("28458", "mine", "sell", "70000", "0.15", "10.5", "USDT", T0 + 20),
        fill("28459", "mine", "sell", "70000", "0.25", "17.5", "USDT", T0 + 30),
    ]
    assert order_state(desk, "mine") == ("filled", D("0.5"), D("70000"), D("35"))
    # The reconcile after the reconnect read trades from the last fill it knew (less
    # the clock margin).
    trades = desk.fake.account.calls("/api/v3/myTrades")
    assert [c["startTime"] for c in trades] == [str(T0 + 10 - 60_000)]
    assert (desk.stats.drops, desk.stats.subscribes) == (1, 2)

    desk.fake.fill(buy, time=T0 + 40)  # the stream is live again
    await desk.until(lambda: order_state(desk, "bid")[0] == "filled")
    assert desk.venue.fills()[-1] == fill("28460", "bid", "buy", "60000", "0.1", "0.0001", "BTC",
                                          T0 + 40)  # fmt: skip
    assert order_state(desk, "bid") == ("filled", D("0.1"), D("60000"), D("0"))
    assert len(desk.venue.fills()) == 4
    assert len(desk.fake.account.calls("/api/v3/myTrades")) == 1


async def test_an_order_placed_before_the_watch_gets_its_fills_from_the_trade_stream(
    desk: Desk,
) -> None:
    """ccxt never saw this order new, so its order updates carry no trades: the
    fill comes from ``watch_my_trades``."""
    await desk.venue.submit(limit("sell", "0.5", "70000", "mine"))  # e.g. before a restart
    await desk.watch()  # the first reconcile finds it open, with no trades yet
    assert len(desk.fake.account.calls("/api/v3/myTrades")) == 1
    desk.fake.fill(int(desk.venue.exchange_id("mine") or 0), "0.2", time=T0 + 5)
    await desk.until(lambda: len(desk.venue.fills()) == 1
                     and order_state(desk, "mine")[0] == "partially_filled")  # fmt: skip
    assert desk.venue.fills() == SELL_FILLS[:1]
    assert order_state(desk, "mine") == ("partially_filled", D("0.2"), D("70000"), D("14"))
    assert len(desk.fake.account.calls("/api/v3/myTrades")) == 1
    assert (desk.stats.trades, desk.stats.duplicate_trades) == (1, 0)


async def test_updates_of_orders_that_are_not_ours_are_ignored(desk: Desk) -> None:
    await desk.watch()
    mine = await desk.venue.submit(limit("sell", "0.2", "75000", "mine"))
    await desk.until(lambda: desk.stats.orders >= 1)
    seen = desk.stats.orders
    other = await desk.rest().create(limit("sell", "0.1", "90000", "manual"),
                                     client_order_id="manual")  # fmt: skip
    await desk.until(lambda: desk.stats.foreign == 1)
    desk.fake.fill(int(other.id), time=T0 + 7)  # an order update and a trade, both foreign
    await desk.until(lambda: desk.stats.foreign == 3)
    assert (desk.stats.orders, desk.stats.trades) == (seen + 2, 1)
    assert desk.venue.orders() == [mine]
    assert desk.venue.fills() == []


async def test_a_cancel_made_elsewhere_reaches_the_order_by_its_own_id(desk: Desk) -> None:
    await desk.watch()
    await desk.venue.submit(limit("buy", "0.1", "60000", "mine"))
    exchange_id = desk.venue.exchange_id("mine") or ""
    await desk.rest().cancel("BTC/USDT", exchange_id)  # e.g. by hand on the exchange
    await desk.until(lambda: order_state(desk, "mine")[0] == "cancelled")
    event = desk.user.events[-1]
    assert (event["x"], event["c"], event["C"]) == ("CANCELED", "cancel000001", "mine")
    assert desk.stats.foreign == 0


async def test_a_refused_key_ends_the_watch(desk: Desk) -> None:
    stop = asyncio.Event()
    with pytest.raises(OrderRejected) as refused:
        await desk.venue.watch(desk.stream(secret=SECRET[::-1]), stop, retry_delay=0.01)
    assert refused.value.rule == "credentials"
    assert desk.user.subscriptions == 0
