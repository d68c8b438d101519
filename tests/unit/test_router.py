"""The smart router: the best average price for the whole quantity, net of taker fee."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cryptodesk.trading.errors import OrderRejected
from cryptodesk.trading.router import Quote, average_price, best_venue, quotes

D = Decimal
ASKS = {
    # best top of book, but thin: 1 @ 100 then 1 @ 110 -> 105 for 2
    "binance": [(D("110"), D("5")), (D("100"), D("1"))],
    "kraken": [(D("104"), D("2"))],  # 104 for 2, but a 0.26% fee -> 104.2704
    "coinbase": [(D("104.1"), D("3"))],  # 104.1 with 0.1% -> 104.2041
}
FEES = {"binance": D("0.001"), "kraken": D("0.0026"), "coinbase": D("0.001")}


def test_average_price_walks_the_levels_best_first() -> None:
    assert average_price("buy", D("2"), ASKS["binance"]) == D("105")
    assert average_price("buy", D("1"), ASKS["binance"]) == D("100")
    bids = [(D("99"), D("1")), (D("101"), D("1")), (D("100"), D("1"))]
    assert average_price("sell", D("2"), bids) == D("100.5")
    assert average_price("buy", D("7"), ASKS["binance"]) is None


def test_buy_goes_where_the_whole_quantity_costs_least_after_fees() -> None:
    assert quotes("buy", D("2"), ASKS, FEES) == [
        Quote("coinbase", D("104.1"), D("104.2041")),
        Quote("kraken", D("104"), D("104.2704")),
        Quote("binance", D("105"), D("105.105")),
    ]
    assert best_venue("buy", D("2"), ASKS, FEES) == "coinbase"
    # One unit: binance's top level wins even after its fee.
    assert best_venue("buy", D("1"), ASKS, FEES) == "binance"
    # Three units: kraken cannot fill them and is no candidate.
    assert [q.venue for q in quotes("buy", D("3"), ASKS, FEES)] == ["coinbase", "binance"]


def test_sell_goes_where_it_receives_most_after_fees() -> None:
    bids = {"a": [(D("100"), D("1"))], "b": [(D("100.2"), D("1"))]}
    fees = {"a": D("0"), "b": D("0.003")}  # b nets 99.8994
    assert best_venue("sell", D("1"), bids, fees) == "a"
    assert best_venue("sell", D("1"), bids, {"a": D("0"), "b": D("0.001")}) == "b"  # 100.0998


def test_ties_go_to_the_first_venue_by_name_and_nothing_fillable_is_refused() -> None:
    same = [(D("100"), D("1"))]
    assert best_venue("buy", D("1"), {"z": same, "m": same}, {"z": D(0), "m": D(0)}) == "m"
    with pytest.raises(OrderRejected) as refused:
        best_venue("buy", D("10"), ASKS, FEES)
    assert (refused.value.rule, refused.value.field) == ("no_liquidity", "quantity")
    with pytest.raises(ValueError, match="no taker fee for venue 'kraken'"):
        best_venue("buy", D("1"), ASKS, {"binance": D(0), "coinbase": D(0)})
