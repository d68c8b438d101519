"""``cryptodesk accounts`` and ``cryptodesk ledger``: accounts and the stored ledger.

Every command acts for one tenant (``--tenant``, default ``default``) on the
configured database (CRYPTODESK_DATABASE_URL; an embedded SQLite file is
migrated first).

Exchange credentials never need to appear on a command line: ``--api-key``
and ``--secret`` are read from CRYPTODESK_ACCOUNT_API_KEY and
CRYPTODESK_ACCOUNT_SECRET when set, and asked for (without echo) otherwise.
They are stored encrypted under CRYPTODESK_ACCOUNTS_KEY (``cryptodesk
accounts keygen`` makes one); without that key an account with credentials
cannot be added.

Exit codes: 0 done; 1 ``ledger verify`` found the chain broken (a finding,
printed as one line naming the first broken entry); 2 a usage error (bad
option, bad file row, unknown account or entry, unusable database), printed
as one line ``cryptodesk: error: ...`` on stderr.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, NoReturn, TypeVar

import typer

from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.timeutil import parse_time, to_iso

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from cryptodesk.adapters.secrets import SecretBox
    from cryptodesk.config import Settings
    from cryptodesk.portfolio.accounts import Account, ExchangeCredentials
    from cryptodesk.portfolio.hash_chain import StoredEntry
    from cryptodesk.services.ledger_service import LedgerService

T = TypeVar("T")
API_KEY_ENV = "CRYPTODESK_ACCOUNT_API_KEY"
SECRET_ENV = "CRYPTODESK_ACCOUNT_SECRET"
PASSWORD_ENV = "CRYPTODESK_ACCOUNT_PASSWORD"
# ``ledger verify`` found the chain broken: an answer, not a failure to run.
EXIT_FINDING = 1

accounts_app = typer.Typer(help="Exchange, wallet and manual accounts.", no_args_is_help=True)
ledger_app = typer.Typer(help="The hash-chained ledger.", no_args_is_help=True)

TenantOpt = Annotated[str, typer.Option(help="The tenant acted for.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def register(app: typer.Typer) -> None:
    app.add_typer(accounts_app, name="accounts")
    app.add_typer(ledger_app, name="ledger")


def fail(message: str) -> NoReturn:
    # Imported here: cli.py imports this module to register it.
    from cryptodesk.cli import fail as cli_fail

    cli_fail(message)


def _tenant(text: str) -> str:
    from cryptodesk.domain.auth import check_tenant

    try:
        return check_tenant(text)
    except DomainError:
        fail(f"--tenant {text[:80]!r} is not a tenant id: 1-63 of a-z, 0-9, _ and -")


def _settings() -> Settings:
    from cryptodesk.cli import settings_or_exit
    from cryptodesk.observability.logging import configure_logging

    settings = settings_or_exit()
    # The command's output is the answer; the migrations' INFO lines are not news here.
    configure_logging(settings.log_format, "DEBUG" if settings.log_level == "DEBUG" else "WARNING")
    return settings


def _box(settings: Settings) -> SecretBox | None:
    from cryptodesk.adapters.secrets import SecretBox, SecretsError

    key = settings.accounts_key.get_secret_value()
    if not key.strip():
        return None
    try:
        return SecretBox(key)
    except SecretsError as exc:
        fail(f"CRYPTODESK_ACCOUNTS_KEY: {exc}")


async def migrated_engine(settings: Settings) -> AsyncEngine:
    """The configured database's engine; the embedded one is created and migrated first
    (a server database is migrated by ``cryptodesk db upgrade``)."""
    from cryptodesk import runtime
    from cryptodesk.adapters.db import migrate

    if settings.is_embedded_db:
        runtime.check_data_dir(settings)
        await asyncio.to_thread(migrate.upgrade, settings.database_url)
    return runtime.engine_for(settings.database_url, settings)


def _with_service(
    work: Callable[[LedgerService], Awaitable[T]], settings: Settings | None = None
) -> T:
    """Run ``work`` on the configured ledger; user-facing failures exit 2 with one line."""
    from cryptodesk.adapters.db.engine import StorageError
    from cryptodesk.adapters.secrets import SecretsError
    from cryptodesk.services.ledger_service import LedgerService
    from cryptodesk.wiring import StartupError

    settings = settings or _settings()
    box = _box(settings)

    async def run() -> T:
        engine = await migrated_engine(settings)
        service = LedgerService(engine, box)
        try:
            return await work(service)
        finally:
            await service.close()
            await engine.dispose()

    try:
        return asyncio.run(run())
    except DomainError as exc:
        fail(_error_text(exc))
    except (StorageError, StartupError, SecretsError) as exc:
        fail(str(exc))


def _error_text(exc: DomainError) -> str:
    """``FILE:LINE: reason`` for a bad ledger file row, as for candle files."""
    from cryptodesk.adapters.files.ledger_csv import LedgerFileError

    if isinstance(exc, LedgerFileError) and exc.name is not None:
        where = exc.name if exc.line is None else f"{exc.name}:{exc.line}"
        return f"{where}: {exc.reason}"
    return str(exc)


# ---- accounts -------------------------------------------------------------------------


@accounts_app.command("keygen")
def accounts_keygen() -> None:
    """Print a new key for CRYPTODESK_ACCOUNTS_KEY (keep it: stored credentials need it)."""
    from cryptodesk.adapters.secrets import generate_key

    typer.echo(generate_key())


Kind = Literal["exchange", "wallet", "manual"]


@accounts_app.command("add")
def accounts_add(
    name: Annotated[str, typer.Argument(help="The account's name (unique per tenant).")],
    kind: Annotated[Kind, typer.Option(help="exchange, wallet or manual.")] = "manual",
    exchange: Annotated[str | None, typer.Option(help="ccxt exchange id (kind exchange).")] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar=API_KEY_ENV, show_envvar=True, help="Asked for when not given."),
    ] = None,
    secret: Annotated[
        str | None,
        typer.Option(envvar=SECRET_ENV, show_envvar=True, help="Asked for when not given."),
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(envvar=PASSWORD_ENV, show_envvar=True, help="Passphrase (OKX, KuCoin)."),
    ] = None,
    credentials: Annotated[
        bool, typer.Option(help="--no-credentials: an exchange account without API keys.")
    ] = True,
    chain: Annotated[str | None, typer.Option(help="Chain (kind wallet): bitcoin...")] = None,
    address: Annotated[str | None, typer.Option(help="Address (kind wallet).")] = None,
    note: Annotated[str, typer.Option(help="Free text.")] = "",
    tenant: TenantOpt = "default",
) -> None:
    """Add an account; an exchange account's API key and secret are stored encrypted."""
    from cryptodesk.portfolio.accounts import AccountSpec

    tenant = _tenant(tenant)
    settings = _settings()
    creds = None
    if kind != "exchange" or not credentials:
        given = [o for o, v in (("--api-key", api_key), ("--secret", secret)) if v is not None]
        if given and kind != "exchange":
            fail(f"{given[0]}: a {kind} account has no API credentials")
    else:
        if _box(settings) is None:
            fail(
                "no accounts key is configured, so credentials cannot be stored: set "
                "CRYPTODESK_ACCOUNTS_KEY (`cryptodesk accounts keygen` makes one) "
                "or pass --no-credentials"
            )
        creds = _credentials(api_key, secret, password)
    try:
        spec = AccountSpec(
            name, kind, exchange=exchange, credentials=creds, chain=chain, address=address,
            note=note,
        )  # fmt: skip
    except DomainError as exc:
        fail(str(exc))
    account = _with_service(lambda s: s.add_account(tenant, spec), settings)
    typer.echo(f"added {_describe(account)}")


def _credentials(
    api_key: str | None, secret: str | None, password: str | None
) -> ExchangeCredentials:
    from cryptodesk.portfolio.accounts import ExchangeCredentials

    if api_key is None:
        api_key = typer.prompt("API key", hide_input=True)
    if secret is None:
        secret = typer.prompt("API secret", hide_input=True)
    try:
        return ExchangeCredentials(api_key, secret, password or None)
    except DomainError as exc:
        fail(str(exc))


def _describe(a: Account) -> str:
    if a.kind == "exchange":
        keys = "credentials stored" if a.has_credentials else "no credentials"
        return f"exchange account {a.name} ({a.exchange}, {keys})"
    if a.kind == "wallet":
        return f"wallet account {a.name} ({a.chain} {a.address})"
    return f"manual account {a.name}"


@accounts_app.command("list")
def accounts_list(tenant: TenantOpt = "default", as_json: JsonOpt = False) -> None:
    """List the tenant's accounts (credentials are never shown)."""
    import msgspec

    tenant = _tenant(tenant)
    found = _with_service(lambda s: s.accounts(tenant))
    if as_json:
        rows = [
            {"name": a.name, "kind": a.kind, "exchange": a.exchange, "chain": a.chain,
             "address": a.address, "note": a.note, "has_credentials": a.has_credentials,
             "created_at": to_iso(a.created_at)}
            for a in found
        ]  # fmt: skip
        typer.echo(msgspec.json.encode(rows).decode())
        return
    if not found:
        typer.echo(f"no accounts for tenant {tenant}")
    for a in found:
        typer.echo(_describe(a))


# ---- ledger ---------------------------------------------------------------------------

Source = Literal["auto", "generic", "binance", "coinbase", "kraken"]


@ledger_app.command("import")
def ledger_import(
    file: Annotated[Path, typer.Argument(help="Ledger CSV, or a Binance/Coinbase/Kraken export.")],
    source: Annotated[Source, typer.Option(help="The file's format.")] = "auto",
    account: Annotated[
        str | None, typer.Option(help="Account of an export (default: the exchange's name).")
    ] = None,
    tenant: TenantOpt = "default",
) -> None:
    """Import a ledger file, all rows or none; rows already stored are skipped."""
    from cryptodesk.adapters.files.ledger_csv import read_ledger

    tenant = _tenant(tenant)
    settings = _settings()
    try:
        entries = read_ledger(file, source=source, account=account)
    except DomainError as exc:
        fail(_error_text(exc))
    result = _with_service(lambda s: s.import_entries(tenant, entries), settings)
    typer.echo(f"imported {file}: {result.added} added, {result.skipped} skipped")


def _time(option: str, text: str | None) -> int | None:
    try:
        return None if text is None else parse_time(text, field=option)
    except DomainError as exc:
        fail(str(exc))


@ledger_app.command("list")
def ledger_list(
    tenant: TenantOpt = "default",
    account: Annotated[str | None, typer.Option(help="Only entries of this account.")] = None,
    start: Annotated[str | None, typer.Option(help="From (ISO 8601 or epoch ms).")] = None,
    end: Annotated[str | None, typer.Option(help="Before (ISO 8601 or epoch ms).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the stored entries in chain order."""
    import msgspec

    from cryptodesk.api.ledger_schemas import EntryOut

    tenant = _tenant(tenant)
    first, last = _time("--start", start), _time("--end", end)

    async def read(s: LedgerService) -> list[StoredEntry]:
        if account is not None and await s.account(tenant, account) is None:
            raise DomainError(f"no account {account!r}", field="account")
        return await s.stored_entries(tenant, start=first, end=last, account=account)

    found = _with_service(read)
    if as_json:  # the same objects as GET /api/v1/ledger
        typer.echo(msgspec.json.encode([EntryOut.stored(x).model_dump() for x in found]).decode())
        return
    for x in found:
        typer.echo(_line(x))


def _line(x: StoredEntry) -> str:
    e = x.entry
    kind = e.kind if e.subkind is None else f"{e.kind}:{e.subkind}"
    where = e.account if e.to_account is None else f"{e.account}->{e.to_account}"
    text = f"{x.seq:>6}  {to_iso(e.timestamp)}  {e.id}  {kind}  {where}  {e.amount} {e.asset}"
    if e.counter_asset is not None:
        text += f"  for {e.counter_amount} {e.counter_asset}"
    if e.fee_asset is not None:
        text += f"  fee {e.fee_amount} {e.fee_asset}"
    if e.reverses is not None:
        text += f"  reverses {e.reverses}"
    return text


@ledger_app.command("reverse")
def ledger_reverse(
    entry_id: Annotated[str, typer.Argument(metavar="ID", help="The entry to reverse.")],
    note: Annotated[str, typer.Option(help="Why.")] = "",
    new_id: Annotated[
        str | None, typer.Option("--id", help="The reversal's id (default ID:reversal).")
    ] = None,
    tenant: TenantOpt = "default",
) -> None:
    """Append the reversal of an entry: both then drop out of the accounting."""
    tenant = _tenant(tenant)
    reversal = _with_service(lambda s: s.reverse(tenant, entry_id, new_id=new_id, note=note))
    typer.echo(f"reversed {entry_id} with {reversal.id}")


@ledger_app.command("verify")
def ledger_verify(tenant: TenantOpt = "default") -> None:
    """Check the hash chain; exit 1 naming the first broken entry when it does not hold."""
    tenant = _tenant(tenant)
    report = _with_service(lambda s: s.verify(tenant))
    broken = report.first_broken
    if broken is None:
        typer.echo(f"ok: {report.entries} entries")
        typer.echo(f"head: {report.head_hash}")
        return
    typer.echo(f"broken at seq {broken.seq} ({broken.reason}): {broken.message}")
    raise typer.Exit(EXIT_FINDING)
