"""Ledger entries -> tax events (the conventions), and how transfers and withdrawals move lots."""

from decimal import Decimal as D

import pytest

from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.timeutil import parse_time
from cryptodesk.portfolio.cost_basis import compute
from cryptodesk.portfolio.ledger import LedgerEntry
from cryptodesk.portfolio.tax_events import Acquire, Dispose, Move, Remove, to_events
from cryptodesk.portfolio.tax_lots import IncomeLine, RemovedLot

T0 = parse_time("2024-03-01T12:00:00Z")
DAY = 86_400_000


def entry(eid: str, day: float, kind: str, asset: str, amount: str, account: str = "ex",
          **kw: object) -> LedgerEntry:  # fmt: skip
    return LedgerEntry(eid, T0 + int(day * DAY), kind, account, asset, D(amount), **kw)  # type: ignore[arg-type]


def usd_buy(eid: str, day: float, amount: str, usd: str, account: str = "ex") -> LedgerEntry:
    return entry(eid, day, "buy", "BTC", amount, account, counter_asset="USD",
                 counter_amount=D(usd))  # fmt: skip


def test_buy_fee_in_currency_is_added_to_cost() -> None:
    e = entry("b", 0, "buy", "BTC", "1", counter_asset="USD", counter_amount=D("10000"),
              fee_asset="USD", fee_amount=D("12.5"))  # fmt: skip
    assert to_events([e], "USD").events == [
        Acquire("b", T0, "ex", "BTC", D(1), D("10012.5"), "buy")
    ]


def test_sell_fee_in_the_asset_sold_is_a_disposal_at_the_trade_price() -> None:
    e = entry("s", 0, "sell", "BTC", "1", counter_asset="USD", counter_amount=D("30000"),
              fee_asset="BTC", fee_amount=D("0.01"))  # fmt: skip
    out = to_events([e], "USD")
    assert out.events == [
        Dispose("s", T0, "ex", "BTC", D(1), D("29700"), "sell"),
        Dispose("s:fee", T0, "ex", "BTC", D("0.01"), D("300"), "fee"),
    ]


def test_fee_in_a_third_asset_uses_fee_value_or_warns() -> None:
    valued = entry("b", 0, "buy", "BTC", "1", counter_asset="USD", counter_amount=D("10000"),
                   fee_asset="BNB", fee_amount=D("0.02"), fee_value=D("6"))  # fmt: skip
    assert to_events([valued], "USD").events == [
        Dispose("b:fee", T0, "ex", "BNB", D("0.02"), D("6"), "fee"),
        Acquire("b", T0, "ex", "BTC", D(1), D("10006"), "buy"),
    ]
    bare = entry("b", 0, "buy", "BTC", "1", counter_asset="USD", counter_amount=D("10000"),
                 fee_asset="BNB", fee_amount=D("0.02"))  # fmt: skip
    out = to_events([bare], "USD")
    assert out.events[0] == Dispose("b:fee", T0, "ex", "BNB", D("0.02"), D(0), "fee")
    assert out.warnings == ["fee of entry b (0.02 BNB) has no fee_value: "
                            "it is disposed of for zero proceeds"]  # fmt: skip


def test_crypto_to_crypto_needs_a_value() -> None:
    swap = entry("x", 0, "sell", "ETH", "2", counter_asset="BTC", counter_amount=D("0.1"),
                 value=D("6000"))  # fmt: skip
    assert to_events([swap], "USD").events == [
        Dispose("x", T0, "ex", "ETH", D(2), D(6000), "trade"),
        Acquire("x", T0, "ex", "BTC", D("0.1"), D(6000), "trade"),
    ]
    no_value = entry("x", 0, "sell", "ETH", "2", counter_asset="BTC", counter_amount=D("0.1"))
    with pytest.raises(DomainError, match="entry x: value is required for a crypto-to-crypto"):
        to_events([no_value], "USD")


def test_fee_not_less_than_the_amount_received_is_refused() -> None:
    e = entry("b", 0, "buy", "BTC", "1", counter_asset="USD", counter_amount=D("10"),
              fee_asset="BTC", fee_amount=D("1"))  # fmt: skip
    with pytest.raises(DomainError, match="fee_amount is not less than the amount received"):
        to_events([e], "USD")


def test_transfer_deposit_withdrawal_income_spend_and_fee() -> None:
    entries = [
        entry("t", 0, "transfer", "BTC", "1", to_account="cold", fee_asset="BTC",
              fee_amount=D("0.0001"), fee_value=D("3")),
        entry("tu", 0, "transfer", "USD", "100", to_account="bank"),
        entry("d", 1, "deposit", "ETH", "2"),
        entry("du", 1, "deposit", "USD", "500"),
        entry("w", 2, "withdrawal", "ETH", "1", lot_ids=(("d", D(1)),)),
        entry("i", 3, "income", "SOL", "5", value=D("100"), subkind="staking"),
        entry("iu", 3, "income", "USD", "7", subkind="interest"),
        entry("sp", 4, "spend", "BTC", "0.01", value=D("300")),
        entry("f", 5, "fee", "ETH", "0.001"),
    ]  # fmt: skip
    out = to_events(entries, "USD")
    t = T0
    assert out.events == [
        Move("t", t, "ex", "cold", "BTC", D(1)),
        Dispose("t:fee", t, "ex", "BTC", D("0.0001"), D(3), "transfer-fee"),
        Acquire("d", t + DAY, "ex", "ETH", D(2), D(0), "deposit"),
        Remove("w", t + 2 * DAY, "ex", "ETH", D(1), (("d", D(1)),)),
        Acquire("i", t + 3 * DAY, "ex", "SOL", D(5), D(100), "income"),
        Dispose("sp", t + 4 * DAY, "ex", "BTC", D("0.01"), D(300), "spend"),
        Dispose("f", t + 5 * DAY, "ex", "ETH", D("0.001"), D(0), "fee"),
    ]
    assert out.income == [
        IncomeLine("i", "SOL", D(5), t + 3 * DAY, D(100), "staking", "ex"),
        IncomeLine("iu", "USD", D(7), t + 3 * DAY, D(7), "interest", "ex"),
    ]
    assert out.warnings == [
        "deposit d of 2 ETH has no value: it enters at zero cost basis",
        "fee f of 0.001 ETH has no value: it is disposed of for zero proceeds",
    ]


@pytest.mark.parametrize(
    ("kind", "why"), [("income", "income"), ("spend", "a spend")]
)  # fmt: skip
def test_income_and_spend_need_a_value(kind: str, why: str) -> None:
    e = entry("e", 0, kind, "BTC", "1", subkind="mining" if kind == "income" else None)
    with pytest.raises(DomainError, match=f"entry e: value is required for {why}"):
        to_events([e], "USD")


def test_time_order_is_stable_and_reversals_drop_out() -> None:
    entries = [
        usd_buy("late", 2, "1", "3"),
        usd_buy("first", 0, "1", "1"),
        usd_buy("second", 0, "1", "2"),
        usd_buy("oops", 1, "5", "5"),
        entry("fix", 3, "buy", "BTC", "5", counter_asset="USD", counter_amount=D(5),
              reverses="oops"),
    ]  # fmt: skip
    assert [e.entry_id for e in to_events(entries, "USD").events] == ["first", "second", "late"]


# How the engine applies Move and Remove.


def test_withdrawal_removes_lots_without_a_gain() -> None:
    entries = [usd_buy("a", 0, "1", "100"), usd_buy("b", 1, "1", "300"),
               entry("w", 2, "withdrawal", "BTC", "1.5")]  # fmt: skip
    r = compute(entries, method="fifo")
    assert r.disposals == []
    assert r.removals == [
        RemovedLot("w", "a", "ex", "BTC", D(1), D(100), T0, T0 + 2 * DAY),
        RemovedLot("w", "b", "ex", "BTC", D("0.5"), D(150), T0 + DAY, T0 + 2 * DAY),
    ]
    assert [(x.lot_id, x.amount, x.cost_basis) for x in r.lots] == [("b", D("0.5"), D(150))]


def test_moving_or_removing_more_than_held_moves_what_is_held_and_warns() -> None:
    entries = [
        usd_buy("a", 0, "1", "100", account="x"),
        entry("t", 1, "transfer", "BTC", "1.5", account="x", to_account="y"),
        entry("w", 2, "withdrawal", "BTC", "0.25", account="x"),
        entry("s", 3, "sell", "BTC", "1.5", account="y", counter_asset="USD",
              counter_amount=D(300)),
    ]  # fmt: skip
    r = compute(entries, method="fifo", per_wallet=True)
    assert r.warnings == [
        "transfer t moves 1.5 BTC from x, which holds 1: 0.5 is not moved",
        "withdrawal w of 0.25 BTC from x exceeds the 0 held: 0.25 is not removed",
    ]
    assert [(x.lot_id, x.amount, x.proceeds, x.cost_basis) for x in r.disposals] == [
        ("a", D(1), D(200), D(100))
    ]
    assert [(m.amount, m.proceeds) for m in r.missing_acquisitions] == [(D("0.5"), D(100))]
    universal = compute(entries[:2], method="fifo")
    assert universal.warnings == ["transfer t moves 1.5 BTC but only 1 is held"]


@pytest.mark.parametrize(("method", "first"), [("lifo", "late"), ("fifo", "early"),
                                               ("hifo", "early")])  # fmt: skip
def test_a_moved_lot_keeps_its_place_in_acquisition_order(method: str, first: str) -> None:
    entries = [
        usd_buy("early", 0, "1", "500", account="x"),
        usd_buy("late", 5, "1", "200", account="y"),
        entry("t", 6, "transfer", "BTC", "1", account="x", to_account="y"),
        entry("s", 7, "sell", "BTC", "1", account="y", counter_asset="USD",
              counter_amount=D(900)),
    ]  # fmt: skip
    r = compute(entries, method=method, per_wallet=True)
    assert [x.lot_id for x in r.disposals] == [first]
    assert [x.account for x in r.lots] == ["y"]


def test_pieces_of_one_lot_meet_again_as_one_lot() -> None:
    entries = [
        usd_buy("a", 0, "1", "100", account="x"),
        entry("t1", 1, "transfer", "BTC", "0.4", account="x", to_account="y"),
        entry("t2", 2, "transfer", "BTC", "0.4", account="y", to_account="x"),
    ]
    for method in ("fifo", "lifo", "hifo", "specific", "average"):
        r = compute(entries, method=method, per_wallet=True)
        assert [(x.account, x.lot_id, x.amount, x.cost_basis, x.acquired) for x in r.lots] == [
            ("x", "a", D(1), D(100), T0)
        ], method


def test_specific_transfer_moves_the_named_lot() -> None:
    entries = [
        usd_buy("a", 0, "1", "100", account="x"),
        usd_buy("b", 1, "1", "300", account="x"),
        entry("t", 2, "transfer", "BTC", "1", account="x", to_account="y", lot_ids=(("b", D(1)),)),
    ]
    r = compute(entries, method="specific", per_wallet=True)
    assert [(x.account, x.lot_id) for x in r.lots] == [("x", "a"), ("y", "b")]


def test_average_per_wallet_moves_the_average_cost() -> None:
    entries = [
        usd_buy("a", 0, "1", "10000", account="x"),
        usd_buy("b", 1, "1", "20000", account="x"),
        entry("t", 2, "transfer", "BTC", "1", account="x", to_account="y"),
        entry("s", 3, "sell", "BTC", "1", account="y", counter_asset="USD",
              counter_amount=D(30000)),
    ]  # fmt: skip
    r = compute(entries, method="average", per_wallet=True)
    assert [(x.lot_id, x.acquired, x.cost_basis, x.gain) for x in r.disposals] == [
        ("average", T0, D(15000), D(15000))
    ]
    assert [(h.account, h.amount, h.cost_basis) for h in r.holdings] == [("x", D(1), D(15000))]


def test_reversal_of_an_unknown_or_already_reversed_entry_is_refused() -> None:
    b = usd_buy("b", 0, "1", "1")
    fix = entry("fix", 1, "buy", "BTC", "1", counter_asset="USD", counter_amount=D(1),
                reverses="b")  # fmt: skip
    again = entry("again", 2, "buy", "BTC", "1", counter_asset="USD", counter_amount=D(1),
                  reverses="b")  # fmt: skip
    with pytest.raises(DomainError, match="entry fix reverses unknown entry b"):
        to_events([fix], "USD")
    with pytest.raises(DomainError, match="entry b is reversed twice"):
        to_events([b, fix, again], "USD")
    assert to_events([b, fix], "USD").events == []
