"""``cryptodesk import candles`` and ``cryptodesk candles export``: candle files in and out.

A bad file is a user mistake like a bad option: one line
``cryptodesk: error: FILE:LINE: reason`` on stderr, exit code 2, nothing written.
An export to ``--output`` goes to a temporary file renamed into place at the
end, so a failed export never leaves a truncated file behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeAlias, TypeVar

import typer

from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.timeutil import parse_time, to_iso

if TYPE_CHECKING:
    from cryptodesk.adapters.db.sql_store import SqlMarketStore
    from cryptodesk.adapters.files.candle_files import CandleCsvWriter, CandleParquetWriter
    from cryptodesk.services.candle_import import Series

T = TypeVar("T")
CandleWriter: TypeAlias = "CandleCsvWriter | CandleParquetWriter"
FORMATS = ("csv", "parquet")

import_app = typer.Typer(help="Import market data from files.", no_args_is_help=True)
candles_app = typer.Typer(help="Stored candle series.", no_args_is_help=True)

Exchange = Annotated[str, typer.Option(help="Exchange id the candles belong to (binance...).")]
SymbolOpt = Annotated[str, typer.Option(help="Market as BASE/QUOTE (BTC/USDT).")]
IntervalOpt = Annotated[str, typer.Option(help="Candle interval (1m, 1h, 1d...).")]


def register(app: typer.Typer) -> None:
    app.add_typer(import_app, name="import")
    app.add_typer(candles_app, name="candles")


def fail(message: str) -> NoReturn:
    # Imported here: cli.py imports this module to register it.
    from cryptodesk.cli import fail as cli_fail

    cli_fail(message)


def _series(exchange: str, symbol: str, interval: str) -> Series:
    from cryptodesk.services.candle_import import Series

    try:
        return Series.parse(exchange, symbol, interval)
    except DomainError as exc:
        fail(str(exc))


def _with_store(work: Callable[[SqlMarketStore], Awaitable[T]]) -> T:
    """Run ``work`` on the configured store; user-facing failures exit 2 with one line."""
    from cryptodesk import runtime
    from cryptodesk.adapters.db.engine import StorageError
    from cryptodesk.adapters.files.parsing import DataFileError
    from cryptodesk.cli import settings_or_exit
    from cryptodesk.wiring import StartupError

    settings = settings_or_exit()

    async def run() -> T:
        if settings.is_embedded_db:
            runtime.check_data_dir(settings)
        store = await runtime.open_store(settings, migrate_first=settings.is_embedded_db)
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except (DataFileError, DomainError, StorageError, StartupError) as exc:
        fail(str(exc))


@import_app.command("candles")
def import_candles(
    file: Annotated[Path, typer.Argument(help="CSV (ours, CryptoDataDownload, wide) or parquet.")],
    exchange: Exchange,
    symbol: SymbolOpt,
    interval: IntervalOpt,
) -> None:
    """Import a candle file: all rows or none; importing it again changes nothing."""
    from cryptodesk.services.candle_import import import_candles as run_import

    series = _series(exchange, symbol, interval)
    result = _with_store(lambda store: run_import(store, file, series))
    typer.echo(
        f"imported {result.candles} {series.symbol} {series.interval} candles of "
        f"{series.exchange} from {file} ({result.format}, {to_iso(result.first_open)} .. "
        f"{to_iso(result.last_open)}): {result.new} new, {result.updated} updated, "
        f"{result.unchanged} unchanged"
    )


def _time(option: str, text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_time(text, field=option)
    except DomainError as exc:
        fail(str(exc))


@candles_app.command("export")
def export_candles(
    exchange: Exchange,
    symbol: SymbolOpt,
    interval: IntervalOpt,
    start: Annotated[
        str | None, typer.Option(help="First open time (ISO 8601 or epoch ms), inclusive.")
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="Last open time (ISO 8601 or epoch ms), exclusive.")
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="csv or parquet (default: parquet for a .parquet output)."),
    ] = None,
    output: Annotated[Path | None, typer.Option(help="File to write (default: stdout).")] = None,
) -> None:
    """Write a stored candle series in our format (CSV or parquet), oldest first."""
    from cryptodesk.adapters.files.candle_files import CandleCsvWriter

    series = _series(exchange, symbol, interval)
    start_ms, end_ms = _time("--start", start), _time("--end", end)
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        fail("--start must be before --end")
    if fmt is None:
        fmt = "parquet" if output is not None and output.suffix == ".parquet" else "csv"
    if fmt not in FORMATS:
        fail(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "parquet" and output is None:
        fail("--format parquet writes a binary file: give --output PATH")
    if output is None:
        writer: CandleWriter = CandleCsvWriter(sys.stdout)
        written = _with_store(lambda store: _export(store, series, start_ms, end_ms, writer))
    else:
        with _replacing(output, fmt) as writer:
            written = _with_store(lambda store: _export(store, series, start_ms, end_ms, writer))
        typer.echo(f"exported {written} candles to {output}")
    if written == 0:
        typer.echo(f"cryptodesk: no {series.symbol} {series.interval} candles", err=True)


async def _export(
    store: SqlMarketStore, series: Series, start: int | None, end: int | None, writer: CandleWriter
) -> int:
    from cryptodesk.services.candle_import import stored_candles

    async for page in stored_candles(store, series, start=start, end=end):
        writer.write(page)
    writer.close()
    return writer.written


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _replacing(output: Path, fmt: str) -> Iterator[CandleWriter]:
    """A writer into a temporary file beside ``output``, renamed onto it on success."""
    from cryptodesk.adapters.files.candle_files import CandleCsvWriter, CandleParquetWriter

    target = output.resolve()
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        fail(f"--output {output}: {exc.strerror or exc}")
    tmp = Path(tmp_name)
    try:
        os.chmod(fd, 0o666 & ~_umask())  # mkstemp makes it private; honour the umask
        if fmt == "parquet":
            os.close(fd)
            parquet = CandleParquetWriter(tmp)
            try:
                yield parquet
            finally:
                parquet.close()  # a no-op when the export closed it
        else:
            with open(fd, "w", encoding="utf-8", newline="") as handle:
                yield CandleCsvWriter(handle)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
