"""A strategy enabled for live trading: its signals become real orders on the tenant's
exchange account (real ccxt against the Binance fake), once per signal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal as D
from pathlib import Path

import pytest

from cryptodesk.adapters.bus.memory import MemoryBus
from cryptodesk.domain.signals import Signal
from cryptodesk.services.signal_trader import SignalTrader, TradingStrategy
from tests.unit._ledger_api import migrated_template
from tests.unit._live_orders import LIVE, NOW, TENANT, Env, open_env


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_template(tmp_path_factory.mktemp("live-strategy"))


@pytest.fixture
async def env(tmp_path: Path, template: Path) -> AsyncIterator[Env]:
    async for made in open_env(tmp_path, template):
        yield made


async def test_a_live_strategy_places_one_real_order_per_signal(env: Env) -> None:
    strategy = TradingStrategy(rule="btc-golden", tenant=TENANT, account="main",
                               quantity=D("0.01"), mode="live", venue=LIVE)  # fmt: skip
    service = env.service()
    trader = SignalTrader(MemoryBus(), service, [strategy])
    signal = Signal("btc-golden", "golden_cross", "binance", "BTC/USDT", "1h", NOW, 67_000.0)
    await trader.handle(signal)
    await trader.handle(signal)  # redelivered: the same client order id, nothing sent
    (order,) = await service.orders(TENANT)
    assert (order.order_id, order.venue, order.side, order.status, order.average_price) == (
        "L822b330000000001", LIVE, "buy", "filled", D("67000"))  # fmt: skip
    assert list(env.fake.orders) == [4_000_001]
    assert trader.placed == 1
    assert await env.entry_ids() == ["binance:trade:BTCUSDT:28457"]


def test_live_trading_must_be_asked_for_explicitly() -> None:
    base = {"rule": "r", "tenant": "t", "account": "a", "quantity": D(1)}
    for mode, venue in (("paper", LIVE), ("live", "internal"), ("live", "paper:binance")):
        with pytest.raises(ValueError, match='needs mode = "live"'):
            TradingStrategy(**base, mode=mode, venue=venue)  # type: ignore[arg-type]
    assert TradingStrategy(**base, mode="live", venue=LIVE).venue == LIVE  # type: ignore[arg-type]
