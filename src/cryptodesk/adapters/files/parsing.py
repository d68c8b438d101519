"""What every market-data file reader shares: rows with line numbers, strict numbers
and times, and one error type that names the file and the line.

Numbers are parsed strictly on purpose: Python's ``float`` also accepts ``nan``,
``inf`` and ``1_000``, none of which belongs in a price column, and a file that
holds them is more likely broken than meant.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.timeutil import MAX_TS_MS, MIN_TS_MS, parse_time

_NUMBER = re.compile(r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")
_INTEGER = re.compile(r"^[+-]?[0-9]+$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# Epoch values below this are seconds, not milliseconds (1e11 s is the year 5138).
_SECONDS_BELOW = 100_000_000_000


class DataFileError(ValueError):
    """A file cannot be used; ``line_no`` is the 1-based line (parquet: row), if any.

    ``str()`` is ``FILE:LINE: reason``, the form compilers use, so editors can
    jump to the line.
    """

    def __init__(self, path: str | Path, line_no: int | None, reason: str) -> None:
        self.path = str(path)
        self.line_no = line_no
        self.reason = reason
        where = self.path if line_no is None else f"{self.path}:{line_no}"
        super().__init__(f"{where}: {reason}")


def open_error(path: str | Path, exc: OSError) -> DataFileError:
    return DataFileError(path, None, f"cannot read the file: {exc.strerror or exc}")


def csv_rows(path: str | Path) -> Iterator[tuple[int, list[str]]]:
    """``(line_no, cells)`` of each non-blank row, cells stripped.

    ``utf-8-sig`` drops the byte-order mark spreadsheet programs write.
    """
    try:
        handle = open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise open_error(path, exc) from None
    with handle:
        reader = csv.reader(handle)
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError:
                raise DataFileError(path, reader.line_num + 1, "not UTF-8 text") from None
            except csv.Error as exc:
                raise DataFileError(path, reader.line_num, f"malformed CSV: {exc}") from None
            except OSError as exc:
                raise open_error(path, exc) from None
            stripped = [c.strip() for c in cells]
            if any(stripped):
                yield reader.line_num, stripped


def number(name: str, text: str) -> float:
    """A finite decimal number; the message names the column."""
    if not text:
        raise DomainError(f"{name} is empty", field=name)
    if not _NUMBER.match(text):
        raise DomainError(f"{name} {text!r} is not a number", field=name)
    return float(text)


def count(name: str, text: str) -> int:
    if not _INTEGER.match(text):
        raise DomainError(f"{name} {text!r} is not an integer", field=name)
    return int(text)


def timestamp(name: str, text: str) -> int:
    """Epoch milliseconds or ISO 8601 (naive means UTC), as ``parse_time`` reads them."""
    if not text:
        raise DomainError(f"{name} is empty", field=name)
    return parse_time(text, field=name)


def epoch(name: str, text: str) -> int:
    """Epoch seconds or milliseconds, told apart by size (files use both)."""
    value = count(name, text)
    ms = value * 1000 if abs(value) < _SECONDS_BELOW else value
    return in_range(name, text, ms)


def datetime_ms(dt: datetime) -> int:
    """Exact epoch milliseconds of ``dt`` (naive means UTC), without float rounding."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // _MS


def in_range(name: str, text: str, ms: int) -> int:
    if not MIN_TS_MS <= ms < MAX_TS_MS:
        raise DomainError(f"{name} {text!r} is out of range (2009..3000)", field=name)
    return ms
