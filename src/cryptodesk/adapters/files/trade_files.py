"""Trade files: CSV ``timestamp,price,amount,side[,id]``, rows in any order.

The timestamp is ISO 8601 (naive means UTC) or epoch milliseconds, ``side`` is
``buy`` or ``sell``. Without an ``id`` column a trade's id is its line number,
so reading the same file twice gives the same ids and the store deduplicates a
second replay.
"""

from __future__ import annotations

from pathlib import Path

from cryptodesk.adapters.files.parsing import DataFileError, csv_rows, number, timestamp
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.market import Trade

TRADE_COLUMNS = ("timestamp", "price", "amount", "side", "id")


def is_trade_header(cells: list[str]) -> bool:
    names = tuple(c.strip().lower() for c in cells)
    return names in (TRADE_COLUMNS[:4], TRADE_COLUMNS)


def read_trades(path: str | Path, *, exchange: str, symbol: str) -> list[Trade]:
    """Every trade of the file in time order (ties keep file order)."""
    rows = csv_rows(path)
    first = next(rows, None)
    if first is None:
        raise DataFileError(path, None, "the file is empty")
    line_no, header = first
    if not is_trade_header(header):
        raise DataFileError(
            path, line_no, "expected the header timestamp,price,amount,side (optionally ,id)"
        )
    width = len(header)
    seen: dict[str, int] = {}
    trades: list[Trade] = []
    for line_no, cells in rows:
        if len(cells) != width:
            raise DataFileError(path, line_no, f"expected {width} columns, got {len(cells)}")
        trade_id = cells[4] if width == 5 else str(line_no)
        try:
            side = cells[3].lower()
            if side not in ("buy", "sell"):
                raise DomainError(f"side {cells[3]!r} is not buy or sell", field="side")
            if trade_id in seen:
                raise DomainError(f"trade id {trade_id!r} is already on line {seen[trade_id]}")
            trade = Trade(
                exchange,
                symbol,
                trade_id,
                timestamp("timestamp", cells[0]),
                number("price", cells[1]),
                number("amount", cells[2]),
                "buy" if side == "buy" else "sell",
            )
        except DomainError as exc:
            raise DataFileError(path, line_no, str(exc)) from None
        seen[trade_id] = line_no
        trades.append(trade)
    trades.sort(key=lambda t: t.ts)
    return trades
