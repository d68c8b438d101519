"""Random order flows through the order manager: invariants after every step, and a replay
of the log (through JSON) that rebuilds exactly the same books, orders, fills, positions
and balances."""

import json
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryptodesk.domain.orders import FINAL_STATUSES, OrderRequest
from cryptodesk.trading.balances import Balances
from cryptodesk.trading.errors import OrderRejected
from cryptodesk.trading.instruments import Instrument
from cryptodesk.trading.matching import SelfTrade
from cryptodesk.trading.oms import OrderManager
from cryptodesk.trading.order_log import MemoryOrderLog
from cryptodesk.trading.order_state import Order, order_dict
from cryptodesk.trading.pretrade import PreTradeRisk, RiskLimits

D = Decimal
ACCOUNTS = ("a", "b", "c")
INSTRUMENTS = {
    "BTC/USDT": Instrument("BTC/USDT", "BTC", "USDT", tick_size=D("0.01"), lot_size=D("0.001"),
                           taker_fee=D("0.001"), maker_fee=D("0.0005")),
    # a maker rebate: a negative fee
    "ETH/USDT": Instrument("ETH/USDT", "ETH", "USDT", tick_size=D("0.01"), lot_size=D("0.01"),
                           min_notional=D(1), taker_fee=D("0.002"), maker_fee=D("-0.0001")),
}  # fmt: skip
DEPOSITS = {"USDT": D(2_000), "BTC": D(5), "ETH": D(20)}
MODES: tuple[SelfTrade, SelfTrade] = ("cancel_incoming", "cancel_resting")
LIMITS = RiskLimits(max_open_orders=8)
KINDS = ("limit", "limit", "limit", "ioc", "fok", "post_only", "market", "stop_limit",
         "stop_market", "reduce_only")  # fmt: skip


def new_risk() -> PreTradeRisk:
    return PreTradeRisk(LIMITS, Balances(), halted=lambda symbol: False, clock=lambda: 0)


def request(op: tuple[Any, ...]) -> OrderRequest:
    """``reach`` ticks through 100.00 (negative: that far behind it); a stop ``offset``
    ticks beyond the limit price."""
    _, account, symbol, side, kind, reach, lots, offset, client = op
    instrument = INSTRUMENTS[symbol]
    sign = 1 if side == "buy" else -1
    price, quantity = instrument.price(10_000 + sign * reach), instrument.quantity(lots)
    stop = instrument.price(10_000 + sign * (reach + offset))
    client_id = None if client is None else f"k{client}"
    common: dict[str, Any] = {"client_order_id": client_id}
    if kind in ("limit", "post_only", "reduce_only", "ioc", "fok"):
        tif = kind if kind in ("ioc", "fok") else "gtc"
        return OrderRequest(account, symbol, side, "limit", quantity, price=price,
                            time_in_force=tif, post_only=kind == "post_only",
                            reduce_only=kind == "reduce_only", **common)  # fmt: skip
    if kind == "market":
        return OrderRequest(account, symbol, side, "market", quantity, **common)
    if kind == "stop_limit":
        return OrderRequest(account, symbol, side, "stop_limit", quantity, price=price,
                            stop_price=stop, **common)  # fmt: skip
    return OrderRequest(account, symbol, side, "stop_market", quantity, stop_price=stop, **common)


accounts = st.sampled_from(ACCOUNTS)
submits = st.tuples(st.just("submit"), accounts, st.sampled_from(sorted(INSTRUMENTS)),
                    st.sampled_from(["buy", "sell"]), st.sampled_from(KINDS),
                    st.integers(-5, 5), st.integers(1, 400), st.integers(0, 6),
                    st.none() | st.integers(0, 3))  # fmt: skip
cancels = st.tuples(st.just("cancel"), accounts, st.integers(0, 40))
amends = st.tuples(
    st.just("amend"), accounts, st.integers(0, 40), st.integers(-8, 8), st.integers(0, 400)
)
# "panic": everyone is stopped (every open order cancelled), then allowed back at once
controls = st.tuples(st.sampled_from(["kill", "revive", "panic"]), st.just("a"))
# Weighted: mostly orders, some cancels and amends, a rare kill switch.
WEIGHTS = [submits] * 14 + [cancels] * 3 + [amends] * 3 + [controls]
steps = st.sampled_from(range(len(WEIGHTS))).flatmap(WEIGHTS.__getitem__)
flows = st.lists(steps, min_size=15, max_size=80)


class Flow:
    """A funded manager and the ops that drive it."""

    def __init__(self, self_trade: SelfTrade = "cancel_incoming") -> None:
        self.now = 0
        self.log = MemoryOrderLog()
        self.oms = OrderManager(INSTRUMENTS, new_risk(), self.log, clock=lambda: self.now,
                                self_trade=self_trade)  # fmt: skip
        for account in ACCOUNTS:
            for asset, amount in DEPOSITS.items():
                self.oms.deposit(account, asset, amount)
        self.last_update: dict[str, dict[str, Any]] = {}

    def run(self, op: tuple[Any, ...]) -> None:
        self.now += 7
        oms = self.oms
        if op[0] == "submit":
            oms.submit(request(op))
        elif op[0] in ("cancel", "amend"):
            # a cancel picks any order (another account's is refused, a final one is
            # returned as it is); an amend one of the account's open orders
            if op[0] == "cancel":
                pool = [o for a in ACCOUNTS for o in oms.orders(a)]
            else:
                pool = [o for o in oms.orders(op[1]) if o.is_open] or oms.orders(op[1])
            if not pool:
                return
            order = pool[op[2] % len(pool)]
            try:
                if op[0] == "cancel":
                    oms.cancel(op[1], order.order_id)
                else:
                    price = (
                        None
                        if order.price is None or not op[3]
                        else (order.price + op[3] * D("0.01"))
                    )
                    lots = INSTRUMENTS[order.symbol].lot_size
                    quantity = None if not op[4] else op[4] * lots
                    oms.amend(op[1], order.order_id, price=price, quantity=quantity)
            except OrderRejected:
                pass
        elif op[0] == "kill":
            oms.kill(op[1])
        elif op[0] == "revive":
            oms.revive(op[1])
        else:
            oms.kill()
            oms.revive()
        for update in oms.take_updates():
            if update["event"] == "order" and update["order_id"]:
                self.last_update[update["order_id"]] = update


def orders(oms: OrderManager) -> list[Order]:
    return [o for a in ACCOUNTS for o in oms.orders(a)]


def need(oms: OrderManager, order: Order) -> Decimal:
    """What an open order must hold, worked out from its view alone."""
    if order.side == "sell":
        return order.remaining
    instrument = INSTRUMENTS[order.symbol]
    if order.type == "stop_market":
        assert order.stop_price is not None
        price = oms.risk.protection_price(order.symbol, "buy", order.stop_price)
    else:
        assert order.price is not None
        price = order.price
    return price * order.remaining * (1 + max(instrument.taker_fee, instrument.maker_fee))


def check_invariants(flow: Flow) -> None:
    oms = flow.oms
    balances = oms.risk.balances
    for symbol in oms.symbols():
        book = oms.book(symbol)
        bid, ask = book.best_bid(), book.best_ask()
        assert bid is None or ask is None or bid < ask, f"{symbol} is crossed"
    held: dict[tuple[str, str], Decimal] = {}
    for order in orders(oms):
        instrument = INSTRUMENTS[order.symbol]
        book = oms.book(order.symbol)
        oid = int(order.order_id[1:])
        resting, waiting = book.order(oid), book.waiting_stops().get(oid)
        fills = [f for f in oms.fills(order.account) if f.order_id == order.order_id]
        assert order.filled == sum((f.quantity for f in fills), D(0))
        assert order.fees == sum((f.fee for f in fills), D(0))
        # quantity = filled + resting (or waiting) + the part cancelled or expired
        if order.status in FINAL_STATUSES:
            assert resting is None
            assert waiting is None
            assert balances.reservation(order.order_id) == 0
            assert (order.filled == order.quantity) == (order.status == "filled")
            continue
        lots = resting[2] if resting is not None else waiting[3] if waiting is not None else None
        assert lots is not None, f"open order {order.order_id} is not in the book"
        assert instrument.quantity(lots) == order.remaining > 0
        assert (order.status == "partially_filled") == (order.filled > 0)
        assert balances.reservation(order.order_id) == need(oms, order)
        asset = instrument.quote if order.side == "buy" else instrument.base
        key = (order.account, asset)
        held[key] = held.get(key, D(0)) + need(oms, order)
    for account in ACCOUNTS:
        for asset in DEPOSITS:
            assert balances.reserved(account, asset) == held.get((account, asset), D(0))
            assert balances.available(account, asset) >= 0
        for position in oms.positions(account):
            signed = sum(
                (
                    f.quantity if f.side == "buy" else -f.quantity
                    for f in oms.fills(account)
                    if f.symbol == position.symbol
                ),
                D(0),
            )
            assert position.quantity == signed
    # money is conserved: quote moves between accounts, less the fees the venue keeps
    fees = sum((f.fee for a in ACCOUNTS for f in oms.fills(a)), D(0))
    for asset, amount in DEPOSITS.items():
        total = sum(
            (balances.available(a, asset) + balances.reserved(a, asset) for a in ACCOUNTS), D(0)
        )
        assert total == len(ACCOUNTS) * amount - (fees if asset == "USDT" else 0)


def state(oms: OrderManager) -> dict[str, Any]:
    balances = oms.risk.balances
    books = {}
    for symbol in sorted(oms.symbols()):
        book = oms.book(symbol)
        books[symbol] = (book.l3(), book.waiting_stops(), book.last_price, book.seq)
    return {
        "orders": {a: oms.orders(a) for a in ACCOUNTS},
        "fills": {a: oms.fills(a) for a in ACCOUNTS},
        "positions": {a: [p.snapshot() for p in oms.positions(a)] for a in ACCOUNTS},
        "balances": {
            (a, asset): (balances.available(a, asset), balances.reserved(a, asset))
            for a in ACCOUNTS
            for asset in DEPOSITS
        },
        "reservations": {o.order_id: balances.reservation(o.order_id) for o in orders(oms)},
        "books": books,
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flows, st.sampled_from(MODES))
def test_random_flows_keep_the_invariants_and_replay_exactly(
    ops: list[tuple[Any, ...]], mode: SelfTrade
) -> None:
    flow = Flow(mode)
    for op in ops:
        flow.run(op)
        check_invariants(flow)
    oms = flow.oms
    for order in orders(oms):  # the outbox ends on every order's current state
        assert flow.last_update[order.order_id] == {"event": "order", **order_dict(order)}
    records = json.loads(json.dumps(flow.log.records()))
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    # Each record was decided under a self-trade prevention it carries: a manager set
    # to the other one rebuilds the same state.
    other = MODES[1 - MODES.index(mode)]
    rebuilt = OrderManager.replay(INSTRUMENTS, new_risk, MemoryOrderLog(records), self_trade=other)
    assert state(rebuilt) == state(oms)
    log = MemoryOrderLog(records)
    replayed = OrderManager.replay(INSTRUMENTS, new_risk, log, clock=lambda: flow.now,
                                   self_trade=mode)  # fmt: skip
    assert len(log) == len(records)  # replaying appends nothing
    assert replayed.take_updates() == []
    assert state(replayed) == state(oms)
    # both carry on identically: ids and sequence numbers continue where they were
    follow = OrderRequest("b", "BTC/USDT", "sell", "limit", D("0.01"), price=D("99.9"))
    assert replayed.submit(follow) == oms.submit(follow)
    assert log.records()[-1] == flow.log.records()[-1]
    assert state(replayed) == state(oms)


def test_replay_of_a_worked_flow_keeps_client_ids_and_kills() -> None:
    flow = Flow()
    ops = [
        ("submit", "a", "BTC/USDT", "sell", "limit", 0, 300, 0, 1),
        ("submit", "b", "BTC/USDT", "buy", "limit", 1, 100, 0, None),
        ("submit", "c", "BTC/USDT", "buy", "stop_market", 0, 50, 2, None),
        ("amend", "a", 0, 1, 250),
        ("kill", "a"),
    ]
    for op in ops:
        flow.run(op)
        check_invariants(flow)
    replayed = OrderManager.replay(INSTRUMENTS, new_risk, MemoryOrderLog(flow.log.records()))
    assert state(replayed) == state(flow.oms)
    first = flow.oms.order("O0000000001")
    assert first is not None
    assert (first.status, first.filled, first.quantity, first.close_reason) == (
        "cancelled",
        D("0.1"),
        D("0.25"),
        "kill_switch",
    )
    assert replayed.submit(request(ops[0])) == first  # the client id is remembered
    again = request(("submit", "a", "BTC/USDT", "buy", "limit", 0, 1, 0, None))
    assert replayed.submit(again).reject_rule == "kill_switch"
