"""The matching engine by worked examples: every order type, every event's shape."""

from __future__ import annotations

import pytest

from cryptodesk.trading.matching import BUY, SELL, MatchingEngine


def kinds(engine: MatchingEngine) -> list[tuple[object, ...]]:
    """The events without their sequence numbers (checked once, below)."""
    return [e[1:] for e in engine.take_events()]


def book() -> MatchingEngine:
    e = MatchingEngine("BTC/USDT")
    e.limit(1, "a", SELL, 101, 5)
    e.limit(2, "b", SELL, 101, 3)
    e.limit(3, "a", SELL, 102, 4)
    e.limit(4, "b", BUY, 99, 2)
    e.take_events()
    return e


def test_a_resting_order_is_accepted_then_booked_with_sequence_numbers() -> None:
    e = MatchingEngine("BTC/USDT")
    e.limit(7, "a", BUY, 100, 3)
    assert e.take_events() == [
        (1, "accepted", 7, "a", BUY, 100, 3, "gtc"),
        (2, "booked", 7, BUY, 100, 3),
    ]
    assert e.take_events() == []
    assert (e.best_bid(), e.best_ask(), len(e)) == (100, None, 1)


def test_price_then_time_priority_and_trades_at_the_makers_price() -> None:
    e = book()
    e.limit(10, "c", BUY, 102, 9)  # takes 5 of #1 and 3 of #2 at 101, then 1 of #3 at 102
    assert kinds(e) == [
        ("accepted", 10, "c", BUY, 102, 9, "gtc"),
        ("trade", 1, 10, 101, 5, 0, 4, BUY),
        ("trade", 2, 10, 101, 3, 0, 1, BUY),
        ("trade", 3, 10, 102, 1, 3, 0, BUY),
    ]
    assert e.l2() == ([(99, 2)], [(102, 3)])
    assert e.last_price == 102


def test_ioc_remainder_expires_and_fok_fills_all_or_nothing() -> None:
    e = book()
    e.limit(10, "c", BUY, 101, 10, "ioc")
    assert kinds(e)[-1] == ("expired", 10, 2, "ioc_remainder")
    e = book()
    e.limit(11, "c", BUY, 101, 9, "fok")  # 8 available at 101
    assert kinds(e) == [("accepted", 11, "c", BUY, 101, 9, "fok"),
                        ("expired", 11, 9, "fok_not_filled")]  # fmt: skip
    e.limit(12, "c", BUY, 102, 9, "fok")  # 12 available up to 102
    assert [k[0] for k in kinds(e)] == ["accepted", "trade", "trade", "trade"]


def test_post_only_never_takes() -> None:
    e = book()
    e.limit(10, "c", BUY, 101, 1, post_only=True)
    assert kinds(e) == [("accepted", 10, "c", BUY, 101, 1, "post_only"),
                        ("expired", 10, 1, "post_only_would_take")]  # fmt: skip
    e.limit(11, "c", BUY, 100, 1, post_only=True)
    assert kinds(e)[-1] == ("booked", 11, BUY, 100, 1)


def test_market_order_takes_the_book_and_the_rest_expires() -> None:
    e = book()
    e.market(10, "c", BUY, 20)
    events = kinds(e)
    assert events[0] == ("accepted", 10, "c", BUY, None, 20, "market")
    assert sum(x[4] for x in events if x[0] == "trade") == 12
    assert events[-1] == ("expired", 10, 8, "no_liquidity")
    assert e.best_ask() is None


def test_self_trade_prevention_cancels_the_incoming_or_the_resting_order() -> None:
    e = book()
    e.limit(10, "a", BUY, 101, 6)  # #1 is a's own order at the front
    assert kinds(e) == [("accepted", 10, "a", BUY, 101, 6, "gtc"),
                        ("expired", 10, 6, "self_trade")]  # fmt: skip
    e = MatchingEngine("BTC/USDT", self_trade="cancel_resting")
    e.limit(1, "a", SELL, 101, 5)
    e.limit(2, "b", SELL, 101, 3)
    e.take_events()
    e.limit(10, "a", BUY, 101, 6)
    assert kinds(e) == [
        ("accepted", 10, "a", BUY, 101, 6, "gtc"),
        ("cancelled", 1, SELL, 101, 5, "self_trade"),
        ("trade", 2, 10, 101, 3, 0, 3, BUY),
        ("booked", 10, BUY, 101, 3),
    ]
    with pytest.raises(ValueError, match="self_trade 'none'"):
        MatchingEngine("X", self_trade="none")  # type: ignore[arg-type]


def test_cancel_and_amend_keep_or_lose_priority() -> None:
    e = book()
    assert e.cancel(2) is True
    assert kinds(e) == [("cancelled", 2, SELL, 101, 3, "client")]
    assert e.cancel(2) is False
    assert kinds(e) == []
    e.limit(5, "c", SELL, 101, 2)
    e.amend(1, qty=1)  # smaller: #1 stays ahead of #5
    assert e.l3()[1][:2] == [(101, 1, 1, "a"), (101, 5, 2, "c")]
    e.amend(1, qty=4)  # larger: behind #5
    assert e.l3()[1][:2] == [(101, 5, 2, "c"), (101, 1, 4, "a")]
    e.take_events()
    e.amend(3, price=98)  # a new price that crosses the bid of #4 trades at once
    assert kinds(e) == [("amended", 3, 98, 4, False), ("trade", 4, 3, 99, 2, 0, 2, SELL),
                        ("booked", 3, SELL, 98, 2)]  # fmt: skip
    assert e.amend(99, qty=1) is False
    assert e.amend(1, qty=0) is False


def test_stops_trigger_on_the_last_trade_price_in_order() -> None:
    e = book()
    e.stop(20, "c", BUY, 102, 2)  # stop-market: waits for a trade at or above 102
    e.stop(21, "c", SELL, 99, 1, limit_price=98)  # stop-limit
    assert kinds(e) == [("accepted", 20, "c", BUY, None, 2, "stop_market"),
                        ("accepted", 21, "c", SELL, 98, 1, "stop_limit")]  # fmt: skip
    assert set(e.waiting_stops()) == {20, 21}
    e.market(30, "d", BUY, 9)  # trades 101 x 8 then 102 x 1: triggers #20
    events = kinds(e)
    assert ("triggered", 20, 102) in events
    assert events[-1] == ("trade", 3, 20, 102, 2, 1, 0, BUY)  # #3 had 4: 1 then 2 taken
    e.market(31, "d", SELL, 2)  # trades at 99: triggers #21, which rests at 98
    assert kinds(e)[-2:] == [("triggered", 21, 99), ("booked", 21, SELL, 98, 1)]
    assert e.cancel(21) is True
    e.stop(22, "c", SELL, 50, 1)
    assert e.cancel(22) is True
    assert kinds(e)[-1] == ("cancelled", 22, SELL, None, 1, "client")
    assert e.waiting_stops() == {}


def test_a_stop_already_reached_triggers_at_once() -> None:
    e = book()
    e.market(9, "c", BUY, 1)  # last price 101
    e.take_events()
    e.stop(10, "d", BUY, 100, 1)
    assert [k[0] for k in kinds(e)] == ["accepted", "triggered", "trade"]


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda e: e.limit(1, "a", BUY, 100, 1), "order id 1 is already live"),
        (lambda e: e.limit(9, "a", 0, 100, 1), "side 0 is not 1 (buy) or -1 (sell)"),
        (lambda e: e.limit(9, "a", BUY, 100, 0), "quantity must be positive"),
        (lambda e: e.limit(9, "a", BUY, 0, 1), "price must be positive"),
        (lambda e: e.limit(9, "a", BUY, 100, 1, "day"),
         "time in force 'day' is not gtc, ioc or fok"),
        (lambda e: e.limit(9, "a", BUY, 100, 1, "ioc", True),
         "post-only orders rest: time in force must be gtc"),
        (lambda e: e.market(9, "a", BUY, -1), "quantity must be positive"),
        (lambda e: e.stop(9, "a", BUY, 0, 1), "stop price must be positive"),
    ],
)  # fmt: skip
def test_invalid_orders_are_rejected_with_a_reason_and_never_raise(call, reason) -> None:  # type: ignore[no-untyped-def]
    e = MatchingEngine("X")
    e.limit(1, "a", BUY, 100, 1)
    e.take_events()
    call(e)
    assert kinds(e) == [("rejected", 9 if "already" not in reason else 1, reason)]
    assert e.l2() == ([(100, 1)], [])


def test_l2_depth_and_l3() -> None:
    e = book()
    assert e.l2(1) == ([(99, 2)], [(101, 8)])
    assert e.l2() == ([(99, 2)], [(101, 8), (102, 4)])
    assert e.l3() == ([(99, 4, 2, "b")], [(101, 1, 5, "a"), (101, 2, 3, "b"), (102, 3, 4, "a")])
    assert e.order(2) == (SELL, 101, 3, "b")
    assert e.order(99) is None


def test_a_level_compacts_once_most_of_its_queue_is_cancelled() -> None:
    e = MatchingEngine("X")
    for oid in range(100):
        e.limit(oid, "a", BUY, 100, 1)
    for oid in range(90):
        e.cancel(oid)
    assert len(e._bids[100][1]) < 100  # dead entries were dropped
    assert e.l2() == ([(100, 10)], [])
    e.market(500, "b", SELL, 10)
    assert e.l2() == ([], [])


def test_a_stop_with_an_ioc_limit_expires_what_it_cannot_fill_within_the_limit() -> None:
    e = book()
    e.stop(20, "c", BUY, 101, 10, limit_price=101, tif="ioc")  # a capped stop-market
    e.market(30, "d", BUY, 1)  # trades at 101: triggers #20, which takes the 7 left at 101
    assert kinds(e)[1:] == [
        ("accepted", 30, "d", BUY, None, 1, "market"),
        ("trade", 1, 30, 101, 1, 4, 0, BUY),
        ("triggered", 20, 101),
        ("trade", 1, 20, 101, 4, 0, 6, BUY),
        ("trade", 2, 20, 101, 3, 0, 3, BUY),
        ("expired", 20, 3, "ioc_remainder"),
    ]
    assert e.l2() == ([(99, 2)], [(102, 4)])  # nothing of #20 rests
    e.stop(21, "c", BUY, 50, 1, limit_price=60, tif="day")
    assert kinds(e) == [("rejected", 21, "time in force 'day' is not gtc, ioc or fok")]
