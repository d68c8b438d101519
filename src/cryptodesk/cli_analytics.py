"""``cryptodesk indicators``: technical indicator columns for a candle file.

The input is our candle file (the CSV ``cryptodesk candles export`` writes,
``timestamp,open,high,low,close,volume`` header required, or its parquet),
rows in any order. It is read and checked by the same reader as
``cryptodesk import candles``: duplicates, NaN and non-positive prices are
rejected naming the line. Missing candles are reported as one warning line on
stderr; the indicators then run over the candles as they are, one after the
other, as TA-Lib would.

The output CSV has ``timestamp`` (ISO 8601 UTC, as in our export) and one
column per indicator output, oldest candle first; warm-up cells are empty and
numbers are written with ``repr``, the shortest text that reads back as the
same double. Like every ``cryptodesk`` command, a bad spec or a bad file
prints one line ``cryptodesk: error: ...`` and exits with code 2.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TextIO

import typer

from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.timeutil import to_iso

if TYPE_CHECKING:
    from cryptodesk.adapters.files.candle_files import CandleFile
    from cryptodesk.analytics.indicators import FloatArray
    from cryptodesk.domain.interval import Interval

# The reader builds candles of a named market; a file of ours carries no symbol.
_SYMBOL = "FILE/ANY"
_CHUNK = 10_000  # rows formatted at a time, so a long file never sits in memory as text


def register(app: typer.Typer) -> None:
    app.command("indicators")(indicators)


def fail(message: str) -> NoReturn:
    # Imported here: cli.py imports this module to register it.
    from cryptodesk.cli import fail as cli_fail

    cli_fail(message)


def indicators(
    input_file: Annotated[
        Path, typer.Option("--input", help="Our candle CSV (or parquet), rows in any order.")
    ],
    spec: Annotated[
        str,
        typer.Option(
            "--indicators",
            help="Comma list such as sma:200,macd:12:26:9,bbands:20:2,obv,vwap.",
        ),
    ],
    output: Annotated[
        Path | None, typer.Option(help="CSV file to write (default: stdout).")
    ] = None,
    interval: Annotated[
        str | None,
        typer.Option(help="Candle interval (default: the spacing of the open times)."),
    ] = None,
) -> None:
    """Compute indicators over a candle file and write them as CSV."""
    from cryptodesk.adapters.files.parsing import DataFileError
    from cryptodesk.analytics.indicators import compute, parse_specs

    try:
        specs = parse_specs(spec)
    except DomainError as exc:
        fail(f"--indicators: {exc}")
    try:
        series, step = _read(input_file, interval)
    except (DataFileError, DomainError) as exc:
        fail(str(exc))
    gaps = _gaps(series.open_times, step.ms)
    if gaps:
        typer.echo(f"cryptodesk: warning: {input_file}: {gaps}", err=True)
    columns = compute(specs, series.arrays)
    names = list(columns)
    if output is None:
        _write(sys.stdout, series.open_times, names, list(columns.values()))
        return
    with _replacing(output) as handle:
        _write(handle, series.open_times, names, list(columns.values()))
    typer.echo(f"wrote {len(series.open_times)} rows of {len(names)} columns to {output}")


class _Series:
    """A checked candle file as the arrays the indicators read."""

    def __init__(self, file: CandleFile) -> None:
        import numpy as np

        candles = file.candles
        self.open_times = [c.open_time for c in candles]
        self.arrays: dict[str, FloatArray] = {
            "ts": np.array(self.open_times, dtype=np.float64),
            "open": np.array([c.open for c in candles], dtype=np.float64),
            "high": np.array([c.high for c in candles], dtype=np.float64),
            "low": np.array([c.low for c in candles], dtype=np.float64),
            "close": np.array([c.close for c in candles], dtype=np.float64),
            "volume": np.array([c.volume for c in candles], dtype=np.float64),
        }


def _read(path: Path, interval_text: str | None) -> tuple[_Series, Interval]:
    """Read our candle file; the interval is the one given or the open times' spacing."""
    from cryptodesk.adapters.files.candle_files import candle_rows, infer_interval, to_candles
    from cryptodesk.adapters.files.candle_formats import CSV_COLUMNS, PARQUET_MAGIC
    from cryptodesk.adapters.files.parsing import DataFileError, csv_rows, open_error
    from cryptodesk.domain.interval import Interval

    given = None if interval_text is None else Interval.parse(interval_text)
    try:
        with open(path, "rb") as handle:
            parquet = handle.read(4) == PARQUET_MAGIC
    except OSError as exc:
        raise open_error(path, exc) from None
    if not parquet:
        # Other formats' readers need the market's symbol; ours has a header of its own.
        first = next(csv_rows(path), None)
        if first is None:
            raise DataFileError(path, None, "the file is empty")
        line_no, cells = first
        if tuple(c.lower() for c in cells[:6]) != CSV_COLUMNS[:6]:
            raise DataFileError(
                path, line_no, f"expected our candle header {','.join(CSV_COLUMNS[:6])}"
            )
    fmt, lazy_rows = candle_rows(path, symbol=_SYMBOL)
    rows = list(lazy_rows)
    step = given
    if step is None:
        times = sorted({row.open_time for row in rows})
        step = infer_interval(times)
        if step is None:
            found = "fewer than two candles" if len(times) < 2 else "no known interval"
            raise DataFileError(
                path, None, f"cannot tell the candle interval ({found}); give --interval"
            )
    file = to_candles(path, fmt, rows, exchange="file", symbol=_SYMBOL, interval=step)
    return _Series(file), step


def _gaps(open_times: Sequence[int], step_ms: int) -> str:
    """What is missing between sorted open times, as one sentence ('' when nothing is)."""
    holes = [(a, b) for a, b in pairwise(open_times) if b - a > step_ms]
    if not holes:
        return ""
    missing = sum((b - a) // step_ms - 1 for a, b in holes)
    a, b = holes[0]
    return (
        f"{missing} missing candle{'s' if missing > 1 else ''} in {len(holes)} "
        f"gap{'s' if len(holes) > 1 else ''}, the first after {to_iso(a)} "
        f"(next at {to_iso(b)}); indicators run over the candles present"
    )


def _write(
    out: TextIO, open_times: Sequence[int], names: list[str], columns: list[FloatArray]
) -> None:
    out.write(",".join(["timestamp", *names]) + "\n")
    for start in range(0, len(open_times), _CHUNK):
        stop = start + _CHUNK
        # x == x is False only for NaN: the warm-up, written as an empty cell.
        cells = [[repr(x) if x == x else "" for x in col[start:stop].tolist()] for col in columns]
        times = [to_iso(ts) for ts in open_times[start:stop]]
        out.write("".join(",".join(row) + "\n" for row in zip(times, *cells, strict=True)))
    out.flush()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _replacing(output: Path) -> Iterator[TextIO]:
    """A text file beside ``output``, renamed onto it on success (never a half-written file)."""
    target = output.resolve()
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        fail(f"--output {output}: {exc.strerror or exc}")
    tmp = Path(tmp_name)
    try:
        os.chmod(fd, 0o666 & ~_umask())  # mkstemp makes it private; honour the umask
        with open(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
