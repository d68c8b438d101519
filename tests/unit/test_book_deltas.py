"""L2 deltas between matching-engine snapshots: worked example and random flows."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cryptodesk.trading.book_deltas import apply_l2_deltas, l2_deltas
from cryptodesk.trading.matching import BUY, SELL, MatchingEngine


def test_a_trade_a_new_level_and_a_cancel_are_three_level_changes() -> None:
    engine = MatchingEngine("BTC/USDT")
    engine.limit(1, "a", BUY, 99, 5)
    engine.limit(2, "a", BUY, 98, 3)
    engine.limit(3, "b", SELL, 101, 4)
    before = engine.l2()
    engine.limit(4, "c", SELL, 99, 2)  # takes 2 of the 99 bid
    engine.limit(5, "c", SELL, 102, 1)  # a new ask level
    engine.cancel(2)  # the 98 bid level is gone
    after = engine.l2()
    assert after == ([(99, 3)], [(101, 4), (102, 1)])
    assert l2_deltas(before, after) == [(BUY, 99, 3), (BUY, 98, 0), (SELL, 102, 1)]
    assert apply_l2_deltas(before, l2_deltas(before, after)) == after
    assert l2_deltas(after, after) == []


def test_a_depth_limited_feed_drops_levels_that_leave_the_top() -> None:
    engine = MatchingEngine("BTC/USDT")
    for oid, price in enumerate((100, 99, 98), start=1):
        engine.limit(oid, "a", BUY, price, 1)
    before = engine.l2(2)
    engine.limit(9, "a", BUY, 101, 1)  # pushes 99 out of the top 2
    assert l2_deltas(before, engine.l2(2)) == [(BUY, 101, 1), (BUY, 99, 0)]


commands = st.lists(
    st.tuples(st.sampled_from(["limit", "cancel", "market"]), st.sampled_from([BUY, SELL]),
              st.integers(95, 105), st.integers(1, 5), st.integers(1, 40)),
    max_size=60,
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(commands, st.integers(0, 4))
def test_deltas_after_every_command_rebuild_every_snapshot(flow: list, depth: int) -> None:
    engine = MatchingEngine("BTC/USDT")
    shown = engine.l2(depth)
    for oid, (kind, side, price, qty, target) in enumerate(flow, start=1):
        account = "buyer" if side == BUY else "seller"
        if kind == "limit":
            engine.limit(oid, account, side, price, qty)
        elif kind == "market":
            engine.market(oid, account, side, qty)
        else:
            engine.cancel(target)
        now = engine.l2(depth)
        deltas = l2_deltas(shown, now)
        assert apply_l2_deltas(shown, deltas) == now
        assert len({(s, p) for s, p, _ in deltas}) == len(deltas)  # one change per level
        shown = now
