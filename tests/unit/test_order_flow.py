"""The benchmark order flow: documented mix, cancels only of resting orders, seeded.

The flow is replayed through a deliberately naive price-time priority book (a
dict of orders, scanned and sorted on every match) that shares no code with the
generator's own reference book.
"""

from __future__ import annotations

from benchmarks.order_flow import BUY, CANCEL, LIMIT, MARKET, SELL, generate, resting_orders

N = 50_000


class NaiveBook:
    def __init__(self) -> None:
        self.orders: dict[int, list[int]] = {}  # oid -> [side, price, qty, arrival]
        self.arrivals = 0

    def best(self, side: int) -> int | None:
        prices = [o[1] for o in self.orders.values() if o[0] == side]
        if not prices:
            return None
        return max(prices) if side == BUY else min(prices)

    def quantity(self, side: int) -> int:
        return sum(o[2] for o in self.orders.values() if o[0] == side)

    def take(self, side: int, limit: int | None, qty: int) -> tuple[int, int]:
        """Fill an incoming order; returns (unfilled qty, last price touched)."""
        resting = [(oid, o) for oid, o in self.orders.items() if o[0] == -side]
        # best price first (lowest ask for a buy, highest bid for a sell), then arrival
        resting.sort(key=lambda item: (item[1][1] * side, item[1][3]))
        last = 0
        for oid, order in resting:
            if not qty or (limit is not None and (order[1] - limit) * side > 0):
                break
            fill = min(qty, order[2])
            qty -= fill
            order[2] -= fill
            last = order[1]
            if not order[2]:
                del self.orders[oid]
        return qty, last

    def rest(self, oid: int, side: int, price: int, qty: int) -> None:
        self.arrivals += 1
        self.orders[oid] = [side, price, qty, self.arrivals]


def test_mix_and_every_cancel_targets_a_resting_order() -> None:
    ops = generate(N, seed=3)
    book = NaiveBook()
    counts = {"passive": 0, "cancel": 0, "marketable": 0}
    seen_ids: set[int] = set()
    for op, oid, side, price, qty in ops:
        assert side in (BUY, SELL)
        if op == CANCEL:
            assert oid in book.orders, f"cancel of {oid}, which does not rest"
            assert book.orders[oid][:2] == [side, price]
            del book.orders[oid]
            counts["cancel"] += 1
            continue
        assert oid not in seen_ids
        seen_ids.add(oid)
        assert qty >= 1
        opposite = book.best(-side)
        if op == MARKET:
            assert qty <= book.quantity(-side)  # always fills completely
            left, last = book.take(side, None, qty)
            assert (left, last) == (0, price)
            counts["marketable"] += 1
        elif opposite is not None and (price - opposite) * side >= 0:
            assert 0 <= (price - opposite) * side <= 2  # 0..2 ticks through the touch
            left, _ = book.take(side, price, qty)
            if left:
                book.rest(oid, side, price, left)
            counts["marketable"] += 1
        else:
            assert op == LIMIT
            assert 1 <= qty <= 10
            own = book.best(side)
            if own is not None:
                behind = (own - price) * side
                # one tick inside the spread .. four ticks behind the touch
                assert -1 <= behind <= 4
            book.rest(oid, side, price, qty)
            counts["passive"] += 1
    assert sum(counts.values()) == N
    assert abs(counts["passive"] / N - 0.60) < 0.01
    assert abs(counts["cancel"] / N - 0.30) < 0.01
    assert abs(counts["marketable"] / N - 0.10) < 0.01
    assert 0 < len(book.orders) < 5_000  # the book neither drains nor piles up


def test_deterministic_for_a_seed() -> None:
    first = generate(5_000, seed=11)
    assert first == generate(5_000, seed=11)
    assert first != generate(5_000, seed=12)
    assert first[0] == (LIMIT, 1, first[0][2], first[0][3], first[0][4])
    assert all(isinstance(field, int) for op in first for field in op)


def test_resting_orders_never_cross() -> None:
    ops = resting_orders(10_000, seed=5, mid=1_000, depth=50)
    bids = [price for _, _, side, price, _ in ops if side == BUY]
    asks = [price for _, _, side, price, _ in ops if side == SELL]
    assert len(bids) + len(asks) == 10_000
    assert (max(bids), min(bids)) == (999, 950)
    assert (min(asks), max(asks)) == (1_001, 1_050)
    assert [oid for _, oid, _, _, _ in ops] == list(range(1, 10_001))
    assert {op for op, *_ in ops} == {LIMIT}
