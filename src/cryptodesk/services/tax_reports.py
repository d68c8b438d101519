"""A tax report of some ledger entries, rendered in one of its formats.

Shared by ``cryptodesk tax report`` (a ledger file or a tenant's stored
ledger) and ``GET /api/v1/reports/tax``, so both give the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from cryptodesk.domain.errors import DomainError
from cryptodesk.portfolio.ledger import LedgerEntry
from cryptodesk.portfolio.tax_lots import LONG_TERM_DAYS

FORMATS: Final = ("json", "csv", "pdf", "xlsx")
BINARY_FORMATS: Final = ("pdf", "xlsx")
MEDIA_TYPES: Final = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "pdf": "application/pdf",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


@dataclass(frozen=True, slots=True)
class TaxReportOptions:
    method: str
    currency: str = "USD"
    year: int | None = None
    per_wallet: bool = False
    long_term_days: int = LONG_TERM_DAYS
    format: str = "json"
    # Assets valued 1:1 with the currency where an entry has no value.
    par: tuple[str, ...] = ()


def render_tax_report(entries: Iterable[LedgerEntry], options: TaxReportOptions) -> str | bytes:
    """The report of ``entries`` in ``options.format``: text for json/csv, bytes for pdf/xlsx.

    Raises ``DomainError`` when the engine cannot account for an entry (such as
    a crypto-to-crypto trade without a value).
    """
    from cryptodesk.portfolio.tax_report import tax_report_for

    if options.format not in FORMATS:
        raise DomainError(
            f"format {options.format!r} is not one of {', '.join(FORMATS)}", field="format"
        )
    report = tax_report_for(
        entries,
        method=options.method,
        currency=options.currency,
        year=options.year,
        per_wallet=options.per_wallet,
        long_term_days=options.long_term_days,
        par=options.par,
    )
    if options.format == "json":
        return json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    if options.format == "csv":
        from cryptodesk.adapters.reports.tax_csv import tax_report_csv

        return tax_report_csv(report)
    if options.format == "pdf":
        from cryptodesk.adapters.reports.tax_pdf import tax_report_pdf

        return tax_report_pdf(report)
    from cryptodesk.adapters.reports.tax_xlsx import tax_report_xlsx

    return tax_report_xlsx(report)
