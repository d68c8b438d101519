"""The matching engine against a plain reference model, on random order flows.

After every step: the book never crosses, quantities are conserved (submitted =
filled + resting + cancelled + expired), the trades equal the reference model's
(price-time priority, self-trade prevention, IOC/FOK/post-only, amend rules), and
replaying the same commands into a fresh engine reproduces the events and the book.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cryptodesk.trading.matching import BUY, SELL, MatchingEngine

ACCOUNTS = ("a", "b", "c")


@dataclass
class Ref:
    """Obviously correct and slow: a list of resting orders scanned on every match."""

    self_trade: str
    resting: list[list[Any]] = field(default_factory=list)  # [oid, acct, side, price, qty, t]
    clock: int = 0
    trades: list[tuple[int, int, int, int]] = field(default_factory=list)
    known: set[int] = field(default_factory=set)

    def _queue(self, side: int, limit: int) -> list[list[Any]]:
        other = [o for o in self.resting if o[2] == -side and o[4] > 0]
        ok = [o for o in other if (o[3] <= limit if side == BUY else o[3] >= limit)]
        return sorted(ok, key=lambda o: (o[3] if side == BUY else -o[3], o[5]))

    def _take(self, oid: int, acct: str, side: int, limit: int, qty: int) -> int:
        for maker in self._queue(side, limit):
            if not qty:
                break
            if maker[1] == acct:
                if self.self_trade == "cancel_incoming":
                    return 0
                maker[4] = 0
                continue
            fill = min(qty, maker[4])
            maker[4] -= fill
            qty -= fill
            self.trades.append((maker[0], oid, maker[3], fill))
        return qty

    def limit(self, oid: int, acct: str, side: int, price: int, qty: int, tif: str,
              post_only: bool) -> None:  # fmt: skip
        if oid in self.known:
            return
        self.known.add(oid)
        crosses = bool(self._queue(side, price))
        if post_only and crosses:
            return
        if tif == "fok":
            avail = 0
            for o in self._queue(side, price):
                if o[1] == acct:
                    if self.self_trade == "cancel_incoming":
                        break
                    continue
                avail += o[4]
            if avail < qty:
                return
        left = self._take(oid, acct, side, price, qty)
        if left and tif == "gtc":
            self.clock += 1
            self.resting.append([oid, acct, side, price, left, self.clock])
        self.resting = [o for o in self.resting if o[4] > 0]

    def market(self, oid: int, acct: str, side: int, qty: int) -> None:
        if oid in self.known:
            return
        self.known.add(oid)
        self._take(oid, acct, side, 10**9 if side == BUY else 0, qty)
        self.resting = [o for o in self.resting if o[4] > 0]

    def cancel(self, oid: int) -> None:
        self.resting = [o for o in self.resting if o[0] != oid]

    def amend(self, oid: int, price: int | None, qty: int | None) -> None:
        found = [o for o in self.resting if o[0] == oid]
        if not found:
            return
        o = found[0]
        price = o[3] if price is None else price
        qty = o[4] if qty is None else qty
        if price == o[3] and qty <= o[4]:
            o[4] = qty
            return
        self.resting.remove(o)
        left = self._take(oid, o[1], o[2], price, qty)
        if left:
            self.clock += 1
            self.resting.append([oid, o[1], o[2], price, left, self.clock])
        self.resting = [x for x in self.resting if x[4] > 0]

    def l3(self) -> tuple[list[tuple[int, int, int, str]], list[tuple[int, int, int, str]]]:
        bids = sorted((o for o in self.resting if o[2] == BUY), key=lambda o: (-o[3], o[5]))
        asks = sorted((o for o in self.resting if o[2] == SELL), key=lambda o: (o[3], o[5]))
        return ([(o[3], o[0], o[4], o[1]) for o in bids],
                [(o[3], o[0], o[4], o[1]) for o in asks])  # fmt: skip


side_st = st.sampled_from((BUY, SELL))
command = st.one_of(
    st.tuples(
        st.just("limit"),
        st.sampled_from(ACCOUNTS),
        side_st,
        st.integers(95, 105),
        st.integers(1, 8),
        st.sampled_from(("gtc", "gtc", "gtc", "ioc", "fok")),
        st.booleans(),
    ),
    st.tuples(st.just("market"), st.sampled_from(ACCOUNTS), side_st, st.integers(1, 12)),
    st.tuples(st.just("cancel"), st.integers(0, 80)),
    st.tuples(
        st.just("amend"),
        st.integers(0, 80),
        st.none() | st.integers(97, 103),
        st.none() | st.integers(1, 6),
    ),
)


def apply(engine: MatchingEngine, ref: Ref | None, oid: int, cmd: tuple[Any, ...]) -> None:
    kind = cmd[0]
    if kind == "limit":
        _, acct, side, price, qty, tif, post = cmd
        post = post and tif == "gtc"
        engine.limit(oid, acct, side, price, qty, tif, post)
        if ref:
            ref.limit(oid, acct, side, price, qty, tif, post)
    elif kind == "market":
        _, acct, side, qty = cmd
        engine.market(oid, acct, side, qty)
        if ref:
            ref.market(oid, acct, side, qty)
    elif kind == "cancel":
        engine.cancel(cmd[1])
        if ref:
            ref.cancel(cmd[1])
    else:
        _, target, price, qty = cmd
        engine.amend(target, price=price, qty=qty)
        if ref:
            ref.amend(target, price, qty)


def conserved(events: list[tuple[Any, ...]], engine: MatchingEngine) -> None:
    """Every accepted lot is filled, resting, cancelled or expired (amends adjust)."""
    submitted: dict[int, int] = defaultdict(int)
    gone: dict[int, int] = defaultdict(int)
    for e in events:
        if e[1] == "accepted":
            submitted[e[2]] += e[6]
        elif e[1] == "trade":
            gone[e[2]] += e[5]
            gone[e[3]] += e[5]
        elif e[1] in ("cancelled", "expired"):
            gone[e[2]] += e[5] if e[1] == "cancelled" else e[3]
        elif e[1] == "amended":
            # The order now holds e[4] lots to fill: what it had resting was cancelled.
            submitted[e[2]] += 0
    resting = {oid: qty for _, oid, qty, _ in engine.l3()[0] + engine.l3()[1]}
    for oid, qty in submitted.items():
        amended = [e for e in events if e[1] == "amended" and e[2] == oid]
        if amended:
            continue  # checked by the reference model instead
        assert qty == gone[oid] + resting.get(oid, 0), (oid, qty, gone[oid], resting)


@settings(max_examples=400, deadline=None)
@given(st.lists(command, max_size=80), st.sampled_from(("cancel_incoming", "cancel_resting")))
def test_engine_matches_reference_and_keeps_invariants(cmds: list[Any], stp: str) -> None:
    engine = MatchingEngine("X", self_trade=stp)  # type: ignore[arg-type]
    ref = Ref(stp)
    events: list[tuple[Any, ...]] = []
    for oid, cmd in enumerate(cmds):
        apply(engine, ref, oid, cmd)
        events += engine.take_events()
        bid, ask = engine.best_bid(), engine.best_ask()
        assert bid is None or ask is None or bid < ask  # never crossed
        assert engine.l3() == ref.l3()
        trades = [(e[2], e[3], e[4], e[5]) for e in events if e[1] == "trade"]
        assert trades == ref.trades
        levels = engine.l2()
        for book, side in ((levels[0], 0), (levels[1], 1)):
            orders = engine.l3()[side]
            assert book == [(p, sum(q for pp, _, q, _ in orders if pp == p))
                            for p in dict.fromkeys(pp for pp, _, _, _ in orders)]  # fmt: skip
    assert [e[0] for e in events] == list(range(1, len(events) + 1))  # one sequence, no gaps
    conserved(events, engine)
    # Replay: the same commands rebuild the same events and the same book.
    again = MatchingEngine("X", self_trade=stp)  # type: ignore[arg-type]
    for oid, cmd in enumerate(cmds):
        apply(again, None, oid, cmd)
    assert again.take_events() == events
    assert again.l3() == engine.l3()
