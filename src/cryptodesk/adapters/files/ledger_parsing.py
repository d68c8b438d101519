"""What every ledger file reader shares: rows with their line numbers, one error
type that names the line, exact numbers and times, and stable entry ids.

Line numbers are physical lines of the file (the header is line 1 when it is
the first line), so an editor jumps straight to the row; a quoted cell that
spans lines is reported at the line where its row starts.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Final

from cryptodesk.adapters.files.parsing import datetime_ms, in_range
from cryptodesk.domain.errors import DomainError
from cryptodesk.portfolio.ledger import Kind, LedgerEntry, to_decimal

_DECIMAL = re.compile(r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")
_EPOCH_MS = re.compile(r"^[0-9]+$")
_SHORT_YEAR = re.compile(r"^[0-9]{2}-[0-9]{2}-[0-9]{2}[ T]")
# Exchange exports write money as "$1,234.56", "-€0.60" or "1,234.5"; the
# symbols and grouping commas go, the sign stays for the caller to read.
_MONEY_NOISE = re.compile(r"[$€£¥,\s]")

# When both sides of a trade are known only as "gave X, got Y" (statements,
# ledgers), the side ranked higher here is the quote: fiat, then stablecoins,
# then the majors that quote other coins. Unranked on both sides: a buy of Y.
QUOTE_RANK: Final[tuple[str, ...]] = (
    "USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "TRY", "BRL", "ZAR", "PLN",
    "UAH", "RUB", "NGN", "ARS", "MXN", "CZK", "RON", "IDR",
    "USDT", "USDC", "BUSD", "FDUSD", "TUSD", "USDP", "PYUSD", "DAI", "PAX", "UST",
    "BTC", "ETH", "BNB",
)  # fmt: skip


class LedgerFileError(DomainError):
    """A ledger file cannot be imported; ``line`` is the 1-based physical line.

    ``str()`` reads ``line 7: amount must be positive, got -1``; ``reason`` is
    the part after the line, ``name`` the file (or upload) it came from.
    """

    def __init__(
        self,
        reason: str,
        *,
        line: int | None = None,
        field: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(reason if line is None else f"line {line}: {reason}", field=field)
        self.reason = reason
        self.line = line
        self.name = name


@dataclass(frozen=True, slots=True)
class Record:
    """One data row of an export: its line, its cells by column name, the raw cells."""

    line: int
    cells: dict[str, str]
    raw: tuple[str, ...]

    def get(self, column: str) -> str:
        return self.cells.get(column, "")


Row = tuple[int, list[str]]


def read_text(path: str | Path) -> str:
    """The file as text; a byte-order mark is dropped, line ends are kept."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise LedgerFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise LedgerFileError("not UTF-8 text", line=line) from None


def text_rows(text: str) -> list[Row]:
    """``(line, cells)`` of every non-blank row; cells are not stripped here."""
    text = text.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[Row] = []
    start = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return rows
        except csv.Error as exc:
            raise LedgerFileError(f"malformed CSV: {exc}", line=start) from None
        if any(c.strip() for c in cells):
            rows.append((start, cells))
        start = reader.line_num + 1


def records(rows: Sequence[Row], header: list[str]) -> Iterator[Record]:
    """Data rows as ``Record``s keyed by ``header``; a row of another width is an error.

    Trailing empty cells beyond the header are tolerated (spreadsheets add them).
    """
    width = len(header)
    for line, cells in rows:
        while len(cells) > width and not cells[-1].strip():
            cells = cells[:-1]
        if len(cells) != width:
            raise LedgerFileError(f"expected {width} cells, got {len(cells)}", line=line)
        stripped = tuple(c.strip() for c in cells)
        yield Record(line, dict(zip(header, stripped, strict=True)), stripped)


@contextmanager
def at_line(line: int) -> Iterator[None]:
    """Turn a ``DomainError`` raised while reading a row into a ``LedgerFileError``."""
    try:
        yield
    except LedgerFileError:
        raise
    except DomainError as exc:
        raise LedgerFileError(str(exc), line=line, field=exc.field) from None


def decimal_cell(text: str, *, field: str) -> Decimal:
    """An exact decimal in plain or exponent form (``0.001``, ``1e-3``).

    Grouping separators, underscores, ``nan`` and ``inf`` are refused: a
    ledger amount that needs them is more likely misread than meant.
    """
    if not _DECIMAL.match(text):
        raise DomainError(f"{field} {text!r} is not a decimal number", field=field)
    return to_decimal(text, field=field)


def optional_decimal(text: str, *, field: str) -> Decimal | None:
    return None if text == "" else decimal_cell(text, field=field)


def money(text: str, *, field: str) -> Decimal | None:
    """An exchange export's number, sign dropped: ``-€1,240.73`` -> ``1240.73``."""
    cleaned = _MONEY_NOISE.sub("", text).lstrip("+")
    if cleaned in ("", "-"):
        return None
    return abs(decimal_cell(cleaned, field=field))


def timestamp_cell(text: str, *, field: str = "timestamp") -> int:
    """Epoch milliseconds or ISO 8601 (naive means UTC), read exactly.

    Same forms as ``timeutil.parse_time``, but through integer arithmetic, so
    every millisecond written by ``timeutil.to_iso`` reads back unchanged.
    Exports' ``2024-01-05 10:00:00 UTC`` and two-digit years (``24-01-05``)
    are accepted too.
    """
    raw = text.strip()
    if raw == "":
        raise DomainError(f"{field} is required", field=field)
    if _EPOCH_MS.match(raw):
        return in_range(field, text, int(raw))
    iso = raw.removesuffix(" UTC").replace("Z", "+00:00").replace("z", "+00:00")
    if _SHORT_YEAR.match(iso):
        iso = "20" + iso
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        raise DomainError(
            f"{field} {text!r} is neither epoch milliseconds nor ISO 8601", field=field
        ) from None
    return in_range(field, text, datetime_ms(moment))


class RowIds:
    """Deterministic ids for rows that carry none: a hash of the row's cells.

    Two identical rows (two equal fills in the same second) are told apart by
    their order, so reading the same file twice gives the same ids.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._seen: Counter[str] = Counter()

    def __call__(self, *rows: Sequence[str]) -> str:
        joined = "\x1e".join("\x1f".join(cells) for cells in rows)
        digest = hashlib.sha256(joined.encode()).hexdigest()[:24]
        self._seen[digest] += 1
        n = self._seen[digest]
        return f"{self.prefix}:{digest}" if n == 1 else f"{self.prefix}:{digest}:{n}"


def quote_side(gave: str, got: str) -> bool:
    """True when ``gave`` is the quote of the pair, i.e. the trade is a buy of ``got``."""
    rank = {asset: i for i, asset in enumerate(QUOTE_RANK)}
    return rank.get(gave, len(rank)) <= rank.get(got, len(rank))


def trade_entry(
    *,
    entry_id: str,
    timestamp: int,
    account: str,
    gave: tuple[str, Decimal],
    got: tuple[str, Decimal],
    fee: tuple[str, Decimal] | None,
    external_id: str | None = None,
    value: Decimal | None = None,
    note: str = "",
) -> LedgerEntry:
    """A buy or sell from the two legs of an exchange: the quote side is the counter."""
    kind: Kind = "buy" if quote_side(gave[0], got[0]) else "sell"
    (asset, amount), (counter, counter_amount) = (got, gave) if kind == "buy" else (gave, got)
    return LedgerEntry(
        id=entry_id,
        timestamp=timestamp,
        kind=kind,
        account=account,
        asset=asset,
        amount=amount,
        counter_asset=counter,
        counter_amount=counter_amount,
        fee_asset=fee[0] if fee else None,
        fee_amount=fee[1] if fee else None,
        value=value,
        note=note,
        external_id=external_id,
    )
