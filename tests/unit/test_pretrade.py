"""Pre-trade risk: every rule with a worked example, and balance reservations."""

from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.orders import Fill, OrderRequest
from cryptodesk.trading.balances import Balances
from cryptodesk.trading.errors import OrderRejected
from cryptodesk.trading.instruments import Instrument
from cryptodesk.trading.pretrade import PreTradeRisk, RestingOrder, RiskLimits

D = Decimal
BTC = Instrument("BTC/USDT", "BTC", "USDT", tick_size=D("0.01"), lot_size=D("0.001"),
                 min_notional=D("10"))  # fmt: skip
BUY = OrderRequest("a", "BTC/USDT", "buy", "limit", D("0.5"), price=D("30000"))
SELL = OrderRequest("a", "BTC/USDT", "sell", "limit", D("1"), price=D("30000"))
MARKET_BUY = OrderRequest("a", "BTC/USDT", "buy", "market", D("0.1"))
NO_LIMITS = RiskLimits()
LAST = D(30000)
ZERO = D(0)


class Desk:
    """A risk engine over one funded account, with a clock and a halt switch to turn."""

    def __init__(self, limits: RiskLimits | dict[str, RiskLimits] = NO_LIMITS, **kw: object):
        self.now = 0
        self.halted: set[str] = set()
        self.balances = Balances()
        self.balances.deposit("a", "USDT", D(100_000))
        self.balances.deposit("a", "BTC", D(10))
        self.risk = PreTradeRisk(limits, self.balances, halted=self.halted.__contains__,
                                 clock=lambda: self.now, **kw)  # type: ignore[arg-type]  # fmt: skip
        self.ids = 0

    def check(self, request: OrderRequest, *, last: Decimal | None = LAST,
              position: Decimal = ZERO,
              open_orders: Sequence[RestingOrder] = ()) -> str:  # fmt: skip
        self.ids += 1
        order_id = f"o{self.ids}"
        self.risk.check(request, BTC, order_id=order_id, last_price=last, position=position,
                        open_orders=open_orders)  # fmt: skip
        return order_id

    def reject(self, request: OrderRequest, **kw: object) -> OrderRejected:
        with pytest.raises(OrderRejected) as info:
            self.check(request, **kw)  # type: ignore[arg-type]
        error = info.value
        assert error.field is not None
        assert error.field in error.message  # the message names the field
        return error


def test_limit_buy_reserves_notional_and_taker_fee() -> None:
    desk = Desk()
    order = desk.check(BUY)
    assert desk.balances.reservation(order) == D("15015.000")  # 0.5 x 30000 x 1.001
    assert desk.balances.reserved("a", "USDT") == D("15015")
    assert desk.balances.available("a", "USDT") == D("84985")
    sell = desk.check(SELL)
    assert desk.balances.reservation(sell) == D(1)
    assert (desk.balances.available("a", "BTC"), desk.balances.reserved("a", "BTC")) == (9, 1)
    assert desk.balances.release(order) == D("15015")
    assert desk.balances.available("a", "USDT") == D(100_000)
    assert desk.balances.reserved("a", "USDT") == 0


def test_market_buy_reserves_at_the_protection_price() -> None:
    banded = Desk(RiskLimits(price_band=D("0.05")))
    order = banded.check(MARKET_BUY)
    assert banded.balances.reservation(order) == D("3153.15")  # 0.1 x 31500 x 1.001
    assert banded.risk.protection_price("BTC/USDT", "buy", D(30000)) == D("31500")
    assert banded.risk.protection_price("BTC/USDT", "sell", D(30000)) == D("28500")
    slipped = Desk(RiskLimits(market_slippage=D("0.02")))
    assert slipped.balances.reservation(slipped.check(MARKET_BUY)) == D("3063.06")
    stop = OrderRequest("a", "BTC/USDT", "buy", "stop_market", D("0.1"), stop_price=D("31000"))
    assert slipped.balances.reservation(slipped.check(stop)) == D("3165.162")  # 31620 x 0.1 x 1.001


def test_kill_switch_global_and_per_account() -> None:
    desk = Desk()
    desk.risk.kill()
    error = desk.reject(BUY)
    assert (error.rule, error.field) == ("kill_switch", "account")
    assert error.message == "trading is stopped for all accounts"
    desk.risk.kill("a")
    desk.risk.revive()
    assert desk.reject(BUY).message == "trading is stopped for account a"
    desk.balances.deposit("b", "USDT", D(20_000))
    desk.check(replace(BUY, account="b"))
    desk.risk.revive("a")
    desk.check(BUY)
    assert desk.balances.reserved("a", "USDT") == D("15015")


def test_halted_symbol_takes_only_reducing_orders() -> None:
    desk = Desk()
    desk.halted.add("BTC/USDT")
    error = desk.reject(BUY)
    assert (error.rule, error.field) == ("halted", "symbol")
    assert "symbol BTC/USDT is halted" in error.message
    reduce = replace(SELL, quantity=D("0.5"), reduce_only=True)
    desk.check(reduce, position=D(1))
    assert desk.reject(reduce, position=D("0.4")).rule == "halted"  # would flip
    assert desk.reject(replace(SELL, reduce_only=True), position=D(-1)).rule == "halted"
    assert desk.reject(SELL, position=D(1)).rule == "halted"  # reduces, but not reduce_only


def test_rate_limit_token_bucket() -> None:
    desk = Desk(RiskLimits(submit_rate=D(2)))  # burst defaults to 2
    desk.check(BUY)
    desk.check(SELL)
    error = desk.reject(BUY)
    assert (error.rule, error.field) == ("rate_limit", "account")
    assert error.message == "account a may submit 2 orders per second"
    desk.now = 499  # 0.998 tokens
    assert desk.reject(BUY).rule == "rate_limit"
    desk.now = 500  # exactly one token
    desk.check(SELL)
    desk.balances.deposit("b", "BTC", D(5))
    desk.check(replace(SELL, account="b"))  # each account has its own bucket
    desk.now = 10_000  # refilled, but never above the burst
    desk.check(SELL)
    desk.check(SELL)
    assert desk.reject(SELL).rule == "rate_limit"


def test_rate_limit_counts_rejected_orders_but_not_kills() -> None:
    desk = Desk(RiskLimits(submit_rate=D("0.5"), submit_burst=2))
    assert desk.reject(replace(BUY, price=D("30000.001"))).rule == "tick_size"
    desk.risk.kill("a")
    assert desk.reject(BUY).rule == "kill_switch"
    desk.risk.revive("a")
    desk.check(BUY)
    assert desk.reject(BUY).rule == "rate_limit"
    desk.now = 2000
    desk.check(SELL)


def test_order_of_checks() -> None:
    desk = Desk(RiskLimits(submit_rate=D(1), max_order_quantity=D("0.1")))
    desk.halted.add("BTC/USDT")
    desk.risk.kill()
    assert desk.reject(BUY).rule == "kill_switch"
    desk.risk.revive()
    assert desk.reject(BUY).rule == "halted"  # no token spent
    desk.halted.clear()
    assert desk.reject(replace(BUY, price=D("1.001"))).rule == "tick_size"  # the token goes
    assert desk.reject(BUY).rule == "rate_limit"
    desk.now = 1000
    assert desk.reject(replace(BUY, reduce_only=True)).rule == "reduce_only"
    desk.now = 2000
    assert desk.reject(BUY, position=D(-1)).rule == "max_quantity"


def test_reduce_only() -> None:
    desk = Desk()
    reduce = replace(SELL, reduce_only=True)
    desk.check(reduce, position=D(1))
    error = desk.reject(reduce, position=D("0.999"))
    assert (error.rule, error.field) == ("reduce_only", "reduce_only")
    assert error.message == (
        "reduce_only sell of quantity 1 would increase or flip the position 0.999"
    )
    assert desk.reject(reduce).rule == "reduce_only"  # flat
    assert desk.reject(replace(BUY, reduce_only=True), position=D(1)).rule == "reduce_only"
    desk.check(replace(BUY, reduce_only=True), position=D("-0.5"))


def test_price_band_on_limit_orders() -> None:
    desk = Desk(RiskLimits(price_band=D("0.05")))
    desk.check(replace(BUY, price=D("31500")))
    desk.check(replace(BUY, price=D("28500"), quantity=D("0.1")))
    error = desk.reject(replace(BUY, price=D("31500.01")))
    assert (error.rule, error.field) == ("price_band", "price")
    assert error.message == (
        "price 31500.01 is outside 28500..31500 (5 % around the last price 30000)"
    )
    assert desk.reject(replace(SELL, price=D("28499.99"))).rule == "price_band"
    far_stop = OrderRequest("a", "BTC/USDT", "sell", "stop_limit", D("1"), price=D("20000"),
                            stop_price=D("20100"))  # fmt: skip
    desk.check(far_stop)  # a stop-limit's price is not banded
    desk.check(replace(BUY, price=D("50000")), last=None)  # no reference yet


def test_market_order_needs_a_last_price() -> None:
    error = Desk().reject(MARKET_BUY, last=None)
    assert (error.rule, error.field) == ("no_last_price", "type")
    assert error.message == "order type market needs a last trade price of BTC/USDT"


def test_market_min_notional_uses_the_last_price() -> None:
    desk = Desk()
    tiny = replace(MARKET_BUY, quantity=D("0.002"))
    desk.check(tiny, last=D(5000))  # notional 10
    error = desk.reject(tiny, last=D("4999.99"))
    assert (error.rule, error.field) == ("min_notional", "quantity")
    assert error.message == ("notional 9.99998 USDT (quantity x 4999.99) is below the minimum 10")


def test_max_quantity_and_notional() -> None:
    desk = Desk(RiskLimits(max_order_quantity=D("0.5"), max_order_notional=D(15_000)))
    desk.check(BUY)  # 0.5 x 30000 = 15000, both at the limit
    error = desk.reject(replace(BUY, quantity=D("0.501"), price=D(100)))
    assert (error.rule, error.field) == ("max_quantity", "quantity")
    assert error.message == "quantity 0.501 is above the maximum 0.5"
    error = desk.reject(replace(BUY, price=D("30000.01")))
    assert (error.rule, error.field) == ("max_notional", "quantity")
    assert error.message == (
        "notional 15000.005 USDT (quantity x price) is above the maximum 15000"
    )
    assert desk.reject(replace(MARKET_BUY, quantity=D("0.5")), last=D(30001)).rule == (
        "max_notional"
    )


def test_max_open_orders() -> None:
    desk = Desk(RiskLimits(max_open_orders=2))
    one = [RestingOrder("buy", D(1))]
    desk.check(SELL, open_orders=one)
    error = desk.reject(SELL, open_orders=one * 2)
    assert (error.rule, error.field) == ("max_open_orders", "symbol")
    assert error.message == "account a already has 2 open orders in symbol BTC/USDT (max 2)"


def test_max_position_counts_open_orders_on_the_same_side() -> None:
    desk = Desk(RiskLimits(max_position=D(1)))
    resting = [RestingOrder("buy", D("0.3")), RestingOrder("sell", D(5))]
    desk.check(replace(BUY, quantity=D("0.2")), position=D("0.5"), open_orders=resting)
    error = desk.reject(replace(BUY, quantity=D("0.201")), position=D("0.5"),
                        open_orders=resting)  # fmt: skip
    assert (error.rule, error.field) == ("max_position", "quantity")
    assert error.message == (
        "quantity 0.201 would take the position to 1.001 (with open buy orders), beyond 1"
    )
    desk.check(replace(SELL, quantity=D("1.5")), position=D("0.5"))  # to -1
    assert desk.reject(replace(SELL, quantity=D("1.6")), position=D("0.5")).rule == ("max_position")
    desk.check(replace(SELL, quantity=D("0.5")), position=D(2))  # over the limit, reducing


def test_limits_by_symbol_with_a_default() -> None:
    desk = Desk({"ETH/USDT": RiskLimits(max_order_quantity=D(100))},
                default=RiskLimits(max_order_quantity=D("0.1")))  # fmt: skip
    assert desk.risk.limits("ETH/USDT").max_order_quantity == D(100)
    assert desk.reject(BUY).rule == "max_quantity"


def test_insufficient_balance_reserves_nothing() -> None:
    desk = Desk()
    desk.balances.deposit("c", "USDT", D(1000))
    error = desk.reject(replace(BUY, account="c", quantity=D("0.1"), price=D(10_000)))
    assert (error.rule, error.field) == ("insufficient_balance", "quantity")
    assert error.message == "quantity needs 1001 USDT but c has 1000 available"
    assert desk.balances.reserved("c", "USDT") == 0
    assert desk.balances.available("c", "USDT") == D(1000)
    assert desk.reject(replace(SELL, account="c")).message == (
        "quantity needs 1 BTC but c has 0 available"
    )


def fill(order: str, side: str, price: str, qty: str, fee: str, fee_asset: str) -> Fill:
    return Fill("t1", order, "a", "BTC/USDT", side, D(price), D(qty), D(fee), fee_asset,  # type: ignore[arg-type]
                "taker", 0)  # fmt: skip


def test_fills_consume_reservations() -> None:
    desk = Desk()
    b = desk.balances
    order = desk.check(BUY)  # reserves 15015
    b.settle_fill(fill(order, "buy", "29990", "0.2", "5.998", "USDT"), base="BTC", quote="USDT")
    assert b.reservation(order) == D("9011.002")  # 15015 - 5998 - 5.998
    assert b.available("a", "BTC") == D("10.2")
    assert b.release(order) == D("9011.002")
    assert b.available("a", "USDT") == D("93996.002")
    assert b.reserved("a", "USDT") == 0
    sell = desk.check(SELL)
    b.settle_fill(fill(sell, "sell", "30000", "1", "30", "USDT"), base="BTC", quote="USDT")
    assert b.reservation(sell) == 0
    assert b.reserved("a", "BTC") == 0
    assert b.available("a", "BTC") == D("9.2")
    assert b.available("a", "USDT") == D("123966.002")


def test_fee_in_base_third_asset_and_shortfalls() -> None:
    desk = Desk()
    b = desk.balances
    order = desk.check(replace(BUY, quantity=D(1)))  # reserves 30030
    b.settle_fill(fill(order, "buy", "30000", "1", "0.001", "BTC"), base="BTC", quote="USDT")
    assert b.available("a", "BTC") == D("10.999")
    assert b.reservation(order) == D(30)
    with pytest.raises(DomainError, match=r"needs 0\.5 BNB more than a has"):
        b.settle_fill(fill(order, "buy", "1", "1", "0.5", "BNB"), base="BTC", quote="USDT")
    assert b.reservation(order) == D(30)  # nothing moved
    b.deposit("a", "BNB", D(1))
    b.settle_fill(fill(order, "buy", "100", "1", "0.5", "BNB"), base="BTC", quote="USDT")
    assert b.reservation(order) == 0  # 30 from the reservation, 70 from available
    assert b.available("a", "USDT") == D(100_000) - D(30_030) - D(70)
    assert b.available("a", "BNB") == D("0.5")
    sell = desk.check(replace(SELL, quantity=D(2)))
    b.settle_fill(fill(sell, "sell", "30000", "2", "0.002", "BTC"), base="BTC", quote="USDT")
    assert b.available("a", "BTC") == D("9.997")  # 11.999 - 2 - 0.002
    with pytest.raises(DomainError, match="reserved USDT, the fill pays BTC"):
        b.settle_fill(fill(order_id := desk.check(BUY), "sell", "1", "1", "0", ""),
                      base="BTC", quote="USDT")  # fmt: skip
    assert b.reservation(order_id) == D("15015")


def test_balance_misuse() -> None:
    b = Balances()
    b.deposit("a", "USDT", D(10))
    with pytest.raises(DomainError, match="amount must be a positive Decimal"):
        b.deposit("a", "USDT", D(0))
    b.reserve("o", "USDT", D(4), account="a")
    with pytest.raises(DomainError, match="order o already holds a reservation"):
        b.reserve("o", "USDT", D(1), account="a")
    with pytest.raises(DomainError, match="cannot release 5 of the 4 reserved for o"):
        b.release("o", D(5))
    assert b.release("o", D("1.5")) == D("1.5")
    assert (b.available("a", "USDT"), b.reserved("a", "USDT")) == (D("7.5"), D("2.5"))
    assert b.release("o") == D("2.5")
    assert b.release("o") == 0
    assert b.release("unknown") == 0


op = st.tuples(
    st.sampled_from(("order", "order", "fill", "fill", "cancel", "release_part")),
    st.integers(0, 1),  # account
    st.integers(1, 2000),  # quantity, lots of 0.001
    st.integers(1, 5000),  # price, 10 USDT steps
    st.integers(0, 100),  # percent of what is left / price improvement
)


@given(st.lists(op, max_size=60))
def test_reservations_never_negative_and_released_fully(
    ops: list[tuple[str, int, int, int, int]],
) -> None:
    b = Balances()
    for account in ("a", "b"):
        b.deposit(account, "USDT", D(1_000_000))
        b.deposit(account, "BTC", D(50))
    open_orders: dict[str, tuple[str, OrderRequest, Decimal]] = {}  # id -> (account, request, left)
    risk = PreTradeRisk(RiskLimits(), b, halted=lambda s: False, clock=lambda: 0)
    totals = {"USDT": D(2_000_000), "BTC": D(100)}
    keys = [(x, asset) for x in "ab" for asset in totals]
    rejections: set[str] = set()
    for n, (kind, who, lots, price, percent) in enumerate(ops):
        account = "ab"[who]
        if kind == "order":
            side = "buy" if lots % 2 else "sell"
            request = OrderRequest(account, "BTC/USDT", side, "limit", D(lots) / 1000,
                                   price=D(price * 10))  # fmt: skip
            try:
                risk.check(request, BTC, order_id=f"o{n}", last_price=None, position=D(0),
                           open_orders=())  # fmt: skip
            except OrderRejected as error:
                rejections.add(error.rule)
                continue
            open_orders[f"o{n}"] = (account, request, request.quantity)
        elif open_orders:
            order_id = sorted(open_orders)[lots % len(open_orders)]
            account, request, left = open_orders[order_id]
            if kind == "fill":
                qty = min(left, max(D("0.001"), (left * percent / 100).quantize(D("0.001"))))
                assert request.price is not None
                at = max(D(1), request.price - (percent if request.side == "buy" else -percent))
                fee = (at * qty * D("0.001")).quantize(D("0.00000001"))
                trade = Fill(f"t{n}", order_id, account, "BTC/USDT", request.side, at, qty, fee,
                             "USDT", "taker", n)  # fmt: skip
                b.settle_fill(trade, base="BTC", quote="USDT")
                sign = 1 if request.side == "buy" else -1  # the counterparty is outside
                totals["USDT"] -= sign * at * qty + fee
                totals["BTC"] += sign * qty
                open_orders[order_id] = (account, request, left - qty)
            else:  # cancelled, or amended down: the reservation shrinks in step
                share = 100 if kind == "cancel" else percent
                b.release(order_id, b.reservation(order_id) * share / 100)
                open_orders[order_id] = (account, request, left * (100 - share) / 100)
            if open_orders[order_id][2] == 0:  # filled or cancelled: nothing stays held
                b.release(order_id)
                assert b.reservation(order_id) == 0
                del open_orders[order_id]
        assert all(b.available(*key) >= 0 and b.reserved(*key) >= 0 for key in keys)
        held = dict.fromkeys(keys, D(0))
        for order_id, (x, request, _) in open_orders.items():
            held[(x, "USDT" if request.side == "buy" else "BTC")] += b.reservation(order_id)
        assert held == {key: b.reserved(*key) for key in keys}
        for asset, total in totals.items():
            assert sum(b.available(x, asset) + b.reserved(x, asset) for x in "ab") == total
    assert rejections <= {"insufficient_balance", "min_notional"}
    for order_id in list(open_orders):
        b.release(order_id)
    assert all(b.reserved(*key) == 0 for key in keys)
