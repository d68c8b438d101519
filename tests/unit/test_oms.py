"""The order manager: worked examples of every order's life, fills, balances and the log."""

import contextlib
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from cryptodesk.domain.orders import Fill, OrderRequest
from cryptodesk.trading.balances import Balances
from cryptodesk.trading.errors import OrderRejected
from cryptodesk.trading.instruments import Instrument
from cryptodesk.trading.oms import OrderManager
from cryptodesk.trading.order_log import MemoryOrderLog
from cryptodesk.trading.order_state import Order
from cryptodesk.trading.pretrade import PreTradeRisk, RiskLimits

D = Decimal
SYMBOL = "BTC/USDT"
BTC = Instrument(SYMBOL, "BTC", "USDT", tick_size=D("0.01"), lot_size=D("0.001"),
                 min_notional=D("10"), taker_fee=D("0.001"), maker_fee=D("0.0005"))  # fmt: skip
T30000 = 3_000_000  # 30000 in ticks of 0.01


def got(order: Order | None, names: str) -> tuple[Any, ...]:
    """The order's fields named in ``names`` (space-separated)."""
    assert order is not None
    return tuple(getattr(order, name) for name in names.split())


class Desk:
    """A manager over one market, accounts a, b and c funded with 100,000 USDT and 10 BTC."""

    def __init__(self, limits: RiskLimits | None = None, self_trade: Any = "cancel_incoming"):
        self.now = 1_000
        self.halted: set[str] = set()
        self.balances = Balances()
        halted, clock = self.halted.__contains__, lambda: self.now
        self.risk = PreTradeRisk(limits or RiskLimits(), self.balances, halted=halted, clock=clock)
        self.log = MemoryOrderLog()
        self.oms = OrderManager({SYMBOL: BTC}, self.risk, self.log, clock=lambda: self.now,
                                self_trade=self_trade)  # fmt: skip
        for account in ("a", "b", "c"):
            self.oms.deposit(account, "USDT", D(100_000))
            self.oms.deposit(account, "BTC", D(10))
        self.oms.take_updates()

    def submit(self, account: str, side: str, quantity: str, price: str | None = None,
               type: str = "limit", **kw: Any) -> Order:  # fmt: skip
        limit = None if price is None else D(price)
        kind: Any = (side, type)  # any text: a wrong side must come back rejected
        return self.oms.submit(OrderRequest(account, SYMBOL, *kind, D(quantity), price=limit, **kw))

    def free(self, account: str, asset: str) -> tuple[Decimal, Decimal]:
        return self.balances.available(account, asset), self.balances.reserved(account, asset)

    def types(self) -> list[str]:
        return [r["type"] for r in self.log.records()][6:]  # after the deposits


def test_a_resting_order_is_accepted_reserved_and_logged() -> None:
    desk = Desk()
    sell = desk.submit("b", "sell", "1", "30000", client_order_id="s1")
    assert got(sell, "order_id status filled created_ts") == ("O0000000001", "accepted", 0, 1000)
    assert desk.oms.book(SYMBOL).l3() == ([], [(T30000, 1, 1000, "b")])
    assert desk.free("b", "BTC") == (D(9), D(1))
    record = desk.log.records()[-1]
    assert record == {
        "seq": 7, "ts": 1000, "type": "submit", "order_id": "O0000000001", "account": "b",
        "symbol": SYMBOL, "side": "sell", "order_type": "limit", "quantity": "1",
        "price": "30000", "stop_price": None, "time_in_force": "gtc", "post_only": False,
        "reduce_only": False, "client_order_id": "s1", "protection_price": None,
        "reserve_asset": "BTC", "reserve_amount": "1", "fees": ["0.001", "0.0005"],
        "self_trade": "cancel_incoming",
    }  # fmt: skip
    [update] = desk.oms.take_updates()
    assert [update[k] for k in ("event", "order_id", "status", "price")] == [
        "order", "O0000000001", "accepted", "30000"]  # fmt: skip
    assert desk.oms.order("O0000000001") == sell
    assert desk.oms.orders("b", status="accepted") == [sell]
    assert desk.oms.orders("b", status="filled") == []


def test_the_command_is_logged_before_it_reaches_the_book() -> None:
    desk = Desk()
    seen: list[int] = []

    class Spy(MemoryOrderLog):
        def append(self, record: dict[str, Any]) -> None:
            seen.append(len(desk.oms.book(SYMBOL)))
            super().append(record)

    desk.oms.log = Spy()
    desk.submit("b", "sell", "1", "30000")
    desk.submit("b", "sell", "1", "30001")
    assert seen == [0, 1]  # each order was in the log before it rested
    assert len(desk.oms.book(SYMBOL)) == 2


def test_an_order_the_log_refused_leaves_nothing_behind() -> None:
    desk = Desk()

    class Full(MemoryOrderLog):
        def append(self, record: dict[str, Any]) -> None:
            raise OSError("disk full")

    desk.oms.log = Full()
    with pytest.raises(OSError, match="disk full"):
        desk.submit("a", "buy", "1", "29000")
    assert desk.free("a", "USDT") == (D(100_000), 0)
    assert desk.oms.orders("a") == []
    assert len(desk.oms.book(SYMBOL)) == 0


def test_a_crossing_order_fills_both_sides_with_their_fees() -> None:
    desk = Desk()
    desk.submit("b", "sell", "1", "30000")
    buy = desk.submit("a", "buy", "0.4", "30100")
    assert got(buy, "status filled average_price fees") == ("filled", D("0.4"), 30000, 12)
    taker = Fill("T0000000001", "O0000000002", "a", SYMBOL, "buy", D(30000), D("0.4"), D(12),
                 "USDT", "taker", 1000)  # fmt: skip
    assert desk.oms.fills("a") == [taker]
    assert desk.oms.fills("b") == [replace(taker, order_id="O0000000001", account="b",
                                           side="sell", fee=D(6), liquidity="maker")]  # fmt: skip
    maker = desk.oms.order("O0000000001")
    assert got(maker, "status filled remaining fees") == ("partially_filled", D("0.4"), D("0.6"), 6)
    # a paid 12,000 + 12 fee (its 30100 reservation is released), b got 12,000 - 6
    assert desk.free("a", "USDT") == (D(87_988), 0)
    assert desk.free("a", "BTC") == (D("10.4"), 0)
    assert desk.free("b", "USDT") == (D(111_994), 0)
    assert desk.free("b", "BTC") == (D(9), D("0.6"))
    [pa] = desk.oms.positions("a")
    [pb] = desk.oms.positions("b")
    assert (pa.quantity, pa.average_price, pa.fees) == (D("0.4"), D(30000), D(12))
    assert (pb.quantity, pb.average_price, pb.fees) == (D("-0.4"), D(30000), D(6))
    events = [(u["event"], u["order_id"], u.get("status")) for u in desk.oms.take_updates()]
    assert events == [
        ("order", "O0000000001", "accepted"), ("order", "O0000000002", "accepted"),
        ("fill", "O0000000001", None), ("order", "O0000000001", "partially_filled"),
        ("fill", "O0000000002", None), ("order", "O0000000002", "filled"),
    ]  # fmt: skip


def test_a_buy_filled_below_its_price_keeps_only_what_the_rest_needs() -> None:
    desk = Desk()
    desk.submit("b", "sell", "0.4", "30000")
    buy = desk.submit("a", "buy", "1", "30100")
    assert (buy.status, buy.filled) == ("partially_filled", D("0.4"))
    assert desk.balances.reservation(buy.order_id) == D("18078.06")  # 0.6 x 30100 x 1.001
    assert desk.free("a", "USDT") == (D(100_000) - D(12_012) - D("18078.06"), D("18078.06"))
    assert desk.oms.book(SYMBOL).l3() == ([(3_010_000, 2, 600, "a")], [])


def test_round_trip_positions_realize_the_difference() -> None:
    desk = Desk()
    desk.submit("b", "sell", "1", "30000")
    desk.submit("a", "buy", "1", "30000")
    desk.submit("c", "buy", "1", "31000")
    sold = desk.submit("a", "sell", "1", "31000")
    assert sold.status == "filled"
    [pa] = desk.oms.positions("a")
    # a took liquidity both times: 30 + 31 of taker fees
    assert (pa.quantity, pa.realized, pa.fees) == (0, D(1000), D(61))
    assert desk.free("a", "USDT") == (D(100_000) - D(30_030) + D(31_000) - D(31), 0)
    assert desk.free("a", "BTC") == (D(10), 0)
    assert desk.oms.positions("c")[0].quantity == 1
    assert desk.oms.positions("nobody") == []


def test_cancel_releases_and_a_second_cancel_changes_nothing() -> None:
    desk = Desk()
    buy = desk.submit("a", "buy", "1", "29000")
    assert desk.free("a", "USDT") == (D("70971"), D("29029"))
    cancelled = desk.oms.cancel("a", buy.order_id)
    assert (cancelled.status, cancelled.close_reason) == ("cancelled", "client")
    assert desk.free("a", "USDT") == (D(100_000), 0)
    assert desk.oms.book(SYMBOL).l3() == ([], [])
    assert desk.oms.cancel("a", buy.order_id) == cancelled
    assert desk.types() == ["submit", "cancel"]
    with pytest.raises(OrderRejected) as info:
        desk.oms.cancel("b", buy.order_id)  # not b's order
    assert info.value.rule == "unknown_order"
    with pytest.raises(OrderRejected):
        desk.oms.cancel("a", "O0000000099")


def test_orders_that_cannot_rest_expire_with_the_reason() -> None:
    desk = Desk()
    desk.submit("b", "sell", "0.5", "30000")
    ioc = desk.submit("a", "buy", "1", "30000", time_in_force="ioc")
    assert (ioc.status, ioc.filled, ioc.close_reason) == ("expired", D("0.5"), "ioc_remainder")
    desk.submit("b", "sell", "0.5", "30000")
    fok = desk.submit("a", "buy", "1", "30000", time_in_force="fok")
    assert (fok.status, fok.filled, fok.close_reason) == ("expired", 0, "fok_not_filled")
    post = desk.submit("a", "buy", "0.1", "30000", post_only=True)
    assert (post.status, post.close_reason) == ("expired", "post_only_would_take")
    market = desk.submit("a", "buy", "2", type="market")
    assert got(market, "status filled close_reason") == ("expired", D("0.5"), "ioc_remainder")
    assert desk.free("a", "USDT") == (D(100_000) - 2 * D(15_015), 0)  # nothing held after
    assert desk.oms.book(SYMBOL).l3() == ([], [])


def test_a_rejection_is_an_order_with_the_rule_and_changes_nothing() -> None:
    desk = Desk()
    off_grid = desk.submit("a", "buy", "1", "30000.001")
    assert got(off_grid, "order_id status reject_rule") == ("", "rejected", "tick_size")
    assert off_grid.reject_reason is not None
    assert "0.01" in off_grid.reject_reason
    poor = desk.submit("a", "buy", "4", "30000")
    assert (poor.status, poor.reject_rule) == ("rejected", "insufficient_balance")
    market = desk.submit("a", "buy", "1", type="market")
    assert market.reject_rule == "no_last_price"
    unknown = desk.oms.submit(OrderRequest("a", "DOGE/USDT", "buy", "limit", D(1), price=D(1)))
    assert unknown.reject_rule == "unknown_symbol"
    weird = desk.submit("a", "hold", "1", "30000")
    assert weird.reject_rule == "invalid_side"
    assert desk.types() == []
    assert desk.oms.orders("a") == []
    assert desk.free("a", "USDT") == (D(100_000), 0)
    assert [u["reject_rule"] for u in desk.oms.take_updates()] == [
        "tick_size", "insufficient_balance", "no_last_price", "unknown_symbol", "invalid_side"
    ]  # fmt: skip
    assert desk.submit("a", "buy", "1", "30000").order_id == "O0000000001"


def test_a_repeated_client_order_id_returns_the_first_order() -> None:
    desk = Desk()
    first = desk.submit("a", "buy", "1", "29000", client_order_id="k1")
    again = desk.submit("a", "buy", "2", "28000", client_order_id="k1")
    assert again == first
    assert desk.types() == ["submit"]
    other = desk.submit("b", "buy", "1", "29000", client_order_id="k1")  # another account
    assert other.order_id == "O0000000002"
    rejected = desk.submit("c", "buy", "1", "0.01", client_order_id="k2")
    assert rejected.reject_rule == "min_notional"
    retried = desk.submit("c", "buy", "1", "29000", client_order_id="k2")  # a fixed retry
    assert (retried.order_id, retried.status) == ("O0000000003", "accepted")


def test_amend_smaller_keeps_priority_and_shrinks_the_reservation() -> None:
    desk = Desk()
    first = desk.submit("a", "buy", "1", "29000")
    desk.submit("b", "buy", "1", "29000")
    amended = desk.oms.amend("a", first.order_id, quantity=D("0.5"))
    assert (amended.quantity, amended.price, amended.status) == (D("0.5"), D(29000), "accepted")
    assert desk.oms.book(SYMBOL).l3()[0] == [(2_900_000, 1, 500, "a"), (2_900_000, 2, 1000, "b")]
    assert desk.balances.reservation(first.order_id) == D("14514.5")  # 0.5 x 29000 x 1.001
    raised = desk.oms.amend("a", first.order_id, quantity=D(1))  # larger: back of the queue
    assert raised.quantity == 1
    assert desk.oms.book(SYMBOL).l3()[0] == [(2_900_000, 2, 1000, "b"), (2_900_000, 1, 1000, "a")]
    assert desk.types() == ["submit", "submit", "amend", "amend"]


def test_amend_to_a_crossing_price_trades_as_taker() -> None:
    desk = Desk()
    desk.submit("b", "sell", "0.5", "30000")
    buy = desk.submit("a", "buy", "1", "29000")
    moved = desk.oms.amend("a", buy.order_id, price=D(30000))
    assert (moved.status, moved.filled, moved.fees) == ("partially_filled", D("0.5"), D(15))
    assert desk.oms.fills("a")[0].liquidity == "taker"
    assert desk.balances.reservation(buy.order_id) == D("15015")  # 0.5 x 30000 x 1.001
    assert desk.oms.book(SYMBOL).l3() == ([(T30000, 2, 500, "a")], [])


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"quantity": D("0.5005")}, "lot_size"),
        ({"price": D("29000.005")}, "tick_size"),
        ({"quantity": D("0.4")}, "invalid_quantity"),  # not above the filled 0.5
        ({"quantity": D(4)}, "insufficient_balance"),
        ({}, "invalid_amend"),
    ],
)
def test_a_refused_amend_changes_nothing(change: dict[str, Decimal], rule: str) -> None:
    desk = Desk()
    desk.submit("b", "sell", "0.5", "29000")
    buy = desk.submit("a", "buy", "1", "29000")
    with pytest.raises(OrderRejected) as info:
        desk.oms.amend("a", buy.order_id, **change)
    assert info.value.rule == rule
    assert desk.oms.order(buy.order_id) == buy
    assert desk.types() == ["submit", "submit"]


def test_amend_refuses_closed_stop_and_post_only_crossing_orders() -> None:
    desk = Desk()
    desk.submit("b", "sell", "1", "30000")
    post = desk.submit("a", "buy", "1", "29000", post_only=True)
    stop = desk.submit("a", "buy", "1", "31000", type="stop_limit", stop_price=D(30500))
    rules = []
    for order_id, change in ((post.order_id, {"price": D(30000)}),
                             (stop.order_id, {"price": D(31001)})):  # fmt: skip
        with pytest.raises(OrderRejected) as info:
            desk.oms.amend("a", order_id, **change)
        rules.append(info.value.rule)
    desk.oms.cancel("a", post.order_id)
    with pytest.raises(OrderRejected) as info:
        desk.oms.amend("a", post.order_id, price=D(28000))
    assert [*rules, info.value.rule] == ["post_only", "not_amendable", "order_closed"]


def test_kill_cancels_open_orders_and_refuses_new_ones_until_revived() -> None:
    desk = Desk()
    desk.submit("a", "buy", "1", "29000")
    desk.submit("a", "sell", "1", "31000")
    kept = desk.submit("b", "buy", "1", "29000")
    cancelled = desk.oms.kill("a")
    assert [(o.status, o.close_reason) for o in cancelled] == [("cancelled", "kill_switch")] * 2
    assert desk.oms.orders("a", status="accepted") == []
    assert desk.oms.order(kept.order_id) == kept
    assert desk.free("a", "USDT") == (D(100_000), 0)
    assert desk.free("a", "BTC") == (D(10), 0)
    assert desk.submit("a", "buy", "1", "29000").reject_rule == "kill_switch"
    desk.oms.revive("a")
    assert desk.submit("a", "buy", "1", "29000").status == "accepted"
    assert len(desk.oms.kill()) == 2  # everyone
    assert desk.submit("b", "buy", "1", "29000").reject_rule == "kill_switch"
    assert desk.types() == ["submit"] * 3 + ["kill", "revive", "submit", "kill"]
    assert desk.log.records()[-1]["account"] is None


def test_a_halted_symbol_takes_only_reduce_only_orders() -> None:
    desk = Desk()
    desk.submit("b", "sell", "1", "30000")
    desk.submit("a", "buy", "1", "30000")  # a is long 1
    desk.submit("c", "buy", "1", "29900")
    desk.halted.add(SYMBOL)
    assert desk.submit("a", "buy", "1", "29000").reject_rule == "halted"
    assert desk.submit("a", "sell", "2", "29900", reduce_only=True).reject_rule == "halted"
    reduce = desk.submit("a", "sell", "0.5", "29900", reduce_only=True)
    assert (reduce.status, reduce.filled) == ("filled", D("0.5"))
    assert desk.oms.positions("a")[0].quantity == D("0.5")


def test_stop_orders_wait_then_trade_through_the_manager() -> None:
    desk = Desk(RiskLimits(price_band=D("0.05")))
    desk.submit("b", "sell", "1", "30000")
    desk.submit("a", "buy", "0.1", "30000")  # last price 30000
    stop = desk.submit("c", "buy", "0.5", type="stop_market", stop_price=D(30100))
    assert stop.status == "accepted"
    assert desk.balances.reservation(stop.order_id) == D("15818.3025")  # 0.5 x 31605 x 1.001
    stop_limit = desk.submit("c", "sell", "0.2", "29000", type="stop_limit", stop_price=D(29500))
    desk.submit("b", "sell", "0.3", "30100")
    desk.submit("a", "buy", "1.2", "30100")  # trades at 30000 then 30100: the stop triggers
    # nothing is left on the ask side: the stop-market's remainder expires, never rests
    triggered = desk.oms.order(stop.order_id)
    assert got(triggered, "status filled close_reason") == ("expired", 0, "protection_price")
    assert desk.balances.reservation(stop.order_id) == 0
    desk.submit("b", "sell", "0.5", "30000")
    again = desk.submit("c", "buy", "0.4", type="stop_market", stop_price=D(30000))
    assert (again.status, again.filled, again.average_price) == ("filled", D("0.4"), D(30000))
    desk.submit("a", "buy", "0.5", "29400")
    desk.submit("b", "sell", "0.1", "29400")  # last 29400 <= 29500: the sell stop-limit
    after = desk.oms.order(stop_limit.order_id)
    assert got(after, "status filled average_price") == ("filled", D("0.2"), D(29400))


def test_self_trade_prevention_expires_the_incoming_order() -> None:
    desk = Desk()
    desk.submit("a", "sell", "1", "30000")
    mine = desk.submit("a", "buy", "1", "30000")
    assert (mine.status, mine.close_reason) == ("expired", "self_trade")
    assert desk.free("a", "USDT") == (D(100_000), 0)
    assert desk.oms.fills("a") == []


def test_cancel_resting_prevention_is_recorded_so_a_replay_under_another_setting_agrees() -> None:
    desk = Desk(self_trade="cancel_resting")
    mine = desk.submit("a", "sell", "1", "30000")
    desk.submit("b", "sell", "1", "30010")
    taker = desk.submit("a", "buy", "1.5", "30010")  # cancels a's own ask, takes b's
    assert (taker.status, taker.filled, taker.average_price) == (
        "partially_filled", D(1), D(30010))  # fmt: skip
    gone = desk.oms.order(mine.order_id)
    assert gone is not None
    assert (gone.status, gone.close_reason) == ("cancelled", "self_trade")
    desk.oms.amend("a", taker.order_id, price=D("30005"))
    records = desk.log.records()
    assert [r["self_trade"] for r in records if r["type"] in ("submit", "amend")] == [
        "cancel_resting"] * 4  # fmt: skip

    def replay(log: list[dict[str, Any]], mode: Any) -> OrderManager:
        risk = lambda: PreTradeRisk(RiskLimits(), Balances(), halted=bool, clock=lambda: 0)  # noqa: E731
        return OrderManager.replay({SYMBOL: BTC}, risk, MemoryOrderLog(log), self_trade=mode)

    def state(oms: OrderManager) -> Any:
        return ([oms.orders(a) for a in "abc"], [oms.fills(a) for a in "abc"],
                oms.book(SYMBOL).l3())  # fmt: skip

    assert state(replay(records, "cancel_incoming")) == state(desk.oms)
    # A record from before the setting existed was decided under cancel_incoming.
    old = [{k: v for k, v in r.items() if k != "self_trade"} for r in records[:-1]]
    assert replay(old, "cancel_resting").order(mine.order_id).status == "accepted"  # type: ignore[union-attr]


def test_an_amend_that_reprices_or_grows_passes_pre_trade_risk_a_shrink_always_passes() -> None:
    desk = Desk(RiskLimits(price_band=D("0.05"), max_order_quantity=D("2")))
    desk.submit("b", "sell", "0.1", "30000")
    desk.submit("a", "buy", "0.1", "30000")  # a trade: the last price is 30000
    buy = desk.submit("a", "buy", "1", "29900")
    records = len(desk.log.records())

    def refused(**change: Decimal) -> str:
        with pytest.raises(OrderRejected) as info:
            desk.oms.amend("a", buy.order_id, **change)
        return info.value.rule

    assert refused(price=D("20000")) == "price_band"  # a fat finger, 33% from the last trade
    assert refused(quantity=D("3")) == "max_quantity"
    desk.halted.add(SYMBOL)
    assert refused(price=D("29950")) == "halted"
    assert got(desk.oms.amend("a", buy.order_id, quantity=D("0.5")), "quantity") == (D("0.5"),)
    desk.halted.clear()
    desk.oms.kill("b")
    assert got(desk.oms.amend("a", buy.order_id, price=D("29950")), "price") == (D("29950"),)
    desk.oms.kill("a")
    assert desk.oms.order(buy.order_id).status == "cancelled"  # type: ignore[union-attr]
    # Refused amends logged nothing; the shrink, the re-price and the kills did.
    assert [r["type"] for r in desk.log.records()[records:]] == ["amend", "kill", "amend", "kill"]


def test_every_update_is_the_order_or_fill_as_a_reader_sees_it_at_that_moment() -> None:
    """Orders are kept as mutable records and published without building a view: each
    published order must equal ``order_dict`` of the order read right after the command,
    and each fill ``fill_dict`` of the stored fill."""
    from cryptodesk.trading.order_state import fill_dict, order_dict

    desk = Desk()
    commands = [
        lambda: desk.submit("b", "sell", "0.3", "30000"),
        lambda: desk.submit("c", "sell", "0.5", "30000.5", client_order_id="c-1"),
        lambda: desk.submit("a", "buy", "0.2", "29999"),
        lambda: desk.submit("a", "buy", "0.6", "30001"),  # takes 0.3, rests 0.3
        lambda: desk.oms.amend("c", "O0000000002", price=D("30001"), quantity=D("0.4")),
        lambda: desk.submit("a", "buy", "0.5", type="market", time_in_force="ioc"),
        lambda: desk.submit("b", "sell", "0.1", "29990", stop_price=None, post_only=True),
        lambda: desk.oms.cancel("a", "O0000000003"),
        lambda: desk.submit(
            "c", "buy", "1", type="stop_limit", price="31000", stop_price=D("30500")
        ),
    ]
    seen = 0
    for command in commands:
        with contextlib.suppress(OrderRejected):  # a refused amend: nothing published
            command()
        updates = desk.oms.take_updates()
        last = {u["order_id"]: u for u in updates if u["event"] == "order"}
        for order_id, update in last.items():
            if order_id:  # a rejection has no id: its update is its returned order
                assert update == {"event": "order", **order_dict(desk.oms.order(order_id))}
        fills = {(f.trade_id, f.order_id): f for a in "abc" for f in desk.oms.fills(a)}
        for update in updates:
            if update["event"] == "fill":
                fill = fills[(update["trade_id"], update["order_id"])]
                assert update == {"event": "fill", **fill_dict(fill)}
                seen += 1
    assert seen >= 6  # the flow really traded (maker and taker sides)


def test_an_order_read_earlier_is_a_snapshot_that_later_changes_leave_alone() -> None:
    desk = Desk()
    resting = desk.submit("b", "sell", "1", "30000")
    assert resting.status == "accepted"
    desk.submit("a", "buy", "0.4", "30000")
    assert got(resting, "status filled fees average_price") == ("accepted", 0, 0, None)
    now = desk.oms.order(resting.order_id)
    assert got(now, "status filled fees") == ("partially_filled", D("0.4"), D(6))
    assert now is desk.oms.order(resting.order_id)  # unchanged since: the same view
    desk.oms.amend("b", resting.order_id, quantity=D("0.9"))
    assert now.quantity == 1
    assert got(desk.oms.order(resting.order_id), "quantity") == (D("0.9"),)
