"""Rebalancing proposals: worked examples in exact Decimal, bad input, properties."""

from __future__ import annotations

from decimal import Context
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptodesk.portfolio.rebalance import (
    RebalanceError,
    TradeProposal,
    propose_rebalance,
)

PRICES = {"BTC": D(50000), "ETH": D(2500), "SOL": D(100)}
LOTS = {"BTC": D("0.0001"), "ETH": D("0.001"), "SOL": D("0.01")}
W28 = Context(prec=28)  # weights are reported to 28 digits


def test_inside_every_band_proposes_nothing() -> None:
    # BTC 0.2 * 50000 = 10000, ETH 4 * 2500 = 10000, cash 20000: total 40000
    # weights 0.25 / 0.25 / 0.5 against 0.3 / 0.2 / 0.5: off by exactly 0.05, inside.
    holdings = {"BTC": D("0.2"), "ETH": D(4), "USDT": D(20000)}
    targets = {"BTC": D("0.3"), "ETH": D("0.2"), "USDT": D("0.5")}
    result = propose_rebalance(holdings, PRICES, targets)
    assert result.trades == ()
    assert result.skipped == ()
    assert result.within_tolerance is True
    assert result.weights_before == {"BTC": D("0.25"), "ETH": D("0.25"), "USDT": D("0.5")}
    assert result.weights_after == result.weights_before
    assert result.cash_after == D(20000)
    assert result.total_value == D(40000)


def test_drifted_portfolio_is_traded_back_sells_first() -> None:
    # BTC 0.6 * 50000 = 30000, ETH 2 * 2500 = 5000, SOL 50 * 100 = 5000, cash 0
    # total 40000; weights 0.75 / 0.125 / 0.125 / 0 against 0.5 / 0.25 / 0.2 / 0.05.
    # BTC +0.25, ETH -0.125, SOL -0.075 are outside; cash -0.05 is on the band.
    holdings = {"BTC": D("0.6"), "ETH": D(2), "SOL": D(50), "USDT": D(0)}
    targets = {"BTC": D("0.5"), "ETH": D("0.25"), "SOL": D("0.2"), "USDT": D("0.05")}
    result = propose_rebalance(holdings, PRICES, targets, lot_sizes=LOTS)
    # sell BTC: 30000 - 20000 = 10000 -> 0.2 BTC, fee 10; cash 0 + 10000 - 10 = 9990
    # buy ETH: 10000 - 5000 = 5000 -> 2 ETH, fee 5; buy SOL: 8000 - 5000 = 3000 -> 30 SOL, fee 3
    # buys cost 5005 + 3003 = 8008 <= 9990: no scaling; cash after 9990 - 8008 = 1982
    assert result.trades == (
        TradeProposal("BTC", "sell", D("0.2"), D(50000), D(10000), D(10)),
        TradeProposal("ETH", "buy", D(2), D(2500), D(5000), D(5)),
        TradeProposal("SOL", "buy", D(30), D(100), D(3000), D(3)),
    )
    assert result.cash_after == D(1982)
    assert result.total_value == D(40000)
    assert result.within_tolerance is False
    assert result.weights_before == {
        "BTC": D("0.75"),
        "ETH": D("0.125"),
        "SOL": D("0.125"),
        "USDT": D(0),
    }
    # after: BTC 0.4 * 50000 = 20000, ETH 4 * 2500 = 10000, SOL 80 * 100 = 8000,
    # cash 1982; total 39982 (40000 less 18 of fees)
    assert result.weights_after == {
        "BTC": W28.divide(D(20000), D(39982)),
        "ETH": W28.divide(D(10000), D(39982)),
        "SOL": W28.divide(D(8000), D(39982)),
        "USDT": W28.divide(D(1982), D(39982)),
    }
    assert result.weights_after["BTC"] == D("0.5002251012955830123555600020")


def test_buys_are_scaled_pro_rata_when_cash_is_short() -> None:
    # All cash (1000) into 50 % BTC / 50 % ETH: buys of 500 + 500 cost 1001 with fees.
    # share = 1000 / 1001 = 0.999000999...; BTC 0.01 * share = 0.00999000 -> 0.0099 at
    # lot 0.0001; ETH 0.2 * share = 0.19980019 -> 0.199 at lot 0.001.
    # BTC 0.0099 * 50000 = 495, fee 0.495; ETH 0.199 * 2500 = 497.5, fee 0.4975
    # cash after 1000 - 495.495 - 497.9975 = 6.5075
    result = propose_rebalance(
        {"USDT": D(1000)}, PRICES, {"BTC": D("0.5"), "ETH": D("0.5")}, lot_sizes=LOTS
    )
    assert result.trades == (
        TradeProposal("BTC", "buy", D("0.0099"), D(50000), D(495), D("0.495")),
        TradeProposal("ETH", "buy", D("0.199"), D(2500), D("497.5"), D("0.4975")),
    )
    assert result.cash_after == D("6.5075")
    assert result.cash_after >= 0
    # total after 495 + 497.5 + 6.5075 = 999.0075
    assert result.weights_after == {
        "BTC": W28.divide(D(495), D("999.0075")),
        "ETH": W28.divide(D("497.5"), D("999.0075")),
        "USDT": W28.divide(D("6.5075"), D("999.0075")),
    }


def test_lot_rounding_and_min_trade_skip_trades_with_reasons() -> None:
    # cash 940, BTC 0.02 * 50000 = 1000, ETH 0.024 * 2500 = 60: total 2000
    # weights 0.47 / 0.5 / 0.03 / SOL 0 against 0.44 / 0.4 / 0.1 / 0.06 (no fees here)
    # BTC: sell 1000 - 800 = 200 -> 0.004 BTC (lot 0.001), notional 200 >= 150: kept
    # ETH: buy 200 - 60 = 140 -> 0.056 ETH, lot 0.1: rounds to 0, skipped
    # SOL: buy 120 -> 1.2 SOL, lot 1: 1 SOL, notional 100 < 150: skipped
    result = propose_rebalance(
        {"USDT": D(940), "BTC": D("0.02"), "ETH": D("0.024")},
        PRICES,
        {"BTC": D("0.4"), "ETH": D("0.1"), "SOL": D("0.06"), "USDT": D("0.44")},
        lot_sizes={"BTC": D("0.001"), "ETH": D("0.1"), "SOL": D(1)},
        min_trade=D(150),
        fee_rate=D(0),
    )
    assert result.trades == (TradeProposal("BTC", "sell", D("0.004"), D(50000), D(200), D(0)),)
    assert result.skipped == (
        ("ETH", "buy: rounds to zero at lot size 0.1"),
        ("SOL", "buy: notional 100 below min_trade 150"),
    )
    # cash 940 + 200 = 1140; BTC 0.016 * 50000 = 800; total still 2000
    assert result.cash_after == D(1140)
    assert result.weights_after == {
        "BTC": D("0.4"),
        "ETH": D("0.03"),
        "SOL": D(0),
        "USDT": D("0.57"),
    }


def test_only_cash_outside_its_band_buys_the_assets_under_target() -> None:
    # cash 600, BTC 0.004 * 50000 = 200, ETH 0.08 * 2500 = 200: total 1000
    # weights 0.6 / 0.2 / 0.2 against 0.4 / 0.3 / 0.3 with a 0.1 band: only cash
    # (+0.2) is outside; its surplus of 200 buys BTC and ETH back to 300 each.
    result = propose_rebalance(
        {"USDT": D(600), "BTC": D("0.004"), "ETH": D("0.08")},
        PRICES,
        {"BTC": D("0.3"), "ETH": D("0.3"), "USDT": D("0.4")},
        tolerance=D("0.1"),
        fee_rate=D(0),
    )
    assert result.trades == (
        TradeProposal("BTC", "buy", D("0.002"), D(50000), D(100), D(0)),
        TradeProposal("ETH", "buy", D("0.04"), D(2500), D(100), D(0)),
    )
    assert result.weights_after == {"BTC": D("0.3"), "ETH": D("0.3"), "USDT": D("0.4")}


def test_only_cash_short_sells_the_same_share_of_each_excess() -> None:
    # cash 100, BTC 0.009 * 50000 = 450, ETH 0.18 * 2500 = 450: total 1000
    # weights 0.1 / 0.45 / 0.45 against 0.3 / 0.35 / 0.35 with a 0.1 band: only cash
    # (-0.2) is outside. Shortfall 200; excesses 100 + 100 after 1 % fees = 198, so
    # each sell is capped at the whole excess: 100 -> 0.002 BTC and 0.04 ETH, fees 1 + 1.
    # cash 100 + 99 + 99 = 298; total 998
    result = propose_rebalance(
        {"USDT": D(100), "BTC": D("0.009"), "ETH": D("0.18")},
        PRICES,
        {"BTC": D("0.35"), "ETH": D("0.35"), "USDT": D("0.3")},
        tolerance=D("0.1"),
        fee_rate=D("0.01"),
    )
    assert result.trades == (
        TradeProposal("BTC", "sell", D("0.002"), D(50000), D(100), D(1)),
        TradeProposal("ETH", "sell", D("0.04"), D(2500), D(100), D(1)),
    )
    assert result.cash_after == D(298)


def test_target_zero_sells_down_to_the_lot() -> None:
    # DOGE 1234.5678 * 0.1 = 123.45678 of 1123.45678; target 0 -> sell 1234 at lot 1,
    # notional 123.4, fee 0.1234; 0.5678 DOGE of dust stays.
    result = propose_rebalance(
        {"DOGE": D("1234.5678"), "USDT": D(1000)},
        {"DOGE": D("0.1")},
        {"USDT": D(1)},
        lot_sizes={"DOGE": D(1)},
    )
    assert result.trades == (
        TradeProposal("DOGE", "sell", D(1234), D("0.1"), D("123.4"), D("0.1234")),
    )
    assert result.cash_after == D("1123.2766")


@pytest.mark.parametrize(
    ("holdings", "prices", "targets", "message"),
    [
        ({"BTC": D(-1), "USDT": D(10)}, PRICES, {"USDT": D(1)}, "holding of BTC"),
        ({"USDT": D(10)}, {"BTC": D(0)}, {"BTC": D(1)}, "price of BTC must be positive"),
        ({"USDT": D(10)}, PRICES, {"DOGE": D(1)}, "no price for target asset DOGE"),
        ({"XRP": D(1), "USDT": D(10)}, PRICES, {"USDT": D(1)}, "no price for held asset XRP"),
        ({"USDT": D(10)}, PRICES, {"BTC": D("0.5"), "USDT": D("0.49")}, "sum to 1"),
        ({"USDT": D(10)}, PRICES, {"BTC": D("1.1"), "USDT": D("-0.1")}, "target of USDT"),
        ({"USDT": D(10)}, {"USDT": D(2)}, {"USDT": D(1)}, "quote currency USDT must be 1"),
        ({"USDT": D(0)}, PRICES, {"USDT": D(1)}, "worth nothing"),
        ({"USDT": D("NaN")}, PRICES, {"USDT": D(1)}, "finite"),
    ],
)
def test_bad_input_is_rejected(holdings, prices, targets, message: str) -> None:
    with pytest.raises(RebalanceError, match=message):
        propose_rebalance(holdings, prices, targets)


def test_bad_options_are_rejected() -> None:
    args = ({"USDT": D(10)}, PRICES, {"USDT": D(1)})
    with pytest.raises(RebalanceError, match="fee_rate must be below 1"):
        propose_rebalance(*args, fee_rate=D(1))
    with pytest.raises(RebalanceError, match="lot size of BTC must be positive"):
        propose_rebalance(*args, lot_sizes={"BTC": D(0)})
    with pytest.raises(RebalanceError, match="tolerance"):
        propose_rebalance(*args, tolerance=D("-0.1"))
    assert issubclass(RebalanceError, ValueError)


def test_targets_within_1e_9_of_one_are_accepted() -> None:
    third = D("0.3333333333")  # three of them sum to 0.9999999999
    result = propose_rebalance(
        {"USDT": D(30)}, PRICES, {"BTC": third, "ETH": third, "USDT": third}, min_trade=D(0)
    )
    assert result.within_tolerance is False


ASSETS = ("BTC", "ETH", "SOL")


def near(draw, target: D, size: int, spread: int) -> D:
    """About ``target * size``, off by up to ``spread`` per mille of the size."""
    return target * size + D(draw(st.integers(-spread, spread))) * size / 1000


@st.composite
def portfolios(draw):
    prices = {
        "BTC": D(draw(st.integers(1_000, 100_000))),
        "ETH": D(draw(st.integers(10_000, 500_000))).scaleb(-2),
        "SOL": D(draw(st.integers(100, 50_000))).scaleb(-2),
    }
    parts = draw(st.lists(st.integers(0, 20), min_size=4, max_size=4).filter(any))
    targets = {
        a: W28.divide(D(p), D(sum(parts))) for a, p in zip((*ASSETS, "USDT"), parts, strict=True)
    }
    if draw(st.booleans()):  # anywhere
        holdings = {a: D(draw(st.integers(0, 1_000_000))).scaleb(-4) for a in ASSETS}
        holdings["USDT"] = D(draw(st.integers(0, 10_000_000))).scaleb(-2)
    else:  # assets near their targets, cash possibly far off
        size = draw(st.integers(1_000, 1_000_000))
        holdings = {
            a: max(near(draw, targets[a], size, 60), D(0)).quantize(D("1e-2")) / prices[a]
            for a in ASSETS
        }
        holdings = {a: q.quantize(D("1e-8")) for a, q in holdings.items()}
        holdings["USDT"] = max(near(draw, targets["USDT"], size, 300), D(0)).quantize(D("1e-2"))
    lots = {
        a: draw(st.sampled_from([D("0.0001"), D("0.001"), D("0.01"), D("0.1")])) for a in ASSETS
    }
    options = {
        "lot_sizes": lots,
        "fee_rate": draw(st.sampled_from([D(0), D("0.001"), D("0.0025")])),
        "min_trade": draw(st.sampled_from([D(0), D(1), D(10)])),
        "tolerance": draw(st.sampled_from([D("0.02"), D("0.05"), D("0.1")])),
    }
    return holdings, prices, targets, options


@settings(max_examples=300, deadline=None)
@given(portfolios())
def test_properties_of_every_proposal(case) -> None:
    holdings, prices, targets, options = case
    if sum(holdings[a] * prices[a] for a in ASSETS) + holdings["USDT"] == 0:
        return
    result = propose_rebalance(holdings, prices, targets, **options)

    # Executing the proposal, sells first, never needs more cash than there is.
    held = dict(holdings)
    for trade in result.trades:
        lot = options["lot_sizes"][trade.asset]
        assert trade.quantity > 0
        assert trade.quantity % lot == 0
        assert trade.notional == trade.quantity * trade.price
        assert trade.fee == trade.notional * options["fee_rate"]
        assert trade.notional >= options["min_trade"]
        if trade.side == "sell":
            held[trade.asset] -= trade.quantity
            held["USDT"] += trade.notional - trade.fee
        else:
            held[trade.asset] += trade.quantity
            held["USDT"] -= trade.notional + trade.fee
        assert held[trade.asset] >= 0
        assert held["USDT"] >= 0
    assert held["USDT"] == result.cash_after
    assert [t.side for t in result.trades] == sorted(t.side for t in result.trades)[::-1]

    value = {a: held[a] * prices[a] for a in ASSETS} | {"USDT": held["USDT"]}
    total_after = sum(value.values())
    for asset, amount in value.items():
        assert result.weights_after[asset] == W28.divide(amount, total_after)

    # Each traded asset that was outside its band ends closer to its target; with
    # only cash outside, cash ends closer to its target.
    before, after = result.weights_before, result.weights_after
    band = options["tolerance"]
    outside = {a for a in ASSETS if abs(before[a] - targets[a]) > band}
    for asset in {t.asset for t in result.trades} & outside:
        assert abs(after[asset] - targets[asset]) < abs(before[asset] - targets[asset])
    if result.trades and not outside:
        assert abs(after["USDT"] - targets["USDT"]) < abs(before["USDT"] - targets["USDT"])
    if result.within_tolerance:
        assert result.trades == ()
        assert all(abs(before[a] - targets[a]) <= band for a in before)
