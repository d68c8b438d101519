"""Stablecoins valued at par with the report currency: only when asked, never over a given value."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from typer.testing import CliRunner

from cryptodesk.cli import app
from cryptodesk.domain.errors import DomainError
from cryptodesk.portfolio.cost_basis import compute
from cryptodesk.portfolio.ledger import LedgerEntry
from cryptodesk.portfolio.tax_events import with_par_values

T0 = 1_704_067_200_000  # 2024-01-01
DAY = 86_400_000


def ledger() -> list[LedgerEntry]:
    return [
        LedgerEntry("d1", T0, "deposit", "binance", "USDT", D("1000")),
        LedgerEntry("b1", T0 + DAY, "buy", "binance", "BTC", D("0.02"), counter_asset="USDT",
                    counter_amount=D("800"), fee_asset="USDT", fee_amount=D("0.8")),
        LedgerEntry("s1", T0 + 2 * DAY, "sell", "binance", "BTC", D("0.01"),
                    counter_asset="USDT", counter_amount=D("500")),
        LedgerEntry("s2", T0 + 3 * DAY, "sell", "binance", "BTC", D("0.01"),
                    counter_asset="USDT", counter_amount=D("450"), value=D("449.10")),
    ]  # fmt: skip


def test_without_par_a_usdt_trade_in_a_usd_report_needs_its_value() -> None:
    with pytest.raises(DomainError, match="entry b1: value is required"):
        compute(ledger(), method="fifo", currency="USD")


def test_par_values_fill_only_what_is_missing() -> None:
    filled = {e.id: e for e in with_par_values(ledger(), "USD", ["USDT"])}
    assert filled["d1"].value == D("1000")
    assert (filled["b1"].value, filled["b1"].fee_value) == (D("800"), D("0.8"))
    assert filled["s1"].value == D("500")
    assert filled["s2"].value == D("449.10")  # given: kept
    assert with_par_values(ledger(), "USDT", ["USDT"]) == ledger()  # the currency itself


def test_fifo_with_usdt_at_par() -> None:
    result = compute(ledger(), method="fifo", currency="USD", par=["USDT"])
    btc = [(d.disposal_id, d.proceeds, d.cost_basis, d.gain) for d in result.disposals
           if d.asset == "BTC"]  # fmt: skip
    # b1: 0.02 BTC for 800 USDT + 0.8 USDT fee = 800.8 USD of cost, 400.4 per 0.01.
    assert btc == [("s1", D("500"), D("400.4"), D("99.6")), ("s2", D("449.10"), D("400.4"),
                                                               D("48.70"))]  # fmt: skip
    usdt = [(d.disposal_id, d.gain) for d in result.disposals if d.asset == "USDT"]
    # USDT deposited at par and spent at par: no gain on the stablecoin itself.
    assert all(gain == 0 for _, gain in usdt)
    holding = {h.asset: (h.amount, h.cost_basis) for h in result.holdings}
    assert holding["USDT"] == (D("1000") - D("800.8") + D("500") + D("450"),
                               D("1000") - D("800.8") + D("500") + D("449.10"))  # fmt: skip


def test_cli_par_option(tmp_path) -> None:
    path = tmp_path / "ledger.csv"
    path.write_text(
        "id,timestamp,kind,account,asset,amount,counter_asset,counter_amount,fee_asset,"
        "fee_amount,to_account,value,lot_ids,note\n"
        "b1,2024-01-02T00:00:00Z,buy,binance,BTC,0.02,USDT,800,USDT,0.8,,,,\n"
        "s1,2024-01-03T00:00:00Z,sell,binance,BTC,0.01,USDT,500,,,,,,\n"
    )
    runner = CliRunner()
    refused = runner.invoke(app, ["tax", "report", "--ledger", str(path), "--method", "fifo"])
    assert refused.exit_code == 2
    assert "value is required for a crypto-to-crypto trade" in refused.stderr
    ok = runner.invoke(
        app, ["tax", "report", "--ledger", str(path), "--method", "fifo", "--par", "usdt"]
    )
    assert ok.exit_code == 0, ok.output
    assert '"gain": "99.6' in ok.stdout
    bad = runner.invoke(
        app, ["tax", "report", "--ledger", str(path), "--method", "fifo", "--par", "us dt"]
    )
    assert bad.exit_code == 2
