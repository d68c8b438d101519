"""``cryptodesk backtest``: replay a candle series through a strategy and write its report.

``--data`` is a candle file (ours, CryptoDataDownload, a wide table, or our
parquet; read by the importer's reader, so duplicates, NaN and non-positive
prices are rejected naming the line, and rows may come in any order) or a
stored series ``db:EXCHANGE:SYMBOL:INTERVAL[:START[:END]]`` (START inclusive,
END exclusive, ISO 8601 or epoch ms; either may be left empty). Missing
candles are reported as one warning line; the backtest runs over the candles
as they are.

The report goes to ``--out`` (default ``./backtest-STRATEGY-TIMESTAMP/``):
``report.json``, ``trades.csv`` and ``report.html``; a summary is printed.
Bad input is one line ``cryptodesk: error: ...`` and exit code 2; a strategy
that raises prints its traceback and exits 1.
"""

from __future__ import annotations

import asyncio
import re
import time
from itertools import islice, pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.timeutil import parse_time, to_iso

if TYPE_CHECKING:
    from cryptodesk.analytics.backtest import BacktestConfig, BacktestResult
    from cryptodesk.analytics.strategy import Strategy
    from cryptodesk.domain.interval import Interval
    from cryptodesk.domain.market import Candle
    from cryptodesk.services.candle_import import Series

_ANY = "FILE/ANY"  # the reader builds candles of a named market; our files carry none
SELECTOR = "db:EXCHANGE:SYMBOL:INTERVAL[:START[:END]]"


def register(app: typer.Typer) -> None:
    app.command("backtest")(backtest)


def fail(message: str) -> NoReturn:
    # Imported here: cli.py imports this module to register it.
    from cryptodesk.cli import fail as cli_fail

    cli_fail(message)


def _opt(help: str) -> Any:
    return typer.Option(help=help)


StrategyOpt = Annotated[str, _opt("ma_cross, rsi_reversion, macd_trend or bollinger_breakout.")]
DataOpt = Annotated[str, _opt(f"A candle file, or {SELECTOR}.")]
ParamOpt = Annotated[list[str] | None, _opt("Strategy parameter NAME=VALUE (repeatable).")]
RateOpt = Annotated[float, _opt("Taker fee rate (market and stop orders).")]
MakerOpt = Annotated[float | None, _opt("Maker fee rate (take-profit orders); default --fee.")]
BpsOpt = Annotated[float, _opt("Slippage in basis points of the price.")]
VolumeOpt = Annotated[float, _opt("Extra slippage: K x order qty / candle volume.")]
SizeOpt = Annotated[str, _opt("fraction:F of equity (0 < F <= 1) or notional:AMOUNT.")]
LotOpt = Annotated[float, _opt("Round quantities down to this amount increment (0: none).")]
StopOpt = Annotated[float | None, _opt("Stop-loss as a fraction of the entry price.")]
TakeOpt = Annotated[float | None, _opt("Take-profit as a fraction of the entry price.")]
ShortOpt = Annotated[bool, _opt("Open shorts on sell signals (default: long only).")]
CashOpt = Annotated[float, _opt("Initial cash in the quote currency.")]
SymbolOpt = Annotated[str | None, _opt("Market of a file (CryptoDataDownload files name it).")]
IntervalOpt = Annotated[str | None, _opt("Interval of a file (default: from its spacing).")]
OutOpt = Annotated[Path | None, _opt("Report directory (default ./backtest-STRATEGY-TIME).")]


def backtest_config(*, size: str, **options: Any) -> BacktestConfig:
    """The ``BacktestConfig`` of the cost and sizing options (``--size`` parsed);
    ``optimize`` and ``compare`` take the same options."""
    from cryptodesk.analytics.backtest import BacktestConfig, Sizing

    return BacktestConfig(sizing=Sizing.parse(size), **options)


def backtest(
    strategy: StrategyOpt,
    data: DataOpt,
    param: ParamOpt = None,
    fee: RateOpt = 0.001,
    maker_fee: MakerOpt = None,
    slippage_bps: BpsOpt = 0.0,
    slippage_volume: VolumeOpt = 0.0,
    size: SizeOpt = "fraction:1.0",
    lot: LotOpt = 0.0,
    stop_loss: StopOpt = None,
    take_profit: TakeOpt = None,
    allow_short: ShortOpt = False,
    cash: CashOpt = 10_000.0,
    symbol: SymbolOpt = None,
    interval: IntervalOpt = None,
    out: OutOpt = None,
) -> None:
    """Backtest a built-in strategy on a candle file or a stored series."""
    from cryptodesk.analytics.strategies import build_strategy, parse_param_items

    try:
        chosen = build_strategy(strategy, parse_param_items(param or []))
        config = backtest_config(
            initial_cash=cash, fee=fee, maker_fee=maker_fee, slippage_bps=slippage_bps,
            slippage_volume=slippage_volume, size=size, lot=lot,
            stop_loss=stop_loss, take_profit=take_profit, allow_short=allow_short,
        )  # fmt: skip
    except DomainError as exc:
        fail(str(exc))
    candles, iv, origin = load_candles(data, symbol, interval)
    result = _run(candles, chosen, config, iv)
    target = out or Path(f"backtest-{chosen.name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    from cryptodesk.analytics.backtest_report import write_reports

    try:
        write_reports(target, result, data=origin)
    except OSError as exc:
        fail(f"--out {target}: {exc.strerror or exc}")
    typer.echo(summary(result, origin))
    typer.echo(f"wrote report.json, trades.csv and report.html to {target}")


def _run(
    candles: list[Candle], strategy: Strategy, config: BacktestConfig, iv: Interval
) -> BacktestResult:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from cryptodesk.analytics.backtest import BacktestError, run_backtest

    console = Console(stderr=True)
    with Progress(
        TextColumn(f"backtest {strategy.name}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("candles"), TimeElapsedColumn(), console=console,
        disable=not console.is_terminal,
    ) as bar:  # fmt: skip
        task = bar.add_task("backtest", total=len(candles))
        try:
            return run_backtest(
                candles, strategy, config, interval_ms=iv.ms,
                on_progress=lambda done, _total: bar.update(task, completed=done),
            )  # fmt: skip
        except BacktestError as exc:
            typer.echo(exc.traceback.rstrip(), err=True)
            typer.echo(f"cryptodesk: error: {exc}", err=True)
            raise typer.Exit(1) from None
        except DomainError as exc:
            fail(str(exc))


# ---- data -------------------------------------------------------------------------------


def load_candles(
    data: str, symbol: str | None, interval: str | None
) -> tuple[list[Candle], Interval, dict[str, Any]]:
    """The candles of ``--data`` (a file or a db: selector), their interval and origin;
    gaps are reported as one warning line, bad input exits 2."""
    if data.startswith("db:"):
        candles, iv, origin = _from_store(data)
    else:
        candles, iv, origin = _from_file(Path(data), symbol, interval)
    _warn_gaps(data, candles, iv)
    return candles, iv, origin


def _file_symbol(path: Path) -> str:
    """The market of a file without --symbol: CryptoDataDownload files name it in a column."""
    from cryptodesk.adapters.files.parsing import DataFileError, csv_rows

    try:
        with open(path, "rb") as handle:
            if handle.read(4) == b"PAR1":
                return _ANY
        # The generator, dropped unfinished, closes its file when collected.
        head = [cells for _, cells in islice(csv_rows(path), 3)]
    except (OSError, DataFileError):
        return _ANY  # the reader says what is wrong with it
    for k, cells in enumerate(head[:2]):
        names = [c.lower().replace(" ", "_") for c in cells]
        if names[0] in ("", "date", "timestamp", "time") and any(":" in n for n in names[1:]):
            fail(f"{path} holds several assets: give --symbol BASE/QUOTE to pick one")
        if "symbol" not in names or k + 1 >= len(head):
            continue
        bases = [n.removeprefix("volume_").upper() for n in names if n.startswith("volume_")]
        row = head[k + 1]
        market = (
            re.sub(r"[/\-_: ]", "", row[names.index("symbol")].upper())
            if len(row) == len(names)
            else ""
        )
        for base in bases:
            if market.startswith(base) and len(market) > len(base):
                return f"{base}/{market[len(base) :]}"
        fail(f"{path}: cannot tell the market from its symbol column; give --symbol BASE/QUOTE")
    return _ANY


def _from_file(
    path: Path, symbol: str | None, interval: str | None
) -> tuple[list[Candle], Interval, dict[str, Any]]:
    from cryptodesk.adapters.files.candle_files import candle_rows, infer_interval, to_candles
    from cryptodesk.adapters.files.parsing import DataFileError
    from cryptodesk.domain.interval import Interval
    from cryptodesk.domain.symbol import Symbol

    try:
        sym = str(Symbol.parse(symbol)) if symbol else _file_symbol(path)
        given = Interval.parse(interval) if interval else None
        fmt, lazy = candle_rows(path, symbol=sym)
        rows = list(lazy)
        iv = given or infer_interval(sorted({r.open_time for r in rows}))
        if iv is None:
            fail(f"{path}: cannot tell the candle interval from its spacing; give --interval")
        parsed = to_candles(path, fmt, rows, exchange="file", symbol=sym, interval=iv)
    except (DataFileError, DomainError) as exc:
        fail(str(exc))
    if not parsed.candles:
        fail(f"{path}: the file holds no candles")
    origin = {"source": str(path), "format": fmt, "exchange": None,
              "symbol": None if sym == _ANY else sym, "interval": iv.name}  # fmt: skip
    return parsed.candles, iv, origin


def _window(text: str) -> tuple[int | None, int | None]:
    """``START``, ``START:END``, ``:END`` (ISO times hold colons: try each split)."""

    def when(part: str, name: str) -> int | None:
        return parse_time(part, field=name) if part else None

    try:
        return when(text, "START"), None
    except DomainError:
        pass
    for at in [m.start() for m in re.finditer(":", text)]:
        try:
            return when(text[:at], "START"), when(text[at + 1 :], "END")
        except DomainError:
            continue
    raise DomainError(f"{text!r} is not START[:END] (ISO 8601 or epoch ms)", field="data")


def parse_selector(text: str) -> tuple[Series, int | None, int | None]:
    """``db:binance:BTC/USDT:1h:2024-01-01:2024-02-01`` -> series, start, end."""
    from cryptodesk.services.candle_import import Series

    parts = text.split(":", 4)
    if len(parts) < 4 or parts[0] != "db":
        raise DomainError(f"--data {text!r} is not a file nor {SELECTOR}", field="data")
    series = Series.parse(parts[1], parts[2], parts[3])
    start, end = _window(parts[4]) if len(parts) == 5 else (None, None)
    if start is not None and end is not None and start >= end:
        raise DomainError(f"--data {text!r}: START must be before END", field="data")
    return series, start, end


def _from_store(text: str) -> tuple[list[Candle], Interval, dict[str, Any]]:
    from cryptodesk import runtime
    from cryptodesk.adapters.db.engine import StorageError
    from cryptodesk.cli import settings_or_exit
    from cryptodesk.observability.logging import configure_logging
    from cryptodesk.services.candle_import import stored_candles
    from cryptodesk.wiring import StartupError

    try:
        series, start, end = parse_selector(text)
    except DomainError as exc:
        fail(str(exc))
    settings = settings_or_exit()
    # The report is the output; the log (stderr) only says what went wrong, as
    # for backfill (the migrations' INFO lines are not news here).
    configure_logging(settings.log_format, "DEBUG" if settings.log_level == "DEBUG" else "WARNING")

    async def load() -> list[Candle]:
        if settings.is_embedded_db:
            runtime.check_data_dir(settings)
        store = await runtime.open_store(settings, migrate_first=settings.is_embedded_db)
        try:
            return [
                c
                async for page in stored_candles(store, series, start=start, end=end)
                for c in page
            ]
        finally:
            await store.close()

    try:
        candles = asyncio.run(load())
    except (StorageError, StartupError) as exc:
        fail(str(exc))
    if not candles:
        window = "" if start is None and end is None else " in that range"
        fail(f"no {series.exchange} {series.symbol} {series.interval} candles stored{window}")
    origin = {"source": text, "format": "db", "exchange": series.exchange,
              "symbol": series.symbol, "interval": series.interval.name}  # fmt: skip
    return candles, series.interval, origin


def _warn_gaps(source: str, candles: list[Candle], iv: Interval) -> None:
    gaps = [(a, b) for a, b in pairwise(c.open_time for c in candles) if b - a > iv.ms]
    if not gaps:
        return
    missing = sum((b - a) // iv.ms - 1 for a, b in gaps)
    a, b = gaps[0]
    typer.echo(
        f"cryptodesk: warning: {source}: {missing} missing candle{'s' if missing > 1 else ''} "
        f"in {len(gaps)} gap{'s' if len(gaps) > 1 else ''}, the first after {to_iso(a)} "
        f"(next at {to_iso(b)}); the backtest runs over the candles present",
        err=True,
    )


def summary(result: BacktestResult, origin: dict[str, Any]) -> str:
    m = result.metrics

    def pct(v: float) -> str:
        return f"{v * 100:.2f}%" if v == v else "n/a"

    def num(v: float) -> str:
        return f"{v:.2f}" if v == v else "n/a"

    params = ", ".join(f"{k}={v}" for k, v in result.params.items())
    market = " ".join(str(origin[k]) for k in ("exchange", "symbol", "interval") if origin.get(k))
    return "\n".join(
        [
            f"{result.strategy} ({params}) on {market}: {len(result.ts)} candles, "
            f"{to_iso(int(result.ts[0]))} .. {to_iso(int(result.ts[-1]))}",
            f"trades {m.trades}, win rate {pct(m.win_rate)}, profit factor {num(m.profit_factor)}, "
            f"exposure {pct(m.exposure)}",
            f"total return {pct(m.total_return)}, CAGR {pct(m.cagr)}, "
            f"max drawdown {pct(m.max_drawdown)}",
            f"Sharpe {num(m.sharpe)}, Sortino {num(m.sortino)}, Calmar {num(m.calmar)}",
            f"final equity {m.final_equity:,.2f} from {m.initial_cash:,.2f} (fees {m.fees:,.2f})",
        ]
    )
