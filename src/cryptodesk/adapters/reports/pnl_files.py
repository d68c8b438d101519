"""The daily PnL report as files: CSV, XLSX and HTML with an inline SVG chart.

Files land at ``<directory>/<tenant>/pnl-YYYY-MM-DD.<ext>``. Each is written
to a temporary file in the same directory and renamed over the target, so a
reader never sees half a file and a re-run replaces the day's files whole.
The bytes depend on the report alone (no generation time, fixed timestamps
inside the XLSX zip), so re-running an unchanged day writes identical files.

- CSV: the report table (``portfolio.pnl_report.COLUMNS``), exact decimals,
  an empty cell where a figure is unknown, the ``TOTAL`` row last.
- XLSX: the same table on sheet ``PnL`` with numbers as numbers (money in a
  two-decimal format, amounts and prices at full precision) and the notes
  on sheet ``Notes``.
- HTML: a self-contained page (no script, no external resource): the notes,
  the table and an SVG bar chart of each position's day PnL drawn from the
  numbers. Every text goes through jinja2's autoescaping.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Final

import jinja2

from cryptodesk.domain.errors import DomainError
from cryptodesk.portfolio.pnl_report import COLUMNS, PnlReport, summary_lines, table

FORMATS: Final = ("csv", "xlsx", "html")
_TENANT: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
MONEY_FORMAT: Final = "#,##0.00;-#,##0.00"
AMOUNT_FORMAT: Final = "#,##0.##########"
_NUMBER_FORMATS: Final = {
    "amount": AMOUNT_FORMAT, "price": AMOUNT_FORMAT, "market_value": MONEY_FORMAT,
    "day_pnl": MONEY_FORMAT, "realized": MONEY_FORMAT, "income": MONEY_FORMAT,
    "unrealized": MONEY_FORMAT,
}  # fmt: skip
_ZIP_TIME: Final = (1980, 1, 1, 0, 0, 0)


def report_path(directory: Path, tenant: str, day_iso: str, fmt: str) -> Path:
    """``<directory>/<tenant>/pnl-<day>.<fmt>``; the tenant must be a safe file name."""
    if not _TENANT.match(tenant):
        raise DomainError(f"tenant {tenant!r} cannot name a report directory", field="tenant")
    if fmt not in FORMATS:
        raise DomainError(f"format {fmt!r} is not one of {', '.join(FORMATS)}", field="formats")
    return directory / tenant / f"pnl-{day_iso}.{fmt}"


def write(report: PnlReport, directory: Path, formats: Sequence[str]) -> list[Path]:
    """Write the report in each of ``formats``; returns the paths, in that order."""
    render = {"csv": to_csv, "xlsx": to_xlsx, "html": to_html}
    paths = [report_path(directory, report.tenant, report.day.isoformat(), f) for f in formats]
    for fmt, path in zip(formats, paths, strict=True):
        atomic_write(path, render[fmt](report))
    return paths


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` all at once (temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _text(value: str | Decimal | None) -> str:
    if value is None:
        return ""
    return format(value, "f") if isinstance(value, Decimal) else value


def to_csv(report: PnlReport) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in table(report):
        writer.writerow([_text(cell) for cell in row])
    return buffer.getvalue().encode("utf-8")


def to_xlsx(report: PnlReport) -> bytes:
    # openpyxl on first use: API processes that never write a workbook do not load it.
    from openpyxl import Workbook  # type: ignore[import-untyped]
    from openpyxl.styles import Font  # type: ignore[import-untyped]
    from openpyxl.writer.excel import ExcelWriter  # type: ignore[import-untyped]

    book = Workbook()
    sheet = book.active
    sheet.title = "PnL"
    rows = table(report)
    for row in rows:
        sheet.append(row)
    for cell in (*sheet[1], *sheet[sheet.max_row]):
        cell.font = Font(bold=True)
    for column, name in enumerate(COLUMNS, start=1):
        number_format = _NUMBER_FORMATS.get(name)
        if number_format is not None:
            for r in range(2, sheet.max_row + 1):
                sheet.cell(row=r, column=column).number_format = number_format
    sheet.freeze_panes = "A2"
    notes = book.create_sheet("Notes")
    for line in summary_lines(report):
        notes.append([line])
    # Fixed document times: the workbook's bytes must not depend on when it was written.
    fixed = datetime(report.day.year, report.day.month, report.day.day)
    book.properties.created = fixed
    book.properties.modified = fixed
    raw = io.BytesIO()
    # ExcelWriter rather than book.save(): save() stamps ``modified`` with the clock.
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
        ExcelWriter(book, archive).save()
    return _fixed_zip_times(raw.getvalue())


def _fixed_zip_times(data: bytes) -> bytes:
    """The same zip with every member's time set to 1980-01-01 (zip's epoch)."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for info in source.infolist():
            member = zipfile.ZipInfo(info.filename, date_time=_ZIP_TIME)
            member.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(member, source.read(info.filename))
    return out.getvalue()


# ---- HTML ----------------------------------------------------------------------------------

_BAR_HEIGHT: Final = 22
_GAP: Final = 6
_LABEL_WIDTH: Final = 180
_PLOT_WIDTH: Final = 420
_VALUE_WIDTH: Final = 140
_TOP: Final = 10
_LABEL_CHARS: Final = 24  # what fits in the label column at 13 px
_SIGNED: Final = frozenset({"day_pnl", "realized", "income", "unrealized"})


@dataclass(frozen=True, slots=True)
class Bar:
    label: str  # shortened to fit; ``title`` is the full text (shown on hover)
    title: str
    value: str
    x: float
    y: float
    width: float
    negative: bool


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    zero_x: float
    bars: list[Bar]


def chart(report: PnlReport) -> Chart:
    """Horizontal bars of each known day PnL and the total, scaled to the largest."""
    items: list[tuple[str, Decimal]] = [
        (f"{r.account} {r.asset}", r.day_pnl) for r in report.rows if r.day_pnl is not None
    ]
    items.append(("Total", report.total.day_pnl))
    biggest = max((abs(v) for _, v in items), default=Decimal(0))
    has_negative = any(v < 0 for _, v in items)
    has_positive = any(v > 0 for _, v in items)
    # The zero line sits mid-plot when both signs occur, else at the empty side.
    zero = (
        _PLOT_WIDTH / 2 if has_negative and has_positive else (_PLOT_WIDTH if has_negative else 0.0)
    )
    half = _PLOT_WIDTH / 2 if has_negative and has_positive else float(_PLOT_WIDTH)
    bars = []
    for i, (label, value) in enumerate(items):
        length = 0.0 if biggest == 0 else float(abs(value) / biggest) * half
        x = zero - length if value < 0 else zero
        y = _TOP + i * (_BAR_HEIGHT + _GAP)
        short = label if len(label) <= _LABEL_CHARS else label[: _LABEL_CHARS - 1] + "…"
        bars.append(Bar(short, label, f"{value:,.2f}", round(_LABEL_WIDTH + x, 2), y,
                        round(length, 2), value < 0))  # fmt: skip
    height = _TOP * 2 + len(items) * (_BAR_HEIGHT + _GAP)
    return Chart(_LABEL_WIDTH + _PLOT_WIDTH + _VALUE_WIDTH, height, _LABEL_WIDTH + zero, bars)


_TEMPLATE: Final = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>PnL {{ report.tenant }} {{ report.day.isoformat() }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; color: #1f2328; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #d0d7de; padding: 0.3rem 0.6rem; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: bold; background: #f6f8fa; }
td.neg { color: #cf222e; } td.pos { color: #1a7f37; } td.unknown { color: #9a6700; }
</style>
</head>
<body>
<h1>Daily PnL &middot; {{ report.tenant }} &middot; {{ report.day.isoformat() }}</h1>
{% for line in lines %}<p>{{ line }}</p>
{% endfor %}
<table>
<thead><tr>{% for name in header %}<th>{{ name }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in body %}<tr{% if loop.last %} class="total"{% endif %}>
{%- for cell in row %}<td class="{{ cell.css }}">{{ cell.text }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table>
<h2>Day PnL by position ({{ report.currency }})</h2>
<svg xmlns="http://www.w3.org/2000/svg" width="{{ chart.width }}" height="{{ chart.height }}"
 viewBox="0 0 {{ chart.width }} {{ chart.height }}" role="img"
 aria-label="Day PnL by position">
<line x1="{{ chart.zero_x }}" y1="0" x2="{{ chart.zero_x }}" y2="{{ chart.height }}"
 stroke="#57606a" stroke-width="1"/>
{% for bar in chart.bars %}<g><title>{{ bar.title }}: {{ bar.value }}</title>
<text x="{{ label_width - 8 }}" y="{{ bar.y + 15 }}" text-anchor="end"
 font-size="13">{{ bar.label }}</text>
<rect x="{{ bar.x }}" y="{{ bar.y }}" width="{{ bar.width }}" height="{{ bar_height }}"
 fill="{{ '#cf222e' if bar.negative else '#1a7f37' }}"/>
<text x="{{ value_x }}" y="{{ bar.y + 15 }}" font-size="13">{{ bar.value }}</text>
</g>
{% endfor %}</svg>
</body>
</html>
"""

_ENV: Final = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)


@dataclass(frozen=True, slots=True)
class _Cell:
    text: str
    css: str


def _cell(value: str | Decimal | None, column: str) -> _Cell:
    if column in ("account", "asset"):
        return _Cell(_text(value), "")
    if value is None:
        return _Cell("unknown", "n unknown")
    assert isinstance(value, Decimal)
    sign = ""
    if column in _SIGNED:
        sign = " neg" if value < 0 else (" pos" if value > 0 else "")
    return _Cell(format(value, "f"), "n" + sign)


def to_html(report: PnlReport) -> bytes:
    rows = table(report)
    header, body = rows[0], rows[1:]
    cells = [[_cell(value, name) for name, value in zip(COLUMNS, row, strict=True)] for row in body]
    for i in (2, 3):  # the total has no amount or price
        cells[-1][i] = _Cell("", "n")
    page = _ENV.from_string(_TEMPLATE).render(
        report=report, lines=summary_lines(report), header=header, body=cells,
        chart=chart(report), label_width=_LABEL_WIDTH, bar_height=_BAR_HEIGHT,
        value_x=_LABEL_WIDTH + _PLOT_WIDTH + 8,
    )  # fmt: skip
    return page.encode("utf-8")
