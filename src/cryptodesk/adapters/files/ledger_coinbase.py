"""Coinbase transaction history (Profile > Statements > Transaction history, CSV)
-> ledger entries.

The file opens with a preamble (a tax sentence, ``Transactions``, a ``User``
line, blank lines) before the header, which is found among its first ten rows.
Headers seen since 2021, all read by column name:

- ``ID,Timestamp,Transaction Type,Asset,Quantity Transacted,Price Currency,
  Price at Transaction,Subtotal,Total (inclusive of fees and/or spread),
  Fees and/or Spread,Notes`` (2024 on: money as ``€1,234.56``, sells and sends
  negative, times ``2024-12-19 17:59:59 UTC``);
- the same without ``ID`` and with ``Spot Price Currency``/``Spot Price at
  Transaction`` (2022-2023), or with ``Total (inclusive of fees)``/``Fees``.

Mapping (amounts are taken without their sign; ``cur`` is the price currency):

- ``Buy``/``Advanced Trade Buy``: ``buy`` of Asset paying Subtotal ``cur`` plus
  Fees ``cur``. When Notes name another quote (``Bought 3.72 USDC for 3.43356 EUR
  on USDC-EUR at 0.923 EUR/USDC``) the counter is that quote: quantity x rate,
  the rest of the amount is the fee, and ``value``/``fee_value`` come from the
  ``cur`` columns. ``Sell``/``Advanced Trade Sell``: the same, mirrored.
- ``Convert`` (Notes ``Converted 0.5 ETH to 1,500.00 USDC``): a crypto-to-crypto
  trade worth Subtotal (the value received; the spread is the difference to Total).
- ``Send``/``Withdrawal``/``Exchange Deposit``/``Pro Deposit``: ``withdrawal``;
  ``Receive``/``Deposit``/``Exchange Withdrawal``/``Pro Withdrawal``: ``deposit``
  (worth Subtotal). A fee in ``cur`` on a fiat withdrawal or deposit is kept.
- ``Staking Income``/``Rewards Income``/``Reward Income``/``Inflation Reward``:
  ``income:staking``; ``Learning Reward``/``Coinbase Earn``/subscription rebates:
  ``income:reward``; ``Interest payout``: ``income:interest``; all worth Subtotal.
- ``Card Spend``/``Donation``: ``spend`` worth Subtotal.
- Moves inside Coinbase (vaults, savings, staking transfers) are skipped.

``value`` is in the export's price currency: import with that currency as the
report currency. ``id`` is ``coinbase:<ID>`` (``external_id`` = ID) or, in
files without ID, ``coinbase:`` plus a hash of the row.

Sources: the header generations and row shapes in BittyTax
(src/bittytax/conv/parsers/coinbase.py), CoinTaxman pull requests 148 and 172
(github.com/provinzio/CoinTaxman: the 2024 format with ID, currency symbols and
negative quantities) and the sample rows in Export-To-Ghostfolio issue 168.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Final

from cryptodesk.adapters.files.ledger_parsing import (
    LedgerFileError,
    Record,
    Row,
    RowIds,
    at_line,
    money,
    records,
    timestamp_cell,
    trade_entry,
)
from cryptodesk.domain.errors import DomainError
from cryptodesk.portfolio.ledger import Kind, LedgerEntry

NAME: Final = "coinbase"
_REQUIRED = ("Timestamp", "Transaction Type", "Asset", "Quantity Transacted", "Subtotal", "Notes")
_ALIASES: Final[dict[str, tuple[str, ...]]] = {
    "currency": ("Price Currency", "Spot Price Currency"),
    "total": ("Total (inclusive of fees and/or spread)", "Total (inclusive of fees)"),
    "fees": ("Fees and/or Spread", "Fees"),
}
_PREAMBLE_ROWS = 10
_TRADE_NOTE = re.compile(
    r"^(?:Bought|Sold) ([0-9.,]+) (\S+) for [^0-9]*([0-9.,]+) (\w+)"
    r"(?: on (\S+)-(\S+) at ([0-9.,]+) \S+)?\s*$"
)
_CONVERT_NOTE = re.compile(r"^Converted ([0-9.,]+) (\S+) to ([0-9.,]+) (\S+)\s*$")
_BUYS = frozenset({"Buy", "Advanced Trade Buy", "Advance Trade Buy"})
_SELLS = frozenset({"Sell", "Advanced Trade Sell", "Advance Trade Sell"})
_SIMPLE: Final[dict[str, tuple[Kind, str | None]]] = {
    **dict.fromkeys(("Send", "Withdrawal", "Exchange Deposit", "Pro Deposit"),
                    ("withdrawal", None)),
    **dict.fromkeys(("Receive", "Deposit", "Exchange Withdrawal", "Pro Withdrawal"),
                    ("deposit", None)),
    **dict.fromkeys(("Staking Income", "Rewards Income", "Reward Income", "Inflation Reward"),
                    ("income", "staking")),
    **dict.fromkeys(("Learning Reward", "Coinbase Earn", "Subscription Rebate",
                     "Subscription Rebates (24 Hours)"), ("income", "reward")),
    "Interest payout": ("income", "interest"),
    **dict.fromkeys(("Card Spend", "Donation"), ("spend", None)),
}  # fmt: skip
_INTERNAL = frozenset({
    "Vault Withdrawal", "Cash to Savings", "Retail Staking Transfer",
    "Retail Unstaking Transfer",
})  # fmt: skip


def header_index(rows: list[Row]) -> int | None:
    for i, (_, cells) in enumerate(rows[:_PREAMBLE_ROWS]):
        names = {c.strip() for c in cells}
        if set(_REQUIRED) <= names and all(names & set(a) for a in _ALIASES.values()):
            return i
    return None


def parse(rows: list[Row], account: str | None) -> list[tuple[int, LedgerEntry]]:
    at = header_index(rows)
    if at is None:
        raise LedgerFileError(
            "expected a Coinbase transaction history header within the first "
            f"{_PREAMBLE_ROWS} rows",
            line=rows[0][0],
        )
    header = [c.strip() for c in rows[at][1]]
    for key, names in _ALIASES.items():
        header = [key if h in names else h for h in header]
    ids = RowIds(NAME)
    out: list[tuple[int, LedgerEntry]] = []
    for r in records(rows[at + 1 :], header):
        with at_line(r.line):
            entry = _entry(r, account or NAME, ids)
        if entry is not None:
            out.append((r.line, entry))
    return out


def _entry(r: Record, account: str, ids: RowIds) -> LedgerEntry | None:
    kind_name = r.get("Transaction Type")
    if kind_name in _INTERNAL:
        return None
    external = r.get("ID") or None
    entry_id = f"{NAME}:{external}" if external else ids(r.raw)
    ts = timestamp_cell(r.get("Timestamp"), field="Timestamp")
    asset, currency = r.get("Asset"), r.get("currency")
    qty = money(r.get("Quantity Transacted"), field="Quantity Transacted")
    if qty is None:
        raise DomainError("Quantity Transacted is required", field="Quantity Transacted")
    subtotal = money(r.get("Subtotal"), field="Subtotal")
    fees = money(r.get("fees"), field="Fees") or None
    notes = r.get("Notes")
    if kind_name in _BUYS or kind_name in _SELLS:
        return _trade(r, entry_id, ts, account, (asset, qty), kind_name in _BUYS)
    if kind_name == "Convert":
        m = _CONVERT_NOTE.match(notes)
        if m is None or m.group(2) != asset:
            raise DomainError(
                f"Convert notes {notes!r} do not say what was received", field="Notes"
            )
        got = (m.group(4), _note_number(m.group(3)))
        return trade_entry(
            entry_id=entry_id,
            timestamp=ts,
            account=account,
            gave=(asset, qty),
            got=got,
            fee=None,
            external_id=external,
            value=subtotal,
            note=notes,
        )
    if kind_name not in _SIMPLE:
        raise DomainError(
            f"transaction type {kind_name!r} is not supported", field="Transaction Type"
        )
    kind, subkind = _SIMPLE[kind_name]
    fiat_fee = fees is not None and asset == currency and kind in ("deposit", "withdrawal")
    return LedgerEntry(
        id=entry_id,
        timestamp=ts,
        kind=kind,
        account=account,
        asset=asset,
        amount=qty,
        subkind=subkind,
        fee_asset=currency if fiat_fee else None,
        fee_amount=fees if fiat_fee else None,
        value=subtotal if asset != currency and kind != "withdrawal" else None,
        note=notes,
        external_id=external,
    )


def _trade(
    r: Record, entry_id: str, ts: int, account: str, base: tuple[str, Decimal], buy: bool
) -> LedgerEntry:
    currency, notes = r.get("currency"), r.get("Notes")
    subtotal = money(r.get("Subtotal"), field="Subtotal")
    fees = money(r.get("fees"), field="Fees") or None
    m = _TRADE_NOTE.match(notes)
    quote = m.group(4) if m else currency
    value: Decimal | None = None
    fee_value: Decimal | None = None
    if quote == currency:
        if subtotal is None:
            raise DomainError("Subtotal is required for a trade", field="Subtotal")
        counter, fee = subtotal, fees
    else:
        assert m is not None
        quoted = _note_number(m.group(3))
        counter = base[1] * _note_number(m.group(7)) if m.group(7) else quoted
        fee = abs(quoted - counter) or None
        value, fee_value = subtotal, fees if fee else None
    return LedgerEntry(
        id=entry_id,
        timestamp=ts,
        kind="buy" if buy else "sell",
        account=account,
        asset=base[0],
        amount=base[1],
        counter_asset=quote,
        counter_amount=counter,
        fee_asset=quote if fee else None,
        fee_amount=fee,
        value=value,
        fee_value=fee_value,
        note=notes,
        external_id=r.get("ID") or None,
    )


def _note_number(text: str) -> Decimal:
    value = money(text, field="Notes")
    if value is None:
        raise DomainError(f"Notes amount {text!r} is not a number", field="Notes")
    return value
