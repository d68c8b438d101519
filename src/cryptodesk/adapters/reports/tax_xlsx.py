"""The tax report as an Excel workbook (openpyxl).

Sheets: Disposals (Part, the Form 8949 columns (a) to (h), then asset,
amount, term, disposal, lot and account), Income, Summary (with the report's
warnings), Holdings and Missing acquisitions. Money cells are numbers at the
report's full precision, shown in a currency format rounded to cents; dates
are real dates (UTC) shown as MM/DD/YYYY; amounts are numbers.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from openpyxl import Workbook  # type: ignore[import-untyped]
from openpyxl.cell import WriteOnlyCell  # type: ignore[import-untyped]
from openpyxl.styles import Font  # type: ignore[import-untyped]
from openpyxl.utils import get_column_letter  # type: ignore[import-untyped]

from cryptodesk.adapters.reports.tax_csv import FORM_8949_COLUMNS
from cryptodesk.portfolio.tax_report import TaxReport, plain

_SYMBOLS: Final = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}
DATE_FORMAT: Final = "mm/dd/yyyy"
TIME_FORMAT: Final = "yyyy-mm-dd hh:mm:ss"
AMOUNT_FORMAT: Final = "#,##0.########"
SHEETS: Final = ("Disposals", "Income", "Summary", "Holdings", "Missing acquisitions")
_BOLD: Final = Font(bold=True)


def money_format(currency: str) -> str:
    """Excel's currency format for ``currency``: its symbol when well known, else its code."""
    symbol = _SYMBOLS.get(currency)
    if symbol is not None:
        return f'"{symbol}"#,##0.00'
    return f'#,##0.00 "{currency}"'


def _when(iso: str) -> datetime:
    # Excel has no time zones: cells hold the UTC wall time, labelled UTC in the headers.
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC).replace(tzinfo=None)


def _styled(sheet: Any, value: Any, *, number_format: str | None = None, bold: bool = False) -> Any:
    cell = WriteOnlyCell(sheet, value)
    if number_format is not None:
        cell.number_format = number_format
    if bold:
        cell.font = _BOLD
    return cell


def _sheet(
    book: Any,
    title: str,
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    formats: dict[int, str],
) -> None:
    """A streamed (write-only) sheet: a bold, frozen header row, then one row per line.

    ``formats`` maps 1-based column numbers to the number format of their cells.
    """
    sheet = book.create_sheet(title)
    for index, header in enumerate(headers, start=1):
        sheet.column_dimensions[get_column_letter(index)].width = max(12, min(40, len(header) + 2))
    sheet.freeze_panes = "A2"
    sheet.append([_styled(sheet, header, bold=True) for header in headers])
    styled = {column - 1: number_format for column, number_format in formats.items()}
    for row in rows:
        sheet.append(
            [
                value if value is None or i not in styled
                else _styled(sheet, value, number_format=styled[i])
                for i, value in enumerate(row)
            ]
        )  # fmt: skip


def tax_report_xlsx(report: TaxReport) -> bytes:
    """The workbook of a report built by ``build_tax_report``, as .xlsx bytes."""
    money = money_format(report["currency"])
    book = Workbook(write_only=True)
    disposals = sorted(report["disposals"], key=lambda d: d["term"] != "short")
    _sheet(
        book,
        "Disposals",
        ("Part", *FORM_8949_COLUMNS, "Asset", "Amount", "Term", "Disposal", "Lot", "Account"),
        (
            (
                "I" if d["term"] == "short" else "II",
                f"{plain(Decimal(d['amount']))} {d['asset']}",
                _when(d["acquired"]),
                _when(d["disposed"]),
                Decimal(d["proceeds"]),
                Decimal(d["cost_basis"]),
                None,
                None,
                Decimal(d["gain"]),
                d["asset"],
                Decimal(d["amount"]),
                d["term"],
                d["disposal_id"],
                d["lot_id"],
                d["account"],
            )
            for d in disposals
        ),
        {3: DATE_FORMAT, 4: DATE_FORMAT, 5: money, 6: money, 8: money, 9: money,
         11: AMOUNT_FORMAT},
    )  # fmt: skip
    _sheet(
        book,
        "Income",
        ("Received (UTC)", "Asset", "Amount", "Value", "Kind", "Account", "Entry"),
        (
            (_when(i["received"]), i["asset"], Decimal(i["amount"]), Decimal(i["value"]),
             i["subkind"], i["account"], i["entry_id"])
            for i in report["income"]
        ),
        {1: TIME_FORMAT, 3: AMOUNT_FORMAT, 4: money},
    )  # fmt: skip
    summary = report["summary"]
    year = report["year"]
    _summary_sheet(
        book,
        (
            ("Method", report["method"]),
            ("Currency", report["currency"]),
            ("Year", "all" if year is None else year),
            ("Per wallet", "yes" if report["per_wallet"] else "no"),
            ("Proceeds", Decimal(summary["proceeds"])),
            ("Cost basis", Decimal(summary["cost_basis"])),
            ("Gain or (loss)", Decimal(summary["gain"])),
            ("Short-term gain or (loss)", Decimal(summary["short_term_gain"])),
            ("Long-term gain or (loss)", Decimal(summary["long_term_gain"])),
            ("Income", Decimal(summary["income"])),
        ),
        report["warnings"],
        money,
    )
    per_wallet = bool(report["per_wallet"])
    _sheet(
        book,
        "Holdings",
        ("Asset", "Amount", "Cost basis", *(("Account",) if per_wallet else ())),
        (
            (h["asset"], Decimal(h["amount"]), Decimal(h["cost_basis"]),
             *((h.get("account", ""),) if per_wallet else ()))
            for h in report["holdings"]
        ),
        {2: AMOUNT_FORMAT, 3: money},
    )  # fmt: skip
    _sheet(
        book,
        "Missing acquisitions",
        ("Disposed (UTC)", "Asset", "Amount", "Proceeds", "Account", "Disposal"),
        (
            (_when(m["disposed"]), m["asset"], Decimal(m["amount"]), Decimal(m["proceeds"]),
             m["account"], m["disposal_id"])
            for m in report["missing_acquisitions"]
        ),
        {1: TIME_FORMAT, 3: AMOUNT_FORMAT, 4: money},
    )  # fmt: skip
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _summary_sheet(
    book: Any,
    rows: Sequence[tuple[str, Any]],
    warnings: Sequence[str],
    money: str,
) -> None:
    sheet = book.create_sheet("Summary")
    sheet.column_dimensions["A"].width = 28
    sheet.column_dimensions["B"].width = 22
    for label, value in rows:
        shown = _styled(sheet, value, number_format=money) if isinstance(value, Decimal) else value
        sheet.append([_styled(sheet, label, bold=True), shown])
    if warnings:
        sheet.append([])
        sheet.append([_styled(sheet, "Warnings", bold=True)])
        for warning in warnings:
            sheet.append([warning])
