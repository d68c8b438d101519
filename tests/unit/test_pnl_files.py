"""PnL report files (CSV, XLSX, HTML + SVG) and the report service that writes them."""

from __future__ import annotations

import asyncio
import io
import os
import re
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import AsyncIterator, Sequence
from datetime import date
from decimal import Decimal as D
from pathlib import Path

import pytest
from openpyxl import load_workbook  # type: ignore[import-untyped]

from cryptodesk.adapters.db import migrate
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.sql_store import SqlMarketStore
from cryptodesk.adapters.reports import pnl_files
from cryptodesk.adapters.sheets import Cell
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.market import Candle
from cryptodesk.portfolio.ledger import LedgerEntry
from cryptodesk.portfolio.pnl_report import COLUMNS, MissingPrice, PnlReport, PnlRow, PnlTotal
from cryptodesk.services.pnl_reports import PnlReportError, PnlReports, previous_day
from cryptodesk.services.portfolio_valuation import ClosePrices

DAY = 86_400_000
T0 = 1_717_200_000_000  # 2024-06-01T00:00:00Z
EVIL = "<script>alert(1)</script>"


def report(tenant: str = "acme") -> PnlReport:
    rows = [
        PnlRow("bin", "BTC", D("0.5"), D("66000.5"), D("33000.25"), D("-1234.5"), D(0), D(0),
               D("18000.25")),
        PnlRow(EVIL, "ETH", D("12"), D("3100"), D("37200"), D("1000"), D("17.125"), D(0),
               D("11000")),
        PnlRow("cold", "XYZ", D("3"), None, None, None, D(0), D(0), None),
    ]  # fmt: skip
    total = PnlTotal(D("70200.25"), D("-234.5"), D("17.125"), D(0), D("29000.25"), False)
    return PnlReport(tenant, date(2024, 6, 2), "USD", "fifo", rows, total,
                     [MissingPrice("XYZ", date(2024, 6, 2))], ["a note & more"])  # fmt: skip


CSV = """account,asset,amount,price,market_value,day_pnl,realized,income,unrealized
bin,BTC,0.5,66000.5,33000.25,-1234.5,0,0,18000.25
<script>alert(1)</script>,ETH,12,3100,37200,1000,17.125,0,11000
cold,XYZ,3,,,,0,0,
TOTAL,,,,70200.25,-234.5,17.125,0,29000.25
"""


def test_files_land_per_tenant_and_day(tmp_path: Path) -> None:
    paths = pnl_files.write(report(), tmp_path, ["csv", "xlsx", "html"])
    assert paths == [tmp_path / "acme" / f"pnl-2024-06-02.{ext}" for ext in ("csv", "xlsx", "html")]
    assert paths[0].read_text() == CSV
    assert sorted(os.listdir(tmp_path / "acme")) == [p.name for p in sorted(paths)]


def test_rerun_writes_identical_bytes_and_leaves_no_temp_files(tmp_path: Path) -> None:
    first = [p.read_bytes() for p in pnl_files.write(report(), tmp_path, pnl_files.FORMATS)]
    again = [p.read_bytes() for p in pnl_files.write(report(), tmp_path, pnl_files.FORMATS)]
    assert first == again
    assert len(os.listdir(tmp_path / "acme")) == 3


def test_xlsx_document_times_are_the_report_day_not_the_clock() -> None:
    core = zipfile.ZipFile(io.BytesIO(pnl_files.to_xlsx(report()))).read("docProps/core.xml")
    times = re.findall(rb"<dcterms:(created|modified)[^>]*>([^<]+)<", core)
    assert times == [(b"created", b"2024-06-02T00:00:00Z"), (b"modified", b"2024-06-02T00:00:00Z")]


def test_xlsx_holds_numbers_with_formats(tmp_path: Path) -> None:
    (path,) = pnl_files.write(report(), tmp_path, ["xlsx"])
    book = load_workbook(io.BytesIO(path.read_bytes()))
    assert book.sheetnames == ["PnL", "Notes"]
    sheet = book["PnL"]
    assert [c.value for c in sheet[1]] == list(COLUMNS)
    btc = sheet[2]
    assert [c.value for c in btc[:6]] == ["bin", "BTC", 0.5, 66000.5, 33000.25, -1234.5]
    assert all(c.data_type == "n" for c in btc[2:])
    assert btc[4].number_format == pnl_files.MONEY_FORMAT
    assert btc[2].number_format == pnl_files.AMOUNT_FORMAT
    assert [c.value for c in sheet[4]][3:6] == [None, None, None]  # unknown: empty, never 0
    total = sheet[5]
    assert [c.value for c in total] == ["TOTAL", None, None, None, 70200.25, -234.5, 17.125, 0,
                                        29000.25]  # fmt: skip
    assert total[0].font.b is True
    assert sheet.freeze_panes == "A2"
    assert [r[0].value for r in book["Notes"].iter_rows()] == [
        "Tenant acme, 2024-06-02 (UTC), values in USD, cost basis fifo.",
        "Incomplete: the totals leave out positions whose figures are unknown.",
        "Price missing: XYZ at the close of 2024-06-02",
        "a note & more",
    ]


def test_html_escapes_text_and_draws_the_chart(tmp_path: Path) -> None:
    (path,) = pnl_files.write(report(), tmp_path, ["html"])
    page = path.read_text()
    assert EVIL not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<p>a note &amp; more</p>" in page
    assert "<script" not in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert '<td class="n unknown">unknown</td>' in page
    assert '<td class="n neg">-1234.5</td>' in page
    assert '<td class="n">66000.5</td>' in page  # prices carry no sign colour
    svg = ET.fromstring(re.search(r"<svg.*</svg>", page, re.S).group(0))  # type: ignore[union-attr]
    ns = "{http://www.w3.org/2000/svg}"
    rects = svg.findall(f"{ns}g/{ns}rect")
    labels = [t.text for t in svg.findall(f"{ns}g/{ns}text")]
    # Known day PnLs and the total; XYZ has none. Both signs: zero mid-plot (180 + 210).
    assert labels == ["bin BTC", "-1,234.50", "<script>alert(1)</scrip…", "1,000.00", "Total",
                      "-234.50"]  # fmt: skip
    titles = [t.text for t in svg.findall(f"{ns}g/{ns}title")]
    assert titles == ["bin BTC: -1,234.50", f"{EVIL} ETH: 1,000.00", "Total: -234.50"]
    geometry = [(r.get("x"), r.get("width"), r.get("fill")) for r in rects]
    assert geometry == [("180.0", "210.0", "#cf222e"), ("390.0", "170.11", "#1a7f37"),
                        ("350.11", "39.89", "#cf222e")]  # fmt: skip


def test_chart_of_one_sign_starts_at_the_edge() -> None:
    r = report()
    gains = PnlReport(r.tenant, r.day, r.currency, r.method, r.rows[1:2],
                      PnlTotal(D(1), D(500), D(0), D(0), D(0), True), [], [])  # fmt: skip
    chart = pnl_files.chart(gains)
    assert chart.zero_x == 180
    assert [(b.x, b.width) for b in chart.bars] == [(180.0, 420.0), (180.0, 210.0)]


def test_refuses_unsafe_tenants_and_unknown_formats(tmp_path: Path) -> None:
    with pytest.raises(DomainError, match="cannot name a report directory"):
        pnl_files.write(report("../etc"), tmp_path, ["csv"])
    with pytest.raises(DomainError, match="format 'pdf'"):
        pnl_files.write(report(), tmp_path, ["pdf"])


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "acme" / "pnl-2024-06-02.csv"
    pnl_files.atomic_write(target, b"old")

    def broken(_fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="disk full"):
        pnl_files.atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(target.parent) == ["pnl-2024-06-02.csv"]


# ---- the service ---------------------------------------------------------------------------


class RecordingSheets:
    """Keeps what was written, per sheet title, as a spreadsheet would."""

    def __init__(self) -> None:
        self.sheets: dict[str, list[list[Cell]]] = {}

    def replace_sheet(self, title: str, rows: Sequence[Sequence[Cell]]) -> None:
        self.sheets[title] = [list(r) for r in rows]


@pytest.fixture
async def market(tmp_path: Path) -> AsyncIterator[SqlMarketStore]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    await asyncio.to_thread(migrate.upgrade, url)
    store = SqlMarketStore(create_engine(url))
    hourly = [
        Candle("binance", "BTC/USDT", "1h", T0 + k * DAY - 3_600_000, c, c, c, c, 1.0, trades=1,
               closed=True)
        for k, c in ((1, 100.0), (2, 130.0))
    ]  # fmt: skip
    await store.upsert_candles(hourly)
    yield store
    await store.close()


async def test_generate_writes_files_and_the_sheet(market: SqlMarketStore, tmp_path: Path) -> None:
    entries = [
        LedgerEntry("b1", T0 - DAY, "buy", "bin", "BTC", D(2), counter_asset="USD",
                    counter_amount=D(150)),
        LedgerEntry("s1", T0 + DAY + 60_000, "sell", "bin", "BTC", D(1), counter_asset="USD",
                    counter_amount=D(120)),
    ]  # fmt: skip

    async def source(tenant: str) -> list[LedgerEntry]:
        if tenant == "broken":
            raise RuntimeError("ledger unavailable")
        return entries

    async def tenants() -> list[str]:
        return ["default", "broken", "acme"]

    closes = ClosePrices(market, exchanges=["binance"], currency="USD")
    reports = PnlReports(source, closes, currency="USD", method="fifo", tenants=tenants)
    sheets = RecordingSheets()
    day = previous_day(T0 + 2 * DAY + 300_000)  # a run at 00:05 reports on the day before
    assert day == date(2024, 6, 2)
    paths = await reports.generate("acme", day, formats=["csv"], directory=tmp_path,
                                   sheets=sheets)  # fmt: skip
    # 2 BTC at 100 (hourly candle closing at midnight); 1 sold at 120; 1 left at 130.
    assert paths[0].read_text().splitlines()[1:] == [
        "bin,BTC,1,130.0,130.0,50.0,45.00000000,0,55.00000000",
        "TOTAL,,,,130.0,50.0,45.00000000,0,55.00000000",
    ]
    (rows,) = sheets.sheets.values()
    assert list(sheets.sheets) == ["pnl-2024-06-02 acme"]
    assert rows[1] == ["bin", "BTC", D(1), D("130.0"), D("130.0"), D("50.0"), D(45), D(0),
                       D("55.0")]  # fmt: skip
    assert rows[2:] == [
        ["TOTAL", "", None, None, D("130.0"), D("50.0"), D(45), D(0), D("55.0")],
        [],
        ["Tenant acme, 2024-06-02 (UTC), values in USD, cost basis fifo."],
    ]
    with pytest.raises(PnlReportError, match="failed for broken: ledger unavailable"):
        await reports.generate_all(day, formats=["csv", "html"], directory=tmp_path,
                                   sheets=sheets)  # fmt: skip
    assert (tmp_path / "default" / "pnl-2024-06-02.html").is_file()
    assert "pnl-2024-06-02" in sheets.sheets
    with pytest.raises(DomainError, match="format 'pdf'"):
        await reports.generate("acme", day, formats=["pdf"], directory=tmp_path)
