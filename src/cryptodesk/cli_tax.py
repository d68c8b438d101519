"""``cryptodesk tax report``: capital gains, income and holdings of a ledger.

The entries come from a ledger CSV (``--ledger``: the generic format of
docs/ledger-format.md or a Binance, Coinbase or Kraken export, told apart by
their headers). The report is the JSON of ``portfolio.tax_report``, or its
Form 8949 CSV, PDF or XLSX (see docs/tax-reports.md). JSON and CSV go to
stdout unless ``--output`` is given; PDF and XLSX need ``--output``. Files
are written beside the target and renamed onto it, never left half written.

Like every ``cryptodesk`` command, a user mistake (missing or bad file, bad
option, an entry the engine cannot value) prints one line
``cryptodesk: error: ...`` and exits with code 2.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from cryptodesk.domain.errors import DomainError
from cryptodesk.portfolio.tax_lots import LONG_TERM_DAYS, METHODS
from cryptodesk.services.tax_reports import (
    BINARY_FORMATS,
    FORMATS,
    TaxReportOptions,
    render_tax_report,
)

if TYPE_CHECKING:
    from cryptodesk.portfolio.ledger import LedgerEntry
    from cryptodesk.services.ledger_service import LedgerService

_CURRENCY = re.compile(r"^[A-Z0-9]{2,16}$")

tax_app = typer.Typer(help="Tax reports (Form 8949 lines, income, holdings).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(tax_app, name="tax")


def fail(message: str) -> NoReturn:
    # Imported here: cli.py imports this module to register it.
    from cryptodesk.cli import fail as cli_fail

    cli_fail(message)


def parse_options(
    *, method: str, currency: str, year: str | None, per_wallet: bool,
    long_term_days: str, fmt: str, par: str = "",
) -> TaxReportOptions:  # fmt: skip
    """The options as typed on the command line, checked (``DomainError`` naming the option)."""
    from cryptodesk.portfolio.tax_report import year_bounds

    method = method.strip().lower()
    if method not in METHODS:
        raise DomainError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    fmt = fmt.strip().lower()
    if fmt not in FORMATS:
        raise DomainError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    code = currency.strip().upper()
    if not _CURRENCY.match(code):
        raise DomainError(f"--currency {currency!r} is not a currency code such as USD")
    year_number = None
    if year is not None:
        if not re.fullmatch(r"[0-9]{4}", year.strip()):
            raise DomainError(f"--year {year!r} is not a year such as 2024")
        year_number = int(year)
        try:
            year_bounds(year_number)
        except DomainError as exc:
            raise DomainError(f"--year: {exc}") from None
    if not re.fullmatch(r"[0-9]{1,5}", long_term_days.strip()) or int(long_term_days) < 1:
        raise DomainError(f"--long-term-days {long_term_days!r} is not a positive whole number")
    par_assets = tuple(p.strip().upper() for p in par.split(",") if p.strip())
    for asset in par_assets:
        if not _CURRENCY.match(asset):
            raise DomainError(f"--par {asset!r} is not an asset code such as USDT")
    return TaxReportOptions(
        method=method,
        currency=code,
        year=year_number,
        per_wallet=per_wallet,
        long_term_days=int(long_term_days),
        format=fmt,
        par=par_assets,
    )


def _opt(*names: str, help: str, **kwargs: Any) -> Any:
    return typer.Option(*names, help=help, **kwargs)


LedgerOpt = Annotated[
    Path | None, _opt("--ledger", help="Ledger CSV (generic, Binance, Coinbase, Kraken).")
]
TenantOpt = Annotated[
    str | None, _opt("--tenant", help="Report on this tenant's stored ledger instead.")
]
MethodOpt = Annotated[str, _opt("--method", help=f"Cost basis method: {'|'.join(METHODS)}.")]
CurrencyOpt = Annotated[str, _opt("--currency", help="Report currency.")]
YearOpt = Annotated[
    str | None, _opt("--year", help="UTC calendar year (default: all).", metavar="YEAR")
]
WalletOpt = Annotated[
    bool, _opt("--per-wallet", help="Match lots per account instead of across accounts.")
]
FormatOpt = Annotated[str, _opt("--format", help=f"{'|'.join(FORMATS)}.")]
OutputOpt = Annotated[
    Path | None, _opt("--output", help="File to write (default stdout; pdf/xlsx need it).")
]
ParOpt = Annotated[
    str,
    _opt(
        "--par",
        help="Assets valued 1:1 with the currency where a trade has no value (e.g. USDT,USDC).",
        metavar="ASSETS",
    ),
]
TermOpt = Annotated[
    str, _opt("--long-term-days", help="Held more than this many days = long term.", metavar="N")
]


@tax_app.command("report")
def report(
    method: MethodOpt,
    ledger: LedgerOpt = None,
    tenant: TenantOpt = None,
    currency: CurrencyOpt = "USD",
    year: YearOpt = None,
    per_wallet: WalletOpt = False,
    fmt: FormatOpt = "json",
    output: OutputOpt = None,
    long_term_days: TermOpt = str(LONG_TERM_DAYS),
    par: ParOpt = "",
) -> None:
    """Capital gains (one line per matched lot), income and holdings of a ledger."""
    try:
        options = parse_options(
            method=method, currency=currency, year=year, per_wallet=per_wallet,
            long_term_days=long_term_days, fmt=fmt, par=par,
        )  # fmt: skip
    except DomainError as exc:
        fail(str(exc))
    if options.format in BINARY_FORMATS and output is None:
        fail(f"--format {options.format} writes a binary file: give --output PATH")
    if (ledger is None) == (tenant is None):
        fail("give either --ledger FILE or --tenant NAME")
    entries = ledger_file_entries(ledger) if ledger is not None else stored_entries(tenant or "")
    try:
        rendered = render_tax_report(entries, options)
    except DomainError as exc:
        fail(str(exc))
    if output is None:
        assert isinstance(rendered, str)
        typer.echo(rendered, nl=False)
        return
    write_replacing(output, rendered)
    typer.echo(f"wrote {options.format} tax report to {output}")


# --- Entry sources ---------------------------------------------------------------
# ``--ledger FILE`` reads a file here. The stored ledger (``--tenant NAME``)
# is a second source beside this one: it returns the tenant's entries, and the
# command hands them to the same ``render_tax_report``.


def ledger_file_entries(path: Path) -> list[LedgerEntry]:
    """The entries of a ledger file; any problem with it ends the command (exit 2)."""
    from cryptodesk.adapters.files.ledger_csv import LedgerFileError, read_ledger

    if not path.exists():
        fail(f"--ledger {path}: no such file")
    if not path.is_file():
        fail(f"--ledger {path}: not a file")
    try:
        return read_ledger(path, source="auto")
    except LedgerFileError as exc:
        fail(f"{exc.name or path}: {exc}")
    except DomainError as exc:
        fail(f"{path}: {exc}")


def stored_entries(tenant: str) -> list[LedgerEntry]:
    """The tenant's stored ledger, in append order."""
    from cryptodesk.cli_ledger import _tenant, _with_service

    name = _tenant(tenant)

    async def read(service: LedgerService) -> list[LedgerEntry]:
        return await service.entries(name)

    return _with_service(read)


# --- Output ------------------------------------------------------------------------


def write_replacing(output: Path, content: str | bytes) -> None:
    """Write ``content`` beside ``output`` and rename it onto it (never a half-written file)."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    target = output.resolve()
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        fail(f"--output {output}: {exc.strerror or exc}")
    tmp = Path(tmp_name)
    try:
        os.chmod(fd, 0o666 & ~_umask())  # mkstemp makes it private; honour the umask
        with open(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except OSError as exc:
        fail(f"--output {output}: {exc.strerror or exc}")
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
