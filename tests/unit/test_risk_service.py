"""RiskService over the real portfolio services: ledger on SQLite, live prices in
the cache, daily candles in the store. The world below is shared with
``test_api_risk``.

Holdings (tenant ``acme``): 0.5 BTC, 4 ETH, 3000 USDT, 10 SOL, 1000 DOGE. Live
prices: BTC 60000, ETH 3000, DOGE 0.2 (tickers on ``sim``); USDT is at par; SOL
has no price. Candles: BTC every day of April 2024; ETH from April 6th with
April 13th missing; DOGE none. The clock is 2024-05-01T12:00Z, so the window of
30 days is April 1st to 30th.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cryptodesk.adapters.cache.memory import MemoryCache
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.sql_store import SqlMarketStore
from cryptodesk.adapters.files.ledger_csv import parse_ledger
from cryptodesk.analytics import allocation, correlation, var
from cryptodesk.analytics.portfolio_risk import component_var
from cryptodesk.analytics.risk_report import RiskReportOptions, build_risk_report
from cryptodesk.config import load_settings
from cryptodesk.domain import codec
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.market import Candle, Ticker
from cryptodesk.portfolio_wiring import Portfolio, build_portfolio
from cryptodesk.services import cache_keys
from cryptodesk.services.close_history import InsufficientHistory
from cryptodesk.services.risk_service import RebalanceRequest, RiskService
from tests.unit._ledger_api import HEADER, migrated_template

DAY = 86_400_000
APRIL_1 = 1_711_929_600_000  # 2024-04-01T00:00:00Z
NOW = APRIL_1 + 30 * DAY + 12 * 3_600_000  # 2024-05-01T12:00:00Z
LEDGER = HEADER + "".join(
    f"b{i},2024-01-0{i}T00:00:00Z,buy,main,{asset},{amount},USD,{cost},,,,,,\n"
    for i, (asset, amount, cost) in enumerate(
        [("BTC", "0.5", "20000"), ("ETH", "4", "8000"), ("USDT", "3000", "3000"),
         ("SOL", "10", "1000"), ("DOGE", "1000", "100")], start=1)
)  # fmt: skip
BTC_CLOSES = [60000.0 + 1000.0 * math.sin(k) + 37.0 * k for k in range(30)]
ETH_CLOSES = {k: 3000.0 + 150.0 * math.cos(1.7 * k) - 11.0 * k for k in range(5, 30) if k != 12}


def expected_prices() -> np.ndarray:
    """The aligned closes the service must build: NaN before ETH's first day,
    April 13th (row 12) carried from April 12th."""
    eth = [np.nan] * 5 + [ETH_CLOSES.get(k, ETH_CLOSES.get(k - 1)) for k in range(5, 30)]
    return np.column_stack([BTC_CLOSES, eth])


TIMES = np.arange(APRIL_1, APRIL_1 + 30 * DAY, DAY, dtype=np.int64)
WEIGHTS = {"BTC": float(Decimal(30000) / Decimal(42000)), "ETH": float(Decimal(12000) / 42000)}


def candle(symbol: str, day: int, close: float) -> Candle:
    return Candle("sim", symbol, "1d", APRIL_1 + day * DAY, close, close, close, close, 1.0,
                  closed=True)  # fmt: skip


@dataclass
class World:
    portfolio: Portfolio
    store: SqlMarketStore
    cache: MemoryCache
    service: RiskService


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_template(tmp_path_factory.mktemp("risk"))


async def open_world(tmp_path: Path, template: Path) -> AsyncIterator[World]:
    db = tmp_path / "risk.db"
    shutil.copyfile(template, db)
    settings = load_settings(
        data_dir=tmp_path, database_url=f"sqlite+aiosqlite:///{db}", exchanges=["sim"]
    )
    store = SqlMarketStore(create_engine(settings.database_url))
    cache = MemoryCache()
    portfolio = build_portfolio(settings, store.engine, cache, store)
    await portfolio.ledger.import_entries("acme", parse_ledger(LEDGER))
    for symbol, price in (("BTC/USDT", 60000.0), ("ETH/USDT", 3000.0), ("DOGE/USDT", 0.2)):
        ticker = Ticker("sim", symbol, NOW - 1000, price)
        await cache.set(cache_keys.ticker("sim", symbol), codec.encode_ticker(ticker))
    candles = [candle("BTC/USDT", k, c) for k, c in enumerate(BTC_CLOSES)]
    candles += [candle("ETH/USDT", k, c) for k, c in ETH_CLOSES.items()]
    # Outside the window: the day before it and the day in progress.
    candles += [candle("BTC/USDT", -1, 1.0), candle("BTC/USDT", 30, 1.0)]
    await store.upsert_candles(candles)
    service = RiskService(portfolio.valuation, store, exchanges=["sim"], currency="USD",
                          clock=lambda: NOW)  # fmt: skip
    yield World(portfolio, store, cache, service)
    await portfolio.close()
    await store.close()


@pytest.fixture
async def world(tmp_path: Path, template: Path) -> AsyncIterator[World]:
    async for w in open_world(tmp_path, template):
        yield w


def expected_report(paths: int = 500) -> dict[str, Any]:
    options = RiskReportOptions(monte_carlo_paths=paths, seed=0)
    report = build_risk_report(TIMES, ("BTC", "ETH"), expected_prices(), weights=WEIGHTS,
                               options=options)  # fmt: skip
    return report.data


async def test_history_aligns_on_day_opens_with_leading_nan_and_forward_fill(world: World) -> None:
    history = await world.service.history(["BTC", "ETH", "DOGE"], 30)
    assert history.assets == ("BTC", "ETH")
    assert history.times.tolist() == TIMES.tolist()
    np.testing.assert_array_equal(history.prices, expected_prices())
    assert history.filled == {"BTC": 0, "ETH": 1}
    assert history.sources == {"BTC": "candle:sim:BTC/USDT:1d", "ETH": "candle:sim:ETH/USDT:1d"}
    assert history.excluded == [{"asset": "DOGE", "reason": "no stored candles in the window"}]


async def test_weights_exposure_and_exclusions(world: World) -> None:
    held = await world.service.holdings("acme")
    assert held.invested == {"BTC": Decimal("30000.00"), "ETH": Decimal("12000.0"),
                             "DOGE": Decimal("200.0")}  # fmt: skip
    assert held.cash == {"USDT": Decimal(3000)}
    assert held.excluded == [{"asset": "SOL", "reason": "no live price"}]
    exposure = held.exposure(["BTC", "ETH"])
    assert exposure.pop("cash_weight") == 3000 / 45200
    assert exposure.pop("cash") == {"USDT": "3000"}
    assert {k: Decimal(v) for k, v in exposure.items()} == {
        "total_value": 45200,
        "invested_value": 42000,
        "other_value": 200,
        "cash_value": 3000,
    }


async def test_portfolio_is_the_report_of_the_aligned_prices_plus_its_context(
    world: World,
) -> None:
    body = await world.service.portfolio("acme", days=30, paths=500)
    assert body["portfolio"]["weights"] == WEIGHTS
    assert body["as_of"] == "2024-05-01T00:00:00.000Z"
    assert body["currency"] == "USD"
    assert body["excluded"] == [
        {"asset": "SOL", "reason": "no live price"},
        {"asset": "DOGE", "reason": "no stored candles in the window"},
    ]
    assert body["history"]["ETH"] == {"source": "candle:sim:ETH/USDT:1d", "forward_filled": 1,
                                      "first": "2024-04-06T00:00:00.000Z"}  # fmt: skip
    note = body["notes"]["ETH"].pop("prices")
    assert note == "1 missing close(s) forward-filled from the previous one"
    if not body["notes"]["ETH"]:
        del body["notes"]["ETH"]
    context = {k: body.pop(k) for k in ("as_of", "currency", "excluded", "exposure", "history")}
    assert Decimal(context["exposure"]["invested_value"]) == 42000
    assert body == expected_report()


async def test_var_by_every_method_over_the_common_days(world: World) -> None:
    body = await world.service.var("acme", days=30, confidence=0.9, horizon=2, paths=400, seed=3)
    m = expected_prices()[5:]
    returns = m[1:] / m[:-1] - 1.0
    w = np.array([WEIGHTS["BTC"], WEIGHTS["ETH"]])
    port = returns @ w
    kw = {"confidence": 0.9, "horizon": 2}
    assert body["observations"] == 24
    assert body["var"]["historical"] == var.var_historical(port, **kw)
    assert body["var"]["parametric"] == var.var_parametric(port, **kw)
    assert body["var"]["cornish_fisher"] == var.var_cornish_fisher(port, **kw)
    assert body["cvar"]["historical"] == var.cvar_historical(port, **kw)
    for method, key in (("normal", "monte_carlo"), ("bootstrap", "monte_carlo_bootstrap")):
        mc = var.var_monte_carlo(returns, w, paths=400, seed=3, method=method, **kw)  # type: ignore[arg-type]
        assert (body["var"][key], body["cvar"][key]) == (mc.var, mc.cvar)
    cv = component_var(returns, w, **kw)
    assert body["component_var"] == {"BTC": cv.component[0], "ETH": cv.component[1]}
    assert body["notes"] == {}
    none = await world.service.var("acme", days=30, paths=0)
    assert none["var"]["monte_carlo"] is None
    assert none["notes"]["var.monte_carlo"] == "Monte Carlo not requested (0 paths)"


async def test_correlation_pearson_and_ewma_with_warning(world: World) -> None:
    m = expected_prices()[5:]
    returns = m[1:] / m[:-1] - 1.0
    body = await world.service.correlation("acme", days=30, threshold=-1)
    pearson = correlation.correlation_matrix(returns)
    assert body["assets"] == ["BTC", "ETH"]
    assert body["matrix"]["BTC"]["ETH"] == pearson[0, 1]
    assert body["average"] == pearson[0, 1]
    assert body["warning"] == correlation.correlation_warning(pearson, threshold=-1).message  # type: ignore[union-attr]
    ewma = await world.service.correlation("acme", days=30, method="ewma", half_life=5)
    expected = correlation.ewma_correlation(returns, half_life=5)
    assert (ewma["matrix"]["ETH"]["BTC"], ewma["half_life"]) == (expected[1, 0], 5)
    assert ewma["warning"] is None  # threshold 0.8
    # The rolling average over 10 days: 24 returns give 15 windows, dated by the close
    # that ends each (the last is the 2024-04-30 candle, the newest closed day).
    rolling = correlation.rolling_correlation(returns[:, 0], returns[:, 1], window=10)
    assert body["rolling"]["window"] == 30
    short = await world.service.correlation("acme", days=30, rolling_window=10)
    assert [p["value"] for p in short["rolling"]["average"]] == rolling[9:].tolist()
    assert short["rolling"]["average"][-1]["time"] == "2024-04-30T00:00:00.000Z"
    assert len(short["rolling"]["average"]) == 15
    none = await world.service.correlation("acme", days=30, rolling_window=0)
    assert none["rolling"] is None
    with pytest.raises(DomainError) as bad:
        await world.service.correlation("acme", assets=["BTC", "DOGE"], days=30)
    assert bad.value.field == "assets"
    with pytest.raises(DomainError) as method:
        await world.service.correlation("acme", method="spearman")
    assert method.value.field == "method"


async def test_rebalance_to_given_targets_trades_only_outside_the_band(world: World) -> None:
    request = RebalanceRequest(
        targets={"BTC": 0.5, "ETH": 0.3, "USDT": 0.2}, tolerance=Decimal("0.05"),
        min_trade=Decimal(10), lot_sizes={"BTC": Decimal("0.001")}, fee_rate=Decimal("0.001"),
    )  # fmt: skip
    body = await world.service.rebalance("acme", request)
    # Total 45200 (DOGE is priced, so it counts; SOL is not): BTC is 7400 above its
    # 22600 target, past the 2260 band; ETH (-1560) and DOGE (+200) are inside it.
    [trade] = body["trades"]
    assert (trade["asset"], trade["side"]) == ("BTC", "sell")
    assert [Decimal(trade[k]) for k in ("quantity", "price", "notional", "fee")] == [
        Decimal("0.123"), Decimal(60000), Decimal(7380), Decimal("7.38")]  # fmt: skip
    assert Decimal(body["cash_after"]) == Decimal("10372.62")
    assert Decimal(body["total_value"]) == Decimal(45200)
    assert body["weights_before"]["BTC"] == str(Decimal(30000) / Decimal(45200))
    assert Decimal(body["weights_after"]["USDT"]) == Decimal("10372.62") / Decimal("45192.62")
    assert (body["quote"], body["within_tolerance"], body["skipped"]) == ("USDT", False, [])
    assert body["excluded"] == [{"asset": "SOL", "reason": "no live price"}]


async def test_rebalance_from_an_optimiser_over_the_history(world: World) -> None:
    request = RebalanceRequest(optimizer="min_variance", days=30, cash_weight=0.25)
    body = await world.service.rebalance("acme", request)
    m = expected_prices()[5:]
    returns = m[1:] / m[:-1] - 1.0
    w = allocation.min_variance_weights(np.cov(returns, rowvar=False, ddof=1))
    assert body["targets"] == {
        "BTC": float(Decimal(repr(float(w[0]))) * Decimal("0.75")),
        "ETH": float(Decimal(repr(float(w[1]))) * Decimal("0.75")), "USDT": 0.25,
    }  # fmt: skip
    assert body["optimizer"] == "min_variance"
    assert {"asset": "DOGE", "reason": "no stored candles in the window"} in body["excluded"]


async def test_bad_requests_name_their_field_and_no_history_is_insufficient(
    world: World,
) -> None:
    with pytest.raises(DomainError) as both:
        await world.service.rebalance("acme", RebalanceRequest(targets={"BTC": 1}, optimizer="hrp"))
    assert both.value.field == "targets"
    with pytest.raises(DomainError) as lot:
        await world.service.rebalance(
            "acme", RebalanceRequest(targets={"BTC": 1.0}, lot_sizes={"BTC": Decimal(0)})
        )
    assert lot.value.field == "lot_sizes"
    with pytest.raises(DomainError) as unknown:
        await world.service.rebalance("acme", RebalanceRequest(targets={"SOL": 1.0}))
    assert (unknown.value.field, str(unknown.value)) == (
        "targets", "target asset SOL has no live price")  # fmt: skip
    with pytest.raises(InsufficientHistory):
        await world.service.portfolio("nobody", days=30)
    short = await world.service.var("acme", days=2, paths=0)  # one return: values are null
    assert (short["observations"], short["var"]["historical"]) == (1, None)
    assert short["notes"]["var.historical"] == (
        "historical VaR at 0.95 needs at least 20 1-day returns, got 1")  # fmt: skip
