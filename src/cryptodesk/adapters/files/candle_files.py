"""Candle files: read the formats users have, write ours (CSV and parquet).

Readers, told apart by the header (a banner line before it is skipped):

- ``cryptodesk``: our CSV, ``timestamp,open,high,low,close,volume`` with optional
  ``quote_volume`` and ``trades`` after them; the timestamp is ISO 8601 (naive
  means UTC) or epoch milliseconds; rows in any order.
- ``cryptodatadownload``: CryptoDataDownload.com's CSV: a banner line, then
  ``date,symbol,open,high,low,close,volume_btc,volume`` (newer files: ``unix``,
  ``Volume BTC``, ``Volume USDT``, ``tradecount``), newest first. Hourly dates
  read ``2019-10-17 09-AM`` on a 12-hour clock: ``12-AM`` is midnight opening
  the day, ``12-PM`` is noon (in the files ``12-AM`` sits between ``11-PM`` of
  the day before and ``01-AM``). The volume in the base currency is the candle
  volume; the unlabelled ``volume`` (or ``Volume <quote>``) is the quote volume.
- ``wide``: several assets in one table, ``date,BTC:open,...,BTC:volume,ETH:open,...``;
  the symbol's base picks the asset, and rows where all of its cells are empty
  (before it was listed) are skipped.
- ``parquet``: what ``CandleParquetWriter`` writes (row numbers stand for lines).

Every row is checked (numbers, time, OHLC consistency via ``Candle``, a
timestamp on the interval grid, no duplicate); the first bad one raises
``DataFileError`` naming its line, so nothing of a bad file is used.

Writers print floats with ``repr``, the shortest text that reads back as the
same double, so export then import reproduces every value bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TextIO

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from cryptodesk.adapters.files.candle_formats import (
    CSV_COLUMNS,
    PARQUET,
    PARQUET_MAGIC,
    PARQUET_SCHEMA,
    CandleRow,
    csv_layout,
    parquet_rows,
)
from cryptodesk.adapters.files.parsing import DataFileError, csv_rows, open_error
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.interval import SUPPORTED, Interval
from cryptodesk.domain.market import Candle
from cryptodesk.domain.symbol import Symbol
from cryptodesk.domain.timeutil import to_iso

__all__ = ["CSV_COLUMNS", "CandleFile", "CandleRow", "DataFileError", "read_candles"]


@dataclass(frozen=True, slots=True)
class CandleFile:
    """A validated file: ``candles`` in ascending open time, ``lines`` beside them."""

    path: str
    format: str
    candles: list[Candle]
    lines: list[int]


def read_candles(path: str | Path, *, exchange: str, symbol: str, interval: Interval) -> CandleFile:
    """Read and validate a whole candle file as ``exchange``'s ``symbol`` series."""
    fmt, rows = candle_rows(path, symbol=symbol)
    return to_candles(path, fmt, rows, exchange=exchange, symbol=symbol, interval=interval)


def to_candles(
    path: str | Path,
    fmt: str,
    rows: Iterable[CandleRow],
    *,
    exchange: str,
    symbol: str,
    interval: Interval,
) -> CandleFile:
    """Validate rows (in file order, so the first bad line is the one reported)."""
    first_line: dict[int, int] = {}
    found: list[tuple[Candle, int]] = []
    for row in rows:
        ts = row.open_time
        try:
            if interval.bucket(ts) != ts:
                raise DomainError(f"{to_iso(ts)} is not the open time of a {interval} candle")
            if ts in first_line:
                raise DomainError(f"a candle at {to_iso(ts)} is already on line {first_line[ts]}")
            candle = Candle(
                exchange, symbol, interval.name, ts, row.open, row.high, row.low, row.close,
                row.volume, row.quote_volume, row.trades, closed=True,
            )  # fmt: skip
        except DomainError as exc:
            raise DataFileError(path, row.line_no, str(exc)) from None
        first_line[ts] = row.line_no
        found.append((candle, row.line_no))
    found.sort(key=lambda item: item[0].open_time)
    gap = _min_gap([c.open_time for c, _ in found])
    if gap is not None and gap > interval.ms:
        # Every daily candle also sits on the hourly grid: only the spacing tells.
        likely = infer_interval([c.open_time for c, _ in found])
        hint = f"; is it a {likely} file?" if likely is not None else ""
        raise DataFileError(
            path, None, f"no two candles are one {interval} apart, so these are not {interval} "
            f"candles{hint}"
        )  # fmt: skip
    return CandleFile(str(path), fmt, [c for c, _ in found], [n for _, n in found])


def _min_gap(open_times: Sequence[int]) -> int | None:
    """Smallest distance between neighbours of sorted open times (None: fewer than two)."""
    gaps = [b - a for a, b in pairwise(open_times)]
    return min(gaps) if gaps else None


def infer_interval(open_times: Sequence[int]) -> Interval | None:
    """The interval of sorted open times: their smallest spacing, if it is one we know."""
    gap = _min_gap(open_times)
    for name in SUPPORTED:
        if gap is not None and Interval.parse(name).ms == gap:
            return Interval.parse(name)
    return None


def candle_rows(path: str | Path, *, symbol: str) -> tuple[str, Iterator[CandleRow]]:
    """The file's format and its rows in file order (parsed lazily, so a bad row
    raises only when reached)."""
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise open_error(path, exc) from None
    if magic == PARQUET_MAGIC:
        return PARQUET, parquet_rows(path)
    rows = csv_rows(path)
    sym = Symbol.parse(symbol)
    first_line = 0
    for tries in range(2):  # the header is on line 1, or on line 2 after a banner
        item = next(rows, None)
        if item is None:
            break
        line_no, cells = item
        first_line = first_line or line_no
        layout = csv_layout(path, line_no, cells, sym)
        if layout is not None:
            parsed = (layout.parse(path, n, c) for n, c in rows)
            return layout.format, (row for row in parsed if row is not None)
        if tries == 0 and len(cells) > 4:  # a data row, not a banner: no header at all
            break
    if first_line == 0:
        raise DataFileError(path, None, "the file is empty")
    raise DataFileError(
        path,
        first_line,
        "no known candle header: expected timestamp,open,high,low,close,volume, "
        "CryptoDataDownload's date,symbol,open,...,volume_<base> or a wide ASSET:open,... table",
    )


# ---- writers ---------------------------------------------------------------------------


def csv_line(c: Candle) -> str:
    # repr: the shortest decimal that reads back as exactly the same double.
    return (
        f"{to_iso(c.open_time)},{c.open!r},{c.high!r},{c.low!r},{c.close!r},"
        f"{c.volume!r},{c.quote_volume!r},{c.trades}\n"
    )


class CandleCsvWriter:
    """Our CSV, written batch by batch (the header goes first)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self.written = 0
        out.write(",".join(CSV_COLUMNS) + "\n")

    def write(self, candles: Sequence[Candle]) -> None:
        self._out.write("".join(map(csv_line, candles)))
        self.written += len(candles)

    def close(self) -> None:
        self._out.flush()


class CandleParquetWriter:
    """Our columns as parquet (timestamp as UTC milliseconds), batch by batch."""

    def __init__(self, path: str | Path) -> None:
        self._writer = pq.ParquetWriter(str(path), PARQUET_SCHEMA)
        self.written = 0

    def write(self, candles: Sequence[Candle]) -> None:
        if not candles:
            return
        columns = [
            [c.open_time for c in candles],
            *([getattr(c, name) for c in candles] for name in PARQUET_SCHEMA.names[1:]),
        ]
        self._writer.write_table(pa.Table.from_arrays(columns, schema=PARQUET_SCHEMA))
        self.written += len(candles)

    def close(self) -> None:
        self._writer.close()


def write_candles(
    candles: Iterable[Sequence[Candle]], writer: CandleCsvWriter | CandleParquetWriter
) -> int:
    """Write every batch, close, and return how many candles were written."""
    for batch in candles:
        writer.write(batch)
    writer.close()
    return writer.written
