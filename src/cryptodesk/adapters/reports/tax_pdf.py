"""The tax report as a printable PDF in the layout of IRS Form 8949 (fpdf2).

Page 1 is the summary (method, currency, year, totals, warnings). Part I
(short term) starts on a new page, then Part II (long term), each a table
of the form's columns (a) to (h) with its header repeated on every page and
a totals row as the form's line 2; then income, holdings and missing
acquisitions. Every page is numbered "page N of M".

Lines show money rounded to cents with (h) = (d) - (e) of the rounded
values, and the Part totals add those rounded lines (as on the form); the
summary rounds the report's exact totals, so the two may differ by cents.

Text uses Helvetica, one of the PDF standard fonts every reader provides, so
no font file is embedded; it covers Latin-1, and any other character (in an
account name, say) is printed as "?".
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Final

from fpdf import FPDF

from cryptodesk.portfolio.tax_report import (
    Form8949Line,
    TaxReport,
    form_8949_lines,
    plain,
    to_cents,
    us_date,
)

_FONT: Final = "helvetica"
ROW_H: Final = 6.0
HEADER_H: Final = 9.0  # two lines of 7 pt
HEADING_H: Final = 8.0
BOTTOM_MARGIN: Final = 15.0
# Widths (mm) of Form 8949 columns (a) to (h) on a landscape US Letter page.
_FORM_COLUMNS: Final = (
    ("(a) Description of property", 70.0, "L"),
    ("(b) Date acquired", 26.0, "C"),
    ("(c) Date sold or\ndisposed of", 26.0, "C"),
    ("(d) Proceeds", 30.0, "R"),
    ("(e) Cost or\nother basis", 30.0, "R"),
    ("(f) Code(s)", 14.0, "C"),
    ("(g) Amount of\nadjustment", 22.0, "R"),
    ("(h) Gain or (loss)", 30.0, "R"),
)
_PARTS: Final = (
    ("I", "Part I - Short-term: held one year or less"),
    ("II", "Part II - Long-term: held more than one year"),
)


def _latin1(text: str) -> str:
    return text.encode("latin-1", "replace").decode("latin-1")


def money(value: Decimal) -> str:
    return f"{to_cents(value):,.2f}"


# Replaced by the page count when the file is written; as wide as 6 digits, so
# the centred footer keeps its place on reports of thousands of pages.
PAGE_COUNT_ALIAS: Final = "{pages..}"


class _Document(FPDF):
    def footer(self) -> None:
        self.set_y(-10)
        self.set_font(_FONT, size=8)
        self.cell(
            0, 5, f"cryptodesk tax report - page {self.page_no()} of {PAGE_COUNT_ALIAS}", align="C"
        )

    def text_width(self, text: str) -> float:
        """Width of ``text`` in mm in the current font (the font's own metrics: fast)."""
        assert self.current_font is not None
        return self.current_font.get_text_width(text, self.font_size_pt, None)[1] / self.k

    def text_in_box(
        self, x: float, y: float, width: float, text: str, align: str, height: float = ROW_H
    ) -> None:
        """One line of text in a box of ``width`` x ``height`` at (x, y); too wide is set
        smaller, never cut. Drawn with ``text()``: ``cell()`` costs ten times more, and
        a report of 100,000 lines has 800,000 of these."""
        text = _latin1(text)
        base = size = self.font_size_pt
        room = width - 2 * self.c_margin
        used = self.text_width(text)
        while size > 5 and used > room:
            size -= 0.5
            self.set_font_size(size)
            used = self.text_width(text)
        if align == "R":
            left = x + width - self.c_margin - used
        elif align == "C":
            left = x + (width - used) / 2
        else:
            left = x + self.c_margin
        # The baseline where cell() puts it: half the height plus 0.3 of the font size.
        self.text(left, y + height / 2 + 0.3 * self.font_size, text)
        if size != base:
            self.set_font_size(base)

    def heading(self, text: str) -> None:
        self.set_font(_FONT, style="B", size=12)
        self.cell(0, HEADING_H, _latin1(text), new_x="LMARGIN", new_y="NEXT")

    def table_header(self, columns: Sequence[tuple[str, float, str]]) -> None:
        """Column titles, centred; a title may break onto a second line at ``\\n``."""
        self.set_font(_FONT, style="B", size=7)
        x, y = self.l_margin, self.y
        for title, width, _align in columns:
            self.rect(x, y, width, HEADER_H)
            lines = title.split("\n")
            step = HEADER_H / len(lines)
            for index, line in enumerate(lines):
                self.text_in_box(x, y + index * step, width, line, "C", height=step)
            x += width
        self.set_y(y + HEADER_H)
        self.set_font(_FONT, size=8)

    def row(self, columns: Sequence[tuple[str, float, str]], values: Sequence[str]) -> None:
        if self.will_page_break(ROW_H):
            self.add_page()
            self.table_header(columns)
        x, y = self.l_margin, self.y
        for (_title, width, align), value in zip(columns, values, strict=True):
            self.rect(x, y, width, ROW_H)
            if value:
                self.text_in_box(x, y, width, value, align)
            x += width
        self.set_y(y + ROW_H)

    def section_table(
        self,
        title: str,
        columns: Sequence[tuple[str, float, str]],
        rows: Sequence[Sequence[str]],
        empty: str,
    ) -> None:
        if self.will_page_break(HEADING_H + HEADER_H + ROW_H):
            self.add_page()
        self.heading(title)
        if not rows:
            self.set_font(_FONT, size=9)
            self.cell(0, ROW_H, empty, new_x="LMARGIN", new_y="NEXT")
            self.ln(ROW_H)
            return
        self.table_header(columns)
        for values in rows:
            self.row(columns, values)
        self.ln(ROW_H)


def tax_report_pdf(report: TaxReport, *, compress: bool = True) -> bytes:
    """The PDF of a report built by ``build_tax_report``."""
    pdf = _Document(orientation="L", unit="mm", format="letter")
    pdf.set_compression(compress)
    pdf.alias_nb_pages(PAGE_COUNT_ALIAS)
    pdf.set_margins(10, 10, 10)
    pdf.set_auto_page_break(True, margin=BOTTOM_MARGIN)
    pdf.set_title("Tax report")
    pdf.set_creator("cryptodesk")
    _summary_page(pdf, report)
    lines = form_8949_lines(report)
    for part, title in _PARTS:
        pdf.add_page()
        _form_part(pdf, title, [line for line in lines if line.part == part], part)
    pdf.add_page()
    currency = report["currency"]
    pdf.section_table(
        "Income",
        (("Received (UTC)", 45.0, "C"), ("Asset", 25.0, "L"), ("Amount", 45.0, "R"),
         (f"Value ({currency})", 40.0, "R"), ("Kind", 30.0, "L"), ("Account", 55.0, "L")),
        [(i["received"][:19].replace("T", " "), i["asset"], plain(Decimal(i["amount"])),
          money(Decimal(i["value"])), i["subkind"], i["account"]) for i in report["income"]],
        "No income.",
    )  # fmt: skip
    per_wallet = bool(report["per_wallet"])
    pdf.section_table(
        "Holdings at the end of the period",
        (("Asset", 30.0, "L"), ("Amount", 55.0, "R"), (f"Cost basis ({currency})", 50.0, "R"),
         *((("Account", 60.0, "L"),) if per_wallet else ())),
        [(h["asset"], plain(Decimal(h["amount"])), money(Decimal(h["cost_basis"])),
          *((h.get("account", ""),) if per_wallet else ())) for h in report["holdings"]],
        "No holdings.",
    )  # fmt: skip
    pdf.section_table(
        "Missing acquisitions (disposals no lot covers; not in the totals)",
        (("Disposed (UTC)", 45.0, "C"), ("Asset", 25.0, "L"), ("Amount", 45.0, "R"),
         (f"Proceeds ({currency})", 40.0, "R"), ("Account", 55.0, "L"),
         ("Disposal", 45.0, "L")),
        [(m["disposed"][:19].replace("T", " "), m["asset"], plain(Decimal(m["amount"])),
          money(Decimal(m["proceeds"])), m["account"], m["disposal_id"])
         for m in report["missing_acquisitions"]],
        "None.",
    )  # fmt: skip
    return bytes(pdf.output())


def _summary_page(pdf: _Document, report: TaxReport) -> None:
    pdf.add_page()
    pdf.set_font(_FONT, style="B", size=16)
    pdf.cell(0, 10, "Tax report: sales and other dispositions of capital assets",
             new_x="LMARGIN", new_y="NEXT")  # fmt: skip
    year = report["year"]
    pdf.set_font(_FONT, size=10)
    pdf.cell(
        0, ROW_H,
        _latin1(f"Method: {report['method']}    Currency: {report['currency']}    "
                f"Year: {'all' if year is None else year}    "
                f"Per wallet: {'yes' if report['per_wallet'] else 'no'}"),
        new_x="LMARGIN", new_y="NEXT",
    )  # fmt: skip
    pdf.ln(4)
    pdf.heading("Summary")
    summary = report["summary"]
    pdf.set_font(_FONT, size=10)
    for label, key in (
        ("Proceeds", "proceeds"),
        ("Cost basis", "cost_basis"),
        ("Gain or (loss)", "gain"),
        ("Short-term gain or (loss)", "short_term_gain"),
        ("Long-term gain or (loss)", "long_term_gain"),
        ("Income", "income"),
    ):
        pdf.cell(70, ROW_H, label, border=1)
        pdf.cell(50, ROW_H, f"{money(Decimal(summary[key]))} {report['currency']}",
                 border=1, align="R", new_x="LMARGIN", new_y="NEXT")  # fmt: skip
    pdf.ln(4)
    short = sum(1 for d in report["disposals"] if d["term"] == "short")
    pdf.multi_cell(
        0, 5,
        f"Disposal lines: {len(report['disposals'])} (Part I: {short}, "
        f"Part II: {len(report['disposals']) - short}). Income lines: {len(report['income'])}. "
        f"Missing acquisitions: {len(report['missing_acquisitions'])}.\n"
        "Form 8949 lines are rounded to cents, (h) = (d) - (e); Part totals add the "
        "rounded lines, the summary rounds the exact totals.",
        new_x="LMARGIN", new_y="NEXT",
    )  # fmt: skip
    if report["warnings"]:
        pdf.ln(4)
        pdf.heading("Warnings")
        pdf.set_font(_FONT, size=9)
        for warning in report["warnings"]:
            pdf.multi_cell(0, 5, _latin1(f"- {warning}"), new_x="LMARGIN", new_y="NEXT")


def _form_part(pdf: _Document, title: str, lines: Sequence[Form8949Line], part: str) -> None:
    pdf.heading(title)
    if not lines:
        pdf.set_font(_FONT, size=9)
        kind = "short-term" if part == "I" else "long-term"
        pdf.cell(0, ROW_H, f"No {kind} disposals.", new_x="LMARGIN", new_y="NEXT")
        return
    pdf.table_header(_FORM_COLUMNS)
    for line in lines:
        pdf.row(
            _FORM_COLUMNS,
            (line.description, us_date(line.acquired), us_date(line.disposed),
             money(line.proceeds), money(line.cost_basis), line.code,
             "" if line.adjustment is None else money(line.adjustment), money(line.gain)),
        )  # fmt: skip
    zero = Decimal(0)
    proceeds = sum((line.proceeds for line in lines), zero)
    cost = sum((line.cost_basis for line in lines), zero)
    gain = sum((line.gain for line in lines), zero)
    pdf.set_font(_FONT, style="B", size=8)
    pdf.row(
        _FORM_COLUMNS,
        (f"Totals (Part {part}, {len(lines)} lines)", "", "", money(proceeds), money(cost),
         "", "", money(gain)),
    )  # fmt: skip
