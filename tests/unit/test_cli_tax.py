"""``cryptodesk tax report`` as a user runs it over a ledger CSV, in every format,
and the mistakes users make (each one line on stderr and exit code 2)."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest
from typer.testing import CliRunner

from cryptodesk.cli_tax import register
from cryptodesk.observability.logging import configure_logging
from cryptodesk.portfolio.ledger import LedgerEntry
from cryptodesk.services.tax_reports import TaxReportOptions, render_tax_report
from tests.unit._cli import cli_app

HEADER = "id,timestamp,kind,account,asset,amount,counter_asset,counter_amount,fee_asset,fee_amount,to_account,value,lot_ids,note\n"  # noqa: E501
LEDGER = HEADER + (
    "b1,2023-01-05T00:00:00Z,buy,kraken,BTC,1,USD,10000,,,,,,\n"
    "b2,2023-06-01T00:00:00Z,buy,cold,BTC,1,USD,20000,,,,,,\n"
    "s1,2024-02-01T00:00:00Z,sell,kraken,BTC,1.5,USD,45000,,,,,,first sale\n"
    "i1,2024-05-01T12:00:00Z,income:staking,kraken,ETH,0.1,,,,,,250.50,,\n"
)
runner = CliRunner()
pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture(autouse=True)
def quiet_logging() -> None:
    configure_logging("json", "WARNING")


APP = cli_app(register)


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(APP, ["tax", "report", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.csv"
    path.write_text(LEDGER, encoding="utf-8")
    return path


def test_json_to_stdout_is_the_fifo_report_of_the_year(ledger: Path) -> None:
    code, stdout, stderr = run("--ledger", str(ledger), "--method", "fifo", "--year", "2024")
    assert (code, stderr) == (0, "")
    report = json.loads(stdout)
    # Proceeds of the 1.5 BTC sale are split over the two lots by amount (1 : 0.5),
    # at the engine's split step of 1e-8.
    assert report == {
        "year": 2024, "method": "fifo", "currency": "USD", "per_wallet": False,
        "summary": {"proceeds": "45000.00000000", "cost_basis": "20000.00000000",
                    "gain": "25000.00000000", "short_term_gain": "5000.00000000",
                    "long_term_gain": "20000.00000000", "income": "250.50"},
        "disposals": [
            {"disposal_id": "s1", "asset": "BTC", "amount": "1",
             "acquired": "2023-01-05T00:00:00.000Z", "disposed": "2024-02-01T00:00:00.000Z",
             "proceeds": "30000.00000000", "cost_basis": "10000", "gain": "20000.00000000",
             "term": "long", "lot_id": "b1", "account": "kraken", "kind": "sell"},
            {"disposal_id": "s1", "asset": "BTC", "amount": "0.5",
             "acquired": "2023-06-01T00:00:00.000Z", "disposed": "2024-02-01T00:00:00.000Z",
             "proceeds": "15000.00000000", "cost_basis": "10000.00000000",
             "gain": "5000.00000000", "term": "short", "lot_id": "b2", "account": "kraken",
             "kind": "sell"},
        ],
        "income": [{"entry_id": "i1", "asset": "ETH", "amount": "0.1",
                    "received": "2024-05-01T12:00:00.000Z", "value": "250.50",
                    "subkind": "staking", "account": "kraken"}],
        "holdings": [{"asset": "BTC", "amount": "0.5", "cost_basis": "10000.00000000"},
                     {"asset": "ETH", "amount": "0.1", "cost_basis": "250.50"}],
        "missing_acquisitions": [],
        "warnings": [],
    }  # fmt: skip


def test_csv_to_stdout_is_form_8949(ledger: Path) -> None:
    code, stdout, stderr = run("--ledger", str(ledger), "--method", "LIFO", "--format", "csv")
    assert (code, stderr) == (0, "")
    # LIFO: the June lot (20,000) first, then half of the January lot (5,000).
    assert stdout.splitlines()[1:] == [
        "I,1 BTC,06/01/2023,02/01/2024,30000.00,20000.00,,,10000.00",
        "II,0.5 BTC,01/05/2023,02/01/2024,15000.00,5000.00,,,10000.00",
    ]


def test_per_wallet_long_term_days_and_a_year_without_sales(ledger: Path) -> None:
    # Per wallet, kraken only holds the January lot: 1 BTC of the 1.5 sold is
    # matched, 0.5 is a missing acquisition; 392 days is short under a 400-day rule.
    code, stdout, _ = run("--ledger", str(ledger), "--method", "fifo", "--per-wallet",
                          "--long-term-days", "400")  # fmt: skip
    assert code == 0
    report = json.loads(stdout)
    assert [(d["lot_id"], d["amount"], d["term"]) for d in report["disposals"]] == [
        ("b1", "1", "short")
    ]
    assert [(m["account"], m["amount"], m["proceeds"]) for m in report["missing_acquisitions"]] == [
        ("kraken", "0.5", "15000.00000000")
    ]  # fmt: skip
    assert report["holdings"] == [
        {"asset": "BTC", "amount": "1", "cost_basis": "20000", "account": "cold"},
        {"asset": "ETH", "amount": "0.1", "cost_basis": "250.50", "account": "kraken"},
    ]
    code, stdout, _ = run("--ledger", str(ledger), "--method", "uk", "--year", "2023")
    assert code == 0
    report = json.loads(stdout)
    assert (report["disposals"], report["summary"]["gain"]) == ([], "0")
    assert report["holdings"] == [{"asset": "BTC", "amount": "2", "cost_basis": "30000"}]


def test_every_format_to_a_file(ledger: Path, tmp_path: Path) -> None:
    written = {}
    for fmt in ("json", "csv", "pdf", "xlsx"):
        out = tmp_path / f"tax.{fmt}"
        code, stdout, stderr = run("--ledger", str(ledger), "--method", "hifo", "--year", "2024",
                                   "--format", fmt, "--output", str(out))  # fmt: skip
        assert (code, stdout, stderr) == (0, f"wrote {fmt} tax report to {out}\n", "")
        written[fmt] = out.read_bytes()
    _, stdout, _ = run("--ledger", str(ledger), "--method", "hifo", "--year", "2024")
    assert written["json"].decode() == stdout
    assert written["csv"].decode().count("\n") == 3
    assert written["pdf"].startswith(b"%PDF-")
    book = openpyxl.load_workbook(io.BytesIO(written["xlsx"]))
    rows = list(book["Disposals"].iter_rows(values_only=True))
    assert [(r[0], r[1], r[4], r[5]) for r in rows[1:]] == [
        ("I", "1 BTC", 30000, 20000), ("II", "0.5 BTC", 15000, 5000),
    ]  # fmt: skip


def test_render_is_shared_by_every_entry_source() -> None:
    entries = [
        LedgerEntry("b1", 1_704_067_200_000, "buy", "a", "ETH", Decimal(2), "EUR", Decimal(3000))
    ]
    text = render_tax_report(entries, TaxReportOptions(method="average", currency="EUR"))
    assert isinstance(text, str)
    assert json.loads(text)["holdings"] == [{"asset": "ETH", "amount": "2", "cost_basis": "3000"}]
    pdf = render_tax_report(entries, TaxReportOptions(method="fifo", currency="EUR", format="pdf"))
    assert isinstance(pdf, bytes)
    assert pdf.startswith(b"%PDF-")


BINARY = "writes a binary file: give --output PATH"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "fofi"],
         "--method 'fofi' is not one of fifo, lifo, hifo, specific, average, uk"),
        (["--method", "fifo", "--format", "html"],
         "--format 'html' is not one of json, csv, pdf, xlsx"),
        (["--method", "fifo", "--format", "pdf"], f"--format pdf {BINARY}"),
        (["--method", "fifo", "--format", "xlsx"], f"--format xlsx {BINARY}"),
        (["--method", "fifo", "--year", "24"], "--year '24' is not a year such as 2024"),
        (["--method", "fifo", "--year", "2008"], "--year: year 2008 is out of range (2009..2999)"),
        (["--method", "fifo", "--currency", "US$"],
         "--currency 'US$' is not a currency code such as USD"),
        (["--method", "fifo", "--long-term-days", "0"],
         "--long-term-days '0' is not a positive whole number"),
        (["--method", "uk", "--per-wallet"],
         "the uk method pools per person (HMRC): it cannot be applied per wallet"),
    ],
)  # fmt: skip
def test_bad_options_are_one_line_and_exit_2(ledger: Path, args: list[str], message: str) -> None:
    code, stdout, stderr = run("--ledger", str(ledger), *args)
    assert (code, stdout, stderr) == (2, "", f"cryptodesk: error: {message}\n")


def test_bad_files_are_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    assert run("--ledger", str(missing), "--method", "fifo") == (
        2, "", f"cryptodesk: error: --ledger {missing}: no such file\n",
    )  # fmt: skip
    assert run("--ledger", str(tmp_path), "--method", "fifo") == (
        2, "", f"cryptodesk: error: --ledger {tmp_path}: not a file\n",
    )  # fmt: skip
    bad_row = tmp_path / "bad.csv"
    bad_row.write_text(LEDGER + "s2,2024-03-01T00:00:00Z,sell,kraken,BTC,-1,USD,5,,,,,,\n")
    assert run("--ledger", str(bad_row), "--method", "fifo") == (
        2, "", f"cryptodesk: error: {bad_row}: line 6: amount must be positive, got -1\n",
    )  # fmt: skip
    # A crypto-to-crypto trade needs its fair value: the engine refuses to guess it.
    no_value = tmp_path / "swap.csv"
    no_value.write_text(LEDGER + "t1,2024-03-01T00:00:00Z,sell,kraken,BTC,0.1,ETH,2,,,,,,\n")
    assert run("--ledger", str(no_value), "--method", "fifo") == (
        2, "", "cryptodesk: error: entry t1: value is required for a crypto-to-crypto trade\n",
    )  # fmt: skip


def test_an_unwritable_output_is_one_line_and_exit_2(ledger: Path, tmp_path: Path) -> None:
    out = tmp_path / "no-such-dir" / "tax.pdf"
    code, stdout, stderr = run("--ledger", str(ledger), "--method", "fifo", "--format", "pdf",
                               "--output", str(out))  # fmt: skip
    assert (code, stdout) == (2, "")
    assert stderr == f"cryptodesk: error: --output {out}: No such file or directory\n"
    assert list(tmp_path.iterdir()) == [ledger]
