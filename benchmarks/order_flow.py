"""A seeded order flow on one market, for matching-engine benchmarks.

Prices are integer ticks and quantities integer lots. Each operation is a tuple
``(op, oid, side, price, qty)`` with ``side`` +1 (buy) or -1 (sell):

- ``LIMIT``: a good-till-cancel limit order. About 60% of all operations are
  *passive* limits near the touch: from one tick inside the spread (never
  crossing it) to four ticks behind the best price on their own side, 1-10 lots.
  Another ~5% are *crossing* limits: priced 0-2 ticks through the best opposite
  price, 1-34 lots; what they do not fill rests and moves the touch, so the
  price walks.
- ``CANCEL``: ~30%. ``oid`` is a live resting order picked uniformly at random;
  ``side`` and ``price`` are that order's, ``qty`` is 0.
- ``MARKET``: ~5%. 1-34 lots, capped at the resting opposite quantity, so every
  engine fills it completely whatever its policy for an unfilled remainder.
  ``price`` is the last price level it reaches (a limit at that price fills the
  same way, for books without market orders).

Marketable orders (crossing limits + market orders) are ~10% of the flow. The
generator simulates its own price-time priority book (``ReferenceBook``) to know
which orders still rest, so a cancel never targets a filled or cancelled order.
While a side is empty, a cancel or a market order it would need becomes a
passive limit instead (only at the very start of a flow).
"""

from __future__ import annotations

import heapq
import random
from collections import deque

LIMIT, CANCEL, MARKET = 0, 1, 2
BUY, SELL = 1, -1
MID = 100_000  # ticks: the opening price; far enough from zero for any walk
# Lots of a marketable order are 1..MAX_TAKE: 34 keeps the book near a steady state
# of a few hundred to ~1,500 resting orders (30 lets it grow without bound, 40
# drains it to a few dozen).
MAX_TAKE = 34
Op = tuple[int, int, int, int, int]


class ReferenceBook:
    """Price-time priority book of resting orders, just enough to follow the flow.

    Level queues hold order ids; a cancelled or filled id stays in its queue and
    is skipped when reached (lazy deletion keeps a cancel O(1)). Best prices come
    from heaps with the same lazy deletion (bids are stored negated).
    """

    def __init__(self) -> None:
        self.orders: dict[int, list[int]] = {}  # oid -> [side, price, remaining qty]
        self._queues: tuple[dict[int, deque[int]], dict[int, deque[int]]] = ({}, {})
        self._level_qty: tuple[dict[int, int], dict[int, int]] = ({}, {})
        self._heaps: tuple[list[int], list[int]] = ([], [])
        self.side_qty = {BUY: 0, SELL: 0}
        self._live: list[int] = []  # resting ids, for uniform random choice
        self._live_at: dict[int, int] = {}

    @staticmethod
    def _ix(side: int) -> int:
        return 0 if side == BUY else 1

    def best(self, side: int) -> int | None:
        """Best resting price on ``side``, or None when the side is empty."""
        ix = self._ix(side)
        heap, level_qty = self._heaps[ix], self._level_qty[ix]
        while heap:
            price = heap[0] if side == SELL else -heap[0]
            if level_qty.get(price):
                return price
            heapq.heappop(heap)
            level_qty.pop(price, None)
            self._queues[ix].pop(price, None)
        return None

    def rest(self, oid: int, side: int, price: int, qty: int) -> None:
        ix = self._ix(side)
        queue = self._queues[ix].get(price)
        if queue is None:
            queue = self._queues[ix][price] = deque()
        if not self._level_qty[ix].get(price):
            heapq.heappush(self._heaps[ix], price if side == SELL else -price)
        queue.append(oid)
        self._level_qty[ix][price] = self._level_qty[ix].get(price, 0) + qty
        self.side_qty[side] += qty
        self.orders[oid] = [side, price, qty]
        self._live_at[oid] = len(self._live)
        self._live.append(oid)

    def _forget(self, oid: int) -> None:
        del self.orders[oid]
        at = self._live_at.pop(oid)
        last = self._live.pop()
        if last != oid:
            self._live[at] = last
            self._live_at[last] = at

    def cancel(self, oid: int) -> None:
        side, price, qty = self.orders[oid]
        self._level_qty[self._ix(side)][price] -= qty
        self.side_qty[side] -= qty
        self._forget(oid)

    def random_live(self, rng: random.Random) -> int | None:
        return self._live[int(rng.random() * len(self._live))] if self._live else None

    def match(self, side: int, limit: int | None, qty: int) -> tuple[int, int]:
        """Fill ``qty`` of an incoming ``side`` order against the opposite side,
        up to ``limit`` (None = any price). Returns (unfilled qty, last price reached)."""
        other = -side
        ix = self._ix(other)
        last = 0
        while qty:
            price = self.best(other)
            if price is None or (limit is not None and (price - limit) * side > 0):
                break
            last = price
            queue = self._queues[ix][price]
            while qty and queue:
                oid = queue[0]
                order = self.orders.get(oid)
                if order is None:
                    queue.popleft()  # cancelled or filled earlier: lazy deletion
                    continue
                take = min(qty, order[2])
                qty -= take
                order[2] -= take
                self._level_qty[ix][price] -= take
                self.side_qty[other] -= take
                if not order[2]:
                    queue.popleft()
                    self._forget(oid)
        return qty, last


class FlowGenerator:
    """Generates the flow; ``book`` is the reference book after the last operation."""

    def __init__(self, seed: int = 1, mid: int = MID) -> None:
        self.rng = random.Random(seed)
        self.mid = mid
        self.book = ReferenceBook()
        self.next_oid = 1

    def _new_oid(self) -> int:
        oid = self.next_oid
        self.next_oid += 1
        return oid

    def _passive(self, side: int) -> Op:
        rng, book = self.rng, self.book
        own, opposite = book.best(side), book.best(-side)
        if own is None:
            if opposite is not None:
                own = opposite - side
            else:
                own = self.mid if side == BUY else self.mid + 1
        # -1 improves the touch by a tick, 0..4 joins it or sits behind it
        price = own - side * (int(rng.random() * 6) - 1)
        if opposite is not None and (price - opposite) * side >= 0:
            price = opposite - side  # stay passive: never cross the spread
        qty = 1 + int(rng.random() * 10)
        oid = self._new_oid()
        book.rest(oid, side, price, qty)
        return (LIMIT, oid, side, price, qty)

    def _crossing(self, side: int) -> Op | None:
        opposite = self.book.best(-side)
        if opposite is None:
            return None
        price = opposite + side * int(self.rng.random() * 3)
        qty = 1 + int(self.rng.random() * MAX_TAKE)
        oid = self._new_oid()
        left, _ = self.book.match(side, price, qty)
        if left:
            self.book.rest(oid, side, price, left)
        return (LIMIT, oid, side, price, qty)

    def _market(self, side: int) -> Op | None:
        available = self.book.side_qty[-side]
        if not available:
            return None
        qty = min(1 + int(self.rng.random() * MAX_TAKE), available)
        left, last = self.book.match(side, None, qty)
        assert left == 0
        return (MARKET, self._new_oid(), side, last, qty)

    def _cancel(self) -> Op | None:
        oid = self.book.random_live(self.rng)
        if oid is None:
            return None
        side, price, _ = self.book.orders[oid]
        self.book.cancel(oid)
        return (CANCEL, oid, side, price, 0)

    def next_op(self) -> Op:
        r = self.rng.random()
        side = BUY if self.rng.random() < 0.5 else SELL
        op: Op | None = None
        if r < 0.60:
            pass
        elif r < 0.90:
            op = self._cancel()
        elif r < 0.95:
            op = self._market(side)
        else:
            op = self._crossing(side)
        return op if op is not None else self._passive(side)

    def generate(self, n: int) -> list[Op]:
        return [self.next_op() for _ in range(n)]


def generate(n: int, *, seed: int = 1, mid: int = MID) -> list[Op]:
    """``n`` operations of the documented mix, identical for the same seed."""
    return FlowGenerator(seed, mid).generate(n)


def resting_orders(n: int, *, seed: int = 1, mid: int = MID, depth: int = 100) -> list[Op]:
    """``n`` passive limits that never cross: bids 1..depth ticks under ``mid``,
    asks 1..depth ticks over it, 1-10 lots each (a book to measure memory on)."""
    rng = random.Random(seed)
    ops: list[Op] = []
    for oid in range(1, n + 1):
        side = BUY if rng.random() < 0.5 else SELL
        price = mid - side * (1 + int(rng.random() * depth))
        ops.append((LIMIT, oid, side, price, 1 + int(rng.random() * 10)))
    return ops
