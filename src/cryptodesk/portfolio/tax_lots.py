"""What a cost basis run produces: disposal lines, income, holdings, open lots.

One ``DisposalLine`` per matched lot, as IRS Form 8949 lists them: a sale
matched against three purchases is three lines. Every money value is in the
report currency; ``proceeds - cost_basis == gain`` on every line, exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final, Literal

Method = Literal["fifo", "lifo", "hifo", "specific", "average", "uk"]
METHODS: Final[tuple[str, ...]] = ("fifo", "lifo", "hifo", "specific", "average", "uk")
Term = Literal["short", "long"]
# Proportional splits (proceeds over matched lots, cost over part of a lot) are
# rounded to this step; the last piece takes the remainder, so pieces always add
# up exactly to the whole they were cut from.
SPLIT_STEP: Final = Decimal("0.00000001")
LONG_TERM_DAYS: Final = 365


@dataclass(frozen=True, slots=True)
class DisposalLine:
    """Part of a disposal matched to one acquisition (or to the pool, for ``average``/``uk``).

    ``lot_id`` is the acquiring entry's id; ``average`` uses ``"average"`` and
    ``uk`` uses ``"same-day"``, ``"bed-and-breakfast:<entry id>"`` or ``"s104"``.
    ``acquired`` is that lot's acquisition time (for a pool: the earliest
    acquisition still in it), so ``term`` follows the lot's own holding period.
    """

    disposal_id: str
    asset: str
    amount: Decimal
    acquired: int
    disposed: int
    proceeds: Decimal
    cost_basis: Decimal
    gain: Decimal
    term: Term
    lot_id: str
    account: str
    kind: str  # sell, trade, spend, fee, transfer-fee


@dataclass(frozen=True, slots=True)
class IncomeLine:
    """Income (staking, airdrop, interest, mining...) at fair value when received."""

    entry_id: str
    asset: str
    amount: Decimal
    received: int
    value: Decimal
    subkind: str
    account: str


@dataclass(frozen=True, slots=True)
class MissingAcquisition:
    """The part of a disposal no lot covers: reported, never invented."""

    disposal_id: str
    asset: str
    amount: Decimal
    disposed: int
    proceeds: Decimal
    account: str


@dataclass(frozen=True, slots=True)
class OpenLot:
    """What remains of one acquisition after every disposal."""

    lot_id: str
    account: str
    asset: str
    amount: Decimal
    cost_basis: Decimal
    acquired: int


@dataclass(frozen=True, slots=True)
class Holding:
    """Quantity and remaining cost basis of one asset (per account when per-wallet)."""

    asset: str
    amount: Decimal
    cost_basis: Decimal
    account: str | None = None


@dataclass(frozen=True, slots=True)
class RemovedLot:
    """Part of a lot that left the tracked accounts (a withdrawal): no gain is
    realised; its cost basis leaves with it."""

    entry_id: str
    lot_id: str
    account: str
    asset: str
    amount: Decimal
    cost_basis: Decimal
    acquired: int
    removed: int


@dataclass(frozen=True, slots=True)
class CostBasisResult:
    method: Method
    currency: str
    per_wallet: bool
    disposals: list[DisposalLine] = field(default_factory=list)
    income: list[IncomeLine] = field(default_factory=list)
    holdings: list[Holding] = field(default_factory=list)
    lots: list[OpenLot] = field(default_factory=list)
    missing_acquisitions: list[MissingAcquisition] = field(default_factory=list)
    # Explicit notes on assumptions the ledger forced (a deposit with no value
    # enters at zero cost, a fee with no fair value is disposed of for nothing).
    warnings: list[str] = field(default_factory=list)
    # What withdrawals took out, lot by lot (cost acquired == cost disposed +
    # cost of open lots + cost removed).
    removals: list[RemovedLot] = field(default_factory=list)


def term_of(acquired: int, disposed: int, long_term_days: int = LONG_TERM_DAYS) -> Term:
    """Long term when held more than ``long_term_days`` (IRS: more than one year)."""
    return "long" if disposed - acquired > long_term_days * 86_400_000 else "short"


def unfrozen_twin(cls: type) -> type:
    """A mutable slots dataclass with exactly ``cls``'s fields, hence its memory layout.

    A frozen dataclass's ``__init__`` sets every field through
    ``object.__setattr__``: 1.3 us for a ``DisposalLine``, more than matching
    it. Hot loops build the twin instead (a fifth of that) and assign
    ``obj.__class__ = cls``, which Python allows between classes of the same
    layout; what comes out is an ordinary, frozen ``cls`` instance.
    """
    fields = [(f.name, f.type) for f in dataclasses.fields(cls)]
    twin: type = dataclasses.make_dataclass(f"_{cls.__name__}Builder", fields, slots=True)
    if getattr(twin, "__slots__", None) != getattr(cls, "__slots__", ()):
        raise TypeError(f"{cls.__name__} is not a slots dataclass")
    return twin
