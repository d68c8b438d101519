"""The daily PnL report: built from the ledger and stored closes, written to files
and, when configured, to a Google spreadsheet.

For a UTC day the cost basis runs twice (entries before the day's start and
before its end), the closes of the previous day and of the day come from
stored candles (``ClosePrices``: a price not stored is reported missing), and
``portfolio.pnl_report.build`` does the arithmetic. Files go to
``<directory>/<tenant>/pnl-YYYY-MM-DD.{csv,xlsx,html}`` (atomic, idempotent);
the sheet is named ``pnl-YYYY-MM-DD`` (``pnl-YYYY-MM-DD <tenant>`` for any
tenant but ``default``, since tenants share the configured spreadsheet).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Final

import structlog

from cryptodesk.adapters.reports import pnl_files
from cryptodesk.adapters.sheets import Cell, SheetWriter
from cryptodesk.domain.errors import DomainError
from cryptodesk.portfolio import performance as perf
from cryptodesk.portfolio.pnl_report import PnlReport, build, summary_lines, table
from cryptodesk.portfolio.tax_lots import CostBasisResult
from cryptodesk.services.portfolio_valuation import (
    ClosePrices,
    CostBasisFn,
    EntriesSource,
    default_cost_basis,
)

log = structlog.get_logger(__name__)

DEFAULT_TENANT: Final = "default"


class PnlReportError(Exception):
    """Reports of some tenants failed; the others were written."""

    def __init__(self, failures: dict[str, str]) -> None:
        named = "; ".join(f"{tenant}: {reason}" for tenant, reason in sorted(failures.items()))
        super().__init__(f"daily PnL report failed for {named}")
        self.failures = failures


def previous_day(now: int) -> date:
    """The UTC day before the one ``now`` (epoch ms) falls in: what a run after
    midnight reports on."""
    return perf.utc_day(now) - timedelta(days=1)


def sheet_title(tenant: str, day: date) -> str:
    title = f"pnl-{day.isoformat()}"
    return title if tenant == DEFAULT_TENANT else f"{title} {tenant}"


def sheet_rows(report: PnlReport) -> list[list[Cell]]:
    """The table, a blank row, then the notes: what the sheet holds."""
    rows: list[list[Cell]] = [list(r) for r in table(report)]
    rows.append([])
    rows.extend([line] for line in summary_lines(report))
    return rows


class PnlReports:
    def __init__(
        self,
        entries: EntriesSource,
        closes: ClosePrices,
        *,
        currency: str,
        method: str,
        long_term_days: int = 365,
        tenants: Callable[[], Awaitable[Sequence[str]]] | None = None,
        cost_basis: CostBasisFn | None = None,
    ) -> None:
        self._entries = entries
        self._closes = closes
        self.currency = currency
        self.method = method
        self._long_term_days = long_term_days
        self._tenants = tenants
        self._compute = cost_basis

    async def report(self, tenant: str, day: date) -> PnlReport:
        """The report of ``tenant`` for the UTC ``day``."""
        start = perf.day_start(day)
        end = perf.day_start(day + timedelta(days=1))
        entries = [e for e in await self._entries(tenant) if e.timestamp < end]
        compute = self._compute or default_cost_basis()

        def run(before: int) -> CostBasisResult:
            return compute(
                [e for e in entries if e.timestamp < before], method=self.method,
                currency=self.currency, per_wallet=self.method != "uk",
                long_term_days=self._long_term_days,
            )  # fmt: skip

        def both() -> tuple[CostBasisResult, CostBasisResult]:
            return run(start), run(end)

        opening, closing = await asyncio.to_thread(both)
        held = {h.asset for r in (opening, closing) for h in r.holdings}
        open_quotes = await self._closes.at_close(held, day - timedelta(days=1))
        close_quotes = await self._closes.at_close(held, day)
        close_prices = {a: None if q is None else q.price for a, q in close_quotes.items()}

        def price_at(asset: str, _ts: int) -> Decimal | None:
            return close_prices.get(asset)

        flows = perf.flows(entries, self.currency, start=start, end=end, price=price_at)
        return build(
            tenant, day, opening=opening, closing=closing,
            open_prices={a: None if q is None else q.price for a, q in open_quotes.items()},
            close_prices=close_prices, day_flows=flows,
        )  # fmt: skip

    async def generate(
        self,
        tenant: str,
        day: date,
        *,
        formats: Sequence[str],
        directory: Path,
        sheets: SheetWriter | None = None,
    ) -> list[Path]:
        """Write ``tenant``'s report of ``day`` in ``formats`` under ``directory`` and,
        with ``sheets``, to the spreadsheet; returns the files written."""
        for fmt in formats:
            if fmt not in pnl_files.FORMATS:
                raise DomainError(
                    f"format {fmt!r} is not one of {', '.join(pnl_files.FORMATS)}", field="formats"
                )
        report = await self.report(tenant, day)
        paths = await asyncio.to_thread(pnl_files.write, report, directory, formats)
        if sheets is not None:
            await asyncio.to_thread(sheets.replace_sheet, sheet_title(tenant, day),
                                    sheet_rows(report))  # fmt: skip
        log.info("daily pnl report written", tenant=tenant, day=day.isoformat(),
                 files=[str(p) for p in paths], sheets=sheets is not None,
                 complete=report.total.complete)  # fmt: skip
        return paths

    async def generate_all(
        self,
        day: date,
        *,
        formats: Sequence[str],
        directory: Path,
        sheets: SheetWriter | None = None,
    ) -> dict[str, list[Path]]:
        """Every tenant's report of ``day``. A tenant that fails does not stop the
        others; ``PnlReportError`` names the failed ones at the end."""
        if self._tenants is None:
            raise RuntimeError("PnlReports was built without a tenants source")
        written: dict[str, list[Path]] = {}
        failures: dict[str, str] = {}
        for tenant in await self._tenants():
            try:
                written[tenant] = await self.generate(
                    tenant, day, formats=formats, directory=directory, sheets=sheets
                )
            except Exception as exc:
                log.error("daily pnl report failed", tenant=tenant, day=day.isoformat(),
                          error=str(exc))  # fmt: skip
                failures[tenant] = str(exc) or type(exc).__name__
        if failures:
            raise PnlReportError(failures)
        return written
