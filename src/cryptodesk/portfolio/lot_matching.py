"""Lots and the pools that hold them: the order in which each method uses them up.

A pool holds the lots of one asset (universal) or of one account and asset
(per-wallet). ``take(amount)`` removes that much in the method's order and
returns the pieces it cut, plus whatever it could not cover (the shortfall):

- ``QueuePool``: lots in acquisition order; FIFO takes the oldest first, LIFO
  the newest. With an index by lot id it also serves specific identification
  (``take_lot``; disposals without ``lot_ids`` fall back to FIFO).
- ``HeapPool``: HIFO, the highest cost per unit first (ties: the oldest), a
  heap keyed on the unit cost the lot was acquired at.
- ``AveragePool``: one running cost for the whole pool; every unit carries the
  average cost. Its lots are kept as layers in acquisition order only to date
  the units that leave (first in, first out), as the IRS average basis rule
  does for holding periods (Treas. Reg. 1.1012-1(e)(3)).

A lot is a list ``[lot_id, account, acquired, seq, amount, cost]`` (``cost``
is what is left of its cost) and a piece has the same layout, so a lot used
up whole is its own piece. Lists rather than objects: a million ledger
entries make half a million lots. ``seq`` orders acquisitions (ledger order)
and identifies a lot across wallets. Cutting part of a lot costs
``share(cost, part, whole)`` and the rest stays in the lot, so a lot's pieces
always add up to its original cost.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections import deque
from collections.abc import Iterator, Sequence
from decimal import ROUND_DOWN, Decimal
from itertools import count
from operator import itemgetter
from typing import Any

from cryptodesk.portfolio.tax_lots import SPLIT_STEP

_ZERO = Decimal(0)
# Positions in a lot and in a piece.
LOT_ID, ACCOUNT, ACQUIRED, SEQ, AMOUNT, COST = range(6)
Lot = list[Any]
Piece = Sequence[Any]
_seq_of = itemgetter(SEQ)


def share(total: Decimal, part: Decimal, whole: Decimal) -> Decimal:
    """``total * part / whole`` rounded toward zero to ``SPLIT_STEP``.

    Toward zero, so a piece never exceeds its exact share and the remainder
    left for the last piece is never of the wrong sign.
    """
    return (total * part / whole).quantize(SPLIT_STEP, ROUND_DOWN)


def split(total: Decimal, amounts: list[Decimal], whole: Decimal) -> list[Decimal]:
    """``total`` cut in proportion to ``amounts`` (which add up to ``whole``).

    Every piece but the last is ``share``-rounded; the last takes the
    remainder, so the pieces add up to ``total`` exactly.
    """
    out: list[Decimal] = []
    given = _ZERO
    for amount in amounts[:-1]:
        piece = (total * amount / whole).quantize(SPLIT_STEP, ROUND_DOWN)
        out.append(piece)
        given += piece
    out.append(total - given)
    return out


def cut(lot: Lot, amount: Decimal) -> Piece:
    """``amount`` (less than all) of ``lot``; the rest of it stays in the lot."""
    cost = (lot[COST] * amount / lot[AMOUNT]).quantize(SPLIT_STEP, ROUND_DOWN)
    lot[AMOUNT] -= amount
    lot[COST] -= cost
    return (lot[LOT_ID], lot[ACCOUNT], lot[ACQUIRED], lot[SEQ], amount, cost)


def merged(lots: list[Lot]) -> Iterator[Lot]:
    """Lots in acquisition order, pieces of the same acquisition merged into one."""
    lots.sort(key=_seq_of)
    current: Lot | None = None
    for lot in lots:
        if not lot[AMOUNT]:
            continue
        if current is not None and current[SEQ] == lot[SEQ]:
            current = [*current[:AMOUNT], current[AMOUNT] + lot[AMOUNT], current[COST] + lot[COST]]
            continue
        if current is not None:
            yield current
        current = lot
    if current is not None:
        yield current


class QueuePool:
    """Lots in acquisition order: FIFO from the left, LIFO from the right."""

    __slots__ = ("by_id", "lots", "newest_first", "total")

    def __init__(self, *, newest_first: bool = False, indexed: bool = False) -> None:
        self.lots: deque[Lot] = deque()
        self.total = _ZERO
        self.newest_first = newest_first
        # Specific identification: lot id -> lot (used-up lots stay, at zero).
        self.by_id: dict[str, Lot] | None = {} if indexed else None

    def add(self, lot: Lot) -> None:
        """A new acquisition: the newest lot so far."""
        self.lots.append(lot)
        self.total += lot[AMOUNT]
        if self.by_id is not None:
            self.by_id[lot[LOT_ID]] = lot

    def insert(self, piece: Piece) -> None:
        """A piece moved in from another wallet keeps its place in acquisition order."""
        lots = self.lots
        seq = piece[SEQ]
        self.total += piece[AMOUNT]
        if lots and lots[-1][SEQ] >= seq:
            i = bisect_left(lots, seq, key=_seq_of)
            if lots[i][SEQ] == seq:  # another piece of the same acquisition
                lots[i][AMOUNT] += piece[AMOUNT]
                lots[i][COST] += piece[COST]
                return
            lots.insert(i, lot := list(piece))
        else:
            lots.append(lot := list(piece))
        if self.by_id is not None:
            self.by_id[lot[LOT_ID]] = lot

    def take(self, amount: Decimal) -> tuple[list[Piece], Decimal]:
        lots = self.lots
        pop = lots.pop if self.newest_first else lots.popleft
        end = -1 if self.newest_first else 0
        indexed = self.by_id is not None
        pieces: list[Piece] = []
        remaining = amount
        while lots:
            lot = lots[end]
            have = lot[AMOUNT]
            if have > remaining:
                pieces.append(cut(lot, remaining))
                remaining = _ZERO
                break
            pop()
            if have:
                remaining -= have
                if indexed:  # the index keeps the lot, at zero
                    pieces.append(lot[:])
                    lot[AMOUNT] = lot[COST] = _ZERO
                else:
                    pieces.append(lot)
            if not remaining:
                break
        self.total -= amount - remaining
        return pieces, remaining

    def available(self, lot_id: str) -> Decimal | None:
        """What is left of lot ``lot_id`` here (``None``: it never was here)."""
        assert self.by_id is not None
        lot = self.by_id.get(lot_id)
        return None if lot is None else lot[AMOUNT]

    def take_lot(self, lot_id: str, amount: Decimal) -> Piece:
        """``amount`` of lot ``lot_id``; the caller checked ``available`` first."""
        assert self.by_id is not None
        lot = self.by_id[lot_id]
        self.total -= amount
        if amount < lot[AMOUNT]:
            return cut(lot, amount)
        piece = lot[:]
        lot[AMOUNT] = lot[COST] = _ZERO  # leaves the queue when it reaches an end
        return piece

    def open_lots(self) -> Iterator[Lot]:
        return (lot for lot in self.lots if lot[AMOUNT])


class HeapPool:
    """HIFO: the highest cost per unit leaves first; equal unit costs, the oldest first."""

    __slots__ = ("heap", "tiebreak", "total")

    def __init__(self) -> None:
        # (-unit cost at acquisition, seq, insertion counter, lot): the counter
        # keeps two pieces of one acquisition (per-wallet moves) comparable.
        self.heap: list[tuple[Decimal, int, int, Lot]] = []
        self.tiebreak = count()
        self.total = _ZERO

    def add(self, lot: Lot) -> None:
        heapq.heappush(self.heap, (-lot[COST] / lot[AMOUNT], lot[SEQ], next(self.tiebreak), lot))
        self.total += lot[AMOUNT]

    def insert(self, piece: Piece) -> None:
        self.add(list(piece))

    def take(self, amount: Decimal) -> tuple[list[Piece], Decimal]:
        heap = self.heap
        pieces: list[Piece] = []
        remaining = amount
        while heap:
            lot = heap[0][3]
            have = lot[AMOUNT]
            if have > remaining:
                # The rest keeps its unit cost (up to SPLIT_STEP), so its key stays.
                pieces.append(cut(lot, remaining))
                remaining = _ZERO
                break
            heapq.heappop(heap)
            pieces.append(lot)
            remaining -= have
            if not remaining:
                break
        self.total -= amount - remaining
        return pieces, remaining

    def open_lots(self) -> Iterator[Lot]:
        return merged([entry[3] for entry in self.heap])


class AveragePool:
    """One average cost for the pool; layers in acquisition order date the units."""

    __slots__ = ("cost", "layers", "total")

    def __init__(self) -> None:
        self.total = _ZERO
        self.cost = _ZERO
        self.layers: deque[Lot] = deque()  # lots whose cost is unused (zero)

    def add(self, lot: Lot) -> None:
        self.insert(lot)

    def insert(self, piece: Piece) -> None:
        seq, amount = piece[SEQ], piece[AMOUNT]
        self.total += amount
        self.cost += piece[COST]
        layers = self.layers
        if layers and layers[-1][SEQ] >= seq:
            i = bisect_left(layers, seq, key=_seq_of)
            if layers[i][SEQ] == seq:
                layers[i][AMOUNT] += amount
                return
            layers.insert(i, [*piece[:AMOUNT], amount, _ZERO])
        else:
            layers.append([*piece[:AMOUNT], amount, _ZERO])

    def take(self, amount: Decimal) -> tuple[list[Piece], Decimal]:
        held = self.total
        if not held:
            return [], amount
        taken = amount if amount < held else held
        cost = self.cost if taken == held else share(self.cost, taken, held)
        self.total = held - taken
        self.cost -= cost
        dated: list[Lot] = []
        layers = self.layers
        remaining = taken
        while remaining:
            layer = layers[0]
            if layer[AMOUNT] <= remaining:
                layers.popleft()
                dated.append(layer)
                remaining -= layer[AMOUNT]
            else:
                dated.append([*layer[:AMOUNT], remaining, _ZERO])
                layer[AMOUNT] -= remaining
                remaining = _ZERO
        costs = split(cost, [layer[AMOUNT] for layer in dated], taken)
        for piece, piece_cost in zip(dated, costs, strict=True):
            piece[COST] = piece_cost
        return list[Piece](dated), amount - taken

    def open_lots(self) -> Iterator[Lot]:
        layers = [layer for layer in self.layers if layer[AMOUNT]]
        if not layers:
            return iter(())
        costs = split(self.cost, [layer[AMOUNT] for layer in layers], self.total)
        return ([*layer[:COST], cost] for layer, cost in zip(layers, costs, strict=True))


Pool = QueuePool | HeapPool | AveragePool


def new_pool(method: str) -> Pool:
    if method == "hifo":
        return HeapPool()
    if method == "average":
        return AveragePool()
    return QueuePool(newest_first=method == "lifo", indexed=method == "specific")
