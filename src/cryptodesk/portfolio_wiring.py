"""The portfolio services built from Settings: ledger, sync, valuation, reports, jobs.

Used by ``runtime.serve`` (API routes and the scheduler's jobs) and by the
CLI commands that work on the stored ledger, so both run the same objects.
"""

from __future__ import annotations

import asyncio
import importlib
from dataclasses import dataclass
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

import structlog
from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptodesk.adapters.cache.base import Cache
from cryptodesk.adapters.db.snapshot_store import SqlSnapshotStore
from cryptodesk.adapters.secrets import SecretBox
from cryptodesk.adapters.sheets import SheetWriter
from cryptodesk.config import Settings
from cryptodesk.domain.timeutil import now_ms
from cryptodesk.portfolio.cost_basis import compute
from cryptodesk.services.ledger_service import LedgerService
from cryptodesk.services.pnl_reports import PnlReports, previous_day
from cryptodesk.services.portfolio_sync import SyncResult, SyncService
from cryptodesk.services.portfolio_valuation import ClosePrices, LivePrices, PortfolioValuation
from cryptodesk.services.scheduled_jobs import ScheduledJob
from cryptodesk.wiring import StartupError

log = structlog.get_logger(__name__)
PNL_JOB = "pnl-report:daily"
SYNC_JOB = "portfolio-sync:accounts"
CCXT_ACCOUNT_MODULE = "cryptodesk.adapters.exchanges.ccxt_account"


def portfolio_job_ids(settings: Settings) -> list[str]:
    """The portfolio jobs the scheduler runs with these settings (``cryptodesk jobs``)."""
    ids = [PNL_JOB] if settings.pnl_report_time else []
    return ids + ([SYNC_JOB] if settings.portfolio_sync_seconds > 0 else [])


def secret_box(settings: Settings) -> SecretBox | None:
    key = settings.accounts_key.get_secret_value()
    return SecretBox(key) if key else None


def ledger_service(settings: Settings, engine: AsyncEngine) -> LedgerService:
    return LedgerService(engine, secret_box(settings))


def account_clients(settings: Settings) -> Any:
    """The sync's client factory: ccxt with the exchange's configured host, if any.

    ccxt is imported on the first sync, not here: loading it takes seconds,
    which must not stall the event loop while the API starts.
    """

    def make(exchange: str, credentials: Any, account: str) -> Any:
        client_class = importlib.import_module(CCXT_ACCOUNT_MODULE).CcxtAccountClient

        config = settings.exchange_config.get(exchange)
        http_url = config.http_url if config is not None and config.http_url else None
        return client_class(exchange, credentials, account=account, http_url=http_url)

    return make


def sheets_writer(settings: Settings) -> SheetWriter | None:
    if not (settings.sheets_credentials_file and settings.sheets_spreadsheet_key):
        return None
    from cryptodesk.adapters.sheets.gspread_sheets import GspreadSheets

    try:
        return GspreadSheets.from_file(
            Path(settings.sheets_credentials_file), settings.sheets_spreadsheet_key
        )
    except Exception as exc:  # unreadable or malformed service account file
        raise StartupError(f"CRYPTODESK_SHEETS_CREDENTIALS_FILE: {exc}") from None


class _Sync(SyncService):
    """The sync, loading the ccxt client module in a worker thread on first use:
    importing ccxt takes seconds, which would stall every request on the loop."""

    async def sync_account(self, tenant: str, account_name: str) -> SyncResult:
        await asyncio.to_thread(importlib.import_module, CCXT_ACCOUNT_MODULE)
        return await super().sync_account(tenant, account_name)


@dataclass
class Portfolio:
    settings: Settings
    ledger: LedgerService
    sync: SyncService
    valuation: PortfolioValuation
    reports: PnlReports

    def router(self) -> APIRouter:
        from cryptodesk.api.routes.portfolio import portfolio_router

        s = self.settings
        return portfolio_router(
            self.ledger, self.valuation, self.sync, self.reports,
            currency=s.report_currency, method=s.cost_basis_method,
            per_wallet=s.cost_basis_per_wallet, long_term_days=s.long_term_days,
            par=tuple(s.par_assets),
        )  # fmt: skip

    async def daily_report(
        self,
        day: date,
        *,
        tenants: list[str] | None = None,
        formats: list[str] | None = None,
        directory: Path | None = None,
        sheets: SheetWriter | None = None,
    ) -> dict[str, list[Path]]:
        """Snapshot and report ``day`` for ``tenants`` (default: every tenant)."""
        s = self.settings
        names = tenants if tenants is not None else await self.ledger.tenants()
        for tenant in names:
            await self.valuation.record_snapshot(tenant, day)
        out: dict[str, list[Path]] = {}
        for tenant in names:
            out[tenant] = await self.reports.generate(
                tenant, day, formats=formats or s.pnl_report_formats,
                directory=directory or s.reports_dir, sheets=sheets,
            )  # fmt: skip
        return out

    async def sync_all(self) -> dict[str, int]:
        """Sync every exchange account with credentials of every tenant; one failing
        account does not stop the others (the run fails naming them at the end)."""
        added: dict[str, int] = {}
        failures: list[str] = []
        for tenant in await self.ledger.tenants():
            for account in await self.ledger.accounts(tenant):
                if account.kind != "exchange" or not account.has_credentials:
                    continue
                try:
                    result = await self.sync.sync_account(tenant, account.name)
                    added[f"{tenant}/{account.name}"] = result.added
                except Exception as exc:
                    log.error("account sync failed", tenant=tenant, account=account.name,
                              error=str(exc))  # fmt: skip
                    failures.append(f"{tenant}/{account.name}: {exc}")
        if failures:
            raise RuntimeError("; ".join(failures))
        return added

    def jobs(self, sheets: SheetWriter | None) -> list[ScheduledJob]:
        s = self.settings
        out: list[ScheduledJob] = []
        if PNL_JOB in portfolio_job_ids(s):

            async def report() -> object:
                return await self.daily_report(previous_day(now_ms()), sheets=sheets)

            out.append(ScheduledJob(PNL_JOB, report, at=s.pnl_report_time))
        if SYNC_JOB in portfolio_job_ids(s):
            out.append(ScheduledJob(SYNC_JOB, self.sync_all, every=s.portfolio_sync_seconds))
        return out

    async def close(self) -> None:
        await self.ledger.close()


def build_portfolio(
    settings: Settings, engine: AsyncEngine, cache: Cache, market_store: Any
) -> Portfolio:
    """``market_store``: where past closes are read (stored candles)."""
    s = settings
    ledger = ledger_service(s, engine)
    live = LivePrices(cache, exchanges=s.exchanges, currency=s.report_currency)
    closes = ClosePrices(market_store, exchanges=s.exchanges, currency=s.report_currency)
    cost_basis = partial(compute, par=tuple(s.par_assets))
    valuation = PortfolioValuation(
        ledger.entries, live, closes, SqlSnapshotStore(engine),
        currency=s.report_currency, method=s.cost_basis_method, long_term_days=s.long_term_days,
        cost_basis=cost_basis,
    )  # fmt: skip
    reports = PnlReports(
        ledger.entries, closes, currency=s.report_currency, method=s.cost_basis_method,
        long_term_days=s.long_term_days, tenants=ledger.tenants, cost_basis=cost_basis,
    )  # fmt: skip
    sync = _Sync(ledger, account_clients(s))
    return Portfolio(s, ledger, sync, valuation, reports)
