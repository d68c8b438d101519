"""Ledger-derived balances against the balances an exchange (or wallet) reports.

Each effective entry moves units on its accounts (``LedgerEntry`` amounts are
positive, the kind gives the direction):

- ``buy``: +amount of the asset, -counter_amount of the counter asset;
  ``sell`` the other way round.
- ``deposit`` and ``income`` add the amount; ``withdrawal``, ``spend`` and
  ``fee`` take it away.
- ``transfer`` takes the amount from ``account`` and adds it to ``to_account``.
- A fee beside any entry (``fee_asset``/``fee_amount``) is taken from
  ``account`` on top: a fee in the received asset means fewer units arrive
  (the exchange credits the net), a withdrawal's fee leaves with it.

Only the accounts a balance was reported for are compared (a manual account
has nothing to compare with). A line per (account, asset) known to either side;
an asset the ledger never touched and the exchange does not hold gives no line.

Statuses: ``ok`` (the difference is within ``tolerance``, exact by default),
``mismatch`` (both sides know the asset, the amounts differ),
``missing_in_ledger`` (the exchange holds an asset no entry of the account
touches), ``missing_at_exchange`` (the ledger says the account holds it, the
exchange reports none). ``difference`` is reported minus ledger.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from cryptodesk.domain.errors import DomainError
from cryptodesk.portfolio.ledger import LedgerEntry, effective_entries

Status = Literal["ok", "mismatch", "missing_in_ledger", "missing_at_exchange"]
Key = tuple[str, str]  # (account, asset)
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class ReconLine:
    account: str
    asset: str
    ledger: Decimal
    reported: Decimal
    difference: Decimal  # reported - ledger
    status: Status


@dataclass(frozen=True, slots=True)
class ReconciliationReport:
    lines: tuple[ReconLine, ...]
    ok: bool

    @property
    def differences(self) -> tuple[ReconLine, ...]:
        """The lines that are not ``ok``."""
        return tuple(line for line in self.lines if line.status != "ok")


def ledger_balances(entries: Iterable[LedgerEntry]) -> dict[Key, Decimal]:
    """Units per (account, asset) after every effective entry; each asset an
    entry touches has a key, even where it nets to zero."""
    totals: dict[Key, Decimal] = {}

    def move(account: str, asset: str, delta: Decimal) -> None:
        totals[(account, asset)] = totals.get((account, asset), _ZERO) + delta

    for e in effective_entries(list(entries)):
        if e.kind in ("buy", "sell"):
            assert e.counter_asset is not None
            assert e.counter_amount is not None
            sign = 1 if e.kind == "buy" else -1
            move(e.account, e.asset, sign * e.amount)
            move(e.account, e.counter_asset, -sign * e.counter_amount)
        elif e.kind in ("deposit", "income"):
            move(e.account, e.asset, e.amount)
        elif e.kind == "transfer":
            assert e.to_account is not None
            move(e.account, e.asset, -e.amount)
            move(e.to_account, e.asset, e.amount)
        else:  # withdrawal, spend, fee
            move(e.account, e.asset, -e.amount)
        if e.fee_asset is not None and e.fee_amount is not None:
            move(e.account, e.fee_asset, -e.fee_amount)
    return totals


def reconcile(
    entries: Iterable[LedgerEntry],
    reported: Mapping[str, Mapping[str, Decimal]],
    *,
    tolerance: Decimal = _ZERO,
    accounts: Iterable[str] | None = None,
) -> ReconciliationReport:
    """Compare the ledger with ``reported`` (account -> asset -> amount held).

    ``accounts`` limits the comparison (default: every account in ``reported``;
    an account listed without a report compares with nothing held).
    """
    if not isinstance(tolerance, Decimal) or not tolerance.is_finite() or tolerance < _ZERO:
        raise DomainError(f"tolerance must be a Decimal >= 0, got {tolerance!r}", field="tolerance")
    wanted = set(reported) if accounts is None else set(accounts)
    derived = {k: v for k, v in ledger_balances(entries).items() if k[0] in wanted}
    held: dict[Key, Decimal] = {
        (account, asset): amount
        for account, assets in reported.items()
        if account in wanted
        for asset, amount in assets.items()
        if amount != _ZERO
    }
    lines = []
    for key in sorted(set(derived) | set(held)):
        ledger, exchange = derived.get(key), held.get(key)
        if exchange is None and not ledger:
            continue  # touched once, nothing left on either side
        ledger_amount, reported_amount = ledger or _ZERO, exchange or _ZERO
        difference = reported_amount - ledger_amount
        status: Status
        if abs(difference) <= tolerance:
            status = "ok"
        elif ledger is None:
            status = "missing_in_ledger"
        elif exchange is None:
            status = "missing_at_exchange"
        else:
            status = "mismatch"
        lines.append(ReconLine(key[0], key[1], ledger_amount, reported_amount, difference, status))
    return ReconciliationReport(tuple(lines), all(line.status == "ok" for line in lines))


def report_to_dict(report: ReconciliationReport) -> dict[str, Any]:
    """The JSON shape: Decimals as strings."""
    return {
        "ok": report.ok,
        "lines": [
            {
                "account": line.account,
                "asset": line.asset,
                "ledger": str(line.ledger),
                "reported": str(line.reported),
                "difference": str(line.difference),
                "status": line.status,
            }
            for line in report.lines
        ],
    }
