"""The order manager: the one gate in front of the matching engines.

``submit`` validates an order (``Instrument``) and passes it through pre-trade
risk (which reserves its funds), appends the command to the ``OrderLog``, and
only then applies it to the ``Venue`` (``trading/venue.py``: matching, fills,
positions, balance settlement). A rejection is never an exception: ``submit``
returns an order with status ``rejected`` and the rule broken, and nothing else
changes (nothing is logged). A repeated ``(account, client_order_id)`` returns
the first order unchanged. ``cancel``, ``amend``, ``deposit``, ``kill`` and
``revive`` are logged the same way, so ``replay`` rebuilds the venue exactly from
the log, without re-running rate limits or risk decisions.

An order whose ``venue`` is ``paper:EXCHANGE`` passes the same validation and
risk (its reference price is the best opposite price of that exchange's fresh
book, its position the account's across venues); what it takes from the book is
decided before it is logged, so the record carries it. ``on_book`` hands the
paper venue a new snapshot and logs the resting orders it fills
(``paper_fills``). Paper orders are not amended (cancel and place again).

A market order with venue ``best`` is routed (``trading/router.py``) to the venue
whose book fills the whole quantity at the best price net of its taker fee (a
paper venue's are its exchange's, ``venue_fees``): the internal book and every
paper venue's fresh book; the order (and its record) then names the venue chosen.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from decimal import Decimal

from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.market import OrderBook
from cryptodesk.domain.orders import ORDER_TYPES, SIDES, TIMES_IN_FORCE, OrderRequest, Side
from cryptodesk.trading.errors import OrderRejected
from cryptodesk.trading.instruments import Fees, Grid, Instrument, plain
from cryptodesk.trading.matching import SelfTrade
from cryptodesk.trading.order_log import OrderLog, Record
from cryptodesk.trading.order_state import Order, order_dict
from cryptodesk.trading.pretrade import PreTradeRisk
from cryptodesk.trading.router import best_venue
from cryptodesk.trading.venue import Live, Venue

_ZERO = Decimal(0)


class OrderManager(Venue):
    """Commands in, through validation, risk and the log; state as in ``Venue``."""

    def __init__(
        self,
        instruments: Mapping[str, Instrument],
        risk: PreTradeRisk,
        log: OrderLog,
        *,
        clock: Callable[[], int],
        self_trade: SelfTrade = "cancel_incoming",
        venue: str = "internal",
        paper: Sequence[str] = (),
        paper_max_age_ms: int = 10_000,
        venue_fees: Mapping[str, Fees] | None = None,
    ) -> None:
        super().__init__(instruments, risk, self_trade=self_trade, venue=venue, paper=paper,
                         paper_max_age_ms=paper_max_age_ms, venue_fees=venue_fees)  # fmt: skip
        self.log = log
        self._clock = clock

    @classmethod
    def replay(
        cls,
        instruments: Mapping[str, Instrument],
        risk_factory: Callable[[], PreTradeRisk],
        log: OrderLog,
        *,
        clock: Callable[[], int] | None = None,
        self_trade: SelfTrade = "cancel_incoming",
        venue: str = "internal",
        paper: Sequence[str] = (),
        paper_max_age_ms: int = 10_000,
        venue_fees: Mapping[str, Fees] | None = None,
    ) -> OrderManager:
        """A manager rebuilt from ``log`` (which it then keeps appending to). Records are
        applied as they were decided: no rate limit or risk check runs again, and each
        order reserves what its record says. Without ``clock`` the time stays at the
        last record's. The rebuilt manager starts with no pending ``updates``."""
        records = list(log.records())
        last_ts = int(records[-1]["ts"]) if records else 0
        manager = cls(instruments, risk_factory(), log, clock=clock or (lambda: last_ts),
                      self_trade=self_trade, venue=venue, paper=paper,
                      paper_max_age_ms=paper_max_age_ms, venue_fees=venue_fees)  # fmt: skip
        for record in records:
            manager.apply(record)
        manager.take_updates()
        return manager

    # ---- commands -----------------------------------------------------------------------

    def submit(self, request: OrderRequest) -> Order:
        """Place an order; the order as it stands after matching (or rejected)."""
        if request.client_order_id is not None:
            known = self.known_client_id(request.account, request.client_order_id)
            if known is not None:
                return known
        ts = self._clock()
        order_id = f"O{self._order_seq + 1:010d}"
        grid: Grid | None = None
        try:
            if request.venue == "best":
                request = replace(request, venue=self._route(request, ts))
            if request.venue == "internal":
                record, grid, protection = self._admit(request, order_id, ts)
            else:
                record = self._admit_paper(request, order_id, ts)
        except OrderRejected as error:
            rejected = Order.rejected(request, error, ts)
            self.updates.append({"event": "order", **order_dict(rejected)})
            return rejected
        try:
            logged = self._record(record)
        except BaseException:
            self.risk.balances.release(order_id)  # never logged: it never happened
            raise
        if grid is None:
            self.apply(logged)
            return self._view(order_id)
        # What ``apply`` would do with the record, from what was decided (no re-parsing).
        self._seq = logged["seq"]
        return self._place(request, order_id, ts, grid, protection).view

    def cancel(self, account: str, order_id: str) -> Order:
        """Cancel an open order; an order already final is returned unchanged."""
        live = self._orders.get(order_id)
        if live is None or live.request.account != account:  # a paper order, or no order
            view = self._owned_view(account, order_id)
            if view.is_open:
                self.apply(self._record({"ts": self._clock(), "type": "cancel",
                                          "order_id": order_id, "venue": view.venue}))  # fmt: skip
            return self._view(order_id)
        if live.is_open:
            self.apply(self._record({"ts": self._clock(), "type": "cancel", "order_id": order_id}))
        return live.view

    def on_book(self, book: OrderBook) -> int:
        """Hand ``book`` to the paper venue of its exchange (if this manager runs one) and
        fill, logged, the resting orders it crosses; how many filled."""
        paper = self.paper.get(f"paper:{book.exchange}")
        if paper is None or not paper.set_book(book):
            return 0
        crossed = paper.crossed(book.symbol)
        if crossed:
            fills = [[order_id, str(price)] for order_id, price in crossed]
            self.apply(self._record({"ts": self._clock(), "type": "paper_fills",
                                      "venue": paper.venue, "fills": fills}))  # fmt: skip
        return len(crossed)

    def amend(
        self,
        account: str,
        order_id: str,
        *,
        price: Decimal | None = None,
        quantity: Decimal | None = None,
    ) -> Order:
        """Change a resting order's price and/or total quantity (which must stay above what
        is filled). A smaller quantity keeps the order's place in the queue; anything else
        re-queues it. Raises ``OrderRejected`` and changes nothing if the amend is refused."""
        if self._owned_view(account, order_id).venue != "internal":
            raise OrderRejected("not_amendable", f"order {order_id} is a paper order: cancel "
                                "it and place a new one", field="order_id")  # fmt: skip
        live = self._owned(account, order_id)
        view, instrument = live.view, live.instrument
        if not view.is_open:
            raise OrderRejected("order_closed", f"order {order_id} is {view.status}",
                                field="order_id")  # fmt: skip
        engine = self._engines[view.symbol]
        if engine.order(live.oid) is None or view.price is None:
            raise OrderRejected("not_amendable", f"order {order_id} is not resting on the book",
                                field="order_id")  # fmt: skip
        if price is None and quantity is None:
            raise OrderRejected("invalid_amend", "an amend needs a new price or quantity",
                                field="price")  # fmt: skip
        new_price = view.price if price is None else price
        new_quantity = view.quantity if quantity is None else quantity
        amended = OrderRequest(account, view.symbol, view.side, "limit", new_quantity,
                               price=new_price, reduce_only=view.reduce_only)  # fmt: skip
        instrument.validate(amended)
        if new_price != view.price or new_quantity > view.quantity:
            # Re-priced or grown: the rules of a new order (a shrink only lowers risk).
            position = self.position_of(account, view.symbol)
            last = None if engine.last_price is None else instrument.price(engine.last_price)
            others = [o for o in self.open_orders(account, view.symbol) if o.order_id != order_id]
            remaining = replace(amended, quantity=new_quantity - view.filled)
            self.risk.check_rules(remaining, instrument, last_price=last, position=position,
                                  open_orders=others)  # fmt: skip
        lots = instrument.to_lots(new_quantity)
        if lots <= live.filled_lots:
            raise OrderRejected("invalid_quantity", f"quantity {plain(new_quantity)} must be "
                                f"above the filled {plain(view.filled)}",
                                field="quantity")  # fmt: skip
        ticks = instrument.to_ticks(new_price)
        best = engine.best_ask() if view.side == "buy" else engine.best_bid()
        if view.post_only and best is not None and (ticks - best) * _sign(view.side) >= 0:
            raise OrderRejected("post_only", f"price {plain(new_price)} would take liquidity",
                                field="price")  # fmt: skip
        need = self.need(live, lots - live.filled_lots, new_price)
        balances = self.risk.balances
        asset = instrument.quote if view.side == "buy" else instrument.base
        free = balances.available(account, asset) + balances.reservation(order_id)
        if need > free:
            raise OrderRejected("insufficient_balance", f"quantity needs {plain(need)} {asset} "
                                f"but {account} has {plain(free)}", field="quantity")  # fmt: skip
        self.apply(self._record({"ts": self._clock(), "type": "amend", "order_id": order_id,
                                  "price": str(new_price), "quantity": str(new_quantity),
                                  "reserve_amount": str(need),
                                  "self_trade": self._self_trade}))  # fmt: skip
        return live.view

    def deposit(self, account: str, asset: str, amount: Decimal) -> None:
        """Credit ``amount`` of ``asset`` to ``account`` (logged, so a replay has it too)."""
        if not isinstance(amount, Decimal) or not amount.is_finite() or amount <= _ZERO:
            raise DomainError(f"amount must be a positive Decimal, got {amount!r}", field="amount")
        self.apply(self._record({"ts": self._clock(), "type": "deposit", "account": account,
                                  "asset": asset, "amount": str(amount)}))  # fmt: skip

    def kill(self, account: str | None = None) -> list[Order]:
        """Stop new orders of ``account`` (None: everyone) and cancel its open orders;
        the orders cancelled."""
        ids = [o.order_id for o in self.open_orders(account)]
        self.apply(self._record({"ts": self._clock(), "type": "kill", "account": account}))
        return [self._view(order_id) for order_id in ids]

    def revive(self, account: str | None = None) -> None:
        """Undo ``kill`` (see ``PreTradeRisk.revive``)."""
        self.apply(self._record({"ts": self._clock(), "type": "revive", "account": account}))

    # ---- deciding -----------------------------------------------------------------------

    def _admit(
        self, request: OrderRequest, order_id: str, ts: int
    ) -> tuple[Record, Grid, Decimal | None]:
        """Validate and risk-check ``request`` (its funds are reserved by then): its record,
        its grid and its protection price."""
        _check_choices(request)
        instrument = self.instruments.get(request.symbol)
        if instrument is None:
            raise OrderRejected("unknown_symbol", f"symbol {request.symbol} is not traded here",
                                field="symbol")  # fmt: skip
        engine = self._engines.get(request.symbol)  # a rejection must not create a book
        ticks = None if engine is None else engine.last_price
        last = None if ticks is None else instrument.price(ticks)
        grid, protection = self._check_risk(request, instrument, order_id, last)
        reserved = self.risk.balances.reservation(order_id)
        record = _submit_record(request, order_id, ts, instrument, protection, reserved)
        record["self_trade"] = self._self_trade
        return record, grid, protection

    def _admit_paper(self, request: OrderRequest, order_id: str, ts: int) -> Record:
        """As ``_admit`` for a ``paper:EXCHANGE`` order; the record carries what it takes."""
        paper = self.paper.get(request.venue)
        if paper is None:
            venues = ", ".join(["internal", *self.paper])
            raise OrderRejected("unknown_venue", f"venue {request.venue!r} is not one of "
                                f"{venues}", field="venue")  # fmt: skip
        _check_choices(request)
        last = paper.admit(request, ts)
        instrument = paper.instruments[request.symbol]  # at the exchange's fees
        _, protection = self._check_risk(request, instrument, order_id, last)
        walk = paper.walk(request, ts, request.price if protection is None else protection)
        record = _submit_record(request, order_id, ts, instrument, protection,
                                self.risk.balances.reservation(order_id))  # fmt: skip
        record["venue"] = request.venue
        record["takes"] = [[str(price), str(quantity)] for price, quantity in walk.takes]
        record["early_close"] = walk.early_close
        return record

    def _check_risk(self, request: OrderRequest, instrument: Instrument, order_id: str,
                    last: Decimal | None) -> tuple[Grid, Decimal | None]:  # fmt: skip
        """Pre-trade risk for a new order on any venue (its funds are reserved under
        ``order_id`` by then); its grid and its protection price: the worst a market
        order (from ``last``) or a stop-market order (from its stop) may fill at, else
        None."""
        account, symbol = request.account, request.symbol
        grid = self.risk.check(request, instrument, order_id=order_id, last_price=last,
                               position=self.position_of(account, symbol),
                               open_orders=lambda: self.open_orders(account, symbol))  # fmt: skip
        if request.type == "market" and last is not None:
            return grid, self.risk.protection_price(symbol, request.side, last)
        if request.type == "stop_market" and request.stop_price is not None:
            return grid, self.risk.protection_price(symbol, request.side, request.stop_price)
        return grid, None

    def _route(self, request: OrderRequest, ts: int) -> str:
        """The venue a ``best`` market order goes to (see the module docstring)."""
        if request.type != "market":
            raise OrderRejected("invalid_venue", "venue best routes market orders only",
                                field="venue")  # fmt: skip
        instrument = self.instruments.get(request.symbol)
        if instrument is None:
            raise OrderRejected("unknown_symbol", f"symbol {request.symbol} is not traded here",
                                field="symbol")  # fmt: skip
        books: dict[str, list[tuple[Decimal, Decimal]]] = {}
        fees: dict[str, Decimal] = {}
        engine = self._engines.get(request.symbol)
        if engine is not None:
            bids, asks = engine.l2()
            levels = asks if request.side == "buy" else bids
            books["internal"] = [(instrument.price(p), instrument.quantity(q)) for p, q in levels]
            fees["internal"] = instrument.taker_fee
        for venue, paper in self.paper.items():
            side = paper.fresh_side(request, ts)
            if side is not None:
                books[venue] = list(side)
                fees[venue] = paper.instruments[request.symbol].taker_fee
        return best_venue(request.side, request.quantity, books, fees)

    def _record(self, record: Record) -> Record:
        record = {"seq": self._seq + 1, **record}
        self.log.append(record)
        return record

    def _owned(self, account: str, order_id: str) -> Live:
        live = self._orders.get(order_id)
        if live is None or live.request.account != account:
            raise OrderRejected("unknown_order", f"order_id {order_id} is not an order of "
                                f"{account}", field="order_id")  # fmt: skip
        return live

    def _owned_view(self, account: str, order_id: str) -> Order:
        view = self.order(order_id)
        if view is None or view.account != account:
            raise OrderRejected("unknown_order", f"order_id {order_id} is not an order of "
                                f"{account}", field="order_id")  # fmt: skip
        return view

    def _view(self, order_id: str) -> Order:
        view = self.order(order_id)
        assert view is not None, order_id
        return view


def _check_choices(request: OrderRequest) -> None:
    for name, value, allowed in (("side", request.side, SIDES), ("type", request.type,
                                 ORDER_TYPES), ("time_in_force", request.time_in_force,
                                 TIMES_IN_FORCE)):  # fmt: skip
        if value not in allowed:
            raise OrderRejected(f"invalid_{name}", f"{name} {value!r} is not one of "
                                f"{', '.join(allowed)}", field=name)  # fmt: skip


def _submit_record(request: OrderRequest, order_id: str, ts: int, instrument: Instrument,
                   protection: Decimal | None, reserved: Decimal) -> Record:  # fmt: skip
    return {
        "ts": ts, "type": "submit", "order_id": order_id, "account": request.account,
        "symbol": request.symbol, "side": request.side, "order_type": request.type,
        "quantity": str(request.quantity), "price": _text(request.price),
        "stop_price": _text(request.stop_price), "time_in_force": request.time_in_force,
        "post_only": request.post_only, "reduce_only": request.reduce_only,
        "client_order_id": request.client_order_id, "protection_price": _text(protection),
        "reserve_asset": instrument.quote if request.side == "buy" else instrument.base,
        "reserve_amount": str(reserved),
        "fees": [str(instrument.taker_fee), str(instrument.maker_fee)],
    }  # fmt: skip


def _sign(side: Side) -> int:
    return 1 if side == "buy" else -1


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)
