"""The venue's state (books, orders, fills, positions, balances) and the one way it
changes: applying an accepted command, as recorded in the order log.

Applying is deterministic and decides nothing (``OrderManager`` validates and
risk-checks before it records a command), so applying the same records to a new
``Venue`` gives the same state: that is how the order log is replayed.

Each engine event becomes an order status change, a pair of fills (maker and
taker, fee = notional x the instrument's maker or taker fee, in the quote asset),
a position update and a balance settlement. A reservation never holds more than
the open quantity needs; what is left is released when an order ends. Order ids
are ``O`` + sequence (the engine's integer id is the sequence), trade ids ``T`` +
sequence, times the record's ``ts``. Every order change and fill is appended to
``updates`` for the service layer to publish (``take_updates``), as
``{"event": "order" | "fill", **its fields as JSON values}``.

Orders for ``paper:EXCHANGE`` (one ``PaperVenue`` per exchange named in ``paper``)
are applied to that venue as they were decided (what they took is in the record;
resting ones fill by ``paper_fills`` records), sharing the balances, the positions
(one per account and symbol across venues), the order id and trade id numbering.
A paper venue charges its exchange's rates where ``venue_fees`` (by exchange id)
names them, else the instrument's; each order the rates its record carries.

Market orders go to the book as IOC (or FOK) limits at the risk engine's
protection price, so a fill never costs more than was reserved; a stop-market
order waits as a stop whose triggered order is an IOC at that price, so what
cannot fill within it expires (reason ``protection_price``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext
from typing import Any, cast

from cryptodesk.domain.orders import FINAL_STATUSES, Fill, Liquidity, OrderRequest, OrderStatus
from cryptodesk.trading.instruments import EXACT, Fees, Instrument
from cryptodesk.trading.matching import BUY, SELL, Event, MatchingEngine, SelfTrade
from cryptodesk.trading.order_log import Record
from cryptodesk.trading.order_state import Order, OrderKeeping, OrderRecord
from cryptodesk.trading.paper import PaperVenue, Walk
from cryptodesk.trading.positions import Position, Positions
from cryptodesk.trading.pretrade import PreTradeRisk

_ZERO = Decimal(0)
_ONE = Decimal(1)
# Self-trade prevention and internal fee rates of records from before they were
# recorded: neither was a setting then.
_FIRST_SELF_TRADE: SelfTrade = "cancel_incoming"
_FIRST_FEES = Fees(Decimal("0.001"), Decimal("0.001"))


class Live(OrderRecord):
    """An internal order (``OrderRecord``) and what the venue needs beside it: the
    engine's id and the integer lots."""

    __slots__ = ("filled_lots", "instrument", "lots", "oid", "protection")

    def __init__(
        self,
        request: OrderRequest,
        order_id: str,
        ts: int,
        oid: int,
        instrument: Instrument,
        lots: int,
        protection: Decimal | None,
    ) -> None:
        super().__init__(request, order_id, ts)
        self.oid = oid
        self.instrument = instrument
        self.lots = lots
        self.filled_lots = 0
        self.protection = protection  # market / stop-market: the worst fill price


class Venue(OrderKeeping):
    """Every account's orders, fills and positions, the books, and (through ``risk``)
    the balances. Read it through the queries; change it only with ``apply``."""

    def __init__(
        self,
        instruments: Mapping[str, Instrument],
        risk: PreTradeRisk,
        *,
        self_trade: SelfTrade = "cancel_incoming",
        venue: str = "internal",
        paper: Sequence[str] = (),
        paper_max_age_ms: int = 10_000,
        venue_fees: Mapping[str, Fees] | None = None,
    ) -> None:
        self.instruments = dict(instruments)
        self.risk = risk
        self.venue = venue
        self.updates: list[dict[str, Any]] = []
        self._self_trade: SelfTrade = self_trade
        self._engines: dict[str, MatchingEngine] = {}
        self._orders: dict[str, Live] = {}
        self._by_oid: dict[int, Live] = {}
        self._by_account: dict[str, list[Live]] = {}
        self._open: dict[tuple[str, str], dict[str, Live]] = {}  # (account, symbol)
        self._client_ids: dict[tuple[str, str], str] = {}
        self._fills: dict[str, list[Fill]] = {}
        self._positions = Positions()
        self._traded: dict[tuple[str, str], None] = {}  # (account, symbol) with fills
        self._seq = 0  # of the last record applied
        self._order_seq = 0
        self._trade_seq = 0
        self.paper = {
            f"paper:{exchange}": PaperVenue(
                exchange, self.instruments, balances=risk.balances, positions=self._positions,
                trade_id=self._next_trade_id, max_age_ms=paper_max_age_ms,
                fees=(venue_fees or {}).get(exchange),
            )
            for exchange in paper
        }  # fmt: skip

    # ---- queries ------------------------------------------------------------------------

    def orders(self, account: str, *, status: OrderStatus | None = None) -> list[Order]:
        """The account's orders on every venue, oldest first (rejections are not kept)."""
        views = [live.view for live in self._by_account.get(account, ())]
        for paper in self.paper.values():
            views += paper.orders(account)
        views.sort(key=lambda v: v.order_id)
        return [v for v in views if status is None or v.status == status]

    def order(self, order_id: str) -> Order | None:
        """The order of that id on any venue."""
        live = self._orders.get(order_id)
        if live is not None:
            return live.view
        for paper in self.paper.values():
            found = paper.order(order_id)
            if found is not None:
                return found
        return None

    def known_client_id(self, account: str, client_order_id: str) -> Order | None:
        """The order ``account`` placed earlier with ``client_order_id``, on any venue."""
        order_id = self._client_ids.get((account, client_order_id))
        if order_id is not None:
            return self._orders[order_id].view
        for paper in self.paper.values():
            found = paper.known_client_id(account, client_order_id)
            if found is not None:
                return found
        return None

    def fills(self, account: str) -> list[Fill]:
        fills = list(self._fills.get(account, ()))
        for paper in self.paper.values():
            fills += paper.fills(account)
        return fills

    def positions(self, account: str) -> list[Position]:
        """The account's positions in every symbol it has traded on any venue (live
        objects; one per symbol across venues)."""
        return [self._positions.get(a, s) for a, s in self._traded_keys() if a == account]

    def position_of(self, account: str, symbol: str) -> Decimal:
        """The account's signed base quantity in ``symbol``, across venues."""
        key = (account, symbol)
        traded = key in self._traded or any(key in p.traded for p in self.paper.values())
        return self._positions.get(*key).quantity if traded else _ZERO

    def take_updates(self) -> list[dict[str, Any]]:
        updates, self.updates = self.updates, []
        for paper in self.paper.values():
            updates += paper.take_updates()
        return updates

    def _traded_keys(self) -> dict[tuple[str, str], None]:
        keys = dict(self._traded)
        for paper in self.paper.values():
            keys.update(paper.traded)
        return keys

    def book(self, symbol: str) -> MatchingEngine:
        """The matching engine of ``symbol``, to read (an empty one, not kept, if no order
        ever reached it: a query changes nothing)."""
        engine = self._engines.get(symbol)
        return MatchingEngine(symbol, self_trade=self._self_trade) if engine is None else engine

    def symbols(self) -> list[str]:
        """Symbols whose book exists."""
        return list(self._engines)

    def open_orders(self, account: str | None = None, symbol: str | None = None) -> list[Order]:
        """Open orders of ``account`` (None: everyone's) on every venue, oldest first."""
        if account is not None and symbol is not None:  # the risk check's question: fast
            views = [live.view for live in self._open.get((account, symbol), {}).values()]
            for paper in self.paper.values():
                views += paper.open_orders(account, symbol)
            return sorted(views, key=lambda v: v.order_id) if self.paper else views
        views = [live.view for orders in self._open.values() for live in orders.values()
                 if symbol in (None, live.request.symbol)]  # fmt: skip
        for paper in self.paper.values():
            views += paper.open_orders(symbol=symbol)
        return sorted((v for v in views if account is None or v.account == account),
                      key=lambda v: v.order_id)  # fmt: skip

    def _engine(self, symbol: str) -> MatchingEngine:
        engine = self._engines.get(symbol)
        if engine is None:
            engine = self._engines[symbol] = MatchingEngine(symbol, self_trade=self._self_trade)
        return engine

    # ---- applying -----------------------------------------------------------------------

    def apply(self, record: Record) -> None:
        """Apply one order-log record (see ``trading/order_log.py``)."""
        self._seq = max(self._seq, int(record["seq"]))
        ts, kind = int(record["ts"]), record["type"]
        venue = record.get("venue", "internal")
        if kind == "submit" and venue != "internal":
            self._apply_paper_submit(record, ts)
        elif kind == "submit":
            self._apply_submit(record, ts)
        elif kind == "cancel" and venue != "internal":
            self.paper[venue].apply_cancel(record["order_id"], ts)
        elif kind == "cancel":
            live = self._orders[record["order_id"]]
            self._engines[live.request.symbol].cancel(live.oid, "client")
            self._drain(live.request.symbol, ts)
        elif kind == "paper_fills":
            fills = [(order_id, Decimal(price)) for order_id, price in record["fills"]]
            self.paper[venue].apply_fills(fills, ts)
        elif kind == "amend":
            self._apply_amend(record, ts)
        elif kind == "deposit":
            self.risk.balances.deposit(record["account"], record["asset"],
                                       Decimal(record["amount"]))  # fmt: skip
        elif kind == "kill":
            self.risk.kill(record["account"])
            for view in self.open_orders(record["account"]):
                if view.venue != "internal":
                    self.paper[view.venue].apply_cancel(view.order_id, ts, "kill_switch")
                    continue
                live = self._orders[view.order_id]
                self._engines[view.symbol].cancel(live.oid, "kill_switch")
                self._drain(view.symbol, ts)
        elif kind == "revive":
            self.risk.revive(record["account"])
        elif kind.startswith("live_"):
            pass  # the live venue's own records (its state is kept beside the manager)
        else:
            raise ValueError(f"order log record {record['seq']} has unknown type {kind!r}")

    def _apply_paper_submit(self, record: Record, ts: int) -> None:
        order_id = record["order_id"]
        self._order_seq = max(self._order_seq, int(order_id[1:]))
        takes = [(Decimal(price), Decimal(quantity)) for price, quantity in record["takes"]]
        reserve = (record["reserve_asset"], Decimal(record["reserve_amount"]))
        walk = Walk(takes, record["early_close"])
        request = _request(record)
        fees = _fees(record, Fees.of(self.instruments[request.symbol]))
        self.paper[record["venue"]].apply_submit(request, order_id, ts, walk, reserve, fees)

    def _apply_submit(self, record: Record, ts: int) -> None:
        request = _request(record)
        instrument = self.instruments[request.symbol]
        # Validated when it was decided: only the grid conversions are needed here.
        lots = instrument.to_lots(request.quantity)
        ticks = None if request.price is None else instrument.to_ticks(request.price)
        stop = None if request.stop_price is None else instrument.to_ticks(request.stop_price)
        reserve = (record["reserve_asset"], Decimal(record["reserve_amount"]))
        self._place(request, record["order_id"], ts, (lots, ticks, stop),
                    _decimal(record["protection_price"]), reserve, _self_trade(record),
                    _fees(record, _FIRST_FEES))  # fmt: skip

    def _place(
        self,
        request: OrderRequest,
        order_id: str,
        ts: int,
        grid: tuple[int, int | None, int | None],
        protection: Decimal | None,
        reserve: tuple[str, Decimal] | None = None,
        self_trade: SelfTrade | None = None,
        fees: Fees | None = None,
    ) -> Live:
        """Put an internal order on its book: ``grid`` is its (lots, limit ticks, stop
        ticks); ``reserve`` is held for it unless it already holds a reservation (the
        risk check reserved it; a replay has only the record's); ``self_trade`` and
        ``fees`` are what it was decided under (None: this venue's now)."""
        lots, ticks, stop = grid
        account, symbol = request.account, request.symbol
        if reserve is not None and not self.risk.balances.reservation(order_id):
            self.risk.balances.reserve(order_id, reserve[0], reserve[1], account=account)
        oid = int(order_id[1:])
        if oid > self._order_seq:
            self._order_seq = oid
        instrument = self.instruments[symbol].charging(fees)
        live = Live(request, order_id, ts, oid, instrument, lots, protection)
        self._orders[order_id] = self._by_oid[oid] = live
        self._by_account.setdefault(account, []).append(live)
        self._open.setdefault((account, symbol), {})[order_id] = live
        if request.client_order_id is not None:
            self._client_ids[(account, request.client_order_id)] = order_id
        engine = self._engine(symbol)
        engine.self_trade = self._self_trade if self_trade is None else self_trade
        side = BUY if request.side == "buy" else SELL
        if request.type == "limit" and ticks is not None:
            engine.limit(oid, account, side, ticks, lots, request.time_in_force, request.post_only)
        elif request.type == "market" and protection is not None:
            tif = "fok" if request.time_in_force == "fok" else "ioc"
            engine.limit(oid, account, side, _cap(instrument, side, protection), lots, tif)
        elif request.type == "stop_limit" and stop is not None:
            engine.stop(oid, account, side, stop, lots, ticks)
        elif stop is not None and protection is not None:
            engine.stop(oid, account, side, stop, lots, _cap(instrument, side, protection), "ioc")
        else:
            raise ValueError(f"order {order_id} lacks a price")
        self._drain(symbol, ts)
        return live

    def _apply_amend(self, record: Record, ts: int) -> None:
        live = self._orders[record["order_id"]]
        request, instrument = live.request, live.instrument
        price, quantity = Decimal(record["price"]), Decimal(record["quantity"])
        balances = self.risk.balances
        balances.release(live.order_id)
        asset = instrument.quote if request.side == "buy" else instrument.base
        balances.reserve(live.order_id, asset, Decimal(record["reserve_amount"]),
                         account=request.account)  # fmt: skip
        live.lots = instrument.to_lots(quantity)
        live.reprice(price, quantity)
        live.move(ts, None)
        left = live.lots - live.filled_lots
        engine = self._engines[request.symbol]
        engine.self_trade = _self_trade(record)
        if not engine.amend(live.oid, price=instrument.to_ticks(price), qty=left):
            raise ValueError(f"order {live.order_id} is not resting: cannot amend it")
        self._drain(request.symbol, ts)

    def _drain(self, symbol: str, ts: int) -> None:
        """Turn the engine's events into order changes, fills and balance moves."""
        engine = self._engines[symbol]
        by_oid = self._by_oid
        while events := engine.take_events():
            for event in events:
                kind = event[1]
                if kind == "trade":
                    self._trade(event, ts)
                    continue
                live = by_oid[event[2]]
                if kind == "accepted":
                    self._change(live, ts, "accepted")
                elif kind == "cancelled":
                    live.close_reason = event[6]
                    self._change(live, ts, "cancelled")
                elif kind == "expired":
                    # A triggered stop-market is an IOC at its protection price: what it
                    # could not fill within that price expires.
                    reason = event[4]
                    if live.request.type == "stop_market" and reason == "ioc_remainder":
                        reason = "protection_price"
                    live.close_reason = reason
                    self._change(live, ts, "expired")
                elif kind == "rejected":
                    live.reject_rule, live.reject_reason = "engine", event[3]
                    self._change(live, ts, "rejected")
                elif kind == "amended":
                    self._change(live, ts, None)
                # "triggered": the stop stays accepted; its trades follow.

    def _trade(self, event: Event, ts: int) -> None:
        _, _, maker_oid, taker_oid, price_ticks, lots, *_ = event
        maker, taker = self._by_oid[maker_oid], self._by_oid[taker_oid]
        instrument = taker.instrument
        base, quote, lot_size = instrument.base, instrument.quote, instrument.lot_size
        price = EXACT.multiply(instrument.tick_size, price_ticks)
        quantity = EXACT.multiply(lot_size, lots)
        notional = EXACT.multiply(price, quantity)
        trade_id = self._next_trade_id()
        price_text, quantity_text, venue = str(price), str(quantity), self.venue
        balances, positions, updates = self.risk.balances, self._positions, self.updates
        sides: tuple[tuple[Live, Liquidity, Decimal], ...] = (
            (maker, "maker", maker.instrument.maker_fee),  # each at the rates it was placed at
            (taker, "taker", instrument.taker_fee),
        )
        for live, liquidity, rate in sides:
            request = live.request
            account, symbol, side = request.account, request.symbol, request.side
            fee = EXACT.multiply(notional, rate)
            fill = Fill(trade_id, live.order_id, account, symbol, side, price, quantity, fee,
                        quote, liquidity, ts, venue)  # fmt: skip
            self._fills.setdefault(account, []).append(fill)
            balances.settle_fill(fill, base=base, quote=quote)
            positions.apply(fill)
            self._traded[(account, symbol)] = None
            updates.append({
                "event": "fill", "trade_id": trade_id, "order_id": live.order_id,
                "account": account, "symbol": symbol, "side": side, "price": price_text,
                "quantity": quantity_text, "fee": str(fee), "fee_asset": quote,
                "liquidity": liquidity, "ts": ts, "venue": venue,
            })  # fmt: skip
            live.filled_lots += lots
            live.add_fill(EXACT.multiply(lot_size, live.filled_lots), notional, fee)
            done = live.filled_lots == live.lots
            self._change(live, ts, "filled" if done else "partially_filled")
            if not done:  # keep only what the rest needs (a buy may fill below its price)
                excess = EXACT.subtract(balances.reservation(live.order_id),
                                        self.need(live, live.lots - live.filled_lots))  # fmt: skip
                if excess > _ZERO:
                    balances.release(live.order_id, excess)

    def _change(self, live: Live, ts: int, status: OrderStatus | None) -> None:
        """Move the order on (a final status releases its reservation) and publish it;
        the fields that change with it are set before."""
        live.move(ts, status)
        if status is not None and status in FINAL_STATUSES:
            request = live.request
            self.risk.balances.release(live.order_id)
            self._open[(request.account, request.symbol)].pop(live.order_id, None)
        self.updates.append(live.update())

    # ---- helpers ------------------------------------------------------------------------

    def _next_trade_id(self) -> str:
        self._trade_seq += 1
        return f"T{self._trade_seq:010d}"

    def need(self, live: Live, lots: int, price: Decimal | None = None) -> Decimal:
        """What ``lots`` more of the order hold: base for a sell, quote with the fee for a
        buy (at its limit price, or its protection price)."""
        quantity = EXACT.multiply(live.instrument.lot_size, lots)
        if live.request.side == "sell":
            return quantity
        if price is None:
            price = live.price if live.price is not None else live.protection
        if price is None:
            raise ValueError(f"order {live.order_id} has no price to reserve at")
        instrument = live.instrument
        fee = max(instrument.taker_fee, instrument.maker_fee, _ZERO)
        return EXACT.multiply(EXACT.multiply(price, quantity), EXACT.add(_ONE, fee))


def _fees(record: Record, before: Fees) -> Fees:
    """The fee rates a submit record's order was placed at; ``before``: those of a record
    from before they were recorded."""
    rates = record.get("fees")
    return before if rates is None else Fees(Decimal(rates[0]), Decimal(rates[1]))


def _self_trade(record: Record) -> SelfTrade:
    """The self-trade prevention a submit or amend record was decided under."""
    mode = record.get("self_trade", _FIRST_SELF_TRADE)
    if mode not in ("cancel_incoming", "cancel_resting"):
        raise ValueError(f"order log record {record['seq']} has self_trade {mode!r}")
    return cast(SelfTrade, mode)


def _cap(instrument: Instrument, side: int, protection: Decimal) -> int:
    """The protection price in whole ticks, never beyond it (at least one tick)."""
    with localcontext(EXACT):
        ticks = protection / instrument.tick_size
        rounded = ticks.to_integral_value(ROUND_FLOOR if side == BUY else ROUND_CEILING)
    return max(1, int(rounded))


def _request(record: Record) -> OrderRequest:
    """The order a ``submit`` record placed."""
    return OrderRequest(
        account=record["account"], symbol=record["symbol"], side=record["side"],
        type=record["order_type"], quantity=Decimal(record["quantity"]),
        price=_decimal(record["price"]), stop_price=_decimal(record["stop_price"]),
        time_in_force=record["time_in_force"], post_only=record["post_only"],
        reduce_only=record["reduce_only"], client_order_id=record["client_order_id"],
        venue=record.get("venue", "internal"),
    )  # fmt: skip


def _decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)
