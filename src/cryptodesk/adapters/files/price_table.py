"""A table of daily closes, one column per asset: the input of ``cryptodesk risk report``.

The first column is the date (any header, even none: ``2020-01-17`` or an ISO 8601
time, or epoch seconds/milliseconds); every other column is the close of one
asset, named either ``BTC`` or ``BTC:close``. When any ``ASSET:close`` column is
present, only those are read, so a wide OHLCV table such as
``bitstamp_btc_eth_ltc_usd_1d.csv`` (``BTC:open``, ``BTC:high`` ... ``LTC:volume``)
works as it is published.

An asset may start later than the others: its cells are empty until its first
price (it was not listed yet). After that a gap is an error, as is a price that is
not a positive finite number, a date that repeats, or dates out of order: a
risk figure over silently repaired prices would look exact and be wrong. Every
error names the file and the line. Rows are observations: a day missing from
the file (the exchange was down) makes one return span it, as it did for the
holder; ``gaps`` lists them so a report can say so.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from cryptodesk.adapters.files.parsing import DataFileError, csv_rows, epoch, number, timestamp
from cryptodesk.domain.errors import DomainError

_ASSET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
_EPOCH_DIGITS = re.compile(r"^[0-9]{9,13}$")


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Closes by day: ``prices[t, i]`` is asset ``assets[i]`` at ``times[t]`` (ms, UTC);
    NaN before an asset's first price, never after it."""

    times: npt.NDArray[np.int64]
    assets: tuple[str, ...]
    prices: npt.NDArray[np.float64]

    def gaps(self, *, step_ms: int = 86_400_000) -> list[tuple[int, int]]:
        """``(time, missing rows)`` after each row followed by a longer step than ``step_ms``."""
        steps = np.diff(self.times)
        at = np.flatnonzero(steps > step_ms)
        return [(int(self.times[i]), int(steps[i] // step_ms) - 1) for i in at]


def _time(text: str) -> int:
    return epoch("date", text) if _EPOCH_DIGITS.match(text) else timestamp("date", text)


def _columns(path: Path, header: list[str]) -> list[tuple[int, str]]:
    names = [h.strip() for h in header[1:]]
    if any(n.lower().endswith(":close") for n in names):
        picked = [(i + 1, n[: -len(":close")]) for i, n in enumerate(names)
                  if n.lower().endswith(":close")]  # fmt: skip
    else:
        picked = [(i + 1, n) for i, n in enumerate(names)]
    if not picked:
        raise DataFileError(path, 1, "no price column: expected a date column then ASSET or "
                            "ASSET:close columns")  # fmt: skip
    seen: set[str] = set()
    out = []
    for col, raw in picked:
        asset = raw.strip().upper()
        if not _ASSET.match(asset):
            raise DataFileError(path, 1, f"column {col + 1} {raw!r} is not an asset name")
        if asset in seen:
            raise DataFileError(path, 1, f"asset {asset} has two columns")
        seen.add(asset)
        out.append((col, asset))
    return out


def read_price_table(path: str | Path) -> PriceTable:
    """Read and check a table of closes (see the module docstring); ``DataFileError`` names
    the line of the first problem."""
    path = Path(path)
    rows = csv_rows(path)
    try:
        _, header = next(rows)
    except StopIteration:
        raise DataFileError(path, None, "the file is empty") from None
    columns = _columns(path, header)
    times: list[int] = []
    table: list[list[float]] = []
    started = [False] * len(columns)
    for line_no, row in rows:
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            row = row + [""] * (len(header) - len(row))
        try:
            ts = _time(row[0])
        except DomainError as exc:
            raise DataFileError(path, line_no, str(exc)) from None
        if times and ts <= times[-1]:
            problem = "repeats" if ts == times[-1] else "is before the previous row's"
            raise DataFileError(path, line_no, f"date {row[0]!r} {problem}; rows must be "
                                "in time order")  # fmt: skip
        values: list[float] = []
        for k, (col, asset) in enumerate(columns):
            cell = row[col].strip()
            if not cell:
                if started[k]:
                    raise DataFileError(path, line_no, f"{asset}: missing price after its "
                                        "first one")  # fmt: skip
                values.append(math.nan)
                continue
            try:
                price = number(asset, cell)
            except DomainError as exc:
                raise DataFileError(path, line_no, str(exc)) from None
            if not (math.isfinite(price) and price > 0):
                raise DataFileError(path, line_no, f"{asset}: price {cell} is not positive")
            started[k] = True
            values.append(price)
        times.append(ts)
        table.append(values)
    if not times:
        raise DataFileError(path, None, "no rows after the header")
    empty = [asset for (_, asset), s in zip(columns, started, strict=True) if not s]
    if empty:
        raise DataFileError(path, None, f"no price at all for {', '.join(empty)}")
    return PriceTable(
        np.asarray(times, dtype=np.int64),
        tuple(asset for _, asset in columns),
        np.asarray(table, dtype=np.float64),
    )
