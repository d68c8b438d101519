"""UK share pooling: HMRC's worked examples and the rules' edges, with exact answers.

HMRC states its examples in whole pounds; the engine keeps exact Decimal. Where
the exact figure has pence, the test asserts it and names HMRC's rounded one.
"""

from datetime import date, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from cryptodesk.domain.timeutil import parse_time
from cryptodesk.portfolio.ledger import LedgerEntry
from cryptodesk.portfolio.tax_events import Acquire, Dispose, Remove, to_events
from cryptodesk.portfolio.tax_lots import CostBasisResult, Holding, MissingAcquisition, OpenLot
from cryptodesk.portfolio.uk_pooling import match_uk, uk_day

D = Decimal


def t(when: str | int) -> int:
    if isinstance(when, int):
        return when
    return parse_time(when if "T" in when else when + "T10:00:00Z")


def _trade(kind, id_, when, amount, money, *, asset="TKN", fee=None, account="main"):
    fees = {"fee_asset": "GBP", "fee_amount": D(fee)} if fee else {}
    return LedgerEntry(id_, t(when), kind, account, asset, D(amount), counter_asset="GBP",
                       counter_amount=D(money), **fees)  # fmt: skip


def buy(*args, **kwargs):
    return _trade("buy", *args, **kwargs)


def sell(*args, **kwargs):
    return _trade("sell", *args, **kwargs)


def run(entries) -> CostBasisResult:
    return match_uk(to_events(entries, "GBP"), currency="GBP")


def rows(result):
    """(disposal, lot, amount, proceeds, cost, gain) per line, exact Decimals."""
    return [(ln.disposal_id, ln.lot_id, ln.amount, ln.proceeds, ln.cost_basis, ln.gain)
            for ln in result.disposals]  # fmt: skip


def pool(result, asset="TKN"):
    return next((h.amount, h.cost_basis) for h in result.holdings if h.asset == asset)


def test_crypto22251_basic_section_104_pool():
    """CRYPTO22251 (Victoria): 100 for £1,000, 50 for £125,000, sells 50 for £300,000.

    Allowable cost £126,000 x 50/150 = £42,000, gain £258,000; pool 100 at £84,000.
    """
    result = run([
        buy("v1", "2023-01-02", "100", "1000"),
        buy("v2", "2023-09-18", "50", "125000"),
        sell("v3", "2023-12-01", "50", "300000"),
    ])  # fmt: skip
    assert rows(result) == [("v3", "s104", 50, 300000, 42000, 258000)]
    line = result.disposals[0]
    assert (line.acquired, line.disposed, line.term) == (t("2023-01-02"), t("2023-12-01"), "short")
    assert (line.account, line.kind, line.asset) == ("main", "sell", "TKN")
    assert result.holdings == [Holding("TKN", D(100), D(84000))]
    assert result.lots == [OpenLot("s104", "", "TKN", D(100), D(84000), t("2023-01-02"))]
    assert (result.method, result.currency, result.per_wallet) == ("uk", "GBP", False)
    assert result.missing_acquisitions == []


def test_crypto22252_same_day_disposals_are_one_disposal():
    """CRYPTO22252 (Martyn): pool 5,000 at £500; on 23 June sells 1,000 for £800 (morning),
    buys 1,600 for £1,000 (afternoon), sells 500 for £600 (evening).

    One disposal of 1,500 for £1,400 against £1,000 x 1,500/1,600 = £937.50 (HMRC: £938),
    gain £462.50 (HMRC: £462); 100 tokens and £62.50 (HMRC: £62) join the pool.
    """
    result = run([
        buy("m0", "2023-01-02", "5000", "500"),
        sell("m1", "2023-06-23T09:00:00Z", "1000", "800"),
        buy("m2", "2023-06-23T14:00:00Z", "1600", "1000"),
        sell("m3", "2023-06-23T20:00:00Z", "500", "600"),
    ])  # fmt: skip
    assert rows(result) == [
        ("m1", "same-day", 1000, 800, 625, 175),
        ("m3", "same-day", 500, 600, D("312.5"), D("287.5")),
    ]
    assert {ln.acquired for ln in result.disposals} == {t("2023-06-23T14:00:00Z")}
    assert sum(ln.gain for ln in result.disposals) == D("462.5")
    assert pool(result) == (5100, D("562.5"))
    # The pool still holds a share of the first acquisition.
    assert result.lots[0].acquired == t("2023-01-02")


def test_crypto22253_thirty_day_rule_earliest_first_and_day_31_outside():
    """CRYPTO22253 (Rachel): pool 2,000 at £1,000; sells 1,000 for £400 on 31 March and 500
    for £150 on 20 April; buys 700 for £175 on 21 April, 500 for £100 on 28 April, 500 for
    £150 on 1 May.

    31 March takes 700 of 21 April (£175) and 300 of 28 April (£60): gain £165. 1 May is day
    31, out of its reach. 20 April takes 200 of 28 April (£40) and 300 of 1 May (£90): gain
    £20. The pool pays for neither and gains the 200 left of 1 May at £60: 2,200 at £1,060.
    (The manual's page was not in the search index; the transactions and these figures are
    as quoted by open-source implementations that test against it, and follow from s106A.)
    """
    result = run([
        buy("r0", "2023-01-02", "2000", "1000"),
        sell("r1", "2023-03-31", "1000", "400"),
        sell("r2", "2023-04-20", "500", "150"),
        buy("r3", "2023-04-21", "700", "175"),
        buy("r4", "2023-04-28", "500", "100"),
        buy("r5", "2023-05-01", "500", "150"),
    ])  # fmt: skip
    assert rows(result) == [
        ("r1", "bed-and-breakfast:r3", 700, 280, 175, 105),
        ("r1", "bed-and-breakfast:r4", 300, 120, 60, 60),
        ("r2", "bed-and-breakfast:r4", 200, 60, 40, 20),
        ("r2", "bed-and-breakfast:r5", 300, 90, 90, 0),
    ]
    assert [ln.acquired for ln in result.disposals] == [
        t("2023-04-21"), t("2023-04-28"), t("2023-04-28"), t("2023-05-01"),
    ]  # fmt: skip
    assert pool(result) == (2200, 1060)


def test_crypto22254_same_day_then_pool():
    """CRYPTO22254 (Daniel): pool 8,000 at £1,000. On 31 January: disposals of 5,000 for £500
    and 2,000 for £142; acquisitions 4,000 for £320, 1,000 for £75, 1,000 for £70, 500 for £35.

    One disposal of 7,000 for £642: 6,500 same-day at £500, 500 from the pool at
    £1,000 x 500/8,000 = £62.50 (HMRC: £63); gain £79.50 (HMRC: £79). Pool 7,500 at £937.50
    (HMRC: £937).
    """
    result = run([
        buy("d0", "2023-01-02", "8000", "1000"),
        sell("d1", "2023-01-31T09:00:00Z", "5000", "500"),
        buy("d2", "2023-01-31T10:00:00Z", "4000", "320"),
        buy("d3", "2023-01-31T11:00:00Z", "1000", "75"),
        buy("d4", "2023-01-31T12:00:00Z", "1000", "70"),
        sell("d5", "2023-01-31T13:00:00Z", "2000", "142"),
        buy("d6", "2023-01-31T14:00:00Z", "500", "35"),
    ])  # fmt: skip
    # £500 x 5,000/6,500 to the first disposal, the rest of the day's £500 to the second.
    assert rows(result) == [
        ("d1", "same-day", 5000, 500, D("384.61538462"), D("115.38461538")),
        ("d5", "same-day", 1500, D("106.5"), D("115.38461538"), D("-8.88461538")),
        ("d5", "s104", 500, D("35.5"), D("62.5"), D("-27")),
    ]
    # Same-day lines date from the day's first acquisition, pool lines from the pool's.
    assert [ln.acquired for ln in result.disposals] == [
        t("2023-01-31T10:00:00Z"), t("2023-01-31T10:00:00Z"), t("2023-01-02"),
    ]  # fmt: skip
    assert sum(ln.gain for ln in result.disposals) == D("79.5")
    assert sum(ln.cost_basis for ln in result.disposals) == D("562.5")
    assert pool(result) == (7500, D("937.5"))


def test_crypto22255_thirty_day_then_pool():
    """CRYPTO22255 (Melanie): pool 14,000 at £200,000; sells 4,000 for £160,000 on 30 August,
    buys 500 for £17,500 on 11 September.

    500 matched 30-day (£17,500), 3,500 from the pool (£50,000): gain £92,500; pool 10,500
    at £150,000 (the 500 bought never enter it).
    """
    result = run([
        buy("e0", "2023-01-02", "14000", "200000"),
        sell("e1", "2023-08-30", "4000", "160000"),
        buy("e2", "2023-09-11", "500", "17500"),
    ])  # fmt: skip
    assert rows(result) == [
        ("e1", "bed-and-breakfast:e2", 500, 20000, 17500, 2500),
        ("e1", "s104", 3500, 140000, 50000, 90000),
    ]
    assert sum(ln.gain for ln in result.disposals) == 92500
    assert pool(result) == (10500, 150000)


def test_crypto22256_same_day_thirty_day_and_pool():
    """CRYPTO22256 (Gulferaz): pool 100,000 at £300,000. 31 July: buys 10,000 for £45,000 and
    sells 30,000 for £150,000; 5 August sells 20,000 for £100,000; 6 August buys 50,000 for
    £225,000; 7 August sells 100,000 for £150,000.

    31 July: 10,000 same-day (£45,000) + 20,000 of 6 August (£90,000): gain £15,000.
    5 August: 20,000 of 6 August (£90,000): gain £10,000. The other 10,000 of 6 August enter
    the pool: 110,000 at £345,000. 7 August: £345,000 x 100,000/110,000 = £313,636.36
    (HMRC: £313,637), loss £163,636.36 (HMRC: £163,637).
    """
    entries = [
        buy("g0", "2023-01-02", "100000", "300000"),
        buy("g1", "2023-07-31T09:00:00Z", "10000", "45000"),
        sell("g2", "2023-07-31T15:00:00Z", "30000", "150000"),
        sell("g3", "2023-08-05", "20000", "100000"),
        buy("g4", "2023-08-06", "50000", "225000"),
        sell("g5", "2023-08-07", "100000", "150000"),
    ]
    result = run(entries)
    assert rows(result) == [
        ("g2", "same-day", 10000, 50000, 45000, 5000),
        ("g2", "bed-and-breakfast:g4", 20000, 100000, 90000, 10000),
        ("g3", "bed-and-breakfast:g4", 20000, 100000, 90000, 10000),
        ("g5", "s104", 100000, 150000, D("313636.36363636"), D("-163636.36363636")),
    ]
    assert pool(result) == (10000, D("31363.63636364"))
    assert result.disposals[3].acquired == t("2023-01-02")
    assert pool(run(entries[:5])) == (110000, 345000)


def test_cg51560_day_30_is_inside_and_day_31_is_not():
    """CG51560 example 3 (Mrs C): 10,000 held, 2,000 sold on 28 February 2009, 3,000 bought on
    31 March 2009, 31 days later: the pool pays. The prices are this test's own; one day
    earlier (day 30) the repurchase is matched instead.
    """
    opening = buy("c0", "2009-01-05", "10000", "10000")
    sale = sell("c1", "2009-02-28", "2000", "6000")
    day31 = run([opening, sale, buy("c2", "2009-03-31", "3000", "18000")])
    assert rows(day31) == [("c1", "s104", 2000, 6000, 2000, 4000)]
    assert pool(day31) == (11000, 26000)
    # The last second of 30 March in the UK: 22:59:59 UTC, summer time having begun
    # on 29 March 2009. One second later it is 31 March in the UK (day 31): the pool.
    day30 = run([opening, sale, buy("c2", "2009-03-30T22:59:59Z", "3000", "18000")])
    assert rows(day30) == [("c1", "bed-and-breakfast:c2", 2000, 6000, 12000, -6000)]
    assert pool(day30) == (11000, 16000)
    uk_day31 = run([opening, sale, buy("c2", "2009-03-30T23:00:00Z", "3000", "18000")])
    assert rows(uk_day31) == [("c1", "s104", 2000, 6000, 2000, 4000)]


def test_uk_day_follows_british_summer_time():
    """HMRC's day is the UK calendar day: from 01:00 UTC on the last Sunday of March to
    01:00 UTC on the last Sunday of October, 23:00 UTC starts the next day."""

    def day(text: str) -> str:
        return str(date(1970, 1, 1) + timedelta(days=uk_day(parse_time(text))))

    assert day("2024-07-01T22:59:59.999Z") == "2024-07-01"
    assert day("2024-07-01T23:00:00Z") == "2024-07-02"  # midnight BST
    assert day("2024-01-01T23:30:00Z") == "2024-01-01"  # GMT in winter
    assert day("2024-03-30T23:30:00Z") == "2024-03-30"  # BST starts 31 March 01:00 UTC
    assert day("2024-03-31T23:30:00Z") == "2024-04-01"
    assert day("2024-10-26T23:30:00Z") == "2024-10-27"  # BST ends 27 October 01:00 UTC
    assert day("2024-10-27T23:30:00Z") == "2024-10-27"
    # A sale at 23:30 UTC in July and a purchase the next UTC morning are one UK day.
    same = run([
        buy("u0", "2024-01-05", "10", "1000"),
        sell("u1", "2024-07-01T23:30:00Z", "1", "150"),
        buy("u2", "2024-07-02T08:00:00Z", "1", "140"),
    ])  # fmt: skip
    assert [line.lot_id for line in same.disposals] == ["same-day"]


def test_pool_average_cost_after_several_buys_and_partial_disposal():
    result = run([
        buy("p1", "2022-01-03", "1.5", "30000"),
        buy("p2", "2022-03-01", "0.5", "15000"),
        buy("p3", "2022-05-01", "1", "20000"),
        sell("p4", "2023-06-01", "1.2", "36000", fee="12"),
    ])  # fmt: skip
    # Pool 3 at £65,000; 1.2 of it costs £26,000; the £12 fee comes off the proceeds.
    assert rows(result) == [("p4", "s104", D("1.2"), 35988, 26000, 9988)]
    assert result.disposals[0].term == "long"  # by term_of: UK gains have no term
    assert pool(result) == (D("1.8"), 39000)


def test_fees_are_allowable_costs_in_the_same_day_match():
    result = run([
        buy("f1", "2023-02-01T09:00:00Z", "2", "100", fee="1.5"),
        sell("f2", "2023-02-01T18:00:00Z", "2", "130", fee="2.5"),
    ])  # fmt: skip
    assert rows(result) == [("f2", "same-day", 2, D("127.5"), D("101.5"), 26)]
    assert (result.holdings, result.lots) == ([], [])


def test_bed_and_breakfast_acquisition_larger_or_smaller_than_the_disposal():
    opening = buy("b1", "2023-01-02", "10", "100")
    larger = run([opening, sell("b2", "2023-03-01", "4", "60"), buy("b3", "2023-03-10", "6", "72")])
    # 4 of the 6 bought at £12 each; the other 2 (£24) join the pool of 10 at £100.
    assert rows(larger) == [("b2", "bed-and-breakfast:b3", 4, 60, 48, 12)]
    assert pool(larger) == (12, 124)
    smaller = run([
        opening,
        sell("b2", "2023-03-01", "6", "90"),
        buy("b3", "2023-03-05", "1", "14"),
        buy("b4", "2023-03-20", "2", "26"),
    ])  # fmt: skip
    assert rows(smaller) == [
        ("b2", "bed-and-breakfast:b3", 1, 15, 14, 1),
        ("b2", "bed-and-breakfast:b4", 2, 30, 26, 4),
        ("b2", "s104", 3, 45, 30, 15),
    ]
    assert pool(smaller) == (7, 70)


def test_several_disposals_compete_for_one_later_acquisition():
    result = run([
        buy("k1", "2023-01-02", "10", "100"),
        sell("k2", "2023-04-01", "3", "36"),
        sell("k3", "2023-04-05", "3", "39"),
        buy("k4", "2023-04-10", "4", "44"),
    ])  # fmt: skip
    # The earlier disposal takes 3 of the 4; the later one gets 1, then the pool.
    assert rows(result) == [
        ("k2", "bed-and-breakfast:k4", 3, 36, 33, 3),
        ("k3", "bed-and-breakfast:k4", 1, 13, 11, 2),
        ("k3", "s104", 2, 26, 20, 6),
    ]
    assert pool(result) == (8, 80)


def test_an_acquisitions_own_day_comes_before_an_earlier_disposals_claim():
    result = run([
        buy("h1", "2023-01-02", "10", "100"),
        sell("h2", "2023-04-01", "5", "75"),
        buy("h3", "2023-04-03T09:00:00Z", "5", "70"),
        sell("h4", "2023-04-03T17:00:00Z", "3", "45"),
    ])  # fmt: skip
    assert rows(result) == [
        ("h2", "bed-and-breakfast:h3", 2, 30, 28, 2),
        ("h2", "s104", 3, 45, 30, 15),
        ("h4", "same-day", 3, 45, 42, 3),
    ]
    assert pool(result) == (7, 70)


def test_income_enters_the_pool_at_value_and_passes_through():
    staking = LedgerEntry("i1", t("2023-01-10"), "income", "main", "TKN", D("2"),
                          value=D("30"), subkind="staking")  # fmt: skip
    result = run(
        [buy("i0", "2023-01-02", "8", "80"), staking, sell("i2", "2023-05-01", "5", "100")]
    )
    # Pool 10 at £110: 5 cost £55.
    assert rows(result) == [("i2", "s104", 5, 100, 55, 45)]
    assert pool(result) == (5, 55)
    assert [(i.entry_id, i.value, i.subkind) for i in result.income] == [("i1", 30, "staking")]


def test_withdrawal_takes_pool_cost_proportionally_and_transfers_change_nothing():
    out = LedgerEntry("w2", t("2023-02-01"), "withdrawal", "main", "TKN", D("1"))
    move = LedgerEntry("w3", t("2023-02-02"), "transfer", "main", "TKN", D("2"),
                       to_account="cold")  # fmt: skip
    result = run([
        buy("w0", "2023-01-02", "3", "100"),
        buy("w1", "2023-01-05", "1", "20"),
        out,
        move,
        sell("w4", "2023-03-01", "1", "50", account="cold"),
    ])  # fmt: skip
    # Pool 4 at £120 -> the withdrawal removes 1 and £30, no line; the sale costs £30.
    assert rows(result) == [("w4", "s104", 1, 50, 30, 20)]
    assert result.disposals[0].account == "cold"
    assert pool(result) == (2, 60)
    beyond = LedgerEntry("w5", t("2023-03-02"), "withdrawal", "main", "TKN", D("5"))
    capped = run([buy("w0", "2023-01-02", "3", "30"), beyond, buy("w6", "2023-04-01", "1", "9")])
    assert capped.holdings == [Holding("TKN", D(1), D(9))]  # the pool restarts from empty
    assert capped.lots[0].acquired == t("2023-04-01")
    assert capped.warnings == [
        "withdrawal w5 of 5 TKN exceeds the section 104 pool of 3: only the pool is removed"
    ]


def test_disposal_beyond_every_match_is_a_missing_acquisition():
    result = run([
        buy("n1", "2023-01-02", "1", "100"),
        sell("n2", "2023-02-01", "4", "800"),
        sell("n3", "2023-03-01", "1", "90", asset="OTHER"),
    ])  # fmt: skip
    assert rows(result) == [("n2", "s104", 1, 200, 100, 100)]
    assert result.missing_acquisitions == [
        MissingAcquisition("n2", "TKN", D(3), t("2023-02-01"), D(600), "main"),
        MissingAcquisition("n3", "OTHER", D(1), t("2023-03-01"), D(90), "main"),
    ]
    assert result.holdings == []


def test_crypto_to_crypto_trade_disposes_and_acquires_at_value():
    trade = LedgerEntry("z2", t("2023-04-01"), "sell", "main", "TKN", D("2"),
                        counter_asset="ETH", counter_amount=D("1"), value=D("3000"))  # fmt: skip
    result = run([buy("z1", "2023-01-02", "4", "2000"), trade])
    assert rows(result) == [("z2", "s104", 2, 3000, 1000, 2000)]
    assert result.disposals[0].kind == "trade"
    assert pool(result, "ETH") == (1, 3000)
    assert pool(result, "TKN") == (2, 1000)
    assert [h.asset for h in result.holdings] == ["ETH", "TKN"]


def test_proceeds_split_exactly_when_they_do_not_divide():
    result = run([
        buy("q1", "2023-01-02", "3", "10"),
        sell("q2", "2023-02-01", "3", "100"),
        buy("q3", "2023-02-05", "1", "1"),
        buy("q4", "2023-02-06", "1", "1"),
    ])  # fmt: skip
    assert [ln.proceeds for ln in result.disposals] == [
        D("33.33333333"), D("33.33333334"), D("33.33333333"),
    ]  # fmt: skip
    assert sum(ln.proceeds for ln in result.disposals) == 100
    assert all(ln.gain == ln.proceeds - ln.cost_basis for ln in result.disposals)


HOUR = 3_600_000
# Gaps between entries that land on the same day, the next day, and either side
# of the 30-day edge.
GAPS_H = (0, 0, 3, 3, 20, 24, 5 * 24, 29 * 24, 30 * 24, 31 * 24)
OPS = st.tuples(
    st.sampled_from(("buy", "buy", "sell", "sell", "withdrawal", "income", "transfer")),
    st.sampled_from(("AAA", "BBB")),
    st.sampled_from(GAPS_H),
    st.integers(1, 500),  # amount in hundredths
    st.integers(0, 90_000),  # value in pence
)


def _ledger(ops, *, feasible):
    """Entries from generated ops; ``feasible`` never gives more than is held at the time."""
    entries, held, now = [], {"AAA": D(0), "BBB": D(0)}, t("2023-01-02")
    for i, (kind, asset, gap, units, pence) in enumerate(ops):
        now += gap * HOUR
        amount, value = D(units) / 100, D(pence) / 100
        if kind in ("sell", "withdrawal", "transfer") and feasible:
            amount = min(amount, held[asset])
            if amount == 0:
                continue
        if kind == "buy":
            entry = buy(f"e{i}", now, amount, value or 1, asset=asset)
        elif kind == "sell":
            entry = sell(f"e{i}", now, amount, value or 1, asset=asset)
        elif kind == "income":
            entry = LedgerEntry(f"e{i}", now, "income", "main", asset, amount, value=value,
                                subkind="staking")  # fmt: skip
        else:
            to_account = "cold" if kind == "transfer" else None
            entry = LedgerEntry(f"e{i}", now, kind, "main", asset, amount, to_account=to_account)
        entries.append(entry)
        sign = {"buy": 1, "income": 1, "sell": -1, "withdrawal": -1}.get(kind, 0)
        held[asset] += sign * amount
    return entries


def _per_disposal(result, events):
    lines = {e.entry_id: [D(0), D(0)] for e in events if isinstance(e, Dispose)}
    for ln in [*result.disposals, *result.missing_acquisitions]:
        lines[ln.disposal_id][0] += ln.amount
        lines[ln.disposal_id][1] += ln.proceeds
    return lines


@settings(max_examples=300, deadline=None)
@given(st.lists(OPS, min_size=6, max_size=40), st.booleans(), st.booleans())
def test_property_pool_amounts_proceeds_and_cost_are_conserved(ops, feasible, withdrawals):
    """Lines (and missing parts) add up to each disposal; a ledger that never gives more than
    it holds misses nothing; without withdrawals every pound of cost is in a line or the pool.
    """
    ops = [op for op in ops if withdrawals or op[0] != "withdrawal"]
    tax_events = to_events(_ledger(ops, feasible=feasible), "GBP")
    events = tax_events.events
    result = match_uk(tax_events, currency="GBP")
    assert _per_disposal(result, events) == {
        e.entry_id: [e.amount, e.proceeds] for e in events if isinstance(e, Dispose)
    }
    assert all(ln.gain == ln.proceeds - ln.cost_basis for ln in result.disposals)
    assert all(ln.cost_basis >= 0 for ln in result.disposals)
    assert all(h.cost_basis >= 0 and h.amount > 0 for h in result.holdings)
    assert [(lot.asset, lot.amount, lot.cost_basis) for lot in result.lots] == [
        (h.asset, h.amount, h.cost_basis) for h in result.holdings
    ]
    held = {h.asset: h.amount for h in result.holdings}
    if feasible:
        assert (result.missing_acquisitions, result.warnings) == ([], [])
        for asset in ("AAA", "BBB"):
            moved = {Acquire: D(0), Dispose: D(0), Remove: D(0)}
            for e in events:
                if e.asset == asset and type(e) in moved:
                    moved[type(e)] += e.amount
            assert held.get(asset, 0) == moved[Acquire] - moved[Dispose] - moved[Remove]
    if not withdrawals:
        cost_in = sum((e.cost for e in events if isinstance(e, Acquire)), D(0))
        cost_out = sum((ln.cost_basis for ln in result.disposals), D(0))
        assert cost_in == cost_out + sum((h.cost_basis for h in result.holdings), D(0))
        acquired = sum((e.amount for e in events if isinstance(e, Acquire)), D(0))
        matched = sum((ln.amount for ln in result.disposals), D(0))
        assert acquired == matched + sum(held.values(), D(0))
