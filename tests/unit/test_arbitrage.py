"""Cross-exchange arbitrage: the best pair after taker fees, worked by hand."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from pydantic import ValidationError

from cryptodesk.analytics.arbitrage import (
    ArbitrageOpportunity,
    Quote,
    best_opportunity,
    find_opportunity,
    quote,
)
from cryptodesk.config_risk import RiskSettings

FEES = {"binance": D("0"), "kraken": D("0.002")}  # coinbase pays the default 0.001
QUOTES = [
    Quote("binance", D("99.5"), D("100"), 1_000),
    Quote("kraken", D("101"), D("101.5"), 2_000),
    Quote("coinbase", D("100.2"), D("100.4"), 3_000),
]


def test_buys_at_the_lowest_net_ask_and_sells_at_the_highest_net_bid() -> None:
    # binance -> kraken: 101 * 0.998 = 100.798 against 100 * 1.000 = 100: +0.798 %.
    # coinbase -> kraken: 100.798 / (100.4 * 1.001) - 1 = 0.296 %; binance ->
    # coinbase: 100.2 * 0.999 / 100 - 1 = 0.0998 %.
    assert best_opportunity("BTC/USDT", QUOTES, FEES) == ArbitrageOpportunity(
        symbol="BTC/USDT", buy_exchange="binance", sell_exchange="kraken",
        ask=D("100"), bid=D("101"), buy_fee=D("0"), sell_fee=D("0.002"),
        net_spread=D("0.00798"), gross_spread=D("0.01"), time=1_000,
    )  # fmt: skip


def test_fees_can_make_another_pair_the_best() -> None:
    fees = {"binance": D("0.01"), "kraken": D("0.002")}  # binance now dear to buy on
    opp = best_opportunity("BTC/USDT", QUOTES, fees)
    assert opp is not None
    assert (opp.buy_exchange, opp.sell_exchange) == ("coinbase", "kraken")
    assert opp.buy_fee == D("0.001")  # the default
    assert opp.net_spread == D("100.798") / D("100.5004") - 1
    assert str(opp.net_spread) == "0.002961182244050769947184290"
    assert opp.gross_spread == D("101") / D("100.4") - 1
    assert opp.time == 2_000


def test_one_exchange_with_both_best_sides_is_paired_with_another() -> None:
    quotes = [Quote("a", D("99.99"), D("100"), 1), Quote("b", D("98.9"), D("101"), 1)]
    opp = best_opportunity("BTC/USDT", quotes, {}, default_fee=D("0"))
    # a -> b: 98.9 / 100 - 1 = -1.1 %; b -> a: 99.99 / 101 - 1 = -1 %.
    assert opp is not None
    assert (opp.buy_exchange, opp.sell_exchange) == ("b", "a")
    assert opp.net_spread == D("-0.01")
    assert find_opportunity("BTC/USDT", quotes, {}, threshold=D("0")) is None


def test_threshold_is_strict() -> None:
    assert find_opportunity("BTC/USDT", QUOTES, FEES, threshold=D("0.00798")) is None
    found = find_opportunity("BTC/USDT", QUOTES, FEES, threshold=D("0.00797"))
    assert found is not None
    assert found.pair == ("binance", "kraken")


def test_no_pair_without_two_exchanges_offering_an_ask_and_a_bid() -> None:
    assert best_opportunity("BTC/USDT", [QUOTES[0]], FEES) is None
    only_asks = [Quote("a", None, D("100"), 1), Quote("b", None, D("99"), 1)]
    assert best_opportunity("BTC/USDT", only_asks, FEES) is None
    one_sided = [Quote("a", None, D("100"), 1), Quote("b", D("101"), None, 1)]
    opp = best_opportunity("BTC/USDT", one_sided, {}, default_fee=D("0"))
    assert opp is not None
    assert (opp.pair, opp.net_spread) == (("a", "b"), D("0.01"))


def test_the_answer_does_not_depend_on_the_order_of_quotes() -> None:
    tied = [Quote("c", D("101"), D("102"), 1), Quote("b", D("101"), D("102"), 1),
            Quote("a", D("99"), D("100"), 1)]  # fmt: skip
    first = best_opportunity("BTC/USDT", tied, {}, default_fee=D("0"))
    again = best_opportunity("BTC/USDT", list(reversed(tied)), {}, default_fee=D("0"))
    assert first == again
    assert first is not None
    assert first.pair == ("a", "b")  # ties go to the first in name order


def test_domain_floats_become_the_decimals_the_exchange_sent() -> None:
    q = quote("binance", 0.1, 64123.45, 5)
    assert (q.bid, q.ask, q.ts) == (D("0.1"), D("64123.45"), 5)
    assert quote("binance", None, None, 5) == Quote("binance", None, None, 5)


def test_risk_settings_parse_fees_and_say_what_is_wrong() -> None:
    s = RiskSettings(arbitrage_taker_fees="binance=0.001, kraken=0.0026")
    assert s.arbitrage_taker_fees == {"binance": D("0.001"), "kraken": D("0.0026")}
    assert s.arbitrage_threshold == D("0.002")
    assert RiskSettings(arbitrage_taker_fees={"kraken": "0.0026"}).arbitrage_taker_fees == {
        "kraken": D("0.0026")
    }
    breaker = s.breaker_settings()
    assert (breaker.short_window, breaker.long_window, breaker.multiple, breaker.cooldown_ms) == (
        15, 240, 3.0, 900_000,
    )  # fmt: skip
    bad = {
        "arbitrage_taker_fees": ("binance", "'binance' is not EXCHANGE=FEE"),
        "circuit_breaker_multiple": (1.0, "must be a finite number above 1"),
        "circuit_breaker_interval": ("7m", "unknown interval '7m'"),
    }
    for field, (value, message) in bad.items():
        with pytest.raises(ValidationError, match=message):
            RiskSettings.model_validate({field: value})
    with pytest.raises(ValidationError, match="fee of kraken must be in"):
        RiskSettings(arbitrage_taker_fees="kraken=1.5")
    with pytest.raises(ValidationError, match=r"short_window \(300\) must be shorter"):
        RiskSettings(circuit_breaker_short_window=300)
