"""Strategies enabled for paper trading: their rule's signals become market orders on
the internal venue through the order service; a redelivered signal places nothing."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from decimal import Decimal as D
from pathlib import Path

import pytest

from cryptodesk.adapters.bus.memory import MemoryBus
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.order_log_store import SqlOrderLog
from cryptodesk.domain.market import OrderBook
from cryptodesk.domain.orders import OrderRequest
from cryptodesk.domain.signals import SIGNAL_KINDS, Signal, encode_signal
from cryptodesk.services.order_service import OrderService, default_instruments
from cryptodesk.services.signal_trader import (
    BEARISH,
    BULLISH,
    SignalTrader,
    TradingStrategy,
    client_order_id,
    side_of,
)
from tests.unit._ledger_api import migrated_template

OPEN = 1_714_564_800_000
STRATEGY = TradingStrategy(rule="btc-golden", tenant="acme", account="bot", quantity=D("0.1"))


def signal(kind: str = "golden_cross", rule: str = "btc-golden", open_time: int = OPEN) -> Signal:
    return Signal(rule, kind, "sim", "BTC/USDT", "1h", open_time, 60_000.0)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_template(tmp_path_factory.mktemp("signal-trader"))


@pytest.fixture
async def orders(tmp_path: Path, template: Path) -> AsyncIterator[OrderService]:
    db = tmp_path / "orders.db"
    shutil.copyfile(template, db)
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    service = OrderService(SqlOrderLog(engine), default_instruments(["BTC/USDT"]),
                           clock=lambda: OPEN)  # fmt: skip
    # A market maker of the tenant rests both sides; the bot holds both assets.
    for account, asset, amount in (("mm", "USDT", "1000000"), ("mm", "BTC", "10"),
                                   ("bot", "USDT", "100000"), ("bot", "BTC", "1"),
                                   ("seed", "USDT", "1000")):  # fmt: skip
        await service.deposit("acme", account, asset, D(amount))
    for side, price in (("buy", "59990"), ("sell", "60010")):
        await service.submit("acme", OrderRequest("mm", "BTC/USDT", side, "limit", D("5"),  # type: ignore[arg-type]
                                                  price=D(price)))  # fmt: skip
    # A first trade gives the market a last price (market orders are valued at it).
    await service.submit("acme", OrderRequest("seed", "BTC/USDT", "buy", "limit", D("0.01"),
                                              price=D("60010")))  # fmt: skip
    yield service
    await engine.dispose()


def test_every_kind_has_a_side() -> None:
    assert set(SIGNAL_KINDS) == BULLISH | BEARISH
    assert not BULLISH & BEARISH
    kinds = ("golden_cross", "death_cross", "rsi_oversold", "rsi_overbought")
    assert [side_of(k) for k in kinds] == ["buy", "sell", "buy", "sell"]
    assert client_order_id(signal()) == f"sig:btc-golden:sim:BTC/USDT:1h:{OPEN}"


async def test_a_signal_places_one_market_order_even_when_delivered_twice(
    orders: OrderService,
) -> None:
    trader = SignalTrader(MemoryBus(), orders, [STRATEGY])
    await trader.handle(signal())
    await trader.handle(signal())  # redelivered: the same client order id
    await trader.handle(signal(rule="other-rule"))  # no strategy trades it
    await trader.handle(signal("death_cross", open_time=OPEN + 3_600_000))
    bot = await orders.orders("acme", account="bot")
    assert [(o.side, o.type, o.quantity, o.status, o.average_price) for o in bot] == [
        ("buy", "market", D("0.1"), "filled", D("60010")),
        ("sell", "market", D("0.1"), "filled", D("59990")),
    ]
    assert trader.placed == 2


async def test_a_rejected_signal_order_is_logged_not_raised(orders: OrderService) -> None:
    broke = TradingStrategy(rule="btc-golden", tenant="acme", account="nobody", quantity=D("1"))
    trader = SignalTrader(MemoryBus(), orders, [broke])
    await trader.handle(signal())
    assert trader.rejected == {"insufficient_balance": 1}
    assert trader.placed == 0
    assert await orders.orders("acme", account="nobody") == []  # a rejection stores nothing


async def test_the_trader_consumes_the_signals_topic(orders: OrderService) -> None:
    bus = MemoryBus()
    await bus.start()
    trader = SignalTrader(bus, orders, [STRATEGY])
    stop = asyncio.Event()
    task = asyncio.create_task(trader.run(stop))
    await asyncio.sleep(0.2)  # the consumer starts at the end of the topic
    await bus.publish("signals", "sim:BTC/USDT", encode_signal(signal()))
    await bus.publish("signals", "sim:BTC/USDT", b"not a signal")
    for _ in range(100):
        if trader.placed:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await task
    await bus.close()
    (order,) = await orders.orders("acme", account="bot")
    assert (order.side, order.status, order.client_order_id) == (
        "buy", "filled", client_order_id(signal()))  # fmt: skip


async def test_a_strategy_on_a_paper_venue_takes_from_that_exchanges_book(
    tmp_path: Path, template: Path
) -> None:
    db = tmp_path / "paper.db"
    shutil.copyfile(template, db)
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    live = OrderBook(
        "sim", "BTC/USDT", OPEN, ((59_995.0, 1.0),), ((60_005.0, 0.05), (60_006.0, 1.0))
    )

    async def books(exchange: str, symbol: str) -> OrderBook | None:
        return live if (exchange, symbol) == ("sim", "BTC/USDT") else None

    service = OrderService(SqlOrderLog(engine), default_instruments(["BTC/USDT"]),
                           clock=lambda: OPEN, paper=["sim"], books=books)  # fmt: skip
    await service.deposit("acme", "bot", "USDT", D("100000"))
    strategy = STRATEGY.model_copy(update={"venue": "paper:sim"})
    trader = SignalTrader(MemoryBus(), service, [strategy])
    await trader.handle(signal())
    await trader.handle(signal())  # redelivered: nothing more
    (order,) = await service.orders("acme", account="bot")
    assert (order.venue, order.status, order.filled) == ("paper:sim", "filled", D("0.1"))
    assert [(f.price, f.quantity) for f in await service.fills("acme")] == [
        (D("60005.0"), D("0.05")), (D("60006.0"), D("0.05")),
    ]  # fmt: skip
    await engine.dispose()


def test_a_strategy_venue_is_internal_or_paper() -> None:
    with pytest.raises(ValueError, match="venue"):
        TradingStrategy(rule="r", tenant="t", account="a", quantity=D(1), venue="live:binance")
