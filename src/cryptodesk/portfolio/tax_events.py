"""Ledger entries -> the acquisitions and disposals a cost basis method matches.

This is where the accounting conventions live, once, for every method:

- Values are in the report ``currency``. A trade against the currency is worth
  the currency amount; any other trade (crypto-to-crypto) is worth its
  ``value`` column, and is a disposal of what is given plus an acquisition of
  what is received, both at that value.
- Fees: on a ``buy`` the fee's value is added to the cost of what is
  acquired; on a ``sell`` it is deducted from the proceeds. A fee paid in the
  received asset just means fewer units arrive; a fee paid in any crypto
  asset other than the received one is itself a disposal of the fee units
  (proceeds: ``fee_value``, or the trade's own price for the given asset).
- ``transfer`` moves lots between own accounts (dates kept); its fee, paid
  from ``account`` in crypto, is a disposal of the fee units.
- ``deposit`` of crypto is an acquisition at ``value`` (zero, with a warning,
  when no value is given); ``withdrawal`` removes lots without a gain.
- ``income`` is an acquisition at fair value and is reported as income;
  ``spend`` and ``fee`` are disposals at ``value``.
- Movements of the report currency itself are cash: no lots.
- ``with_par_values`` (opt-in) values stablecoins 1:1 with the currency where
  an entry gives no value.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from decimal import Decimal
from operator import attrgetter
from typing import Protocol

from cryptodesk.domain.errors import DomainError
from cryptodesk.portfolio.ledger import LedgerEntry, effective_entries
from cryptodesk.portfolio.tax_lots import IncomeLine, unfrozen_twin

_ZERO = Decimal(0)
_timestamp = attrgetter("timestamp")
_IncomeBuilder = unfrozen_twin(IncomeLine)


@dataclass(slots=True)
class Acquire:
    entry_id: str
    timestamp: int
    account: str
    asset: str
    amount: Decimal
    cost: Decimal
    source: str  # buy, trade, income, deposit


@dataclass(slots=True)
class Dispose:
    entry_id: str
    timestamp: int
    account: str
    asset: str
    amount: Decimal
    proceeds: Decimal
    kind: str  # sell, trade, spend, fee, transfer-fee
    lot_ids: tuple[tuple[str, Decimal], ...] = ()


@dataclass(slots=True)
class Move:
    """Lots move between own accounts; no gain, acquisition dates kept."""

    entry_id: str
    timestamp: int
    account: str
    to_account: str
    asset: str
    amount: Decimal
    lot_ids: tuple[tuple[str, Decimal], ...] = ()


@dataclass(slots=True)
class Remove:
    """Lots leave the tracked accounts (a withdrawal); no gain is realised."""

    entry_id: str
    timestamp: int
    account: str
    asset: str
    amount: Decimal
    lot_ids: tuple[tuple[str, Decimal], ...] = ()


Event = Acquire | Dispose | Move | Remove
LotIds = tuple[tuple[str, Decimal], ...]
# The fields of a Dispose, in order: a fee's disposal before it is emitted.
FeeDisposal = tuple[str, int, str, str, Decimal, Decimal, str, LotIds]


@dataclass(slots=True)
class TaxEvents:
    events: list[Event]
    income: list[IncomeLine]
    warnings: list[str]


def _need_value(entry: LedgerEntry, why: str) -> Decimal:
    if entry.value is None:
        raise DomainError(f"entry {entry.id}: value is required for {why}", field="value")
    return entry.value


class EventSink(Protocol):
    """Receives events as plain values, in the field order of the event classes.

    ``emit_events`` feeds one; ``to_events`` collects into event objects, and
    the cost basis engine matches as the events come, never building them.
    """

    def acquire(
        self,
        entry_id: str,
        timestamp: int,
        account: str,
        asset: str,
        amount: Decimal,
        cost: Decimal,
        source: str,
        /,
    ) -> None: ...

    def dispose(
        self,
        entry_id: str,
        timestamp: int,
        account: str,
        asset: str,
        amount: Decimal,
        proceeds: Decimal,
        kind: str,
        lot_ids: LotIds,
        /,
    ) -> None: ...

    def move(
        self,
        entry_id: str,
        timestamp: int,
        account: str,
        to_account: str,
        asset: str,
        amount: Decimal,
        lot_ids: LotIds,
        /,
    ) -> None: ...

    def remove(
        self,
        entry_id: str,
        timestamp: int,
        account: str,
        asset: str,
        amount: Decimal,
        lot_ids: LotIds,
        /,
    ) -> None: ...


class _Collector:
    """The sink behind ``to_events``: one event object per event."""

    __slots__ = ("append",)

    def __init__(self, events: list[Event]) -> None:
        self.append = events.append

    # Positional pass-through: the converter's order is the classes' field order.
    def acquire(self, a: str, b: int, c: str, d: str, e: Decimal, f: Decimal, g: str, /) -> None:
        self.append(Acquire(a, b, c, d, e, f, g))

    def dispose(
        self, a: str, b: int, c: str, d: str, e: Decimal, f: Decimal, g: str, h: LotIds, /
    ) -> None:
        self.append(Dispose(a, b, c, d, e, f, g, h))

    def move(self, a: str, b: int, c: str, d: str, e: str, f: Decimal, g: LotIds, /) -> None:
        self.append(Move(a, b, c, d, e, f, g))

    def remove(self, a: str, b: int, c: str, d: str, e: Decimal, f: LotIds, /) -> None:
        self.append(Remove(a, b, c, d, e, f))


def to_events(entries: Iterable[LedgerEntry], currency: str) -> TaxEvents:
    """Normalise entries (reversals applied, stable time order) into events."""
    out = TaxEvents([], [], [])
    emit_events(entries, currency, _Collector(out.events), out.income, out.warnings)
    return out


def emit_events(
    entries: Iterable[LedgerEntry],
    currency: str,
    sink: EventSink,
    income: list[IncomeLine],
    warnings: list[str],
) -> None:
    """``to_events``, feeding ``sink`` and appending to ``income`` and ``warnings``."""
    ordered = _effective(list(entries))
    ordered.sort(key=_timestamp)
    acquire, dispose = sink.acquire, sink.dispose
    for entry in ordered:
        kind = entry.kind
        if kind == "buy" or kind == "sell":
            fee_asset = entry.fee_asset
            if entry.counter_asset != currency or (fee_asset is not None and fee_asset != currency):
                _trade(entry, currency, sink, warnings)
            # The usual trade, against the currency with any fee in the currency
            # (what _trade does, without its generality).
            elif kind == "buy":
                cost = entry.counter_amount
                assert cost is not None
                if fee_asset is not None:
                    assert entry.fee_amount is not None
                    cost = cost + entry.fee_amount
                acquire(entry.id, entry.timestamp, entry.account, entry.asset, entry.amount, cost,
                        "buy")  # fmt: skip
            else:
                proceeds = entry.counter_amount
                assert proceeds is not None
                if fee_asset is not None:
                    assert entry.fee_amount is not None
                    proceeds = proceeds - entry.fee_amount
                dispose(entry.id, entry.timestamp, entry.account, entry.asset, entry.amount,
                        proceeds, "sell", entry.lot_ids)  # fmt: skip
            continue
        asset = entry.asset
        if kind == "transfer":
            assert entry.to_account is not None
            if asset != currency:
                sink.move(entry.id, entry.timestamp, entry.account, entry.to_account, asset,
                          entry.amount, entry.lot_ids)  # fmt: skip
        elif kind == "deposit":
            if asset != currency:
                if entry.value is None:
                    warnings.append(
                        f"deposit {entry.id} of {entry.amount} {asset} has no value: "
                        "it enters at zero cost basis"
                    )
                cost = entry.value if entry.value is not None else _ZERO
                acquire(entry.id, entry.timestamp, entry.account, asset, entry.amount, cost,
                        "deposit")  # fmt: skip
        elif kind == "withdrawal":
            if asset != currency:
                sink.remove(entry.id, entry.timestamp, entry.account, asset, entry.amount,
                            entry.lot_ids)  # fmt: skip
        elif kind == "income":
            value = entry.amount if asset == currency else _need_value(entry, "income")
            assert entry.subkind is not None
            line = _IncomeBuilder(entry.id, asset, entry.amount, entry.timestamp, value,
                                  entry.subkind, entry.account)  # fmt: skip
            line.__class__ = IncomeLine
            income.append(line)
            if asset != currency:
                acquire(entry.id, entry.timestamp, entry.account, asset, entry.amount, value,
                        "income")  # fmt: skip
        elif asset != currency:  # spend, fee
            if kind == "spend":
                proceeds = _need_value(entry, "a spend")
            elif entry.value is None:
                warnings.append(
                    f"fee {entry.id} of {entry.amount} {asset} has no value: "
                    "it is disposed of for zero proceeds"
                )
                proceeds = _ZERO
            else:
                proceeds = entry.value
            dispose(entry.id, entry.timestamp, entry.account, asset, entry.amount, proceeds, kind,
                    entry.lot_ids)  # fmt: skip
        if entry.fee_asset is not None:
            fee = _fee(entry, currency, warnings, None)[1]
            if fee is not None:
                dispose(*fee)


def _effective(entries: list[LedgerEntry]) -> list[LedgerEntry]:
    """``effective_entries(entries)``, without indexing every entry by id.

    Only the reversals and the entries they name go through
    ``effective_entries`` (which validates them); the rest is one filter.
    """
    reversals = [e for e in entries if e.reverses is not None]
    if not reversals:
        return entries
    targets = {e.reverses for e in reversals}
    effective_entries([e for e in entries if e.reverses is not None or e.id in targets])
    return [e for e in entries if e.reverses is None and e.id not in targets]


def _trade(entry: LedgerEntry, currency: str, sink: EventSink, warnings: list[str]) -> None:
    counter_asset = entry.counter_asset
    counter_amount = entry.counter_amount
    assert counter_asset is not None
    assert counter_amount is not None
    buy = entry.kind == "buy"
    if buy:
        got_asset, got_amount = entry.asset, entry.amount
        gave_asset, gave_amount = counter_asset, counter_amount
    else:
        got_asset, got_amount = counter_asset, counter_amount
        gave_asset, gave_amount = entry.asset, entry.amount
    if gave_asset == currency:
        value = gave_amount
    elif got_asset == currency:
        value = got_amount
    else:
        value = _need_value(entry, "a crypto-to-crypto trade")
    fee_value = _ZERO
    fee: FeeDisposal | None = None
    fee_asset = entry.fee_asset
    if fee_asset is None:
        pass
    elif fee_asset == currency:
        assert entry.fee_amount is not None
        fee_value = entry.fee_amount
    elif fee_asset == got_asset:
        assert entry.fee_amount is not None
        got_amount -= entry.fee_amount
        if got_amount <= _ZERO:
            raise DomainError(
                f"entry {entry.id}: fee_amount is not less than the amount received",
                field="fee_amount",
            )
    else:
        fee_value, fee = _fee(entry, currency, warnings, (gave_asset, value, gave_amount))
    if gave_asset != currency:
        trade_kind = entry.kind if got_asset == currency else "trade"
        sink.dispose(entry.id, entry.timestamp, entry.account, gave_asset, gave_amount,
                     value if buy else value - fee_value, trade_kind, entry.lot_ids)  # fmt: skip
    if fee is not None:
        sink.dispose(*fee)
    if got_asset != currency:
        sink.acquire(entry.id, entry.timestamp, entry.account, got_asset, got_amount,
                     value + fee_value if buy else value, "buy" if buy else "trade")  # fmt: skip


def _fee(
    entry: LedgerEntry,
    currency: str,
    warnings: list[str],
    implied_price: tuple[str, Decimal, Decimal] | None,
) -> tuple[Decimal, FeeDisposal | None]:
    """The fee's value in the currency, and its disposal when paid in crypto.

    ``implied_price`` is (asset given in the trade, trade value, amount given):
    a fee in the given asset is valued at the trade's own price.
    """
    assert entry.fee_asset is not None
    assert entry.fee_amount is not None
    if entry.fee_asset == currency:
        return entry.fee_amount, None
    if entry.fee_value is not None:
        value = entry.fee_value
    elif implied_price is not None and implied_price[0] == entry.fee_asset:
        value = entry.fee_amount * implied_price[1] / implied_price[2]
    else:
        warnings.append(
            f"fee of entry {entry.id} ({entry.fee_amount} {entry.fee_asset}) has no fee_value: "
            "it is disposed of for zero proceeds"
        )
        value = _ZERO
    kind = "fee" if entry.kind in ("buy", "sell") else f"{entry.kind}-fee"
    disposal = (f"{entry.id}:fee", entry.timestamp, entry.account, entry.fee_asset,
                entry.fee_amount, value, kind, ())  # fmt: skip
    return value, disposal


def with_par_values(
    entries: Iterable[LedgerEntry], currency: str, par: Collection[str]
) -> list[LedgerEntry]:
    """Entries whose missing fair values come from ``par`` assets, valued 1:1 with
    the currency (USDT and USDC for USD, when the user says so).

    Only an explicit choice: a stablecoin is not the currency, and a report
    in USD with trades against USDT otherwise asks for each trade's value. A
    given ``value``/``fee_value`` always wins; the entries themselves (and
    the hash chain) are not changed, only the copies the accounting reads.
    """
    chosen = frozenset(par) - {currency}
    out = list(entries)
    if not chosen:
        return out
    for i, e in enumerate(out):
        value = e.value
        if value is None and e.asset != currency:
            if e.kind in ("buy", "sell") and e.counter_asset != currency:
                if e.counter_asset in chosen:
                    value = e.counter_amount
                elif e.asset in chosen:
                    value = e.amount
            elif e.kind in ("deposit", "income", "spend", "fee") and e.asset in chosen:
                value = e.amount
        fee_value = e.fee_value
        if fee_value is None and e.fee_asset in chosen:
            fee_value = e.fee_amount
        if value is not e.value or fee_value is not e.fee_value:
            out[i] = replace(e, value=value, fee_value=fee_value)
    return out
