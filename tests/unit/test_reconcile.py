"""Ledger-derived balances against reported balances: every difference flagged, exactly."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptodesk.domain.errors import DomainError
from cryptodesk.portfolio.ledger import LedgerEntry
from cryptodesk.portfolio.reconcile import (
    ReconLine,
    ledger_balances,
    reconcile,
    report_to_dict,
)

D = Decimal
T0 = 1_717_200_000_000


def entry(id: str, kind: str, asset: str, amount: str, **kw: object) -> LedgerEntry:
    fields = {k: D(v) if k in ("counter_amount", "fee_amount", "value") else v
              for k, v in kw.items()}  # fmt: skip
    fields.setdefault("account", "binance")
    return LedgerEntry(id=id, timestamp=T0 + len(id), kind=kind, asset=asset,
                       amount=D(amount), **fields)  # fmt: skip


# One of each kind on "binance", a transfer out to "cold", and a corrected
# deposit: 1000 - 670.0012 + 340.5 - 0.3405 - 10.5 - 1 + 0.5 - 20 - 0.1 USDT.
BOOK = [
    entry("d1", "deposit", "USDT", "1000"),
    entry("d2", "deposit", "USDT", "999"),
    entry("d2-fix", "deposit", "USDT", "999", reverses="d2"),
    entry("b1", "buy", "BTC", "0.01", counter_asset="USDT", counter_amount="670.0012",
          fee_asset="BTC", fee_amount="0.00001"),
    entry("s1", "sell", "BTC", "0.005", counter_asset="USDT", counter_amount="340.5",
          fee_asset="USDT", fee_amount="0.3405"),
    entry("w1", "withdrawal", "USDT", "10.5", fee_asset="USDT", fee_amount="1"),
    entry("t1", "transfer", "BTC", "0.002", to_account="cold", fee_asset="BTC",
          fee_amount="0.0001"),
    entry("i1", "income", "USDT", "0.5", subkind="interest", value="0.5"),
    entry("p1", "spend", "USDT", "20", value="20"),
    entry("f1", "fee", "USDT", "0.1", value="0.1"),
]  # fmt: skip


def test_ledger_balances_move_every_leg_of_every_kind():
    assert ledger_balances(BOOK) == {
        ("binance", "USDT"): D("639.0583"),
        ("binance", "BTC"): D("0.00289"),  # 0.01 - 0.00001 - 0.005 - 0.002 - 0.0001
        ("cold", "BTC"): D("0.002"),
    }


def test_matching_reports_reconcile_to_all_ok_on_the_reported_accounts_only():
    report = reconcile(BOOK, {"binance": {"BTC": D("0.00289000"), "USDT": D("639.0583")}})
    assert report.ok
    assert report.lines == (
        ReconLine("binance", "BTC", D("0.00289"), D("0.00289000"), D("0E-8"), "ok"),
        ReconLine("binance", "USDT", D("639.0583"), D("639.0583"), D("0.0000"), "ok"),
    )
    assert report.differences == ()


def test_each_kind_of_difference_is_flagged_with_its_exact_amount():
    reported = {
        "binance": {"BTC": D("0.00288"), "ETH": D("1.5"), "BNB": D("0")},
        "cold": {},
    }
    report = reconcile(BOOK, reported)
    assert not report.ok
    assert report.lines == (
        ReconLine("binance", "BTC", D("0.00289"), D("0.00288"), D("-0.00001"), "mismatch"),
        ReconLine("binance", "ETH", D("0"), D("1.5"), D("1.5"), "missing_in_ledger"),
        ReconLine("binance", "USDT", D("639.0583"), D("0"), D("-639.0583"),
                  "missing_at_exchange"),
        ReconLine("cold", "BTC", D("0.002"), D("0"), D("-0.002"), "missing_at_exchange"),
    )  # fmt: skip
    assert report.differences == report.lines


def test_tolerance_accepts_differences_up_to_it_and_no_further():
    reported = {"binance": {"BTC": D("0.00290"), "USDT": D("639.0583")}}
    assert reconcile(BOOK, reported, tolerance=D("0.00001")).ok
    strict = reconcile(BOOK, reported, tolerance=D("0.000009"))
    assert [(line.asset, line.status, line.difference) for line in strict.differences] == [
        ("BTC", "mismatch", D("0.00001"))
    ]
    with pytest.raises(DomainError, match="tolerance"):
        reconcile(BOOK, reported, tolerance=D("-1"))


def test_an_asset_netting_to_zero_is_silent_unless_the_exchange_still_holds_it():
    book = [
        entry("b", "buy", "SOL", "2", counter_asset="USDT", counter_amount="300"),
        entry("s", "sell", "SOL", "2", counter_asset="USDT", counter_amount="310"),
    ]
    assert reconcile(book, {"binance": {"USDT": D("10")}}).ok
    held = reconcile(book, {"binance": {"USDT": D("10"), "SOL": D("0.1")}})
    assert held.differences == (
        ReconLine("binance", "SOL", D("0"), D("0.1"), D("0.1"), "mismatch"),
    )


def test_accounts_limits_the_comparison_and_an_unreported_listed_account_holds_nothing():
    report = reconcile(BOOK, {"binance": {"BTC": D("1")}}, accounts=["cold"])
    assert report.lines == (
        ReconLine("cold", "BTC", D("0.002"), D("0"), D("-0.002"), "missing_at_exchange"),
    )


def test_report_serialises_decimals_as_strings():
    report = reconcile(BOOK[:1], {"binance": {"USDT": D("1000.5")}})
    assert report_to_dict(report) == {
        "ok": False,
        "lines": [{"account": "binance", "asset": "USDT", "ledger": "1000",
                   "reported": "1000.5", "difference": "0.5", "status": "mismatch"}],
    }  # fmt: skip


amounts = st.decimals(min_value=D("0.00000001"), max_value=D("100000"), places=8)


@settings(max_examples=60, deadline=None)
@given(
    moves=st.lists(
        st.tuples(st.sampled_from(["deposit", "withdrawal", "buy", "sell"]),
                  st.sampled_from(["BTC", "ETH"]), amounts, amounts),
        min_size=1, max_size=25,
    ),
    bump=amounts,
)  # fmt: skip
def test_the_ledger_reported_back_reconciles_and_one_changed_balance_is_the_only_line_flagged(
    moves: list[tuple[str, str, Decimal, Decimal]], bump: Decimal
) -> None:
    book = [
        entry(f"e{i}", kind, asset, str(amount),
              **({"counter_asset": "USD", "counter_amount": str(cost)}
                 if kind in ("buy", "sell") else {}))
        for i, (kind, asset, amount, cost) in enumerate(moves)
    ]  # fmt: skip
    derived = ledger_balances(book)
    reported = {"binance": {asset: amount for (_, asset), amount in derived.items()}}
    assert reconcile(book, reported).ok
    asset = book[0].asset
    reported["binance"][asset] += bump
    (line,) = reconcile(book, reported).differences
    assert (line.asset, line.difference) == (asset, bump)
    assert line.status != "ok"
