"""The tax report's disposals as a CSV in the columns of IRS Form 8949.

One table, one row per matched lot, with a leading ``Part`` column: ``I``
(short term: held one year or less) rows first, then ``II`` (long term),
each in the order of the report. The eight columns are the form's own,
(a) to (h). Money is rounded half up to cents here only (the JSON report
keeps full precision), and (h) is (d) minus (e) of the rounded values so
every row adds up as the form requires. Columns (f) and (g) stay empty: no
adjustment (such as a wash sale) is computed.

Disposals no acquisition covers cannot go on the form without a basis; they
are not dropped either: they follow as ``missing acquisition`` rows with
(b), (e) and (h) empty, for whoever prepares the return to resolve.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Final

from cryptodesk.portfolio.tax_report import (
    TaxReport,
    form_8949_lines,
    plain,
    to_cents,
    us_date,
    utc_date,
)

FORM_8949_COLUMNS: Final[tuple[str, ...]] = (
    "(a) Description of property",
    "(b) Date acquired",
    "(c) Date sold or disposed of",
    "(d) Proceeds",
    "(e) Cost or other basis",
    "(f) Code(s)",
    "(g) Amount of adjustment",
    "(h) Gain or (loss)",
)
CSV_COLUMNS: Final = ("Part", *FORM_8949_COLUMNS)
MISSING_PART: Final = "missing acquisition"


def tax_report_csv(report: TaxReport) -> str:
    """The Form 8949 CSV of a report built by ``build_tax_report``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for line in form_8949_lines(report):
        writer.writerow(
            (
                line.part,
                line.description,
                us_date(line.acquired),
                us_date(line.disposed),
                str(line.proceeds),
                str(line.cost_basis),
                line.code,
                "" if line.adjustment is None else str(line.adjustment),
                str(line.gain),
            )
        )
    for missing in report["missing_acquisitions"]:
        writer.writerow(
            (
                MISSING_PART,
                f"{plain(Decimal(missing['amount']))} {missing['asset']}",
                "",
                us_date(utc_date(missing["disposed"])),
                str(to_cents(Decimal(missing["proceeds"]))),
                "",
                "",
                "",
                "",
            )
        )
    return out.getvalue()
