"""The tax report's files: Form 8949 CSV, XLSX (read back with openpyxl) and PDF
(its content streams inflated and their text read back)."""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from datetime import datetime
from decimal import Decimal

import openpyxl
import pytest

from cryptodesk.adapters.reports.tax_csv import tax_report_csv
from cryptodesk.adapters.reports.tax_pdf import tax_report_pdf
from cryptodesk.adapters.reports.tax_xlsx import SHEETS, money_format, tax_report_xlsx
from cryptodesk.domain.timeutil import parse_time
from cryptodesk.portfolio.tax_lots import (
    CostBasisResult,
    DisposalLine,
    Holding,
    IncomeLine,
    MissingAcquisition,
)
from cryptodesk.portfolio.tax_report import build_tax_report

D = Decimal


def t(text: str) -> int:
    return parse_time(text)


def line(id: str, amount: str, asset: str, acquired: str, disposed: str, proceeds: str,
         cost: str, term: str, lot: str) -> DisposalLine:  # fmt: skip
    return DisposalLine(id, asset, D(amount), t(acquired), t(disposed), D(proceeds), D(cost),
                        D(proceeds) - D(cost), term, lot, "kraken", "sell")  # fmt: skip


RESULT = CostBasisResult(
    method="fifo",
    currency="USD",
    per_wallet=False,
    disposals=[
        line("s1", "1", "BTC", "2023-01-05", "2024-02-01", "30000", "10000", "long", "b1"),
        line(
            "s1",
            "0.50000000",
            "BTC",
            "2023-06-01",
            "2024-02-01",
            "15000.005",
            "10000.004",
            "short",
            "b2",
        ),
        line(
            "s2",
            "2",
            "ETH",
            "2024-03-01",
            "2024-11-30T23:30:00Z",
            "100.125",
            "300.335",
            "short",
            "b3",
        ),
    ],
    income=[
        IncomeLine(
            "i1", "ETH", D("0.1"), t("2024-05-01T12:00:00Z"), D("250.5"), "staking", "kraken"
        )
    ],
    holdings=[Holding("BTC", D("0.5"), D("10000.000"))],
    missing_acquisitions=[
        MissingAcquisition("s9", "SOL", D("3"), t("2024-07-01T08:30:00Z"), D("450"), "binance")
    ],
)
REPORT = build_tax_report(RESULT, year=2024)


def test_csv_has_the_form_8949_columns_part_i_then_part_ii_in_cents() -> None:
    # 15000.005 -> 15000.01 and 10000.004 -> 10000.00 (half up), so (h) is 5000.01:
    # (d) - (e) of the rounded values, while the JSON keeps 5000.001.
    assert tax_report_csv(REPORT) == (
        "Part,(a) Description of property,(b) Date acquired,(c) Date sold or disposed of,"
        "(d) Proceeds,(e) Cost or other basis,(f) Code(s),(g) Amount of adjustment,"
        "(h) Gain or (loss)\n"
        "I,0.5 BTC,06/01/2023,02/01/2024,15000.01,10000.00,,,5000.01\n"
        "I,2 ETH,03/01/2024,11/30/2024,100.13,300.34,,,-200.21\n"
        "II,1 BTC,01/05/2023,02/01/2024,30000.00,10000.00,,,20000.00\n"
        "missing acquisition,3 SOL,,07/01/2024,450.00,,,,\n"
    )
    assert REPORT["disposals"][1]["gain"] == "5000.001"


def test_csv_of_an_empty_report_is_the_header_alone() -> None:
    empty = build_tax_report(CostBasisResult("uk", "GBP", False), year=2024)
    assert tax_report_csv(empty).count("\n") == 1


def _book(data: bytes) -> openpyxl.Workbook:
    return openpyxl.load_workbook(io.BytesIO(data))


def test_xlsx_sheets_hold_numbers_dates_and_currency_formats() -> None:
    data = tax_report_xlsx(REPORT)
    book = _book(data)
    assert book.sheetnames == list(SHEETS)
    disposals = book["Disposals"]
    rows = list(disposals.iter_rows(values_only=True))
    assert rows[0] == (
        "Part", "(a) Description of property", "(b) Date acquired",
        "(c) Date sold or disposed of", "(d) Proceeds", "(e) Cost or other basis",
        "(f) Code(s)", "(g) Amount of adjustment", "(h) Gain or (loss)",
        "Asset", "Amount", "Term", "Disposal", "Lot", "Account",
    )  # fmt: skip
    assert rows[1] == (
        "I", "0.5 BTC", datetime(2023, 6, 1), datetime(2024, 2, 1), 15000.005, 10000.004,
        None, None, 5000.001, "BTC", 0.5, "short", "s1", "b2", "kraken",
    )  # fmt: skip
    assert rows[2][:9] == ("I", "2 ETH", datetime(2024, 3, 1), datetime(2024, 11, 30, 23, 30),
                           100.125, 300.335, None, None, -200.21)  # fmt: skip
    assert rows[3][0:2] == ("II", "1 BTC")
    assert len(rows) == 4
    assert disposals.freeze_panes == "A2"
    assert disposals.cell(1, 1).font.bold is True
    assert disposals.cell(2, 1).font.bold is False
    assert [disposals.cell(2, c).number_format for c in (3, 4, 5, 6, 9)] == [
        "mm/dd/yyyy", "mm/dd/yyyy", '"$"#,##0.00', '"$"#,##0.00', '"$"#,##0.00',
    ]  # fmt: skip
    # The cells hold the report's decimal text, never a binary float's digits.
    sheet_xml = zipfile.ZipFile(io.BytesIO(data)).read("xl/worksheets/sheet1.xml").decode()
    assert "<v>15000.005</v>" in sheet_xml
    assert "<v>10000.004</v>" in sheet_xml
    assert "<v>5000.001</v>" in sheet_xml

    summary = {row[0]: row[1] for row in book["Summary"].iter_rows(values_only=True) if row[0]}
    assert summary == {
        "Method": "fifo", "Currency": "USD", "Year": 2024, "Per wallet": "no",
        "Proceeds": 45100.13, "Cost basis": 20300.339, "Gain or (loss)": 24799.791,
        "Short-term gain or (loss)": 4799.791, "Long-term gain or (loss)": 20000,
        "Income": 250.5, "Warnings": None,
        REPORT["warnings"][0]: None,
    }  # fmt: skip
    assert list(book["Income"].iter_rows(values_only=True))[1] == (
        datetime(2024, 5, 1, 12), "ETH", 0.1, 250.5, "staking", "kraken", "i1",
    )  # fmt: skip
    assert list(book["Holdings"].iter_rows(values_only=True)) == [
        ("Asset", "Amount", "Cost basis"), ("BTC", 0.5, 10000),
    ]  # fmt: skip
    assert book["Holdings"].cell(2, 3).number_format == '"$"#,##0.00'
    assert list(book["Missing acquisitions"].iter_rows(values_only=True)) == [
        ("Disposed (UTC)", "Asset", "Amount", "Proceeds", "Account", "Disposal"),
        (datetime(2024, 7, 1, 8, 30), "SOL", 3, 450, "binance", "s9"),
    ]


def test_xlsx_per_wallet_holdings_name_the_account() -> None:
    result = CostBasisResult("average", "EUR", True, holdings=[Holding("ETH", D(2), D(10), "cold")])
    book = _book(tax_report_xlsx(build_tax_report(result)))
    assert list(book["Holdings"].iter_rows(values_only=True)) == [
        ("Asset", "Amount", "Cost basis", "Account"), ("ETH", 2, 10, "cold"),
    ]  # fmt: skip
    assert book["Holdings"].cell(2, 3).number_format == '"€"#,##0.00'
    assert book["Summary"]["B3"].value == "all"


def test_money_formats_name_unknown_currencies_by_code() -> None:
    assert money_format("GBP") == '"£"#,##0.00'
    assert money_format("CHF") == '#,##0.00 "CHF"'


# --- PDF -------------------------------------------------------------------------------

_STREAM = re.compile(rb"<<([^<>]*)>>\s*stream\r?\n(.*?)\r?\nendstream", re.S)
# A content stream's tokens: a string literal (its parentheses are escaped) or any other token.
_TOKEN = re.compile(rb"\((?:\\.|[^\\)])*\)|[^\s()]+")


def pdf_pages(pdf: bytes) -> list[str]:
    """The text of each page: its content stream inflated, the strings shown (``Tj``)
    between each ``BT`` and ``ET`` joined as one line."""
    pages = []
    for header, body in _STREAM.findall(pdf):
        content = zlib.decompress(body) if b"/FlateDecode" in header else body
        lines: list[str] = []
        parts: list[bytes] = []
        operand = b""
        for token in _TOKEN.findall(content):
            if token.startswith(b"("):
                operand = re.sub(rb"\\(.)", rb"\1", token[1:-1])
            elif token == b"Tj":
                parts.append(operand)
            elif token == b"BT":
                parts = []
            elif token == b"ET" and parts:
                lines.append(b"".join(parts).decode("latin-1"))
        pages.append("\n".join(lines))
    return pages


def page_count(pdf: bytes) -> int:
    counts = re.findall(rb"/Type /Pages\b", pdf)
    assert len(counts) == 1
    return int(re.findall(rb"/Count (\d+)", pdf)[0])


def test_pdf_has_a_summary_page_both_parts_and_the_other_tables() -> None:
    pdf = tax_report_pdf(REPORT)
    assert pdf.startswith(b"%PDF-")
    assert b"/FlateDecode" in pdf  # compressed by default
    pages = pdf_pages(pdf)
    assert page_count(pdf) == len(pages) == 4
    summary = pages[0].splitlines()
    assert summary[1] == "Method: fifo    Currency: USD    Year: 2024    Per wallet: no"
    for label, value in (
        ("Proceeds", "45,100.13 USD"),
        ("Cost basis", "20,300.34 USD"),
        ("Gain or (loss)", "24,799.79 USD"),
        ("Short-term gain or (loss)", "4,799.79 USD"),
        ("Long-term gain or (loss)", "20,000.00 USD"),
        ("Income", "250.50 USD"),
    ):
        assert summary[summary.index(label) + 1] == value  # fmt: skip
    assert "- " + REPORT["warnings"][0] in pages[0]
    part_one = pages[1].splitlines()
    assert part_one[0] == "Part I - Short-term: held one year or less"
    # Column titles as the form prints them, three of them on two lines.
    assert part_one[1:12] == [
        "(a) Description of property", "(b) Date acquired", "(c) Date sold or", "disposed of",
        "(d) Proceeds", "(e) Cost or", "other basis", "(f) Code(s)", "(g) Amount of",
        "adjustment", "(h) Gain or (loss)",
    ]  # fmt: skip
    assert part_one[12:] == [
        "0.5 BTC", "06/01/2023", "02/01/2024", "15,000.01", "10,000.00", "5,000.01",
        "2 ETH", "03/01/2024", "11/30/2024", "100.13", "300.34", "-200.21",
        "Totals (Part I, 2 lines)", "15,100.14", "10,300.34", "4,799.80",
        "cryptodesk tax report - page 2 of 4",
    ]  # fmt: skip
    assert "Part II - Long-term: held more than one year" in pages[2]
    assert "30,000.00" in pages[2]
    assert "cryptodesk tax report - page 4 of 4" in pages[3]
    for text in (
        "Income",
        "250.50",
        "Holdings at the end of the period",
        "10,000.00",
        "Missing acquisitions (disposals no lot covers; not in the totals)",
        "2024-07-01 08:30:00",
        "450.00",
        "binance",
    ):
        assert text in pages[3].splitlines()  # fmt: skip


def test_a_long_pdf_repeats_the_header_and_numbers_every_page() -> None:
    # 100 short-term lines on landscape Letter (215.9 mm high): rows of 6 mm, page
    # break at 215.9 - 15 = 200.9 mm. The first Part I page starts its rows at
    # 10 + 8 (heading) + 9 (header) = 27 mm: 27 + 28 x 6 = 195 fits, 201 does not,
    # so 28 rows; later pages start at 10 + 9 = 19 mm: 19 + 30 x 6 = 199, so 30.
    # 28 + 30 + 30 + 12 = 100; then Part II and the other tables: 1 + 4 + 1 + 1 pages.
    lines = [
        DisposalLine(f"s{i}", "BTC", D("0.01"), t("2023-06-01"), t("2024-02-01"),
                     D("100.005"), D(50), D("50.005"), "short", "b1", "kraken", "sell")
        for i in range(100)
    ]  # fmt: skip
    report = build_tax_report(CostBasisResult("fifo", "USD", False, disposals=lines), year=2024)
    pdf = tax_report_pdf(report, compress=False)
    assert pdf.startswith(b"%PDF-")
    assert b"/FlateDecode" not in pdf
    pages = pdf_pages(pdf)
    assert page_count(pdf) == len(pages) == 7
    rows_per_page = [p.count("0.01 BTC") for p in pages]
    assert rows_per_page == [0, 28, 30, 30, 12, 0, 0]
    for number, page in enumerate(pages[1:5], start=2):
        assert page.count("(a) Description of property") == 1
        assert page.endswith(f"cryptodesk tax report - page {number} of 7")
    # Lines: 100.01 - 50.00 = 50.01 each, so Part I totals 5,001.00; the summary
    # rounds the exact total gain 5,000.50.
    assert "Totals (Part I, 100 lines)\n10,001.00\n5,000.00\n5,001.00" in pages[4]
    assert "Gain or (loss)\n5,000.50 USD" in pages[0]
    assert "No long-term disposals." in pages[5]
    assert "No income." in pages[6]
    assert "No holdings." in pages[6]


def test_pdf_prints_characters_outside_latin_1_as_question_marks() -> None:
    result = CostBasisResult("fifo", "USD", False, warnings=["wallet «Ünï» ✓"])
    pages = pdf_pages(tax_report_pdf(build_tax_report(result)))
    assert "- wallet «Ünï» ?" in pages[0]


@pytest.mark.parametrize("amount", ["0.123456789012345678", "123456789012.123456789012"])
def test_pdf_shrinks_a_long_description_instead_of_cutting_it(amount: str) -> None:
    result = CostBasisResult("fifo", "USD", False, disposals=[
        DisposalLine("s1", "VERYLONGTOKENNAME", D(amount), t("2024-01-01"), t("2024-02-01"),
                     D(1), D(1), D(0), "short", "b1", "a", "sell"),
    ])  # fmt: skip
    pages = pdf_pages(tax_report_pdf(build_tax_report(result)))
    assert f"{amount} VERYLONGTOKENNAME" in pages[1].splitlines()
