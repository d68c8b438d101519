"""``/api/v1`` portfolio: valuation, positions, performance, reconciliation, sync, reports.

- ``GET /portfolio``: totals, per-asset and per-position values at the latest
  cached prices (never fetched from an exchange on a request), the quote
  behind each price and its age; a missing price is ``null``, never zero.
- ``GET /portfolio/positions``: the positions and the missing prices only.
- ``GET /portfolio/performance?start=&end=``: time- and money-weighted
  returns from the stored daily snapshots and the ledger's flows.
- ``GET /portfolio/reconciliation``: the ledger against the balances last
  reported per account (exchange sync or entered by hand).
- ``POST /accounts/{name}/sync``: sync one exchange account now.
- ``GET /reports/tax``: the tax report, as JSON or Form 8949 CSV, PDF, XLSX.
- ``GET /reports/pnl?date=``: the daily PnL report of one UTC day as JSON.

Money is decimal strings, as everywhere in the API; the tenant is the
authenticated caller's (``api/tenancy.py``).
"""

from __future__ import annotations

import asyncio
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from cryptodesk.api import ledger_examples as ex
from cryptodesk.api.ledger_problems import LedgerProblem, LedgerRoute
from cryptodesk.api.routes.market import problem_responses
from cryptodesk.api.schemas import Problem
from cryptodesk.api.security import requires
from cryptodesk.api.tenancy import Tenant
from cryptodesk.domain.errors import DomainError
from cryptodesk.portfolio import performance, valuation
from cryptodesk.portfolio.pnl_report import to_dict as pnl_to_dict
from cryptodesk.portfolio.reconcile import report_to_dict
from cryptodesk.portfolio.tax_lots import LONG_TERM_DAYS
from cryptodesk.services.ledger_service import LedgerService
from cryptodesk.services.market_queries import Unavailable
from cryptodesk.services.pnl_reports import PnlReports
from cryptodesk.services.portfolio_sync import SyncService
from cryptodesk.services.portfolio_valuation import PortfolioValuation, quotes_to_dict
from cryptodesk.services.tax_reports import MEDIA_TYPES, TaxReportOptions, render_tax_report

Method = Literal["fifo", "lifo", "hifo", "specific", "average", "uk"]
Format = Literal["json", "csv", "pdf", "xlsx"]
_CURRENCY = r"^[A-Z0-9]{2,16}$"


# The report in the format asked for; ``format=json`` is an object.
_TAX_REPORT: dict[str, Any] = {
    "description": "The report; CSV, PDF and XLSX come as an attachment (`Content-Disposition`).",
    "content": {
        MEDIA_TYPES["json"]: {"schema": {"type": "object"}, "example": ex.TAX_REPORT},
        MEDIA_TYPES["csv"].split(";")[0]: {"schema": {"type": "string"}},
        MEDIA_TYPES["pdf"]: {"schema": {"type": "string", "format": "binary"}},
        MEDIA_TYPES["xlsx"]: {"schema": {"type": "string", "format": "binary"}},
    },
}


def _example(body: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """The documented 200 of a route that answers a plain JSON object."""
    return {200: {"content": {"application/json": {"example": body}}}}


def _day(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise DomainError(f"{name} {text!r} is not a date YYYY-MM-DD", field=name) from None


def _exchange_unreachable(exc: Exception) -> bool:
    """The exchange is down, slow, rate limiting or behind an open breaker: a 503.

    Imported here, not at the top: the exchange adapters load ccxt (seconds),
    which must not happen on the event loop while the API starts.
    """
    from cryptodesk.adapters.exchanges.breaker import CircuitOpenError
    from cryptodesk.adapters.exchanges.guard import UpstreamHTTPError
    from cryptodesk.adapters.exchanges.limiter import RateLimitedError

    known = (CircuitOpenError, UpstreamHTTPError, RateLimitedError, OSError, TimeoutError)
    return isinstance(exc, known) or type(exc).__module__.startswith("ccxt")


def _unavailable(exc: Exception) -> LedgerProblem:
    return LedgerProblem(503, "service-unavailable", str(exc) or type(exc).__name__)


def portfolio_router(
    ledger: LedgerService,
    values: PortfolioValuation,
    sync: SyncService,
    reports: PnlReports,
    *,
    currency: str,
    method: str,
    per_wallet: bool,
    long_term_days: int = LONG_TERM_DAYS,
    par: tuple[str, ...] = (),
) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["portfolio"], route_class=LedgerRoute)

    async def view(tenant: str) -> dict[str, Any]:
        try:
            current = await values.value(tenant)
        except Unavailable as exc:
            raise _unavailable(exc) from None
        return {**valuation.to_dict(current.valuation), "quotes": quotes_to_dict(current.quotes)}

    @router.get(
        "/portfolio",
        summary="Valuation: totals, assets, positions, quotes",
        dependencies=[requires("portfolio:read")],
        responses={**_example(ex.PORTFOLIO), **problem_responses(503)},
    )
    async def portfolio(tenant: Tenant) -> dict[str, Any]:
        return await view(tenant)

    @router.get(
        "/portfolio/positions",
        summary="Positions per account and asset",
        dependencies=[requires("portfolio:read")],
        responses={**_example(ex.POSITIONS), **problem_responses(503)},
    )
    async def positions(tenant: Tenant) -> dict[str, Any]:
        body = await view(tenant)
        keys = ("currency", "method", "positions", "missing_prices")
        return {key: body[key] for key in keys}

    @router.get(
        "/portfolio/performance",
        summary="Time- and money-weighted returns",
        dependencies=[requires("portfolio:read")],
        responses={**_example(ex.PERFORMANCE), **problem_responses(400, 503)},
    )
    async def performance_of(
        tenant: Tenant,
        start: Annotated[str, Query(description="First day, YYYY-MM-DD (UTC).")],
        end: Annotated[str, Query(description="Last day, YYYY-MM-DD (UTC).")],
    ) -> dict[str, Any]:
        result = await values.performance(tenant, _day(start, "start"), _day(end, "end"))
        return performance.to_dict(result)

    @router.get(
        "/portfolio/reconciliation",
        summary="Ledger balances against reported ones",
        dependencies=[requires("portfolio:read")],
        responses={**_example(ex.RECONCILIATION), **problem_responses(400, 503)},
    )
    async def reconciliation(
        tenant: Tenant,
        account: Annotated[list[str] | None, Query(description="Only these accounts.")] = None,
        tolerance: Annotated[str, Query(description="Accepted difference.")] = "0",
    ) -> dict[str, Any]:
        try:
            accepted = Decimal(tolerance)
        except ArithmeticError:
            raise DomainError(
                f"tolerance {tolerance!r} is not a number", field="tolerance"
            ) from None
        if not accepted.is_finite() or accepted < 0:
            raise DomainError("tolerance must be zero or positive", field="tolerance")
        report = await sync.reconciliation(tenant, accounts=account, tolerance=accepted)
        return report_to_dict(report)

    @router.post(
        "/accounts/{name}/sync",
        summary="Sync an exchange account now",
        dependencies=[requires("portfolio:sync")],
        responses={
            **_example(ex.SYNC),
            **problem_responses(400, 503),
            404: {"model": Problem, "description": "No account of that name."},
        },
    )
    async def sync_account(tenant: Tenant, name: str) -> dict[str, Any]:
        if await ledger.account(tenant, name) is None:
            raise LedgerProblem(404, "unknown-account", f"no account {name!r}", name="name")
        try:
            result = await sync.sync_account(tenant, name)
        except DomainError:
            raise  # refused credentials, not an exchange account: 400
        except Exception as exc:
            if _exchange_unreachable(exc):
                raise _unavailable(exc) from None
            raise
        return {
            "account": result.account, "trades": result.trades, "deposits": result.deposits,
            "withdrawals": result.withdrawals, "added": result.added, "skipped": result.skipped,
            "balances": {asset: str(amount) for asset, amount in sorted(result.balances.items())},
        }  # fmt: skip

    @router.get(
        "/reports/tax",
        summary="Tax report: disposals, income, holdings",
        dependencies=[requires("reports:read")],
        responses={200: _TAX_REPORT, **problem_responses(400, 503)},
    )
    async def tax_report(
        tenant: Tenant,
        method_: Annotated[Method | None, Query(alias="method")] = None,
        currency_: Annotated[
            str | None, Query(alias="currency", pattern=r"^[A-Z0-9]{2,16}$")
        ] = None,
        year: Annotated[int | None, Query(ge=2009, le=2999)] = None,
        per_wallet_: Annotated[bool | None, Query(alias="per_wallet")] = None,
        long_term_days_: Annotated[
            int | None, Query(alias="long_term_days", ge=1, le=36_500)
        ] = None,
        format: Annotated[Format, Query()] = "json",
    ) -> Response:
        options = TaxReportOptions(
            method=method_ or method, currency=currency_ or currency, year=year,
            per_wallet=per_wallet if per_wallet_ is None else per_wallet_,
            long_term_days=long_term_days_ or long_term_days, format=format, par=par,
        )  # fmt: skip
        entries = await ledger.entries(tenant)
        body = await asyncio.to_thread(render_tax_report, entries, options)
        headers = {}
        if format in ("csv", "pdf", "xlsx"):
            suffix = f"-{year}" if year else ""
            headers["Content-Disposition"] = (
                f'attachment; filename="tax-{options.method}{suffix}.{format}"'
            )
        return Response(body, media_type=MEDIA_TYPES[format], headers=headers)

    @router.get(
        "/reports/pnl",
        summary="Daily PnL report of one UTC day",
        dependencies=[requires("reports:read")],
        responses={**_example(ex.PNL_REPORT), **problem_responses(400, 503)},
    )
    async def pnl_report(
        tenant: Tenant,
        date_: Annotated[str, Query(alias="date", description="YYYY-MM-DD (UTC).")],
    ) -> dict[str, Any]:
        day = _day(date_, "date")
        return pnl_to_dict(await reports.report(tenant, day))

    return router
