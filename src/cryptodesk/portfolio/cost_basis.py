"""Cost basis: match every disposal with the lots it used up (see docs/cost-basis.md).

``compute(entries, method=...)`` turns ledger entries into events
(``tax_events``: the fee, transfer, income and crypto-to-crypto conventions
live there) and matches them in time order as they come:

- an acquisition opens a lot: the acquiring entry's id, time, amount and cost;
- a disposal takes lots in the method's order (``lot_matching``), one
  ``DisposalLine`` per lot used. Its proceeds are split over the lots in
  proportion to the amounts (rounded to ``SPLIT_STEP``, the remainder on the
  last piece), so the lines add up to the disposal exactly. What no lot
  covers is a ``MissingAcquisition`` with its share of the proceeds;
- a move (transfer): per wallet, the lots go to the destination account with
  their dates and cost; universally nothing changes;
- a removal (withdrawal): lots leave without a gain (``RemovedLot``).

Pools are per asset (universal) or per account and asset (``per_wallet``).
``uk`` is HMRC share pooling (``uk_pooling.match_uk``), per person only.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from decimal import (
    ROUND_DOWN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)
from typing import cast

from cryptodesk.domain.errors import DomainError
from cryptodesk.portfolio.ledger import LedgerEntry
from cryptodesk.portfolio.lot_matching import Piece, Pool, QueuePool, new_pool
from cryptodesk.portfolio.tax_events import LotIds, emit_events, to_events, with_par_values
from cryptodesk.portfolio.tax_lots import (
    LONG_TERM_DAYS,
    METHODS,
    SPLIT_STEP,
    CostBasisResult,
    DisposalLine,
    Holding,
    IncomeLine,
    Method,
    MissingAcquisition,
    OpenLot,
    RemovedLot,
    unfrozen_twin,
)

_ZERO = Decimal(0)
_DAY_MS = 86_400_000
# Wide enough that sums of costs and proceeds with 18 decimals stay exact far
# beyond any real amount; fixed, so results never depend on the caller's context.
_CONTEXT = Context(prec=50, traps=[InvalidOperation, DivisionByZero, Overflow])
AVERAGE_LOT_ID = "average"
# Builders of frozen result records (see tax_lots.unfrozen_twin).
_LineBuilder = unfrozen_twin(DisposalLine)
_RemovedBuilder = unfrozen_twin(RemovedLot)


class _GcPause:
    """Pause the cyclic garbage collector while building millions of small objects.

    Nothing here makes reference cycles; the collector would only rescan the
    growing result over and over (on 1,000,000 entries it tripled the time).
    Runs overlap (API requests compute in worker threads), so the pauses are
    counted: the collector comes back, if it was on, when the last one ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._was_enabled = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0 and self._was_enabled:
                    gc.enable()


_gc_paused = _GcPause()


def compute(
    entries: Iterable[LedgerEntry],
    *,
    method: Method | str,
    currency: str = "USD",
    per_wallet: bool = False,
    long_term_days: int = LONG_TERM_DAYS,
    par: Collection[str] = (),
) -> CostBasisResult:
    """Cost basis of ``entries`` (any order; reversals applied) by ``method``.

    ``par``: assets valued 1:1 with ``currency`` where an entry has no value
    (``tax_events.with_par_values``); empty by default.
    """
    if method not in METHODS:
        raise DomainError(f"method {method!r} is not one of {', '.join(METHODS)}", field="method")
    if long_term_days < 1:
        raise DomainError(
            f"long_term_days must be positive, got {long_term_days}", field="long_term_days"
        )
    if method == "uk" and per_wallet:
        raise DomainError(
            "the uk method pools per person (HMRC): it cannot be applied per wallet",
            field="per_wallet",
        )
    if par:
        entries = with_par_values(entries, currency, par)
    with _gc_paused(), localcontext(_CONTEXT):
        # Only the result outlives _match: the lots are freed before the
        # collector runs again.
        return _match(entries, cast(Method, method), currency, per_wallet, long_term_days)


def _match(
    entries: Iterable[LedgerEntry], method: Method, currency: str, per_wallet: bool, days: int
) -> CostBasisResult:
    if method == "uk":
        from cryptodesk.portfolio.uk_pooling import match_uk

        return match_uk(to_events(entries, currency), currency=currency, long_term_days=days)
    matcher = _Matcher(method, currency, per_wallet, days)
    income: list[IncomeLine] = []
    warnings: list[str] = []
    emit_events(entries, currency, matcher, income, warnings)
    return matcher.result(income, warnings)


class _Matcher:
    """One method over one ledger: a ``tax_events.EventSink`` matching as events come."""

    def __init__(self, method: Method, currency: str, per_wallet: bool, days: int) -> None:
        self.method = method
        self.currency = currency
        self.per_wallet = per_wallet
        self.long_ms = days * _DAY_MS
        self.pools: dict[object, Pool] = {}
        self.lines: list[DisposalLine] = []
        self.missing: list[MissingAcquisition] = []
        self.removed: list[RemovedLot] = []
        self.warnings: list[str] = []
        self.specific = method == "specific"
        self.average = method == "average"
        self.lot_assets: dict[str, str] = {}  # specific: lot id -> asset
        self.seq = 0  # acquisitions so far
        self.fifo_fallbacks = 0
        self.unused_lot_ids = 0

    def pool(self, account: str, asset: str) -> Pool:
        key = (account, asset) if self.per_wallet else asset
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = new_pool(self.method)
        return pool

    def acquire(
        self, entry_id: str, timestamp: int, account: str, asset: str, amount: Decimal,
        cost: Decimal, source: str, /,
    ) -> None:  # fmt: skip
        key = (account, asset) if self.per_wallet else asset
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = new_pool(self.method)
        pool.add([entry_id, account, timestamp, self.seq, amount, cost])
        self.seq += 1
        if self.specific:
            self.lot_assets[entry_id] = asset

    def dispose(
        self, entry_id: str, disposed: int, account: str, asset: str, amount: Decimal,
        proceeds: Decimal, kind: str, lot_ids: LotIds, /,
    ) -> None:  # fmt: skip
        key = (account, asset) if self.per_wallet else asset
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = new_pool(self.method)
        if lot_ids or self.specific:
            pieces, short = self.take(pool, entry_id, account, asset, amount, lot_ids)
        else:
            pieces, short = pool.take(amount)
        if self.average and pieces:
            pieces = self.by_term(pieces, disposed)
        if not short and len(pieces) == 1:  # the common case: nothing to split
            lot_id, _, acquired, _, _, cost = pieces[0]
            line = _LineBuilder(entry_id, asset, amount, acquired, disposed, proceeds, cost,
                                proceeds - cost,
                                "long" if disposed - acquired > self.long_ms else "short",
                                lot_id, account, kind)  # fmt: skip
            line.__class__ = DisposalLine
            self.lines.append(line)
            return
        long_ms = self.long_ms
        append = self.lines.append
        # Proceeds in proportion to the amounts, the remainder on the last
        # piece (the missing part, if any): the pieces add up exactly.
        given = _ZERO
        last = len(pieces) - (0 if short else 1)
        for i, (lot_id, _, acquired, _, part, cost) in enumerate(pieces):
            if i == last:
                share = proceeds - given
            else:
                share = (proceeds * part / amount).quantize(SPLIT_STEP, ROUND_DOWN)
                given += share
            line = _LineBuilder(entry_id, asset, part, acquired, disposed, share, cost,
                                share - cost, "long" if disposed - acquired > long_ms else "short",
                                lot_id, account, kind)  # fmt: skip
            line.__class__ = DisposalLine
            append(line)
        if short:
            self.missing.append(
                MissingAcquisition(entry_id, asset, short, disposed, proceeds - given, account)
            )

    def move(
        self, entry_id: str, timestamp: int, account: str, to_account: str, asset: str,
        amount: Decimal, lot_ids: LotIds, /,
    ) -> None:  # fmt: skip
        if not self.per_wallet:
            pool = self.pools.get(asset)
            held = pool.total if pool is not None else _ZERO
            if held < amount:
                self.warnings.append(
                    f"transfer {entry_id} moves {amount} {asset} but only {_plain(held)} is held"
                )
            return
        pieces, short = self.take(self.pool(account, asset), entry_id, account, asset, amount,
                                  lot_ids)  # fmt: skip
        if short:
            self.warnings.append(
                f"transfer {entry_id} moves {amount} {asset} from {account}, which holds "
                f"{_plain(amount - short)}: {_plain(short)} is not moved"
            )
        dest = self.pool(to_account, asset)
        for lot_id, _, acquired, seq, part, cost in pieces:
            dest.insert((lot_id, to_account, acquired, seq, part, cost))

    def remove(
        self, entry_id: str, timestamp: int, account: str, asset: str, amount: Decimal,
        lot_ids: LotIds, /,
    ) -> None:  # fmt: skip
        pieces, short = self.take(self.pool(account, asset), entry_id, account, asset, amount,
                                  lot_ids)  # fmt: skip
        if short:
            self.warnings.append(
                f"withdrawal {entry_id} of {amount} {asset} from {account} exceeds the "
                f"{_plain(amount - short)} held: {_plain(short)} is not removed"
            )
        for lot_id, _, acquired, _, part, cost in pieces:
            removed = _RemovedBuilder(entry_id, lot_id, account, asset, part, cost, acquired,
                                      timestamp)  # fmt: skip
            removed.__class__ = RemovedLot
            self.removed.append(removed)

    def take(
        self, pool: Pool, entry_id: str, account: str, asset: str, amount: Decimal,
        lot_ids: LotIds,
    ) -> tuple[list[Piece], Decimal]:  # fmt: skip
        """Pieces by ``lot_ids`` (specific) or in the method's order, and the shortfall."""
        if lot_ids:
            if self.specific:
                assert isinstance(pool, QueuePool)
                return self.take_lot_ids(pool, entry_id, account, asset, amount, lot_ids), _ZERO
            self.unused_lot_ids += 1
        elif self.specific:
            self.fifo_fallbacks += 1
        return pool.take(amount)

    def take_lot_ids(
        self, pool: QueuePool, entry_id: str, account: str, asset: str, amount: Decimal,
        lot_ids: LotIds,
    ) -> list[Piece]:  # fmt: skip
        total = sum((part for _, part in lot_ids), _ZERO)
        if total != amount:
            raise DomainError(
                f"entry {entry_id}: lot_ids add up to {total}, not {amount}", field="lot_ids"
            )
        wanted: dict[str, Decimal] = {}
        for lot_id, part in lot_ids:  # check them all before taking any
            wanted[lot_id] = wanted.get(lot_id, _ZERO) + part
            self.check_lot(pool, f"entry {entry_id}: lot {lot_id}", lot_id, account, asset,
                           wanted[lot_id])  # fmt: skip
        return [pool.take_lot(lot_id, part) for lot_id, part in lot_ids]

    def check_lot(
        self, pool: QueuePool, where: str, lot_id: str, account: str, asset: str, amount: Decimal
    ) -> None:
        lot_asset = self.lot_assets.get(lot_id)
        if lot_asset is None:
            raise DomainError(f"{where} is not an earlier acquisition", field="lot_ids")
        if lot_asset != asset:
            raise DomainError(f"{where} is {lot_asset}, not {asset}", field="lot_ids")
        left = pool.available(lot_id)
        if left is None:
            held_in = sorted(
                str(key[0])
                for key, other in self.pools.items()
                if isinstance(key, tuple) and key[1] == asset
                and isinstance(other, QueuePool) and other.available(lot_id)
            )  # fmt: skip
            elsewhere = f" (it is held in {', '.join(held_in)})" if held_in else ""
            raise DomainError(
                f"{where} is not held in account {account}{elsewhere}", field="lot_ids"
            )
        if left < amount:
            raise DomainError(f"{where} has {left} left, {amount} asked for", field="lot_ids")

    def by_term(self, pieces: list[Piece], disposed: int) -> list[Piece]:
        """Average cost: one line per holding period, dated by its earliest layer."""
        long_ms = self.long_ms
        groups: list[Piece] = []
        for piece in pieces:  # oldest first, so long-term pieces come first
            is_long = disposed - piece[2] > long_ms
            if groups and (disposed - groups[-1][2] > long_ms) == is_long:
                last = groups[-1]
                groups[-1] = (*last[:4], last[4] + piece[4], last[5] + piece[5])
            else:
                groups.append((AVERAGE_LOT_ID, *piece[1:]))
        return groups

    def result(self, income: list[IncomeLine], warnings: list[str]) -> CostBasisResult:
        warnings.extend(self.warnings)
        if self.fifo_fallbacks:
            warnings.append(
                f"{self.fifo_fallbacks} disposals, transfers or withdrawals name no lot_ids: "
                "matched first in, first out"
            )
        if self.unused_lot_ids:
            warnings.append(
                f"{self.unused_lot_ids} entries name lot_ids, which only the specific "
                f"method uses: {self.method} ignored them"
            )
        holdings: list[Holding] = []
        lots: list[OpenLot] = []
        for key in sorted(self.pools, key=_asset_first):
            account = key[0] if isinstance(key, tuple) else None
            asset = _asset_of(key)
            amount = cost = _ZERO
            for lot_id, lot_account, acquired, _, lot_amount, lot_cost in self.pools[
                key
            ].open_lots():
                lots.append(OpenLot(lot_id, lot_account, asset, lot_amount, lot_cost, acquired))
                amount += lot_amount
                cost += lot_cost
            if amount:
                holdings.append(Holding(asset, amount, cost, account))
        return CostBasisResult(
            method=self.method, currency=self.currency, per_wallet=self.per_wallet,
            disposals=self.lines, income=income, holdings=holdings, lots=lots,
            missing_acquisitions=self.missing, warnings=warnings, removals=self.removed,
        )  # fmt: skip


def _plain(amount: Decimal) -> str:
    """An amount for a message: no exponent, no trailing zeros."""
    return format(amount.normalize(), "f")


def _asset_of(key: object) -> str:
    return str(key[1]) if isinstance(key, tuple) else str(key)


def _asset_first(key: object) -> tuple[str, str]:
    return (str(key[1]), str(key[0])) if isinstance(key, tuple) else (str(key), "")
