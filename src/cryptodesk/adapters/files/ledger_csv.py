"""Ledger files: the generic ledger CSV, read and written, and the one entry point
that also reads Binance, Coinbase and Kraken exports (docs/ledger-format.md).

Imports are all-or-nothing: the first bad row raises ``LedgerFileError`` with
its line number and nothing is returned. The generic format keeps the file's
row order (it is the order the entries were written in); exchange exports are
returned in time order, ties in file order.

An ``id`` used twice in one file is an error unless both rows say exactly the
same thing: then the repeat is dropped, so a file concatenated from
overlapping exports still imports.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Final, Literal, TextIO

from cryptodesk.adapters.files import ledger_binance, ledger_coinbase, ledger_kraken
from cryptodesk.adapters.files.ledger_parsing import (
    LedgerFileError,
    Record,
    Row,
    at_line,
    decimal_cell,
    optional_decimal,
    read_text,
    records,
    text_rows,
    timestamp_cell,
)
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.timeutil import to_iso
from cryptodesk.portfolio.ledger import KINDS, LedgerEntry

__all__ = [
    "COLUMNS",
    "OPTIONAL_COLUMNS",
    "SOURCES",
    "LedgerFileError",
    "detect_source",
    "parse_ledger",
    "read_ledger",
    "write_ledger_csv",
]

Source = Literal["auto", "generic", "binance", "coinbase", "kraken"]
SOURCES: Final[tuple[str, ...]] = ("auto", "generic", "binance", "coinbase", "kraken")
COLUMNS: Final[tuple[str, ...]] = (
    "id", "timestamp", "kind", "account", "asset", "amount", "counter_asset",
    "counter_amount", "fee_asset", "fee_amount", "to_account", "value", "lot_ids", "note",
)  # fmt: skip
OPTIONAL_COLUMNS: Final[tuple[str, ...]] = (
    "subkind", "fee_value", "reverses", "external_id", "tags",
)  # fmt: skip
# Inside a lot_ids or tags cell; the CSV delimiter is taken.
LIST_SEPARATOR: Final = ";"

Parser = Callable[[list[Row], str | None], list[tuple[int, LedgerEntry]]]


def read_ledger(
    path: str | Path, *, source: Source = "auto", account: str | None = None
) -> list[LedgerEntry]:
    """Every entry of a ledger file; ``source`` names its format or ``auto`` detects it.

    ``account`` names the ledger account of an exchange export (default: the
    exchange's name); in a generic file it fills blank ``account`` cells.
    """
    try:
        text = read_text(path)
    except LedgerFileError as exc:
        exc.name = str(path)
        raise
    return parse_ledger(text, source=source, account=account, name=str(path))


def parse_ledger(
    text: str, *, source: Source = "auto", account: str | None = None, name: str = "<upload>"
) -> list[LedgerEntry]:
    """``read_ledger`` for text already in memory (an API upload)."""
    try:
        rows = text_rows(text)
        if not rows:
            raise LedgerFileError("the file is empty")
        chosen = detect_source(rows) if source == "auto" else source
        parsers: dict[str, Parser] = {
            "generic": _parse_generic,
            "binance": ledger_binance.parse,
            "coinbase": ledger_coinbase.parse,
            "kraken": ledger_kraken.parse,
        }
        if chosen not in parsers:
            raise LedgerFileError(f"source {source!r} is not one of {', '.join(SOURCES)}")
        lines_entries = parsers[chosen](rows, account)
        entries = _unique(lines_entries)
    except LedgerFileError as exc:
        exc.name = name
        raise
    if chosen != "generic":
        entries.sort(key=lambda e: e.timestamp)
    return entries


def detect_source(rows: Sequence[Row]) -> str:
    """The format whose header the file starts with (Coinbase: after its preamble)."""
    first = {c.strip().lower() for c in rows[0][1]}
    if {"id", "timestamp", "kind"} <= first:
        return "generic"
    exports = (
        (ledger_binance.NAME, ledger_binance.header_index),
        (ledger_kraken.NAME, ledger_kraken.header_index),
        (ledger_coinbase.NAME, ledger_coinbase.header_index),
    )
    for name, header_index in exports:
        if header_index(list(rows)) is not None:
            return name
    shown = ",".join(c.strip() for c in rows[0][1])[:120]
    raise LedgerFileError(
        f"unrecognised header {shown!r}: expected the generic ledger header "
        f"({','.join(COLUMNS)}) or a Binance, Coinbase or Kraken export",
        line=rows[0][0],
    )


def _unique(lines_entries: list[tuple[int, LedgerEntry]]) -> list[LedgerEntry]:
    seen: dict[str, tuple[int, LedgerEntry]] = {}
    out: list[LedgerEntry] = []
    for line, entry in lines_entries:
        first = seen.get(entry.id)
        if first is None:
            seen[entry.id] = (line, entry)
            out.append(entry)
        elif first[1] != entry:
            raise LedgerFileError(
                f"id {entry.id!r} is already used on line {first[0]} by a different entry",
                line=line,
                field="id",
            )
    return out


# ---- the generic format -------------------------------------------------------------


def _header(line: int, cells: list[str]) -> list[str]:
    names = [c.strip().lower() for c in cells]
    known = set(COLUMNS) | set(OPTIONAL_COLUMNS)
    for name in names:
        if name not in known:
            raise LedgerFileError(f"unknown column {name!r}", line=line, field=name)
        if names.count(name) > 1:
            raise LedgerFileError(f"column {name!r} appears twice", line=line, field=name)
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise LedgerFileError(f"missing column(s): {', '.join(missing)}", line=line)
    return names


def _parse_generic(rows: list[Row], account: str | None) -> list[tuple[int, LedgerEntry]]:
    header = _header(*rows[0])
    out: list[tuple[int, LedgerEntry]] = []
    # The note is free text: its spaces are kept, unlike every other cell's.
    note_at = header.index("note")
    for record, (_, cells) in zip(records(rows[1:], header), rows[1:], strict=True):
        with at_line(record.line):
            out.append((record.line, _entry(record, cells[note_at], account)))
    return out


def _entry(r: Record, note: str, default_account: str | None) -> LedgerEntry:
    kind, subkind = _kind(r.get("kind"), r.get("subkind"))
    return LedgerEntry(
        id=r.get("id"),
        timestamp=timestamp_cell(r.get("timestamp")),
        kind=kind,  # type: ignore[arg-type]  # validated by LedgerEntry
        account=r.get("account") or default_account or "",
        asset=r.get("asset"),
        amount=_required_decimal(r, "amount"),
        counter_asset=r.get("counter_asset") or None,
        counter_amount=optional_decimal(r.get("counter_amount"), field="counter_amount"),
        fee_asset=r.get("fee_asset") or None,
        fee_amount=optional_decimal(r.get("fee_amount"), field="fee_amount"),
        to_account=r.get("to_account") or None,
        value=optional_decimal(r.get("value"), field="value"),
        lot_ids=_lot_ids(r.get("lot_ids")),
        note=note,
        subkind=subkind,
        fee_value=optional_decimal(r.get("fee_value"), field="fee_value"),
        reverses=r.get("reverses") or None,
        external_id=r.get("external_id") or None,
        tags=tuple(t.strip() for t in r.get("tags").split(LIST_SEPARATOR) if t.strip()),
    )


def _required_decimal(r: Record, field: str) -> Decimal:
    text = r.get(field)
    if text == "":
        raise DomainError(f"{field} is required", field=field)
    return decimal_cell(text, field=field)


def _kind(text: str, subkind_cell: str) -> tuple[str, str | None]:
    """``income:staking`` or ``income`` plus a ``subkind`` cell; kinds are case-blind."""
    kind, _, sub = text.partition(":")
    kind, sub = kind.strip().lower(), sub.strip()
    if kind == "":
        raise DomainError("kind is required", field="kind")
    if kind not in KINDS:
        hint = f" (write income:{kind})" if kind in ("staking", "airdrop", "interest") else ""
        raise DomainError(f"kind {kind!r} is not one of {', '.join(KINDS)}{hint}", field="kind")
    if sub and subkind_cell and sub != subkind_cell:
        raise DomainError(
            f"kind says subkind {sub!r} but the subkind column says {subkind_cell!r}",
            field="subkind",
        )
    return kind, (sub or subkind_cell or None)


def _lot_ids(text: str) -> tuple[tuple[str, Decimal], ...]:
    if text == "":
        return ()
    lots: list[tuple[str, Decimal]] = []
    for part in text.split(LIST_SEPARATOR):
        lot_id, sep, amount = part.strip().rpartition(":")
        if not sep or not lot_id.strip() or not amount.strip():
            raise DomainError(
                f"lot_ids {text!r} is not buy_id:amount;buy_id:amount", field="lot_ids"
            )
        lots.append((lot_id.strip(), decimal_cell(amount.strip(), field="lot_ids amount")))
    return tuple(lots)


# ---- writing ------------------------------------------------------------------------


def write_ledger_csv(entries: Iterable[LedgerEntry], target: str | Path | TextIO) -> None:
    """Write entries in the generic format; ``read_ledger`` gives them back unchanged.

    Decimals keep their exact digits (``1.500`` stays ``1.500``); times are
    ISO 8601 UTC with milliseconds.
    """
    if isinstance(target, str | Path):
        with open(target, "w", encoding="utf-8", newline="") as handle:
            _write(entries, handle)
    else:
        _write(entries, target)


def _write(entries: Iterable[LedgerEntry], handle: TextIO) -> None:
    # CRLF line ends make the csv module quote a lone CR inside a note too.
    writer = csv.writer(handle, lineterminator="\r\n")
    writer.writerow(COLUMNS + OPTIONAL_COLUMNS)
    for e in entries:
        writer.writerow(_cells(e))


def _cells(e: LedgerEntry) -> list[str]:
    for lot_id, _ in e.lot_ids:
        if LIST_SEPARATOR in lot_id:
            raise DomainError(f"entry {e.id}: lot id {lot_id!r} contains ';'", field="lot_ids")
    for tag in e.tags:
        if LIST_SEPARATOR in tag or tag != tag.strip() or not tag:
            raise DomainError(f"entry {e.id}: tag {tag!r} cannot be written", field="tags")
    lots = LIST_SEPARATOR.join(f"{i}:{_dec(a)}" for i, a in e.lot_ids)
    return [
        e.id, to_iso(e.timestamp), e.kind, e.account, e.asset, _dec(e.amount),
        e.counter_asset or "", _dec(e.counter_amount), e.fee_asset or "", _dec(e.fee_amount),
        e.to_account or "", _dec(e.value), lots, e.note,
        e.subkind or "", _dec(e.fee_value), e.reverses or "", e.external_id or "",
        LIST_SEPARATOR.join(e.tags),
    ]  # fmt: skip


def _dec(value: Decimal | None) -> str:
    """Plain notation where it keeps every digit and the exponent, else ``1E+2`` form."""
    if value is None:
        return ""
    exponent = value.as_tuple().exponent
    return format(value, "f") if isinstance(exponent, int) and exponent <= 0 else str(value)
