"""Ledger entries: the one record every portfolio number is derived from.

An entry is immutable; a correction is a new entry that ``reverses`` an
earlier one (the original stays in the hash chain, both drop out of the
accounting). Amounts are ``Decimal`` and always positive: the ``kind`` says
which way the asset moves, so a sign can never be misread.

Kinds (see docs/ledger-format.md for the CSV form):

- ``buy``: receive ``amount`` of ``asset`` on ``account``, paying
  ``counter_amount`` of ``counter_asset``.
- ``sell``: give ``amount`` of ``asset``, receiving ``counter_amount`` of
  ``counter_asset``.
- ``deposit`` / ``withdrawal``: ``amount`` of ``asset`` enters / leaves the
  tracked accounts (from or to the outside world).
- ``transfer``: ``amount`` of ``asset`` moves from ``account`` to
  ``to_account``, both owned (lots and acquisition dates travel with it).
- ``income``: ``amount`` of ``asset`` received as staking, airdrop, interest,
  mining... (``subkind``) worth ``value`` in the report currency.
- ``spend``: ``amount`` of ``asset`` paid for goods or services worth ``value``.
- ``fee``: ``amount`` of ``asset`` paid as a standalone fee.

A reversal copies the entry it corrects (same kind, account, asset, amounts)
under a new ``id`` with ``reverses`` naming the original.

``fee_asset``/``fee_amount`` on any entry is a fee paid alongside it;
``fee_value`` is its fair value in the report currency when the fee asset is
neither the report currency nor valued by the entry itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Final, Literal

from cryptodesk.domain.errors import DomainError

Kind = Literal["buy", "sell", "deposit", "withdrawal", "transfer", "income", "spend", "fee"]
KINDS: Final[tuple[str, ...]] = (
    "buy", "sell", "deposit", "withdrawal", "transfer", "income", "spend", "fee",
)  # fmt: skip
# Income subkinds a report groups by; others are accepted and reported as given.
INCOME_SUBKINDS: Final[tuple[str, ...]] = (
    "staking", "airdrop", "interest", "mining", "reward", "other",
)  # fmt: skip
_ZERO = Decimal(0)
# The hash chain and the database keep amounts as text; 38 significant digits
# cover 1e18 units of any asset at 1e-18 resolution.
MAX_ID_LENGTH: Final = 128
MAX_ASSET_LENGTH: Final = 32
MAX_ACCOUNT_LENGTH: Final = 64


def to_decimal(raw: object, *, field: str) -> Decimal:
    """A finite Decimal from text, int or Decimal (floats are refused: they are not exact)."""
    if isinstance(raw, bool | float):
        kind = type(raw).__name__
        raise DomainError(f"{field} must be a decimal string, not {kind}", field=field)
    try:
        value = raw if isinstance(raw, Decimal) else Decimal(str(raw).strip())
    except InvalidOperation:
        raise DomainError(f"{field} {raw!r} is not a decimal number", field=field) from None
    if not value.is_finite():
        raise DomainError(f"{field} {raw!r} is not a finite number", field=field)
    return value


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One ledger transaction; ``id`` is its natural key within a tenant."""

    id: str
    timestamp: int  # epoch ms, UTC
    kind: Kind
    account: str
    asset: str
    amount: Decimal
    counter_asset: str | None = None
    counter_amount: Decimal | None = None
    fee_asset: str | None = None
    fee_amount: Decimal | None = None
    to_account: str | None = None
    value: Decimal | None = None
    # Specific identification: (acquiring entry id, amount) pairs.
    lot_ids: tuple[tuple[str, Decimal], ...] = ()
    note: str = ""
    subkind: str | None = None
    fee_value: Decimal | None = None
    reverses: str | None = None
    # Exchange's own id (trade, deposit, withdrawal), for idempotent imports.
    external_id: str | None = None
    tags: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        validate(self)


def _check_text(name: str, value: str | None, limit: int, *, required: bool) -> None:
    if value is None or value == "":
        if required:
            raise DomainError(f"{name} is required", field=name)
        return
    if len(value) > limit or value != value.strip() or "\n" in value:
        raise DomainError(f"{name} {value!r} is not a valid {name}", field=name)


def _check_positive(name: str, value: Decimal | None, *, required: bool) -> None:
    if value is None:
        if required:
            raise DomainError(f"{name} is required", field=name)
        return
    if not isinstance(value, Decimal) or not value.is_finite():
        raise DomainError(f"{name} must be a finite Decimal, got {value!r}", field=name)
    if value <= _ZERO:
        raise DomainError(f"{name} must be positive, got {value}", field=name)


def validate(entry: LedgerEntry) -> None:
    """Raise ``DomainError`` naming the field if the entry makes no sense."""
    _check_text("id", entry.id, MAX_ID_LENGTH, required=True)
    if entry.kind not in KINDS:
        raise DomainError(f"kind {entry.kind!r} is not one of {', '.join(KINDS)}", field="kind")
    if not isinstance(entry.timestamp, int) or isinstance(entry.timestamp, bool):
        raise DomainError("timestamp must be epoch milliseconds", field="timestamp")
    _check_text("account", entry.account, MAX_ACCOUNT_LENGTH, required=True)
    _check_text("asset", entry.asset, MAX_ASSET_LENGTH, required=True)
    _check_positive("amount", entry.amount, required=True)
    trade = entry.kind in ("buy", "sell")
    _check_text("counter_asset", entry.counter_asset, MAX_ASSET_LENGTH, required=trade)
    _check_positive("counter_amount", entry.counter_amount, required=trade)
    if not trade and (entry.counter_asset or entry.counter_amount is not None):
        raise DomainError(f"a {entry.kind} has no counter side", field="counter_asset")
    if trade and entry.counter_asset == entry.asset:
        raise DomainError("counter_asset must differ from asset", field="counter_asset")
    if (entry.fee_asset is None) != (entry.fee_amount is None):
        raise DomainError("fee_asset and fee_amount go together", field="fee_amount")
    _check_text("fee_asset", entry.fee_asset, MAX_ASSET_LENGTH, required=False)
    _check_positive("fee_amount", entry.fee_amount, required=False)
    _check_positive("fee_value", entry.fee_value, required=False)
    if entry.kind == "fee" and entry.fee_asset is not None:
        raise DomainError("a fee entry carries its fee in asset/amount", field="fee_asset")
    if entry.kind == "transfer":
        _check_text("to_account", entry.to_account, MAX_ACCOUNT_LENGTH, required=True)
        if entry.to_account == entry.account:
            raise DomainError("to_account must differ from account", field="to_account")
    elif entry.to_account:
        raise DomainError(
            f"only a transfer has a to_account, not a {entry.kind}", field="to_account"
        )
    if entry.value is not None and (not entry.value.is_finite() or entry.value < _ZERO):
        raise DomainError(f"value must be zero or positive, got {entry.value}", field="value")
    if entry.kind == "income":
        _check_text("subkind", entry.subkind, 32, required=True)
    elif entry.subkind:
        raise DomainError(f"only income has a subkind, not a {entry.kind}", field="subkind")
    if entry.lot_ids and entry.kind not in ("sell", "spend", "fee", "withdrawal", "transfer"):
        raise DomainError(f"a {entry.kind} disposes of nothing to select lots for", field="lot_ids")
    for lot_id, lot_amount in entry.lot_ids:
        _check_text("lot_ids", lot_id, MAX_ID_LENGTH, required=True)
        _check_positive("lot_ids amount", lot_amount, required=True)
    if entry.lot_ids and sum((a for _, a in entry.lot_ids), _ZERO) != entry.amount:
        raise DomainError("lot_ids amounts must add up to amount", field="lot_ids")
    _check_text("reverses", entry.reverses, MAX_ID_LENGTH, required=False)
    if entry.reverses == entry.id:
        raise DomainError("an entry cannot reverse itself", field="reverses")


def effective_entries(entries: list[LedgerEntry]) -> list[LedgerEntry]:
    """The entries the accounting uses: reversed entries and their reversals drop out.

    A reversal of an unknown or already reversed entry is a ``DomainError``:
    silently keeping either would change a number without saying why.
    """
    by_id = {e.id: e for e in entries}
    reversed_ids: set[str] = set()
    for entry in entries:
        if entry.reverses is None:
            continue
        if entry.reverses not in by_id:
            raise DomainError(
                f"entry {entry.id} reverses unknown entry {entry.reverses}", field="reverses"
            )
        if entry.reverses in reversed_ids:
            raise DomainError(f"entry {entry.reverses} is reversed twice", field="reverses")
        reversed_ids.add(entry.reverses)
    return [e for e in entries if e.reverses is None and e.id not in reversed_ids]
