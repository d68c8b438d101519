"""The paper venue ``paper:EXCHANGE``: orders filled against a real exchange's order book.

The book is the exchange's L2 snapshot as it arrives on the market-data feed
(``on_book``); no order ever reaches the exchange. Rules, all deterministic (the
same commands and books in the same order give the same fills):

- **Taking** walks the opposite side best first (``walk_book``): asks for a buy,
  bids for a sell, each level at its own price, so a large order pays the
  slippage of the book's depth. What a taker consumed is taken out of the local
  copy of the book until the next snapshot replaces it, so two orders never both
  take the same displayed quantity.
- **Market** orders take what the book holds; the rest expires
  (``ioc_remainder``). **Limit** orders take what crosses their price as taker;
  IOC lets the rest expire, FOK fills all at once or nothing (``fok_not_filled``),
  post-only expires if it would take (``post_only_would_take``), GTC rests.
- **Resting** orders fill as maker, **fully and at their own price**, as soon as
  a later snapshot shows the opposite side at or through that price (best ask
  <= a buy's price, best bid >= a sell's). Queue position is ignored: a real
  order would wait behind the displayed quantity and might fill later, partly
  or never. Resting orders fill in order id order.
- A market, IOC or FOK order needs a fresh book: none, or one older than
  ``max_age_ms`` at the command's time, rejects it with rule ``no_book``. A GTC
  limit order without a book rests and waits for the first snapshot.
- Stop orders are not simulated (rule ``order_type``); amend is not offered
  (cancel and place again).

Funds are paper money per account (``Balances``: deposit first). A sell reserves
its base quantity; a limit buy price x quantity x (1 + the larger fee); a market
buy the exact cost of the fills the walk found, with the taker fee. Fees are the
instrument's taker or maker fee x notional, in the quote asset. Order ids are
``PO`` + sequence, trade ids ``PT`` + sequence; every order change and fill is
appended to ``updates`` in the internal venue's shape (``take_updates``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal, localcontext
from typing import Any

from cryptodesk.domain.market import OrderBook
from cryptodesk.domain.orders import Fill, Liquidity, OrderRequest, OrderStatus, Side
from cryptodesk.trading.balances import Balances
from cryptodesk.trading.errors import OrderRejected
from cryptodesk.trading.instruments import EXACT, Instrument, plain
from cryptodesk.trading.order_state import (
    Order,
    OrderKeeping,
    check_transition,
    fill_dict,
    order_dict,
)
from cryptodesk.trading.positions import Position, Positions

Level = tuple[Decimal, Decimal]  # (price, quantity)
_ZERO = Decimal(0)
_ONE = Decimal(1)


def walk_book(
    levels: Sequence[Level], quantity: Decimal, *, side: Side, limit: Decimal | None = None
) -> tuple[list[Level], Decimal]:
    """The ``(price, quantity)`` fills a ``side`` taker gets from ``levels`` (the opposite
    side, best first), stopping at the first level beyond ``limit`` (above it for a buy,
    below it for a sell); and the quantity left unfilled. Exact decimals."""
    if quantity <= _ZERO:
        raise ValueError(f"quantity must be positive, got {quantity}")
    fills: list[Level] = []
    left = quantity
    with localcontext(EXACT):
        for price, size in levels:
            if not left:
                break
            if limit is not None and (price > limit if side == "buy" else price < limit):
                break
            take = min(left, size)
            if take > _ZERO:
                fills.append((price, take))
                left -= take
    return fills, left


def book_levels(levels: Sequence[tuple[float, float]]) -> list[Level]:
    """A feed book's float levels as decimals: ``str`` keeps a float's shortest decimal
    form, so 100.1 stays Decimal("100.1") (the exchange sent a decimal)."""
    return [(Decimal(str(price)), Decimal(str(size))) for price, size in levels]


@dataclass(slots=True)
class _Book:
    ts: int
    sequence: int
    bids: list[Level]
    asks: list[Level]


@dataclass(slots=True)
class _Live:
    view: Order
    instrument: Instrument
    notional: Decimal = _ZERO


class PaperVenue(OrderKeeping):
    """Paper orders of every account against ``exchange``'s live books."""

    def __init__(
        self,
        exchange: str,
        instruments: Mapping[str, Instrument],
        *,
        balances: Balances | None = None,
        max_age_ms: int = 10_000,
    ) -> None:
        self.exchange = exchange
        self.venue = f"paper:{exchange}"
        self.instruments = dict(instruments)
        self.balances = balances if balances is not None else Balances()
        self.max_age_ms = max_age_ms
        self.updates: list[dict[str, Any]] = []
        self._books: dict[str, _Book] = {}
        self._orders: dict[str, _Live] = {}
        self._by_account: dict[str, list[_Live]] = {}
        self._resting: dict[str, dict[str, _Live]] = {}  # symbol -> order id -> order
        self._client_ids: dict[tuple[str, str], str] = {}
        self._fills: dict[str, list[Fill]] = {}
        self._positions = Positions()
        self._traded: dict[tuple[str, str], None] = {}
        self._order_seq = 0
        self._trade_seq = 0

    # ---- queries ------------------------------------------------------------------------

    def orders(self, account: str) -> list[Order]:
        """The account's orders, oldest first (rejections are not kept)."""
        return [live.view for live in self._by_account.get(account, ())]

    def open_orders(self, account: str | None = None) -> list[Order]:
        views = [live.view for orders in self._resting.values() for live in orders.values()]
        return sorted((v for v in views if account in (None, v.account)),
                      key=lambda v: v.order_id)  # fmt: skip

    def fills(self, account: str) -> list[Fill]:
        return list(self._fills.get(account, ()))

    def positions(self, account: str) -> list[Position]:
        return [self._positions.get(a, s) for a, s in self._traded if a == account]

    def book(self, symbol: str) -> tuple[list[Level], list[Level]] | None:
        """The local (bids, asks) of ``symbol``: the last snapshot less what takers
        consumed from it; None before the first snapshot."""
        held = self._books.get(symbol)
        return None if held is None else (list(held.bids), list(held.asks))

    # ---- commands -----------------------------------------------------------------------

    def deposit(self, account: str, asset: str, amount: Decimal) -> None:
        self.balances.deposit(account, asset, amount)

    def submit(self, request: OrderRequest, *, ts: int) -> Order:
        """Place a paper order at time ``ts`` (epoch ms); the order after taking, or a
        ``rejected`` order naming the rule (nothing else changes then)."""
        if request.client_order_id is not None:
            known = self._client_ids.get((request.account, request.client_order_id))
            if known is not None:
                return self._orders[known].view
        try:
            return self._submit(request, ts)
        except OrderRejected as exc:
            return replace(Order.from_request(request, order_id="", status="rejected", ts=ts),
                           reject_rule=exc.rule, reject_reason=exc.message)  # fmt: skip

    def cancel(self, order_id: str, *, ts: int) -> Order:
        """Cancel a resting order (its reservation is released); ``OrderRejected`` with
        rule ``unknown_order`` or ``not_open`` otherwise."""
        live = self._orders.get(order_id)
        if live is None:
            raise OrderRejected("unknown_order", f"no order {order_id}", field="order_id")
        if not live.view.is_open:
            raise OrderRejected("not_open", f"order {order_id} is {live.view.status}",
                                field="order_id")  # fmt: skip
        self._change(live, ts, status="cancelled", close_reason="client")
        return live.view

    def on_book(self, book: OrderBook) -> list[Fill]:
        """Take a new snapshot of one of this exchange's markets and fill the resting
        orders it crosses (at the book's time). A book of another exchange, an unknown
        symbol, or one older than the held one (by time, then sequence) changes nothing."""
        instrument = self.instruments.get(book.symbol)
        held = self._books.get(book.symbol)
        if book.exchange != self.exchange or instrument is None:
            return []
        if held is not None and (book.ts, book.sequence) < (held.ts, held.sequence):
            return []
        fresh = _Book(book.ts, book.sequence, book_levels(book.bids), book_levels(book.asks))
        self._books[book.symbol] = fresh
        fills: list[Fill] = []
        resting = self._resting.get(book.symbol, {})
        for order_id in sorted(resting):
            live = resting[order_id]
            view = live.view
            price = view.price
            assert price is not None  # only limit orders rest
            if view.side == "buy":
                crossed = bool(fresh.asks) and fresh.asks[0][0] <= price
            else:
                crossed = bool(fresh.bids) and fresh.bids[0][0] >= price
            if crossed:
                fills.append(self._fill(live, price, view.remaining, "maker", book.ts))
        return fills

    # ---- internals ----------------------------------------------------------------------

    def _submit(self, request: OrderRequest, ts: int) -> Order:
        instrument = self.instruments.get(request.symbol)
        if instrument is None:
            raise OrderRejected("unknown_symbol", f"no instrument {request.symbol} on "
                                f"{self.venue}", field="symbol")  # fmt: skip
        if request.type not in ("limit", "market"):
            raise OrderRejected("order_type", f"{self.venue} takes limit and market orders, "
                                f"not {request.type}", field="type")  # fmt: skip
        instrument.validate(request)
        book = self._books.get(request.symbol)
        if book is not None and ts - book.ts > self.max_age_ms:
            book = None
        takes_only = request.type == "market" or request.time_in_force != "gtc"
        if book is None and takes_only:
            raise OrderRejected("no_book", f"no order book of {request.symbol} on "
                                f"{self.exchange} newer than {self.max_age_ms} ms",
                                field="symbol")  # fmt: skip
        levels = [] if book is None else (book.asks if request.side == "buy" else book.bids)
        takes, left = walk_book(levels, request.quantity, side=request.side, limit=request.price)
        if (request.time_in_force == "fok" and left) or request.post_only:
            takes = []
        self._reserve(request, instrument, takes, ts)
        self._order_seq += 1
        order_id = f"PO{self._order_seq:010d}"
        live = _Live(Order.from_request(request, order_id=order_id, status="new", ts=ts),
                     instrument)  # fmt: skip
        self._orders[order_id] = live
        self._by_account.setdefault(request.account, []).append(live)
        if request.client_order_id is not None:
            self._client_ids[(request.account, request.client_order_id)] = order_id
        self._change(live, ts, status="accepted")
        if request.post_only and left != request.quantity:
            self._change(live, ts, status="expired", close_reason="post_only_would_take")
            return live.view
        if request.time_in_force == "fok" and left:
            self._change(live, ts, status="expired", close_reason="fok_not_filled")
            return live.view
        for price, quantity in takes:
            self._fill(live, price, quantity, "taker", ts)
        if book is not None:
            _consume(levels, takes)
        if live.view.is_open and takes_only:
            self._change(live, ts, status="expired", close_reason="ioc_remainder")
        elif live.view.is_open:
            self._resting.setdefault(request.symbol, {})[order_id] = live
        return live.view

    def _reserve(self, request: OrderRequest, instrument: Instrument, takes: list[Level],
                 ts: int) -> None:  # fmt: skip
        """Hold the order's funds under the id it is about to get."""
        order_id = f"PO{self._order_seq + 1:010d}"
        if request.side == "sell":
            asset, amount = instrument.base, request.quantity
        else:
            asset = instrument.quote
            with localcontext(EXACT):
                if request.price is not None:
                    fee = max(instrument.taker_fee, instrument.maker_fee, _ZERO)
                    amount = request.price * request.quantity * (_ONE + fee)
                else:
                    cost = sum((price * quantity for price, quantity in takes), _ZERO)
                    amount = cost * (_ONE + max(instrument.taker_fee, _ZERO))
        if amount > _ZERO:  # a market buy meeting an empty side holds nothing
            self.balances.reserve(order_id, asset, amount, account=request.account)

    def _fill(self, live: _Live, price: Decimal, quantity: Decimal, liquidity: Liquidity,
              ts: int) -> Fill:  # fmt: skip
        instrument, view = live.instrument, live.view
        self._trade_seq += 1
        rate = instrument.maker_fee if liquidity == "maker" else instrument.taker_fee
        with localcontext(EXACT):
            notional = price * quantity
            fee = notional * rate
            fill = Fill(f"PT{self._trade_seq:010d}", view.order_id, view.account, view.symbol,
                        view.side, price, quantity, fee, instrument.quote, liquidity, ts,
                        venue=self.venue)  # fmt: skip
            self.balances.settle_fill(fill, base=instrument.base, quote=instrument.quote)
            self._positions.apply(fill)
            self._traded[(view.account, view.symbol)] = None
            self._fills.setdefault(view.account, []).append(fill)
            self.updates.append({"event": "fill", **fill_dict(fill)})
            live.notional += notional
            filled = view.filled + quantity
            done = filled == view.quantity
            self._change(live, ts, status="filled" if done else "partially_filled",
                         filled=filled, average_price=live.notional / filled,
                         fees=view.fees + fee)  # fmt: skip
            if not done and view.side == "buy" and view.price is not None:
                # Keep only what the rest needs at the limit (a taker may fill below it).
                fee_rate = max(instrument.taker_fee, instrument.maker_fee, _ZERO)
                need = view.price * (view.quantity - filled) * (_ONE + fee_rate)
                excess = self.balances.reservation(view.order_id) - need
                if excess > _ZERO:
                    self.balances.release(view.order_id, excess)
        return fill

    def _change(self, live: _Live, ts: int, *, status: OrderStatus, **fields: Any) -> None:
        """Move the order on (a final status releases its reservation) and publish it."""
        check_transition(live.view, status)
        live.view = replace(live.view, status=status, updated_ts=ts, **fields)
        if not live.view.is_open:
            self.balances.release(live.view.order_id)
            self._resting.get(live.view.symbol, {}).pop(live.view.order_id, None)
        self.updates.append({"event": "order", **order_dict(live.view)})


def _consume(levels: list[Level], takes: list[Level]) -> None:
    """Take what a taker filled out of the local book side (``takes`` is its best-first
    prefix, as ``walk_book`` returned it)."""
    with localcontext(EXACT):
        for price, quantity in takes:
            level_price, size = levels[0]
            assert level_price == price, f"took {plain(price)} but the book shows {level_price}"
            if quantity >= size:
                levels.pop(0)
            else:
                levels[0] = (level_price, size - quantity)
