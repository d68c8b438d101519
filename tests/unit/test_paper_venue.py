"""The paper venue: orders filled against an exchange's order book snapshots."""

from __future__ import annotations

from decimal import Decimal as D
from decimal import localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptodesk.domain.market import OrderBook
from cryptodesk.domain.orders import Fill, OrderRequest, Side
from cryptodesk.trading.errors import OrderRejected
from cryptodesk.trading.instruments import EXACT, Instrument
from cryptodesk.trading.paper import PaperVenue, walk_book

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z
BTC = Instrument("BTC/USDT", "BTC", "USDT", tick_size=D("0.01"), lot_size=D("0.001"),
                 taker_fee=D("0.001"), maker_fee=D("0.0005"))  # fmt: skip
ASKS = ((100.0, 0.5), (100.5, 1.0), (101.0, 2.0))
BIDS = ((99.5, 1.0), (99.0, 2.0))


def book(ts: int = T0, *, bids: tuple[tuple[float, float], ...] = BIDS,
         asks: tuple[tuple[float, float], ...] = ASKS, exchange: str = "binance",
         seq: int = 0) -> OrderBook:  # fmt: skip
    return OrderBook(exchange, "BTC/USDT", ts, bids, asks, seq)


def order(side: Side, quantity: str, price: str | None = None, *, tif: str = "gtc",
          account: str = "alice", **extra: object) -> OrderRequest:  # fmt: skip
    return OrderRequest(account, "BTC/USDT", side, "limit" if price else "market", D(quantity),
                        price=None if price is None else D(price), time_in_force=tif,  # type: ignore[arg-type]
                        **extra)  # type: ignore[arg-type]  # fmt: skip


def funded(*, with_book: bool = True) -> PaperVenue:
    venue = PaperVenue("binance", {"BTC/USDT": BTC}, max_age_ms=5_000)
    venue.deposit("alice", "USDT", D("1000"))
    venue.deposit("alice", "BTC", D("2"))
    if with_book:
        assert venue.on_book(book()) == []
    return venue


def test_walk_book_takes_levels_best_first_up_to_the_limit() -> None:
    asks = [(D("100"), D("0.5")), (D("100.5"), D("1")), (D("101"), D("2"))]
    assert walk_book(asks, D("1.2"), side="buy") == ([(D("100"), D("0.5")),
                                                      (D("100.5"), D("0.7"))], D("0"))  # fmt: skip
    assert walk_book(asks, D("4"), side="buy", limit=D("100.5")) == (
        [(D("100"), D("0.5")), (D("100.5"), D("1"))], D("2.5"))  # fmt: skip
    assert walk_book(asks, D("1"), side="buy", limit=D("99.99")) == ([], D("1"))
    bids = [(D("99.5"), D("1")), (D("99"), D("2"))]
    assert walk_book(bids, D("2"), side="sell", limit=D("99.5")) == ([(D("99.5"), D("1"))], D("1"))
    assert walk_book(bids, D("5"), side="sell") == (
        [(D("99.5"), D("1")), (D("99"), D("2"))],
        D("2"),
    )
    with pytest.raises(ValueError, match="quantity must be positive"):
        walk_book(bids, D("0"), side="sell")


def test_a_market_buy_walks_several_levels_at_the_exact_vwap_and_taker_fee() -> None:
    venue = funded()
    placed = venue.submit(order("buy", "1.2"), ts=T0 + 100)
    assert placed.order_id == "PO0000000001"
    assert (placed.status, placed.filled, placed.fees) == ("filled", D("1.2"), D("0.12035"))
    with localcontext(EXACT):
        assert placed.average_price == D("120.35") / D("1.2")  # (50 + 70.35) / 1.2
    assert venue.fills("alice") == [
        Fill("PT0000000001", "PO0000000001", "alice", "BTC/USDT", "buy", D("100.0"), D("0.5"),
             D("0.05"), "USDT", "taker", T0 + 100, venue="paper:binance"),
        Fill("PT0000000002", "PO0000000001", "alice", "BTC/USDT", "buy", D("100.5"), D("0.7"),
             D("0.07035"), "USDT", "taker", T0 + 100, venue="paper:binance"),
    ]  # fmt: skip
    assert venue.balances.available("alice", "USDT") == D("879.52965")  # 1000 - 120.35 - fee
    assert venue.balances.reserved("alice", "USDT") == D("0")
    assert venue.balances.available("alice", "BTC") == D("3.2")
    (position,) = venue.positions("alice")
    assert (position.quantity, position.cost, position.fees) == (D("1.2"), D("120.35"),
                                                                 D("0.12035"))  # fmt: skip
    # What was taken is gone from the local book until the next snapshot.
    local = venue.book("BTC/USDT")
    assert local is not None
    assert local[1] == [(D("100.5"), D("0.3")), (D("101.0"), D("2.0"))]
    again = venue.submit(order("buy", "0.5"), ts=T0 + 200)
    assert [(f.price, f.quantity) for f in venue.fills("alice")[2:]] == [
        (D("100.5"), D("0.3")), (D("101.0"), D("0.2"))]  # fmt: skip
    assert again.status == "filled"
    updates = venue.take_updates()
    assert [(u["event"], u.get("status")) for u in updates[:4]] == [
        ("order", "accepted"),
        ("fill", None),
        ("order", "partially_filled"),
        ("fill", None),
    ]
    assert updates[4] == {**updates[4], "event": "order", "status": "filled", "filled": "1.2"}


def test_a_market_order_the_book_cannot_fill_expires_the_rest() -> None:
    venue = funded()
    sold = venue.submit(order("sell", "2"), ts=T0)
    assert (sold.status, sold.filled, sold.close_reason) == ("filled", D("2"), None)
    venue.deposit("alice", "BTC", D("5"))
    rest = venue.submit(order("sell", "2"), ts=T0)  # the bids left hold 1.0 at 99.0
    assert (rest.status, rest.filled, rest.close_reason) == ("expired", D("1.0"), "ioc_remainder")
    assert venue.balances.reserved("alice", "BTC") == D("0")
    assert venue.balances.available("alice", "BTC") == D("4")  # 2 - 2 + 5 - 1 sold


def test_a_limit_order_takes_what_crosses_and_rests_the_rest() -> None:
    venue = funded()
    placed = venue.submit(order("buy", "2", "100.5"), ts=T0)
    assert (placed.status, placed.filled, placed.remaining) == ("partially_filled", D("1.5"),
                                                                D("0.5"))  # fmt: skip
    assert [(f.price, f.quantity, f.liquidity) for f in venue.fills("alice")] == [
        (D("100.0"), D("0.5"), "taker"), (D("100.5"), D("1.0"), "taker")]  # fmt: skip
    # The rest holds its price x quantity x (1 + the larger fee); the taker savings are free.
    assert venue.balances.reserved("alice", "USDT") == D("50.30025")
    assert venue.balances.available("alice", "USDT") == D("1000") - D("150.5") - D("0.1505") - D(
        "50.30025")  # fmt: skip
    assert venue.open_orders("alice") == [placed]
    assert venue.open_orders("bob") == []


def test_a_resting_order_fills_fully_as_maker_when_a_later_book_crosses_it() -> None:
    venue = funded()
    buy = venue.submit(order("buy", "2", "100.5"), ts=T0)
    sell = venue.submit(order("sell", "0.7", "102"), ts=T0)
    assert sell.status == "accepted"
    assert venue.on_book(book(T0 + 1000, asks=((100.51, 9.0),))) == []  # not yet through
    assert venue.on_book(book(T0 + 500, asks=((100.0, 9.0),))) == []  # older: ignored
    fills = venue.on_book(book(T0 + 2000, asks=((100.4, 0.01),)))  # shown size does not matter
    assert fills == [Fill("PT0000000003", buy.order_id, "alice", "BTC/USDT", "buy", D("100.5"),
                          D("0.5"), D("0.025125"), "USDT", "maker", T0 + 2000,
                          venue="paper:binance")]  # fmt: skip
    done = venue.order(buy.order_id)
    assert done is not None
    assert (done.status, done.filled) == ("filled", D("2"))
    assert venue.balances.reserved("alice", "USDT") == D("0")
    assert venue.balances.available("alice", "USDT") == D("1000") - D("200.75") - D("0.175625")
    # A sell rests until the bids reach its price.
    assert venue.on_book(book(T0 + 3000, bids=((101.99, 5.0),), asks=((102.5, 1.0),))) == []
    (sold,) = venue.on_book(book(T0 + 4000, bids=((102.5, 0.1),), asks=((103.0, 1.0),)))
    sold_as = (sold.price, sold.quantity, sold.fee, sold.liquidity)
    assert sold_as == (D("102"), D("0.7"), D("0.0357"), "maker")
    assert venue.open_orders() == []
    # Books of another exchange never touch paper:binance.
    venue.submit(order("buy", "0.1", "100"), ts=T0 + 4000)
    assert (
        venue.on_book(book(T0 + 5000, bids=((98.0, 1.0),), asks=((99.0, 1.0),), exchange="kraken"))
        == []
    )


def test_fok_fills_all_at_once_or_nothing() -> None:
    venue = funded()
    missed = venue.submit(order("buy", "3.6", "101", tif="fok"), ts=T0)
    assert (missed.status, missed.filled, missed.close_reason) == ("expired", D("0"),
                                                                   "fok_not_filled")  # fmt: skip
    assert venue.fills("alice") == []
    assert venue.balances.available("alice", "USDT") == D("1000")
    filled = venue.submit(order("buy", "3.5", "101", tif="fok"), ts=T0)
    assert (filled.status, filled.filled, filled.fees) == ("filled", D("3.5"), D("0.35250"))
    assert venue.balances.available("alice", "USDT") == D("1000") - D("352.5") - D("0.3525")


def test_ioc_and_post_only() -> None:
    venue = funded()
    ioc = venue.submit(order("sell", "1.5", "99.5", tif="ioc"), ts=T0)
    assert (ioc.status, ioc.filled, ioc.close_reason) == ("expired", D("1.0"), "ioc_remainder")
    taker = venue.submit(order("buy", "0.1", "100", post_only=True), ts=T0)
    assert (taker.status, taker.close_reason) == ("expired", "post_only_would_take")
    maker = venue.submit(order("buy", "0.1", "99.99", post_only=True), ts=T0)
    assert maker.status == "accepted"
    assert venue.balances.reserved("alice", "USDT") == D("10.008999")  # 9.999 x 1.001


def test_cancel_releases_the_reservation() -> None:
    venue = funded()
    resting = venue.submit(order("buy", "1", "99"), ts=T0)
    assert venue.balances.reserved("alice", "USDT") == D("99.099")
    assert venue.balances.available("alice", "USDT") == D("900.901")
    cancelled = venue.cancel(resting.order_id, ts=T0 + 10)
    assert (cancelled.status, cancelled.close_reason, cancelled.updated_ts) == (
        "cancelled", "client", T0 + 10)  # fmt: skip
    assert venue.balances.reserved("alice", "USDT") == D("0")
    assert venue.balances.available("alice", "USDT") == D("1000")
    assert venue.on_book(book(T0 + 20, bids=((97.0, 1.0),), asks=((98.0, 5.0),))) == []
    with pytest.raises(OrderRejected) as again:
        venue.cancel(resting.order_id, ts=T0 + 30)
    assert again.value.rule == "not_open"
    with pytest.raises(OrderRejected) as unknown:
        venue.cancel("PO0000000099", ts=T0 + 30)
    assert unknown.value.rule == "unknown_order"


def test_no_fresh_book_rejects_orders_that_must_take() -> None:
    venue = funded(with_book=False)
    for request in (order("buy", "0.1"), order("sell", "0.1", "99", tif="ioc")):
        refused = venue.submit(request, ts=T0)
        assert (refused.status, refused.reject_rule, refused.order_id) == (
            "rejected",
            "no_book",
            "",
        )
    assert venue.on_book(book(T0, exchange="kraken")) == []  # not this venue's exchange
    assert venue.submit(order("buy", "0.1"), ts=T0).reject_rule == "no_book"
    venue.on_book(book(T0))
    assert venue.submit(order("buy", "0.1"), ts=T0 + 5_000).status == "filled"
    stale = venue.submit(order("buy", "0.1"), ts=T0 + 5_001)
    assert (stale.reject_rule, stale.reject_reason) == (
        "no_book", "no order book of BTC/USDT on binance newer than 5000 ms")  # fmt: skip
    # A GTC limit order needs no book: it rests for the next snapshot (and takes nothing).
    waiting = venue.submit(order("buy", "0.1", "101"), ts=T0 + 9_000)
    assert (waiting.status, waiting.filled) == ("accepted", D("0"))
    assert venue.orders("alice")[-1] == waiting  # rejections are not kept


def test_other_rejections_name_their_rule() -> None:
    venue = funded()
    assert venue.submit(order("buy", "20", "100"), ts=T0).reject_rule == "insufficient_balance"
    assert venue.submit(order("buy", "0.0001"), ts=T0).reject_rule == "min_quantity"
    stop = OrderRequest("alice", "BTC/USDT", "buy", "stop_market", D("1"), stop_price=D("110"))
    assert venue.submit(stop, ts=T0).reject_rule == "order_type"
    eth = OrderRequest("alice", "ETH/USDT", "buy", "market", D("1"))
    assert venue.submit(eth, ts=T0).reject_rule == "unknown_symbol"
    assert venue.fills("alice") == []
    assert venue.orders("alice") == []
    first = venue.submit(order("buy", "0.1", "99", client_order_id="c1"), ts=T0)
    assert venue.submit(order("buy", "0.5", "98", client_order_id="c1"), ts=T0) == first


def run_script(seed_books: list[OrderBook]) -> list[dict[str, object]]:
    venue = funded()
    venue.submit(order("buy", "1", "100.2"), ts=T0)
    venue.submit(order("sell", "0.5", "100.8"), ts=T0)
    for b in seed_books:
        venue.on_book(b)
        venue.submit(order("buy", "0.2"), ts=b.ts)
    return venue.take_updates()


def test_the_same_commands_and_books_give_the_same_fills() -> None:
    books = [book(T0 + 1000, asks=((100.1, 0.3), (100.3, 1.0))),
             book(T0 + 2000, bids=((100.9, 1.0),), asks=((101.0, 1.0),))]  # fmt: skip
    first = run_script(books)
    assert first == run_script(books)
    assert [u["trade_id"] for u in first if u["event"] == "fill"] == [
        "PT0000000001",
        "PT0000000002",
        "PT0000000003",
        "PT0000000004",
        "PT0000000005",
    ]


LEVELS = st.lists(st.tuples(st.integers(1, 500), st.integers(1, 5_000)), min_size=0, max_size=8,
                  unique_by=lambda level: level[0])  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(levels=LEVELS, lots=st.integers(1, 20_000), limit=st.none() | st.integers(1, 500),
       side=st.sampled_from(["buy", "sell"]))  # fmt: skip
def test_fills_stay_within_the_book_and_the_limit(
    levels: list[tuple[int, int]], lots: int, limit: int | None, side: Side
) -> None:
    ordered = sorted(levels, reverse=side == "sell")  # asks ascending, bids descending
    book_side = [(D(p) / 10, D(q) / 1000) for p, q in ordered]
    quantity, cap = D(lots) / 1000, None if limit is None else D(limit) / 10
    fills, left = walk_book(book_side, quantity, side=side, limit=cap)
    assert sum((q for _, q in fills), D(0)) + left == quantity  # quantity conserved
    assert 0 <= left <= quantity
    shown = dict(book_side)
    for price, taken in fills:
        assert 0 < taken <= shown[price]  # only what a level shows, at its own price
        assert price >= book_side[0][0] if side == "buy" else price <= book_side[0][0]
        if cap is not None:
            assert price <= cap if side == "buy" else price >= cap
    # Levels are taken in order, whole except the last one touched.
    assert [p for p, _ in fills] == [p for p, _ in book_side[: len(fills)]]
    assert all(q == shown[p] for p, q in fills[:-1])
    if left and fills:
        assert fills[-1][1] == shown[fills[-1][0]]
