"""Cost basis methods on worked examples whose answers follow from the definitions.

The common case: buy 1 BTC at 10,000, 1 at 20,000, 1 at 15,000, then sell
1.5 BTC for 45,000 (30,000 a coin). Each method's lines are worked out by
hand in the test; every money value is an exact Decimal.
"""

from decimal import Decimal as D

import pytest

from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.timeutil import parse_time
from cryptodesk.portfolio.cost_basis import compute
from cryptodesk.portfolio.ledger import LedgerEntry
from cryptodesk.portfolio.tax_lots import DisposalLine, Holding, MissingAcquisition

T0 = parse_time("2024-01-01T00:00:00Z")
DAY = 86_400_000


def at(day: float) -> int:
    return T0 + int(day * DAY)


def buy(eid: str, day: float, amount: str, usd: str, account: str = "ex", asset: str = "BTC",
        **kw: object) -> LedgerEntry:  # fmt: skip
    return LedgerEntry(eid, at(day), "buy", account, asset, D(amount), "USD", D(usd), **kw)  # type: ignore[arg-type]


def sell(eid: str, day: float, amount: str, usd: str, account: str = "ex", asset: str = "BTC",
         **kw: object) -> LedgerEntry:  # fmt: skip
    return LedgerEntry(eid, at(day), "sell", account, asset, D(amount), "USD", D(usd), **kw)  # type: ignore[arg-type]


THREE_BUYS = [
    buy("b1", 0, "1", "10000"),
    buy("b2", 1, "1", "20000"),
    buy("b3", 2, "1", "15000"),
]
SALE = sell("s1", 10, "1.5", "45000")


def lines(result: object) -> list[tuple[str, D, D, D, D]]:
    """(lot, amount, proceeds, cost, gain) of every disposal line."""
    return [
        (x.lot_id, x.amount, x.proceeds, x.cost_basis, x.gain)
        for x in result.disposals  # type: ignore[attr-defined]
    ]


def open_lots(result: object) -> list[tuple[str, D, D]]:
    return [(x.lot_id, x.amount, x.cost_basis) for x in result.lots]  # type: ignore[attr-defined]


def test_fifo_uses_the_oldest_lots_first() -> None:
    r = compute([*THREE_BUYS, SALE], method="fifo")
    assert lines(r) == [
        ("b1", D("1"), D("30000"), D("10000"), D("20000")),
        ("b2", D("0.5"), D("15000"), D("10000"), D("5000")),
    ]
    assert open_lots(r) == [("b2", D("0.5"), D("10000")), ("b3", D("1"), D("15000"))]
    assert r.holdings == [Holding("BTC", D("1.5"), D("25000"))]
    line = r.disposals[0]
    assert line == DisposalLine("s1", "BTC", D("1"), at(0), at(10), D("30000"), D("10000"),
                                D("20000"), "short", "b1", "ex", "sell")  # fmt: skip


def test_lifo_uses_the_newest_lots_first() -> None:
    r = compute([*THREE_BUYS, SALE], method="lifo")
    assert lines(r) == [
        ("b3", D("1"), D("30000"), D("15000"), D("15000")),
        ("b2", D("0.5"), D("15000"), D("10000"), D("5000")),
    ]
    assert open_lots(r) == [("b1", D("1"), D("10000")), ("b2", D("0.5"), D("10000"))]


def test_hifo_uses_the_highest_unit_cost_first() -> None:
    r = compute([*THREE_BUYS, SALE], method="hifo")
    assert lines(r) == [
        ("b2", D("1"), D("30000"), D("20000"), D("10000")),
        ("b3", D("0.5"), D("15000"), D("7500"), D("7500")),
    ]
    assert open_lots(r) == [("b1", D("1"), D("10000")), ("b3", D("0.5"), D("7500"))]


def test_hifo_ties_go_oldest_first() -> None:
    entries = [buy("a", 0, "1", "100"), buy("b", 1, "2", "200"), sell("s", 2, "1", "150")]
    assert lines(compute(entries, method="hifo")) == [("a", D(1), D(150), D(100), D(50))]


def test_average_cost_pools_every_unit() -> None:
    r = compute([*THREE_BUYS, SALE], method="average")
    # 3 BTC cost 45,000: 15,000 a coin; 1.5 BTC cost 22,500. Dated by the
    # oldest layer still in the pool (b1); b2 and b3 stay in the pool.
    assert lines(r) == [("average", D("1.5"), D("45000"), D("22500"), D("22500"))]
    assert r.disposals[0].acquired == at(0)
    assert open_lots(r) == [("b2", D("0.5"), D("7500")), ("b3", D("1"), D("15000"))]
    assert r.holdings == [Holding("BTC", D("1.5"), D("22500"))]


def test_average_splits_a_disposal_by_holding_period() -> None:
    entries = [
        buy("old", 0, "1", "10000"),
        buy("new", 400, "1", "20000"),
        sell("s", 500, "1.5", "45000"),
    ]
    r = compute(entries, method="average")
    # Average 15,000 a coin; the first coin (bought on day 0) is long term,
    # the next half (day 400) short term.
    assert [(x.term, x.acquired, x.amount, x.proceeds, x.cost_basis, x.gain)
            for x in r.disposals] == [
        ("long", at(0), D("1"), D("30000"), D("15000"), D("15000")),
        ("short", at(400), D("0.5"), D("15000"), D("7500"), D("7500")),
    ]  # fmt: skip


def test_specific_identification_uses_the_named_lots() -> None:
    sale = sell("s1", 10, "1.5", "45000", lot_ids=(("b3", D("1")), ("b1", D("0.5"))))
    r = compute([*THREE_BUYS, sale], method="specific")
    assert lines(r) == [
        ("b3", D("1"), D("30000"), D("15000"), D("15000")),
        ("b1", D("0.5"), D("15000"), D("5000"), D("10000")),
    ]
    assert open_lots(r) == [("b1", D("0.5"), D("5000")), ("b2", D("1"), D("20000"))]
    assert r.warnings == []


def test_specific_without_lot_ids_falls_back_to_fifo_and_says_so() -> None:
    r = compute([*THREE_BUYS, SALE], method="specific")
    assert lines(r) == lines(compute([*THREE_BUYS, SALE], method="fifo"))
    assert r.warnings == [
        "1 disposals, transfers or withdrawals name no lot_ids: matched first in, first out"
    ]


def test_lot_ids_are_ignored_by_other_methods_with_a_warning() -> None:
    sale = sell("s1", 10, "1.5", "45000", lot_ids=(("b3", D("1")), ("b1", D("0.5"))))
    r = compute([*THREE_BUYS, sale], method="fifo")
    assert [x.lot_id for x in r.disposals] == ["b1", "b2"]
    assert r.warnings == ["1 entries name lot_ids, which only the specific method uses: "
                          "fifo ignored them"]  # fmt: skip


@pytest.mark.parametrize(
    ("lot_ids", "message"),
    [
        ((("nope", "1"),), "entry s1: lot nope is not an earlier acquisition"),
        ((("later", "1"),), "entry s1: lot later is not an earlier acquisition"),
        ((("eth", "1"),), "entry s1: lot eth is ETH, not BTC"),
        ((("b1", "1.5"),), "entry s1: lot b1 has 1 left, 1.5 asked for"),
        ((("b1", "0.5"), ("b1", "1")), "entry s1: lot b1 has 1 left, 1.5 asked for"),
    ],
)
def test_specific_rejects_a_lot_it_cannot_use(lot_ids: tuple[tuple[str, str], ...],
                                              message: str) -> None:  # fmt: skip
    ids = tuple((lot, D(amount)) for lot, amount in lot_ids)
    entries = [
        *THREE_BUYS,
        buy("eth", 3, "1", "100", asset="ETH"),
        sell("s1", 10, str(sum(a for _, a in ids)), "45000", lot_ids=ids),
        buy("later", 11, "1", "100"),
    ]
    with pytest.raises(DomainError, match=f"^{message}$") as info:
        compute(entries, method="specific")
    assert info.value.field == "lot_ids"


def test_specific_names_the_account_holding_a_lot_per_wallet() -> None:
    entries = [
        buy("b1", 0, "1", "10000", account="a"),
        sell("s1", 1, "1", "30000", account="b", lot_ids=(("b1", D("1")),)),
    ]
    with pytest.raises(DomainError, match="^entry s1: lot b1 is not held in account b "
                       r"\(it is held in a\)$"):  # fmt: skip
        compute(entries, method="specific", per_wallet=True)
    # Universally the lot is simply BTC of the same person.
    assert lines(compute(entries, method="specific")) == [
        ("b1", D(1), D(30000), D(10000), D(20000))
    ]


def test_a_lot_used_up_by_specific_identification_cannot_be_named_again() -> None:
    entries = [
        *THREE_BUYS,
        sell("s1", 10, "1", "30000", lot_ids=(("b2", D("1")),)),
        sell("s2", 11, "1", "30000", lot_ids=(("b2", D("1")),)),
    ]
    with pytest.raises(DomainError, match=r"^entry s2: lot b2 has 0 left, 1 asked for$"):
        compute(entries, method="specific")


def test_fees_add_to_cost_and_come_off_proceeds() -> None:
    entries = [
        buy("b", 0, "1", "10000", fee_asset="USD", fee_amount=D("10")),
        sell("s", 5, "1", "30000", fee_asset="USD", fee_amount=D("30")),
    ]
    assert lines(compute(entries, method="fifo")) == [
        ("b", D(1), D("29970"), D("10010"), D("19960"))
    ]


def test_fee_paid_in_the_asset_bought_means_fewer_units() -> None:
    entries = [buy("b", 0, "1", "10000", fee_asset="BTC", fee_amount=D("0.001"))]
    r = compute(entries, method="fifo")
    assert open_lots(r) == [("b", D("0.999"), D("10000"))]


def test_crypto_to_crypto_trade_is_a_disposal_and_an_acquisition() -> None:
    entries = [
        buy("b", 0, "1", "10000"),
        LedgerEntry("swap", at(5), "buy", "ex", "ETH", D("10"), "BTC", D("0.5"), value=D("12000")),
        sell("s", 9, "10", "15000", asset="ETH"),
    ]
    r = compute(entries, method="fifo")
    assert [(x.disposal_id, x.asset, x.kind, x.lot_id, x.amount, x.proceeds, x.cost_basis,
             x.gain) for x in r.disposals] == [
        ("swap", "BTC", "trade", "b", D("0.5"), D("12000"), D("5000"), D("7000")),
        ("s", "ETH", "sell", "swap", D("10"), D("15000"), D("12000"), D("3000")),
    ]  # fmt: skip
    assert r.holdings == [Holding("BTC", D("0.5"), D("5000"))]


TRANSFER = [
    buy("b", 0, "1", "10000", account="exchange"),
    LedgerEntry("t", at(3), "transfer", "exchange", "BTC", D("0.5"), to_account="wallet",
                fee_asset="BTC", fee_amount=D("0.001"), fee_value=D("30")),
]  # fmt: skip


def test_transfer_per_wallet_moves_lots_with_their_date_and_disposes_of_the_fee() -> None:
    r = compute(TRANSFER, method="fifo", per_wallet=True)
    # The fee's 0.001 BTC cost 10 (10,000 a coin) and is disposed of for 30.
    assert [(x.disposal_id, x.kind, x.amount, x.proceeds, x.cost_basis, x.gain)
            for x in r.disposals] == [
        ("t:fee", "transfer-fee", D("0.001"), D("30"), D("10"), D("20"))
    ]  # fmt: skip
    assert [(x.account, x.lot_id, x.amount, x.cost_basis, x.acquired) for x in r.lots] == [
        ("exchange", "b", D("0.499"), D("4990"), at(0)),
        ("wallet", "b", D("0.5"), D("5000"), at(0)),
    ]
    assert r.holdings == [
        Holding("BTC", D("0.499"), D("4990"), "exchange"),
        Holding("BTC", D("0.5"), D("5000"), "wallet"),
    ]


def test_transfer_universal_changes_no_lot_but_still_disposes_of_the_fee() -> None:
    r = compute(TRANSFER, method="fifo")
    assert lines(r) == [("b", D("0.001"), D("30"), D("10"), D("20"))]
    assert [(x.account, x.amount, x.cost_basis) for x in r.lots] == [
        ("exchange", D("0.999"), D("9990"))
    ]
    assert r.holdings == [Holding("BTC", D("0.999"), D("9990"))]


def test_per_wallet_and_universal_differ_when_lots_sit_in_different_accounts() -> None:
    entries = [
        buy("a", 0, "1", "10000", account="a"),
        buy("b", 1, "1", "20000", account="b"),
        sell("s", 2, "1", "30000", account="b"),
    ]
    assert lines(compute(entries, method="fifo")) == [("a", D(1), D(30000), D(10000), D(20000))]
    assert lines(compute(entries, method="fifo", per_wallet=True)) == [
        ("b", D(1), D(30000), D(20000), D(10000))
    ]


def test_income_opens_a_lot_at_fair_value_and_is_reported() -> None:
    entries = [
        LedgerEntry("st", at(0), "income", "ex", "ETH", D("0.1"), value=D("200"),
                    subkind="staking"),
        sell("s", 30, "0.1", "300", asset="ETH"),
    ]  # fmt: skip
    r = compute(entries, method="fifo")
    assert [(x.entry_id, x.value, x.subkind) for x in r.income] == [("st", D(200), "staking")]
    assert lines(r) == [("st", D("0.1"), D(300), D(200), D(100))]


def test_missing_acquisition_is_reported_never_invented() -> None:
    r = compute([buy("b", 0, "1", "10000"), sell("s", 5, "1.5", "45000")], method="fifo")
    assert lines(r) == [("b", D(1), D(30000), D(10000), D(20000))]
    assert r.missing_acquisitions == [
        MissingAcquisition("s", "BTC", D("0.5"), at(5), D("15000"), "ex")
    ]
    assert r.holdings == []
    assert r.lots == []


@pytest.mark.parametrize(
    ("held_ms", "term"),
    [(365 * DAY, "short"), (365 * DAY + 1, "long"), (366 * DAY, "long"), (1, "short")],
)
def test_long_term_means_held_more_than_365_days(held_ms: int, term: str) -> None:
    entries = [
        buy("b", 0, "1", "10000"),
        LedgerEntry("s", T0 + held_ms, "sell", "ex", "BTC", D(1), "USD", D(20000)),
    ]
    assert compute(entries, method="fifo").disposals[0].term == term


def test_long_term_days_is_a_parameter() -> None:
    entries = [buy("b", 0, "1", "10000"), sell("s", 31, "1", "20000")]
    assert compute(entries, method="lifo", long_term_days=30).disposals[0].term == "long"
    with pytest.raises(DomainError, match="long_term_days must be positive"):
        compute(entries, method="lifo", long_term_days=0)


def test_reversed_entries_drop_out() -> None:
    wrong = buy("b2", 1, "1", "20000")
    fix = LedgerEntry("b2-fix", at(2), "buy", "ex", "BTC", D(1), "USD", D(20000), reverses="b2")
    r = compute([buy("b1", 0, "1", "10000"), wrong, fix, sell("s", 3, "1", "30000")],
                method="lifo")  # fmt: skip
    assert lines(r) == [("b1", D(1), D(30000), D(10000), D(20000))]
    assert r.holdings == []


def test_unknown_method_is_refused() -> None:
    with pytest.raises(DomainError, match="method 'lofi' is not one of") as info:
        compute([], method="lofi")
    assert info.value.field == "method"


# March: 300 units at 20.00, 100 at 20.20, 200 at 20.70, 200 at 21.00; 450 sold.
MARCH = [
    buy("mar01", 0, "300", "6000", asset="WIDGET"),
    buy("mar05", 4, "100", "2020", asset="WIDGET"),
    buy("mar16", 15, "200", "4140", asset="WIDGET"),
    buy("mar25", 24, "200", "4200", asset="WIDGET"),
    sell("sales", 30, "450", "13500", asset="WIDGET"),
]


@pytest.mark.parametrize(
    ("method", "cogs", "ending"),
    [("fifo", "9055", "7305"), ("lifo", "9350", "7010"), ("average", "9202.5", "7157.5")],
)
def test_published_periodic_example(method: str, cogs: str, ending: str) -> None:
    """The worked example "FIFO vs LIFO vs Weighted Average"
    (https://www.coursehero.com/file/6386813/wtavg/): cost of goods sold 9,055
    / 9,350 / 9,202.50 and ending inventory 7,305 / 7,010 / 7,157.50 (20.45 a
    unit) for FIFO / LIFO / weighted average. With a single sale after every
    purchase, periodic and perpetual agree."""
    r = compute(MARCH, method=method)
    assert sum((x.cost_basis for x in r.disposals), D(0)) == D(cogs)
    assert r.holdings == [Holding("WIDGET", D(350), D(ending))]


# Trekking, perpetual: 10 units at 91, 15 at 106, 20 sold on Aug 14,
# 20 at 115, 10 at 119, 23 sold on Aug 31.
TREKKING = [
    buy("aug01", 0, "10", "910", asset="TENT"),
    buy("aug03", 2, "15", "1590", asset="TENT"),
    sell("aug14", 13, "20", "2600", asset="TENT"),
    buy("aug17", 16, "20", "2300", asset="TENT"),
    buy("aug28", 27, "10", "1190", asset="TENT"),
    sell("aug31", 30, "23", "3450", asset="TENT"),
]


@pytest.mark.parametrize(
    ("method", "aug14", "aug31", "ending"),
    [
        ("fifo", "1970", "2600", "1420"),
        ("lifo", "2045", "2685", "1260"),
        ("average", "2000", "2622", "1368"),
    ],
)
def test_published_perpetual_example(method: str, aug14: str, aug31: str, ending: str) -> None:
    """Trekking's tents (Wild, Shaw, Chiappetta, "Fundamental Accounting
    Principles", inventories chapter; quoted at https://www.coursehero.com/file/
    p3asc8l/): perpetual FIFO costs 1,970 on Aug 14 and 2,600 on Aug 31,
    leaving 12 units at 1,420; perpetual LIFO's Aug 14 sale is 15 at 106 and 5
    at 91 (2,045). The rest follows from the same definitions: LIFO Aug 31 =
    10 x 119 + 13 x 115; moving average = 100 a unit, then 3,990 / 35 = 114."""
    r = compute(TREKKING, method=method)
    cost = {d: sum((x.cost_basis for x in r.disposals if x.disposal_id == d), D(0))
            for d in ("aug14", "aug31")}  # fmt: skip
    assert cost == {"aug14": D(aug14), "aug31": D(aug31)}
    assert r.holdings == [Holding("TENT", D(12), D(ending))]


def test_uk_delegates_to_share_pooling(monkeypatch: pytest.MonkeyPatch) -> None:
    import cryptodesk.portfolio.uk_pooling as uk

    calls: list[tuple[object, str, int]] = []

    def fake(events: object, *, currency: str, long_term_days: int = 365) -> str:
        calls.append((events, currency, long_term_days))
        return "pooled"

    monkeypatch.setattr(uk, "match_uk", fake)
    gbp = [LedgerEntry("b", at(0), "buy", "ex", "BTC", D(1), "GBP", D(8000))]
    assert compute(gbp, method="uk", currency="GBP", long_term_days=400) == "pooled"
    [(events, currency, days)] = calls
    assert (currency, days) == ("GBP", 400)
    assert [(e.entry_id, e.cost) for e in events.events] == [("b", D(8000))]  # type: ignore[attr-defined]


def test_uk_pools_per_person_only() -> None:
    with pytest.raises(DomainError, match="pools per person") as info:
        compute([*THREE_BUYS, SALE], method="uk", per_wallet=True)
    assert info.value.field == "per_wallet"


def test_uk_section_104_pool_matches_average_cost() -> None:
    # No same-day or 30-day acquisition: the whole sale comes out of the pool
    # at its average cost (45,000 / 3 = 15,000 a coin).
    sale = sell("s1", 60, "1.5", "45000")
    r = compute([*THREE_BUYS, sale], method="uk", currency="USD")
    assert (r.method, [x.lot_id for x in r.disposals]) == ("uk", ["s104"])
    assert sum((x.cost_basis for x in r.disposals), D(0)) == D("22500")
