"""Paper orders (``paper:EXCHANGE``) through the order manager: the same risk, the
log carries what they took, and a replay without any book rebuilds them exactly."""

from decimal import Decimal
from typing import Any

import pytest

from cryptodesk.domain.market import OrderBook
from cryptodesk.domain.orders import OrderRequest
from cryptodesk.trading.balances import Balances
from cryptodesk.trading.errors import OrderRejected
from cryptodesk.trading.instruments import Fees, Instrument
from cryptodesk.trading.oms import OrderManager
from cryptodesk.trading.order_log import MemoryOrderLog
from cryptodesk.trading.order_state import Order, order_dict
from cryptodesk.trading.pretrade import PreTradeRisk, RiskLimits

D = Decimal
SYMBOL = "BTC/USDT"
PAPER = "paper:binance"
BTC = Instrument(SYMBOL, "BTC", "USDT", tick_size=D("0.01"), lot_size=D("0.001"),
                 min_notional=D("10"), taker_fee=D("0.001"), maker_fee=D("0.0005"))  # fmt: skip
ASKS = ((100.0, 0.5), (100.5, 1.0), (101.0, 2.0))
BIDS = ((99.5, 1.0), (99.0, 2.0))


def book(ts: int, *, asks: Any = ASKS, bids: Any = BIDS, exchange: str = "binance") -> OrderBook:
    return OrderBook(exchange, SYMBOL, ts, bids, asks, ts)


class Desk:
    """A manager with the internal venue and ``paper:binance``; a and b hold 100,000 USDT
    and 10 BTC each; the binance book of ``ASKS``/``BIDS`` arrived at t=1000."""

    def __init__(self, limits: RiskLimits | None = None, fees: Fees | None = None) -> None:
        self.now = 1_000
        self.limits = limits or RiskLimits()
        self.fees = {} if fees is None else {"binance": fees}
        self.log = MemoryOrderLog()
        self.oms = self._manager(self.log, replay=False)
        for account in ("a", "b"):
            self.oms.deposit(account, "USDT", D(100_000))
            self.oms.deposit(account, "BTC", D(10))
        assert self.oms.on_book(book(1_000)) == 0
        self.oms.take_updates()

    def _manager(self, log: MemoryOrderLog, *, replay: bool) -> OrderManager:
        def risk() -> PreTradeRisk:
            return PreTradeRisk(self.limits, Balances(), halted=lambda _: False,
                                clock=lambda: self.now)  # fmt: skip

        if replay:
            return OrderManager.replay({SYMBOL: BTC}, risk, log, clock=lambda: self.now,
                                       paper=["binance"], paper_max_age_ms=5_000,
                                       venue_fees=self.fees)  # fmt: skip
        return OrderManager({SYMBOL: BTC}, risk(), log, clock=lambda: self.now,
                            paper=["binance"], paper_max_age_ms=5_000,
                            venue_fees=self.fees)  # fmt: skip

    def submit(self, account: str, side: Any, quantity: str, price: str | None = None,
               venue: str = PAPER, **kw: Any) -> Order:  # fmt: skip
        kind: Any = "market" if price is None else "limit"
        limit = None if price is None else D(price)
        return self.oms.submit(OrderRequest(account, SYMBOL, side, kind, D(quantity),
                                            price=limit, venue=venue, **kw))  # fmt: skip

    def free(self, account: str, asset: str) -> tuple[Decimal, Decimal]:
        balances = self.oms.risk.balances
        return balances.available(account, asset), balances.reserved(account, asset)

    def state(self, manager: OrderManager) -> Any:
        """Everything a replay must reproduce."""
        balances = manager.risk.balances
        return (
            [order_dict(o) for a in ("a", "b") for o in manager.orders(a)],
            [f for a in ("a", "b") for f in manager.fills(a)],
            [(p.account, p.symbol, p.quantity, p.cost, p.realized, p.fees)
             for a in ("a", "b") for p in manager.positions(a)],
            [(balances.available(a, x), balances.reserved(a, x))
             for a in ("a", "b") for x in ("USDT", "BTC")],
        )  # fmt: skip

    def replayed(self) -> OrderManager:
        return self._manager(MemoryOrderLog(self.log.records()), replay=True)


def test_a_market_buy_walks_the_book_up_to_its_protection_price_and_logs_the_takes() -> None:
    desk = Desk()
    order = desk.submit("a", "buy", "1.2")
    assert (order.order_id, order.venue, order.status, order.filled) == (
        "O0000000001", PAPER, "filled", D("1.2"))  # fmt: skip
    assert order.average_price is not None
    assert round(order.average_price, 9) == D("100.291666667")  # 120.35 / 1.2
    assert order.fees == D("0.12035")  # 0.1 % of 50 + 70.35
    fills = desk.oms.fills("a")
    assert [(f.trade_id, f.price, f.quantity, f.fee, f.liquidity, f.venue) for f in fills] == [
        ("T0000000001", D("100.0"), D("0.5"), D("0.0500"), "taker", PAPER),
        ("T0000000002", D("100.5"), D("0.7"), D("0.07035"), "taker", PAPER),
    ]
    assert desk.free("a", "USDT") == (D("99879.52965"), D(0))  # the 126.126 held is released
    assert desk.free("a", "BTC") == (D("11.2"), D(0))
    record = desk.log.records()[-1]
    assert {
        k: record[k]
        for k in ("type", "venue", "takes", "early_close", "protection_price", "reserve_amount")
    } == {
        "type": "submit",
        "venue": PAPER,
        "takes": [["100.0", "0.5"], ["100.5", "0.7"]],
        "early_close": None,
        "protection_price": "105.000",
        "reserve_amount": "126.1260000",
    }
    # The book copy lost what was taken: the next buyer starts at 100.5 with 0.3 left.
    assert desk.oms.paper[PAPER].book(SYMBOL) == (
        [(D("99.5"), D("1.0")), (D("99.0"), D("2.0"))],
        [(D("100.5"), D("0.3")), (D("101.0"), D("2.0"))],
    )
    updates = desk.oms.take_updates()
    assert [(u["event"], u.get("status"), u["venue"]) for u in updates] == [
        ("order", "accepted", PAPER), ("fill", None, PAPER), ("order", "partially_filled", PAPER),
        ("fill", None, PAPER), ("order", "filled", PAPER),
    ]  # fmt: skip


def test_a_market_order_stops_at_the_protection_price() -> None:
    desk = Desk(RiskLimits(market_slippage=D("0.005")))  # protection 100.5 on a sell: 99.0 is out
    order = desk.submit("b", "sell", "2")
    assert (order.status, order.filled, order.close_reason) == (
        "expired",
        D("1.0"),
        "ioc_remainder",
    )
    assert [(f.price, f.quantity) for f in desk.oms.fills("b")] == [(D("99.5"), D("1.0"))]


def test_a_resting_order_fills_as_maker_on_a_later_book_through_a_logged_record() -> None:
    desk = Desk()
    order = desk.submit("a", "buy", "1", "99.8", client_order_id="c1")
    assert (order.status, desk.free("a", "USDT")) == ("accepted", (D("99900.1002"), D("99.8998")))
    desk.now = 2_000
    assert desk.oms.on_book(book(1_500, asks=((100.0, 1.0),))) == 0  # not crossed
    assert desk.oms.on_book(book(1_900, asks=((99.7, 3.0),))) == 1
    assert desk.log.records()[-1] == {
        "seq": 6, "ts": 2_000, "type": "paper_fills", "venue": PAPER,
        "fills": [["O0000000001", "99.8"]],
    }  # fmt: skip
    filled = desk.oms.order("O0000000001")
    assert filled is not None
    assert (filled.status, filled.average_price, filled.fees) == ("filled", D("99.8"), D("0.0499"))
    assert desk.free("a", "USDT") == (D("100000") - D("99.8") - D("0.0499"), D(0))
    # An old book, another exchange's book, a repeated book: nothing more.
    assert desk.oms.on_book(book(1_800, asks=((90.0, 3.0),), bids=((89.0, 1.0),))) == 0
    assert desk.oms.on_book(book(2_000, asks=((90.0, 3.0),), bids=((89.0, 1.0),),
                                 exchange="kraken")) == 0  # fmt: skip
    assert len(desk.log) == 6
    # The same client order id returns the first order, on any venue.
    assert desk.submit("a", "buy", "1", "99.8", client_order_id="c1") == filled
    assert desk.submit("a", "buy", "1", "99.8", client_order_id="c1", venue="internal") == filled


def test_replaying_the_log_without_any_book_rebuilds_every_paper_order_fill_and_balance() -> None:
    desk = Desk()
    desk.submit("a", "buy", "1.2")
    desk.submit("a", "buy", "1", "99.8")
    desk.submit("b", "sell", "0.5", "101.5")
    desk.submit("b", "sell", "0.3", "99.5", time_in_force="fok")
    desk.submit("a", "buy", "0.1", "100.6", post_only=True)  # would take: expires
    desk.now = 2_000
    assert desk.oms.on_book(book(2_000, asks=((99.0, 5.0),), bids=((98.0, 5.0),))) == 1
    assert desk.oms.on_book(book(2_001, asks=((103.0, 5.0),), bids=((102.0, 5.0),))) == 1
    desk.submit("b", "sell", "0.2", "103", venue="internal")
    desk.oms.cancel("b", "O0000000006")
    replayed = desk.replayed()
    assert replayed.paper[PAPER].book(SYMBOL) is None  # books are not logged
    assert desk.state(replayed) == desk.state(desk.oms)
    statuses = [(o.order_id, o.venue, o.status, o.close_reason) for o in replayed.orders("a")]
    assert statuses == [
        ("O0000000001", PAPER, "filled", None),
        ("O0000000002", PAPER, "filled", None),
        ("O0000000005", PAPER, "expired", "post_only_would_take"),
    ]
    assert [(o.order_id, o.status, o.close_reason) for o in replayed.orders("b")] == [
        ("O0000000003", "filled", None), ("O0000000004", "filled", None),
        ("O0000000006", "cancelled", "client"),
    ]  # fmt: skip


def test_paper_orders_pass_pre_trade_risk_and_name_the_rule() -> None:
    desk = Desk(RiskLimits(max_order_quantity=D(2), max_open_orders=1, price_band=D("0.05")))
    rules = {
        "quantity": desk.submit("a", "buy", "3"),
        "band": desk.submit("a", "buy", "1", "90"),  # 5 % around the best ask 100
        "venue": desk.submit("a", "buy", "1", venue="paper:kraken"),
        "type": desk.oms.submit(
            OrderRequest("a", SYMBOL, "buy", "stop_market", D(1), stop_price=D(120), venue=PAPER)
        ),
    }
    assert {k: o.reject_rule for k, o in rules.items()} == {
        "quantity": "max_quantity", "band": "price_band", "venue": "unknown_venue",
        "type": "order_type",
    }  # fmt: skip
    assert desk.submit("a", "buy", "1", "99.9").status == "accepted"
    assert desk.submit("a", "buy", "1", "99.9").reject_rule == "max_open_orders"
    # Open orders count across venues: the internal venue sees the paper order too.
    assert desk.submit("a", "buy", "1", "99.9", venue="internal").reject_rule == "max_open_orders"
    desk.now = 10_000  # the book is 9 s old: too old to take from
    assert desk.submit("b", "sell", "1").reject_rule == "no_book"
    desk.oms.kill("a")
    assert desk.oms.orders("a", status="cancelled")[0].close_reason == "kill_switch"
    assert desk.submit("a", "buy", "1", "99.9").reject_rule == "kill_switch"
    assert desk.free("a", "USDT") == (D(100_000), D(0))
    assert len(desk.log) == 6  # 4 deposits, one order, the kill: no rejection was logged


def test_paper_orders_cancel_but_do_not_amend() -> None:
    desk = Desk()
    order = desk.submit("a", "buy", "1", "99")
    with pytest.raises(OrderRejected, match=r"^not_amendable: "):
        desk.oms.amend("a", order.order_id, price=D("98"))
    with pytest.raises(OrderRejected, match=r"^unknown_order: "):
        desk.oms.cancel("b", order.order_id)
    cancelled = desk.oms.cancel("a", order.order_id)
    assert (cancelled.status, cancelled.close_reason) == ("cancelled", "client")
    assert desk.log.records()[-1]["venue"] == PAPER
    assert desk.oms.cancel("a", order.order_id) == cancelled  # final: unchanged, not logged
    assert desk.free("a", "USDT") == (D(100_000), D(0))


def test_positions_are_one_per_account_and_symbol_across_venues() -> None:
    desk = Desk()
    desk.submit("b", "sell", "1", "100", venue="internal")
    desk.submit("a", "buy", "1", "100", venue="internal")
    desk.submit("a", "buy", "0.5")  # paper: 0.5 at 100.0
    (position,) = desk.oms.positions("a")
    assert (position.quantity, position.cost) == (D("1.5"), D("150.00"))
    assert desk.oms.position_of("a", SYMBOL) == D("1.5")
    assert [f.venue for f in desk.oms.fills("a")] == ["internal", PAPER]


def test_a_best_market_order_goes_to_the_venue_with_the_best_net_price() -> None:
    desk = Desk()
    desk.submit("b", "sell", "2", "100.2", venue="internal")
    desk.submit("a", "buy", "0.1", "100.2", venue="internal")  # a last price: 100.2
    small = desk.submit("a", "buy", "0.5", venue="best")  # paper: all at 100.0
    assert (small.venue, small.status, small.average_price) == (PAPER, "filled", D("100.0"))
    assert desk.log.records()[-1]["venue"] == PAPER
    # 0.3 left at 100.5 on paper, then 101.0: the internal 100.2 is better for 1.
    large = desk.submit("a", "buy", "1", venue="best")
    assert (large.venue, large.status, large.average_price) == ("internal", "filled", D("100.2"))
    assert desk.submit("a", "buy", "1", "100", venue="best").reject_rule == "invalid_venue"
    assert desk.submit("a", "buy", "50", venue="best").reject_rule == "no_liquidity"
    desk.now = 10_000  # the paper book is stale: only the internal book is a candidate
    assert desk.submit("a", "buy", "0.5", venue="best").venue == "internal"
    assert desk.state(desk.replayed()) == desk.state(desk.oms)


def test_a_paper_venue_charges_its_exchanges_fees_and_an_order_keeps_the_rates_it_got() -> None:
    desk = Desk(fees=Fees(D("0.002"), D("-0.0001")))  # binance: 0.2 % taker, a maker rebate
    taken = desk.submit("a", "buy", "0.5")  # all at 100.0
    assert (taken.status, taken.fees) == ("filled", D("0.1000"))  # 0.2 % of 50
    assert desk.log.records()[-1]["fees"] == ["0.002", "-0.0001"]
    resting = desk.submit("a", "buy", "1", "99.8")
    # Held at the larger of the two rates: 99.8 x 1.002.
    assert desk.free("a", "USDT")[1] == D("99.9996")
    desk.now = 2_000
    assert desk.oms.on_book(book(1_900, asks=((99.7, 3.0),))) == 1
    filled = desk.oms.order(resting.order_id)
    assert filled is not None
    assert (filled.status, filled.fees) == ("filled", D("-0.00998"))  # the rebate is paid
    assert desk.free("a", "USDT") == (D(100_000) - D("50.1") - D("99.8") + D("0.00998"), D(0))
    (position,) = desk.oms.positions("a")
    assert position.fees == D("0.1000") - D("0.00998")
    # The internal venue still charges the instrument's rates.
    desk.submit("b", "sell", "1", "100", venue="internal")
    internal = desk.submit("a", "buy", "1", "100", venue="internal")
    assert internal.fees == D("0.100")  # 0.1 % taker
    # Replayed under other rates, every order keeps the rates it was placed at; a new
    # paper order pays the new ones.
    desk.fees = {"binance": Fees(D("0.005"), D("0.005"))}
    replayed = desk.replayed()
    assert desk.state(replayed) == desk.state(desk.oms)
    desk.oms = replayed
    desk.oms.on_book(book(2_000, asks=((100.0, 1.0),)))
    assert desk.submit("a", "buy", "0.1").fees == D("0.05000")  # 0.5 % of 10.0


def test_a_record_from_before_fees_were_recorded_replays_at_the_instruments_rates() -> None:
    desk = Desk()
    desk.submit("a", "buy", "1.2")
    desk.submit("a", "buy", "1", "99.8")
    desk.now = 2_000
    desk.oms.on_book(book(1_900, asks=((99.7, 3.0),)))
    old = [{k: v for k, v in r.items() if k != "fees"} for r in desk.log.records()]
    assert sum("fees" in r for r in desk.log.records()) == 2
    desk.fees = {"binance": Fees(D("0.01"), D("0.01"))}
    desk.log = MemoryOrderLog(old)
    assert desk.state(desk.replayed()) == desk.state(desk.oms)


def test_best_routing_compares_prices_net_of_each_venues_own_taker_fee() -> None:
    # binance's 100.0 at 0.5 % costs 100.5 a unit; the internal 100.2 at 0.1 % 100.3002.
    desk = Desk(fees=Fees(D("0.005"), D("0.001")))
    desk.submit("b", "sell", "2", "100.2", venue="internal")
    desk.submit("a", "buy", "0.1", "100.2", venue="internal")
    order = desk.submit("a", "buy", "0.5", venue="best")
    assert (order.venue, order.average_price, order.fees) == ("internal", D("100.2"), D("0.05010"))
    # Selling, binance's bid 99.5 nets 99.0025; the internal book has no bid: binance.
    sold = desk.submit("b", "sell", "0.5", venue="best")
    assert (sold.venue, sold.fees) == (PAPER, D("0.248750"))  # 0.5 % of 49.75
    # At the same rates binance's better price wins again.
    same = Desk(fees=Fees(D("0.001"), D("0.001")))
    same.submit("b", "sell", "2", "100.2", venue="internal")
    same.submit("a", "buy", "0.1", "100.2", venue="internal")
    assert same.submit("a", "buy", "0.5", venue="best").venue == PAPER


def test_order_and_fill_dicts_carry_every_field_as_json_values() -> None:
    from dataclasses import fields

    from cryptodesk.domain.orders import Fill
    from cryptodesk.trading.order_state import fill_dict

    desk = Desk()
    order = desk.submit("a", "buy", "1.2")
    (fill, _) = desk.oms.fills("a")
    assert list(order_dict(order)) == [f.name for f in fields(Order)]
    assert list(fill_dict(fill)) == [f.name for f in fields(Fill)]
    assert order_dict(order)["average_price"] == str(order.average_price)
    assert (order_dict(order)["price"], order_dict(order)["quantity"]) == (None, "1.2")
    assert fill_dict(fill)["fee"] == "0.05000"  # 0.1 % of 50.0, exact


def test_paper_updates_are_the_orders_and_fills_as_read_right_after_each_command() -> None:
    from cryptodesk.trading.order_state import fill_dict

    desk = Desk()
    commands: list[Any] = [
        lambda: desk.submit("a", "buy", "0.7"),  # takes 0.5 @ 100.0 and 0.2 @ 100.5
        lambda: desk.submit("b", "sell", "0.3", "99.4", client_order_id="s1"),  # takes at 99.5
        lambda: desk.submit("a", "buy", "1", "99.9"),  # rests
        lambda: desk.submit("b", "sell", "0.5", "102"),  # rests
        lambda: desk.oms.on_book(book(2_000, asks=((99.8, 3.0),))),  # fills a's 99.9 buy
        lambda: desk.oms.cancel("b", desk.oms.open_orders("b")[0].order_id),
        lambda: desk.submit("a", "buy", "0.2", "99.9", post_only=True),  # would take: expires
    ]
    fills = 0
    for command in commands:
        command()
        updates = desk.oms.take_updates()
        assert updates
        last = {u["order_id"]: u for u in updates if u["event"] == "order"}
        for order_id, update in last.items():
            assert update == {"event": "order", **order_dict(desk.oms.order(order_id))}  # type: ignore[arg-type]
        known = {(f.trade_id, f.order_id): f for a in "ab" for f in desk.oms.fills(a)}
        for update in (u for u in updates if u["event"] == "fill"):
            assert update == {
                "event": "fill",
                **fill_dict(known[update["trade_id"], update["order_id"]]),
            }
            fills += 1
    assert fills == 4
    statuses = [o.status for a in "ab" for o in desk.oms.orders(a)]
    assert sorted(statuses) == ["cancelled", "expired", "filled", "filled", "filled"]
