"""``cryptodesk portfolio`` (show, sync, reconcile) and ``cryptodesk report pnl``.

They run the services the API and the scheduler run (``portfolio_wiring``),
on the configured database and cache: prices come from the cache the ingest
and prefetch fill (a cache of this process alone, ``memory://``, has none, so
every price is reported missing rather than guessed).

Exit codes: 0 done; 1 a finding (a reconciliation difference); 2 a usage
error or an unreachable database, one line on stderr.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer

from cryptodesk.domain.errors import DomainError

if TYPE_CHECKING:
    from cryptodesk.portfolio_wiring import Portfolio

T = TypeVar("T")
portfolio_app = typer.Typer(help="Valuation, exchange sync, reconciliation.", no_args_is_help=True)
report_app = typer.Typer(help="Reports: the daily PnL report.", no_args_is_help=True)
TenantOpt = Annotated[str, typer.Option("--tenant", help="Tenant id.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def register(app: typer.Typer) -> None:
    app.add_typer(portfolio_app, name="portfolio")
    app.add_typer(report_app, name="report")


def fail(message: str) -> NoReturn:
    from cryptodesk.cli import fail as cli_fail

    cli_fail(message)


def with_portfolio(work: Callable[[Portfolio], Awaitable[T]]) -> T:
    """Run ``work`` on the configured portfolio services; user errors exit 2."""
    from cryptodesk.adapters.db.engine import StorageError
    from cryptodesk.adapters.db.sql_store import SqlMarketStore
    from cryptodesk.adapters.secrets import SecretsError
    from cryptodesk.cli_ledger import _error_text, _settings, migrated_engine
    from cryptodesk.portfolio_wiring import build_portfolio
    from cryptodesk.wiring import StartupError, make_cache

    settings = _settings()

    async def run() -> T:
        store = SqlMarketStore(await migrated_engine(settings))
        cache = make_cache(settings)
        portfolio = build_portfolio(settings, store.engine, cache, store)
        try:
            return await work(portfolio)
        finally:
            await portfolio.close()
            await cache.close()
            await store.close()

    try:
        return asyncio.run(run())
    except DomainError as exc:
        fail(_error_text(exc))
    except (StorageError, StartupError, SecretsError) as exc:
        fail(str(exc))


def _tenant(text: str) -> str:
    from cryptodesk.cli_ledger import _tenant as check

    return check(text)


@portfolio_app.command("show")
def show(tenant: TenantOpt = "default", as_json: JsonOpt = False) -> None:
    """Positions at the latest cached prices (a missing price is shown as such)."""
    from cryptodesk.portfolio import valuation
    from cryptodesk.services.portfolio_valuation import quotes_to_dict

    name = _tenant(tenant)

    async def work(p: Portfolio) -> dict[str, object]:
        view = await p.valuation.value(name)
        return {**valuation.to_dict(view.valuation), "quotes": quotes_to_dict(view.quotes)}

    body = with_portfolio(work)
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        return
    rows = body["positions"]
    assert isinstance(rows, list)
    typer.echo(f"{'ACCOUNT':<16} {'ASSET':<8} {'AMOUNT':>18} {'COST':>16} {'VALUE':>16}")
    for r in rows:
        value = r["market_value"] if r["market_value"] is not None else "price missing"
        typer.echo(
            f"{r['account']:<16} {r['asset']:<8} {r['amount']:>18} {r['cost_basis']:>16} "
            f"{value:>16}"
        )
    total = body["total"]
    assert isinstance(total, dict)
    if total["complete"]:
        typer.echo(f"total market value {total['market_value']} {body['currency']}")
    else:
        missing = body["missing_prices"]
        assert isinstance(missing, list)
        typer.echo(
            f"total market value unknown: {len(missing)} positions have no price "
            f"(priced positions: {total['market_value']} {body['currency']})"
        )


@portfolio_app.command("sync")
def sync(
    account: Annotated[str, typer.Option("--account", help="Exchange account to sync.")],
    tenant: TenantOpt = "default",
) -> None:
    """Fetch balances, own trades, deposits and withdrawals of an exchange account."""
    name = _tenant(tenant)

    async def work(p: Portfolio) -> str:
        r = await p.sync.sync_account(name, account)
        return (
            f"synced {r.account}: {r.trades} trades, {r.deposits} deposits, "
            f"{r.withdrawals} withdrawals; {r.added} new entries, {r.skipped} already stored"
        )

    typer.echo(with_portfolio(work))


@portfolio_app.command("reconcile")
def reconcile(
    tenant: TenantOpt = "default",
    account: Annotated[list[str] | None, typer.Option("--account", help="Only these.")] = None,
    tolerance: Annotated[str, typer.Option("--tolerance", help="Accepted difference.")] = "0",
    as_json: JsonOpt = False,
) -> None:
    """The ledger against the balances last reported; exit 1 when any differs."""
    from cryptodesk.portfolio.reconcile import report_to_dict

    name = _tenant(tenant)
    try:
        accepted = Decimal(tolerance)
    except InvalidOperation:
        fail(f"--tolerance {tolerance!r} is not a number")
    if not accepted.is_finite() or accepted < 0:
        fail("--tolerance must be zero or positive")

    async def work(p: Portfolio) -> dict[str, object]:
        report = await p.sync.reconciliation(name, accounts=account, tolerance=accepted)
        return report_to_dict(report)

    body = with_portfolio(work)
    if as_json:
        typer.echo(json.dumps(body, indent=2))
    else:
        lines = body["lines"]
        assert isinstance(lines, list)
        for x in lines:
            typer.echo(
                f"{x['status']:<20} {x['account']:<16} {x['asset']:<8} ledger {x['ledger']} "
                f"reported {x['reported']} difference {x['difference']}"
            )
    if not body["ok"]:
        raise typer.Exit(1)


@report_app.command("pnl")
def pnl(
    day: Annotated[str, typer.Option("--date", help="UTC day YYYY-MM-DD.")],
    tenant: Annotated[str | None, typer.Option("--tenant", help="Default: every tenant.")] = None,
    formats: Annotated[str | None, typer.Option("--format", help="csv,xlsx,html")] = None,
    directory: Annotated[Path | None, typer.Option("--dir", help="Output directory.")] = None,
) -> None:
    """Write the daily PnL report of DATE (and store that day's snapshot)."""
    try:
        when = date.fromisoformat(day)
    except ValueError:
        fail(f"--date {day!r} is not a date YYYY-MM-DD")
    names = None if tenant is None else [_tenant(tenant)]
    chosen = None if formats is None else [f.strip() for f in formats.split(",") if f.strip()]
    bad = [f for f in chosen or () if f not in ("csv", "xlsx", "html")]
    if bad or chosen == []:
        fail(f"--format: formats are csv, xlsx, html; got {formats!r}")

    async def work(p: Portfolio) -> dict[str, list[Path]]:
        from cryptodesk.portfolio_wiring import sheets_writer

        return await p.daily_report(
            when, tenants=names, formats=chosen, directory=directory,
            sheets=sheets_writer(p.settings),
        )  # fmt: skip

    written = with_portfolio(work)
    if not written:
        typer.echo("no tenants: nothing to report")
    for name, paths in written.items():
        for path in paths:
            typer.echo(f"{name}: wrote {path}")
