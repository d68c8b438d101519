"""``cryptodesk backfill`` and ``cryptodesk jobs``: exchange history and scheduled prefetch.

Bad input (an exchange ccxt does not know, a symbol the exchange does not
list, an interval it does not serve, dates that do not parse or are out of
order) is one line on stderr and exit code 2, before anything is fetched. A
backfill that fails half-way keeps what it stored, says so, and exits 1: run
the same command again to continue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import msgspec
import typer

from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.symbol import Symbol
from cryptodesk.domain.timeutil import parse_time, to_iso

if TYPE_CHECKING:
    from cryptodesk.adapters.db.sql_store import SqlMarketStore
    from cryptodesk.config import Settings
    from cryptodesk.domain.jobs import JobStatus
    from cryptodesk.services.backfill import BackfillProgress, BackfillResult
    from cryptodesk.services.sources import ExchangeFetcher

T = TypeVar("T")


class _Stopped(Exception):
    """The backfill failed after storing part of the range."""


def register(app: typer.Typer) -> None:
    app.command("backfill")(backfill)
    app.command("jobs")(jobs)


def fail(message: str) -> NoReturn:
    # Imported here: cli.py imports this module to register it.
    from cryptodesk.cli import fail as cli_fail

    cli_fail(message)


def _time(option: str, text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_time(text, field=option)
    except DomainError as exc:
        fail(str(exc))


def _on_store(settings: Settings, work: Callable[[SqlMarketStore], Awaitable[T]]) -> T:
    """Run ``work`` on the configured store; storage and start-up problems exit 2."""
    from cryptodesk import runtime
    from cryptodesk.adapters.db.engine import StorageError
    from cryptodesk.wiring import StartupError

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
    except (StorageError, StartupError) as exc:
        fail(str(exc))


def backfill(
    exchange: Annotated[str, typer.Option(help="ccxt exchange id (binance, kraken...).")],
    symbol: Annotated[str, typer.Option(help="Market as BASE/QUOTE (BTC/USDT).")],
    interval: Annotated[str, typer.Option(help="Candle interval (1m, 1h, 1d...).")],
    since: Annotated[str, typer.Option(help="First open time: ISO 8601 (UTC) or epoch ms.")],
    until: Annotated[
        str | None, typer.Option(help="Stop before this open time (default: now).")
    ] = None,
) -> None:
    """Fetch candle history page by page; run it again to continue where it stopped."""
    from cryptodesk.adapters.exchanges.base import UnknownExchangeError
    from cryptodesk.cli import settings_or_exit
    from cryptodesk.observability.logging import configure_logging
    from cryptodesk.services import sources

    try:
        sym = str(Symbol.parse(symbol))
        iv = Interval.parse(interval)
    except DomainError as exc:
        fail(str(exc))
    start = _time("--since", since)
    end = _time("--until", until)
    assert start is not None
    if end is not None and end <= start:
        fail(f"--until {until} is not after --since {since}")
    settings = settings_or_exit()
    # The bar and the summary tell the progress; the log (stderr) only what went
    # wrong along the way (retries, rate-limit pauses), unless DEBUG is asked for.
    configure_logging(settings.log_format, "DEBUG" if settings.log_level == "DEBUG" else "WARNING")
    try:
        fetcher = sources.make_fetcher(exchange, settings)
    except UnknownExchangeError as exc:
        fail(str(exc))
    if fetcher.timeframes is not None and iv.name not in fetcher.timeframes:
        asyncio.run(fetcher.close())
        served = ", ".join(n for n in _ordered(fetcher.timeframes))
        fail(f"{exchange} has no {iv.name} candles; it serves {served}")

    async def work(store: SqlMarketStore) -> BackfillResult:
        try:
            return await _backfill(fetcher, store, sym, iv, start, end)
        finally:
            await fetcher.close()

    try:
        result = _on_store(settings, work)
    except _Stopped as exc:
        typer.echo(f"cryptodesk: error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(_summary(result))


def _ordered(timeframes: frozenset[str]) -> list[str]:
    """Intervals shortest first; names we cannot parse (1M, 1y) last."""
    known, other = [], []
    for name in timeframes:
        try:
            known.append((Interval.parse(name).ms, name))
        except DomainError:
            other.append(name)
    return [name for _, name in sorted(known)] + sorted(other)


async def _backfill(
    fetcher: ExchangeFetcher,
    store: SqlMarketStore,
    symbol: str,
    interval: Interval,
    since: int,
    until: int | None,
) -> BackfillResult:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from cryptodesk.services.backfill import backfill as run_backfill

    try:
        markets = await fetcher.load_markets()
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise _Stopped(f"cannot load the markets of {fetcher.exchange}: {reason}") from None
    if symbol not in {m.symbol for m in markets}:
        fail(f"{fetcher.exchange} does not list {symbol}")
    console = Console(stderr=True)
    fetched = 0
    with Progress(
        TextColumn(f"{fetcher.exchange} {symbol} {interval.name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("candles"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task("backfill", total=None)

        def on_progress(p: BackfillProgress) -> None:
            nonlocal fetched
            fetched = p.fetched
            # Slots walked rather than candles fetched: the ETA then holds
            # across stretches where the exchange has no candles.
            bar.update(task, total=p.expected, completed=p.walked)

        try:
            return await run_backfill(
                fetcher, store, symbol=symbol, interval=interval, since=since, until=until,
                limit=fetcher.ohlcv_limit, on_progress=on_progress,
            )  # fmt: skip
        except Exception as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise _Stopped(
                f"backfill stopped after storing {fetched} candles: {reason}; "
                "run the same command again to continue"
            ) from None


def _summary(r: BackfillResult) -> str:
    span = "up to date" if r.start >= r.end else f"{to_iso(r.start)} .. {to_iso(r.end)}"
    resumed = f", continued after {to_iso(r.resumed_after)}" if r.resumed_after is not None else ""
    return (
        f"backfilled {r.fetched} {r.symbol} {r.interval} candles of {r.exchange} "
        f"({span}) in {r.pages} requests{resumed}"
    )


def jobs(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the scheduled jobs (prefetch, daily PnL report, account sync): last and next run."""
    from cryptodesk.adapters.db.jobs_store import JobRunStore
    from cryptodesk.cli import settings_or_exit
    from cryptodesk.portfolio_wiring import portfolio_job_ids
    from cryptodesk.services.jobs import list_jobs
    from cryptodesk.services.market_queries import Unavailable

    settings = settings_or_exit()

    async def work(store: SqlMarketStore) -> list[JobStatus]:
        return await list_jobs(
            JobRunStore(store.engine), settings.exchanges, portfolio_job_ids(settings)
        )

    try:
        statuses = _on_store(settings, work)
    except Unavailable as exc:
        fail(str(exc))
    if as_json:
        rows = [job_json(s) for s in statuses]
        typer.echo(msgspec.json.format(msgspec.json.encode(rows), indent=2).decode())
        return
    if not statuses:
        typer.echo(
            "no scheduled jobs (only sim or replay exchanges are configured, "
            "no daily PnL report, no account sync)"
        )
        return
    typer.echo(_table(statuses))


def _when(ts: int | None) -> str:
    return "-" if ts is None else to_iso(ts)


def job_json(s: JobStatus) -> dict[str, object]:
    return {
        "job": s.job_id,
        "last_started_at": None if s.last_started_at is None else to_iso(s.last_started_at),
        "last_finished_at": None if s.last_finished_at is None else to_iso(s.last_finished_at),
        "outcome": s.outcome,
        "error": s.error,
        "next_run_at": None if s.next_run_at is None else to_iso(s.next_run_at),
        "last_ok_at": None if s.last_ok_at is None else to_iso(s.last_ok_at),
        "owner": s.owner,
    }


def _table(statuses: list[JobStatus]) -> str:
    header = ("JOB", "LAST RUN", "OUTCOME", "NEXT RUN", "LAST OK", "ERROR")
    rows = [
        (
            s.job_id,
            _when(s.last_started_at),
            s.outcome or "never ran",
            _when(s.next_run_at),
            _when(s.last_ok_at),
            (s.error or "").splitlines()[0][:80] if s.error else "",
        )
        for s in statuses
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)
