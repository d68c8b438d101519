"""Valuation: positions, missing prices, allocation, and live prices from the cache."""

from __future__ import annotations

from decimal import Decimal as D
from decimal import localcontext

import pytest

from cryptodesk.adapters.cache.memory import MemoryCache
from cryptodesk.domain import codec
from cryptodesk.domain.market import Ticker
from cryptodesk.portfolio import valuation
from cryptodesk.portfolio.ledger import LedgerEntry
from cryptodesk.portfolio.tax_lots import CostBasisResult, DisposalLine, Holding, IncomeLine
from cryptodesk.services import cache_keys
from cryptodesk.services.portfolio_valuation import (
    ClosePrices,
    LivePrices,
    PortfolioValuation,
    Quote,
    par_quotes,
)
from cryptodesk.services.reference_prices import ReferencePrice, cache_key, encode_price

T0 = 1_717_200_000_000  # 2024-06-01T00:00:00Z


def line(account: str, asset: str, gain: str) -> DisposalLine:
    return DisposalLine(f"d-{account}-{gain}", asset, D("0.1"), T0, T0 + 1, D(0), D(0) - D(gain),
                        D(gain), "short", "lot", account, "sell")  # fmt: skip


def result(*, per_wallet: bool = True) -> CostBasisResult:
    return CostBasisResult(
        method="fifo",
        currency="USD",
        per_wallet=per_wallet,
        holdings=[
            Holding("BTC", D("1.5"), D("45000"), "binance"),
            Holding("BTC", D("0.5"), D("10000"), "ledger"),
            Holding("ETH", D("10"), D("20000"), "binance"),
        ],
        disposals=[line("binance", "BTC", "1234.56"), line("binance", "BTC", "-34.56")],
        income=[IncomeLine("i1", "BTC", D("0.002"), T0, D("100"), "staking", "ledger")],
        warnings=["deposit x has no value"],
    )


def by_key(v: valuation.Valuation) -> dict[tuple[str | None, str], valuation.Position]:
    return {(p.account, p.asset): p for p in v.positions}


def test_positions_per_account_and_asset_with_pnl_and_allocation() -> None:
    v = valuation.value(result(), {"BTC": D("60000"), "ETH": D("3000")})
    p = by_key(v)
    btc = p[("binance", "BTC")]
    assert (btc.amount, btc.cost_basis, btc.market_value) == (D("1.5"), D(45000), D("90000.0"))
    assert (btc.unrealized, btc.realized, btc.income) == (D("45000.0"), D("1200.00"), D(0))
    assert btc.allocation == D("60.00")
    cold = p[("ledger", "BTC")]
    assert (cold.market_value, cold.unrealized, cold.income, cold.allocation) == (
        D("30000.0"), D("20000.0"), D("100"), D("20.00"),
    )  # fmt: skip
    assert p[("binance", "ETH")].allocation == D("20.00")
    (asset_btc, asset_eth) = v.assets
    assert (asset_btc.account, asset_btc.asset, asset_btc.amount) == (None, "BTC", D("2.0"))
    assert (asset_btc.market_value, asset_btc.allocation) == (D("120000.0"), D("80.00"))
    assert asset_eth.unrealized == D("10000")
    t = v.total
    assert (t.market_value, t.cost_basis, t.unrealized) == (D("150000.0"), D(75000), D("75000.0"))
    assert (t.realized, t.income, t.complete) == (D("1200.00"), D("100"), True)
    assert v.missing_prices == []
    assert v.warnings == ["deposit x has no value"]


def test_a_missing_price_is_unknown_never_zero() -> None:
    v = valuation.value(result(), {"BTC": D("60000"), "ETH": None})
    eth = by_key(v)[("binance", "ETH")]
    assert (eth.price, eth.market_value, eth.unrealized, eth.allocation) == (None,) * 4
    assert eth.cost_basis == D(20000)
    assert v.missing_prices == [valuation.MissingPrice("binance", "ETH", D("10"))]
    assert v.total.complete is False
    assert v.total.market_value == D("120000.0")  # the priced part
    assert v.total.unrealized == D("65000.0")
    assert by_key(v)[("binance", "BTC")].allocation == D("75.00")
    # An asset the price map does not mention at all is missing too.
    assert valuation.value(result(), {"BTC": D(1)}).missing_prices[0].asset == "ETH"


def test_allocation_rounds_half_even_to_a_hundredth() -> None:
    r = CostBasisResult("fifo", "USD", True, holdings=[
        Holding("A", D(1), D(0), "x"), Holding("B", D(799), D(0), "x"),
    ])  # fmt: skip
    v = valuation.value(r, {"A": D(1), "B": D(1)})
    # 0.125 % -> 0.12 and 99.875 % -> 99.88: half-even, not half-up (0.13).
    assert [p.allocation for p in v.positions] == [D("0.12"), D("99.88")]
    thirds = CostBasisResult("fifo", "USD", True, holdings=[
        Holding(a, D(1), D(0), "x") for a in ("A", "B", "C")
    ])  # fmt: skip
    assert [
        p.allocation for p in valuation.value(thirds, dict.fromkeys("ABC", D(5))).positions
    ] == [D("33.33")] * 3


def test_market_value_is_exact() -> None:
    amount, price = D("0.123456789012345678"), D("65432.123456789012345")
    r = CostBasisResult("fifo", "USD", True, holdings=[Holding("BTC", amount, D("1"), "x")])
    (p,) = valuation.value(r, {"BTC": price}).positions
    with localcontext() as ctx:
        ctx.prec = 60
        assert p.market_value == amount * price
        assert p.unrealized == amount * price - 1
    assert len(str(p.market_value).replace(".", "")) > 28  # more digits than the default context


def test_closed_positions_need_no_price_and_cash_is_worth_one() -> None:
    r = CostBasisResult("fifo", "USD", True,
                        holdings=[Holding("USD", D("5"), D("5"), "bank")],
                        disposals=[line("binance", "SOL", "12.5")])  # fmt: skip
    v = valuation.value(r, {})
    sol = by_key(v)[("binance", "SOL")]
    assert (sol.amount, sol.market_value, sol.unrealized, sol.realized) == (
        D(0),
        D(0),
        D(0),
        D("12.5"),
    )
    assert by_key(v)[("bank", "USD")].market_value == D(5)
    assert v.missing_prices == []
    assert v.total.complete


def test_universal_results_pool_every_account() -> None:
    v = valuation.value(result(per_wallet=False), {"BTC": D(2), "ETH": D(1)})
    assert [(p.account, p.asset, p.amount) for p in v.positions] == [
        ("*", "BTC", D("2.0")), ("*", "ETH", D(10)),
    ]  # fmt: skip
    assert by_key(v)[("*", "BTC")].realized == D("1200.00")


def test_json_shape() -> None:
    data = valuation.to_dict(valuation.value(result(), {"BTC": D("60000"), "ETH": None}))
    assert data["total"] == {
        "cost_basis": "75000", "market_value": "120000.0", "unrealized": "65000.0",
        "realized": "1200.00", "income": "100", "complete": False,
    }  # fmt: skip
    assert data["positions"][1] == {
        "account": "binance", "asset": "ETH", "amount": "10", "cost_basis": "20000",
        "price": None, "market_value": None, "unrealized": None, "realized": "0",
        "income": "0", "allocation": None,
    }  # fmt: skip
    assert "account" not in data["assets"][0]
    assert data["missing_prices"] == [{"account": "binance", "asset": "ETH", "amount": "10"}]


# ---- live prices from the cache -----------------------------------------------------------


NOW = T0 + 90_000


async def put_ticker(cache: MemoryCache, exchange: str, symbol: str, last: float, ts: int) -> None:
    await cache.set(cache_keys.ticker(exchange, symbol),
                    codec.encode_ticker(Ticker(exchange, symbol, ts, last)))  # fmt: skip


@pytest.fixture
async def cache() -> MemoryCache:
    c = MemoryCache()
    await put_ticker(c, "binance", "BTC/USDT", 65000.1, T0)
    await put_ticker(c, "kraken", "BTC/USD", 65100.5, T0 + 30_000)
    await put_ticker(c, "binance", "ETH/USDT", 3000.25, T0 + 60_000)
    ref = ReferencePrice("SOL", "solana", "usd", D("150.123"), T0 - 600_000, T0, "coingecko")
    await c.set(cache_key("coingecko", "SOL", "usd"), encode_price(ref))
    return c


async def test_live_prices_follow_the_documented_order(cache: MemoryCache) -> None:
    prices = LivePrices(cache, exchanges=["binance", "kraken"], currency="USD",
                        clock=lambda: NOW)  # fmt: skip
    q = await prices.quotes(["BTC", "ETH", "SOL", "USDT", "USD", "XYZ"])
    # The currency itself is the first quote, before the par stablecoins.
    assert q["BTC"] == valuation_quote("BTC", "65100.5", "ticker:kraken:BTC/USD", T0 + 30_000)
    assert q["ETH"] == valuation_quote("ETH", "3000.25", "ticker:binance:ETH/USDT", T0 + 60_000)
    assert q["SOL"] == valuation_quote("SOL", "150.123", "coingecko", T0 - 600_000)
    assert q["USDT"] == Quote("USDT", D(1), "par", None, None)
    assert q["USD"] == Quote("USD", D(1), "currency", None, None)
    assert q["XYZ"] is None


def valuation_quote(asset: str, price: str, source: str, as_of: int) -> Quote:
    return Quote(asset, D(price), source, as_of, NOW - as_of)


async def test_par_quotes_are_configurable(cache: MemoryCache) -> None:
    assert par_quotes("USD") == ("USDT", "USDC")
    assert par_quotes("EUR") == ()
    strict = LivePrices(cache, exchanges=["binance"], currency="USD", par=[], clock=lambda: NOW)
    q = await strict.quotes(["BTC", "USDT"])
    assert q == {"BTC": None, "USDT": None}  # no USD market, no par: missing


async def test_portfolio_value_over_the_ledger(cache: MemoryCache) -> None:
    entries = [
        LedgerEntry("b1", T0 - 10 * 86_400_000, "buy", "binance", "BTC", D(1),
                    counter_asset="USD", counter_amount=D(30000)),
        LedgerEntry("t1", T0 - 9 * 86_400_000, "transfer", "binance", "BTC", D("0.4"),
                    to_account="ledger"),
        LedgerEntry("s1", T0 - 8 * 86_400_000, "sell", "binance", "BTC", D("0.1"),
                    counter_asset="USD", counter_amount=D(5000)),
        LedgerEntry("x1", T0 - 7 * 86_400_000, "buy", "binance", "XYZ", D(3),
                    counter_asset="USD", counter_amount=D(30)),
    ]  # fmt: skip

    async def source(tenant: str) -> list[LedgerEntry]:
        assert tenant == "acme"
        return entries

    service = PortfolioValuation(
        source,
        LivePrices(cache, exchanges=["binance"], currency="USD", clock=lambda: NOW),
        ClosePrices(None, exchanges=[], currency="USD"),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        currency="USD",
        method="fifo",
    )
    view = await service.value("acme")
    p = by_key(view.valuation)
    assert (p[("binance", "BTC")].amount, p[("binance", "BTC")].cost_basis) == (D("0.5"), D(15000))
    assert p[("binance", "BTC")].market_value == D("32500.05")
    assert p[("binance", "BTC")].realized == D(2000)
    assert (p[("ledger", "BTC")].cost_basis, p[("ledger", "BTC")].market_value) == (
        D(12000), D("26000.04"),
    )  # fmt: skip
    assert p[("binance", "XYZ")].market_value is None
    assert view.quotes["XYZ"] is None
    assert view.valuation.total.complete is False
