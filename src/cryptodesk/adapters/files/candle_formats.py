"""Where the columns are in each candle file format, and how a row becomes a ``CandleRow``.

``candle_files`` picks the layout from the header; the formats are described there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from cryptodesk.adapters.files.parsing import (
    DataFileError,
    count,
    datetime_ms,
    epoch,
    in_range,
    number,
    timestamp,
)
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.symbol import Symbol

OURS, CDD, WIDE, PARQUET = "cryptodesk", "cryptodatadownload", "wide", "parquet"
CSV_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume", "quote_volume", "trades")
_REQUIRED = CSV_COLUMNS[:6]
_OPTIONAL = frozenset(CSV_COLUMNS[6:])
_OHLCV = ("open", "high", "low", "close", "volume")
_TRADE_HEADER = ("timestamp", "price", "amount", "side")
PARQUET_MAGIC = b"PAR1"
_CDD_HOUR = re.compile(r"^([0-9]{4}-[0-9]{2}-[0-9]{2}) ([0-9]{1,2})-(AM|PM)$", re.IGNORECASE)
_WIDE_TIME = ("", "date", "timestamp", "time")


class CandleRow(NamedTuple):
    """One candle as read, before it becomes a ``Candle`` of a series."""

    line_no: int
    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float = 0.0
    trades: int = 0


@dataclass(frozen=True, slots=True)
class CsvLayout:
    format: str
    width: int
    time: int
    read_time: Callable[[str, str], int]
    ohlcv: tuple[int, int, int, int, int]
    quote_volume: int | None = None
    trades: int | None = None
    symbol: int | None = None  # a column to check against the requested symbol
    expected_symbol: str = ""
    skip_if_blank: bool = False  # wide tables: the asset was not listed yet

    def parse(self, path: str | Path, line_no: int, cells: list[str]) -> CandleRow | None:
        """The row's candle; None for a wide table's row before the asset was listed."""
        if len(cells) != self.width:
            raise DataFileError(path, line_no, f"expected {self.width} columns, got {len(cells)}")
        try:
            return self._row(line_no, cells)
        except DomainError as exc:
            raise DataFileError(path, line_no, str(exc)) from None

    def _row(self, line_no: int, cells: list[str]) -> CandleRow | None:
        values = [cells[i] for i in self.ohlcv]
        if self.skip_if_blank and not any(values):
            return None
        ts = self.read_time("timestamp", cells[self.time])
        if self.symbol is not None:
            found = cells[self.symbol]
            if _compact(found) != _compact(self.expected_symbol):
                raise DomainError(f"symbol {found!r} is not {self.expected_symbol}")
        o, h, lo, c, v = (number(name, text) for name, text in zip(_OHLCV, values, strict=True))
        quote = 0.0
        if self.quote_volume is not None:
            quote = number("quote volume", cells[self.quote_volume])
        trades = 0 if self.trades is None else count("trades", cells[self.trades])
        return CandleRow(line_no, ts, o, h, lo, c, v, quote, trades)


def _compact(text: str) -> str:
    return re.sub(r"[/\-_: ]", "", text.upper())


def csv_layout(path: str | Path, line_no: int, cells: list[str], sym: Symbol) -> CsvLayout | None:
    names = [c.lower() for c in cells]
    if tuple(names[:4]) == _TRADE_HEADER:
        raise DataFileError(
            path, line_no, "this is a trade file (timestamp,price,amount,side), not candles"
        )
    if tuple(names[:6]) == _REQUIRED:
        return _ours(path, line_no, names)
    if "symbol" in names and ("date" in names or "unix" in names):
        return _cdd(path, line_no, names, sym)
    if any(":" in n for n in names[1:]):
        return _wide(path, line_no, cells, sym)
    return None


def _index(names: list[str]) -> dict[str, int]:
    return {name: i for i, name in enumerate(names)}


def _ours(path: str | Path, line_no: int, names: list[str]) -> CsvLayout:
    extra = names[6:]
    unknown = [n for n in extra if n not in _OPTIONAL]
    if unknown or len(set(extra)) != len(extra):
        raise DataFileError(
            path, line_no, f"unexpected column(s) {', '.join(unknown or extra)}; "
            f"after volume only {', '.join(sorted(_OPTIONAL))} may follow"
        )  # fmt: skip
    at = _index(names)
    return CsvLayout(
        OURS, len(names), 0, timestamp, (1, 2, 3, 4, 5),
        quote_volume=at.get("quote_volume"), trades=at.get("trades"),
    )  # fmt: skip


def _cdd(path: str | Path, line_no: int, names: list[str], sym: Symbol) -> CsvLayout:
    at = _index([n.replace(" ", "_") for n in names])
    missing = [n for n in ("open", "high", "low", "close") if n not in at]
    base = at.get(f"volume_{sym.base.lower()}")
    labelled = sorted(n for n in at if n.startswith("volume_"))
    if base is None:
        wanted = f"volume_{sym.base.lower()}"
        have = f" (it has {', '.join(labelled)})" if labelled else ""
        missing.append(f"{wanted}{have}")
    if missing:
        raise DataFileError(
            path, line_no, f"CryptoDataDownload header lacks {'; '.join(missing)} for {sym}"
        )
    assert base is not None
    quote = at.get(f"volume_{sym.quote.lower()}", at.get("volume"))
    if "unix" in at:
        time, read_time = at["unix"], epoch
    else:
        time, read_time = at["date"], _cdd_time
    return CsvLayout(
        CDD, len(names), time, read_time,
        (at["open"], at["high"], at["low"], at["close"], base),
        quote_volume=quote, trades=at.get("tradecount"),
        symbol=at["symbol"], expected_symbol=str(sym),
    )  # fmt: skip


def _wide(path: str | Path, line_no: int, cells: list[str], sym: Symbol) -> CsvLayout | None:
    if cells[0].lower() not in _WIDE_TIME:
        return None
    columns: dict[tuple[str, str], int] = {}
    for i, name in enumerate(cells[1:], start=1):
        asset, sep, field = name.partition(":")
        if not sep:
            raise DataFileError(path, line_no, f"column {name!r} is not of the form ASSET:field")
        columns[(asset.strip().upper(), field.strip().lower())] = i
    assets = sorted({asset for asset, _ in columns})
    if sym.base not in assets:
        raise DataFileError(
            path, line_no, f"no {sym.base} columns for {sym}; the file has {', '.join(assets)}"
        )
    missing = [f"{sym.base}:{f}" for f in _OHLCV if (sym.base, f) not in columns]
    if missing:
        raise DataFileError(path, line_no, f"missing column(s) {', '.join(missing)}")
    o, h, lo, c, v = (columns[(sym.base, f)] for f in _OHLCV)
    return CsvLayout(WIDE, len(cells), 0, timestamp, (o, h, lo, c, v), skip_if_blank=True)


def _cdd_time(name: str, text: str) -> int:
    """``2019-10-17 09-AM`` (12-hour clock), or an ISO date / date-time."""
    match = _CDD_HOUR.match(text)
    try:
        if match is None:
            dt = datetime.fromisoformat(text)
        else:
            day, hour12, half = match.group(1), int(match.group(2)), match.group(3).upper()
            if not 1 <= hour12 <= 12:
                raise ValueError
            hour = hour12 % 12 + (12 if half == "PM" else 0)
            dt = datetime.fromisoformat(day).replace(hour=hour)
    except ValueError:
        raise DomainError(
            f"{name} {text!r} is not a date like 2019-10-17 09-AM or ISO 8601", field=name
        ) from None
    return in_range(name, text, datetime_ms(dt))


# ---- parquet ---------------------------------------------------------------------------

PARQUET_SCHEMA = pa.schema(
    [
        ("timestamp", pa.timestamp("ms", tz="UTC")),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.float64()),
        ("quote_volume", pa.float64()),
        ("trades", pa.int64()),
    ]
)


def parquet_rows(path: str | Path) -> Iterator[CandleRow]:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataFileError(path, None, f"unreadable parquet file: {exc}") from None
    missing = [n for n in _REQUIRED if n not in table.column_names]
    if missing:
        raise DataFileError(path, None, f"parquet file lacks column(s) {', '.join(missing)}")
    ts_col = table.column("timestamp")
    if pa.types.is_timestamp(ts_col.type):
        ts_col = ts_col.cast(pa.timestamp("ms")).cast(pa.int64())
    elif not pa.types.is_integer(ts_col.type):
        raise DataFileError(path, None, f"parquet timestamp column has type {ts_col.type}")
    values = [ts_col.to_pylist()] + [table.column(n).to_pylist() for n in _OHLCV]
    for extra in ("quote_volume", "trades"):
        present = extra in table.column_names
        values.append(table.column(extra).to_pylist() if present else [0] * table.num_rows)
    for i, (ts, *rest) in enumerate(zip(*values, strict=True)):
        if ts is None or any(v is None for v in rest):
            raise DataFileError(path, i + 1, "empty value")
        o, h, lo, c, v, quote, trades = rest
        try:
            ts = in_range("timestamp", str(ts), int(ts))
        except DomainError as exc:
            raise DataFileError(path, i + 1, str(exc)) from None
        yield CandleRow(
            i + 1, ts, float(o), float(h), float(lo), float(c), float(v), float(quote), int(trades)
        )
