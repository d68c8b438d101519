"""Positions from fills: averages, realized and unrealized PnL, fees, and the ledger."""

from decimal import ROUND_DOWN, Decimal

from hypothesis import given
from hypothesis import strategies as st

from cryptodesk.domain.orders import Fill
from cryptodesk.portfolio.cost_basis import compute
from cryptodesk.portfolio.ledger import LedgerEntry
from cryptodesk.portfolio.trade_fills import fill_to_ledger
from cryptodesk.trading.positions import Position, Positions

D = Decimal
_trades = iter(range(10**9))


def fill(side: str, qty: str | Decimal, price: str | Decimal, fee: str | Decimal = "0",
         fee_asset: str = "USDT", account: str = "a",
         trade_id: str | None = None) -> Fill:  # fmt: skip
    return Fill(trade_id or f"t{next(_trades)}", "o1", account, "BTC/USDT", side, D(price),  # type: ignore[arg-type]
                D(qty), D(fee), fee_asset, "taker", 1_700_000_000_000)  # fmt: skip


def book(*fills: Fill) -> Position:
    positions = Positions()
    for f in fills:
        positions.apply(f)
    return positions.get("a", "BTC/USDT")


def test_weighted_average_reduce_and_flip() -> None:
    positions = Positions()
    p = positions.get("a", "BTC/USDT")
    positions.apply(fill("buy", "1", "100"))
    positions.apply(fill("buy", "1", "200"))
    assert (p.quantity, p.average_price, p.realized) == (D(2), D(150), D(0))
    positions.apply(fill("sell", "0.5", "180"))  # realizes (180 - 150) x 0.5
    assert (p.quantity, p.average_price, p.realized) == (D("1.5"), D(150), D(15))
    assert p.unrealized(D(160)) == D(15)
    positions.apply(fill("sell", "2", "170"))  # closes 1.5 (+30), opens -0.5 at 170
    assert (p.quantity, p.average_price, p.realized) == (D("-0.5"), D(170), D(45))
    assert p.unrealized(D(180)) == D(-5)
    positions.apply(fill("buy", "0.5", "160"))  # covers the short (+5)
    assert (p.quantity, p.average_price, p.realized, p.cost) == (0, 0, D(50), 0)
    assert p.unrealized(D(1_000_000)) == 0


def test_short_position() -> None:
    p = book(fill("sell", "2", "100"), fill("sell", "1", "130"), fill("buy", "1", "90"))
    assert (p.quantity, p.average_price, p.realized) == (D(-2), D(110), D(20))
    assert p.unrealized(D(80)) == D(60)
    assert p.unrealized(D(120)) == D(-20)


def test_fees_are_counted_apart() -> None:
    p = book(fill("buy", "1", "100", "0.1"), fill("sell", "1", "110", "0.11"))
    assert (p.quantity, p.realized, p.fees) == (0, D(10), D("0.21"))


def test_fee_in_base_changes_the_quantity() -> None:
    p = book(fill("buy", "1", "100", "0.001", fee_asset="BTC"))
    assert (p.quantity, p.average_price, p.fees, p.realized) == (D("0.999"), D(100), D("0.1"), 0)
    p = book(fill("buy", "1", "100"), fill("sell", "0.5", "120", "0.001", fee_asset="BTC"))
    # 0.501 leaves at 120: 0.5 sold, 0.001 paid as a fee worth 0.12
    assert (p.quantity, p.realized, p.fees) == (D("0.499"), D("10.02"), D("0.12"))


def test_fee_in_a_third_asset() -> None:
    p = book(fill("buy", "1", "100", "0.01", fee_asset="BNB"), fill("buy", "1", "100", "0.02",
             fee_asset="BNB"))  # fmt: skip
    assert (p.quantity, p.fees, p.other_fees) == (D(2), 0, {"BNB": D("0.03")})


def test_replayed_fill_is_ignored() -> None:
    positions = Positions()
    first = fill("buy", "1", "100", trade_id="x")
    assert positions.apply(first) is True
    assert positions.apply(first) is False
    assert positions.apply(fill("sell", "1", "100", trade_id="x")) is True  # other side
    assert positions.apply(fill("buy", "1", "100", account="b", trade_id="x")) is False
    assert positions.get("a", "BTC/USDT").quantity == 0


def test_snapshots() -> None:
    positions = Positions()
    positions.apply(fill("buy", "2", "100", "0.2"))
    positions.apply(fill("buy", "1", "100", "0.01", fee_asset="BNB", account="b"))
    positions.get("c", "BTC/USDT")  # flat and untouched: not listed
    assert positions.snapshot({"BTC/USDT": D("105.5")}) == [
        {"account": "a", "symbol": "BTC/USDT", "quantity": "2", "average_price": "100",
         "realized": "0", "fees": "0.2", "mark": "105.5", "unrealized": "11.0"},
        {"account": "b", "symbol": "BTC/USDT", "quantity": "1", "average_price": "100",
         "realized": "0", "fees": "0", "fees_BNB": "0.01", "mark": "105.5",
         "unrealized": "5.5"},
    ]  # fmt: skip
    assert positions.get("a", "BTC/USDT").snapshot()["quantity"] == "2"
    assert "unrealized" not in positions.snapshot()[0]
    assert len(positions.all()) == 3


def test_fill_to_ledger() -> None:
    buy = fill("buy", "0.5", "30000.01", "15.000005", trade_id="T9")
    entry = fill_to_ledger(buy, base="BTC", quote="USDT")
    assert entry == LedgerEntry(
        id="internal:T9:buy", timestamp=1_700_000_000_000, kind="buy", account="a", asset="BTC",
        amount=D("0.5"), counter_asset="USDT", counter_amount=D("15000.005"), fee_asset="USDT",
        fee_amount=D("15.000005"), external_id="T9",
    )  # fmt: skip
    sell = fill_to_ledger(fill("sell", "1", "2", trade_id="T9"), base="BTC", quote="USDT")
    assert (sell.id, sell.kind, sell.fee_asset, sell.fee_amount) == ("internal:T9:sell", "sell",
                                                                    None, None)  # fmt: skip
    assert fill_to_ledger(buy, base="BTC", quote="USDT") == entry  # a replay is the same entry


# -- properties ---------------------------------------------------------------

fills = st.lists(
    st.tuples(
        st.sampled_from(("buy", "sell")),
        st.integers(1, 5000),  # quantity, 0.001 units
        st.integers(1, 100_000),  # price, 0.01 units
        st.sampled_from(("none", "USDT", "BTC", "BNB")),
        st.integers(0, 99),  # fee, tenths of a percent of quantity (base) or notional
    ),
    max_size=40,
)


@given(fills, st.integers(1, 10**7))
def test_realized_plus_unrealized_is_the_cash_flow(
    steps: list[tuple[str, int, int, str, int]], mark_cents: int
) -> None:
    positions = Positions()
    p = positions.get("a", "BTC/USDT")
    cash = quantity = D(0)
    for side, lots, cents, fee_asset, per_mille in steps:
        qty, price = D(lots) / 1000, D(cents) / 100
        fee = (qty if fee_asset == "BTC" else qty * price) * per_mille / 100_000
        before = (p.quantity, p.average_price)
        positions.apply(fill(side, qty, price, fee, fee_asset))
        sign = 1 if side == "buy" else -1
        cash -= sign * qty * price + (fee if fee_asset == "USDT" else 0)
        quantity += sign * qty - (fee if fee_asset == "BTC" else 0)
        assert p.quantity == quantity  # conserved exactly
        was = before[0]
        if was and p.quantity and (was > 0) == (p.quantity > 0) and abs(p.quantity) < abs(was):
            assert abs(p.average_price - before[1]) < D("1e-40")  # a reduce keeps the average
    mark = D(mark_cents) / 100
    assert p.realized + p.unrealized(mark) - p.fees == cash + quantity * mark


long_only = st.lists(
    st.tuples(
        st.integers(0, 1),  # account
        st.integers(0, 3),  # 0-1 buy, 2-3 sell a share of what is held
        st.integers(1, 5000),  # quantity (buys) or percent share (sells), 0.001 units
        st.integers(1, 100_000),  # price, cents
        st.sampled_from(("none", "USDT", "BTC")),
    ),
    max_size=40,
)


@given(long_only)
def test_positions_and_ledger_agree_on_quantity(
    steps: list[tuple[int, int, int, int, str]],
) -> None:
    positions = Positions()
    entries: list[LedgerEntry] = []
    for n, (who, action, amount, cents, fee_asset) in enumerate(steps):
        account = "ab"[who]
        held = positions.get(account, "BTC/USDT").quantity
        price = D(cents) / 100
        if action < 2:
            side, qty = "buy", D(amount) / 1000
        else:
            share = held * (amount % 100) / 100
            side, qty = "sell", share.quantize(D("0.001"), rounding=ROUND_DOWN)
            if qty == 0:
                continue
        fee = qty / 1000 if fee_asset == "BTC" else qty * price / 1000
        if side == "sell" and fee_asset == "BTC" and qty + fee > held:
            qty = (held / D("1.001")).quantize(D("0.001"), rounding=ROUND_DOWN)
            fee = qty / 1000
            if qty == 0:
                continue
        f = Fill(f"t{n}", f"o{n}", account, "BTC/USDT", side, price, qty,  # type: ignore[arg-type]
                 fee if fee_asset != "none" else D(0), fee_asset if fee_asset != "none" else "",
                 "taker", 1_700_000_000_000 + n)  # fmt: skip
        positions.apply(f)
        entries.append(fill_to_ledger(f, base="BTC", quote="USDT"))
    result = compute(entries, method="fifo", currency="USDT", per_wallet=True)
    ledger = {(h.account, h.asset): h.amount for h in result.holdings}
    assert not result.missing_acquisitions
    mine = {(p.account, "BTC"): p.quantity for p in positions.all() if p.quantity}
    assert ledger == mine
