"""The paper venue ``paper:EXCHANGE``: orders filled against a real exchange's order book.

The book is the exchange's L2 snapshot as it arrives on the market-data feed
(``set_book`` / ``on_book``); no order ever reaches the exchange. Rules, all
deterministic (the same commands and books in the same order give the same fills):

- **Taking** walks the opposite side best first (``walk_book``): asks for a buy,
  bids for a sell, each level at its own price, so a large order pays the
  slippage of the book's depth. What a taker consumed is taken out of the local
  copy of the book until the next snapshot replaces it, so two orders never both
  take the same displayed quantity.
- **Market** orders take what the book holds (up to a protection price when the
  order manager gives one); the rest expires (``ioc_remainder``). **Limit**
  orders take what crosses their price as taker; IOC lets the rest expire, FOK
  fills all at once or nothing (``fok_not_filled``), post-only expires if it
  would take (``post_only_would_take``), GTC rests.
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

Deciding and applying are separate, as in the internal venue, so the order
manager (``trading/oms.py``) can log a decision before applying it and replay
the log without books: ``admit`` (this venue's rules) and ``walk`` (what the
order takes now) decide; ``apply_submit``, ``apply_fills`` and ``apply_cancel``
change the state from what was decided. ``submit``, ``cancel`` and ``on_book``
do both, for a venue used on its own.

Funds are paper money per account (``Balances``, shared with the order
manager's other venues when it runs this one): a sell reserves its base
quantity; a limit buy price x quantity x (1 + the larger fee); a market buy the
exact cost of the fills the walk found, with the taker fee (on its own) or what
pre-trade risk reserved at the protection price (in the order manager). Fees are
the taker or maker rate x notional, in the quote asset, at the exchange's own rates
(``fees``; default the instrument's): an order keeps the rates it was placed at
(``apply_submit`` takes them, as its log record carries them). On its own,
order ids are ``PO`` + sequence and trade ids ``PT`` + sequence; every order
change and fill is appended to ``updates`` in the internal venue's shape
(``take_updates``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal, localcontext
from typing import Any

from cryptodesk.domain.market import OrderBook
from cryptodesk.domain.orders import Fill, Liquidity, OrderRequest, OrderStatus, Side
from cryptodesk.trading.balances import Balances
from cryptodesk.trading.errors import OrderRejected
from cryptodesk.trading.instruments import EXACT, Fees, Instrument
from cryptodesk.trading.order_state import Order, OrderKeeping, OrderRecord, fill_dict
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


class _Live(OrderRecord):
    """A paper order (``OrderRecord``) and its market's instrument."""

    __slots__ = ("instrument",)

    def __init__(self, request: OrderRequest, order_id: str, ts: int, instrument: Instrument):
        super().__init__(request, order_id, ts)
        self.instrument = instrument


@dataclass(frozen=True, slots=True)
class Walk:
    """What an order takes now: ``takes`` (price, quantity) best first, and the
    reason it ends before taking anything (post-only or FOK), if it does."""

    takes: list[Level]
    early_close: str | None = None


class PaperVenue(OrderKeeping):
    """Paper orders of every account against ``exchange``'s live books, at ``fees`` (the
    exchange's rates; None: each instrument's). ``positions`` and ``trade_id`` let an
    order manager share its positions and trade numbering."""

    def __init__(
        self,
        exchange: str,
        instruments: Mapping[str, Instrument],
        *,
        balances: Balances | None = None,
        positions: Positions | None = None,
        trade_id: Callable[[], str] | None = None,
        max_age_ms: int = 10_000,
        fees: Fees | None = None,
    ) -> None:
        self.exchange = exchange
        self.venue = f"paper:{exchange}"
        self.instruments = {name: i.charging(fees) for name, i in instruments.items()}
        self.balances = balances if balances is not None else Balances()
        self.max_age_ms = max_age_ms
        self.updates: list[dict[str, Any]] = []
        self._books: dict[str, _Book] = {}
        self._orders: dict[str, _Live] = {}
        self._by_account: dict[str, list[_Live]] = {}
        self._resting: dict[str, dict[str, _Live]] = {}  # symbol -> order id -> order
        self._client_ids: dict[tuple[str, str], str] = {}
        self._fills: dict[str, list[Fill]] = {}
        self._positions = positions if positions is not None else Positions()
        self.traded: dict[tuple[str, str], None] = {}  # (account, symbol) with fills
        self._trade_id = trade_id or self._own_trade_id
        self._order_seq = 0
        self._trade_seq = 0

    # ---- queries ------------------------------------------------------------------------

    def orders(self, account: str) -> list[Order]:
        """The account's orders, oldest first (rejections are not kept)."""
        return [live.view for live in self._by_account.get(account, ())]

    def open_orders(self, account: str | None = None, symbol: str | None = None) -> list[Order]:
        views = [live.view for orders in self._resting.values() for live in orders.values()]
        return sorted((v for v in views if account in (None, v.account)
                       and symbol in (None, v.symbol)), key=lambda v: v.order_id)  # fmt: skip

    def fills(self, account: str) -> list[Fill]:
        return list(self._fills.get(account, ()))

    def positions(self, account: str) -> list[Position]:
        return [self._positions.get(a, s) for a, s in self.traded if a == account]

    def book(self, symbol: str) -> tuple[list[Level], list[Level]] | None:
        """The local (bids, asks) of ``symbol``: the last snapshot less what takers
        consumed from it; None before the first."""
        held = self._books.get(symbol)
        return None if held is None else (list(held.bids), list(held.asks))

    def known_client_id(self, account: str, client_order_id: str) -> Order | None:
        order_id = self._client_ids.get((account, client_order_id))
        return None if order_id is None else self._orders[order_id].view

    # ---- deciding -----------------------------------------------------------------------

    def admit(self, request: OrderRequest, ts: int) -> Decimal | None:
        """This venue's rules for ``request`` at ``ts`` (``OrderRejected`` naming the rule):
        a known instrument, a limit or market order, a valid price and quantity, a fresh
        book for an order that must take. The best opposite price of a fresh book (the
        reference for pre-trade risk), or None."""
        instrument = self.instruments.get(request.symbol)
        if instrument is None:
            raise OrderRejected("unknown_symbol", f"no instrument {request.symbol} on "
                                f"{self.venue}", field="symbol")  # fmt: skip
        if request.type not in ("limit", "market"):
            raise OrderRejected("order_type", f"{self.venue} takes limit and market orders, "
                                f"not {request.type}", field="type")  # fmt: skip
        instrument.validate(request)
        levels = self.fresh_side(request, ts)
        if levels is None and _takes_only(request):
            raise OrderRejected("no_book", f"no order book of {request.symbol} on "
                                f"{self.exchange} newer than {self.max_age_ms} ms",
                                field="symbol")  # fmt: skip
        return levels[0][0] if levels else None

    def walk(self, request: OrderRequest, ts: int, limit: Decimal | None) -> Walk:
        """What ``request`` takes from the fresh book at ``ts``, no worse than ``limit``."""
        levels = self.fresh_side(request, ts) or []
        takes, left = walk_book(levels, request.quantity, side=request.side, limit=limit)
        if request.post_only and left != request.quantity:
            return Walk([], "post_only_would_take")
        if request.time_in_force == "fok" and left:
            return Walk([], "fok_not_filled")
        return Walk([] if request.post_only else takes)

    def crossed(self, symbol: str) -> list[tuple[str, Decimal]]:
        """The resting orders of ``symbol`` the held book crosses, with their fill price
        (their own), in order id order."""
        held = self._books.get(symbol)
        if held is None:
            return []
        out: list[tuple[str, Decimal]] = []
        resting = self._resting.get(symbol, {})
        for order_id in sorted(resting):
            price = resting[order_id].price
            assert price is not None  # only limit orders rest
            if resting[order_id].request.side == "buy":
                crossed = bool(held.asks) and held.asks[0][0] <= price
            else:
                crossed = bool(held.bids) and held.bids[0][0] >= price
            if crossed:
                out.append((order_id, price))
        return out

    def set_book(self, book: OrderBook) -> bool:
        """Hold a new snapshot of one of this exchange's markets; False (nothing changes)
        for another exchange's book, an unknown symbol, or one not newer than the held one
        (by time, then sequence: the same snapshot again must not restore what takers
        consumed from it)."""
        held = self._books.get(book.symbol)
        if book.exchange != self.exchange or book.symbol not in self.instruments:
            return False
        if held is not None and (book.ts, book.sequence) <= (held.ts, held.sequence):
            return False
        self._books[book.symbol] = _Book(book.ts, book.sequence, book_levels(book.bids),
                                         book_levels(book.asks))  # fmt: skip
        return True

    def reservation(self, request: OrderRequest, takes: Sequence[Level]) -> tuple[str, Decimal]:
        """What an order on its own holds: (asset, amount)."""
        instrument = self.instruments[request.symbol]
        if request.side == "sell":
            return instrument.base, request.quantity
        with localcontext(EXACT):
            if request.price is not None:
                fee = max(instrument.taker_fee, instrument.maker_fee, _ZERO)
                return instrument.quote, request.price * request.quantity * (_ONE + fee)
            cost = sum((price * quantity for price, quantity in takes), _ZERO)
            return instrument.quote, cost * (_ONE + max(instrument.taker_fee, _ZERO))

    # ---- applying -----------------------------------------------------------------------

    def apply_submit(self, request: OrderRequest, order_id: str, ts: int, walk: Walk,
                     reserve: tuple[str, Decimal], fees: Fees | None = None) -> Order:  # fmt: skip
        """Place the order as decided: hold ``reserve`` (unless already held under
        ``order_id``), take ``walk.takes`` as taker, then expire or rest the rest; its
        fills pay ``fees`` (None: the venue's rates now)."""
        asset, amount = reserve
        if amount > _ZERO and not self.balances.reservation(order_id):
            self.balances.reserve(order_id, asset, amount, account=request.account)
        instrument = self.instruments[request.symbol].charging(fees)
        live = _Live(replace(request, venue=self.venue), order_id, ts, instrument)
        self._orders[order_id] = live
        self._by_account.setdefault(request.account, []).append(live)
        if request.client_order_id is not None:
            self._client_ids[(request.account, request.client_order_id)] = order_id
        self._change(live, ts, "accepted")
        if walk.early_close is not None:
            live.close_reason = walk.early_close
            self._change(live, ts, "expired")
            return live.view
        for price, quantity in walk.takes:
            self._fill(live, price, quantity, "taker", ts)
        held = self._books.get(request.symbol)
        if held is not None:
            _consume(held.asks if request.side == "buy" else held.bids, walk.takes)
        if live.is_open and _takes_only(request):
            live.close_reason = "ioc_remainder"
            self._change(live, ts, "expired")
        elif live.is_open:
            self._resting.setdefault(request.symbol, {})[order_id] = live
        return live.view

    def apply_fills(self, fills: Sequence[tuple[str, Decimal]], ts: int) -> list[Fill]:
        """Fill each resting ``(order_id, price)`` fully as maker at ``price``."""
        out = []
        for order_id, price in fills:
            live = self._orders[order_id]
            out.append(self._fill(live, price, live.remaining, "maker", ts))
        return out

    def apply_cancel(self, order_id: str, ts: int, reason: str = "client") -> Order:
        live = self._orders[order_id]
        live.close_reason = reason
        self._change(live, ts, "cancelled")
        return live.view

    # ---- on its own ---------------------------------------------------------------------

    def deposit(self, account: str, asset: str, amount: Decimal) -> None:
        self.balances.deposit(account, asset, amount)

    def submit(self, request: OrderRequest, *, ts: int) -> Order:
        """Place a paper order at time ``ts`` (epoch ms); the order after taking, or a
        ``rejected`` order naming the rule (nothing else changes then)."""
        request = replace(request, venue=self.venue)
        if request.client_order_id is not None:
            known = self.known_client_id(request.account, request.client_order_id)
            if known is not None:
                return known
        order_id = f"PO{self._order_seq + 1:010d}"
        try:
            self.admit(request, ts)
            walk = self.walk(request, ts, request.price)
            asset, amount = self.reservation(request, walk.takes)
            if amount > _ZERO:  # a market buy meeting an empty side holds nothing
                self.balances.reserve(order_id, asset, amount, account=request.account)
        except OrderRejected as exc:
            return Order.rejected(request, exc, ts)
        self._order_seq += 1
        return self.apply_submit(request, order_id, ts, walk, (asset, amount))

    def cancel(self, order_id: str, *, ts: int) -> Order:
        """Cancel a resting order (its reservation is released); ``OrderRejected`` with
        rule ``unknown_order`` or ``not_open`` otherwise."""
        live = self._orders.get(order_id)
        if live is None:
            raise OrderRejected("unknown_order", f"no order {order_id}", field="order_id")
        if not live.is_open:
            raise OrderRejected("not_open", f"order {order_id} is {live.status}",
                                field="order_id")  # fmt: skip
        return self.apply_cancel(order_id, ts)

    def on_book(self, book: OrderBook) -> list[Fill]:
        """Take a new snapshot and fill the resting orders it crosses (at the book's
        time); a book ``set_book`` refuses changes nothing."""
        if not self.set_book(book):
            return []
        return self.apply_fills(self.crossed(book.symbol), book.ts)

    # ---- internals ----------------------------------------------------------------------

    def fresh_side(self, request: OrderRequest, ts: int) -> list[Level] | None:
        """The side ``request`` would take from (best first), if the held book is fresh
        at ``ts``; the venue's own list, not a copy."""
        book = self._books.get(request.symbol)
        if book is None or ts - book.ts > self.max_age_ms:
            return None
        return book.asks if request.side == "buy" else book.bids

    def _own_trade_id(self) -> str:
        self._trade_seq += 1
        return f"PT{self._trade_seq:010d}"

    def _fill(self, live: _Live, price: Decimal, quantity: Decimal, liquidity: Liquidity,
              ts: int) -> Fill:  # fmt: skip
        instrument, request = live.instrument, live.request
        account, symbol, side = request.account, request.symbol, request.side
        rate = instrument.maker_fee if liquidity == "maker" else instrument.taker_fee
        notional = EXACT.multiply(price, quantity)
        fee = EXACT.multiply(notional, rate)
        fill = Fill(self._trade_id(), live.order_id, account, symbol, side, price, quantity, fee,
                    instrument.quote, liquidity, ts, venue=self.venue)  # fmt: skip
        self.balances.settle_fill(fill, base=instrument.base, quote=instrument.quote)
        self._positions.apply(fill)
        self.traded[(account, symbol)] = None
        self._fills.setdefault(account, []).append(fill)
        self.updates.append({"event": "fill", **fill_dict(fill)})
        filled = EXACT.add(live.filled, quantity)
        live.add_fill(filled, notional, fee)
        done = filled == live.quantity
        self._change(live, ts, "filled" if done else "partially_filled")
        if not done and side == "buy" and live.price is not None:
            # Keep only what the rest needs at the limit (a taker may fill below it).
            fee_rate = max(instrument.taker_fee, instrument.maker_fee, _ZERO)
            with localcontext(EXACT):
                need = live.price * (live.quantity - filled) * (_ONE + fee_rate)
                excess = self.balances.reservation(live.order_id) - need
            if excess > _ZERO:
                self.balances.release(live.order_id, excess)
        return fill

    def _change(self, live: _Live, ts: int, status: OrderStatus) -> None:
        """Move the order on (a final status releases its reservation) and publish it;
        the fields that change with it are set before."""
        live.move(ts, status)
        if not live.is_open:
            self.balances.release(live.order_id)
            self._resting.get(live.request.symbol, {}).pop(live.order_id, None)
        self.updates.append(live.update())


def _takes_only(request: OrderRequest) -> bool:
    return request.type == "market" or request.time_in_force != "gtc"


def _consume(levels: list[Level], takes: Sequence[Level]) -> None:
    """Take what a taker filled out of the local book side (``takes`` is its best-first
    prefix, as ``walk_book`` returned it). A level that no longer matches (the book was
    replaced since the order was decided elsewhere) is left alone."""
    with localcontext(EXACT):
        for price, quantity in takes:
            if not levels or levels[0][0] != price:
                return
            size = levels[0][1]
            if quantity >= size:
                levels.pop(0)
            else:
                levels[0] = (price, size - quantity)
