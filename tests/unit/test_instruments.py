"""Instrument grids, order validation and ccxt market parsing."""

from dataclasses import replace
from decimal import Decimal

import ccxt
import pytest
from ccxt.base import decimal_to_precision as ccxt_precision
from hypothesis import given
from hypothesis import strategies as st

from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.orders import OrderRequest
from cryptodesk.trading import instruments
from cryptodesk.trading.errors import OrderRejected
from cryptodesk.trading.instruments import Instrument

D = Decimal
BTC = Instrument(
    "BTC/USDT", "BTC", "USDT", tick_size=D("0.01"), lot_size=D("0.00001"),
    min_quantity=D("0.0001"), min_notional=D("5"),
)  # fmt: skip
LIMIT = OrderRequest("a", "BTC/USDT", "buy", "limit", D("0.5"), price=D("30000.01"))

# A spot symbol of GET /api/v3/exchangeInfo as documented at
# https://developers.binance.com/docs/binance-spot-api-docs/rest-api/general-endpoints#exchange-information
# and https://developers.binance.com/docs/binance-spot-api-docs/filters
BINANCE_BTCUSDT = {
    "symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", "baseAssetPrecision": 8,
    "quoteAsset": "USDT", "quotePrecision": 8, "quoteAssetPrecision": 8,
    "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
    "icebergAllowed": True, "ocoAllowed": True, "isSpotTradingAllowed": True,
    "isMarginTradingAllowed": True, "permissions": [], "permissionSets": [["SPOT", "MARGIN"]],
    "filters": [
        {"filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000",
         "tickSize": "0.01000000"},
        {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000",
         "stepSize": "0.00001000"},
        {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
         "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
    ],
}  # fmt: skip


def rejected(request: OrderRequest, instrument: Instrument = BTC) -> OrderRejected:
    with pytest.raises(OrderRejected) as info:
        instrument.validate(request)
    return info.value


def test_precision_modes_are_ccxts() -> None:
    assert instruments.DECIMAL_PLACES == ccxt_precision.DECIMAL_PLACES == 2
    assert instruments.SIGNIFICANT_DIGITS == ccxt_precision.SIGNIFICANT_DIGITS == 3
    assert instruments.TICK_SIZE == ccxt_precision.TICK_SIZE == 4


def test_grid_conversions_are_exact() -> None:
    assert BTC.to_ticks(D("30000.01")) == 3_000_001
    assert BTC.to_ticks(D("30000.0100000")) == 3_000_001
    assert BTC.to_lots(D("0.5")) == 50_000
    assert BTC.price(3_000_001) == D("30000.01")
    assert BTC.quantity(50_000) == D("0.5")
    with pytest.raises(OrderRejected) as info:
        BTC.to_ticks(D("30000.005"))
    assert info.value.rule == "tick_size"
    assert info.value.field == "price"
    assert info.value.message == (
        "price 30000.005 is not a multiple of the tick size 0.01 for BTC/USDT"
    )
    with pytest.raises(OrderRejected) as info:
        BTC.to_lots(D("0.000015"))
    assert info.value.rule == "lot_size"
    assert "quantity 0.000015" in info.value.message
    with pytest.raises(OrderRejected, match="tick_size"):
        BTC.to_ticks(D("NaN"))


@given(st.integers(1, 10**12), st.integers(1, 10**9))
def test_round_trip(ticks: int, lots: int) -> None:
    assert BTC.to_ticks(BTC.price(ticks)) == ticks
    assert BTC.to_lots(BTC.quantity(lots)) == lots


def test_min_quantity_defaults_to_one_lot() -> None:
    plain = Instrument("ETH/USDT", "ETH", "USDT", tick_size=D("0.01"), lot_size=D("0.001"))
    assert plain.min_quantity == D("0.001")
    assert plain.min_notional == 0
    assert plain.taker_fee == plain.maker_fee == D("0.001")
    assert BTC.min_quantity == D("0.0001")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"tick_size": D(0)}, "tick_size"),
        ({"lot_size": D("-0.1")}, "lot_size"),
        ({"min_notional": D("NaN")}, "min_notional"),
        ({"taker_fee": D("1.5")}, "taker_fee"),
    ],
)
def test_bad_instrument_is_refused(changes: dict[str, Decimal], field: str) -> None:
    with pytest.raises(DomainError) as info:
        replace(BTC, **changes)
    assert info.value.field == field


def test_valid_orders_return_lots_and_ticks() -> None:
    assert BTC.validate(LIMIT) == (50_000, 3_000_001, None)
    market = OrderRequest("a", "BTC/USDT", "sell", "market", D("0.0001"))
    assert BTC.validate(market) == (10, None, None)
    stop = OrderRequest("a", "BTC/USDT", "sell", "stop_market", D("1"), stop_price=D("29000"))
    assert BTC.validate(stop) == (100_000, None, 2_900_000)
    stop_limit = replace(stop, type="stop_limit", price=D("28999.99"))
    assert BTC.validate(stop_limit) == (100_000, 2_899_999, 2_900_000)
    post = replace(LIMIT, post_only=True)
    assert BTC.validate(post) == (50_000, 3_000_001, None)
    ioc = replace(LIMIT, time_in_force="ioc")
    assert BTC.validate(ioc)[0] == 50_000


@pytest.mark.parametrize(
    ("changes", "rule", "field", "message"),
    [
        ({"symbol": "ETH/USDT"}, "unknown_symbol", "symbol", "symbol ETH/USDT is not BTC/USDT"),
        ({"quantity": D(0)}, "invalid_quantity", "quantity", "quantity must be positive, got 0"),
        ({"quantity": D("-1")}, "invalid_quantity", "quantity", "quantity must be positive"),
        ({"quantity": D("Infinity")}, "invalid_quantity", "quantity", "quantity must be"),
        ({"quantity": D("0.00005")}, "min_quantity", "quantity",
         "quantity 0.00005 is below the minimum 0.0001 BTC for BTC/USDT"),
        ({"quantity": D("0.000105")}, "lot_size", "quantity",
         "quantity 0.000105 is not a multiple of the lot size 0.00001 for BTC/USDT"),
        ({"price": None}, "missing_price", "price", "a limit order needs a price"),
        ({"stop_price": D("1")}, "unexpected_price", "stop_price",
         "a limit order takes no stop_price"),
        ({"type": "market"}, "unexpected_price", "price", "a market order takes no price"),
        ({"type": "stop_market", "price": None}, "missing_price", "stop_price",
         "a stop_market order needs a stop_price"),
        ({"type": "stop_limit", "price": None, "stop_price": D("1")}, "missing_price", "price",
         "a stop_limit order needs a price"),
        ({"price": D(0)}, "invalid_price", "price", "price must be positive, got 0"),
        ({"price": D("-30000")}, "invalid_price", "price", "price must be positive"),
        ({"price": D("30000.011")}, "tick_size", "price",
         "price 30000.011 is not a multiple of the tick size 0.01 for BTC/USDT"),
        ({"type": "stop_limit", "stop_price": D("29000.001")}, "tick_size", "stop_price",
         "stop_price 29000.001 is not a multiple of the tick size 0.01"),
        ({"type": "stop_limit", "stop_price": D("-1")}, "invalid_price", "stop_price",
         "stop_price must be positive, got -1"),
        ({"quantity": D("0.0001"), "price": D("49999.99")}, "min_notional", "quantity",
         "notional 4.999999 USDT (price x quantity) is below the minimum 5 for BTC/USDT"),
        ({"type": "stop_limit", "stop_price": D("1"), "price": D("100"), "quantity": D("0.04")},
         "min_notional", "quantity", "notional 4 USDT (price x quantity) is below the minimum 5"),
        ({"type": "market", "price": None, "post_only": True}, "post_only", "post_only",
         "post_only is for limit orders only, not market"),
        ({"type": "stop_limit", "stop_price": D("1"), "post_only": True}, "post_only",
         "post_only", "post_only is for limit orders only, not stop_limit"),
        ({"type": "stop_market", "price": None, "stop_price": D("1"), "time_in_force": "ioc"},
         "time_in_force", "time_in_force",
         "time_in_force ioc is not allowed on a stop_market order"),
        ({"type": "stop_limit", "stop_price": D("1"), "time_in_force": "fok"},
         "time_in_force", "time_in_force",
         "time_in_force fok is not allowed on a stop_limit order"),
    ],
)  # fmt: skip
def test_each_rejection(changes: dict[str, object], rule: str, field: str, message: str) -> None:
    error = rejected(replace(LIMIT, **changes))  # type: ignore[arg-type]
    assert (error.rule, error.field) == (rule, field)
    assert error.message.startswith(message)
    assert field in error.message
    assert str(error) == f"{rule}: {error.message}"


def test_market_orders_skip_min_notional_here() -> None:
    tiny = OrderRequest("a", "BTC/USDT", "buy", "market", D("0.0001"))
    assert BTC.validate(tiny) == (10, None, None)
    exact = replace(LIMIT, quantity=D("0.0001"), price=D("50000"))
    assert BTC.validate(exact) == (10, 5_000_000, None)  # notional 5 is enough


def binance_market() -> dict[str, object]:
    exchange = ccxt.binance()
    # parse_market reads these from the margin endpoints load_markets would call.
    exchange.options["crossMarginPairsData"] = []
    exchange.options["isolatedMarginPairsData"] = []
    market: dict[str, object] = exchange.parse_market(BINANCE_BTCUSDT)
    assert exchange.precisionMode == ccxt_precision.TICK_SIZE
    return market


def test_from_ccxt_binance_tick_size() -> None:
    market = binance_market()
    assert market["precision"] == {"amount": 1e-05, "price": 0.01, "base": 1e-08, "quote": 1e-08}
    instrument = Instrument.from_ccxt_market(market, precision_mode=ccxt_precision.TICK_SIZE)
    assert instrument == Instrument(
        "BTC/USDT", "BTC", "USDT", tick_size=D("0.01"), lot_size=D("0.00001"),
        min_quantity=D("0.00001"), min_notional=D("5.0"), taker_fee=D("0.001"),
        maker_fee=D("0.001"),
    )  # fmt: skip
    assert instrument.to_ticks(D("64123.45")) == 6_412_345
    assert instrument.to_lots(D("0.00123")) == 123


def test_from_ccxt_decimal_places() -> None:
    # The same market as ccxt gave it while binance counted decimal places.
    market = {
        "symbol": "ETH/BTC", "base": "ETH", "quote": "BTC", "taker": 0.00075, "maker": 0.0005,
        "precision": {"amount": 3, "price": 6},
        "limits": {"amount": {"min": 0.001, "max": 100000.0}, "cost": {"min": 0.0001}},
    }  # fmt: skip
    instrument = Instrument.from_ccxt_market(market, precision_mode=ccxt_precision.DECIMAL_PLACES)
    assert instrument == Instrument(
        "ETH/BTC", "ETH", "BTC", tick_size=D("0.000001"), lot_size=D("0.001"),
        min_quantity=D("0.001"), min_notional=D("0.0001"), taker_fee=D("0.00075"),
        maker_fee=D("0.0005"),
    )  # fmt: skip
    assert instrument.to_ticks(D("0.052731")) == 52_731
    market["precision"] = {"amount": 8.0, "price": 0}
    instrument = Instrument.from_ccxt_market(market, precision_mode=ccxt_precision.DECIMAL_PLACES)
    assert (instrument.tick_size, instrument.lot_size) == (D(1), D("1E-8"))


def test_from_ccxt_missing_limits_and_fees() -> None:
    market = {"symbol": "X/Y", "base": "X", "quote": "Y",
              "precision": {"amount": 1, "price": "0.5"},
              "limits": {"amount": {"min": None}, "cost": {"min": None}}}  # fmt: skip
    instrument = Instrument.from_ccxt_market(market, precision_mode=ccxt_precision.TICK_SIZE)
    assert (instrument.tick_size, instrument.lot_size) == (D("0.5"), D(1))
    assert (instrument.min_quantity, instrument.min_notional) == (D(1), D(0))
    assert instrument.taker_fee == instrument.maker_fee == D("0.001")


@pytest.mark.parametrize(
    ("precision", "mode", "field"),
    [
        ({"amount": 8, "price": 5}, ccxt_precision.SIGNIFICANT_DIGITS, "precision_mode"),
        ({"amount": 8, "price": 5}, 9, "precision_mode"),
        ({"amount": 8, "price": None}, ccxt_precision.DECIMAL_PLACES, "precision.price"),
        ({"amount": 2.5, "price": 2}, ccxt_precision.DECIMAL_PLACES, "precision.amount"),
        ({"amount": True, "price": 0.1}, ccxt_precision.TICK_SIZE, "precision.amount"),
        ({"amount": "x", "price": 0.1}, ccxt_precision.TICK_SIZE, "precision.amount"),
        ({"amount": float("inf"), "price": 0.1}, ccxt_precision.TICK_SIZE, "precision.amount"),
    ],
)
def test_from_ccxt_refuses(precision: dict[str, object], mode: int, field: str) -> None:
    market = {"symbol": "X/Y", "base": "X", "quote": "Y", "precision": precision}
    with pytest.raises(DomainError) as info:
        Instrument.from_ccxt_market(market, precision_mode=mode)
    assert info.value.field == field
