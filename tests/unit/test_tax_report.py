"""The tax report's JSON: its exact shape, year handling (with the UK 30-day
look-ahead), and worked examples computed by hand from the methods' definitions."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.timeutil import parse_time
from cryptodesk.portfolio.ledger import LedgerEntry
from cryptodesk.portfolio.tax_lots import (
    CostBasisResult,
    DisposalLine,
    Holding,
    IncomeLine,
    MissingAcquisition,
)
from cryptodesk.portfolio.tax_report import build_tax_report, dec, tax_report_for, year_bounds

D = Decimal


def t(text: str) -> int:
    return parse_time(text)


def line(disposal_id: str, asset: str, amount: str, acquired: str, disposed: str,
         proceeds: str, cost: str, term: str, lot: str = "b1") -> DisposalLine:  # fmt: skip
    return DisposalLine(
        disposal_id, asset, D(amount), t(acquired), t(disposed), D(proceeds), D(cost),
        D(proceeds) - D(cost), term, lot, "kraken", "sell",
    )  # fmt: skip


RESULT = CostBasisResult(
    method="fifo",
    currency="USD",
    per_wallet=False,
    disposals=[
        line("s0", "ETH", "2", "2022-03-01", "2023-03-01", "3000", "5000.25", "short", "b0"),
        line("s1", "BTC", "1", "2023-01-05", "2024-02-01", "30000", "10000", "long", "b1"),
        line("s1", "BTC", "0.50", "2023-06-01", "2024-02-01", "15000", "10000", "short", "b2"),
        DisposalLine(
            "f1",
            "BTC",
            D("0.0001"),
            t("2023-06-01"),
            t("2024-12-31T23:59:59.999Z"),
            D("4.00"),
            D("4.00"),
            D("-0.00"),
            "short",
            "b2",
            "kraken",
            "fee",
        ),
        line("s2", "BTC", "0.1", "2023-06-01", "2025-01-01", "9000", "2000", "long", "b2"),
    ],
    income=[
        IncomeLine("i0", "ETH", D("1"), t("2023-12-31T23:59:59Z"), D("2300"), "staking", "kraken"),
        IncomeLine(
            "i1", "ETH", D("0.1"), t("2024-05-01T12:00:00Z"), D("250.5"), "staking", "kraken"
        ),
    ],
    holdings=[Holding("BTC", D("0.4"), D("8000"))],
    missing_acquisitions=[
        MissingAcquisition("s9", "SOL", D("3"), t("2024-07-01T08:30:00Z"), D("450"), "binance"),
        MissingAcquisition("s8", "SOL", D("1"), t("2023-07-01"), D("20"), "binance"),
    ],
    warnings=["deposit d1 of 1 ETH has no value: it enters at zero cost basis"],
)


def test_a_year_report_has_the_exact_shape_and_only_that_years_lines() -> None:
    report = build_tax_report(RESULT, year=2024)
    assert report == {
        "year": 2024,
        "method": "fifo",
        "currency": "USD",
        "per_wallet": False,
        "summary": {
            "proceeds": "45004.00",
            "cost_basis": "20004.00",
            "gain": "25000.00",
            "short_term_gain": "5000.00",
            "long_term_gain": "20000",
            "income": "250.5",
        },
        "disposals": [
            {"disposal_id": "s1", "asset": "BTC", "amount": "1",
             "acquired": "2023-01-05T00:00:00.000Z", "disposed": "2024-02-01T00:00:00.000Z",
             "proceeds": "30000", "cost_basis": "10000", "gain": "20000", "term": "long",
             "lot_id": "b1", "account": "kraken", "kind": "sell"},
            {"disposal_id": "s1", "asset": "BTC", "amount": "0.50",
             "acquired": "2023-06-01T00:00:00.000Z", "disposed": "2024-02-01T00:00:00.000Z",
             "proceeds": "15000", "cost_basis": "10000", "gain": "5000", "term": "short",
             "lot_id": "b2", "account": "kraken", "kind": "sell"},
            {"disposal_id": "f1", "asset": "BTC", "amount": "0.0001",
             "acquired": "2023-06-01T00:00:00.000Z", "disposed": "2024-12-31T23:59:59.999Z",
             "proceeds": "4.00", "cost_basis": "4.00", "gain": "0.00", "term": "short",
             "lot_id": "b2", "account": "kraken", "kind": "fee"},
        ],
        "income": [
            {"entry_id": "i1", "asset": "ETH", "amount": "0.1",
             "received": "2024-05-01T12:00:00.000Z", "value": "250.5", "subkind": "staking",
             "account": "kraken"},
        ],
        "holdings": [{"asset": "BTC", "amount": "0.4", "cost_basis": "8000"}],
        "missing_acquisitions": [
            {"disposal_id": "s9", "asset": "SOL", "amount": "3",
             "disposed": "2024-07-01T08:30:00.000Z", "proceeds": "450", "account": "binance"},
        ],
        "warnings": [
            "deposit d1 of 1 ETH has no value: it enters at zero cost basis",
            "1 disposal(s) have no matching acquisition: proceeds 450 USD are listed in "
            "missing_acquisitions and not in the summary",
        ],
    }  # fmt: skip


def test_without_a_year_every_line_counts() -> None:
    report = build_tax_report(RESULT)
    assert report["year"] is None
    assert [d["disposal_id"] for d in report["disposals"]] == ["s0", "s1", "s1", "f1", "s2"]
    assert [i["entry_id"] for i in report["income"]] == ["i0", "i1"]
    assert [m["disposal_id"] for m in report["missing_acquisitions"]] == ["s9", "s8"]
    assert report["summary"] == {
        "proceeds": "57004.00",
        "cost_basis": "27004.25",
        "gain": "29999.75",
        "short_term_gain": "2999.75",
        "long_term_gain": "27000",
        "income": "2550.5",
    }
    assert report["warnings"][-1].startswith("2 disposal(s) have no matching acquisition: "
                                             "proceeds 470 USD")  # fmt: skip


def test_year_boundaries_are_utc_midnight() -> None:
    assert year_bounds(2024) == (t("2024-01-01T00:00:00Z"), t("2025-01-01T00:00:00Z"))
    in_2023 = build_tax_report(RESULT, year=2023)
    assert [d["disposal_id"] for d in in_2023["disposals"]] == ["s0"]
    assert [i["entry_id"] for i in in_2023["income"]] == ["i0"]  # 23:59:59 on 31 Dec
    assert [d["disposal_id"] for d in build_tax_report(RESULT, year=2025)["disposals"]] == ["s2"]
    with pytest.raises(DomainError, match="year 2008 is out of range"):
        build_tax_report(RESULT, year=2008)


def test_holdings_override_and_per_wallet_accounts() -> None:
    per_wallet = CostBasisResult(
        method="hifo", currency="EUR", per_wallet=True,
        holdings=[Holding("BTC", D("1"), D("100"), "kraken"),
                  Holding("BTC", D("2"), D("50"), "ledger")],
    )  # fmt: skip
    report = build_tax_report(per_wallet)
    assert report["per_wallet"] is True
    assert report["holdings"] == [
        {"asset": "BTC", "amount": "1", "cost_basis": "100", "account": "kraken"},
        {"asset": "BTC", "amount": "2", "cost_basis": "50", "account": "ledger"},
    ]
    replaced = build_tax_report(
        RESULT, year=2024, holdings_at_year_end=[Holding("ETH", D("3"), D("-0"))]
    )
    assert replaced["holdings"] == [{"asset": "ETH", "amount": "3", "cost_basis": "0"}]


def test_negative_zero_is_written_as_zero() -> None:
    assert [dec(D("-0")), dec(D("-0.00")), dec(D("-1.50")), dec(D("0E-8"))] == [
        "0", "0.00", "-1.50", "0E-8",
    ]  # fmt: skip


_money = st.decimals(min_value=0, max_value=10**9, places=8, allow_nan=False)


@given(st.lists(st.tuples(_money, _money, st.sampled_from(["short", "long"]), st.booleans())))
def test_the_summary_adds_up_exactly_the_lines_listed(
    rows: list[tuple[Decimal, Decimal, str, bool]],
) -> None:
    disposals = [
        DisposalLine(f"s{i}", "BTC", D(1), t("2023-01-01"),
                     t("2024-06-01") if in_year else t("2023-06-01"), proceeds, cost,
                     proceeds - cost, term, "b", "a", "sell")
        for i, (proceeds, cost, term, in_year) in enumerate(rows)
    ]  # fmt: skip
    report = build_tax_report(CostBasisResult("fifo", "USD", False, disposals=disposals), year=2024)
    listed = report["disposals"]
    assert len(listed) == sum(1 for r in rows if r[3])
    summary = {k: D(v) for k, v in report["summary"].items()}
    assert summary["proceeds"] == sum((D(d["proceeds"]) for d in listed), D(0))
    assert summary["cost_basis"] == sum((D(d["cost_basis"]) for d in listed), D(0))
    assert summary["gain"] == summary["proceeds"] - summary["cost_basis"]
    assert summary["short_term_gain"] + summary["long_term_gain"] == summary["gain"]
    assert all(not v.startswith("-0") or D(v) != 0 for v in report["summary"].values())


# --- Reports computed from ledger entries (portfolio.cost_basis.compute) -------------


def buy(id: str, when: str, amount: str, cost: str, asset: str = "BTC") -> LedgerEntry:
    return LedgerEntry(id, t(when), "buy", "kraken", asset, D(amount), "USD", D(cost))


def sell(id: str, when: str, amount: str, proceeds: str, asset: str = "BTC") -> LedgerEntry:
    return LedgerEntry(id, t(when), "sell", "kraken", asset, D(amount), "USD", D(proceeds))


EXAMPLE = [
    buy("b1", "2023-01-05", "1", "10000"),
    buy("b2", "2023-06-01", "1", "20000"),
    sell("s1", "2024-02-01", "1.5", "45000"),
]


def lines_of(report: dict[str, object]) -> list[tuple[str, Decimal, Decimal, Decimal, str]]:
    disposals = report["disposals"]
    assert isinstance(disposals, list)
    return [
        (d["acquired"][:10], D(d["amount"]), D(d["proceeds"]), D(d["cost_basis"]), d["term"])
        for d in disposals
    ]


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        # FIFO: the oldest lot first; held 392 days (> 365) is long, 245 days short.
        ("fifo", [("2023-01-05", D(1), D(30000), D(10000), "long"),
                  ("2023-06-01", D("0.5"), D(15000), D(10000), "short")]),
        # LIFO and HIFO: the newest (and dearest) lot first.
        ("lifo", [("2023-06-01", D(1), D(30000), D(20000), "short"),
                  ("2023-01-05", D("0.5"), D(15000), D(5000), "long")]),
        ("hifo", [("2023-06-01", D(1), D(30000), D(20000), "short"),
                  ("2023-01-05", D("0.5"), D(15000), D(5000), "long")]),
        # Average: 2 BTC cost 30,000, 15,000 each; the 1.5 BTC sold cost 22,500, on
        # one line per holding period (the 1 BTC of January long, 0.5 of June short).
        ("average", [("2023-01-05", D(1), D(30000), D(15000), "long"),
                     ("2023-06-01", D("0.5"), D(15000), D(7500), "short")]),
    ],
)  # fmt: skip
def test_worked_example_per_method(method: str, expected: list[tuple[object, ...]]) -> None:
    report = tax_report_for(EXAMPLE, method=method, year=2024)
    assert lines_of(report) == expected
    gain = sum((p - c for _, _, p, c, _ in lines_of(report)), D(0))
    assert D(report["summary"]["gain"]) == gain
    assert [(h["asset"], D(h["amount"])) for h in report["holdings"]] == [("BTC", D("0.5"))]


def test_a_year_before_the_sale_has_no_gain_and_holds_everything() -> None:
    report = tax_report_for(EXAMPLE, method="fifo", year=2023)
    assert report["disposals"] == []
    assert {k: D(v) for k, v in report["summary"].items()} == dict.fromkeys(report["summary"], D(0))
    assert [(h["asset"], D(h["amount"]), D(h["cost_basis"])) for h in report["holdings"]] == [
        ("BTC", D(2), D(30000))
    ]


def test_later_entries_never_change_a_years_gains() -> None:
    base = [buy("b1", "2023-01-05", "2", "20000"), sell("s1", "2023-08-01", "1", "15000")]
    later = [*base, buy("b9", "2024-01-02", "5", "1"), sell("s9", "2024-01-03", "6", "99")]
    for method in ("fifo", "lifo", "hifo", "average"):
        alone = tax_report_for(base, method=method, year=2023)
        assert tax_report_for(later, method=method, year=2023) == alone
        assert D(alone["summary"]["gain"]) == D(5000)


def test_a_correction_dated_after_the_year_still_removes_the_entry() -> None:
    wrong = sell("s1", "2023-08-01", "1", "15000")
    entries = [
        buy("b1", "2023-01-05", "2", "20000"),
        wrong,
        LedgerEntry(
            "r1", t("2024-03-01"), "sell", "kraken", "BTC", D(1), "USD", D(15000), reverses="s1"
        ),
    ]
    report = tax_report_for(entries, method="fifo", year=2023)
    assert report["disposals"] == []
    assert [D(h["amount"]) for h in report["holdings"]] == [D(2)]


def test_uk_reads_30_days_past_the_year_for_bed_and_breakfast() -> None:
    # Pool of 2 BTC for 20,000; 1 BTC sold on 20 Dec 2023 is matched with the
    # 1 BTC bought back on 10 Jan 2024 (within 30 days) at 35,000, not with the pool.
    entries = [
        buy("b1", "2023-01-10", "2", "20000"),
        sell("s1", "2023-12-20", "1", "30000"),
        buy("b2", "2024-01-10", "1", "35000"),
        buy("b3", "2024-03-01", "1", "50000"),
    ]
    report = tax_report_for(entries, method="uk", year=2023)
    assert [(d["lot_id"], D(d["cost_basis"]), D(d["gain"])) for d in report["disposals"]] == [
        ("bed-and-breakfast:b2", D(35000), D(-5000))
    ]
    assert D(report["summary"]["gain"]) == D(-5000)
    # Holdings are those of 31 Dec 2023, before the repurchase: the pool less the part sold.
    assert [(h["asset"], D(h["amount"]), D(h["cost_basis"])) for h in report["holdings"]] == [
        ("BTC", D(1), D(10000))
    ]
    # FIFO has no look-ahead: the same sale is matched with the 2023 lot.
    fifo = tax_report_for(entries, method="fifo", year=2023)
    assert [(d["lot_id"], D(d["gain"])) for d in fifo["disposals"]] == [("b1", D(20000))]


def test_uk_look_ahead_reaches_the_30th_day_of_the_next_year() -> None:
    # A disposal on 31 December is matched with acquisitions up to 30 January
    # (the 30th day after it), to its last millisecond; 31 January is the pool's.
    base = [buy("b1", "2023-01-10", "2", "20000"), sell("s1", "2023-12-31T12:00:00Z", "1", "30000")]
    for when, expected in (
        ("2024-01-30T23:59:59.999Z", [("bed-and-breakfast:b2", D(31000))]),
        ("2024-01-31T00:00:00Z", [("s104", D(10000))]),
    ):
        report = tax_report_for([*base, buy("b2", when, "1", "31000")], method="uk", year=2023)
        assert [(d["lot_id"], D(d["cost_basis"])) for d in report["disposals"]] == expected
        assert [(D(h["amount"]), D(h["cost_basis"])) for h in report["holdings"]] == [(1, 10000)]


def test_income_and_missing_acquisitions_from_entries() -> None:
    entries = [
        LedgerEntry("i1", t("2024-05-01T12:00:00Z"), "income", "kraken", "ETH", D("0.1"),
                    value=D("250.50"), subkind="staking"),
        sell("s1", "2024-07-01", "3", "450", asset="SOL"),
    ]  # fmt: skip
    report = tax_report_for(entries, method="fifo", year=2024)
    assert [(i["entry_id"], i["value"], i["subkind"]) for i in report["income"]] == [
        ("i1", "250.50", "staking")
    ]
    assert D(report["summary"]["income"]) == D("250.50")
    missing = report["missing_acquisitions"]
    assert [(m["asset"], D(m["amount"]), D(m["proceeds"])) for m in missing] == [
        ("SOL", D(3), D(450))
    ]
    assert D(report["summary"]["proceeds"]) == D(0)
    assert [(h["asset"], D(h["amount"]), D(h["cost_basis"])) for h in report["holdings"]] == [
        ("ETH", D("0.1"), D("250.50"))
    ]


def test_bad_method_and_holding_period_are_domain_errors() -> None:
    with pytest.raises(DomainError, match="method 'fofi' is not one of fifo, lifo"):
        tax_report_for(EXAMPLE, method="fofi")
    with pytest.raises(DomainError, match="long_term_days must be positive, got 0"):
        tax_report_for(EXAMPLE, method="fifo", long_term_days=0)
    with pytest.raises(DomainError, match="year 3001 is out of range"):
        tax_report_for(EXAMPLE, method="fifo", year=3001)
